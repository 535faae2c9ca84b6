import { mulberry32, RESOURCE_NAMES } from "@berth/core";
import { allocatableOf, type ResolvedSchedulerOptions } from "./options.js";
import type { Pipeline } from "./pipeline.js";
import { compareIds, enabledFilters, placeVm, withoutPlacement, withPlacement } from "./place.js";
import { membersOn, type Filter, type PlacementContext } from "./stage.js";
import type { GangDecision, HostSnapshot, PlacementRequest } from "./types.js";

/** The default of `SchedulerOptions.gangSearchMs`: the gang packing search's nominal budget. */
export const DEFAULT_GANG_SEARCH_MS = 200;

/** The largest `gangSearchMs` accepted (10 s). */
export const MAX_GANG_SEARCH_MS = 10_000;

/**
 * How many host checks (one request run through the enabled filters on one host) the gang search
 * may make per millisecond of `gangSearchMs`. The scheduler reads no clock, so the budget is this
 * count: a check costs 1, a check the search remembers (same request, same snapshot) 1/2, and each
 * search iteration 4 more for its bookkeeping. Calibrated on the benchmark machine (2 cores, Node
 * 20, idle, the default filters, the gang-pack fixtures: 50,000 units took 250 to 300 ms, about
 * 170 per ms), so 200 ms is 34,000. A faster machine finishes sooner, a slower one later, with the
 * same answer.
 */
export const GANG_CHECKS_PER_MS = 170;

/** What a check the search remembers (same request, same host snapshot) costs of the budget. */
const REMEMBERED_CHECK_COST = 1 / 2;

/** What one iteration of the search costs of the budget, besides its checks (its bookkeeping). */
const ITERATION_COST = 4;

/** Iterations a VM taken off a host stays barred from going back to it (the search's tabu tenure). */
const TABU_TENURE = 7;

/**
 * Whether packing is the goal of the weights, so that a gang is packed as a set: the weighers that
 * fill hosts (`mostAllocated`, `alignedFit`) weigh more than the ones that keep room
 * (`leastAllocated`, `balanced`). True for the `pack` preset, false for `spread` and `balanced`.
 */
export function gangPacks(options: ResolvedSchedulerOptions): boolean {
  const w = (name: string): number => options.weights[name] ?? 0;
  return w("mostAllocated") + w("alignedFit") > w("leastAllocated") + w("balanced");
}

/** The check budget for `options.gangSearchMs` (absent: {@link DEFAULT_GANG_SEARCH_MS}). */
export function gangSearchChecks(options: ResolvedSchedulerOptions): number {
  return Math.floor((options.gangSearchMs ?? DEFAULT_GANG_SEARCH_MS) * GANG_CHECKS_PER_MS);
}

/** A complete or partial assignment: host index per request (−1: not placed). */
interface Solution {
  at: number[];
  /** Hosts the gang opened (empty before it, holding a gang VM now). */
  opened: number;
}

/**
 * Packs a gang as a set (see placeVms): greedy passes in request order (`inOrder`, already
 * computed), largest-first by dominant share of the fleet's free capacity and by the sum of shares,
 * then a bounded local search that empties the gang's least loaded new host into the others. Only
 * a strictly better (fewer new hosts) or, when request order fails, a feasible answer replaces
 * `inOrder`; a search answer is replayed in request order through the filters before it is used.
 */
export function packGang(
  hosts: readonly HostSnapshot[],
  requests: readonly PlacementRequest[],
  options: ResolvedSchedulerOptions,
  pipeline: Pipeline,
  inOrder: GangDecision,
): GangDecision {
  if (requests.length < 2 || !gangPacks(options)) return inOrder;
  const budget = gangSearchChecks(options);
  if (budget <= 0) return inOrder;
  // A weighted soft group is a preference that outranks packing: keep the pipeline's own order.
  if ((options.weights["groupAffinity"] ?? 0) > 0 && requests.some((r) => r.group?.policy === "soft-affinity" || r.group?.policy === "soft-anti-affinity")) {
    return inOrder;
  }
  const search = new GangSearch(hosts, requests, options, pipeline, budget);
  const found = search.run(inOrder);
  if (!found) return inOrder;
  return { placed: true, placements: requests.map((r, i) => ({ name: r.name, hostId: search.hosts[found.at[i]!]!.id })) };
}

