// What a controller holds in memory for a big cluster: BERTH_BENCH_MEM_HOSTS host records (default
// 10,000) and BERTH_BENCH_MEM_VMS VM records (default 100,000) written to a real etcd, then one
// controller process started on it. It lists everything into its cache (informers and indexes),
// leads, and — once one agent has connected — builds the create path's incremental engine over
// every host with the first CreateVm calls. Its RSS is sampled from /proc until it settles.
//
// Then what an agent stream costs: BERTH_BENCH_MEM_STREAMS (500) more agents connect on raw
// streams (hello, then heartbeats) and the difference in live memory (heap used + external after a
// full GC), per stream, is the estimate for the hosts that have none here.
//
// The other hosts have no agent (this machine runs about 3,000 hollow agents at most, e2e-scale):
// they are stored FENCED, their VMs with the status a leader gives VMs of a fenced host (UNKNOWN,
// "host fenced: ...") and on_host_failure KEEP, so the new leader has nothing to write or restart. What their streams would add is measured by e2e-scale (idle RSS with 1,000,
// 2,000 and 3,000 connected hosts) and added here as an estimate, stated apart from the measured
// figure.
//
//   node bench/controller-memory.bench.mjs      (or: node bench/run.mjs controller-memory, after npm run build)
import { spawn } from "node:child_process";
import { join } from "node:path";
import { credentials, Metadata } from "@grpc/grpc-js";
import { AgentServiceClient, ClusterServiceClient, DesiredState, DomainState, Host, HostState, Vm, VmPhase, VmSpec, VmStatus } from "../packages/api/dist/index.js";
import { deadlineIn, grpcClientOptions } from "../packages/core/dist/index.js";
import { Keys } from "../packages/controller/dist/keys.js";
import { EtcdStore } from "../packages/store/dist/index.js";
import { startEtcd } from "./lib/etcd.mjs";
import { addCleanup, envInt, freePort, log, onExit, pool, round, rssMiB, runBenchmark, sleep } from "./lib/harness.mjs";

const HOSTS = envInt("BERTH_BENCH_MEM_HOSTS", 10_000);
const VMS = envInt("BERTH_BENCH_MEM_VMS", 100_000);
const GOAL_RSS_MIB = 500;
/** Extra agent streams opened to measure what one costs the controller (BERTH_BENCH_MEM_STREAMS). */
const STREAMS = envInt("BERTH_BENCH_MEM_STREAMS", 500);
const root = new URL("..", import.meta.url).pathname;

