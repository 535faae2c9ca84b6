import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { LoadForecast } from "@berth/api";
import {
  bucketIndexAt,
  emptyForecast,
  FORECAST_DEFAULT_BUCKET_MS,
  FORECAST_DEFAULT_PERIOD_MS,
  FORECAST_MAX_BUCKETS,
  forecastAt,
  forecastOver,
  learnBucket,
  observeDemand,
  usableForecast,
  type BucketFill,
} from "./load-forecast.js";

const DAY = FORECAST_DEFAULT_PERIOD_MS;
const BUCKET = FORECAST_DEFAULT_BUCKET_MS;
const STEP = 15_000;
const START = Date.UTC(2025, 0, 6); // 00:00 UTC

/** Feeds one sample per step from `from` for `ms`, demand(t) cores; returns the forecast and how many writes it asked for. */
function feed(forecast: LoadForecast | undefined, from: number, ms: number, demand: (t: number) => number, fill?: BucketFill) {
  let f = forecast;
  let current = fill;
  let writes = 0;
  for (let t = from; t < from + ms; t += STEP) {
    const out = observeDemand(f, current, t, demand(t), STEP);
    f = out.forecast;
    current = out.fill;
    if (out.changed) writes++;
  }
  return { forecast: f, fill: current, writes };
}

/** A daily pattern: 4 cores, 16 from 10:00 to 11:00. */
const daily = (t: number) => {
  const hour = ((t - START) % DAY) / 3_600_000;
  return hour >= 10 && hour < 11 ? 16 : 4;
};

