import { randomUUID } from "node:crypto";
import {
  DesiredState,
  DomainState,
  DrainDeadlineAction,
  DrainPhase,
  HostState,
  MigrationPhase,
  MigrationReason,
  VmPhase,
  VmStatus,
  type CommandResult,
  type DrainStatus,
  type Host,
  type Migration,
  type MigrationConfig,
  type MigrationProgressReport,
  type Vm,
} from "@berth/api";
import { BerthError, ErrorCode, alreadyExists, invalidArgument, isBerthError, notFound, validateName } from "@berth/core";
import type { ClusterStore, Compare, Op } from "@berth/store";
import type { Logger } from "pino";
import type { AgentSession, InFlight } from "./agent-session.js";
import { holdsTarget, isActiveMigration, type ClusterState } from "./cluster-state.js";
import { DRAIN_ATTEMPTS, planDrain, type DrainVm } from "./drain.js";
import type { FencedWriter } from "./fenced-writer.js";
import type { HostManager } from "./host-manager.js";
import { decodeMigration, encodeGroup, encodeMigration, encodeVm, encodeVolume, Keys } from "./keys.js";
import {
  admitMigrations,
  migrationDataEstimate,
  migrationDeadline,
  PHASE_NAMES,
  stepMigration,
  withProgress,
  type MigrationAction,
  type MigrationResult,
  type MigrationSide,
} from "./migration.js";
import type { Placer } from "./placement.js";
import { setDesiredState } from "./vm-writes.js";
import { domainDevices, isRefusal, type DeviceCatalog } from "./reconcile.js";
import { unexplainedRecord } from "./placement-record.js";
import { waitUpTo } from "./wait.js";

/** Migration limits and timeouts, resolved (see MigrationConfig in the proto). */
export interface ResolvedMigrationConfig {
  parallel: number;
  outboundPerHost: number;
  completionTimeoutPerGiBMs: number;
  progressTimeoutMs: number;
}

/**
 * The cluster's MigrationConfig with KubeVirt's defaults: 5 in the cluster, 2 outbound per host,
 * 150 s per GiB, 150 s without progress. Throws INVALID_ARGUMENT naming the field.
 */
export function resolveMigrationConfig(config: MigrationConfig | undefined, field = "migration"): ResolvedMigrationConfig {
  const c = config ?? { parallelMigrations: 0, outboundPerHost: 0, completionTimeoutPerGibS: 0, progressTimeoutS: 0 };
  const bounded = (v: number, name: string, max: number): void => {
    if (!Number.isSafeInteger(v) || v < 0 || v > max) throw invalidArgument(`${field}.${name}`, `must be a whole number from 1 to ${max} (0 for the default; got ${v})`);
  };
  bounded(c.parallelMigrations, "parallel_migrations", 1000);
  bounded(c.outboundPerHost, "outbound_per_host", 100);
  bounded(c.completionTimeoutPerGibS, "completion_timeout_per_gib_s", 86_400);
  bounded(c.progressTimeoutS, "progress_timeout_s", 86_400);
  return {
    parallel: c.parallelMigrations || 5,
    outboundPerHost: c.outboundPerHost || 2,
    completionTimeoutPerGiBMs: (c.completionTimeoutPerGibS || 150) * 1000,
    progressTimeoutMs: (c.progressTimeoutS || 150) * 1000,
  };
}

export interface MigrationManagerDeps {
  store: ClusterStore;
  state: ClusterState;
  sessions: ReadonlyMap<string, AgentSession>;
  writer: FencedWriter;
  placer: Placer;
  hosts: HostManager;
  /** The epoch commands carry. */
  commandEpoch(): number;
  /** Resend a migration command not answered after this long (migrate_out: its deadline). */
  commandResendMs: number;
  tickMs: number;
  log: Logger;
  now: () => number;
}

/** How a migration is asked for. */
export interface MigrationRequest {
  vmName: string;
  /** Empty: the scheduler chooses at admission. */
  targetHost: string;
  reason: MigrationReason;
  requestedBy: string;
  requestId?: string;
}

/** A target away this long while it prepares (or while a migration is rolled back) is given up on. */
const TARGET_AWAY_LIMIT_MS = 30_000;
/** Progress is written to the record at most this often per migration. */
const PROGRESS_WRITE_MS = 1_000;
/** Finished migrations of VMs that no longer exist are removed after this long. */
const FINISHED_RETENTION_MS = 10 * 60_000;
const MAX_WRITE_ATTEMPTS = 5;