class GangSearch {
  readonly hosts: HostSnapshot[];
  private readonly filters: readonly Filter[];
  private readonly index: Map<string, number>;
  private readonly size: number[];
  private readonly emptyBefore: boolean[];
  private budget: number;
  private rng: () => number;
  private readonly pinned: (ReadonlySet<string> | undefined)[];
  private readonly verdicts = new WeakMap<HostSnapshot, Map<number, boolean>>();
  private readonly next = new WeakMap<HostSnapshot, Map<number, HostSnapshot>>();

  constructor(
    hosts: readonly HostSnapshot[],
    private readonly requests: readonly PlacementRequest[],
    private readonly options: ResolvedSchedulerOptions,
    private readonly pipeline: Pipeline,
    budget: number,
  ) {
    this.hosts = [...hosts].sort((a, b) => compareIds(a.id, b.id));
    this.filters = enabledFilters(pipeline, options);
    this.index = new Map(this.hosts.map((h, i) => [h.id, i]));
    this.emptyBefore = this.hosts.map((h) => h.vmCount === 0);
    this.budget = budget;
    this.rng = mulberry32(((options.seed ?? 0) ^ Math.imul(requests.length, 0x9e3779b1)) >>> 0);
    this.pinned = requests.map((r) => (r.pinnedHosts !== undefined && r.pinnedHosts.length > 0 ? new Set(r.pinnedHosts) : undefined));
    // Sizes: the sum over resources of the request's share of the largest usable host's allocatable.
    const usable = this.hosts.filter((h) => h.ready && !h.cordoned);
    const ref = RESOURCE_NAMES.map((k) => Math.max(0, ...usable.map((h) => allocatableOf(h, k, options))));
    this.size = requests.map((r) => RESOURCE_NAMES.reduce((s, k, j) => (ref[j]! > 0 ? s + r.resources[k] / ref[j]! : s), 0));
  }

  /** The best complete solution found that beats `inOrder` (or any, when `inOrder` failed); undefined otherwise. */
  run(inOrder: GangDecision): Solution | undefined {
    const n = this.requests.length;
    let incumbent: Solution | undefined;
    if (inOrder.placed) incumbent = this.solutionOf(inOrder.placements.map((p) => this.index.get(p.hostId)!));
    const baseline = incumbent?.opened ?? Infinity;

    // Greedy passes, largest first, each placement by the pipeline (placeVm: filters and weighers).
    const free = RESOURCE_NAMES.map((k) =>
      this.hosts.reduce((s, h) => (h.ready && !h.cordoned ? s + Math.max(0, allocatableOf(h, k, this.options) - h.allocated[k]) : s), 0),
    );
    const dominant = this.requests.map((r) => Math.max(0, ...RESOURCE_NAMES.map((k, j) => (free[j]! > 0 ? r.resources[k] / free[j]! : 0))));
    const orders = [dominant, this.size].map((key) => Array.from({ length: n }, (_, i) => i).sort((a, b) => key[b]! - key[a]! || a - b));
    let partial: number[] | undefined;
    for (const order of orders) {
      const at = this.greedy(order);
      if (at.every((h) => h >= 0)) {
        const s = this.solutionOf(at);
        if (!incumbent || s.opened < incumbent.opened) incumbent = s;
      } else partial ??= at;
    }

    // Repair: when no pass placed every VM, try to fit the rest by the search, on every host.
    if (!incumbent && partial) {
      const receivers = this.hosts.map((_, i) => i);
      const state = new State(this, partial);
      const pool = partial.flatMap((h, i) => (h < 0 ? [i] : []));
      if (this.repair(state, pool, receivers, new Set(), this.budget)) incumbent = this.solutionOf(state.at);
    }
    if (!incumbent) return undefined;

    // Improve: empty one new host into the others (never opening another), while the budget lasts
    // and the gang opens more hosts than it must.
    const floor = this.newHostsLowerBound();
    for (;;) {
      if (incumbent.opened <= floor) break;
      const improved = this.eliminateOne(incumbent);
      if (!improved) break;
      incumbent = improved;
    }
    if (incumbent.opened >= baseline) return undefined;
    return this.replays(incumbent.at) ? incumbent : undefined;
  }

