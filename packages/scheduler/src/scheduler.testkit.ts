// Builders and fast-check arbitraries shared by the scheduler's tests.
import fc from "fast-check";
import type { Resources } from "@berth/api";
import { RESOURCE_NAMES } from "@berth/core";
import {
  allocatable,
  GROUP_POLICIES,
  PRESETS,
  resolveSchedulerOptions,
  type HostSnapshot,
  type PlacementRequest,
  type ResolvedSchedulerOptions,
} from "./index.js";

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

// ---- Rich scenarios: labels, groups, pins, per-host overrides, presets, limits, seeds. ----

/** Options as {@link optionsArb}, plus any preset, a VM limit (often none), a seed, and random weight overrides. */
export const richOptionsArb: fc.Arbitrary<ResolvedSchedulerOptions> = fc
  .record({
    base: optionsArb,
    preset: fc.constantFrom(...PRESETS),
    maxVmsPerHost: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 40 })),
    seed: fc.oneof(fc.constant(0), fc.integer({ min: -1000, max: 2 ** 40 })),
    weights: fc.dictionary(
      fc.constantFrom("leastAllocated", "mostAllocated", "alignedFit", "balanced", "groupAffinity", "instanceCount", "imageLocality"),
      fc.constantFrom(0, 0.5, 1, 3),
    ),
  })
  .map(({ base, preset, maxVmsPerHost, seed, weights }) =>
    resolveSchedulerOptions({ allocationRatio: base.allocationRatio, reserved: base.reserved, preset, maxVmsPerHost, seed, weights }),
  );

/** `arb` one time in `1 + none`, otherwise undefined (fc.option's `freq` only makes undefined the rarer). */
export const sometimes = <T>(arb: fc.Arbitrary<T>, none: number): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: none, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb });

/** The networks a rich host may offer: most offer `default`, some `lab`, few `san`. */
export const networksArb: fc.Arbitrary<ReadonlySet<string> | undefined> = fc.option(
  fc.record({ default: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }), lab: fc.boolean(), san: fc.oneof({ weight: 1, arbitrary: fc.constant(true) }, { weight: 3, arbitrary: fc.constant(false) }) }).map(
    (has) => new Set(Object.entries(has).flatMap(([name, yes]) => (yes ? [name] : []))),
  ),
  { nil: undefined, freq: 6 },
);

/** The images a rich host may hold (img-a, img-b), or none. */
export const imagesArb: fc.Arbitrary<ReadonlySet<string> | undefined> = fc.option(fc.subarray(["img-a", "img-b"]).map((ids) => new Set(ids)), { nil: undefined, freq: 4 });

const richHostArb = fc.record({
  shape: hostShapeArb,
  networks: networksArb,
  images: imagesArb,
  labels: fc.record({ zone: fc.constantFrom("a", "b"), gpu: fc.constantFrom("a100", "t4") }, { requiredKeys: [] }),
  groups: fc.record({ web: fc.integer({ min: 0, max: 2 }), db: fc.integer({ min: 0, max: 2 }) }, { requiredKeys: [] }),
  ratio: fc.option(fc.record({ vcpus: fc.constantFrom(1, 2, 0.5) }, { requiredKeys: [] }), { nil: undefined }),
  reserve: fc.option(fc.record({ memoryMib: fc.integer({ min: 0, max: 8192 }), diskGib: fc.integer({ min: 0, max: 100 }) }, { requiredKeys: [] }), {
    nil: undefined,
  }),
});

/**
 * Random rich options with a cluster of 0..10 hosts: labels (zone, gpu), group members (web, db),
 * sometimes their own ratio and reserve, networks (default, lab, san) and images (img-a, img-b),
 * each filled to some fraction of its own allocatable.
 */
export const richClusterArb: fc.Arbitrary<{ options: ResolvedSchedulerOptions; hosts: HostSnapshot[] }> = fc
  .record({
    options: richOptionsArb,
    shapes: fc.uniqueArray(fc.tuple(fc.stringMatching(/^[a-z][a-z0-9-]{0,8}$/), richHostArb), { maxLength: 10, selector: ([id]) => id }),
  })
  .map(({ options, shapes }) => ({
    options,
    hosts: shapes.map(([id, { shape: s, labels, groups, ratio, reserve, networks, images }]) => {
      const h: HostSnapshot = {
        id,
        capacity: s.capacity,
        allocated: res(0, 0, 0),
        vmCount: s.vmCount,
        ready: s.ready,
        cordoned: s.cordoned,
        labels: { ...labels },
        groupMembers: { ...groups },
      };
      if (ratio) h.allocationRatio = ratio;
      if (reserve) h.reserved = reserve;
      if (networks) h.networks = networks;
      if (images) h.images = images;
      const a = allocatable(h, options);
      RESOURCE_NAMES.forEach((k, i) => (h.allocated[k] = Math.floor(a[k] * (s.fill[i] ?? 0))));
      return h;
    }),
  }));

