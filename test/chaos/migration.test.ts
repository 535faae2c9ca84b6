/**
 * Live migration on real processes and a real etcd: agents on fake hypervisors migrate domains
 * between their state dirs while the sampler reads every host's state file every 100 ms, so "no VM
 * runs on two hosts" is checked at every instant the suite can see, not assumed. Operator moves,
 * a drain of a host with 20 VMs, a rebalance applied and planned again.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { status, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, expect, it } from "vitest";
import { DrainPhase, MigrationPhase, RebalanceGoal, RebalanceMetric, VmPhase, type Migration } from "@berth/api";
import { readFakeHypervisorState } from "@berth/hypervisor";
import { describeWithEtcd } from "../support/etcd.js";
import { CLI_BIN, waitFor } from "../support/processes.js";
import { tlsEnv } from "../support/pki.js";
import { ChaosCluster } from "./harness.js";

const execFileP = promisify(execFile);
const VMS = Array.from({ length: 22 }, (_, i) => `app-${String(i + 1).padStart(2, "0")}`);
const ended = (m: Migration | undefined): boolean => m?.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED || m?.phase === MigrationPhase.MIGRATION_PHASE_FAILED;

describeWithEtcd("chaos: live migration", () => {
  let c: ChaosCluster;

  beforeAll(async () => {
    // One host first, so that all 20 VMs land on it; then two empty ones to move them to.
    c = new ChaosCluster({ agents: 1 });
    await c.start();
    for (const n of VMS) await c.createVm(n);
    await c.waitAllRunning(VMS);
    c.startAgent("host-2");
    c.startAgent("host-3");
    await c.waitReady(3);
  });
  afterAll(async () => {
    // A violation's story: every line of every process that names the VM.
    for (const v of c?.sampler.violations ?? []) {
      const id = /vm ([0-9a-f-]{36})/.exec(v)?.[1];
      if (!id) continue;
      for (const p of [...c.controllers, ...c.agents.values()]) for (const l of p?.lines(id) ?? []) console.error(`[${p?.name}] ${l}`);
    }
    await c?.stop();
  });

  const migrationOf = (name: string): Promise<Migration | undefined> => c.withLeader(async (cl) => (await cl.getMigration({ name }).catch(() => ({ migration: undefined }))).migration);

  it("refuses a move to a host that breaks a filter, with the filter's reason, and records nothing", async () => {
    await c.withLeader((cl) => cl.cordonHost({ hostId: "host-3", reason: "firmware update" }));
    const err = (await c.withLeader((cl) => cl.migrateVm({ name: VMS[0], targetHost: "host-3" })).catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(err.details).toContain("cordoned");
    expect(await migrationOf(VMS[0]!)).toBeUndefined();
    const host = await c.withLeader((cl) => cl.getHost({ id: "host-3" }));
    expect(host.host?.cordoned).toBe(true);
    expect(host.host?.cordonReason).toBe("firmware update");
    await c.withLeader((cl) => cl.uncordonHost({ hostId: "host-3" }));
  });

  it("answers bad requests with a typed error naming the field, changing nothing", async () => {
    const expectCode = async (p: Promise<unknown>, code: number, text: string): Promise<void> => {
      const err = (await p.then(() => undefined, (e: unknown) => e)) as ServiceError | undefined;
      expect(err?.code, text).toBe(code);
      expect(err?.details).toContain(text);
    };
    await expectCode(c.withLeader((cl) => cl.migrateVm({ name: "Not_A_Name" })), status.INVALID_ARGUMENT, "name");
    await expectCode(c.withLeader((cl) => cl.migrateVm({ name: "no-such-vm" })), status.NOT_FOUND, "no-such-vm");
    await expectCode(c.withLeader((cl) => cl.migrateVm({ name: VMS[0]!, targetHost: "host-9" })), status.NOT_FOUND, "host-9");
    await expectCode(c.withLeader((cl) => cl.migrateVm({ name: VMS[0]!, targetHost: "host-1" })), status.FAILED_PRECONDITION, "already runs on");
    await expectCode(c.withLeader((cl) => cl.drainHost({ hostId: "host-2", deadlineMs: 8 * 24 * 3600_000 })), status.INVALID_ARGUMENT, "deadline_ms");
    await expectCode(c.withLeader((cl) => cl.cordonHost({ hostId: "host-2", reason: "x".repeat(300) })), status.INVALID_ARGUMENT, "reason");
    await expectCode(c.withLeader((cl) => cl.planRebalance({ maxMoves: 5000 })), status.INVALID_ARGUMENT, "max_moves");
    await expectCode(c.withLeader((cl) => cl.abortMigration({ name: VMS[0]! })), status.NOT_FOUND, VMS[0]!);
    await expectCode(c.withLeader((cl) => cl.updateClusterConfig({ config: { migration: { outboundPerHost: 1000 } } })), status.INVALID_ARGUMENT, "config.migration.outbound_per_host");
    expect((await c.withLeader((cl) => cl.listMigrations({}))).migrations).toEqual([]);
    const h2 = (await c.withLeader((cl) => cl.getHost({ id: "host-2" }))).host!;
    expect([h2.cordoned, h2.drain]).toEqual([false, undefined]);
  });

  it("keeps an operator's cordon and its reason across an agent restart", async () => {
    await c.withLeader((cl) => cl.cordonHost({ hostId: "host-3", reason: "bad DIMM" }));
    await c.agents.get("host-3")!.stop();
    c.startAgent("host-3");
    await c.waitReady(3);
    const h = (await c.withLeader((cl) => cl.getHost({ id: "host-3" }))).host!;
    expect([h.cordoned, h.cordonReason]).toEqual([true, "bad DIMM"]);
    await c.withLeader((cl) => cl.uncordonHost({ hostId: "host-3" }));
  });

  it("moves a running VM to the host asked for, and to the scheduler's pick without one", async () => {
    const vm = VMS[0]!;
    const asked = await c.withLeader((cl) => cl.migrateVm({ name: vm, targetHost: "host-2", requestId: "move-1" }));
    expect(asked.migration?.phase).toBe(MigrationPhase.MIGRATION_PHASE_PENDING);
    // The same request id again: the same migration, not a second one.
    const again = await c.withLeader((cl) => cl.migrateVm({ name: vm, targetHost: "host-2", requestId: "move-1" }));
    expect(again.migration?.id).toBe(asked.migration?.id);
    const done = await waitFor(`${vm} migrated`, async () => {
      const m = await migrationOf(vm);
      return ended(m) ? m : undefined;
    }, 30_000, 100);
    expect(done.phase, done.message).toBe(MigrationPhase.MIGRATION_PHASE_COMPLETED);
    const now = (await c.vms()).find((v) => v.spec?.name === vm)!;
    expect(now.hostId).toBe("host-2");
    expect(now.status?.phase).toBe(VmPhase.VM_PHASE_RUNNING);
    expect(readFakeHypervisorState(c.stateDirs.get("host-2")!).domains.map((d) => d.vmId)).toContain(now.id);
    expect(readFakeHypervisorState(c.stateDirs.get("host-1")!).domains.map((d) => d.vmId)).not.toContain(now.id);

    const picked = await c.withLeader((cl) => cl.migrateVm({ name: VMS[1]! }));
    const pickedDone = await waitFor(`${VMS[1]} migrated`, async () => {
      const m = await migrationOf(VMS[1]!);
      return ended(m) ? m : undefined;
    }, 30_000, 100);
    expect(pickedDone.phase, pickedDone.message).toBe(MigrationPhase.MIGRATION_PHASE_COMPLETED);
    // Spread: the emptiest host, host-3 (host-2 has one VM already).
    expect(pickedDone.targetHost).toBe("host-3");
    expect(picked.migration?.targetHost).toBe("");
    await c.checkInvariants();
  });

  it("drains a host of its VMs: every one RUNNING elsewhere, never on two hosts, within the limits", async () => {
    const onHost1 = (await c.vms()).filter((v) => v.hostId === "host-1").map((v) => v.spec!.name);
    expect(onHost1.length).toBe(20);
    const started = Date.now();
    // The operator's way: `berth host drain --wait`, which returns once the host is drained.
    let cliDone = false;
    const cli = execFileP(process.execPath, [CLI_BIN, "--controller", c.addresses.join(","), "host", "drain", "host-1", "--reason", "maintenance", "--wait"], { timeout: 120_000, env: { ...process.env, ...tlsEnv("admin", "admin") } }).finally(() => (cliDone = true));
    let peakOutbound = 0;
    let peakInFlight = 0;
    await waitFor("the drain command to return", async () => {
      const { migrations } = await c.withLeader((cl) => cl.listMigrations({ activeOnly: true }));
      const flying = migrations.filter((m) => m.phase !== MigrationPhase.MIGRATION_PHASE_PENDING);
      peakInFlight = Math.max(peakInFlight, flying.length);
      peakOutbound = Math.max(peakOutbound, flying.filter((m) => m.sourceHost === "host-1").length);
      return cliDone;
    }, 120_000, 100);
    const { stdout } = await cli; // rejects on a non-zero exit
    const tookMs = Date.now() - started;
    expect(stdout).toMatch(/drained/i);
    const host = (await c.withLeader((cl) => cl.getHost({ id: "host-1" }))).host!;
    expect(host.drain?.phase).toBe(DrainPhase.DRAIN_PHASE_DRAINED);
    console.log(`drained ${onHost1.length} VMs off host-1 in ${tookMs} ms (peak ${peakOutbound} outbound, ${peakInFlight} in flight)`);
    expect(host.cordoned).toBe(true);
    expect(host.drain?.moved).toBe(onHost1.length);
    expect(host.drain?.failed).toBe(0);
    // KubeVirt's limits: 2 outbound per host (and 5 in the cluster).
    expect(peakOutbound).toBeLessThanOrEqual(2);
    expect(peakInFlight).toBeLessThanOrEqual(5);
    const vms = await c.vms();
    expect(vms.filter((v) => v.hostId === "host-1")).toEqual([]);
    expect(vms.every((v) => v.status?.phase === VmPhase.VM_PHASE_RUNNING)).toBe(true);
    expect(readFakeHypervisorState(c.stateDirs.get("host-1")!).domains).toEqual([]);
    for (const h of ["host-2", "host-3"]) {
      const here = readFakeHypervisorState(c.stateDirs.get(h)!).domains.map((d) => d.vmId).sort();
      expect(here).toEqual(vms.filter((v) => v.hostId === h).map((v) => v.id).sort());
    }
    expect(c.sampler.samples).toBeGreaterThan(10);
    await c.checkInvariants();
  });

  it("rebalances onto the emptied host once uncordoned, and a plan made after it proposes nothing for the VMs it moved", async () => {
    await c.withLeader((cl) => cl.uncordonHost({ hostId: "host-1" }));
    const { plan } = await c.withLeader((cl) => cl.planRebalance({ goal: RebalanceGoal.REBALANCE_GOAL_BALANCE, maxMoves: 20, metric: RebalanceMetric.REBALANCE_METRIC_ALLOCATION }));
    expect(plan?.moves.length).toBeGreaterThan(0);
    expect(plan!.moves.every((m) => m.toHost === "host-1")).toBe(true);
    expect(plan!.imbalanceAfter).toBeLessThan(plan!.imbalanceBefore);
    const applied = await c.withLeader((cl) => cl.applyRebalance({ plan }));
    expect(applied.skipped).toEqual([]);
    expect(applied.migrations).toHaveLength(plan!.moves.length);
    await waitFor("the rebalance's migrations done", async () => {
      const all = await Promise.all(plan!.moves.map((m) => migrationOf(m.vmName)));
      return all.every(ended) ? all : undefined;
    }, 60_000, 100);
    for (const m of plan!.moves) expect((await migrationOf(m.vmName))?.phase).toBe(MigrationPhase.MIGRATION_PHASE_COMPLETED);
    expect((await c.vms()).filter((v) => v.hostId === "host-1").length).toBe(plan!.moves.length);
    const after = (await c.withLeader((cl) => cl.planRebalance({ goal: RebalanceGoal.REBALANCE_GOAL_BALANCE, maxMoves: 20, metric: RebalanceMetric.REBALANCE_METRIC_ALLOCATION }))).plan!;
    // What the plan predicted is what the cluster measures once it is applied.
    expect(after.imbalanceBefore).toBeCloseTo(plan!.imbalanceAfter, 6);
    const moved = new Set(plan!.moves.map((m) => m.vmName));
    expect(after.moves.filter((m) => moved.has(m.vmName))).toEqual([]);
    await c.checkInvariants();
  });

  it("continuous rebalancing moves VMs onto a host that joins empty, on its own, then leaves them be", async () => {
    c.startAgent("host-4");
    await c.waitReady(4);
    await c.withLeader((cl) =>
      cl.updateClusterConfig({ config: { rebalance: { enabled: true, metric: RebalanceMetric.REBALANCE_METRIC_ALLOCATION, intervalMs: 1000, rounds: 2, threshold: 0.02, maxMovesPerPass: 4, hostCooldownMs: 1000 } } }),
    );
    await waitFor("VMs moved to host-4 by the controller", async () => (await c.vms()).some((v) => v.hostId === "host-4"), 30_000, 200);
    // It converges in passes of at most 4 moves, then stops: wait for 5 s without a new migration.
    let seen = "";
    let quietSince = Date.now();
    const settled = await waitFor("continuous rebalancing to settle", async () => {
      const all = (await c.withLeader((cl) => cl.listMigrations({}))).migrations;
      const ids = all.map((m) => `${m.id}:${m.phase}`).sort().join(",");
      if (ids !== seen) [seen, quietSince] = [ids, Date.now()];
      return Date.now() - quietSince >= 5_000 ? all : undefined;
    }, 60_000, 250);
    const continuous = settled.filter((m) => m.requestedBy.startsWith("continuous rebalancing"));
    expect(continuous.length).toBeGreaterThan(0);
    expect(continuous.some((m) => m.targetHost === "host-4")).toBe(true);
    // No ping-pong: a host that received VMs never gave any back, and each moved VM stayed put.
    const receivers = new Set(continuous.map((m) => m.targetHost));
    for (const m of continuous) {
      expect(m.phase).toBe(MigrationPhase.MIGRATION_PHASE_COMPLETED);
      expect(receivers.has(m.sourceHost), `${m.vmName} left ${m.sourceHost}, which received VMs`).toBe(false);
    }
    const vms = await c.vms();
    for (const m of continuous) expect(vms.find((v) => v.id === m.vmId)?.hostId).toBe(m.targetHost);
    await c.withLeader((cl) => cl.updateClusterConfig({ config: {} }));
    await c.checkInvariants();
  });

  it("consolidates: the hosts the plan says it frees hold no VM once it is applied", async () => {
    const { plan } = await c.withLeader((cl) => cl.planRebalance({ goal: RebalanceGoal.REBALANCE_GOAL_CONSOLIDATE, maxMoves: 40, metric: RebalanceMetric.REBALANCE_METRIC_ALLOCATION }));
    expect(plan!.freedHosts.length, plan!.note).toBeGreaterThan(0);
    const applied = await c.withLeader((cl) => cl.applyRebalance({ plan }));
    expect(applied.skipped).toEqual([]);
    await waitFor("the consolidation's migrations done", async () => {
      const all = await Promise.all(plan!.moves.map((m) => migrationOf(m.vmName)));
      return all.every(ended) ? all : undefined;
    }, 60_000, 100);
    const vms = await c.vms();
    for (const h of plan!.freedHosts) expect(vms.filter((v) => v.hostId === h).map((v) => v.spec?.name), h).toEqual([]);
    expect(vms.every((v) => v.status?.phase === VmPhase.VM_PHASE_RUNNING)).toBe(true);
    await c.checkInvariants();
  });
});
