import { describe, expect, it } from "vitest";
import { describeStoreConformance } from "./conformance.testkit.js";
import { CompactedError, StoreUnavailableError } from "./errors.js";
import { MemoryStore } from "./memory-store.js";
import { enc, eventually, put, record } from "./test-helpers.testkit.js";

describeStoreConformance("MemoryStore", async () => {
  const store = new MemoryStore();
  return { store, cleanup: () => store.close() };
});

describe("MemoryStore", () => {
  it("starts at revision 1, like a fresh etcd", async () => {
    const store = new MemoryStore();
    expect((await store.list("")).revision).toBe(1);
    expect(await put(store, "/a", "1")).toEqual({ succeeded: true, revision: 2 });
    await store.close();
  });

  it("compacts old history by itself beyond historyRevisions", async () => {
    const store = new MemoryStore({ historyRevisions: 3 });
    const first = await put(store, "/k", "0");
    for (let i = 1; i <= 5; i++) await put(store, "/k", String(i));
    const w = record(store, "/", first.revision);
    await eventually(() => w.errors.length > 0);
    expect(w.errors[0]).toBeInstanceOf(CompactedError);
    expect((w.errors[0] as CompactedError).compactRevision).toBe(store.revision - 3);
    await store.close();
  });

  it("ends a watch whose handler throws, reporting the exception", async () => {
    const store = new MemoryStore();
    const errors: Error[] = [];
    const boom = new Error("handler failed");
    store.watch("/", 0, {
      onEvents: () => {
        throw boom;
      },
      onError: (e) => errors.push(e),
    });
    await put(store, "/a", "1");
    await eventually(() => errors.length > 0);
    expect(errors).toEqual([boom]);
    await store.close();
  });

  it("refuses every call once closed, and tells open watches", async () => {
    const store = new MemoryStore();
    const w = record(store, "/", 0);
    const lease = await store.grantLease(1_000);
    await store.close();
    await store.close();
    await eventually(() => w.errors.length > 0);
    expect(w.errors[0]).toBeInstanceOf(StoreUnavailableError);
    expect((w.errors[0] as StoreUnavailableError).closed).toBe(true);
    await expect(store.get("/a")).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(store.txn({ compare: [], ops: [{ type: "put", key: "/a", value: enc("1") }] })).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(lease.keepAliveOnce()).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(() => store.watch("/", 0, { onEvents: () => undefined, onError: () => undefined })).toThrow(StoreUnavailableError);
  });

  it("rounds lease TTLs up to its granularity", async () => {
    const store = new MemoryStore({ leaseGranularityMs: 250 });
    expect((await store.grantLease(1)).ttlMs).toBe(250);
    expect((await store.grantLease(600)).ttlMs).toBe(750);
    await expect(store.grantLease(0)).rejects.toThrow(/positive/);
    await store.close();
  });
});
