import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RESOURCE_NAMES } from "@berth/core";
import { allocatable, placeVm, resolveSchedulerOptions, withPlacement, type HostSnapshot, type PlacementRequest, type ResolvedSchedulerOptions } from "./index.js";
import { clusterWithOptionsArb, host, optionsArb, requestArb, res } from "./scheduler.testkit.js";

/** A cluster, its options and a sequence of VMs to place. */
const scenario = fc
  .record({ cluster: clusterWithOptionsArb, requests: fc.array(requestArb, { minLength: 1, maxLength: 30 }) })
  .map(({ cluster, requests }) => ({ ...cluster, requests }));

/** A cluster, its options and one VM. */
const single = fc.record({ cluster: clusterWithOptionsArb, request: requestArb }).map(({ cluster, request }) => ({ ...cluster, request }));

/** Places each request in turn, applying every decision to the snapshot as the controller would. */
function placeAll(hosts: HostSnapshot[], requests: readonly PlacementRequest[], options: ResolvedSchedulerOptions) {
  const byId = new Map(hosts.map((h) => [h.id, h]));
  const decisions = requests.map((r) => {
    const d = placeVm([...byId.values()], r, options);
    if (d.placed) byId.set(d.hostId, withPlacement(byId.get(d.hostId)!, r.resources));
    return d;
  });
  return { decisions, hosts: byId };
}

describe("placeVm properties", () => {
  it("never takes a host beyond its allocatable capacity on any resource", () => {
    fc.assert(
      fc.property(scenario, ({ options, hosts, requests }) => {
        const { hosts: after } = placeAll(hosts, requests, options);
        for (const h of after.values()) {
          const a = allocatable(h, options);
          for (const k of RESOURCE_NAMES) expect(h.allocated[k]).toBeLessThanOrEqual(a[k]);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("never picks a host that is not Ready or is cordoned", () => {
    fc.assert(
      fc.property(scenario, ({ options, hosts, requests }) => {
        const { decisions } = placeAll(hosts, requests, options);
        const usable = new Set(hosts.filter((h) => h.ready && !h.cordoned).map((h) => h.id));
        for (const d of decisions) if (d.placed) expect(usable.has(d.hostId)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it("is deterministic: the same input, in any host order, gives the same decision", () => {
    fc.assert(
      fc.property(
        single,
        // A permutation, as sort keys for the hosts.
        fc.array(fc.double({ noNaN: true }), { minLength: 10, maxLength: 10 }),
        ({ options, hosts, request }, keys) => {
          const shuffled = hosts
            .map((h, i) => ({ h, key: keys[i] ?? 0 }))
            .sort((a, b) => a.key - b.key)
            .map(({ h }) => h);
          const d = placeVm(hosts, request, options);
          expect(placeVm(hosts, request, options)).toEqual(d);
          expect(placeVm(shuffled, request, options)).toEqual(d);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("explains its decision: a verdict per host; the chosen host passed with the highest total, the smallest id among equals", () => {
    fc.assert(
      fc.property(
        single,
        ({ options, hosts, request }) => {
          const d = placeVm(hosts, request, options);
          expect(d.explanation.map((v) => v.hostId)).toEqual(hosts.map((h) => h.id).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
          const passed = d.explanation.flatMap((v) => (v.passed ? [v] : []));
          for (const v of passed) {
            expect(v.total).toBeGreaterThanOrEqual(0);
            for (const g of Object.values(v.scores)) expect(g >= 0 && g <= 1).toBe(true);
          }
          if (d.placed) {
            const chosen = passed.find((v) => v.hostId === d.hostId);
            expect(chosen?.total).toBe(d.score);
            const best = Math.max(...passed.map((v) => v.total));
            expect(d.score).toBe(best);
            expect(d.hostId).toBe(passed.find((v) => v.total === best)?.hostId);
          } else {
            expect(passed).toEqual([]);
            expect(d.reasons).toHaveLength(hosts.length);
            d.explanation.forEach((v, i) => {
              if (v.passed) throw new Error("unreachable");
              expect(d.reasons[i]).toBe(`${v.hostId}: ${v.filter}: ${v.reason}`);
            });
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("places whenever some usable host has room (filters are exact, not conservative)", () => {
    fc.assert(
      fc.property(
        single,
        ({ options, hosts, request }) => {
          const fits = hosts.some((h) => {
            if (!h.ready || h.cordoned) return false;
            const a = allocatable(h, options);
            return RESOURCE_NAMES.every((k) => h.allocated[k] + request.resources[k] <= a[k]);
          });
          expect(placeVm(hosts, request, options).placed).toBe(fits);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("packs identical VMs on equal hosts exactly as best fit does (pack's steering term is 0 for them)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.record({ vcpus: fc.integer({ min: 4, max: 64 }), memoryMib: fc.integer({ min: 4096, max: 262144 }), diskGib: fc.integer({ min: 100, max: 4000 }) }),
        fc.record({ vcpus: fc.integer({ min: 0, max: 8 }), memoryMib: fc.integer({ min: 0, max: 32768 }), diskGib: fc.integer({ min: 0, max: 400 }) }),
        fc.integer({ min: 1, max: 60 }),
        fc.integer({ min: 0, max: 3 }),
        (n, capacity, resources, count, seed) => {
          const hosts = Array.from({ length: n }, (_, i) => host(`host-${i}`, { capacity }));
          const requests = Array.from({ length: count }, (_, i) => ({ name: `vm-${i}`, resources }));
          const pack = resolveSchedulerOptions({ preset: "pack", seed });
          const bestFit = resolveSchedulerOptions({ preset: "pack", seed, weights: { alignedFit: 0, mostAllocated: 1 } });
          const a = placeAll(hosts, requests, pack).decisions.map((d) => (d.placed ? d.hostId : "-"));
          const b = placeAll(hosts, requests, bestFit).decisions.map((d) => (d.placed ? d.hostId : "-"));
          expect(a).toEqual(b);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("spreads: N×k identical VMs on N equal hosts end up k per host", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 6 }),
        fc.record({ vcpus: fc.integer({ min: 1, max: 4 }), memoryMib: fc.integer({ min: 16, max: 4096 }), diskGib: fc.integer({ min: 0, max: 50 }) }),
        optionsArb,
        (n, k, resources, options) => {
          // Hosts big enough for k such VMs under any generated options.
          const capacity = res(4 * k + 4, 4096 * k + 4096, 50 * k + 50);
          const hosts = Array.from({ length: n }, (_, i) => host(`host-${i}`, { capacity }));
          const requests = Array.from({ length: n * k }, (_, i) => ({ name: `vm-${i}`, resources }));
          const { decisions, hosts: after } = placeAll(hosts, requests, options);
          expect(decisions.every((d) => d.placed)).toBe(true);
          for (const h of after.values()) expect(h.vmCount).toBe(k);
        },
      ),
      { numRuns: 200 },
    );
  });
});
