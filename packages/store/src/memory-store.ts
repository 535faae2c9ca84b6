import { BerthError, ErrorCode } from "@berth/core";
import { CompactedError, LeaseLostError, storeClosed } from "./errors.js";
import { compareKeys, validateTxn } from "./txn-rules.js";
import type {
  ClusterStore,
  Compare,
  KeyValue,
  Lease,
  ListResult,
  Txn,
  TxnResult,
  Watch,
  WatchEvent,
  WatchHandler,
} from "./types.js";

export interface MemoryStoreOptions {
  /**
   * Lease TTLs are rounded up to a multiple of this, and never shorter (etcd: whole seconds).
   * Default 1000.
   */
  leaseGranularityMs?: number;
  /**
   * How many revisions of history are kept for watches before older ones are compacted
   * automatically (etcd's revision auto-compaction), so a long `berth dev` run stays bounded.
   * Default 100,000; 0 keeps everything until `compact()`.
   */
  historyRevisions?: number;
  /**
   * Start from this state instead of empty (see `MemoryStore.exportState`, `openFileStore`): the
   * keys at their revisions, and the store's revision. History starts there (older watch
   * revisions are compacted). Keys are taken as they are: leases do not survive a process.
   */
  initial?: MemoryStoreState;
}

/** The contents of a MemoryStore, without leases or history: what `openFileStore` keeps on disk. */
export interface MemoryStoreState {
  revision: number;
  kvs: KeyValue[];
}

interface HistoryEntry {
  revision: number;
  events: WatchEvent[];
}

interface Watcher {
  prefix: string;
  /** The next revision to deliver. */
  cursor: number;
  handler: WatchHandler;
  scheduled: boolean;
  ended: boolean;
}

interface LeaseState {
  ttlMs: number;
  keys: Set<string>;
  timer: NodeJS.Timeout;
}

const copyKv = (kv: KeyValue): KeyValue => ({ ...kv, value: kv.value.slice() });

/**
 * The embedded ClusterStore: everything in this process, with etcd's semantics (one store-wide
 * revision starting at 1, create/mod revisions and versions, compare-guarded transactions applied
 * at one revision, history for watches until compaction, leases whose expiry deletes their keys at
 * one revision). Used by `berth dev` and unit tests; passes the same conformance suite as EtcdStore.
 *
 * Watch handlers are always called asynchronously (never inside `txn()`), serially and in revision
 * order. Values are copied in and out: callers cannot change stored state by mutating a buffer.
 */
