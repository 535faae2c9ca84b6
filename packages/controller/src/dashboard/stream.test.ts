/**
 * The dashboard's event stream on a bare admin server over a real cache (ClusterState on the
 * embedded store, records written straight into it): a burst of changes becomes one message,
 * deletions are streamed, heartbeats are comments, and closing the server ends the stream. Scale
 * groups: a record's row, its member's VM changing it, its live CPU from the sessions by the
 * refresh alone, its page's data, and its deletion.
 */
import { request, type IncomingMessage } from "node:http";
import { afterEach, expect, it } from "vitest";
import { DesiredState, Host, HostState, ScaleGroup, Vm, VmPhase } from "@berth/api";
import { startAdminServer, type AdminServer } from "@berth/core";
import { resolveSchedulerOptions } from "@berth/scheduler";
import { MemoryStore } from "@berth/store";
import { ClusterState } from "../cluster-state.js";
import { EventLog } from "../event-log.js";
import type { AgentSession } from "../agent-session.js";
import { encodeHost, encodeScaleGroup, encodeVm, Keys } from "../keys.js";
import { waitFor } from "../controller.testkit.js";
import { dashboardRoutes } from "./routes.js";
import type { DashboardChanges, DashboardSnapshot, ScaleGroupDetail } from "./view.js";

const undo: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const u of undo.splice(0).reverse()) await u();
});

const vm = (name: string): Vm =>
  Vm.fromPartial({ id: `id-${name}`, hostId: "h1", desiredState: DesiredState.DESIRED_STATE_RUNNING, spec: { name, resources: { vcpus: 1, memoryMib: 256, diskGib: 1 } }, status: { phase: VmPhase.VM_PHASE_RUNNING } });

async function setup(over: { sessions?: ReadonlyMap<string, AgentSession>; refreshMs?: number } = {}): Promise<{ store: MemoryStore; server: AdminServer }> {
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
      ...(over.sessions ? { sessions: over.sessions } : {}),
      stream: { flushMs: 300, heartbeatMs: 100, ...(over.refreshMs ? { refreshMs: over.refreshMs } : {}) },
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

it("streams a scale group's row: put, changed by its member's VM, its CPU by the refresh alone, gone; its page's data", async () => {
  // What the agent on h1 last measured of each VM (the only part of a session the figures read).
  const vmUsage = new Map<string, { cpuCores: number; memoryMib: number }>();
  const sessions = new Map([["h1", { isLive: true, vmUsage } as unknown as AgentSession]]);
  const { store, server } = await setup({ sessions, refreshMs: 100 });
  const s = stream(server.url);
  const snapshot = (await waitFor("the snapshot", () => s.messages[0])).data as DashboardSnapshot;
  expect(snapshot.scaleGroups).toEqual([]);
  const changes = (): DashboardChanges[] => s.messages.filter((m) => m.event === "changes").map((m) => m.data as DashboardChanges);
  const rowsOf = (name: string) => changes().flatMap((c) => c.scaleGroups.filter((g) => g.name === name));

  const group = ScaleGroup.fromPartial({
    name: "web",
    template: { resources: { vcpus: 2, memoryMib: 256, diskGib: 1 } },
    minSize: 1,
    maxSize: 3,
    // A warm-up of 1 ms: the member counts as soon as it reports.
    policy: { targetCpu: 0.5, warmupMs: 1 },
    members: [{ name: "web-1", index: 1, addedAtMs: 1 }],
    nextIndex: 2,
    decisionCount: 1,
    decisions: [{ seq: 1, decidedAtMs: 1, reason: "SizeBounded", fromSize: 0, toSize: 1, message: "the bounds are now 1..3" }],
  });
  await store.txn({ compare: [], ops: [{ type: "put", key: Keys.scaleGroup("web"), value: encodeScaleGroup(group) }] });
  const first = await waitFor("the group's row", () => rowsOf("web")[0]);
  expect(first).toMatchObject({ size: 1, boundsText: "1..3", targetText: "50%", running: 0, creating: 1, cpuText: "—" });
  expect(first.lastDecision).toMatchObject({ reason: "SizeBounded", sizeText: "0 → 1", message: "the bounds are now 1..3" });

  // Its member's VM appears, running: the group's row comes again with it, no record of the group written.
  const member = vm("web-1");
  member.spec = { ...member.spec!, resources: { vcpus: 2, memoryMib: 256, diskGib: 1 }, labels: { "berth.io/scale-group": "web" } };
  await store.txn({ compare: [], ops: [{ type: "put", key: Keys.vm("web-1"), value: encodeVm(member) }] });
  const withVm = await waitFor("the row with its running member", () => changes().find((c) => c.vms.some((v) => v.name === "web-1") && c.scaleGroups.some((g) => g.running === 1)));
  expect(withVm.vms.find((v) => v.name === "web-1")!.scaleGroup).toBe("web");
  expect(withVm.scaleGroups[0]).toMatchObject({ running: 1, creating: 0, warm: 0, cpuText: "—" });

  // The agent measures 1.5 of its 2 vCPUs: only the refresh can see that (no record changed).
  vmUsage.set(member.id, { cpuCores: 1.5, memoryMib: 100 });
  const measured = await waitFor("the measured CPU", () => rowsOf("web").find((g) => g.warm === 1));
  expect([measured.cpu, measured.cpuText]).toEqual([0.75, "75%"]);

  const page = await fetch(`${server.url}/api/scalegroups/web`);
  expect(page.status).toBe(200);
  const detail = (await page.json()) as ScaleGroupDetail;
  expect(detail.group).toMatchObject({ name: "web", warm: 1, cpuText: "75%" });
  expect(detail.members).toMatchObject([{ name: "web-1", phase: "RUNNING", hostId: "h1", protected: false, warmedUp: true }]);
  expect(detail.decisions.map((d) => d.reason)).toEqual(["SizeBounded"]);
  expect(detail.policy).toMatchObject({ warmup: "0s", interval: "15s" });
  expect((await fetch(`${server.url}/api/scalegroups/nope`)).status).toBe(404);
  expect((await fetch(`${server.url}/api/scalegroups/Bad_Name`)).status).toBe(400);

  await store.txn({ compare: [], ops: [{ type: "delete", key: Keys.scaleGroup("web") }] });
  await waitFor("the group's deletion", () => changes().some((c) => c.scaleGroupsDeleted.includes("web")));
  // Its member's VM outlives the record here; a change of it names a group that is gone and sends no row.
  const seen = changes().length;
  await store.txn({ compare: [], ops: [{ type: "put", key: Keys.vm("web-1"), value: encodeVm({ ...member, generation: 2 }) }] });
  const later = await waitFor("the member's change", () => changes().slice(seen).find((c) => c.vms.some((v) => v.name === "web-1")));
  expect([later.scaleGroups, later.scaleGroupsDeleted]).toEqual([[], []]);
  await server.close();
  await s.ended;
});
