import { BerthError, ErrorCode } from "@berth/core";

/** How an EtcdStore reaches etcd. Only `endpoints` is required. */
export interface EtcdStoreOptions {
  /** etcd client URLs such as "http://10.0.0.1:2379"; all http or all https. */
  endpoints: readonly string[];
  /** How long `EtcdStore.connect()` waits for etcd to answer. Default 5000. */
  dialTimeoutMs?: number;
  /**
   * Deadline of every unary call (reads, writes, lease grant/revoke/keepalive), all its attempts on
   * the members included; streams have none. Default 5000.
   */
  callTimeoutMs?: number;
  /**
   * Longest one attempt of a call may wait for its member before the call moves on (a frozen
   * member, a proposal lost with a dead etcd leader). At most `callTimeoutMs`. Default 40 % of
   * `callTimeoutMs` (2000), leaving time to settle a write whose reply was lost and send it again.
   */
  attemptTimeoutMs?: number;
  /** gRPC keepalive ping interval. etcd closes connections that ping more often than every 5 s. Default 10000. */
  keepaliveTimeMs?: number;
  /** How long a keepalive ping may go unanswered before the connection is dropped. Default 5000. */
  keepaliveTimeoutMs?: number;
  /** Merge concurrent transactions into fewer round trips (see GroupCommitter). Default true. */
  groupCommit?: boolean;
  /** Largest response accepted (a big `list`). Default 64 MiB. */
  maxReceiveBytes?: number;
  /**
   * Write receipts (see etcd-receipts.ts): every transaction also puts a small key under
   * `receiptPrefix` on a short lease, so that a write whose reply was lost can be settled and sent
   * again instead of failing with an unknown outcome. The keys are hidden from `get`, `list` and
   * `watch`; with etcd authentication the user needs write access to the prefix. Default true.
   */
  receipts?: boolean;
  /** Where receipts live. Must not hold anything else. Default "/berth/receipts/". */
  receiptPrefix?: string;
  /** TLS material (PEM) for https endpoints. */
  tls?: { ca: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
  /** etcd user authentication. */
  auth?: { username: string; password: string };
}

export interface ResolvedEtcdStoreOptions {
  endpoints: string[];
  dialTimeoutMs: number;
  callTimeoutMs: number;
  attemptTimeoutMs: number;
  keepaliveTimeMs: number;
  keepaliveTimeoutMs: number;
  groupCommit: boolean;
  maxReceiveBytes: number;
  receipts: boolean;
  receiptPrefix: string;
  tls: { ca: Buffer; cert: Buffer | undefined; key: Buffer | undefined } | undefined;
  auth: { username: string; password: string } | undefined;
}

/** etcd's server-side minimum interval between client keepalive pings (--grpc-keepalive-min-time). */
export const ETCD_MIN_KEEPALIVE_TIME_MS = 5_000;

const bad = (field: string, message: string): BerthError =>
  new BerthError(ErrorCode.InvalidArgument, `etcd store option ${field}: ${message}`, { field });

function integer(value: number | undefined, field: string, fallback: number, min: number, unit = "milliseconds"): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < min) throw bad(field, `must be a whole number of ${unit} ≥ ${min}, not ${v}`);
  return v;
}

function endpoint(raw: string, i: number): string {
  const field = `endpoints[${i}]`;
  const example = "give a URL such as http://127.0.0.1:2379";
  if (typeof raw !== "string" || raw.trim() === "") throw bad(field, `is empty: ${example}`);
  const text = raw.trim();
  if (!/^https?:\/\//.test(text)) throw bad(field, `'${text}' has no http:// or https:// scheme: ${example}`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw bad(field, `'${text}' is not a valid URL: ${example}`);
  }
  if (url.pathname !== "/" || url.search || url.hash || url.username || url.password) {
    throw bad(field, `'${text}' must be only scheme://host:port (credentials go in the auth option)`);
  }
  const port = url.port || "2379";
  return `${url.protocol}//${url.hostname}:${port}`;
}

/**
 * Validates options and fills in defaults. Pure; throws `BerthError(INVALID_ARGUMENT)` naming the
 * field and what to write instead.
 */
export function resolveEtcdStoreOptions(options: EtcdStoreOptions): ResolvedEtcdStoreOptions {
  if (!options || !Array.isArray(options.endpoints) || options.endpoints.length === 0) {
    throw bad("endpoints", "at least one etcd URL is required, such as http://127.0.0.1:2379");
  }
  const endpoints = options.endpoints.map(endpoint);
  const secure = endpoints.filter((e) => e.startsWith("https:")).length;
  if (secure !== 0 && secure !== endpoints.length) throw bad("endpoints", "mixes http and https URLs: use one scheme for all");
  if (options.tls && secure === 0) throw bad("tls", "is set but the endpoints are http://: use https:// URLs");
  if (options.tls && !options.tls.ca) throw bad("tls.ca", "the CA certificate (PEM) is required with tls");
  if (Boolean(options.tls?.cert) !== Boolean(options.tls?.key)) throw bad("tls", "cert and key must be given together");
  if (options.auth && (!options.auth.username || typeof options.auth.password !== "string")) {
    throw bad("auth", "needs a username and a password");
  }
  const keepaliveTimeMs = options.keepaliveTimeMs ?? 10_000;
  if (Number.isSafeInteger(keepaliveTimeMs) && keepaliveTimeMs < ETCD_MIN_KEEPALIVE_TIME_MS) {
    throw bad(
      "keepaliveTimeMs",
      `${keepaliveTimeMs} is below etcd's minimum of ${ETCD_MIN_KEEPALIVE_TIME_MS}: etcd closes connections that ping more often`,
    );
  }
  const callTimeoutMs = integer(options.callTimeoutMs, "callTimeoutMs", 5_000, 1);
  const attemptTimeoutMs = integer(options.attemptTimeoutMs, "attemptTimeoutMs", Math.max(1, Math.floor(callTimeoutMs * 0.4)), 1);
  if (attemptTimeoutMs > callTimeoutMs) {
    throw bad("attemptTimeoutMs", `${attemptTimeoutMs} is longer than callTimeoutMs (${callTimeoutMs}): an attempt is part of a call`);
  }
  const receiptPrefix = options.receiptPrefix ?? "/berth/receipts/";
  if (typeof receiptPrefix !== "string" || receiptPrefix === "") {
    throw bad("receiptPrefix", "must be a non-empty key prefix such as /berth/receipts/");
  }
  const pem = (v: string | Buffer | undefined): Buffer | undefined => (v === undefined ? undefined : Buffer.from(v));
  return {
    endpoints,
    dialTimeoutMs: integer(options.dialTimeoutMs, "dialTimeoutMs", 5_000, 1),
    callTimeoutMs,
    attemptTimeoutMs,
    keepaliveTimeMs: integer(keepaliveTimeMs, "keepaliveTimeMs", 10_000, ETCD_MIN_KEEPALIVE_TIME_MS),
    keepaliveTimeoutMs: integer(options.keepaliveTimeoutMs, "keepaliveTimeoutMs", 5_000, 1),
    groupCommit: options.groupCommit ?? true,
    maxReceiveBytes: integer(options.maxReceiveBytes, "maxReceiveBytes", 64 * 1024 * 1024, 4 * 1024 * 1024, "bytes"),
    receipts: options.receipts ?? true,
    receiptPrefix,
    tls: options.tls ? { ca: pem(options.tls.ca)!, cert: pem(options.tls.cert), key: pem(options.tls.key) } : undefined,
    auth: options.auth ? { username: options.auth.username, password: options.auth.password } : undefined,
  };
}
