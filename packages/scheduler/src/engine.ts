import { invalidArgument, notFound, RESOURCE_NAMES } from "@berth/core";
import { allocatableOf, type ResolvedSchedulerOptions } from "./options.js";
import { DEFAULT_CATALOG } from "./pipeline.js";
import { checkHosts, compareIds, compareTies, placeVm, withPlacement } from "./place.js";
import { alignedFitRaw, steers } from "./weighers.js";
import type { GangDecision, HostSnapshot, PlacementRequest } from "./types.js";

/** The engine's answer for one VM: where, or (only when nothing fits) the per-host reasons, as placeVm's. */
export type EnginePlacement = { placed: true; hostId: string } | { placed: false; reasons: string[] };

/** Raw scores closer than this count as equal (float noise), and go to the tie-break. */
const EPS = 1e-12;
const R = RESOURCE_NAMES.length;

/** Usable hosts of one shape in one allocation state: they score alike for any request. */
interface StateGroup {
  /** Mean free fraction now; in the `aligned` mode, the smallest free fraction over the resources. */
  readonly key: number;
  /** The allocation vector, as text (identity within the shape). */
  readonly vec: string;
  /** A member host index, for the arithmetic. */
  sample: number;
  /** Host indexes, in tie-break order (the first that passes a request's filters wins among them). */
  readonly members: number[];
}

/** Hosts with the same allocatable vector: within one, a host's score order does not depend on the request. */
interface ShapeClass {
  /** Allocatable per resource. */
  readonly total: readonly number[];
  /**
   * State groups, most promising first: by mean free fraction (descending to spread, ascending to
   * pack), or by smallest free fraction, descending (aligned pack); then vec.
   */
  readonly groups: StateGroup[];
  readonly byVec: Map<string, StateGroup>;
}

type Mode = "least" | "most" | "aligned" | "generic";

/**
 * An incremental placement engine for large fleets: the hosts are indexed once, then each
 * {@link place} inspects few of them and each {@link commit} updates the indexes in O(log n + class
 * size memmove).
 *
 * How: hosts are grouped by allocatable vector (shape) and, within a shape, by allocation state
 * (hosts in one state score alike, and are kept in tie-break order); each shape keeps its states in
 * order of mean free fraction. When the only resource weigher with a weight is `leastAllocated` (spread),
 * `mostAllocated` (best fit) or `alignedFit` (pack) — `groupAffinity` may weigh too, it is flat
 * unless the request has a soft group — and the enabled filters are the default ones, a placement
 * walks each shape from its most promising end, skipping states that do not fit and hosts that fail
 * a filter, and stops as soon as no further host can beat the best found (for `mostAllocated`, by
 * Jensen: mean 10^f ≥ 10^(mean f)) or, for `alignedFit` (whose steering term has no bound along any
 * order), as soon as no further host can fit: its states are kept by smallest free fraction,
 * descending, so the walk covers the empty hosts' state and the hosts with room on every resource
 * (in a packed fleet, a handful), and the fleet's demand direction comes from per-resource sums
 * kept on commit and release. alignedFit steers only with enough usable and empty hosts (`steers`
 * in weighers.ts; the engine counts them on commit and release); when it does not, it is best fit,
 * and the walk goes up the same order from the fullest state that may fit and stops by the same
 * Jensen bound, on the smallest free fraction. Pins and hard affinity with
 * members restrict the walk to those hosts. Everything else — other weighers, custom filter lists,
 * soft groups with weight — and every unplaced answer (for its reasons) goes through {@link placeVm}
 * on the engine's current snapshots: exact, but a full O(n) pass.
 *
 * Choices: the same filters as placeVm, exactly, so it never picks a host placeVm would reject, and
 * it picks only when placeVm would. On the fast path it picks the host with the best raw score and
 * breaks exact ties (|Δ| ≤ 1e-12) as placeVm does (seeded, then by id); placeVm compares normalised
 * scores rounded to 9 decimals, so when two hosts' raw scores differ by less than about 1e-9 of the
 * candidates' score range the two may choose different (equally good, to that precision) hosts.
 * Among hosts of one shape that never happens; otherwise it is rare, and both choices score the
 * same in placeVm's explanation.
 *
 * Not thread-safe (none is needed: it is synchronous); pure apart from its own state. It owns
 * copies of its inputs.
 */
