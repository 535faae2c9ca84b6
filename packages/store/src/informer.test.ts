import { describe, expect, it } from "vitest";
import { StoreUnavailableError } from "./errors.js";
import { Informer, type InformerEvent } from "./informer.js";
import { MemoryStore } from "./memory-store.js";
import { dec, del, eventually, put, within } from "./test-helpers.testkit.js";
import type { ClusterStore, KeyValue, WatchHandler } from "./types.js";

const decodeNumber = (kv: KeyValue): number => {
  const n = Number(dec(kv.value));
  if (Number.isNaN(n)) throw new Error(`not a number: ${kv.key}`);
  return n;
};

describe("Informer (on MemoryStore)", () => {
  it("keeps undecodable values out of the cache and reports them", async () => {
    const store = new MemoryStore();
    await put(store, "/n/a", "1");
    await put(store, "/n/b", "oops");
    const errors: Error[] = [];
    const informer = new Informer(store, "/n/", decodeNumber, { onError: (e) => errors.push(e) });
    const events: Array<InformerEvent<number>> = [];
    informer.subscribe((e) => events.push(e));
    await informer.start();
    expect(informer.values()).toEqual([1]);
    expect(informer.getKv("/n/b")).toBeDefined();
    expect(errors.map((e) => e.message)).toEqual(["not a number: /n/b"]);

    const r = await put(store, "/n/a", "bad");
    await informer.waitForRevision(r.revision);
    expect(informer.get("/n/a")).toBeUndefined();
    expect(events.at(-1)).toMatchObject({ type: "delete", key: "/n/a", value: 1 });
    await informer.stop();
    await store.close();
  });

  it("isolates a throwing subscriber", async () => {
    const store = new MemoryStore();
    const errors: Error[] = [];
    const informer = new Informer(store, "/n/", decodeNumber, { onError: (e) => errors.push(e) });
    const seen: string[] = [];
    informer.subscribe(() => {
      throw new Error("subscriber bug");
    });
    informer.subscribe((e) => seen.push(e.key));
    await informer.start();
    const r = await put(store, "/n/a", "1");
    await informer.waitForRevision(r.revision);
    expect(seen).toEqual(["/n/a"]);
    expect(errors.map((e) => e.message)).toEqual(["subscriber bug"]);
    await informer.stop();
    await store.close();
  });

  it("re-lists and converges after any watch failure", async () => {
    const store = new MemoryStore();
    const failing: WatchHandler[] = [];
    const flaky: ClusterStore = {
      get: (k) => store.get(k),
      list: (p) => store.list(p),
      txn: (t) => store.txn(t),
      watch: (p, f, h) => {
        failing.push(h);
        return store.watch(p, f, h);
      },
      grantLease: (t) => store.grantLease(t),
      compact: (r) => store.compact(r),
      close: () => store.close(),
    };
    const informer = new Informer(flaky, "/n/", decodeNumber, { backoffMs: 10 });
    await informer.start();
    await put(store, "/n/a", "1");
    await eventually(() => informer.get("/n/a") === 1);
    // The store stops delivering (as etcd watches have been seen to) and then reports an error.
    const h = failing.at(-1)!;
    await put(store, "/n/b", "2");
    await del(store, "/n/a");
    h.onError(new StoreUnavailableError("stream broke"));
    await eventually(() => informer.get("/n/b") === 2 && informer.get("/n/a") === undefined);
    const r = await put(store, "/n/c", "3");
    await within(informer.waitForRevision(r.revision), 2_000);
    expect(informer.entries().sort()).toEqual([
      ["/n/b", 2],
      ["/n/c", 3],
    ]);
    await informer.stop();
    await store.close();
  });

  it("catches up by listing when the watch is silent (waitForRevision)", async () => {
    const store = new MemoryStore();
    const silent: ClusterStore = {
      get: (k) => store.get(k),
      list: (p) => store.list(p),
      txn: (t) => store.txn(t),
      watch: () => ({ close: async () => undefined }), // delivers nothing, ever
      grantLease: (t) => store.grantLease(t),
      compact: (r) => store.compact(r),
      close: () => store.close(),
    };
    const informer = new Informer(silent, "/n/", decodeNumber, { probeAfterMs: 20 });
    await informer.start();
    const elsewhere = await put(store, "/other", "x");
    await within(informer.waitForRevision(elsewhere.revision), 2_000, "advance past a write elsewhere");
    const mine = await put(store, "/n/a", "5");
    await within(informer.waitForRevision(mine.revision), 2_000, "catch up on its own prefix");
    expect(informer.get("/n/a")).toBe(5);
    await informer.stop();
    await store.close();
  });

  it("rejects waiters when stopped", async () => {
    const store = new MemoryStore();
    const informer = new Informer(store, "/n/", decodeNumber);
    await informer.start();
    const waiting = informer.waitForRevision(informer.revision + 100);
    await informer.stop();
    await expect(waiting).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(informer.waitForRevision(informer.revision + 1)).rejects.toBeInstanceOf(StoreUnavailableError);
    await store.close();
  });

  it("start() fails when the first list fails, and can be retried", async () => {
    const store = new MemoryStore();
    await store.close();
    const informer = new Informer(store, "/n/", decodeNumber);
    await expect(informer.start()).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(informer.synced).toBe(false);
  });
});
