/**
 * One etcd member on fixed loopback ports that a scenario can kill, start again on the same data,
 * fill past a small quota, or replace by a restore of a snapshot (etcdctl, Debian's etcd-client).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, waitFor } from "../support/processes.js";

const etcdBin = (): string => process.env.ETCD_BIN || "etcd";
const etcdctlBin = (): string => process.env.ETCDCTL_BIN || "etcdctl";

/** Whether etcdctl can be run here (snapshot save and restore need it), and why not. */
export function etcdctlMissing(): string | undefined {
  const r = spawnSync(etcdctlBin(), ["version"], { encoding: "utf8", timeout: 10_000 });
  return r.error || r.status !== 0 ? `cannot run '${etcdctlBin()}' (install Debian's etcd-client, or set ETCDCTL_BIN)` : undefined;
}

export class EtcdNode {
  readonly base = mkdtempSync(join(tmpdir(), "berth-chaos-etcd-"));
  dataDir = join(this.base, "data");
  endpoint = "";
  private peer = "";
  private child: ChildProcess | undefined;

  private constructor(private readonly extraArgs: string[]) {}

  /** A fresh member on free ports, started and healthy. `extraArgs` go to every start. */
  static async start(extraArgs: string[] = []): Promise<EtcdNode> {
    const node = new EtcdNode(extraArgs);
    node.endpoint = `http://127.0.0.1:${await freePort()}`;
    node.peer = `http://127.0.0.1:${await freePort()}`;
    await node.run("new");
    return node;
  }

  private async run(state: "new" | "existing"): Promise<void> {
    this.child = spawn(
      etcdBin(),
      [
        "--name=chaos",
        `--data-dir=${this.dataDir}`,
        `--listen-client-urls=${this.endpoint}`,
        `--advertise-client-urls=${this.endpoint}`,
        `--listen-peer-urls=${this.peer}`,
        `--initial-advertise-peer-urls=${this.peer}`,
        `--initial-cluster=chaos=${this.peer}`,
        `--initial-cluster-state=${state}`,
        "--log-level=error",
        "--logger=zap",
        ...this.extraArgs,
      ],
      { stdio: "ignore" },
    );
    await waitFor("etcd healthy", async () => (await fetch(`${this.endpoint}/health`, { signal: AbortSignal.timeout(1_000) })).ok, 20_000);
  }

  /** SIGKILL, and wait for the exit. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  }

  /** Starts again on the same ports and data. */
  async restart(): Promise<void> {
    await this.kill();
    await this.run("existing");
  }

  /** `etcdctl` against this member. Throws with its output when it fails. */
  ctl(...args: string[]): string {
    const r = spawnSync(etcdctlBin(), [`--endpoints=${this.endpoint}`, ...args], { encoding: "utf8", env: { ...process.env, ETCDCTL_API: "3" }, timeout: 60_000 });
    if (r.status !== 0) throw new Error(`etcdctl ${args.join(" ")}: ${r.stderr || r.stdout}`);
    return r.stdout;
  }

  /** Saves a snapshot of the member now; resolves with its path. */
  snapshot(): string {
    const path = join(this.base, `snapshot-${Date.now()}.db`);
    this.ctl("snapshot", "save", path);
    return path;
  }

  /** Replaces the member by one restored from `snapshot`, on the same ports (what an operator does). */
  async restoreFrom(snapshot: string): Promise<void> {
    await this.kill();
    const restored = join(this.base, `restored-${Date.now()}`);
    const r = spawnSync(
      etcdctlBin(),
      ["snapshot", "restore", snapshot, `--data-dir=${restored}`, "--name=chaos", `--initial-cluster=chaos=${this.peer}`, `--initial-advertise-peer-urls=${this.peer}`],
      { encoding: "utf8", env: { ...process.env, ETCDCTL_API: "3" }, timeout: 60_000 },
    );
    if (r.status !== 0) throw new Error(`etcdctl snapshot restore: ${r.stderr || r.stdout}`);
    this.dataDir = restored;
    await this.run("existing");
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.base, { recursive: true, force: true });
  }
}
