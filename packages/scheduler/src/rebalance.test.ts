import { describe, expect, it } from "vitest";
import { ErrorCode, isBerthError } from "@berth/core";
import {
  allocatable,
  checkMove,
  hostUtilisations,
  imbalanceOf,
  moveRequestOf,
  planRebalance,
  resolveSchedulerOptions,
  utilisation,
  withoutPlacement,
  withPlacement,
  type HostSnapshot,
  type PlacementRequest,
  type RebalanceInput,
  type RebalanceOptions,
  type RebalanceVm,
} from "./index.js";
import { host, res } from "./scheduler.testkit.js";
import { applyMoves } from "./rebalance.testkit.js";

const spread = resolveSchedulerOptions({});
// A test host: 16 physical vCPU × 4 = 64 allocatable vCPU; 65536 − 1024 = 64512 MiB.

/** A cluster from a list of hosts and, per VM, where it is and what it asks. */
function cluster(hostList: HostSnapshot[], vms: { id: string; on: string; req?: Partial<PlacementRequest>; vcpus?: number; mib?: number; movable?: boolean; usage?: RebalanceVm["usage"] }[]): RebalanceInput {
  const hosts = new Map(hostList.map((h) => [h.id, h]));
  const out: RebalanceVm[] = vms.map((v) => {
    const request: PlacementRequest = { name: v.id, resources: res(v.vcpus ?? 4, v.mib ?? 4096, 10), ...v.req };
    hosts.set(v.on, withPlacement(hosts.get(v.on)!, request.resources, request.group?.name));
    const vm: RebalanceVm = { id: v.id, name: v.id, hostId: v.on, request, movable: v.movable ?? true };
    if (v.usage) vm.usage = v.usage;
    return vm;
  });
  return { hosts: hostList.map((h) => hosts.get(h.id)!), vms: out };
}

const ids = (n: number, prefix = "h"): string[] => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

/** `perHost` VMs of 4 vCPU / 4 GiB on each of the first `hot` of `n` hosts. */
function skewed(n: number, hot: number, perHost: number, over: (i: number, j: number) => Partial<Parameters<typeof cluster>[1][number]> = () => ({})) {
  const hs = ids(n).map((id) => host(id));
  const vms = [];
  for (let i = 0; i < hot; i++) for (let j = 0; j < perHost; j++) vms.push({ id: `vm-${i}-${j}`, on: `h-${i}`, ...over(i, j) });
  return cluster(hs, vms);
}

const balance = (over: Partial<RebalanceOptions> = {}): RebalanceOptions => ({ goal: "balance", maxMoves: 100, ...over });

describe("withoutPlacement", () => {
  it("is the exact inverse of withPlacement, members included", () => {
    const h = host("a", { allocated: res(4, 8192, 20), vmCount: 2, groupMembers: { web: 1 } });
    const back = withoutPlacement(withPlacement(h, res(2, 2048, 10), "web"), res(2, 2048, 10), "web");
    expect(back).toEqual(h);
    expect(withoutPlacement(h, res(4, 8192, 20), "web")).toMatchObject({ allocated: res(0, 0, 0), vmCount: 1, groupMembers: { web: 0 } });
  });
});

describe("imbalanceOf", () => {
  it("is the std-dev over ready, uncordoned hosts of the mean of the vCPU and memory fractions", () => {
    // 32 of 64 vCPU (0.5) and 32768 of 64512 MiB on h-0; nothing on h-1; h-2 is down and does not count.
    const input = cluster([host("h-0"), host("h-1"), host("h-2", { ready: false })], ids(8, "v").map((id) => ({ id, on: "h-0" })));
    const u0 = (32 / 64 + 32768 / 64512) / 2;
    expect(hostUtilisations(input, spread, "allocation")).toEqual({ "h-0": u0, "h-1": 0 });
    expect(imbalanceOf(input, spread, "allocation")).toBeCloseTo(u0 / 2, 12);
  });

  it("uses the one definition, utilisation(), that the benchmark and the controller can call", () => {
    const input = cluster([host("h-0", { allocationRatio: { vcpus: 2 } }), host("h-1")], [
      { id: "a", on: "h-0", vcpus: 3, mib: 5000 },
      { id: "b", on: "h-1", vcpus: 7, mib: 100 },
    ]);
    const u = hostUtilisations(input, spread, "allocation");
    for (const h of input.hosts) {
      const a = allocatable(h, spread);
      expect(u[h.id]).toBe(utilisation([h.allocated.vcpus, h.allocated.memoryMib], [a.vcpus, a.memoryMib]));
    }
    expect(utilisation([1, 1], [0, 4])).toBe(0.25); // a resource the host has none of does not count
    expect(utilisation([0, 0], [0, 0])).toBe(0);
  });

  it("on usage: measured use over physical capacity, a VM without usage at its request", () => {
    const input = cluster([host("h-0"), host("h-1")], [
      { id: "a", on: "h-0", usage: { cpuCores: 8, memoryMib: 16384 } },
      { id: "b", on: "h-1" },
    ]);
    const u = hostUtilisations(input, spread, "usage");
    expect(u["h-0"]).toBeCloseTo((8 / 16 + 16384 / 65536) / 2, 12);
    expect(u["h-1"]).toBeCloseTo((4 / 16 + 4096 / 65536) / 2, 12);
  });
});

