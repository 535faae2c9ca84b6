import { BerthError, ErrorCode } from "@berth/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LeaseLostError, StoreUnavailableError } from "./errors.js";
import { GroupCommitter } from "./group-commit.js";
import { MemoryStore } from "./memory-store.js";
import { dec, enc, sleep } from "./test-helpers.testkit.js";
import type { Compare, Op, Txn, TxnResult } from "./types.js";

const putTxn = (key: string, value: string, compare: Compare[] = []): Txn => ({ compare, ops: [{ type: "put", key, value: enc(value) }] });

/** A committer over a MemoryStore whose first commit waits for `open()`, so later ones queue. */
function gated(store = new MemoryStore()) {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let first = true;
  let maxOps = 0;
  const committer = new GroupCommitter(async (t) => {
    maxOps = Math.max(maxOps, t.ops.length, t.compare.length);
    if (first) {
      first = false;
      await gate;
    }
    return store.txn(t);
  });
  return { store, committer, open, maxOps: () => maxOps };
}

describe("GroupCommitter", () => {
  it("merges concurrent independent transactions into few commits, all at one revision", async () => {
    const { store, committer, open } = gated();
    const blocker = committer.txn(putTxn("/blocker", "x"));
    const rest = Array.from({ length: 50 }, (_, i) => committer.txn(putTxn(`/k${i}`, String(i))));
    open();
    const results = await Promise.all([blocker, ...rest]);
    expect(results.every((r) => r.succeeded)).toBe(true);
    expect(committer.stats).toEqual({ submitted: 51, commits: 2 });
    expect(new Set(results.slice(1).map((r) => r.revision)).size).toBe(1);
    expect((await store.list("/k")).items).toHaveLength(50);
    await store.close();
  });

  it("merges fenced transactions, which all compare the same election key", async () => {
    const { store, committer, open } = gated();
    const fence: Compare = { key: "/leader", target: "createRevision", equals: 0 };
    const all = [committer.txn(putTxn("/a", "1")), ...Array.from({ length: 10 }, (_, i) => committer.txn(putTxn(`/f${i}`, "v", [fence])))];
    open();
    await Promise.all(all);
    expect(committer.stats.commits).toBe(2);
    await store.close();
  });

  it("keeps transactions on the same key apart and in submission order", async () => {
    const { store, committer, open } = gated();
    const blocker = committer.txn(putTxn("/blocker", "x"));
    const first = committer.txn(putTxn("/k", "first"));
    const reader = committer.txn({ compare: [{ key: "/k", target: "version", equals: 1 }], ops: [{ type: "put", key: "/other", value: enc("saw v1") }] });
    const second = committer.txn(putTxn("/k", "second"));
    open();
    const [, r1, rr, r2] = await Promise.all([blocker, first, reader, second]);
    expect(r1!.revision).toBeLessThan(r2!.revision);
    expect(rr!.succeeded).toBe(true);
    expect(dec((await store.get("/k"))!.value)).toBe("second");
    await store.close();
  });

  it("retries members of a failed merge one by one, so each gets its own answer", async () => {
    const { store, committer, open } = gated();
    const blocker = committer.txn(putTxn("/blocker", "x"));
    const a = committer.txn(putTxn("/a", "1", [{ key: "/a", target: "createRevision", equals: 0 }]));
    const b = committer.txn(putTxn("/b", "1", [{ key: "/b", target: "version", equals: 5 }]));
    const c = committer.txn(putTxn("/c", "1"));
    const d = committer.txn({ compare: [], ops: [{ type: "put", key: "/d", value: enc("1"), lease: "999" }] });
    open();
    await blocker;
    expect((await a).succeeded).toBe(true);
    expect((await b).succeeded).toBe(false);
    expect((await c).succeeded).toBe(true);
    await expect(d).rejects.toBeInstanceOf(LeaseLostError);
    expect((await store.list("/")).items.map((kv) => kv.key)).toEqual(["/a", "/blocker", "/c"]);
    await store.close();
  });

  it("fails every member when the store is unavailable (the outcome is unknown)", async () => {
    let calls = 0;
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const committer = new GroupCommitter(async (): Promise<TxnResult> => {
      if (++calls === 1) {
        await gate;
        return { succeeded: true, revision: 2 };
      }
      throw new StoreUnavailableError("etcd did not answer");
    });
    const first = committer.txn(putTxn("/x", "1"));
    const members = [committer.txn(putTxn("/a", "1")), committer.txn(putTxn("/b", "1"))];
    open();
    await first;
    for (const m of members) await expect(m).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(calls).toBe(2);
  });

  it("rejects a malformed transaction alone", async () => {
    const { store, committer, open } = gated();
    const blocker = committer.txn(putTxn("/blocker", "x"));
    const bad = committer.txn({ compare: [], ops: [{ type: "delete", key: "/a" }, { type: "delete", key: "/a" }] });
    const good = committer.txn(putTxn("/g", "1"));
    open();
    await blocker;
    await expect(bad).rejects.toSatisfy((e) => e instanceof BerthError && e.code === ErrorCode.InvalidArgument);
    expect((await good).succeeded).toBe(true);
    await store.close();
  });

  it("never sends more than 128 ops or compares in one transaction", async () => {
    const { store, committer, open, maxOps } = gated();
    const big = (tag: string): Txn => ({
      compare: Array.from({ length: 50 }, (_, i): Compare => ({ key: `/${tag}/c${i}`, target: "version", equals: 0 })),
      ops: Array.from({ length: 60 }, (_, i): Op => ({ type: "put", key: `/${tag}/${i}`, value: enc("v") })),
    });
    const all = [committer.txn(putTxn("/blocker", "x")), ...["a", "b", "c", "d"].map((t) => committer.txn(big(t)))];
    open();
    expect((await Promise.all(all)).every((r) => r.succeeded)).toBe(true);
    expect(maxOps()).toBeLessThanOrEqual(128);
    expect(committer.stats.commits).toBe(3);
    await store.close();
  });

  it("gives the same answers as running the transactions one by one in some order", async () => {
    const keys = ["/k0", "/k1", "/k2", "/k3", "/k4"];
    const fence: Compare = { key: "/fence", target: "version", equals: 1 };
    const txnArb = fc.record({
      compare: fc.array(fc.record({ key: fc.constantFrom(...keys), equals: fc.integer({ min: 0, max: 2 }) }), { maxLength: 2 }),
      fenced: fc.boolean(),
      ops: fc.uniqueArray(fc.record({ key: fc.constantFrom(...keys), put: fc.boolean(), value: fc.string({ maxLength: 3 }) }), {
        selector: (o) => o.key,
        maxLength: 3,
      }),
      arrivalMs: fc.integer({ min: 0, max: 3 }),
      commitMs: fc.integer({ min: 0, max: 2 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(txnArb, { minLength: 1, maxLength: 12 }), async (specs) => {
        const store = new MemoryStore();
        await store.txn(putTxn("/fence", "leader"));
        const base = store.revision;
        const delays = specs.map((s) => s.commitMs);
        const committer = new GroupCommitter(async (t) => {
          await sleep(delays.shift() ?? 0);
          return store.txn(t);
        });
        const txns: Txn[] = specs.map((s) => ({
          compare: [...s.compare.map((c): Compare => ({ key: c.key, target: "version", equals: c.equals })), ...(s.fenced ? [fence] : [])],
          ops: s.ops.map((o): Op => (o.put ? { type: "put", key: o.key, value: enc(o.value) } : { type: "delete", key: o.key })),
        }));
        const results = await Promise.all(txns.map(async (t, i) => (await sleep(specs[i]!.arrivalMs), committer.txn(t))));

        // Replay the successful ones in revision order (same-revision ones are independent).
        type State = Map<string, { value: string; version: number }>;
        const snapshots = new Map<number, State>();
        let state: State = new Map([["/fence", { value: "leader", version: 1 }]]);
        snapshots.set(base, state);
        const revisions = [...new Set(results.map((r) => r.revision))].sort((a, b) => a - b);
        for (const rev of revisions) {
          state = new Map(state);
          results.forEach((r, i) => {
            if (!r.succeeded || r.revision !== rev) return;
            for (const op of txns[i]!.ops) {
              if (op.type === "delete") state.delete(op.key);
              else state.set(op.key, { value: dec(op.value), version: (state.get(op.key)?.version ?? 0) + 1 });
            }
          });
          snapshots.set(rev, state);
        }
        const at = (rev: number): State => {
          for (let r = rev; r >= base; r--) {
            const s = snapshots.get(r);
            if (s) return s;
          }
          return snapshots.get(base)!;
        };
        const holds = (t: Txn, s: State): boolean => t.compare.every((c) => (s.get(c.key)?.version ?? 0) === c.equals);
        results.forEach((r, i) => {
          const t = txns[i]!;
          if (r.succeeded) expect(holds(t, at(r.revision - 1)) || holds(t, at(r.revision))).toBe(true);
          else expect(holds(t, at(r.revision))).toBe(false);
        });
        const listed = (await store.list("/")).items.map((kv) => [kv.key, dec(kv.value), kv.version]);
        const expected = [...state.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, v.value, v.version]);
        expect(listed).toEqual(expected);
        await store.close();
      }),
      { numRuns: 150 },
    );
  });
});
