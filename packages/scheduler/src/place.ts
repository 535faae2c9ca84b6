import type { Resources } from "@berth/api";
import { addResources, BerthError, ErrorCode, formatResources, invalidArgument, quote, RESOURCE_FIELD, RESOURCE_NAMES, subtractResources } from "@berth/core";
import type { ResolvedSchedulerOptions } from "./options.js";
import { DEFAULT_PIPELINE, type Pipeline } from "./pipeline.js";
import { membersOn, type Filter, type PlacementContext } from "./stage.js";
import { fleetDirection, steers, usableHostCounts } from "./weighers.js";
import { packGang } from "./gang.js";
import {
  GROUP_POLICIES,
  type GangDecision,
  type HostSnapshot,
  type HostVerdict,
  type PlacementDecision,
  type PlacementRequest,
} from "./types.js";

/** Scores and totals are rounded to this many decimals, so that equal hosts tie exactly. */
const SCORE_DECIMALS = 9;
/** Rounds a score or total to {@link SCORE_DECIMALS} decimals (how placeVm compares hosts). */
export const roundScore = (x: number): number => {
  const f = 10 ** SCORE_DECIMALS;
  return Math.round(x * f) / f;
};

/**
 * Chooses a host for one VM. Pure and synchronous: the same hosts (in any order), request and
 * options always give the same decision.
 *
 * Every host goes through the enabled filters (`options.filters`, default all of the pipeline's in
 * its order) until one fails. Each weigher with a weight > 0 scores the hosts that passed; its raw
 * scores are normalised to [0, 1] across them (all 1 when they are equal) and a host's total is
 * Σ wᵢ·gᵢ. The highest total wins; equal totals are ordered by {@link compareTies} (seed 0: the
 * smallest host id). Scores and totals are rounded to 9 decimals, so equal hosts tie exactly.
 * `explanation` has a verdict for every host, sorted by host id. When no host passes, `reasons` has
 * one line per host: `<host-id>: <filter>: <reason>`.
 *
 * Throws BerthError INVALID_ARGUMENT for a malformed request (resources not whole numbers ≥ 0, an
 * unknown group policy), a malformed host override, duplicate host ids, or an enabled filter the
 * pipeline does not have.
 */
export function placeVm(
  hosts: readonly HostSnapshot[],
  request: PlacementRequest,
  options: ResolvedSchedulerOptions,
  pipeline: Pipeline = DEFAULT_PIPELINE,
): PlacementDecision {
  checkPlacementRequest(request);
  const sorted = [...hosts].sort((a, b) => compareIds(a.id, b.id));
  checkHosts(sorted);
  const filters = enabledFilters(pipeline, options);
  const group = request.group;
  // alignedFit steers only in a big enough fleet with hosts to spare (weighers.ts, steers).
  const counts = usableHostCounts(sorted);
  const steering = steers(counts.usable, counts.empty);
  const ctx: PlacementContext = {
    request,
    options,
    groupHosts: group === undefined ? [] : sorted.filter((h) => membersOn(h, group.name) > 0).map((h) => h.id),
    pinned: request.pinnedHosts !== undefined && request.pinnedHosts.length > 0 ? new Set(request.pinnedHosts) : undefined,
    fleetDirection: steering ? fleetDirection(sorted, request, options) : undefined,
  };

  // Filters: the first failure decides a host's verdict.
  const verdicts: HostVerdict[] = [];
  const candidates: HostSnapshot[] = [];
  for (const host of sorted) {
    let failed: HostVerdict | undefined;
    for (const f of filters) {
      const r = f.filter(host, ctx);
      if (!r.pass) {
        failed = { hostId: host.id, passed: false, filter: f.name, reason: r.reason };
        break;
      }
    }
    if (failed) verdicts.push(failed);
    else candidates.push(host);
  }

  // Weighers: raw scores, normalised per weigher across the candidates, then weighted.
  const scores = candidates.map(() => ({}) as Record<string, number>);
  const weighers = pipeline.weighers.filter((w) => (options.weights[w.name] ?? 0) > 0);
  for (const w of weighers) {
    const raw = candidates.map((h) => w.weigh(h, ctx));
    const normal = normalise(raw);
    normal.forEach((g, i) => (scores[i]![w.name] = roundScore(g)));
  }
  const seed = options.seed ?? 0;
  let best: { hostId: string; total: number } | undefined;
  candidates.forEach((host, i) => {
    const s = scores[i]!;
    let total = 0;
    for (const w of weighers) total += (options.weights[w.name] ?? 0) * (s[w.name] ?? 0);
    total = roundScore(total);
    verdicts.push({ hostId: host.id, passed: true, scores: s, total });
    if (!best || total > best.total || (total === best.total && compareTies(host.id, best.hostId, seed) < 0)) {
      best = { hostId: host.id, total };
    }
  });

  verdicts.sort((a, b) => compareIds(a.hostId, b.hostId));
  if (best) return { placed: true, hostId: best.hostId, score: best.total, explanation: verdicts };
  const reasons = verdicts.map((v) => (v.passed ? `${v.hostId}: passed` : `${v.hostId}: ${v.filter}: ${v.reason}`));
  return { placed: false, reasons, explanation: verdicts };
}

