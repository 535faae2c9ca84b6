import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ErrorCode, isBerthError } from "@berth/core";
import { demandAt, integrateDemand, validateLoadPattern, validateLoadProfile, type LoadPattern } from "./fake-load.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

describe("demandAt", () => {
  it("holds a constant", () => {
    const p: LoadPattern = { kind: "constant", fraction: 0.3 };
    expect(demandAt(p, 0)).toBe(0.3);
    expect(demandAt(p, 1e12)).toBe(0.3);
  });

  it("follows a diurnal sinusoid: max at the peak, min half a period later, mid in between", () => {
    const p: LoadPattern = { kind: "diurnal", periodMs: DAY, min: 0.2, max: 0.8, peakAtMs: 14 * HOUR };
    expect(demandAt(p, 14 * HOUR)).toBeCloseTo(0.8, 12);
    expect(demandAt(p, 2 * HOUR)).toBeCloseTo(0.2, 12);
    expect(demandAt(p, 8 * HOUR)).toBeCloseTo(0.5, 12);
    expect(demandAt(p, 20 * HOUR)).toBeCloseTo(0.5, 12);
    // Periodic, before the peak time too.
    expect(demandAt(p, 14 * HOUR + 7 * DAY)).toBeCloseTo(0.8, 9);
    expect(demandAt(p, 14 * HOUR - 3 * DAY)).toBeCloseTo(0.8, 9);
  });

  it("spikes once: base, peak during [start, start + duration), base after", () => {
    const p: LoadPattern = { kind: "spike", base: 0.1, peak: 0.9, startMs: 1000, durationMs: 500 };
    expect(demandAt(p, 999)).toBe(0.1);
    expect(demandAt(p, 1000)).toBe(0.9);
    expect(demandAt(p, 1499)).toBe(0.9);
    expect(demandAt(p, 1500)).toBe(0.1);
    expect(demandAt(p, 1e9)).toBe(0.1);
  });

  it("repeats a spike every repeatMs", () => {
    const p: LoadPattern = { kind: "spike", base: 0, peak: 1, startMs: 1000, durationMs: 100, repeatMs: 1000 };
    expect(demandAt(p, 500)).toBe(0);
    expect(demandAt(p, 1050)).toBe(1);
    expect(demandAt(p, 1150)).toBe(0);
    expect(demandAt(p, 5050)).toBe(1);
    expect(demandAt(p, 5100)).toBe(0);
  });
});

describe("integrateDemand", () => {
  const riemann = (p: LoadPattern, a: number, b: number, steps = 20_000): number => {
    const h = (b - a) / steps;
    let sum = 0;
    for (let i = 0; i < steps; i++) sum += demandAt(p, a + (i + 0.5) * h) * h;
    return sum;
  };

  it.each<[string, LoadPattern, number, number]>([
    ["constant", { kind: "constant", fraction: 0.25 }, 0, 10_000],
    ["diurnal over 2.3 periods", { kind: "diurnal", periodMs: 1000, min: 0.1, max: 0.7, peakAtMs: 130 }, 55, 2355],
    ["diurnal from a negative time", { kind: "diurnal", periodMs: 700, min: 0, max: 1 }, -1234, 321],
    ["a single spike", { kind: "spike", base: 0.2, peak: 0.6, startMs: 300, durationMs: 400 }, 0, 2000],
    ["repeated spikes", { kind: "spike", base: 0.05, peak: 0.95, startMs: 100, durationMs: 30, repeatMs: 200 }, 0, 5000],
  ])("matches a Riemann sum for %s", (_, p, a, b) => {
    expect(integrateDemand(p, a, b)).toBeCloseTo(riemann(p, a, b), 0);
  });

  it("is zero over an empty or reversed interval", () => {
    expect(integrateDemand({ kind: "constant", fraction: 1 }, 5, 5)).toBe(0);
    expect(integrateDemand({ kind: "constant", fraction: 1 }, 5, 1)).toBe(0);
  });
});

