import { DesiredState, DomainState, MigrationPhase, MigrationReason, type Domain, type DomainDevices, type Migration, type Vm } from "@berth/api";
import type { DomainAction } from "./reconcile.js";

// The live-migration protocol as pure decisions: what the next phase is and which host is told
// what, from the record, the VM, and what each host reports. The migration manager owns the I/O.
// The rule behind every decision after a crash or a lost answer (Nova's `find_job_type`, and the
// lesson of kubevirt#13112): the outcome is decided by where the domain actually is. A domain
// that has left its source is never rolled back and never discarded.

/** What the controller knows of one end of a migration now. */
export interface MigrationSide {
  /** The host's agent stream is live (its inventory is current). */
  connected: boolean;
  /** The host is FENCED: known not to run what it ran (or confirmed down). */
  fenced: boolean;
  /** The VM's domain as the host last reported it; undefined when it has none. */
  domain: Domain | undefined;
  /** How long the host has been disconnected (0 while connected). */
  awayMs: number;
}

/** The last answer of one side to one of the migration's commands. */
export interface MigrationResult {
  action: MigrationAction;
  ok: boolean;
  code: string;
  message: string;
  /** prepare_migration: where the target receives the domain. */
  target?: { driver: string; uri: string };
}

export type MigrationAction = "prepareMigration" | "migrateOut" | "finishMigration" | "abortMigration";

/** Everything `stepMigration` decides from. */
export interface MigrationObservation {
  nowMs: number;
  /** The VM's record (by id); undefined when it is gone. */
  vm: Vm | undefined;
  source: MigrationSide;
  target: MigrationSide;
  /** The latest answers to this migration's commands, by side and action. */
  results: {
    source: Partial<Record<MigrationAction, MigrationResult>>;
    target: Partial<Record<MigrationAction, MigrationResult>>;
  };
  /** Abort when the data remaining has made no new low for this long. */
  progressTimeoutMs: number;
  /** A target away this long during PREPARING or ABORTING is given up on. */
  targetAwayLimitMs: number;
  /**
   * The VM's devices as its domain has them (image, NICs, seed, volumes: reconcile's
   * `domainDevices`), which the target's prepare_migration carries; or why they cannot be made
   * (a reason to abort before the switchover).
   */
  devices?: DomainDevices | { refused: string };
}

/** A command for one end of a migration. */
export interface MigrationCommand {
  side: "source" | "target";
  action: DomainAction;
  /** For migrate_out: the time it may take. */
  timeoutMs?: number;
}

/**
 * The decision for one migration now: a change of the record to write first (`patch`, which may
 * end the migration), or commands to send (idempotent, resent while the phase lasts), or nothing.
 * `complete` asks for the switch of the VM's record to the target together with COMPLETED.
 */
export interface MigrationStep {
  patch?: Partial<Migration>;
  complete?: boolean;
  commands: MigrationCommand[];
  /** Why, in one line, for logs (empty when nothing changes). */
  why: string;
}

const WAIT: MigrationStep = Object.freeze({ commands: [], why: "" }) as MigrationStep;

const running = (d: Domain | undefined): boolean => d !== undefined && (d.state === DomainState.DOMAIN_STATE_RUNNING || d.state === DomainState.DOMAIN_STATE_PAUSED);

function toPhase(phase: MigrationPhase, nowMs: number, why: string, extra: Partial<Migration> = {}): MigrationStep {
  const patch: Partial<Migration> = { phase, phaseSinceMs: nowMs, ...extra };
  if (phase === MigrationPhase.MIGRATION_PHASE_ABORTING || phase === MigrationPhase.MIGRATION_PHASE_FAILED) {
    patch.message = extra.message ?? why;
  }
  if (phase === MigrationPhase.MIGRATION_PHASE_FAILED || phase === MigrationPhase.MIGRATION_PHASE_COMPLETED) patch.finishedAtMs = nowMs;
  return { patch, commands: [], why };
}

