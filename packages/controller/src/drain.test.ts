import { describe, expect, it } from "vitest";
import { DesiredState, DrainDeadlineAction, DrainPhase, MigrationPhase, MigrationReason, VmStatus, type DrainStatus, type Migration, type Vm } from "@berth/api";
import { DRAIN_ATTEMPTS, planDrain, type DrainVm } from "./drain.js";

const REQUESTED = 1_000;
const drain = (over: Partial<DrainStatus> = {}): DrainStatus => ({
  phase: DrainPhase.DRAIN_PHASE_DRAINING,
  requestedAtMs: REQUESTED,
  deadlineAtMs: 0,
  onDeadline: DrainDeadlineAction.DRAIN_DEADLINE_ACTION_LEAVE,
  finishedAtMs: 0,
  toMove: 0,
  moved: 0,
  inFlight: 0,
  failed: 0,
  staying: 0,
  message: "",
  ...over,
});
const vm = (name: string, desiredState = DesiredState.DESIRED_STATE_RUNNING): Vm => ({
  id: `id-${name}`,
  spec: { name, resources: { vcpus: 1, memoryMib: 512, diskGib: 1 }, labels: {}, group: "", requiredHostLabels: {}, forbiddenHostLabels: {}, pinnedHosts: [], image: "", networks: [], volumes: [], onHostFailure: 0 },
  desiredState,
  hostId: "h1",
  generation: 1,
  status: VmStatus.fromPartial({}),
  createdAtMs: 0,
  forceStop: false,
  requestId: "",
});
const mig = (name: string, phase: MigrationPhase, createdAtMs = REQUESTED + 1): Migration =>
  ({ id: `m-${name}`, vmId: `id-${name}`, vmName: name, sourceHost: "h1", targetHost: "h2", phase, reason: MigrationReason.MIGRATION_REASON_DRAIN, createdAtMs }) as Migration;
const on = (v: Vm, migration?: Migration, attempts = 0): DrainVm => ({ vm: v, migration, attempts });

describe("planDrain", () => {
  it("migrates every running VM, leaves stopped ones, and counts them", () => {
    const step = planDrain("h1", drain(), [on(vm("a")), on(vm("b")), on(vm("s", DesiredState.DESIRED_STATE_STOPPED))], 0, 2_000);
    expect(step.migrate.map((v) => v.spec?.name)).toEqual(["a", "b"]);
    expect(step.figures).toEqual({ toMove: 2, moved: 0, inFlight: 0, failed: 0, staying: 1 });
    expect(step.status).toBeUndefined();
  });

  it("does not start a second migration for a VM in flight, and counts moved VMs", () => {
    const step = planDrain("h1", drain(), [on(vm("a"), mig("a", MigrationPhase.MIGRATION_PHASE_MIGRATING), 1)], 3, 2_000);
    expect(step.migrate).toEqual([]);
    expect(step.figures).toMatchObject({ toMove: 4, moved: 3, inFlight: 1 });
  });

  it("retries a failed VM as a new migration, then gives up after the attempts and ends INCOMPLETE", () => {
    const failed = mig("a", MigrationPhase.MIGRATION_PHASE_FAILED);
    expect(planDrain("h1", drain(), [on(vm("a"), failed, 1)], 0, 2_000).migrate).toHaveLength(1);
    const step = planDrain("h1", drain(), [on(vm("a"), failed, DRAIN_ATTEMPTS)], 0, 2_000);
    expect(step.migrate).toEqual([]);
    expect(step.status?.phase).toBe(DrainPhase.DRAIN_PHASE_INCOMPLETE);
    expect(step.status?.message).toContain("a");
  });

  it("is DRAINED once no VM that should run is left on the host", () => {
    const step = planDrain("h1", drain(), [on(vm("s", DesiredState.DESIRED_STATE_STOPPED))], 5, 2_000);
    expect(step.status).toMatchObject({ phase: DrainPhase.DRAIN_PHASE_DRAINED, finishedAtMs: 2_000 });
    // Once ended, the figures still say what it did: 5 moved of 5.
    const after = planDrain("h1", step.status!, [on(vm("s", DesiredState.DESIRED_STATE_STOPPED))], 5, 3_000);
    expect(after.figures).toEqual({ toMove: 5, moved: 5, inFlight: 0, failed: 0, staying: 1 });
    expect([after.migrate, after.stop, after.status]).toEqual([[], [], undefined]);
  });

  it("at the deadline: cancels pending moves, lets those in flight finish, then stops or leaves the rest", () => {
    const d = drain({ deadlineAtMs: 5_000, onDeadline: DrainDeadlineAction.DRAIN_DEADLINE_ACTION_STOP });
    const flying = planDrain("h1", d, [on(vm("a"), mig("a", MigrationPhase.MIGRATION_PHASE_PENDING), 1), on(vm("b"), mig("b", MigrationPhase.MIGRATION_PHASE_MIGRATING), 1)], 0, 6_000);
    expect(flying.cancel.map((m) => m.vmName)).toEqual(["a"]);
    expect(flying.migrate).toEqual([]);
    expect(flying.status).toBeUndefined(); // b is still moving
    const after = planDrain("h1", d, [on(vm("a"), mig("a", MigrationPhase.MIGRATION_PHASE_FAILED), 1)], 1, 6_000);
    expect(after.stop.map((v) => v.spec?.name)).toEqual(["a"]);
    expect(after.status?.phase).toBe(DrainPhase.DRAIN_PHASE_INCOMPLETE);
    expect(after.status?.message).toContain("stopped where they are");
    const leave = planDrain("h1", drain({ deadlineAtMs: 5_000 }), [on(vm("a"))], 0, 6_000);
    expect(leave.stop).toEqual([]);
    expect(leave.status?.message).toContain("left running");
  });

  it("ignores migrations from before this drain when counting its own", () => {
    const old = mig("a", MigrationPhase.MIGRATION_PHASE_FAILED, REQUESTED - 1);
    expect(planDrain("h1", drain(), [on(vm("a"), old, 0)], 0, 2_000).migrate).toHaveLength(1);
  });
});
