import { ScaleInOrder, ScalePrediction, type LoadForecast, type ScaleDecision, type ScaleMember, type ScalePolicy } from "@berth/api";
import { formatExactDuration, formatPercent, invalidArgument } from "@berth/core";
import { forecastOver, observeDemand, type BucketFill } from "./load-forecast.js";

/**
 * The autoscaler's rule (pure: no I/O, no clock — `now` is an input — and no randomness). The
 * reactive part is Kubernetes HPA's (pkg/controller/podautoscaler: replica_calculator.go's
 * GetResourceReplicas and horizontal.go's stabilisation and scale-up limit, at HPA's defaults);
 * Berth adds a prediction from the load learnt per time of day (load-forecast.ts).
 */

/** A scale group's policy with every default filled in. */
export interface ResolvedScalePolicy {
  /** The average CPU utilisation of the warm members to hold, in (0, 1]. */
  targetCpu: number;
  /** No change while utilisation / target is within 1 ± tolerance. @default 0.1 */
  tolerance: number;
  /** A scale-in takes the highest recommendation within this window. @default 300_000 */
  scaleDownWindowMs: number;
  /** A scale-out adds at most max(this % of the size, scaleUpMaxVms) per scaleUpPeriodMs. @default 100 */
  scaleUpMaxPercent: number;
  /** @default 4 */
  scaleUpMaxVms: number;
  /** @default 15_000 */
  scaleUpPeriodMs: number;
  /** A member's CPU is not counted until this long after it was added. @default 180_000 */
  warmupMs: number;
  /** How often the autoscaler decides. @default 15_000 */
  intervalMs: number;
  /** @default "oldest-first" */
  scaleInOrder: "oldest-first" | "newest-first";
  /** Scale ahead of the learnt daily pattern. @default true (SCALE_PREDICTION_UNSPECIFIED is on) */
  prediction: boolean;
}

const HOUR_MS = 3_600_000;

/**
 * The bounds a policy's fields must keep (resolveScalePolicy's rules; the CLI checks its flags
 * against the same numbers).
 */
export const SCALE_POLICY_LIMITS = Object.freeze({
  maxTolerance: 0.5,
  /** The scale-down window, the scale-up period and the warm-up. */
  maxDurationMs: HOUR_MS,
  minIntervalMs: 1000,
  maxIntervalMs: 600_000,
  maxScaleUpPercent: 1000,
  maxScaleUpVms: 1000,
});

const DEFAULTS: Omit<ResolvedScalePolicy, "targetCpu"> = Object.freeze({
  tolerance: 0.1,
  scaleDownWindowMs: 300_000,
  scaleUpMaxPercent: 100,
  scaleUpMaxVms: 4,
  scaleUpPeriodMs: 15_000,
  warmupMs: 180_000,
  intervalMs: 15_000,
  scaleInOrder: "oldest-first",
  prediction: true,
});

/**
 * HPA's own defaults (tolerance 0.1, 300 s scale-down stabilisation, scale-up max(100 %, 4 pods)
 * per 15 s, a 15 s sync period, the CPU initialisation period taken as Berth's 180 s warm-up) with
 * prediction off: the reference the autoscale benchmark compares Berth's defaults against.
 */
export const HPA_POLICY: Omit<ResolvedScalePolicy, "targetCpu"> = Object.freeze({ ...DEFAULTS, prediction: false });

/**
 * The policy with its defaults over the proto's zeros. Throws INVALID_ARGUMENT (core's
 * `invalidArgument`) naming the field (`${field}.target_cpu`, ...) with the value and the accepted
 * range: target_cpu in (0, 1] (required), tolerance in [0, 0.5], windows, periods and the warm-up
 * at most 1 h, the interval 1 s to 10 min, the percent at most 1000, the VMs at most 1000. A
 * partial policy is read as the proto's decoder would fill it (absent fields are zeros).
 */