describe("planRebalance: balance", () => {
  it("spreads a failover's skew over the empty hosts, each VM moved once, below the threshold", () => {
    const input = skewed(6, 2, 8);
    const plan = planRebalance(input, spread, balance());
    expect(plan.imbalanceBefore).toBeGreaterThan(0.2);
    expect(plan.imbalanceAfter).toBeLessThanOrEqual(0.05);
    expect(plan.note).toMatch(/at or below the threshold/);
    expect(new Set(plan.moves.map((m) => m.vmId)).size).toBe(plan.moves.length);
    for (const m of plan.moves) {
      expect(["h-0", "h-1"]).toContain(m.from);
      expect(["h-0", "h-1"]).not.toContain(m.to);
      expect(m.costGiB).toBe(4);
      expect(m.reason).toMatch(/^balance: h-[01] at .* → h-[2-5] at /);
    }
    expect(plan.movedGiB).toBe(4 * plan.moves.length);
    expect(plan.imbalanceAfter).toBeCloseTo(imbalanceOf(applyMoves(input, plan.moves), spread, "allocation"), 12);
    // Planning again proposes nothing: the plan ended at the threshold.
    expect(planRebalance(applyMoves(input, plan.moves), spread, balance()).moves).toEqual([]);
  });

  it("is deterministic and does not change its input", () => {
    const input = skewed(8, 3, 6);
    const copy = structuredClone(input);
    const a = planRebalance(input, spread, balance());
    expect(input).toEqual(copy);
    const shuffled = { hosts: [...input.hosts].reverse(), vms: input.vms };
    expect(planRebalance(shuffled, spread, balance())).toEqual(a);
  });

  it("never moves a VM that is not movable, nor off or onto a frozen, cordoned or down host", () => {
    const hs = [host("h-0"), host("h-1"), host("h-2", { cordoned: true }), host("h-3", { ready: false }), host("h-4"), host("h-5")];
    const vms = [
      ...ids(6, "a").map((id) => ({ id, on: "h-0", movable: id !== "a-0" && id !== "a-1" })),
      ...ids(6, "b").map((id) => ({ id, on: "h-1" })),
      ...ids(6, "c").map((id) => ({ id, on: "h-2" })),
    ];
    const plan = planRebalance(cluster(hs, vms), spread, balance({ frozenHosts: new Set(["h-1", "h-5"]) }));
    expect(plan.moves.length).toBeGreaterThan(0);
    for (const m of plan.moves) {
      expect(["a-0", "a-1"]).not.toContain(m.vmId);
      expect(m.from).toBe("h-0");
      expect(m.to).toBe("h-4");
    }
  });

  it("keeps hard anti-affinity: two members never end on one host", () => {
    const input = skewed(4, 1, 8, (_, j) => ({ req: { group: { name: "web", policy: "anti-affinity" } }, id: `web-${j}` }));
    // Eight members on h-0 (as after a failover that ignored the group): they may leave, one per host.
    const plan = planRebalance(input, spread, balance({ threshold: 0 }));
    const to = plan.moves.map((m) => m.to);
    expect(new Set(to).size).toBe(to.length);
    for (const m of plan.moves) expect(checkMove(input.hosts, m, input.vms[0]!.request, spread)).toBeUndefined();
  });

  it("keeps pins and labels", () => {
    const hs = [host("h-0", { labels: { zone: "a" } }), host("h-1", { labels: { zone: "b" } }), host("h-2", { labels: { zone: "a" } }), host("h-3", { labels: { zone: "b" } })];
    const vms = [
      ...ids(4, "p").map((id) => ({ id, on: "h-0", req: { pinnedHosts: ["h-0", "h-3"] } })),
      ...ids(4, "z").map((id) => ({ id, on: "h-0", req: { requiredLabels: { zone: "a" } } })),
    ];
    const plan = planRebalance(cluster(hs, vms), spread, balance({ threshold: 0 }));
    expect(plan.moves.length).toBeGreaterThan(0);
    for (const m of plan.moves) expect(m.to).toBe(m.vmId.startsWith("p") ? "h-3" : "h-2");
  });

  it("keeps each VM's networks: a target offers every network of its NICs", () => {
    const hs = [
      host("h-0", { networks: new Set(["default", "lab"]) }),
      host("h-1", { networks: new Set(["default"]) }),
      host("h-2", { networks: new Set(["default", "lab"]) }),
      host("h-3"),
    ];
    const vms = [
      ...ids(6, "lab").map((id) => ({ id, on: "h-0", req: { networks: ["lab"] } })),
      ...ids(2, "def").map((id) => ({ id, on: "h-0", req: { networks: ["default"] } })),
    ];
    const input = cluster(hs, vms);
    const plan = planRebalance(cluster(hs.slice(0, 3), vms), spread, balance({ threshold: 0 }));
    expect(plan.moves.filter((m) => m.vmId.startsWith("lab")).length).toBeGreaterThan(0);
    expect(plan.moves.filter((m) => m.vmId.startsWith("def")).length).toBeGreaterThan(0);
    for (const m of plan.moves) expect(m.vmId.startsWith("lab") ? ["h-2"] : ["h-1", "h-2"]).toContain(m.to);
    // Without the filter the lab VMs would go to h-1 too: the same plan with h-1 on the lab network.
    const open = planRebalance(cluster([hs[0]!, { ...hs[1]!, networks: new Set(["default", "lab"]) }, hs[2]!], vms), spread, balance({ threshold: 0 }));
    expect(open.moves.some((m) => m.vmId.startsWith("lab") && m.to === "h-1")).toBe(true);
    const lab = input.vms[0]!.request;
    expect(checkMove(input.hosts, { from: "h-0", to: "h-1" }, lab, spread)).toBe('h-1: networks: lacks network "lab" (offers: default)');
    expect(checkMove(input.hosts, { from: "h-0", to: "h-3" }, lab, spread)).toBe('h-3: networks: lacks network "lab" (offers none)');
  });

  it("moves a VM with its volumes: they pin it to no host, the target must hold them, and the move copies them", () => {
    // h-0 holds six VMs of 4 vCPU / 4 GiB / 10 GiB, each with 100 GiB of volumes (in its allocated
    // disk); h-1 has 50 GiB of disk free, h-2 all of it.
    const hosts = [host("h-0"), host("h-1", { allocated: res(0, 0, 950) }), host("h-2")];
    const vms: RebalanceVm[] = ids(6, "v").map((id) => ({
      id,
      name: id,
      hostId: "h-0",
      request: { name: id, resources: res(4, 4096, 10), volumes: { hostId: "h-0", names: [`${id}-data`] } },
      movable: true,
      volumeGib: 100,
    }));
    hosts[0] = { ...hosts[0]!, allocated: res(24, 6 * 4096, 6 * 110), vmCount: 6 };
    const input: RebalanceInput = { hosts, vms };
    const plan = planRebalance(input, spread, balance({ threshold: 0 }));
    expect(plan.moves.length).toBeGreaterThan(0);
    for (const m of plan.moves) {
      expect(m.to).toBe("h-2");
      expect(m.costGiB).toBe(4 + 100); // memory, and the volumes (the VM's own disk is shared storage here)
    }
    expect(applyMoves(input, plan.moves).hosts.find((h) => h.id === "h-2")!.allocated.diskGib).toBe(110 * plan.moves.length);
    // The same request the planner checks with, for the controller's re-check.
    const request = moveRequestOf(vms[0]!);
    expect(request).toEqual({ name: "v-0", resources: res(4, 4096, 110) });
    expect(checkMove(input.hosts, { from: "h-0", to: "h-1" }, request, spread)).toBe("h-1: capacity: disk_gib: needs 110 GiB, 50 GiB free of 1000 allocatable");
    expect(checkMove(input.hosts, { from: "h-0", to: "h-2" }, request, spread)).toBeUndefined();
    // The volumes' pin is the create's rule, not a move's: checkMove ignores it.
    expect(checkMove(input.hosts, { from: "h-0", to: "h-2" }, vms[0]!.request, spread)).toBeUndefined();
    // Local disk too: memory, disk and volumes.
    const copying = planRebalance({ hosts, vms: vms.map((v) => ({ ...v, copiesDisk: true })) }, spread, balance({ threshold: 0 }));
    for (const m of copying.moves) expect(m.costGiB).toBe(4 + 10 + 100);
    // A VM without volumes is asked as it is.
    const plain = { request: { name: "p", resources: res(1, 1, 1) } };
    expect(moveRequestOf(plain)).toBe(plain.request);
  });

  it("prefers, among equal targets, one holding the VM's image", () => {
    const input = cluster([host("h-0"), host("h-1"), host("h-2", { images: new Set(["img-1"]) })], ids(8, "v").map((id) => ({ id, on: "h-0", req: { imageId: "img-1" } })));
    expect(planRebalance(input, spread, balance({ maxMoves: 1 })).moves.map((m) => m.to)).toEqual(["h-2"]);
    expect(planRebalance(input, resolveSchedulerOptions({ weights: { imageLocality: 0 } }), balance({ maxMoves: 1 })).moves.map((m) => m.to)).toEqual(["h-1"]);
  });

  it("moves no VM of a hard affinity group away from its other members", () => {
    const input = skewed(4, 1, 8, (_, j) => ({ id: `db-${j}`, req: { group: { name: "db", policy: "affinity" } } }));
    expect(planRebalance(input, spread, balance()).moves).toEqual([]);
  });

  it("respects the budget per plan and per host", () => {
    const input = skewed(10, 2, 12);
    expect(planRebalance(input, spread, balance({ maxMoves: 3 })).moves).toHaveLength(3);
    expect(planRebalance(input, spread, balance({ maxMoves: 3 })).note).toMatch(/move budget reached/);
    const plan = planRebalance(input, spread, balance({ maxMovesPerHost: 2 }));
    const count = new Map<string, number>();
    for (const m of plan.moves) for (const h of [m.from, m.to]) count.set(h, (count.get(h) ?? 0) + 1);
    expect(Math.max(...count.values())).toBeLessThanOrEqual(2);
    expect(plan.moves).toHaveLength(4); // two out of each hot host
  });

  it("gates on benefit per GiB: big VMs that buy too little per GiB stay", () => {
    const input = skewed(6, 2, 8, () => ({ vcpus: 1, mib: 16384 }));
    const all = planRebalance(input, spread, balance());
    expect(all.moves.length).toBeGreaterThan(0);
    const perGiB = Math.min(...all.moves.map((m) => m.benefit / m.costGiB));
    expect(planRebalance(input, spread, balance({ minBenefitPerGiB: perGiB * 0.99 })).moves.length).toBeGreaterThan(0);
    expect(planRebalance(input, spread, balance({ minBenefitPerGiB: 1 })).moves).toEqual([]);
  });

  it("weighs measured use by default when every movable VM reports it", () => {
    // Equal by allocation; h-0's VMs are busy, h-1's idle.
    const hs = [host("h-0"), host("h-1"), host("h-2")];
    const vms = [
      ...ids(4, "busy").map((id) => ({ id, on: "h-0", usage: { cpuCores: 3.5, memoryMib: 4000 } })),
      ...ids(4, "idle").map((id) => ({ id, on: "h-1", usage: { cpuCores: 0.1, memoryMib: 500 } })),
      ...ids(4, "mid").map((id) => ({ id, on: "h-2", usage: { cpuCores: 0.1, memoryMib: 500 } })),
    ];
    const input = cluster(hs, vms);
    expect(imbalanceOf(input, spread, "allocation")).toBeCloseTo(0, 12);
    const plan = planRebalance(input, spread, balance({ threshold: 0.02 }));
    expect(plan.metric).toBe("usage");
    expect(plan.moves.length).toBeGreaterThan(0);
    expect(plan.moves.every((m) => m.vmId.startsWith("busy"))).toBe(true);
    expect(planRebalance(input, spread, balance({ metric: "allocation" })).moves).toEqual([]);
  });

  it("chooses among the cold hosts as the scheduler's weighers would (pack: the fuller one)", () => {
    const pack = resolveSchedulerOptions({ preset: "pack" });
    // h-0 hot; h-1 empty; h-2 lightly used: both are cold, spread prefers h-1, pack h-2.
    const input = cluster([host("h-0"), host("h-1"), host("h-2")], [...ids(10, "a").map((id) => ({ id, on: "h-0" })), { id: "b", on: "h-2" }]);
    const one = (o: typeof spread) => planRebalance(input, o, balance({ maxMoves: 1 })).moves[0]!.to;
    expect(one(spread)).toBe("h-1");
    expect(one(pack)).toBe("h-2");
  });

  it("plans nothing with no budget, no hosts or no VMs", () => {
    expect(planRebalance(skewed(4, 1, 8), spread, balance({ maxMoves: 0 })).moves).toEqual([]);
    expect(planRebalance({ hosts: [], vms: [] }, spread, balance())).toMatchObject({ moves: [], imbalanceBefore: 0, imbalanceAfter: 0, freedHosts: [] });
    expect(planRebalance({ hosts: [host("h-0")], vms: [] }, spread, balance()).moves).toEqual([]);
  });
});

