import type { LoadForecast } from "@berth/api";

/**
 * A scale group's demand learnt per time of day (pure: no clock, no I/O). The stored
 * `LoadForecast` holds, for each bucket of the period (5 min of a day by default), the CPU cores
 * the group's members used on average in that bucket, as a weighted mean over the periods seen,
 * and how many periods were learnt into it.
 *
 * Choices, and why:
 * - **Buckets are aligned on Unix time** (`t mod period`): a day bucket starts at 00:00 UTC. The
 *   pattern is the same whatever the time zone; only its phase differs.
 * - **The mean of a bucket, not its peak**: what is learnt is the load the group carried for a
 *   whole bucket; a burst of seconds inside one bucket is the reactive rule's business.
 * - **A bucket is learnt once it has ended, and only when it was seen for at least half of it**
 *   (a leader that took over mid-bucket does not learn a fragment as if it were the bucket).
 * - **The newest period weighs most, with a floor**: the first periods are an ordinary mean (the
 *   n-th period weighs 1/n), then each new period weighs {@link FORECAST_NEWEST_WEIGHT} (an
 *   exponentially weighted mean: the older periods fade by 1 − w each day). A plain mean would
 *   never forget a pattern that changed; a high weight would learn a one-off spike as if it were
 *   the pattern. With w = 0.3, a spike seen once is half its size in the forecast after one more
 *   period and a fifth after three, while a spike that recurs every period stays whole.
 * - **State is bounded**: one number and one count per bucket (period / bucket of each, at most
 *   {@link FORECAST_MAX_BUCKETS}), whatever the history's length.
 */

/** A day. */
export const FORECAST_DEFAULT_PERIOD_MS = 86_400_000;
/** 5 minutes. */
export const FORECAST_DEFAULT_BUCKET_MS = 300_000;
/** A forecast with more buckets than this is not one this code wrote: it is started afresh. */
export const FORECAST_MAX_BUCKETS = 10_080; // a week of minutes
/** The weight of the newest period once more than 1 / weight periods were learnt. */
export const FORECAST_NEWEST_WEIGHT = 0.3;

/** An empty forecast: nothing learnt in any bucket. */
export function emptyForecast(periodMs = FORECAST_DEFAULT_PERIOD_MS, bucketMs = FORECAST_DEFAULT_BUCKET_MS): LoadForecast {
  const n = bucketCount(periodMs, bucketMs);
  if (n === undefined) throw new RangeError(`a forecast's period (${periodMs} ms) must be a whole number of buckets (${bucketMs} ms), at most ${FORECAST_MAX_BUCKETS}`);
  return { periodMs, bucketMs, cores: new Array<number>(n).fill(0), periods: new Array<number>(n).fill(0) };
}

/**
 * The stored forecast as this code reads it: the proto's zeros take the defaults (a day of 5 min
 * buckets), and a forecast whose shape is not one this code writes (a period that is not a whole
 * number of buckets, arrays of the wrong length, values that are not finite and non-negative) is
 * replaced by an empty one. Never changes `forecast`.
 */
export function usableForecast(forecast: LoadForecast | undefined): LoadForecast {
  if (!forecast) return emptyForecast();
  const periodMs = forecast.periodMs || FORECAST_DEFAULT_PERIOD_MS;
  const bucketMs = forecast.bucketMs || FORECAST_DEFAULT_BUCKET_MS;
  const n = bucketCount(periodMs, bucketMs);
  if (n === undefined) return emptyForecast();
  if (forecast.cores.length === 0 && forecast.periods.length === 0) return emptyForecast(periodMs, bucketMs);
  if (forecast.cores.length !== n || forecast.periods.length !== n) return emptyForecast(periodMs, bucketMs);
  for (let i = 0; i < n; i++) {
    const c = forecast.cores[i]!;
    const p = forecast.periods[i]!;
    if (!Number.isFinite(c) || c < 0 || !Number.isSafeInteger(p) || p < 0) return emptyForecast(periodMs, bucketMs);
  }
  return forecast.periodMs === periodMs && forecast.bucketMs === bucketMs ? forecast : { ...forecast, periodMs, bucketMs };
}

function bucketCount(periodMs: number, bucketMs: number): number | undefined {
  if (!Number.isSafeInteger(periodMs) || !Number.isSafeInteger(bucketMs) || bucketMs <= 0 || periodMs <= 0) return undefined;
  if (periodMs % bucketMs !== 0) return undefined;
  const n = periodMs / bucketMs;
  return n <= FORECAST_MAX_BUCKETS ? n : undefined;
}

/** The bucket of the period that time `t` (Unix ms) falls in. */
export function bucketIndexAt(forecast: LoadForecast, t: number): number {
  const phase = ((t % forecast.periodMs) + forecast.periodMs) % forecast.periodMs;
  return Math.floor(phase / forecast.bucketMs);
}

/**
 * The forecast with one more period learnt into `bucket`: `cores` weighs 1/(n+1) over the n
 * periods learnt so far while that is more than {@link FORECAST_NEWEST_WEIGHT}, then that weight.
 * Returns a new forecast; `forecast` is not changed.
 */
