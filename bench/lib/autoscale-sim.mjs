// A scale group on a fast clock, for bench/autoscale.bench.mjs: a seeded CPU demand of several
// days, VMs that boot before they serve, and one autoscaler (or a fixed size) deciding every step.
// No real waiting: one loop iteration is one step of simulated time.
import { mulberry32 } from "../../packages/core/dist/index.js";

export const STEP_MS = 15_000;
export const DAY_MS = 86_400_000;
/** A Monday, 00:00 UTC: the forecast's buckets are aligned on Unix time, so days start at 00:00. */
export const START_MS = Date.UTC(2025, 0, 6);

/**
 * The workload. Demand is the group's total CPU need in cores, spread evenly over the VMs that
 * serve (a load balancer in front); what exceeds their capacity is unmet.
 */
export const WORKLOAD = Object.freeze({
  days: 7,
  /** Diurnal: the trough (04:00 UTC) and the peak (16:00 UTC) in cores, before the day's factor. */
  troughCores: 4,
  peakCores: 28,
  /** Each day's level is the pattern × a factor drawn in [1 − x, 1 + x] (days differ). */
  dayToDay: 0.1,
  /** A batch every day at a fixed hour (learnable): extra cores, its start (hours UTC) and length. */
  batch: { startHour: 2, minutes: 30, cores: 12, dayToDay: 0.1 },
  /** Random spikes (not learnable): per day, each extra cores × the demand then, minutes long, reached in 1 min. */
  spikes: { perDay: 4, extraMin: 0.6, extraMax: 1.2, minutesMin: 5, minutesMax: 20 },
  /** Noise: a slow multiplicative wander (AR(1), correlation time in minutes) and a fast one per step. */
  noise: { slowSigma: 0.05, slowMinutes: 10, fastSigma: 0.04 },
});

/** The VMs: vCPUs each; boot time before a new VM serves (it reports no CPU until then). */
export const VM = Object.freeze({ vcpus: 2, bootMs: 60_000 });
export const GROUP = Object.freeze({ minSize: 2, maxSize: 40 });

