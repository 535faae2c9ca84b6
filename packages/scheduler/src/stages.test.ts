import { describe, expect, it } from "vitest";
import { ErrorCode, isBerthError } from "@berth/core";
import {
  alignedFitWeigher,
  balancedWeigher,
  DEFAULT_PIPELINE,
  imageLocalityWeigher,
  networksFilter,
  PlacementEngine,
  volumesFilter,
  fleetDirection,
  gangUnplacedError,
  mostAllocatedWeigher,
  placeVm,
  placeVms,
  resolveSchedulerOptions,
  STEER_MIN_EMPTY_HOSTS,
  STEER_MIN_HOSTS,
  steers,
  tieBreakKey,
  usableHostCounts,
  withPlacement,
  type HostSnapshot,
  type PlacementContext,
  type PlacementDecision,
  type PlacementRequest,
  type ResolvedSchedulerOptions,
  type SchedulerOptions,
} from "./index.js";
import { host, res, vm } from "./scheduler.testkit.js";

const opts = resolveSchedulerOptions();
// 16 physical vCPU × 4 = 64 allocatable; 65536 − 1024 = 64512 MiB; 1000 GiB.

function placed(d: PlacementDecision): string {
  if (!d.placed) throw new Error(`not placed: ${d.reasons.join(" | ")}`);
  return d.hostId;
}

function reasons(d: PlacementDecision): string[] {
  return d.explanation.flatMap((v) => (v.passed ? [] : [`${v.hostId}: ${v.filter}: ${v.reason}`]));
}

function errorOf(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error("expected a throw");
}

/** Places each request in turn, applying each decision; the chosen host ids. */
function sequence(hosts: HostSnapshot[], requests: PlacementRequest[], options: ResolvedSchedulerOptions): string[] {
  const byId = new Map(hosts.map((h) => [h.id, h]));
  return requests.map((r) => {
    const id = placed(placeVm([...byId.values()], r, options));
    byId.set(id, withPlacement(byId.get(id)!, r.resources, r.group?.name));
    return id;
  });
}

const many = (n: number, r: PlacementRequest): PlacementRequest[] => Array.from({ length: n }, (_, i) => ({ ...r, name: `${r.name}-${i}` }));