export function resolveScalePolicy(policy: Partial<ScalePolicy> | undefined, field = "policy"): ResolvedScalePolicy {
  const p = policy ?? {};
  const target = p.targetCpu ?? 0;
  if (target === 0) throw invalidArgument(`${field}.target_cpu`, "is required: the average CPU utilisation to hold, in (0, 1] (0.6 for 60 %)");
  if (!(Number.isFinite(target) && target > 0 && target <= 1)) throw invalidArgument(`${field}.target_cpu`, `must be in (0, 1] (0.6 for 60 %; got ${target})`);
  const tolerance = p.tolerance ?? 0;
  if (!(Number.isFinite(tolerance) && tolerance >= 0 && tolerance <= SCALE_POLICY_LIMITS.maxTolerance)) {
    throw invalidArgument(`${field}.tolerance`, `must be in [0, ${SCALE_POLICY_LIMITS.maxTolerance}] (got ${tolerance})`);
  }
  const whole = (name: string, value: number | undefined, fallback: number, min: number, max: number, unit: string): number => {
    const v = value ?? 0;
    if (v === 0) return fallback;
    if (!Number.isSafeInteger(v) || v < min || v > max) throw invalidArgument(`${field}.${name}`, `must be a whole number from ${min} to ${max} ${unit}, or 0 for the default ${fallback} (got ${v})`);
    return v;
  };
  const order = p.scaleInOrder ?? ScaleInOrder.SCALE_IN_ORDER_UNSPECIFIED;
  if (order !== ScaleInOrder.SCALE_IN_ORDER_UNSPECIFIED && order !== ScaleInOrder.SCALE_IN_ORDER_OLDEST_FIRST && order !== ScaleInOrder.SCALE_IN_ORDER_NEWEST_FIRST) {
    throw invalidArgument(`${field}.scale_in_order`, `must be OLDEST_FIRST or NEWEST_FIRST (got ${String(order).slice(0, 16)})`);
  }
  const prediction = p.prediction ?? ScalePrediction.SCALE_PREDICTION_UNSPECIFIED;
  if (prediction !== ScalePrediction.SCALE_PREDICTION_UNSPECIFIED && prediction !== ScalePrediction.SCALE_PREDICTION_ON && prediction !== ScalePrediction.SCALE_PREDICTION_OFF) {
    throw invalidArgument(`${field}.prediction`, `must be ON or OFF (got ${String(prediction).slice(0, 16)})`);
  }
  return {
    targetCpu: target,
    tolerance: tolerance === 0 ? DEFAULTS.tolerance : tolerance,
    scaleDownWindowMs: whole("scale_down_window_ms", p.scaleDownWindowMs, DEFAULTS.scaleDownWindowMs, 1, SCALE_POLICY_LIMITS.maxDurationMs, "ms"),
    scaleUpMaxPercent: whole("scale_up_max_percent", p.scaleUpMaxPercent, DEFAULTS.scaleUpMaxPercent, 1, SCALE_POLICY_LIMITS.maxScaleUpPercent, "%"),
    scaleUpMaxVms: whole("scale_up_max_vms", p.scaleUpMaxVms, DEFAULTS.scaleUpMaxVms, 1, SCALE_POLICY_LIMITS.maxScaleUpVms, "VMs"),
    scaleUpPeriodMs: whole("scale_up_period_ms", p.scaleUpPeriodMs, DEFAULTS.scaleUpPeriodMs, 1, SCALE_POLICY_LIMITS.maxDurationMs, "ms"),
    warmupMs: whole("warmup_ms", p.warmupMs, DEFAULTS.warmupMs, 1, SCALE_POLICY_LIMITS.maxDurationMs, "ms"),
    intervalMs: whole("interval_ms", p.intervalMs, DEFAULTS.intervalMs, SCALE_POLICY_LIMITS.minIntervalMs, SCALE_POLICY_LIMITS.maxIntervalMs, "ms"),
    scaleInOrder: order === ScaleInOrder.SCALE_IN_ORDER_NEWEST_FIRST ? "newest-first" : "oldest-first",
    prediction: prediction !== ScalePrediction.SCALE_PREDICTION_OFF,
  };
}

/**
 * {@link resolveScalePolicy}, or undefined for a policy it refuses: how a stored group reads where
 * a refused policy means "not scaled" rather than an error (its views, the manager's info).
 */
