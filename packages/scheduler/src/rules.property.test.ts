import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RESOURCE_NAMES } from "@berth/core";
import {
  allocatable,
  compareTies,
  gangPacks,
  PlacementEngine,
  placeVm,
  placeVms,
  PRESET_WEIGHTS,
  withPlacement,
  type HostSnapshot,
  type PlacementDecision,
  type PlacementRequest,
  type ResolvedSchedulerOptions,
} from "./index.js";
import { admissible, pinTo, richClusterArb, richRequestArb } from "./scheduler.testkit.js";

/** Rich cluster, options, and a sequence of requests (pins resolved against the cluster). */
const scenario = fc
  .record({ cluster: richClusterArb, requests: fc.array(richRequestArb, { minLength: 1, maxLength: 20 }) })
  .map(({ cluster, requests }) => ({
    ...cluster,
    requests: requests.map((r, i) => ({ ...pinTo(cluster.hosts, r), name: `vm-${i}` })),
  }));

const single = fc
  .record({ cluster: richClusterArb, request: richRequestArb })
  .map(({ cluster, request }) => ({ ...cluster, request: pinTo(cluster.hosts, request) }));

interface Step {
  before: HostSnapshot[];
  request: PlacementRequest;
  decision: PlacementDecision;
}

/** Places each request in turn on the evolving snapshot, as the controller would; every step kept. */
function placeAll(hosts: HostSnapshot[], requests: readonly PlacementRequest[], options: ResolvedSchedulerOptions) {
  const byId = new Map(hosts.map((h) => [h.id, h]));
  const steps: Step[] = requests.map((request) => {
    const before = [...byId.values()];
    const decision = placeVm(before, request, options);
    if (decision.placed) byId.set(decision.hostId, withPlacement(byId.get(decision.hostId)!, request.resources, request.group?.name));
    return { before, request, decision };
  });
  return { steps, after: [...byId.values()] };
}

function neverOverAllocatable(hosts: readonly HostSnapshot[], options: ResolvedSchedulerOptions): void {
  for (const h of hosts) {
    const a = allocatable(h, options);
    for (const k of RESOURCE_NAMES) expect(h.allocated[k]).toBeLessThanOrEqual(a[k]);
  }
}