runBenchmark("controller-memory", 420_000, async () => {
  const etcd = await startEtcd();
  const store = await EtcdStore.connect({ endpoints: [etcd.endpoint] });
  addCleanup(() => store.close());

  // ---- the records: hosts DOWN (no agent), VMs RUNNING on them
  const t0 = Date.now();
  const width = String(HOSTS - 1).length;
  const hostId = (i) => `host-${String(i).padStart(width, "0")}`;
  const hostOps = Array.from({ length: HOSTS }, (_, i) => ({
    type: "put",
    key: Keys.host(hostId(i)),
    value: Host.encode(Host.fromPartial({ id: hostId(i), capacity: { vcpus: 128, memoryMib: 512 * 1024, diskGib: 8192 }, labels: { zone: `z-${i % 3}`, rack: `r-${i % 40}` }, state: HostState.HOST_STATE_FENCED, agentVersion: "bench", driver: "fake" })).finish(),
  }));
  const vmOps = Array.from({ length: VMS }, (_, i) => {
    const name = `vm-${String(i).padStart(6, "0")}`;
    const vm = Vm.fromPartial({
      id: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
      spec: VmSpec.fromPartial({ name, resources: { vcpus: 2, memoryMib: 4096, diskGib: 40 }, labels: { app: `app-${i % 50}` } }),
      desiredState: DesiredState.DESIRED_STATE_RUNNING,
      hostId: hostId(i % HOSTS),
      generation: 1,
      status: VmStatus.fromPartial({ phase: VmPhase.VM_PHASE_UNKNOWN, domainState: DomainState.DOMAIN_STATE_RUNNING, observedGeneration: 1, message: "host fenced: silent past its fence deadline", updatedAtMs: Date.now() }),
      createdAtMs: Date.now(),
    });
    return { type: "put", key: Keys.vm(name), value: Vm.encode(vm).finish() };
  });
  const ops = [...hostOps, ...vmOps];
  const batches = [];
  for (let i = 0; i < ops.length; i += 100) batches.push(ops.slice(i, i + 100));
  let written = 0;
  await pool(batches.length, 8, async (b) => {
    await store.txn({ compare: [], ops: batches[b] });
    written += batches[b].length;
    if (b % 200 === 0) log(`written ${written} of ${ops.length} records`);
  });
  const writeSeconds = round((Date.now() - t0) / 1000, 1);
  log(`${HOSTS} hosts and ${VMS} VMs in etcd after ${writeSeconds} s`);

  // ---- the controller
  const address = `127.0.0.1:${await freePort()}`;
  // BERTH_BENCH_MEM_PROFILE_DIR=DIR: the controller runs under --cpu-prof, its profile written there.
  const profile = process.env.BERTH_BENCH_MEM_PROFILE_DIR ? ["--cpu-prof", "--cpu-prof-dir", process.env.BERTH_BENCH_MEM_PROFILE_DIR] : [];
  // The memory probe: SIGUSR2 → a full GC, then process.memoryUsage() on stderr (bench/lib/memory-probe.cjs).
  const probe = ["--expose-gc", "--require", join(root, "bench/lib/memory-probe.cjs")];
  // BERTH_BENCH_MEM_NODE_ARGS: more node flags for the controller (e.g. --max-old-space-size=256).
  const nodeArgs = (process.env.BERTH_BENCH_MEM_NODE_ARGS ?? "").split(" ").filter(Boolean);
  const controller = spawn(process.execPath, [...probe, ...nodeArgs, ...profile, join(root, "packages/controller/dist/main.js"), "--listen", address, "--etcd", etcd.endpoint, "--id", "bench", "--log-level", "warn", "--insecure"], { stdio: ["ignore", "pipe", "pipe"] });
  let tail = [];
  let lastMemory;
  const keep = (d) => {
    const lines = d.toString().split("\n").filter(Boolean);
    for (const l of lines) if (l.startsWith("BERTH_MEMORY ")) lastMemory = JSON.parse(l.slice(13));
    tail = [...tail, ...lines.filter((l) => !l.startsWith("BERTH_MEMORY "))].slice(-10);
  };
  /** Memory after a full GC in the controller, in MiB: { rss, heapUsed, external }. */
  const memoryAfterGc = async () => {
    lastMemory = undefined;
    controller.kill("SIGUSR2");
    for (let i = 0; i < 100 && !lastMemory; i++) await sleep(50);
    const mib = (b) => round(b / 1024 / 1024, 0);
    return lastMemory && { rssMiB: mib(lastMemory.rss), heapUsedMiB: mib(lastMemory.heapUsed), externalMiB: mib(lastMemory.external + lastMemory.arrayBuffers) };
  };
  controller.stdout.on("data", keep);
  controller.stderr.on("data", keep);
  onExit(() => controller.kill("SIGKILL"));
  // SIGTERM first: a clean exit writes the profile, when one is asked for.
  addCleanup(async () => {
    if (controller.exitCode !== null) return;
    controller.kill("SIGTERM");
    await Promise.race([new Promise((r) => controller.once("exit", r)), sleep(10_000)]);
    controller.kill("SIGKILL");
  });
  const started = Date.now();
  const client = new ClusterServiceClient(address, credentials.createInsecure(), grpcClientOptions());
  addCleanup(() => client.close());
  const unary = (method, req, ms = 30_000) =>
    new Promise((resolve, reject) =>
      client[method](req, new Metadata(), { deadline: deadlineIn(ms) }, (e, r) => {
        if (!e) return resolve(r);
        // A dead controller says why in its last lines.
        setTimeout(() => reject(controller.exitCode === null ? e : new Error(`${method}: ${e.message}; the controller exited with ${controller.exitCode}:\n${tail.join("\n")}`)), 200);
      }),
    );
  for (;;) {
    if (controller.exitCode !== null) throw new Error(`the controller exited with ${controller.exitCode}:\n${tail.join("\n")}`);
    const ok = await unary("getCluster", {}, 2_000).then(() => true, () => false);
    if (ok) break;
    await sleep(250);
  }
  const leadingSeconds = round((Date.now() - started) / 1000, 1);
  const rssAtLeading = rssMiB(controller.pid);
  log(`leading after ${leadingSeconds} s, RSS ${rssAtLeading} MiB`);

  // ---- one agent, and creates through the engine built over every host
  const agents = new AgentServiceClient(address, credentials.createInsecure(), grpcClientOptions());
  addCleanup(() => agents.close());
  const call = agents.connect();
  call.on("error", () => undefined);
  addCleanup(() => call.cancel());
  const welcomed = new Promise((resolve) => call.once("data", resolve));
  call.write({ msg: { $case: "hello", value: { hostId: "host-live", bootId: "boot-live", capacity: { vcpus: 512, memoryMib: 4 * 1024 * 1024, diskGib: 65536 }, labels: {}, inventory: { domains: [] }, agentVersion: "bench", driver: "fake", lastLeaderEpoch: 0, clusterId: "" } } });
  const welcome = await welcomed;
  const leaderEpoch = welcome.msg?.value?.leaderEpoch ?? 0;
  const heartbeat = setInterval(() => call.write({ msg: { $case: "heartbeat", value: { leaderEpoch } } }), 500);
  addCleanup(() => clearInterval(heartbeat));
  await sleep(1_000);
  for (let i = 0; i < 20; i++) await unary("createVm", { spec: VmSpec.fromPartial({ name: `new-${i}`, resources: { vcpus: 1, memoryMib: 512, diskGib: 1 } }), requestId: "" });
  log("20 VMs created on the live host (the engine holds every host)");

  // ---- RSS, sampled for 30 s (V8 collects lazily, so it wanders), then after a full GC
  const samples = [];
  for (let s = 0; s < 30; s++) {
    await sleep(1_000);
    samples.push(rssMiB(controller.pid));
  }
  const peak = Math.max(...samples.filter((x) => x !== undefined));
  const afterGc = await memoryAfterGc();
  const settled = afterGc?.rssMiB ?? samples.at(-1);
  log(`RSS sampled ${Math.min(...samples)}-${peak} MiB; after a full GC ${JSON.stringify(afterGc)}`);

  // ---- what one more agent stream costs
  const extra = [];
  await pool(STREAMS, 50, async (i) => {
    const c = agents.connect();
    c.on("error", () => undefined);
    extra.push(c);
    const w = new Promise((resolve) => c.once("data", resolve));
    c.write({ msg: { $case: "hello", value: { hostId: `stream-${i}`, bootId: `boot-${i}`, capacity: { vcpus: 8, memoryMib: 16384, diskGib: 100 }, labels: {}, inventory: { domains: [] }, agentVersion: "bench", driver: "fake", lastLeaderEpoch: 0, clusterId: "" } } });
    await w;
  });
  const beats = setInterval(() => {
    for (const c of extra) c.write({ msg: { $case: "heartbeat", value: { leaderEpoch } } });
  }, 500);
  addCleanup(() => {
    clearInterval(beats);
    for (const c of extra) c.cancel();
  });
  await sleep(3_000);
  const withStreams = await memoryAfterGc();
  // Per stream from live memory (heap used + external after a full GC): RSS after a GC moves by
  // tens of MiB either way as V8 and the allocator keep or return pages, far more than 500 streams add.
  const live = (m) => m.heapUsedMiB + m.externalMiB;
  const perStreamMiB = withStreams && afterGc ? Math.max(0, (live(withStreams) - live(afterGc)) / STREAMS) : undefined;
  const streamsEstimate = perStreamMiB === undefined ? undefined : round(perStreamMiB * (HOSTS - 1), 0);
  log(`${STREAMS} more streams: after a full GC ${JSON.stringify(withStreams)} (${round(perStreamMiB ?? NaN, 3)} MiB a stream); with ${HOSTS} streams estimated ${settled + (streamsEstimate ?? 0)} MiB`);
  return {
    config: { hosts: HOSTS, vms: VMS, hostsWithAnAgent: 1, extraStreams: STREAMS, controllerNodeArgs: nodeArgs },
    writeSeconds,
    controller: {
      leadingAfterSeconds: leadingSeconds,
      rssAtLeadingMiB: rssAtLeading,
      afterFullGc: afterGc,
      rssPeakMiB: peak,
      rssSamplesMiB: samples,
      withExtraStreamsAfterFullGc: withStreams,
      perStreamMiB: round(perStreamMiB ?? NaN, 3),
      estimatedWithEveryStreamMiB: settled + (streamsEstimate ?? 0),
    },
    goal: {
      target: `controller RSS ≤ ${GOAL_RSS_MIB} MiB at ${HOSTS} hosts / ${VMS} VMs`,
      how: `RSS after a full GC (SIGUSR2 to the memory probe) with one agent stream, plus (HOSTS − 1) × the live memory (heap used + external) each of ${STREAMS} more streams added`,
      measuredWithoutStreamsMiB: settled,
      estimatedWithStreamsMiB: settled + (streamsEstimate ?? 0),
      met: streamsEstimate === undefined ? null : settled + streamsEstimate <= GOAL_RSS_MIB,
    },
  };
});
