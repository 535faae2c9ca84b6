// EtcdStore against a 3-member etcd cluster that loses a member in the middle of a burst of writes:
// with a quorum left, nothing its users see fails — not a write, not a read, not a keepalive, not
// the leadership, not a watch.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Etcd3, ITxnRequest } from "etcd3";
import { EtcdStore, LeaseKeeper, campaign, type Lease, type Txn, type WatchEvent } from "@berth/store";
import { describeWithEtcd, startEtcdCluster, type RunningEtcdCluster } from "./support/etcd.js";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Writes, spread over about 1.5 s so that the member dies while some are in flight and more follow. */
const WRITES = 300;
const WAVE = 10;
const WAVE_GAP_MS = 50;

describeWithEtcd("EtcdStore on a 3-member etcd cluster", () => {
  let cluster: RunningEtcdCluster;
  beforeAll(async () => {
    cluster = await startEtcdCluster();
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  const scenarios = [
    // Killing the raft leader also loses the proposals it was forwarded, and there is no leader for
    // one to two election timeouts: the store's default leader TTL (10 s) always survives that; the
    // controller's 3 s did in 19 of 20 runs (so it is not asserted here).
    { victim: "the raft leader", signal: "SIGKILL", leaseTtlMs: 10_000, options: {} },
    // A follower: 3 s leases (the controller's default; a keepalive every 500 ms) notice any
    // keepalive left on the dead member.
    { victim: "a follower", signal: "SIGKILL", leaseTtlMs: 3_000, options: {} },
    // A frozen follower refuses nothing: calls to it hang. gRPC keepalive at etcd's minimum (5 s)
    // bounds how long a watch stream on it takes to notice.
    { victim: "a follower", signal: "SIGSTOP", leaseTtlMs: 3_000, options: { keepaliveTimeMs: 5_000, keepaliveTimeoutMs: 2_000 } },
  ] as const;

  for (const { victim, signal, leaseTtlMs, options } of scenarios) {
    const what = signal === "SIGKILL" ? `loses ${victim}` : `has ${victim} frozen`;
    it(`${what} mid-burst without a failed write, read, keepalive or watch event`, async () => {
      const store = await EtcdStore.connect({ endpoints: cluster.endpoints, ...options });
      const base = `/cluster-test/${Date.now()}/`;
      const vms = `${base}vm/`;
      let killed = -1;
      try {
        const leadership = await campaign(store, { key: `${base}leader`, value: "me", ttlMs: leaseTtlMs });
        const lease = await store.grantLease(leaseTtlMs);
        const keepaliveErrors: unknown[] = [];
        const counted: Lease = {
          id: lease.id,
          ttlMs: lease.ttlMs,
          revoke: () => lease.revoke(),
          keepAliveOnce: async () => {
            try {
              await lease.keepAliveOnce();
            } catch (e) {
              keepaliveErrors.push(e);
              throw e;
            }
          },
        };
        const keeper = new LeaseKeeper(counted);

        // Several watches, each on its own stream on a member picked at random: most likely one is on the victim.
        const { revision } = await store.list(vms);
        const watchErrors: Error[] = [];
        const watched = Array.from({ length: 4 }, () => {
          const seen: WatchEvent[] = [];
          const watch = store.watch(vms, revision + 1, {
            onEvents: (events) => seen.push(...events),
            onError: (e) => watchErrors.push(e),
          });
          return { seen, watch };
        });

        let reading = true;
        let reads = 0;
        const readErrors: unknown[] = [];
        const reader = (async () => {
          while (reading) {
            try {
              await store.get(`${base}leader`);
              await store.list(vms);
              reads += 1;
            } catch (e) {
              readErrors.push(e);
            }
            await sleep(10);
          }
        })();

        const leaderIndex = await cluster.leaderIndex();
        killed = victim === "the raft leader" ? leaderIndex : (leaderIndex + 1) % cluster.members.length;
        const writes: Promise<{ i: number; ok: boolean; error?: unknown }>[] = [];
        for (let i = 0; i < WRITES; i++) {
          if (i === WRITES / 3) void cluster.members[killed]!.kill(signal);
          const key = `${vms}${String(i).padStart(4, "0")}`;
          writes.push(
            store
              .txn(
                leadership.fence({
                  compare: [{ key, target: "createRevision", equals: 0 }],
                  ops: [{ type: "put", key, value: enc(String(i)) }],
                }),
              )
              .then(
                (r) => ({ i, ok: r.succeeded }),
                (error: unknown) => ({ i, ok: false, error }),
              ),
          );
          if (i % WAVE === WAVE - 1) await sleep(WAVE_GAP_MS);
        }
        const results = await Promise.all(writes);
        reading = false;
        await reader;

        const failed = results.filter((r) => !r.ok);
        expect(failed.map((r) => `#${r.i}: ${r.error instanceof Error ? r.error.message : "compare failed"}`)).toEqual([]);
        if (signal === "SIGKILL") expect(cluster.members[killed]!.pid).toBeUndefined();
        // The store did meet the lost member, and routes around it.
        expect(store.stats.membersDown).toContain(cluster.endpoints[killed]);

        const listed = await store.list(vms);
        expect(listed.items.map((kv) => dec(kv.value))).toEqual(results.map((r) => String(r.i)));

        // Every watch delivers every write once, in revision order, without ending.
        const byRevision = [...listed.items].sort((a, b) => a.modRevision - b.modRevision).map((kv) => kv.key);
        await until("the watches to deliver every write", () => watched.every((w) => w.seen.length >= WRITES), 15_000);
        expect(watchErrors).toEqual([]);
        for (const { seen } of watched) {
          expect(seen.map((e) => e.kv.key)).toEqual(byRevision);
          expect(seen.every((e) => e.type === "put")).toBe(true);
        }

        expect(readErrors).toEqual([]);
        expect(reads).toBeGreaterThan(0);

        expect(keepaliveErrors).toEqual([]);
        expect(keeper.lostReason).toBeUndefined();
        expect(leadership.isLost).toBe(false);
        // Fenced writes still go through with two members.
        const after = await store.txn(leadership.fence({ compare: [], ops: [{ type: "put", key: `${base}after`, value: enc("x") }] }));
        expect(after.succeeded).toBe(true);

        keeper.stop();
        for (const { watch } of watched) await watch.close();
        await lease.revoke();
        await leadership.resign();
      } finally {
        await store.close();
        if (killed >= 0) await cluster.members[killed]!.restart();
      }
    }, 40_000);
  }

  describe("a write whose reply was lost", () => {
    const create = (key: string, value: string): Txn => ({
      compare: [{ key, target: "createRevision", equals: 0 }],
      ops: [{ type: "put", key, value: enc(value) }],
    });

    it("that had applied reports success at its revision (no false conflict, not applied twice)", async () => {
      const store = await EtcdStore.connect({ endpoints: cluster.endpoints, groupCommit: false });
      const key = `/cluster-test/${Date.now()}/lost-after-apply`;
      let first = true;
      loseReplies(store, async (_request, send) => {
        if (!first) return "deliver";
        first = false;
        await send();
        return "lost";
      });
      const result = await store.txn(create(key, "v"));
      const kv = await store.get(key);
      expect(result).toEqual({ succeeded: true, revision: kv!.modRevision });
      expect(kv!.version).toBe(1);
      expect(store.stats.settled).toBe(1);
      await store.close();
    });

    it("that had not applied is sent once more, and the lost attempt can never apply afterwards", async () => {
      const store = await EtcdStore.connect({ endpoints: cluster.endpoints, groupCommit: false });
      const key = `/cluster-test/${Date.now()}/lost-before-apply`;
      let lost: (() => Promise<unknown>) | undefined;
      loseReplies(store, async (_request, send) => {
        if (lost) return "deliver";
        lost = send;
        return "lost";
      });
      const result = await store.txn(create(key, "v"));
      expect(result.succeeded).toBe(true);
      // The lost attempt turns up late: its receipt was voided, so it fails and changes nothing.
      const late = (await lost!()) as { succeeded: boolean };
      expect(late.succeeded).toBe(false);
      const kv = await store.get(key);
      expect({ version: kv!.version, modRevision: kv!.modRevision }).toEqual({ version: 1, modRevision: result.revision });
      await store.close();
    });

    it("that had failed its compare reports the conflict", async () => {
      const store = await EtcdStore.connect({ endpoints: cluster.endpoints, groupCommit: false });
      const key = `/cluster-test/${Date.now()}/lost-conflict`;
      await store.txn(create(key, "first"));
      let first = true;
      loseReplies(store, async (_request, send) => {
        if (!first) return "deliver";
        first = false;
        await send();
        return "lost";
      });
      expect((await store.txn(create(key, "second"))).succeeded).toBe(false);
      expect(dec((await store.get(key))!.value)).toBe("first");
      await store.close();
    });
  });
});

/**
 * Makes the store's next etcd transactions lose their replies: `lose(request, send)` decides, per
 * transaction sent, whether to send it and then throw what gRPC throws for a dropped connection.
 */
function loseReplies(store: EtcdStore, lose: (request: ITxnRequest, send: () => Promise<unknown>) => Promise<"lost" | "deliver">): void {
  const kv = (store as unknown as { client: Etcd3 }).client.kv;
  const real = kv.txn.bind(kv);
  kv.txn = async (request, options) => {
    const send = () => real(request, options);
    if ((await lose(request, send)) === "lost") throw Object.assign(new Error("14 UNAVAILABLE: Connection dropped"), { code: 14 });
    return send();
  };
}

