import { describe, expect, it } from "vitest";
import { DesiredState, DomainState, MigrationPhase, MigrationReason, VmPhase, VmStatus, type Domain, type Migration, type Vm } from "@berth/api";
import { admitMigrations, migrationDeadline, stepMigration, withProgress, type MigrationObservation, type MigrationSide } from "./migration.js";

const NOW = 1_000_000;
const vm: Vm = {
  id: "11111111-1111-4111-8111-111111111111",
  spec: { name: "web", resources: { vcpus: 1, memoryMib: 1024, diskGib: 10 }, labels: {}, group: "", requiredHostLabels: {}, forbiddenHostLabels: {}, pinnedHosts: [], image: "", networks: [], volumes: [], onHostFailure: 0 },
  desiredState: DesiredState.DESIRED_STATE_RUNNING,
  hostId: "a",
  generation: 3,
  status: VmStatus.fromPartial({ phase: VmPhase.VM_PHASE_RUNNING }),
  createdAtMs: 0,
  forceStop: false,
  requestId: "",
};
const domain = (state = DomainState.DOMAIN_STATE_RUNNING, generation = 3): Domain => ({ vmId: vm.id, name: "web", state, generation, resources: vm.spec!.resources, fence: false, interfaces: [], volumeIds: [], imageId: "" });
const here = (d: Domain | undefined): MigrationSide => ({ connected: true, fenced: false, domain: d, awayMs: 0 });
const away = (ms = 1000): MigrationSide => ({ connected: false, fenced: false, domain: undefined, awayMs: ms });
const fenced: MigrationSide = { connected: false, fenced: true, domain: undefined, awayMs: 60_000 };

const migration = (phase: MigrationPhase, over: Partial<Migration> = {}): Migration => ({
  id: "m-1",
  vmId: vm.id,
  vmName: "web",
  sourceHost: "a",
  targetHost: "b",
  targetRequested: false,
  phase,
  reason: MigrationReason.MIGRATION_REASON_OPERATOR,
  requestedBy: "operator",
  vmGeneration: 3,
  targetDriver: phase >= MigrationPhase.MIGRATION_PHASE_MIGRATING ? "fake" : "",
  targetUri: phase >= MigrationPhase.MIGRATION_PHASE_MIGRATING ? "fake:///b" : "",
  createdAtMs: NOW - 10_000,
  startedAtMs: NOW - 5_000,
  phaseSinceMs: NOW - 1_000,
  finishedAtMs: 0,
  deadlineAtMs: NOW + 100_000,
  progress: undefined,
  lowestRemainingBytes: 0,
  lowestRemainingAtMs: 0,
  message: "",
  errorCode: "",
  dataEstimateBytes: 2 ** 30,
  abortRequested: false,
  requestId: "",
  ...over,
});

const observe = (over: Partial<MigrationObservation> = {}): MigrationObservation => ({
  nowMs: NOW,
  vm,
  source: here(domain()),
  target: here(undefined),
  results: { source: {}, target: {} },
  progressTimeoutMs: 150_000,
  targetAwayLimitMs: 30_000,
  ...over,
});