describe("placeVm properties with labels, groups, pins, limits, overrides and presets", () => {
  it("never goes beyond allocatable (per-host overrides included) and never breaks a filter rule", () => {
    fc.assert(
      fc.property(scenario, ({ options, hosts, requests }) => {
        const { steps, after } = placeAll(hosts, requests, options);
        neverOverAllocatable(after, options);
        for (const { before, request, decision } of steps) {
          if (!decision.placed) continue;
          const chosen = before.find((h) => h.id === decision.hostId)!;
          // Readiness, pins, labels, VM limit, hard groups and capacity, each stated independently.
          expect(admissible(chosen, request, options, before)).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("places exactly when some host passes every rule (filters are exact, not conservative)", () => {
    fc.assert(
      fc.property(single, ({ options, hosts, request }) => {
        const fits = hosts.some((h) => admissible(h, request, options, hosts));
        const d = placeVm(hosts, request, options);
        expect(d.placed).toBe(fits);
        for (const v of d.explanation) expect(v.passed).toBe(admissible(hosts.find((h) => h.id === v.hostId)!, request, options, hosts));
      }),
      { numRuns: 500 },
    );
  });

  it("is deterministic: the same input and seed, in any host order, give the same decision", () => {
    fc.assert(
      fc.property(single, fc.array(fc.double({ noNaN: true }), { minLength: 10, maxLength: 10 }), ({ options, hosts, request }, keys) => {
        const shuffled = hosts
          .map((h, i) => ({ h, key: keys[i] ?? 0 }))
          .sort((a, b) => a.key - b.key)
          .map(({ h }) => h);
        const d = placeVm(hosts, request, options);
        expect(placeVm(structuredClone(hosts), structuredClone(request), options)).toEqual(d);
        expect(placeVm(shuffled, request, options)).toEqual(d);
      }),
      { numRuns: 300 },
    );
  });

  it("explains its decision: the chosen host has the highest total, first among equals by the seeded order", () => {
    fc.assert(
      fc.property(single, ({ options, hosts, request }) => {
        const d = placeVm(hosts, request, options);
        const passed = d.explanation.flatMap((v) => (v.passed ? [v] : []));
        for (const v of passed) {
          for (const [name, g] of Object.entries(v.scores)) {
            expect(g >= 0 && g <= 1).toBe(true);
            expect(options.weights[name]).toBeGreaterThan(0);
          }
          const total = Object.entries(v.scores).reduce((t, [name, g]) => t + (options.weights[name] ?? 0) * g, 0);
          expect(Math.abs(total - v.total)).toBeLessThan(1e-6);
        }
        if (!d.placed) {
          expect(passed).toEqual([]);
          return;
        }
        const best = Math.max(...passed.map((v) => v.total));
        expect(d.score).toBe(best);
        const first = passed.filter((v) => v.total === best).sort((a, b) => compareTies(a.hostId, b.hostId, options.seed ?? 0))[0];
        expect(d.hostId).toBe(first?.hostId);
      }),
      { numRuns: 300 },
    );
  });
});

describe("imageLocality", () => {
  it("changes nothing when no request has an image: the same hosts at weight 0 and at the preset's weight, one by one, as a gang and in the engine", () => {
    fc.assert(
      fc.property(scenario, ({ options, hosts, requests }) => {
        const plain = requests.map(({ imageId: _none, ...r }) => r);
        const at = (w: number): ResolvedSchedulerOptions => ({ ...options, weights: { ...options.weights, imageLocality: w } });
        const preset = PRESET_WEIGHTS[options.preset ?? "spread"]["imageLocality"];
        expect(preset).toBeGreaterThan(0);
        const [off, on] = [at(0), at(preset!)];
        const chosen = (o: ResolvedSchedulerOptions) => placeAll(hosts, plain, o).steps.map((s) => (s.decision.placed ? s.decision.hostId : "-"));
        expect(chosen(on)).toEqual(chosen(off));
        expect(placeVms(hosts, plain, on)).toEqual(placeVms(hosts, plain, off));
        const [withoutImages, withImages] = [new PlacementEngine(hosts, off), new PlacementEngine(hosts, on)];
        for (const r of plain) {
          const a = withoutImages.place(r);
          const b = withImages.place(r);
          expect(b.placed && b.hostId).toEqual(a.placed && a.hostId);
          if (!a.placed) continue;
          withoutImages.commit(a.hostId, r);
          withImages.commit(a.hostId, r);
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe("placeVms properties", () => {
  it("is all-or-nothing, and its placements are valid as a whole sequence", () => {
    fc.assert(
      fc.property(scenario, ({ options, hosts, requests }) => {
        const before = structuredClone(hosts);
        const gang = placeVms(hosts, requests, options);
        expect(hosts).toEqual(before); // inputs untouched
        const { steps } = placeAll(hosts, requests, options);
        const firstFail = steps.findIndex((s) => !s.decision.placed);
        if (!gang.placed) {
          expect(gang.placements).toEqual([]);
          expect(firstFail).toBeGreaterThanOrEqual(0);
          expect(gang.failed).toBe(requests[firstFail]!.name);
          const failedStep = steps[firstFail]!.decision;
          expect(gang.reasons).toEqual(failedStep.placed ? [] : failedStep.reasons);
          return;
        }
        // Placed where request order fails only by the packing search (gang.ts), never under spread.
        if (firstFail >= 0) expect(gangPacks(options)).toBe(true);
        expect(gang.placements.map((p) => p.name)).toEqual(requests.map((r) => r.name));
        // Replay the placements: each admissible where it lands, given the ones before it.
        const byId = new Map(hosts.map((h) => [h.id, h]));
        gang.placements.forEach((p, i) => {
          const r = requests[i]!;
          const h = byId.get(p.hostId)!;
          expect(admissible(h, r, options, [...byId.values()])).toBe(true);
          byId.set(p.hostId, withPlacement(h, r.resources, r.group?.name));
        });
        neverOverAllocatable([...byId.values()], options);
      }),
      { numRuns: 300 },
    );
  });
});
