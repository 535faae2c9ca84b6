// A thousand hosts end to end: a real etcd, a controller process (reporting interval 1 s) and one
// berth-sim process with BERTH_BENCH_SCALE_HOSTS hollow hosts (default 1,000: real agents, each
// its own gRPC stream, over in-memory fake hypervisors). Then BERTH_BENCH_SCALE_VMS VMs (default
// 10,000) created through ClusterService.CreateVm until every one is RUNNING, in two phases:
//   - paced: the first quarter (at most 2,500) at BERTH_BENCH_SCALE_PACED_RATE creates/s (default
//     500), open loop: create→RUNNING p50/p99 at that rate;
//   - burst: the rest as fast as BERTH_BENCH_SCALE_CONCURRENCY calls in flight (default 64) go:
//     creates/s and the time until all are RUNNING.
// A create the controller sheds (UNAVAILABLE "busy": --max-creates-in-flight) is retried with
// jittered backoff, as a client should; its latency counts from the first call.
// RUNNING is when an operator's WatchEvents stream shows it. Then the idle cost: 30 s with every
// stream open and nothing to do (controller CPU % of one core). Throughout: controller, berth-sim
// and etcd CPU, RSS, etcd write transactions (revision deltas) and db size (its status endpoint).
// The controller runs with --cpu-prof (BERTH_BENCH_SCALE_PROFILE=0 turns it off); the top self-time
// functions of its profile are in the result (BERTH_BENCH_SCALE_PROFILE_OUT=FILE keeps the profile).
//
// Stops its phases early to finish within about 8 minutes (the result says what was cut).
//
//   node bench/e2e-scale.bench.mjs      (or: node bench/run.mjs e2e-scale, after npm run build)
//   BERTH_BENCH_SCALE_HOSTS=50 BERTH_BENCH_SCALE_VMS=500 node bench/e2e-scale.bench.mjs   (small)
import { spawn } from "node:child_process";
import { copyFileSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { credentials, Metadata } from "@grpc/grpc-js";
import { ClusterServiceClient, HostState, VmPhase, VmSpec } from "../packages/api/dist/index.js";
import { deadlineIn, grpcClientOptions } from "../packages/core/dist/index.js";
import { startEtcd, walFsyncs } from "./lib/etcd.mjs";
import { addCleanup, cpuMs, envInt, freePort, log, onExit, percentile, pool, round, rssMiB, runBenchmark, sleep, tempDir } from "./lib/harness.mjs";

const HOSTS = envInt("BERTH_BENCH_SCALE_HOSTS", 1_000);
const VMS = envInt("BERTH_BENCH_SCALE_VMS", 10_000);
const PACED_RATE = envInt("BERTH_BENCH_SCALE_PACED_RATE", 500);
const CONCURRENCY = envInt("BERTH_BENCH_SCALE_CONCURRENCY", 64);
const PROFILE = process.env.BERTH_BENCH_SCALE_PROFILE !== "0";
const PACED_VMS = Math.min(2_500, Math.floor(VMS / 4));
const REPORT_INTERVAL_MS = 1_000;
const IDLE_MS = 30_000;
/** Room for far more VMs than VMS / HOSTS per host: placement never runs out. */
const HOST_CAPACITY = "vcpus=256,memory=1TiB,disk=64TiB";
const VM_SIZE = { vcpus: 1, memoryMib: 512, diskGib: 1 };
/** The benchmark's own deadline (the runner's is 10 min): about 8 min, cleanups included. */
const DEADLINE_MS = 470_000;
/** What must be left when the creates stop: the RUNNING wait, the idle phase and the teardown. */
const RESERVE_AFTER_CREATES_MS = 120_000;
/** What must be left when the RUNNING wait gives up: the idle phase and the teardown. */
const RESERVE_AFTER_RUNNING_MS = 75_000;
const root = new URL("..", import.meta.url).pathname;

const GOALS = { createsPerS: 1_000, createToRunningP99MsAt500PerS: 1_000, idleControllerCorePct: 25 };

runBenchmark("e2e-scale", DEADLINE_MS, async (ctx) => {
  const cut = [];
  const etcd = await startEtcd();
  const dir = await tempDir("berth-bench-scale-");
  const address = `127.0.0.1:${await freePort()}`;

  // ---- processes: the controller (profiled) and berth-sim
  const children = [];
  onExit(() => children.forEach((c) => c.kill("SIGKILL")));
  addCleanup(async () => {
    for (const c of children) c.kill("SIGKILL");
  });
  const start = (name, args) => {
    // Both streams kept (pino logs to stdout), the last lines shown if the process exits early.
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LOG_LEVEL: "warn" } });
    let tail = [];
    const keep = (d) => {
      tail.push(...d.toString().split("\n").filter(Boolean));
      if (tail.length > 50) tail = tail.slice(-20);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.tail = () => tail.slice(-10).map((l) => `[${name}] ${l}`).join("\n");
    children.push(child);
    return child;
  };
  const profileDir = join(dir, "profile");
  const controller = start("controller", [
    ...(PROFILE ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : []),
    join(root, "packages/controller/dist/main.js"),
    "--listen", address,
    "--etcd", etcd.endpoint,
    "--id", "bench",
    "--report-interval", String(REPORT_INTERVAL_MS),
    "--log-level", "warn",
    // Plaintext, as the figures in docs/benchmarks.md were measured (TLS adds the handshakes of a
    // thousand streams at start and record encryption per message).
    "--insecure",
  ]);
  const client = new ClusterServiceClient(address, credentials.createInsecure(), grpcClientOptions());
  addCleanup(() => client.close());
  const unary = (method, req, ms = 30_000) =>
    new Promise((resolve, reject) => client[method](req, new Metadata(), { deadline: deadlineIn(ms) }, (e, r) => (e ? reject(e) : resolve(r))));
  await until("the controller leading", () => unary("listHosts", {}, 2_000).then(() => true), 30_000);

  const simStartedAt = performance.now();
  const simCpu0 = 0;
  const ctlCpu0 = cpuMs(controller.pid).other;
  const sim = start("berth-sim", [
    join(root, "packages/agent/dist/sim-main.js"),
    "--hosts", String(HOSTS),
    "--controller", address,
    "--capacity", HOST_CAPACITY,
    "--log-level", "warn",
    "--insecure",
  ]);
  const ready = async () => (await unary("listHosts", {}, 10_000)).hosts.filter((h) => h.state === HostState.HOST_STATE_READY).length;
  let readyCount = 0;
  const readyDeadline = performance.now() + Math.min(120_000, ctx.remainingMs() - 200_000);
  while (performance.now() < readyDeadline) {
    readyCount = await ready().catch(() => readyCount);
    if (readyCount >= HOSTS) break;
    if (sim.exitCode !== null) throw new Error(`berth-sim exited with ${sim.exitCode}:\n${sim.tail()}`);
    await sleep(250);
  }
  const allReadyS = (performance.now() - simStartedAt) / 1000;
  if (readyCount < HOSTS) cut.push(`only ${readyCount} of ${HOSTS} hosts READY after ${round(allReadyS, 1)} s`);
  const join_ = {
    hostsReady: readyCount,
    allReadySeconds: readyCount >= HOSTS ? round(allReadyS, 1) : null,
    controllerCpuSeconds: round((cpuMs(controller.pid).other - ctlCpu0) / 1000, 2),
    simCpuSeconds: round((cpuMs(sim.pid).other - simCpu0) / 1000, 2),
  };
  log(`${readyCount}/${HOSTS} hosts READY after ${round(allReadyS, 1)} s`);
  await sleep(2_000); // the join's last reports settle

  // ---- RUNNING as an operator sees it: one WatchEvents stream
  const runningAt = new Map();
  const watch = client.watchEvents({ vms: true, hosts: false }, new Metadata());
  addCleanup(() => watch.cancel());
  let watchError;
  watch.on("data", (event) => {
    if (event.object?.$case !== "vm") return;
    const vm = event.object.value;
    const name = vm.spec?.name;
    if (name && vm.status?.phase === VmPhase.VM_PHASE_RUNNING && !runningAt.has(name)) runningAt.set(name, performance.now());
  });
  watch.on("error", (e) => {
    if (e.code !== 1) watchError = e.details ?? e.message;
  });
  await sleep(500);

  const names = Array.from({ length: VMS }, (_, i) => `vm-${String(i).padStart(5, "0")}`);
  const calledAt = new Map();
  const createLatencies = [];
  const errors = new Map();
  let shedRetries = 0;
  const createOne = async (i) => {
    const name = names[i];
    const t0 = performance.now();
    calledAt.set(name, t0);
    // A busy controller sheds creates (UNAVAILABLE, "busy"): retried as a client should, with
    // jittered exponential backoff; the latency counts from the first call.
    for (let attempt = 0; ; attempt++) {
      try {
        await unary("createVm", { spec: VmSpec.fromPartial({ name, resources: VM_SIZE }), requestId: `bench-${name}` });
        createLatencies.push(performance.now() - t0);
        return true;
      } catch (e) {
        if (e.code === 14 && /busy/.test(e.details ?? "") && attempt < 30 && !controllerExit) {
          shedRetries++;
          await sleep(Math.min(1_000, 25 * 2 ** attempt) * (0.5 + Math.random()));
          continue;
        }
        calledAt.delete(name);
        const key = e.details ?? e.message;
        errors.set(key, (errors.get(key) ?? 0) + 1);
        return false;
      }
    }
  };
  // A controller that exits (deposed when overloaded, or a crash) ends the phases at once.
  let controllerExit;
  let tearingDown = false;
  controller.once("exit", (code, signal) => {
    if (tearingDown) return;
    controllerExit ??= { code, signal, tail: controller.tail() };
    log(`the controller exited (${code ?? signal}):\n${controllerExit.tail}`);
  });
  const creatingStopped = () => ctx.remainingMs() < RESERVE_AFTER_CREATES_MS || controllerExit !== undefined;
  const waitRunning = async (list, reserveMs) => {
    while (list.some((n) => calledAt.has(n) && !runningAt.has(n)) && ctx.remainingMs() > reserveMs && !watchError && !controllerExit) await sleep(20);
  };
  const sampler = await Sampler.start({ controller: controller.pid, sim: sim.pid, etcd: etcd.pid }, etcd.endpoint);

  // ---- paced: PACED_RATE creates/s, open loop (a create is started on schedule, not after the last)
  log(`paced: ${PACED_VMS} VMs at ${PACED_RATE}/s`);
  const paced = names.slice(0, PACED_VMS);
  const pacedStart = performance.now();
  const pacedCalls = [];
  for (let i = 0; i < PACED_VMS && !creatingStopped(); i++) {
    const due = pacedStart + (i * 1000) / PACED_RATE;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    pacedCalls.push(createOne(i));
  }
  const pacedOfferedPerS = round(pacedCalls.length / ((performance.now() - pacedStart) / 1000), 0);
  await Promise.all(pacedCalls);
  const pacedCreatedS = (performance.now() - pacedStart) / 1000;
  await waitRunning(paced, RESERVE_AFTER_CREATES_MS);
  const pacedSample = await sampler.take();
  const pacedResult = { offeredPerS: pacedOfferedPerS, ...phaseResult(paced, pacedStart, pacedCreatedS, pacedSample) };
  log(`paced: ${pacedResult.createsPerS} creates/s; create→RUNNING p50 ${pacedResult.createToRunningP50Ms} ms, p99 ${pacedResult.createToRunningP99Ms} ms`);

  // ---- burst: the rest, CONCURRENCY in flight
  const burst = names.slice(PACED_VMS);
  log(`burst: ${burst.length} VMs, ${CONCURRENCY} in flight`);
  const burstLatencyFrom = createLatencies.length;
  const burstStart = performance.now();
  const started = await pool(burst.length, CONCURRENCY, (i) => createOne(PACED_VMS + i), creatingStopped);
  if (started < burst.length) cut.push(`burst: creates stopped after ${started} of ${burst.length} (time budget)`);
  const burstCreatedS = (performance.now() - burstStart) / 1000;
  await waitRunning(burst, RESERVE_AFTER_RUNNING_MS);
  const burstSample = await sampler.take();
  const burstResult = phaseResult(burst, burstStart, burstCreatedS, burstSample, createLatencies.slice(burstLatencyFrom));
  log(`burst: ${burstResult.createsPerS} creates/s; all RUNNING after ${burstResult.allRunningSeconds} s; create→RUNNING p99 ${burstResult.createToRunningP99Ms} ms`);

  // ---- idle: every stream open, nothing to do
  const idleMs = controllerExit ? 0 : Math.max(5_000, Math.min(IDLE_MS, ctx.remainingMs() - 45_000));
  if (controllerExit) cut.push("idle: not measured (the controller had exited)");
  if (idleMs < IDLE_MS) cut.push(`idle: measured over ${idleMs} ms, not ${IDLE_MS} (time budget)`);
  log(`idle: ${round(idleMs / 1000, 0)} s`);
  await sleep(3_000); // the last command results and reports settle
  await sampler.take();
  await sleep(idleMs);
  const idle = await sampler.take();
  const hostsReadyAtEnd = await ready().catch(() => undefined);

  // ---- the controller's profile (written at its exit)
  watch.cancel();
  tearingDown = true;
  const ctlRssMiB = rssMiB(controller.pid);
  const ctlCpuTotalS = cpuMs(controller.pid).other / 1000;
  sim.kill("SIGTERM");
  await Promise.race([new Promise((r) => sim.once("exit", r)), sleep(10_000)]);
  controller.kill("SIGTERM");
  await Promise.race([new Promise((r) => controller.once("exit", r)), sleep(20_000)]);
  const profile = PROFILE ? summariseProfile(profileDir) : undefined;

  const totalRunning = names.filter((n) => runningAt.has(n)).length;
  const allCreated = createLatencies.length;
  return {
    config: {
      hosts: HOSTS,
      vms: VMS,
      pacedVms: PACED_VMS,
      pacedRatePerS: PACED_RATE,
      burstConcurrency: CONCURRENCY,
      reportIntervalMs: REPORT_INTERVAL_MS,
      hostCapacity: HOST_CAPACITY,
      vmSize: VM_SIZE,
      controllerProfiled: PROFILE,
      note: "one machine: etcd, the controller, berth-sim (every host) and this client share its cores",
    },
    join: join_,
    paced: pacedResult,
    burst: burstResult,
    total: { created: allCreated, running: totalRunning, createErrors: Object.fromEntries(errors), shedAndRetried: shedRetries, ...(watchError ? { watchEventsError: watchError } : {}), ...(controllerExit ? { controllerExitedEarly: controllerExit } : {}) },
    idle: {
      seconds: round(idle.seconds, 1),
      hostsReady: hostsReadyAtEnd,
      controllerCorePct: idle.controller.corePct,
      simCorePct: idle.sim.corePct,
      etcdCorePct: idle.etcd.corePct,
      controllerRssMiB: idle.controller.rssMiB,
      simRssMiB: idle.sim.rssMiB,
      etcdWritesPerS: idle.etcdWritesPerS,
      // Not counted on the wire: what the agents send by design (a heartbeat every interval / 2, a
      // report every interval), each answered by the controller.
      agentMessagesPerSByDesign: round((HOSTS * 3 * 1000) / REPORT_INTERVAL_MS, 0),
    },
    controller: { cpuSecondsTotal: round(ctlCpuTotalS, 1), rssMiBAtEnd: ctlRssMiB },
    etcd: { dbSizeMiB: idle.etcdDbMiB, revision: idle.etcdRevision },
    goals: {
      ...GOALS,
      metCreatesPerS: allCreated === VMS && totalRunning === VMS && burstResult.createsPerS >= GOALS.createsPerS && burstResult.runningPerS >= GOALS.createsPerS,
      metPacedP99: pacedResult.running === PACED_VMS && pacedResult.createToRunningP99Ms <= GOALS.createToRunningP99MsAt500PerS && pacedResult.offeredPerS >= PACED_RATE * 0.95,
      metIdle: idle.controller.corePct <= GOALS.idleControllerCorePct,
    },
    ...(profile ? { controllerProfile: profile } : {}),
    ...(cut.length > 0 ? { cut } : {}),
  };

  /** One phase's figures: creates, RUNNING, and the resources used meanwhile. */
  function phaseResult(list, startedAt, createdS, sample, latencies = createLatencies) {
    const called = list.filter((n) => calledAt.has(n));
    const done = called.filter((n) => runningAt.has(n));
    const toRunning = done.map((n) => runningAt.get(n) - calledAt.get(n));
    const lastRunning = done.length > 0 ? Math.max(...done.map((n) => runningAt.get(n))) : undefined;
    const allS = lastRunning !== undefined && done.length === list.length ? (lastRunning - startedAt) / 1000 : null;
    return {
      created: called.length,
      running: done.length,
      createSeconds: round(createdS, 2),
      createsPerS: round(called.length / createdS, 0),
      createCallP50Ms: round(percentile(latencies, 50), 1),
      createCallP99Ms: round(percentile(latencies, 99), 1),
      allRunningSeconds: allS === null ? null : round(allS, 2),
      runningPerS: allS ? round(list.length / allS, 0) : null,
      createToRunningP50Ms: round(percentile(toRunning, 50), 1),
      createToRunningP99Ms: round(percentile(toRunning, 99), 1),
      seconds: round(sample.seconds, 1),
      controllerCorePct: sample.controller.corePct,
      simCorePct: sample.sim.corePct,
      etcdCorePct: sample.etcd.corePct,
      benchClientCorePct: sample.client.corePct,
      controllerRssMiB: sample.controller.rssMiB,
      simRssMiB: sample.sim.rssMiB,
      etcdWritesPerS: sample.etcdWritesPerS,
      etcdWritesPerVm: called.length > 0 ? round(sample.etcdWrites / called.length, 2) : null,
      etcdWalFsyncsPerS: sample.etcdWalFsyncsPerS,
      etcdWalFsyncMeanMs: sample.etcdWalFsyncMeanMs,
      etcdDbMiB: sample.etcdDbMiB,
    };
  }
});