describe("stepMigration", () => {
  it("PREPARING: asks the target to prepare, then moves to MIGRATING with its address", () => {
    const m = migration(MigrationPhase.MIGRATION_PHASE_PREPARING);
    const first = stepMigration(m, observe());
    expect(first.patch).toBeUndefined();
    expect(first.commands).toEqual([{ side: "target", action: { $case: "prepareMigration", value: { name: "web", resources: vm.spec!.resources, fence: false } } }]);
    const next = stepMigration(m, observe({ results: { source: {}, target: { prepareMigration: { action: "prepareMigration", ok: true, code: "", message: "", target: { driver: "fake", uri: "fake:///b" } } } } }));
    expect(next.patch).toMatchObject({ phase: MigrationPhase.MIGRATION_PHASE_MIGRATING, targetDriver: "fake", targetUri: "fake:///b" });
    expect(next.commands).toEqual([]);
  });

  it("PREPARING: the target's prepare carries the VM's devices (image, NICs, seed, volumes); devices that cannot be made abort it", () => {
    const devices = {
      image: { id: "img-1", name: "debian-12", source: "/srv/d.qcow2", format: "qcow2", sha256: "" },
      nics: [{ network: "default", mac: "52:54:00:00:00:01" }],
      cloudInit: { instanceId: vm.id, hostname: "web", sshAuthorizedKeys: [], userData: "" },
      volumes: [{ id: "vol-1", name: "data", sizeGib: 5 }],
    };
    const step = stepMigration(migration(MigrationPhase.MIGRATION_PHASE_PREPARING), observe({ devices }));
    expect(step.commands).toEqual([{ side: "target", action: { $case: "prepareMigration", value: { name: "web", resources: vm.spec!.resources, fence: false, devices } } }]);
    const refused = stepMigration(migration(MigrationPhase.MIGRATION_PHASE_PREPARING), observe({ devices: { refused: "image 'debian-12' is no longer in the catalog" } }));
    expect(refused.patch).toMatchObject({ phase: MigrationPhase.MIGRATION_PHASE_ABORTING, message: "its devices cannot be made: image 'debian-12' is no longer in the catalog" });
  });
  it("PREPARING: a failed prepare rolls back with the target's error", () => {
    const step = stepMigration(migration(MigrationPhase.MIGRATION_PHASE_PREPARING), observe({ results: { source: {}, target: { prepareMigration: { action: "prepareMigration", ok: false, code: "RESOURCE_EXHAUSTED", message: "no room" } } } }));
    expect(step.patch).toMatchObject({ phase: MigrationPhase.MIGRATION_PHASE_ABORTING, errorCode: "RESOURCE_EXHAUSTED" });
    expect(step.patch?.message).toContain("no room");
  });

  it("PREPARING: waits for a briefly absent target, gives up on one away too long", () => {
    const m = migration(MigrationPhase.MIGRATION_PHASE_PREPARING);
    expect(stepMigration(m, observe({ target: away(1000) }))).toEqual({ commands: [], why: "" });
    expect(stepMigration(m, observe({ target: away(30_000) })).patch?.phase).toBe(MigrationPhase.MIGRATION_PHASE_ABORTING);
  });

  it("MIGRATING: sends migrate_out within the deadline; a source without the domain means FINISHING", () => {
    const m = migration(MigrationPhase.MIGRATION_PHASE_MIGRATING);
    const step = stepMigration(m, observe());
    expect(step.commands).toEqual([{ side: "source", action: { $case: "migrateOut", value: { targetDriver: "fake", targetUri: "fake:///b", timeoutMs: 100_000 } } }]);
    expect(stepMigration(m, observe({ source: here(undefined) })).patch?.phase).toBe(MigrationPhase.MIGRATION_PHASE_FINISHING);
  });

  it("MIGRATING: a failure with the domain still at the source rolls back", () => {
    const step = stepMigration(migration(MigrationPhase.MIGRATION_PHASE_MIGRATING), observe({ results: { source: { migrateOut: { action: "migrateOut", ok: false, code: "DEADLINE_EXCEEDED", message: "too slow" } }, target: {} } }));
    expect(step.patch?.phase).toBe(MigrationPhase.MIGRATION_PHASE_ABORTING);
  });

  it("MIGRATING: waits (sends nothing) while the source is disconnected: its answer decides", () => {
    expect(stepMigration(migration(MigrationPhase.MIGRATION_PHASE_MIGRATING), observe({ source: away() }))).toEqual({ commands: [], why: "" });
  });

  it("MIGRATING: aborts on an operator's word, a desired-state change, the deadline, or stalled progress", () => {
    const abort = (m: Migration, o: Partial<MigrationObservation> = {}): MigrationPhase | undefined => stepMigration(m, observe(o)).patch?.phase;
    const A = MigrationPhase.MIGRATION_PHASE_ABORTING;
    expect(abort(migration(MigrationPhase.MIGRATION_PHASE_MIGRATING, { abortRequested: true }))).toBe(A);
    expect(abort(migration(MigrationPhase.MIGRATION_PHASE_MIGRATING), { vm: { ...vm, generation: 4, desiredState: DesiredState.DESIRED_STATE_STOPPED } })).toBe(A);
    expect(abort(migration(MigrationPhase.MIGRATION_PHASE_MIGRATING, { deadlineAtMs: NOW }))).toBe(A);
    expect(abort(migration(MigrationPhase.MIGRATION_PHASE_MIGRATING, { lowestRemainingAtMs: NOW - 150_000, lowestRemainingBytes: 5 }))).toBe(A);
    expect(abort(migration(MigrationPhase.MIGRATION_PHASE_MIGRATING, { lowestRemainingAtMs: NOW - 149_000, lowestRemainingBytes: 5 }))).toBeUndefined();
  });

  it("MIGRATING: a fenced source with the domain on the target finishes; without it, rolls back", () => {
    const m = migration(MigrationPhase.MIGRATION_PHASE_MIGRATING);
    expect(stepMigration(m, observe({ source: fenced, target: here(domain()) })).patch?.phase).toBe(MigrationPhase.MIGRATION_PHASE_FINISHING);
    expect(stepMigration(m, observe({ source: fenced, target: here(undefined) })).patch?.phase).toBe(MigrationPhase.MIGRATION_PHASE_ABORTING);
  });

  it("FINISHING: asks the target to finish; completes once the target runs it at the generation", () => {
    const m = migration(MigrationPhase.MIGRATION_PHASE_FINISHING);
    expect(stepMigration(m, observe({ source: here(undefined) })).commands).toEqual([{ side: "target", action: { $case: "finishMigration", value: {} } }]);
    expect(stepMigration(m, observe({ source: here(undefined), target: here(domain()) })).complete).toBe(true);
  });

  it("FINISHING: never rolls back past the switchover, even with the target away or an abort asked", () => {
    const m = migration(MigrationPhase.MIGRATION_PHASE_FINISHING, { abortRequested: true, deadlineAtMs: NOW - 1 });
    const step = stepMigration(m, observe({ source: here(undefined), target: away(600_000) }));
    expect(step.patch).toBeUndefined();
    expect(step.complete).toBeUndefined();
  });

  it("FINISHING: 'nothing arrived' while the source still runs it rolls back; on neither host it fails loudly", () => {
    const m = migration(MigrationPhase.MIGRATION_PHASE_FINISHING);
    const notFound = { source: {}, target: { finishMigration: { action: "finishMigration" as const, ok: false, code: "NOT_FOUND", message: "nothing arrived" } } };
    expect(stepMigration(m, observe({ results: notFound })).patch?.phase).toBe(MigrationPhase.MIGRATION_PHASE_ABORTING);
    const lost = stepMigration(m, observe({ source: here(undefined), results: notFound }));
    expect(lost.patch?.phase).toBe(MigrationPhase.MIGRATION_PHASE_FAILED);
    expect(lost.patch?.message).toContain("neither host");
  });

  it("ABORTING: cancels at the source and cleans the target, then FAILED with the VM at the source", () => {
    const m = migration(MigrationPhase.MIGRATION_PHASE_ABORTING, { message: "aborted by an operator" });
    const first = stepMigration(m, observe());
    expect(first.commands.map((c) => `${c.side}:${c.action.$case}`)).toEqual(["source:abortMigration", "target:abortMigration"]);
    const acked = { source: { abortMigration: { action: "abortMigration" as const, ok: true, code: "", message: "" } }, target: { abortMigration: { action: "abortMigration" as const, ok: true, code: "", message: "" } } };
    const done = stepMigration(m, observe({ results: acked }));
    expect(done.patch).toMatchObject({ phase: MigrationPhase.MIGRATION_PHASE_FAILED, message: "aborted by an operator" });
  });

  it("ABORTING: a domain that reached the target (gone from the source) is finished, never discarded", () => {
    const m = migration(MigrationPhase.MIGRATION_PHASE_ABORTING);
    expect(stepMigration(m, observe({ source: here(undefined), target: here(domain()) })).patch?.phase).toBe(MigrationPhase.MIGRATION_PHASE_FINISHING);
    // Still in transit (neither lists it): the target is asked to finish it.
    expect(stepMigration(m, observe({ source: here(undefined), target: here(undefined) })).patch?.phase).toBe(MigrationPhase.MIGRATION_PHASE_FINISHING);
  });

  it("ABORTING: does not end while the source is away and not fenced (a job may still run there)", () => {
    const m = migration(MigrationPhase.MIGRATION_PHASE_ABORTING);
    const acked = { source: {}, target: { abortMigration: { action: "abortMigration" as const, ok: true, code: "", message: "" } } };
    expect(stepMigration(m, observe({ source: away(), results: acked })).patch).toBeUndefined();
    expect(stepMigration(m, observe({ source: fenced, results: acked })).patch?.phase).toBe(MigrationPhase.MIGRATION_PHASE_FAILED);
  });
});