export class MemoryStore implements ClusterStore {
  private readonly data = new Map<string, KeyValue>();
  private readonly history: HistoryEntry[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly leases = new Map<string, LeaseState>();
  private readonly granularityMs: number;
  private readonly historyRevisions: number;
  private readonly commitListeners = new Set<() => void>();
  private rev = 1;
  private compactRev = 0;
  private nextLeaseId = 1;
  private closed = false;

  constructor(options: MemoryStoreOptions = {}) {
    this.granularityMs = positiveInteger(options.leaseGranularityMs ?? 1000, "leaseGranularityMs");
    this.historyRevisions = options.historyRevisions ?? 100_000;
    if (!Number.isSafeInteger(this.historyRevisions) || this.historyRevisions < 0) {
      throw new BerthError(ErrorCode.InvalidArgument, "historyRevisions: must be a non-negative integer", { field: "historyRevisions" });
    }
    const initial = options.initial;
    if (initial) {
      for (const kv of initial.kvs) {
        if (kv.modRevision > initial.revision || kv.createRevision > kv.modRevision) {
          throw new BerthError(ErrorCode.InvalidArgument, `initial: key ${kv.key.slice(0, 64)} has revisions past the store's ${initial.revision}`, { field: "initial" });
        }
        this.data.set(kv.key, { ...copyKv(kv), lease: "" });
      }
      this.rev = Math.max(1, initial.revision);
      this.compactRev = this.rev;
    }
  }

  /** Every key (none attached to a lease) and the revision: the state `initial` takes back. */
  exportState(): MemoryStoreState {
    const kvs = [...this.data.values()].filter((kv) => kv.lease === "").map(copyKv);
    kvs.sort((a, b) => compareKeys(a.key, b.key));
    return { revision: this.rev, kvs };
  }

  /** Calls `listener` after every revision the store commits (asynchronously is up to it). */
  onCommit(listener: () => void): () => void {
    this.commitListeners.add(listener);
    return () => this.commitListeners.delete(listener);
  }

  /** The current store revision. */
  get revision(): number {
    return this.rev;
  }

  async get(key: string): Promise<KeyValue | undefined> {
    this.assertOpen();
    const kv = this.data.get(key);
    return kv && copyKv(kv);
  }

  async list(prefix: string): Promise<ListResult> {
    this.assertOpen();
    const items: KeyValue[] = [];
    for (const kv of this.data.values()) if (kv.key.startsWith(prefix)) items.push(copyKv(kv));
    items.sort((a, b) => compareKeys(a.key, b.key));
    return { items, revision: this.rev };
  }

  async txn(txn: Txn): Promise<TxnResult> {
    this.assertOpen();
    validateTxn(txn);
    if (!txn.compare.every((c) => this.holds(c))) return { succeeded: false, revision: this.rev };
    for (const op of txn.ops) {
      if (op.type === "put" && op.lease && !this.leases.has(op.lease)) throw new LeaseLostError(op.lease);
    }
    const revision = this.rev + 1;
    const events: WatchEvent[] = [];
    for (const op of txn.ops) {
      const prev = this.data.get(op.key);
      if (prev) this.detach(prev);
      if (op.type === "put") {
        const kv: KeyValue = {
          key: op.key,
          value: op.value.slice(),
          createRevision: prev ? prev.createRevision : revision,
          modRevision: revision,
          version: prev ? prev.version + 1 : 1,
          lease: op.lease ?? "",
        };
        this.data.set(op.key, kv);
        if (kv.lease) this.leases.get(kv.lease)!.keys.add(kv.key);
        events.push({ type: "put", kv });
      } else if (prev) {
        this.data.delete(op.key);
        events.push({ type: "delete", kv: deleted(op.key, revision) });
      }
    }
    this.commit(events);
    return { succeeded: true, revision: this.rev };
  }

  watch(prefix: string, fromRevision: number, handler: WatchHandler): Watch {
    this.assertOpen();
    const watcher: Watcher = {
      prefix,
      cursor: fromRevision > 0 ? fromRevision : this.rev + 1,
      handler,
      scheduled: false,
      ended: false,
    };
    this.watchers.add(watcher);
    this.schedule(watcher);
    return {
      close: async () => {
        watcher.ended = true;
        this.watchers.delete(watcher);
      },
    };
  }

  async grantLease(ttlMs: number): Promise<Lease> {
    this.assertOpen();
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) {
      throw new BerthError(ErrorCode.InvalidArgument, `lease TTL must be positive, not ${ttlMs} ms`, { field: "ttlMs" });
    }
    const granted = Math.max(1, Math.ceil(ttlMs / this.granularityMs)) * this.granularityMs;
    const id = String(this.nextLeaseId++);
    this.leases.set(id, { ttlMs: granted, keys: new Set(), timer: this.expiryTimer(id, granted) });
    return {
      id,
      ttlMs: granted,
      keepAliveOnce: async () => {
        this.assertOpen();
        const lease = this.leases.get(id);
        if (!lease) throw new LeaseLostError(id);
        clearTimeout(lease.timer);
        lease.timer = this.expiryTimer(id, lease.ttlMs);
      },
      revoke: async () => {
        this.assertOpen();
        this.endLease(id);
      },
    };
  }