  /**
   * A lower bound on the empty hosts the gang must open: per resource, what the gang needs beyond
   * the room on usable hosts that already hold VMs, over the largest empty usable host's
   * allocatable (a bound only, to stop the search early; placements are the filters' business).
   */
  private newHostsLowerBound(): number {
    let bound = 0;
    for (const k of RESOURCE_NAMES) {
      let need = 0;
      for (const r of this.requests) need += r.resources[k];
      let room = 0;
      let largest = 0;
      this.hosts.forEach((h, i) => {
        if (!h.ready || h.cordoned) return;
        const total = allocatableOf(h, k, this.options);
        if (this.emptyBefore[i]) largest = Math.max(largest, total - h.allocated[k]);
        else room += Math.max(0, total - h.allocated[k]);
      });
      if (need > room) bound = Math.max(bound, largest > 0 ? Math.ceil((need - room) / largest) : Infinity);
    }
    return bound;
  }

  /** Places the requests in `order` one by one with placeVm on the virtual state; −1 where none fits (the pass goes on). */
  private greedy(order: readonly number[]): number[] {
    const current = [...this.hosts];
    const at = this.requests.map(() => -1);
    for (const i of order) {
      const r = this.requests[i]!;
      const d = placeVm(current, r, this.options, this.pipeline);
      if (!d.placed) continue;
      const h = this.index.get(d.hostId)!;
      current[h] = withPlacement(current[h]!, r.resources, r.group?.name);
      at[i] = h;
    }
    return at;
  }

  solutionOf(at: number[]): Solution {
    const used = new Set<number>();
    for (const h of at) if (h >= 0 && this.emptyBefore[h]) used.add(h);
    return { at: [...at], opened: used.size };
  }

  private eliminateOne(incumbent: Solution): Solution | undefined {
    const load = new Map<number, number>();
    incumbent.at.forEach((h, i) => {
      if (this.emptyBefore[h]) load.set(h, (load.get(h) ?? 0) + this.size[i]!);
    });
    const targets = [...load.keys()].sort((a, b) => load.get(a)! - load.get(b)! || a - b).slice(0, 3);
    const touched = [...new Set(incumbent.at)].sort((a, b) => a - b);
    for (let t = 0; t < targets.length; t++) {
      if (this.budget <= 0) return undefined;
      const target = targets[t]!;
      const state = new State(this, incumbent.at);
      const pool: number[] = [];
      incumbent.at.forEach((h, i) => {
        if (h === target) {
          state.remove(i);
          pool.push(i);
        }
      });
      const receivers = touched.filter((h) => h !== target);
      // The first target gets half of what is left, the next half of the rest, the last all of it.
      const slice = t === targets.length - 1 ? this.budget : Math.ceil(this.budget / 2);
      if (this.repair(state, pool, receivers, new Set([target]), slice)) return this.solutionOf(state.at);
    }
    return undefined;
  }