export class PlacementEngine {
  private readonly options: ResolvedSchedulerOptions;
  private readonly mode: Mode;
  private readonly ids: string[];
  private readonly indexOf = new Map<string, number>();
  /** Current snapshots, in id order (for labels, the generic path and reasons). */
  private readonly hosts: HostSnapshot[];
  private readonly total: Float64Array;
  private readonly alloc: Float64Array;
  private readonly vmCount: Float64Array;
  private readonly usable: Uint8Array;
  private readonly classOf: Int32Array;
  /** Position of each host in the seeded tie-break order (lower wins). */
  private readonly rank: Int32Array;
  private readonly classes: ShapeClass[] = [];
  /** Group name → host index → members there (only counts > 0). */
  private readonly groups = new Map<string, Map<number, number>>();
  /** Per resource, allocated and allocatable summed over all hosts (for the fleet direction). */
  private readonly fleetAlloc = new Float64Array(R);
  private readonly fleetTotal = new Float64Array(R);
  /** Usable hosts holding no VM (vmCount 0), kept on commit and release (alignedFit steers only while there are enough). */
  private emptyHosts = 0;
  /** Usable hosts (ready, not cordoned; fixed at construction). */
  private usableHosts = 0;

  /**
   * Indexes `hosts` under `options` (from resolveSchedulerOptions). Throws INVALID_ARGUMENT for
   * duplicate host ids or malformed overrides, as placeVm does.
   */
  constructor(hosts: readonly HostSnapshot[], options: ResolvedSchedulerOptions) {
    this.options = options;
    this.mode = modeOf(options);
    this.hosts = [...hosts].map((h) => structuredClone(h)).sort((a, b) => compareIds(a.id, b.id));
    checkHosts(this.hosts);
    const n = this.hosts.length;
    this.ids = this.hosts.map((h) => h.id);
    this.total = new Float64Array(n * R);
    this.alloc = new Float64Array(n * R);
    this.vmCount = new Float64Array(n);
    this.usable = new Uint8Array(n);
    this.rank = new Int32Array(n);
    const seed = options.seed ?? 0;
    this.hosts
      .map((_, i) => i)
      .sort((a, b) => compareTies(this.ids[a]!, this.ids[b]!, seed))
      .forEach((i, r) => (this.rank[i] = r));
    this.classOf = new Int32Array(n);
    const classByShape = new Map<string, number>();
    this.hosts.forEach((h, i) => {
      this.indexOf.set(h.id, i);
      RESOURCE_NAMES.forEach((k, r) => {
        this.total[i * R + r] = allocatableOf(h, k, options);
        this.alloc[i * R + r] = h.allocated[k];
        this.fleetAlloc[r] = this.fleetAlloc[r]! + h.allocated[k];
        this.fleetTotal[r] = this.fleetTotal[r]! + this.total[i * R + r]!;
      });
      this.vmCount[i] = h.vmCount;
      this.usable[i] = h.ready && !h.cordoned ? 1 : 0;
      this.usableHosts += this.usable[i]!;
      if (this.usable[i] && h.vmCount === 0) this.emptyHosts++;
      for (const [g, m] of Object.entries(h.groupMembers ?? {})) if (m > 0) this.members(g).set(i, m);
      const shape = Array.from(this.total.subarray(i * R, i * R + R));
      const sk = shape.join(",");
      let c = classByShape.get(sk);
      if (c === undefined) {
        c = this.classes.length;
        classByShape.set(sk, c);
        this.classes.push({ total: shape, groups: [], byVec: new Map() });
      }
      this.classOf[i] = c;
      if (this.usable[i]) this.enlist(i);
    });
  }

  /** Host ids, in id order. */
  hostIds(): readonly string[] {
    return this.ids;
  }

  /** The current snapshot of one host (after the commits so far), or undefined. */
  snapshot(hostId: string): HostSnapshot | undefined {
    const i = this.indexOf.get(hostId);
    return i === undefined ? undefined : this.hosts[i];
  }

