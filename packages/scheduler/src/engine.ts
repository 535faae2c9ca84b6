import { invalidArgument, notFound, RESOURCE_NAMES } from "@berth/core";
import { capacityFilter } from "./filters.js";
import { packGang } from "./gang.js";
import { allocatableOf, type ResolvedSchedulerOptions } from "./options.js";
import { DEFAULT_PIPELINE, type Pipeline } from "./pipeline.js";
import { checkHosts, compareIds, compareTies, enabledFilters, isWellFormedRequest, placeVm, roundScore, withoutPlacement, withPlacement } from "./place.js";
import type { Filter, PlacementContext } from "./stage.js";
import { alignedFitRaw, countsAsUsable, leastAllocatedRaw, mostAllocatedRaw, steers } from "./weighers.js";
import type { GangDecision, HostSnapshot, PlacementDecision, PlacementRequest } from "./types.js";

/**
 * The engine's answer for one VM: where, or (only when nothing fits) placeVm's own unplaced
 * decision on the engine's snapshots: one reason per host, and the verdicts.
 */
export type EnginePlacement = { placed: true; hostId: string } | (PlacementDecision & { placed: false });

/** Raw scores closer than this count as equal (float noise), and go to the tie-break. */
const EPS = 1e-12;
const R = RESOURCE_NAMES.length;

/** The image-locality weigher's name (imageLocalityWeigher in weighers.ts): the engine keeps an index of the hosts holding each image for it. */
const IMAGE_LOCALITY = "imageLocality";

/**
 * The lowest raw score mostAllocated (and alignedFit while it does not steer) can give a host: −mean
 * 10^f with every free fraction f ≤ 1. A bound on the candidates' lowest score, for
 * {@link PlacementEngine}'s image decisions when the walk did not see every candidate.
 */
const BEST_FIT_FLOOR = -10;

/** The best host offered so far (index −1: none), its raw score, and the lowest score offered. */
interface Pick {
  i: number;
  score: number;
  lowest: number;
  offer(i: number, score: number): void;
}

/** The hosts holding one image, indexed as the whole fleet is (shape, then state), for imageLocality. */
interface ImageIndex {
  readonly holders: Set<number>;
  readonly classes: ShapeClass[];
  /** The fleet's shape class index → this image's class of that shape. */
  readonly byClass: Map<number, ShapeClass>;
}