describe("filters", () => {
  it("pinned: only the pinned hosts, and an empty list pins nothing", () => {
    const hosts = [host("a"), host("b"), host("c", { allocated: res(60, 0, 0) })];
    const d = placeVm(hosts, { ...vm("x", 1, 16, 0), pinnedHosts: ["c", "zz"] }, opts);
    expect(placed(d)).toBe("c");
    expect(reasons(d)).toEqual(["a: pinned: not pinned (pinned: c, zz)", "b: pinned: not pinned (pinned: c, zz)"]);
    expect(placed(placeVm(hosts, { ...vm("x", 1, 16, 0), pinnedHosts: [] }, opts))).toBe("a");
  });

  it("labels: required key=value and forbidden key=value / key=*, naming the label", () => {
    const hosts = [
      host("a", { labels: { zone: "us-2" } }),
      host("b", { labels: {} }),
      host("c", { labels: { zone: "eu-1", gpu: "a100" } }),
      host("d", { labels: { zone: "eu-1", gpu: "t4" } }),
      host("e", { labels: { zone: "eu-1" } }),
    ];
    const required = placeVm(hosts, { ...vm("x", 1, 16, 0), requiredLabels: { zone: "eu-1" }, forbiddenLabels: { gpu: "a100" } }, opts);
    expect(placed(required)).toBe("d");
    expect(reasons(required)).toEqual([
      "a: labels: requires label zone=eu-1 (host has zone=us-2)",
      "b: labels: requires label zone=eu-1 (host has no zone)",
      "c: labels: forbids label gpu=a100",
    ]);
    const none = placeVm(hosts, { ...vm("x", 1, 16, 0), requiredLabels: { zone: "eu-1" }, forbiddenLabels: { gpu: "*" } }, opts);
    expect(placed(none)).toBe("e");
    expect(reasons(none)).toContain("d: labels: forbids label gpu (host has gpu=t4)");
  });

  it("maxVms: at most maxVmsPerHost VMs; 0 is unlimited", () => {
    const o = resolveSchedulerOptions({ maxVmsPerHost: 32 });
    const d = placeVm([host("a", { vmCount: 32 }), host("b", { vmCount: 31, allocated: res(60, 0, 0) })], vm("x", 1, 16, 0), o);
    expect(placed(d)).toBe("b");
    expect(reasons(d)).toEqual(["a: maxVms: max_vms: 32 VMs, limit 32"]);
    expect(placed(placeVm([host("a", { vmCount: 1000 })], vm("x", 1, 16, 0), opts))).toBe("a");
  });

  it("groups: hard anti-affinity rejects a host holding a member, naming the group", () => {
    const web = { name: "web", policy: "anti-affinity" } as const;
    const hosts = [host("a", { groupMembers: { web: 1 } }), host("b", { groupMembers: { web: 2, db: 1 } }), host("c", { groupMembers: { db: 3 }, allocated: res(60, 0, 0) })];
    const d = placeVm(hosts, { ...vm("x", 1, 16, 0), group: web }, opts);
    expect(placed(d)).toBe("c");
    expect(reasons(d)).toEqual(["a: groups: group 'web': anti-affinity: 1 member already here", "b: groups: group 'web': anti-affinity: 2 members already here"]);
  });

  it("groups: hard affinity follows the members once there are some; the first may go anywhere", () => {
    const db = { name: "db", policy: "affinity" } as const;
    const hosts = [host("a"), host("b", { groupMembers: { db: 1 }, allocated: res(60, 0, 0) }), host("c", { groupMembers: { web: 1 } })];
    const d = placeVm(hosts, { ...vm("x", 1, 16, 0), group: db }, opts);
    expect(placed(d)).toBe("b");
    expect(reasons(d)).toEqual(["a: groups: group 'db': affinity: members are on other hosts (b)", "c: groups: group 'db': affinity: members are on other hosts (b)"]);
    expect(placed(placeVm([host("a"), host("b")], { ...vm("x", 1, 16, 0), group: { name: "new", policy: "affinity" } }, opts))).toBe("a");
  });

  it("capacity: honours a host's own ratio and reserve", () => {
    const h = host("a", { allocationRatio: { vcpus: 1 }, reserved: { memoryMib: 0 }, allocated: res(0, 65536, 0) });
    const d = placeVm([h], vm("x", 17, 1, 0), opts);
    expect(d.placed ? [] : d.reasons).toEqual([
      "a: capacity: vcpus: needs 17 vCPU, 16 vCPU free of 16 allocatable; memory_mib: needs 1 MiB, 0 MiB free of 65536 allocatable",
    ]);
    expect(placed(placeVm([h], vm("x", 16, 0, 0), opts))).toBe("a");
  });

  it("networks: a host lacking any of the NICs' networks is rejected, naming what it lacks and what it offers", () => {
    const hosts = [
      host("a", { networks: new Set(["default", "br0"]) }),
      host("b"),
      host("c", { networks: new Set(["lab", "default"]), allocated: res(60, 0, 0) }),
      host("d", { networks: new Set() }),
    ];
    // Two NICs on lab, one on default: the repeat is asked once.
    const d = placeVm(hosts, { ...vm("x", 1, 16, 0), networks: ["lab", "default", "lab"] }, opts);
    expect(placed(d)).toBe("c");
    expect(reasons(d)).toEqual([
      'a: networks: lacks network "lab" (offers: br0, default)',
      'b: networks: lacks networks "lab", "default" (offers none)',
      'd: networks: lacks networks "lab", "default" (offers none)',
    ]);
    // No NICs (or no networks named) constrain nothing, even on a host that offers none.
    expect(placed(placeVm([host("b")], vm("x", 1, 16, 0), opts))).toBe("b");
    expect(placed(placeVm([host("b")], { ...vm("x", 1, 16, 0), networks: [] }, opts))).toBe("b");
  });

  it("networks: the reason is bounded — at most 8 names each way, each cut at 64 characters", () => {
    const offers = new Set(Array.from({ length: 12 }, (_, i) => `n${String(i).padStart(2, "0")}`));
    const long = "z".repeat(100);
    const d = placeVm([host("a", { networks: offers })], { ...vm("x", 1, 16, 0), networks: [long, ...Array.from({ length: 9 }, (_, i) => `m${i}`)] }, opts);
    expect(reasons(d)).toEqual([
      `a: networks: lacks networks "${"z".repeat(64)}… (100 characters)", "m0", "m1", "m2", "m3", "m4", "m5", "m6" and 2 more (offers: n00, n01, n02, n03, n04, n05, n06, n07 and 4 more)`,
    ]);
    // The engine asks without reasons: a plain failure.
    expect(networksFilter.filter(host("a"), { request: { ...vm("x", 1, 16, 0), networks: ["lab"] }, options: opts, groupHosts: [], pinned: undefined, explain: false })).toEqual({ pass: false, reason: "" });
  });

  it("volumes: only the host holding the VM's bound volumes passes, whatever the others offer", () => {
    const hosts = [host("a"), host("b", { allocated: res(60, 60000, 900) }), host("c")];
    const data = { ...vm("x", 1, 16, 0), volumes: { hostId: "b", names: ["data-1", "data-2"] } };
    const d = placeVm(hosts, data, opts);
    expect(placed(d)).toBe("b");
    expect(reasons(d)).toEqual(["a: volumes: volumes data-1, data-2 are on b", "c: volumes: volumes data-1, data-2 are on b"]);
    // Their host down: nothing can take the VM, and its own reason says why.
    const down = placeVm([host("a"), host("b", { ready: false })], { ...data, volumes: { hostId: "b", names: ["data-1"] } }, opts);
    expect(down.placed ? [] : down.reasons).toEqual(["a: volumes: volume data-1 is on b", "b: ready: host is not Ready"]);
    // It names its only candidate, so the engine asks no other host.
    expect(volumesFilter.candidates?.({ request: data, options: opts, groupHosts: [], pinned: undefined })).toEqual(["b"]);
    expect(volumesFilter.candidates?.({ request: vm("x", 1, 16, 0), options: opts, groupHosts: [], pinned: undefined })).toBeUndefined();
    const engine = new PlacementEngine(hosts, opts);
    expect(engine.place(data)).toEqual({ placed: true, hostId: "b" });
    // A name list is bounded too.
    const many = placeVm([host("a")], { ...data, volumes: { hostId: "b", names: Array.from({ length: 10 }, (_, i) => `v${i}`) } }, opts);
    expect(reasons(many)).toEqual(["a: volumes: volumes v0, v1, v2, v3, v4, v5, v6, v7 and 2 more are on b"]);
  });

  it("runs volumes right after ready and pinned, networks after labels (pipeline.ts says why)", () => {
    expect(DEFAULT_PIPELINE.filters.map((f) => f.name)).toEqual(["ready", "pinned", "volumes", "labels", "networks", "maxVms", "groups", "capacity"]);
    // A host that fails several filters gives the first one's reason.
    const h = host("a", { labels: { zone: "us-2" }, allocated: res(64, 0, 0) });
    const r = { ...vm("x", 1, 16, 0), requiredLabels: { zone: "eu-1" }, networks: ["lab"], volumes: { hostId: "b", names: ["data-1"] } };
    expect(reasons(placeVm([h], r, opts))).toEqual(["a: volumes: volume data-1 is on b"]);
    expect(reasons(placeVm([h], { ...r, pinnedHosts: ["b"] }, opts))).toEqual(["a: pinned: not pinned (pinned: b)"]);
    const { volumes: _v, ...noVolumes } = r;
    expect(reasons(placeVm([h], noVolumes, opts))).toEqual(["a: labels: requires label zone=eu-1 (host has zone=us-2)"]);
    expect(reasons(placeVm([h], { ...noVolumes, requiredLabels: {} }, opts))).toEqual(['a: networks: lacks network "lab" (offers none)']);
  });

  it("runs only the enabled filters, in the given order", () => {
    const full = host("a", { cordoned: true, allocated: res(64, 0, 0) });
    expect(reasons(placeVm([full], vm("x", 1, 16, 0), opts))).toEqual(["a: ready: host is cordoned"]);
    const reordered = resolveSchedulerOptions({ filters: ["capacity", "ready"] });
    expect(reasons(placeVm([full], vm("x", 1, 16, 0), reordered))).toEqual(["a: capacity: vcpus: needs 1 vCPU, 0 vCPU free of 64 allocatable"]);
    expect(placed(placeVm([full], vm("x", 1, 16, 0), resolveSchedulerOptions({ filters: ["labels"] })))).toBe("a");
  });

  it("rejects a malformed group or host override with INVALID_ARGUMENT", () => {
    const bad = errorOf(() => placeVm([host("a")], { ...vm("x", 1, 16, 0), group: { name: "g", policy: "sticky" as never } }, opts));
    expect(isBerthError(bad, ErrorCode.InvalidArgument)).toBe(true);
    expect((bad as Error).message).toBe("request.group.policy: unknown policy 'sticky' (anti-affinity, affinity, soft-anti-affinity, soft-affinity)");
    const h = errorOf(() => placeVm([host("a", { reserved: { vcpus: -1 } })], vm("x", 1, 16, 0), opts));
    expect((h as Error).message).toBe("hosts[a].reserved.vcpus: must be a whole number ≥ 0 (got -1)");
  });

  it("rejects malformed networks, image or volumes with INVALID_ARGUMENT naming the field, bounded", () => {
    const x = vm("x", 1, 16, 0);
    const cases: [PlacementRequest, string][] = [
      [{ ...x, networks: ["default", ""] }, "request.networks[1]: must be a network name (got '')"],
      [{ ...x, networks: "default" as never }, "request.networks: must be a list of network names"],
      [{ ...x, imageId: "" }, "request.image_id: must be an image id (got '')"],
      [{ ...x, volumes: { hostId: "", names: ["d"] } }, "request.volumes.host_id: must be a host id (got '')"],
      [{ ...x, volumes: { hostId: "b", names: [] } }, "request.volumes.names: must name at least one volume"],
      [{ ...x, volumes: { hostId: "b", names: ["d", 7 as never] } }, "request.volumes.names[1]: must be a volume name (got '7')"],
      [{ ...x, networks: [42 as never] }, "request.networks[0]: must be a network name (got '42')"],
    ];
    for (const [request, message] of cases) {
      for (const place of [() => placeVm([host("a")], request, opts), () => new PlacementEngine([host("a")], opts).place(request)]) {
        const e = errorOf(place);
        expect(isBerthError(e, ErrorCode.InvalidArgument)).toBe(true);
        expect((e as Error).message).toBe(message);
      }
    }
  });
});

