// A throwaway etcd for tests: its own temporary data directory and free loopback ports.
import { spawnSync } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeRequiring } from "./requirements.js";
import { etcdBinary, spawnEtcd, spawnEtcdCluster, type EtcdClusterMember } from "../../scripts/lib/etcd-process.mjs";

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

export type { EtcdClusterMember };

export interface RunningEtcdCluster {
  /** Every member's client URL, in member order. */
  endpoints: string[];
  /** The members: `kill("SIGKILL")` crashes one, `kill("SIGSTOP")`/`kill("SIGCONT")` freeze and thaw it, `restart()` brings it back. */
  members: EtcdClusterMember[];
  /** The index of the member that is the raft leader now, as the live members report it. */
  leaderIndex(): Promise<number>;
  /** Stops every member and removes the data directories. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts a `size`-member etcd cluster (default 3) on free loopback ports, each member with its own
 * temporary data directory, and waits until every member is healthy.
 */
export async function startEtcdCluster(options: StartEtcdOptions & { size?: number } = {}): Promise<RunningEtcdCluster> {
  const baseDir = await mkdtemp(join(tmpdir(), "berth-etcd-cluster-"));
  const cluster = await spawnEtcdCluster({
    baseDir,
    size: options.size ?? 3,
    name: "test",
    readyTimeoutMs: options.readyTimeoutMs ?? 30_000,
  });
  return {
    endpoints: cluster.endpoints,
    members: cluster.members,
    leaderIndex: async () => {
      // etcd's gRPC gateway: Maintenance.Status says which member this is and which one leads.
      const status = async (endpoint: string): Promise<{ header?: { member_id?: string }; leader?: string } | undefined> => {
        try {
          const res = await fetch(`${endpoint}/v3/maintenance/status`, { method: "POST", body: "{}", signal: AbortSignal.timeout(2_000) });
          return (await res.json()) as { header?: { member_id?: string }; leader?: string };
        } catch {
          return undefined; // this member does not answer
        }
      };
      const statuses = await Promise.all(cluster.members.map((m) => (m.pid === undefined ? undefined : status(m.endpoint))));
      const leader = statuses.find((s) => s?.leader && s.leader !== "0")?.leader;
      const index = statuses.findIndex((s) => leader !== undefined && s?.header?.member_id === leader);
      if (index < 0) throw new Error("no live etcd member reports a live leader");
      return index;
    },
    stop: cluster.stop,
  };
}