/**
 * Places several VMs all-or-nothing (a gang). First in request order: each is placed with
 * {@link placeVm} on the snapshot as it would be after the ones before it (their resources, VM
 * count and group membership applied virtually, see {@link withPlacement}).
 *
 * When packing is the goal ({@link gangPacks}: the `pack` preset, or `mostAllocated` /
 * `alignedFit` outweighing `leastAllocated` + `balanced`) and `gangSearchMs` > 0, the gang is then
 * packed as a set (gang.ts, {@link packGang}): greedy passes largest first and a bounded local
 * search, every placement decided by the pipeline's filters. An answer that opens fewer empty
 * hosts than request order replaces it, and so does a feasible one when request order fails; the
 * placements still name each request's host in request order and are valid replayed in that order.
 * Under `spread` (and `balanced`) the answer is request order's.
 *
 * When no answer places every VM, it names the first VM request order could not place, with that
 * decision's per-host reasons, and has no placements. The inputs are not changed. Throws
 * INVALID_ARGUMENT as placeVm does, and for two requests of one name.
 */
export function placeVms(
  hosts: readonly HostSnapshot[],
  requests: readonly PlacementRequest[],
  options: ResolvedSchedulerOptions,
  pipeline: Pipeline = DEFAULT_PIPELINE,
): GangDecision {
  const names = new Set<string>();
  requests.forEach((r, i) => {
    if (names.has(r.name)) throw invalidArgument(`requests[${i}].name`, `duplicate name '${r.name}'`);
    names.add(r.name);
  });
  return packGang(hosts, requests, options, pipeline, inRequestOrder(hosts, requests, options, pipeline));
}

/** placeVms in request order, each VM on the snapshot after the ones before it. */
function inRequestOrder(
  hosts: readonly HostSnapshot[],
  requests: readonly PlacementRequest[],
  options: ResolvedSchedulerOptions,
  pipeline: Pipeline,
): GangDecision {
  const byId = new Map(hosts.map((h) => [h.id, h]));
  const placements: { name: string; hostId: string }[] = [];
  for (const r of requests) {
    const d = placeVm(hosts.length === byId.size ? [...byId.values()] : hosts, r, options, pipeline);
    if (!d.placed) return { placed: false, failed: r.name, reasons: d.reasons, placements: [] };
    byId.set(d.hostId, withPlacement(byId.get(d.hostId)!, r.resources, r.group?.name));
    placements.push({ name: r.name, hostId: d.hostId });
  }
  return { placed: true, placements };
}

/**
 * Orders two hosts of equal total: by a seeded hash of the host id ({@link tieBreakKey}), then by
 * id; with seed 0, by id alone. Negative when `a` wins.
 */
export function compareTies(a: string, b: string, seed: number): number {
  if (seed !== 0) {
    const ka = tieBreakKey(a, seed);
    const kb = tieBreakKey(b, seed);
    if (ka !== kb) return ka - kb;
  }
  return compareIds(a, b);
}

