import { describe, expect, it } from "vitest";
import { ErrorCode, isBerthError } from "@berth/core";
import { allocatable, resolveSchedulerOptions, type SchedulerOptions } from "./index.js";

function errorOf(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error("expected a throw");
}

describe("resolveSchedulerOptions", () => {
  it("applies the defaults", () => {
    expect(resolveSchedulerOptions()).toEqual({
      allocationRatio: { vcpus: 4, memoryMib: 1, diskGib: 1 },
      reserved: { vcpus: 0, memoryMib: 1024, diskGib: 0 },
      weights: { leastAllocated: 1, mostAllocated: 0, alignedFit: 0, balanced: 0, groupAffinity: 2, instanceCount: 0, imageLocality: 0.1 },
      preset: "spread",
      maxVmsPerHost: 0,
      seed: 0,
    });
    expect(resolveSchedulerOptions().filters).toBeUndefined();
  });

  it("takes each preset's weights", () => {
    expect(resolveSchedulerOptions({ preset: "pack" }).weights).toEqual({
      leastAllocated: 0,
      mostAllocated: 0,
      alignedFit: 1,
      balanced: 0,
      groupAffinity: 2,
      instanceCount: 0,
      imageLocality: 0.02,
    });
    expect(resolveSchedulerOptions({ preset: "balanced" }).weights).toEqual({
      leastAllocated: 0.25,
      mostAllocated: 0,
      alignedFit: 0,
      balanced: 1,
      groupAffinity: 2,
      instanceCount: 0,
      imageLocality: 0.1,
    });
  });

  it("keeps the enabled filters in the given order, and the limit and seed", () => {
    const o = resolveSchedulerOptions({ filters: ["capacity", "ready", "volumes"], maxVmsPerHost: 32, seed: 7 });
    expect(o).toMatchObject({ filters: ["capacity", "ready", "volumes"], maxVmsPerHost: 32, seed: 7 });
    expect(Object.isFrozen(o.filters)).toBe(true);
  });

  it("always runs volumes: a list without it gets it first, or right after pinned", () => {
    expect(resolveSchedulerOptions({ filters: ["capacity", "ready"] }).filters).toEqual(["volumes", "capacity", "ready"]);
    expect(resolveSchedulerOptions({ filters: ["ready", "pinned", "capacity"] }).filters).toEqual(["ready", "pinned", "volumes", "capacity"]);
  });

  it("merges partial vectors with the defaults and freezes the result", () => {
    const o = resolveSchedulerOptions({ allocationRatio: { vcpus: 16 }, reserved: { diskGib: 10 } });
    expect(o.allocationRatio).toEqual({ vcpus: 16, memoryMib: 1, diskGib: 1 });
    expect(o.reserved).toEqual({ vcpus: 0, memoryMib: 1024, diskGib: 10 });
    expect(Object.isFrozen(o) && Object.isFrozen(o.allocationRatio) && Object.isFrozen(o.weights)).toBe(true);
  });

  it("merges given weights over the preset's", () => {
    expect(resolveSchedulerOptions({ weights: {} }).weights).toEqual(resolveSchedulerOptions().weights);
    expect(resolveSchedulerOptions({ weights: { leastAllocated: 2.5, balanced: 0.5 } }).weights).toEqual({
      leastAllocated: 2.5,
      mostAllocated: 0,
      alignedFit: 0,
      balanced: 0.5,
      groupAffinity: 2,
      instanceCount: 0,
      imageLocality: 0.1,
    });
    // The image weigher's name in ClusterConfig.scheduler.weights (a map by weigher name).
    expect(resolveSchedulerOptions({ weights: { imageLocality: 0 } }).weights).toMatchObject({ leastAllocated: 1, imageLocality: 0 });
    expect(resolveSchedulerOptions({ preset: "pack", weights: { groupAffinity: 0 } }).weights).toMatchObject({ alignedFit: 1, groupAffinity: 0 });
  });

  it.each<[SchedulerOptions, string]>([
    [{ allocationRatio: { vcpus: 0.5 } }, "scheduler.allocation_ratio.vcpus: must be a number from 1 to 100 (got 0.5)"],
    [{ allocationRatio: { memoryMib: Number.NaN } }, "scheduler.allocation_ratio.memory_mib: must be a number from 1 to 100 (got NaN)"],
    [{ allocationRatio: { diskGib: Infinity } }, "scheduler.allocation_ratio.disk_gib: must be a number from 1 to 100 (got Infinity)"],
    [{ allocationRatio: { cpu: 2 } as never }, "scheduler.allocation_ratio.cpu: unknown resource (known: vcpus, memoryMib, diskGib)"],
    [{ reserved: { memoryMib: -1 } }, "scheduler.reserved.memory_mib: must be a whole number from 0 to 1073741824 (got -1)"],
    [{ reserved: { vcpus: 0.5 } }, "scheduler.reserved.vcpus: must be a whole number from 0 to 1048576 (got 0.5)"],
    [{ weights: { fewestVms: 1 } }, "scheduler.weights.fewestVms: unknown weigher (known: leastAllocated, mostAllocated, alignedFit, balanced, groupAffinity, instanceCount, imageLocality)"],
    [{ weights: { leastAllocated: -1 } }, "scheduler.weights.leastAllocated: must be a number from 0 to 1000 (got -1)"],
    [{ weights: { mostAllocated: Infinity } }, "scheduler.weights.mostAllocated: must be a number from 0 to 1000 (got Infinity)"],
    [{ weights: { balanced: Number.NaN } }, "scheduler.weights.balanced: must be a number from 0 to 1000 (got NaN)"],
    [{ preset: "x" as never }, "scheduler.preset: unknown preset 'x' (spread, pack, balanced)"],
    // Hostile values are bounded, and quoted at most 64 characters of them.
    [{ allocationRatio: { vcpus: 1e9 } }, "scheduler.allocation_ratio.vcpus: must be a number from 1 to 100 (got 1000000000)"],
    [{ reserved: { vcpus: 2 ** 32 - 1 } }, "scheduler.reserved.vcpus: must be a whole number from 0 to 1048576 (got 4294967295)"],
    [{ weights: { leastAllocated: 1e308 } }, "scheduler.weights.leastAllocated: must be a number from 0 to 1000 (got 1e+308)"],
    [{ preset: "p".repeat(100_000) as never }, `scheduler.preset: unknown preset '${"p".repeat(64)}… (100000 characters)' (spread, pack, balanced)`],
    [{ maxVmsPerHost: -1 }, "scheduler.max_vms_per_host: must be a whole number ≥ 0 (got -1)"],
    [{ maxVmsPerHost: 2.5 }, "scheduler.max_vms_per_host: must be a whole number ≥ 0 (got 2.5)"],
    [{ seed: 0.5 }, "scheduler.seed: must be a whole number (got 0.5)"],
    [
      { filters: ["ready", "zone"] },
      "scheduler.filters[1]: unknown filter 'zone' (known: ready, pinned, volumes, labels, networks, maxVms, groups, capacity)",
    ],
    [{ filters: ["ready", "ready"] }, "scheduler.filters[1]: filter 'ready' listed twice"],
  ])("rejects %j", (options, message) => {
    const e = errorOf(() => resolveSchedulerOptions(options));
    expect(isBerthError(e, ErrorCode.InvalidArgument)).toBe(true);
    expect((e as Error).message).toBe(message);
  });
});