describe("weighers", () => {
  const ctx = (request: PlacementRequest, options = opts): PlacementContext => ({ request, options, groupHosts: [], pinned: undefined });
  const small = host("s", { capacity: res(1, 1024 + 1000, 1000) }); // allocatable 4 vCPU, 1000 MiB, 1000 GiB

  it("mostAllocated: −mean 10^(free fraction after), so the emptiest resource dominates", () => {
    const evenly = { ...small, allocated: res(3, 750, 750) }; // free after a 0-VM: 1/4 everywhere
    const skewed = { ...small, allocated: res(4, 1000, 0) }; // free: 0, 0, 1
    const r = vm("x", 0, 0, 0);
    expect(mostAllocatedWeigher.weigh(evenly, ctx(r))).toBeCloseTo(-(10 ** 0.25));
    expect(mostAllocatedWeigher.weigh(skewed, ctx(r))).toBeCloseTo(-(1 + 1 + 10) / 3);
    expect(mostAllocatedWeigher.weigh(evenly, ctx(r))).toBeGreaterThan(mostAllocatedWeigher.weigh(skewed, ctx(r)));
  });

  it("alignedFit: best fit, minus how far the placement turns the host away from the fleet's demand direction", () => {
    const withDir = (hosts: HostSnapshot[], r: PlacementRequest): PlacementContext => ({ ...ctx(r), fleetDirection: fleetDirection(hosts, r, opts) });
    // Without a direction, or for a VM shaped like the fleet's demand, it is mostAllocated's score.
    const h = { ...small, allocated: res(1, 250, 500) };
    expect(alignedFitWeigher.weigh(h, ctx(vm("x", 1, 100, 0)))).toBe(mostAllocatedWeigher.weigh(h, ctx(vm("x", 1, 100, 0))));
    const even = { ...small, allocated: res(2, 500, 500) };
    const r = vm("x", 1, 250, 250);
    expect(alignedFitWeigher.weigh(even, withDir([even], r))).toBeCloseTo(mostAllocatedWeigher.weigh(even, ctx(r)), 9);
    // Fleet demand even (half of everything used); a vCPU-heavy and a memory-heavy host, equally full.
    const cpuHeavy = { ...small, id: "c", allocated: res(3, 250, 500) };
    const memHeavy = { ...small, id: "m", allocated: res(1, 750, 500) };
    const memVm = vm("m", 0, 200, 0);
    const dir = withDir([cpuHeavy, memHeavy], memVm);
    // A memory-heavy VM rebalances the vCPU-heavy host and tips the other further.
    expect(alignedFitWeigher.weigh(cpuHeavy, dir)).toBeGreaterThan(mostAllocatedWeigher.weigh(cpuHeavy, ctx(memVm)));
    expect(alignedFitWeigher.weigh(memHeavy, dir)).toBeLessThan(mostAllocatedWeigher.weigh(memHeavy, ctx(memVm)));
    expect(alignedFitWeigher.weigh(cpuHeavy, dir)).toBeGreaterThan(alignedFitWeigher.weigh(memHeavy, dir));
  });

  it("pack sends a VM where it rebalances a host, and opens a host rather than tip a lopsided one further (in a big fleet)", () => {
    const o = resolveSchedulerOptions({ preset: "pack" });
    const bestFit = resolveSchedulerOptions({ preset: "pack", weights: { alignedFit: 0, mostAllocated: 1 } });
    // Steering needs STEER_MIN_HOSTS usable hosts: pad the fleet with empty ones (ids after "e").
    const spare = Array.from({ length: STEER_MIN_HOSTS }, (_, i) => host(`z-${String(i).padStart(3, "0")}`));
    // Allocatable 64 vCPU, 64512 MiB. a leans to memory and is the fuller (best fit's choice); b leans to vCPU.
    const a = host("a", { allocated: res(24, 58000, 500), vmCount: 5 });
    const memVm = vm("m", 2, 6000, 10);
    const hosts = [a, host("b", { allocated: res(40, 20000, 500), vmCount: 5 }), host("e"), ...spare];
    expect(placed(placeVm(hosts, memVm, bestFit))).toBe("a");
    expect(placed(placeVm(hosts, memVm, o))).toBe("b");
    // The fleet leans to vCPU (b is full on it): the memory-heavy VM opens e rather than strand more of a's vCPUs.
    const full = [a, host("b", { allocated: res(64, 10000, 500), vmCount: 5 }), host("e"), ...spare];
    expect(placed(placeVm(full, memVm, bestFit))).toBe("a");
    expect(placed(placeVm(full, memVm, o))).toBe("e");
    // The same hosts in a small fleet, or with fewer than STEER_MIN_EMPTY_HOSTS empty hosts left: best fit.
    expect(placed(placeVm(hosts.slice(0, 3), memVm, o))).toBe("a");
    expect(placed(placeVm(full.slice(0, 3), memVm, o))).toBe("a");
    const busy = full.map((h, i) => (i >= 3 + STEER_MIN_EMPTY_HOSTS - 2 ? { ...h, vmCount: 1, allocated: res(64, 64512, 1000) } : h));
    expect(placed(placeVm(busy, memVm, o))).toBe("a");
    const cordoned = full.map((h, i) => (i >= 3 + STEER_MIN_EMPTY_HOSTS ? { ...h, cordoned: true } : h));
    expect(placed(placeVm(cordoned, memVm, o))).toBe("a");
  });

  it("steers only with STEER_MIN_HOSTS usable hosts, STEER_MIN_EMPTY_HOSTS of them holding no VM", () => {
    expect(steers(STEER_MIN_HOSTS, STEER_MIN_EMPTY_HOSTS)).toBe(true);
    expect(steers(STEER_MIN_HOSTS - 1, STEER_MIN_EMPTY_HOSTS)).toBe(false);
    expect(steers(STEER_MIN_HOSTS, STEER_MIN_EMPTY_HOSTS - 1)).toBe(false);
    const hs = [host("a"), host("b", { vmCount: 2 }), host("c", { ready: false }), host("d", { cordoned: true }), host("e")];
    expect(usableHostCounts(hs)).toEqual({ usable: 3, empty: 2 });
  });

  it("balanced: −the standard deviation of the used fractions after placement", () => {
    const r = vm("x", 1, 250, 250);
    expect(balancedWeigher.weigh({ ...small, allocated: res(1, 250, 250) }, ctx(r))).toBeCloseTo(0);
    expect(balancedWeigher.weigh({ ...small, allocated: res(3, 0, 0) }, ctx(r))).toBeCloseTo(-Math.sqrt(((1 - 0.5) ** 2 + 2 * (0.25 - 0.5) ** 2) / 3));
  });

  it("groupAffinity: soft-affinity prefers more members, soft-anti-affinity fewer, beating room", () => {
    const hosts = [host("a", { groupMembers: { web: 2 }, allocated: res(30, 30000, 500) }), host("b", { groupMembers: { web: 1 } }), host("c")];
    const withGroup = (policy: "soft-affinity" | "soft-anti-affinity" | "affinity") => ({ ...vm("x", 1, 16, 0), group: { name: "web", policy } });
    expect(placed(placeVm(hosts, withGroup("soft-affinity"), opts))).toBe("a");
    const anti = placeVm(hosts.slice(0, 2), withGroup("soft-anti-affinity"), opts);
    expect(placed(anti)).toBe("b");
    // Soft means soft: with members everywhere, the fewest wins, and nothing is rejected.
    expect(anti.explanation.every((v) => v.passed)).toBe(true);
    // Hard policies leave the weigher flat: equal scores everywhere.
    const hard = placeVm([host("a", { groupMembers: { web: 1 } }), host("b", { groupMembers: { web: 3 } })], withGroup("affinity"), opts);
    expect(hard.explanation.map((v) => (v.passed ? v.scores["groupAffinity"] : -1))).toEqual([1, 1]);
  });

  it("instanceCount: fewer VMs is better", () => {
    const o = resolveSchedulerOptions({ weights: { leastAllocated: 0, instanceCount: 1 } });
    expect(placed(placeVm([host("a", { vmCount: 3 }), host("b", { vmCount: 2, allocated: res(50, 50000, 900) })], vm("x", 1, 16, 0), o))).toBe("b");
  });

  it("imageLocality: 1 on a host holding the request's image, 0 elsewhere, 0 everywhere without an image", () => {
    const holder = host("h", { images: new Set(["img-1", "img-2"]) });
    const withImage = { ...vm("x", 1, 16, 0), imageId: "img-1" };
    expect(imageLocalityWeigher.weigh(holder, ctx(withImage))).toBe(1);
    expect(imageLocalityWeigher.weigh(host("o"), ctx(withImage))).toBe(0);
    expect(imageLocalityWeigher.weigh(host("o", { images: new Set(["img-2"]) }), ctx(withImage))).toBe(0);
    expect(imageLocalityWeigher.weigh(holder, ctx(vm("x", 1, 16, 0)))).toBe(0);
  });

  it("imageLocality breaks a tie or a near-tie toward a host holding the image, never a clear difference in room", () => {
    const withImage = { ...vm("x", 1, 16, 0), imageId: "img-1" };
    const img = new Set(["img-1"]);
    // Equal hosts: the holder, though the other comes first by id.
    expect(placed(placeVm([host("a"), host("b", { images: img })], withImage, opts))).toBe("b");
    expect(placed(placeVm([host("a"), host("b", { images: img })], vm("x", 1, 16, 0), opts))).toBe("a");
    // A near-tie (b has 4 vCPU more allocated, c is far fuller): the holder.
    const near = [host("a"), host("b", { images: img, allocated: res(4, 0, 0) }), host("c", { allocated: res(60, 60000, 900) })];
    expect(placed(placeVm(near, withImage, opts))).toBe("b");
    expect(placed(placeVm(near, withImage, resolveSchedulerOptions({ weights: { imageLocality: 0 } })))).toBe("a");
    // Half full against empty: room wins, the VM fetches its image.
    const far = [host("a"), host("b", { images: img, allocated: res(32, 32256, 500) }), host("c", { allocated: res(60, 60000, 900) })];
    expect(placed(placeVm(far, withImage, opts))).toBe("a");
    // Pack: best fit first (the open host, without the image); among the empty hosts it opens, the holder.
    const pack = resolveSchedulerOptions({ preset: "pack" });
    const open = host("a", { allocated: res(40, 40000, 600), vmCount: 3 });
    expect(placed(placeVm([open, host("b"), host("c", { images: img })], withImage, pack))).toBe("a");
    expect(placed(placeVm([open, host("b"), host("c", { images: img })], { ...withImage, resources: res(32, 32000, 500) }, pack))).toBe("c");
  });

  it("weighers of weight 0 are not run and not reported", () => {
    const d = placeVm([host("a")], vm("x", 1, 16, 0), resolveSchedulerOptions({ preset: "pack" }));
    expect(d.explanation[0]).toEqual({ hostId: "a", passed: true, scores: { alignedFit: 1, groupAffinity: 1, imageLocality: 1 }, total: 3.02 });
  });
});

