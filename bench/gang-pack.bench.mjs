// Gang packing against the proven optimum: the instances of bench/data/gang-optimum.json (hard
// vector bin-packing gangs of 20 to 35 VMs, complementary CPU-, memory- and disk-heavy shapes on
// tight identical hosts, each with its optimum from the HiGHS MILP solver; bench/gang-fixtures.mjs
// builds them). HiGHS is not needed here.
//
//   gang       placeVms with the pack preset (the gang search at its default budget): hosts used,
//              summed over the instances, against the optimum summed (goal ≤ 1.03), and the time
//              per gang.
//   references on the same instances, the VMs arriving in the gang's order:
//              onlinePack  placeVm one at a time with the pack preset (what a gang got before),
//              firstFit    the first host (by id) where the VM fits,
//              bestFit     the host left with the least free capacity (sum of free fractions),
//              ffd         first fit decreasing (by the sum of the VM's shares of a host).
//   onlineSmall online pack on small fleets, where it is plain best fit (below 500 hosts): against
//              Berth's best fit (weights { alignedFit: 0, mostAllocated: 1 }) and the bestFit
//              reference on the instances, and on a stream of identical VMs; it must not lose.
//              And onlineSteered: the same with alignedFit's steering forced on (the fleet padded
//              with 500 empty hosts no VM may use, `forbiddenLabels`), to show what steering
//              would do on these small fleets.
//
//   node bench/gang-pack.bench.mjs      (or: node bench/run.mjs gang-pack), after `npm run build`
// Knob: BERTH_BENCH_GANG_SEARCH_MS (the gangSearchMs option; default: the scheduler's default).
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import * as scheduler from "../packages/scheduler/dist/index.js";
import { envInt, log, percentile, round, runBenchmark } from "./lib/harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const DATA = JSON.parse(readFileSync(join(here, "data", "gang-optimum.json"), "utf8"));
const KEYS = ["vcpus", "memoryMib", "diskGib"];
const SEARCH_MS = process.env.BERTH_BENCH_GANG_SEARCH_MS ? envInt("BERTH_BENCH_GANG_SEARCH_MS", 200) : undefined;
const GOAL = 1.03;
/** Identical-VM streams for the small-fleet check: [hosts, VMs, resources]. */
const IDENTICAL = [
  [20, 150, { vcpus: 6, memoryMib: 24576, diskGib: 100 }],
  [50, 300, { vcpus: 4, memoryMib: 40960, diskGib: 200 }],
  [200, 1000, { vcpus: 10, memoryMib: 30720, diskGib: 150 }],
];

const base = { ...DATA.scheduler };
const pack = scheduler.resolveSchedulerOptions({ ...base, preset: "pack", ...(SEARCH_MS === undefined ? {} : { gangSearchMs: SEARCH_MS }) });
const bestFitBerth = scheduler.resolveSchedulerOptions({ ...base, preset: "pack", weights: { alignedFit: 0, mostAllocated: 1 } });
const CAP = DATA.host.capacity;

function fleet(count) {
  const width = String(count - 1).length;
  return Array.from({ length: count }, (_, i) => ({
    id: `h-${String(i).padStart(width, "0")}`,
    capacity: { ...CAP },
    allocated: { vcpus: 0, memoryMib: 0, diskGib: 0 },
    vmCount: 0,
    ready: true,
    cordoned: false,
    labels: {},
  }));
}

/** Hosts placeVm uses, the VMs arriving one at a time in the given order. */
function online(count, vms, options) {
  const hosts = fleet(count);
  const at = new Map(hosts.map((h, i) => [h.id, i]));
  for (const r of vms) {
    const d = scheduler.placeVm(hosts, r, options);
    if (!d.placed) return { hosts: null, unplaced: r.name };
    const i = at.get(d.hostId);
    hosts[i] = scheduler.withPlacement(hosts[i], r.resources);
  }
  return { hosts: hosts.filter((h) => h.vmCount > 0).length };
}

/** Hosts that steering never fills but counts: 500 empty, usable, labelled pad=yes (every VM forbids the label). */
const PAD = 500;

/** Online pack with alignedFit's steering forced on: the fleet padded (PAD), the VMs kept off the padding. */
function onlineSteered(count, vms, options) {
  const hosts = [...fleet(count), ...Array.from({ length: PAD }, (_, i) => ({ ...fleet(1)[0], id: `pad-${String(i).padStart(3, "0")}`, labels: { pad: "yes" } }))];
  const at = new Map(hosts.map((h, i) => [h.id, i]));
  for (const r of vms) {
    const d = scheduler.placeVm(hosts, { ...r, forbiddenLabels: { pad: "*" } }, options);
    if (!d.placed) return { hosts: null, unplaced: r.name };
    const i = at.get(d.hostId);
    hosts[i] = scheduler.withPlacement(hosts[i], r.resources);
  }
  return { hosts: hosts.filter((h) => h.vmCount > 0 && !h.labels.pad).length };
}

