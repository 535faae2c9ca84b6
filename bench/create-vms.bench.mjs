// End to end CreateVm through gRPC: a controller in this process on a real etcd (started here,
// stopped after) or on the embedded MemoryStore, plus in-process agents on fake hypervisors; then
// VMs created through ClusterServiceClient with 1 and with 32 calls in flight. Reports creates/s,
// p50/p99 of the CreateVm call, and the time until every VM is RUNNING, seen two ways:
//   - recorded: the controller's status write saying RUNNING is in the store (placement → store →
//     cache → reconciler → agent → fake hypervisor → command result → status write), seen by a
//     watch on the store's VM prefix that the benchmark opens itself;
//   - reported: an operator's WatchEvents stream (what `berth vm create --wait` follows) shows it.
//
// Every case gets a fresh store (and etcd), controller and agents, so no case starts with the
// VMs of another. Client, controller and agents share this process's one event loop.
//
//   node bench/create-vms.bench.mjs      (or: node bench/run.mjs create-vms)
// Scale with BERTH_BENCH_VMS (default 1000) and BERTH_BENCH_HOSTS (default 10).
import { rm } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { credentials, Metadata } from "@grpc/grpc-js";
import { pino } from "pino";
import { Agent, resolveAgentOptions } from "../packages/agent/dist/index.js";
import { ClusterServiceClient, HostState, Vm, VmPhase, VmSpec } from "../packages/api/dist/index.js";
import { Controller, Keys, resolveControllerOptions } from "../packages/controller/dist/index.js";
import { deadlineIn, grpcClientOptions } from "../packages/core/dist/index.js";
import { FakeDriver } from "../packages/hypervisor/dist/index.js";
import { EtcdStore, MemoryStore } from "../packages/store/dist/index.js";
import { startEtcd } from "./lib/etcd.mjs";
import { addCleanup, cpuMs, envInt, log, percentile, pool, round, runBenchmark, sleep, tempDir } from "./lib/harness.mjs";

const VMS = envInt("BERTH_BENCH_VMS", 1_000);
const HOSTS = envInt("BERTH_BENCH_HOSTS", 10);
const CONCURRENCIES = [1, 32];
/** Room for far more than VMS / HOSTS VMs of VM_SIZE per host: placement never runs out. */
const HOST_CAPACITY = { vcpus: 1024, memoryMib: 1024 * 1024, diskGib: 64 * 1024 };
const VM_SIZE = { vcpus: 1, memoryMib: 512, diskGib: 1 };
const CALL_DEADLINE_MS = 30_000;
/** How long a case may wait for its VMs to be RUNNING after the last create returned. */
const RUNNING_WAIT_MS = 120_000;
const DEADLINE_MS = 540_000;
const silent = pino({ level: "silent" });

runBenchmark("create-vms", DEADLINE_MS, async () => {
  const result = { config: { vms: VMS, hosts: HOSTS, hostCapacity: HOST_CAPACITY, vmSize: VM_SIZE }, etcd: {}, memory: {} };
  for (const kind of ["etcd", "memory"]) {
    for (const concurrency of CONCURRENCIES) {
      result[kind][`concurrency${concurrency}`] = await runCase(kind, concurrency);
    }
    // Measured in this one run: how much more CreateVm throughput 32 in flight gets than 1.
    result[kind].createsPerSRatio32to1 = round(result[kind].concurrency32.createsPerS / result[kind].concurrency1.createsPerS);
  }
  return result;
});

