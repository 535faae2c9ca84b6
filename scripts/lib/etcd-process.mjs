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
