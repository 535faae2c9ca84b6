/**
 * Groups under concurrency, in process on the embedded store with real gRPC. Nova's own docs admit
 * that parallel requests can break anti-affinity; here 50 concurrent creates in one group must not.
 */
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { AgentServiceClient, ClusterServiceClient, GroupPolicy, type PlanPlacementResponse, type Vm, type VmSpec } from "@berth/api";
import { deadlineIn, grpcClientOptions } from "@berth/core";
import { MemoryStore } from "@berth/store";
import { Controller } from "./controller.js";
import { resolveControllerOptions } from "./options.js";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A controller and `n` hosts that said Hello on raw streams (no hypervisor: placement only). */
async function cluster(n: number, capacity = { vcpus: 16, memoryMib: 16 * 1024, diskGib: 500 }) {
  // Long report interval: the raw streams never report, and must not be closed as silent.
  const options = resolveControllerOptions({ listen: "127.0.0.1:0", reportIntervalMs: 60_000 });
  const controller = await Controller.start(options, new MemoryStore(), pino({ level: "silent" }));
  cleanups.push(() => controller.stop());
  const address = `127.0.0.1:${controller.port}`;
  const agents = new AgentServiceClient(address, credentials.createInsecure(), grpcClientOptions());
  cleanups.push(() => agents.close());
  for (let deadline = Date.now() + 5_000; !controller.isLeader; ) {
    if (Date.now() > deadline) throw new Error("no leader");
    await new Promise((r) => setTimeout(r, 20));
  }
  await Promise.all(
    Array.from({ length: n }, (_, i) => {
      const call = agents.connect();
      call.on("error", () => undefined);
      cleanups.push(() => call.cancel());
      const welcomed = new Promise((resolve) => call.once("data", resolve));
      const hostId = `host-${String(i + 1).padStart(2, "0")}`;
      call.write({ msg: { $case: "hello", value: { hostId, bootId: `boot-${i}`, capacity, labels: {}, inventory: { domains: [] }, agentVersion: "t", driver: "fake", lastLeaderEpoch: 0, clusterId: "" , images: [], networks: [], volumes: []} } });
      return welcomed;
    }),
  );
  const client = new ClusterServiceClient(address, credentials.createInsecure(), grpcClientOptions());
  cleanups.push(() => client.close());
  const unary = <T>(fn: (m: Metadata, o: { deadline: Date }, cb: (e: ServiceError | null, r: T) => void) => void): Promise<T> =>
    new Promise((resolve, reject) => fn(new Metadata(), { deadline: deadlineIn(10_000) }, (e, r) => (e ? reject(e) : resolve(r))));
  return {
    createGroup: (name: string, policy: GroupPolicy) => unary((m, o, cb) => client.createGroup({ name, policy }, m, o, cb)),
    createVm: (spec: VmSpec) => unary<{ vm?: Vm }>((m, o, cb) => client.createVm({ spec, requestId: "" }, m, o, cb)),
    createVms: (specs: VmSpec[]) => unary<{ vms: Vm[] }>((m, o, cb) => client.createVms({ specs, requestId: "" }, m, o, cb)),
    listVms: () => unary<{ vms: Vm[] }>((m, o, cb) => client.listVms({ hostId: "", pageSize: 0, pageToken: "" }, m, o, cb)),
    deleteGroup: (name: string) => unary((m, o, cb) => client.deleteGroup({ name }, m, o, cb)),
    plan: (specs: VmSpec[]) => unary<PlanPlacementResponse>((m, o, cb) => client.planPlacement({ specs }, m, o, cb)),
    listGroups: () => unary<{ groups: { name: string; members: string[] }[] }>((m, o, cb) => client.listGroups({}, m, o, cb)),
  };
}

const spec = (name: string, group: string, vcpus = 1, memoryMib = 1024): VmSpec => ({
  name,
  resources: { vcpus, memoryMib, diskGib: 10 },
  labels: {},
  group,
  requiredHostLabels: {},
  forbiddenHostLabels: {},
  onHostFailure: 0,
  pinnedHosts: [], image: "", networks: [], volumes: [],
});

function split(results: PromiseSettledResult<{ vm?: Vm }>[]) {
  const placed = results.flatMap((r) => (r.status === "fulfilled" && r.value.vm ? [r.value.vm] : []));
  const errors = results.flatMap((r) => (r.status === "rejected" ? [r.reason as ServiceError] : []));
  return { placed, errors };
}