/** One case: fresh store, controller and agents; VMS creates with `concurrency` in flight. */
async function runCase(kind, concurrency) {
  const label = `${kind}, concurrency ${concurrency}`;
  const teardown = [];
  const cleanup = addCleanup(async () => {
    for (const fn of teardown.reverse()) await fn().catch((e) => log(`${label}: teardown: ${e?.message ?? e}`));
  });
  try {
    let store;
    let observer; // the benchmark's own view of the store, for the recorded statuses
    let etcdPid;
    if (kind === "etcd") {
      const etcd = await startEtcd();
      teardown.push(() => etcd.stop());
      etcdPid = etcd.pid;
      store = await EtcdStore.connect({ endpoints: [etcd.endpoint] });
      teardown.push(() => store.close());
      observer = await EtcdStore.connect({ endpoints: [etcd.endpoint] });
      teardown.push(() => observer.close());
    } else {
      store = new MemoryStore();
      teardown.push(() => store.close());
      observer = store;
    }
    const timed = timedStore(store);

    const options = resolveControllerOptions({ listen: "127.0.0.1:0", controllerId: "bench" });
    const controller = await Controller.start(options, timed, silent);
    teardown.push(() => controller.stop());
    controller.onDeposed((why) => log(`${label}: controller deposed: ${why}`));
    const address = `127.0.0.1:${controller.port}`;
    await waitFor("leadership", () => controller.isLeader, 30_000);

    for (let i = 0; i < HOSTS; i++) teardown.push(await startAgent(`host-${String(i).padStart(2, "0")}`, address));

    const client = new ClusterServiceClient(address, credentials.createInsecure(), grpcClientOptions());
    teardown.push(async () => client.close());
    await waitFor(
      `${HOSTS} hosts ready`,
      async () => (await unary(client, "listHosts", {})).hosts.filter((h) => h.state === HostState.HOST_STATE_READY).length === HOSTS,
      30_000,
    );

    // Both observers start before the first create; the first RUNNING of each VM is when the loop closed.
    const recorded = runningTracker();
    const { revision } = await observer.list(Keys.vms);
    let storeWatchError;
    const storeWatch = observer.watch(Keys.vms, revision + 1, {
      onEvents: (events) => {
        for (const e of events) if (e.type === "put") recorded.saw(Vm.decode(e.kv.value));
      },
      onError: (e) => (storeWatchError = e),
    });
    teardown.push(() => storeWatch.close());
    const reported = runningTracker();
    const watch = client.watchEvents({ vms: true, hosts: false }, new Metadata());
    teardown.push(async () => watch.cancel());
    let watchError;
    watch.on("data", (event) => {
      if (event.object?.$case === "vm") reported.saw(event.object.value);
    });
    watch.on("error", (e) => {
      if (e.code !== 1 /* CANCELLED */) watchError = e;
    });

    log(`${label}: ${HOSTS} hosts ready; creating ${VMS} VMs`);
    const names = Array.from({ length: VMS }, (_, i) => `vm-${String(i).padStart(5, "0")}`);
    const calledAt = new Map();
    const latencies = [];
    const errors = new Map();
    const cpuBefore = cpuMs(etcdPid);
    const statsBefore = store.stats;
    timed.reset();
    const started = performance.now();
    await pool(VMS, concurrency, async (i) => {
      const name = names[i];
      const t0 = performance.now();
      calledAt.set(name, t0);
      try {
        await unary(client, "createVm", { spec: VmSpec.fromPartial({ name, resources: VM_SIZE }) });
        latencies.push(performance.now() - t0);
      } catch (e) {
        const key = e.details ?? e.message;
        errors.set(key, (errors.get(key) ?? 0) + 1);
      }
    });
    const createdAt = performance.now();
    const createSeconds = (createdAt - started) / 1000;
    const recordedWhenCreated = recorded.at.size;
    const reportedWhenCreated = reported.at.size;
    log(`${label}: ${latencies.length} created in ${createSeconds.toFixed(2)} s; waiting for RUNNING (${recordedWhenCreated} recorded, ${reportedWhenCreated} reported so far)`);

    const expected = latencies.length;
    const waitUntil = performance.now() + RUNNING_WAIT_MS;
    const waiting = () =>
      (recorded.at.size < expected && !storeWatchError) || (reported.at.size < expected && !watchError);
    while (waiting() && performance.now() < waitUntil) await sleep(10);
    const cpuAfter = cpuMs(etcdPid);
    const statsAfter = store.stats;
    const view = (tracker) => {
      const toRunning = [...tracker.at].map(([name, at]) => at - calledAt.get(name));
      const all = tracker.at.size === expected && expected > 0;
      return {
        running: tracker.at.size,
        allRunningSeconds: all ? round((Math.max(...tracker.at.values()) - started) / 1000, 3) : null,
        createToRunningP50Ms: round(percentile(toRunning, 50), 1),
        createToRunningP99Ms: round(percentile(toRunning, 99), 1),
      };
    };
    const rec = view(recorded);
    const rep = view(reported);
    const out = {
      created: latencies.length,
      createErrors: Object.fromEntries(errors),
      createSeconds: round(createSeconds, 3),
      createsPerS: round(latencies.length / createSeconds, 0),
      createP50Ms: round(percentile(latencies, 50), 2),
      createP99Ms: round(percentile(latencies, 99), 2),
      // RUNNING as recorded in the store by the controller (the full loop).
      ...rec,
      runningWhenLastCreateReturned: recordedWhenCreated,
      // RUNNING as an operator's WatchEvents stream reported it.
      reportedViaWatchEvents: { ...rep, runningWhenLastCreateReturned: reportedWhenCreated },
      // The controller's store transactions during the case (creates and status writes), their
      // latency as the controller sees it, and (etcd) the round trips they took after group commit.
      storeTxnsPerVm: round(timed.latencies.length / Math.max(1, latencies.length), 2),
      storeTxnP50Ms: round(percentile(timed.latencies, 50), 2),
      storeTxnP99Ms: round(percentile(timed.latencies, 99), 2),
      ...(statsBefore && statsAfter
        ? { etcdRoundTripsPerTxn: round((statsAfter.txnRoundTrips - statsBefore.txnRoundTrips) / (statsAfter.txns - statsBefore.txns), 3) }
        : {}),
      // CPU used meanwhile: this process (client, controller and agents together) and etcd.
      nodeCpuSeconds: round((cpuAfter.self - cpuBefore.self) / 1000, 2),
      ...(cpuAfter.other !== undefined ? { etcdCpuSeconds: round((cpuAfter.other - cpuBefore.other) / 1000, 2) } : {}),
      ...(storeWatchError ? { storeWatchError: storeWatchError.message } : {}),
      ...(watchError ? { watchEventsError: watchError.details ?? watchError.message } : {}),
    };
    if (rec.allRunningSeconds === null) log(`${label}: only ${rec.running} of ${expected} VMs recorded RUNNING`);
    if (rep.allRunningSeconds === null) log(`${label}: only ${rep.running} of ${expected} VMs reported RUNNING through WatchEvents`);
    log(
      `${label}: ${out.createsPerS} creates/s, p50 ${out.createP50Ms} ms, p99 ${out.createP99Ms} ms; ` +
        `all recorded RUNNING after ${rec.allRunningSeconds} s (create→RUNNING p50 ${rec.createToRunningP50Ms} ms, p99 ${rec.createToRunningP99Ms} ms), ` +
        `reported through WatchEvents after ${rep.allRunningSeconds} s`,
    );
    return out;
  } finally {
    await cleanup();
  }
}