// Valid patterns of every kind, with times anywhere on a wide axis.
const fraction = fc.double({ min: 0, max: 1, noNaN: true });
const time = fc.double({ min: -1e13, max: 1e13, noNaN: true });
const pattern: fc.Arbitrary<LoadPattern> = fc.oneof(
  fraction.map((f) => ({ kind: "constant", fraction: f }) as LoadPattern),
  fc
    .record({ a: fraction, b: fraction, periodMs: fc.double({ min: 1, max: 1e10, noNaN: true }), peakAtMs: time })
    .map(({ a, b, periodMs, peakAtMs }) => ({ kind: "diurnal", periodMs, min: Math.min(a, b), max: Math.max(a, b), peakAtMs }) as LoadPattern),
  fc
    .record({
      base: fraction,
      peak: fraction,
      startMs: time,
      durationMs: fc.double({ min: 0, max: 1e9, noNaN: true }),
      extra: fc.option(fc.double({ min: 0, max: 1e9, noNaN: true }), { nil: undefined }),
    })
    .map(({ extra, ...s }) => ({ kind: "spike", ...s, ...(extra === undefined ? {} : { repeatMs: s.durationMs + extra + 1 }) }) as LoadPattern),
);

describe("load properties", () => {
  it("demand stays within [0, 1] of the VM's size for any valid pattern and time", () => {
    fc.assert(
      fc.property(pattern, time, (p, t) => {
        expect(() => validateLoadPattern(p, "p")).not.toThrow();
        const d = demandAt(p, t);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThanOrEqual(1);
      }),
      { numRuns: 2000 },
    );
  });

  it("the integral over [a, b] stays within [0, b − a] and adds up over adjacent intervals", () => {
    fc.assert(
      fc.property(pattern, fc.integer({ min: -1e9, max: 1e9 }), fc.integer({ min: 0, max: 1e8 }), fc.integer({ min: 0, max: 1e8 }), (p, a, x, y) => {
        const whole = integrateDemand(p, a, a + x + y);
        expect(whole).toBeGreaterThanOrEqual(0);
        expect(whole).toBeLessThanOrEqual(x + y);
        const parts = integrateDemand(p, a, a + x) + integrateDemand(p, a + x, a + x + y);
        expect(Math.abs(parts - whole)).toBeLessThanOrEqual(1e-6 * Math.max(1, x + y));
      }),
      { numRuns: 1000 },
    );
  });
});

describe("validateLoadPattern", () => {
  it.each<[unknown, string]>([
    [null, "p"],
    [{ kind: "square" }, "p.kind"],
    [{ kind: "constant", fraction: 1.5 }, "p.fraction"],
    [{ kind: "constant", fraction: 0.5, extra: 1 }, "p.extra"],
    [{ kind: "diurnal", periodMs: 0, min: 0, max: 1 }, "p.periodMs"],
    [{ kind: "diurnal", periodMs: 10, min: 0.8, max: 0.2 }, "p.min"],
    [{ kind: "diurnal", periodMs: 10, min: 0, max: 1, peakAtMs: Infinity }, "p.peakAtMs"],
    [{ kind: "spike", base: 0, peak: 1, startMs: 0, durationMs: -1 }, "p.durationMs"],
    [{ kind: "spike", base: 0, peak: 1, startMs: 0, durationMs: 10, repeatMs: 5 }, "p.repeatMs"],
    [{ kind: "spike", base: 0, peak: Number.NaN, startMs: 0, durationMs: 10 }, "p.peak"],
  ])("rejects %j naming %s", (raw, field) => {
    let error: unknown;
    try {
      validateLoadPattern(raw, "p");
    } catch (e) {
      error = e;
    }
    expect(isBerthError(error, ErrorCode.InvalidArgument)).toBe(true);
    expect((error as Error).message.startsWith(`${field}: `)).toBe(true);
  });

  it("checks a profile's parts and refuses unknown ones", () => {
    expect(validateLoadProfile({ cpu: { kind: "constant", fraction: 1 } }, "load")).toEqual({ cpu: { kind: "constant", fraction: 1 } });
    expect(() => validateLoadProfile({ disk: {} }, "load")).toThrow(/^load\.disk: /);
    expect(() => validateLoadProfile({ memory: { kind: "constant" } }, "load")).toThrow(/^load\.memory\.fraction: /);
  });
});