/** Why a migration that has not switched over yet must be rolled back now, or undefined. */
function reasonToAbort(m: Migration, o: MigrationObservation): string | undefined {
  const vm = o.vm;
  if (!vm) return "the VM's record is gone";
  if (m.abortRequested) return "aborted by an operator";
  if (o.devices && "refused" in o.devices) return `its devices cannot be made: ${o.devices.refused}`;
  if (vm.generation !== m.vmGeneration || vm.desiredState !== DesiredState.DESIRED_STATE_RUNNING) return "the VM's desired state changed";
  if (m.deadlineAtMs > 0 && o.nowMs >= m.deadlineAtMs) return `past its deadline (${Math.round((m.deadlineAtMs - m.startedAtMs) / 1000)} s for its size)`;
  if (
    m.phase === MigrationPhase.MIGRATION_PHASE_MIGRATING &&
    m.lowestRemainingAtMs > 0 &&
    o.nowMs - m.lowestRemainingAtMs >= o.progressTimeoutMs
  ) {
    return `no progress for ${Math.round(o.progressTimeoutMs / 1000)} s (data remaining stuck at ${m.lowestRemainingBytes} bytes)`;
  }
  return undefined;
}

/**
 * One step of a migration that is admitted (PREPARING, MIGRATING, FINISHING, ABORTING); PENDING,
 * COMPLETED and FAILED migrations are not stepped (admission is `admitMigrations`). Pure.
 *
 * - PREPARING: the target prepares; its answer moves to MIGRATING (with its address) or ABORTING.
 * - MIGRATING: the source migrates out; once the source no longer has the domain (its answer, or
 *   its report) → FINISHING. A failure with the domain still at the source → ABORTING.
 * - FINISHING: the target makes the domain persistent and running → `complete`. Never rolled back:
 *   the domain has left the source. Only "nothing arrived" while the source still runs it aborts.
 * - ABORTING: the source's job is cancelled and the target's preparation removed → FAILED; but a
 *   domain found on the target and not on the source goes to FINISHING instead.
 * Aborts (operator, desired state changed, deadline, stalled progress) apply before the switchover.
 */
