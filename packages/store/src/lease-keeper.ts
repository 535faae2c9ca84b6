import { LeaseLostError } from "./errors.js";
import type { Lease } from "./types.js";

export interface LeaseKeeperOptions {
  /**
   * Time between keepalives. Default ttl / 6: when etcd loses its raft leader no keepalive succeeds
   * for one to two election timeouts (1–2 s by default), and the last one that did must be recent
   * enough for the keeper's own deadline (below) to outlast that.
   */
  intervalMs?: number;
  /**
   * The keeper declares the lease lost when no keepalive sent in the last `ttl - marginMs` has
   * succeeded, before the store can expire it. Default max(ttl / 5, 500 ms).
   */
  marginMs?: number;
  /** When the lease was granted (the first deadline counts from it). Default: now. */
  grantedAt?: number;
}

/**
 * Keeps a lease alive with a keepalive every `intervalMs`, and keeps its own deadline: the lease is
 * presumed lost when no keepalive has succeeded within `ttl - margin` of being sent (etcd3's own
 * Lease would wait about 2×TTL), or known lost when the store says it has expired. `lost` then
 * resolves (once) and the keeper stops. Never throws.
 */
export class LeaseKeeper {
  readonly lost: Promise<Error>;
  private resolveLost!: (e: Error) => void;
  private lostError: Error | undefined;
  private stopped = false;
  private lastOk: number;
  private readonly intervalMs: number;
  private readonly windowMs: number;
  private tickTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly lease: Lease,
    options: LeaseKeeperOptions = {},
  ) {
    this.lost = new Promise((resolve) => (this.resolveLost = resolve));
    this.intervalMs = Math.max(50, options.intervalMs ?? Math.floor(lease.ttlMs / 6));
    const margin = options.marginMs ?? Math.max(Math.floor(lease.ttlMs / 5), 500);
    this.windowMs = Math.max(1, lease.ttlMs - margin);
    this.lastOk = options.grantedAt ?? Date.now();
    this.armDeadline();
    this.tickTimer = setTimeout(() => void this.tick(), this.intervalMs);
  }

  /** The loss, once known; undefined while the lease is believed alive. */
  get lostReason(): Error | undefined {
    return this.lostError;
  }

  /** Stops keeping the lease alive (does not revoke it). Idempotent. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.tickTimer);
    clearTimeout(this.deadlineTimer);
  }

  /** Declares the lease lost now (e.g. its key vanished). Idempotent. */
  declareLost(error: Error): void {
    if (this.lostError) return;
    this.lostError = error;
    this.stop();
    this.resolveLost(error);
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const sentAt = Date.now();
    let next = this.intervalMs;
    try {
      await this.lease.keepAliveOnce();
      if (this.stopped) return;
      this.lastOk = Math.max(this.lastOk, sentAt);
      this.armDeadline();
      next = Math.max(0, this.intervalMs - (Date.now() - sentAt));
    } catch (e) {
      if (this.stopped) return;
      if (e instanceof LeaseLostError) {
        this.declareLost(e);
        return;
      }
      next = Math.max(50, Math.floor(this.intervalMs / 2));
    }
    this.tickTimer = setTimeout(() => void this.tick(), next);
  }

  private armDeadline(): void {
    clearTimeout(this.deadlineTimer);
    const remaining = this.lastOk + this.windowMs - Date.now();
    this.deadlineTimer = setTimeout(
      () =>
        this.declareLost(
          new LeaseLostError(this.lease.id, `no keepalive of lease ${this.lease.id} succeeded within ${this.windowMs} ms`),
        ),
      Math.max(0, remaining),
    );
  }
}
