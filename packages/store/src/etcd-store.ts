import { BerthError, ErrorCode } from "@berth/core";
import { Etcd3, type ICompare, type IOptions, type IRequestOp } from "etcd3";
import { LeaseLostError, StoreUnavailableError, storeClosed } from "./errors.js";
import { isAlreadyCompacted, isFutureRevision, mapEtcdError } from "./etcd-errors.js";
import { resolveEtcdStoreOptions, type EtcdStoreOptions, type ResolvedEtcdStoreOptions } from "./etcd-options.js";
import { EtcdWatch, fromEtcdKv } from "./etcd-watch.js";
import { GroupCommitter } from "./group-commit.js";
import { prefixRangeEnd, validateTxn } from "./txn-rules.js";
import type { ClusterStore, Compare, KeyValue, Lease, ListResult, Txn, TxnResult, Watch, WatchHandler } from "./types.js";

/** Keys per page of a `list`; all pages are read at the first page's revision. */
const LIST_PAGE = 500;
/** Attempts of an idempotent call (reads, lease grant/revoke) when etcd does not answer. */
const READ_ATTEMPTS = 3;

type FaultPolicy = NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;

/**
 * etcd3 retries every call three times by default and puts a circuit breaker in front of each
 * host. A write whose reply was lost would then be sent again, and a breaker fails calls for 5 s
 * after etcd is back. EtcdStore decides itself: reads are retried, writes never (see `txn`).
 */
const noRetry = {
  // async: etcd3 relies on a synchronous throw inside `fn` coming back as a rejection.
  execute: async (fn: (context: { signal: AbortSignal }) => unknown) => fn({ signal: new AbortController().signal }),
} as unknown as FaultPolicy;

export interface EtcdStoreStats {
  /** Transactions asked of this store. */
  txns: number;
  /** Transactions actually sent to etcd (fewer than `txns` when group commit merged some). */
  txnRoundTrips: number;
}

/**
 * ClusterStore on etcd v3 (through the etcd3 client). Reads are linearizable; every write is one
 * etcd transaction; concurrent writes are group-committed (option `groupCommit`, default on).
 *
 * Unary calls carry a deadline (`callTimeoutMs`); watch streams do not. Failures come out as
 * `StoreUnavailableError` (the write's outcome is then unknown), `LeaseLostError`, `CompactedError`
 * (watches) or `BerthError`. Construct it directly (connects lazily) or with `EtcdStore.connect`,
 * which waits until etcd answers.
 */
export class EtcdStore implements ClusterStore {
  readonly options: ResolvedEtcdStoreOptions;
  private readonly client: Etcd3;
  private readonly committer: GroupCommitter | undefined;
  private readonly watches = new Set<EtcdWatch>();
  private readonly counters: EtcdStoreStats = { txns: 0, txnRoundTrips: 0 };
  private closed = false;

  /** Validates the options (throws `BerthError(INVALID_ARGUMENT)`); does not connect yet. */
  constructor(options: EtcdStoreOptions) {
    this.options = resolveEtcdStoreOptions(options);
    const o = this.options;
    this.client = new Etcd3({
      hosts: o.endpoints,
      ...(o.tls ? { credentials: { rootCertificate: o.tls.ca, ...(o.tls.key ? { privateKey: o.tls.key, certChain: o.tls.cert! } : {}) } } : {}),
      ...(o.auth ? { auth: { username: o.auth.username, password: o.auth.password } } : {}),
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + o.callTimeoutMs }),
      faultHandling: { global: noRetry, host: () => noRetry },
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
    this.committer = o.groupCommit ? new GroupCommitter((t) => this.sendTxn(t)) : undefined;
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
        await this.client.kv.range({ key: Buffer.from([0]), limit: 1, keys_only: true }, { deadline });
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
    return { ...this.counters };
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const res = await this.retried("reading a key", () => this.client.kv.range({ key: Buffer.from(key, "utf8") }));
    const kv = res.kvs[0];
    return kv && fromEtcdKv(kv);
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
          const res = await this.retried("listing keys", () =>
            this.client.kv.range({ key: from, range_end: end, limit: LIST_PAGE, ...(revision ? { revision } : {}) }),
          );
          if (!revision) revision = Number(res.header.revision);
          for (const kv of res.kvs) items.push(fromEtcdKv(kv));
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
    this.counters.txns += 1;
    return this.committer ? this.committer.txn(txn) : this.sendTxn(txn);
  }

