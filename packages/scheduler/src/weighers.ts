import { RESOURCE_NAMES } from "@berth/core";
import { allocatableOf } from "./options.js";
import { membersOn, type PlacementContext, type Weigher } from "./stage.js";
import type { HostSnapshot, PlacementRequest } from "./types.js";

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
 * A host's allocated and allocatable per resource (RESOURCE_NAMES order) and the request's, as
 * plain numbers: the form the raw scores below are defined on (the engine keeps them in typed
 * arrays and calls the very same functions, so both paths compute the same doubles).
 */
function vectorsOf(host: HostSnapshot, { request, options }: Pick<PlacementContext, "request" | "options">): { alloc: number[]; total: number[]; req: number[] } {
  const alloc: number[] = [];
  const total: number[] = [];
  const req: number[] = [];
  for (const key of RESOURCE_NAMES) {
    alloc.push(host.allocated[key]);
    total.push(allocatableOf(host, key, options));
    req.push(request.resources[key]);
  }
  return { alloc, total, req };
}

/**
 * leastAllocated's raw score on plain numbers (`alloc` / `total` from index `at`, see
 * {@link alignedFitRaw}): the free fraction of allocatable after placing `req`, averaged over the
 * resources the host has any of (0 when it has none).
 */
export function leastAllocatedRaw(alloc: ArrayLike<number>, total: ArrayLike<number>, at: number, req: ArrayLike<number>): number {
  let sum = 0;
  let n = 0;
  for (let r = 0; r < RESOURCE_NAMES.length; r++) {
    const t = total[at + r]!;
    if (t <= 0) continue;
    sum += (t - alloc[at + r]! - req[r]!) / t;
    n += 1;
  }
  return n === 0 ? 0 : sum / n;
}

/**
 * mostAllocated's raw score on plain numbers: −mean over the resources the host has any of of
 * 10^(free fraction after placing `req`) (0 when it has none).
 */
export function mostAllocatedRaw(alloc: ArrayLike<number>, total: ArrayLike<number>, at: number, req: ArrayLike<number>): number {
  let sum = 0;
  let n = 0;
  for (let r = 0; r < RESOURCE_NAMES.length; r++) {
    const t = total[at + r]!;
    if (t <= 0) continue;
    sum += 10 ** ((t - alloc[at + r]! - req[r]!) / t);
    n += 1;
  }
  return n === 0 ? 0 : -sum / n;
}

/**
 * Spread: prefers the host with the most room left. Raw score ({@link leastAllocatedRaw}): the
 * free fraction of allocatable capacity after placing the request, averaged over the resources the
 * host has any of.
 */
export const leastAllocatedWeigher: Weigher = {
  name: "leastAllocated",
  weigh(host, ctx) {
    const { alloc, total, req } = vectorsOf(host, ctx);
    return leastAllocatedRaw(alloc, total, 0, req);
  },
};

/**
 * Pack (best fit): prefers the host that will have the least room left. Raw score
 * ({@link mostAllocatedRaw}): −mean over resources of 10^(free fraction after placement) — Nomad's
 * exponential best-fit, so the resource with the most room left dominates: a host that would be
 * full on memory but half empty on vCPU scores worse than one evenly three-quarters full.
 */
export const mostAllocatedWeigher: Weigher = {
  name: "mostAllocated",
  weigh(host, ctx) {
    const { alloc, total, req } = vectorsOf(host, ctx);
    return mostAllocatedRaw(alloc, total, 0, req);
  },
};

/**
 * How strongly {@link alignedFitWeigher} steers hosts toward the fleet's demand direction: the
 * change in the squared off-direction part of a host's used fractions (a dimensionless number, of
 * the order of 10⁻⁴ to 10⁻² for one VM) is multiplied by this and subtracted from the best-fit
 * score (−mean 10^free, between −10 and −1). Tuned on the Azure-like mix of the scheduler benchmark
 * (docs/benchmarks.md): 1,000 to 10,000 gave 911–922 hosts for LB 900, 3,000 the best.
 */
export const ALIGNMENT_WEIGHT = 3000;

/**
 * alignedFit steers only in a fleet of at least this many usable hosts (ready, not cordoned). The
 * steering keeps a set of hosts open leaning each way (10 to 20 hosts beyond the lower bound on the
 * scheduler benchmark's mix)
 * and gains about 2.5 % of the hosts it closes; a stream that stops leaves that set partly empty.
 * Below a few hundred hosts the gain does not pay for the set (a 100-host fleet filled to 60 %:
 * 79 hosts steered, 62 by best fit), so a smaller fleet is packed by plain best fit.
 */
export const STEER_MIN_HOSTS = 500;

/**
 * alignedFit steers only while at least this many usable hosts hold no VM (about twice the hosts
 * steering keeps open): near the end of the fleet it is plain best fit, which fills the open hosts
 * instead of opening the last empty ones.
 */
export const STEER_MIN_EMPTY_HOSTS = 16;

/**
 * Whether alignedFit steers, given how many hosts are usable (ready, not cordoned) and how many of
 * those hold no VM: at least {@link STEER_MIN_HOSTS} and {@link STEER_MIN_EMPTY_HOSTS}. Otherwise
 * alignedFit's score is mostAllocated's (plain best fit).
 */
export function steers(usable: number, empty: number): boolean {
  return usable >= STEER_MIN_HOSTS && empty >= STEER_MIN_EMPTY_HOSTS;
}

