/**
 * The time the fake hypervisor lives in: a clock and one-shot timers, injectable so tests are
 * deterministic. {@link realClock} is the default; {@link ManualClock} moves only when told.
 */

/** A scheduled callback; cancel is idempotent. */
export interface FakeTimer {
  cancel(): void;
}

/** Time and timers, as the fake driver uses them. */
export interface FakeClock {
  /** Milliseconds on the clock's axis (the real clock: since the Unix epoch). */
  now(): number;
  /**
   * Calls `fn` once after `ms` milliseconds. `background` timers (polling) must not keep the
   * process alive; the others (a graceful stop waiting for its guest) must.
   */
  setTimer(fn: () => void, ms: number, options?: { background?: boolean }): FakeTimer;
}

/** `Date.now()` and `setTimeout`. */
export const realClock: FakeClock = Object.freeze({
  now: () => Date.now(),
  setTimer(fn: () => void, ms: number, options?: { background?: boolean }): FakeTimer {
    const t = setTimeout(fn, Math.max(0, ms));
    if (options?.background) t.unref();
    return { cancel: () => clearTimeout(t) };
  },
});

/** Resolves after `ms` on `clock` (at once when `ms` ≤ 0). */
export function sleep(clock: FakeClock, ms: number): Promise<void> {
  if (!(ms > 0)) return Promise.resolve();
  return new Promise((resolve) => clock.setTimer(resolve, ms));
}

interface PendingTimer {
  due: number;
  seq: number;
  fn: () => void;
}

/**
 * A clock for tests: time stands still until {@link ManualClock.advance}, which fires the timers
 * that fall due in order, letting promise continuations (and file writes) run between them.
 */
export class ManualClock implements FakeClock {
  private time: number;
  private seq = 0;
  private readonly timers = new Set<PendingTimer>();

  constructor(startMs = 0) {
    this.time = startMs;
  }

  now(): number {
    return this.time;
  }

  setTimer(fn: () => void, ms: number): FakeTimer {
    const timer: PendingTimer = { due: this.time + Math.max(0, ms), seq: ++this.seq, fn };
    this.timers.add(timer);
    return { cancel: () => void this.timers.delete(timer) };
  }

  /** Timers not yet fired. */
  get pending(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, firing each timer due by then at its own time. */
  async advance(ms: number): Promise<void> {
    const target = this.time + Math.max(0, ms);
    await settle();
    for (;;) {
      let next: PendingTimer | undefined;
      for (const t of this.timers) {
        if (t.due <= target && (!next || t.due < next.due || (t.due === next.due && t.seq < next.seq))) next = t;
      }
      if (!next) break;
      this.timers.delete(next);
      this.time = Math.max(this.time, next.due);
      next.fn();
      await settle();
    }
    this.time = target;
    await settle();
  }
}

/** Lets pending continuations and quick I/O (the state file's writes) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}
