/**
 * Simulated guest load: what fraction of its vCPUs and memory a fake VM uses over time.
 *
 * A pattern gives a demand in [0, 1] at each instant of the clock's time axis (ms; the real
 * clock's is the Unix epoch, so a diurnal pattern with a 24 h period follows UTC days). Pure: no
 * clock, no state.
 */
import { invalidArgument } from "@berth/core";

/** The same fraction at every instant. */
export interface ConstantPattern {
  kind: "constant";
  /** In [0, 1]. */
  fraction: number;
}

/** A sinusoid between `min` and `max`, peaking at `peakAtMs` and every `periodMs` from it. */
export interface DiurnalPattern {
  kind: "diurnal";
  /** > 0; 86 400 000 for a day. */
  periodMs: number;
  /** In [0, 1], ≤ max. */
  min: number;
  /** In [0, 1]. */
  max: number;
  /** An instant of maximum demand. Default 0. */
  peakAtMs?: number;
}

/** `base`, rising to `peak` for `durationMs` from `startMs` (and every `repeatMs` after, if given). */
export interface SpikePattern {
  kind: "spike";
  /** In [0, 1]. */
  base: number;
  /** In [0, 1]. */
  peak: number;
  startMs: number;
  /** ≥ 0 (and ≤ repeatMs). */
  durationMs: number;
  /** > 0: the spike recurs with this period. Absent: once. */
  repeatMs?: number;
}

export type LoadPattern = ConstantPattern | DiurnalPattern | SpikePattern;

/** A VM's simulated demand: of its vCPUs, of its memory, and how fast it writes to its memory. */
export interface LoadProfile {
  cpu: LoadPattern;
  memory: LoadPattern;
  /**
   * How fast the guest dirties memory, in MiB/s (≥ 0): what a live migration's pre-copy passes must
   * send again. At or above the migration bandwidth a migration does not converge.
   * @default 8 ({@link DEFAULT_DIRTY_RATE_MIB_PER_S})
   */
  dirtyRateMibPerS: number;
}

/** The dirty rate of a VM nobody configured: a mostly idle guest. */
export const DEFAULT_DIRTY_RATE_MIB_PER_S = 8;

/** The load of a VM nobody configured: a quarter of its CPUs, half its memory, 8 MiB/s dirtied. */
export const DEFAULT_LOAD_PROFILE: Readonly<LoadProfile> = Object.freeze({
  cpu: Object.freeze({ kind: "constant", fraction: 0.25 }) as ConstantPattern,
  memory: Object.freeze({ kind: "constant", fraction: 0.5 }) as ConstantPattern,
  dirtyRateMibPerS: DEFAULT_DIRTY_RATE_MIB_PER_S,
});

/** The demand of `pattern` at `tMs`, a fraction in [0, 1]. */
export function demandAt(pattern: LoadPattern, tMs: number): number {
  switch (pattern.kind) {
    case "constant":
      return clamp01(pattern.fraction);
    case "diurnal": {
      const x = mod(tMs - (pattern.peakAtMs ?? 0), pattern.periodMs);
      const mid = (pattern.min + pattern.max) / 2;
      const amp = (pattern.max - pattern.min) / 2;
      return clamp01(mid + amp * Math.cos((2 * Math.PI * x) / pattern.periodMs));
    }
    case "spike":
      return clamp01(inSpike(pattern, tMs) ? pattern.peak : pattern.base);
  }
}

/**
 * ∫ demand dt over [fromMs, toMs], in fraction·ms (0 if toMs ≤ fromMs), exactly: the CPU time a
 * VM of one vCPU consumes in that interval, in ms. Always within [0, toMs − fromMs].
 */
export function integrateDemand(pattern: LoadPattern, fromMs: number, toMs: number): number {
  if (!(toMs > fromMs)) return 0;
  const span = toMs - fromMs;
  let value: number;
  switch (pattern.kind) {
    case "constant":
      value = clamp01(pattern.fraction) * span;
      break;
    case "diurnal": {
      const p = pattern.periodMs;
      const w = (2 * Math.PI) / p;
      const mid = (pattern.min + pattern.max) / 2;
      const amp = (pattern.max - pattern.min) / 2;
      const peak = pattern.peakAtMs ?? 0;
      // Whole periods contribute mid·p each; the remainder is integrated in closed form.
      const a = mod(fromMs - peak, p);
      const b = a + (span % p);
      value = mid * span + (amp / w) * (Math.sin(w * b) - Math.sin(w * a));
      break;
    }
    case "spike": {
      const inside = spikeTimeUntil(pattern, toMs) - spikeTimeUntil(pattern, fromMs);
      value = pattern.base * (span - inside) + pattern.peak * inside;
      break;
    }
  }
  return Math.min(span, Math.max(0, value));
}

/**
 * Checks a pattern read from options, an API call or the control file. Throws INVALID_ARGUMENT
 * naming the field (`${field}.kind: ...`). Returns a fresh, frozen copy without unknown keys.
 */