export function resolveScalePolicyIfValid(policy: Partial<ScalePolicy> | undefined): ResolvedScalePolicy | undefined {
  try {
    return resolveScalePolicy(policy);
  } catch {
    return undefined;
  }
}

/** A policy's scale-up step in HPA's wording, `max(100%, 4 VMs) per 15s` at its default. */
export function describeScaleUpStep(p: Pick<ResolvedScalePolicy, "scaleUpMaxPercent" | "scaleUpMaxVms" | "scaleUpPeriodMs">): string {
  return `max(${p.scaleUpMaxPercent}%, ${p.scaleUpMaxVms} VM${p.scaleUpMaxVms === 1 ? "" : "s"}) per ${formatExactDuration(p.scaleUpPeriodMs)}`;
}

/** One member as the rule sees it. */
export interface MemberLoad {
  name: string;
  /** Start of its warm-up (Unix ms): when the decision that added it was made. */
  addedAtMs: number;
  vcpus: number;
  /** Cores busy on average over the last report; undefined: no measurement (not running yet, host silent). */
  cpuCores: number | undefined;
}

/** A size the rule recommended at a step (kept for the scale-down stabilisation window). */
export interface TimedRecommendation {
  readonly atMs: number;
  readonly size: number;
}

/** A change of size the rule made (kept for the scale-up rate limit): + added, − removed. */
export interface TimedScaleEvent {
  readonly atMs: number;
  readonly change: number;
}

/**
 * What the rule remembers between steps, in the leader's memory only (a new leader starts from
 * {@link initialAutoscaleMemory}). Bounded: recommendations are kept only while they can still be
 * the highest of the window (a later one at least as high replaces them), scale events only for
 * the scale-up period, and one bucket of demand being filled.
 */
export interface AutoscaleMemory {
  /** Oldest first, sizes strictly decreasing: the highest one not older than the window is the stabilised one. */
  readonly recommendations: readonly TimedRecommendation[];
  /** Oldest first, not older than the scale-up period. */
  readonly scaleEvents: readonly TimedScaleEvent[];
  /** The demand seen so far in the forecast's bucket now being filled. */
  readonly fill: BucketFill | undefined;
  /** With a prediction: the floors of the quicker scale-in over its window, as `recommendations`. */
  readonly quickFloors: readonly TimedRecommendation[];
  /** Since when floors were recorded at every step (undefined: not now); a quicker scale-in needs a whole window of them. */
  readonly quickFloorsSinceMs: number | undefined;
  /** No quicker scale-in before this (Unix ms): a new leader waits out one scale-down window, as the reactive rule does. */
  readonly quickScaleInAfterMs: number;
  /** With a prediction: how busy today is against the learnt pattern, and how noisy the load is. */
  readonly level: ForecastLevel | undefined;
}

/**
 * A new leader's memory: `size` recommended at `now`, so it is held as the recommendation over a
 * whole scale-down window (HPA's recordInitialRecommendation), and no quicker scale-in within that
 * window either: a leader never scales in right after taking over. No scale events (a scale-out
 * the old leader made within the period is not known: HPA forgets it as well on a restart).
 */
export function initialAutoscaleMemory(size: number, now: number, policy: ResolvedScalePolicy): AutoscaleMemory {
  return {
    recommendations: [{ atMs: now, size }],
    scaleEvents: [],
    fill: undefined,
    quickFloors: [],
    quickFloorsSinceMs: undefined,
    quickScaleInAfterMs: now + policy.scaleDownWindowMs,
    level: undefined,
  };
}

/** One step's inputs. */
export interface AutoscaleInput {
  now: number;
  /** The group's size now (its members list's length). */
  size: number;
  minSize: number;
  maxSize: number;
  members: readonly MemberLoad[];
  policy: ResolvedScalePolicy;
  memory: AutoscaleMemory;
  /** The learnt pattern as stored. */
  forecast: LoadForecast | undefined;
  /** The prediction's constants; {@link PREDICTION} when absent (the product never sets it: benchmarks do). */
  tuning?: Readonly<PredictionTuning>;
}

