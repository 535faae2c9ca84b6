// Builders and fast-check arbitraries shared by the scheduler's tests.
import fc from "fast-check";
import type { Resources } from "@berth/api";
import { RESOURCE_NAMES } from "@berth/core";
import { allocatable, resolveSchedulerOptions, type HostSnapshot, type PlacementRequest, type ResolvedSchedulerOptions } from "./index.js";

export const res = (vcpus: number, memoryMib: number, diskGib: number): Resources => ({ vcpus, memoryMib, diskGib });

export function host(id: string, over: Partial<HostSnapshot> = {}): HostSnapshot {
  return {
    id,
    capacity: res(16, 65536, 1000),
    allocated: res(0, 0, 0),
    vmCount: 0,
    ready: true,
    cordoned: false,
    labels: {},
    ...over,
  };
}

export const vm = (name: string, vcpus: number, memoryMib: number, diskGib: number): PlacementRequest => ({
  name,
  resources: res(vcpus, memoryMib, diskGib),
});

/** Scheduler options with random ratios and reserves. */
export const optionsArb: fc.Arbitrary<ResolvedSchedulerOptions> = fc
  .record({
    vcpus: fc.double({ min: 1, max: 8, noNaN: true }),
    memoryMib: fc.double({ min: 1, max: 2, noNaN: true }),
    diskGib: fc.constantFrom(1, 1.5, 3),
    rv: fc.integer({ min: 0, max: 4 }),
    rm: fc.integer({ min: 0, max: 4096 }),
    rd: fc.integer({ min: 0, max: 50 }),
  })
  .map(({ vcpus, memoryMib, diskGib, rv, rm, rd }) =>
    resolveSchedulerOptions({ allocationRatio: { vcpus, memoryMib, diskGib }, reserved: { vcpus: rv, memoryMib: rm, diskGib: rd } }),
  );

const hostShapeArb = fc.record({
  capacity: fc.record({
    vcpus: fc.integer({ min: 1, max: 64 }),
    memoryMib: fc.integer({ min: 1024, max: 262144 }),
    diskGib: fc.integer({ min: 0, max: 4000 }),
  }),
  fill: fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true })),
  ready: fc.boolean(),
  cordoned: fc.boolean(),
  vmCount: fc.nat(50),
});

const clusterShapeArb = fc.uniqueArray(fc.tuple(fc.stringMatching(/^[a-z][a-z0-9-]{0,8}$/), hostShapeArb), {
  maxLength: 10,
  selector: ([id]) => id,
});

/**
 * Random options with a cluster of 0..10 hosts (unique ids) each already filled to some fraction
 * of what is allocatable under those options (never beyond), about a quarter of them not Ready and
 * a quarter cordoned. Built without `chain`, which would rebuild the arbitraries on every run.
 */
export const clusterWithOptionsArb: fc.Arbitrary<{ options: ResolvedSchedulerOptions; hosts: HostSnapshot[] }> = fc
  .record({ options: optionsArb, shapes: clusterShapeArb })
  .map(({ options, shapes }) => ({
    options,
    hosts: shapes.map(([id, s]) => {
      const a = allocatable({ capacity: s.capacity }, options);
      const allocated = res(0, 0, 0);
      RESOURCE_NAMES.forEach((k, i) => (allocated[k] = Math.floor(a[k] * (s.fill[i] ?? 0))));
      return { id, capacity: s.capacity, allocated, vmCount: s.vmCount, ready: s.ready, cordoned: s.cordoned, labels: {} };
    }),
  }));

export const requestArb: fc.Arbitrary<PlacementRequest> = fc.record({
  name: fc.constantFrom("web-1", "db", "batch-7"),
  resources: fc.record({
    vcpus: fc.integer({ min: 1, max: 32 }),
    memoryMib: fc.integer({ min: 16, max: 65536 }),
    diskGib: fc.integer({ min: 0, max: 500 }),
  }),
});
