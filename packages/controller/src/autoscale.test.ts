import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ScaleInOrder, ScalePrediction, type LoadForecast, type ScaleMember } from "@berth/api";
import { ErrorCode, isBerthError } from "@berth/core";
import {
  autoscaleStep,
  HPA_POLICY,
  initialAutoscaleMemory,
  membersToRemove,
  resolveScalePolicy,
  type AutoscaleInput,
  type AutoscaleMemory,
  type MemberLoad,
  type ResolvedScalePolicy,
} from "./autoscale.js";
import { emptyForecast, learnBucket } from "./load-forecast.js";

const NOW = Date.UTC(2025, 0, 6, 12); // 12:00 UTC: bucket 144 of the day
const HOUR = 3_600_000;
const HPA: ResolvedScalePolicy = { ...HPA_POLICY, targetCpu: 0.6 };
const BERTH: ResolvedScalePolicy = resolveScalePolicy({ targetCpu: 0.6 });

/** `n` members of 2 vCPUs past their warm-up, each using `cores`. */
function warm(n: number, cores: number | undefined, from = 0): MemberLoad[] {
  return Array.from({ length: n }, (_, i) => ({ name: `g-${from + i}`, addedAtMs: NOW - HOUR, vcpus: 2, cpuCores: cores }));
}
/** `n` members added `agoMs` ago (within the warm-up when below it), each using `cores`. */
function added(n: number, agoMs: number, cores: number | undefined, from = 100): MemberLoad[] {
  return Array.from({ length: n }, (_, i) => ({ name: `g-${from + i}`, addedAtMs: NOW - agoMs, vcpus: 2, cpuCores: cores }));
}
/** A memory with nothing in its windows (an old leader's, long since settled). */
function settled(size: number, policy = HPA): AutoscaleMemory {
  return initialAutoscaleMemory(size, NOW - HOUR, policy);
}

function step(members: MemberLoad[], over: Partial<AutoscaleInput> = {}) {
  const policy = over.policy ?? HPA;
  return autoscaleStep({
    now: NOW,
    size: members.length,
    minSize: 1,
    maxSize: 100,
    members,
    policy,
    memory: settled(members.length, policy),
    forecast: undefined,
    ...over,
  });
}

describe("resolveScalePolicy", () => {
  const base = { targetCpu: 0.6, tolerance: 0, scaleDownWindowMs: 0, scaleUpMaxPercent: 0, scaleUpMaxVms: 0, scaleUpPeriodMs: 0, warmupMs: 0, intervalMs: 0, scaleInOrder: 0, prediction: 0 };

  it("fills HPA's defaults over the proto's zeros, prediction on", () => {
    expect(resolveScalePolicy(base)).toEqual({ ...HPA_POLICY, targetCpu: 0.6, prediction: true });
    expect(HPA_POLICY).toEqual({
      tolerance: 0.1,
      scaleDownWindowMs: 300_000,
      scaleUpMaxPercent: 100,
      scaleUpMaxVms: 4,
      scaleUpPeriodMs: 15_000,
      warmupMs: 180_000,
      intervalMs: 15_000,
      scaleInOrder: "oldest-first",
      prediction: false,
    });
    expect(resolveScalePolicy({ ...base, prediction: ScalePrediction.SCALE_PREDICTION_OFF, scaleInOrder: ScaleInOrder.SCALE_IN_ORDER_NEWEST_FIRST, tolerance: 0.2, intervalMs: 30_000 })).toMatchObject({
      prediction: false,
      scaleInOrder: "newest-first",
      tolerance: 0.2,
      intervalMs: 30_000,
    });
  });

  it("names the field, the value and the accepted range", () => {
    const cases: [Partial<typeof base> | undefined, string, RegExp][] = [
      [undefined, "policy.target_cpu", /is required/],
      [{ targetCpu: 1.5 }, "policy.target_cpu", /in \(0, 1\].*got 1\.5/],
      [{ targetCpu: -0.1 }, "policy.target_cpu", /got -0\.1/],
      [{ targetCpu: Number.NaN }, "policy.target_cpu", /got NaN/],
      [{ tolerance: 0.6 }, "policy.tolerance", /\[0, 0\.5\].*got 0\.6/],
      [{ scaleDownWindowMs: HOUR + 1 }, "policy.scale_down_window_ms", /from 1 to 3600000 ms.*got 3600001/],
      [{ scaleUpPeriodMs: 1.5 }, "policy.scale_up_period_ms", /whole number/],
      [{ warmupMs: 2 * HOUR }, "policy.warmup_ms", /to 3600000/],
      [{ intervalMs: 500 }, "policy.interval_ms", /from 1000 to 600000 ms.*got 500/],
      [{ intervalMs: 600_001 }, "policy.interval_ms", /got 600001/],
      [{ scaleUpMaxPercent: 1001 }, "policy.scale_up_max_percent", /to 1000 %/],
      [{ scaleUpMaxVms: 1001 }, "policy.scale_up_max_vms", /to 1000 VMs/],
      [{ scaleInOrder: 7 }, "policy.scale_in_order", /OLDEST_FIRST or NEWEST_FIRST.*got 7/],
      [{ prediction: 9 }, "policy.prediction", /ON or OFF.*got 9/],
    ];
    for (const [change, field, message] of cases) {
      const policy = change === undefined ? undefined : { ...base, ...change };
      let error: unknown;
      try {
        resolveScalePolicy(policy as never);
      } catch (e) {
        error = e;
      }
      expect(isBerthError(error, ErrorCode.InvalidArgument), `${field} ${JSON.stringify(change)}`).toBe(true);
      expect((error as { field: string }).field).toBe(field);
      expect((error as Error).message).toMatch(message);
    }
    expect(() => resolveScalePolicy({ ...base, targetCpu: 0.5 }, "spec.policy")).not.toThrow();
    expect(() => resolveScalePolicy({ ...base, targetCpu: 2 }, "spec.policy")).toThrow(/^spec\.policy\.target_cpu: /);
  });
});

