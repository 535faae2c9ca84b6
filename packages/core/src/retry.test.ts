import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ErrorCode } from "./errors.js";
import { backoffDelayMs, DEFAULT_BACKOFF, isRetryableErrorCode } from "./retry.js";

describe("isRetryableErrorCode", () => {
  it("gives up only on failures that repeat until something changes", () => {
    for (const code of [ErrorCode.InvalidArgument, ErrorCode.NotFound, ErrorCode.AlreadyExists, ErrorCode.FailedPrecondition]) {
      expect(isRetryableErrorCode(code)).toBe(false);
    }
    for (const code of [ErrorCode.Unavailable, ErrorCode.HypervisorUnavailable, ErrorCode.DeadlineExceeded, ErrorCode.Conflict, ErrorCode.Internal, ErrorCode.ResourceExhausted, ErrorCode.NotLeader]) {
      expect(isRetryableErrorCode(code)).toBe(true);
    }
    expect(isRetryableErrorCode("SOMETHING_NEW")).toBe(true);
  });
});

describe("backoffDelayMs", () => {
  it("doubles from 1 s to 60 s with the jitter pinned at its ends", () => {
    expect([1, 2, 3, 4, 7, 8, 20].map((n) => backoffDelayMs(n, () => 1))).toEqual([1_000, 2_000, 4_000, 8_000, 60_000, 60_000, 60_000]);
    expect([1, 2, 7].map((n) => backoffDelayMs(n, () => 0))).toEqual([500, 1_000, 30_000]);
  });
  it("stays within [half, all] of the capped schedule and never shrinks as failures grow", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), (n, r) => {
        const d = backoffDelayMs(n, () => r);
        const cap = Math.min(DEFAULT_BACKOFF.maxMs, DEFAULT_BACKOFF.initialMs * 2 ** Math.min(n - 1, 30));
        expect(d).toBeGreaterThanOrEqual(cap / 2 - 1);
        expect(d).toBeLessThanOrEqual(cap);
        expect(backoffDelayMs(n + 1, () => 0)).toBeGreaterThanOrEqual(backoffDelayMs(n, () => 0));
      }),
    );
  });
});
