// The rebalance planner (planRebalance in @berth/scheduler) alone, in process, on synthetic fleets
// (bench/lib/scheduler-workload.mjs: identical hosts of 64 cores, 512 GiB, 4 TiB; CPU ratio 2.0,
// 8 GiB reserved; Azure-like VM sizes), from a fixed seed.
//
//   balance      200 hosts skewed as after a failover: a third of them hold 80 % of the VMs (filled
//                to ~85 %), the other two thirds the rest (~10 %); 35 % of the fleet's capacity in use.
//                30 % of the VMs in anti-affinity groups of 5, 10 % require a zone label, 10 % forbid
//                the gpu label (a tenth of the hosts have it), 3 % are pinned to 3 hosts, 5 % must not
//                move. Berth's planner and a Watcher-style workload_stabilization greedy baseline
//                (below, in this file, not the product) on the same snapshot, same threshold: std-dev
//                of host utilisation before / after (imbalanceOf: the one definition), migrations,
//                GiB moved, planning time.
//   consolidate  200 hosts, VMs spread evenly (spread preset) to 40 % of the fleet, with the same
//                groups and labels (no pins, no immovable VMs: the bin-packing lower bound would not
//                hold for them): hosts left in use after the plan vs the lower bound
//                LB = max over resources ⌈Σ demand / allocatable per host⌉; with minFreeFraction 0
//                (pure packing) and with the default 0.1 (LB + 10 % of the fleet).
//   scale        5,000 hosts / 50,000 VMs, skewed as in `balance`: planning time of a full balance
//                plan (no move budget beyond the per-host 8) and of a consolidation plan.
//
// The baseline ("greedy"): Watcher's workload_stabilization as the issue states it — one move at a
// time, the move that cuts the std-dev most, feasible by the same filters (the scheduler's own
// DEFAULT_PIPELINE filters, run on the snapshot with the VM taken off its source), until the
// std-dev is below the threshold. On identical hosts a VM's best target is the least utilised host
// that passes the filters (the drop falls as the target's utilisation rises), so each step finds,
// per movable VM, its coldest feasible host and takes the VM with the largest drop: the exact argmax.
// A second reference ("watcherRanked") follows Watcher's code more closely: it ranks every
// (VM, host) pair once by the std-dev that move alone would give, then applies them in that order
// when still valid and still lowering the std-dev, until below the threshold.
//
//   npx tsc -b packages/scheduler && node bench/rebalance.bench.mjs     (or: node bench/run.mjs rebalance)
// Knobs: BERTH_BENCH_REB_HOSTS (balance/consolidate fleet, default 200), BERTH_BENCH_REB_SCALE_HOSTS
// (default 5000), BERTH_BENCH_REB_SCALE_VMS (default 50000), BERTH_BENCH_REB_RUNS (timed runs per
// plan, median reported; default 3).
import { performance } from "node:perf_hooks";
import * as scheduler from "../packages/scheduler/dist/index.js";
import { envInt, log, round, runBenchmark } from "./lib/harness.mjs";
import { ALLOCATABLE, ALLOCATION_RATIO, fleet, mulberry32, RESERVED, RESOURCES, SEED, vmStream } from "./lib/scheduler-workload.mjs";

const HOSTS = envInt("BERTH_BENCH_REB_HOSTS", 200);
const SCALE_HOSTS = envInt("BERTH_BENCH_REB_SCALE_HOSTS", 5000);
const SCALE_VMS = envInt("BERTH_BENCH_REB_SCALE_VMS", 50000);
const RUNS = envInt("BERTH_BENCH_REB_RUNS", 3);
const DEADLINE_MS = 300_000;

/** The imbalance both planners stop at (Berth's default). */
const THRESHOLD = 0.05;
const BALANCE_FILL = 0.35;
const HOT_SHARE = 1 / 3;
const HOT_VMS = 0.8;
const CONSOLIDATE_FILL = Number(process.env.BERTH_BENCH_REB_CONSOLIDATE_FILL ?? 0.4);

