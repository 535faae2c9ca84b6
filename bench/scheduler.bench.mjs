// The scheduler alone, in process, on a synthetic fleet (bench/lib/scheduler-workload.mjs):
// identical hosts (64 cores, 512 GiB, 4 TiB; CPU ratio 2.0, 8 GiB memory reserved) and VMs
// following the Azure size shares, from a fixed seed.
//
//   throughput  for H = 1,000, 5,000, 10,000 hosts: VMs arrive one at a time (place one, apply the
//               decision to the chosen host, next); placements/s and p50/p99 per-placement latency
//               for Berth spread, Berth pack, Berth spread with 30 % of the VMs in anti-affinity
//               groups of 5, and two plain full-scan reference schedulers (least-allocated and
//               Nomad-style binpack; bench/lib/reference-schedulers.mjs) on the same VMs.
//               Then the same three Berth cases through the path the controller runs for CreateVm
//               (controller*: Placer.create on its ClusterState over the in-memory store, with
//               BERTH_BENCH_SCHED_CONTROLLER_CONCURRENCY creates in flight, default 16;
//               bench/lib/controller-path.mjs): validation, the incremental engine kept current
//               from the cache, reservation, commit, cache catch-up. No gRPC, no etcd (those are
//               e2e-scale's).
//   quality     a fleet filled until the total demand needs 0.9 × H hosts by the lower bound
//               LB = max over resources ⌈Σ demand / allocatable⌉; hosts used by Berth pack and by
//               each reference, and hosts used / LB.
//   qualitySmall the same fill on small fleets (H = 20, 50, 100, 200 by default): hosts used by
//               Berth pack, by Berth's plain best fit (weights { alignedFit: 0, mostAllocated: 1 })
//               and by the Nomad binpack reference; pack must use no more than either.
//
// Which scheduler API is measured is decided at start and recorded (`api`): `PlacementEngine` when
// the package exports it (and it passes a small probe), else `placeVm` + `withPlacement`; pack
// through `resolveSchedulerOptions({ preset: "pack" })`, else `weights: { mostAllocated: 1 }`;
// each choice is checked by a two-host probe, so an option the build silently ignores is noticed.
//
//   node bench/scheduler.bench.mjs      (or: node bench/run.mjs scheduler), after `npm run build`
// Knobs: BERTH_BENCH_SCHED_HOSTS (host counts, default "1000,5000,10000"), BERTH_BENCH_SCHED_PLACEMENTS
// (per throughput case, default 20000), BERTH_BENCH_SCHED_CASE_MS (time bound per throughput case,
// default 5000), BERTH_BENCH_SCHED_QUALITY_HOSTS (default 1000), BERTH_BENCH_SCHED_QUALITY_MS (time
// bound per quality run, default 75000), BERTH_BENCH_SCHED_QUALITY_SMALL_HOSTS (default "20,50,100,200").
import { performance } from "node:perf_hooks";
import * as scheduler from "../packages/scheduler/dist/index.js";
import { envInt, log, percentile, round, runBenchmark } from "./lib/harness.mjs";
import { controllerPath } from "./lib/controller-path.mjs";
import { REFERENCES } from "./lib/reference-schedulers.mjs";
import {
  ALLOCATABLE,
  ALLOCATION_RATIO,
  bindingResource,
  fillStream,
  fleet,
  GROUP_SIZE,
  GROUPED_SHARE,
  HOST_CAPACITY,
  lowerBound,
  MEMORY_GIB_PER_VCPU_SHARES,
  RESERVED,
  SEED,
  VCPU_SHARES,
  vmStream,
} from "./lib/scheduler-workload.mjs";

const HOST_COUNTS = hostCounts(process.env.BERTH_BENCH_SCHED_HOSTS ?? "1000,5000,10000");
const PLACEMENTS = envInt("BERTH_BENCH_SCHED_PLACEMENTS", 20_000);
const CASE_MS = envInt("BERTH_BENCH_SCHED_CASE_MS", 5_000);
const QUALITY_HOSTS = envInt("BERTH_BENCH_SCHED_QUALITY_HOSTS", 1_000);
const QUALITY_MS = envInt("BERTH_BENCH_SCHED_QUALITY_MS", 75_000);
const QUALITY_FILL = 0.9;
const QUALITY_SMALL_HOSTS = hostCounts(process.env.BERTH_BENCH_SCHED_QUALITY_SMALL_HOSTS ?? "20,50,100,200");
/** Creates in flight on the controller path (as concurrent CreateVm calls would be). */
const CONTROLLER_CONCURRENCY = envInt("BERTH_BENCH_SCHED_CONTROLLER_CONCURRENCY", 16);
/** Untimed placements at the start of each case (JIT warm-up); they stay placed. */
const WARMUP = 200;
const WARMUP_MAX_MS = 1_000;
const DEADLINE_MS = 330_000;
/** A case is skipped, not started, when less than this remains of the overall deadline. */
const MARGIN_MS = 30_000;

