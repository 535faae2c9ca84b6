// Fenced, guarded writes as the controller makes them, against a real etcd (started here, stopped
// after) and against the embedded MemoryStore for reference:
//   sequential                one write at a time
//   concurrentNoGroupCommit   64 in flight, group commit off (EtcdStore { groupCommit: false })
//   concurrentGroupCommit     64 in flight, group commit on (EtcdStore's default; on MemoryStore,
//                             the same GroupCommitter put in front of it)
// Each write is one txn: compare the key's own modRevision + the leader fence
// (`leadership.fence(txn)` from `campaign()`), put a 300-byte value. No two writes in flight touch
// the same key, so every write must succeed; failures are counted and reported.
//
//   node bench/store-writes.bench.mjs      (or: node bench/run.mjs store-writes)
// Scale with BERTH_BENCH_SEQ_WRITES, BERTH_BENCH_CONC_WRITES, BERTH_BENCH_GROUP_WRITES, BERTH_BENCH_MEM_WRITES.
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { campaign, EtcdStore, GroupCommitter, MemoryStore } from "../packages/store/dist/index.js";
import { startEtcd, walFsyncs } from "./lib/etcd.mjs";
import { addCleanup, cpuMs, envInt, log, percentile, pool, round, runBenchmark } from "./lib/harness.mjs";

const VALUE_BYTES = 300;
const CONCURRENCY = 64;
/** Keys each case writes to (worker w owns the keys ≡ w mod concurrency). */
const KEYS = 512;
const WARMUP_WRITES = 200;
const SEQ_WRITES = envInt("BERTH_BENCH_SEQ_WRITES", 3_000);
const CONC_WRITES = envInt("BERTH_BENCH_CONC_WRITES", 15_000);
/** Group commit is several times faster: more writes keep its case from being over in under a second. */
const GROUP_WRITES = envInt("BERTH_BENCH_GROUP_WRITES", 40_000);
const MEM_WRITES = envInt("BERTH_BENCH_MEM_WRITES", 100_000);
/** A case stops after this long even if it has not made its count (the count made is reported). */
const CASE_MAX_MS = 12_000;
const DEADLINE_MS = 120_000;
/** Values are drawn from a pool made up front: generating random bytes per write costs more CPU than a MemoryStore write. */
const VALUES = Array.from({ length: 1024 }, () => randomBytes(VALUE_BYTES));
let valueSeq = 0;
const nextValue = () => VALUES[valueSeq++ % VALUES.length];

runBenchmark("store-writes", DEADLINE_MS, async () => {
  const etcd = await startEtcd();
  log(`etcd up at ${etcd.endpoint}`);

  const onEtcd = async (label, groupCommit, writes, concurrency) => {
    const store = new EtcdStore({ endpoints: [etcd.endpoint], groupCommit });
    const closeStore = addCleanup(() => store.close());
    await store.ready();
    try {
      return await measure(label, { store, writer: store, stats: () => store.stats, cpu: () => cpuMs(etcd.pid), disk: () => walFsyncs(etcd.endpoint) }, writes, concurrency);
    } finally {
      await closeStore();
    }
  };
  const etcdSequential = await onEtcd("etcd sequential", true, SEQ_WRITES, 1);
  const etcdNoGroup = await onEtcd("etcd 64 in flight, group commit off", false, CONC_WRITES, CONCURRENCY);
  const etcdGroup = await onEtcd("etcd 64 in flight, group commit on", true, GROUP_WRITES, CONCURRENCY);
  await etcd.stop();

  const onMemory = async (label, groupCommit, writes, concurrency) => {
    const store = new MemoryStore();
    const closeStore = addCleanup(() => store.close());
    try {
      if (!groupCommit) return await measure(label, { store, writer: store, cpu: () => cpuMs() }, writes, concurrency);
      // MemoryStore has no built-in group commit: the same GroupCommitter EtcdStore uses, in front.
      const committer = new GroupCommitter((t) => store.txn(t));
      const writer = { txn: (t) => committer.txn(t), get: (k) => store.get(k) };
      const stats = () => ({ txns: committer.stats.submitted, txnRoundTrips: committer.stats.commits });
      return await measure(label, { store, writer, stats, cpu: () => cpuMs() }, writes, concurrency);
    } finally {
      await closeStore();
    }
  };
  const memSequential = await onMemory("memory sequential", false, MEM_WRITES, 1);
  const memNoGroup = await onMemory("memory 64 in flight, no group commit", false, MEM_WRITES, CONCURRENCY);
  const memGroup = await onMemory("memory 64 in flight, group commit", true, MEM_WRITES, CONCURRENCY);

  return {
    config: { valueBytes: VALUE_BYTES, concurrency: CONCURRENCY, keys: KEYS, warmupWrites: WARMUP_WRITES, caseMaxS: CASE_MAX_MS / 1000 },
    etcd: {
      sequential: etcdSequential,
      concurrentNoGroupCommit: etcdNoGroup,
      concurrentGroupCommit: etcdGroup,
      groupCommitSpeedup: round(etcdGroup.writesPerS / etcdNoGroup.writesPerS),
    },
    memory: {
      sequential: memSequential,
      concurrentNoGroupCommit: memNoGroup,
      concurrentGroupCommit: memGroup,
      groupCommitSpeedup: round(memGroup.writesPerS / memNoGroup.writesPerS),
    },
  };
});