/** A host alignedFit's steering counts as usable: ready and not cordoned (whatever the filters enabled). */
export const countsAsUsable = (host: Pick<HostSnapshot, "ready" | "cordoned">): boolean => host.ready && !host.cordoned;

/** Usable hosts ({@link countsAsUsable}), and how many of them hold no VM (vmCount 0). Pure; O(hosts). */
export function usableHostCounts(hosts: readonly HostSnapshot[]): { usable: number; empty: number } {
  let usable = 0;
  let empty = 0;
  for (const h of hosts) {
    if (!countsAsUsable(h)) continue;
    usable++;
    if (h.vmCount === 0) empty++;
  }
  return { usable, empty };
}

/**
 * The fleet's demand direction for `request`: per resource (in RESOURCE_NAMES order), what is
 * allocated on all `hosts` plus the request, over what all of them have allocatable (0 when none
 * has any). Pure; O(hosts).
 */
export function fleetDirection(hosts: readonly HostSnapshot[], request: PlacementRequest, options: PlacementContext["options"]): number[] {
  return RESOURCE_NAMES.map((key) => {
    let a = 0;
    let t = 0;
    for (const h of hosts) {
      a += h.allocated[key];
      t += allocatableOf(h, key, options);
    }
    return t > 0 ? (a + request.resources[key]) / t : 0;
  });
}

/**
 * alignedFit's raw score, on plain numbers (the engine calls it on its typed arrays, so both give
 * the same doubles). `alloc` and `total` hold the host's allocated and allocatable per resource
 * from index `at`; `req` the request; `dir` the fleet direction ({@link fleetDirection}), or
 * undefined for none (then the score is mostAllocated's). Over the resources the host has any of (total > 0), with u = alloc / total,
 * v = req / total:
 *   best fit  B = −mean 10^((total − alloc − req) / total)   (mostAllocated's score)
 *   drift     Δ = |(u + v)⊥|² − |u⊥|²,  ⊥ = the part orthogonal to dir
 *   score     B − ALIGNMENT_WEIGHT · Δ
 * Δ < 0 when the VM brings the host back toward the fleet's direction, > 0 when it pushes it away;
 * a VM shaped like the fleet's demand leaves every host's ⊥ part unchanged (Δ = 0 on every host),
 * so then best fit alone decides.
 */
export function alignedFitRaw(
  alloc: ArrayLike<number>,
  total: ArrayLike<number>,
  at: number,
  req: ArrayLike<number>,
  dir: ArrayLike<number> | undefined,
): number {
  let fit = 0;
  let n = 0;
  let dd = 0;
  let du = 0;
  let dv = 0;
  let uv = 0;
  let vv = 0;
  for (let r = 0; r < RESOURCE_NAMES.length; r++) {
    const t = total[at + r]!;
    if (t <= 0) continue;
    const a = alloc[at + r]!;
    const q = req[r]!;
    fit += 10 ** ((t - a - q) / t);
    n += 1;
    const u = a / t;
    const v = q / t;
    const d = dir === undefined ? 0 : dir[r]!;
    dd += d * d;
    du += d * u;
    dv += d * v;
    uv += u * v;
    vv += v * v;
  }
  if (n === 0) return 0;
  if (dir === undefined) return -fit / n;
  // |x⊥|² = |x|² − (d·x)² / |d|², so Δ = |v|² + 2u·v − ((d·v)² + 2(d·u)(d·v)) / |d|².
  let drift = vv + 2 * uv;
  if (dd > 0) drift -= (dv * dv + 2 * du * dv) / dd;
  return -fit / n - ALIGNMENT_WEIGHT * drift;
}

/**
 * Pack, aligned (the `pack` preset): best fit, steered so that each host's mix of vCPU, memory and
 * disk follows the fleet's. Raw score: {@link alignedFitRaw} — mostAllocated's score minus
 * ALIGNMENT_WEIGHT × how much the placement moves the host's used fractions away from the fleet's
 * demand direction (allocated on all hosts plus this VM, per unit of allocatable;
 * `ctx.fleetDirection`). A VM goes where it rebalances a host, and to a fresh host rather than
 * one it would tip further the way it already leans: hosts end up full on every resource at once
 * instead of full on one with the others stranded. For VMs shaped like the fleet's demand (a
 * stream of identical VMs) the steering term is 0 everywhere and this is plain best fit. It steers
 * only when placeVm (or the engine) gives it a direction, i.e. when {@link steers}: in a fleet of
 * STEER_MIN_HOSTS usable hosts or more, while STEER_MIN_EMPTY_HOSTS of them hold no VM; otherwise
 * it is plain best fit.
 */
export const alignedFitWeigher: Weigher = {
  name: "alignedFit",
  weigh(host, ctx) {
    const { alloc, total, req } = vectorsOf(host, ctx);
    return alignedFitRaw(alloc, total, 0, req, ctx.fleetDirection);
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

/**
 * Image locality (Kubernetes' ImageLocality): prefers a host that already holds the request's base
 * image, so that the VM starts without a fetch. Raw score: 1 when the host's `images` has
 * `request.imageId`, else 0; 0 on every host (no effect) when the request has no image. A host
 * without the image is never rejected for it — it fetches the image — so this only breaks
 * near-ties between hosts the resource weighers rank about the same (see PRESET_WEIGHTS for why its
 * weight is small).
 */
export const imageLocalityWeigher: Weigher = {
  name: "imageLocality",
  weigh(host, { request }) {
    const image = request.imageId;
    return image !== undefined && host.images?.has(image) === true ? 1 : 0;
  },
};