/** A rich request before its host indexes are resolved ({@link pinTo}). */
export type RichRequest = PlacementRequest & { pin: number[]; volumesAt?: number };

/**
 * A request with sometimes required / forbidden labels, a group, NICs on networks (default, lab,
 * san; repeats too), an image (img-a, img-b) and data volumes bound to a host; `pin` are indexes
 * into the cluster's hosts to pin, `volumesAt` the index of the volumes' host (resolved by the
 * scenario with {@link pinTo}; may be past the end: a host that does not exist).
 */
export const richRequestArb: fc.Arbitrary<RichRequest> = fc
  .record({
    base: requestArb,
    requiredLabels: fc.option(fc.record({ zone: fc.constantFrom("a", "b") }, { requiredKeys: [] }), { nil: undefined }),
    forbiddenLabels: fc.option(fc.record({ gpu: fc.constantFrom("a100", "t4", "*") }, { requiredKeys: [] }), { nil: undefined }),
    group: fc.option(fc.record({ name: fc.constantFrom("web", "db"), policy: fc.constantFrom(...GROUP_POLICIES) }), { nil: undefined }),
    pin: fc.oneof(fc.constant<number[]>([]), fc.array(fc.nat(9), { maxLength: 3 })),
    networks: sometimes(fc.array(fc.constantFrom("default", "default", "lab", "san"), { maxLength: 3 }), 3),
    imageId: sometimes(fc.constantFrom("img-a", "img-b"), 1),
    volumesAt: sometimes(fc.nat(10), 5),
  })
  .map(({ base, requiredLabels, forbiddenLabels, group, pin, networks, imageId, volumesAt }) => {
    const r: RichRequest = { ...base, pin };
    if (requiredLabels) r.requiredLabels = requiredLabels;
    if (forbiddenLabels) r.forbiddenLabels = forbiddenLabels;
    if (group) r.group = group;
    if (networks) r.networks = networks;
    if (imageId) r.imageId = imageId;
    if (volumesAt !== undefined) r.volumesAt = volumesAt;
    return r;
  });

/**
 * Resolves a rich request's pin indexes and volumes' host index against `hosts` (indexes past the
 * end name a host that does not exist).
 */
export function pinTo(hosts: readonly HostSnapshot[], { pin, volumesAt, ...request }: RichRequest): PlacementRequest {
  const out: PlacementRequest = { ...request };
  if (pin.length > 0) out.pinnedHosts = pin.map((i) => hosts[i]?.id ?? `missing-${i}`);
  if (volumesAt !== undefined) out.volumes = { hostId: hosts[volumesAt]?.id ?? `missing-${volumesAt}`, names: [`${request.name}-data`] };
  return out;
}

/**
 * An independent statement of every filter: may `host` take `request`, given all `hosts` (for group
 * facts)? The oracle the property tests hold the scheduler to.
 */
export function admissible(host: HostSnapshot, request: PlacementRequest, options: ResolvedSchedulerOptions, hosts: readonly HostSnapshot[]): boolean {
  if (!host.ready || host.cordoned) return false;
  if (request.pinnedHosts && request.pinnedHosts.length > 0 && !request.pinnedHosts.includes(host.id)) return false;
  if (request.volumes !== undefined && request.volumes.hostId !== host.id) return false;
  for (const n of request.networks ?? []) if (!(host.networks !== undefined && [...host.networks].includes(n))) return false;
  for (const [k, v] of Object.entries(request.requiredLabels ?? {})) if (host.labels[k] !== v) return false;
  for (const [k, v] of Object.entries(request.forbiddenLabels ?? {})) {
    if (v === "*" ? k in host.labels : host.labels[k] === v) return false;
  }
  if ((options.maxVmsPerHost ?? 0) > 0 && host.vmCount >= (options.maxVmsPerHost ?? 0)) return false;
  const g = request.group;
  if (g) {
    const here = host.groupMembers?.[g.name] ?? 0;
    if (g.policy === "anti-affinity" && here > 0) return false;
    if (g.policy === "affinity" && here === 0 && hosts.some((h) => (h.groupMembers?.[g.name] ?? 0) > 0)) return false;
  }
  const a = allocatable(host, options);
  return RESOURCE_NAMES.every((k) => host.allocated[k] + request.resources[k] <= a[k]);
}
