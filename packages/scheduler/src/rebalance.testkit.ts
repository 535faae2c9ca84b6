// Builders and fast-check arbitraries for the rebalance planner's tests.
import fc from "fast-check";
import { RESOURCE_NAMES } from "@berth/core";
import {
  allocatable,
  moveRequestOf,
  placeVm,
  withoutPlacement,
  withPlacement,
  type HostSnapshot,
  type PlacementRequest,
  type RebalanceInput,
  type RebalanceMove,
  type RebalanceOptions,
  type RebalanceVm,
  type ResolvedSchedulerOptions,
} from "./index.js";
import { imagesArb, networksArb, pinTo, richOptionsArb, richRequestArb, sometimes } from "./scheduler.testkit.js";

/** A VM to populate with: its request, and what the rebalancer is told of it besides. */
export type PopulateRequest = PlacementRequest & { movable: boolean; usage?: number[]; copiesDisk?: boolean; volumeGib?: number };

/**
 * Places `requests` one by one with placeVm as the scheduler would, on `hot` (a subset of the
 * hosts: the skew of a failover), falling back to all hosts, dropping a VM nothing takes. Hosts
 * are placed on as if Ready and not cordoned; their flags are restored after, so VMs also sit on
 * hosts that are down or cordoned now. A VM's volumes (`volumeGib`) are placed with it, counted in
 * its host's allocated disk.
 */
export function populate(
  hosts: readonly HostSnapshot[],
  hotIds: ReadonlySet<string>,
  requests: readonly PopulateRequest[],
  options: ResolvedSchedulerOptions,
): RebalanceInput {
  const byId = new Map(hosts.map((h) => [h.id, { ...h, ready: true, cordoned: false }]));
  const vms: RebalanceVm[] = [];
  requests.forEach(({ movable, usage, copiesDisk, volumeGib, ...request }, i) => {
    const all = [...byId.values()];
    // Placed with its volumes' room in the disk (as where the volumes were bound).
    const withVolumes = { ...request, resources: { ...request.resources, diskGib: request.resources.diskGib + (volumeGib ?? 0) } };
    let d = placeVm(
      all.filter((h) => hotIds.has(h.id)),
      withVolumes,
      options,
    );
    // The hot subset's decision ignores group members elsewhere (affinity): re-check it on all hosts.
    if (!d.placed || placeVm(all, { ...withVolumes, pinnedHosts: [d.hostId] }, options).placed === false) d = placeVm(all, withVolumes, options);
    if (!d.placed) return;
    byId.set(d.hostId, withPlacement(byId.get(d.hostId)!, withVolumes.resources, request.group?.name));
    const vm: RebalanceVm = { id: `vm-${i}`, name: `vm-${i}`, hostId: d.hostId, request, movable };
    if (usage) vm.usage = { cpuCores: request.resources.vcpus * usage[0]!, memoryMib: Math.round(request.resources.memoryMib * usage[1]!) };
    if (copiesDisk) vm.copiesDisk = true;
    if (volumeGib) vm.volumeGib = volumeGib;
    vms.push(vm);
  });
  const out = hosts.map((h) => {
    const p = byId.get(h.id)!;
    return { ...p, ready: h.ready, cordoned: h.cordoned };
  });
  return { hosts: out, vms };
}

const hostArb = fc.record({
  capacity: fc.record({
    vcpus: fc.integer({ min: 4, max: 64 }),
    memoryMib: fc.integer({ min: 8192, max: 262144 }),
    diskGib: fc.integer({ min: 100, max: 4000 }),
  }),
  ready: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  cordoned: fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  labels: fc.record({ zone: fc.constantFrom("a", "b"), gpu: fc.constantFrom("a100", "t4") }, { requiredKeys: [] }),
  ratio: fc.option(fc.record({ vcpus: fc.constantFrom(1, 2) }, { requiredKeys: [] }), { nil: undefined }),
  reserve: fc.option(fc.record({ memoryMib: fc.integer({ min: 0, max: 4096 }) }, { requiredKeys: [] }), { nil: undefined }),
  networks: networksArb,
  images: imagesArb,
});

const vmArb = fc.record({
  r: richRequestArb,
  resources: fc.record({
    vcpus: fc.integer({ min: 1, max: 8 }),
    memoryMib: fc.integer({ min: 256, max: 16384 }),
    diskGib: fc.integer({ min: 0, max: 200 }),
  }),
  movable: fc.oneof({ weight: 5, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  usage: fc.option(fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true })), { nil: undefined }),
  copiesDisk: fc.boolean(),
  volumeGib: sometimes(fc.integer({ min: 1, max: 100 }), 3),
});

/**
 * Random rich scheduler options (presets, weights, VM limits, seeds, ratios, reserves), 2..10 hosts
 * (labels zone / gpu, sometimes their own ratio and reserve, networks, images, a tenth down and a
 * tenth cordoned), up to 60 VMs (labels, groups of every policy, pins, networks, images, volumes
 * bound to their host) placed by placeVm on a hot subset (a third,
 * half or all of the hosts: the skew of a failover), and random rebalance options.
 */