describe("planRebalance: consolidate", () => {
  const consolidate = (over: Partial<RebalanceOptions> = {}): RebalanceOptions => ({ goal: "consolidate", maxMoves: 100, maxMovesPerHost: 100, minFreeFraction: 0, ...over });

  it("empties the least used hosts onto the fullest, all or nothing, and says which", () => {
    // h-0: 6 VMs, h-1: 3, h-2: 2, h-3: 1, h-4, h-5 empty; 4 vCPU / 4 GiB each, 16 fit a host.
    const counts = [6, 3, 2, 1, 0, 0];
    const vms = counts.flatMap((k, i) => Array.from({ length: k }, (_, j) => ({ id: `vm-${i}-${j}`, on: `h-${i}` })));
    const input = cluster(ids(6).map((id) => host(id)), vms);
    const plan = planRebalance(input, spread, consolidate());
    expect(plan.freedHosts).toEqual(["h-1", "h-2", "h-3"]);
    expect(new Set(plan.moves.map((m) => m.to))).toEqual(new Set(["h-0"]));
    expect(plan.moves.map((m) => m.from)).toEqual(["h-3", "h-2", "h-2", "h-1", "h-1", "h-1"]);
    expect(plan.moves[1]!.reason).toBe("consolidate: empties h-2 (move 1 of 2) onto h-0, best fit");
    expect(plan.moves[1]!.benefit).toBe(0.5);
    expect(plan.budgetBound).toBe(false);
    // Nothing is left to do: planning again proposes nothing.
    expect(planRebalance(applyMoves(input, plan.moves), spread, consolidate()).moves).toEqual([]);
  });

  it("never starts to empty a host it cannot finish: a VM that must stay, or one that fits nowhere, keeps its host", () => {
    const input = cluster(ids(4).map((id) => host(id)), [
      { id: "stuck", on: "h-0", vcpus: 30, mib: 30000, movable: false },
      { id: "free-1", on: "h-0" },
      { id: "huge", on: "h-1", vcpus: 40, mib: 40000 },
      { id: "small", on: "h-2", vcpus: 1, mib: 1024 },
      { id: "biggest", on: "h-3", vcpus: 50, mib: 50000 },
    ]);
    // small goes (to h-3, the fullest); h-0 keeps a VM that must stay; huge and biggest fit on no other host.
    const plan = planRebalance(input, spread, consolidate());
    expect(plan.freedHosts).toEqual(["h-2"]);
    expect(plan.moves.map((m) => `${m.vmId} → ${m.to}`)).toEqual(["small → h-3"]);
    expect(plan.note).toBe("no further host can be emptied: 2 hosts whose VMs do not all fit elsewhere");
  });

  it("keeps the minimum free capacity on the hosts left", () => {
    const vms = [0, 1, 2, 3].flatMap((i) => ids(4, `v${i}`).map((id) => ({ id, on: `h-${i}` })));
    const input = cluster(ids(4).map((id) => host(id)), vms);
    // 16 VMs of 4 vCPU / 4 GiB: 64 of 256 allocatable vCPU. Two hosts left: 25 % of the cluster's
    // vCPU free (24.6 % of its memory); three: 50 % (49.6 %).
    expect(planRebalance(input, spread, consolidate({ minFreeFraction: 0.1 })).freedHosts).toHaveLength(2);
    expect(planRebalance(input, spread, consolidate({ minFreeFraction: 0.246 })).freedHosts).toHaveLength(2);
    expect(planRebalance(input, spread, consolidate({ minFreeFraction: 0.247 })).freedHosts).toHaveLength(1);
    expect(planRebalance(input, spread, consolidate({ minFreeFraction: 0.496 })).freedHosts).toHaveLength(1);
    const none = planRebalance(input, spread, consolidate({ minFreeFraction: 0.5 }));
    expect(none.freedHosts).toEqual([]);
    expect(none.note).toBe("no further host can be emptied: 4 kept: the hosts left would have less than 0.5 of the allocatable free");
    // The default keeps 10 %.
    expect(planRebalance(input, spread, { goal: "consolidate", maxMoves: 100, maxMovesPerHost: 100 }).freedHosts).toHaveLength(2);
  });

  it("empties a host only within the per-host and per-plan budgets", () => {
    const input = cluster(ids(3).map((id) => host(id)), [...ids(6, "a").map((id) => ({ id, on: "h-0" })), ...ids(3, "b").map((id) => ({ id, on: "h-1" }))]);
    expect(planRebalance(input, spread, consolidate({ maxMovesPerHost: 2 })).moves).toEqual([]);
    expect(planRebalance(input, spread, consolidate({ maxMovesPerHost: 2 })).budgetBound).toBe(true);
    expect(planRebalance(input, spread, consolidate({ maxMoves: 2 })).moves).toEqual([]);
    expect(planRebalance(input, spread, consolidate({ maxMovesPerHost: 3 })).freedHosts).toEqual(["h-1"]);
  });

  it("re-routes a VM it moved onto a host it then empties: one move, straight to where it ends", () => {
    // a (on h-a) cannot go to h-h (label); best fit sends it to h-r, fuller than h-t (which must keep
    // its VM). h-r is emptied next: r goes to h-h, a to h-t — a's move becomes h-a → h-t, at the end.
    const hs = [host("h-a"), host("h-h", { labels: { nogo: "1" } }), host("h-r"), host("h-t")];
    const input = cluster(hs, [
      { id: "a", on: "h-a", vcpus: 3, mib: 3072, req: { forbiddenLabels: { nogo: "*" } } },
      { id: "h", on: "h-h", vcpus: 38, mib: 38000 },
      { id: "r", on: "h-r", vcpus: 19, mib: 19000 },
      { id: "t", on: "h-t", vcpus: 13, mib: 13000, movable: false },
    ]);
    const plan = planRebalance(input, spread, consolidate());
    expect(plan.freedHosts).toEqual(["h-a", "h-r"]);
    expect(plan.moves.map((m) => `${m.vmId}: ${m.from} → ${m.to}`)).toEqual(["r: h-r → h-h", "a: h-a → h-t"]);
    expect(plan.moves[1]!.reason).toMatch(/re-routed/);
    // Valid in order, and a fixed point.
    let hosts = input.hosts;
    for (const m of plan.moves) {
      const vm = input.vms.find((v) => v.id === m.vmId)!;
      expect(checkMove(hosts, m, vm.request, spread)).toBeUndefined();
      hosts = applyMoves({ hosts, vms: input.vms.map((v) => ({ ...v, hostId: v.id === m.vmId ? m.from : v.hostId })) }, [m]).hosts;
    }
    expect(planRebalance(applyMoves(input, plan.moves), spread, consolidate()).moves).toEqual([]);
  });
});