export function stepMigration(m: Migration, o: MigrationObservation): MigrationStep {
  const { source: s, target: t, nowMs } = o;
  const gone = s.connected && s.domain === undefined;
  switch (m.phase) {
    case MigrationPhase.MIGRATION_PHASE_PREPARING: {
      const abort = reasonToAbort(m, o);
      if (abort) return toPhase(MigrationPhase.MIGRATION_PHASE_ABORTING, nowMs, abort);
      if (s.connected && !running(s.domain)) return toPhase(MigrationPhase.MIGRATION_PHASE_ABORTING, nowMs, "the VM is not running on its source");
      if (t.fenced || (!t.connected && t.awayMs >= o.targetAwayLimitMs)) return toPhase(MigrationPhase.MIGRATION_PHASE_ABORTING, nowMs, "the target host is not connected");
      const r = o.results.target.prepareMigration;
      if (r?.ok && r.target) {
        return toPhase(MigrationPhase.MIGRATION_PHASE_MIGRATING, nowMs, "target prepared", { targetDriver: r.target.driver, targetUri: r.target.uri, lowestRemainingAtMs: nowMs, lowestRemainingBytes: m.dataEstimateBytes });
      }
      if (r && !r.ok) return toPhase(MigrationPhase.MIGRATION_PHASE_ABORTING, nowMs, `the target could not prepare: ${r.code}: ${r.message}`, { errorCode: r.code });
      if (!t.connected || !o.vm?.spec?.resources) return WAIT;
      const spec = o.vm.spec;
      return {
        commands: [{ side: "target", action: { $case: "prepareMigration", value: { name: spec.name, resources: spec.resources!, fence: t.domain?.fence ?? fenceOf(o), devices: devicesOf(o) } } }],
        why: "",
      };
    }
    case MigrationPhase.MIGRATION_PHASE_MIGRATING: {
      // The domain has left the source: whatever else happened, it is the target's now.
      if (gone) return toPhase(MigrationPhase.MIGRATION_PHASE_FINISHING, nowMs, "the domain has left the source");
      if (o.results.source.migrateOut?.ok) return toPhase(MigrationPhase.MIGRATION_PHASE_FINISHING, nowMs, "the source migrated it out");
      if (s.fenced) {
        // The source is off. If the domain made it to the target, finish there; else roll back.
        return running(t.domain)
          ? toPhase(MigrationPhase.MIGRATION_PHASE_FINISHING, nowMs, "the source was fenced after the switchover")
          : toPhase(MigrationPhase.MIGRATION_PHASE_ABORTING, nowMs, "the source host was fenced during the migration");
      }
      const r = o.results.source.migrateOut;
      if (r && !r.ok && s.connected && s.domain !== undefined) {
        return toPhase(MigrationPhase.MIGRATION_PHASE_ABORTING, nowMs, `the source could not migrate it: ${r.code}: ${r.message}`, { errorCode: r.code });
      }
      const abort = reasonToAbort(m, o);
      if (abort) return toPhase(MigrationPhase.MIGRATION_PHASE_ABORTING, nowMs, abort);
      if (t.fenced) return toPhase(MigrationPhase.MIGRATION_PHASE_ABORTING, nowMs, "the target host was fenced during the migration");
      if (!s.connected) return WAIT; // its answer decides; nothing can be known meanwhile
      return {
        commands: [
          {
            side: "source",
            action: { $case: "migrateOut", value: { targetDriver: m.targetDriver, targetUri: m.targetUri, timeoutMs: Math.max(1, Math.min(2 ** 31 - 1, m.deadlineAtMs - nowMs)) } },
          },
        ],
        why: "",
      };
    }
    case MigrationPhase.MIGRATION_PHASE_FINISHING: {
      const gen = m.vmGeneration;
      // The domain left the source and its new host was fenced: it is there (off, or running if
      // it never got the fence): record it there, and the host's failure handling takes over.
      if (t.fenced) return { complete: true, commands: [], why: "the target was fenced after the switchover: the VM is recorded there" };
      if (t.connected && running(t.domain) && t.domain!.generation >= gen) return { complete: true, commands: [], why: "the target runs it" };
      const r = o.results.target.finishMigration;
      if (r?.ok && t.connected && running(t.domain)) return { complete: true, commands: [], why: "the target finished it" };
      if (r && !r.ok && r.code === "NOT_FOUND" && s.connected && running(s.domain)) {
        // Nothing arrived and the source still runs it: the switchover never happened.
        return toPhase(MigrationPhase.MIGRATION_PHASE_ABORTING, nowMs, "nothing arrived at the target; the source still runs it");
      }
      if (r && !r.ok && r.code === "NOT_FOUND" && s.connected && s.domain === undefined && t.connected && t.domain === undefined) {
        return toPhase(MigrationPhase.MIGRATION_PHASE_FAILED, nowMs, "the domain is on neither host: it was lost in the migration", { errorCode: r.code });
      }
      if (!t.connected) return WAIT; // the domain is only there: wait for the host, never give up
      return { commands: [{ side: "target", action: { $case: "finishMigration", value: {} } }], why: "" };
    }
    case MigrationPhase.MIGRATION_PHASE_ABORTING: {
      // Past MIGRATING a migrate_out may have run (or may still run, after a leader change).
      const migrated = m.targetUri !== "";
      const src = o.results.source;
      // The switchover happened after all: the domain has left the source. Only the target can
      // take it on (FINISHING decides if nothing arrived).
      if (migrated && t.connected && (gone || (s.fenced && t.domain !== undefined))) {
        return toPhase(MigrationPhase.MIGRATION_PHASE_FINISHING, nowMs, "the domain left the source before the abort", { message: "" });
      }
      const commands: MigrationCommand[] = [];
      // The source's job is cancelled and the source confirms it still has the domain (the abort's
      // answer carries the domain as it is after the abort, so a job that won the race shows).
      const sourceDone = s.fenced || !migrated || (s.connected && s.domain !== undefined && (src.abortMigration?.ok === true || (src.migrateOut !== undefined && !src.migrateOut.ok)));
      if (migrated && s.connected && s.domain !== undefined && !sourceDone) commands.push({ side: "source", action: { $case: "abortMigration", value: {} } });
      const targetDone = t.fenced || (!t.connected && t.awayMs >= o.targetAwayLimitMs) || o.results.target.abortMigration?.ok === true;
      if (t.connected && !targetDone) commands.push({ side: "target", action: { $case: "abortMigration", value: {} } });
      if (sourceDone && targetDone) return toPhase(MigrationPhase.MIGRATION_PHASE_FAILED, nowMs, m.message || "rolled back", { message: m.message || "rolled back" });
      return { commands, why: "" };
    }
    default:
      return WAIT;
  }
}

/** Whether the VM's domain is created for fencing (its on_host_failure is RESTART), as the source has it. */
function fenceOf(o: MigrationObservation): boolean {
  return o.source.domain?.fence ?? false;
}

/** Queue order: drain first, then operator, then rebalance; oldest first within one. */
export function migrationPriority(reason: MigrationReason): number {
  switch (reason) {
    case MigrationReason.MIGRATION_REASON_DRAIN:
      return 0;
    case MigrationReason.MIGRATION_REASON_OPERATOR:
      return 1;
    default:
      return 2;
  }
}