const TARGETS = {
  /** Berth cuts the std-dev by at least this much … */
  balanceStdDevCut: 0.8,
  /** … with at most this share of the baseline's migrations. */
  balanceMigrationsShareOfBaseline: 0.6,
  /** Hosts in use after consolidation ≤ (1 + this) × LB. */
  consolidateOverLowerBound: 0.02,
  scalePlanMs: 1000,
};

const OPTIONS = scheduler.resolveSchedulerOptions({ allocationRatio: { ...ALLOCATION_RATIO }, reserved: { ...RESERVED } });

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/** Host labels: zone a/b alternating; gpu on every tenth host. */
function labelled(hosts) {
  return hosts.map((h, i) => ({ ...h, labels: i % 10 === 0 ? { zone: i % 2 === 0 ? "a" : "b", gpu: "t4" } : { zone: i % 2 === 0 ? "a" : "b" } }));
}

/**
 * VMs from the scheduler benchmark's stream (30 % in anti-affinity groups of 5) until `fill` of the
 * fleet's capacity on the binding resource, with labels, pins and immovable VMs as described above.
 */
function workload(hosts, fill, { pins = true, immovable = true, seed = SEED } = {}) {
  const rng = mulberry32(seed ^ 0x2b1a);
  const stream = vmStream(Math.ceil(hosts.length * 44 * fill * 1.3), { groups: true, seed });
  const limit = fill * hosts.length;
  const sum = { vcpus: 0, memoryMib: 0, diskGib: 0 };
  const out = [];
  for (const r of stream) {
    const next = RESOURCES.map((k) => (sum[k] + r.resources[k]) / ALLOCATABLE[k]);
    if (Math.max(...next) > limit) break;
    for (const k of RESOURCES) sum[k] += r.resources[k];
    const request = { name: r.name, resources: { ...r.resources } };
    if (r.group) request.group = r.group;
    const x = rng();
    if (x < 0.1) request.requiredLabels = { zone: rng() < 0.5 ? "a" : "b" };
    else if (x < 0.2) request.forbiddenLabels = { gpu: "*" };
    else if (pins && x < 0.23 && !r.group) request.pinnedHosts = [0, 1, 2].map(() => hosts[Math.floor(rng() * hosts.length)].id);
    out.push({ request, movable: immovable ? rng() >= 0.05 : true });
  }
  return { vms: out, demand: sum };
}

/**
 * Places `vms` with the scheduler (PlacementEngine, the given preset): a share `hotVms` of them on
 * the first `hotShare` of the hosts, the rest on the others (a VM neither subset takes goes
 * anywhere it fits; one that fits nowhere is dropped). Returns the rebalance input.
 */
function place(hosts, vms, { hotShare, hotVms, preset = "spread" }) {
  const options = scheduler.resolveSchedulerOptions({ allocationRatio: { ...ALLOCATION_RATIO }, reserved: { ...RESERVED }, preset });
  const hotCount = Math.round(hosts.length * hotShare);
  const hot = new scheduler.PlacementEngine(hosts.slice(0, hotCount), options);
  const cold = hotCount < hosts.length ? new scheduler.PlacementEngine(hosts.slice(hotCount), options) : undefined;
  const rng = mulberry32(SEED ^ 0x77);
  const placed = [];
  let dropped = 0;
  vms.forEach(({ request, movable }, i) => {
    const order = rng() < hotVms || !cold ? [hot, cold] : [cold, hot];
    for (const engine of order) {
      if (!engine) continue;
      // A group's members must not meet across the two engines: both see only their own hosts.
      const d = engine.place(request);
      if (d.placed) {
        engine.commit(d.hostId, request);
        placed.push({ id: `vm-${i}`, name: request.name, hostId: d.hostId, request, movable });
        return;
      }
    }
    dropped++;
  });
  const snap = (id) => hot.snapshot(id) ?? cold?.snapshot(id);
  return { input: { hosts: hosts.map((h) => snap(h.id)), vms: placed }, dropped };
}

