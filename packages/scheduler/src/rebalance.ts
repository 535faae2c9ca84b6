// The rebalance planner: the hosts as the scheduler sees them plus the VMs on them in, an ordered
// list of live migrations out. Pure and synchronous like the rest of the package. It is the
// scheduler, not a second opinion: every move is one the scheduler's own filters accept on the
// snapshot with the VM taken off its source (`withoutPlacement`), and targets are ranked by the
// scheduler's own weighers. The controller only applies the moves (re-checking each with
// `checkMove` against its newer snapshot first).
import { invalidArgument, quote, RESOURCE_FIELD, RESOURCE_NAMES } from "@berth/core";
import { allocatableOf, type ResolvedSchedulerOptions } from "./options.js";
import { DEFAULT_PIPELINE, type Pipeline } from "./pipeline.js";
import { checkHosts, checkPlacementRequest, compareIds, compareTies, isWellFormedRequest, normalise, roundScore, withoutPlacement, withPlacement } from "./place.js";
import { membersOn, type Filter, type PlacementContext, type Weigher } from "./stage.js";
import { fleetDirection, steers, usableHostCounts } from "./weighers.js";
import { capacityFilter } from "./filters.js";
import type { HostSnapshot, PlacementRequest } from "./types.js";

/** `balance`: even out host utilisation; `consolidate`: empty hosts whose VMs the others can hold. */
export type RebalanceGoal = "balance" | "consolidate";

/** What utilisation is measured on: measured use, or the VMs' requests (what the scheduler allocates). */
export type RebalanceMetric = "usage" | "allocation";

/** One VM the planner may move (or must leave where it is). */
export interface RebalanceVm {
  id: string;
  name: string;
  /** The host it is on; must be one of the input's hosts. */
  hostId: string;
  /**
   * The VM's placement request (resources, labels, group, pins, networks, image) as for a create.
   * Its `volumes` (if any) are ignored: a move carries the VM's volumes (see {@link volumeGib}).
   */
  request: PlacementRequest;
  /** Measured use, when the host reports it (cpu in cores, fractional; memory in MiB). */
  usage?: { cpuCores: number; memoryMib: number };
  /** False for VMs that must not move now (stopped, in flight, cooling down): they still count where they are. */
  movable: boolean;
  /**
   * A live migration of this VM also copies its disk (local storage): the move's cost is then its
   * memory plus its disk. Absent or false: shared storage, only memory is copied.
   */
  copiesDisk?: boolean;
  /**
   * GiB of the data volumes attached to the VM (a whole number ≥ 0; absent: 0). They are in its
   * host's pool and travel with it: a move frees them on the source and needs them on the target
   * (they count in a host's allocated disk, as the VM's own disk does: {@link moveRequestOf}), and
   * it always copies them (the move's cost, whatever `copiesDisk` says of the VM's own disk).
   */
  volumeGib?: number;
}

/**
 * The request a move of `vm` is checked with (what {@link planRebalance} uses, and what to give
 * {@link checkMove}): the VM's request without `volumes` — the migration carries them, so they pin
 * the VM to no host — with their size added to `resources.diskGib`, as the target must hold them.
 * The same object when the VM has no volumes.
 */
export function moveRequestOf(vm: Pick<RebalanceVm, "request" | "volumeGib">): PlacementRequest {
  const { request } = vm;
  const extra = vm.volumeGib ?? 0;
  if (request.volumes === undefined && extra === 0) return request;
  const { volumes: _travel, ...rest } = request;
  return extra === 0 ? rest : { ...rest, resources: { ...rest.resources, diskGib: rest.resources.diskGib + extra } };
}

/** What the planner reads: one consistent snapshot. */
export interface RebalanceInput {
  /** Every host as the scheduler sees it (allocated includes every VM in `vms`, and in-flight arrivals). */
  hosts: readonly HostSnapshot[];
  vms: readonly RebalanceVm[];
}

/** How to plan. Invalid values are INVALID_ARGUMENT naming the field (`rebalance.max_moves: …`). */
export interface RebalanceOptions {
  goal: RebalanceGoal;
  /** "usage" weighs measured use (default when every movable VM has usage), "allocation" the requests. */
  metric?: RebalanceMetric;
  /** At most this many moves in the plan (a whole number ≥ 0). */
  maxMoves: number;
  /** At most this many moves out of plus into any one host (default 8, as DRS). */
  maxMovesPerHost?: number;
  /** balance: stop when the imbalance (std-dev of host utilisation) is at or below this (default 0.05). */
  threshold?: number;
  /** A balance move must buy at least this drop of std-dev per GiB moved (cost/benefit gate; default 0: any drop). */
  minBenefitPerGiB?: number;
  /** consolidate: keep at least this fraction of the cluster's allocatable free on the hosts left (default 0.1). */
  minFreeFraction?: number;
  /** Hosts that must not be sources or targets (cooldown). They still count in the imbalance. */
  frozenHosts?: ReadonlySet<string>;
}

/** One live migration of a plan, in plan order. */
export interface RebalanceMove {
  vmId: string;
  vmName: string;
  from: string;
  to: string;
  /** Why, in one line. */
  reason: string;
  /** balance: the drop of the imbalance this move buys; consolidate: the share of its source host it empties (1 / VMs there). */
  benefit: number;
  /** GiB copied: the VM's memory, plus its disk when it `copiesDisk`, plus its volumes (`volumeGib`). */
  costGiB: number;
  /** The imbalance after this move and the ones before it. */
  imbalanceAfter: number;
}

/** The plan: moves in the order to apply them, and what they achieve. */
export interface RebalancePlanResult {
  goal: RebalanceGoal;
  moves: RebalanceMove[];
  imbalanceBefore: number;
  imbalanceAfter: number;
  /** Hosts that hold VMs before the plan and none after it (consolidate), sorted by id. */
  freedHosts: string[];
  /** Σ costGiB. */
  movedGiB: number;
  /** Why the plan stops where it does, in one line. */
  note: string;
  /** The metric the plan was computed on. */
  metric: RebalanceMetric;
  /**
   * A budget (`maxMoves`, `maxMovesPerHost`) stopped the plan or kept a move out of it: planning
   * again after applying it may find more. False: the plan ended at the threshold or because no
   * further move is allowed by the rules.
   */
  budgetBound: boolean;
}

/** The resources utilisation is measured on: vCPU and memory (disk does not move load). */
const UTIL_RESOURCES = ["vcpus", "memoryMib"] as const;
const U = UTIL_RESOURCES.length;

/** A balance move must lower the std-dev by more than this (float noise is not a benefit). */
const MIN_GAIN = 1e-9;
/** Sources are hosts above the fleet level + threshold by more than this; targets stay at or below it (+ TARGET_EPS). */
const SOURCE_EPS = 1e-9;
const TARGET_EPS = 1e-12;
/** balance: how many VMs of the source, best first, get a full target search before the source is given up. */
const TRY_VMS = 8;
/** Targets the weighers choose among: the first this many feasible ones, coldest first (balance) / fullest first (consolidate). */
const TARGET_WINDOW = 8;
/** At most this many hosts get their filters run for one VM (bounds a VM that few hosts accept; pins are always all tried). */
const SCAN_CAP = 2048;

const DEFAULTS = { maxMovesPerHost: 8, threshold: 0.05, minBenefitPerGiB: 0, minFreeFraction: 0.1 } as const;

// ---------------------------------------------------------------------------------------------
// Utilisation and imbalance: one definition, used by the planner, the benchmark and the controller.
// ---------------------------------------------------------------------------------------------