describe("presets", () => {
  const three = () => [host("a"), host("b"), host("c")];
  const quarter = vm("q", 16, 16000, 250); // four fit on an empty host

  it("pack fills one host before starting the next", () => {
    expect(sequence(three(), many(9, quarter), resolveSchedulerOptions({ preset: "pack" }))).toEqual(["a", "a", "a", "a", "b", "b", "b", "b", "c"]);
    // Best fit: the fuller host wins even when it is not the first by id.
    expect(placed(placeVm([host("a"), host("b", { allocated: res(20, 20000, 300) })], quarter, resolveSchedulerOptions({ preset: "pack" })))).toBe("b");
  });

  it("spread alternates between equal hosts", () => {
    expect(sequence(three(), many(7, quarter), resolveSchedulerOptions({ preset: "spread" }))).toEqual(["a", "b", "c", "a", "b", "c", "a"]);
  });

  it("balanced prefers the host whose fractions stay even", () => {
    const hosts = [host("a", { allocated: res(32, 0, 0) }), host("b", { allocated: res(16, 16128, 250) })];
    const o = resolveSchedulerOptions({ preset: "balanced" });
    expect(placed(placeVm(hosts, vm("x", 1, 1008, 15), o))).toBe("b");
    // A memory-heavy VM goes where vCPU is already heavy.
    expect(placed(placeVm(hosts, vm("m", 0, 32256, 0), o))).toBe("a");
    // Spread picks by room alone: the lopsided host has more of it on average.
    expect(placed(placeVm(hosts, vm("x", 1, 1008, 15), resolveSchedulerOptions({ weights: { instanceCount: 0 } })))).toBe("a");
  });
});

