// A throwaway single-member etcd on free loopback ports, for the test suites and the benchmarks
// (each wraps it with its own bookkeeping). Plain JavaScript so both can load it unbuilt.
import { spawn } from "node:child_process";
import { rm } from "node:fs/promises";
import { createServer } from "node:net";

/** The etcd binary: $ETCD_BIN, else `etcd` on PATH. */
export const etcdBinary = () => process.env.ETCD_BIN || "etcd";

/**
 * Starts etcd with its data in `dataDir` (which `stop()` removes) and waits until it is healthy.
 * Retries on fresh ports a few times: a port can be taken between choosing it and etcd binding it.
 * The process is SIGKILLed if this process exits first.
 */
export async function spawnEtcd({ dataDir, name = "berth", readyTimeoutMs = 20_000, attempts = 3, onRetry }) {
  let lastError;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      return await startOnce(dataDir, name, readyTimeoutMs);
    } catch (e) {
      lastError = e;
      onRetry?.(e, attempt);
    }
  }
  await rm(dataDir, { recursive: true, force: true });
  throw lastError;
}

async function startOnce(dataDir, name, readyTimeoutMs) {
  const [clientPort, peerPort] = await freePorts(2);
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const child = spawn(
    etcdBinary(),
    [
      `--name=${name}`,
      `--data-dir=${dataDir}`,
      `--listen-client-urls=${endpoint}`,
      `--advertise-client-urls=${endpoint}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=${name}=${peer}`,
      "--initial-cluster-state=new",
      "--logger=zap",
      "--log-level=error",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (d) => (stderr = (stderr + d.toString()).slice(-4_000)));
  const spawned = new Promise((resolve, reject) => {
    child.once("spawn", resolve);
    child.once("error", reject);
  });
  const killOnExit = () => void child.kill("SIGKILL");
  process.once("exit", killOnExit);
  let stopped;
  const stop = () =>
    (stopped ??= (async () => {
      process.removeListener("exit", killOnExit);
      await kill(child);
      await rm(dataDir, { recursive: true, force: true });
    })());
  try {
    await spawned;
    await waitHealthy(endpoint, child, readyTimeoutMs, () => stderr);
  } catch (e) {
    await kill(child);
    process.removeListener("exit", killOnExit);
    throw e;
  }
  return { endpoint, dataDir, pid: child.pid, stop };
}

async function waitHealthy(endpoint, child, timeoutMs, stderr) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`etcd exited (${child.exitCode ?? child.signalCode}) before becoming healthy:\n${stderr()}`);
    }
    try {
      const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1_000) });
      const body = await res.json();
      if (res.ok && body.health === "true") return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`etcd at ${endpoint} was not healthy within ${timeoutMs} ms:\n${stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function kill(child) {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}

/** Ports the OS reports free on 127.0.0.1 (held open together so they differ). */
async function freePorts(n) {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise((resolve, reject) => {
          const srv = createServer();
          srv.once("error", reject);
          srv.listen(0, "127.0.0.1", () => resolve(srv));
        }),
    ),
  );
  const ports = servers.map((srv) => srv.address().port);
  await Promise.all(servers.map((srv) => new Promise((resolve) => srv.close(() => resolve()))));
  return ports;
}

/**
 * Starts a `size`-member etcd cluster on free loopback ports, each member with its own data
 * directory under `baseDir` (which `stop()` removes), and waits until every member is healthy.
 * Each member can be killed (any signal: SIGKILL to crash it, SIGSTOP to freeze it), resumed
 * (SIGCONT) and restarted from its data directory on the same ports. Members are SIGKILLed if this
 * process exits first. Retries on fresh ports a few times, like `spawnEtcd`.
 */
export async function spawnEtcdCluster({ baseDir, size = 3, name = "berth", readyTimeoutMs = 30_000, attempts = 3, onRetry }) {
  let lastError;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      return await startClusterOnce(baseDir, size, name, readyTimeoutMs, attempt);
    } catch (e) {
      lastError = e;
      onRetry?.(e, attempt);
    }
  }
  await rm(baseDir, { recursive: true, force: true });
  throw lastError;
}

async function startClusterOnce(baseDir, size, name, readyTimeoutMs, attempt) {
  const ports = await freePorts(2 * size);
  const specs = Array.from({ length: size }, (_, i) => ({
    name: `${name}${i}`,
    dataDir: `${baseDir}/attempt${attempt}-member${i}`,
    endpoint: `http://127.0.0.1:${ports[2 * i]}`,
    peer: `http://127.0.0.1:${ports[2 * i + 1]}`,
  }));
  const initialCluster = specs.map((s) => `${s.name}=${s.peer}`).join(",");
  const token = `${name}-${process.pid}-${Date.now()}-${attempt}`;
  const members = specs.map((spec) => clusterMember(spec, initialCluster, token));
  try {
    for (const m of members) m.start();
    await Promise.all(members.map((m) => m.waitHealthy(readyTimeoutMs)));
  } catch (e) {
    await Promise.all(members.map((m) => m.kill("SIGKILL")));
    throw e;
  }
  let stopped;
  return {
    endpoints: members.map((m) => m.endpoint),
    members,
    stop: () =>
      (stopped ??= (async () => {
        await Promise.all(members.map((m) => m.stop()));
        await rm(baseDir, { recursive: true, force: true });
      })()),
  };
}