describe("allocatable", () => {
  const host = { capacity: { vcpus: 16, memoryMib: 65536, diskGib: 1000 } };

  it("is floor(ratio × physical − reserved)", () => {
    expect(allocatable(host, resolveSchedulerOptions())).toEqual({ vcpus: 64, memoryMib: 64512, diskGib: 1000 });
    const o = resolveSchedulerOptions({ allocationRatio: { vcpus: 1.5, memoryMib: 1.1 }, reserved: { vcpus: 1, memoryMib: 0, diskGib: 1 } });
    expect(allocatable(host, o)).toEqual({ vcpus: 23, memoryMib: 72089, diskGib: 999 });
  });

  it("is not fooled by float noise", () => {
    // 1.15 × 100 is 114.99999999999999 in floating point.
    const o = resolveSchedulerOptions({ allocationRatio: { vcpus: 1.15 }, reserved: { memoryMib: 0 } });
    expect(allocatable({ capacity: { vcpus: 100, memoryMib: 1, diskGib: 0 } }, o).vcpus).toBe(115);
  });

  it("takes the host's own ratio and reserve over the cluster's, resource by resource", () => {
    const h = { ...host, allocationRatio: { vcpus: 2 }, reserved: { diskGib: 100 } };
    expect(allocatable(h, resolveSchedulerOptions())).toEqual({ vcpus: 32, memoryMib: 64512, diskGib: 900 });
  });

  it("is never negative", () => {
    expect(allocatable({ capacity: { vcpus: 1, memoryMib: 512, diskGib: 0 } }, resolveSchedulerOptions())).toEqual({
      vcpus: 4,
      memoryMib: 0,
      diskGib: 0,
    });
  });
});