/**
 * The metric a plan uses when `metric` is not given: `usage` when there is at least one movable VM
 * and every movable VM has measured usage, else `allocation`.
 */
export function defaultMetric(vms: readonly RebalanceVm[]): RebalanceMetric {
  let movable = 0;
  for (const v of vms) {
    if (!v.movable) continue;
    movable++;
    if (v.usage === undefined) return "allocation";
  }
  return movable > 0 ? "usage" : "allocation";
}

/**
 * Hosts that count in the imbalance and may be sources or targets: ready and not cordoned (the
 * hosts the scheduler places on). A host that is down or cordoned is someone else's business
 * (recovery, drain); its VMs are never moved by the planner.
 */
export const inRebalancePopulation = (h: HostSnapshot): boolean => h.ready && !h.cordoned;

/**
 * One host's utilisation, a number ≥ 0 (1 = full): the mean over vCPU and memory of load / size,
 * over the resources the host has any of. On `allocation`, load is `allocated` and size is
 * allocatable (ratio and reserve applied, as the capacity filter sees it). On `usage`, load is the
 * VMs' measured use (cores busy, MiB used; a VM without usage counts its request, and what the host
 * allocates beyond its listed VMs — arrivals in flight — counts at allocation) and size is the
 * physical capacity (cores, MiB). The mean, not the max: a move changes both resources, and the mean
 * moves smoothly with each, so every move's effect shows in the figure (as Watcher sums its cpu and
 * memory std-devs).
 */
export function utilisation(load: readonly number[], size: readonly number[]): number {
  let sum = 0;
  let n = 0;
  for (let r = 0; r < U; r++) {
    const s = size[r]!;
    if (!(s > 0)) continue;
    sum += load[r]! / s;
    n++;
  }
  return n === 0 ? 0 : sum / n;
}

/**
 * Each population host's utilisation ({@link utilisation}; population: {@link inRebalancePopulation}),
 * by host id. `metric` defaults as in {@link planRebalance}.
 */
export function hostUtilisations(input: RebalanceInput, scheduler: ResolvedSchedulerOptions, metric?: RebalanceMetric): Record<string, number> {
  const m = new Model(input, scheduler, metric ?? defaultMetric(input.vms), undefined);
  const out: Record<string, number> = {};
  for (let i = 0; i < m.n; i++) if (m.pop[i]) out[m.ids[i]!] = m.u[i]!;
  return out;
}

/**
 * The imbalance the planner minimises: the population standard deviation of the utilisation of the
 * hosts that are ready and not cordoned (see {@link utilisation}; 0 with no such host). Exported so
 * that the controller, the CLI and the benchmarks report the same number. `metric` defaults as in
 * {@link planRebalance}. Throws INVALID_ARGUMENT for an inconsistent input, as planRebalance does.
 */
export function imbalanceOf(input: RebalanceInput, scheduler: ResolvedSchedulerOptions, metric?: RebalanceMetric): number {
  return new Model(input, scheduler, metric ?? defaultMetric(input.vms), undefined).sigma();
}

// ---------------------------------------------------------------------------------------------
// Re-checking a move.
// ---------------------------------------------------------------------------------------------

/**
 * Re-checks one move against a (newer) snapshot: the VM of `request` taken off `move.from`
 * (`withoutPlacement`), may it go to `move.to` by the scheduler's filters (those `scheduler.filters`
 * enables, of `pipeline`)? Undefined when it may; else why not, as placeVm words a rejection:
 * `<host>: <filter>: <reason>`, or that a host is missing or the move goes nowhere. Whether the
 * move still pays is not checked (a new plan decides that). Give it the VM's {@link moveRequestOf}
 * (its volumes' size in the disk); `request.volumes` is ignored either way, since the move
 * carries the volumes.
 */