describe("checkMove", () => {
  it("is undefined for a valid move, else the filter's reason as placeVm words it", () => {
    const input = cluster([host("h-0"), host("h-1", { allocated: res(0, 62000, 0) }), host("h-2", { cordoned: true })], [
      { id: "a", on: "h-0", req: { group: { name: "web", policy: "anti-affinity" } } },
      { id: "b", on: "h-0" },
    ]);
    const req = input.vms[0]!.request;
    expect(checkMove(input.hosts, { from: "h-0", to: "h-1" }, { ...req, resources: res(1, 1024, 0) }, spread)).toBeUndefined();
    expect(checkMove(input.hosts, { from: "h-0", to: "h-1" }, req, spread)).toBe("h-1: capacity: memory_mib: needs 4096 MiB, 2512 MiB free of 64512 allocatable");
    expect(checkMove(input.hosts, { from: "h-0", to: "h-2" }, req, spread)).toBe("h-2: ready: host is cordoned");
    expect(checkMove(input.hosts, { from: "h-0", to: "h-0" }, req, spread)).toBe("h-0: the VM is already there");
    expect(checkMove(input.hosts, { from: "h-0", to: "h-9" }, req, spread)).toMatch(/^h-9: the target host is not in the snapshot/);
  });

  it("sees the VM gone from its source: its own group membership there does not count", () => {
    const hs = [host("h-0"), host("h-1")];
    const input = cluster(hs, [{ id: "a", on: "h-0", req: { group: { name: "db", policy: "affinity" } } }]);
    // The only member: once off h-0 the group has no members, so h-1 may take it.
    expect(checkMove(input.hosts, { from: "h-0", to: "h-1" }, input.vms[0]!.request, spread)).toBeUndefined();
    const two = cluster(hs, ids(2, "db").map((id) => ({ id, on: "h-0", req: { group: { name: "db", policy: "affinity" } } })));
    expect(checkMove(two.hosts, { from: "h-0", to: "h-1" }, two.vms[0]!.request, spread)).toBe("h-1: groups: group 'db': affinity: members are on other hosts (h-0)");
  });
});

