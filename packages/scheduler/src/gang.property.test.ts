import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RESOURCE_NAMES } from "@berth/core";
import {
  allocatable,
  gangPacks,
  placeVm,
  placeVms,
  resolveSchedulerOptions,
  withPlacement,
  type GangDecision,
  type HostSnapshot,
  type PlacementRequest,
  type ResolvedSchedulerOptions,
} from "./index.js";
import { admissible, host, pinTo, res, richClusterArb, richRequestArb } from "./scheduler.testkit.js";

/** Request order, VM by VM through placeVm (the old placeVms): the reference a gang is held to. */
function inRequestOrder(hosts: readonly HostSnapshot[], requests: readonly PlacementRequest[], options: ResolvedSchedulerOptions): GangDecision {
  const byId = new Map(hosts.map((h) => [h.id, h]));
  const placements: { name: string; hostId: string }[] = [];
  for (const r of requests) {
    const d = placeVm([...byId.values()], r, options);
    if (!d.placed) return { placed: false, failed: r.name, reasons: d.reasons, placements: [] };
    byId.set(d.hostId, withPlacement(byId.get(d.hostId)!, r.resources, r.group?.name));
    placements.push({ name: r.name, hostId: d.hostId });
  }
  return { placed: true, placements };
}

/** Hosts empty before the gang that hold one of its VMs. */
function opened(hosts: readonly HostSnapshot[], d: GangDecision): number {
  const empty = new Set(hosts.filter((h) => h.vmCount === 0).map((h) => h.id));
  return new Set(d.placements.map((p) => p.hostId).filter((id) => empty.has(id))).size;
}

/** Replays the placements in request order against the independent rule oracle; the final snapshot. */
function replay(hosts: readonly HostSnapshot[], requests: readonly PlacementRequest[], d: GangDecision & { placed: true }, options: ResolvedSchedulerOptions) {
  expect(d.placements.map((p) => p.name)).toEqual(requests.map((r) => r.name));
  const byId = new Map(hosts.map((h) => [h.id, h]));
  d.placements.forEach((p, i) => {
    const r = requests[i]!;
    const h = byId.get(p.hostId)!;
    expect(admissible(h, r, options, [...byId.values()]), `${r.name} on ${p.hostId}`).toBe(true);
    byId.set(p.hostId, withPlacement(h, r.resources, r.group?.name));
  });
  for (const h of byId.values()) {
    const a = allocatable(h, options);
    for (const k of RESOURCE_NAMES) expect(h.allocated[k]).toBeLessThanOrEqual(a[k]);
  }
}

/** The rich clusters and requests of the rule tests (labels, groups, pins, overrides), under packing options. */
const richPacking = fc
  .record({
    cluster: richClusterArb,
    requests: fc.array(richRequestArb, { minLength: 1, maxLength: 20 }),
    weights: fc.constantFrom<Record<string, number>>({}, { alignedFit: 0, mostAllocated: 1 }, { mostAllocated: 1, leastAllocated: 0.5 }),
    gangSearchMs: fc.integer({ min: 1, max: 10 }),
  })
  .map(({ cluster, requests, weights, gangSearchMs }) => {
    const o = cluster.options;
    const options = resolveSchedulerOptions({
      allocationRatio: o.allocationRatio,
      reserved: o.reserved,
      preset: "pack",
      weights,
      maxVmsPerHost: o.maxVmsPerHost ?? 0,
      seed: o.seed ?? 0,
      gangSearchMs,
    });
    return { options, hosts: cluster.hosts, requests: requests.map((r, i) => ({ ...pinTo(cluster.hosts, r), name: `vm-${i}` })) };
  });

/** `arb` one time in six, else undefined. */
const rarely = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> =>
  fc.oneof({ arbitrary: fc.constant(undefined), weight: 5 }, { arbitrary: arb, weight: 1 });

/**
 * Tight gangs: a few equal hosts (16 vCPU, 64 GiB; zones, some with group members) and 4 to 24
 * complementary VMs (CPU-heavy or memory-heavy) that often only fit in a good order, some in hard
 * groups, some with a zone or pinned, under the pack preset and a small search budget.
 */
