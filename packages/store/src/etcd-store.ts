import { BerthError, ErrorCode } from "@berth/core";
import { Etcd3, type ICompare, type IOptions, type IRequestOp, type ITxnRequest } from "etcd3";
import { LeaseLostError, StoreUnavailableError, storeClosed } from "./errors.js";
import { classifyEtcdFailure, isAlreadyCompacted, isFutureRevision, mapEtcdError } from "./etcd-errors.js";
import { MemberGate } from "./etcd-members.js";
import { resolveEtcdStoreOptions, type EtcdStoreOptions, type ResolvedEtcdStoreOptions } from "./etcd-options.js";
import { RECEIPT_APPLIED, RECEIPT_VOID, ReceiptLeases, type Receipt } from "./etcd-receipts.js";
import { EtcdWatch, fromEtcdKv } from "./etcd-watch.js";
import { GroupCommitter } from "./group-commit.js";
import { prefixRangeEnd, validateTxn } from "./txn-rules.js";
import {
  MAX_TXN_OPS,
  type ClusterStore,
  type Compare,
  type KeyValue,
  type Lease,
  type ListResult,
  type Txn,
  type TxnResult,
  type Watch,
  type WatchHandler,
} from "./types.js";

/** Keys per page of a `list`; all pages are read at the first page's revision. */
const LIST_PAGE = 500;
/** Pause before the first retry of a call; doubles per attempt up to RETRY_MAX_MS, half of it random. */
const RETRY_FIRST_MS = 25;
const RETRY_MAX_MS = 500;

type FaultPolicy = NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;

/**
 * etcd3 retries every call three times by default (a write whose reply was lost would be sent
 * again blindly) and puts a circuit breaker in front of each member. EtcdStore decides itself
 * (see `attempts` and `sendTxn`): etcd3's global policy is "call once"; its per-member policy is
 * the MemberGate, which only steers calls away from members that just failed.
 */
const callOnce = {
  // async: etcd3 relies on a synchronous throw inside `fn` coming back as a rejection.
  execute: async (fn: (context: { signal: AbortSignal }) => unknown) => fn({ signal: new AbortController().signal }),
} as unknown as FaultPolicy;

export interface EtcdStoreStats {
  /** Transactions asked of this store. */
  txns: number;
  /** Transactions committed to etcd (fewer than `txns` when group commit merged some); retries not counted. */
  txnRoundTrips: number;
  /** Extra attempts of calls (reads, writes, leases) after one failed on a member: another member was tried. */
  retries: number;
  /** Writes whose reply was lost and whose outcome was then learnt from their receipt. */
  settled: number;
  /** Members calls are kept away from now (they failed and have not answered a probe since). */
  membersDown: string[];
}

/**
 * ClusterStore on etcd v3 (through the etcd3 client). Reads are linearizable; every write is one
 * etcd transaction; concurrent writes are group-committed (option `groupCommit`, default on).
 *
 * Losing an etcd member (while a quorum remains) is invisible: a call that fails on a member is
 * tried again on another one (the MemberGate steers calls away from members that just failed),
 * with a short jittered backoff, until `callTimeoutMs` runs out; no attempt waits longer than
 * `attemptTimeoutMs`. Reads, lease calls and compaction are retried whenever etcd did not answer.
 * A write is sent again as it is only when it certainly had no effect (never sent, or refused before
 * etcd proposed it); when its reply was lost, its write receipt (etcd-receipts.ts) is settled
 * first, so it is applied exactly once and reports its true result. Watches resume on another
 * member from the next revision (EtcdWatch).
 *
 * Failures come out as `StoreUnavailableError` (for a write: its message says whether the outcome
 * is unknown), `LeaseLostError`, `CompactedError` (watches) or `BerthError`. Unary calls carry a
 * deadline; watch streams do not. Construct it directly (connects lazily) or with
 * `EtcdStore.connect`, which waits until etcd answers.
 */