/** One member of a cluster: a process that can be killed, frozen and started again. */
function clusterMember(spec, initialCluster, token) {
  let child;
  let stderr = "";
  const killOnExit = () => void child?.kill("SIGKILL");
  const alive = () => child !== undefined && child.exitCode === null && child.signalCode === null;
  const member = {
    name: spec.name,
    endpoint: spec.endpoint,
    dataDir: spec.dataDir,
    get pid() {
      return alive() ? child.pid : undefined;
    },
    /** Spawns the member (from its data directory when it has run before). Does not wait. */
    start() {
      if (alive()) throw new Error(`etcd member ${spec.name} is already running`);
      stderr = "";
      child = spawn(
        etcdBinary(),
        [
          `--name=${spec.name}`,
          `--data-dir=${spec.dataDir}`,
          `--listen-client-urls=${spec.endpoint}`,
          `--advertise-client-urls=${spec.endpoint}`,
          `--listen-peer-urls=${spec.peer}`,
          `--initial-advertise-peer-urls=${spec.peer}`,
          `--initial-cluster=${initialCluster}`,
          `--initial-cluster-token=${token}`,
          "--initial-cluster-state=new",
          "--logger=zap",
          "--log-level=error",
        ],
        { stdio: ["ignore", "ignore", "pipe"] },
      );
      const own = child;
      own.stderr.on("data", (d) => (stderr = (stderr + d.toString()).slice(-4_000)));
      own.once("error", () => undefined);
      process.removeListener("exit", killOnExit);
      process.once("exit", killOnExit);
    },
    /** Waits until this member answers its health check (which needs a cluster leader). */
    waitHealthy(timeoutMs = 20_000) {
      return waitHealthy(spec.endpoint, child, timeoutMs, () => stderr);
    },
    /** Sends `signal` to the member; for SIGKILL/SIGTERM, resolves once it has exited. */
    async kill(signal = "SIGKILL") {
      if (!alive()) return;
      if (signal === "SIGSTOP" || signal === "SIGCONT") {
        child.kill(signal);
        return;
      }
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGCONT");
      child.kill(signal);
      await exited;
      process.removeListener("exit", killOnExit);
    },
    /** Starts the member again on its ports and data directory, and waits until it is healthy. */
    async restart(timeoutMs = 20_000) {
      await member.kill("SIGKILL");
      member.start();
      await member.waitHealthy(timeoutMs);
    },
    /** Stops the member for good (SIGTERM, then SIGKILL). Its data directory stays until the cluster's stop. */
    async stop() {
      if (alive()) child.kill("SIGCONT");
      if (child) await kill(child);
      process.removeListener("exit", killOnExit);
    },
  };
  return member;
}