const tightGang = fc
  .record({
    hosts: fc.array(
      fc.record({ zone: fc.constantFrom("a", "b"), web: fc.nat(1), db: fc.nat(1), cordoned: rarely(fc.constant(true)), full: fc.oneof({ arbitrary: fc.constant(0), weight: 3 }, { arbitrary: fc.nat(3), weight: 1 }) }),
      { minLength: 2, maxLength: 8 },
    ),
    vms: fc.array(
      fc.record({
        cpuHeavy: fc.boolean(),
        big: fc.integer({ min: 3, max: 10 }),
        small: fc.integer({ min: 1, max: 4 }),
        group: rarely(fc.record({ name: fc.constantFrom("web", "db"), policy: fc.constantFrom("anti-affinity" as const, "affinity" as const) })),
        zone: rarely(fc.constantFrom("a", "b")),
        pin: rarely(fc.array(fc.nat(7), { minLength: 1, maxLength: 4 })),
      }),
      { minLength: 4, maxLength: 24 },
    ),
    maxVmsPerHost: fc.constantFrom(0, 0, 3, 5),
    gangSearchMs: fc.integer({ min: 1, max: 10 }),
    seed: fc.constantFrom(0, 7),
  })
  .map(({ hosts: specs, vms, maxVmsPerHost, gangSearchMs, seed }) => {
    const options = resolveSchedulerOptions({
      allocationRatio: { vcpus: 1, memoryMib: 1, diskGib: 1 },
      reserved: { vcpus: 0, memoryMib: 0, diskGib: 0 },
      preset: "pack",
      maxVmsPerHost,
      gangSearchMs,
      seed,
    });
    const hosts = specs.map((s, i) =>
      host(`h-${i}`, {
        capacity: res(16, 65536, 1000),
        allocated: res(s.full, s.full * 2048, 0),
        vmCount: s.full,
        cordoned: s.cordoned === true && i > 0,
        labels: { zone: s.zone },
        groupMembers: { web: s.web, db: s.db },
      }),
    );
    const requests: PlacementRequest[] = vms.map((v, i) => {
      const r: PlacementRequest = {
        name: `vm-${i}`,
        resources: v.cpuHeavy ? res(v.big, v.small * 4096, 10) : res(v.small, v.big * 4096, 10),
      };
      if (v.group) r.group = v.group;
      if (v.zone) r.requiredLabels = { zone: v.zone };
      if (v.pin) r.pinnedHosts = v.pin.map((p) => `h-${p}`);
      return r;
    });
    return { options, hosts, requests };
  });

function checkGang({ options, hosts, requests }: { options: ResolvedSchedulerOptions; hosts: HostSnapshot[]; requests: PlacementRequest[] }): GangDecision {
  const before = structuredClone(hosts);
  const gang = placeVms(hosts, requests, options);
  expect(hosts).toEqual(before); // inputs untouched
  const ref = inRequestOrder(hosts, requests, options);
  if (!gang.placed) {
    // All-or-none, and the failure answer is request order's: the VM, with its per-host reasons.
    expect(gang).toEqual(ref);
    return gang;
  }
  replay(hosts, requests, gang, options);
  // Never worse than request order (when that fits); placed where it does not only when packing.
  if (ref.placed) expect(opened(hosts, gang)).toBeLessThanOrEqual(opened(hosts, ref));
  else expect(gangPacks(options)).toBe(true);
  // The same answer whatever the order of the hosts.
  expect(placeVms([...hosts].reverse(), requests, options)).toEqual(gang);
  return gang;
}

describe("gang placement (placeVms) under packing", () => {
  it("never breaks a group, label, pin, limit or capacity rule, is all-or-none, and never opens more hosts than request order", () => {
    fc.assert(fc.property(richPacking, (s) => void checkGang(s)), { numRuns: 250 });
  });

  it("the same on tight gangs of complementary VMs, where order matters", () => {
    let rescued = 0;
    let better = 0;
    fc.assert(
      fc.property(tightGang, (s) => {
        const gang = checkGang(s);
        const ref = inRequestOrder(s.hosts, s.requests, s.options);
        if (gang.placed && !ref.placed) rescued++;
        if (gang.placed && ref.placed && opened(s.hosts, gang) < opened(s.hosts, ref)) better++;
      }),
      { numRuns: 300 },
    );
    // The generator does reach the cases the search is for.
    expect(rescued).toBeGreaterThan(0);
    expect(better).toBeGreaterThan(0);
  });

  it("under spread (and balanced) a gang is placed exactly in request order", () => {
    fc.assert(
      fc.property(tightGang, fc.constantFrom("spread" as const, "balanced" as const), ({ hosts, requests }, preset) => {
        const options = resolveSchedulerOptions({ allocationRatio: { vcpus: 1 }, reserved: { memoryMib: 0 }, preset });
        expect(placeVms(hosts, requests, options)).toEqual(inRequestOrder(hosts, requests, options));
      }),
      { numRuns: 100 },
    );
  });
});