const TARGETS = {
  controllerSpreadPerSAt5000: 10_000,
  controllerPackPerSAt5000: 10_000,
  controllerGroupsPerSAt5000: 3_000,
  spreadPerSAt5000: 10_000,
  packPerSAt5000: 10_000,
  groupsPerSAt5000: 3_000,
  /** "Cost growing clearly slower than the host count": at most half of linear growth. */
  costGrowthMaxShareOfLinear: 0.5,
  packHostsPerLbMax: 1.03,
};

const BASE = { allocationRatio: { ...ALLOCATION_RATIO }, reserved: { ...RESERVED } };

runBenchmark("scheduler", DEADLINE_MS, async (ctx) => {
  const api = chooseApi();
  log(`api: ${JSON.stringify(api.summary)}`);
  const result = {
    config: {
      hostCounts: HOST_COUNTS,
      placementsPerCase: PLACEMENTS,
      caseTimeBoundMs: CASE_MS,
      warmupPlacements: WARMUP,
      host: { capacity: HOST_CAPACITY, allocationRatio: ALLOCATION_RATIO, reserved: RESERVED, allocatable: ALLOCATABLE },
      vmMix: {
        vcpuShares: Object.fromEntries(VCPU_SHARES),
        memoryGibPerVcpuShares: Object.fromEntries(MEMORY_GIB_PER_VCPU_SHARES),
        diskGibPerVcpu: 32,
        groups: { share: GROUPED_SHARE, size: GROUP_SIZE, policy: "anti-affinity" },
      },
      seed: SEED,
      quality: { hosts: QUALITY_HOSTS, fill: QUALITY_FILL, timeBoundMs: QUALITY_MS },
      qualitySmall: { hosts: QUALITY_SMALL_HOSTS, fill: QUALITY_FILL },
    },
    api: api.summary,
    throughput: {},
  };

  const plain = vmStream(PLACEMENTS);
  const grouped = vmStream(PLACEMENTS, { groups: true });
  for (const hosts of HOST_COUNTS) {
    const row = {};
    const run = (name, make, vms) => {
      if (ctx.remainingMs() < MARGIN_MS) {
        row[name] = { skipped: "overall time budget used up" };
        log(`H=${hosts} ${name}: skipped (overall time budget)`);
        return;
      }
      row[name] = throughputCase(`H=${hosts} ${name}`, make, vms);
    };
    if (api.spread) run("berthSpread", () => api.make(hosts, api.spread), plain);
    else row.berthSpread = { skipped: `Berth not measurable in this build (${api.summary.spread})` };
    if (api.pack) run("berthPack", () => api.make(hosts, api.pack), plain);
    else row.berthPack = { skipped: `no pack in this build (${api.summary.pack})` };
    if (api.groups && api.spread) run("berthSpreadAntiAffinity", () => api.make(hosts, api.spread), grouped);
    else row.berthSpreadAntiAffinity = { skipped: `no anti-affinity groups in this build (${api.summary.groups})` };
    for (const [name, Ref] of Object.entries(REFERENCES)) run(`reference_${name}`, () => referenceAdapter(new Ref(hosts, ALLOCATABLE)), plain);
    // The path the controller runs for CreateVm (bench/lib/controller-path.mjs).
    for (const [name, preset, vms] of [["controllerSpread", "spread", plain], ["controllerPack", "pack", plain], ["controllerSpreadAntiAffinity", "spread", grouped]]) {
      if (ctx.remainingMs() < MARGIN_MS) {
        row[name] = { skipped: "overall time budget used up" };
        continue;
      }
      row[name] = await controllerCase(`H=${hosts} ${name}`, hosts, preset, vms);
    }
    row.ratios = ratios(row);
    result.throughput[`hosts${hosts}`] = row;
  }
  result.costGrowth = costGrowth(result.throughput);
  result.fillCost = fillCost(api, ctx);

  result.quality = ctx.remainingMs() < MARGIN_MS + 10_000 ? { skipped: "overall time budget used up" } : qualityCase(api, ctx);
  result.qualitySmall = qualitySmallCase(api, ctx);
  result.targets = targets(result);
  const missed = Object.entries(result.targets).filter(([, t]) => t.met === false).map(([k]) => k);
  const unmeasured = Object.entries(result.targets).filter(([, t]) => t.met === null).map(([k]) => k);
  log(`targets missed: ${missed.join(", ") || "none"}; not measured: ${unmeasured.join(", ") || "none"}`);
  return result;
});