export class EtcdStore implements ClusterStore {
  readonly options: ResolvedEtcdStoreOptions;
  private readonly client: Etcd3;
  private readonly gate: MemberGate;
  /** One client per member, for the gate's probes (etcd3 cannot aim a call at one member). */
  private readonly probes = new Map<string, Etcd3>();
  private readonly committer: GroupCommitter | undefined;
  private readonly receipts: ReceiptLeases | undefined;
  private readonly watches = new Set<EtcdWatch>();
  private readonly counters: Omit<EtcdStoreStats, "membersDown"> = { txns: 0, txnRoundTrips: 0, retries: 0, settled: 0 };
  private closed = false;

  /** Validates the options (throws `BerthError(INVALID_ARGUMENT)`); does not connect yet. */
  constructor(options: EtcdStoreOptions) {
    this.options = resolveEtcdStoreOptions(options);
    const o = this.options;
    this.gate = new MemberGate((host, deadline) => this.probe(host, deadline), o.attemptTimeoutMs);
    this.client = this.etcdClient(o.endpoints, (host) => this.gate.policy(host));
    this.receipts = o.receipts
      ? new ReceiptLeases((ttlSeconds, deadline) => this.grantReceiptLease(ttlSeconds, deadline), o.receiptPrefix, o.callTimeoutMs)
      : undefined;
    // A receipt takes one op and one compare of the merged transaction.
    const maxOps = o.receipts ? MAX_TXN_OPS - 1 : MAX_TXN_OPS;
    this.committer = o.groupCommit ? new GroupCommitter((t) => this.sendTxn(t), { maxOps }) : undefined;
  }