describe("autoscaleStep: HPA's rule", () => {
  it("does not change within the tolerance band (ratio 1.09), scales at 1.11", () => {
    // 10 warm VMs of 2 vCPUs at 65.4 %: ratio 1.09.
    expect(step(warm(10, 2 * 0.654)).size).toBe(10);
    expect(step(warm(10, 2 * 0.546)).size).toBe(10); // ratio 0.91
    const out = step(warm(10, 2 * 0.666)); // ratio 1.11: ⌈10 × 1.11⌉ = 12
    expect(out.size).toBe(12);
    expect(out.decision).toMatchObject({ reason: "ScaledOut", fromSize: 10, toSize: 12, warmMembers: 10, warmingMembers: 0, reactiveSize: 12, predictedSize: 0 });
    expect(out.decision!.cpuUtilization).toBeCloseTo(0.666, 9);
  });

  it("says in one line what was measured and which rule or limit gave the size", () => {
    const out = step(warm(2, 1.9), { maxSize: 3 });
    expect(out.decision!.message).toBe("cpu 95% of 2 warm VMs against 60%: reactive ⌈2×0.95/0.6⌉=4, capped by max 3");
    expect(out.size).toBe(3);
  });

  it("adds at most max(100 %, 4) per scale-up period, counting the scale-ups within it", () => {
    const policy = { ...HPA, scaleUpPeriodMs: 60_000 };
    // 2 VMs at 100 % against 10 %: ⌈2 × 10⌉ = 20 asked; max(⌈2 × 2⌉, 2 + 4) = 6 allowed.
    const first = step(warm(2, 2), { policy: { ...policy, targetCpu: 0.1 } });
    expect(first.size).toBe(6);
    expect(first.decision!.message).toContain("limited to 6 (max(100%, 4) per 60 s)");
    // 15 s later, still within the period that began at 2: nothing more.
    const again = step(warm(6, 2), { policy: { ...policy, targetCpu: 0.1 }, now: NOW + 15_000, memory: first.memory });
    expect(again.size).toBe(6);
    // Once the period has passed: max(12, 10) = 12 from 6.
    const later = step(warm(6, 2), { policy: { ...policy, targetCpu: 0.1 }, now: NOW + 60_000, memory: again.memory });
    expect(later.size).toBe(12);
    // 100 % is the larger limit from 10: 20.
    expect(step(warm(10, 2), { policy: { ...policy, targetCpu: 0.1 } }).size).toBe(20);
    // A scale-in within the period is counted back (HPA: start = size − added + removed): from 8
    // after removing 2, the start is 10 and the limit max(20, 14) = 20, not max(16, 12) = 16.
    const memory: AutoscaleMemory = { ...settled(8), scaleEvents: [{ atMs: NOW - 10_000, change: -2 }] };
    expect(step(warm(8, 2), { policy: { ...policy, targetCpu: 0.1 }, memory }).size).toBe(20);
  });

  it("holds a scale-in at the highest recommendation of the window, and acts once the window has passed", () => {
    // A new leader at NOW with 10 VMs: its size is the recommendation for the next 300 s.
    let memory = initialAutoscaleMemory(10, NOW, HPA);
    let size = 10;
    const low = warm(10, 2 * 0.3); // ratio 0.5: ⌈10 × 0.5⌉ = 5
    for (let t = NOW; t < NOW + 300_000; t += 15_000) {
      const out = step(low, { now: t, memory });
      expect(out.size, `at +${(t - NOW) / 1000} s`).toBe(10);
      if (t > NOW) expect(out.decision).toBeUndefined();
      memory = out.memory;
      size = out.size;
    }
    const out = step(low, { now: NOW + 300_000, memory });
    expect(size).toBe(10);
    expect(out.size).toBe(5);
    expect(out.decision).toMatchObject({ reason: "ScaledIn", fromSize: 10, toSize: 5, reactiveSize: 5 });
  });

  it("holds at a higher recommendation made within the window", () => {
    let memory = settled(10);
    memory = step(warm(10, 2 * 0.8), { memory, maxSize: 10 }).memory; // asked ⌈10 × 1.33⌉ = 14, capped by max 10
    const out = step(warm(10, 2 * 0.3), { now: NOW + 60_000, memory, maxSize: 10 });
    expect(out.size).toBe(10);
    const later = step(warm(10, 2 * 0.3), { now: NOW + 300_000, memory: out.memory, maxSize: 10 });
    expect(later.size).toBe(5);
  });

  it("counts members warming up, or without a measurement, as idle on a scale-out and as busy on a scale-in", () => {
    // 4 warm at 100 % (ratio 1.67) and 4 warming up: with them idle 50 % (ratio 0.83), the direction flips: no change.
    const flipped = step([...warm(4, 2), ...added(4, 60_000, 0.1)]);
    expect(flipped.size).toBe(8);
    // 4 warm at 100 %, 2 warming idle: 8 / 12 cores = 66.7 %, ratio 1.11, outside the band: ⌈6 × 1.11⌉ = 7.
    const up = step([...warm(4, 2), ...added(2, 60_000, undefined)]);
    expect(up.size).toBe(7);
    expect(up.decision).toMatchObject({ warmMembers: 4, warmingMembers: 2 });
    expect(up.decision!.message).toContain("2 others as idle");
    // 4 warm at 15 % (ratio 0.25) and 2 warming counted busy: (1.2 + 4) / 12 = 43 %, ratio 0.72: ⌈6 × 0.72⌉ = 5 (not ⌈4 × 0.25⌉ = 1).
    const down = step([...warm(4, 0.3), ...added(2, 60_000, 0.1)]);
    expect(down.size).toBe(5);
    expect(down.decision!.message).toContain("2 others as busy");
    // A member past its warm-up without a measurement (its host silent) counts the same way.
    expect(step([...warm(4, 0.3), ...warm(2, undefined, 50)]).size).toBe(5);
    // 3 warm at 45 % (ratio 0.75) and 3 others busy: 72.5 %, ratio 1.21: the direction flips: no change.
    expect(step([...warm(3, 0.9), ...added(3, 0, undefined)]).size).toBe(6);
    // Nothing measured at all: no change.
    expect(step(added(3, 10_000, undefined)).size).toBe(3);
  });

  it("holds min and max: a size outside goes to the bound at once; scale-out capped, scale-in floored", () => {
    const below = step(warm(3, 0.1), { minSize: 5 });
    expect(below.size).toBe(5);
    expect(below.decision).toMatchObject({ reason: "SizeBounded", fromSize: 3, toSize: 5 });
    expect(below.decision!.message).toBe("size 3 below min 5: set to 5");
    const above = step(warm(12, 2), { maxSize: 10 });
    expect(above.size).toBe(10);
    expect(above.decision!.message).toBe("size 12 above max 10: set to 10");
    expect(step(warm(4, 2), { maxSize: 6 }).size).toBe(6);
    const floored = step(warm(6, 0.1), { minSize: 4 });
    expect(floored.size).toBe(4);
    expect(floored.decision!.message).toContain("raised to min 4");
  });

  it("a new leader's memory does not scale in at once", () => {
    const memory = initialAutoscaleMemory(10, NOW, HPA);
    expect(step(warm(10, 0.1), { memory }).size).toBe(10);
    expect(step(warm(10, 0.1), { memory, now: NOW + 285_000 }).size).toBe(10);
    // Prediction on, with a forecast that agrees: not within the first window either.
    const berthMemory = initialAutoscaleMemory(10, NOW, BERTH);
    let m = berthMemory;
    for (let t = NOW; t < NOW + 300_000; t += 15_000) {
      const out = step(warm(10, 0.4), { policy: BERTH, memory: m, now: t, forecast: flat(4) });
      expect(out.size).toBe(10);
      m = out.memory;
    }
    // Scale-out is never held back: ⌈10 × 1.67⌉ = 17.
    expect(step(warm(10, 2), { memory }).size).toBe(17);
  });

  it("remembers only what its windows need", () => {
    let memory = settled(10);
    for (let i = 0; i < 200; i++) {
      const cores = 0.6 + 0.6 * Math.sin(i);
      memory = step(warm(10, cores), { now: NOW + i * 15_000, memory, maxSize: 10 }).memory;
    }
    expect(memory.recommendations.length).toBeLessThanOrEqual(300_000 / 15_000);
    expect(memory.scaleEvents.length).toBeLessThanOrEqual(1);
  });
});

