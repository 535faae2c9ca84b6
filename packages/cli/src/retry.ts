import { backoffDelayMs, BerthError, ErrorCode, fromGrpcError } from "@berth/core";
import { isUnanswered } from "./client.js";

// Retrying a call that is safe to repeat (a create carrying a request id) through a leader change
// or a lost answer, and telling afterwards whether its outcome is known.

/** Options of {@link retryUntilAnswered}. */
export interface RetryOptions {
  /** The end of the whole command: no attempt starts, and none runs, past it. */
  deadline: Date;
  /** Delay before the first retry, doubling per failure. @default 250 */
  initialDelayMs?: number;
  /** Longest delay between two attempts. @default 4000 */
  maxDelayMs?: number;
  /** Source of the jitter (tests pass a fixed one). @default Math.random */
  random?: () => number;
  /** Called before each retry with the failure, the delay and the number of the next attempt. */
  onRetry?: (error: BerthError, delayMs: number, nextAttempt: number) => void;
}

/** How {@link retryUntilAnswered} ended. */
export type RetryOutcome<T> =
  | { readonly ok: true; readonly value: T; readonly attempts: number }
  | {
      readonly ok: false;
      /** The last failure. */
      readonly error: BerthError;
      readonly attempts: number;
      /** Some attempt was (or may have been) delivered without a verdict: it may have been carried out. */
      readonly unanswered: boolean;
      /** It gave up on a retryable failure because the deadline came: no verdict was ever had. */
      readonly exhausted: boolean;
    };

/**
 * The failures worth another attempt: no leader, nobody reachable, a busy leader that refused the
 * call without acting on it, or no answer in time. A verdict
 * of the controller (no room, bad spec, already exists...) is not retried: RESOURCE_EXHAUSTED is an
 * answer, not an outage.
 */
export function isRetryable(error: BerthError): boolean {
  return (
    error.code === ErrorCode.Unavailable ||
    error.code === ErrorCode.Busy ||
    error.code === ErrorCode.NotLeader ||
    error.code === ErrorCode.DeadlineExceeded
  );
}

/**
 * The delay before attempt `failures + 1`: core's backoff (doubling, capped, equal jitter) on the
 * CLI's shorter schedule, 250 ms doubling to 4 s: a person is waiting.
 */
export function backoffMs(failures: number, random: () => number, initialMs = 250, maxMs = 4000): number {
  return backoffDelayMs(failures, random, { initialMs, maxMs });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Less than this left before the deadline: no new attempt is started. */
const MIN_ATTEMPT_MS = 100;

/**
 * Calls `call` (with the deadline every attempt must end by) until it gives an answer, retrying
 * retryable failures ({@link isRetryable}) with exponential backoff and jitter until `deadline`.
 * Never throws a call's error: the outcome says how it ended and whether an attempt may have been
 * carried out unanswered, for the caller to tell "failed" from "outcome unknown".
 */
export async function retryUntilAnswered<T>(
  call: (deadline: Date) => Promise<T>,
  options: RetryOptions,
): Promise<RetryOutcome<T>> {
  const random = options.random ?? Math.random;
  const end = options.deadline.getTime();
  let unanswered = false;
  for (let attempt = 1; ; attempt++) {
    try {
      return { ok: true, value: await call(options.deadline), attempts: attempt };
    } catch (e) {
      const error = fromGrpcError(e);
      if (isUnanswered(error)) unanswered = true;
      if (!isRetryable(error)) return { ok: false, error, attempts: attempt, unanswered, exhausted: false };
      const delay = backoffMs(attempt, random, options.initialDelayMs, options.maxDelayMs);
      const left = end - Date.now();
      if (left < MIN_ATTEMPT_MS) return { ok: false, error, attempts: attempt, unanswered, exhausted: true };
      // The last attempt gets what is left rather than nothing.
      const wait = Math.min(delay, Math.max(0, left - MIN_ATTEMPT_MS));
      options.onRetry?.(error, wait, attempt + 1);
      await sleep(wait);
    }
  }
}