describe("groups under concurrency", () => {
  it("anti-affinity: 50 concurrent creates on 40 hosts give 40 VMs on 40 hosts and 10 errors naming the group", async () => {
    const c = await cluster(40);
    await c.createGroup("web", GroupPolicy.GROUP_POLICY_ANTI_AFFINITY);
    const { placed, errors } = split(await Promise.allSettled(Array.from({ length: 50 }, (_, i) => c.createVm(spec(`web-${i}`, "web")))));
    expect(placed).toHaveLength(40);
    expect(new Set(placed.map((v) => v.hostId)).size).toBe(40);
    expect(errors).toHaveLength(10);
    for (const e of errors) {
      expect(e.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(e.details).toContain("group 'web'");
    }
    // The stored records agree: 40 members, none sharing a host.
    const stored = (await c.listVms()).vms.filter((v) => v.spec?.group === "web");
    expect(new Set(stored.map((v) => v.hostId)).size).toBe(40);
    expect((await c.listGroups()).groups.find((g) => g.name === "web")?.members).toHaveLength(40);
  });

  it("affinity: 50 concurrent creates all land on one host, as many as fit; the rest fail naming the group", async () => {
    // 16 GiB hosts with 1 GiB reserved: five 3 GiB VMs fit on one host.
    const c = await cluster(40);
    await c.createGroup("db", GroupPolicy.GROUP_POLICY_AFFINITY);
    const { placed, errors } = split(await Promise.allSettled(Array.from({ length: 50 }, (_, i) => c.createVm(spec(`db-${i}`, "db", 1, 3072)))));
    expect(placed).toHaveLength(5);
    expect(new Set(placed.map((v) => v.hostId)).size).toBe(1);
    expect(errors).toHaveLength(45);
    for (const e of errors) {
      expect(e.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(e.details).toContain("group 'db'");
    }
  });

  it("gang: CreateVms places all or none, and a group with members cannot be deleted", async () => {
    const c = await cluster(3);
    await c.createGroup("trio", GroupPolicy.GROUP_POLICY_ANTI_AFFINITY);
    const four = (await c.createVms([0, 1, 2, 3].map((i) => spec(`t-${i}`, "trio"))).catch((e: unknown) => e)) as ServiceError;
    expect(four.code).toBe(status.RESOURCE_EXHAUSTED);
    expect((await c.listVms()).vms).toEqual([]);
    const three = await c.createVms([0, 1, 2].map((i) => spec(`t-${i}`, "trio")));
    expect(new Set(three.vms.map((v) => v.hostId)).size).toBe(3);
    const err = (await c.deleteGroup("trio").catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toContain("has 3 members");
  });

  it("plans a gang as a dry run: chosen hosts, every host's verdict, nothing written", async () => {
    const c = await cluster(3);
    await c.createGroup("web", GroupPolicy.GROUP_POLICY_ANTI_AFFINITY);
    const first = (await c.createVm(spec("web-0", "web"))).vm!;
    const plan = await c.plan([spec("web-1", "web"), spec("web-2", "web")]);
    expect(plan.placeable).toBe(true);
    const chosen = plan.placements.map((p) => p.hostId);
    expect(new Set([...chosen, first.hostId]).size).toBe(3);
    // The first VM's verdicts: the member's host rejected by the group filter, the others scored.
    const verdicts = plan.placements[0]!.verdicts;
    expect(verdicts).toHaveLength(3);
    expect(verdicts.find((v) => v.hostId === first.hostId)).toMatchObject({ passed: false, filter: "groups" });
    expect(verdicts.filter((v) => v.passed).every((v) => v.total > 0 && Object.keys(v.scores).length > 0)).toBe(true);
    // The second VM saw the first one's planned placement: its host is rejected too.
    expect(plan.placements[1]!.verdicts.find((v) => v.hostId === chosen[0])).toMatchObject({ passed: false, filter: "groups" });
    // Nothing was written.
    expect((await c.listVms()).vms.map((v) => v.spec?.name)).toEqual(["web-0"]);
    // A third member cannot fit: not placeable, with the reasons of the VM that failed.
    const tooMany = await c.plan([spec("web-1", "web"), spec("web-2", "web"), spec("web-3", "web")]);
    expect(tooMany.placeable).toBe(false);
    expect(tooMany.placements.at(-1)).toMatchObject({ vmName: "web-3", hostId: "" });
    expect(tooMany.reasons.every((r) => r.includes("group 'web'"))).toBe(true);
  });

  it("refuses a VM in an unknown group, writing nothing", async () => {
    const c = await cluster(1);
    const err = (await c.createVm(spec("lonely", "nope")).catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe(status.NOT_FOUND);
    expect(err.details).toMatch(/^spec\.group: group 'nope' not found/);
    expect((await c.listVms()).vms).toEqual([]);
  });
});