/**
 * The migration protocol's I/O, and the one writer of migration records: requests (operator,
 * drain, rebalance) become PENDING records; each pass admits what the limits allow (choosing the
 * target with the scheduler), steps every admitted migration with `stepMigration` — writing each
 * phase change, fenced, before any agent is told — sends the phase's commands, and completes a
 * migration by moving the VM's record to the target in the same transaction. Drains (`planDrain`)
 * run here too, as they are made of migrations. A new leader picks every record up where it is:
 * commands are idempotent and the outcome follows where the domain is.
 */
export class MigrationManager {
  /** Latest answers per migration id, by side and action (this leader's; lost with it). */
  private readonly results = new Map<string, { source: Partial<Record<MigrationAction, MigrationResult>>; target: Partial<Record<MigrationAction, MigrationResult>> }>();
  /** Progress not yet written, and when each migration's progress was last written. */
  private readonly progress = new Map<string, { report: MigrationProgressReport; writtenAtMs: number }>();
  /** Drain attempts per VM id (migrations a drain started for it). */
  private readonly drainAttempts = new Map<string, { requestedAtMs: number; attempts: number }>();
  /** When a pending migration's target was last looked for in vain, to say why it waits. */
  private readonly waitingWhy = new Map<string, string>();
  private readonly timer: NodeJS.Timeout;
  private passing: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  /** Images and volumes by name, from the cache: what a prepare_migration's devices are made of. */
  private readonly catalog: DeviceCatalog;