  /**
   * Tries to place every VM of `pool` on `receivers` (never on `barred`), moving other gang VMs
   * about. Each iteration takes the pool's largest VM (3 times in 10 a random one), and puts it
   * straight where it fits (the host left fullest), else in exchange for one or two smaller gang
   * VMs on a host (a random one of the exchanges that pass the filters: the pool shrinks), else in
   * exchange for whatever must leave a random host (a kick: the pool may grow). The VMs taken off a
   * host are barred from going back for a few iterations. The random choices come from a generator
   * seeded by `options.seed`: the same input gives the same answer. True when the pool empties
   * within `checks`.
   */
  private repair(state: State, pool: number[], receivers: readonly number[], barred: ReadonlySet<number>, checks: number): boolean {
    const stopAt = this.budget - checks;
    const tabu = new Map<number, number>(); // request * hosts + host → last iteration it is barred
    const key = (i: number, h: number): number => i * this.hosts.length + h;
    const isTabu = (i: number, h: number, iter: number): boolean => (tabu.get(key(i, h)) ?? -1) >= iter;
    const open = (h: number): boolean => !barred.has(h) && (!this.emptyBefore[h] || state.count[h]! > 0 || barred.size === 0);
    for (let iter = 0; pool.length > 0; iter++) {
      this.budget -= ITERATION_COST;
      if (this.budget <= stopAt || this.budget <= 0) return false;
      // The largest VM in the pool, or (3 times in 10) one at random.
      let pi = 0;
      if (this.rng() < 0.3) pi = Math.floor(this.rng() * pool.length);
      else for (let j = 1; j < pool.length; j++) if (this.size[pool[j]!]! > this.size[pool[pi]!]! || (this.size[pool[j]!] === this.size[pool[pi]!] && pool[j]! < pool[pi]!)) pi = j;
      const p = pool[pi]!;
      const hostsFor = receivers.filter((h) => open(h) && !isTabu(p, h, iter));

      // 1. Straight in, on the host left fullest.
      let best = -1;
      let bestSlack = Infinity;
      for (const h of hostsFor) {
        if (!this.fits(state, p, h)) continue;
        const slack = state.slackAfter(h, p);
        if (slack < bestSlack - 1e-12) {
          best = h;
          bestSlack = slack;
        }
      }
      if (best >= 0) {
        state.place(p, best);
        pool.splice(pi, 1);
        continue;
      }

      // 2. In exchange for one or two smaller gang VMs (a random one of the exchanges that pass).
      let swap: { h: number; out: number[]; tie: number } | undefined;
      for (const h of hostsFor) {
        const here = state.on(h).filter((q) => this.size[q]! < this.size[p]!);
        const tries: number[][] = here.map((q) => [q]);
        for (let a = 0; a < here.length; a++) for (let b = a + 1; b < here.length; b++) {
          if (this.size[here[a]!]! + this.size[here[b]!]! < this.size[p]!) tries.push([here[a]!, here[b]!]);
        }
        const saved = state.hosts[h]!;
        for (const out of tries) {
          for (const q of out) state.remove(q);
          const ok = this.fits(state, p, h);
          state.restore(h, saved, out);
          if (!ok) continue;
          const tie = this.rng();
          if (!swap || tie < swap.tie) swap = { h, out, tie };
        }
      }
      if (swap) {
        for (const q of swap.out) {
          state.remove(q);
          pool.push(q);
          tabu.set(key(q, swap.h), iter + TABU_TENURE);
        }
        state.place(p, swap.h);
        pool.splice(pool.indexOf(p), 1);
        continue;
      }

      // 3. Kick: on a random host, take off gang VMs (largest first) until the VM fits.
      let kicked = false;
      // Every open receiver, the ones p is barred from last (a kick may override the bar).
      const order = receivers
        .filter(open)
        .map((h) => ({ h, r: this.rng() + (isTabu(p, h, iter) ? 1 : 0) }))
        .sort((a, b) => a.r - b.r);
      for (const { h } of order) {
        const here = state.on(h).sort((a, b) => this.size[b]! - this.size[a]! || a - b);
        const out: number[] = [];
        const saved = state.hosts[h]!;
        let ok = false;
        for (const q of here) {
          state.remove(q);
          out.push(q);
          if (this.fits(state, p, h)) {
            ok = true;
            break;
          }
        }
        if (!ok) {
          state.restore(h, saved, out);
          continue;
        }
        for (const q of out) {
          pool.push(q);
          tabu.set(key(q, h), iter + TABU_TENURE);
        }
        state.place(p, h);
        pool.splice(pool.indexOf(p), 1);
        kicked = true;
        break;
      }
      if (!kicked) return false; // no receiver can take it even emptied of the gang
    }
    return true;
  }

  /**
   * Request `i` through the enabled filters on host `h` of `state` (the VM itself not placed). For
   * a request without a group the answer depends on the host snapshot alone (snapshots are never
   * changed, and the search reuses them: {@link derived}), so it is remembered per snapshot; a
   * check counts 1 against the budget, a remembered one {@link REMEMBERED_CHECK_COST}.
   */
  fits(state: State, i: number, h: number): boolean {
    const host = state.hosts[h]!;
    const cacheable = this.requests[i]!.group === undefined;
    if (cacheable) {
      const known = this.verdicts.get(host)?.get(i);
      if (known !== undefined) {
        this.budget -= REMEMBERED_CHECK_COST;
        return known;
      }
    }
    this.budget--;
    const ctx = this.context(state.hosts, i);
    let pass = true;
    for (const f of this.filters) {
      if (!f.filter(host, ctx).pass) {
        pass = false;
        break;
      }
    }
    if (cacheable) {
      let m = this.verdicts.get(host);
      if (!m) this.verdicts.set(host, (m = new Map()));
      m.set(i, pass);
    }
    return pass;
  }