/** One step's outcome. */
export interface AutoscaleOutcome {
  /** The size to have now (== input.size: no change). */
  size: number;
  /** Pass it to the next step when this step's size was applied; keep the input's when the write failed. */
  memory: AutoscaleMemory;
  /** The stored forecast with this step's learning folded in; `forecastChanged` when it should be written (at most once per bucket). */
  forecast: LoadForecast | undefined;
  forecastChanged: boolean;
  /** Set when size != input.size: the decision's inputs (seq, added, removed are the reconciler's). */
  decision: Omit<ScaleDecision, "seq" | "added" | "removed"> | undefined;
}

/** ⌈x⌉ forgiving floating-point noise: 4.000000000001 (1.2 / 0.6 × 2) is 4, as the arithmetic meant. */
function ceilSize(x: number): number {
  return Math.ceil(x - 1e-9);
}

/** Percentages in messages as everywhere else (core's one rule). */
const pct = formatPercent;
const num = (x: number): string => String(Number(x.toFixed(2)));

/** HPA's replica calculation over the members (GetResourceReplicas). */
interface Reactive {
  /** The recommendation: `size` when within tolerance, when the others flip the direction, or when nothing was measured. */
  desired: number;
  warm: number;
  warming: number;
  /** Warm members' utilisation (0 when none). */
  utilization: number;
  /** The one-line account of how `desired` came out. */
  explain: string;
}

/**
 * HPA's rule: utilisation = Σ cores / Σ vCPUs over the warm members (past the warm-up, with a
 * measurement); ratio = utilisation / target; within 1 ± tolerance no change; else with no other
 * member ⌈warm × ratio⌉. The others (warming up, or without a measurement) count as idle when the
 * ratio says scale out and as busy (100 % of their vCPUs) when it says scale in; the ratio is
 * recomputed with them, and a recomputed ratio within tolerance, or one that flips the direction
 * (or a size that would move the other way), means no change. One departure from HPA: HPA leaves
 * its not-yet-ready pods out of a scale-in's sum altogether and counts only pods with a missing
 * metric as busy; Berth counts a member in its warm-up as busy too (it is booting, soon serving),
 * so a scale-in never sizes the group on the warm members alone.
 */
function reactiveSize(members: readonly MemberLoad[], size: number, policy: ResolvedScalePolicy, now: number, tolerance: number): Reactive {
  let warmCores = 0;
  let warmVcpus = 0;
  let warm = 0;
  let warming = 0;
  let otherVcpus = 0;
  let others = 0;
  for (const m of members) {
    const vcpus = Math.max(0, m.vcpus);
    const isWarming = now - m.addedAtMs < policy.warmupMs;
    if (isWarming) warming++;
    if (!isWarming && m.cpuCores !== undefined && Number.isFinite(m.cpuCores) && vcpus > 0) {
      warm++;
      warmVcpus += vcpus;
      warmCores += Math.min(Math.max(0, m.cpuCores), vcpus);
    } else {
      others++;
      otherVcpus += vcpus;
    }
  }
  if (warm === 0) return { desired: size, warm, warming, utilization: 0, explain: `no warm VM measured (${warming} warming up)` };
  const utilization = warmCores / warmVcpus;
  const target = policy.targetCpu;
  const ratio = utilization / target;
  const head = `cpu ${pct(utilization)} of ${warm} warm VM${warm === 1 ? "" : "s"}${warming > 0 ? ` (${warming} warming up)` : ""} against ${pct(target)}`;
  if (Math.abs(ratio - 1) <= tolerance) return { desired: size, warm, warming, utilization, explain: `${head}: within ±${pct(tolerance)}` };
  if (others === 0) {
    const desired = ceilSize(warm * ratio);
    return { desired, warm, warming, utilization, explain: `${head}: reactive ⌈${warm}×${num(utilization)}/${num(target)}⌉=${desired}` };
  }
  const up = ratio > 1;
  const filled = (warmCores + (up ? 0 : otherVcpus)) / (warmVcpus + otherVcpus) / target;
  const counted = warm + others;
  const how = `${others} other${others === 1 ? "" : "s"} as ${up ? "idle" : "busy"}`;
  if (Math.abs(filled - 1) <= tolerance || up !== filled > 1) {
    return { desired: size, warm, warming, utilization, explain: `${head}: with ${how} ${pct(filled * target)}, no change` };
  }
  const desired = ceilSize(counted * filled);
  if (up ? desired < size : desired > size) return { desired: size, warm, warming, utilization, explain: `${head}: with ${how} ⌈${counted}×${num(filled)}⌉=${desired} moves the other way, no change` };
  return { desired, warm, warming, utilization, explain: `${head}: with ${how} reactive ⌈${counted}×${num(filled * target)}/${num(target)}⌉=${desired}` };
}