  constructor(private readonly deps: MigrationManagerDeps) {
    this.catalog = { image: (name) => deps.state.image(name), volume: (name) => deps.state.volume(name) };
    this.timer = setInterval(() => this.poke(), deps.tickMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.passing;
  }

  /** Asks for a pass soon (coalesced); called on every change of VMs, hosts and migrations. */
  poke(): void {
    if (this.stopped) return;
    if (this.passing) {
      this.again = true;
      return;
    }
    this.passing = new Promise<void>((r) => setImmediate(r))
      .then(() => this.pass())
      .catch((e: unknown) => {
        if (!isBerthError(e, ErrorCode.NotLeader)) this.deps.log.warn({ err: e }, "migration pass failed");
      })
      .finally(() => {
        this.passing = undefined;
        if (this.again) {
          this.again = false;
          this.poke();
        }
      });
  }

  config(): ResolvedMigrationConfig {
    try {
      return resolveMigrationConfig(this.deps.state.clusterConfig()?.migration);
    } catch {
      return resolveMigrationConfig(undefined);
    }
  }

  // ---- requests ------------------------------------------------------------------------------

  /**
   * Records a PENDING migration of the VM. The VM must exist, want to run and run, and have no
   * migration active (FAILED_PRECONDITION otherwise). A requested target is checked now with the
   * scheduler's filters (RESOURCE_EXHAUSTED with the reason when it breaks one); without one, an
   * operator's request is refused when no host could take the VM now, a drain's waits for room.
   * With a request id, a retry returns the migration it made.
   */
  async request(req: MigrationRequest): Promise<Migration> {
    const { state } = this.deps;
    validateName(req.vmName, "name");
    if (req.targetHost !== "") validateName(req.targetHost, "target_host");
    if (req.requestId && !/^[A-Za-z0-9._-]{1,64}$/.test(req.requestId)) {
      throw invalidArgument("request_id", `'${req.requestId.slice(0, 64)}' must be 1-64 characters of letters, digits, '.', '_' or '-'`);
    }
    const prior = state.migration(req.vmName);
    if (req.requestId && prior?.requestId === req.requestId) return prior;
    const vm = state.vm(req.vmName);
    if (!vm) throw notFound(`vm '${req.vmName}'`);
    if (prior && isActiveMigration(prior)) {
      throw new BerthError(ErrorCode.FailedPrecondition, `vm '${req.vmName}' is already migrating (${PHASE_NAMES[prior.phase]}, to ${prior.targetHost || "a host to be chosen"}); see 'berth migration show ${req.vmName}'`);
    }
    if (vm.desiredState !== DesiredState.DESIRED_STATE_RUNNING) {
      throw new BerthError(ErrorCode.FailedPrecondition, `vm '${req.vmName}' is not meant to run (desired state ${DesiredState[vm.desiredState]}); only a running VM is live-migrated`);
    }
    if (vm.status?.phase !== VmPhase.VM_PHASE_RUNNING) {
      throw new BerthError(ErrorCode.FailedPrecondition, `vm '${req.vmName}' is not running now (${VmPhase[vm.status?.phase ?? 0]}); only a running VM is live-migrated`);
    }
    // The target is checked now, so an operator learns at once why it cannot be.
    if (req.targetHost !== "" || req.reason === MigrationReason.MIGRATION_REASON_OPERATOR) {
      this.deps.placer.migrationTarget(vm, req.targetHost);
    }
    const now = this.deps.now();
    const migration: Migration = {
      id: randomUUID(),
      vmId: vm.id,
      vmName: req.vmName,
      sourceHost: vm.hostId,
      targetHost: req.targetHost,
      targetRequested: req.targetHost !== "",
      phase: MigrationPhase.MIGRATION_PHASE_PENDING,
      reason: req.reason,
      requestedBy: req.requestedBy.slice(0, 256),
      vmGeneration: vm.generation,
      targetDriver: "",
      targetUri: "",
      createdAtMs: now,
      startedAtMs: 0,
      phaseSinceMs: now,
      finishedAtMs: 0,
      deadlineAtMs: 0,
      progress: undefined,
      lowestRemainingBytes: 0,
      lowestRemainingAtMs: 0,
      message: "",
      errorCode: "",
      dataEstimateBytes: migrationDataEstimate(vm),
      abortRequested: false,
      requestId: req.requestId ?? "",
    };
    const key = Keys.migration(req.vmName);
    const kv = state.migrationKv(req.vmName);
    const result = await this.deps.writer.commit({
      compare: [kv ? { key, target: "modRevision", equals: kv.modRevision } : { key, target: "createRevision", equals: 0 }],
      ops: [{ type: "put", key, value: encodeMigration(migration) }],
    });
    if (!result.succeeded) {
      const now2 = await this.deps.store.get(key);
      const other = now2 ? decodeMigration(now2.value) : undefined;
      if (other && req.requestId && other.requestId === req.requestId) return other;
      if (other && isActiveMigration(other)) throw alreadyExists(`migration of vm '${req.vmName}'`);
      throw new BerthError(ErrorCode.Conflict, `the migration record of vm '${req.vmName}' changed meanwhile; retry`);
    }
    await waitUpTo(state.migrations.waitForRevision(result.revision), 5_000);
    this.deps.log.info({ vm: req.vmName, migrationId: migration.id, from: vm.hostId, to: req.targetHost || undefined, reason: MigrationReason[req.reason], requestedBy: migration.requestedBy }, "migration requested");
    this.poke();
    return migration;
  }

  /**
   * Asks the migration of `nameOrId` (a VM name or a migration id) to stop: a pending one fails at
   * once; one in flight is rolled back by its next step unless its domain has already left the
   * source (then it completes). NOT_FOUND; FAILED_PRECONDITION when it has already ended.
   */
  async abort(nameOrId: string): Promise<Migration> {
    const m = this.find(nameOrId);
    if (!isActiveMigration(m)) throw new BerthError(ErrorCode.FailedPrecondition, `the migration of vm '${m.vmName}' has already ended (${PHASE_NAMES[m.phase]})`);
    const now = this.deps.now();
    const written = await this.update(m.vmName, m.id, (cur) =>
      cur.phase === MigrationPhase.MIGRATION_PHASE_PENDING
        ? { ...cur, phase: MigrationPhase.MIGRATION_PHASE_FAILED, phaseSinceMs: now, finishedAtMs: now, abortRequested: true, message: "aborted by an operator before it started" }
        : isActiveMigration(cur)
          ? { ...cur, abortRequested: true }
          : undefined,
    );
    this.deps.log.warn({ vm: m.vmName, migrationId: m.id }, "migration abort requested by an operator");
    this.poke();
    return written ?? this.find(m.id);
  }

  /** The migration of a VM (by name) or with this id. NOT_FOUND. */
  find(nameOrId: string): Migration {
    if (typeof nameOrId !== "string" || nameOrId === "" || nameOrId.length > 64) throw invalidArgument("name", `must be a VM name or a migration id (got '${String(nameOrId).slice(0, 64)}')`);
    const byName = this.deps.state.migration(nameOrId);
    if (byName) return byName;
    const byId = this.deps.state.allMigrations().find((m) => m.id === nameOrId);
    if (!byId) throw notFound(`migration '${nameOrId}'`);
    return byId;
  }

  // ---- what agents say -----------------------------------------------------------------------

  /** A migration command's result (already matched with its command in flight by the session). */
  onResult(session: AgentSession, inflight: InFlight, result: CommandResult): void {
    const m = this.deps.state.allMigrations().find((x) => x.id === inflight.migrationId);
    if (!m) return;
    const side = session.hostId === m.sourceHost ? "source" : session.hostId === m.targetHost ? "target" : undefined;
    if (!side) return;
    const action = inflight.action as MigrationAction;
    let entry = this.results.get(m.id);
    if (!entry) this.results.set(m.id, (entry = { source: {}, target: {} }));
    entry[side][action] = {
      action,
      ok: result.ok,
      code: result.errorCode.slice(0, 64),
      message: result.errorMessage.slice(0, 512),
      ...(result.migrationTarget ? { target: { driver: result.migrationTarget.driver.slice(0, 32), uri: result.migrationTarget.uri.slice(0, 1024) } } : {}),
    };
    const log = result.ok ? this.deps.log.info.bind(this.deps.log) : this.deps.log.warn.bind(this.deps.log);
    log({ vm: m.vmName, migrationId: m.id, hostId: session.hostId, side, action, ok: result.ok, code: result.errorCode || undefined, error: result.errorMessage.slice(0, 256) || undefined }, "migration command answered");
    this.poke();
  }

  /** Progress from the source's agent while migrate_out runs. */
  onProgress(session: AgentSession, report: MigrationProgressReport): void {
    const m = this.deps.state.allMigrations().find((x) => x.id === report.migrationId);
    if (!m || m.sourceHost !== session.hostId || m.vmId !== report.vmId || !report.progress) return;
    const prior = this.progress.get(m.id);
    this.progress.set(m.id, { report, writtenAtMs: prior?.writtenAtMs ?? 0 });
  }

  // ---- the pass --------------------------------------------------------------------------------

  private async pass(): Promise<void> {
    const { state } = this.deps;
    const now = this.deps.now();
    const config = this.config();
    for (const m of state.allMigrations()) {
      if (this.stopped) return;
      if (!isActiveMigration(m)) {
        // Answers and progress matter only while it runs.
        this.results.delete(m.id);
        this.progress.delete(m.id);
        this.waitingWhy.delete(m.id);
        await this.collect(m, now);
        continue;
      }
      if (m.phase === MigrationPhase.MIGRATION_PHASE_PENDING) continue;
      await this.stepOne(m, now, config);
    }
    await this.admit(now, config);
    await this.drains(now);
  }

  private side(hostId: string, vmId: string, now: number): MigrationSide {
    const session = this.deps.sessions.get(hostId);
    const host = this.deps.state.host(hostId);
    const connected = session?.isLive === true;
    const live = this.deps.hosts.liveness(hostId);
    return {
      connected,
      fenced: host?.state === HostState.HOST_STATE_FENCED,
      domain: connected ? session.inventory.get(vmId) : undefined,
      awayMs: connected ? 0 : Math.max(0, now - live.lastHeardMs),
    };
  }

  private async stepOne(m: Migration, now: number, config: ResolvedMigrationConfig): Promise<void> {
    const { state, log } = this.deps;
    const vm = state.vmById(m.vmId);
    const source = this.side(m.sourceHost, m.vmId, now);
    const target = this.side(m.targetHost, m.vmId, now);
    const devices = vm?.spec && m.phase === MigrationPhase.MIGRATION_PHASE_PREPARING ? domainDevices(vm, this.catalog) : undefined;
    const step = stepMigration(m, {
      nowMs: now,
      vm,
      source,
      target,
      results: this.results.get(m.id) ?? { source: {}, target: {} },
      progressTimeoutMs: config.progressTimeoutMs,
      targetAwayLimitMs: TARGET_AWAY_LIMIT_MS,
      ...(devices ? { devices: isRefusal(devices) ? { refused: devices.value.message } : devices } : {}),
    });
    if (step.complete) {
      await this.complete(m, now);
      return;
    }
    if (step.patch) {
      const patch = step.patch;
      const written = await this.update(m.vmName, m.id, (cur) => (cur.phase === m.phase ? { ...cur, ...patch } : undefined));
      if (written) {
        const level = patch.phase === MigrationPhase.MIGRATION_PHASE_FAILED || patch.phase === MigrationPhase.MIGRATION_PHASE_ABORTING ? "warn" : "info";
        log[level]({ vm: m.vmName, migrationId: m.id, from: PHASE_NAMES[m.phase], to: PHASE_NAMES[written.phase], why: step.why, source: m.sourceHost, target: m.targetHost }, "migration phase changed");
      }
      return;
    }
    // Progress, written now and then (the stall check reads the lowest remaining from the record).
    const p = this.progress.get(m.id);
    if (p && m.phase === MigrationPhase.MIGRATION_PHASE_MIGRATING && now - p.writtenAtMs >= PROGRESS_WRITE_MS) {
      const progress = { ...p.report.progress!, updatedAtMs: Math.min(p.report.progress!.updatedAtMs || now, now) };
      p.writtenAtMs = now;
      await this.update(m.vmName, m.id, (cur) => (cur.phase === m.phase ? { ...cur, progress, ...withProgress(cur, progress.dataRemainingBytes, now) } : undefined));
    }
    for (const c of step.commands) {
      const hostId = c.side === "source" ? m.sourceHost : m.targetHost;
      const session = this.deps.sessions.get(hostId);
      if (!session?.isLive) continue;
      // A migrate_out runs for as long as the transfer takes: resend it only past its deadline.
      const resendMs = c.action.$case === "migrateOut" ? Math.max(this.deps.commandResendMs, m.deadlineAtMs - now) : this.deps.commandResendMs;
      session.sendCommand({ vmId: m.vmId, generation: m.vmGeneration, action: c.action, migrationId: m.id }, this.deps.commandEpoch(), now, resendMs);
    }
  }

  /** The switch: the VM's record moves to the target and the migration is COMPLETED, in one transaction. */
  private async complete(m: Migration, now: number): Promise<void> {
    const { state, writer, log } = this.deps;
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      const mkv = state.migrationKv(m.vmName);
      const cur = state.migration(m.vmName);
      if (!mkv || cur?.id !== m.id || !isActiveMigration(cur)) return;
      const vm = state.vmById(m.vmId);
      const vkv = vm ? state.vmKv(vm.spec?.name ?? "") : undefined;
      const done: Migration = { ...cur, phase: MigrationPhase.MIGRATION_PHASE_COMPLETED, phaseSinceMs: now, finishedAtMs: now, message: "" };
      const compare: Compare[] = [{ key: mkv.key, target: "modRevision", equals: mkv.modRevision }];
      const ops: Op[] = [{ type: "put", key: mkv.key, value: encodeMigration(done) }];
      if (vm && vkv) {
        compare.push({ key: vkv.key, target: "modRevision", equals: vkv.modRevision });
        const moved: Vm = {
          ...vm,
          hostId: m.targetHost,
          // The target was a migration's (requested, or chosen at admission): no create scores apply.
          placement: unexplainedRecord({ decidedAtMs: m.startedAtMs || now, cause: "migrate", preset: "", hostsConsidered: 0 }),
          status: VmStatus.fromPartial({ ...vm.status, phase: VmPhase.VM_PHASE_RUNNING, message: `migrated from ${m.sourceHost}`, updatedAtMs: now }),
        };
        ops.push({ type: "put", key: vkv.key, value: encodeVm(moved) });
        // Its data volumes came with it: their records name the target from the same moment.
        for (const v of state.volumesOfVm(m.vmName)) {
          const volumeKv = state.volumeKv(v.name);
          if (!volumeKv || v.hostId === m.targetHost) continue;
          compare.push({ key: volumeKv.key, target: "modRevision", equals: volumeKv.modRevision });
          ops.push({ type: "put", key: volumeKv.key, value: encodeVolume({ ...v, hostId: m.targetHost, generation: v.generation + 1 }) });
        }
      }
      const result = await writer.commit({ compare, ops });
      if (result.succeeded) {
        const written = [state.vms.waitForRevision(result.revision), state.migrations.waitForRevision(result.revision)];
        if (state.volumesOfVm(m.vmName).length > 0) written.push(state.volumes.waitForRevision(result.revision));
        await waitUpTo(Promise.all(written), 5_000);
        this.results.delete(m.id);
        this.progress.delete(m.id);
        log.info({ vm: m.vmName, migrationId: m.id, from: m.sourceHost, to: m.targetHost, tookMs: now - m.startedAtMs }, "migration completed");
        return;
      }
      await waitUpTo(Promise.all([state.vms.waitForRevision(result.revision), state.migrations.waitForRevision(result.revision)]), 5_000);
    }
  }

