/**
 * The create path's incremental engine against the full snapshot it replaces: a controller in
 * process on the embedded store with real gRPC and raw agent streams, driven through a seeded
 * random sequence of creates (single, gangs, groups, NICs), deletes, cordons, data volumes bound
 * and deleted, hosts' networks and images changing, config changes and agents leaving and coming
 * back. After every step the engine must show each host exactly as a full
 * snapshot does, and no decision may have needed a repair.
 */
import { afterEach, describe, expect, it } from "vitest";
import { ClusterConfig, GroupPolicy, VmSpec, type Vm } from "@berth/api";
import { mulberry32 } from "@berth/core";
import { MemoryStore } from "@berth/store";
import { resolveSchedulerOptions, type HostSnapshot } from "@berth/scheduler";
import { helloFor, operatorApi, rawAgent, startController, waitFor, type Cleanups, type RawAgent } from "./controller.testkit.js";
import { PlacementView } from "./placement-view.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("the create path's placement view", () => {
  it("shows every host as the full snapshot does through creates, gangs, deletes, cordons, volumes, networks, config changes and agents leaving", async () => {
    // Long report interval: the raw streams never report, and must not be closed as silent.
    const { controller, address } = await startController(cleanups, new MemoryStore(), { reportIntervalMs: 60_000 });
    await waitFor("leadership", () => controller.isLeader);
    const streams = new Map<string, RawAgent>();
    const connect = async (hostId: string, boot: string): Promise<void> => {
      const agent = rawAgent(cleanups, address, helloFor(hostId, boot, { capacity: { vcpus: 48, memoryMib: 96 * 1024, diskGib: 2000 }, labels: { zone: hostId.endsWith("1") ? "a" : "b" } }));
      await agent.first;
      streams.set(hostId, agent);
    };
    const hostIds = Array.from({ length: 6 }, (_, i) => `host-${i + 1}`);
    for (const id of hostIds) await connect(id, `boot-${id}`);
    const { client, call: unary } = operatorApi(cleanups, address);
    for (const [name, policy] of [["anti", GroupPolicy.GROUP_POLICY_ANTI_AFFINITY], ["together", GroupPolicy.GROUP_POLICY_AFFINITY]] as const) {
      await unary((m, o, cb) => client.createGroup({ name, policy }, m, o, cb));
    }
    const spec = (name: string, r: () => number): VmSpec =>
      VmSpec.fromPartial({
        name,
        resources: { vcpus: 1 + Math.floor(r() * 6), memoryMib: 1024 * (1 + Math.floor(r() * 8)), diskGib: 10 },
        requiredHostLabels: r() < 0.15 ? { zone: "b" } : {},
        group: r() < 0.2 ? "anti" : r() < 0.1 ? "together" : "",
        networks: r() < 0.1 ? ["lab"] : [],
      });
    const volumes: string[] = [];
    let v = 0;
    /** Steps that changed what a host holds or offers (their changes must reach the view too). */
    const holdings = { volumes: 0, networks: 0 };

    const r = mulberry32(20261201); // seeded: a failure replays
    const placer = controller.placer;
    const created: string[] = [];
    let n = 0;
    let placed = 0;
    let refused = 0;
    const check = (step: string): void => expect(placer.viewDisagreements(), `after ${step}`).toEqual([]);
    for (let step = 0; step < 100; step++) {
      const x = r();
      let what: string;
      try {
        if (x < 0.35) {
          what = "create";
          const v = await unary<{ vm?: Vm }>((m, o, cb) => client.createVm({ spec: spec(`vm-${n++}`, r), requestId: "" }, m, o, cb));
          created.push(v.vm!.spec!.name);
          placed++;
        } else if (x < 0.5) {
          what = "concurrent creates";
          const batch = Array.from({ length: 4 }, () => spec(`vm-${n++}`, r));
          const results = await Promise.allSettled(batch.map((s) => unary<{ vm?: Vm }>((m, o, cb) => client.createVm({ spec: s, requestId: "" }, m, o, cb))));
          for (const res of results) if (res.status === "fulfilled") (created.push(res.value.vm!.spec!.name), placed++);
          else refused++;
        } else if (x < 0.6) {
          what = "gang";
          const specs = Array.from({ length: 2 + Math.floor(r() * 3) }, () => spec(`vm-${n++}`, r));
          const v = await unary<{ vms: Vm[] }>((m, o, cb) => client.createVms({ specs, requestId: "" }, m, o, cb));
          for (const vm of v.vms) created.push(vm.spec!.name);
          placed += v.vms.length;
        } else if (x < 0.7 && created.length > 0) {
          what = "delete";
          const name = created.splice(Math.floor(r() * created.length), 1)[0]!;
          await unary((m, o, cb) => client.deleteVm({ name }, m, o, cb));
        } else if (x < 0.8) {
          const hostId = hostIds[Math.floor(r() * hostIds.length)]!;
          what = `cordon/uncordon ${hostId}`;
          if (r() < 0.5) await unary((m, o, cb) => client.cordonHost({ hostId, reason: "test" }, m, o, cb));
          else await unary((m, o, cb) => client.uncordonHost({ hostId }, m, o, cb));
        } else if (x < 0.82) {
          const hostId = hostIds[Math.floor(r() * hostIds.length)]!;
          const available = r() < 0.5;
          what = `${hostId} reports its hypervisor ${available ? "up" : "down"}`;
          streams.get(hostId)?.send({ $case: "report", value: { hypervisor: { available, message: available ? "" : "libvirtd is down" } } });
          await sleep(30);
        } else if (x < 0.87) {
          what = "config";
          const preset = r() < 0.5 ? "pack" : "spread";
          await unary((m, o, cb) => client.updateClusterConfig({ config: ClusterConfig.fromPartial({ scheduler: { preset } }) }, m, o, cb));
        } else if (x < 0.91) {
          if (volumes.length > 0 && r() < 0.4) {
            const name = volumes.splice(Math.floor(r() * volumes.length), 1)[0]!;
            what = `delete volume ${name}`;
            await unary((m, o, cb) => client.deleteVolume({ name }, m, o, cb));
          } else {
            const hostId = hostIds[Math.floor(r() * hostIds.length)]!;
            const name = `vol-${v++}`;
            what = `volume ${name} on ${hostId}`;
            await unary((m, o, cb) => client.createVolume({ volume: { name, sizeGib: 1 + Math.floor(r() * 200), hostId, id: "", attachedTo: "", createdAtMs: 0, deleting: false, generation: 0 } }, m, o, cb));
            volumes.push(name);
          }
          holdings.volumes++;
        } else if (x < 0.97) {
          const hostId = hostIds[Math.floor(r() * hostIds.length)]!;
          const lab = r() < 0.5;
          what = `${hostId} reports ${lab ? "the lab network" : "no lab network"}`;
          streams.get(hostId)?.send({ $case: "report", value: { networks: [{ name: "lab", kind: "bridge", active: lab }], images: lab ? [{ imageId: "img-1", sizeBytes: 1, virtualSizeBytes: 1 }] : [] } });
          await sleep(30);
          holdings.networks++;
        } else {
          const hostId = hostIds[Math.floor(r() * hostIds.length)]!;
          what = `agent of ${hostId} leaves and comes back`;
          streams.get(hostId)?.close();
          await sleep(50);
          check(`${what} (gone)`);
          await connect(hostId, `boot-${hostId}`);
        }
      } catch (e) {
        what = `refused: ${(e as Error).message.slice(0, 80)}`;
        refused++;
      }
      check(`step ${step} (${what}), at once`);
      await sleep(20);
      check(`step ${step} (${what}), settled`);
    }
    expect(placed).toBeGreaterThan(20);
    expect(placer.view.drift).toBe(0);
    expect(placer.view.rebuilds).toBeGreaterThan(1); // the config changes rebuilt it
    expect(holdings.volumes).toBeGreaterThan(1);
    expect(holdings.networks).toBeGreaterThan(1);
  }, 60_000);

  it("re-reads only touched hosts, rebuilds on a new host or new options, and repairs what it was not told of", () => {
    const snap = (id: string, vcpus = 0): HostSnapshot => ({ id, capacity: { vcpus: 16, memoryMib: 65536, diskGib: 1000 }, allocated: { vcpus, memoryMib: 0, diskGib: 0 }, vmCount: vcpus > 0 ? 1 : 0, ready: true, cordoned: false, labels: {} });
    const truth = new Map([["a", snap("a")], ["b", snap("b")]]);
    let options = resolveSchedulerOptions({ preset: "pack" });
    const reads: string[] = [];
    const view = new PlacementView({ hostIds: () => [...truth.keys()], snapshotOf: (id) => (reads.push(id), truth.get(id)), options: () => options });
    const req = { name: "x", resources: { vcpus: 1, memoryMib: 1024, diskGib: 1 } };
    expect(view.current().place(req)).toEqual({ placed: true, hostId: "a" });
    expect(view.rebuilds).toBe(1);
    // b fills up: told, the view re-reads b alone, and pack now prefers it.
    truth.set("b", snap("b", 8));
    reads.length = 0;
    view.touch("b");
    expect(view.current().place(req)).toEqual({ placed: true, hostId: "b" });
    expect(reads).toEqual(["b"]);
    // a fills more, untold: the decision still says b; confirm(a) finds a differs and repairs it.
    truth.set("a", snap("a", 12));
    expect(view.confirm(["b"])).toBe(true);
    expect(view.confirm(["a"])).toBe(false);
    expect(view.drift).toBe(1);
    expect(view.current().place(req)).toEqual({ placed: true, hostId: "a" });
    // A new host (an id it does not know) and new options both rebuild.
    truth.set("c", snap("c", 15));
    view.touch("c");
    expect(view.current().place(req)).toEqual({ placed: true, hostId: "c" });
    expect(view.rebuilds).toBe(2);
    options = resolveSchedulerOptions({ preset: "spread" });
    expect(view.current().place(req)).toEqual({ placed: true, hostId: "b" });
    expect(view.rebuilds).toBe(3);
    // A migration touches its source and its target.
    reads.length = 0;
    view.onStateChange({ kind: "migration", type: "put", migration: { sourceHost: "a", targetHost: "c" } as never, previous: undefined, revision: 1 });
    view.current();
    expect(reads.sort()).toEqual(["a", "c"]);
  });
});
