import { afterEach, describe, expect, it } from "vitest";
import { DesiredState, Migration, MigrationPhase, VmStatus, type Vm } from "@berth/api";
import { MemoryStore } from "@berth/store";
import { ClusterState } from "./cluster-state.js";
import { encodeMigration, encodeVm, Keys } from "./keys.js";

const r = { vcpus: 2, memoryMib: 2048, diskGib: 10 };
const vm = (name: string, hostId: string, group = ""): Vm => ({
  id: `id-${name}`,
  spec: { name, resources: r, labels: {}, group, requiredHostLabels: {}, forbiddenHostLabels: {}, pinnedHosts: [], image: "", networks: [], volumes: [], onHostFailure: 0 },
  desiredState: DesiredState.DESIRED_STATE_RUNNING,
  hostId,
  generation: 1,
  status: VmStatus.fromPartial({}),
  createdAtMs: 0,
  forceStop: false,
  requestId: "",
});
const migration = (name: string, phase: MigrationPhase): Migration => Migration.fromPartial({ id: `m-${name}`, vmId: `id-${name}`, vmName: name, sourceHost: "a", targetHost: "b", phase });

describe("ClusterState: a VM in flight", () => {
  const stops: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const s of stops.splice(0)) await s();
  });

  const setup = async (): Promise<{ store: MemoryStore; state: ClusterState; put: (key: string, value: Uint8Array) => Promise<void> }> => {
    const store = new MemoryStore();
    const state = new ClusterState(store);
    await state.start();
    stops.push(() => state.stop());
    const put = async (key: string, value: Uint8Array): Promise<void> => {
      const { revision } = await store.txn({ compare: [], ops: [{ type: "put", key, value }] });
      await Promise.all([state.vms.waitForRevision(revision), state.migrations.waitForRevision(revision)]);
    };
    return { store, state, put };
  };

  it("counts on both hosts while the target holds it, and only on the target once it has moved", async () => {
    const { state, put } = await setup();
    await put(Keys.vm("web"), encodeVm(vm("web", "a", "g")));
    await put(Keys.migration("web"), encodeMigration(migration("web", MigrationPhase.MIGRATION_PHASE_PENDING)));
    // Pending: nothing is held on the target yet.
    expect(state.allocated("b")).toEqual({ vcpus: 0, memoryMib: 0, diskGib: 0 });
    await put(Keys.migration("web"), encodeMigration(migration("web", MigrationPhase.MIGRATION_PHASE_MIGRATING)));
    expect(state.allocated("a")).toEqual(r);
    expect(state.allocated("b")).toEqual(r);
    expect(state.groupMembersOn("b")).toEqual({ g: 1 });
    expect(state.incomingVms("b").map((v) => v.id)).toEqual(["id-web"]);
    // Other VMs placed on the target while this one is in flight do not absorb its share.
    await put(Keys.vm("db"), encodeVm(vm("db", "b")));
    await put(Keys.vm("db"), encodeVm({ ...vm("db", "b"), generation: 2 }));
    expect(state.allocated("b")).toEqual({ vcpus: 4, memoryMib: 4096, diskGib: 20 });
    // The switch: the record names the target, the migration has ended.
    await put(Keys.vm("web"), encodeVm(vm("web", "b", "g")));
    await put(Keys.migration("web"), encodeMigration(migration("web", MigrationPhase.MIGRATION_PHASE_COMPLETED)));
    expect(state.allocated("a")).toEqual({ vcpus: 0, memoryMib: 0, diskGib: 0 });
    expect(state.allocated("b")).toEqual({ vcpus: 4, memoryMib: 4096, diskGib: 20 });
    expect(state.groupMembersOn("b")).toEqual({ g: 1 });
    expect(state.activeMigration("id-web")).toBeUndefined();
  });

  it("a rolled-back migration leaves the VM counted on its source only", async () => {
    const { state, put } = await setup();
    await put(Keys.vm("web"), encodeVm(vm("web", "a")));
    await put(Keys.migration("web"), encodeMigration(migration("web", MigrationPhase.MIGRATION_PHASE_ABORTING)));
    expect(state.allocated("b")).toEqual(r);
    await put(Keys.migration("web"), encodeMigration(migration("web", MigrationPhase.MIGRATION_PHASE_FAILED)));
    expect(state.allocated("a")).toEqual(r);
    expect(state.allocated("b")).toEqual({ vcpus: 0, memoryMib: 0, diskGib: 0 });
  });

  it("holds a completed migration's VM until the VM's own record from that transaction is in the cache", async () => {
    const { state, store } = await setup();
    const both = async (vmRecord: Vm | undefined, m: Migration): Promise<number> => {
      const ops = [{ type: "put" as const, key: Keys.migration("web"), value: encodeMigration(m) }];
      if (vmRecord) ops.push({ type: "put" as const, key: Keys.vm("web"), value: encodeVm(vmRecord) });
      const { revision } = await store.txn({ compare: [], ops });
      await Promise.all([state.vms.waitForRevision(revision), state.migrations.waitForRevision(revision)]);
      return revision;
    };
    await both(vm("web", "a"), migration("web", MigrationPhase.MIGRATION_PHASE_FINISHING));
    expect(state.migrationHolds("id-web")).toBe(true);
    // As a cache would see it with the migration's watch ahead of the VMs' watch: done there,
    // the VM still on its source here.
    await both(undefined, migration("web", MigrationPhase.MIGRATION_PHASE_COMPLETED));
    expect(state.vm("web")?.hostId).toBe("a");
    expect(state.migrationHolds("id-web")).toBe(true);
    await both(vm("web", "b"), migration("web", MigrationPhase.MIGRATION_PHASE_COMPLETED));
    expect(state.migrationHolds("id-web")).toBe(false);
  });
});
