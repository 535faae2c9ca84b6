import { StoreUnavailableError } from "./errors.js";
import { validateTxn } from "./txn-rules.js";
import { MAX_TXN_OPS, type ClusterStore, type Compare, type Txn, type TxnResult } from "./types.js";

export interface GroupCommitOptions {
  /** Most ops, and most distinct compares, in one merged transaction. Default (and at most) MAX_TXN_OPS. */
  maxOps?: number;
  /** Rough bound on a merged transaction's size in bytes (etcd refuses requests over 1.5 MiB). Default 1 MiB. */
  maxBytes?: number;
}

export interface GroupCommitStats {
  /** Transactions submitted to `txn()`. */
  submitted: number;
  /** Transactions sent to the underlying store (merged ones count once). */
  commits: number;
}

interface Pending {
  txn: Txn;
  reads: Set<string>;
  writes: Set<string>;
  bytes: number;
  resolve(r: TxnResult): void;
  reject(e: unknown): void;
}

/**
 * Group commit: while one transaction is in flight, concurrent ones queue; the next flush merges
 * queued transactions that cannot interfere into one transaction (≤ maxOps ops and compares).
 *
 * Two transactions can be merged when neither writes a key the other compares or writes; they may
 * compare the same key the same way (every fenced write compares the election key). Merging such
 * transactions is equivalent to running them one after the other, in any order. When the merged
 * transaction succeeds, each member succeeds with its revision; when it fails (or etcd refuses it,
 * e.g. for an expired lease), each member is retried alone so that each gets its own true answer.
 * When the store is unavailable the outcome is unknown and every member fails with that error.
 *
 * Queued transactions that could interfere keep their submission order.
 */
export class GroupCommitter {
  private readonly maxOps: number;
  private readonly maxBytes: number;
  private queue: Pending[] = [];
  private flushing = false;
  private readonly counters: GroupCommitStats = { submitted: 0, commits: 0 };

  constructor(
    private readonly commit: (txn: Txn) => Promise<TxnResult>,
    options: GroupCommitOptions = {},
  ) {
    this.maxOps = Math.min(MAX_TXN_OPS, Math.max(1, options.maxOps ?? MAX_TXN_OPS));
    this.maxBytes = Math.max(1, options.maxBytes ?? 1024 * 1024);
  }

  get stats(): GroupCommitStats {
    return { ...this.counters };
  }