// ---------------------------------------------------------------------------------------------
// balance
// ---------------------------------------------------------------------------------------------

function balanceCase() {
  const hosts = labelled(fleet(HOSTS));
  const { vms } = workload(hosts, BALANCE_FILL);
  const { input, dropped } = place(hosts, vms, { hotShare: HOT_SHARE, hotVms: HOT_VMS });
  const before = scheduler.imbalanceOf(input, OPTIONS, "allocation");
  log(`balance: ${HOSTS} hosts, ${input.vms.length} VMs (${dropped} did not fit), std-dev ${before.toFixed(4)}`);
  const opts = { goal: "balance", metric: "allocation", maxMoves: 100_000, threshold: THRESHOLD };
  const berth = timed(() => scheduler.planRebalance(input, OPTIONS, opts));
  const plan = berth.value;
  checkPlan(input, plan);
  const g = timed(() => greedy(input, THRESHOLD), 1);
  const w = timed(() => watcherRanked(input, THRESHOLD), 1);
  const row = (name, moves, ms, after) => ({
    stdDevBefore: round(before, 4),
    stdDevAfter: round(after, 4),
    stdDevCut: round(1 - after / before, 3),
    migrations: moves.length,
    movedGiB: round(moves.reduce((a, m) => a + m.costGiB, 0), 1),
    planningMs: round(ms, 1),
    ...(name === "berth" ? { note: plan.note } : {}),
  });
  const afterOf = (moves) => scheduler.imbalanceOf(apply(input, moves), OPTIONS, "allocation");
  const out = {
    vms: input.vms.length,
    immovable: input.vms.filter((v) => !v.movable).length,
    pinned: input.vms.filter((v) => v.request.pinnedHosts).length,
    grouped: input.vms.filter((v) => v.request.group).length,
    labelled: input.vms.filter((v) => v.request.requiredLabels || v.request.forbiddenLabels).length,
    berth: row("berth", plan.moves, berth.ms, afterOf(plan.moves)),
    greedy: row("greedy", g.value.moves, g.ms, afterOf(g.value.moves)),
    watcherRanked: row("watcherRanked", w.value.moves, w.ms, afterOf(w.value.moves)),
  };
  // Berth with the default per-host budget off (DRS's 8 is a per-pass limit, not part of the method).
  const unbounded = timed(() => scheduler.planRebalance(input, OPTIONS, { ...opts, maxMovesPerHost: 100_000 }));
  checkPlan(input, unbounded.value);
  out.berthNoPerHostBudget = row("berthNoPerHostBudget", unbounded.value.moves, unbounded.ms, afterOf(unbounded.value.moves));
  out.migrationsShareOfGreedy = round(out.berth.migrations / out.greedy.migrations, 3);
  out.migrationsShareOfWatcherRanked = round(out.berth.migrations / out.watcherRanked.migrations, 3);
  // Stability: planning again on the applied snapshot.
  const again = scheduler.planRebalance(apply(input, plan.moves), OPTIONS, opts);
  const moved = new Set(plan.moves.map((m) => m.vmId));
  out.replan = { moves: again.moves.length, movesOfMovedVms: again.moves.filter((m) => moved.has(m.vmId)).length };
  log(`balance: berth ${out.berth.migrations} moves → ${out.berth.stdDevAfter}; greedy ${out.greedy.migrations} → ${out.greedy.stdDevAfter}; watcherRanked ${out.watcherRanked.migrations} → ${out.watcherRanked.stdDevAfter}`);
  return out;
}

