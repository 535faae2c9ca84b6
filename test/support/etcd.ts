// A throwaway etcd for tests: its own temporary data directory and free loopback ports.
import { spawnSync } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeRequiring } from "./requirements.js";
import { etcdBinary, spawnEtcd } from "../../scripts/lib/etcd-process.mjs";

export interface RunningEtcd {
  /** Client URL, e.g. http://127.0.0.1:40123. */
  endpoint: string;
  dataDir: string;
  /** Kills etcd and removes its data directory. Idempotent. */
  stop(): Promise<void>;
}

export interface StartEtcdOptions {
  /** How long to wait for etcd to answer its health check. Default 20 s. */
  readyTimeoutMs?: number;
}


/** Whether an etcd binary can be run here, and why not. */
export function etcdAvailable(): { ok: true } | { ok: false; reason: string } {
  const r = spawnSync(etcdBinary(), ["--version"], { encoding: "utf8", timeout: 10_000 });
  if (r.error) return { ok: false, reason: `cannot run '${etcdBinary()}' (${r.error.message}); install etcd (e.g. the etcd-server package) or set ETCD_BIN` };
  if (r.status !== 0) return { ok: false, reason: `'${etcdBinary()} --version' exited with ${r.status}: ${r.stderr.trim()}` };
  return { ok: true };
}

/**
 * `describe` for suites that need etcd: skipped with the reason where it is missing, a failure in
 * CI (see `describeRequiring`).
 */
export function describeWithEtcd(name: string, body: () => void): void {
  const available = etcdAvailable();
  describeRequiring(name, available.ok ? undefined : available.reason, body);
}

/** Starts a single-member etcd on free loopback ports and waits until it is healthy. */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<RunningEtcd> {
  const dataDir = await mkdtemp(join(tmpdir(), "berth-etcd-"));
  const etcd = await spawnEtcd({ dataDir, name: "test", readyTimeoutMs: options.readyTimeoutMs ?? 20_000 });
  return { endpoint: etcd.endpoint, dataDir, stop: etcd.stop };
}