export function validateLoadPattern(raw: unknown, field: string): LoadPattern {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw invalidArgument(field, "must be an object");
  const r = raw as Record<string, unknown>;
  const fraction = (key: string): number => {
    const v = r[key];
    if (typeof v !== "number" || !(v >= 0 && v <= 1)) throw invalidArgument(`${field}.${key}`, `must be a number in [0, 1] (got ${String(v)})`);
    return v;
  };
  const finite = (key: string, optional = false): number | undefined => {
    const v = r[key];
    if (v === undefined && optional) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v)) throw invalidArgument(`${field}.${key}`, `must be a finite number of ms (got ${String(v)})`);
    return v;
  };
  const known = (keys: readonly string[]): void => {
    for (const k of Object.keys(r)) {
      if (!keys.includes(k)) throw invalidArgument(`${field}.${k}`, `unknown field for a ${String(r["kind"])} pattern (known: ${keys.join(", ")})`);
    }
  };
  switch (r["kind"]) {
    case "constant":
      known(["kind", "fraction"]);
      return Object.freeze({ kind: "constant", fraction: fraction("fraction") });
    case "diurnal": {
      known(["kind", "periodMs", "min", "max", "peakAtMs"]);
      const periodMs = finite("periodMs")!;
      if (!(periodMs > 0)) throw invalidArgument(`${field}.periodMs`, `must be > 0 (got ${periodMs})`);
      const min = fraction("min");
      const max = fraction("max");
      if (min > max) throw invalidArgument(`${field}.min`, `must be ≤ max (${min} > ${max})`);
      const peakAtMs = finite("peakAtMs", true);
      return Object.freeze({ kind: "diurnal", periodMs, min, max, ...(peakAtMs === undefined ? {} : { peakAtMs }) });
    }
    case "spike": {
      known(["kind", "base", "peak", "startMs", "durationMs", "repeatMs"]);
      const base = fraction("base");
      const peak = fraction("peak");
      const startMs = finite("startMs")!;
      const durationMs = finite("durationMs")!;
      if (durationMs < 0) throw invalidArgument(`${field}.durationMs`, `must be ≥ 0 (got ${durationMs})`);
      const repeatMs = finite("repeatMs", true);
      if (repeatMs !== undefined && !(repeatMs > 0 && repeatMs >= durationMs)) {
        throw invalidArgument(`${field}.repeatMs`, `must be > 0 and ≥ durationMs (got ${repeatMs})`);
      }
      return Object.freeze({ kind: "spike", base, peak, startMs, durationMs, ...(repeatMs === undefined ? {} : { repeatMs }) });
    }
    default:
      throw invalidArgument(`${field}.kind`, `must be "constant", "diurnal" or "spike" (got ${JSON.stringify(r["kind"])})`);
  }
}

/** Checks `{ cpu?, memory?, dirtyRateMibPerS? }`; absent parts stay absent (they fall back to a default). */
export function validateLoadProfile(raw: unknown, field: string): Partial<LoadProfile> {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw invalidArgument(field, "must be an object with cpu, memory and/or dirtyRateMibPerS");
  }
  const r = raw as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    if (k !== "cpu" && k !== "memory" && k !== "dirtyRateMibPerS") {
      throw invalidArgument(`${field}.${k}`, "unknown field (known: cpu, memory, dirtyRateMibPerS)");
    }
  }
  const out: Partial<LoadProfile> = {};
  if (r["cpu"] !== undefined) out.cpu = validateLoadPattern(r["cpu"], `${field}.cpu`);
  if (r["memory"] !== undefined) out.memory = validateLoadPattern(r["memory"], `${field}.memory`);
  const dirty = r["dirtyRateMibPerS"];
  if (dirty !== undefined) {
    if (typeof dirty !== "number" || !Number.isFinite(dirty) || dirty < 0) {
      throw invalidArgument(`${field}.dirtyRateMibPerS`, `must be a number of MiB/s ≥ 0 (got ${String(dirty)})`);
    }
    out.dirtyRateMibPerS = dirty;
  }
  return Object.freeze(out);
}

// ---- helpers -----------------------------------------------------------------------------------

function clamp01(v: number): number {
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

/** `a mod n` in [0, n). */
function mod(a: number, n: number): number {
  const r = a % n;
  return r < 0 ? r + n : r;
}

function inSpike(p: SpikePattern, t: number): boolean {
  if (t < p.startMs) return false;
  const into = p.repeatMs === undefined ? t - p.startMs : mod(t - p.startMs, p.repeatMs);
  return into < p.durationMs;
}

/** Time spent at peak from `startMs` until `t`. */
function spikeTimeUntil(p: SpikePattern, t: number): number {
  if (t <= p.startMs) return 0;
  const elapsed = t - p.startMs;
  if (p.repeatMs === undefined) return Math.min(elapsed, p.durationMs);
  const cycles = Math.floor(elapsed / p.repeatMs);
  return cycles * p.durationMs + Math.min(elapsed - cycles * p.repeatMs, p.durationMs);
}
