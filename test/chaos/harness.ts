/**
 * A cluster of real processes for fault scenarios: etcd, controllers (restarted when they exit
 * deposed, as a supervisor would), agents on fake hypervisors in their own state dirs, an operator
 * client, and the invariant sampler that reads every fake host's state file every 100 ms.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HostState, VmPhase, type Host, type Vm } from "@berth/api";
import { fakeRunningVmIds } from "@berth/hypervisor";
import { startEtcd, type RunningEtcd } from "../support/etcd.js";
import { clusterClient, type ClusterClient } from "../support/grpc.js";
import { AGENT_BIN, CONTROLLER_BIN, freePort, Proc, waitFor } from "../support/processes.js";

/** Timers of the scenarios: fast, and in the same proportions as the defaults. */
export const CHAOS_TIMERS = {
  // 1 s: the silence timeout (3 intervals + 1 s) outlasts the 3 s freezes of the scenarios.
  reportIntervalMs: 1_000,
  leaderTtlMs: 2_000,
  fenceTimeoutMs: 3_000,
  fenceMarginMs: 1_000,
};

export interface ChaosOptions {
  controllers?: number;
  agents?: number;
  /** Extra controller flags. */
  controllerArgs?: string[];
  capacity?: string;
  /** Extra agent flags. */
  agentArgs?: string[];
  /** etcd endpoints to use instead of a single-member etcd of the cluster's own. */
  etcdEndpoints?: string[];
}

/**
 * Samples "no VM runs on two hosts" across every fake host's state file, applying the watchdog
 * rule (a fence domain past its host's deadline is off), every `everyMs`.
 */