describe("load forecast", () => {
  it("learns a daily pattern in one period and predicts it the next", () => {
    const { forecast, writes } = feed(undefined, START, DAY + BUCKET, daily);
    expect(writes).toBe(DAY / BUCKET); // one write per bucket, the last one when the next day began
    const f = forecast!;
    expect(f.cores).toHaveLength(288);
    expect(f.periods.every((p) => p === 1)).toBe(true);
    expect(f.cores[bucketIndexAt(f, START + 10.5 * 3_600_000)]).toBeCloseTo(16, 9);
    expect(f.cores[bucketIndexAt(f, START + 3 * 3_600_000)]).toBeCloseTo(4, 9);
    // The next day, 5 minutes before 10:00, the next 10 minutes hold the hour of 16 cores.
    const ahead = forecastOver(f, START + DAY + 9.9 * 3_600_000, START + DAY + 10.1 * 3_600_000)!;
    expect(ahead.peakCores).toBeCloseTo(16, 9);
    expect(ahead.nowCores).toBeCloseTo(4, 9);
  });

  it("interpolates between bucket middles, so the forecast rises through a bucket", () => {
    let f = emptyForecast();
    f = learnBucket(f, 0, 4);
    f = learnBucket(f, 1, 8);
    expect(forecastAt(f, START + BUCKET / 2)).toBeCloseTo(4, 9);
    expect(forecastAt(f, START + BUCKET)).toBeCloseTo(6, 9); // half way between the middles
    expect(forecastAt(f, START + 1.5 * BUCKET)).toBeCloseTo(8, 9);
    // A neighbour never learnt is left out: the bucket's own mean holds.
    expect(forecastAt(f, START + 1.9 * BUCKET)).toBeCloseTo(8, 9);
    expect(forecastAt(f, START + 2.5 * BUCKET)).toBeUndefined();
  });

  it("foresees nothing over a stretch that touches a bucket never learnt", () => {
    const f = learnBucket(emptyForecast(), 0, 4);
    expect(forecastOver(f, START, START + BUCKET - 1)).toBeDefined();
    expect(forecastOver(f, START, START + BUCKET + 1)).toBeUndefined(); // bucket 1 never learnt
    expect(forecastOver(f, START, START + 10, 2)).toBeUndefined(); // learnt once, two asked
    expect(forecastOver(undefined, START, START + 10)).toBeUndefined();
  });

  it("weighs a one-off spike less than a recurring one", () => {
    const spike = (t: number) => {
      const hour = ((t - START) % DAY) / 3_600_000;
      return hour >= 10 && hour < 10.5 ? 20 : 4;
    };
    // One-off: the spike on day 1 only; recurring: every day; 4 days each.
    let oneOff = feed(undefined, START, DAY, spike).forecast;
    oneOff = feed(oneOff, START + DAY, 3 * DAY + BUCKET, () => 4).forecast;
    const recurring = feed(undefined, START, 4 * DAY + BUCKET, spike).forecast!;
    const b = bucketIndexAt(recurring, START + 10.25 * 3_600_000);
    expect(recurring.cores[b]).toBeCloseTo(20, 9);
    // Weights 1, 1/2, 1/3, then 0.3: the spike's 16 extra cores are 16 × (1/2)(2/3)(0.7) ≈ 3.7 after three quiet days.
    expect(oneOff!.cores[b]).toBeCloseTo(4 + 16 * (1 / 2) * (2 / 3) * 0.7, 6);
    expect(oneOff!.periods[b]).toBe(4);
  });

  it("follows a pattern that changed, the newest period weighing most", () => {
    let f = feed(undefined, START, 5 * DAY + BUCKET, () => 10).forecast!;
    f = feed(f, START + 5 * DAY + BUCKET, DAY, () => 20).forecast!;
    const b = bucketIndexAt(f, START + 12 * 3_600_000);
    expect(f.cores[b]).toBeCloseTo(13, 6); // 0.7 × 10 + 0.3 × 20
    f = feed(f, START + 6 * DAY + BUCKET, 3 * DAY, () => 20).forecast!;
    expect(f.cores[b]).toBeCloseTo(20 - 10 * 0.7 ** 4, 6); // the old level fades by 0.7 a period
  });

  it("learns a bucket only once it has ended, and only when at least half of it was seen", () => {
    // A leader that took over 4 minutes into a 5-minute bucket: 4 samples, fewer than half (10).
    const late = feed(undefined, START + 4 * 60_000, 2 * 60_000, () => 8);
    expect(late.writes).toBe(0);
    expect(late.forecast).toBeUndefined();
    // The whole of the next bucket is learnt when the one after begins.
    const next = feed(late.forecast, START + 6 * 60_000, 4 * 60_000 + STEP, () => 8, late.fill);
    expect(next.writes).toBe(1);
    expect(next.forecast!.cores[0]).toBe(0);
    expect(next.forecast!.periods[0]).toBe(0);
    expect(next.forecast!.cores[1]).toBeCloseTo(8, 9);
    // No measurement: nothing to learn.
    expect(observeDemand(undefined, undefined, START, undefined, STEP)).toEqual({ forecast: undefined, changed: false, fill: undefined });
  });

  it("reads the proto's zeros as the defaults and starts afresh from a forecast it did not write", () => {
    expect(usableForecast({ periodMs: 0, bucketMs: 0, cores: [], periods: [] })).toEqual(emptyForecast());
    const wrongLength = { periodMs: DAY, bucketMs: BUCKET, cores: [1, 2], periods: [1, 1] };
    expect(usableForecast(wrongLength)).toEqual(emptyForecast());
    const notWhole = { periodMs: DAY, bucketMs: 7_000, cores: [], periods: [] };
    expect(usableForecast(notWhole)).toEqual(emptyForecast());
    const tooMany = { periodMs: DAY, bucketMs: 1_000, cores: [], periods: [] };
    expect(usableForecast(tooMany)).toEqual(emptyForecast());
    const negative = emptyForecast();
    negative.cores[3] = -1;
    expect(usableForecast(negative).cores[3]).toBe(0);
    const hourly = emptyForecast(3_600_000, 60_000);
    expect(usableForecast(hourly)).toBe(hourly);
    expect(() => emptyForecast(DAY, 7_000)).toThrow(RangeError);
  });

  it("keeps bounded state whatever it is fed (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ gapSteps: fc.integer({ min: 1, max: 200 }), cores: fc.option(fc.double({ min: 0, max: 1e6, noNaN: true }), { nil: undefined }) }), { maxLength: 300 }),
        (samples) => {
          let f: LoadForecast | undefined;
          let fill: BucketFill | undefined;
          let t = START;
          const writesInBucket = new Map<number, number>();
          for (const s of samples) {
            t += s.gapSteps * STEP;
            const out = observeDemand(f, fill, t, s.cores, STEP);
            if (out.changed) {
              const bucket = Math.floor(fill!.bucketStartMs / BUCKET);
              writesInBucket.set(bucket, (writesInBucket.get(bucket) ?? 0) + 1);
            }
            f = out.forecast;
            fill = out.fill;
            if (f) {
              expect(f.cores).toHaveLength(288);
              expect(f.periods).toHaveLength(288);
              expect(f.cores.every((c) => Number.isFinite(c) && c >= 0 && c <= 1e6)).toBe(true);
            }
            if (fill) expect(fill.samples).toBeLessThanOrEqual(BUCKET / STEP);
          }
          // At most one write per bucket learnt.
          expect([...writesInBucket.values()].every((n) => n === 1)).toBe(true);
        },
      ),
    );
    expect(FORECAST_MAX_BUCKETS).toBeGreaterThanOrEqual(288);
  });
});