/** Every move checked, in order, by checkMove on the snapshot as it is then; throws on the first that fails. */
function checkPlan(input, plan) {
  let hosts = input.hosts;
  const byId = new Map(input.vms.map((v) => [v.id, v]));
  for (const m of plan.moves) {
    const vm = byId.get(m.vmId);
    const why = scheduler.checkMove(hosts, m, vm.request, OPTIONS);
    if (why !== undefined) throw new Error(`plan move ${m.vmId} ${m.from} → ${m.to} is invalid: ${why}`);
    hosts = hosts.map((h) =>
      h.id === m.from ? scheduler.withoutPlacement(h, vm.request.resources, vm.request.group?.name) : h.id === m.to ? scheduler.withPlacement(h, vm.request.resources, vm.request.group?.name) : h,
    );
  }
}

/** The input after `moves`. */
function apply(input, moves) {
  const hosts = new Map(input.hosts.map((h) => [h.id, h]));
  const where = new Map(input.vms.map((v) => [v.id, v.hostId]));
  const byId = new Map(input.vms.map((v) => [v.id, v]));
  for (const m of moves) {
    const r = byId.get(m.vmId).request;
    hosts.set(m.from, scheduler.withoutPlacement(hosts.get(m.from), r.resources, r.group?.name));
    hosts.set(m.to, scheduler.withPlacement(hosts.get(m.to), r.resources, r.group?.name));
    where.set(m.vmId, m.to);
  }
  return { hosts: input.hosts.map((h) => hosts.get(h.id)), vms: input.vms.map((v) => ({ ...v, hostId: where.get(v.id) })) };
}

// ---------------------------------------------------------------------------------------------
// The baselines (not the product). Both keep their own state and run the scheduler's filters.
// ---------------------------------------------------------------------------------------------

/** A mutable view of the snapshot for the baselines: per-host utilisation and Σu, Σu², group members, filters. */
class State {
  constructor(input) {
    this.hosts = input.hosts.map((h) => h);
    this.index = new Map(this.hosts.map((h, i) => [h.id, i]));
    this.vms = input.vms.map((v) => ({ ...v, at: this.index.get(v.hostId) }));
    this.pop = this.hosts.map((h) => h.ready && !h.cordoned);
    this.u = this.hosts.map((h) => this.util(h));
    this.groups = new Map();
    this.hosts.forEach((h, i) => {
      for (const [g, c] of Object.entries(h.groupMembers ?? {})) if (c > 0) this.members(g).set(i, c);
    });
    this.n = this.pop.filter(Boolean).length;
    this.s1 = 0;
    this.s2 = 0;
    this.u.forEach((u, i) => {
      if (!this.pop[i]) return;
      this.s1 += u;
      this.s2 += u * u;
    });
  }
  members(g) {
    let m = this.groups.get(g);
    if (!m) this.groups.set(g, (m = new Map()));
    return m;
  }
  util(h) {
    const a = scheduler.allocatable(h, OPTIONS);
    return scheduler.utilisation([h.allocated.vcpus, h.allocated.memoryMib], [a.vcpus, a.memoryMib]);
  }
  sigma(s1 = this.s1, s2 = this.s2) {
    const mean = s1 / this.n;
    return Math.sqrt(Math.max(0, s2 / this.n - mean * mean));
  }
  /** The std-dev if VM v moved from s to t. */
  sigmaIf(v, t) {
    const s = v.at;
    const r = v.request.resources;
    const us = this.util(scheduler.withoutPlacement(this.hosts[s], r));
    const ut = this.util(scheduler.withPlacement(this.hosts[t], r));
    const a = this.u[s];
    const b = this.u[t];
    return this.sigma(this.s1 - a - b + us + ut, this.s2 - a * a - b * b + us * us + ut * ut);
  }
  /** Does host t pass the scheduler's filters for VM v taken off its host? */
  feasible(v, t) {
    if (t === v.at || !this.pop[t]) return false;
    const g = v.request.group?.name;
    const groupHosts = [];
    if (g !== undefined) for (const [i, c] of this.members(g)) if (c - (i === v.at ? 1 : 0) > 0) groupHosts.push(this.hosts[i].id);
    groupHosts.sort();
    const pins = v.request.pinnedHosts;
    const ctx = { request: v.request, options: OPTIONS, groupHosts, pinned: pins && pins.length > 0 ? new Set(pins) : undefined };
    return scheduler.DEFAULT_PIPELINE.filters.every((f) => f.filter(this.hosts[t], ctx).pass);
  }
  move(v, t) {
    const s = v.at;
    const r = v.request.resources;
    const g = v.request.group?.name;
    this.hosts[s] = scheduler.withoutPlacement(this.hosts[s], r, g);
    this.hosts[t] = scheduler.withPlacement(this.hosts[t], r, g);
    for (const i of [s, t]) {
      const before = this.u[i];
      const after = this.util(this.hosts[i]);
      this.u[i] = after;
      this.s1 += after - before;
      this.s2 += after * after - before * before;
    }
    if (g !== undefined) {
      const m = this.members(g);
      const left = (m.get(s) ?? 0) - 1;
      if (left > 0) m.set(s, left);
      else m.delete(s);
      m.set(t, (m.get(t) ?? 0) + 1);
    }
    v.at = t;
  }
}

