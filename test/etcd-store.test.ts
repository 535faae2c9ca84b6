// EtcdStore against a real etcd: the shared conformance suite plus etcd-specific behaviour.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { describeStoreConformance } from "../packages/store/src/conformance.testkit.js";
import { EtcdStore, StoreUnavailableError, campaign, type Txn } from "@berth/store";
import { describeWithEtcd, startEtcd, type RunningEtcd } from "./support/etcd.js";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

describeWithEtcd("EtcdStore", () => {
  let etcd: RunningEtcd;
  beforeAll(async () => {
    etcd = await startEtcd();
  });
  afterAll(async () => {
    await etcd?.stop();
  });

  describeStoreConformance("EtcdStore", async () => {
    const store = await EtcdStore.connect({ endpoints: [etcd.endpoint] });
    return { store, cleanup: () => store.close() };
  });

  describe("etcd specifics", () => {
    it("rounds lease TTLs up to etcd's granted TTL", async () => {
      const store = await EtcdStore.connect({ endpoints: [etcd.endpoint] });
      const lease = await store.grantLease(1_500);
      expect(lease.ttlMs).toBeGreaterThanOrEqual(2_000);
      expect(lease.ttlMs % 1_000).toBe(0);
      await lease.revoke();
      await store.close();
    });

    it("refuses a write whose fence compare fails", async () => {
      const store = await EtcdStore.connect({ endpoints: [etcd.endpoint] });
      const key = `/etcd-specific/${Date.now()}/leader`;
      const leader = await campaign(store, { key, value: "me", ttlMs: 2_000 });
      const write: Txn = { compare: [], ops: [{ type: "put", key: `${key}-data`, value: enc("x") }] };
      expect((await store.txn(leader.fence(write))).succeeded).toBe(true);
      await leader.resign();
      expect((await store.txn(leader.fence(write))).succeeded).toBe(false);
      await store.close();
    });

    it("group commit merges concurrent transactions into fewer round trips", async () => {
      const store = await EtcdStore.connect({ endpoints: [etcd.endpoint] });
      const base = `/etcd-specific/${Date.now()}/gc/`;
      const leader = await campaign(store, { key: `${base}leader`, value: "me", ttlMs: 2_000 });
      const before = store.stats;
      const n = 200;
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          store.txn(
            leader.fence({
              compare: [{ key: `${base}${i}`, target: "createRevision", equals: 0 }],
              ops: [{ type: "put", key: `${base}${i}`, value: enc(String(i)) }],
            }),
          ),
        ),
      );
      expect(results.every((r) => r.succeeded)).toBe(true);
      const after = store.stats;
      expect(after.txns - before.txns).toBe(n);
      expect(after.txnRoundTrips - before.txnRoundTrips).toBeLessThan(n / 4);
      expect(new Set(results.map((r) => r.revision)).size).toBe(after.txnRoundTrips - before.txnRoundTrips);
      expect((await store.list(base)).items).toHaveLength(n + 1);
      await leader.resign();
      await store.close();
    });

    it("reports an unreachable etcd as StoreUnavailableError within the dial timeout", async () => {
      const started = Date.now();
      await expect(EtcdStore.connect({ endpoints: ["http://127.0.0.1:1"], dialTimeoutMs: 1_000 })).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(Date.now() - started).toBeLessThan(5_000);
    });
  });

  describe("when etcd goes away", () => {
    it("ends watches with StoreUnavailableError and fails calls with it", async () => {
      const own = await startEtcd();
      const store = await EtcdStore.connect({ endpoints: [own.endpoint], callTimeoutMs: 1_000 });
      const errors: Error[] = [];
      store.watch("/", 0, { onEvents: () => undefined, onError: (e) => errors.push(e) });
      await new Promise((r) => setTimeout(r, 200));
      await own.stop();
      const deadline = Date.now() + 10_000;
      while (errors.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(errors[0]).toBeInstanceOf(StoreUnavailableError);
      await expect(store.get("/a")).rejects.toBeInstanceOf(StoreUnavailableError);
      await expect(store.txn({ compare: [], ops: [{ type: "put", key: "/a", value: enc("1") }] })).rejects.toBeInstanceOf(
        StoreUnavailableError,
      );
      await store.close();
    });
  });
});
