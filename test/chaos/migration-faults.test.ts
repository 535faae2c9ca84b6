/**
 * Live migration under faults, on real processes and a real etcd: the source or the target agent
 * killed at each point of the protocol, the leader killed mid-migration, an operator's abort, and
 * a guest that dirties memory faster than it can be copied. Migrations are slowed down (the fake's
 * bandwidth) so that each fault lands mid-flight. Each scenario ends with the invariants: no VM on
 * two hosts at any sampled instant, none lost, and the migration's outcome is where the VM runs.
 */
import { afterEach, expect, it } from "vitest";
import { MigrationPhase, VmPhase, type Migration } from "@berth/api";
import { readFakeHypervisorState, writeFakeFaults } from "@berth/hypervisor";
import { describeWithEtcd } from "../support/etcd.js";
import { waitFor } from "../support/processes.js";
import { ChaosCluster } from "./harness.js";

// 256 MiB VMs using half their memory: the first pass copies 128 MiB, about 4 s at 32 MiB/s.
const SLOW = ["--fake-migration-bandwidth", "32"];
const ended = (m: Migration | undefined): boolean => m?.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED || m?.phase === MigrationPhase.MIGRATION_PHASE_FAILED;

describeWithEtcd("chaos: live migration under faults", () => {
  let cluster: ChaosCluster | undefined;
  afterEach(async (context) => {
    if (context.task.result?.state === "fail" && cluster) console.error(cluster.dump());
    await cluster?.stop();
    cluster = undefined;
  });

  /** Two hosts, the VM on host-1 (placed before host-2 exists). */
  const up = async (options: { controllers?: number } = {}): Promise<{ c: ChaosCluster; id: string }> => {
    const c = (cluster = new ChaosCluster({ agents: 1, agentArgs: SLOW, ...options }));
    await c.start();
    const vm = await c.createVm("mover");
    await c.waitAllRunning(["mover"]);
    c.startAgent("host-2");
    await c.waitReady(2);
    return { c, id: vm.id };
  };
  const migrationOf = (c: ChaosCluster): Promise<Migration | undefined> => c.withLeader(async (cl) => (await cl.getMigration({ name: "mover" }).catch(() => ({ migration: undefined }))).migration);
  const phaseReached = (c: ChaosCluster, phase: MigrationPhase): Promise<Migration> =>
    waitFor(`migration ${MigrationPhase[phase]}`, async () => {
      const m = await migrationOf(c);
      return m && m.phase >= phase ? m : undefined;
    }, 20_000, 50);
  const outcome = (c: ChaosCluster): Promise<Migration> =>
    waitFor("the migration's outcome", async () => {
      const m = await migrationOf(c);
      return ended(m) ? m : undefined;
    }, 60_000, 100);
  /** The VM runs where its record says, and nowhere else; the record agrees with the outcome. */
  const runsWhereRecorded = async (c: ChaosCluster, id: string, m: Migration): Promise<void> => {
    const vm = await waitFor("the VM RUNNING", async () => {
      const v = (await c.vms()).find((x) => x.id === id);
      return v?.status?.phase === VmPhase.VM_PHASE_RUNNING ? v : undefined;
    }, 30_000, 100);
    expect(vm.hostId).toBe(m.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED ? "host-2" : "host-1");
    const other = vm.hostId === "host-1" ? "host-2" : "host-1";
    expect(readFakeHypervisorState(c.stateDirs.get(vm.hostId)!).domains.find((d) => d.vmId === id)?.state).toBe(2);
    expect(readFakeHypervisorState(c.stateDirs.get(other)!).domains.map((d) => d.vmId)).not.toContain(id);
    await c.checkInvariants();
  };
  const restartWhenKilled = async (c: ChaosCluster, host: string): Promise<void> => {
    await c.agents.get(host)!.exited;
    c.startAgent(host);
    await c.waitReady(2);
  };

  for (const [point, side, expected] of [
    ["migrateOut:transfer", "host-1", undefined],
    ["migrateOut:after-switchover", "host-1", MigrationPhase.MIGRATION_PHASE_COMPLETED],
    ["finishIncoming:before", "host-2", MigrationPhase.MIGRATION_PHASE_COMPLETED],
    ["finishIncoming:after", "host-2", MigrationPhase.MIGRATION_PHASE_COMPLETED],
  ] as const) {
    it(`${side === "host-1" ? "source" : "target"} killed at ${point}: the outcome follows where the domain is`, async () => {
      const { c, id } = await up();
      writeFakeFaults(c.stateDirs.get(side)!, { kill: [{ point, vmId: id }] });
      await c.withLeader((cl) => cl.migrateVm({ name: "mover", targetHost: "host-2" }));
      await restartWhenKilled(c, side);
      const m = await outcome(c);
      // Killed mid-transfer the source still has it: a new migrate-out resumes the job, or it is
      // rolled back; past the switchover it can only complete.
      if (expected !== undefined) expect(m.phase, m.message).toBe(expected);
      await runsWhereRecorded(c, id, m);
    });
  }

  it("the leader killed mid-migration: the next leader picks the record up and the VM ends on one host", async () => {
    const { c, id } = await up({ controllers: 2 });
    await c.withLeader((cl) => cl.migrateVm({ name: "mover", targetHost: "host-2" }));
    await phaseReached(c, MigrationPhase.MIGRATION_PHASE_MIGRATING);
    const leader = await c.leaderIndex();
    c.controllers[leader]!.child.kill("SIGKILL");
    const m = await outcome(c);
    expect(m.phase, m.message).toBe(MigrationPhase.MIGRATION_PHASE_COMPLETED);
    await runsWhereRecorded(c, id, m);
  });

  it("an operator's abort mid-transfer rolls back: the VM keeps running on its source, the target holds nothing", async () => {
    const { c, id } = await up();
    await c.withLeader((cl) => cl.migrateVm({ name: "mover", targetHost: "host-2" }));
    await waitFor("some data copied", async () => ((await migrationOf(c))?.progress?.dataProcessedBytes ?? 0) > 0, 20_000, 50);
    const asked = await c.withLeader((cl) => cl.abortMigration({ name: "mover" }));
    expect(asked.migration?.abortRequested).toBe(true);
    const m = await outcome(c);
    expect(m.phase).toBe(MigrationPhase.MIGRATION_PHASE_FAILED);
    expect(m.message).toContain("aborted by an operator");
    await runsWhereRecorded(c, id, m);
    const host2 = (await c.withLeader((cl) => cl.getHost({ id: "host-2" }))).host!;
    expect(host2.allocated).toMatchObject({ vcpus: 0, memoryMib: 0 });
  });

  it("a guest that dirties memory faster than it is copied is aborted when progress stalls", async () => {
    const { c, id } = await up();
    await c.withLeader((cl) => cl.updateClusterConfig({ config: { migration: { progressTimeoutS: 3 } } }));
    writeFakeFaults(c.stateDirs.get("host-1")!, { load: { vms: { [id]: { dirtyRateMibPerS: 64 } } } });
    await c.withLeader((cl) => cl.migrateVm({ name: "mover", targetHost: "host-2" }));
    const m = await outcome(c);
    expect(m.phase).toBe(MigrationPhase.MIGRATION_PHASE_FAILED);
    expect(m.message).toContain("no progress");
    await runsWhereRecorded(c, id, m);
  });

  it("a stop asked mid-transfer aborts the migration, and the VM stops on its source", async () => {
    const { c, id } = await up();
    await c.withLeader((cl) => cl.migrateVm({ name: "mover", targetHost: "host-2" }));
    await waitFor("some data copied", async () => ((await migrationOf(c))?.progress?.dataProcessedBytes ?? 0) > 0, 20_000, 50);
    await c.withLeader((cl) => cl.stopVm({ name: "mover" }));
    const m = await outcome(c);
    expect(m.phase).toBe(MigrationPhase.MIGRATION_PHASE_FAILED);
    expect(m.message).toContain("desired state changed");
    const vm = await waitFor("the VM STOPPED", async () => {
      const v = (await c.vms()).find((x) => x.id === id);
      return v?.status?.phase === VmPhase.VM_PHASE_STOPPED ? v : undefined;
    }, 30_000, 100);
    expect(vm.hostId).toBe("host-1");
    expect(readFakeHypervisorState(c.stateDirs.get("host-2")!).domains.map((d) => d.vmId)).not.toContain(id);
    await c.checkInvariants();
  });
});