/** What the forecast asks for now. */
interface Prediction {
  /** For a scale-out: the size the horizon (warm-up + interval) needs. */
  size: number;
  cores: number;
  explain: string;
  /** For a quicker scale-in: the size the scale-down window and the horizon ahead need. */
  holdSize: number;
  explainHold: string;
}

/** The demand measured now: the cores of every member with a measurement (warming ones included: they serve). */
function measuredCores(members: readonly MemberLoad[]): number | undefined {
  let total = 0;
  let any = false;
  for (const m of members) {
    if (m.cpuCores === undefined || !Number.isFinite(m.cpuCores)) continue;
    any = true;
    total += Math.max(0, Math.min(m.cpuCores, m.vcpus));
  }
  return any ? total : undefined;
}

function meanVcpus(members: readonly MemberLoad[]): number {
  let sum = 0;
  let n = 0;
  for (const m of members) {
    if (m.vcpus > 0) {
      sum += m.vcpus;
      n++;
    }
  }
  return n === 0 ? 0 : sum / n;
}

/** The prediction's constants: see {@link PREDICTION}. */
export interface PredictionTuning {
  levelIntervals: number;
  levelMin: number;
  levelMax: number;
  quickScaleIn: boolean;
  quickScaleInIntervals: number;
  quickScaleInMarginOfTolerance: number;
  quickScaleInMarginOfNoise: number;
  noiseIntervals: number;
}

/**
 * The prediction's own constants (not policy fields: chosen with bench/autoscale, whose figures
 * docs/benchmarks.md gives for other values too; `AutoscaleInput.tuning` overrides them there).
 */
export const PREDICTION: Readonly<PredictionTuning> = Object.freeze({
  /**
   * How busy today is against the learnt pattern (measured / learnt now) is smoothed with a time
   * constant of this many intervals (60 s at 15 s): one step's noise barely moves the prediction,
   * a day busier than the pattern is followed within a minute or two.
   */
  levelIntervals: 4,
  /** The level scales the pattern by at most this much either way. */
  levelMin: 0.5,
  levelMax: 2,
  /** Scale in ahead of the stabilisation window when the forecast and the load agree (see autoscaleStep). */
  quickScaleIn: true,
  /**
   * A quicker scale-in goes to the highest of its floors over this many intervals (a dip of one
   * or two steps is not acted on)...
   */
  quickScaleInIntervals: 4,
  /**
   * ...and sizes the smaller group to hold a margin below the target: at least this share of the
   * tolerance (2.5 % at the default 0.1; without it the prediction's scale-out at the target and
   * the scale-in at the target chase each other across one VM on every step's noise)...
   */
  quickScaleInMarginOfTolerance: 0.25,
  /**
   * ...and at least this many times the load's noise (the mean relative deviation of a step's
   * measured level from the smoothed one, itself averaged over `noiseIntervals`): on a noisy load
   * a group sized just below the target is above it on every other step. At most 50 %.
   */
  quickScaleInMarginOfNoise: 2,
  noiseIntervals: 16,
});

/** How busy today is against the learnt pattern: measured / learnt, smoothed over time, and the load's noise. */
export interface ForecastLevel {
  readonly atMs: number;
  readonly ratio: number;
  /** The mean relative deviation of the measured ratio from the smoothed one: the load's step-to-step noise. */
  readonly noise: number;
}