/** CPU (as % of one core), RSS and etcd's write transactions between two `take()`s. */
const Sampler = {
  async start(pids, endpoint) {
    const read = async () => {
      const at = performance.now();
      const cpu = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMs(pid).other]));
      return { at, cpu, self: cpuMs().self, etcd: await etcdStatus(endpoint), wal: await walFsyncs(endpoint) };
    };
    let last = await read();
    return {
      async take() {
        const now = await read();
        const seconds = (now.at - last.at) / 1000;
        const out = { seconds };
        for (const [k, pid] of Object.entries(pids)) {
          out[k] = { corePct: round(((now.cpu[k] - last.cpu[k]) / (now.at - last.at)) * 100, 1), rssMiB: rssMiB(pid) };
        }
        out.client = { corePct: round(((now.self - last.self) / (now.at - last.at)) * 100, 1) };
        const writes = now.etcd && last.etcd ? now.etcd.revision - last.etcd.revision : undefined;
        out.etcdWrites = writes;
        out.etcdWritesPerS = writes === undefined ? undefined : round(writes / seconds, 0);
        if (now.wal && last.wal) {
          const n = now.wal.fsyncs - last.wal.fsyncs;
          out.etcdWalFsyncsPerS = round(n / seconds, 0);
          out.etcdWalFsyncMeanMs = n > 0 ? round(((now.wal.fsyncSeconds - last.wal.fsyncSeconds) / n) * 1000, 1) : undefined;
        }
        out.etcdDbMiB = now.etcd ? round(now.etcd.dbSize / 2 ** 20, 1) : undefined;
        out.etcdRevision = now.etcd?.revision;
        last = now;
        return out;
      },
    };
  },
};

