import { ErrorCode } from "./errors.js";

/**
 * Whether an error code names a failure that may go away by itself (the hypervisor was busy or
 * away, a race, a timeout) or one that will repeat until something changes (a bad spec, a missing
 * object, a state the operation cannot start from). The proto's CommandResult.error_code lists the
 * same classes; an unknown code counts as retryable, so a newer agent's code is never taken for a
 * reason to give up.
 */
export function isRetryableErrorCode(code: string): boolean {
  return !PERMANENT.has(code);
}

const PERMANENT: ReadonlySet<string> = new Set<string>([
  ErrorCode.InvalidArgument,
  ErrorCode.NotFound,
  ErrorCode.AlreadyExists,
  ErrorCode.FailedPrecondition,
]);

/** How failed attempts are spaced: exponential, capped, jittered. */
export interface BackoffPolicy {
  /** Delay before the second attempt (the first retry). @default 1000 */
  initialMs: number;
  /** Longest delay between two attempts. @default 60000 */
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 1_000, maxMs: 60_000 };

/**
 * The delay before the next attempt after `failures` failed ones in a row (1 for the first
 * failure): `initialMs` doubling per failure up to `maxMs`, then "equal jitter" — half of it fixed,
 * half drawn from `random()` — so that many VMs failing at once do not retry in lock step, while
 * the delay never drops below half the schedule. Pure: pass `Math.random` in production.
 */
export function backoffDelayMs(failures: number, random: () => number, policy: BackoffPolicy = DEFAULT_BACKOFF): number {
  const n = Math.max(1, Math.floor(failures));
  const capped = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(n - 1, 30));
  return Math.round(capped / 2 + random() * (capped / 2));
}

/**
 * Waits `ms`, or until `signal` aborts, whichever comes first (at once when it already has, or
 * for `ms` ≤ 0). Never rejects: the caller looks at `signal.aborted` afterwards.
 */
export function sleepUnlessAborted(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