/** How many migrations may run at once. */
export interface MigrationLimits {
  /** In flight in the cluster (KubeVirt: 5). */
  parallel: number;
  /** Outbound in flight per source host (KubeVirt: 2). */
  outboundPerHost: number;
}

/**
 * The PENDING migrations to admit now, in order: by priority (drain > operator > rebalance), then
 * age, while the cluster and each source host have slots. Over-limit migrations stay queued, not
 * refused. `eligible` says whether one may start at all now (its VM settled, its hosts connected).
 * Pure.
 */
export function admitMigrations(all: readonly Migration[], limits: MigrationLimits, eligible: (m: Migration) => boolean): Migration[] {
  let inFlight = 0;
  const outbound = new Map<string, number>();
  const pending: Migration[] = [];
  for (const m of all) {
    if (m.phase === MigrationPhase.MIGRATION_PHASE_PENDING) pending.push(m);
    else if (m.phase !== MigrationPhase.MIGRATION_PHASE_COMPLETED && m.phase !== MigrationPhase.MIGRATION_PHASE_FAILED) {
      inFlight++;
      outbound.set(m.sourceHost, (outbound.get(m.sourceHost) ?? 0) + 1);
    }
  }
  pending.sort((a, b) => migrationPriority(a.reason) - migrationPriority(b.reason) || a.createdAtMs - b.createdAtMs || (a.vmName < b.vmName ? -1 : 1));
  const admitted: Migration[] = [];
  for (const m of pending) {
    if (inFlight >= limits.parallel) break;
    if ((outbound.get(m.sourceHost) ?? 0) >= limits.outboundPerHost) continue;
    if (!eligible(m)) continue;
    admitted.push(m);
    inFlight++;
    outbound.set(m.sourceHost, (outbound.get(m.sourceHost) ?? 0) + 1);
  }
  return admitted;
}

/**
 * The deadline of a migration of `vm` started at `nowMs`: KubeVirt's completionTimeoutPerGiB × the
 * GiB it may move (memory plus disk, as a local disk is copied), at least one GiB's worth.
 */
export function migrationDeadline(vm: Vm, nowMs: number, perGiBMs: number): number {
  const r = vm.spec?.resources;
  const gib = (r?.memoryMib ?? 0) / 1024 + (r?.diskGib ?? 0);
  return nowMs + Math.round(perGiBMs * Math.max(1, gib));
}

/** Bytes a migration of `vm` moves, for the record's estimate (memory plus disk). */
export function migrationDataEstimate(vm: Vm): number {
  const r = vm.spec?.resources;
  return (r?.memoryMib ?? 0) * 2 ** 20 + (r?.diskGib ?? 0) * 2 ** 30;
}

/** The record's progress fields after a report: the lowest data remaining and when it was reached. */
export function withProgress(m: Migration, remainingBytes: number, nowMs: number): Pick<Migration, "lowestRemainingBytes" | "lowestRemainingAtMs"> {
  if (m.lowestRemainingAtMs === 0 || remainingBytes < m.lowestRemainingBytes) return { lowestRemainingBytes: remainingBytes, lowestRemainingAtMs: nowMs };
  return { lowestRemainingBytes: m.lowestRemainingBytes, lowestRemainingAtMs: m.lowestRemainingAtMs };
}

export const PHASE_NAMES: Record<MigrationPhase, string> = {
  [MigrationPhase.MIGRATION_PHASE_UNSPECIFIED]: "unspecified",
  [MigrationPhase.MIGRATION_PHASE_PENDING]: "pending",
  [MigrationPhase.MIGRATION_PHASE_PREPARING]: "preparing",
  [MigrationPhase.MIGRATION_PHASE_MIGRATING]: "migrating",
  [MigrationPhase.MIGRATION_PHASE_FINISHING]: "finishing",
  [MigrationPhase.MIGRATION_PHASE_COMPLETED]: "completed",
  [MigrationPhase.MIGRATION_PHASE_ABORTING]: "aborting",
  [MigrationPhase.MIGRATION_PHASE_FAILED]: "failed",
};

/** The devices the target prepares (unset when the observation has none: a blank disk, no NICs). */
function devicesOf(o: MigrationObservation): DomainDevices | undefined {
  return o.devices && !("refused" in o.devices) ? o.devices : undefined;
}