  /** Admits pending migrations as the limits allow: target chosen, resources held there, PREPARING. */
  private async admit(now: number, config: ResolvedMigrationConfig): Promise<void> {
    const { state, log } = this.deps;
    const eligible = (m: Migration): boolean => {
      const vm = state.vmById(m.vmId);
      const session = this.deps.sessions.get(m.sourceHost);
      if (!vm || vm.hostId !== m.sourceHost || !session?.isLive) return false;
      // Settled: the source runs it at its generation, and nothing else is being done to it.
      const domain = session.inventory.get(vm.id);
      return domain !== undefined && domain.state === DomainState.DOMAIN_STATE_RUNNING && domain.generation >= vm.generation && session.inflightFor(vm.id) === undefined;
    };
    const all = state.allMigrations();
    // Pending migrations that can no longer start end here, with why.
    for (const m of all) {
      if (m.phase !== MigrationPhase.MIGRATION_PHASE_PENDING) continue;
      const vm = state.vmById(m.vmId);
      const why = !vm
        ? "the VM was deleted"
        : vm.hostId !== m.sourceHost
          ? `the VM moved to ${vm.hostId} meanwhile`
          : vm.desiredState !== DesiredState.DESIRED_STATE_RUNNING
            ? "the VM is no longer meant to run"
            : undefined;
      if (why) await this.fail(m, now, why);
    }
    for (const m of admitMigrations(state.allMigrations(), { parallel: config.parallel, outboundPerHost: config.outboundPerHost }, eligible)) {
      const vm = state.vmById(m.vmId)!;
      let targetHost: string;
      try {
        targetHost = this.deps.placer.migrationTarget(vm, m.targetRequested ? m.targetHost : "");
      } catch (e) {
        const why = e instanceof Error ? e.message : String(e);
        // A requested target that no longer fits, or a rebalance move gone stale: fail (one shot).
        // Drains and the scheduler's own picks wait for room.
        if (m.targetRequested || m.reason === MigrationReason.MIGRATION_REASON_REBALANCE) {
          await this.fail(m, now, why);
        } else if (this.waitingWhy.get(m.id) !== why) {
          this.waitingWhy.set(m.id, why);
          await this.update(m.vmName, m.id, (cur) => (cur.phase === MigrationPhase.MIGRATION_PHASE_PENDING ? { ...cur, message: `waiting for room: ${why}`.slice(0, 1024) } : undefined));
        }
        continue;
      }
      this.waitingWhy.delete(m.id);
      await this.start(m, vm, targetHost, now, config).catch((e: unknown) => {
        if (isBerthError(e, ErrorCode.NotLeader)) throw e;
        log.warn({ vm: m.vmName, err: e instanceof Error ? e.message : e }, "could not start a migration; will try again");
      });
    }
  }

