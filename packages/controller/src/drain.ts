import {
  DesiredState,
  DrainDeadlineAction,
  DrainPhase,
  MigrationPhase,
  MigrationReason,
  type DrainStatus,
  type Migration,
  type Vm,
} from "@berth/api";

// A drain as pure decisions: which of the host's VMs to migrate now, which to stop or leave at the
// deadline, and when the drain is over. The migration manager applies them.

/** Attempts per VM before a drain counts it as failed (each a new, one-shot migration). */
export const DRAIN_ATTEMPTS = 3;

/** What `planDrain` needs to know of one VM on the draining host. */
export interface DrainVm {
  vm: Vm;
  /** The VM's last migration (active or finished), if any. */
  migration: Migration | undefined;
  /** Migrations this drain has started for the VM (this leader's count). */
  attempts: number;
}

/** What to do for a drain now. */
export interface DrainStep {
  /** VMs to migrate away (new migrations, reason DRAIN). */
  migrate: Vm[];
  /** At the deadline with `on_deadline: stop`: VMs to stop where they are. */
  stop: Vm[];
  /** At the deadline: pending migrations of this drain to fail (they would start too late). */
  cancel: Migration[];
  /** The drain's status to record when it changes (phase, finish time, message); else undefined. */
  status: DrainStatus | undefined;
  /** Live figures for the operator's view. */
  figures: Pick<DrainStatus, "toMove" | "moved" | "inFlight" | "failed" | "staying">;
}

const wantsToRun = (vm: Vm): boolean => vm.desiredState === DesiredState.DESIRED_STATE_RUNNING;
const ended = (m: Migration): boolean => m.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED || m.phase === MigrationPhase.MIGRATION_PHASE_FAILED;
const ofThisDrain = (m: Migration | undefined, hostId: string, drain: DrainStatus): m is Migration =>
  m !== undefined && m.reason === MigrationReason.MIGRATION_REASON_DRAIN && m.sourceHost === hostId && m.createdAtMs >= drain.requestedAtMs;

/**
 * One step of the drain of `hostId`. Running VMs (desired RUNNING) are migrated away, each retried
 * as a new migration up to {@link DRAIN_ATTEMPTS} times; stopped VMs stay (their disks are local)
 * and do not hold the drain up. The drain is DRAINED once no VM that should run is left on the host
 * and nothing is in flight from it. At the deadline, the VMs still there are stopped (`stop`) or
 * left running (`leave`), pending migrations are cancelled, and the drain ends INCOMPLETE. Pure.
 */
export function planDrain(hostId: string, drain: DrainStatus, onHost: readonly DrainVm[], movedAway: number, nowMs: number): DrainStep {
  const step: DrainStep = { migrate: [], stop: [], cancel: [], status: undefined, figures: { toMove: 0, moved: movedAway, inFlight: 0, failed: 0, staying: 0 } };
  const f = step.figures;
  if (drain.phase !== DrainPhase.DRAIN_PHASE_DRAINING) {
    // Ended: the figures only (moved out of all there were to move).
    for (const { vm } of onHost) {
      if (vm.desiredState === DesiredState.DESIRED_STATE_DELETED) continue;
      if (wantsToRun(vm)) f.toMove++;
      else f.staying++;
    }
    f.toMove += movedAway;
    return step;
  }
  const pastDeadline = drain.deadlineAtMs > 0 && nowMs >= drain.deadlineAtMs;
  const left: DrainVm[] = [];
  for (const entry of onHost) {
    const { vm, migration } = entry;
    if (vm.desiredState === DesiredState.DESIRED_STATE_DELETED) continue;
    if (!wantsToRun(vm)) {
      f.staying++;
      continue;
    }
    f.toMove++;
    left.push(entry);
    const mine = ofThisDrain(migration, hostId, drain) ? migration : undefined;
    if (mine && !ended(mine)) {
      if (mine.phase === MigrationPhase.MIGRATION_PHASE_PENDING && pastDeadline) step.cancel.push(mine);
      else f.inFlight++;
      continue;
    }
    if (migration && !ended(migration)) {
      f.inFlight++; // another reason's migration is moving it away already
      continue;
    }
    if (entry.attempts >= DRAIN_ATTEMPTS) {
      f.failed++;
      continue;
    }
    if (!pastDeadline) step.migrate.push(vm);
  }
  f.toMove += movedAway;
  if (left.length === 0) {
    step.status = { ...drain, phase: DrainPhase.DRAIN_PHASE_DRAINED, finishedAtMs: nowMs, message: "" };
    return step;
  }
  // At the deadline: nothing new starts; what is in flight finishes (it cannot be taken back
  // safely past the switchover), the rest is stopped or left as the operator chose.
  const inFlight = left.filter(({ migration }) => migration !== undefined && !ended(migration) && migration.phase !== MigrationPhase.MIGRATION_PHASE_PENDING);
  const stuck = left.filter((e) => e.attempts >= DRAIN_ATTEMPTS && !(e.migration && !ended(e.migration)));
  if (!pastDeadline && stuck.length === left.length) {
    const names = stuck.map((e) => e.vm.spec?.name ?? e.vm.id);
    step.status = {
      ...drain,
      phase: DrainPhase.DRAIN_PHASE_INCOMPLETE,
      finishedAtMs: nowMs,
      message: `${stuck.length} VM(s) could not be moved after ${DRAIN_ATTEMPTS} attempts each (${names.slice(0, 5).join(", ")}${names.length > 5 ? ", …" : ""}); they stay running here (see 'berth migration show NAME')`,
    };
    return step;
  }
  if (pastDeadline && inFlight.length === 0) {
    const stay = left.filter((e) => !inFlight.includes(e));
    const names = stay.map((e) => e.vm.spec?.name ?? e.vm.id);
    const shown = names.slice(0, 5).join(", ") + (names.length > 5 ? `, and ${names.length - 5} more` : "");
    const stopping = drain.onDeadline === DrainDeadlineAction.DRAIN_DEADLINE_ACTION_STOP;
    if (stopping) step.stop.push(...stay.map((e) => e.vm));
    step.status = {
      ...drain,
      phase: DrainPhase.DRAIN_PHASE_INCOMPLETE,
      finishedAtMs: nowMs,
      message: `deadline passed with ${stay.length} VM(s) not moved (${shown}): ${stopping ? "stopped where they are" : "left running where they are"}`,
    };
  }
  return step;
}