// ---------------------------------------------------------------------------------------------
// The API under test

/** Decides, once, how Berth is driven; every choice is probed on two hosts, not assumed. */
function chooseApi() {
  const { placeVm, resolveSchedulerOptions, withPlacement, PlacementEngine } = scheduler;
  const summary = {};
  const presetsWork = (() => {
    try {
      const o = resolveSchedulerOptions({ ...BASE, preset: "pack" });
      return probePack(o, placeVmAdapter);
    } catch {
      return false;
    }
  })();
  // spread
  let spread;
  const spreadTries = presetsWork
    ? [[{ ...BASE, preset: "spread" }, 'resolveSchedulerOptions({ preset: "spread", allocationRatio, reserved })']]
    : [];
  spreadTries.push([{ ...BASE }, "resolveSchedulerOptions({ allocationRatio, reserved }) (default weights: spread)"]);
  const spreadErrors = [];
  for (const [o, how] of spreadTries) {
    try {
      const resolved = resolveSchedulerOptions(o);
      if (!probeSpread(resolved, placeVmAdapter)) throw new Error("spread probe chose the wrong host");
      spread = resolved;
      summary.spread = how + (presetsWork ? "" : " (no presets in this build)");
      break;
    } catch (e) {
      spreadErrors.push(`${how}: ${firstLine(e)}`);
    }
  }
  if (!spread) summary.spread = `unavailable: ${spreadErrors.join("; ")}`;
  // pack
  let pack;
  if (presetsWork) {
    pack = resolveSchedulerOptions({ ...BASE, preset: "pack" });
    summary.pack = 'resolveSchedulerOptions({ preset: "pack", allocationRatio, reserved })';
  } else {
    try {
      const o = resolveSchedulerOptions({ ...BASE, weights: { mostAllocated: 1 } });
      if (probePack(o, placeVmAdapter)) {
        pack = o;
        summary.pack = "resolveSchedulerOptions({ weights: { mostAllocated: 1 }, allocationRatio, reserved }) (no presets in this build)";
      } else summary.pack = "unavailable: weights { mostAllocated: 1 } accepted but does not pack (probe)";
    } catch (e) {
      summary.pack = `unavailable: no preset "pack" and weights { mostAllocated: 1 } refused (${firstLine(e)})`;
    }
  }

  // placement API: PlacementEngine when exported and it passes the probes, else placeVm
  let make = placeVmAdapter;
  if (!spread) return { make, spread, pack: undefined, groups: false, summary: { ...summary, placement: "none: the build's scheduler could not be resolved", pack: "not tried", groups: "not tried" } };
  summary.placement = "placeVm + withPlacement (snapshot array updated after each placement)";
  if (typeof PlacementEngine === "function") {
    try {
      if (!probeSpread(spread, engineAdapter)) throw new Error("spread probe chose the wrong host");
      if (pack && !probePack(pack, engineAdapter)) throw new Error("pack probe chose the wrong host");
      make = engineAdapter;
      summary.placement = "PlacementEngine (place + commit)";
    } catch (e) {
      summary.placement = `placeVm + withPlacement (PlacementEngine exported but failed its probe: ${firstLine(e)})`;
    }
  }
  let groups = false;
  try {
    groups = probeGroups(spread, make);
    summary.groups = groups ? "anti-affinity honoured (probe)" : "not supported: request.group ignored (probe)";
  } catch (e) {
    summary.groups = `not supported: ${firstLine(e)}`;
  }
  return { make, spread, pack, groups, summary };

  /** Drives placeVm over an array of snapshots, applying each decision with withPlacement. */
  function placeVmAdapter(count, options, hostList = fleet(count)) {
    const hosts = hostList.map((h) => ({ ...h }));
    const index = new Map(hosts.map((h, i) => [h.id, i]));
    return {
      place(req) {
        const d = placeVm(hosts, req, options);
        if (!d.placed) return -1;
        const i = index.get(d.hostId);
        const g = req.group?.name;
        let h = withPlacement(hosts[i], req.resources, g);
        // Builds whose withPlacement takes no group: count the member here.
        const before = hosts[i].groupMembers?.[g] ?? 0;
        if (g !== undefined && (h.groupMembers?.[g] ?? 0) === before) {
          h = { ...h, groupMembers: { ...h.groupMembers, [g]: before + 1 } };
        }
        hosts[i] = h;
        return i;
      },
    };
  }

  function engineAdapter(count, options, hostList = fleet(count)) {
    const engine = new PlacementEngine(hostList, options);
    const index = new Map(hostList.map((h, i) => [h.id, i]));
    return {
      place(req) {
        const d = engine.place(req);
        if (!d.placed) return -1;
        engine.commit(d.hostId, req);
        return index.get(d.hostId);
      },
    };
  }
}

