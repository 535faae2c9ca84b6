import type { HypervisorDriver, WatchdogStatus } from "@berth/hypervisor";
import type { Logger } from "pino";

/** Pets are at most this far apart while the leader is heard (and at most a quarter of the fence timeout). */
export const MAX_PET_INTERVAL_MS = 1_000;
/** After a stall of the agent, messages arriving sooner than this are not taken as proof of a live leader. */
export const STALL_PET_HOLD_MS = 200;

/**
 * The agent's side of the host's watchdog (issue 8, fencing): while the agent hears a current
 * leader it keeps the driver's watchdog deadline `fenceTimeoutMs` ahead; if it stops hearing one
 * (partition, frozen agent, dead controller) the deadline passes and the driver powers off the
 * domains defined with `fence`, so that the controller may start them elsewhere after the timeout.
 *
 * Contract:
 * - `configure(t)` is called with each accepted Welcome's `fence_timeout_ms`: t > 0 arms (pets at
 *   once); t = 0 disarms (`clearWatchdog`), the only way the watchdog is ever cleared. It is never
 *   cleared when a stream ends or the agent stops: a stopped agent whose VMs keep running would let
 *   the controller start second copies elsewhere.
 * - `heard()` is called on every message from the current leader (heartbeats included); it pets
 *   when the last pet is at least min(1 s, t/4) old, so while the leader is heard the deadline is
 *   never closer than 3/4 of the timeout.
 * - Driver calls run one at a time, in order, off the caller's path (a slow hypervisor delays pets,
 *   never the stream); a pet asked for while one is running is issued once it ends, with a fresh
 *   deadline.
 * - Before the first pet of each leader, and after the agent itself stalled, the watchdog is read:
 *   a firing (domains powered off) is logged at error level, since the next pet forgets it.
 * - After the agent stalled (`stalled()`), messages are not taken for a live leader until one
 *   arrives at least `STALL_PET_HOLD_MS` later and after a Report sent since (`reportSent()`): what
 *   the socket buffered while the agent was frozen is old news, and petting on it would push the
 *   deadline past the time the controller counts from (its last word from this host).
 */
export class HostWatchdog {
  private timeoutMs = 0;
  private lastPetAt = -Infinity;
  private chain: Promise<void> = Promise.resolve();
  private petQueued = false;
  private checkFired = true;
  private lastFiredAtMs = 0;
  /** Whether a deadline may be armed (unknown at first: the driver's state outlives the agent). */
  private maybeArmed = true;
  private failing = false;
  /** Set by a stall: no pet before this time, nor before a Report is sent after the stall. */
  private holdUntil: number | undefined;
  private reportSinceStall = true;

  constructor(
    private readonly driver: HypervisorDriver,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** The fence timeout in force (0: no watchdog). */
  get fenceTimeoutMs(): number {
    return this.timeoutMs;
  }

  /** Reads the watchdog at start and logs what it finds: whether it fired (domains were powered off), whether it is armed. */
  async inspect(): Promise<WatchdogStatus> {
    const status = await this.read();
    this.maybeArmed = status.deadlineMs > 0;
    if (status.deadlineMs > 0 && status.firedAtMs === 0) {
      this.log.info({ deadlineInMs: status.deadlineMs - this.now() }, "the host's watchdog is armed; it is petted again once a leader is heard");
    }
    this.checkFired = false;
    return status;
  }

  /** Applies a leader's fence timeout (Welcome.fence_timeout_ms). */
  configure(fenceTimeoutMs: number): void {
    const was = this.timeoutMs;
    this.timeoutMs = fenceTimeoutMs;
    // A Welcome answers this process's own Hello: fresh, whatever a stall held.
    this.holdUntil = undefined;
    if (fenceTimeoutMs > 0) {
      if (was !== fenceTimeoutMs) this.log.info({ fenceTimeoutMs }, "host watchdog armed: domains with fence are powered off if no leader is heard for this long");
      this.checkFired = true;
      this.lastPetAt = -Infinity;
      this.heard();
      return;
    }
    if (!this.maybeArmed) return;
    this.maybeArmed = false;
    this.enqueue(async () => {
      try {
        await this.driver.clearWatchdog();
        this.log.info("host watchdog disarmed: the leader asks for no fencing (fence_timeout_ms 0)");
      } catch (e) {
        this.maybeArmed = true;
        this.log.error({ err: e }, "could not disarm the host's watchdog");
      }
    });
  }

  /** A message from the current leader arrived: pets when due. */
  heard(): void {
    if (this.timeoutMs <= 0 || this.petQueued) return;
    if (this.holdUntil !== undefined) {
      if (this.now() < this.holdUntil || !this.reportSinceStall) return;
      this.holdUntil = undefined;
    }
    const interval = Math.min(MAX_PET_INTERVAL_MS, this.timeoutMs / 4);
    if (this.now() - this.lastPetAt < interval) return;
    this.petQueued = true;
    this.maybeArmed = true;
    // Counted from the ask: a slow driver must not make every message ask again.
    const heardAt = (this.lastPetAt = this.now());
    this.enqueue(async () => {
      this.petQueued = false;
      const timeoutMs = this.timeoutMs;
      if (timeoutMs <= 0) return; // disarmed meanwhile
      if (this.checkFired) {
        this.checkFired = false;
        await this.read();
      }
      try {
        // From when the leader was heard, not when the (maybe slow) driver got to it: the
        // controller counts from its own hearing of us, which is no later.
        const deadline = heardAt + timeoutMs;
        await this.driver.setWatchdog(deadline);
        this.maybeArmed = true;
        if (this.failing) this.log.info("host watchdog petted again");
        this.failing = false;
      } catch (e) {
        // Try again at the next message rather than a second later.
        this.lastPetAt = -Infinity;
        if (!this.failing) this.log.error({ err: e }, "could not pet the host's watchdog: its domains with fence are powered off at the deadline unless a pet succeeds");
        this.failing = true;
      }
    });
  }

  /**
   * The agent itself was stalled: the watchdog may have fired meanwhile (look before the next pet),
   * and messages that waited in the socket meanwhile are not fresh (hold pets, see the class).
   */
  stalled(): void {
    this.checkFired = true;
    this.holdUntil = this.now() + STALL_PET_HOLD_MS;
    this.reportSinceStall = false;
  }

  /** A Report went out: the controller's answers to it are fresh news of the leader. */
  reportSent(): void {
    this.reportSinceStall = true;
  }

  /** Resolves when the driver calls asked for so far have run (for tests and orderly shutdown). */
  settled(): Promise<void> {
    return this.chain;
  }

  private enqueue(step: () => Promise<void>): void {
    this.chain = this.chain.then(step).catch((e: unknown) => this.log.error({ err: e }, "host watchdog step failed"));
  }

  private async read(): Promise<WatchdogStatus> {
    let status: WatchdogStatus;
    try {
      status = await this.driver.watchdog();
    } catch (e) {
      this.log.warn({ err: e }, "could not read the host's watchdog");
      return { deadlineMs: 0, firedAtMs: 0 };
    }
    if (status.firedAtMs > 0 && status.firedAtMs !== this.lastFiredAtMs) {
      this.lastFiredAtMs = status.firedAtMs;
      this.log.error(
        { firedAt: new Date(status.firedAtMs).toISOString(), deadline: status.deadlineMs ? new Date(status.deadlineMs).toISOString() : undefined },
        "the host's watchdog fired: no leader was heard before its deadline, so the domains defined with fence were powered off (the controller may have started them elsewhere)",
      );
    }
    return status;
  }
}
