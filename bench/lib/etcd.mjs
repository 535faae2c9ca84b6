// A throwaway single-member etcd for a benchmark: its own temporary data directory (on disk, so
// writes pay etcd's real fsync) and free loopback ports. Stopped by the returned `stop`, by the
// harness's cleanups, and killed with SIGKILL if the process exits without either.
import { spawnEtcd } from "../../scripts/lib/etcd-process.mjs";
import { addCleanup, log, onExit, tempDir } from "./harness.mjs";

/** Starts etcd and waits until it is healthy: `{ endpoint, pid, stop() }`. */
export async function startEtcd({ readyTimeoutMs = 20_000 } = {}) {
  const dataDir = await tempDir("berth-bench-etcd-");
  const etcd = await spawnEtcd({
    dataDir,
    name: "bench",
    readyTimeoutMs,
    onRetry: (e, attempt) => log(`etcd did not start (attempt ${attempt}): ${e.message.split("\n")[0]}`),
  });
  // The harness stops it on its own cleanup and kills it if the process exits first.
  const removeExitHook = onExit(() => process.kill(etcd.pid, "SIGKILL"));
  const stop = addCleanup(async () => {
    await etcd.stop();
    removeExitHook();
  });
  return { endpoint: etcd.endpoint, pid: etcd.pid, stop };
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
