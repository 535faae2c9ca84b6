import { describe, expect, it } from "vitest";
import { ErrorCode, isBerthError } from "@berth/core";
import {
  capacityFilter,
  DEFAULT_PIPELINE,
  definePipeline,
  placeVm,
  readyFilter,
  resolveSchedulerOptions,
  summarizeUnplaced,
  unplacedError,
  withPlacement,
  type HostVerdict,
  type PlacementDecision,
  type Weigher,
} from "./index.js";
import { host, res, vm } from "./scheduler.testkit.js";

// Spread by room alone (the spread preset without its tie-breaking, group and image weighers).
const opts = resolveSchedulerOptions({ weights: { instanceCount: 0, groupAffinity: 0, imageLocality: 0 } });
// 16 physical vCPU × 4 = 64 allocatable; 65536 − 1024 = 64512 MiB; 1000 GiB.

function placed(d: PlacementDecision): string {
  if (!d.placed) throw new Error(`not placed: ${d.reasons.join(" | ")}`);
  return d.hostId;
}

describe("placeVm", () => {
  it("places on the only host that fits", () => {
    const d = placeVm([host("a", { allocated: res(0, 62000, 0) }), host("b")], vm("web-1", 2, 4096, 20), opts);
    expect(d).toMatchObject({ placed: true, hostId: "b", score: 1 });
  });

  it("spreads: prefers the least allocated host", () => {
    const hosts = [host("a", { allocated: res(8, 16384, 100) }), host("b", { allocated: res(4, 8192, 50) }), host("c", { allocated: res(16, 32768, 200) })];
    const d = placeVm(hosts, vm("web-1", 2, 4096, 20), opts);
    expect(placed(d)).toBe("b");
    const totals = Object.fromEntries(d.explanation.map((v) => [v.hostId, v.passed ? v.total : -1]));
    expect(totals["b"]).toBe(1);
    expect(totals["c"]).toBe(0);
    expect(totals["a"]).toBeGreaterThan(0);
    expect(totals["a"]).toBeLessThan(1);
  });

  it("breaks ties by the smallest host id, whatever the input order", () => {
    const d1 = placeVm([host("h-2"), host("h-10"), host("h-1")], vm("x", 1, 512, 1), opts);
    const d2 = placeVm([host("h-1"), host("h-2"), host("h-10")], vm("x", 1, 512, 1), opts);
    expect(placed(d1)).toBe("h-1");
    expect(d2).toEqual(d1);
    expect(d1.explanation.map((v) => v.hostId)).toEqual(["h-1", "h-10", "h-2"]);
  });

  it("never picks a host that is not Ready or is cordoned", () => {
    const d = placeVm(
      [host("a", { ready: false }), host("b", { cordoned: true }), host("c", { allocated: res(60, 60000, 900) })],
      vm("web-1", 1, 1024, 1),
      opts,
    );
    expect(placed(d)).toBe("c");
    expect(d.explanation).toEqual<HostVerdict[]>([
      { hostId: "a", passed: false, filter: "ready", reason: "host is not Ready" },
      { hostId: "b", passed: false, filter: "ready", reason: "host is cordoned" },
      { hostId: "c", passed: true, scores: { leastAllocated: 1 }, total: 1 },
    ]);
  });

  it("explains why nothing fits, one line per host", () => {
    const hosts = [
      host("host-1", { ready: false }),
      host("host-2", { capacity: res(16, 65536 + 1024, 1000), allocated: res(0, 63488, 0) }),
      host("host-3", { allocated: res(63, 64512, 1000) }),
    ];
    const request = vm("web-1", 2, 4096, 20);
    const d = placeVm(hosts, request, opts);
    expect(d.placed).toBe(false);
    if (d.placed) return;
    expect(d.reasons).toEqual([
      "host-1: ready: host is not Ready",
      "host-2: capacity: memory_mib: needs 4096 MiB, 2048 MiB free of 65536 allocatable",
      "host-3: capacity: vcpus: needs 2 vCPU, 1 vCPU free of 64 allocatable; memory_mib: needs 4096 MiB, 0 MiB free of 64512 allocatable; disk_gib: needs 20 GiB, 0 GiB free of 1000 allocatable",
    ]);
    expect(summarizeUnplaced(request, d)).toBe(
      "no host can take 'web-1' (2 vCPU, 4 GiB memory, 20 GiB disk): 3 hosts rejected (capacity: 2, ready: 1)",
    );
    const e = unplacedError(request, d);
    expect(e.code).toBe(ErrorCode.ResourceExhausted);
    expect(e.reasons).toEqual(d.reasons);
  });

  it("says so when there are no hosts", () => {
    const d = placeVm([], vm("web-1", 1, 512, 0), opts);
    expect(d).toEqual({ placed: false, reasons: [], explanation: [] });
    expect(summarizeUnplaced(vm("web-1", 1, 512, 0), d)).toBe("no host can take 'web-1' (1 vCPU, 512 MiB memory, 0 B disk): there are no hosts");
  });

  it("fits exactly up to the allocatable capacity, not one unit beyond", () => {
    const h = host("a", { allocated: res(60, 60000, 990) });
    expect(placeVm([h], vm("x", 4, 4512, 10), opts).placed).toBe(true);
    expect(placeVm([h], vm("x", 5, 4512, 10), opts).placed).toBe(false);
    expect(placeVm([h], vm("x", 4, 4513, 10), opts).placed).toBe(false);
    expect(placeVm([h], vm("x", 4, 4512, 11), opts).placed).toBe(false);
  });

  it("reports no negative free capacity on an over-committed host", () => {
    const d = placeVm([host("a", { allocated: res(0, 70000, 0) })], vm("x", 1, 16, 0), opts);
    expect(d.placed ? [] : d.reasons).toEqual(["a: capacity: memory_mib: needs 16 MiB, 0 MiB free of 64512 allocatable"]);
  });

  it("applies allocation ratios and reserves", () => {
    const strict = resolveSchedulerOptions({ allocationRatio: { vcpus: 1 }, reserved: { vcpus: 2 } });
    const h = host("a", { allocated: res(12, 0, 0) });
    expect(placeVm([h], vm("x", 2, 16, 0), strict).placed).toBe(true);
    expect(placeVm([h], vm("x", 3, 16, 0), strict).placed).toBe(false);
  });

  it("with all weights zero, picks the smallest id among the hosts that fit", () => {
    const o = resolveSchedulerOptions({ weights: { leastAllocated: 0, instanceCount: 0, groupAffinity: 0, imageLocality: 0 } });
    const d = placeVm([host("b"), host("a", { allocated: res(30, 30000, 500) })], vm("x", 1, 16, 0), o);
    expect(d).toMatchObject({ placed: true, hostId: "a", score: 0 });
  });

  it("rejects a malformed request or duplicate host ids with INVALID_ARGUMENT", () => {
    for (const f of [
      () => placeVm([host("a")], vm("x", -1, 16, 0), opts),
      () => placeVm([host("a")], vm("x", 1, 1.5, 0), opts),
      () => placeVm([host("a"), host("a")], vm("x", 1, 16, 0), opts),
    ]) {
      let e: unknown;
      try {
        f();
      } catch (err) {
        e = err;
      }
      expect(isBerthError(e, ErrorCode.InvalidArgument)).toBe(true);
    }
  });

  it("does not change its inputs", () => {
    const hosts = [host("b"), host("a", { allocated: res(1, 1, 1) })];
    const copy = structuredClone(hosts);
    placeVm(hosts, vm("x", 1, 16, 0), opts);
    expect(hosts).toEqual(copy);
  });

  it("runs the stages of a custom pipeline, normalising and weighting their scores", () => {
    // A weigher preferring more VMs (pack by count), weighted against spread.
    const mostVms: Weigher = { name: "mostVms", weigh: (h) => h.vmCount };
    const pipeline = definePipeline([readyFilter, capacityFilter], [...DEFAULT_PIPELINE.weighers, mostVms]);
    const o = { ...opts, weights: { leastAllocated: 1, mostVms: 3 } };
    const hosts = [host("a", { vmCount: 10, allocated: res(10, 10000, 100) }), host("b", { vmCount: 0 }), host("c", { vmCount: 5, allocated: res(5, 5000, 50) })];
    const d = placeVm(hosts, vm("x", 1, 16, 0), o, pipeline);
    expect(placed(d)).toBe("a");
    const b = d.explanation.find((v) => v.hostId === "b");
    expect(b).toEqual({ hostId: "b", passed: true, scores: { leastAllocated: 1, mostVms: 0 }, total: 1 });
    expect(d.explanation.find((v) => v.hostId === "c")).toMatchObject({ scores: { mostVms: 0.5 } });
  });

  it("refuses a pipeline with two stages of one name", () => {
    expect(() => definePipeline([readyFilter, readyFilter], [])).toThrow(/registered twice/);
  });
});

describe("withPlacement", () => {
  it("adds the VM to a copy of the host", () => {
    const h = host("a", { allocated: res(1, 2, 3), vmCount: 1 });
    expect(withPlacement(h, res(1, 1, 1))).toMatchObject({ allocated: res(2, 3, 4), vmCount: 2 });
    expect(h.allocated).toEqual(res(1, 2, 3));
  });
});
