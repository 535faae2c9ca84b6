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
      weights: { leastAllocated: 1 },
    });
  });

  it("merges partial vectors with the defaults and freezes the result", () => {
    const o = resolveSchedulerOptions({ allocationRatio: { vcpus: 16 }, reserved: { diskGib: 10 } });
    expect(o.allocationRatio).toEqual({ vcpus: 16, memoryMib: 1, diskGib: 1 });
    expect(o.reserved).toEqual({ vcpus: 0, memoryMib: 1024, diskGib: 10 });
    expect(Object.isFrozen(o) && Object.isFrozen(o.allocationRatio) && Object.isFrozen(o.weights)).toBe(true);
  });

  it("takes given weights as the whole set", () => {
    expect(resolveSchedulerOptions({ weights: {} }).weights).toEqual({ leastAllocated: 0 });
    expect(resolveSchedulerOptions({ weights: { leastAllocated: 2.5 } }).weights).toEqual({ leastAllocated: 2.5 });
  });

  it.each<[SchedulerOptions, string]>([
    [{ allocationRatio: { vcpus: 0.5 } }, "scheduler.allocation_ratio.vcpus: must be a number ≥ 1 (got 0.5)"],
    [{ allocationRatio: { memoryMib: Number.NaN } }, "scheduler.allocation_ratio.memory_mib: must be a number ≥ 1 (got NaN)"],
    [{ allocationRatio: { diskGib: Infinity } }, "scheduler.allocation_ratio.disk_gib: must be a number ≥ 1 (got Infinity)"],
    [{ allocationRatio: { cpu: 2 } as never }, "scheduler.allocation_ratio.cpu: unknown resource (known: vcpus, memoryMib, diskGib)"],
    [{ reserved: { memoryMib: -1 } }, "scheduler.reserved.memory_mib: must be a whole number ≥ 0 (got -1)"],
    [{ reserved: { vcpus: 0.5 } }, "scheduler.reserved.vcpus: must be a whole number ≥ 0 (got 0.5)"],
    [{ weights: { mostAllocated: 1 } }, "scheduler.weights.mostAllocated: unknown weigher (known: leastAllocated)"],
    [{ weights: { leastAllocated: -1 } }, "scheduler.weights.leastAllocated: must be a number ≥ 0 (got -1)"],
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

  it("is never negative", () => {
    expect(allocatable({ capacity: { vcpus: 1, memoryMib: 512, diskGib: 0 } }, resolveSchedulerOptions())).toEqual({
      vcpus: 4,
      memoryMib: 0,
      diskGib: 0,
    });
  });
});
