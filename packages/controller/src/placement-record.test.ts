/**
 * The placement record kept on a VM: the scheduler's own scores for the chosen host at decision
 * time. Unit tests of the pure summary, then in process: what CreateVm records is what PlanPlacement
 * said of the same state, for one VM and for each VM of a gang.
 */
import type { ServiceError } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import type { PlanPlacementResponse, Vm, VmSpec } from "@berth/api";
import type { HostVerdict } from "@berth/scheduler";
import { MemoryStore } from "@berth/store";
import { helloFor, operatorApi, rawAgent, startController, waitFor, type Cleanups } from "./controller.testkit.js";
import { EXPLAIN_MAX_VERDICTS, EXPLAIN_TIME_SHARE, EXPLAIN_WINDOW_MS, ExplainBudget, placementRecordOf } from "./placement-record.js";

const ctx = { decidedAtMs: 1_000, cause: "create", preset: "spread", hostsConsidered: 4 };

describe("ExplainBudget", () => {
  it("allows explanations until they took their share of the window, then again as the time decays", () => {
    let t = 0;
    const budget = new ExplainBudget(() => t);
    const limit = EXPLAIN_TIME_SHARE * EXPLAIN_WINDOW_MS;
    expect(budget.allows(100)).toBe(true);
    budget.spend(limit * 0.6);
    expect(budget.allows(100)).toBe(true);
    budget.spend(limit * 0.6);
    expect(budget.allows(100)).toBe(false);
    t += EXPLAIN_WINDOW_MS; // 1.2 × limit × e^-1 ≈ 0.44 × limit
    expect(budget.allows(100)).toBe(true);
  });

  it("never allows a decision past the verdict ceiling", () => {
    const budget = new ExplainBudget(() => 0);
    expect(budget.allows(EXPLAIN_MAX_VERDICTS)).toBe(true);
    expect(budget.allows(EXPLAIN_MAX_VERDICTS + 1)).toBe(false);
  });
});

describe("placementRecordOf", () => {
  const verdicts: HostVerdict[] = [
    { hostId: "a", passed: true, scores: { leastAllocated: 0.5 }, total: 0.5 },
    { hostId: "b", passed: false, filter: "capacity", reason: "memory" },
    { hostId: "c", passed: true, scores: { leastAllocated: 0.9 }, total: 0.9 },
    { hostId: "d", passed: false, filter: "capacity", reason: "cpu" },
    { hostId: "e", passed: false, filter: "labels", reason: "zone" },
    { hostId: "f", passed: true, scores: { leastAllocated: 0.5 }, total: 0.5 },
  ];

  it("takes the chosen host's scores, the best other host as runner-up and counts rejections by filter", () => {
    const r = placementRecordOf(verdicts, "c", ctx);
    expect(r).toMatchObject({ explained: true, total: 0.9, scores: { leastAllocated: 0.9 }, runnerUpHost: "a", runnerUpTotal: 0.5, hostsFeasible: 3, hostsConsidered: 6 });
    expect(r.rejectedByFilter).toEqual({ capacity: 2, labels: 1 });
  });

  it("has no runner-up when the chosen host was the only one that fitted", () => {
    const r = placementRecordOf([verdicts[0]!, verdicts[1]!], "a", ctx);
    expect(r).toMatchObject({ explained: true, runnerUpHost: "", hostsFeasible: 1 });
  });

  it("claims nothing when the chosen host did not pass in the explanation", () => {
    expect(placementRecordOf(verdicts, "b", ctx)).toMatchObject({ explained: false, scores: {}, total: 0, hostsConsidered: 4, cause: "create" });
    expect(placementRecordOf(verdicts, "zz", ctx).explained).toBe(false);
  });
});

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A controller and `n` hosts that said Hello on scripted streams (placement only). */
async function cluster(n: number) {
  // Long report interval: the scripted streams never report, and must not be closed as silent.
  const { controller, address } = await startController(cleanups, new MemoryStore(), { reportIntervalMs: 60_000 });
  await waitFor("leadership", () => controller.isLeader);
  await Promise.all(
    Array.from({ length: n }, (_, i) => {
      // Different sizes, so the scores differ from host to host.
      const capacity = { vcpus: 8 + 4 * i, memoryMib: (8 + 4 * i) * 1024, diskGib: 500 };
      const hostId = `host-${String(i + 1).padStart(2, "0")}`;
      return rawAgent(cleanups, address, helloFor(hostId, `boot-${i}`, { capacity, labels: { zone: i % 2 ? "b" : "a" } })).first;
    }),
  );
  const { client, call } = operatorApi(cleanups, address);
  return {
    createVm: (spec: VmSpec) => call<{ vm?: Vm }>((m, o, cb) => client.createVm({ spec, requestId: "" }, m, o, cb)),
    createVms: (specs: VmSpec[]) => call<{ vms: Vm[] }>((m, o, cb) => client.createVms({ specs, requestId: "" }, m, o, cb)),
    getVm: (name: string) => call<{ vm?: Vm }>((m, o, cb) => client.getVm({ name }, m, o, cb)),
    plan: (specs: VmSpec[]) => call<PlanPlacementResponse>((m, o, cb) => client.planPlacement({ specs }, m, o, cb)),
  };
}

