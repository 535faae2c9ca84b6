import { DesiredState, HostFailurePolicy, HostState, MigrationPhase, type Vm } from "@berth/api";
import { isBerthError, ErrorCode } from "@berth/core";
import type { Txn } from "@berth/store";
import type { Logger } from "pino";
import type { AgentSession } from "./agent-session.js";
import type { ClusterState } from "./cluster-state.js";
import { PHASE_NAMES } from "./migration.js";
import type { FencedWriter } from "./fenced-writer.js";
import { encodeGroup, encodeVm, encodeVolume } from "./keys.js";
import { failurePolicyOf, NOT_RELOCATED_WITH_VOLUMES } from "./failover.js";
import { released } from "./volumes.js";
import { OrphanLog } from "./lifecycle-log.js";
import { normalState } from "./host-lifecycle.js";
import { migratingStatus, observedStatus, planHostCommands, recordFailure, sameStatus, type DeviceCatalog } from "./reconcile.js";

/** How long a reconcile pass runs before it lets the event loop take a turn. */
const DRAIN_SLICE_MS = 10;

const yieldToEventLoop = (): Promise<void> => new Promise((r) => setImmediate(r));

export interface ReconcilerDeps {
  state: ClusterState;
  sessions: ReadonlyMap<string, AgentSession>;
  writer: FencedWriter;
  commandResendMs: number;
  log: Logger;
  now: () => number;
  /** The cluster's default on_host_failure. */
  defaultPolicy(): HostFailurePolicy;
  /** The epoch commands carry (see ClusterIdentity). */
  commandEpoch(): number;
  /** Each host's volume plan, run in its pass (volume-manager.ts); returns when a held command is due. */
  volumes?: { reconcileHost(hostId: string, session: AgentSession | undefined, nowMs: number): Promise<number | undefined> };
}

/**
 * Level-triggered reconciliation, one host at a time: commands come from the difference between
 * the VM records placed on a host and the inventory the host reports, and VM statuses from what the
 * host reports. Anything that may change that difference marks the host dirty; a periodic resync
 * marks them all, so a lost event or command costs a delay, never correctness.
 */
export class Reconciler {
  private readonly dirty = new Set<string>();
  private readonly wakeups = new Map<string, { atMs: number; timer: NodeJS.Timeout }>();
  private running: Promise<void> | undefined;
  private stopped = false;
  /** Warns of each orphan once, when first found, not at each report. */
  private readonly orphanLog: OrphanLog;

  /** Images and volumes by name, from the cache: what commands' devices are made of. */
  private readonly catalog: DeviceCatalog;

  constructor(private readonly deps: ReconcilerDeps) {
    this.orphanLog = new OrphanLog(deps.log);
    this.catalog = { image: (name) => deps.state.image(name), volume: (name) => deps.state.volume(name) };
  }