  async compact(revision: number): Promise<void> {
    this.assertOpen();
    if (revision > this.rev) {
      throw new BerthError(ErrorCode.InvalidArgument, `cannot compact at revision ${revision}: the store is at revision ${this.rev}`);
    }
    this.compactTo(revision);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const lease of this.leases.values()) clearTimeout(lease.timer);
    this.leases.clear();
    for (const w of this.watchers) {
      w.ended = true;
      setImmediate(() => w.handler.onError(storeClosed()));
    }
    this.watchers.clear();
  }

  private holds(c: Compare): boolean {
    const kv = this.data.get(c.key);
    const actual = kv ? kv[c.target] : 0;
    return actual === c.equals;
  }

  /** Records one revision's changes (if any) and wakes the watchers. */
  private commit(events: WatchEvent[]): void {
    if (events.length === 0) return;
    this.rev += 1;
    this.history.push({ revision: this.rev, events });
    if (this.historyRevisions > 0 && this.rev - this.historyRevisions > this.compactRev) {
      this.compactTo(this.rev - this.historyRevisions);
    }
    for (const w of this.watchers) this.schedule(w);
    for (const l of this.commitListeners) l();
  }

  private compactTo(revision: number): void {
    if (revision <= this.compactRev) return;
    this.compactRev = revision;
    let drop = 0;
    while (drop < this.history.length && this.history[drop]!.revision < revision) drop++;
    this.history.splice(0, drop);
    for (const w of this.watchers) this.schedule(w);
  }

  private detach(kv: KeyValue): void {
    if (kv.lease) this.leases.get(kv.lease)?.keys.delete(kv.key);
  }

  private expiryTimer(id: string, ttlMs: number): NodeJS.Timeout {
    const timer = setTimeout(() => this.endLease(id), ttlMs);
    timer.unref();
    return timer;
  }

  /** Expiry and revoke: the lease's keys are deleted at one new revision, as etcd does. */
  private endLease(id: string): void {
    const lease = this.leases.get(id);
    if (!lease) return;
    clearTimeout(lease.timer);
    this.leases.delete(id);
    const revision = this.rev + 1;
    const events: WatchEvent[] = [];
    for (const key of [...lease.keys].sort(compareKeys)) {
      this.data.delete(key);
      events.push({ type: "delete", kv: deleted(key, revision) });
    }
    this.commit(events);
  }

  private schedule(w: Watcher): void {
    if (w.scheduled || w.ended) return;
    w.scheduled = true;
    setImmediate(() => this.deliver(w));
  }

  private deliver(w: Watcher): void {
    w.scheduled = false;
    if (w.ended) return;
    if (w.cursor < this.compactRev) {
      this.endWatch(w, new CompactedError(this.compactRev));
      return;
    }
    if (w.cursor > this.rev + 1) return;
    const events: WatchEvent[] = [];
    for (let i = firstAtOrAfter(this.history, w.cursor); i < this.history.length; i++) {
      for (const e of this.history[i]!.events) {
        if (e.kv.key.startsWith(w.prefix)) events.push({ type: e.type, kv: copyKv(e.kv) });
      }
    }
    w.cursor = this.rev + 1;
    try {
      if (events.length > 0) w.handler.onEvents(events);
      if (!w.ended) w.handler.onProgress?.(this.rev);
    } catch (e) {
      this.endWatch(w, e instanceof Error ? e : new Error(String(e)));
    }
  }

  private endWatch(w: Watcher, error: Error): void {
    w.ended = true;
    this.watchers.delete(w);
    w.handler.onError(error);
  }

  private assertOpen(): void {
    if (this.closed) throw storeClosed();
  }
}

const deleted = (key: string, revision: number): KeyValue => ({
  key,
  value: new Uint8Array(0),
  createRevision: 0,
  modRevision: revision,
  version: 0,
  lease: "",
});

function firstAtOrAfter(history: HistoryEntry[], revision: number): number {
  let lo = 0;
  let hi = history.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (history[mid]!.revision < revision) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function positiveInteger(n: number, field: string): number {
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new BerthError(ErrorCode.InvalidArgument, `${field}: must be a positive integer, not ${n}`, { field });
  }
  return n;
}