/** Two hosts, b half full: pack must choose b. */
function probePack(options, make) {
  const [a, b] = fleet(2);
  b.allocated = { vcpus: 64, memoryMib: 256 * 1024, diskGib: 2048 };
  b.vmCount = 10;
  return make(2, options, [a, b]).place({ name: "probe", resources: { vcpus: 1, memoryMib: 2048, diskGib: 32 } }) === 1;
}

/** Two hosts, a half full: spread must choose b. */
function probeSpread(options, make) {
  const [a, b] = fleet(2);
  a.allocated = { vcpus: 64, memoryMib: 256 * 1024, diskGib: 2048 };
  a.vmCount = 10;
  return make(2, options, [a, b]).place({ name: "probe", resources: { vcpus: 1, memoryMib: 2048, diskGib: 32 } }) === 1;
}

/** Two empty hosts, a already holds a member of group g: an anti-affinity member of g must go to b. */
function probeGroups(options, make) {
  const [a, b] = fleet(2);
  a.groupMembers = { g: 1 };
  const group = { name: "g", policy: "anti-affinity" };
  return make(2, options, [a, b]).place({ name: "probe", resources: { vcpus: 1, memoryMib: 2048, diskGib: 32 }, group }) === 1;
}

function referenceAdapter(ref) {
  return {
    ref,
    place(req) {
      const i = ref.place(req.resources);
      if (i >= 0) ref.commit(i, req.resources);
      return i;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Cases

/**
 * Places `vms` one after the other on a fresh fleet, each placement timed (place + apply), until
 * all are placed, one does not fit (fleet full), or CASE_MS of timed work has passed.
 */
function throughputCase(label, make, vms, { continueOnUnplaced = false } = {}) {
  const sched = make();
  const latencies = new Float64Array(vms.length);
  let timed = 0;
  let timedMs = 0;
  let warm = 0;
  let unplaced = 0;
  let placed = 0;
  let violations = 0;
  const groupHosts = new Map();
  const used = new Set();
  let stop;
  const warmStart = performance.now();
  let i = 0;
  for (; i < vms.length; i++) {
    const req = vms[i];
    const t0 = performance.now();
    const h = sched.place(req);
    const dt = performance.now() - t0;
    if (h < 0) {
      unplaced++;
      if (!continueOnUnplaced) {
        stop = "a VM did not fit: fleet full";
        break;
      }
    } else {
      placed++;
      used.add(h);
    }
    if (h >= 0 && req.group) {
      let set = groupHosts.get(req.group.name);
      if (!set) groupHosts.set(req.group.name, (set = new Set()));
      if (set.has(h)) violations++;
      set.add(h);
    }
    if (warm < WARMUP && t0 - warmStart < WARMUP_MAX_MS) {
      warm++;
      continue;
    }
    latencies[timed++] = dt;
    timedMs += dt;
    if (timedMs > CASE_MS) {
      stop = `time bound of ${CASE_MS} ms reached`;
      i++;
      break;
    }
  }
  const lat = latencies.subarray(0, timed);
  const out = {
    placed,
    ...(continueOnUnplaced ? { unplaced } : {}),
    timedPlacements: timed,
    truncated: i < vms.length,
    ...(stop ? { stoppedBecause: stop } : {}),
    placementsPerS: round(timed / (timedMs / 1000), 0),
    meanUs: round((timedMs * 1000) / timed, 1),
    p50Us: round(percentile(lat, 50) * 1000, 1),
    p99Us: round(percentile(lat, 99) * 1000, 1),
    hostsUsed: used.size,
    ...(groupHosts.size > 0 ? { groups: groupHosts.size, antiAffinityViolations: violations } : {}),
  };
  log(`${label}: ${out.placementsPerS}/s, p50 ${out.p50Us} µs, p99 ${out.p99Us} µs (${timed} timed${stop ? `; ${stop}` : ""})`);
  return out;
}

/**
 * Places `vms` through the controller's create path (Placer.create on the in-memory store) with
 * CONTROLLER_CONCURRENCY creates in flight, until all are placed, one finds no host, or CASE_MS
 * of wall time has passed after the warm-up. placements/s is placed VMs over wall time; the
 * latency is each create's, from call to answer (with the others in flight).
 */
async function controllerCase(label, hosts, preset, vms) {
  const scheduler = {
    preset,
    allocationRatio: { vcpus: ALLOCATION_RATIO.vcpus, memory: ALLOCATION_RATIO.memoryMib, disk: ALLOCATION_RATIO.diskGib },
    reserved: { ...RESERVED },
  };
  const path = await controllerPath(fleet(hosts), scheduler);
  await path.prepareGroups(vms);
  const latencies = [];
  const groupHosts = new Map();
  const used = new Set();
  let violations = 0;
  let next = 0;
  let placed = 0;
  let stop;
  let timedStart;
  let timedPlaced = 0;
  const worker = async () => {
    while (stop === undefined && next < vms.length) {
      const req = vms[next++];
      const t0 = performance.now();
      const h = await path.place(req);
      const dt = performance.now() - t0;
      if (h < 0) {
        stop = "a VM did not fit: fleet full";
        return;
      }
      placed++;
      used.add(h);
      if (req.group) {
        let set = groupHosts.get(req.group.name);
        if (!set) groupHosts.set(req.group.name, (set = new Set()));
        if (set.has(h)) violations++;
        set.add(h);
      }
      if (placed <= WARMUP) {
        if (placed === WARMUP) timedStart = performance.now();
        continue;
      }
      latencies.push(dt);
      timedPlaced++;
      if (performance.now() - timedStart > CASE_MS) stop ??= `time bound of ${CASE_MS} ms reached`;
    }
  };
  await Promise.all(Array.from({ length: CONTROLLER_CONCURRENCY }, worker));
  const wallMs = performance.now() - (timedStart ?? performance.now());
  const lat = Float64Array.from(latencies);
  const view = path.placer.view;
  await path.close();
  const out = {
    placed,
    timedPlacements: timedPlaced,
    concurrency: CONTROLLER_CONCURRENCY,
    truncated: next < vms.length,
    ...(stop ? { stoppedBecause: stop } : {}),
    placementsPerS: timedPlaced > 0 ? round(timedPlaced / (wallMs / 1000), 0) : undefined,
    p50Us: round(percentile(lat, 50) * 1000, 1),
    p99Us: round(percentile(lat, 99) * 1000, 1),
    hostsUsed: used.size,
    viewRebuilds: view.rebuilds,
    viewRepairs: view.drift,
    ...(groupHosts.size > 0 ? { groups: groupHosts.size, antiAffinityViolations: violations } : {}),
  };
  log(`${label}: ${out.placementsPerS}/s, p50 ${out.p50Us} µs, p99 ${out.p99Us} µs (${timedPlaced} timed, ${CONTROLLER_CONCURRENCY} in flight${stop ? `; ${stop}` : ""})`);
  return out;
}

/** Berth's placements/s over each reference's, measured in this run. */
function ratios(row) {
  const out = {};
  for (const berth of ["berthSpread", "berthPack", "berthSpreadAntiAffinity", "controllerSpread", "controllerPack", "controllerSpreadAntiAffinity"]) {
    for (const ref of Object.keys(REFERENCES)) {
      const a = row[berth]?.placementsPerS;
      const b = row[`reference_${ref}`]?.placementsPerS;
      if (a && b) out[`${berth}_over_${ref}_placementsPerS`] = round(a / b, 3);
    }
  }
  return out;
}

/** Mean per-placement cost at the largest fleet over the smallest, per scheduler. */
function costGrowth(throughput) {
  const lo = Math.min(...HOST_COUNTS);
  const hi = Math.max(...HOST_COUNTS);
  if (lo === hi) return { skipped: "only one host count measured" };
  const out = { fromHosts: lo, toHosts: hi, hostRatio: hi / lo };
  for (const name of Object.keys(throughput[`hosts${lo}`])) {
    const a = throughput[`hosts${lo}`][name]?.meanUs;
    const b = throughput[`hosts${hi}`][name]?.meanUs;
    if (a && b) out[name] = round(b / a, 2);
  }
  return out;
}

/**
 * The same 20,000 VMs fill 1,000 hosts to about 45 % but 10,000 hosts to about 4.5 %, so the
 * throughput cases compare fleets at different fill levels. Here each of the smallest and largest
 * fleet is filled to 90 % by the lower bound (the quality case's stream), Berth only, each
 * placement timed as in the throughput cases (same time bound), and the mean cost compared.
 */
function fillCost(api, ctx) {
  const lo = Math.min(...HOST_COUNTS);
  const hi = Math.max(...HOST_COUNTS);
  if (lo === hi) return { skipped: "only one host count measured" };
  if (!api.spread) return { skipped: `Berth not measurable in this build (${api.summary.spread})` };
  const out = { fill: QUALITY_FILL };
  for (const hosts of [lo, hi]) {
    const { vms, demand } = fillStream(hosts, QUALITY_FILL);
    const row = { vms: vms.length, lowerBound: lowerBound(demand) };
    for (const [name, options] of [["berthSpread", api.spread], ["berthPack", api.pack]]) {
      if (!options) row[name] = { skipped: "not available in this build" };
      else if (ctx.remainingMs() < MARGIN_MS) row[name] = { skipped: "overall time budget used up" };
      else row[name] = throughputCase(`fill to ${QUALITY_FILL}, H=${hosts} ${name}`, () => api.make(hosts, options), vms, { continueOnUnplaced: true });
    }
    out[`hosts${hosts}`] = row;
  }
  out.costRatio = {};
  for (const name of ["berthSpread", "berthPack"]) {
    const a = out[`hosts${lo}`][name];
    const b = out[`hosts${hi}`][name];
    // Only comparable when both went the whole way (a truncated run saw only the emptier part).
    // Attempts that found no host are timed too (they are part of the cost); `unplaced` counts them.
    if (a?.meanUs && b?.meanUs && !a.truncated && !b.truncated) out.costRatio[name] = round(b.meanUs / a.meanUs, 2);
  }
  return out;
}

/** Fill to 90 % of the fleet by the lower bound; hosts used by Berth pack and the references. */
function qualityCase(api, ctx) {
  const { vms, demand } = fillStream(QUALITY_HOSTS, QUALITY_FILL);
  const lb = lowerBound(demand);
  const out = {
    hosts: QUALITY_HOSTS,
    vms: vms.length,
    demand,
    bindingResource: bindingResource(demand),
    demandInHostsPerResource: Object.fromEntries(Object.keys(demand).map((r) => [r, round(demand[r] / ALLOCATABLE[r], 2)])),
    lowerBound: lb,
  };
  const one = (label, sched) => {
    if (ctx.remainingMs() < MARGIN_MS) return { skipped: "overall time budget used up" };
    const used = new Set();
    let unplaced = 0;
    const t0 = performance.now();
    let n = 0;
    for (; n < vms.length; n++) {
      const h = sched.place(vms[n]);
      if (h < 0) unplaced++;
      else used.add(h);
      if ((n & 255) === 0 && performance.now() - t0 > QUALITY_MS) break;
    }
    const seconds = (performance.now() - t0) / 1000;
    const complete = n >= vms.length;
    const r = {
      complete,
      placed: n - unplaced,
      unplaced,
      hostsUsed: used.size,
      ...(complete ? { hostsPerLb: round(used.size / lb, 4) } : { stoppedBecause: `time bound of ${QUALITY_MS} ms reached after ${n} VMs` }),
      seconds: round(seconds, 2),
      placementsPerS: round(n / seconds, 0),
    };
    log(`quality ${label}: ${r.hostsUsed} hosts used for LB ${lb}${complete ? ` (${r.hostsPerLb} × LB)` : " (incomplete)"}, ${unplaced} unplaced, ${r.seconds} s`);
    return r;
  };
  log(`quality: ${vms.length} VMs on ${QUALITY_HOSTS} hosts, LB ${lb} (binding: ${out.bindingResource})`);
  out.berthPack = api.pack ? one("berthPack", api.make(QUALITY_HOSTS, api.pack)) : { skipped: `no pack in this build (${api.summary.pack})` };
  for (const [name, Ref] of Object.entries(REFERENCES)) {
    out[`reference_${name}`] = one(`reference_${name}`, referenceAdapter(new Ref(QUALITY_HOSTS, ALLOCATABLE)));
  }
  if (out.berthPack.complete) {
    for (const name of Object.keys(REFERENCES)) {
      const ref = out[`reference_${name}`];
      if (ref.complete) out[`berthPack_over_${name}_hostsUsed`] = round(out.berthPack.hostsUsed / ref.hostsUsed, 4);
    }
  }
  return out;
}

/**
 * Small fleets (lab clusters), each filled to QUALITY_FILL × LB with the quality case's stream:
 * hosts used by Berth pack, Berth's plain best fit and the Nomad binpack reference.
 */
function qualitySmallCase(api, ctx) {
  if (!api.pack) return { skipped: `no pack in this build (${api.summary.pack})` };
  let bestFit;
  try {
    bestFit = scheduler.resolveSchedulerOptions({ ...BASE, preset: "pack", weights: { alignedFit: 0, mostAllocated: 1 } });
  } catch (e) {
    bestFit = undefined;
    log(`qualitySmall: no plain best fit in this build (${firstLine(e)})`);
  }
  const out = { fill: QUALITY_FILL };
  const hostsUsed = (sched, vms) => {
    const used = new Set();
    let unplaced = 0;
    for (const vm of vms) {
      const h = sched.place(vm);
      if (h < 0) unplaced++;
      else used.add(h);
    }
    return unplaced === 0 ? used.size : `${used.size} (${unplaced} unplaced)`;
  };
  for (const hosts of QUALITY_SMALL_HOSTS) {
    if (ctx.remainingMs() < 5_000) {
      out[`hosts${hosts}`] = { skipped: "overall time budget used up" };
      continue;
    }
    const { vms, demand } = fillStream(hosts, QUALITY_FILL);
    const lb = lowerBound(demand);
    const row = { vms: vms.length, lowerBound: lb };
    row.berthPack = hostsUsed(api.make(hosts, api.pack), vms);
    row.berthBestFit = bestFit ? hostsUsed(api.make(hosts, bestFit), vms) : null;
    row.reference_nomadBinpack = hostsUsed(referenceAdapter(new REFERENCES.nomadBinpack(hosts, ALLOCATABLE)), vms);
    if (typeof row.berthPack === "number") row.berthPackPerLb = round(row.berthPack / lb, 4);
    log(`qualitySmall H=${hosts}: LB ${lb}; pack ${row.berthPack}, best fit ${row.berthBestFit}, Nomad binpack ${row.reference_nomadBinpack}`);
    out[`hosts${hosts}`] = row;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Targets: met true / false, or null when not measured (with why)

function targets(result) {
  const at5000 = result.throughput.hosts5000;
  const rate = (name, min, what) => {
    const c = at5000?.[name];
    if (!c || c.placementsPerS === undefined) return { target: `≥ ${min} ${what}`, measured: null, met: null, why: at5000 ? c?.skipped ?? "not measured" : "5,000 hosts not in BERTH_BENCH_SCHED_HOSTS" };
    return { target: `≥ ${min} ${what}`, measured: c.placementsPerS, met: c.placementsPerS >= min };
  };
  const out = {
    controllerSpreadAt5000Hosts: rate("controllerSpread", TARGETS.controllerSpreadPerSAt5000, "creates/s through the controller's create path, spread, 5,000 hosts"),
    controllerPackAt5000Hosts: rate("controllerPack", TARGETS.controllerPackPerSAt5000, "creates/s through the controller's create path, pack, 5,000 hosts"),
    controllerAntiAffinityAt5000Hosts: rate("controllerSpreadAntiAffinity", TARGETS.controllerGroupsPerSAt5000, "creates/s through the controller's create path, spread, 30 % in anti-affinity groups, 5,000 hosts"),
    spreadAt5000Hosts: rate("berthSpread", TARGETS.spreadPerSAt5000, "placements/s, spread, 5,000 hosts"),
    packAt5000Hosts: rate("berthPack", TARGETS.packPerSAt5000, "placements/s, pack, 5,000 hosts"),
    antiAffinityAt5000Hosts: rate("berthSpreadAntiAffinity", TARGETS.groupsPerSAt5000, "placements/s, spread with anti-affinity groups, 5,000 hosts"),
  };
  const g = result.costGrowth;
  const limit = g.hostRatio ? round(TARGETS.costGrowthMaxShareOfLinear * g.hostRatio, 2) : undefined;
  for (const name of ["berthSpread", "berthPack", "berthSpreadAntiAffinity"]) {
    const key = `costGrowth_${name}`;
    const target = `per-placement cost at ${g.toHosts ?? "?"} hosts / at ${g.fromHosts ?? "?"} hosts ≤ ${TARGETS.costGrowthMaxShareOfLinear} × the host ratio (${limit ?? "?"})`;
    if (g[name] === undefined) out[key] = { target, measured: null, met: null, why: g.skipped ?? "not measured at both host counts" };
    else out[key] = { target, measured: g[name], met: g[name] <= limit };
  }
  const fc = result.fillCost;
  for (const name of ["berthSpread", "berthPack"]) {
    const key = `costGrowthAtEqualFill_${name}`;
    const target = `the same, both fleets filled to ${QUALITY_FILL} × LB ≤ ${limit ?? "?"}`;
    const m = fc?.costRatio?.[name];
    if (m === undefined) out[key] = { target, measured: null, met: null, why: fc?.skipped ?? "a fill run did not complete (time bound or a VM that did not fit)" };
    else out[key] = { target, measured: m, met: m <= limit };
  }
  const q = result.quality;
  const bp = q?.berthPack;
  if (!bp?.complete) {
    const why = q?.skipped ?? bp?.skipped ?? bp?.stoppedBecause ?? "not measured";
    out.packHostsVsLowerBound = { target: `hosts used ≤ ${TARGETS.packHostsPerLbMax} × LB`, measured: null, met: null, why };
    out.packHostsVsReferences = { target: "hosts used ≤ each reference's", measured: null, met: null, why };
  } else {
    out.packHostsVsLowerBound = { target: `hosts used ≤ ${TARGETS.packHostsPerLbMax} × LB`, measured: bp.hostsPerLb, met: bp.hostsPerLb <= TARGETS.packHostsPerLbMax && bp.unplaced === 0 };
    const refs = Object.keys(REFERENCES).map((n) => [n, q[`reference_${n}`]]);
    const measured = Object.fromEntries(refs.map(([n, r]) => [n, r?.complete ? r.hostsUsed : null]));
    const all = refs.every(([, r]) => r?.complete);
    out.packHostsVsReferences = {
      target: "hosts used ≤ each reference's",
      measured: { berthPack: bp.hostsUsed, ...measured },
      met: all ? refs.every(([, r]) => bp.hostsUsed <= r.hostsUsed) : null,
      ...(all ? {} : { why: "a reference did not complete" }),
    };
  }
  const small = result.qualitySmall;
  const rows = QUALITY_SMALL_HOSTS.map((h) => [h, small?.[`hosts${h}`]]);
  const smallTarget = `small fleets (H = ${QUALITY_SMALL_HOSTS.join(", ")}) at ${QUALITY_FILL} × LB: pack's hosts used ≤ best fit's and ≤ Nomad binpack's`;
  const measurable = rows.every(([, r]) => typeof r?.berthPack === "number" && typeof r.berthBestFit === "number" && typeof r.reference_nomadBinpack === "number");
  out.packHostsSmallFleets = measurable
    ? {
        target: smallTarget,
        measured: Object.fromEntries(rows.map(([h, r]) => [`hosts${h}`, { berthPack: r.berthPack, berthBestFit: r.berthBestFit, nomadBinpack: r.reference_nomadBinpack }])),
        met: rows.every(([, r]) => r.berthPack <= r.berthBestFit && r.berthPack <= r.reference_nomadBinpack),
      }
    : { target: smallTarget, measured: null, met: null, why: small?.skipped ?? "a small-fleet run was skipped, left VMs unplaced or had no best fit" };
  return out;
}

function hostCounts(raw) {
  const list = raw.split(",").map((s) => Number(s.trim()));
  if (list.length === 0 || list.some((n) => !Number.isSafeInteger(n) || n < 2)) {
    throw new Error(`BERTH_BENCH_SCHED_HOSTS must be a comma-separated list of whole numbers ≥ 2, not '${raw}'`);
  }
  return list;
}

function firstLine(e) {
  return String(e?.message ?? e).split("\n")[0];
}