  /** An etcd3 client on `hosts` with this store's connection settings; `host` gives each member's policy. */
  private etcdClient(hosts: string[], host: (host: string) => FaultPolicy): Etcd3 {
    const o = this.options;
    return new Etcd3({
      hosts,
      ...(o.tls ? { credentials: { rootCertificate: o.tls.ca, ...(o.tls.key ? { privateKey: o.tls.key, certChain: o.tls.cert! } : {}) } } : {}),
      ...(o.auth ? { auth: { username: o.auth.username, password: o.auth.password } } : {}),
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + o.attemptTimeoutMs }),
      faultHandling: { global: callOnce, host },
      grpcOptions: {
        "grpc.keepalive_time_ms": o.keepaliveTimeMs,
        "grpc.keepalive_timeout_ms": o.keepaliveTimeoutMs,
        // etcd refuses pings on a connection without streams (its keepalive policy).
        "grpc.keepalive_permit_without_calls": 0,
        "grpc.max_receive_message_length": o.maxReceiveBytes,
        "grpc.initial_reconnect_backoff_ms": 200,
        "grpc.max_reconnect_backoff_ms": 2_000,
      },
    });
  }

  /** The gate's probe: the member answers its status and knows a leader. */
  private async probe(host: string, deadline: number): Promise<void> {
    if (this.closed) throw storeClosed();
    let client = this.probes.get(host);
    if (!client) {
      client = this.etcdClient([host], () => callOnce);
      this.probes.set(host, client);
    }
    const status = await client.maintenance.status({ deadline });
    if (!status.leader || status.leader === "0") throw new Error(`etcd member ${host} knows no leader`);
  }

  /** Creates a store and waits (up to `dialTimeoutMs`) until etcd answers; throws StoreUnavailableError. */
  static async connect(options: EtcdStoreOptions): Promise<EtcdStore> {
    const store = new EtcdStore(options);
    try {
      await store.ready();
      return store;
    } catch (e) {
      await store.close();
      throw e;
    }
  }

  /** Resolves once etcd answers a read; throws StoreUnavailableError after `dialTimeoutMs`. */
  async ready(): Promise<void> {
    const deadline = Date.now() + this.options.dialTimeoutMs;
    for (;;) {
      this.assertOpen();
      try {
        await this.client.kv.range({ key: Buffer.from([0]), limit: 1, keys_only: true }, { deadline: this.attemptDeadline(deadline) });
        // Have a receipt lease ready before the first write needs one.
        void this.receipts?.issue(Date.now() + this.options.callTimeoutMs);
        return;
      } catch (e) {
        const mapped = mapEtcdError(e, "connecting");
        if (!(mapped instanceof StoreUnavailableError) || Date.now() + 200 >= deadline) {
          throw new StoreUnavailableError(
            `could not reach etcd at ${this.options.endpoints.join(", ")} within ${this.options.dialTimeoutMs} ms: ${mapped.message}`,
            { cause: e },
          );
        }
        await sleep(200);
      }
    }
  }

  get stats(): EtcdStoreStats {
    return { ...this.counters, membersDown: this.gate.skipped() };
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const res = await this.attempts("reading a key", (deadline) => this.client.kv.range({ key: Buffer.from(key, "utf8") }, { deadline }));
    const kv = res.kvs[0];
    return kv && !this.isReceiptKey(key) ? fromEtcdKv(kv) : undefined;
  }

  async list(prefix: string): Promise<ListResult> {
    const start = Buffer.from(prefix, "utf8");
    const end = prefixRangeEnd(start);
    for (;;) {
      const items: KeyValue[] = [];
      let revision = 0;
      let from = start;
      try {
        for (;;) {
          const res = await this.attempts("listing keys", (deadline) =>
            this.client.kv.range({ key: from, range_end: end, limit: LIST_PAGE, ...(revision ? { revision } : {}) }, { deadline }),
          );
          if (!revision) revision = Number(res.header.revision);
          for (const kv of res.kvs) {
            const item = fromEtcdKv(kv);
            if (!this.isReceiptKey(item.key)) items.push(item);
          }
          const last = res.kvs[res.kvs.length - 1];
          if (!res.more || !last) return { items, revision };
          from = Buffer.concat([last.key, Buffer.from([0])]);
        }
      } catch (e) {
        // Compacted between two pages: start again at a newer revision.
        if (!isAlreadyCompacted(e)) throw e;
      }
    }
  }

  async txn(txn: Txn): Promise<TxnResult> {
    this.assertOpen();
    validateTxn(txn);
    const reserved = txn.ops.find((op) => this.isReceiptKey(op.key));
    if (reserved) {
      throw new BerthError(ErrorCode.InvalidArgument, `invalid transaction: key '${reserved.key}' is under the store's receipt prefix`, {
        field: "ops.key",
      });
    }
    this.counters.txns += 1;
    return this.committer ? this.committer.txn(txn) : this.sendTxn(txn);
  }

  watch(prefix: string, fromRevision: number, handler: WatchHandler): Watch {
    this.assertOpen();
    const w = new EtcdWatch(this.client, prefix, fromRevision, handler, (ended) => this.watches.delete(ended), {
      resumeWithinMs: this.options.callTimeoutMs,
      hidden: (key) => this.isReceiptKey(key),
    });
    this.watches.add(w);
    return w;
  }

  /**
   * Grants a lease. When the reply is lost the grant is asked again (of another member): a lease
   * granted by a lost attempt is never used and expires after its TTL.
   */
  async grantLease(ttlMs: number): Promise<Lease> {
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) {
      throw new BerthError(ErrorCode.InvalidArgument, `lease TTL must be positive, not ${ttlMs} ms`, { field: "ttlMs" });
    }
    const { id, ttlMs: granted } = await this.grant(Math.ceil(ttlMs / 1000), Date.now() + this.options.callTimeoutMs);
    return {
      id,
      ttlMs: granted,
      keepAliveOnce: () => this.keepAliveOnce(id, granted),
      revoke: () => this.revoke(id),
    };
  }

  async compact(revision: number): Promise<void> {
    this.assertOpen();
    try {
      // Idempotent: a compaction applied by an attempt whose reply was lost makes the next one "already compacted".
      await this.attempts("compacting", (deadline) => this.client.kv.compact({ revision, physical: false }, { deadline }));
    } catch (e) {
      if (isAlreadyCompacted(e)) return;
      if (isFutureRevision(e)) {
        throw new BerthError(ErrorCode.InvalidArgument, `cannot compact at revision ${revision}: etcd has not reached it`);
      }
      throw e;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.receipts?.close();
    this.gate.close();
    for (const w of [...this.watches]) w.end(storeClosed());
    this.client.close();
    for (const client of this.probes.values()) client.close();
  }

  /**
   * Commits one transaction (possibly a merged one), exactly once, within `callTimeoutMs`:
   *
   * - an attempt that certainly had no effect (never sent, refused before being proposed) is sent
   *   again, on another member when the gate knows one is up;
   * - an attempt whose reply was lost is settled through its receipt: if it applied, that is the
   *   result (at the revision it applied at); if not, it has been voided and the transaction is
   *   sent again as a new one. Without a receipt (receipts off, none could be had, or the
   *   transaction has no room for one) the outcome stays unknown: StoreUnavailableError.
   */
  private async sendTxn(txn: Txn): Promise<TxnResult> {
    this.assertOpen();
    this.counters.txnRoundTrips += 1;
    const doing = "committing a transaction";
    const started = Date.now();
    const deadline = started + this.options.callTimeoutMs;
    const userLease = txn.ops.find((o) => o.type === "put" && o.lease);
    const leaseId = userLease?.type === "put" ? (userLease.lease ?? "") : "";
    // A receipt is a put: only where success changes something anyway, so that a transaction that
    // changes nothing still leaves the revision alone; and only where there is room for it.
    const fits = txn.ops.length < MAX_TXN_OPS && txn.compare.length < MAX_TXN_OPS && changesWhenApplied(txn);
    let receipt = fits ? await this.receipts?.issue(deadline) : undefined;
    let receiptLeaseRenewed = false;
    /** An attempt with `receipt` may have applied: settle before anything else. */
    let uncertain = false;
    for (let attempt = 1; ; attempt++) {
      this.assertOpen();
      try {
        if (uncertain && receipt) {
          const applied = await this.settle(receipt, deadline);
          this.counters.settled += 1;
          if (applied !== undefined) return { succeeded: true, revision: applied };
          uncertain = false;
          receipt = await this.receipts?.issue(deadline);
        }
        const res = await this.client.kv.txn(toEtcdTxn(txn, receipt), { deadline: this.attemptDeadline(deadline) });
        if (res.succeeded) return { succeeded: true, revision: Number(res.header.revision) };
        // A failed compare: if it was the receipt's, an earlier attempt with this receipt applied.
        const kv = res.responses[0]?.response_range?.kvs[0];
        if (receipt && kv && kv.value.toString() === RECEIPT_APPLIED) return { succeeded: true, revision: Number(kv.mod_revision) };
        return { succeeded: false, revision: Number(res.header.revision) };
      } catch (e) {
        if (this.closed) throw storeClosed();
        const failure = classifyEtcdFailure(e, doing, leaseId);
        if (uncertain) {
          // The settle itself failed: transient failures leave the outcome as it was (unknown).
          if (!failure.transient) throw outcomeUnknown(doing, failure.error);
        } else if (failure.error instanceof LeaseLostError && receipt && !receiptLeaseRenewed) {
          // etcd names no lease: it may be the receipt's (expired against all odds). Nothing was
          // applied; try once more on a fresh receipt lease before blaming the caller's lease.
          this.receipts?.invalidate(receipt.leaseId);
          receiptLeaseRenewed = true;
          receipt = await this.receipts?.issue(deadline);
          continue;
        } else if (!failure.transient) {
          throw failure.error;
        } else if (!failure.notApplied) {
          if (!receipt) throw outcomeUnknown(doing, failure.error);
          uncertain = true;
        }
        const pause = retryPause(attempt);
        if (Date.now() + pause >= deadline) {
          throw uncertain ? outcomeUnknown(doing, failure.error) : gaveUp(doing, attempt, Date.now() - started, failure.error, true);
        }
        this.counters.retries += 1;
        await sleep(pause);
      }
    }
  }

  /**
   * Settles a receipt whose attempt lost its reply (see etcd-receipts.ts): voids it if absent, else
   * reads it. Returns the revision the attempt applied at, or undefined when it did not apply and
   * now never will. Throws what etcd throws (the caller retries).
   */
  private async settle(receipt: Receipt, deadline: number): Promise<number | undefined> {
    const key = Buffer.from(receipt.key, "utf8");
    const res = await this.client.kv.txn(
      {
        compare: [{ key, result: "Equal", target: "Create", create_revision: 0 }],
        success: [{ request_put: { key, value: Buffer.from(RECEIPT_VOID), lease: receipt.leaseId } }],
        failure: [{ request_range: { key } }],
      },
      { deadline: this.attemptDeadline(deadline) },
    );
    if (res.succeeded) return undefined;
    const kv = res.responses[0]?.response_range?.kvs[0];
    if (kv?.value.toString() === RECEIPT_APPLIED) return Number(kv.mod_revision);
    // Voided by an earlier settle whose own reply was lost.
    return undefined;
  }

  /**
   * One keepalive, retried on other members within `callTimeoutMs`. An attempt waits at most a
   * sixth of the TTL (and `attemptTimeoutMs`): a keepalive stuck on a frozen member must leave
   * time for the next one to succeed elsewhere before a LeaseKeeper gives the lease up.
   */
  private async keepAliveOnce(id: string, ttlMs: number): Promise<void> {
    this.assertOpen();
    await this.attempts(
      "keeping a lease alive",
      async (deadline) => {
        // A new stream per keepalive: etcd3 opens it on a member the gate considers up.
        const stream = await this.client.leaseClient.leaseKeepAlive({ deadline });
        const ttl = await new Promise<string>((resolve, reject) => {
          stream.on("data", (res) => resolve(res.TTL));
          stream.on("error", reject);
          stream.on("end", () => reject(new StoreUnavailableError("the etcd keepalive stream ended without an answer")));
          stream.write({ ID: id });
        }).finally(() => stream.end());
        if (Number(ttl) <= 0) throw new LeaseLostError(id);
      },
      // Short pauses too: once etcd has a leader again, the next keepalive should be on its way.
      { leaseId: id, attemptMs: Math.min(this.options.attemptTimeoutMs, Math.max(200, Math.floor(ttlMs / 6))), maxPauseMs: 100 },
    );
  }

  private async revoke(id: string): Promise<void> {
    try {
      await this.attempts("revoking a lease", (deadline) => this.client.leaseClient.leaseRevoke({ ID: id }, { deadline }), { leaseId: id });
    } catch (e) {
      if (e instanceof LeaseLostError) return;
      throw e;
    }
  }

  private async grant(ttlSeconds: number, deadline: number): Promise<{ id: string; ttlMs: number }> {
    const res = await this.attempts(
      "granting a lease",
      (attemptDeadline) => this.client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 }, { deadline: attemptDeadline }),
      { deadline },
    );
    if (res.error) throw new BerthError(ErrorCode.Internal, `etcd refused a lease: ${res.error}`);
    return { id: res.ID, ttlMs: Number(res.TTL) * 1000 };
  }

  private grantReceiptLease(ttlSeconds: number, deadline: number): Promise<{ id: string; ttlMs: number }> {
    this.assertOpen();
    return this.grant(ttlSeconds, deadline);
  }

  /**
   * Runs a call that may be repeated (a read, a lease call, compaction) until it succeeds, fails
   * for a reason other than etcd not answering, or `deadline` (default: `callTimeoutMs` from now)
   * would pass. Each attempt gets `attemptTimeoutMs` at most.
   */
  private async attempts<T>(
    doing: string,
    call: (attemptDeadline: number) => Promise<T>,
    {
      leaseId = "",
      deadline,
      attemptMs,
      maxPauseMs = RETRY_MAX_MS,
    }: { leaseId?: string; deadline?: number; attemptMs?: number; maxPauseMs?: number } = {},
  ): Promise<T> {
    const started = Date.now();
    const until = deadline ?? started + this.options.callTimeoutMs;
    for (let attempt = 1; ; attempt++) {
      this.assertOpen();
      try {
        return await call(this.attemptDeadline(until, attemptMs));
      } catch (e) {
        if (this.closed) throw storeClosed();
        const failure = classifyEtcdFailure(e, doing, leaseId);
        if (!failure.transient) throw failure.error;
        const pause = retryPause(attempt, maxPauseMs);
        if (Date.now() + pause >= until) throw gaveUp(doing, attempt, Date.now() - started, failure.error, false);
        this.counters.retries += 1;
        await sleep(pause);
      }
    }
  }

  private attemptDeadline(callDeadline: number, attemptMs = this.options.attemptTimeoutMs): number {
    return Math.min(callDeadline, Date.now() + attemptMs);
  }

  private isReceiptKey(key: string): boolean {
    return this.receipts !== undefined && key.startsWith(this.receipts.prefix);
  }

  private assertOpen(): void {
    if (this.closed) throw storeClosed();
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Exponential backoff with jitter: half of the pause is fixed, half random. */
function retryPause(attempt: number, maxMs = RETRY_MAX_MS): number {
  const ceiling = Math.min(maxMs, RETRY_FIRST_MS * 2 ** (attempt - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

function gaveUp(doing: string, attempts: number, elapsedMs: number, last: Error, write: boolean): StoreUnavailableError {
  const effect = write ? "; it was not applied" : "";
  return new StoreUnavailableError(
    `etcd did not answer while ${doing} (${attempts} attempt${attempts === 1 ? "" : "s"} in ${elapsedMs} ms${effect}): ${last.message}`,
    { cause: last },
  );
}

function outcomeUnknown(doing: string, last: Error): StoreUnavailableError {
  return new StoreUnavailableError(`etcd did not answer while ${doing}; the outcome is unknown: ${last.message}`, { cause: last });
}

/**
 * Whether `txn`, when its compares hold, certainly changes something: it puts a key, or deletes a
 * key that one of its compares requires to exist.
 */
function changesWhenApplied(txn: Txn): boolean {
  const mustExist = new Set(txn.compare.filter((c) => c.equals > 0).map((c) => c.key));
  return txn.ops.some((op) => op.type === "put" || mustExist.has(op.key));
}

/** The etcd transaction for `txn`, guarded by its receipt when it has one (see etcd-receipts.ts). */
function toEtcdTxn(txn: Txn, receipt: Receipt | undefined): ITxnRequest {
  const compare = txn.compare.map(toEtcdCompare);
  const success = txn.ops.map(toEtcdOp);
  if (!receipt) return { compare, success };
  const key = Buffer.from(receipt.key, "utf8");
  return {
    compare: [...compare, { key, result: "Equal", target: "Create", create_revision: 0 }],
    success: [...success, { request_put: { key, value: Buffer.from(RECEIPT_APPLIED), lease: receipt.leaseId } }],
    failure: [{ request_range: { key } }],
  };
}

const targets = { createRevision: "Create", modRevision: "Mod", version: "Version" } as const;
const fields = { createRevision: "create_revision", modRevision: "mod_revision", version: "version" } as const;

function toEtcdCompare(c: Compare): ICompare {
  return { key: Buffer.from(c.key, "utf8"), result: "Equal", target: targets[c.target], [fields[c.target]]: c.equals };
}

function toEtcdOp(op: Txn["ops"][number]): IRequestOp {
  const key = Buffer.from(op.key, "utf8");
  if (op.type === "delete") return { request_delete_range: { key } };
  return { request_put: { key, value: Buffer.from(op.value.buffer, op.value.byteOffset, op.value.byteLength), lease: op.lease || 0 } };
}
