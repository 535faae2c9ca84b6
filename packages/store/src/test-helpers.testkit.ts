// Helpers for the store's tests (excluded from the build like every *.testkit.ts).
import type { ClusterStore, Lease, TxnResult, Watch, WatchEvent } from "./types.js";

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns true (or a value), failing after `timeoutMs`. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Resolves with the promise's value, or rejects when it takes longer than `ms`. */
export function within<T>(p: Promise<T>, ms: number, what = "promise"): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms))),
  ]);
}

/** True when `p` is still pending after `ms`. */
export async function stillPending(p: Promise<unknown>, ms: number): Promise<boolean> {
  const pending = Symbol("pending");
  const r = await Promise.race([p.then(() => "settled", () => "settled"), sleep(ms).then(() => pending)]);
  return r === pending;
}

export function put(store: ClusterStore, key: string, value: string, lease?: string): Promise<TxnResult> {
  return store.txn({ compare: [], ops: [{ type: "put", key, value: enc(value), ...(lease ? { lease } : {}) }] });
}

export function del(store: ClusterStore, key: string): Promise<TxnResult> {
  return store.txn({ compare: [], ops: [{ type: "delete", key }] });
}

/** A watch that records what it is told. */
export interface Recorder {
  events: WatchEvent[];
  errors: Error[];
  /** Set when a handler ran while a transaction call was still on the stack (see `inTxn`). */
  calledSynchronously: boolean;
  watch: Watch;
}

export function record(store: ClusterStore, prefix: string, from: number, inTxn: () => boolean = () => false): Recorder {
  const r: Recorder = { events: [], errors: [], calledSynchronously: false, watch: undefined as unknown as Watch };
  r.watch = store.watch(prefix, from, {
    onEvents: (events) => {
      if (inTxn()) r.calledSynchronously = true;
      r.events.push(...events);
    },
    onError: (e) => r.errors.push(e),
  });
  return r;
}

/**
 * A store whose leases' keepalives and revokes can be stalled (they hang until released), as if
 * the holder were cut off from the store: the lease then expires on the store by itself.
 */
export function stallableLeases(store: ClusterStore): { store: ClusterStore; stall(): void; release(): void } {
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  const wrapLease = (lease: Lease): Lease => ({
    id: lease.id,
    ttlMs: lease.ttlMs,
    keepAliveOnce: async () => {
      if (gate) await gate;
      return lease.keepAliveOnce();
    },
    revoke: async () => {
      if (gate) await gate;
      return lease.revoke();
    },
  });
  return {
    store: {
      get: (k) => store.get(k),
      list: (p) => store.list(p),
      txn: (t) => store.txn(t),
      watch: (p, f, h) => store.watch(p, f, h),
      grantLease: async (ttl) => wrapLease(await store.grantLease(ttl)),
      compact: (r) => store.compact(r),
      close: () => store.close(),
    },
    stall: () => {
      gate ??= new Promise((resolve) => (open = resolve));
    },
    release: () => {
      open?.();
      gate = undefined;
    },
  };
}