export function learnBucket(forecast: LoadForecast, bucket: number, cores: number): LoadForecast {
  if (!Number.isInteger(bucket) || bucket < 0 || bucket >= forecast.cores.length) throw new RangeError(`no bucket ${bucket} in a forecast of ${forecast.cores.length}`);
  if (!Number.isFinite(cores) || cores < 0) throw new RangeError(`cores must be finite and ≥ 0 (got ${cores})`);
  const seen = forecast.periods[bucket]!;
  const weight = Math.max(FORECAST_NEWEST_WEIGHT, 1 / (seen + 1));
  const next = { ...forecast, cores: forecast.cores.slice(), periods: forecast.periods.slice() };
  next.cores[bucket] = seen === 0 ? cores : (1 - weight) * forecast.cores[bucket]! + weight * cores;
  next.periods[bucket] = Math.min(seen + 1, 0xffff_ffff); // uint32 on the wire
  return next;
}

/** The demand seen so far in the bucket being filled (the autoscaler's memory, never stored). */
export interface BucketFill {
  /** Start of the bucket (Unix ms, a multiple of the forecast's bucket). */
  readonly bucketStartMs: number;
  readonly coresSum: number;
  readonly samples: number;
}

/** What one observation did: the forecast (changed only when a bucket was learnt) and the fill. */
export interface ObservedDemand {
  forecast: LoadForecast | undefined;
  /** A bucket ended and was learnt: the forecast should be written (at most once per bucket). */
  changed: boolean;
  fill: BucketFill | undefined;
}

/**
 * Adds one sample of the group's demand (`cores`, the CPU cores its members use now; undefined
 * when nothing was measured) at `now`. When `now` is past the bucket being filled, that bucket is
 * learnt (if it holds samples for at least half of it at one per `intervalMs`) and a new one
 * starts. The forecast stays `undefined` until a bucket is learnt.
 */
export function observeDemand(
  stored: LoadForecast | undefined,
  fill: BucketFill | undefined,
  now: number,
  cores: number | undefined,
  intervalMs: number,
): ObservedDemand {
  const shape = usableForecast(stored);
  const bucketStartMs = now - (((now % shape.bucketMs) + shape.bucketMs) % shape.bucketMs);
  let forecast = stored;
  let changed = false;
  let current = fill;
  if (current && current.bucketStartMs !== bucketStartMs) {
    const needed = Math.max(1, Math.floor(shape.bucketMs / Math.max(1, intervalMs) / 2));
    if (current.bucketStartMs < bucketStartMs && current.samples >= needed) {
      forecast = learnBucket(shape, bucketIndexAt(shape, current.bucketStartMs), current.coresSum / current.samples);
      changed = true;
    }
    current = undefined;
  }
  if (cores !== undefined && Number.isFinite(cores) && cores >= 0) {
    current = current
      ? { bucketStartMs, coresSum: current.coresSum + cores, samples: current.samples + 1 }
      : { bucketStartMs, coresSum: cores, samples: 1 };
  }
  return { forecast, changed, fill: current };
}

/** What the forecast foresees over a stretch of time. */
export interface ForecastWindow {
  /** The highest learnt demand over the stretch (cores). */
  peakCores: number;
  /** The learnt demand at the stretch's start (cores). */
  nowCores: number;
}

/**
 * The learnt demand at time `t`: piecewise linear between the buckets' middles (a bucket's mean
 * is taken as the demand at its middle), so a forecast rises through a bucket instead of jumping
 * at its start. Only over buckets learnt over at least `minPeriods` periods; undefined when the
 * bucket of `t` was not; a neighbour that was not is left out (the bucket's own mean holds).
 */
export function forecastAt(stored: LoadForecast | undefined, t: number, minPeriods = 1): number | undefined {
  if (!stored) return undefined;
  const f = usableForecast(stored);
  return interpolated(f, t, minPeriods);
}

function interpolated(f: LoadForecast, t: number, minPeriods: number): number | undefined {
  const b = bucketIndexAt(f, t);
  if (f.periods[b]! < minPeriods) return undefined;
  const n = f.cores.length;
  const middle = Math.floor(t / f.bucketMs) * f.bucketMs + f.bucketMs / 2;
  const other = t >= middle ? (b + 1) % n : (b + n - 1) % n;
  if (f.periods[other]! < minPeriods) return f.cores[b]!;
  const share = Math.abs(t - middle) / f.bucketMs;
  return f.cores[b]! + share * (f.cores[other]! - f.cores[b]!);
}

/**
 * The learnt demand over [from, to] (Unix ms): its highest value (see {@link forecastAt}: the
 * highest of the stretch's ends and the middles of the buckets inside it) and its value at
 * `from`. Undefined when a bucket the stretch touches was learnt over fewer than `minPeriods`
 * periods: a forecast with holes foresees nothing.
 */
export function forecastOver(stored: LoadForecast | undefined, from: number, to: number, minPeriods = 1): ForecastWindow | undefined {
  if (!stored) return undefined;
  const f = usableForecast(stored);
  const end = Math.max(from, to);
  const first = Math.floor(from / f.bucketMs);
  const last = Math.min(Math.floor(end / f.bucketMs), first + f.cores.length - 1);
  for (let k = first; k <= last; k++) if (f.periods[bucketIndexAt(f, k * f.bucketMs)]! < minPeriods) return undefined;
  const nowCores = interpolated(f, from, minPeriods)!;
  let peak = Math.max(nowCores, interpolated(f, end, minPeriods) ?? 0);
  for (let k = first; k <= last; k++) {
    const middle = k * f.bucketMs + f.bucketMs / 2;
    if (middle > from && middle < end) peak = Math.max(peak, f.cores[bucketIndexAt(f, middle)]!);
  }
  return { peakCores: peak, nowCores };
}