/** The baseline: each step, the single move (any movable VM, any host) that cuts the std-dev most; until below the threshold. */
function greedy(input, threshold) {
  const st = new State(input);
  const moves = [];
  const movable = st.vms.filter((v) => v.movable && st.pop[v.at]);
  while (st.sigma() >= threshold) {
    const cur = st.sigma();
    const byU = st.hosts.map((_, i) => i).filter((i) => st.pop[i]).sort((a, b) => st.u[a] - st.u[b] || a - b);
    let best;
    for (const v of movable) {
      // Identical hosts: the coldest feasible host is this VM's best target.
      for (const t of byU) {
        if (st.u[t] >= st.u[v.at]) break;
        if (!st.feasible(v, t)) continue;
        const after = st.sigmaIf(v, t);
        if (after < cur - 1e-12 && (!best || after < best.after)) best = { v, t, after };
        break;
      }
    }
    if (!best) break;
    moves.push({ vmId: best.v.id, from: st.hosts[best.v.at].id, to: st.hosts[best.t].id, costGiB: best.v.request.resources.memoryMib / 1024 });
    st.move(best.v, best.t);
  }
  return { moves };
}

/**
 * Watcher's workload_stabilization as its code does it: every (VM, host) pair whose move alone
 * would lower the std-dev, ranked once by the std-dev it would give; applied in that order when the
 * VM is still where it was, the host still passes the filters, and the move still lowers the
 * std-dev; until below the threshold.
 */
function watcherRanked(input, threshold) {
  const st = new State(input);
  const moves = [];
  const pairs = [];
  const hosts = st.hosts.map((_, i) => i).filter((i) => st.pop[i]);
  const cur = st.sigma();
  for (const v of st.vms) {
    if (!v.movable || !st.pop[v.at]) continue;
    for (const t of hosts) {
      if (t === v.at || st.u[t] >= st.u[v.at]) continue;
      const after = st.sigmaIf(v, t);
      if (after < cur) pairs.push({ v, s: v.at, t, after });
    }
  }
  pairs.sort((a, b) => a.after - b.after);
  for (const p of pairs) {
    if (st.sigma() < threshold) break;
    if (p.v.at !== p.s || !st.feasible(p.v, p.t)) continue;
    if (st.sigmaIf(p.v, p.t) >= st.sigma()) continue;
    moves.push({ vmId: p.v.id, from: st.hosts[p.s].id, to: st.hosts[p.t].id, costGiB: p.v.request.resources.memoryMib / 1024 });
    st.move(p.v, p.t);
  }
  return { moves };
}

// ---------------------------------------------------------------------------------------------
// consolidate
// ---------------------------------------------------------------------------------------------