/** Hosts of one shape in one allocation state: they score alike, and pass or fail capacity alike, for any request. */
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
 * {@link place} inspects few of them and each {@link commit} or {@link update} changes the indexes
 * in O(log n + state size memmove). It is the path the controller runs for every create.
 *
 * One scheduler: the engine decides with the pipeline's own stages, never a copy of them. Every
 * host it may choose goes through the enabled filters of the pipeline it is given (`options.filters`,
 * as placeVm), asked for pass or fail only (`explain: false`); the resource weighers' raw scores are
 * the functions the weighers themselves call (`leastAllocatedRaw`, `mostAllocatedRaw`,
 * `alignedFitRaw` in weighers.ts). Its speed comes from wrapping those checks in indexes, by what the
 * stages declare of themselves ({@link Filter}): a filter of scope `allocation` (capacity) is asked
 * once per allocation state instead of once per host; a filter's `candidates` (pinned hosts, the
 * hosts of a hard-affinity group) restrict the walk to those hosts; and while the capacity filter is
 * enabled, states whose free fraction is below the request's are skipped unasked (a necessary
 * condition of that filter: such a state cannot pass it). A filter added to the pipeline therefore
 * takes effect here with no change to the engine.
 *
 * How: hosts are grouped by allocatable vector (shape) and, within a shape, by allocation state
 * (hosts in one state score alike, and are kept in tie-break order); each shape keeps its states in
 * order of mean free fraction. When the only resource weigher with a weight is `leastAllocated`
 * (spread), `mostAllocated` (best fit) or `alignedFit` (pack) — `groupAffinity` may weigh too, it is
 * flat unless the request has a soft group — a placement walks each shape from its most promising
 * end, skipping states that fail the allocation filters and hosts that fail another filter, and stops
 * as soon as no further host can beat the best found (for `mostAllocated`, by Jensen: mean 10^f ≥
 * 10^(mean f)) or, for `alignedFit` while it steers (its steering term has no bound along any order),
 * as soon as no further host can fit: its states are kept by smallest free fraction, descending, so
 * the walk covers the empty hosts' state and the hosts with room on every resource (in a packed
 * fleet, a handful); the fleet's demand direction comes from per-resource sums kept on every change.
 * alignedFit steers only with enough usable and empty hosts (`steers` in weighers.ts; the engine
 * counts them on every change); when it does not, it is best fit, and the walk goes up the same
 * order from the fullest state that may fit and stops by the same Jensen bound.
 *
 * Images: `imageLocality` may weigh in the fast modes too. It is flat (changes nothing) for a
 * request without an image or an image no host holds; otherwise the engine keeps, per image, the
 * holders indexed as the fleet is (shape, then state), so the best holder is found by the same
 * walk over them. When the best host holds the image it wins; when a holder is within EPS of it,
 * the holder wins; otherwise the two compare as placeVm compares them, which needs the lowest
 * resource score among the candidates (the normalisation's range): spread finds it from the other
 * end of each shape, pack while it steers has it from its walk (which sees every state that fits),
 * and plain best fit bounds it (≥ −10) — when the bound does not decide, that request goes
 * through placeVm (O(n)). Everything else —
 * other weighers with a weight, soft groups with weight — and every unplaced answer (for its
 * reasons) goes through {@link placeVm} with the same pipeline on the engine's current snapshots:
 * exact, but a full O(n) pass.
 *
 * Choices: the same filters as placeVm, so it never picks a host placeVm would reject, and it picks
 * only when placeVm would. On the fast path it picks the host with the best raw score and breaks
 * exact ties (|Δ| ≤ 1e-12) as placeVm does (seeded, then by id); placeVm compares normalised scores
 * rounded to 9 decimals, so when two hosts' raw scores differ by less than about 1e-9 of the
 * candidates' score range the two may choose different (equally good, to that precision) hosts.
 * Among hosts of one shape that never happens; otherwise it is rare, and both choices score the
 * same in placeVm's explanation.
 *
 * Not thread-safe (none is needed: it is synchronous); pure apart from its own state. It owns
 * copies of its inputs.
 */
export class PlacementEngine {
  private readonly options: ResolvedSchedulerOptions;
  private readonly pipeline: Pipeline;
  private readonly mode: Mode;
  /** The enabled filters (as placeVm runs them) whose verdict may differ between hosts of one state. */
  private readonly hostFilters: readonly Filter[];
  /** The enabled filters of scope `allocation`: asked once per state (on its sample host). */
  private readonly stateFilters: readonly Filter[];
  /** The enabled filters that can name their only candidate hosts. */
  private readonly candidateFilters: readonly Filter[];
  /** Whether the capacity filter is enabled (its necessary condition may then skip states unasked). */
  private readonly capacityBound: boolean;
  /** The name of the one resource weigher the fast path ranks by (leastAllocated, mostAllocated or alignedFit). */
  private readonly resourceWeigher: string;
  /** imageLocality's weight when the pipeline has it (0: it is not run, and images do not matter). */
  private readonly imageWeight: number;
  /** Image id → the hosts whose snapshot lists it, and their states (kept only while imageLocality weighs; no empty entries). */
  private readonly images = new Map<string, ImageIndex>();
  private readonly ids: string[];
  private readonly indexOf = new Map<string, number>();
  /** Current snapshots, in id order (what the filters see; the generic path and reasons). */
  private readonly hosts: HostSnapshot[];
  private readonly total: Float64Array;
  private readonly alloc: Float64Array;
  private readonly vmCount: Float64Array;
  private readonly usable: Uint8Array;
  private readonly classOf: Int32Array;
  /** Position of each host in the seeded tie-break order (lower wins). */
  private readonly rank: Int32Array;
  private readonly classes: ShapeClass[] = [];
  private readonly classByShape = new Map<string, number>();
  /** Group name → host index → members there (only counts > 0). */
  private readonly groups = new Map<string, Map<number, number>>();
  /** Per resource, allocated and allocatable summed over all hosts (for the fleet direction). */
  private readonly fleetAlloc = new Float64Array(R);
  private readonly fleetTotal = new Float64Array(R);
  /** Usable hosts holding no VM (vmCount 0), kept on every change (alignedFit steers only while there are enough). */
  private emptyHosts = 0;
  /** Usable hosts (ready, not cordoned). */
  private usableHosts = 0;

  /**
   * Indexes `hosts` under `options` (from resolveSchedulerOptions) with `pipeline`'s stages (the
   * default pipeline unless given: the one placeVm is then given too). Throws INVALID_ARGUMENT for
   * duplicate host ids, malformed overrides or an enabled filter the pipeline does not have, as
   * placeVm does.
   */
  constructor(hosts: readonly HostSnapshot[], options: ResolvedSchedulerOptions, pipeline: Pipeline = DEFAULT_PIPELINE) {
    this.options = options;
    this.pipeline = pipeline;
    this.mode = modeOf(options);
    this.resourceWeigher = this.mode === "least" ? "leastAllocated" : this.mode === "aligned" ? "alignedFit" : "mostAllocated";
    this.imageWeight = pipeline.weighers.some((w) => w.name === IMAGE_LOCALITY) ? (options.weights[IMAGE_LOCALITY] ?? 0) : 0;
    const filters = enabledFilters(pipeline, options);
    this.hostFilters = filters.filter((f) => f.scope !== "allocation");
    this.stateFilters = filters.filter((f) => f.scope === "allocation");
    this.candidateFilters = filters.filter((f) => f.candidates !== undefined);
    this.capacityBound = filters.includes(capacityFilter);
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
    this.hosts.forEach((h, i) => {
      this.indexOf.set(h.id, i);
      this.load(i);
      this.account(i, 1);
      this.enlist(i);
    });
  }

  /** Host ids, in id order. */
  hostIds(): readonly string[] {
    return this.ids;
  }

  /** The current snapshot of one host (after the changes so far), or undefined. */
  snapshot(hostId: string): HostSnapshot | undefined {
    const i = this.indexOf.get(hostId);
    return i === undefined ? undefined : this.hosts[i];
  }

  /** Every host's current snapshot, in id order (the engine's own objects: do not change them). */
  snapshots(): readonly HostSnapshot[] {
    return this.hosts;
  }

  /**
   * Chooses a host for `request` as placeVm would on the current snapshots (see the class comment
   * for the one, documented, difference); does not change the engine — {@link commit} the choice.
   * Throws INVALID_ARGUMENT for a malformed request.
   */
  place(request: PlacementRequest): EnginePlacement {
    const fast = this.mode === "generic" || this.softGroupWeighs(request) ? undefined : this.fastPlace(request);
    if (fast !== undefined) return { placed: true, hostId: this.ids[fast]! };
    const d = placeVm(this.hosts, request, this.options, this.pipeline);
    return d.placed ? { placed: true, hostId: d.hostId } : d;
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
   * Replaces a known host's snapshot with `host` (any field: capacity, overrides, labels, readiness,
   * cordon, allocation, VM count, group members) — how a caller that rebuilds snapshots from its own
   * state keeps the engine current without replaying each VM. The engine keeps a copy. Throws
   * NOT_FOUND for a host it was not built with (a new host needs a new engine), INVALID_ARGUMENT for
   * a malformed override.
   */
  update(host: HostSnapshot): void {
    const i = this.index(host.id);
    checkHosts([host]);
    this.delist(i);
    this.account(i, -1);
    this.hosts[i] = copyOf(host);
    this.load(i);
    this.account(i, 1);
    this.enlist(i);
  }

  /**
   * Places `requests` all-or-nothing with placeVms' answer: each in request order on the state
   * after the ones before it, then, when packing is the goal, packed as a set (gang.ts, `packGang`,
   * on the engine's snapshots). With `commit: true` a successful gang stays committed; otherwise
   * (the default) and on failure the engine is left as it was.
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
    let inOrder: GangDecision | undefined;
    try {
      for (const r of requests) {
        const p = this.place(r);
        if (!p.placed) {
          inOrder = { placed: false, failed: r.name, reasons: p.reasons, placements: [] };
          break;
        }
        this.commit(p.hostId, r);
        done.push({ name: r.name, hostId: p.hostId });
      }
    } finally {
      undo();
    }
    inOrder ??= { placed: true, placements: done };
    const decision = packGang(this.hosts, requests, this.options, this.pipeline, inOrder);
    if (commit && decision.placed) decision.placements.forEach((p, j) => this.commit(p.hostId, requests[j]!));
    return decision;
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

  /** Fills host i's vectors, counters and shape class from its snapshot. */
  private load(i: number): void {
    const h = this.hosts[i]!;
    RESOURCE_NAMES.forEach((k, r) => {
      this.total[i * R + r] = allocatableOf(h, k, this.options);
      this.alloc[i * R + r] = h.allocated[k];
    });
    this.vmCount[i] = h.vmCount;
    this.usable[i] = countsAsUsable(h) ? 1 : 0;
    const shape = Array.from(this.total.subarray(i * R, i * R + R));
    const sk = shape.join(",");
    let c = this.classByShape.get(sk);
    if (c === undefined) {
      c = this.classes.length;
      this.classByShape.set(sk, c);
      this.classes.push({ total: shape, groups: [], byVec: new Map() });
    }
    this.classOf[i] = c;
  }

  /** Adds (sign 1) or removes (−1) host i's share of the fleet sums, the usable / empty counts and the group index. */
  private account(i: number, sign: 1 | -1): void {
    for (let r = 0; r < R; r++) {
      this.fleetAlloc[r] = this.fleetAlloc[r]! + sign * this.alloc[i * R + r]!;
      this.fleetTotal[r] = this.fleetTotal[r]! + sign * this.total[i * R + r]!;
    }
    if (this.usable[i] === 1) {
      this.usableHosts += sign;
      if (this.vmCount[i] === 0) this.emptyHosts += sign;
    }
    for (const [g, n] of Object.entries(this.hosts[i]!.groupMembers ?? {})) {
      if (!(n > 0)) continue;
      const m = this.members(g);
      const next = (m.get(i) ?? 0) + sign * n;
      if (next > 0) m.set(i, next);
      else m.delete(i);
    }
    if (this.imageWeight > 0) {
      for (const image of this.hosts[i]!.images ?? []) {
        let idx = this.images.get(image);
        if (sign === 1) {
          if (!idx) this.images.set(image, (idx = { holders: new Set(), classes: [], byClass: new Map() }));
          idx.holders.add(i);
        } else if (idx) {
          idx.holders.delete(i);
          if (idx.holders.size === 0) this.images.delete(image);
        }
      }
    }
  }

  private apply(i: number, request: PlacementRequest, sign: 1 | -1): void {
    this.delist(i);
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
    this.hosts[i] = sign === 1 ? withPlacement(h, request.resources, g) : dropEmptyGroup(withoutPlacement(h, request.resources, g), g);
    this.enlist(i);
  }

  private vecOf(i: number): string {
    return `${this.alloc[i * R]},${this.alloc[i * R + 1]},${this.alloc[i * R + 2]}`;
  }

  /** Orders state groups: most promising first for the mode, then by vec. */
  private readonly groupOrder = (a: StateGroup, b: StateGroup): number =>
    (this.mode === "most" ? a.key - b.key : b.key - a.key) || (a.vec < b.vec ? -1 : a.vec > b.vec ? 1 : 0);
  private readonly memberOrder = (a: number, b: number): number => this.rank[a]! - this.rank[b]!;

  /**
   * Adds host i to the state group of its current allocation, in the fleet's index and in the
   * index of each image it holds (after {@link account} counted it a holder).
   */
  private enlist(i: number): void {
    this.enlistIn(this.classes[this.classOf[i]!]!, i);
    if (this.imageWeight > 0) for (const image of this.hosts[i]!.images ?? []) this.enlistIn(this.imageClass(image, i), i);
  }

  /** Removes host i from its state groups (before its allocation, shape or images change). */
  private delist(i: number): void {
    this.delistIn(this.classes[this.classOf[i]!]!, i);
    if (this.imageWeight > 0) for (const image of this.hosts[i]!.images ?? []) this.delistIn(this.imageClass(image, i), i);
  }

  /** Host i's shape class in the index of `image` (which it holds). */
  private imageClass(image: string, i: number): ShapeClass {
    const idx = this.images.get(image);
    if (!idx) throw new Error(`scheduler engine: image ${image} of host ${this.ids[i]} not indexed`);
    const c = this.classOf[i]!;
    let cls = idx.byClass.get(c);
    if (!cls) {
      cls = { total: this.classes[c]!.total, groups: [], byVec: new Map() };
      idx.byClass.set(c, cls);
      idx.classes.push(cls);
    }
    return cls;
  }

  private enlistIn(cls: ShapeClass, i: number): void {
    const vec = this.vecOf(i);
    let g = cls.byVec.get(vec);
    if (!g) {
      g = { key: this.mode === "aligned" ? this.minFree(i) : this.meanFree(i), vec, sample: i, members: [] };
      cls.byVec.set(vec, g);
      insertSorted(cls.groups, g, this.groupOrder);
    }
    insertSorted(g.members, i, this.memberOrder);
  }

  private delistIn(cls: ShapeClass, i: number): void {
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

  /** Mean free fraction of host i now (leastAllocated's score for an empty request). */
  private meanFree(i: number): number {
    return leastAllocatedRaw(this.alloc, this.total, i * R, NO_REQUEST);
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

  /** The capacity filter's necessary condition on the indexes: room for `req` on every resource. */
  private mayFit(i: number, req: readonly number[]): boolean {
    if (!this.capacityBound) return true;
    for (let r = 0; r < R; r++) if (this.alloc[i * R + r]! + req[r]! > this.total[i * R + r]!) return false;
    return true;
  }

  /** Whether a state passes the allocation filters (asked on its sample: every member gets the same verdict). */
  private statePasses(g: StateGroup, req: readonly number[], ctx: PlacementContext): boolean {
    if (!this.mayFit(g.sample, req)) return false;
    const h = this.hosts[g.sample]!;
    for (const f of this.stateFilters) if (!f.filter(h, ctx).pass) return false;
    return true;
  }

  /** Whether host i passes the other enabled filters (its state passed the allocation ones). */
  private hostPasses(i: number, ctx: PlacementContext): boolean {
    const h = this.hosts[i]!;
    for (const f of this.hostFilters) if (!f.filter(h, ctx).pass) return false;
    return true;
  }

  /** Whether host i passes every enabled filter. */
  private passes(i: number, req: readonly number[], ctx: PlacementContext): boolean {
    if (!this.mayFit(i, req) || !this.hostPasses(i, ctx)) return false;
    const h = this.hosts[i]!;
    for (const f of this.stateFilters) if (!f.filter(h, ctx).pass) return false;
    return true;
  }

  /** The ids of the hosts holding members of `group`, in id order (the context's groupHosts). */
  private groupHostIds(group: string): string[] {
    const m = this.groups.get(group);
    if (!m || m.size === 0) return [];
    return [...m.keys()].map((i) => this.ids[i]!).sort(compareIds);
  }

  /** The first state member (tie-break order) that passes the host filters, or −1. */
  private firstPassing(g: StateGroup, ctx: PlacementContext): number {
    for (const m of g.members) if (this.hostPasses(m, ctx)) return m;
    return -1;
  }

  /** The raw score of the mode's resource weigher for host i (the weigher's own function). */
  private rawScore(i: number, req: readonly number[], dir: readonly number[] | undefined): number {
    if (this.mode === "least") return leastAllocatedRaw(this.alloc, this.total, i * R, req);
    if (this.mode === "aligned") return alignedFitRaw(this.alloc, this.total, i * R, req, dir);
    return mostAllocatedRaw(this.alloc, this.total, i * R, req);
  }

  /**
   * A tracker of the best host offered so far: the highest raw score, scores within EPS of it
   * counting as equal (the tie-break decides among them, as placeVm's does); and the lowest score
   * offered.
   */
  private tracker(): Pick {
    const seed = this.options.seed ?? 0;
    const ids = this.ids;
    const t: Pick = {
      i: -1,
      score: -Infinity,
      lowest: Infinity,
      offer(i, s) {
        if (s < t.lowest) t.lowest = s;
        if (t.i < 0 || s > t.score + EPS || (s >= t.score - EPS && compareTies(ids[i]!, ids[t.i]!, seed) < 0)) {
          t.i = i;
          t.score = s;
        }
      },
    };
    return t;
  }

  /**
   * The fast path: the chosen host index, or undefined when it cannot decide alone — no host passes
   * (the caller then asks placeVm, for the reasons), or an image preference it cannot settle
   * without every candidate's score (placeVm decides then; see {@link settleImage}).
   */
  private fastPlace(request: PlacementRequest): number | undefined {
    const req = RESOURCE_NAMES.map((k) => request.resources[k]);
    // Validate like placeVm (cheaply); placeVm would throw the exact error.
    if (!isWellFormedRequest(request)) placeVm([], request, this.options, this.pipeline);
    const pinned = request.pinnedHosts !== undefined && request.pinnedHosts.length > 0 ? new Set(request.pinnedHosts) : undefined;
    const ctx: PlacementContext = {
      request,
      options: this.options,
      groupHosts: request.group === undefined ? [] : this.groupHostIds(request.group.name),
      pinned,
      explain: false,
    };
    const aligned = this.mode === "aligned";
    // The fleet's demand direction, as placeVm computes it (sums of whole numbers: exact).
    const dir = aligned && steers(this.usableHosts, this.emptyHosts) ? Array.from(this.fleetAlloc, (a, r) => (this.fleetTotal[r]! > 0 ? (a + req[r]!) / this.fleetTotal[r]! : 0)) : undefined;
    // imageLocality is flat (changes nothing) unless it weighs and some host holds the image.
    const image = this.imageWeight > 0 && request.imageId !== undefined ? this.images.get(request.imageId) : undefined;

    // Filters that name their only candidates (pins; the hosts of a hard-affinity group with
    // members; the host of the VM's volumes): only those hosts, each through every filter.
    let only: Set<number> | undefined;
    for (const f of this.candidateFilters) {
      const ids = f.candidates!(ctx);
      if (ids === undefined) continue;
      const named = new Set<number>();
      for (const id of ids) {
        const i = this.indexOf.get(id);
        if (i !== undefined && (only === undefined || only.has(i))) named.add(i);
      }
      only = named;
    }
    if (only !== undefined) {
      // A handful of hosts: every candidate is scored, so the lowest score is known too.
      const best = this.tracker();
      const bestHolder = this.tracker();
      for (const i of only) {
        if (!this.passes(i, req, ctx)) continue;
        const s = this.rawScore(i, req, dir);
        best.offer(i, s);
        if (image?.holders.has(i) === true) bestHolder.offer(i, s);
      }
      if (best.i < 0) return undefined;
      return image === undefined ? best.i : this.settleImage(best, bestHolder, best.lowest);
    }
    const best = this.walk(req, ctx, dir, this.classes);
    // No image preference, or the best host holds the image (a holder within EPS of it with a
    // better tie-break would have been chosen by the walk already).
    if (best.i < 0) return undefined;
    if (image === undefined || image.holders.has(best.i)) return best.i;
    // The best host lacks the image: the best holder, by the same walk over the image's own index.
    const bestHolder = this.walk(req, ctx, dir, image.classes);
    // The lowest candidate score, when known: the steering walk sees every state that fits;
    // leastAllocated's is found from the other end of each shape; best fit's is only bounded.
    const lowest = aligned && dir !== undefined ? best.lowest : this.mode === "least" ? (bestHolder.i < 0 ? undefined : this.lowestLeast(req, ctx)) : undefined;
    return this.settleImage(best, bestHolder, lowest);
  }

  /** Walks every shape class of `classes` (the fleet's or one image's) for the best host by the mode's weigher. */
  private walk(req: readonly number[], ctx: PlacementContext, dir: readonly number[] | undefined, classes: readonly ShapeClass[]): Pick {
    const best = this.tracker();
    const offer = (i: number): void => best.offer(i, this.rawScore(i, req, dir));
    const bestScore = (): number | undefined => (best.i < 0 ? undefined : best.score);
    const least = this.mode === "least";
    for (const cls of classes) {
      if (this.mode === "aligned") this.walkAligned(cls, req, ctx, dir, offer, bestScore);
      else this.walkByMean(cls, req, ctx, least, offer, bestScore);
    }
    return best;
  }

  /**
   * Where a request with an image goes, as placeVm decides it, given the best host by the resource
   * weigher (`best`), the best of the hosts holding the image (`bestHolder`; `i` −1: none passes)
   * and the lowest resource score among all candidates (`lowest`; undefined: not known). With
   * holders and non-holders among the candidates, imageLocality normalises to 1 and 0, so it is
   * best's total against bestHolder's: the resource weight × the score normalised over [lowest,
   * best], imageLocality's weight for the holder, each flat weigher's weight for both, rounded as
   * placeVm rounds. Without `lowest`, best fit's floor bounds it (−10: the holder's best chance),
   * and so does the holder's own score (its worst); undefined when the bounds do not decide.
   */
  private settleImage(best: Pick, bestHolder: Pick, lowest: number | undefined): number | undefined {
    if (bestHolder.i < 0) return best.i;
    if (bestHolder.score >= best.score - EPS) return bestHolder.i;
    const totalOf = (raw: number, holder: boolean, low: number): number => {
      const range = best.score - low;
      let total = 0;
      for (const w of this.pipeline.weighers) {
        const weight = this.options.weights[w.name] ?? 0;
        if (!(weight > 0)) continue;
        let g: number;
        if (w.name === this.resourceWeigher) g = roundScore(range > 0 ? (raw - low) / range : 1);
        else if (w.name === IMAGE_LOCALITY) g = holder ? 1 : 0;
        else g = 1; // flat on every candidate in the fast modes (groupAffinity without a soft group)
        total += weight * g;
      }
      return roundScore(total);
    };
    if (lowest !== undefined) {
      const a = totalOf(best.score, false, lowest);
      const b = totalOf(bestHolder.score, true, lowest);
      if (b > a || (b === a && compareTies(this.ids[bestHolder.i]!, this.ids[best.i]!, this.options.seed ?? 0) < 0)) return bestHolder.i;
      return best.i;
    }
    // Only best fit (mostAllocated, alignedFit not steering) comes here without the lowest score:
    // it is in [BEST_FIT_FLOOR, bestHolder.score], and the holder's normalised score falls as the
    // lowest rises. A clear margin either way, so that placeVm's rounding agrees.
    if (this.mode === "least") return undefined;
    const a = totalOf(best.score, false, BEST_FIT_FLOOR);
    if (totalOf(bestHolder.score, true, BEST_FIT_FLOOR) < a - 1e-6) return best.i;
    if (totalOf(bestHolder.score, true, bestHolder.score) > a + 1e-6) return bestHolder.i;
    return undefined;
  }

  /**
   * The lowest leastAllocated raw score among the hosts that pass every filter, or undefined when
   * none does. Within a shape the score falls along the states' order, so each shape is walked
   * from its least promising end to the first state with a host that passes.
   */
  private lowestLeast(req: readonly number[], ctx: PlacementContext): number | undefined {
    let low: number | undefined;
    for (const cls of this.classes) {
      for (let j = cls.groups.length - 1; j >= 0; j--) {
        const g = cls.groups[j]!;
        if (!this.statePasses(g, req, ctx) || this.firstPassing(g, ctx) < 0) continue;
        const s = leastAllocatedRaw(this.alloc, this.total, g.sample * R, req);
        if (low === undefined || s < low) low = s;
        break;
      }
    }
    return low;
  }

  /** leastAllocated / mostAllocated: states from the most promising end, stopping by the score bound. */
  private walkByMean(cls: ShapeClass, req: readonly number[], ctx: PlacementContext, least: boolean, offer: (i: number) => void, bestScore: () => number | undefined): void {
    for (const g of cls.groups) {
      const mean = leastAllocatedRaw(this.alloc, this.total, g.sample * R, req);
      // Stop once no state further on can beat the best: for leastAllocated the raw score falls
      // along the order; for mostAllocated, mean 10^f ≥ 10^(mean f) bounds it.
      const b = bestScore();
      if (b !== undefined && (least ? mean : -(10 ** mean)) < b - EPS) break;
      if (!this.statePasses(g, req, ctx)) continue;
      const m = this.firstPassing(g, ctx);
      if (m >= 0) offer(m);
    }
  }

  /** alignedFit: every state that may fit while it steers; otherwise best fit from the fullest state up. */
  private walkAligned(
    cls: ShapeClass,
    req: readonly number[],
    ctx: PlacementContext,
    dir: readonly number[] | undefined,
    offer: (i: number) => void,
    bestScore: () => number | undefined,
  ): void {
    let minReq = Infinity;
    let maxReq = -Infinity;
    for (let r = 0; r < R; r++) {
      if (cls.total[r]! <= 0) continue;
      minReq = Math.min(minReq, req[r]! / cls.total[r]!);
      maxReq = Math.max(maxReq, req[r]! / cls.total[r]!);
    }
    if (minReq === Infinity) minReq = -Infinity;
    // A state whose smallest free fraction is below the request's smallest share lacks room on
    // some resource: the capacity filter's necessary condition (only while that filter is enabled).
    const floor = this.capacityBound ? minReq : -Infinity;
    if (dir === undefined) {
      // Not steering (small fleet, or few empty hosts left): alignedFit is best fit. Walk the
      // states that may fit from the fullest (smallest free fraction) up, and stop once none can
      // beat the best: with k the state's smallest free fraction, every free fraction after
      // placement is ≥ k − maxReq, so by Jensen its score is ≤ −10^(k − maxReq).
      let lo = 0;
      let hi = cls.groups.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (cls.groups[mid]!.key >= floor) lo = mid + 1;
        else hi = mid;
      }
      for (let j = lo - 1; j >= 0; j--) {
        const g = cls.groups[j]!;
        const b = bestScore();
        if (b !== undefined && maxReq > -Infinity && -(10 ** (g.key - maxReq)) < b - EPS) break;
        if (!this.statePasses(g, req, ctx)) continue;
        const m = this.firstPassing(g, ctx);
        if (m >= 0) offer(m);
      }
      return;
    }
    // Steering has no useful bound along any order (its term may favour any host), so the walk
    // visits every state that may fit: in a packed fleet almost every host is full on some
    // resource, so this is the empty hosts' state plus the few open hosts.
    for (const g of cls.groups) {
      if (g.key < floor) break;
      if (!this.statePasses(g, req, ctx)) continue;
      const m = this.firstPassing(g, ctx);
      if (m >= 0) offer(m);
    }
  }
}

/** A request of nothing (for a host's current free fractions). */
const NO_REQUEST: readonly number[] = Object.freeze(RESOURCE_NAMES.map(() => 0));

/** The engine's own copy of a snapshot (the caller may reuse its objects). */
function copyOf(h: HostSnapshot): HostSnapshot {
  const c: HostSnapshot = { ...h, capacity: { ...h.capacity }, allocated: { ...h.allocated }, labels: { ...h.labels } };
  if (h.groupMembers) c.groupMembers = { ...h.groupMembers };
  if (h.allocationRatio) c.allocationRatio = { ...h.allocationRatio };
  if (h.reserved) c.reserved = { ...h.reserved };
  if (h.networks) c.networks = new Set(h.networks);
  if (h.images) c.images = new Set(h.images);
  return c;
}

/** After a release, a group with no member left on the host is dropped from its snapshot (as one that never had any). */
function dropEmptyGroup(h: HostSnapshot, group: string | undefined): HostSnapshot {
  if (group === undefined || (h.groupMembers?.[group] ?? 0) > 0) return h;
  const { [group]: _gone, ...others } = h.groupMembers ?? {};
  return { ...h, groupMembers: others };
}

/**
 * Which walk the weights allow: "least", "most" or "aligned" when that is the only resource
 * weigher with a weight (groupAffinity and imageLocality may weigh too), else "generic" (placeVm
 * on the snapshots).
 */
function modeOf(options: ResolvedSchedulerOptions): Mode {
  const w = options.weights;
  for (const [name, v] of Object.entries(w)) {
    if (v > 0 && !["leastAllocated", "mostAllocated", "alignedFit", "groupAffinity", IMAGE_LOCALITY].includes(name)) return "generic";
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
