import { BerthError, ErrorCode, sleepUnlessAborted } from "@berth/core";
import { LeaseLostError, StoreUnavailableError } from "./errors.js";
import { LeaseKeeper } from "./lease-keeper.js";
import type { ClusterStore, KeyValue, Lease, Txn, Watch } from "./types.js";

/** Berth's election key. */
export const LEADER_KEY = "/berth/v1/leader";
/** Default leader lease TTL: a dead leader is replaced within about this long. */
export const DEFAULT_LEADER_TTL_MS = 10_000;

export interface CampaignOptions {
  /** The election key. Default LEADER_KEY. */
  key?: string;
  /** What followers read with `readLeader` (e.g. the leader's address), stored as UTF-8. */
  value: string;
  /** Lease TTL. Default DEFAULT_LEADER_TTL_MS. */
  ttlMs?: number;
  /** Aborting stops campaigning: `campaign` rejects (and resigns if it had just won). */
  signal?: AbortSignal;
  /** Pause after a store error before trying again. Default 500. */
  retryDelayMs?: number;
}

/** This process leads. */
export interface Leadership {
  /** The fencing token: the election key's create revision. Grows with every new leader. */
  readonly epoch: number;
  readonly key: string;
  readonly leaseId: string;
  /**
   * Resolves (never rejects) once leadership is lost or given up: the lease expired or could not be
   * kept alive in time, the key was deleted, or `resign()` was called. Stop acting as leader then.
   */
  readonly lost: Promise<Error>;
  /** True once `lost` has resolved. */
  readonly isLost: boolean;
  /**
   * Returns `txn` with one more compare: the election key's createRevision equals `epoch`. The
   * store refuses the fenced transaction once another campaigner has won. Pure; does not throw.
   */
  fence(txn: Txn): Txn;
  /** Gives up leadership: stops the keepalives and revokes the lease (deleting the key). Idempotent. */
  resign(): Promise<void>;
}

/**
 * Campaigns for leadership until this process wins (or the signal aborts). A generic algorithm
 * over any ClusterStore: create the key if absent, attached to a fresh lease; otherwise watch the
 * key until it is deleted and try again. Only one campaigner's create can succeed, and the
 * winner's epoch is the key's create revision.
 *
 * Keeps trying through store outages; rejects on abort, a closed store or invalid options.
 */
export async function campaign(store: ClusterStore, options: CampaignOptions): Promise<Leadership> {
  const key = options.key ?? LEADER_KEY;
  const ttlMs = options.ttlMs ?? DEFAULT_LEADER_TTL_MS;
  const retryDelayMs = options.retryDelayMs ?? 500;
  const { signal } = options;
  if (!key) throw new BerthError(ErrorCode.InvalidArgument, "campaign: the election key is empty", { field: "key" });
  const value = new TextEncoder().encode(options.value);
  for (;;) {
    throwIfAborted(signal);
    try {
      const { items, revision } = await store.list(key);
      if (items.some((kv) => kv.key === key)) {
        await untilDeleted(store, key, revision + 1, signal);
        continue;
      }
      const grantedAt = Date.now();
      const lease = await store.grantLease(ttlMs);
      const keeper = new LeaseKeeper(lease, { grantedAt });
      const giveUp = (): void => {
        keeper.stop();
        void lease.revoke().catch(() => undefined);
      };
      const epoch = await tryCreate(store, key, value, lease).catch((e: unknown) => {
        giveUp();
        throw e;
      });
      if (epoch === undefined) {
        giveUp();
        continue;
      }
      const leadership = new HeldLeadership(store, key, epoch, lease, keeper);
      if (signal?.aborted) {
        await leadership.resign().catch(() => undefined);
        throwIfAborted(signal);
      }
      return leadership;
    } catch (e) {
      if (!(e instanceof StoreUnavailableError) || e.closed) throw e;
      await sleepUnlessAborted(retryDelayMs, signal);
    }
  }
}

