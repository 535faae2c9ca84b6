import { describe, expect, it } from "vitest";
import { ErrorCode, isBerthError } from "@berth/core";
import { gangPacks, gangSearchChecks, GANG_CHECKS_PER_MS, placeVms, resolveSchedulerOptions, type GangDecision, type PlacementRequest } from "./index.js";
import { host, res } from "./scheduler.testkit.js";

// Hosts of 10 vCPU (ratio 1, nothing reserved), VMs that differ by vCPU only.
const BASE = { allocationRatio: { vcpus: 1 }, reserved: { memoryMib: 0 } };
const pack = resolveSchedulerOptions({ ...BASE, preset: "pack" });
const spread = resolveSchedulerOptions({ ...BASE, preset: "spread" });
const hosts = (...ids: string[]) => ids.map((id) => host(id, { capacity: res(10, 65536, 1000) }));
const cpu = (name: string, vcpus: number, extra: Partial<PlacementRequest> = {}): PlacementRequest => ({ name, resources: res(vcpus, 1024, 10), ...extra });
const on = (d: GangDecision): string[] => (d.placed ? d.placements.map((p) => p.hostId) : []);

describe("gang packing (placeVms with pack)", () => {
  // In request order best fit puts 4 + 4 on one host, then 6 and 6 each need a host of their own.
  const gang = [cpu("a", 4), cpu("b", 4), cpu("c", 6), cpu("d", 6)];

  it("uses the better packing when request order fits but opens more hosts", () => {
    expect(on(placeVms(hosts("h1", "h2", "h3"), gang, spread))).toEqual(["h1", "h2", "h3", "h1"]);
    const d = placeVms(hosts("h1", "h2", "h3"), gang, pack);
    expect(d.placed && d.placements.map((p) => p.name)).toEqual(["a", "b", "c", "d"]); // request order
    expect(new Set(on(d)).size).toBe(2);
  });

  it("places a gang that request order cannot", () => {
    const d = placeVms(hosts("h1", "h2"), gang, pack);
    expect(d.placed).toBe(true);
    expect(new Set(on(d)).size).toBe(2);
    // With no search (budget 0) and under spread: request order, and its failure answer.
    const none = placeVms(hosts("h1", "h2"), gang, resolveSchedulerOptions({ ...BASE, preset: "pack", gangSearchMs: 0 }));
    expect(none).toMatchObject({ placed: false, failed: "d", placements: [] });
    expect(none.placed === false && none.reasons).toEqual(["h1: capacity: vcpus: needs 6 vCPU, 2 vCPU free of 10 allocatable", "h2: capacity: vcpus: needs 6 vCPU, 4 vCPU free of 10 allocatable"]);
  });

  it("when nothing places the whole gang, names the VM request order could not place, with its reasons", () => {
    const d = placeVms(hosts("h1", "h2"), [...gang, cpu("e", 1)], pack);
    expect(d).toMatchObject({ placed: false, failed: "d", placements: [] });
  });

  it("keeps hard groups, labels and pins while packing", () => {
    const web = { group: { name: "web", policy: "anti-affinity" as const } };
    const d = placeVms(hosts("h1", "h2", "h3"), [cpu("w1", 2, web), cpu("w2", 2, web), cpu("x", 8), cpu("y", 8)], pack);
    expect(d.placed).toBe(true);
    const [w1, w2, x, y] = on(d);
    expect(w1).not.toBe(w2);
    expect(new Set([x, y]).size).toBe(2);
    const zoned = hosts("h1", "h2", "h3").map((h, i) => ({ ...h, labels: { zone: i === 2 ? "b" : "a" } }));
    const z = placeVms(zoned, [cpu("a", 4), cpu("b", 4, { requiredLabels: { zone: "b" } }), cpu("c", 6), cpu("d", 6, { pinnedHosts: ["h1"] })], pack);
    expect(on(z)[1]).toBe("h3");
    expect(on(z)[3]).toBe("h1");
  });

  it("packs only when the weights pack", () => {
    expect(gangPacks(pack)).toBe(true);
    expect(gangPacks(resolveSchedulerOptions({ weights: { mostAllocated: 2 } }))).toBe(true);
    expect(gangPacks(spread)).toBe(false);
    expect(gangPacks(resolveSchedulerOptions({ preset: "balanced" }))).toBe(false);
  });

  it("gangSearchMs: a budget of host checks, validated", () => {
    expect(gangSearchChecks(pack)).toBe(200 * GANG_CHECKS_PER_MS);
    expect(gangSearchChecks(resolveSchedulerOptions({ gangSearchMs: 10 }))).toBe(10 * GANG_CHECKS_PER_MS);
    expect(resolveSchedulerOptions({ gangSearchMs: 0 }).gangSearchMs).toBe(0);
    for (const bad of [-1, 1.5, 10_001, Number.NaN, "50"]) {
      let error: unknown;
      try {
        resolveSchedulerOptions({ gangSearchMs: bad as number });
      } catch (e) {
        error = e;
      }
      expect(isBerthError(error, ErrorCode.InvalidArgument)).toBe(true);
      expect((error as Error).message).toBe(`scheduler.gang_search_ms: must be a whole number from 0 to 10000 (got ${String(bad)})`);
    }
  });
});