describe("ties", () => {
  const hosts = Array.from({ length: 10 }, (_, i) => host(`h-${i}`));
  const opt = (o: SchedulerOptions) => resolveSchedulerOptions(o);

  it("seed 0 orders equal totals by host id; another seed by the seeded hash, the same every time", () => {
    expect(placed(placeVm(hosts, vm("x", 1, 16, 0), opt({ seed: 0 })))).toBe("h-0");
    const winners = new Set<string>();
    for (let seed = 1; seed <= 20; seed++) {
      const d = placeVm(hosts, vm("x", 1, 16, 0), opt({ seed }));
      const expected = [...hosts].sort((a, b) => tieBreakKey(a.id, seed) - tieBreakKey(b.id, seed))[0]!.id;
      expect(placed(d)).toBe(expected);
      expect(placeVm([...hosts].reverse(), vm("x", 1, 16, 0), opt({ seed }))).toEqual(d);
      winners.add(expected);
    }
    expect(winners.size).toBeGreaterThan(3);
  });

  it("the seed never overrides a better total", () => {
    const better = host("h-9", { allocated: res(0, 0, 0) });
    const rest = Array.from({ length: 9 }, (_, i) => host(`h-${i}`, { allocated: res(1, 0, 0) }));
    for (let seed = 0; seed < 10; seed++) expect(placed(placeVm([...rest, better], vm("x", 1, 16, 0), opt({ seed })))).toBe("h-9");
  });
});

