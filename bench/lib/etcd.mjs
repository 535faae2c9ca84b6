// A throwaway single-member etcd for a benchmark: its own temporary data directory (on disk, so
// writes pay etcd's real fsync) and free loopback ports. Stopped by the returned `stop`, by the
// harness's cleanups, and killed with SIGKILL if the process exits without either.
import { spawn } from "node:child_process";
import { rm } from "node:fs/promises";
import { createServer } from "node:net";
import { addCleanup, etcdBinary, log, onExit, sleep, tempDir } from "./harness.mjs";

/** Starts etcd and waits until it is healthy: `{ endpoint, pid, stop() }`. */
export async function startEtcd({ readyTimeoutMs = 20_000 } = {}) {
  let lastError;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(readyTimeoutMs);
    } catch (e) {
      lastError = e; // most likely a port taken between choosing it and etcd binding it
      log(`etcd did not start (attempt ${attempt + 1}): ${e.message.split("\n")[0]}`);
    }
  }
  throw lastError;
}

async function startOnce(readyTimeoutMs) {
  const [clientPort, peerPort] = await freePorts(2);
  const dataDir = await tempDir("berth-bench-etcd-");
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const child = spawn(
    etcdBinary(),
    [
      "--name=bench",
      `--data-dir=${dataDir}`,
      `--listen-client-urls=${endpoint}`,
      `--advertise-client-urls=${endpoint}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=bench=${peer}`,
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
  const removeExitHook = onExit(() => child.kill("SIGKILL"));
  const stop = addCleanup(async () => {
    await kill(child);
    removeExitHook();
    await rm(dataDir, { recursive: true, force: true });
  });
  try {
    await spawned;
    await waitHealthy(endpoint, child, readyTimeoutMs, () => stderr);
  } catch (e) {
    await stop();
    throw e;
  }
  return { endpoint, pid: child.pid, stop };
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
    await sleep(100);
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
 * etcd's WAL fsync counters from its /metrics endpoint: `{ fsyncs, fsyncSeconds }` (cumulative),
 * or undefined when they cannot be read.
 */
export async function walFsyncs(endpoint) {
  try {
    const res = await fetch(`${endpoint}/metrics`, { signal: AbortSignal.timeout(2_000) });
    const text = await res.text();
    const value = (name) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
    const fsyncs = value("etcd_disk_wal_fsync_duration_seconds_count");
    const fsyncSeconds = value("etcd_disk_wal_fsync_duration_seconds_sum");
    return Number.isFinite(fsyncs) && Number.isFinite(fsyncSeconds) ? { fsyncs, fsyncSeconds } : undefined;
  } catch {
    return undefined;
  }
}
