// The scheduler benchmark's synthetic fleet and VM stream, deterministic from a fixed seed.
//
// Fleet: identical hosts of 64 cores, 512 GiB memory, 4 TiB disk; CPU allocation ratio 2.0,
// memory 1.0, disk 1.0; 8 GiB of memory reserved per host, nothing else. Allocatable per host:
// 128 vCPUs, 516,096 MiB (504 GiB), 4,096 GiB.
//
// VMs, following the published Azure VM size shares:
//   vCPUs              1: 50 %, 2: 25 %, 4: 11 %, 8: 10 %, 16: 4 %   (mean 2.88)
//   memory per vCPU    2 GiB: 40 %, 4 GiB: 40 %, 8 GiB: 20 %          (mean 4 GiB)
//   disk               32 GiB per vCPU
// On average a host holds about 44 VMs by CPU, 44 by memory and 44 by disk: the three resources
// bind almost equally, which makes packing harder than a mix where one resource dominates.

// The seeded generator of the workloads is core's (the one the scheduler's gang search uses).
import { mulberry32 } from "../../packages/core/dist/index.js";

export { mulberry32 };

export const SEED = 0x5eed_b347;

export const HOST_CAPACITY = Object.freeze({ vcpus: 64, memoryMib: 512 * 1024, diskGib: 4 * 1024 });
export const ALLOCATION_RATIO = Object.freeze({ vcpus: 2, memoryMib: 1, diskGib: 1 });
export const RESERVED = Object.freeze({ vcpus: 0, memoryMib: 8 * 1024, diskGib: 0 });
/** floor(ratio × physical − reserved) per resource. */
export const ALLOCATABLE = Object.freeze({
  vcpus: Math.floor(ALLOCATION_RATIO.vcpus * HOST_CAPACITY.vcpus - RESERVED.vcpus),
  memoryMib: Math.floor(ALLOCATION_RATIO.memoryMib * HOST_CAPACITY.memoryMib - RESERVED.memoryMib),
  diskGib: Math.floor(ALLOCATION_RATIO.diskGib * HOST_CAPACITY.diskGib - RESERVED.diskGib),
});
export const RESOURCES = Object.freeze(["vcpus", "memoryMib", "diskGib"]);

export const VCPU_SHARES = Object.freeze([
  [1, 0.5],
  [2, 0.25],
  [4, 0.11],
  [8, 0.1],
  [16, 0.04],
]);
export const MEMORY_GIB_PER_VCPU_SHARES = Object.freeze([
  [2, 0.4],
  [4, 0.4],
  [8, 0.2],
]);
export const DISK_GIB_PER_VCPU = 32;
/** Group case: this share of VMs is in anti-affinity groups of GROUP_SIZE (members arrive together). */
export const GROUPED_SHARE = 0.3;
export const GROUP_SIZE = 5;

function pick(shares, u) {
  let acc = 0;
  for (const [value, share] of shares) {
    acc += share;
    if (u < acc) return value;
  }
  return shares[shares.length - 1][0];
}

function drawSize(rng) {
  const vcpus = pick(VCPU_SHARES, rng());
  const memGib = vcpus * pick(MEMORY_GIB_PER_VCPU_SHARES, rng());
  return Object.freeze({ vcpus, memoryMib: memGib * 1024, diskGib: vcpus * DISK_GIB_PER_VCPU });
}

/**
 * `count` VMs (fewer only never: exactly count), as PlacementRequests. With `groups`, a share
 * GROUPED_SHARE of the VMs come in anti-affinity groups of GROUP_SIZE: a group's members have the
 * same size and arrive one after the other (a deployment of replicas). A unit is a group with
 * probability q, where 5q / (5q + 1 − q) = 0.3, i.e. q = 0.3 / 3.8.
 */
export function vmStream(count, { groups = false, seed = SEED } = {}) {
  const rng = mulberry32(seed);
  const out = [];
  const groupUnitP = GROUPED_SHARE / (GROUP_SIZE - (GROUP_SIZE - 1) * GROUPED_SHARE);
  let groupNo = 0;
  while (out.length < count) {
    const resources = drawSize(rng);
    if (groups && rng() < groupUnitP) {
      const group = Object.freeze({ name: `g-${groupNo++}`, policy: "anti-affinity" });
      for (let k = 0; k < GROUP_SIZE && out.length < count; k++) {
        out.push({ name: `vm-${out.length}`, resources, group });
      }
    } else {
      out.push({ name: `vm-${out.length}`, resources });
    }
  }
  return out;
}

/**
 * The VMs of the fill case: the stream (no groups) cut where its total demand, on the binding
 * resource, reaches `fill` × hosts × allocatable — i.e. the longest prefix whose lower bound
 * Σ demand / allocatable, maximised over resources, is at most fill × hosts.
 */
export function fillStream(hosts, fill = 0.9, seed = SEED) {
  const rng = mulberry32(seed);
  const limit = fill * hosts;
  const sum = { vcpus: 0, memoryMib: 0, diskGib: 0 };
  const out = [];
  for (;;) {
    const resources = drawSize(rng);
    const next = RESOURCES.map((r) => (sum[r] + resources[r]) / ALLOCATABLE[r]);
    if (Math.max(...next) > limit) break;
    for (const r of RESOURCES) sum[r] += resources[r];
    out.push({ name: `vm-${out.length}`, resources });
  }
  return { vms: out, demand: sum };
}

/** LB = max over resources of ⌈Σ demand / allocatable per host⌉. */
export function lowerBound(demand) {
  return Math.max(...RESOURCES.map((r) => Math.ceil(demand[r] / ALLOCATABLE[r])));
}

/** The binding resource of a demand (largest Σ demand / allocatable). */
export function bindingResource(demand) {
  return RESOURCES.reduce((a, b) => (demand[b] / ALLOCATABLE[b] > demand[a] / ALLOCATABLE[a] ? b : a));
}

/** H fresh host snapshots, ids zero-padded so that id order is index order. */
export function fleet(count) {
  const width = String(count - 1).length;
  return Array.from({ length: count }, (_, i) => ({
    id: `host-${String(i).padStart(width, "0")}`,
    capacity: { ...HOST_CAPACITY },
    allocated: { vcpus: 0, memoryMib: 0, diskGib: 0 },
    vmCount: 0,
    ready: true,
    cordoned: false,
    labels: {},
  }));
}