function consolidateCase() {
  const hosts = labelled(fleet(HOSTS));
  const { vms } = workload(hosts, CONSOLIDATE_FILL, { pins: false, immovable: false });
  const { input, dropped } = place(hosts, vms, { hotShare: 1, hotVms: 1 });
  const demand = { vcpus: 0, memoryMib: 0, diskGib: 0 };
  for (const v of input.vms) for (const k of RESOURCES) demand[k] += v.request.resources[k];
  const lb = Math.max(...RESOURCES.map((k) => Math.ceil(demand[k] / ALLOCATABLE[k])));
  log(`consolidate: ${HOSTS} hosts, ${input.vms.length} VMs (${dropped} did not fit), LB ${lb}`);
  const run = (minFreeFraction) => {
    const opts = { goal: "consolidate", metric: "allocation", maxMoves: 100_000, maxMovesPerHost: 100_000, minFreeFraction };
    const t = timed(() => scheduler.planRebalance(input, OPTIONS, opts));
    checkPlan(input, t.value);
    const p = t.value;
    const inUse = apply(input, p.moves).hosts.filter((h) => h.vmCount > 0).length;
    // The bound with the free capacity kept: Σ demand + f × fleet allocatable, per resource.
    const lbF = Math.max(...RESOURCES.map((k) => Math.ceil((demand[k] + minFreeFraction * HOSTS * ALLOCATABLE[k]) / ALLOCATABLE[k] - 1e-9)));
    return {
      minFreeFraction,
      hostsInUseBefore: input.hosts.filter((h) => h.vmCount > 0).length,
      freedHosts: p.freedHosts.length,
      hostsInUseAfter: inUse,
      lowerBound: lbF,
      overLowerBound: round(inUse / lbF - 1, 4),
      migrations: p.moves.length,
      movedGiB: round(p.movedGiB, 1),
      planningMs: round(t.ms, 1),
      note: p.note,
    };
  };
  const out = {
    vms: input.vms.length,
    grouped: input.vms.filter((v) => v.request.group).length,
    labelled: input.vms.filter((v) => v.request.requiredLabels || v.request.forbiddenLabels).length,
    demandHosts: Object.fromEntries(RESOURCES.map((k) => [k, round(demand[k] / ALLOCATABLE[k], 2)])),
    packing: run(0),
    defaultFree: run(0.1),
  };
  log(`consolidate: ${out.packing.hostsInUseAfter} hosts in use for LB ${out.packing.lowerBound}; with 10 % free: ${out.defaultFree.hostsInUseAfter} for ${out.defaultFree.lowerBound}`);
  return out;
}

// ---------------------------------------------------------------------------------------------
// scale
// ---------------------------------------------------------------------------------------------

function scaleCase() {
  const hosts = labelled(fleet(SCALE_HOSTS));
  // The fill that gives about SCALE_VMS VMs (a host holds ~44 average VMs).
  const fill = Math.min(0.6, SCALE_VMS / (44 * SCALE_HOSTS));
  const { vms } = workload(hosts, fill);
  const { input, dropped } = place(hosts, vms.slice(0, SCALE_VMS), { hotShare: HOT_SHARE, hotVms: HOT_VMS });
  log(`scale: ${SCALE_HOSTS} hosts, ${input.vms.length} VMs (${dropped} did not fit)`);
  const before = scheduler.imbalanceOf(input, OPTIONS, "allocation");
  const bal = timed(() => scheduler.planRebalance(input, OPTIONS, { goal: "balance", metric: "allocation", maxMoves: 1_000_000, threshold: THRESHOLD }));
  const con = timed(() => scheduler.planRebalance(input, OPTIONS, { goal: "consolidate", metric: "allocation", maxMoves: 1_000_000 }));
  const imb = timed(() => scheduler.imbalanceOf(input, OPTIONS, "allocation"));
  const out = {
    hosts: SCALE_HOSTS,
    vms: input.vms.length,
    imbalanceOfMs: round(imb.ms, 1),
    balance: { planningMs: round(bal.ms, 1), planningCpuMs: round(bal.cpuMs, 1), runsMs: bal.all.map((x) => round(x, 1)), migrations: bal.value.moves.length, stdDevBefore: round(before, 4), stdDevAfter: round(bal.value.imbalanceAfter, 4), note: bal.value.note },
    consolidate: { planningMs: round(con.ms, 1), planningCpuMs: round(con.cpuMs, 1), runsMs: con.all.map((x) => round(x, 1)), migrations: con.value.moves.length, freedHosts: con.value.freedHosts.length, note: con.value.note },
  };
  log(`scale: balance ${out.balance.planningMs} ms (${out.balance.migrations} moves), consolidate ${out.consolidate.planningMs} ms`);
  return out;
}