/** An in-process agent on a fake hypervisor in a temp dir; returns its teardown. */
async function startAgent(hostId, address) {
  const stateDir = await tempDir(`berth-bench-${hostId}-`);
  const driver = new FakeDriver({ stateDir, capacity: HOST_CAPACITY });
  const agent = new Agent(
    resolveAgentOptions({ hostId, controllers: [address], driver: "fake", stateDir, minBackoffMs: 50, maxBackoffMs: 200 }),
    driver,
    0,
    silent,
  );
  const abort = new AbortController();
  const running = agent.run(abort.signal).catch((e) => log(`agent ${hostId} stopped: ${e.message}`));
  return async () => {
    abort.abort();
    await Promise.race([running, sleep(5_000)]);
    await driver.close();
    await rm(stateDir, { recursive: true, force: true });
  };
}

/** First time each VM was seen RUNNING. */
function runningTracker() {
  const at = new Map();
  return {
    at,
    saw(vm) {
      const name = vm.spec?.name;
      if (name && vm.status?.phase === VmPhase.VM_PHASE_RUNNING && !at.has(name)) at.set(name, performance.now());
    },
  };
}

/** The store with every txn timed (the controller's view of a write: queueing + round trip). */
function timedStore(store) {
  const timed = {
    latencies: [],
    reset: () => (timed.latencies = []),
    get: (key) => store.get(key),
    list: (prefix) => store.list(prefix),
    txn: async (txn) => {
      const t0 = performance.now();
      const r = await store.txn(txn);
      timed.latencies.push(performance.now() - t0);
      return r;
    },
    watch: (prefix, from, handler) => store.watch(prefix, from, handler),
    grantLease: (ttlMs) => store.grantLease(ttlMs),
    compact: (revision) => store.compact(revision),
    close: () => store.close(),
  };
  return timed;
}

/** A unary ClusterService call as a promise, with a deadline. */
function unary(client, method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, new Metadata(), { deadline: deadlineIn(CALL_DEADLINE_MS) }, (e, r) => (e ? reject(e) : resolve(r))),
  );
}

async function waitFor(what, check, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await Promise.resolve().then(check).catch(() => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}