export class TwoHostSampler {
  readonly violations: string[] = [];
  samples = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly stateDirs: () => Map<string, string>, everyMs = 100) {
    this.timer = setInterval(() => this.sample(), everyMs);
  }

  /**
   * One sample. Files are read one after another, so a migration that completes between two reads
   * would show its VM on both: a VM seen on several hosts is read again on each of them but the
   * one read last. Still running on an earlier host at that re-read (after the last host's read),
   * it was running there while the last host ran it too — a real violation. (A source never runs a
   * domain again once it has left.)
   */
  sample(): void {
    const now = Date.now();
    const where = new Map<string, string[]>();
    const dirs = this.stateDirs();
    for (const [host, dir] of dirs) {
      for (const id of this.running(dir, now)) where.set(id, [...(where.get(id) ?? []), host]);
    }
    this.samples++;
    for (const [id, hosts] of where) {
      if (hosts.length < 2) continue;
      const later = Date.now();
      const still = hosts.slice(0, -1).filter((h) => this.running(dirs.get(h)!, later).includes(id));
      if (still.length > 0) this.violations.push(`${new Date(now).toISOString()} vm ${id} runs on ${[...still, hosts[hosts.length - 1]].join(" and ")}`);
    }
  }

  private running(dir: string, now: number): string[] {
    try {
      return fakeRunningVmIds(dir, now);
    } catch {
      return []; // a host being set up; the file is replaced atomically, never torn
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

export class ChaosCluster {
  etcd: RunningEtcd | undefined;
  etcdEndpoints: string[] = [];
  readonly dir = mkdtempSync(join(tmpdir(), "berth-chaos-"));
  readonly addresses: string[] = [];
  readonly controllers: (Proc | undefined)[] = [];
  readonly agents = new Map<string, Proc>();
  /** Agent state dirs by host id (impostors included, under their own key). */
  readonly stateDirs = new Map<string, string>();
  sampler!: TwoHostSampler;
  /** Names of VMs whose create was acknowledged: none may be lost. */
  readonly acknowledged = new Set<string>();
  private stopping = false;

  constructor(private readonly options: ChaosOptions = {}) {}

  async start(): Promise<void> {
    if (this.options.etcdEndpoints) this.etcdEndpoints = this.options.etcdEndpoints;
    else {
      this.etcd = await startEtcd();
      this.etcdEndpoints = [this.etcd.endpoint];
    }
    const n = this.options.controllers ?? 1;
    for (let i = 0; i < n; i++) this.addresses.push(`127.0.0.1:${await freePort()}`);
    for (let i = 0; i < n; i++) this.startController(i);
    for (let i = 1; i <= (this.options.agents ?? 3); i++) this.startAgent(`host-${i}`);
    this.sampler = new TwoHostSampler(() => this.stateDirs);
    await this.waitReady(this.options.agents ?? 3);
  }

  /** Starts controller `i`; when it exits 1 (deposed) it is started again, as systemd would. */
  startController(i: number, extra: string[] = []): Proc {
    const proc = new Proc(`controller-${i}`, CONTROLLER_BIN, [
      "--listen", this.addresses[i]!,
      "--etcd", this.etcdEndpoints.join(","),
      "--id", `c${i}`,
      "--report-interval", String(CHAOS_TIMERS.reportIntervalMs),
      "--leader-ttl", String(CHAOS_TIMERS.leaderTtlMs),
      "--fence-timeout", String(CHAOS_TIMERS.fenceTimeoutMs),
      "--fence-margin", String(CHAOS_TIMERS.fenceMarginMs),
      ...(this.options.controllerArgs ?? []),
      ...extra,
    ]);
    this.controllers[i] = proc;
    void proc.exited.then((code) => {
      if (!this.stopping && code === 1 && this.controllers[i] === proc) setTimeout(() => !this.stopping && this.startController(i, extra), 200);
    });
    return proc;
  }

  startAgent(hostId: string, stateKey = hostId, extra: string[] = []): Proc {
    const stateDir = join(this.dir, stateKey);
    this.stateDirs.set(stateKey, stateDir);
    const proc = new Proc(stateKey, AGENT_BIN, [
      "--host-id", hostId,
      "--controller", this.addresses.join(","),
      "--driver", "fake",
      "--state-dir", stateDir,
      "--capacity", this.options.capacity ?? "vcpus=16,memory=16GiB,disk=1TiB",
      ...(this.options.agentArgs ?? []),
      ...extra,
    ]);
    this.agents.set(stateKey, proc);
    return proc;
  }

  /** A client of one controller (the cluster client tries them in order). */
  clientOf(i: number): ClusterClient {
    return clusterClient(this.addresses[i]!);
  }

  /** The index of the controller that answers as leader now (probes all at once, 1 s each). */
  async leaderIndex(): Promise<number> {
    return await waitFor("a leader", async () => {
      const probes = this.addresses.map(async (_, i) => {
        const c = this.clientOf(i);
        try {
          await Promise.race([c.listHosts({}), new Promise((_r, reject) => setTimeout(() => reject(new Error("slow")), 1_000))]);
          return i;
        } finally {
          c.close();
        }
      });
      return await Promise.any(probes).catch(() => undefined);
    }, 30_000, 50);
  }

  /** Runs `fn` with a client of the current leader. */
  async withLeader<T>(fn: (c: ClusterClient) => Promise<T>): Promise<T> {
    const c = this.clientOf(await this.leaderIndex());
    try {
      return await fn(c);
    } finally {
      c.close();
    }
  }

  async hosts(): Promise<Host[]> {
    const i = await this.leaderIndex();
    const c = this.clientOf(i);
    try {
      return (await c.listHosts({})).hosts;
    } finally {
      c.close();
    }
  }

  async vms(): Promise<Vm[]> {
    const i = await this.leaderIndex();
    const c = this.clientOf(i);
    try {
      return (await c.listVms({ pageSize: 5000 })).vms;
    } finally {
      c.close();
    }
  }

  async waitReady(n: number, timeoutMs = 30_000): Promise<void> {
    await waitFor(`${n} hosts READY`, async () => (await this.hosts()).filter((h) => h.state === HostState.HOST_STATE_READY).length >= n, timeoutMs, 100);
  }

  /** Waits until `n` hosts are READY and heard by the leader after `sinceMs` (e.g. a failover). */
  async waitHeardSince(n: number, sinceMs: number, timeoutMs = 30_000): Promise<void> {
    await waitFor(`${n} hosts back after ${new Date(sinceMs).toISOString()}`, async () => (await this.hosts()).filter((h) => h.state === HostState.HOST_STATE_READY && h.lastSeenMs > sinceMs).length >= n, timeoutMs, 100);
  }

  /** Creates a VM through the leader, retrying through a leader change with one request id. */
  async createVm(name: string, spec: Record<string, unknown> = {}, timeoutMs = 20_000): Promise<Vm> {
    const requestId = `chaos-${name}`;
    const vm = await waitFor(`create ${name}`, async () => {
      const i = await this.leaderIndex();
      const c = this.clientOf(i);
      try {
        return (await c.createVm({ spec: { name, resources: { vcpus: 1, memoryMib: 256, diskGib: 1 }, ...spec }, requestId })).vm;
      } catch (e) {
        const code = (e as { code?: number }).code;
        if (code === 14 || code === 4 || code === 1) return undefined; // UNAVAILABLE, DEADLINE, CANCELLED: retry
        throw e;
      } finally {
        c.close();
      }
    }, timeoutMs, 200);
    this.acknowledged.add(name);
    return vm;
  }

  async waitAllRunning(names: readonly string[], timeoutMs = 30_000): Promise<Vm[]> {
    return await waitFor(`${names.length} VMs RUNNING`, async () => {
      const vms = await this.vms();
      const byName = new Map(vms.map((v) => [v.spec?.name, v]));
      const all = names.map((n) => byName.get(n));
      return all.every((v) => v?.status?.phase === VmPhase.VM_PHASE_RUNNING) ? (all as Vm[]) : undefined;
    }, timeoutMs, 200);
  }

  /** The invariants every scenario ends with: none on two hosts at any sample, none acknowledged lost. */
  async checkInvariants(): Promise<void> {
    this.sampler.sample();
    if (this.sampler.violations.length > 0) throw new Error(`VMs ran on two hosts:\n${this.sampler.violations.slice(0, 10).join("\n")}`);
    const names = new Set((await this.vms()).map((v) => v.spec?.name));
    const lost = [...this.acknowledged].filter((n) => !names.has(n));
    if (lost.length > 0) throw new Error(`acknowledged VMs lost: ${lost.join(", ")}`);
    // No agent applied a command of an older epoch than one it had applied before.
    for (const [name, proc] of this.agents) {
      let highest = 0;
      for (const line of proc.lines('"command applied"')) {
        const epoch = Number(/"epoch":(\d+)/.exec(line)?.[1] ?? 0);
        if (epoch < highest && /"ok":true/.test(line)) throw new Error(`${name} applied a command of epoch ${epoch} after one of ${highest}`);
        highest = Math.max(highest, epoch);
      }
    }
  }

  dump(): string {
    return [...this.controllers.filter((c): c is Proc => c !== undefined), ...this.agents.values()].map((p) => p.tail(30)).join("\n");
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.sampler?.stop();
    const procs = [...this.agents.values(), ...this.controllers.filter((c): c is Proc => c !== undefined)];
    for (const p of procs) p.child.kill("SIGCONT");
    await Promise.all(procs.map((p) => p.stop()));
    await this.etcd?.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
