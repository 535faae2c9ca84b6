// Recovery from failures, on the product's default timers: a real etcd, two controller processes,
// four agent processes on fake hypervisors. Three measurements, each over BERTH_BENCH_TRIALS
// trials (default 5):
//   - detection: an agent frozen (SIGSTOP) → its host is no longer READY (SUSPECT);
//   - restart: the same freeze → every restart-policy VM of that host RUNNING on another host
//     (the fence timeout and its margin must pass first: that is the safety, not slowness);
//   - failover: the leading controller SIGKILLed → a new leader with every agent back on it.
// Between trials the frozen agent is woken and the cluster settles (its superseded copies removed).
//
//   node bench/recovery.bench.mjs      (or: node bench/run.mjs recovery, after npm run build)
import { spawn } from "node:child_process";
import { join } from "node:path";
import { credentials, Metadata } from "@grpc/grpc-js";
import { ClusterServiceClient, HostFailurePolicy, HostState, VmPhase, VmSpec } from "../packages/api/dist/index.js";
import { deadlineIn, grpcClientOptions } from "../packages/core/dist/index.js";
import { startEtcd } from "./lib/etcd.mjs";
import { addCleanup, envInt, freePort, log, percentile, round, runBenchmark, sleep, tempDir } from "./lib/harness.mjs";

const TRIALS = envInt("BERTH_BENCH_TRIALS", 5);
const AGENTS = 4;
const VMS_PER_HOST = 3;
const DEADLINE_MS = 540_000;
const root = new URL("..", import.meta.url).pathname;