/** A forecast learnt over one period: `cores` in every bucket. */
function flat(cores: number, change?: (bucket: number) => number | undefined): LoadForecast {
  let f = emptyForecast();
  for (let b = 0; b < f.cores.length; b++) f = learnBucket(f, b, change?.(b) ?? cores);
  return f;
}

describe("autoscaleStep: Berth's prediction", () => {
  const bucketNow = 144; // NOW is 12:00 UTC

  it("scales out ahead of the learnt pattern, never below the reactive size", () => {
    // 4 VMs at 50 % (4 cores, what the forecast says now); 12 cores learnt from 12:05.
    const forecast = flat(4, (b) => (b > bucketNow ? 12 : undefined));
    const members = warm(4, 1);
    const now = NOW + 10_000; // the horizon (195 s) reaches 12:03:25: 4 + (55 / 300) × 8 = 5.47 cores
    expect(step(members, { now, forecast }).size).toBe(4); // HPA: ratio 0.83, ⌈4 × 0.83⌉ = 4
    const out = step(members, { policy: BERTH, now, forecast, memory: settled(4, BERTH) });
    expect(out.size).toBe(5); // ⌈5.47 / 1.2⌉
    expect(out.decision).toMatchObject({ reason: "ScaledOut", reactiveSize: 4, predictedSize: 5 });
    expect(out.decision!.predictedCores).toBeCloseTo(4 + (55 / 300) * 8, 6);
    expect(out.decision!.message).toContain("forecast 5.47×1=5.47 cores within 195 s: ⌈5.47/(2×0.6)⌉=5");
    // A warm-up of 10 min looks past 12:07:30, the middle of the first 12-core bucket: ⌈12 / 1.2⌉ = 10.
    // (From 4, the scale-up limit allows 8 of them now.)
    const longer = step(members, { policy: { ...BERTH, warmupMs: 600_000 }, now, forecast, memory: settled(4, BERTH) });
    expect(longer.decision).toMatchObject({ predictedSize: 10, predictedCores: 12 });
    expect(longer.size).toBe(8);
    // A reactive size above the prediction wins: 8 cores measured against 2 learnt is a level of 4,
    // bounded to 2: the forecast asks ⌈4 / 1.2⌉ = 4, the reactive rule ⌈4 × 1.67⌉ = 7.
    expect(step(warm(4, 2), { policy: BERTH, now, forecast: flat(2), memory: settled(4, BERTH) }).size).toBe(7);
  });

  it("scales the pattern by how busy today is against it, within the scale-up limit", () => {
    // Today at twice the learnt 4 cores: 8 cores on 8 VMs (50 %); the pattern's 12 cores become 24.
    const forecast = flat(4, (b) => (b > bucketNow ? 12 : undefined));
    const out = step(warm(8, 1), { policy: { ...BERTH, warmupMs: 600_000 }, now: NOW + 10_000, forecast, memory: settled(8, BERTH) });
    expect(out.decision).toMatchObject({ predictedSize: 20, predictedCores: 24 }); // ⌈24 / 1.2⌉
    expect(out.size).toBe(16); // max(100 %, 4) of 8
  });

  it("predicts nothing without a forecast learnt over the horizon, or with prediction off", () => {
    // The 10-minute horizon of the test above asked 10 VMs; a bucket of it never learnt: none.
    const policy = { ...BERTH, warmupMs: 600_000 };
    const members = warm(4, 1);
    const holes = flat(4, (b) => (b > bucketNow ? 12 : undefined));
    holes.periods[bucketNow + 2] = 0;
    for (const forecast of [undefined, holes]) {
      const out = step(members, { policy, now: NOW + 10_000, forecast, memory: settled(4, BERTH) });
      expect(out.size).toBe(4);
    }
    const forecast = flat(4, (b) => (b > bucketNow ? 12 : undefined));
    expect(step(members, { policy: { ...policy, prediction: false }, now: NOW + 10_000, forecast }).size).toBe(4);
    expect(step(members, { policy, now: NOW + 10_000, forecast, memory: settled(4, BERTH) }).size).toBe(8);
  });

  it("scales in before the window passes when the forecast and the load agree, never below what the load needs", () => {
    // 10 VMs at 20 % (4 cores) just after 10 were recommended, the forecast flat at 4: HPA's rule
    // holds 10 for the window; Berth goes to ⌈4 / (2 × 0.585)⌉ = 4 once it has a minute of floors.
    const recent = (policy: ResolvedScalePolicy): AutoscaleMemory => ({ ...settled(10, policy), recommendations: [{ atMs: NOW - 15_000, size: 10 }] });
    /** The group's sizes step by step, 4 cores spread over its members. */
    const sizes = (policy: ResolvedScalePolicy, forecast: LoadForecast, until: number) => {
      let memory = recent(policy);
      let size = 10;
      const out: number[] = [];
      for (let t = NOW; t <= NOW + until; t += 15_000) {
        const o = step(warm(size, 4 / size), { policy, now: t, memory, forecast });
        memory = o.memory;
        size = o.size;
        out.push(size);
      }
      return out;
    };
    expect(sizes(BERTH, flat(4), 120_000)).toEqual([10, 10, 10, 10, 4, 4, 4, 4, 4]);
    expect(sizes({ ...BERTH, prediction: false }, flat(4), 120_000)).toEqual([10, 10, 10, 10, 10, 10, 10, 10, 10]);
    // The forecast rises to 8 cores by 12:07:30, within the window (300 s) and the horizon (195 s)
    // ahead: ⌈8 / 1.17⌉ = 7 VMs are kept, not 4 (which the forecast's scale-out would undo).
    expect(sizes(BERTH, flat(4, (b) => (b === bucketNow + 1 ? 8 : undefined)), 120_000)).toEqual([10, 10, 10, 10, 7, 7, 7, 7, 7]);
    // Never below what the load measured now needs: 10 cores on 10 VMs (50 %) against 2 learnt,
    // whose level (5) is bounded to 2: the forecast asks ⌈4 / 1.17⌉ = 4, the load ⌈10 × 0.5 / 0.585⌉ = 9.
    const busier = step(warm(10, 1), { policy: BERTH, memory: { ...recent(BERTH), quickFloorsSinceMs: NOW - HOUR }, forecast: flat(2) });
    expect(busier.size).toBe(9);
    expect(busier.decision!.message).toContain("agree on 9");
  });

  it("keeps a margin of twice the load's noise on a quicker scale-in", () => {
    // The same 4 cores on 10 VMs, after a load that swung by 15 % a step on average: the margin is
    // 2 × 14.1 % (the noise decays a little at a quiet step), so ⌈4 / (2 × 0.6 × 0.718)⌉ = 5, not 4.
    const memory = (noise: number): AutoscaleMemory => ({
      ...settled(10, BERTH),
      recommendations: [{ atMs: NOW - 15_000, size: 10 }],
      quickFloorsSinceMs: NOW - HOUR,
      level: { atMs: NOW - 15_000, ratio: 1, noise },
    });
    expect(step(warm(10, 0.4), { policy: BERTH, memory: memory(0), forecast: flat(4) }).size).toBe(4);
    const noisy = step(warm(10, 0.4), { policy: BERTH, memory: memory(0.15), forecast: flat(4) });
    expect(noisy.size).toBe(5);
    expect(noisy.memory.level!.noise).toBeCloseTo(0.15 * Math.exp(-15_000 / 240_000), 9);
    // The margin is at most 50 %: ⌈4 / 0.6⌉ = 7.
    expect(step(warm(10, 0.4), { policy: BERTH, memory: memory(0.9), forecast: flat(4) }).size).toBe(7);
  });
});

