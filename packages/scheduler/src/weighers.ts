import { RESOURCE_NAMES } from "@berth/core";
import { allocatableOf } from "./options.js";
import { membersOn, type PlacementContext, type Weigher } from "./stage.js";
import type { HostSnapshot } from "./types.js";

/**
 * Per resource the host has any of (allocatable > 0), the fraction of allocatable that is free
 * after placing the request (≤ 1; negative only past the capacity filter). Empty when the host has
 * nothing allocatable.
 */
export function freeFractionsAfter(host: HostSnapshot, { request, options }: Pick<PlacementContext, "request" | "options">): number[] {
  const out: number[] = [];
  for (const key of RESOURCE_NAMES) {
    const total = allocatableOf(host, key, options);
    if (total <= 0) continue;
    out.push((total - host.allocated[key] - request.resources[key]) / total);
  }
  return out;
}

/**
 * Spread: prefers the host with the most room left. Raw score: the free fraction of allocatable
 * capacity after placing the request, averaged over the resources the host has any of.
 */
export const leastAllocatedWeigher: Weigher = {
  name: "leastAllocated",
  weigh(host, ctx) {
    const f = freeFractionsAfter(host, ctx);
    let sum = 0;
    for (const x of f) sum += x;
    return f.length === 0 ? 0 : sum / f.length;
  },
};

/**
 * Pack (best fit): prefers the host that will have the least room left. Raw score:
 * −mean over resources of 10^(free fraction after placement) — Nomad's exponential best-fit, so
 * the resource with the most room left dominates: a host that would be full on memory but half
 * empty on vCPU scores worse than one evenly three-quarters full.
 */
export const mostAllocatedWeigher: Weigher = {
  name: "mostAllocated",
  weigh(host, ctx) {
    const f = freeFractionsAfter(host, ctx);
    let sum = 0;
    for (const x of f) sum += 10 ** x;
    return f.length === 0 ? 0 : -sum / f.length;
  },
};

/**
 * Balance across resources: prefers the host whose used fractions (vCPU, memory, disk) stay close
 * to each other after placement, so no resource is exhausted while others sit idle. Raw score: −the
 * standard deviation of the used fractions (0 for a host with fewer than two resources).
 */
export const balancedWeigher: Weigher = {
  name: "balanced",
  weigh(host, ctx) {
    const f = freeFractionsAfter(host, ctx);
    if (f.length < 2) return 0;
    let mean = 0;
    for (const x of f) mean += x;
    mean /= f.length;
    let v = 0;
    for (const x of f) v += (x - mean) ** 2;
    return -Math.sqrt(v / f.length);
  },
};

/**
 * Soft group policies: `soft-affinity` prefers hosts with more members of the request's group,
 * `soft-anti-affinity` fewer. Raw score: ± members here; 0 on every host (no effect) without a group
 * or with a hard policy, which the `groups` filter enforces.
 */
export const groupAffinityWeigher: Weigher = {
  name: "groupAffinity",
  weigh(host, { request }) {
    const g = request.group;
    if (g === undefined) return 0;
    if (g.policy === "soft-affinity") return membersOn(host, g.name);
    if (g.policy === "soft-anti-affinity") return -membersOn(host, g.name);
    return 0;
  },
};

/** Prefers hosts running fewer VMs (failure domains stay small). Raw score: −vmCount. */
export const instanceCountWeigher: Weigher = {
  name: "instanceCount",
  weigh(host) {
    return -host.vmCount;
  },
};