  /**
   * Chooses a host for `request` as placeVm would on the current snapshots (see the class comment
   * for the one, documented, difference); does not change the engine — {@link commit} the choice.
   * Throws INVALID_ARGUMENT for a malformed request.
   */
  place(request: PlacementRequest): EnginePlacement {
    const fast = this.mode === "generic" || this.softGroupWeighs(request) ? undefined : this.fastPlace(request);
    if (fast !== undefined) return { placed: true, hostId: this.ids[fast]! };
    const d = placeVm(this.hosts, request, this.options);
    return d.placed ? { placed: true, hostId: d.hostId } : { placed: false, reasons: d.reasons };
  }

  /**
   * Records `request` as placed on `hostId`: its resources, one more VM, and one more member of its
   * group there. Does not check that it fits (place does). Throws NOT_FOUND for an unknown host.
   */
  commit(hostId: string, request: PlacementRequest): void {
    this.apply(this.index(hostId), request, 1);
  }

  /** Undoes a {@link commit} (a VM removed, or a tentative placement abandoned). Throws NOT_FOUND for an unknown host. */
  release(hostId: string, request: PlacementRequest): void {
    this.apply(this.index(hostId), request, -1);
  }

  /**
   * Places `requests` all-or-nothing, as placeVms does: each placed on the state after the ones
   * before it. With `commit: true` a successful gang stays committed; otherwise (the default) and on
   * failure the engine is left as it was.
   */
  placeGang(requests: readonly PlacementRequest[], { commit = false }: { commit?: boolean } = {}): GangDecision {
    const names = new Set<string>();
    requests.forEach((r, i) => {
      if (names.has(r.name)) throw invalidArgument(`requests[${i}].name`, `duplicate name '${r.name}'`);
      names.add(r.name);
    });
    const done: { name: string; hostId: string }[] = [];
    const undo = (): void => {
      for (let j = done.length - 1; j >= 0; j--) this.release(done[j]!.hostId, requests[j]!);
    };
    for (const r of requests) {
      let p: EnginePlacement;
      try {
        p = this.place(r);
      } catch (e) {
        undo();
        throw e;
      }
      if (!p.placed) {
        undo();
        return { placed: false, failed: r.name, reasons: p.reasons, placements: [] };
      }
      this.commit(p.hostId, r);
      done.push({ name: r.name, hostId: p.hostId });
    }
    if (!commit) undo();
    return { placed: true, placements: done };
  }

  // ---- internals ----

  private index(hostId: string): number {
    const i = this.indexOf.get(hostId);
    if (i === undefined) throw notFound(`host '${hostId}'`);
    return i;
  }

  private members(group: string): Map<number, number> {
    let m = this.groups.get(group);
    if (!m) {
      m = new Map();
      this.groups.set(group, m);
    }
    return m;
  }

  private softGroupWeighs(request: PlacementRequest): boolean {
    const p = request.group?.policy;
    return (p === "soft-affinity" || p === "soft-anti-affinity") && (this.options.weights["groupAffinity"] ?? 0) > 0;
  }

  private apply(i: number, request: PlacementRequest, sign: 1 | -1): void {
    const listed = this.usable[i] === 1;
    if (listed) this.delist(i);
    RESOURCE_NAMES.forEach((k, r) => {
      this.alloc[i * R + r] = this.alloc[i * R + r]! + sign * request.resources[k];
      this.fleetAlloc[r] = this.fleetAlloc[r]! + sign * request.resources[k];
    });
    const wasEmpty = this.vmCount[i] === 0;
    this.vmCount[i] = this.vmCount[i]! + sign;
    if (this.usable[i] === 1) this.emptyHosts += (this.vmCount[i] === 0 ? 1 : 0) - (wasEmpty ? 1 : 0);
    const g = request.group?.name;
    if (g !== undefined) {
      const m = this.members(g);
      const next = (m.get(i) ?? 0) + sign;
      if (next > 0) m.set(i, next);
      else m.delete(i);
    }
    const h = this.hosts[i]!;
    if (sign === 1) this.hosts[i] = withPlacement(h, request.resources, g);
    else {
      const allocated = { ...h.allocated };
      for (const k of RESOURCE_NAMES) allocated[k] -= request.resources[k];
      const next: HostSnapshot = { ...h, allocated, vmCount: h.vmCount - 1 };
      if (g !== undefined) {
        const { [g]: n = 0, ...others } = h.groupMembers ?? {};
        next.groupMembers = n > 1 ? { ...others, [g]: n - 1 } : others;
      }
      this.hosts[i] = next;
    }
    if (listed) this.enlist(i);
  }