function nextLevel(prior: ForecastLevel | undefined, now: number, ratio: number, timeConstantMs: number, noiseTimeConstantMs: number): ForecastLevel {
  // A level older than a few time constants says nothing about now (a prediction that lapsed).
  if (!prior || now <= prior.atMs || now - prior.atMs > 4 * timeConstantMs) return { atMs: now, ratio, noise: 0 };
  const a = 1 - Math.exp(-(now - prior.atMs) / timeConstantMs);
  const smoothed = prior.ratio + a * (ratio - prior.ratio);
  const deviation = smoothed > 0 ? Math.abs(ratio - smoothed) / smoothed : 0;
  const b = 1 - Math.exp(-(now - prior.atMs) / noiseTimeConstantMs);
  return { atMs: now, ratio: smoothed, noise: prior.noise + b * (deviation - prior.noise) };
}

/** The utilisation a quicker scale-in sizes the smaller group for: a little below the target. */
function quickTarget(policy: ResolvedScalePolicy, tuning: Readonly<PredictionTuning>, noise: number): number {
  const margin = Math.max(tuning.quickScaleInMarginOfTolerance * policy.tolerance, tuning.quickScaleInMarginOfNoise * noise);
  return policy.targetCpu * (1 - Math.min(0.5, margin));
}

/**
 * Berth's prediction: the size that holds the utilisation at the target over the next warm-up +
 * interval (a member added now serves and is counted within that) by the learnt pattern (the
 * forecast's highest over that horizon, load-forecast.ts's `forecastOver`), scaled by how busy
 * today is against the pattern (the demand measured now over the forecast now, smoothed, within
 * `PREDICTION.levelMin`..`levelMax`); and, for a quicker scale-in, the size the same forecast
 * needs over the scale-down window and that horizon, at the quicker scale-in's utilisation. Only
 * from buckets learnt over at least one earlier period: none while a bucket ahead was never
 * learnt, nor without a measurement.
 */
function predictSize(input: AutoscaleInput, measured: number | undefined): { prediction: Prediction | undefined; level: ForecastLevel | undefined } {
  const { policy, now, members } = input;
  const tuning = input.tuning ?? PREDICTION;
  if (!policy.prediction || measured === undefined) return { prediction: undefined, level: undefined };
  const horizonMs = policy.warmupMs + policy.intervalMs;
  const holdMs = policy.scaleDownWindowMs + horizonMs;
  const window = forecastOver(input.forecast, now, now + horizonMs, 1);
  const hold = forecastOver(input.forecast, now, now + holdMs, 1);
  const vcpus = meanVcpus(members);
  if (!window || !hold || vcpus <= 0 || window.nowCores <= 0) return { prediction: undefined, level: undefined };
  const level = nextLevel(input.memory.level, now, measured / window.nowCores, tuning.levelIntervals * policy.intervalMs, tuning.noiseIntervals * policy.intervalMs);
  const factor = Math.min(tuning.levelMax, Math.max(tuning.levelMin, level.ratio));
  const cores = window.peakCores * factor;
  const size = ceilSize(cores / (vcpus * policy.targetCpu));
  const holdSize = ceilSize((hold.peakCores * factor) / (vcpus * quickTarget(policy, tuning, level.noise)));
  return {
    level,
    prediction: {
      size,
      cores,
      holdSize,
      explain: `forecast ${num(window.peakCores)}×${num(factor)}=${num(cores)} cores within ${Math.round(horizonMs / 1000)} s: ⌈${num(cores)}/(${num(vcpus)}×${num(policy.targetCpu)})⌉=${size}`,
      explainHold: `forecast ${num(hold.peakCores)}×${num(factor)} cores within ${Math.round(holdMs / 1000)} s: ${holdSize}`,
    },
  };
}

/** HPA's scale-up limit: max(⌈start × (1 + percent)⌉, start + vms) over the period, where start is the size at the period's start. */
function scaleUpLimit(size: number, events: readonly TimedScaleEvent[], policy: ResolvedScalePolicy, now: number): number {
  let changed = 0;
  for (const e of events) if (e.atMs > now - policy.scaleUpPeriodMs) changed += e.change;
  const start = size - changed;
  const limit = Math.max(Math.ceil(start * (1 + policy.scaleUpMaxPercent / 100)), start + policy.scaleUpMaxVms);
  return Math.max(limit, size);
}