  private async start(m: Migration, vm: Vm, targetHost: string, now: number, config: ResolvedMigrationConfig): Promise<void> {
    const { state, writer, placer, log } = this.deps;
    const spec = vm.spec!;
    const reservation = `migrate/${m.vmName}`;
    // Held until the cache counts the VM on the target, so that placements and other admissions
    // in the meantime see it there (with its data volumes, which the target receives too).
    const volumeGib = state.attachedVolumeGib(m.vmName);
    placer.reserve(reservation, { name: m.vmName, hostId: targetHost, resources: { ...spec.resources!, diskGib: spec.resources!.diskGib + volumeGib }, group: spec.group });
    try {
      const mkv = state.migrationKv(m.vmName);
      const hostKv = state.hostKv(targetHost);
      if (!mkv || !hostKv) return;
      const started: Migration = {
        ...m,
        targetHost,
        phase: MigrationPhase.MIGRATION_PHASE_PREPARING,
        vmGeneration: vm.generation,
        startedAtMs: now,
        phaseSinceMs: now,
        deadlineAtMs: migrationDeadline(vm, now, config.completionTimeoutPerGiBMs),
        message: "",
      };
      const compare: Compare[] = [
        { key: mkv.key, target: "modRevision", equals: mkv.modRevision },
        { key: hostKv.key, target: "createRevision", equals: hostKv.createRevision },
      ];
      const ops: Op[] = [{ type: "put", key: mkv.key, value: encodeMigration(started) }];
      // A placement into the VM's group at the same time conflicts on the group record.
      const groupKv = spec.group ? state.groupKv(spec.group) : undefined;
      const group = spec.group ? state.group(spec.group) : undefined;
      if (groupKv && group) {
        compare.push({ key: groupKv.key, target: "modRevision", equals: groupKv.modRevision });
        ops.push({ type: "put", key: groupKv.key, value: encodeGroup(group) });
      }
      const result = await writer.commit({ compare, ops });
      await waitUpTo(Promise.all([state.migrations.waitForRevision(result.revision), state.groups.waitForRevision(result.revision)]), 5_000);
      if (result.succeeded) log.info({ vm: m.vmName, migrationId: m.id, from: m.sourceHost, to: targetHost, deadlineS: Math.round((started.deadlineAtMs - now) / 1000) }, "migration started");
    } finally {
      placer.release(reservation);
    }
  }