describe("admitMigrations", () => {
  const pending = (name: string, source: string, reason: MigrationReason, createdAtMs: number): Migration =>
    migration(MigrationPhase.MIGRATION_PHASE_PENDING, { id: name, vmName: name, sourceHost: source, targetHost: "", reason, createdAtMs });

  it("admits by priority (drain, operator, rebalance) then age, within the cluster and per-host limits", () => {
    const all = [
      pending("r1", "h1", MigrationReason.MIGRATION_REASON_REBALANCE, 1),
      pending("o1", "h1", MigrationReason.MIGRATION_REASON_OPERATOR, 2),
      pending("d1", "h1", MigrationReason.MIGRATION_REASON_DRAIN, 3),
      pending("d2", "h1", MigrationReason.MIGRATION_REASON_DRAIN, 4),
      pending("d3", "h1", MigrationReason.MIGRATION_REASON_DRAIN, 5),
      pending("o2", "h2", MigrationReason.MIGRATION_REASON_OPERATOR, 6),
    ];
    const admitted = admitMigrations(all, { parallel: 5, outboundPerHost: 2 }, () => true).map((m) => m.vmName);
    expect(admitted).toEqual(["d1", "d2", "o2"]);
  });

  it("counts migrations already in flight against both limits", () => {
    const all = [
      migration(MigrationPhase.MIGRATION_PHASE_MIGRATING, { id: "x", vmName: "x", sourceHost: "h1" }),
      migration(MigrationPhase.MIGRATION_PHASE_COMPLETED, { id: "y", vmName: "y", sourceHost: "h1" }),
      pending("a", "h1", MigrationReason.MIGRATION_REASON_OPERATOR, 1),
      pending("b", "h1", MigrationReason.MIGRATION_REASON_OPERATOR, 2),
      pending("c", "h2", MigrationReason.MIGRATION_REASON_OPERATOR, 3),
    ];
    expect(admitMigrations(all, { parallel: 2, outboundPerHost: 2 }, () => true).map((m) => m.vmName)).toEqual(["a"]);
    expect(admitMigrations(all, { parallel: 5, outboundPerHost: 2 }, (m) => m.vmName !== "a").map((m) => m.vmName)).toEqual(["b", "c"]);
  });
});

describe("deadlines and progress", () => {
  it("allows 150 s per GiB of memory and disk by default, at least one GiB's worth", () => {
    expect(migrationDeadline(vm, 0, 150_000)).toBe(150_000 * 11);
    const tiny = { ...vm, spec: { ...vm.spec!, resources: { vcpus: 1, memoryMib: 256, diskGib: 0 } } };
    expect(migrationDeadline(tiny, 0, 150_000)).toBe(150_000);
  });

  it("keeps the lowest data remaining and when it was reached", () => {
    let m = migration(MigrationPhase.MIGRATION_PHASE_MIGRATING);
    m = { ...m, ...withProgress(m, 100, 1) };
    m = { ...m, ...withProgress(m, 50, 2) };
    m = { ...m, ...withProgress(m, 80, 3) };
    expect([m.lowestRemainingBytes, m.lowestRemainingAtMs]).toEqual([50, 2]);
  });
});