export function checkMove(
  hosts: readonly HostSnapshot[],
  move: Pick<RebalanceMove, "from" | "to">,
  given: PlacementRequest,
  scheduler: ResolvedSchedulerOptions,
  pipeline: Pipeline = DEFAULT_PIPELINE,
): string | undefined {
  checkPlacementRequest(given, "request");
  const request = moveRequestOf({ request: given });
  const filters = enabledFilters(pipeline, scheduler);
  const from = hosts.find((h) => h.id === move.from);
  const to = hosts.find((h) => h.id === move.to);
  if (from === undefined) return `${move.from}: the source host is not in the snapshot`;
  if (to === undefined) return `${move.to}: the target host is not in the snapshot`;
  if (move.from === move.to) return `${move.to}: the VM is already there`;
  const group = request.group?.name;
  const after = hosts.map((h) => (h.id === move.from ? withoutPlacement(h, request.resources, group) : h)).sort((a, b) => compareIds(a.id, b.id));
  checkHosts(after);
  // The context exactly as placeVm builds it on the snapshot without the VM.
  const counts = usableHostCounts(after);
  const ctx: PlacementContext = {
    request,
    options: scheduler,
    groupHosts: group === undefined ? [] : after.filter((h) => membersOn(h, group) > 0).map((h) => h.id),
    pinned: request.pinnedHosts !== undefined && request.pinnedHosts.length > 0 ? new Set(request.pinnedHosts) : undefined,
    fleetDirection: steers(counts.usable, counts.empty) ? fleetDirection(after, request, scheduler) : undefined,
  };
  for (const f of filters) {
    const r = f.filter(to, ctx);
    if (!r.pass) return `${to.id}: ${f.name}: ${r.reason}`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The planner.
// ---------------------------------------------------------------------------------------------

/**
 * Plans live migrations, in the order to apply them. Pure: the same input and options always give
 * the same plan; the input is not changed.
 *
 * Contract, for both goals:
 * - every move is feasible by the scheduler's own filters (`scheduler.filters` of `pipeline`) on
 *   the snapshot as it is after the moves before it, with the VM taken off its source
 *   (`withoutPlacement`); the same check as {@link checkMove}, with {@link moveRequestOf}: the
 *   VM's volumes travel with it (no pin to their host; their size in the disk it takes along);
 * - a VM moves at most once per plan, never to the host it is on, and only when `movable`; hosts
 *   that are not ready, cordoned or in `frozenHosts` are neither sources nor targets; VMs on them
 *   stay;
 * - at most `maxMoves` moves, and at most `maxMovesPerHost` moves out of plus into any host.
 *
 * `balance` lowers {@link imbalanceOf}. The fleet level L is Σ load / Σ size per resource over the
 * population, averaged over vCPU and memory: a number no move changes. Repeatedly, from the most
 * utilised host above L + `threshold`, it moves the VM that lowers the std-dev most to a host it
 * leaves at or below L + `threshold`; the target is ranked among the feasible coldest hosts
 * (the first 8) by the scheduler's weighers at the configured weights, scored as placeVm
 * scores (what the scheduler would pick among them). A move must lower the std-dev, by at least
 * `minBenefitPerGiB` × its GiB. It stops at `threshold`, at the budget, or when no host above the
 * band can shed a VM. Why the band: a host that receives ends at or below L + threshold and only
 * hosts above it give, so no VM this plan moves is moved by the next plan on the applied snapshot
 * with the same threshold (the descheduler's ping-pong cannot happen), whatever the budgets cut.
 *
 * `consolidate` empties hosts: least utilised first, a host is emptied only when every VM on it is
 * listed, movable and finds a target (a simulated re-pack through the filters, all or nothing per
 * host, within the budgets), onto hosts that hold VMs (never onto an empty one), chosen by best fit
 * as the pack preset scores it (the pipeline's `alignedFit` weigher, always steered by the fleet's
 * demand direction, plus `groupAffinity` and `imageLocality` at their configured weights) among
 * the first 8 feasible of
 * the fullest hosts. It keeps at least `minFreeFraction` of the population's allocatable (per
 * resource) free on the hosts that hold VMs. When it empties a host that an earlier move of the
 * plan filled, that move is re-routed (the VM goes straight to where it ends, still one move).
 * When no budget bound the plan (`budgetBound: false`), planning again on the applied snapshot
 * proposes nothing; when one did, a later plan may move a VM again, but only to empty one more
 * host (the hosts in use only fall; a host a plan empties is never filled by the next): mark
 * recently moved VMs `movable: false` (the controller's cooldown) to avoid even that.
 *
 * Throws BerthError INVALID_ARGUMENT naming the field for a bad option (`rebalance.max_moves: …`),
 * and for an inconsistent input: duplicate VM or host ids, a VM on an unknown host, a malformed
 * request or usage, or a host that allocates less than its listed VMs request.
 */
export function planRebalance(
  input: RebalanceInput,
  scheduler: ResolvedSchedulerOptions,
  options: RebalanceOptions,
  pipeline: Pipeline = DEFAULT_PIPELINE,
): RebalancePlanResult {
  const o = resolveOptions(options);
  const metric = o.metric ?? defaultMetric(input.vms);
  const m = new Model(input, scheduler, metric, o.frozenHosts, pipeline);
  const before = m.sigma();
  const hadVms = m.hosts.map((h) => h.vmCount > 0);
  const moves: RebalanceMove[] = [];
  const note = o.goal === "balance" ? planBalance(m, o, moves) : planConsolidate(m, o, moves);
  const freedHosts: string[] = [];
  for (let i = 0; i < m.n; i++) if (hadVms[i] && m.hosts[i]!.vmCount === 0) freedHosts.push(m.ids[i]!);
  let movedGiB = 0;
  for (const mv of moves) movedGiB += mv.costGiB;
  // The final figure is recomputed from the final snapshot, not carried through the incremental sums.
  const after = moves.length === 0 ? before : m.freshSigma();
  return { goal: o.goal, metric, moves, imbalanceBefore: before, imbalanceAfter: after, freedHosts, movedGiB, note, budgetBound: m.budgetBound };
}

interface Resolved {
  goal: RebalanceGoal;
  metric: RebalanceMetric | undefined;
  maxMoves: number;
  maxMovesPerHost: number;
  threshold: number;
  minBenefitPerGiB: number;
  minFreeFraction: number;
  frozenHosts: ReadonlySet<string> | undefined;
}

function resolveOptions(options: RebalanceOptions): Resolved {
  const goal: unknown = options?.goal;
  if (goal !== "balance" && goal !== "consolidate") throw invalidArgument("rebalance.goal", `must be balance or consolidate (got ${String(goal)})`);
  const metric: unknown = options.metric;
  if (metric !== undefined && metric !== "usage" && metric !== "allocation") {
    throw invalidArgument("rebalance.metric", `must be usage or allocation (got ${String(metric)})`);
  }
  const whole = (field: string, v: unknown): number => {
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw invalidArgument(field, `must be a whole number ≥ 0 (got ${String(v)})`);
    return v;
  };
  const nonNegative = (field: string, v: unknown): number => {
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw invalidArgument(field, `must be a finite number ≥ 0 (got ${String(v)})`);
    return v;
  };
  const maxMoves = whole("rebalance.max_moves", options.maxMoves);
  const maxMovesPerHost = whole("rebalance.max_moves_per_host", options.maxMovesPerHost ?? DEFAULTS.maxMovesPerHost);
  const threshold = nonNegative("rebalance.threshold", options.threshold ?? DEFAULTS.threshold);
  const minBenefitPerGiB = nonNegative("rebalance.min_benefit_per_gib", options.minBenefitPerGiB ?? DEFAULTS.minBenefitPerGiB);
  const minFreeFraction = nonNegative("rebalance.min_free_fraction", options.minFreeFraction ?? DEFAULTS.minFreeFraction);
  if (minFreeFraction >= 1) throw invalidArgument("rebalance.min_free_fraction", `must be below 1 (got ${minFreeFraction})`);
  const frozen: unknown = options.frozenHosts;
  if (frozen !== undefined && !(frozen instanceof Set)) throw invalidArgument("rebalance.frozen_hosts", "must be a set of host ids");
  return { goal, metric, maxMoves, maxMovesPerHost, threshold, minBenefitPerGiB, minFreeFraction, frozenHosts: options.frozenHosts };
}

// ---------------------------------------------------------------------------------------------
// The model: the snapshot, kept current as the plan's moves are applied, with the sums the
// planner needs (per-host load and utilisation, Σu and Σu² for the std-dev in O(1) per move, group
// members per host for the filters' context).
// ---------------------------------------------------------------------------------------------

interface VmRec {
  readonly vm: RebalanceVm;
  /** What a move of it is checked with: {@link moveRequestOf} (no volume pin; their size in the disk). */
  readonly request: PlacementRequest;
  /** Host index now. */
  host: number;
  /** The VM's load on the metric, per utilisation resource. */
  readonly load: readonly number[];
  readonly costGiB: number;
  moved: boolean;
}

class Model {
  readonly n: number;
  /** Current snapshots, in id order. */
  readonly hosts: HostSnapshot[];
  readonly ids: string[];
  readonly indexOf = new Map<string, number>();
  /** Per host × utilisation resource: load on the metric, and the size it is measured against. */
  readonly load: Float64Array;
  readonly size: Float64Array;
  readonly u: Float64Array;
  /** In the population (ready, not cordoned). */
  readonly pop: Uint8Array;
  /** May be a source or a target: in the population and not frozen. */
  readonly active: Uint8Array;
  /** Moves out of plus into each host so far. */
  readonly movesAt: Int32Array;
  readonly vms: VmRec[];
  /** VM record indexes per host. */
  readonly onHost: number[][];
  /** Group → host index → members there (counts > 0 only). */
  readonly groups = new Map<string, Map<number, number>>();
  readonly filters: readonly Filter[];
  readonly pipeline: Pipeline;
  readonly options: ResolvedSchedulerOptions;
  readonly input: RebalanceInput;
  readonly metric: RebalanceMetric;
  /** A budget (per plan or per host) stopped the plan or kept a move out of it. */
  budgetBound = false;
  /** Σu, Σu² over the population, and its size. */
  s1 = 0;
  s2 = 0;
  nPop = 0;
  /** For alignedFit's steering, as placeVm decides it: usable hosts, and those of them with no VM. */
  usable = 0;
  empty = 0;
  /** The fleet's demand direction (Σ allocated / Σ allocatable per resource): no move changes it. */
  readonly direction: number[];

  constructor(input: RebalanceInput, options: ResolvedSchedulerOptions, metric: RebalanceMetric, frozen: ReadonlySet<string> | undefined, pipeline: Pipeline = DEFAULT_PIPELINE) {
    if (input === null || typeof input !== "object" || !Array.isArray(input.hosts) || !Array.isArray(input.vms)) {
      throw invalidArgument("input", "must have hosts and vms lists");
    }
    this.options = options;
    this.input = input;
    this.metric = metric;
    this.pipeline = pipeline;
    this.filters = enabledFilters(pipeline, options);
    this.hosts = [...input.hosts].sort((a, b) => compareIds(a.id, b.id));
    checkHosts(this.hosts);
    const n = (this.n = this.hosts.length);
    this.ids = this.hosts.map((h) => h.id);
    this.load = new Float64Array(n * U);
    this.size = new Float64Array(n * U);
    this.u = new Float64Array(n);
    this.pop = new Uint8Array(n);
    this.active = new Uint8Array(n);
    this.movesAt = new Int32Array(n);
    this.onHost = this.hosts.map(() => []);
    const fleetAlloc = RESOURCE_NAMES.map(() => 0);
    const fleetTotal = RESOURCE_NAMES.map(() => 0);
    this.hosts.forEach((h, i) => {
      this.indexOf.set(h.id, i);
      this.pop[i] = inRebalancePopulation(h) ? 1 : 0;
      this.active[i] = this.pop[i] && !(frozen?.has(h.id) ?? false) ? 1 : 0;
      RESOURCE_NAMES.forEach((k, r) => {
        fleetAlloc[r] = fleetAlloc[r]! + h.allocated[k];
        fleetTotal[r] = fleetTotal[r]! + allocatableOf(h, k, options);
      });
      if (h.ready && !h.cordoned) {
        this.usable++;
        if (h.vmCount === 0) this.empty++;
      }
      for (const [g, c] of Object.entries(h.groupMembers ?? {})) if (c > 0) this.members(g).set(i, c);
    });
    this.direction = fleetTotal.map((t, r) => (t > 0 ? fleetAlloc[r]! / t : 0));

    // VMs: checked, indexed by host, their load on the metric.
    const seen = new Set<string>();
    const requested = new Float64Array(n * RESOURCE_NAMES.length);
    const listed = new Int32Array(n);
    this.vms = input.vms.map((vm, j) => {
      if (typeof vm.id !== "string" || vm.id === "") throw invalidArgument(`vms[${j}].id`, "must not be empty");
      if (seen.has(vm.id)) throw invalidArgument(`vms[${j}].id`, `duplicate VM id '${vm.id}'`);
      seen.add(vm.id);
      const i = this.indexOf.get(vm.hostId);
      if (i === undefined) throw invalidArgument(`vms[${j}].host_id`, `unknown host '${String(vm.hostId)}'`);
      if (!isWellFormedRequest(vm.request)) checkPlacementRequest(vm.request, `vms[${j}].request`);
      const volumeGib: unknown = vm.volumeGib ?? 0;
      if (typeof volumeGib !== "number" || !Number.isSafeInteger(volumeGib) || volumeGib < 0) {
        throw invalidArgument(`vms[${j}].volume_gib`, `must be a whole number ≥ 0 (got ${quote(volumeGib)})`);
      }
      const request = moveRequestOf(vm);
      const q = request.resources;
      requested[i * 3] = requested[i * 3]! + q.vcpus;
      requested[i * 3 + 1] = requested[i * 3 + 1]! + q.memoryMib;
      requested[i * 3 + 2] = requested[i * 3 + 2]! + q.diskGib;
      listed[i] = listed[i]! + 1;
      let load: number[];
      if (metric === "usage" && vm.usage !== undefined) {
        const { cpuCores, memoryMib } = vm.usage;
        if (!(Number.isFinite(cpuCores) && cpuCores >= 0)) throw invalidArgument(`vms[${j}].usage.cpu_cores`, `must be a finite number ≥ 0 (got ${String(cpuCores)})`);
        if (!(Number.isFinite(memoryMib) && memoryMib >= 0)) throw invalidArgument(`vms[${j}].usage.memory_mib`, `must be a finite number ≥ 0 (got ${String(memoryMib)})`);
        load = [cpuCores, memoryMib];
      } else {
        load = [q.vcpus, q.memoryMib];
      }
      // Memory always; the VM's own disk when it is local; its volumes always (they travel).
      const costGiB = (q.memoryMib + (vm.copiesDisk ? vm.request.resources.diskGib * 1024 : 0) + volumeGib * 1024) / 1024;
      this.onHost[i]!.push(j);
      return { vm, request, host: i, load, costGiB, moved: false };
    });

    // Hosts: each must allocate at least what its listed VMs request (the snapshot is one consistent view).
    this.hosts.forEach((h, i) => {
      RESOURCE_NAMES.forEach((k, r) => {
        const req = requested[i * RESOURCE_NAMES.length + r]!;
        if (req > h.allocated[k]) {
          throw invalidArgument(`hosts[${h.id}].allocated.${RESOURCE_FIELD[k]}`, `${h.allocated[k]} is less than its VMs request (${req})`);
        }
      });
      if (listed[i]! > h.vmCount) throw invalidArgument(`hosts[${h.id}].vm_count`, `${h.vmCount} is less than its VMs listed (${listed[i]})`);
      UTIL_RESOURCES.forEach((k, r) => {
        if (metric === "allocation") {
          this.load[i * U + r] = h.allocated[k];
          this.size[i * U + r] = allocatableOf(h, k, this.options);
        } else {
          // Measured use of the listed VMs, plus what the host allocates beyond them (arrivals in flight) at allocation.
          let used = h.allocated[k] - requested[i * RESOURCE_NAMES.length + RESOURCE_NAMES.indexOf(k)]!;
          for (const j of this.onHost[i]!) used += this.vms[j]!.load[r]!;
          this.load[i * U + r] = used;
          this.size[i * U + r] = h.capacity[k];
        }
      });
      this.u[i] = this.utilWith(i, 0, undefined);
      if (this.pop[i]) {
        this.nPop++;
        this.s1 += this.u[i]!;
        this.s2 += this.u[i]! ** 2;
      }
    });
    // Group members listed must be on their hosts' counts (withoutPlacement must not go below 0).
    for (const rec of this.vms) {
      const g = rec.request.group?.name;
      if (g !== undefined && membersOn(this.hosts[rec.host]!, g) < 1) {
        throw invalidArgument(`hosts[${this.ids[rec.host]}].group_members.${g}`, `does not count VM '${rec.vm.id}' of that group`);
      }
    }
  }

  private members(group: string): Map<number, number> {
    let m = this.groups.get(group);
    if (m === undefined) this.groups.set(group, (m = new Map()));
    return m;
  }

  /** Per utilisation resource, the largest size among the active hosts (for {@link leastShare}). */
  private maxSize: number[] | undefined;

  /**
   * A lower bound of what `vmLoad` adds to any active host's utilisation: the smallest over the
   * resources of its share of the largest size (a host's mean of shares is at least their minimum).
   */
  leastShare(vmLoad: readonly number[]): number {
    if (this.maxSize === undefined) {
      this.maxSize = [];
      for (let r = 0; r < U; r++) {
        let mx = 0;
        for (let i = 0; i < this.n; i++) if (this.active[i] && this.size[i * U + r]! > mx) mx = this.size[i * U + r]!;
        this.maxSize.push(mx);
      }
    }
    let least = Infinity;
    for (let r = 0; r < U; r++) {
      const mx = this.maxSize[r]!;
      least = Math.min(least, mx > 0 ? vmLoad[r]! / mx : 0);
    }
    return least === Infinity ? 0 : least;
  }

  /** Utilisation of host i with `sign` × `vmLoad` added (sign 0 or vmLoad undefined: as it is). */
  utilWith(i: number, sign: number, vmLoad: readonly number[] | undefined): number {
    let sum = 0;
    let k = 0;
    for (let r = 0; r < U; r++) {
      const s = this.size[i * U + r]!;
      if (!(s > 0)) continue;
      sum += (this.load[i * U + r]! + (vmLoad === undefined ? 0 : sign * vmLoad[r]!)) / s;
      k++;
    }
    return k === 0 ? 0 : sum / k;
  }

  sigma(): number {
    return this.sigmaOf(this.s1, this.s2);
  }

  sigmaOf(s1: number, s2: number): number {
    if (this.nPop === 0) return 0;
    const mean = s1 / this.nPop;
    return Math.sqrt(Math.max(0, s2 / this.nPop - mean * mean));
  }

  /** The std-dev if host s's utilisation became us and host t's ut (both in the population). */
  sigmaAfter(s: number, us: number, t: number, ut: number): number {
    const a = this.u[s]!;
    const b = this.u[t]!;
    return this.sigmaOf(this.s1 - a - b + us + ut, this.s2 - a * a - b * b + us * us + ut * ut);
  }

  /** The fleet level: per utilisation resource Σ load / Σ size over the population, averaged. No move changes it. */
  level(): number {
    let sum = 0;
    let k = 0;
    for (let r = 0; r < U; r++) {
      let l = 0;
      let s = 0;
      for (let i = 0; i < this.n; i++) {
        if (!this.pop[i]) continue;
        l += this.load[i * U + r]!;
        s += this.size[i * U + r]!;
      }
      if (s > 0) {
        sum += l / s;
        k++;
      }
    }
    return k === 0 ? 0 : sum / k;
  }

  /**
   * The filters' context for moving `rec` off its host, exactly as placeVm builds it on the
   * snapshot with the VM removed: group hosts without the source if the VM was its last member
   * there, the pins, and the fleet direction when alignedFit steers.
   */
  contextFor(rec: VmRec): PlacementContext {
    const request = rec.request;
    const s = rec.host;
    let groupHosts: string[] = [];
    const g = request.group?.name;
    if (g !== undefined) {
      const idx: number[] = [];
      for (const [i, c] of this.groups.get(g) ?? []) if (c - (i === s ? 1 : 0) > 0) idx.push(i);
      idx.sort((a, b) => a - b);
      groupHosts = idx.map((i) => this.ids[i]!);
    }
    const source = this.hosts[s]!;
    const empty = this.empty + (source.ready && !source.cordoned && source.vmCount === 1 ? 1 : 0);
    return {
      request,
      options: this.options,
      groupHosts,
      pinned: request.pinnedHosts !== undefined && request.pinnedHosts.length > 0 ? new Set(request.pinnedHosts) : undefined,
      fleetDirection: steers(this.usable, empty) ? this.direction : undefined,
    };
  }

  /** Host i has used its move budget (and the plan notes that a budget bound it). */
  atBudget(i: number, o: { maxMovesPerHost: number }): boolean {
    if (this.movesAt[i]! < o.maxMovesPerHost) return false;
    this.budgetBound = true;
    return true;
  }

  /** Allocatable per host × resource (RESOURCE_NAMES order), for {@link mayFit}; undefined when the capacity filter is off. */
  private allocatable3: Float64Array | undefined | null = null;

  /**
   * Pruning only, before the filters: false when host t certainly fails the capacity filter for
   * `req` (the same arithmetic: allocated + request > allocatable on a resource), so that the scans
   * do not run every filter on hosts that are full. True otherwise, and always when the capacity
   * filter is not enabled. Feasibility is still decided by {@link passes}.
   */
  mayFit(t: number, req: PlacementRequest["resources"]): boolean {
    if (this.allocatable3 === null) {
      if (!this.filters.includes(capacityFilter)) this.allocatable3 = undefined;
      else {
        const a = new Float64Array(this.n * 3);
        for (let i = 0; i < this.n; i++) RESOURCE_NAMES.forEach((k, r) => (a[i * 3 + r] = allocatableOf(this.hosts[i]!, k, this.options)));
        this.allocatable3 = a;
      }
    }
    const a = this.allocatable3;
    if (a === undefined) return true;
    const h = this.hosts[t]!.allocated;
    return h.vcpus + req.vcpus <= a[t * 3]! && h.memoryMib + req.memoryMib <= a[t * 3 + 1]! && h.diskGib + req.diskGib <= a[t * 3 + 2]!;
  }

  /** Host t passes every enabled filter for the context. */
  passes(t: number, ctx: PlacementContext): boolean {
    const h = this.hosts[t]!;
    for (const f of this.filters) if (!f.filter(h, ctx).pass) return false;
    return true;
  }

  /**
   * The best of `cands` (host indexes that passed the filters) by the pipeline's weighers at
   * `weights`, scored as placeVm scores: raw scores normalised to [0, 1] across the candidates,
   * weighted, rounded to 9 decimals, ties by the scheduler's tie-break.
   */
  best(cands: readonly number[], ctx: PlacementContext, weights: Readonly<Record<string, number>>): number {
    if (cands.length === 1) return cands[0]!;
    const totals = new Float64Array(cands.length);
    for (const w of this.pipeline.weighers as readonly Weigher[]) {
      const weight = weights[w.name] ?? 0;
      if (!(weight > 0)) continue;
      normalise(cands.map((t) => w.weigh(this.hosts[t]!, ctx))).forEach((g, k) => (totals[k] = totals[k]! + weight * roundScore(g)));
    }
    const seed = this.options.seed ?? 0;
    let bestK = 0;
    for (let k = 1; k < cands.length; k++) {
      const a = roundScore(totals[k]!);
      const b = roundScore(totals[bestK]!);
      if (a > b || (a === b && compareTies(this.ids[cands[k]!]!, this.ids[cands[bestK]!]!, seed) < 0)) bestK = k;
    }
    return cands[bestK]!;
  }

  /** Applies a move of VM record `j` to host t: both snapshots, sums, members, budgets. */
  apply(j: number, t: number): void {
    const rec = this.vms[j]!;
    const s = rec.host;
    const req = rec.request;
    const g = req.group?.name;
    const src = this.hosts[s]!;
    const dst = this.hosts[t]!;
    const wasEmpty = (h: HostSnapshot): boolean => h.ready && !h.cordoned && h.vmCount === 0;
    this.empty -= (wasEmpty(src) ? 1 : 0) + (wasEmpty(dst) ? 1 : 0);
    this.hosts[s] = withoutPlacement(src, req.resources, g);
    this.hosts[t] = withPlacement(dst, req.resources, g);
    this.empty += (wasEmpty(this.hosts[s]!) ? 1 : 0) + (wasEmpty(this.hosts[t]!) ? 1 : 0);
    for (let r = 0; r < U; r++) {
      this.load[s * U + r] = this.load[s * U + r]! - rec.load[r]!;
      this.load[t * U + r] = this.load[t * U + r]! + rec.load[r]!;
    }
    for (const i of [s, t]) {
      const before = this.u[i]!;
      const after = this.utilWith(i, 0, undefined);
      this.u[i] = after;
      if (this.pop[i]) {
        this.s1 += after - before;
        this.s2 += after * after - before * before;
      }
    }
    if (g !== undefined) {
      const m = this.members(g);
      const left = (m.get(s) ?? 0) - 1;
      if (left > 0) m.set(s, left);
      else m.delete(s);
      m.set(t, (m.get(t) ?? 0) + 1);
    }
    const list = this.onHost[s]!;
    list.splice(list.indexOf(j), 1);
    this.onHost[t]!.push(j);
    this.movesAt[s] = this.movesAt[s]! + 1;
    this.movesAt[t] = this.movesAt[t]! + 1;
    rec.host = t;
    rec.moved = true;
  }

  /** Undoes {@link apply} (a consolidation that did not finish): the VM back on `s`, the move uncounted, `moved` as it was. */
  unapply(j: number, s: number, wasMoved: boolean): void {
    const t = this.vms[j]!.host;
    this.apply(j, s);
    this.movesAt[s] = this.movesAt[s]! - 2;
    this.movesAt[t] = this.movesAt[t]! - 2;
    this.vms[j]!.moved = wasMoved;
  }

  /**
   * The std-dev recomputed from the current snapshots and VM placements rather than carried
   * through the incremental sums (for the plan's final figure; O(hosts + VMs)).
   */
  freshSigma(): number {
    const load = new Float64Array(this.n * U);
    if (this.metric === "allocation") {
      for (let i = 0; i < this.n; i++) {
        load[i * U] = this.hosts[i]!.allocated.vcpus;
        load[i * U + 1] = this.hosts[i]!.allocated.memoryMib;
      }
    } else {
      for (let i = 0; i < this.n; i++) {
        load[i * U] = this.hosts[i]!.allocated.vcpus;
        load[i * U + 1] = this.hosts[i]!.allocated.memoryMib;
      }
      for (const rec of this.vms) {
        const q = rec.request.resources;
        const at = rec.host * U;
        load[at] = load[at]! + rec.load[0]! - q.vcpus;
        load[at + 1] = load[at + 1]! + rec.load[1]! - q.memoryMib;
      }
    }
    let s1 = 0;
    let s2 = 0;
    for (let i = 0; i < this.n; i++) {
      if (!this.pop[i]) continue;
      let sum = 0;
      let k = 0;
      for (let r = 0; r < U; r++) {
        const sz = this.size[i * U + r]!;
        if (!(sz > 0)) continue;
        sum += load[i * U + r]! / sz;
        k++;
      }
      const u = k === 0 ? 0 : sum / k;
      s1 += u;
      s2 += u * u;
    }
    return this.sigmaOf(s1, s2);
  }
}

/**
 * Active host indexes kept in order of (utilisation, index), ascending. A host whose utilisation
 * is about to change is {@link remove}d first and {@link insert}ed after: binary search and one
 * array move each.
 */
class UtilOrder {
  readonly order: number[] = [];
  /** Hosts taken out for good (done as sources, or at their move budget): remove / insert skip them. */
  private readonly retired: Uint8Array;
  constructor(private readonly m: Model) {
    this.retired = new Uint8Array(m.n);
    for (let i = 0; i < m.n; i++) if (m.active[i]) this.order.push(i);
    this.order.sort((a, b) => this.cmp(a, b));
  }
  private cmp(a: number, b: number): number {
    const ua = this.m.u[a]!;
    const ub = this.m.u[b]!;
    return ua < ub ? -1 : ua > ub ? 1 : a - b;
  }
  private lowerBound(i: number): number {
    let lo = 0;
    let hi = this.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.cmp(this.order[mid]!, i) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
  remove(i: number): void {
    if (!this.m.active[i] || this.retired[i]) return;
    const at = this.lowerBound(i);
    if (this.order[at] !== i) throw new Error(`rebalance: host index ${i} is not where its utilisation says`);
    this.order.splice(at, 1);
  }
  insert(i: number): void {
    if (!this.m.active[i] || this.retired[i]) return;
    this.order.splice(this.lowerBound(i), 0, i);
  }
  /** Takes host i out of the order for the rest of the plan. */
  retire(i: number): void {
    this.remove(i);
    this.retired[i] = 1;
  }
}

// ---------------------------------------------------------------------------------------------
// balance
// ---------------------------------------------------------------------------------------------

const pct = (x: number): string => `${(x * 100).toFixed(1)} %`;

function planBalance(m: Model, o: Resolved, moves: RebalanceMove[]): string {
  const level = m.level();
  // The dead band above the fleet level: hosts in it neither give nor may be filled beyond it. Its
  // width is the threshold (the imbalance the plan aims at), so a target can take a VM that lifts
  // it a little over the level (without it, the last VMs would stay on the hot hosts for want of a
  // target that stays under the level), and a host a move filled never becomes a source.
  const ceiling = level + o.threshold + TARGET_EPS;
  const sources = level + o.threshold + SOURCE_EPS;
  const order = new UtilOrder(m);
  const done = new Uint8Array(m.n);
  let sigma = m.sigma();
  for (;;) {
    if (sigma <= o.threshold) return `imbalance ${sigma.toFixed(4)} is at or below the threshold ${o.threshold}`;
    if (moves.length >= o.maxMoves) {
      m.budgetBound = true;
      return `move budget reached (${o.maxMoves} per plan)`;
    }
    // The most utilised host above the fleet level that may still give.
    let s = -1;
    for (let k = order.order.length - 1; k >= 0; k--) {
      const i = order.order[k]!;
      if (m.u[i]! <= sources) break;
      if (done[i] || m.atBudget(i, o)) continue;
      s = i;
      break;
    }
    if (s < 0) {
      return `no${moves.length === 0 ? "" : " further"} VM on a host above the fleet level (${pct(level)}) + threshold can move to a host it leaves at or below that, within the filters, budgets and cost gate`;
    }
    const found = balanceMoveFrom(m, o, s, order, ceiling, sigma);
    if (found === undefined) {
      // Done as a source; above the band it is no target either: out of the order, so that later
      // scans do not walk past it again.
      done[s] = 1;
      order.retire(s);
      continue;
    }
    const { j, t, after } = found;
    const rec = m.vms[j]!;
    const us = m.u[s]!;
    const ut = m.u[t]!;
    order.remove(s);
    order.remove(t);
    m.apply(j, t);
    order.insert(s);
    order.insert(t);
    // A host at its move budget is neither source nor target any more.
    if (m.atBudget(s, o)) order.retire(s);
    if (m.atBudget(t, o)) order.retire(t);
    moves.push({
      vmId: rec.vm.id,
      vmName: rec.vm.name,
      from: m.ids[s]!,
      to: m.ids[t]!,
      reason: `balance: ${m.ids[s]} at ${pct(us)} → ${m.ids[t]} at ${pct(ut)} (fleet level ${pct(level)}); std-dev ${sigma.toFixed(4)} → ${after.toFixed(4)}`,
      benefit: sigma - after,
      costGiB: rec.costGiB,
      imbalanceAfter: after,
    });
    sigma = m.sigma();
  }
}

/**
 * The move off source s: its movable VMs ranked by how much they would lower the std-dev on the
 * coldest host that may still take moves, then for the best few a target: among hosts that stay at
 * or below the fleet level after the move, buy a large enough drop, have budget and pass the
 * filters, the first TARGET_WINDOW coldest, ranked by the scheduler's weighers.
 */
function balanceMoveFrom(
  m: Model,
  o: Resolved,
  s: number,
  order: UtilOrder,
  ceiling: number,
  sigma: number,
): { j: number; t: number; after: number } | undefined {
  let coldest = -1;
  for (const i of order.order) {
    if (i !== s && !m.atBudget(i, o)) {
      coldest = i;
      break;
    }
  }
  if (coldest < 0 || m.u[coldest]! > ceiling) return undefined;
  const ranked: { j: number; drop: number }[] = [];
  for (const j of m.onHost[s]!) {
    const rec = m.vms[j]!;
    if (!rec.vm.movable || rec.moved) continue;
    const ut = m.utilWith(coldest, 1, rec.load);
    if (ut > ceiling) continue;
    const drop = sigma - m.sigmaAfter(s, m.utilWith(s, -1, rec.load), coldest, ut);
    if (drop > MIN_GAIN) ranked.push({ j, drop });
  }
  ranked.sort((a, b) => b.drop - a.drop || compareIds(m.vms[a.j]!.vm.id, m.vms[b.j]!.vm.id));
  for (const { j } of ranked.slice(0, TRY_VMS)) {
    const rec = m.vms[j]!;
    const us = m.utilWith(s, -1, rec.load);
    const ctx = m.contextFor(rec);
    const feasible: number[] = [];
    const afterOf = new Map<number, number>();
    const consider = (t: number): void => {
      if (t === s || !m.active[t] || m.atBudget(t, o)) return;
      const ut = m.utilWith(t, 1, rec.load);
      if (ut > ceiling) return;
      const after = m.sigmaAfter(s, us, t, ut);
      const benefit = sigma - after;
      if (!(benefit > MIN_GAIN) || benefit < o.minBenefitPerGiB * rec.costGiB) return;
      if (!m.mayFit(t, rec.request.resources) || !m.passes(t, ctx)) return;
      feasible.push(t);
      afterOf.set(t, after);
    };
    if (ctx.pinned !== undefined) {
      // Pinned: only those hosts can pass; try them all, coldest first.
      const pins = [...ctx.pinned].map((id) => m.indexOf.get(id)).filter((i): i is number => i !== undefined);
      pins.sort((a, b) => m.u[a]! - m.u[b]! || a - b);
      for (const t of pins) if (feasible.length < TARGET_WINDOW) consider(t);
    } else {
      // Coldest first; past the host whose utilisation plus the least this VM can add to any host
      // (its share of the largest host) is above the ceiling, no host can take it within the band.
      const least = m.leastShare(rec.load);
      let scanned = 0;
      for (const t of order.order) {
        if (m.u[t]! + least > ceiling || feasible.length >= TARGET_WINDOW || scanned >= SCAN_CAP) break;
        scanned++;
        consider(t);
      }
    }
    if (feasible.length === 0) continue;
    const t = m.best(feasible, ctx, m.options.weights);
    return { j, t, after: afterOf.get(t)! };
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// consolidate
// ---------------------------------------------------------------------------------------------

/** One move of a consolidation plan being built: VM record j from its original host to `to`. */
interface Step {
  readonly j: number;
  readonly from: number;
  to: number;
  /** The host whose emptying this move is part of: its source. */
  readonly empties: number;
  /** The host it was to go to first and that this plan empties too (the move re-routed), if any. */
  through?: number;
  /** The std-dev after this move as simulated (valid while no move was re-routed). */
  sigmaAfter: number;
}

/**
 * consolidate: hosts least utilised first; a host is emptied only when all its VMs find a target
 * (simulated on the model, undone if one does not), so a plan never starts to empty a host it
 * cannot finish. Passes repeat until one empties nothing: the order changes as hosts fill, and a
 * host that received VMs may be emptied in turn. A VM moves once per plan: emptying a host that
 * received VM x from X re-routes x (X → new target, instead of X → this host), its move taken out
 * of its place and put where this host's emptying is; see {@link reroutable} for why that is still
 * valid. So when no budget cut the plan, no host holding VMs can be emptied on the applied
 * snapshot, and planning again proposes nothing.
 */
function planConsolidate(m: Model, o: Resolved, moves: RebalanceMove[]): string {
  // Free capacity on the hosts that hold VMs vs. the floor: emptying host c takes its allocatable
  // out of the hosts left (its VMs move onto them), so the check is O(1) per host.
  const R = RESOURCE_NAMES.length;
  const free = RESOURCE_NAMES.map(() => 0);
  const floor = RESOURCE_NAMES.map(() => 0);
  const allocatableAt = (i: number, r: number): number => allocatableOf(m.hosts[i]!, RESOURCE_NAMES[r]!, m.options);
  for (let i = 0; i < m.n; i++) {
    if (!m.pop[i]) continue;
    for (let r = 0; r < R; r++) {
      const a = allocatableAt(i, r);
      floor[r] = floor[r]! + o.minFreeFraction * a;
      if (m.hosts[i]!.vmCount > 0) free[r] = free[r]! + a - m.hosts[i]!.allocated[RESOURCE_NAMES[r]!];
    }
  }
  // Packed as the scheduler's pack preset packs: its alignedFit weigher (best fit, steered toward
  // the fleet's mix of resources so hosts fill on every resource at once), soft groups weighed as
  // configured. placeVm steers only in big fleets with empty hosts to spare, because steering keeps
  // a few hosts open that stay part-empty when the stream of VMs stops; a consolidation re-packs
  // VMs that are all known, the case where steering pays at any size (on the benchmark's 200 hosts:
  // 81 hosts for a lower bound of 80, plain best fit 82; 110 for 110 against 113). Without
  // alignedFit in the pipeline, plain best fit (mostAllocated).
  const packer = m.pipeline.weighers.some((w) => w.name === "alignedFit") ? "alignedFit" : "mostAllocated";
  // The soft preferences keep their configured weights: groups, and a host holding the VM's image.
  const weights: Record<string, number> = {
    [packer]: 1,
    groupAffinity: m.options.weights["groupAffinity"] ?? 0,
    imageLocality: m.options.weights["imageLocality"] ?? 0,
  };
  const order = new UtilOrder(m);
  const steps: Step[] = [];
  /** Index in `steps` of each VM record's move, or -1. */
  const stepOf = new Int32Array(m.vms.length).fill(-1);
  const origin = m.vms.map((r) => r.host);
  const freed = new Uint8Array(m.n);
  const defaultFilters = m.filters.every((f) => DEFAULT_PIPELINE.filters.includes(f));
  let budgetCut: string | undefined;
  let rerouted = false;
  let skippedFree = 0;
  let failed = 0;
  for (let changed = true; changed; ) {
    changed = false;
    skippedFree = 0;
    failed = 0;
    budgetCut = undefined;
    const candidates = order.order.filter((c) => m.hosts[c]!.vmCount > 0);
    for (const c of candidates) {
      if (freed[c] || m.hosts[c]!.vmCount === 0) continue;
      const vms = m.onHost[c]!;
      // Every VM on it listed (an arrival in flight keeps it busy), movable, and a VM this plan
      // moved here only when its move can be re-routed.
      if (vms.length !== m.hosts[c]!.vmCount) continue;
      if (vms.some((j) => !m.vms[j]!.vm.movable || (m.vms[j]!.moved && !(defaultFilters && reroutable(m, steps, stepOf[j]!, c))))) continue;
      const own = vms.filter((j) => !m.vms[j]!.moved).length;
      if (steps.length + own > o.maxMoves) {
        m.budgetBound = true;
        budgetCut ??= `move budget reached (${o.maxMoves} per plan)`;
        continue;
      }
      // Out of c: its own VMs; the ones it received and re-routes no longer touch it.
      if (own + (m.movesAt[c]! - (vms.length - own)) > o.maxMovesPerHost) {
        m.budgetBound = true;
        budgetCut ??= `a host's move budget (${o.maxMovesPerHost}) keeps it from being emptied`;
        continue;
      }
      let keeps = true;
      for (let r = 0; r < R; r++) if (free[r]! - allocatableAt(c, r) < floor[r]! - 1e-9) keeps = false;
      if (!keeps) {
        skippedFree++;
        continue;
      }
      const done = emptyHost(m, o, c, order, weights);
      if (done === undefined) {
        failed++;
        continue;
      }
      for (let r = 0; r < R; r++) free[r] = free[r]! - allocatableAt(c, r);
      freed[c] = 1;
      changed = true;
      for (const { j, to, sigmaAfter } of done) {
        const p = stepOf[j]!;
        if (p >= 0) {
          // Re-routed: X → c becomes X → to, moved to the end; c is not touched by it.
          const step = steps[p]!;
          steps.splice(p, 1);
          for (let q = p; q < steps.length; q++) stepOf[steps[q]!.j] = q;
          m.movesAt[c] = m.movesAt[c]! - 2;
          step.to = to;
          step.through = c;
          rerouted = true;
          stepOf[j] = steps.length;
          steps.push(step);
        } else {
          stepOf[j] = steps.length;
          steps.push({ j, from: origin[j]!, to, empties: c, sigmaAfter });
        }
      }
    }
  }
  // The figures after each move: as simulated, or, when a move was re-routed (the order changed),
  // replayed in plan order on a fresh model.
  const replay = rerouted ? new Model(m.input, m.options, m.metric, undefined, m.pipeline) : undefined;
  const count = new Map<number, number>();
  for (const st of steps) count.set(st.empties, (count.get(st.empties) ?? 0) + 1);
  const seen = new Map<number, number>();
  for (const st of steps) {
    replay?.apply(st.j, st.to);
    const rec = m.vms[st.j]!;
    const k = count.get(st.empties)!;
    const n = (seen.get(st.empties) ?? 0) + 1;
    seen.set(st.empties, n);
    const via = st.through === undefined ? "" : ` (re-routed: it was to go to ${m.ids[st.through]}, which this plan empties too)`;
    moves.push({
      vmId: rec.vm.id,
      vmName: rec.vm.name,
      from: m.ids[st.from]!,
      to: m.ids[st.to]!,
      reason: `consolidate: empties ${m.ids[st.empties]} (move ${n} of ${k}) onto ${m.ids[st.to]}, best fit${via}`,
      benefit: 1 / k,
      costGiB: rec.costGiB,
      imbalanceAfter: replay === undefined ? st.sigmaAfter : replay.sigma(),
    });
  }
  if (budgetCut !== undefined) return budgetCut;
  const kept = [
    failed > 0 ? `${failed} host${failed === 1 ? "" : "s"} whose VMs do not all fit elsewhere` : "",
    skippedFree > 0 ? `${skippedFree} kept: the hosts left would have less than ${o.minFreeFraction} of the allocatable free` : "",
  ].filter((x) => x !== "");
  return kept.length === 0 ? "no further host can be emptied within the filters and budgets" : `no further host can be emptied: ${kept.join("; ")}`;
}

/**
 * May the move of steps[p] (VM x: X → c, c now to be emptied) become X → T, taken out of its place
 * and put at the end of the plan, T being where emptying c sends x? With the default filters, yes,
 * except in one case. At the end, T sees what it saw when c's emptying was simulated (x was on c,
 * now it is on X: neither is T). Between p and the end, x stays on X, which the plan emptied, so no
 * move there targets X; and c holds x less than the simulation said: less allocated, one VM
 * fewer, one member fewer — capacity, maxVms and anti-affinity only pass more easily; ready,
 * pinned and labels do not change. Hard affinity can fail: a later move of a member of x's
 * affinity group to c may have passed only because x was on c. That case is not re-routed (c stays).
 */
function reroutable(m: Model, steps: readonly Step[], p: number, c: number): boolean {
  const g = m.vms[steps[p]!.j]!.request.group;
  if (g === undefined || g.policy !== "affinity") return true;
  for (let q = p + 1; q < steps.length; q++) {
    const st = steps[q]!;
    if (st.to === c && m.vms[st.j]!.request.group?.name === g.name) return false;
  }
  return true;
}

/**
 * Moves every VM off host c (largest first, each to the best fit among the first TARGET_WINDOW
 * feasible hosts, fullest first, that hold VMs and have budget), on the model. All or nothing:
 * when one VM finds no target the moves are undone and the answer is undefined.
 */
function emptyHost(
  m: Model,
  o: Resolved,
  c: number,
  order: UtilOrder,
  weights: Readonly<Record<string, number>>,
): { j: number; to: number; sigmaAfter: number }[] | undefined {
  const vms = [...m.onHost[c]!].sort((a, b) => {
    const x = m.vms[a]!.request.resources;
    const y = m.vms[b]!.request.resources;
    return y.memoryMib - x.memoryMib || y.vcpus - x.vcpus || y.diskGib - x.diskGib || compareIds(m.vms[a]!.vm.id, m.vms[b]!.vm.id);
  });
  const done: { j: number; to: number; wasMoved: boolean; sigmaAfter: number }[] = [];
  // c is out of the order while it is being emptied (it is no target of its own VMs); each target
  // is taken out and put back around its move.
  const move = (j: number, from: number, to: number, back: boolean, wasMoved: boolean): void => {
    const other = back ? from : to;
    order.remove(other);
    if (back) m.unapply(j, to, wasMoved);
    else m.apply(j, to);
    order.insert(other);
  };
  order.remove(c);
  try {
    return emptyOnto(m, o, c, vms, order, weights, done, move);
  } finally {
    order.insert(c);
  }
}

function emptyOnto(
  m: Model,
  o: Resolved,
  c: number,
  vms: readonly number[],
  order: UtilOrder,
  weights: Readonly<Record<string, number>>,
  done: { j: number; to: number; wasMoved: boolean; sigmaAfter: number }[],
  move: (j: number, from: number, to: number, back: boolean, wasMoved: boolean) => void,
): { j: number; to: number; sigmaAfter: number }[] | undefined {
  for (const j of vms) {
    const rec = m.vms[j]!;
    // The filters' context as placeVm's, with the fleet direction always given (see planConsolidate).
    const ctx: PlacementContext = { ...m.contextFor(rec), fleetDirection: m.direction };
    const feasible: number[] = [];
    const consider = (t: number): void => {
      if (t === c || !m.active[t] || m.hosts[t]!.vmCount === 0 || m.atBudget(t, o)) return;
      if (m.mayFit(t, rec.request.resources) && m.passes(t, ctx)) feasible.push(t);
    };
    if (ctx.pinned !== undefined) {
      const pins = [...ctx.pinned].map((id) => m.indexOf.get(id)).filter((i): i is number => i !== undefined);
      pins.sort((a, b) => m.u[b]! - m.u[a]! || a - b);
      for (const t of pins) if (feasible.length < TARGET_WINDOW) consider(t);
    } else {
      let scanned = 0;
      for (let k = order.order.length - 1; k >= 0 && feasible.length < TARGET_WINDOW && scanned < SCAN_CAP; k--) {
        const t = order.order[k]!;
        if (m.hosts[t]!.vmCount === 0) continue;
        scanned++;
        consider(t);
      }
    }
    if (feasible.length === 0) {
      for (let n = done.length - 1; n >= 0; n--) move(done[n]!.j, done[n]!.to, c, true, done[n]!.wasMoved);
      return undefined;
    }
    const to = m.best(feasible, ctx, weights);
    const wasMoved = rec.moved;
    move(j, c, to, false, wasMoved);
    done.push({ j, to, wasMoved, sigmaAfter: m.sigma() });
  }
  return done;
}

// ---------------------------------------------------------------------------------------------
// Shared checks.
// ---------------------------------------------------------------------------------------------

/** The pipeline's filters that `options.filters` enables, in its order (all when absent), as placeVm runs them. */
function enabledFilters(pipeline: Pipeline, options: ResolvedSchedulerOptions): readonly Filter[] {
  const names = options.filters;
  if (names === undefined) return pipeline.filters;
  return names.map((name, i) => {
    const f = pipeline.filters.find((x) => x.name === name);
    if (!f) throw invalidArgument(`scheduler.filters[${i}]`, `unknown filter '${name}' (known: ${pipeline.filters.map((x) => x.name).join(", ")})`);
    return f;
  });
}