export const rebalanceScenarioArb = fc
  .record({
    options: richOptionsArb,
    shapes: fc.uniqueArray(fc.tuple(fc.stringMatching(/^h-[a-z0-9]{1,3}$/), hostArb), { minLength: 2, maxLength: 10, selector: ([id]) => id }),
    requests: fc.array(vmArb, { minLength: 5, maxLength: 60, size: "max" }),
    hotShare: fc.constantFrom(0.2, 0.34, 0.5, 1),
    goal: fc.constantFrom("balance" as const, "consolidate" as const),
    metric: fc.constantFrom(undefined, "usage" as const, "allocation" as const),
    maxMoves: fc.oneof({ weight: 1, arbitrary: fc.integer({ min: 0, max: 5 }) }, { weight: 2, arbitrary: fc.constant(100) }),
    maxMovesPerHost: fc.option(fc.oneof(fc.integer({ min: 1, max: 4 }), fc.constant(100)), { nil: undefined }),
    threshold: fc.option(fc.constantFrom(0, 0.02, 0.05, 0.1), { nil: undefined }),
    minBenefitPerGiB: fc.option(fc.constantFrom(0, 0.0001, 0.001), { nil: undefined }),
    minFreeFraction: fc.option(fc.constantFrom(0, 0.1, 0.3), { nil: undefined }),
    frozen: fc.array(fc.nat(9), { maxLength: 2 }),
  })
  .map(({ options, shapes, requests, hotShare, goal, metric, frozen, ...rest }) => {
    const hosts: HostSnapshot[] = shapes.map(([id, s]) => {
      const h: HostSnapshot = {
        id,
        capacity: s.capacity,
        allocated: { vcpus: 0, memoryMib: 0, diskGib: 0 },
        vmCount: 0,
        ready: s.ready,
        cordoned: s.cordoned,
        labels: { ...s.labels },
        groupMembers: {},
      };
      if (s.ratio) h.allocationRatio = s.ratio;
      if (s.reserve) h.reserved = s.reserve;
      if (s.networks) h.networks = s.networks;
      if (s.images) h.images = s.images;
      return h;
    });
    const hot = new Set(hosts.slice(0, Math.max(1, Math.ceil(hosts.length * hotShare))).map((h) => h.id));
    const reqs = requests.map(({ r, resources, movable, usage, copiesDisk, volumeGib }, i) => {
      const out: PopulateRequest = { ...pinTo(hosts, r), name: `vm-${i}`, resources, movable, copiesDisk };
      if (usage) out.usage = usage;
      // A VM with volumes has them on its host: bound there by its first placement.
      if (volumeGib !== undefined) out.volumeGib = volumeGib;
      return out;
    });
    const input = populate(hosts, hot, reqs, options);
    const rebalance: RebalanceOptions = { goal, maxMoves: rest.maxMoves };
    if (metric) rebalance.metric = metric;
    if (rest.maxMovesPerHost !== undefined) rebalance.maxMovesPerHost = rest.maxMovesPerHost;
    if (rest.threshold !== undefined) rebalance.threshold = rest.threshold;
    if (rest.minBenefitPerGiB !== undefined) rebalance.minBenefitPerGiB = rest.minBenefitPerGiB;
    if (rest.minFreeFraction !== undefined) rebalance.minFreeFraction = rest.minFreeFraction;
    const frozenIds = frozen.map((i) => hosts[i]?.id).filter((id): id is string => id !== undefined);
    if (frozenIds.length > 0) rebalance.frozenHosts = new Set(frozenIds);
    return { options, input, rebalance };
  });

/** The input after `moves`, applied in order with withoutPlacement / withPlacement (volumes travel with their VM). */
export function applyMoves(input: RebalanceInput, moves: readonly RebalanceMove[]): RebalanceInput {
  const hosts = new Map(input.hosts.map((h) => [h.id, h]));
  const where = new Map(input.vms.map((v) => [v.id, v.hostId]));
  const byId = new Map(input.vms.map((v) => [v.id, v]));
  for (const mv of moves) {
    const vm = byId.get(mv.vmId)!;
    const g = vm.request.group?.name;
    const resources = moveRequestOf(vm).resources;
    hosts.set(mv.from, withoutPlacement(hosts.get(mv.from)!, resources, g));
    hosts.set(mv.to, withPlacement(hosts.get(mv.to)!, resources, g));
    where.set(mv.vmId, mv.to);
  }
  return { hosts: input.hosts.map((h) => hosts.get(h.id)!), vms: input.vms.map((v) => ({ ...v, hostId: where.get(v.id)! })) };
}

/** Per resource, the population's free allocatable on hosts holding VMs, and its whole allocatable. */
export function freeOnHostsLeft(hosts: readonly HostSnapshot[], options: ResolvedSchedulerOptions): { free: number[]; total: number[] } {
  const free = RESOURCE_NAMES.map(() => 0);
  const total = RESOURCE_NAMES.map(() => 0);
  for (const h of hosts) {
    if (!h.ready || h.cordoned) continue;
    const a = allocatable(h, options);
    RESOURCE_NAMES.forEach((k, r) => {
      total[r] = total[r]! + a[k];
      if (h.vmCount > 0) free[r] = free[r]! + a[k] - h.allocated[k];
    });
  }
  return { free, total };
}