  private vecOf(i: number): string {
    return `${this.alloc[i * R]},${this.alloc[i * R + 1]},${this.alloc[i * R + 2]}`;
  }

  /** Orders state groups: most promising first for the mode, then by vec. */
  private readonly groupOrder = (a: StateGroup, b: StateGroup): number =>
    (this.mode === "most" ? a.key - b.key : b.key - a.key) || (a.vec < b.vec ? -1 : a.vec > b.vec ? 1 : 0);
  private readonly memberOrder = (a: number, b: number): number => this.rank[a]! - this.rank[b]!;

  /** Adds usable host i to the state group of its current allocation. */
  private enlist(i: number): void {
    const cls = this.classes[this.classOf[i]!]!;
    const vec = this.vecOf(i);
    let g = cls.byVec.get(vec);
    if (!g) {
      g = { key: this.mode === "aligned" ? this.minFree(i) : this.meanFree(i), vec, sample: i, members: [] };
      cls.byVec.set(vec, g);
      insertSorted(cls.groups, g, this.groupOrder);
    }
    insertSorted(g.members, i, this.memberOrder);
  }

  /** Removes usable host i from its state group (before its allocation changes). */
  private delist(i: number): void {
    const cls = this.classes[this.classOf[i]!]!;
    const g = cls.byVec.get(this.vecOf(i));
    if (!g) throw new Error(`scheduler engine: host ${this.ids[i]} not indexed`);
    removeSorted(g.members, i, this.memberOrder);
    if (g.members.length > 0) {
      if (g.sample === i) g.sample = g.members[0]!;
      return;
    }
    cls.byVec.delete(g.vec);
    removeSorted(cls.groups, g, this.groupOrder);
  }

  private meanFree(i: number): number {
    let sum = 0;
    let n = 0;
    for (let r = 0; r < R; r++) {
      const t = this.total[i * R + r]!;
      if (t <= 0) continue;
      sum += (t - this.alloc[i * R + r]!) / t;
      n += 1;
    }
    return n === 0 ? 0 : sum / n;
  }

  /** The smallest free fraction over the resources host i has (1 when it has none). */
  private minFree(i: number): number {
    let min = 1;
    let any = false;
    for (let r = 0; r < R; r++) {
      const t = this.total[i * R + r]!;
      if (t <= 0) continue;
      const f = (t - this.alloc[i * R + r]!) / t;
      if (!any || f < min) min = f;
      any = true;
    }
    return min;
  }

  /** leastAllocated's raw score for `request` on host i, computed exactly as the weigher does. */
  private leastRaw(i: number, req: readonly number[]): number {
    let sum = 0;
    let n = 0;
    for (let r = 0; r < R; r++) {
      const t = this.total[i * R + r]!;
      if (t <= 0) continue;
      sum += (t - this.alloc[i * R + r]! - req[r]!) / t;
      n += 1;
    }
    return n === 0 ? 0 : sum / n;
  }

  /** mostAllocated's raw score for `request` on host i, computed exactly as the weigher does. */
  private mostRaw(i: number, req: readonly number[]): number {
    let sum = 0;
    let n = 0;
    for (let r = 0; r < R; r++) {
      const t = this.total[i * R + r]!;
      if (t <= 0) continue;
      sum += 10 ** ((t - this.alloc[i * R + r]! - req[r]!) / t);
      n += 1;
    }
    return n === 0 ? 0 : -sum / n;
  }