  private async fail(m: Migration, now: number, why: string): Promise<void> {
    const written = await this.update(m.vmName, m.id, (cur) =>
      isActiveMigration(cur) && cur.phase === m.phase ? { ...cur, phase: MigrationPhase.MIGRATION_PHASE_FAILED, phaseSinceMs: now, finishedAtMs: now, message: why.slice(0, 1024) } : undefined,
    );
    if (written) this.deps.log.warn({ vm: m.vmName, migrationId: m.id, why }, "migration failed before it started");
  }

  /** Removes a finished migration of a VM that no longer exists (its key is the VM's name). */
  private async collect(m: Migration, now: number): Promise<void> {
    if (this.deps.state.vmById(m.vmId) || now - m.finishedAtMs < FINISHED_RETENTION_MS) return;
    const kv = this.deps.state.migrationKv(m.vmName);
    if (!kv) return;
    await this.deps.writer.commit({ compare: [{ key: kv.key, target: "modRevision", equals: kv.modRevision }], ops: [{ type: "delete", key: kv.key }] });
    this.results.delete(m.id);
  }

  /**
   * Reads, changes and writes one migration record (the one with `id`), guarded on its revision
   * and fenced, retried when it changed meanwhile. `mutate` returns undefined to write nothing.
   */
  private async update(vmName: string, id: string, mutate: (cur: Migration) => Migration | undefined): Promise<Migration | undefined> {
    const { state, writer } = this.deps;
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      const kv = state.migrationKv(vmName);
      const cur = state.migration(vmName);
      if (!kv || cur?.id !== id) return undefined;
      const next = mutate(cur);
      if (!next) return undefined;
      const result = await writer.commit({ compare: [{ key: kv.key, target: "modRevision", equals: kv.modRevision }], ops: [{ type: "put", key: kv.key, value: encodeMigration(next) }] });
      await waitUpTo(state.migrations.waitForRevision(result.revision), 5_000);
      if (result.succeeded) return next;
    }
    throw new BerthError(ErrorCode.Conflict, `the migration of vm '${vmName}' kept changing; retry`);
  }

  // ---- drains ----------------------------------------------------------------------------------

  /**
   * Cordons the host and starts draining it: its running VMs are migrated away (drain priority),
   * `deadlineMs` from now (0: none) `onDeadline` applies to what is left. Draining a host already
   * draining restarts the count with the new deadline. NOT_FOUND for an unknown host.
   */
  async drain(hostId: string, deadlineMs: number, onDeadline: DrainStatus["onDeadline"], reason: string): Promise<Host> {
    const now = this.deps.now();
    if (!this.deps.state.host(hostId)) throw notFound(`host '${hostId}'`);
    const drain: DrainStatus = {
      phase: DrainPhase.DRAIN_PHASE_DRAINING,
      requestedAtMs: now,
      deadlineAtMs: deadlineMs > 0 ? now + deadlineMs : 0,
      onDeadline: onDeadline || DrainDeadlineAction.DRAIN_DEADLINE_ACTION_LEAVE,
      finishedAtMs: 0,
      toMove: 0,
      moved: 0,
      inFlight: 0,
      failed: 0,
      staying: 0,
      message: "",
    };
    const host = await this.deps.hosts.setDrain(hostId, drain, reason);
    // Deleted meanwhile (berth host delete): nothing was written.
    if (!host) throw notFound(`host '${hostId}'`);
    this.deps.log.warn({ hostId, deadlineMs: deadlineMs || undefined, onDeadline, reason }, "host drain requested");
    this.poke();
    return host;
  }

  /** Ends a drain (uncordon): its pending migrations fail; those in flight finish. */
  async cancelDrain(hostId: string): Promise<void> {
    const now = this.deps.now();
    for (const m of this.deps.state.allMigrations()) {
      if (m.sourceHost === hostId && m.reason === MigrationReason.MIGRATION_REASON_DRAIN && m.phase === MigrationPhase.MIGRATION_PHASE_PENDING) {
        await this.fail(m, now, "the drain was cancelled (host uncordoned)");
      }
    }
  }

  /** The drain's live figures for the operator's view. */
  drainFigures(host: Host): DrainStatus | undefined {
    if (!host.drain) return undefined;
    const step = this.drainStep(host, this.deps.now());
    return { ...host.drain, ...step.figures };
  }

  private drainStep(host: Host, now: number): ReturnType<typeof planDrain> {
    const drain = host.drain!;
    const onHost: DrainVm[] = this.deps.state.vmsOnHost(host.id).map((vm) => {
      const a = this.drainAttempts.get(vm.id);
      return { vm, migration: this.deps.state.migration(vm.spec?.name ?? ""), attempts: a && a.requestedAtMs === drain.requestedAtMs ? a.attempts : 0 };
    });
    const moved = this.deps.state
      .allMigrations()
      .filter((m) => m.sourceHost === host.id && m.reason === MigrationReason.MIGRATION_REASON_DRAIN && m.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED && m.createdAtMs >= drain.requestedAtMs).length;
    return planDrain(host.id, drain, onHost, moved, now);
  }

  private async drains(now: number): Promise<void> {
    for (const host of this.deps.state.allHosts()) {
      if (host.drain?.phase !== DrainPhase.DRAIN_PHASE_DRAINING) continue;
      const step = this.drainStep(host, now);
      for (const m of step.cancel) await this.fail(m, now, "the drain's deadline passed before it could start");
      for (const vm of step.migrate) {
        const name = vm.spec?.name ?? "";
        const a = this.drainAttempts.get(vm.id);
        const attempts = a && a.requestedAtMs === host.drain.requestedAtMs ? a.attempts : 0;
        try {
          await this.request({ vmName: name, targetHost: "", reason: MigrationReason.MIGRATION_REASON_DRAIN, requestedBy: `drain of host ${host.id}` });
          this.drainAttempts.set(vm.id, { requestedAtMs: host.drain.requestedAtMs, attempts: attempts + 1 });
        } catch (e) {
          if (isBerthError(e, ErrorCode.NotLeader)) throw e;
          // Not running right now (starting, failed): looked at again on the next pass.
          this.deps.log.debug({ vm: name, hostId: host.id, err: e instanceof Error ? e.message : e }, "drain cannot migrate this VM yet");
        }
      }
      for (const vm of step.stop) {
        await setDesiredState(this.deps.store, this.deps.writer, vm.spec?.name ?? "", DesiredState.DESIRED_STATE_STOPPED, false).catch((e: unknown) => {
          if (isBerthError(e, ErrorCode.NotLeader)) throw e;
          this.deps.log.warn({ vm: vm.spec?.name, err: e instanceof Error ? e.message : e }, "could not stop a VM at the drain's deadline");
        });
      }
      if (step.status) {
        await this.deps.hosts.setDrain(host.id, step.status);
        const level = step.status.phase === DrainPhase.DRAIN_PHASE_DRAINED ? "info" : "warn";
        this.deps.log[level]({ hostId: host.id, phase: DrainPhase[step.status.phase], message: step.status.message || undefined, attemptsPerVm: DRAIN_ATTEMPTS }, "host drain ended");
      }
    }
  }

  /** Migrations in flight (not PENDING, not ended) and those holding a host as target: for tests and views. */
  inFlight(): Migration[] {
    return this.deps.state.allMigrations().filter((m) => holdsTarget(m));
  }
}