describe("planRebalance: bad options and inputs", () => {
  const input = skewed(3, 1, 2);
  const bad = (o: Partial<RebalanceOptions>, field: string): void => {
    let err: unknown;
    try {
      planRebalance(input, spread, { ...balance(), ...o } as RebalanceOptions);
    } catch (e) {
      err = e;
    }
    expect(isBerthError(err, ErrorCode.InvalidArgument)).toBe(true);
    expect((err as Error).message).toMatch(new RegExp(`^${field.replace(/[.[\]]/g, "\\$&")}: `));
  };

  it("names the field at fault", () => {
    bad({ goal: "spread" as never }, "rebalance.goal");
    bad({ metric: "load" as never }, "rebalance.metric");
    bad({ maxMoves: -1 }, "rebalance.max_moves");
    bad({ maxMoves: 1.5 }, "rebalance.max_moves");
    bad({ maxMovesPerHost: Number.NaN }, "rebalance.max_moves_per_host");
    bad({ threshold: -0.1 }, "rebalance.threshold");
    bad({ minBenefitPerGiB: Infinity }, "rebalance.min_benefit_per_gib");
    bad({ minFreeFraction: 1 }, "rebalance.min_free_fraction");
    bad({ frozenHosts: ["h-0"] as never }, "rebalance.frozen_hosts");
  });

  it("refuses an inconsistent snapshot", () => {
    const expectInvalid = (i: RebalanceInput, field: string): void => {
      expect(() => planRebalance(i, spread, balance())).toThrow(new RegExp(`^${field.replace(/[.[\]]/g, "\\$&")}: `));
    };
    expectInvalid({ ...input, vms: [...input.vms, input.vms[0]!] }, "vms[2].id");
    expectInvalid({ ...input, vms: [{ ...input.vms[0]!, hostId: "nowhere" }] }, "vms[0].host_id");
    expectInvalid({ hosts: input.hosts.map((h) => ({ ...h, allocated: res(0, 0, 0) })), vms: input.vms }, "hosts[h-0].allocated.vcpus");
    expectInvalid({ ...input, vms: [{ ...input.vms[0]!, request: { ...input.vms[0]!.request, group: { name: "g", policy: "anti-affinity" } } }] }, "hosts[h-0].group_members.g");
    expectInvalid({ ...input, vms: [{ ...input.vms[0]!, usage: { cpuCores: -1, memoryMib: 0 } }] }, "vms[0].usage.cpu_cores");
    expectInvalid({ ...input, vms: [{ ...input.vms[0]!, volumeGib: 1.5 }] }, "vms[0].volume_gib");
    expectInvalid({ ...input, vms: [{ ...input.vms[0]!, request: { ...input.vms[0]!.request, networks: [""] } }] }, "vms[0].request.networks[0]");
    // Volumes the host does not count in its allocated disk: the snapshot is not one consistent view.
    expectInvalid({ ...input, vms: [{ ...input.vms[0]!, volumeGib: 5000 }] }, "hosts[h-0].allocated.disk_gib");
  });
});