  /** Every filter of the default pipeline, in its order, on the indexes (exactly what placeVm checks). */
  private passes(i: number, request: PlacementRequest, req: readonly number[], pinned: ReadonlySet<string> | undefined): boolean {
    if (this.usable[i] !== 1) return false;
    if (pinned !== undefined && !pinned.has(this.ids[i]!)) return false;
    if (request.requiredLabels !== undefined || request.forbiddenLabels !== undefined) {
      const labels = this.hosts[i]!.labels;
      const has = (k: string): boolean => Object.prototype.hasOwnProperty.call(labels, k);
      for (const [k, v] of Object.entries(request.requiredLabels ?? {})) if (!has(k) || labels[k] !== v) return false;
      for (const [k, v] of Object.entries(request.forbiddenLabels ?? {})) if (has(k) && (v === "*" || labels[k] === v)) return false;
    }
    const limit = this.options.maxVmsPerHost ?? 0;
    if (limit > 0 && this.vmCount[i]! >= limit) return false;
    const g = request.group;
    if (g !== undefined) {
      const here = this.groups.get(g.name)?.get(i) ?? 0;
      if (g.policy === "anti-affinity" && here > 0) return false;
      if (g.policy === "affinity" && here === 0 && (this.groups.get(g.name)?.size ?? 0) > 0) return false;
    }
    for (let r = 0; r < R; r++) if (this.alloc[i * R + r]! + req[r]! > this.total[i * R + r]!) return false;
    return true;
  }

  /** Capacity alone. */
  private fits(i: number, req: readonly number[]): boolean {
    for (let r = 0; r < R; r++) if (this.alloc[i * R + r]! + req[r]! > this.total[i * R + r]!) return false;
    return true;
  }

  /** The fast path: the chosen host index, or undefined when no host passes (the caller then asks placeVm for reasons). */
  private fastPlace(request: PlacementRequest): number | undefined {
    const req = RESOURCE_NAMES.map((k) => request.resources[k]);
    // Validate like placeVm (cheaply): whole numbers ≥ 0 and a known group policy. placeVm would throw the exact error.
    if (!req.every((v) => Number.isSafeInteger(v) && v >= 0) || (request.group !== undefined && !isPolicy(request.group.policy))) {
      placeVm([], request, this.options);
    }
    const pinned = request.pinnedHosts !== undefined && request.pinnedHosts.length > 0 ? new Set(request.pinnedHosts) : undefined;
    const seed = this.options.seed ?? 0;
    const least = this.mode === "least";
    const aligned = this.mode === "aligned";
    // The fleet's demand direction, as placeVm computes it (sums of whole numbers: exact).
    const dir = aligned && steers(this.usableHosts, this.emptyHosts) ? Array.from(this.fleetAlloc, (a, r) => (this.fleetTotal[r]! > 0 ? (a + req[r]!) / this.fleetTotal[r]! : 0)) : undefined;
    let best = -1;
    let bestScore = -Infinity;
    // The best so far: its score, and scores within EPS of it count as equal (tie-break decides).
    const consider = (i: number): void => {
      if (!this.passes(i, request, req, pinned)) return;
      const s = least ? this.leastRaw(i, req) : aligned ? alignedFitRaw(this.alloc, this.total, i * R, req, dir) : this.mostRaw(i, req);
      if (best < 0 || s > bestScore + EPS || (s >= bestScore - EPS && compareTies(this.ids[i]!, this.ids[best]!, seed) < 0)) {
        best = i;
        bestScore = s;
      }
    };
    // Small explicit candidate sets: pins, or the hosts of a hard-affinity group with members.
    const g = request.group;
    const affinity = g?.policy === "affinity" ? this.groups.get(g.name) : undefined;
    if (pinned !== undefined || (affinity !== undefined && affinity.size > 0)) {
      const set = pinned !== undefined ? [...pinned].flatMap((id) => (this.indexOf.has(id) ? [this.indexOf.get(id)!] : [])) : [...affinity!.keys()];
      for (const i of set) consider(i);
      return best < 0 ? undefined : best;
    }
    if (aligned) {
      // alignedFit has no useful bound along any order (its steering term may favour any host), so
      // the walk visits every state that may fit: states in descending order of smallest free
      // fraction, down to the request's smallest fraction (a host whose smallest free fraction is
      // below it lacks room on some resource). In a packed fleet almost every host is full on some
      // resource, so this is the empty hosts' state plus the few open hosts.
      for (const cls of this.classes) {
        let minReq = Infinity;
        let maxReq = -Infinity;
        for (let r = 0; r < R; r++) {
          if (cls.total[r]! <= 0) continue;
          minReq = Math.min(minReq, req[r]! / cls.total[r]!);
          maxReq = Math.max(maxReq, req[r]! / cls.total[r]!);
        }
        if (minReq === Infinity) minReq = -Infinity;
        if (dir === undefined) {
          // Not steering (small fleet, or few empty hosts left): alignedFit is best fit. Walk the
          // states that may fit from the fullest (smallest free fraction) up, and stop once none can
          // beat the best: with k the state's smallest free fraction, every free fraction after
          // placement is ≥ k − maxReq, so by Jensen its score is ≤ −10^(k − maxReq).
          let lo = 0;
          let hi = cls.groups.length;
          while (lo < hi) {
            const mid = (lo + hi) >>> 1;
            if (cls.groups[mid]!.key >= minReq) lo = mid + 1;
            else hi = mid;
          }
          for (let j = lo - 1; j >= 0; j--) {
            const g = cls.groups[j]!;
            if (best >= 0 && maxReq > -Infinity && -(10 ** (g.key - maxReq)) < bestScore - EPS) break;
            if (!this.fits(g.sample, req)) continue;
            for (const m of g.members) {
              if (this.passes(m, request, req, undefined)) {
                consider(m);
                break;
              }
            }
          }
          continue;
        }
        for (const g of cls.groups) {
          if (g.key < minReq) break;
          if (!this.fits(g.sample, req)) continue;
          for (const m of g.members) {
            if (this.passes(m, request, req, undefined)) {
              consider(m);
              break;
            }
          }
        }
      }
      return best < 0 ? undefined : best;
    }
    for (const cls of this.classes) {
      const groups = cls.groups;
      for (let j = 0; j < groups.length; j++) {
        const g = groups[j]!;
        const i = g.sample;
        const mean = this.leastRaw(i, req);
        // Stop once no state further on can beat the best: for leastAllocated the raw score falls
        // along the order; for mostAllocated, mean 10^f ≥ 10^(mean f) bounds it.
        if (best >= 0 && (least ? mean : -(10 ** mean)) < bestScore - EPS) break;
        if (!this.fits(i, req)) continue;
        for (const m of g.members) {
          if (this.passes(m, request, req, undefined)) {
            consider(m);
            break;
          }
        }
      }
    }
    return best < 0 ? undefined : best;
  }
}