  /**
   * `host` with request `i` placed on it (`sign` 1) or taken off (−1): withPlacement /
   * withoutPlacement, the same object each time for the same snapshot, request and sign.
   */
  derived(host: HostSnapshot, i: number, sign: 1 | -1): HostSnapshot {
    let m = this.next.get(host);
    if (!m) this.next.set(host, (m = new Map()));
    const k = sign * (i + 1);
    let out = m.get(k);
    if (!out) {
      const r = this.requests[i]!;
      out = sign === 1 ? withPlacement(host, r.resources, r.group?.name) : withoutPlacement(host, r.resources, r.group?.name);
      m.set(k, out);
    }
    return out;
  }

  private context(hosts: readonly HostSnapshot[], i: number): PlacementContext {
    const request = this.requests[i]!;
    const group = request.group;
    return {
      request,
      options: this.options,
      groupHosts: group === undefined ? [] : hosts.filter((h) => membersOn(h, group.name) > 0).map((h) => h.id),
      pinned: this.pinned[i],
    };
  }

  /** Whether the assignment, replayed in request order, passes the filters at every step. */
  private replays(at: readonly number[]): boolean {
    const current = [...this.hosts];
    for (let i = 0; i < at.length; i++) {
      const r = this.requests[i]!;
      const h = at[i]!;
      const ctx = this.context(current, i);
      for (const f of this.filters) if (!f.filter(current[h]!, ctx).pass) return false;
      current[h] = withPlacement(current[h]!, r.resources, r.group?.name);
    }
    return true;
  }

  request(i: number): PlacementRequest {
    return this.requests[i]!;
  }

  allocatableOf(h: number, k: (typeof RESOURCE_NAMES)[number]): number {
    return allocatableOf(this.hosts[h]!, k, this.options);
  }
}

/** The virtual fleet during the search: host snapshots with the gang's VMs applied, and where each is. */
class State {
  readonly hosts: HostSnapshot[];
  readonly at: number[];
  /** Gang VMs per host. */
  readonly count: number[];

  constructor(
    private readonly search: GangSearch,
    at: readonly number[],
  ) {
    this.hosts = [...search.hosts];
    this.at = at.map(() => -1);
    this.count = this.hosts.map(() => 0);
    at.forEach((h, i) => {
      if (h >= 0) this.place(i, h);
    });
  }

  place(i: number, h: number): void {
    this.hosts[h] = this.search.derived(this.hosts[h]!, i, 1);
    this.at[i] = h;
    this.count[h]!++;
  }

  remove(i: number): void {
    const h = this.at[i]!;
    this.hosts[h] = this.search.derived(this.hosts[h]!, i, -1);
    this.at[i] = -1;
    this.count[h]!--;
  }

  /** Puts back host `h`'s snapshot `saved`, taken before the gang VMs `removed` were taken off it. */
  restore(h: number, saved: HostSnapshot, removed: readonly number[]): void {
    this.hosts[h] = saved;
    for (const i of removed) this.at[i] = h;
    this.count[h]! += removed.length;
  }

  /** The gang VMs on host `h`, by index. */
  on(h: number): number[] {
    const out: number[] = [];
    this.at.forEach((x, i) => {
      if (x === h) out.push(i);
    });
    return out;
  }

  /** Σ over resources of the free fraction of host `h` after placing request `i` (lower: fuller). */
  slackAfter(h: number, i: number): number {
    const r = this.search.request(i);
    const host = this.hosts[h]!;
    let s = 0;
    for (const k of RESOURCE_NAMES) {
      const total = this.search.allocatableOf(h, k);
      if (total > 0) s += (total - host.allocated[k] - r.resources[k]) / total;
    }
    return s;
  }
}