  markDirty(hostId: string): void {
    if (this.stopped || hostId === "") return;
    this.dirty.add(hostId);
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
      if (this.dirty.size > 0) this.markDirty([...this.dirty][0]!);
    });
  }

  /** Every host with a session, with VMs placed on it or with volumes bound to it. */
  markAll(): void {
    for (const id of this.deps.sessions.keys()) this.markDirty(id);
    for (const id of this.deps.state.hostIdsWithVms()) this.markDirty(id);
    for (const id of this.deps.state.hostIdsWithVolumes()) this.markDirty(id);
  }

  /** Stops scheduling passes and waits for the one running. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.dirty.clear();
    for (const w of this.wakeups.values()) clearTimeout(w.timer);
    this.wakeups.clear();
    await this.running;
  }

  private async drain(): Promise<void> {
    // Yield once so a burst of events coalesces into one pass per host.
    await yieldToEventLoop();
    while (this.dirty.size > 0 && !this.stopped) {
      const hosts = [...this.dirty];
      this.dirty.clear();
      const passes: Promise<void>[] = [];
      let sliceStart = performance.now();
      for (const h of hosts) {
        if (this.stopped) break;
        passes.push(this.reconcileHost(h));
        // Each host's pass plans and encodes synchronously: a pass over every host of a big
        // cluster (a new leader's first, at 10,000 hosts and 100,000 VMs: 5 s) must give the event
        // loop a turn every few milliseconds, or the lease keepalive waits behind it and the
        // leadership is lost (docs/benchmarks.md, controller-memory).
        if (performance.now() - sliceStart >= DRAIN_SLICE_MS) {
          await yieldToEventLoop();
          sliceStart = performance.now();
        }
      }
      await Promise.all(passes);
    }
  }

  private async reconcileHost(hostId: string): Promise<void> {
    const { state, sessions, writer, log } = this.deps;
    const now = this.deps.now();
    const session = sessions.get(hostId);
    // A session that is not welcomed yet counts as absent: it is still registering.
    const connected = session?.isLive === true;
    const vms = state.vmsOnHost(hostId);
    const host = state.host(hostId);
    const hostState = host ? normalState(host.state) : HostState.HOST_STATE_UNSPECIFIED;
    const volumesDueAt = await this.deps.volumes?.reconcileHost(hostId, session, now).catch((e: unknown) => {
      if (!isBerthError(e, ErrorCode.NotLeader)) log.warn({ err: e, hostId }, "volume plan failed");
      this.markDirtyLater(hostId);
      return undefined;
    });
    if (volumesDueAt !== undefined) this.wakeAt(hostId, volumesDueAt);
    if (!connected && hostState === HostState.HOST_STATE_READY) {
      // Recorded ready but no stream here (yet): a new leader gives hosts a grace period to
      // reconnect, and a lost stream is judged by the host lifecycle first. Judge VMs after that.
      return;
    }

    if (connected) {
      const holdCreates = now < session.holdCreatesUntilMs;
      const plan = planHostCommands(vms, session.inventory, {
        failures: session.failures,
        nowMs: now,
        placedElsewhere: (vmId) => {
          const vm = state.vmById(vmId);
          return vm !== undefined && vm.hostId !== hostId;
        },
        holdCreates,
        inFlight: (vmId) => state.migrationHolds(vmId),
        mayBeOnlyCopy: (vmId) => {
          const name = state.vmById(vmId)?.spec?.name;
          const m = name ? state.migration(name) : undefined;
          return m !== undefined && m.vmId === vmId && m.targetHost === hostId && m.phase !== MigrationPhase.MIGRATION_PHASE_COMPLETED;
        },
        fence: (vm) => failurePolicyOf(vm, this.deps.defaultPolicy()) === HostFailurePolicy.HOST_FAILURE_POLICY_RESTART,
        catalog: this.catalog,
      });
      session.orphans = plan.orphans;
      for (const r of plan.refusals) {
        // As if the host had answered it: the VM's status shows why, and NOT_FOUND is permanent.
        const failure = recordFailure(session.failures.get(r.vmId), r, now, Math.random);
        session.failures.set(r.vmId, failure);
        log.warn({ hostId, vmId: r.vmId, vm: state.vmById(r.vmId)?.spec?.name, generation: r.generation, code: r.code, error: r.message }, "cannot make the VM's command");
      }
      this.orphanLog.report(hostId, plan.orphans);
      for (const planned of plan.commands) {
        const sent = session.sendCommand(planned, this.deps.commandEpoch(), now, this.deps.commandResendMs);
        // The one removal nobody asked for by name: a copy left behind by a restart elsewhere.
        const vm = sent ? state.vmById(planned.vmId) : undefined;
        if (vm && vm.hostId !== hostId) {
          log.info({ hostId, vmId: planned.vmId, vm: vm?.spec?.name, runsOn: vm?.hostId }, "removing a superseded copy: the VM was restarted on another host");
        }
      }
      // Level-triggered, but a held command has no event to wake it: look again when it is due.
      if (plan.nextRetryAtMs !== undefined) this.wakeAt(hostId, plan.nextRetryAtMs);
      if (holdCreates) this.wakeAt(hostId, session.holdCreatesUntilMs);
    }
    // The host's own account of its VMs is believed only while it is connected and READY.
    const believed = connected && hostState === HostState.HOST_STATE_READY;

    const writes: Txn[] = [];
    for (const vm of vms) {
      const kv = state.vmKv(vm.spec?.name ?? "");
      if (!kv) continue;
      const guard = [{ key: kv.key, target: "modRevision" as const, equals: kv.modRevision }];
      const domain = believed ? session.inventory.get(vm.id) : undefined;
      const migration = state.activeMigration(vm.id);
      const held = state.migrationHolds(vm.id);
      // A VM in flight may have left this host for the target: its record stays until it ends.
      if (connected && vm.desiredState === DesiredState.DESIRED_STATE_DELETED && !domain && !held) {
        // The host confirms the domain is gone: the record can go too, and with it the membership.
        const txn: Txn = { compare: guard, ops: [{ type: "delete", key: kv.key }] };
        const groupKv = vm.spec?.group ? state.groupKv(vm.spec.group) : undefined;
        const group = vm.spec?.group ? state.group(vm.spec.group) : undefined;
        if (groupKv && group) {
          txn.compare.push({ key: groupKv.key, target: "modRevision", equals: groupKv.modRevision });
          txn.ops.push({ type: "put", key: groupKv.key, value: encodeGroup({ ...group, members: group.members.filter((m) => m !== vm.spec!.name) }) });
        }
        // Its data volumes outlive it, detached (and still bound to the host: their data is there).
        for (const v of state.volumesOfVm(vm.spec?.name ?? "")) {
          const vkv = state.volumeKv(v.name);
          if (!vkv) continue;
          txn.compare.push({ key: vkv.key, target: "modRevision", equals: vkv.modRevision });
          txn.ops.push({ type: "put", key: vkv.key, value: encodeVolume(released(v)) });
        }
        writes.push(txn);
        continue;
      }
      const status =
        held && believed
          ? migratingStatus(vm, domain, migration && { targetHost: migration.targetHost, phase: PHASE_NAMES[migration.phase] }, now)
          : observedStatus(vm, believed, domain, believed ? session.failures.get(vm.id) : undefined, now, believed ? "" : this.awayMessageOf(vm, hostState));
      if (!sameStatus(vm.status, status)) {
        writes.push({ compare: guard, ops: [{ type: "put", key: kv.key, value: encodeVm({ ...vm, status }) }] });
      }
    }
    // Concurrent writes let the store batch them into one transaction (group commit).
    await Promise.all(
      writes.map(async (txn) => {
        try {
          const result = await writer.commit(txn);
          // A lost guard means the record changed meanwhile; its watch event marks the host again.
          if (!result.succeeded) log.debug({ hostId, key: txn.ops[0]?.key }, "status write raced a change");
        } catch (e) {
          if (!isBerthError(e, ErrorCode.NotLeader)) log.warn({ err: e, hostId }, "status write failed");
          this.markDirtyLater(hostId);
        }
      }),
    );
  }

  /** Why the VM's state is not known; for a VM that would be restarted elsewhere but is kept by its volumes, that too. */
  private awayMessageOf(vm: Vm, state: HostState): string {
    const why = awayMessage(state);
    if (state !== HostState.HOST_STATE_FENCED || (vm.spec?.volumes.length ?? 0) === 0) return why;
    if (failurePolicyOf(vm, this.deps.defaultPolicy()) !== HostFailurePolicy.HOST_FAILURE_POLICY_RESTART) return why;
    return `${why}; not restarted elsewhere: ${NOT_RELOCATED_WITH_VOLUMES}`;
  }

  private markDirtyLater(hostId: string): void {
    setTimeout(() => this.markDirty(hostId), 1_000).unref();
  }

  /** Marks the host dirty at `atMs` (keeps the earliest wake-up per host). */
  private wakeAt(hostId: string, atMs: number): void {
    const existing = this.wakeups.get(hostId);
    if (existing && existing.atMs <= atMs) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      this.wakeups.delete(hostId);
      this.markDirty(hostId);
    }, Math.max(0, atMs - this.deps.now()) + 5);
    timer.unref();
    this.wakeups.set(hostId, { atMs, timer });
  }
}

/** Why a VM's state is not known, for its status. */
function awayMessage(state: HostState): string {
  switch (state) {
    case HostState.HOST_STATE_FENCED:
      return "host fenced: silent past its fence deadline";
    case HostState.HOST_STATE_DOWN:
      return "host down";
    case HostState.HOST_STATE_SUSPECT:
      return "host not heard from (suspect)";
    default:
      return "host not connected";
  }
}