// ---------------------------------------------------------------------------------------------

/**
 * Runs `fn` once untimed (warm-up), then `runs` times timed: the median wall time, every run's, the
 * median CPU time of the process over the run (user + system: on a shared machine it says how much
 * of the wall time was this work), and the last value.
 */
function timed(fn, runs = RUNS) {
  fn();
  const all = [];
  const cpu = [];
  let value;
  for (let i = 0; i < runs; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    value = fn();
    all.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  return { value, ms: median(all), cpuMs: median(cpu), all };
}

function targets(r) {
  const b = r.balance;
  const c = r.consolidate.packing;
  const s = r.scale;
  return {
    balanceStdDevCut: { target: `Berth cuts the std-dev by ≥ ${TARGETS.balanceStdDevCut * 100} %`, measured: b.berth.stdDevCut, met: b.berth.stdDevCut >= TARGETS.balanceStdDevCut },
    balanceMigrationsVsGreedy: {
      target: `Berth's migrations ≤ ${TARGETS.balanceMigrationsShareOfBaseline * 100} % of the greedy baseline's`,
      measured: b.migrationsShareOfGreedy,
      met: b.migrationsShareOfGreedy <= TARGETS.balanceMigrationsShareOfBaseline,
    },
    balanceMigrationsVsWatcherRanked: {
      target: `Berth's migrations ≤ ${TARGETS.balanceMigrationsShareOfBaseline * 100} % of the Watcher-ranked reference's`,
      measured: b.migrationsShareOfWatcherRanked,
      met: b.migrationsShareOfWatcherRanked <= TARGETS.balanceMigrationsShareOfBaseline,
    },
    consolidateVsLowerBound: { target: `hosts in use ≤ (1 + ${TARGETS.consolidateOverLowerBound}) × LB`, measured: c.overLowerBound, met: c.overLowerBound <= TARGETS.consolidateOverLowerBound },
    scaleBalancePlanMs: { target: `balance plan for ${s.hosts} hosts / ${s.vms} VMs < ${TARGETS.scalePlanMs} ms`, measured: s.balance.planningMs, met: s.balance.planningMs < TARGETS.scalePlanMs },
    scaleConsolidatePlanMs: { target: `consolidation plan for ${s.hosts} hosts / ${s.vms} VMs < ${TARGETS.scalePlanMs} ms`, measured: s.consolidate.planningMs, met: s.consolidate.planningMs < TARGETS.scalePlanMs },
  };
}

// Last, so that the classes and functions above are initialised when the body runs.
runBenchmark("rebalance", DEADLINE_MS, async () => {
  const result = {
    config: {
      hosts: HOSTS,
      scaleHosts: SCALE_HOSTS,
      scaleVms: SCALE_VMS,
      timedRunsPerPlan: RUNS,
      threshold: THRESHOLD,
      metric: "allocation",
      utilisation: "mean over vCPU and memory of allocated / allocatable (scheduler.utilisation); imbalance = population std-dev over ready, uncordoned hosts (scheduler.imbalanceOf)",
      allocatablePerHost: ALLOCATABLE,
    },
  };
  result.balance = balanceCase();
  result.consolidate = consolidateCase();
  result.scale = scaleCase();
  result.targets = targets(result);
  const missed = Object.entries(result.targets).filter(([, t]) => t.met === false).map(([k]) => k);
  log(`targets missed: ${missed.join(", ") || "none"}`);
  return result;
});