/** Standard normal from two uniforms (Box–Muller). */
function gaussian(rng) {
  const u = Math.max(rng(), 1e-12);
  const v = rng();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** The diurnal shape in [0, 1]: 0 at 04:00, 1 at 16:00, a cosine sharpened towards the peak. */
function diurnal(hourOfDay) {
  return ((1 - Math.cos((2 * Math.PI * (hourOfDay - 4)) / 24)) / 2) ** 1.5;
}

/**
 * The demand, one value per step, seeded: `cores` (what the VMs are asked for) and `smooth` (the
 * same without noise and random spikes: the pattern plus the batch, for the fixed group's size).
 */
export function demandSeries(seed, workload = WORKLOAD) {
  const rng = mulberry32(seed);
  const steps = Math.round((workload.days * DAY_MS) / STEP_MS);
  const stepsPerDay = DAY_MS / STEP_MS;
  const dayFactor = Array.from({ length: workload.days }, () => 1 + (2 * rng() - 1) * workload.dayToDay);
  const batchFactor = Array.from({ length: workload.days }, () => 1 + (2 * rng() - 1) * workload.batch.dayToDay);
  const spikes = [];
  for (let d = 0; d < workload.days; d++) {
    for (let k = 0; k < workload.spikes.perDay; k++) {
      const start = d * stepsPerDay + Math.floor(rng() * stepsPerDay);
      const minutes = workload.spikes.minutesMin + rng() * (workload.spikes.minutesMax - workload.spikes.minutesMin);
      const extra = workload.spikes.extraMin + rng() * (workload.spikes.extraMax - workload.spikes.extraMin);
      spikes.push({ start, end: start + Math.round((minutes * 60_000) / STEP_MS), extra });
    }
  }
  const rampSteps = Math.round(60_000 / STEP_MS);
  const cores = new Float64Array(steps);
  const smooth = new Float64Array(steps);
  const keep = Math.exp(-STEP_MS / (workload.noise.slowMinutes * 60_000));
  let slow = 0;
  for (let i = 0; i < steps; i++) {
    const day = Math.floor(i / stepsPerDay);
    const hour = ((i % stepsPerDay) * STEP_MS) / 3_600_000;
    let base = (workload.troughCores + (workload.peakCores - workload.troughCores) * diurnal(hour)) * dayFactor[day];
    const b = workload.batch;
    if (hour >= b.startHour && hour < b.startHour + b.minutes / 60) base += b.cores * batchFactor[day];
    smooth[i] = base;
    let spike = 0;
    for (const s of spikes) {
      if (i < s.start || i >= s.end) continue;
      spike += s.extra * Math.min(1, (i - s.start + 1) / rampSteps);
    }
    slow = keep * slow + Math.sqrt(1 - keep * keep) * workload.noise.slowSigma * gaussian(rng);
    const fast = workload.noise.fastSigma * gaussian(rng);
    cores[i] = Math.max(0, base * (1 + spike) * Math.exp(slow + fast));
  }
  return { cores, smooth, steps, stepsPerDay, spikes: spikes.length };
}

/**
 * Runs one group over the demand: a fixed one of `fixedSize` VMs, or one `autoscale` resizes
 * (`{ step, initialMemory, membersToRemove }`: autoscale.js's functions) with `policy` (and the
 * prediction's `tuning`, when given). Figures are counted from step `fromStep` on (the days after
 * learning) and over the whole run.
 */
export function simulate({ demand, fixedSize, autoscale, policy, tuning, fromStep, order = "oldest-first" }) {
  const { cores, steps } = demand;
  const target = policy.targetCpu;
  const tolerance = policy.tolerance;
  let members = [];
  let nextIndex = 0;
  const add = (now, n) => {
    for (let k = 0; k < n; k++) members.push({ name: `g-${nextIndex}`, index: nextIndex++, addedAtMs: now, servesAtMs: now + VM.bootMs });
  };
  const initial = fixedSize ?? GROUP.minSize;
  // The group starts warm: its first members were added long before the run.
  add(START_MS - 3_600_000, initial);
  let memory = autoscale ? autoscale.initialMemory(initial, START_MS, policy) : undefined;
  let forecast;
  let forecastWrites = 0;
  const blank = () => ({ vmSeconds: 0, aboveTargetS: 0, aboveToleranceS: 0, unmetCoreS: 0, demandCoreS: 0, scaleEvents: 0, servingUtilSum: 0, servingSteps: 0 });
  const all = blank();
  const after = blank();
  let lastMeasure = new Map();
  for (let i = 0; i < steps; i++) {
    const now = START_MS + i * STEP_MS;
    // The rule decides at the start of the step from what was measured over the step before.
    if (autoscale) {
      const loads = members.map((m) => ({ name: m.name, addedAtMs: m.addedAtMs, vcpus: VM.vcpus, cpuCores: lastMeasure.get(m.name) }));
      const out = autoscale.step({ now, size: members.length, minSize: GROUP.minSize, maxSize: GROUP.maxSize, members: loads, policy, memory, forecast, tuning });
      memory = out.memory;
      forecast = out.forecast;
      if (out.forecastChanged) forecastWrites++;
      if (out.size !== members.length) {
        for (const f of i >= fromStep ? [all, after] : [all]) f.scaleEvents++;
        if (out.size > members.length) add(now, out.size - members.length);
        else {
          const gone = new Set(autoscale.membersToRemove(members, [], order, members.length - out.size));
          members = members.filter((m) => !gone.has(m.name));
        }
      }
    }
    // The step: demand spread over the VMs that serve; each saturates at its vCPUs.
    const serving = members.filter((m) => m.servesAtMs <= now);
    const capacity = serving.length * VM.vcpus;
    const d = cores[i];
    const served = Math.min(d, capacity);
    const util = capacity > 0 ? served / capacity : d > 0 ? 1 : 0;
    lastMeasure = new Map(serving.map((m) => [m.name, util * VM.vcpus]));
    for (const f of i >= fromStep ? [all, after] : [all]) {
      f.vmSeconds += (members.length * STEP_MS) / 1000;
      if (util > target) f.aboveTargetS += STEP_MS / 1000;
      if (util > target * (1 + tolerance)) f.aboveToleranceS += STEP_MS / 1000;
      f.unmetCoreS += ((d - served) * STEP_MS) / 1000;
      f.demandCoreS += (d * STEP_MS) / 1000;
      f.servingUtilSum += util;
      f.servingSteps++;
    }
  }
  const report = (f) => ({
    vmHours: f.vmSeconds / 3600,
    minutesAboveTarget: f.aboveTargetS / 60,
    minutesAboveTolerance: f.aboveToleranceS / 60,
    unmetCoreHours: f.unmetCoreS / 3600,
    unmetShare: f.demandCoreS > 0 ? f.unmetCoreS / f.demandCoreS : 0,
    meanUtilization: f.servingSteps > 0 ? f.servingUtilSum / f.servingSteps : 0,
    scaleEvents: f.scaleEvents,
  });
  return { afterLearning: report(after), whole: report(all), forecastWrites };
}

/**
 * A clairvoyant reference: each step exactly the VMs the step's demand needs at the target
 * (⌈demand / (vCPUs × target)⌉, at least min), serving at once. It is never above the target;
 * no rule that must add VMs before knowing the demand, and wait for them to boot, can do that
 * for fewer VM-hours.
 */
export function clairvoyantVmHours(demand, targetCpu, fromStep) {
  let vmSteps = 0;
  for (let i = fromStep; i < demand.steps; i++) vmSteps += Math.max(GROUP.minSize, Math.ceil(demand.cores[i] / (VM.vcpus * targetCpu) - 1e-9));
  return (vmSteps * STEP_MS) / 3_600_000;
}
