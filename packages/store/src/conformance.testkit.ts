// The one ClusterStore conformance suite, run identically against MemoryStore and EtcdStore.
// Excluded from the build; imported by tests only.
import { BerthError, ErrorCode } from "@berth/core";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { campaign, readLeader, type Leadership } from "./election.js";
import { CompactedError, LeaseLostError } from "./errors.js";
import { Informer } from "./informer.js";
import {
  dec,
  del,
  enc,
  eventually,
  put,
  record,
  sleep,
  stallableLeases,
  stillPending,
  within,
} from "./test-helpers.testkit.js";
import { MAX_TXN_OPS, type ClusterStore, type Compare, type KeyValue, type Op } from "./types.js";

export interface StoreUnderTest {
  store: ClusterStore;
  cleanup(): Promise<void>;
}

let suiteCounter = 0;

/**
 * Registers the conformance suite. `factory` is called before every test; tests use their own key
 * prefix and never assume an empty store or a particular starting revision, so one etcd may serve
 * the whole suite. Lease tests ask for 1 s leases and time themselves by the TTL actually granted.
 */
export function describeStoreConformance(name: string, factory: () => Promise<StoreUnderTest>): void {
  describe(`ClusterStore conformance: ${name}`, () => {
    const run = `${process.pid}-${Date.now().toString(36)}-${++suiteCounter}`;
    let testNo = 0;
    let s: ClusterStore;
    let cleanup: () => Promise<void>;
    let p: string;
    const disposers: Array<() => unknown> = [];
    const later = (fn: () => unknown): void => void disposers.push(fn);

    beforeEach(async () => {
      ({ store: s, cleanup } = await factory());
      p = `/conformance/${run}/${++testNo}/`;
    });

    afterEach(async () => {
      for (const d of disposers.splice(0).reverse()) await within(Promise.resolve(d()), 5_000, "cleanup").catch(() => undefined);
      await cleanup();
    });

    describe("reads", () => {
      it("get and list return what was written, in key order, with etcd's revisions", async () => {
        const rb = await put(s, `${p}b`, "2");
        const ra = await put(s, `${p}a`, "1");
        const rc = await put(s, `${p}c/x`, "3");
        await put(s, `${p.slice(0, -1)}_outside`, "no");
        expect(rb.succeeded && ra.succeeded && rc.succeeded).toBe(true);
        expect(ra.revision).toBeGreaterThan(rb.revision);

        expect(await s.get(`${p}a`)).toEqual({
          key: `${p}a`,
          value: enc("1"),
          createRevision: ra.revision,
          modRevision: ra.revision,
          version: 1,
          lease: "",
        });
        expect(await s.get(`${p}missing`)).toBeUndefined();

        const listed = await s.list(p);
        expect(listed.items.map((kv) => kv.key)).toEqual([`${p}a`, `${p}b`, `${p}c/x`]);
        expect(listed.items.map((kv) => dec(kv.value))).toEqual(["1", "2", "3"]);
        expect(listed.revision).toBeGreaterThanOrEqual(rc.revision);

        const again = await put(s, `${p}a`, "1b");
        const a = await s.get(`${p}a`);
        expect(a).toMatchObject({ createRevision: ra.revision, modRevision: again.revision, version: 2 });
        expect(dec(a!.value)).toBe("1b");
      });

      it("orders keys by their bytes", async () => {
        const keys = [`${p}é`, `${p}z`, `${p}A`, `${p}a-1`, `${p}a`, `${p}\u{1F600}`, `${p}\uFFFD`];
        for (const k of keys) await put(s, k, k);
        const listed = (await s.list(p)).items.map((kv) => kv.key);
        const byBytes = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
        expect(listed).toEqual(byBytes);
      });

      it("copies values in and out, so callers cannot change stored state", async () => {
        const value = enc("abc");
        await s.txn({ compare: [], ops: [{ type: "put", key: `${p}k`, value }] });
        value[0] = 0x7a;
        const first = await s.get(`${p}k`);
        first!.value[1] = 0x7a;
        (await s.list(p)).items[0]!.value[2] = 0x7a;
        expect(dec((await s.get(`${p}k`))!.value)).toBe("abc");
      });
    });

    describe("transactions", () => {
      it("apply every op at one new revision", async () => {
        const before = (await s.list(p)).revision;
        const r = await s.txn({
          compare: [],
          ops: [
            { type: "put", key: `${p}a`, value: enc("1") },
            { type: "put", key: `${p}b`, value: enc("2") },
            { type: "delete", key: `${p}absent` },
          ],
        });
        expect(r).toEqual({ succeeded: true, revision: before + 1 });
        const items = (await s.list(p)).items;
        expect(items.map((kv) => [kv.key, kv.createRevision, kv.modRevision])).toEqual([
          [`${p}a`, r.revision, r.revision],
          [`${p}b`, r.revision, r.revision],
        ]);
      });

      it("refuse a stale modRevision and write nothing", async () => {
        const first = await put(s, `${p}a`, "1");
        await put(s, `${p}a`, "2");
        const revision = (await s.list(p)).revision;
        const r = await s.txn({
          compare: [{ key: `${p}a`, target: "modRevision", equals: first.revision }],
          ops: [
            { type: "put", key: `${p}a`, value: enc("3") },
            { type: "put", key: `${p}c`, value: enc("new") },
          ],
        });
        expect(r).toEqual({ succeeded: false, revision });
        expect(dec((await s.get(`${p}a`))!.value)).toBe("2");
        expect(await s.get(`${p}c`)).toBeUndefined();
      });

      it("treat createRevision == 0 as 'absent' (create if absent) and compare versions", async () => {
        const create = { compare: [{ key: `${p}k`, target: "createRevision", equals: 0 } as Compare], ops: [{ type: "put", key: `${p}k`, value: enc("x") } as Op] };
        expect((await s.txn(create)).succeeded).toBe(true);
        expect((await s.txn(create)).succeeded).toBe(false);
        const v1 = { compare: [{ key: `${p}k`, target: "version", equals: 1 } as Compare], ops: [{ type: "put", key: `${p}k`, value: enc("y") } as Op] };
        expect((await s.txn(v1)).succeeded).toBe(true);
        expect((await s.txn(v1)).succeeded).toBe(false);
        expect((await s.get(`${p}k`))!.version).toBe(2);
        const absentVersion = { compare: [{ key: `${p}none`, target: "version", equals: 0 } as Compare], ops: [] };
        expect((await s.txn(absentVersion)).succeeded).toBe(true);
      });

      it("do not advance the revision when nothing changed", async () => {
        const before = (await s.list(p)).revision;
        expect(await s.txn({ compare: [], ops: [{ type: "delete", key: `${p}absent` }] })).toEqual({ succeeded: true, revision: before });
      });

      it("refuse malformed transactions with INVALID_ARGUMENT and write nothing", async () => {
        const dup = s.txn({
          compare: [],
          ops: [
            { type: "put", key: `${p}a`, value: enc("1") },
            { type: "delete", key: `${p}a` },
          ],
        });
        await expect(dup).rejects.toSatisfy((e) => e instanceof BerthError && e.code === ErrorCode.InvalidArgument);
        const tooMany = Array.from({ length: MAX_TXN_OPS + 1 }, (_, i): Op => ({ type: "put", key: `${p}${i}`, value: enc("v") }));
        await expect(s.txn({ compare: [], ops: tooMany })).rejects.toSatisfy(
          (e) => e instanceof BerthError && e.code === ErrorCode.InvalidArgument && /at most 128/.test(e.message),
        );
        expect((await s.list(p)).items).toEqual([]);
        const exactly = tooMany.slice(0, MAX_TXN_OPS);
        expect((await s.txn({ compare: [], ops: exactly })).succeeded).toBe(true);
      });
    });

    describe("watches", () => {
      it("deliver changes under the prefix in order, never inside txn()", async () => {
        const from = (await s.list(p)).revision + 1;
        let inTxn = false;
        const w = record(s, p, from, () => inTxn);
        later(() => w.watch.close());
        inTxn = true;
        const pending = s.txn({ compare: [], ops: [{ type: "put", key: `${p}a`, value: enc("1") }, { type: "put", key: `${p}b`, value: enc("2") }] });
        inTxn = false;
        const r1 = await pending;
        const r2 = await del(s, `${p}a`);
        await put(s, `${p.slice(0, -1)}_outside`, "no");
        const r3 = await put(s, `${p}c`, "3");
        await eventually(() => w.events.length >= 4, 5_000, "4 events");
        await sleep(50);
        expect(w.calledSynchronously).toBe(false);
        expect(w.errors).toEqual([]);
        expect(w.events.map((e) => [e.type, e.kv.key, e.kv.modRevision])).toEqual([
          ["put", `${p}a`, r1.revision],
          ["put", `${p}b`, r1.revision],
          ["delete", `${p}a`, r2.revision],
          ["put", `${p}c`, r3.revision],
        ]);
        const deleted = w.events[2]!.kv;
        expect(deleted.value.length).toBe(0);
        expect(dec(w.events[3]!.kv.value)).toBe("3");
      });

      it("replay history from an old revision; close() stops delivery", async () => {
        const r1 = await put(s, `${p}a`, "1");
        await put(s, `${p}a`, "2");
        await del(s, `${p}a`);
        const w = record(s, p, r1.revision);
        await eventually(() => w.events.length >= 3, 5_000, "replayed events");
        expect(w.events.map((e) => e.type)).toEqual(["put", "put", "delete"]);
        expect(w.events.map((e) => e.kv.version)).toEqual([1, 2, 0]);
        await w.watch.close();
        await w.watch.close();
        await put(s, `${p}a`, "after");
        await sleep(200);
        expect(w.events).toHaveLength(3);
        expect(w.errors).toEqual([]);
      });

      it("fail with CompactedError from a compacted revision, and end", async () => {
        const r1 = await put(s, `${p}a`, "1");
        await put(s, `${p}a`, "2");
        const r3 = await put(s, `${p}b`, "3");
        await s.compact(r3.revision);
        await s.compact(r3.revision); // compacting again is a no-op
        await s.compact(r1.revision); // and so is compacting below

        const w = record(s, p, r1.revision);
        await eventually(() => w.errors.length > 0, 5_000, "the compaction error");
        const error = w.errors[0]!;
        expect(error).toBeInstanceOf(CompactedError);
        expect((error as CompactedError).compactRevision).toBe(r3.revision);
        await put(s, `${p}c`, "after");
        await sleep(200);
        expect(w.events).toEqual([]);
        expect(w.errors).toHaveLength(1);

        const ok = record(s, p, r3.revision);
        later(() => ok.watch.close());
        await eventually(() => ok.events.length >= 2, 5_000, "events from the compaction revision");
        expect(ok.events.map((e) => e.kv.key)).toEqual([`${p}b`, `${p}c`]);
        expect(ok.errors).toEqual([]);
      });
    });

    describe("leases", () => {
      it("expiry deletes the attached keys at one revision", async () => {
        const lease = await s.grantLease(1_000);
        expect(lease.ttlMs).toBeGreaterThanOrEqual(1_000);
        expect(lease.id).toMatch(/^[1-9][0-9]*$/);
        const from = (await s.list(p)).revision + 1;
        await s.txn({
          compare: [],
          ops: [
            { type: "put", key: `${p}a`, value: enc("1"), lease: lease.id },
            { type: "put", key: `${p}b`, value: enc("2"), lease: lease.id },
            { type: "put", key: `${p}c`, value: enc("3") },
          ],
        });
        expect((await s.get(`${p}a`))!.lease).toBe(lease.id);
        expect((await s.get(`${p}c`))!.lease).toBe("");
        const w = record(s, p, from);
        later(() => w.watch.close());
        await eventually(() => w.events.filter((e) => e.type === "delete").length >= 2, lease.ttlMs + 5_000, "lease expiry");
        const deletes = w.events.filter((e) => e.type === "delete");
        expect(deletes.map((e) => e.kv.key).sort()).toEqual([`${p}a`, `${p}b`]);
        expect(deletes[0]!.kv.modRevision).toBe(deletes[1]!.kv.modRevision);
        expect((await s.list(p)).items.map((kv) => kv.key)).toEqual([`${p}c`]);
        await expect(lease.keepAliveOnce()).rejects.toBeInstanceOf(LeaseLostError);
        await expect(put(s, `${p}d`, "4", lease.id)).rejects.toBeInstanceOf(LeaseLostError);
        expect(await s.get(`${p}d`)).toBeUndefined();
      });

      it("keepalives keep the keys; revoke deletes them at once and is idempotent", async () => {
        const lease = await s.grantLease(1_000);
        later(() => lease.revoke());
        await put(s, `${p}a`, "1", lease.id);
        const until = Date.now() + 2 * lease.ttlMs + 500;
        while (Date.now() < until) {
          await lease.keepAliveOnce();
          await sleep(lease.ttlMs / 4);
        }
        expect(await s.get(`${p}a`)).toBeDefined();
        await lease.revoke();
        expect(await s.get(`${p}a`)).toBeUndefined();
        await lease.revoke();
        await expect(lease.keepAliveOnce()).rejects.toBeInstanceOf(LeaseLostError);
      });
    });

    describe("election", () => {
      const leaderKey = (): string => `${p}leader`;
      const hold = (l: Leadership): Leadership => (later(() => l.resign()), l);

      it("lets one campaigner lead at a time; the next takes over after resign", async () => {
        const first = hold(await campaign(s, { key: leaderKey(), value: "one", ttlMs: 1_000 }));
        expect(await readLeader(s, leaderKey())).toMatchObject({ value: "one", epoch: first.epoch, leaseId: first.leaseId });
        const second = campaign(s, { key: leaderKey(), value: "two", ttlMs: 1_000 });
        second.then(hold, () => undefined);
        expect(await stillPending(second, 2_500)).toBe(true); // longer than the TTL: keepalives work
        expect(first.isLost).toBe(false);

        await first.resign();
        expect(await within(first.lost, 1_000, "first.lost")).toBeInstanceOf(LeaseLostError);
        const next = await within(second, 5_000, "second campaign");
        expect(next.epoch).toBeGreaterThan(first.epoch);
        expect(await readLeader(s, leaderKey())).toMatchObject({ value: "two", epoch: next.epoch });

        const abort = new AbortController();
        const third = campaign(s, { key: leaderKey(), value: "three", ttlMs: 1_000, signal: abort.signal });
        abort.abort();
        await expect(within(third, 5_000, "the third campaign")).rejects.toThrow(/campaign aborted/);
      });

      it("refuses a deposed leader's fenced writes after its lease expired", async () => {
        const stalling = stallableLeases(s);
        const first = hold(await campaign(stalling.store, { key: leaderKey(), value: "one", ttlMs: 1_000 }));
        later(() => stalling.release()); // before first.resign() runs
        const write = (value: string) => ({ compare: [], ops: [{ type: "put" as const, key: `${p}data`, value: enc(value) }] });
        expect((await s.txn(first.fence(write("by-first")))).succeeded).toBe(true);

        stalling.stall();
        let lostAt = 0;
        void first.lost.then(() => (lostAt = Date.now()));
        const second = hold(await within(campaign(s, { key: leaderKey(), value: "two", ttlMs: 1_000 }), 15_000, "takeover"));
        const wonAt = Date.now();
        expect(lostAt).toBeGreaterThan(0);
        expect(lostAt).toBeLessThanOrEqual(wonAt); // the old leader stepped down before the new one won
        expect(second.epoch).toBeGreaterThan(first.epoch);

        const refused = await s.txn(first.fence(write("stale")));
        expect(refused.succeeded).toBe(false);
        expect(dec((await s.get(`${p}data`))!.value)).toBe("by-first");
        expect((await s.txn(second.fence(write("by-second")))).succeeded).toBe(true);
      });

      it("notices when the election key is deleted under it", async () => {
        const leader = hold(await campaign(s, { key: leaderKey(), value: "one", ttlMs: 1_000 }));
        await del(s, leaderKey());
        expect(await within(leader.lost, 3_000, "lost")).toBeInstanceOf(LeaseLostError);
        expect(leader.isLost).toBe(true);
        expect((await s.txn(leader.fence({ compare: [], ops: [] }))).succeeded).toBe(false);
      });
    });

    describe("informer", () => {
      it("lists, follows, and reads its own writes", async () => {
        await put(s, `${p}a`, "1");
        await put(s, `${p}b`, "2");
        const informer = new Informer(s, p, (kv: KeyValue) => dec(kv.value));
        later(() => informer.stop());
        const seen: string[] = [];
        informer.subscribe((e) => seen.push(`${e.type} ${e.key.slice(p.length)} ${e.value ?? ""}`));
        await informer.start();
        expect(informer.synced).toBe(true);
        expect(informer.values().sort()).toEqual(["1", "2"]);

        const r = await put(s, `${p}c`, "3");
        await within(informer.waitForRevision(r.revision), 3_000, "own write");
        expect(informer.get(`${p}c`)).toBe("3");
        expect(informer.getKv(`${p}c`)!.modRevision).toBe(r.revision);
        await del(s, `${p}a`);
        const outside = await put(s, `${p.slice(0, -1)}_outside`, "x");
        await within(informer.waitForRevision(outside.revision), 3_000, "a write elsewhere");
        expect(informer.revision).toBeGreaterThanOrEqual(outside.revision);
        expect(informer.get(`${p}a`)).toBeUndefined();
        expect(seen).toEqual(["put a 1", "put b 2", "put c 3", "delete a 1"]);
      });

      it("converges after missing history that was compacted", async () => {
        await put(s, `${p}a`, "1");
        await put(s, `${p}b`, "2");
        const errors: Error[] = [];
        const informer = new Informer(s, p, (kv: KeyValue) => dec(kv.value), { onError: (e) => errors.push(e), backoffMs: 20 });
        later(() => informer.stop());
        const mirror = new Map<string, string>();
        informer.subscribe((e) => (e.type === "put" ? mirror.set(e.key, e.value) : mirror.delete(e.key)));
        await informer.start();
        await informer.stop();

        await del(s, `${p}a`);
        await put(s, `${p}b`, "2b");
        await put(s, `${p}d`, "4");
        const last = await put(s, `${p}e`, "5");
        await del(s, `${p}e`);
        await s.compact(last.revision);

        await informer.start();
        const truth = async (): Promise<Map<string, string>> =>
          new Map((await s.list(p)).items.map((kv) => [kv.key, dec(kv.value)] as const));
        await eventually(async () => sameMap(new Map(informer.entries()), await truth()), 10_000, "informer convergence");
        expect(sameMap(mirror, await truth())).toBe(true);
        expect(errors.some((e) => e instanceof CompactedError)).toBe(true);

        const r = await put(s, `${p}f`, "6");
        await within(informer.waitForRevision(r.revision), 3_000, "watching again");
        expect(informer.get(`${p}f`)).toBe("6");
      });
    });

    describe("model", () => {
      it("random transaction sequences behave like a simple model", async () => {
        let runNo = 0;
        await fc.assert(
          fc.asyncProperty(fc.array(abstractTxn, { minLength: 1, maxLength: 10 }), async (txns) => {
            const prefix = `${p}run${++runNo}/`;
            const model = new Map<string, ModelKv>();
            let revision = (await s.list(prefix)).revision;
            for (const t of txns) {
              const compare: Compare[] = t.compare.map((c) => {
                const key = `${prefix}${c.k}`;
                const actual = model.get(key)?.[c.target] ?? 0;
                return { key, target: c.target, equals: c.mode === "current" ? actual : c.mode === "zero" ? 0 : actual + 1 };
              });
              const ops: Op[] = t.ops.map((o) =>
                o.type === "put" ? { type: "put", key: `${prefix}${o.k}`, value: enc(o.v) } : { type: "delete", key: `${prefix}${o.k}` },
              );
              const holds = compare.every((c) => (model.get(c.key)?.[c.target] ?? 0) === c.equals);
              const changes = holds && ops.some((o) => o.type === "put" || model.has(o.key));
              const result = await s.txn({ compare, ops });
              expect(result.succeeded).toBe(holds);
              // The store-wide revision may also move by writes outside this prefix (EtcdStore's own
              // write receipts expire in the background): it is checked to move forward by at
              // least one on a change and never back, and the model takes the revision returned.
              if (changes) expect(result.revision).toBeGreaterThan(revision);
              else expect(result.revision).toBeGreaterThanOrEqual(revision);
              revision = result.revision;
              if (changes) {
                for (const o of ops) {
                  const prev = model.get(o.key);
                  if (o.type === "delete") model.delete(o.key);
                  else {
                    model.set(o.key, {
                      value: dec(o.value),
                      createRevision: prev?.createRevision ?? revision,
                      modRevision: revision,
                      version: (prev?.version ?? 0) + 1,
                    });
                  }
                }
              }
            }
            const listed = (await s.list(prefix)).items.map((kv) => [kv.key, dec(kv.value), kv.createRevision, kv.modRevision, kv.version]);
            const expected = [...model.entries()]
              .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
              .map(([k, m]) => [k, m.value, m.createRevision, m.modRevision, m.version]);
            expect(listed).toEqual(expected);
          }),
          { numRuns: 40 },
        );
      });
    });
  });
}

interface ModelKv {
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
}

const keyName = fc.constantFrom("k0", "k1", "k2", "k3");
const abstractTxn = fc.record({
  compare: fc.array(
    fc.record({
      k: keyName,
      target: fc.constantFrom("createRevision" as const, "modRevision" as const, "version" as const),
      mode: fc.constantFrom("current" as const, "current" as const, "zero" as const, "off" as const),
    }),
    { maxLength: 3 },
  ),
  ops: fc.uniqueArray(
    fc.record({ k: keyName, type: fc.constantFrom("put" as const, "put" as const, "delete" as const), v: fc.string({ maxLength: 4 }) }),
    { selector: (o) => o.k, maxLength: 4 },
  ),
});

function sameMap(a: Map<string, string>, b: Map<string, string>): boolean {
  return a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
}