  watch(prefix: string, fromRevision: number, handler: WatchHandler): Watch {
    this.assertOpen();
    const w = new EtcdWatch(this.client, prefix, fromRevision, handler, (ended) => this.watches.delete(ended));
    this.watches.add(w);
    return w;
  }

  async grantLease(ttlMs: number): Promise<Lease> {
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) {
      throw new BerthError(ErrorCode.InvalidArgument, `lease TTL must be positive, not ${ttlMs} ms`, { field: "ttlMs" });
    }
    const res = await this.retried("granting a lease", () =>
      this.client.leaseClient.leaseGrant({ TTL: Math.ceil(ttlMs / 1000), ID: 0 }),
    );
    if (res.error) throw new BerthError(ErrorCode.Internal, `etcd refused a lease: ${res.error}`);
    const id = res.ID;
    return {
      id,
      ttlMs: Number(res.TTL) * 1000,
      keepAliveOnce: () => this.keepAliveOnce(id),
      revoke: () => this.revoke(id),
    };
  }

  async compact(revision: number): Promise<void> {
    this.assertOpen();
    try {
      await this.client.kv.compact({ revision, physical: false });
    } catch (e) {
      if (isAlreadyCompacted(e)) return;
      if (isFutureRevision(e)) {
        throw new BerthError(ErrorCode.InvalidArgument, `cannot compact at revision ${revision}: etcd has not reached it`);
      }
      throw this.failure(e, "compacting");
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of [...this.watches]) w.end(storeClosed());
    this.client.close();
  }

  /** One etcd transaction: no retry, since a lost reply leaves the outcome unknown. */
  private async sendTxn(txn: Txn): Promise<TxnResult> {
    this.assertOpen();
    this.counters.txnRoundTrips += 1;
    try {
      const res = await this.client.kv.txn({ compare: txn.compare.map(toEtcdCompare), success: txn.ops.map(toEtcdOp) });
      return { succeeded: res.succeeded, revision: Number(res.header.revision) };
    } catch (e) {
      const lease = txn.ops.find((o) => o.type === "put" && o.lease);
      throw this.failure(e, "committing a transaction", lease?.type === "put" ? lease.lease : "");
    }
  }

  private async keepAliveOnce(id: string): Promise<void> {
    this.assertOpen();
    try {
      const stream = await this.client.leaseClient.leaseKeepAlive({ deadline: Date.now() + this.options.callTimeoutMs });
      const ttl = await new Promise<string>((resolve, reject) => {
        stream.on("data", (res) => resolve(res.TTL));
        stream.on("error", reject);
        stream.on("end", () => reject(new StoreUnavailableError("the etcd keepalive stream ended without an answer")));
        stream.write({ ID: id });
      }).finally(() => stream.end());
      if (Number(ttl) <= 0) throw new LeaseLostError(id);
    } catch (e) {
      throw this.failure(e, "keeping a lease alive", id);
    }
  }

  private async revoke(id: string): Promise<void> {
    try {
      await this.retried("revoking a lease", () => this.client.leaseClient.leaseRevoke({ ID: id }), id);
    } catch (e) {
      if (e instanceof LeaseLostError) return;
      throw e;
    }
  }

  /** Runs an idempotent call, retrying while etcd is unavailable. */
  private async retried<T>(doing: string, call: () => Promise<T>, leaseId = ""): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      this.assertOpen();
      try {
        return await call();
      } catch (e) {
        const mapped = this.failure(e, doing, leaseId);
        if (!(mapped instanceof StoreUnavailableError) || attempt >= READ_ATTEMPTS) throw mapped;
        await sleep(100 * attempt);
      }
    }
  }

  /** The Berth error for a failed call (a call cut short by `close()` says so). */
  private failure(e: unknown, doing: string, leaseId = ""): Error {
    return this.closed ? storeClosed() : mapEtcdError(e, doing, leaseId);
  }

  private assertOpen(): void {
    if (this.closed) throw storeClosed();
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

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