/** The current leader's value and epoch, if any (one linearizable read). May throw StoreUnavailableError. */
export async function readLeader(
  store: ClusterStore,
  key: string = LEADER_KEY,
): Promise<{ value: string; epoch: number; leaseId: string } | undefined> {
  const kv = await store.get(key);
  return kv && { value: new TextDecoder().decode(kv.value), epoch: kv.createRevision, leaseId: kv.lease };
}

/** The epoch when the create succeeded; undefined when someone else holds the key. */
async function tryCreate(store: ClusterStore, key: string, value: Uint8Array, lease: Lease): Promise<number | undefined> {
  try {
    const result = await store.txn({
      compare: [{ key, target: "createRevision", equals: 0 }],
      ops: [{ type: "put", key, value, lease: lease.id }],
    });
    return result.succeeded ? result.revision : undefined;
  } catch (e) {
    if (!(e instanceof StoreUnavailableError) || e.closed) throw e;
    // The reply was lost: the create may have applied. Our lease on the key says it did.
    const kv = await store.get(key);
    if (kv?.lease === lease.id) return kv.createRevision;
    throw e;
  }
}

/** Resolves when `key` is deleted at or after `fromRevision`, when the watch fails, or on abort. */
function untilDeleted(store: ClusterStore, key: string, fromRevision: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (delayMs: number): void => {
      if (done) return;
      done = true;
      signal?.removeEventListener("abort", onAbort);
      void watch.close();
      setTimeout(resolve, delayMs);
    };
    const onAbort = (): void => finish(0);
    const watch: Watch = store.watch(key, fromRevision, {
      onEvents: (events) => {
        if (events.some((e) => e.type === "delete" && e.kv.key === key)) finish(0);
      },
      onError: () => finish(100),
    });
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) onAbort();
  });
}

class HeldLeadership implements Leadership {
  readonly lost: Promise<Error>;
  private watch: Watch | undefined;
  private resigned = false;

  constructor(
    private readonly store: ClusterStore,
    readonly key: string,
    readonly epoch: number,
    private readonly lease: Lease,
    private readonly keeper: LeaseKeeper,
  ) {
    this.lost = keeper.lost;
    void this.lost.then(() => {
      void this.watch?.close();
      if (!this.resigned) void this.lease.revoke().catch(() => undefined);
    });
    this.watchKey(epoch + 1);
  }

  get leaseId(): string {
    return this.lease.id;
  }

  get isLost(): boolean {
    return this.keeper.lostReason !== undefined;
  }

  fence(txn: Txn): Txn {
    return { compare: [...txn.compare, { key: this.key, target: "createRevision", equals: this.epoch }], ops: txn.ops };
  }

  async resign(): Promise<void> {
    if (this.resigned) return;
    this.resigned = true;
    this.keeper.declareLost(new LeaseLostError(this.lease.id, "leadership was resigned"));
    await this.lease.revoke();
  }

  private watchKey(fromRevision: number): void {
    if (this.isLost) return;
    this.watch = this.store.watch(this.key, fromRevision, {
      onEvents: (events) => {
        for (const e of events) {
          if (e.kv.key !== this.key) continue;
          if (e.type === "delete" || e.kv.createRevision !== this.epoch) {
            this.keeper.declareLost(new LeaseLostError(this.lease.id, `the election key ${this.key} was deleted or replaced`));
          }
        }
      },
      onError: () => void this.verify(),
    });
  }

  /** After a watch failure: check the key is still ours, then watch again from now. */
  private async verify(): Promise<void> {
    while (!this.isLost) {
      try {
        const { items, revision } = await this.store.list(this.key);
        const kv: KeyValue | undefined = items.find((i) => i.key === this.key);
        if (kv?.createRevision !== this.epoch) {
          this.keeper.declareLost(new LeaseLostError(this.lease.id, `the election key ${this.key} is no longer ours`));
          return;
        }
        this.watchKey(revision + 1);
        return;
      } catch (e) {
        if (e instanceof StoreUnavailableError && e.closed) {
          this.keeper.declareLost(e);
          return;
        }
        await sleepUnlessAborted(200);
      }
    }
  }
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new BerthError(ErrorCode.Unavailable, "campaign aborted", { cause: signal.reason });
}