/** A plain reference: hosts as used-vectors; `choose(bins, r)` returns an index or -1 (then a host is opened). */
function reference(vms, choose, count) {
  const bins = [];
  for (const { resources: r } of vms) {
    let i = choose(bins, r);
    if (i < 0) {
      if (bins.length >= count) return null;
      bins.push({ vcpus: 0, memoryMib: 0, diskGib: 0 });
      i = bins.length - 1;
    }
    for (const k of KEYS) bins[i][k] += r[k];
  }
  return bins.length;
}
const fits = (b, r) => KEYS.every((k) => b[k] + r[k] <= CAP[k]);
const firstFit = (bins, r) => bins.findIndex((b) => fits(b, r));
function bestFit(bins, r) {
  let best = -1;
  let bestSlack = Infinity;
  bins.forEach((b, i) => {
    if (!fits(b, r)) return;
    const slack = KEYS.reduce((s, k) => s + (CAP[k] - b[k] - r[k]) / CAP[k], 0);
    if (slack < bestSlack) {
      bestSlack = slack;
      best = i;
    }
  });
  return best;
}
const share = (r) => KEYS.reduce((s, k) => s + r[k] / CAP[k], 0);
const decreasing = (vms) => vms.map((v, i) => ({ v, i })).sort((a, b) => share(b.v.resources) - share(a.v.resources) || a.i - b.i).map((x) => x.v);

function gang(count, vms) {
  const hosts = fleet(count);
  const t0 = performance.now();
  const d = scheduler.placeVms(hosts, vms, pack);
  const ms = performance.now() - t0;
  if (!d.placed) return { hosts: null, ms, unplaced: d.failed };
  // Check the answer independently: every VM within capacity (the property tests check the rest).
  const used = new Map();
  d.placements.forEach((p, i) => {
    const u = used.get(p.hostId) ?? { vcpus: 0, memoryMib: 0, diskGib: 0 };
    for (const k of KEYS) u[k] += vms[i].resources[k];
    used.set(p.hostId, u);
  });
  for (const [id, u] of used) if (!fits(u, { vcpus: 0, memoryMib: 0, diskGib: 0 })) throw new Error(`gang over capacity on ${id}`);
  return { hosts: used.size, ms };
}

runBenchmark("gang-pack", 300_000, async () => {
  const rows = [];
  const sum = { optimum: 0, gang: 0, onlinePack: 0, onlineSteered: 0, firstFit: 0, bestFit: 0, ffd: 0 };
  const times = [];
  // Warm up the JIT on the first instance (not counted).
  gang(DATA.instances[0].ffdHosts + 4, DATA.instances[0].vms);
  for (const inst of DATA.instances) {
    const count = inst.ffdHosts + 4;
    const g = gang(count, inst.vms);
    const row = {
      name: inst.name,
      vms: inst.vms.length,
      lowerBound: inst.lowerBound,
      optimum: inst.optimum,
      gang: g.hosts,
      gangMs: round(g.ms, 1),
      onlinePack: online(count, inst.vms, pack).hosts,
      onlineBestFitBerth: online(count, inst.vms, bestFitBerth).hosts,
      onlineSteered: onlineSteered(count, inst.vms, pack).hosts,
      firstFit: reference(inst.vms, firstFit, count),
      bestFit: reference(inst.vms, bestFit, count),
      ffd: reference(decreasing(inst.vms), firstFit, count),
    };
    rows.push(row);
    times.push(g.ms);
    for (const k of Object.keys(sum)) sum[k] += row[k] ?? NaN;
    log(`${inst.name}: optimum ${row.optimum}, gang ${row.gang} (${row.gangMs} ms), online pack ${row.onlinePack}, steered ${row.onlineSteered}, FF ${row.firstFit}, BF ${row.bestFit}, FFD ${row.ffd}`);
  }
  const ratio = Object.fromEntries(Object.entries(sum).map(([k, v]) => [k, round(v / sum.optimum, 3)]));

  const identical = IDENTICAL.map(([count, n, resources]) => {
    const vms = Array.from({ length: n }, (_, i) => ({ name: `vm-${i}`, resources }));
    return {
      hosts: count,
      vms: n,
      resources,
      onlinePack: online(count, vms, pack).hosts,
      onlineBestFitBerth: online(count, vms, bestFitBerth).hosts,
      onlineSteered: onlineSteered(count, vms, pack).hosts,
      bestFitReference: reference(vms, bestFit, count),
    };
  });
  const packNoWorse = rows.every((r) => r.onlinePack !== null && r.onlinePack <= r.onlineBestFitBerth && r.onlinePack <= r.bestFit);
  const identicalNoWorse = identical.every((r) => r.onlinePack <= r.onlineBestFitBerth && r.onlinePack <= r.bestFitReference);

  return {
    config: {
      instances: DATA.instances.length,
      fixtures: "bench/data/gang-optimum.json",
      fixtureSeed: DATA.seed,
      solver: DATA.solver,
      host: DATA.host,
      scheduler: DATA.scheduler,
      gangSearchMs: pack.gangSearchMs ?? scheduler.DEFAULT_GANG_SEARCH_MS,
      fleetSize: "first-fit-decreasing hosts + 4, identical",
    },
    instances: rows,
    total: sum,
    overOptimum: ratio,
    gangMs: { p50: round(percentile(times, 50), 1), max: round(Math.max(...times), 1) },
    onlineSmall: { instancesPackNoWorseThanBestFit: packNoWorse, identical },
    goals: {
      gangOverOptimum: { goal: `≤ ${GOAL}`, measured: ratio.gang, met: ratio.gang <= GOAL },
      gangNoWorseThanOnlinePack: { measured: rows.filter((r) => r.gang <= r.onlinePack).length + ` of ${rows.length}`, met: rows.every((r) => r.gang <= r.onlinePack) },
      onlinePackNoWorseThanBestFit: { met: packNoWorse && identicalNoWorse },
    },
  };
});
