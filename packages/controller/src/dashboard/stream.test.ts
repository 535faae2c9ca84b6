/**
 * The dashboard's event stream on a bare admin server over a real cache (ClusterState on the
 * embedded store, records written straight into it): a burst of changes becomes one message,
 * deletions are streamed, heartbeats are comments, and closing the server ends the stream.
 */
import { request, type IncomingMessage } from "node:http";
import { afterEach, expect, it } from "vitest";
import { DesiredState, Host, HostState, Vm, VmPhase } from "@berth/api";
import { startAdminServer, type AdminServer } from "@berth/core";
import { resolveSchedulerOptions } from "@berth/scheduler";
import { MemoryStore } from "@berth/store";
import { ClusterState } from "../cluster-state.js";
import { EventLog } from "../event-log.js";
import { encodeHost, encodeVm, Keys } from "../keys.js";
import { waitFor } from "../controller.testkit.js";
import { dashboardRoutes } from "./routes.js";
import type { DashboardChanges, DashboardSnapshot } from "./view.js";

const undo: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const u of undo.splice(0).reverse()) await u();
});

const vm = (name: string): Vm =>
  Vm.fromPartial({ id: `id-${name}`, hostId: "h1", desiredState: DesiredState.DESIRED_STATE_RUNNING, spec: { name, resources: { vcpus: 1, memoryMib: 256, diskGib: 1 } }, status: { phase: VmPhase.VM_PHASE_RUNNING } });

async function setup(): Promise<{ store: MemoryStore; server: AdminServer }> {
  const store = new MemoryStore();
  await store.txn({ compare: [], ops: [{ type: "put", key: Keys.host("h1"), value: encodeHost(Host.fromPartial({ id: "h1", state: HostState.HOST_STATE_READY, capacity: { vcpus: 64, memoryMib: 65536, diskGib: 100 } })) }] });
  const state = new ClusterState(store);
  await state.start();
  const events = new EventLog(state, Date.now);
  const options = resolveSchedulerOptions({});
  const server = await startAdminServer({
    listen: "127.0.0.1:0",
    routes: dashboardRoutes({
      state,
      events,
      placer: { snapshotOf: () => undefined, options: () => options },
      liveHost: () => undefined,
      leading: () => undefined,
      leaderAddress: async () => "10.0.0.1:7400",
      controllerId: "c9",
      stream: { flushMs: 300, heartbeatMs: 100 },
    }),
  });
  undo.push(async () => {
    await server.close();
    events.stop();
    await state.stop();
  });
  return { store, server };
}

function stream(url: string): { messages: { event: string; data: unknown }[]; comments: string[]; ended: Promise<void> } {
  const messages: { event: string; data: unknown }[] = [];
  const comments: string[] = [];
  let ended!: () => void;
  const endedP = new Promise<void>((r) => (ended = r));
  const req = request(`${url}/api/stream`, { agent: false }, (res: IncomingMessage) => {
    let buffer = "";
    res.setEncoding("utf8");
    res.on("data", (chunk: string) => {
      buffer += chunk;
      let at: number;
      while ((at = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        let event = "message";
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) comments.push(line);
          else if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) messages.push({ event, data: JSON.parse(line.slice(6)) });
        }
      }
    });
    res.on("close", ended);
  });
  req.on("error", () => ended());
  req.end();
  undo.push(() => {
    req.destroy();
  });
  return { messages, comments, ended: endedP };
}

it("sends a snapshot, then a burst of changes as one message, deletions, heartbeats; ends when the server closes", async () => {
  const { store, server } = await setup();
  const s = stream(server.url);
  const snapshot = (await waitFor("the snapshot", () => s.messages[0])).data as DashboardSnapshot;
  expect(s.messages[0]!.event).toBe("snapshot");
  expect(snapshot.hosts.map((h) => h.id)).toEqual(["h1"]);
  // A follower's stream says who leads.
  expect(snapshot.leader).toEqual({ controllerId: "c9", leading: false, leaderAddress: "10.0.0.1:7400" });

  // Twenty VMs in one transaction: one message, not twenty, with every VM and h1's row once.
  const names = Array.from({ length: 20 }, (_, i) => `vm-${i + 1}`);
  await store.txn({ compare: [], ops: names.map((n) => ({ type: "put" as const, key: Keys.vm(n), value: encodeVm(vm(n)) })) });
  const changes = (): DashboardChanges[] => s.messages.filter((m) => m.event === "changes").map((m) => m.data as DashboardChanges);
  await waitFor("the burst", () => changes().length > 0);
  expect(changes()).toHaveLength(1);
  const burst = changes()[0]!;
  expect(burst.vms.map((v) => v.name).sort()).toEqual([...names].sort());
  expect(burst.hosts.map((h) => h.id)).toEqual(["h1"]);
  expect(burst.hosts[0]!.cpu.segments).toHaveLength(20);
  expect(burst.events.length).toBeGreaterThan(0);

  await store.txn({ compare: [], ops: [{ type: "delete", key: Keys.vm("vm-3") }] });
  await waitFor("the deletion", () => changes().some((c) => c.vmsDeleted.includes("vm-3")));
  const after = changes().find((c) => c.vmsDeleted.includes("vm-3"))!;
  expect(after.hosts[0]!.cpu.segments.map((x) => x.vm)).not.toContain("vm-3");

  await waitFor("a heartbeat comment", () => s.comments.some((c) => c.startsWith(": keepalive")));
  await server.close();
  await s.ended;
});