describe("autoscaleStep properties", () => {
  interface Run {
    policy: { targetCpu: number; tolerance: number; scaleUpMaxPercent: number; scaleUpMaxVms: number; scaleUpPeriodMs: number; scaleDownWindowMs: number; prediction: boolean };
    min: number;
    span: number;
    start: number;
    forecast: number | undefined;
    steps: { util: number; newcomers: { agoMs: number; cores: number | undefined }[] }[];
  }
  const runArb: fc.Arbitrary<Run> = fc.record({
    policy: fc.record({
      targetCpu: fc.double({ min: 0.05, max: 1, noNaN: true }),
      tolerance: fc.double({ min: 0.01, max: 0.5, noNaN: true }),
      scaleUpMaxPercent: fc.integer({ min: 1, max: 300 }),
      scaleUpMaxVms: fc.integer({ min: 1, max: 8 }),
      scaleUpPeriodMs: fc.constantFrom(15_000, 60_000, 120_000),
      scaleDownWindowMs: fc.constantFrom(15_000, 60_000, 300_000),
      prediction: fc.boolean(),
    }),
    min: fc.integer({ min: 0, max: 5 }),
    span: fc.integer({ min: 0, max: 20 }),
    start: fc.integer({ min: 0, max: 30 }),
    forecast: fc.option(fc.double({ min: 0.1, max: 40, noNaN: true }), { nil: undefined }),
    steps: fc.array(
      fc.record({
        util: fc.double({ min: 0, max: 1, noNaN: true }),
        newcomers: fc.array(fc.record({ agoMs: fc.integer({ min: 0, max: 600_000 }), cores: fc.option(fc.double({ min: 0, max: 2, noNaN: true }), { nil: undefined }) }), { maxLength: 3 }),
      }),
      { minLength: 1, maxLength: 40 },
    ),
  });

  /** The steps of a run, every interval, the group following each outcome. */
  function* run(r: Run) {
    const policy: ResolvedScalePolicy = { ...HPA_POLICY, ...r.policy };
    const maxSize = r.min + r.span;
    let size = r.start;
    let memory = settled(size, policy);
    const forecast = r.forecast === undefined ? undefined : flat(r.forecast);
    for (let i = 0; i < r.steps.length; i++) {
      const s = r.steps[i]!;
      const now = NOW + i * policy.intervalMs;
      const newcomers = s.newcomers.slice(0, size).map((m, k) => ({ name: `n-${k}`, addedAtMs: now - m.agoMs, vcpus: 2, cpuCores: m.cores }));
      const members = [...warm(size - newcomers.length, 2 * s.util), ...newcomers];
      const input: AutoscaleInput = { now, size, minSize: r.min, maxSize, members, policy, memory, forecast };
      const out = autoscaleStep(input);
      yield { input, out, policy, maxSize, inBounds: size >= r.min && size <= maxSize };
      size = out.size;
      memory = out.memory;
    }
  }

  /** The warm members' utilisation as the rule defines it (undefined: none warm). */
  function warmUtilization(input: AutoscaleInput): number | undefined {
    const w = input.members.filter((m) => m.cpuCores !== undefined && input.now - m.addedAtMs >= input.policy.warmupMs);
    if (w.length === 0) return undefined;
    return w.reduce((s, m) => s + Math.min(m.cpuCores!, m.vcpus), 0) / w.reduce((s, m) => s + m.vcpus, 0);
  }
  const withinBand = (input: AutoscaleInput) => {
    const u = warmUtilization(input);
    return u !== undefined && Math.abs(u / input.policy.targetCpu - 1) <= input.policy.tolerance - 1e-9;
  };

  it("keeps the size within [min, max], and moves a size outside to the bound at once", () => {
    fc.assert(
      fc.property(runArb, (r) => {
        for (const { input, out, maxSize, inBounds } of run(r)) {
          if (inBounds) {
            expect(out.size).toBeGreaterThanOrEqual(input.minSize);
            expect(out.size).toBeLessThanOrEqual(maxSize);
          } else {
            expect(out.size).toBe(input.size > maxSize ? maxSize : input.minSize);
          }
          expect(out.decision === undefined).toBe(out.size === input.size);
          if (out.decision) expect(out.decision.toSize).toBe(out.size);
        }
      }),
    );
  });

  it("with prediction off, never changes while the warm members are within tolerance", () => {
    fc.assert(
      fc.property(runArb, fc.double({ min: -0.99, max: 0.99, noNaN: true }), (r, within) => {
        const off: Run = { ...r, policy: { ...r.policy, prediction: false } };
        // The steps' warm load inside the band (the newcomers past their warm-up too).
        const util = Math.min(1, off.policy.targetCpu * (1 + within * off.policy.tolerance));
        off.steps = off.steps.map((s) => ({ util, newcomers: s.newcomers.map((m) => ({ ...m, cores: m.cores === undefined ? undefined : 2 * util })) }));
        let checked = 0;
        for (const { input, out, inBounds } of run(off)) {
          if (!inBounds || !withinBand(input)) continue;
          expect(out.size).toBe(input.size);
          checked++;
        }
        return checked >= 0;
      }),
    );
  });

  it("adds no more than max(percent, VMs) of the size at the period's start within any scale-up period", () => {
    fc.assert(
      fc.property(runArb, (r) => {
        const history: { at: number; size: number }[] = [];
        for (const { input, out, policy, inBounds } of run(r)) {
          history.push({ at: input.now, size: input.size });
          if (!inBounds) continue; // a size outside the bounds goes to the bound at once
          // The size before the first change counted in the period that ends now.
          const start = history.find((h) => h.at > input.now - policy.scaleUpPeriodMs)!.size;
          const limit = Math.max(Math.ceil(start * (1 + policy.scaleUpMaxPercent / 100)), start + policy.scaleUpMaxVms);
          expect(out.size).toBeLessThanOrEqual(Math.max(limit, input.size));
        }
      }),
    );
  });

  it("with prediction off, never scales in below a size recommended within the window", () => {
    fc.assert(
      fc.property(runArb, (r) => {
        const off: Run = { ...r, policy: { ...r.policy, prediction: false } };
        // Known recommendations: the size itself when the load was within tolerance; the reactive
        // size a change was decided on (a scale-out may also come from an older, higher one the
        // window holds: HPA's stabilisation can raise the size).
        const known: { at: number; size: number }[] = [];
        for (const { input, out, policy, inBounds } of run(off)) {
          if (inBounds && out.size < input.size) {
            const recent = known.filter((k) => k.at > input.now - policy.scaleDownWindowMs).map((k) => k.size);
            expect(out.size).toBeGreaterThanOrEqual(Math.min(input.size, Math.max(input.minSize, ...recent)));
          }
          if (inBounds && withinBand(input)) known.push({ at: input.now, size: input.size });
          if (inBounds && out.decision) known.push({ at: input.now, size: out.decision.reactiveSize });
        }
      }),
    );
  });
});

describe("membersToRemove", () => {
  const members: ScaleMember[] = [
    { name: "web-3", index: 3, addedAtMs: 300 },
    { name: "web-1", index: 1, addedAtMs: 100 },
    { name: "web-2", index: 2, addedAtMs: 100 },
    { name: "web-4", index: 4, addedAtMs: 400 },
  ];

  it("takes the oldest first by default, ties by index", () => {
    expect(membersToRemove(members, [], "oldest-first", 2)).toEqual(["web-1", "web-2"]);
  });

  it("takes the newest first when asked", () => {
    expect(membersToRemove(members, [], "newest-first", 3)).toEqual(["web-4", "web-3", "web-2"]);
  });

  it("never takes a protected member: fewer when not enough are unprotected", () => {
    expect(membersToRemove(members, ["web-1", "web-4"], "oldest-first", 2)).toEqual(["web-2", "web-3"]);
    expect(membersToRemove(members, ["web-1", "web-2", "web-3"], "oldest-first", 3)).toEqual(["web-4"]);
    expect(membersToRemove(members, [], "oldest-first", 0)).toEqual([]);
    expect(membersToRemove(members, [], "oldest-first", -1)).toEqual([]);
  });
});