const spec = (name: string, over: Partial<VmSpec> = {}): VmSpec => ({
  name,
  resources: { vcpus: 2, memoryMib: 2048, diskGib: 10 },
  labels: {},
  group: "",
  requiredHostLabels: {},
  forbiddenHostLabels: {},
  pinnedHosts: [], image: "", networks: [], volumes: [],
  onHostFailure: 0,
  ...over,
});

/** What a plan's placement says of its chosen host, as the record should. */
function expectedOf(plan: PlanPlacementResponse, i: number) {
  const p = plan.placements[i]!;
  const chosen = p.verdicts.find((v) => v.hostId === p.hostId)!;
  const others = p.verdicts.filter((v) => v.passed && v.hostId !== p.hostId).sort((a, b) => b.total - a.total || a.hostId.localeCompare(b.hostId));
  return { hostId: p.hostId, total: chosen.total, scores: chosen.scores, runnerUpHost: others[0]?.hostId ?? "", feasible: p.verdicts.filter((v) => v.passed).length };
}

describe("the placement record on the VM", () => {
  it("is what PlanPlacement says of the same state: the chosen host's scores, the runner-up, and the filters' rejections", async () => {
    const c = await cluster(5);
    const s = spec("web-1", { requiredHostLabels: { zone: "a" } });
    const plan = await c.plan([s]);
    const want = expectedOf(plan, 0);
    const { vm } = await c.createVm(s);
    expect(vm!.hostId).toBe(want.hostId);
    const record = (await c.getVm("web-1")).vm!.placement!;
    expect(record).toMatchObject({ explained: true, cause: "create", preset: "spread", hostsConsidered: 5, hostsFeasible: want.feasible, runnerUpHost: want.runnerUpHost });
    expect(record.total).toBeCloseTo(want.total, 9);
    expect(Object.keys(record.scores).sort()).toEqual(Object.keys(want.scores).sort());
    // Hosts of zone b were rejected by the label filter, and counted under its name.
    expect(Object.values(record.rejectedByFilter).reduce((a, b) => a + b, 0)).toBe(2);
    expect(record.decidedAtMs).toBeGreaterThan(0);
  });

  it("for a gang, each VM's record sees the VMs before it placed, as the plan does", async () => {
    const c = await cluster(4);
    const specs = [spec("g-1"), spec("g-2"), spec("g-3")];
    const plan = await c.plan(specs);
    const { vms } = await c.createVms(specs);
    for (let i = 0; i < specs.length; i++) {
      const want = expectedOf(plan, i);
      expect(vms[i]!.hostId).toBe(want.hostId);
      expect(vms[i]!.placement).toMatchObject({ explained: true, cause: "gang", runnerUpHost: want.runnerUpHost });
      expect(vms[i]!.placement!.total).toBeCloseTo(want.total, 9);
    }
  });

  it("a gang whose one transaction would need more guards than the store takes is refused, naming the way out", async () => {
    const c = await cluster(83);
    const small = { vcpus: 1, memoryMib: 128, diskGib: 1 };
    const err = await c.createVms(Array.from({ length: 100 }, (_, i) => spec(`wide-${i}`, { resources: small }))).catch((e: ServiceError) => e);
    expect((err as ServiceError).code).toBe(3);
    expect((err as ServiceError).details).toMatch(/100 VMs placed on \d+ hosts need \d+ guards in one transaction, more than the store's 128: create them in smaller gangs \(at most 64 always fit\)/);
    expect((await c.getVm("wide-0").catch((e: ServiceError) => e)) as ServiceError).toMatchObject({ code: 5 });
  });

  it("a decision past the verdict ceiling keeps only its context", async () => {
    const hosts = 83;
    const c = await cluster(hosts);
    const small = { vcpus: 1, memoryMib: 128, diskGib: 1 };
    const { vms: two } = await c.createVms([spec("solo-1", { resources: small }), spec("solo-2", { resources: small })]);
    expect(two[1]!.placement).toMatchObject({ explained: true, cause: "gang", hostsConsidered: hosts });
    // 83 × 100 = 8,300 verdicts: past the ceiling. Pinned to two hosts, so the one transaction
    // needs 100 + 2 guards (the store takes 128).
    const count = Math.ceil((EXPLAIN_MAX_VERDICTS + 1) / hosts);
    expect(count).toBeLessThanOrEqual(100);
    const pinnedHosts = ["host-01", "host-83"];
    const { vms } = await c.createVms(Array.from({ length: count }, (_, i) => spec(`big-${i}`, { resources: small, pinnedHosts })));
    expect(vms[0]!.placement).toMatchObject({ explained: false, cause: "gang", hostsConsidered: hosts, scores: {} });
  });
});