/** etcd's revision (one per write transaction) and db size, from its HTTP gateway. */
async function etcdStatus(endpoint) {
  try {
    const res = await fetch(`${endpoint}/v3/maintenance/status`, { method: "POST", body: "{}", signal: AbortSignal.timeout(2_000) });
    const body = await res.json();
    return { revision: Number(body.header?.revision), dbSize: Number(body.dbSize) };
  } catch {
    return undefined;
  }
}

/** Resident set of a process, MiB (Linux /proc), or undefined. */

/**
 * The top self-time functions of the one .cpuprofile in `dir`: each node's samples (its self
 * time) summed per function (name, file, line), as % of all samples; plus the same by package.
 */
function summariseProfile(dir) {
  let file;
  try {
    file = readdirSync(dir).find((f) => f.endsWith(".cpuprofile"));
  } catch {
    return { error: "no profile written (the controller did not exit cleanly)" };
  }
  if (!file) return { error: "no profile written" };
  // BERTH_BENCH_SCALE_PROFILE_OUT=FILE keeps the raw profile (for a flame chart: Chrome DevTools).
  if (process.env.BERTH_BENCH_SCALE_PROFILE_OUT) copyFileSync(join(dir, file), process.env.BERTH_BENCH_SCALE_PROFILE_OUT);
  const p = JSON.parse(readFileSync(join(dir, file), "utf8"));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const deltas = p.timeDeltas ?? [];
  let totalMs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const ms = (deltas[i + 1] ?? deltas[i] ?? 0) / 1000;
    totalMs += ms;
    const node = byId.get(p.samples[i]);
    if (!node) continue;
    const f = node.callFrame;
    const where = f.url ? `${f.url.replace(/^file:\/\//, "").replace(root, "").replace(/^.*node_modules\//, "node_modules/")}:${f.lineNumber + 1}` : "";
    const key = `${f.functionName || "(anonymous)"} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + ms);
  }
  const area = (key) => {
    if (key.startsWith("(garbage collector)")) return "garbage collection";
    if (key.startsWith("(idle)")) return "idle";
    if (key.startsWith("(program)")) return "V8/native (program)";
    if (key.includes("node_modules/@grpc/")) return "@grpc/grpc-js";
    if (key.includes("node_modules/etcd3")) return "etcd3 client";
    const pkg = /packages\/([a-z]+)\//.exec(key)?.[1];
    if (pkg) return `@berth/${pkg}`;
    if (key.includes("node_modules/")) return key.replace(/^.*node_modules\/((@[^/]+\/)?[^/]+).*$/, "$1");
    if (/ node:|^[^ ]+ (internal|node:)/.test(key) || key.includes("node:")) return "node core";
    return "other";
  };
  const busyMs = totalMs - (self.get("(idle)") ?? 0);
  const top = [...self.entries()]
    .filter(([k]) => k !== "(idle)")
    .sort((a, b) => b[1] - a[1])
    .slice(0, 20)
    .map(([fn, ms]) => ({ function: fn, selfMs: round(ms, 0), pctOfBusy: round((ms / busyMs) * 100, 1) }));
  const areas = new Map();
  for (const [k, ms] of self) if (k !== "(idle)") areas.set(area(k), (areas.get(area(k)) ?? 0) + ms);
  return {
    profiledSeconds: round(totalMs / 1000, 1),
    busySeconds: round(busyMs / 1000, 1),
    byArea: [...areas.entries()].sort((a, b) => b[1] - a[1]).map(([a, ms]) => ({ area: a, pctOfBusy: round((ms / busyMs) * 100, 1) })),
    topSelf: top,
  };
}

async function until(what, check, timeoutMs) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ok = await Promise.resolve().then(check).catch(() => false);
    if (ok) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}