/** A 32-bit hash of (seed, host id): FNV-1a over the id's code units, seeded, with a murmur3 finaliser. */
export function tieBreakKey(hostId: string, seed: number): number {
  let h = (0x811c9dc5 ^ (seed >>> 0)) >>> 0;
  for (let i = 0; i < hostId.length; i++) {
    h ^= hostId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= Math.floor(seed / 0x100000000) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * One line for an unplaced decision, for logs and error messages:
 * `no host can take 'web-1' (2 vCPU, 4 GiB memory, 20 GiB disk): 3 hosts rejected (capacity: 2, ready: 1)`.
 */
export function summarizeUnplaced(request: PlacementRequest, decision: PlacementDecision): string {
  const what = `no host can take '${request.name}' (${formatResources(request.resources)})`;
  if (decision.explanation.length === 0) return `${what}: there are no hosts`;
  const byFilter = new Map<string, number>();
  for (const v of decision.explanation) if (!v.passed) byFilter.set(v.filter, (byFilter.get(v.filter) ?? 0) + 1);
  const counts = [...byFilter]
    .sort(([a, m], [b, n]) => n - m || compareIds(a, b))
    .map(([f, n]) => `${f}: ${n}`)
    .join(", ");
  const n = decision.explanation.length;
  return `${what}: ${n} host${n === 1 ? "" : "s"} rejected (${counts})`;
}

/** The RESOURCE_EXHAUSTED error the API answers for an unplaced VM: the summary plus one reason per host. */
export function unplacedError(request: PlacementRequest, decision: PlacementDecision & { placed: false }): BerthError {
  return new BerthError(ErrorCode.ResourceExhausted, summarizeUnplaced(request, decision), { reasons: decision.reasons });
}

/**
 * The snapshot of `host` after placing a VM of `resources` on it, a member of `group` when given
 * (a new object; `host` is unchanged).
 */
export function withPlacement(host: HostSnapshot, resources: Resources, group?: string): HostSnapshot {
  const next: HostSnapshot = { ...host, allocated: addResources(host.allocated, resources), vmCount: host.vmCount + 1 };
  if (group !== undefined) next.groupMembers = { ...host.groupMembers, [group]: membersOn(host, group) + 1 };
  return next;
}

/**
 * The snapshot of `host` after removing a VM of `resources` from it, a member of `group` when given
 * (a new object; `host` is unchanged): the exact inverse of {@link withPlacement}, for asking the
 * filters where a VM could go were it not where it is (the rebalancer). It does not check that the
 * VM was there: allocations, VM count and members can go below what the host really holds only if
 * the caller removes what it never placed.
 */
export function withoutPlacement(host: HostSnapshot, resources: Resources, group?: string): HostSnapshot {
  const next: HostSnapshot = { ...host, allocated: subtractResources(host.allocated, resources), vmCount: host.vmCount - 1 };
  if (group !== undefined) next.groupMembers = { ...host.groupMembers, [group]: membersOn(host, group) - 1 };
  return next;
}

/** The RESOURCE_EXHAUSTED error for a gang that could not be placed: which VM failed, plus its per-host reasons. */
export function gangUnplacedError(decision: GangDecision & { placed: false }): BerthError {
  return new BerthError(
    ErrorCode.ResourceExhausted,
    `cannot place the VMs together: no host can take '${decision.failed}' after the ones before it; none was placed`,
    { reasons: decision.reasons },
  );
}

/** Min-max normalisation to [0, 1]; all 1 when the values are (nearly) equal (how weighers' raw scores are compared). */
export function normalise(raw: readonly number[]): number[] {
  let min = Infinity;
  let max = -Infinity;
  for (const x of raw) {
    if (x < min) min = x;
    if (x > max) max = x;
  }
  const range = max - min;
  if (!(range > 1e-12)) return raw.map(() => 1);
  return raw.map((x) => (x - min) / range);
}

/** Host-id order: code units, stable across locales, unlike localeCompare. */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The pipeline's filters that `options.filters` enables, in its order (all when absent). */
export function enabledFilters(pipeline: Pipeline, options: ResolvedSchedulerOptions): readonly Filter[] {
  const names = options.filters;
  if (names === undefined) return pipeline.filters;
  return names.map((name, i) => {
    const f = pipeline.filters.find((x) => x.name === name);
    if (!f) throw invalidArgument(`scheduler.filters[${i}]`, `unknown filter '${name}' (known: ${pipeline.filters.map((x) => x.name).join(", ")})`);
    return f;
  });
}

/** Throws INVALID_ARGUMENT for duplicate ids (`sorted` is in id order) or a malformed per-host ratio / reserve. */
export function checkHosts(sorted: readonly HostSnapshot[]): void {
  sorted.forEach((h, i) => {
    if (i > 0 && h.id === sorted[i - 1]!.id) throw invalidArgument("hosts", `duplicate host id '${h.id}'`);
    checkHost(h);
  });
}

function checkHost(host: HostSnapshot): void {
  for (const key of RESOURCE_NAMES) {
    const ratio: unknown = host.allocationRatio?.[key];
    if (ratio !== undefined && !(typeof ratio === "number" && Number.isFinite(ratio) && ratio > 0)) {
      throw invalidArgument(`hosts[${host.id}].allocation_ratio.${RESOURCE_FIELD[key]}`, `must be a number > 0 (got ${String(ratio)})`);
    }
    const reserve: unknown = host.reserved?.[key];
    if (reserve !== undefined && !(typeof reserve === "number" && Number.isSafeInteger(reserve) && reserve >= 0)) {
      throw invalidArgument(`hosts[${host.id}].reserved.${RESOURCE_FIELD[key]}`, `must be a whole number ≥ 0 (got ${String(reserve)})`);
    }
  }
}

/**
 * Throws INVALID_ARGUMENT naming the field under `field` (`request.resources.memory_mib`,
 * `vms[3].request.networks[1]`) for a malformed request: resources not whole numbers ≥ 0, a group
 * without a name or with an unknown policy, a network that is not a non-empty name, an empty image
 * id, volumes without a host or a name. Values are quoted at most 64 characters of them.
 */
export function checkPlacementRequest(request: PlacementRequest, field = "request"): void {
  if (request === null || typeof request !== "object") throw invalidArgument(field, "must be a placement request");
  const g = request.group;
  if (g !== undefined) {
    if (typeof g.name !== "string" || g.name === "") throw invalidArgument(`${field}.group.name`, "must not be empty");
    if (!GROUP_POLICIES.includes(g.policy)) {
      throw invalidArgument(`${field}.group.policy`, `unknown policy '${quote(g.policy)}' (${GROUP_POLICIES.join(", ")})`);
    }
  }
  const r = request.resources;
  for (const key of RESOURCE_NAMES) {
    const v: unknown = r?.[key];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      throw invalidArgument(`${field}.resources.${RESOURCE_FIELD[key]}`, `must be a whole number ≥ 0 (got ${quote(v)})`);
    }
  }
  const networks: unknown = request.networks;
  if (networks !== undefined) {
    if (!Array.isArray(networks)) throw invalidArgument(`${field}.networks`, "must be a list of network names");
    networks.forEach((n: unknown, i) => {
      if (!isName(n)) throw invalidArgument(`${field}.networks[${i}]`, `must be a network name (got '${quote(n)}')`);
    });
  }
  const image: unknown = request.imageId;
  if (image !== undefined && !isName(image)) throw invalidArgument(`${field}.image_id`, `must be an image id (got '${quote(image)}')`);
  const volumes: unknown = request.volumes;
  if (volumes !== undefined) {
    const v = volumes as Partial<NonNullable<PlacementRequest["volumes"]>> | null;
    if (v === null || typeof v !== "object") throw invalidArgument(`${field}.volumes`, "must name the volumes' host and the volumes");
    if (!isName(v.hostId)) throw invalidArgument(`${field}.volumes.host_id`, `must be a host id (got '${quote(v.hostId)}')`);
    if (!Array.isArray(v.names) || v.names.length === 0) throw invalidArgument(`${field}.volumes.names`, "must name at least one volume");
    v.names.forEach((n: unknown, i) => {
      if (!isName(n)) throw invalidArgument(`${field}.volumes.names[${i}]`, `must be a volume name (got '${quote(n)}')`);
    });
  }
}

/** A non-empty string (what a network name, image id, host id or volume name must at least be). */
const isName = (x: unknown): x is string => typeof x === "string" && x !== "";

/**
 * True when {@link checkPlacementRequest} would not throw: the quick form, for paths that validate every
 * request of a large input (the engine's fast path, the rebalancer's VMs) and call
 * checkPlacementRequest only to get the exact error.
 */
export function isWellFormedRequest(request: PlacementRequest): boolean {
  if (request === null || typeof request !== "object") return false;
  const r = request.resources;
  if (r === undefined || r === null) return false;
  const ok = (v: unknown): boolean => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
  if (!ok(r.vcpus) || !ok(r.memoryMib) || !ok(r.diskGib)) return false;
  const g = request.group;
  if (g !== undefined && !(typeof g.name === "string" && g.name !== "" && GROUP_POLICIES.includes(g.policy))) return false;
  const networks: unknown = request.networks;
  if (networks !== undefined && !(Array.isArray(networks) && networks.every(isName))) return false;
  if (request.imageId !== undefined && !isName(request.imageId)) return false;
  const v = request.volumes;
  if (v !== undefined) {
    if (v === null || typeof v !== "object" || !isName(v.hostId)) return false;
    if (!Array.isArray(v.names) || v.names.length === 0 || !v.names.every(isName)) return false;
  }
  return true;
}