function isPolicy(p: unknown): boolean {
  return p === "anti-affinity" || p === "affinity" || p === "soft-anti-affinity" || p === "soft-affinity";
}

/** "least" / "most" when that is the only resource weigher with a weight and the filters are the default ones. */
function modeOf(options: ResolvedSchedulerOptions): Mode {
  const w = options.weights;
  const f = options.filters;
  if (f !== undefined && (f.length !== DEFAULT_CATALOG.filterNames.length || f.some((x, i) => x !== DEFAULT_CATALOG.filterNames[i]))) return "generic";
  for (const [name, v] of Object.entries(w)) {
    if (v > 0 && !["leastAllocated", "mostAllocated", "alignedFit", "groupAffinity"].includes(name)) return "generic";
  }
  const l = (w["leastAllocated"] ?? 0) > 0;
  const m = (w["mostAllocated"] ?? 0) > 0;
  const a = (w["alignedFit"] ?? 0) > 0;
  if (l && !m && !a) return "least";
  if (m && !l && !a) return "most";
  if (a && !l && !m) return "aligned";
  return "generic";
}

function lowerBound<T>(arr: readonly T[], x: T, cmp: (a: T, b: T) => number): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cmp(arr[mid]!, x) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function removeSorted<T>(arr: T[], x: T, cmp: (a: T, b: T) => number): void {
  const at = lowerBound(arr, x, cmp);
  if (arr[at] !== x) throw new Error("scheduler engine: index out of order");
  arr.splice(at, 1);
}

function insertSorted<T>(arr: T[], x: T, cmp: (a: T, b: T) => number): void {
  arr.splice(lowerBound(arr, x, cmp), 0, x);
}