/** Adds `size` at `now` to the window's recommendations, keeping only those that can still be its highest. */
function remember(recs: readonly TimedRecommendation[], now: number, size: number, windowMs: number): TimedRecommendation[] {
  const kept = recs.filter((r) => r.atMs > now - windowMs);
  while (kept.length > 0 && kept[kept.length - 1]!.size <= size) kept.pop();
  kept.push({ atMs: now, size });
  return kept;
}

/** The highest recommendation not older than the window (HPA counts those strictly after now − window). */
function highestWithin(recs: readonly TimedRecommendation[], now: number, windowMs: number): number | undefined {
  let best: number | undefined;
  for (const r of recs) if (r.atMs > now - windowMs && (best === undefined || r.size > best)) best = r.size;
  return best;
}

/**
 * One step of the autoscaler. In HPA's order: a size outside [min, max] goes to the bound at once
 * (reason SizeBounded); otherwise the reactive recommendation (see `reactiveSize`), raised to the
 * prediction's size when that is higher, is remembered; a scale-in takes the highest recommendation
 * of the scale-down window, a scale-out is limited to max(percent, VMs) per scale-up period
 * (counting the changes made within it, as HPA does), then min and max bound the result.
 *
 * With a prediction, a scale-in may be quicker ("when the forecast agrees that load is falling"):
 * the size the forecast needs over the scale-down window and the horizon ahead (a VM removed now
 * and needed again by then would be added back: churn), and the size the load
 * measured now needs (HPA's calculation without its tolerance band, the others counted busy),
 * both for a utilisation a little below the target (`PREDICTION.quickScaleInMarginOfTolerance`
 * of the tolerance), are taken; when the higher of them (the highest over the last
 * `PREDICTION.quickScaleInIntervals` steps) is below the size, the group goes there without
 * waiting out the window. Never below what the load measured now needs; on a rising forecast the
 * window's forecast is above the size, so this never happens ahead of a rise.
 *
 * The demand measured is folded into the forecast on every step, prediction on or off, so turning
 * prediction on finds a history.
 */