describe("placeVms", () => {
  it("consumes capacity virtually, VM by VM", () => {
    const d = placeVms([host("a"), host("b", { allocated: res(10, 0, 0) })], many(2, vm("big", 40, 16, 0)), resolveSchedulerOptions({ preset: "pack" }));
    expect(d).toEqual({ placed: true, placements: [{ name: "big-0", hostId: "b" }, { name: "big-1", hostId: "a" }] });
  });

  it("counts group members and VMs virtually", () => {
    const web = many(3, { ...vm("web", 1, 16, 0), group: { name: "web", policy: "anti-affinity" } });
    const d = placeVms([host("a"), host("b"), host("c")], web, resolveSchedulerOptions({ preset: "pack" }));
    expect(d.placed && d.placements.map((p) => p.hostId)).toEqual(["a", "b", "c"]);
    const db = many(3, { ...vm("db", 1, 16, 0), group: { name: "db", policy: "affinity" } });
    const a = placeVms([host("a"), host("b"), host("c")], db, opts);
    expect(a.placed && a.placements.map((p) => p.hostId)).toEqual(["a", "a", "a"]);
    const limited = placeVms([host("a"), host("b")], many(3, vm("x", 1, 16, 0)), resolveSchedulerOptions({ maxVmsPerHost: 1 }));
    expect(limited).toMatchObject({ placed: false, failed: "x-2", placements: [] });
  });

  it("keeps each member's networks and volumes, under spread and pack", () => {
    const hosts = [host("a", { networks: new Set(["default"]) }), host("b", { networks: new Set(["default", "lab"]) }), host("c", { networks: new Set(["default"]) })];
    const gang: PlacementRequest[] = [
      { ...vm("data", 2, 2048, 10), networks: ["default"], volumes: { hostId: "c", names: ["data-1"] } },
      { ...vm("lab-1", 2, 2048, 10), networks: ["lab"], imageId: "img-1" },
      { ...vm("lab-2", 2, 2048, 10), networks: ["default", "lab"] },
      { ...vm("any", 2, 2048, 10), networks: ["default"] },
    ];
    for (const options of [opts, resolveSchedulerOptions({ preset: "pack" })]) {
      const d = placeVms(hosts, gang, options);
      expect(d.placed && d.placements.slice(0, 3).map((p) => p.hostId)).toEqual(["c", "b", "b"]);
      expect(new PlacementEngine(hosts, options).placeGang(gang)).toEqual(d);
    }
    const stuck = placeVms(hosts, [gang[0]!, { ...gang[1]!, networks: ["san"] }], opts);
    expect(stuck).toMatchObject({ placed: false, failed: "lab-1" });
  });

  it("is all-or-nothing: names the VM that does not fit, with its reasons", () => {
    const web = many(3, { ...vm("web", 1, 16, 0), group: { name: "web", policy: "anti-affinity" } });
    const d = placeVms([host("a"), host("b", { groupMembers: { web: 1 } })], web, opts);
    expect(d).toEqual({
      placed: false,
      failed: "web-1",
      reasons: ["a: groups: group 'web': anti-affinity: 1 member already here", "b: groups: group 'web': anti-affinity: 1 member already here"],
      placements: [],
    });
    if (d.placed) return;
    const e = gangUnplacedError(d);
    expect(isBerthError(e, ErrorCode.ResourceExhausted)).toBe(true);
    expect(e.message).toContain("'web-1'");
    expect(e.reasons).toEqual(d.reasons);
  });

  it("places an empty gang trivially and refuses duplicate names", () => {
    expect(placeVms([], [], opts)).toEqual({ placed: true, placements: [] });
    const e = errorOf(() => placeVms([host("a")], [vm("x", 1, 16, 0), vm("x", 1, 16, 0)], opts));
    expect((e as Error).message).toBe("requests[1].name: duplicate name 'x'");
  });
});