runBenchmark("recovery", DEADLINE_MS, async () => {
  const etcd = await startEtcd();
  const dir = await tempDir("berth-bench-recovery-");
  const addresses = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`];
  const procs = new Map();
  const spawnNode = (name, script, args) => {
    const child = spawn(process.execPath, [join(root, script), ...args], { stdio: ["pipe", "ignore", "ignore"], env: { ...process.env, LOG_LEVEL: "warn" } });
    procs.set(name, child);
    return child;
  };
  addCleanup(async () => {
    for (const child of procs.values()) {
      child.kill("SIGCONT");
      child.kill("SIGKILL");
    }
  });
  const controller = (i) => {
    const child = spawnNode(`controller-${i}`, "packages/controller/dist/main.js", ["--listen", addresses[i], "--etcd", etcd.endpoint, "--id", `c${i}`, "--insecure"]);
    // A deposed controller exits 1; a supervisor starts it again as a follower.
    child.once("exit", (code) => {
      if (code === 1 && procs.get(`controller-${i}`) === child) setTimeout(() => controller(i), 200);
    });
    return child;
  };
  controller(0);
  controller(1);
  const hosts = Array.from({ length: AGENTS }, (_, i) => `host-${i + 1}`);
  for (const h of hosts) {
    spawnNode(h, "packages/agent/dist/main.js", ["--host-id", h, "--controller", addresses.join(","), "--driver", "fake", "--state-dir", join(dir, h), "--capacity", "vcpus=64,memory=64GiB,disk=1TiB", "--insecure"]);
  }
  const clients = addresses.map((a) => new ClusterServiceClient(a, credentials.createInsecure(), grpcClientOptions()));
  addCleanup(() => clients.forEach((c) => c.close()));
  const call = (client, method, req, ms = 1_000) =>
    new Promise((resolve, reject) => client[method](req, new Metadata(), { deadline: deadlineIn(ms) }, (e, r) => (e ? reject(e) : resolve(r))));
  const leader = async () => {
    for (;;) {
      const found = await Promise.any(clients.map(async (c, i) => (await call(c, "listHosts", {}), i))).catch(() => undefined);
      if (found !== undefined) return found;
      await sleep(20);
    }
  };
  const listHosts = async () => (await call(clients[await leader()], "listHosts", {})).hosts;
  const listVms = async () => (await call(clients[await leader()], "listVms", { hostId: "", pageSize: 5000, pageToken: "" })).vms;
  const until = async (what, check, timeoutMs = 60_000, everyMs = 25) => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const value = await check().catch(() => undefined);
      if (value) return value;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await sleep(everyMs);
    }
  };

  await until("every host ready", async () => (await listHosts()).filter((h) => h.state === HostState.HOST_STATE_READY).length === AGENTS);
  const names = Array.from({ length: AGENTS * VMS_PER_HOST }, (_, i) => `vm-${i}`);
  for (const name of names) {
    const spec = VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 256, diskGib: 1 }, onHostFailure: HostFailurePolicy.HOST_FAILURE_POLICY_RESTART });
    await until(`create ${name}`, async () => (await call(clients[await leader()], "createVm", { spec, requestId: `bench-${name}` }, 10_000)).vm);
  }
  const allRunning = async () => {
    const vms = await listVms();
    return vms.length === names.length && vms.every((v) => v.status?.phase === VmPhase.VM_PHASE_RUNNING) ? vms : undefined;
  };
  await until("every VM running", allRunning);

  const detection = [];
  const restart = [];
  for (let t = 0; t < TRIALS; t++) {
    const vms = await until("settled", allRunning);
    // The host with the most VMs, so every trial moves some.
    const counts = hosts.map((h) => [h, vms.filter((v) => v.hostId === h).length]).sort((a, b) => b[1] - a[1]);
    const victim = counts[0][0];
    const moving = vms.filter((v) => v.hostId === victim).map((v) => v.id);
    const frozenAt = Date.now();
    procs.get(victim).kill("SIGSTOP");
    await until(`${victim} SUSPECT`, async () => (await listHosts()).find((h) => h.id === victim)?.state !== HostState.HOST_STATE_READY);
    detection.push(Date.now() - frozenAt);
    await until(`${victim}'s VMs running elsewhere`, async () => {
      const now = await listVms();
      return moving.every((id) => {
        const v = now.find((x) => x.id === id);
        return v && v.hostId !== victim && v.status?.phase === VmPhase.VM_PHASE_RUNNING;
      });
    });
    restart.push(Date.now() - frozenAt);
    log(`trial ${t + 1}/${TRIALS}: ${victim} suspect after ${detection.at(-1)} ms, ${moving.length} VMs running elsewhere after ${restart.at(-1)} ms`);
    procs.get(victim).kill("SIGCONT");
    await until(`${victim} back`, async () => (await listHosts()).every((h) => h.state === HostState.HOST_STATE_READY));
    await sleep(1_000);
  }

  const failover = [];
  for (let t = 0; t < TRIALS; t++) {
    const first = await leader();
    await until("every host ready", async () => (await listHosts()).every((h) => h.state === HostState.HOST_STATE_READY));
    const killedAt = Date.now();
    procs.get(`controller-${first}`).kill("SIGKILL");
    procs.delete(`controller-${first}`);
    await until("a new leader with every agent back", async () => {
      const hosts = (await call(clients[1 - first], "listHosts", {})).hosts;
      return hosts.length === AGENTS && hosts.every((h) => h.state === HostState.HOST_STATE_READY && Number(h.lastSeenMs) > killedAt);
    });
    failover.push(Date.now() - killedAt);
    log(`failover ${t + 1}/${TRIALS}: every agent on the new leader after ${failover.at(-1)} ms`);
    controller(first);
    await sleep(1_500);
  }

  const stats = (xs) => ({ trials: xs.length, medianMs: percentile(xs, 50), maxMs: Math.max(...xs), samplesMs: xs });
  return {
    config: { agents: AGENTS, vmsPerHost: VMS_PER_HOST, timers: "product defaults: report 2 s (heartbeat 1 s), suspect 2.5 s, fence 8 s + margin 2 s, leader TTL 3 s" },
    detection: stats(detection),
    restartElsewhere: stats(restart),
    leaderFailover: stats(failover),
    goals: {
      detectionMs: 3_000,
      restartElsewhereMs: 15_000,
      leaderFailoverMs: 5_000,
      met: Math.max(...detection) <= 3_000 && Math.max(...restart) <= 15_000 && Math.max(...failover) <= 5_000,
    },
    roundedMedianS: { detection: round(percentile(detection, 50) / 1000), restart: round(percentile(restart, 50) / 1000), failover: round(percentile(failover, 50) / 1000) },
  };
});