export function autoscaleStep(input: AutoscaleInput): AutoscaleOutcome {
  const { now, size, policy, memory } = input;
  const minSize = Math.max(0, input.minSize);
  const maxSize = Math.max(minSize, input.maxSize);
  const measured = measuredCores(input.members);
  const observed = observeDemand(input.forecast, memory.fill, now, measured, policy.intervalMs);
  const events = memory.scaleEvents.filter((e) => e.atMs > now - policy.scaleUpPeriodMs);
  const finish = (
    to: number,
    kept: Pick<AutoscaleMemory, "recommendations" | "quickFloors" | "quickFloorsSinceMs" | "level">,
    decision: AutoscaleOutcome["decision"],
  ): AutoscaleOutcome => ({
    size: to,
    memory: {
      ...kept,
      scaleEvents: to === size ? events : [...events, { atMs: now, change: to - size }],
      fill: observed.fill,
      quickScaleInAfterMs: memory.quickScaleInAfterMs,
    },
    forecast: observed.forecast,
    forecastChanged: observed.changed,
    decision: to === size ? undefined : decision,
  });

  const reactive = reactiveSize(input.members, size, policy, now, policy.tolerance);
  const base = {
    decidedAtMs: now,
    fromSize: size,
    warmMembers: reactive.warm,
    warmingMembers: reactive.warming,
    cpuUtilization: reactive.utilization,
    reactiveSize: reactive.desired,
    predictedSize: 0,
    predictedCores: 0,
  };
  if (size > maxSize || size < minSize) {
    const to = size > maxSize ? maxSize : minSize;
    return finish(to, memory, {
      ...base,
      reason: "SizeBounded",
      toSize: to,
      message: `size ${size} ${size > maxSize ? `above max ${maxSize}` : `below min ${minSize}`}: set to ${to}`,
    });
  }

  const { prediction, level } = predictSize(input, measured);
  let recommended = reactive.desired;
  let explain = reactive.explain;
  if (prediction && prediction.size > recommended && prediction.size > size) {
    recommended = prediction.size;
    explain = `${reactive.explain}; ${prediction.explain}`;
  }
  let recommendations = remember(memory.recommendations, now, recommended, policy.scaleDownWindowMs);

  // HPA's stabilisation: a recommendation below the size is replaced by the highest of the window
  // (which may even be above the size: an earlier scale-out the rate limit held back).
  let to = recommended;
  if (recommended < size) {
    const held = highestWithin(memory.recommendations, now, policy.scaleDownWindowMs) ?? recommended;
    if (held > recommended) {
      to = held;
      explain += `; held at ${held} by the ${Math.round(policy.scaleDownWindowMs / 1000)} s window`;
    }
  }
  let quickFloors: readonly TimedRecommendation[] = [];
  let quickFloorsSinceMs: number | undefined;
  const tuning = input.tuning ?? PREDICTION;
  if (prediction && tuning.quickScaleIn) {
    const quickWindowMs = tuning.quickScaleInIntervals * policy.intervalMs;
    const need = reactiveSize(input.members, size, { ...policy, targetCpu: quickTarget(policy, tuning, level?.noise ?? 0) }, now, 0);
    const floor = Math.max(prediction.holdSize, need.desired);
    const quick = Math.max(floor, highestWithin(memory.quickFloors, now, quickWindowMs) ?? floor);
    quickFloors = remember(memory.quickFloors, now, floor, quickWindowMs);
    quickFloorsSinceMs = memory.quickFloorsSinceMs ?? now;
    // Floors over a whole window (not one sample after the forecast became usable), and not
    // within a new leader's first window.
    const ready = now - quickFloorsSinceMs >= quickWindowMs && now >= memory.quickScaleInAfterMs;
    if (ready && to <= size && quick < to) {
      to = quick;
      // The window's higher recommendations are what the forecast and the load overruled: kept,
      // they would scale the group straight back out (HPA's window may hold above the size).
      recommendations = [{ atMs: now, size: quick }];
      explain = `${need.explain}; ${prediction.explainHold}: forecast and load agree on ${quick}${quick > floor ? ` (the highest of ${Math.round(quickWindowMs / 1000)} s)` : ""}`;
    }
  }
  if (to < size && to < minSize) {
    to = minSize;
    explain += `, raised to min ${minSize}`;
  } else if (to > size) {
    const limit = scaleUpLimit(size, events, policy, now);
    if (to > limit && limit < maxSize) {
      to = limit;
      explain += `, limited to ${limit} (max(${policy.scaleUpMaxPercent}%, ${policy.scaleUpMaxVms}) per ${Math.round(policy.scaleUpPeriodMs / 1000)} s)`;
    } else if (to > maxSize) {
      to = maxSize;
      explain += `, capped by max ${maxSize}`;
    }
  }
  return finish(to, { recommendations, quickFloors, quickFloorsSinceMs, level }, {
    ...base,
    predictedSize: prediction?.size ?? 0,
    predictedCores: prediction?.cores ?? 0,
    reason: to > size ? "ScaledOut" : "ScaledIn",
    toSize: to,
    message: explain,
  });
}

/**
 * The `count` members a scale-in removes, by `order` (oldest-first: the earliest added first;
 * newest-first: the latest first; ties by index), never a protected one: fewer when not enough
 * members are unprotected.
 */
export function membersToRemove(members: readonly ScaleMember[], protectedNames: readonly string[], order: ResolvedScalePolicy["scaleInOrder"], count: number): string[] {
  if (count <= 0) return [];
  const guarded = new Set(protectedNames);
  const sign = order === "newest-first" ? -1 : 1;
  return members
    .filter((m) => !guarded.has(m.name))
    .sort((a, b) => sign * (a.addedAtMs - b.addedAtMs || a.index - b.index))
    .slice(0, count)
    .map((m) => m.name);
}