  /** Commits `txn`, possibly merged with others. Throws what the store throws; validates first. */
  async txn(txn: Txn): Promise<TxnResult> {
    validateTxn(txn);
    this.counters.submitted += 1;
    return new Promise<TxnResult>((resolve, reject) => {
      const reads = new Set(txn.compare.map((c) => c.key));
      const writes = new Set(txn.ops.map((o) => o.key));
      this.queue.push({ txn, reads, writes, bytes: sizeOf(txn), resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.takeBatch();
        if (batch.length === 1) await this.runAlone(batch[0]!);
        else await this.runMerged(batch);
      }
    } finally {
      this.flushing = false;
    }
  }

  private async runAlone(p: Pending): Promise<void> {
    this.counters.commits += 1;
    try {
      p.resolve(await this.commit(p.txn));
    } catch (e) {
      p.reject(e);
    }
  }

  private async runMerged(batch: Pending[]): Promise<void> {
    this.counters.commits += 1;
    let result: TxnResult;
    try {
      result = await this.commit(merge(batch.map((p) => p.txn)));
    } catch (e) {
      if (e instanceof StoreUnavailableError) {
        for (const p of batch) p.reject(e);
        return;
      }
      result = { succeeded: false, revision: 0 };
    }
    if (result.succeeded) {
      for (const p of batch) p.resolve(result);
      return;
    }
    // The members do not interfere, so retrying them concurrently is still equivalent to some order.
    await Promise.all(batch.map((p) => this.runAlone(p)));
  }

  /** Takes the first queued transaction and every later one that fits with it. */
  private takeBatch(): Pending[] {
    const first = this.queue[0]!;
    const batch = [first];
    const reads = new Set(first.reads);
    const writes = new Set(first.writes);
    // Distinct compares (what the merged transaction carries) and what each (key, target) must equal.
    const compares = new Set(first.txn.compare.map(compareId));
    const expected = new Map<string, number>();
    for (const c of first.txn.compare) expected.set(targetId(c), c.equals);
    let ops = first.txn.ops.length;
    let bytes = first.bytes;
    const skippedReads = new Set<string>();
    const skippedWrites = new Set<string>();
    const rest: Pending[] = [];
    for (let at = 1; at < this.queue.length; at++) {
      const p = this.queue[at]!;
      // A full batch takes nothing more: the rest wait, in order, without being looked at (a long
      // queue scanned to its end on every flush made a backlog cost O(queue²)).
      if (ops >= this.maxOps || compares.size >= this.maxOps || bytes >= this.maxBytes) {
        for (let j = at; j < this.queue.length; j++) rest.push(this.queue[j]!);
        break;
      }
      const newCompares = new Set(p.txn.compare.map(compareId).filter((id) => !compares.has(id)));
      const fits =
        !overlaps(p.writes, skippedReads, skippedWrites) &&
        !overlaps(p.reads, skippedWrites) &&
        !overlaps(p.writes, reads, writes) &&
        !overlaps(p.reads, writes) &&
        p.txn.compare.every((c) => (expected.get(targetId(c)) ?? c.equals) === c.equals) &&
        ops + p.txn.ops.length <= this.maxOps &&
        compares.size + newCompares.size <= this.maxOps &&
        bytes + p.bytes <= this.maxBytes;
      if (!fits) {
        rest.push(p);
        for (const k of p.reads) skippedReads.add(k);
        for (const k of p.writes) skippedWrites.add(k);
        continue;
      }
      batch.push(p);
      for (const k of p.reads) reads.add(k);
      for (const k of p.writes) writes.add(k);
      for (const id of newCompares) compares.add(id);
      for (const c of p.txn.compare) expected.set(targetId(c), c.equals);
      ops += p.txn.ops.length;
      bytes += p.bytes;
    }
    this.queue = rest;
    return batch;
  }
}

/** A ClusterStore whose `txn` goes through a GroupCommitter; everything else is the store's own. */
export function withGroupCommit(store: ClusterStore, options: GroupCommitOptions = {}): ClusterStore {
  const committer = new GroupCommitter((t) => store.txn(t), options);
  return {
    get: (key) => store.get(key),
    list: (prefix) => store.list(prefix),
    txn: (t) => committer.txn(t),
    watch: (prefix, from, handler) => store.watch(prefix, from, handler),
    grantLease: (ttlMs) => store.grantLease(ttlMs),
    compact: (revision) => store.compact(revision),
    close: () => store.close(),
  };
}

const targetId = (c: Compare): string => `${c.target}\u0000${c.key}`;
const compareId = (c: Compare): string => `${c.target}\u0000${c.equals}\u0000${c.key}`;

function overlaps(keys: Set<string>, ...sets: Set<string>[]): boolean {
  for (const k of keys) for (const s of sets) if (s.has(k)) return true;
  return false;
}

/** One transaction with every member's compares (deduplicated) and ops. */
function merge(txns: Txn[]): Txn {
  const compare = new Map<string, Compare>();
  for (const t of txns) for (const c of t.compare) compare.set(compareId(c), c);
  return { compare: [...compare.values()], ops: txns.flatMap((t) => t.ops) };
}

function sizeOf(txn: Txn): number {
  let n = 0;
  for (const c of txn.compare) n += c.key.length * 3 + 32;
  for (const o of txn.ops) n += o.key.length * 3 + 32 + (o.type === "put" ? o.value.byteLength : 0);
  return n;
}