/**
 * Campaigns on `store`, creates the keys, warms up, then times `writes` fenced guarded writes
 * through `writer` (the store, or a group committer in front of it) with `concurrency` in flight.
 * `stats`, `cpu` and `disk` (all optional but `cpu`) read counters before and after.
 */
async function measure(label, { store, writer, stats, cpu, disk }, writes, concurrency) {
  const leadership = await campaign(store, { value: "bench", ttlMs: 10_000 });
  const resign = addCleanup(() => leadership.resign());
  try {
    const prefix = `/bench/writes/${label.replace(/[^a-z0-9]+/gi, "-")}/`;
    const keys = Array.from({ length: KEYS }, (_, i) => `${prefix}${String(i).padStart(4, "0")}`);
    const modRevision = new Map();
    for (let i = 0; i < keys.length; i += 128) {
      const chunk = keys.slice(i, i + 128);
      const r = await store.txn({ compare: [], ops: chunk.map((key) => ({ type: "put", key, value: nextValue() })) });
      for (const key of chunk) modRevision.set(key, r.revision);
    }
    const perWorker = Math.floor(KEYS / concurrency);
    const counters = Array(concurrency).fill(0);
    let failures = 0;
    const latencies = [];
    const writeOne = async (w, record) => {
      const key = keys[w + concurrency * (counters[w]++ % perWorker)];
      const txn = leadership.fence({
        compare: [{ key, target: "modRevision", equals: modRevision.get(key) }],
        ops: [{ type: "put", key, value: nextValue() }],
      });
      const t0 = performance.now();
      const r = await writer.txn(txn);
      if (record) latencies.push(performance.now() - t0);
      if (r.succeeded) {
        modRevision.set(key, r.revision);
      } else {
        failures += 1;
        modRevision.set(key, (await writer.get(key))?.modRevision ?? 0);
      }
    };

    await pool(WARMUP_WRITES, concurrency, (_, w) => writeOne(w, false));
    const diskBefore = await disk?.();
    const before = stats?.();
    const cpuBefore = cpu();
    const started = performance.now();
    const stopAt = started + CASE_MAX_MS;
    const done = await pool(writes, concurrency, (_, w) => writeOne(w, true), () => performance.now() > stopAt);
    const seconds = (performance.now() - started) / 1000;
    const after = stats?.();
    const cpuAfter = cpu();
    const diskAfter = await disk?.();
    const result = {
      writes: done,
      seconds: round(seconds, 3),
      writesPerS: round(done / seconds, 0),
      p50Ms: round(percentile(latencies, 50), 3),
      p99Ms: round(percentile(latencies, 99), 3),
      failures,
      // CPU time per write: this benchmark process (client, or the whole store for MemoryStore) and etcd.
      nodeCpuUsPerWrite: round(((cpuAfter.self - cpuBefore.self) * 1000) / done, 1),
      ...(cpuAfter.other !== undefined ? { etcdCpuUsPerWrite: round(((cpuAfter.other - cpuBefore.other) * 1000) / done, 1) } : {}),
      ...(before && after
        ? {
            roundTrips: after.txnRoundTrips - before.txnRoundTrips,
            roundTripsPerWrite: round((after.txnRoundTrips - before.txnRoundTrips) / (after.txns - before.txns), 3),
          }
        : {}),
      ...(diskBefore && diskAfter
        ? {
            // etcd's WAL fsyncs during the case (etcd's own batching shows as fewer than one per write).
            walFsyncsPerWrite: round((diskAfter.fsyncs - diskBefore.fsyncs) / done, 3),
            walFsyncMeanMs: round(((diskAfter.fsyncSeconds - diskBefore.fsyncSeconds) * 1000) / (diskAfter.fsyncs - diskBefore.fsyncs), 3),
          }
        : {}),
    };
    const extra = [
      result.roundTripsPerWrite !== undefined ? `${result.roundTripsPerWrite} round trips/write` : "",
      `node ${result.nodeCpuUsPerWrite} µs CPU/write`,
      result.etcdCpuUsPerWrite !== undefined ? `etcd ${result.etcdCpuUsPerWrite} µs CPU/write` : "",
      result.walFsyncsPerWrite !== undefined ? `${result.walFsyncsPerWrite} WAL fsyncs/write of ${result.walFsyncMeanMs} ms` : "",
    ].filter(Boolean);
    log(`${label}: ${result.writesPerS} writes/s (${done} in ${result.seconds} s, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, ${extra.join(", ")})`);
    return result;
  } finally {
    await resign();
  }
}
