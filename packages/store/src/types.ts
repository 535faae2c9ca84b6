/**
 * The ClusterStore contract: a revisioned key-value store with etcd's semantics. `EtcdStore` is
 * the real one; `MemoryStore` is the embedded one for `berth dev` and unit tests. Both pass the one
 * conformance suite (conformance.testkit.ts), so code written against this interface behaves the
 * same on either.
 *
 * Revisions are etcd's: one store-wide counter, incremented by every successful write
 * transaction; each key records the revision that created it (createRevision, 0 when absent), that
 * last modified it (modRevision) and how many times it was written since creation (version).
 */

/** One key with its value and revisions, as stored. */
export interface KeyValue {
  key: string;
  value: Uint8Array;
  createRevision: number;
  modRevision: number;
  version: number;
  /** The lease the key is attached to, if any ("" when none). */
  lease: string;
}

/** A condition of a transaction. `createRevision == 0` means "the key does not exist". */
export interface Compare {
  key: string;
  target: "createRevision" | "modRevision" | "version";
  /** Only equality is needed by Berth's guards; more can be added without breaking callers. */
  equals: number;
}

export type Op =
  | { type: "put"; key: string; value: Uint8Array; lease?: string }
  | { type: "delete"; key: string };

/**
 * An atomic write: when every compare holds, all ops apply at one new revision; otherwise nothing
 * changes. At most `MAX_TXN_OPS` ops and compares each; keys in `ops` must be distinct.
 */
export interface Txn {
  compare: Compare[];
  ops: Op[];
}

export interface TxnResult {
  succeeded: boolean;
  /** The store's revision after the transaction (the new revision when it succeeded). */
  revision: number;
}

/** etcd's own limit of operations in one transaction. */
export const MAX_TXN_OPS = 128;

export interface ListResult {
  items: KeyValue[];
  /** The store revision the list is consistent at: watch from `revision + 1`. */
  revision: number;
}

export interface WatchEvent {
  type: "put" | "delete";
  /** For a delete: the key, an empty value, and `modRevision` = the revision of the deletion. */
  kv: KeyValue;
}

export interface WatchHandler {
  /** Events of one revision or more, in revision order. Called serially. */
  onEvents(events: WatchEvent[]): void;
  /**
   * The watch has ended and will send nothing more: `CompactedError` when `fromRevision` was
   * compacted away (re-list and watch again), any other error when the store failed.
   */
  onError(error: Error): void;
  /**
   * Optional: every change under the prefix up to `revision` has been delivered (there may have
   * been none). Lets a cache advance past writes to other prefixes. A store may send these rarely
   * or never; never called after `onError`.
   */
  onProgress?(revision: number): void;
}

export interface Watch {
  /** Stops the watch. Idempotent. */
  close(): Promise<void>;
}

/** A lease: keys attached to it are deleted when it expires or is revoked. */
export interface Lease {
  readonly id: string;
  readonly ttlMs: number;
  /** Extends the lease to its full TTL. Throws `LeaseLostError` when it has already expired. */
  keepAliveOnce(): Promise<void>;
  /** Revokes the lease, deleting its keys. Idempotent. */
  revoke(): Promise<void>;
}

export interface ClusterStore {
  /** Reads one key (linearizable). */
  get(key: string): Promise<KeyValue | undefined>;
  /** Reads every key under `prefix`, in key order, consistent at one revision (linearizable). */
  list(prefix: string): Promise<ListResult>;
  /** Applies a transaction atomically. May throw `StoreUnavailableError`. */
  txn(txn: Txn): Promise<TxnResult>;
  /**
   * Sends every change under `prefix` from `fromRevision` on (inclusive), in order. When
   * `fromRevision` has been compacted, `onError(CompactedError)` is called and the watch ends.
   */
  watch(prefix: string, fromRevision: number, handler: WatchHandler): Watch;
  /** Grants a lease of at least `ttlMs` (etcd rounds up to whole seconds). */
  grantLease(ttlMs: number): Promise<Lease>;
  /** Discards history up to `revision`: watches from before it fail with CompactedError. */
  compact(revision: number): Promise<void>;
  /** Releases connections and timers. Idempotent. */
  close(): Promise<void>;
}
