import { randomBytes } from "node:crypto";

/**
 * Write receipts: how EtcdStore can send a transaction again after losing its reply, without
 * ever applying it twice or reporting a false conflict.
 *
 * Every transaction EtcdStore sends carries one more compare and one more put: its receipt key
 * (unique per attempt series) must be absent, and is put with the value APPLIED, attached to a
 * short receipt lease. So a transaction applies at most once per receipt, and when it applied,
 * its receipt records the revision it applied at (the receipt's modRevision).
 *
 * When the reply is lost, EtcdStore *settles* the receipt with a second transaction: "if the
 * receipt is absent, put it with the value VOID (same lease); else read it". Afterwards the
 * receipt exists, so the lost attempt can no longer apply; the receipt says whether it did
 * (APPLIED: report success at that revision) or not (VOID: send the transaction again as a new
 * one, with a new receipt). etcd orders the two transactions in its log, so either the lost attempt
 * applied first and the settle reads its receipt, or the settle voided it first and the attempt
 * fails its receipt compare whenever it arrives.
 *
 * The receipt must outlive every attempt that names it: an attempt carries a put attached to the
 * receipt lease, so once the lease has expired no attempt can apply (etcd refuses a transaction
 * naming a missing lease) — but its receipt would be gone too. `ReceiptLeases` therefore hands a
 * lease out only while it still has, by this process's clock and counting from before the grant
 * was sent, more time to live than the caller's deadline needs; a settle that finds the lease gone
 * reports the outcome as unknown.
 */
export const RECEIPT_APPLIED = "a";
export const RECEIPT_VOID = "v";

/** A receipt key and the lease it is put with. */
export interface Receipt {
  key: string;
  leaseId: string;
}

interface HeldLease {
  id: string;
  /** Until when (epoch ms, this process's clock, with a safety margin) the lease certainly exists. */
  validUntil: number;
  grantedAt: number;
}

/** Margin against clock-rate differences and timer lateness between this process and etcd's leader. */
const SAFETY_MS = 1_000;

/**
 * Hands out receipts on leases that live long enough. One lease serves every receipt of this store
 * for a while (TTL `ttlSeconds`); the next one is granted in the background before it is needed,
 * and old ones are left to expire (their receipts go with them).
 */
export class ReceiptLeases {
  private readonly storeId = randomBytes(8).toString("hex");
  private seq = 0;
  private current: HeldLease | undefined;
  private granting: Promise<HeldLease | undefined> | undefined;
  private closed = false;

  /**
   * @param grant grants a lease of `ttlSeconds` by `deadline` (epoch ms) and says what etcd granted;
   *   it may retry inside; it throws when it cannot.
   * @param prefix the key prefix of receipts (keys `${prefix}${storeId}/${seq}`).
   * @param callTimeoutMs the longest a call (every attempt and its settle) may take.
   */
  constructor(
    private readonly grant: (ttlSeconds: number, deadline: number) => Promise<{ id: string; ttlMs: number }>,
    readonly prefix: string,
    private readonly callTimeoutMs: number,
  ) {}

  /** The TTL asked for: three call timeouts, at least 3 s (etcd's floor is about 1.5 s anyway). */
  get ttlSeconds(): number {
    return Math.max(3, Math.ceil((3 * this.callTimeoutMs) / 1000));
  }

  /**
   * A fresh receipt whose lease certainly outlives `deadline`, or undefined when no such lease can
   * be had before the deadline (the caller then sends without a receipt).
   */
  async issue(deadline: number): Promise<Receipt | undefined> {
    let lease = this.usable(deadline);
    if (!lease) lease = await this.renew(deadline);
    else if (Date.now() - lease.grantedAt > this.callTimeoutMs) void this.renew(deadline);
    if (!lease || lease.validUntil < deadline) return undefined;
    return { key: `${this.prefix}${this.storeId}/${(this.seq++).toString(36)}`, leaseId: lease.id };
  }

  /** Forgets `leaseId` (etcd said it is gone): the next receipt comes with a new lease. */
  invalidate(leaseId: string): void {
    if (this.current?.id === leaseId) this.current = undefined;
  }

  close(): void {
    this.closed = true;
  }

  private usable(deadline: number): HeldLease | undefined {
    return this.current && this.current.validUntil >= deadline ? this.current : undefined;
  }

  /** Grants the next lease (one grant at a time); undefined when it failed. */
  private renew(deadline: number): Promise<HeldLease | undefined> {
    this.granting ??= (async () => {
      const sentAt = Date.now();
      try {
        const { id, ttlMs } = await this.grant(this.ttlSeconds, Math.max(deadline, sentAt + this.callTimeoutMs));
        const lease = { id, grantedAt: sentAt, validUntil: sentAt + Math.max(ttlMs, this.ttlSeconds * 1000) - SAFETY_MS };
        if (!this.closed && (!this.current || this.current.validUntil < lease.validUntil)) this.current = lease;
        return lease;
      } catch {
        return undefined;
      } finally {
        this.granting = undefined;
      }
    })();
    return this.granting;
  }
}
