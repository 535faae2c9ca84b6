import {
  DesiredState,
  DomainState,
  DrainPhase,
  EventSeverity,
  HostState,
  MigrationPhase,
  VmPhase,
  type ClusterEvent,
  type Host,
  type Migration,
  type ScaleGroup,
  type Vm,
} from "@berth/api";
import { formatResources, normalHostState } from "@berth/core";
import { NOT_RELOCATED_WITH_VOLUMES } from "./failover.js";

/**
 * What changed in one record, as the cache saw it: the record before (undefined when new) and
 * after (undefined when deleted). Hosts carry their previous record too.
 */
export type RecordChange =
  | { kind: "vm"; before: Vm | undefined; after: Vm | undefined; revision: number }
  | { kind: "host"; before: Host | undefined; after: Host | undefined; revision: number }
  | { kind: "migration"; before: Migration | undefined; after: Migration | undefined; revision: number }
  | { kind: "scalegroup"; before: ScaleGroup | undefined; after: ScaleGroup | undefined; revision: number };

/**
 * The cluster events one record change means, in the order they happened (pure: no clock, no
 * I/O; `nowMs` stamps them). Only transitions make events — a record rewritten with the same
 * phase, state or desired state makes none, so steady reports never flood the feed. Reasons are
 * stable CamelCase words (see event.proto); WARNING is for what needs a look.
 *
 * The one definition of what happened: `berth events`, the dashboard's feed and the leader's log
 * (lifecycle-log.ts writes the VM events) all read these.
 */
export function eventsOf(change: RecordChange, nowMs: number): ClusterEvent[] {
  switch (change.kind) {
    case "vm":
      return vmEvents(change.before, change.after).map((e) => stamp(e, "vm", change.revision, nowMs));
    case "host":
      return hostEvents(change.before, change.after).map((e) => stamp(e, "host", change.revision, nowMs));
    case "migration":
      return migrationEvents(change.before, change.after).map((e) => stamp(e, "migration", change.revision, nowMs));
    case "scalegroup":
      return scaleGroupEvents(change.before, change.after).map((e) => stamp(e, "scalegroup", change.revision, nowMs));
  }
}

/**
 * A scale group's events: ScaleGroupCreated, each decision recorded since the record before (by
 * its seq: a decision is told once, whatever else the rewrite changed) under its own reason
 * (ScaledOut, ScaledIn, SizeBounded) with its message, and ScaleGroupDeleted when the record goes.
 */
function scaleGroupEvents(before: ScaleGroup | undefined, after: ScaleGroup | undefined): Draft[] {
  if (!after) return before ? [{ reason: "ScaleGroupDeleted", objectName: before.name, hostId: "", message: `scale group deleted (${before.members.length} members left)` }] : [];
  const out: Draft[] = [];
  if (!before) {
    out.push({ reason: "ScaleGroupCreated", objectName: after.name, hostId: "", message: `scale group created: ${after.minSize}..${after.maxSize} VMs at ${Math.round((after.policy?.targetCpu ?? 0) * 100)}% CPU` });
  }
  const seen = before?.decisionCount ?? 0;
  for (const d of after.decisions) {
    if (d.seq <= seen) continue;
    out.push({ reason: d.reason, objectName: after.name, hostId: "", message: `${d.fromSize} → ${d.toSize}: ${d.message}` });
  }
  if (before && !before.deleting && after.deleting) out.push({ reason: "ScaleGroupDeleting", objectName: after.name, hostId: "", message: `deleting the group and its ${after.members.length} VMs` });
  return out;
}

type Draft = Pick<ClusterEvent, "reason" | "objectName" | "hostId" | "message"> & { warning?: boolean };

function stamp(e: Draft, kind: string, revision: number, nowMs: number): ClusterEvent {
  return {
    timeMs: nowMs,
    severity: e.warning ? EventSeverity.EVENT_SEVERITY_WARNING : EventSeverity.EVENT_SEVERITY_NORMAL,
    reason: e.reason,
    objectKind: kind,
    objectName: e.objectName,
    hostId: e.hostId,
    message: e.message,
    revision,
  };
}

/** "placed on host-2: total 0.83, runner-up host-1 0.71" from the VM's placement record. */
function placedMessage(vm: Vm): string {
  const p = vm.placement;
  const size = vm.spec?.resources ? formatResources(vm.spec.resources) : "no size";
  if (!p) return `placed on ${vm.hostId} (${size})`;
  const why = p.explained
    ? `score ${p.total.toFixed(2)}` +
      (p.runnerUpHost ? `, runner-up ${p.runnerUpHost} ${p.runnerUpTotal.toFixed(2)}` : ", the only host that fitted") +
      `; ${p.hostsFeasible}/${p.hostsConsidered} hosts fitted`
    : `${p.hostsConsidered} hosts considered`;
  return `placed on ${vm.hostId} (${size}; ${p.cause || "create"}, ${p.preset || "scheduler"}: ${why})`;
}

/**
 * A VM's events. Beyond "a transition makes its event":
 * - back from UNKNOWN as it was (same observed generation and domain state: its host is heard
 *   again, the VM did nothing) makes no VmRunning, VmStopped or VmFailed — VmUnknown told that it
 *   was not heard from, the host's HostReady tells that it is again;
 * - the end of a migration (MIGRATING → RUNNING) makes no VmRunning: the migration's events
 *   (MigrationSucceeded, or MigrationFailed: it stays) and VmMoved tell it;
 * - stopped while it should run is VmStoppedUnasked only after running (or unknown while its
 *   domain ran); seen off while it starts is no stop;
 * - a failure is told once: VmFailed when the VM turns FAILED, or fails with another error code;
 *   not when the same failure is retried — FAILED again at the same generation with the record's
 *   `attempts` above 1 (a failed attempt before it at this generation, none succeeded since: that
 *   one was told), whatever the record showed between the attempts (PENDING, UNKNOWN);
 * - a crash (FAILED with no error code, domain CRASHED) is "crashed", not "failed";
 * - a RESTART VM its fenced host keeps because its data volumes are there is VmNotRelocated
 *   (warning), once: when its status first says so.
 */
function vmEvents(before: Vm | undefined, after: Vm | undefined): Draft[] {
  const vm = after ?? before;
  if (!vm) return [];
  const name = vm.spec?.name ?? vm.id;
  const on = (reason: string, message: string, hostId = vm.hostId, warning = false): Draft => ({ reason, objectName: name, hostId, message, warning });
  if (!after) return [on("VmDeleted", `deleted (was on ${before!.hostId || "no host"})`, before!.hostId)];
  if (!before) return [on("VmPlaced", placedMessage(after))];
  const out: Draft[] = [];
  if (before.hostId !== after.hostId) {
    const cause = after.placement?.cause;
    if (cause === "relocate") out.push(on("VmRelocated", `recreated on ${after.hostId} after ${before.hostId} was fenced: ${placedMessage(after)}`, after.hostId, true));
    else out.push(on("VmMoved", `now on ${after.hostId} (was on ${before.hostId})`));
  }
  if (before.desiredState !== after.desiredState) {
    const asked: Partial<Record<DesiredState, [string, string]>> = {
      [DesiredState.DESIRED_STATE_RUNNING]: ["VmStartRequested", "start asked for"],
      [DesiredState.DESIRED_STATE_STOPPED]: ["VmStopRequested", after.forceStop ? "power-off asked for" : "stop asked for"],
      [DesiredState.DESIRED_STATE_DELETED]: ["VmDeleteRequested", "delete asked for"],
    };
    const a = asked[after.desiredState];
    if (a) out.push(on(a[0], a[1]));
  }
  const wasStatus = before.status;
  const nowStatus = after.status;
  const was = wasStatus?.phase ?? VmPhase.VM_PHASE_UNSPECIFIED;
  const now = nowStatus?.phase ?? VmPhase.VM_PHASE_UNSPECIFIED;
  const errorCode = nowStatus?.errorCode ?? "";
  // Its host is heard again and the VM is as it was: nothing happened to the VM.
  const backAsItWas = was === VmPhase.VM_PHASE_UNKNOWN && wasStatus?.observedGeneration === nowStatus?.observedGeneration && wasStatus?.domainState === nowStatus?.domainState;
  const kept = (s: typeof nowStatus): boolean => s?.phase === VmPhase.VM_PHASE_UNKNOWN && s.message.endsWith(NOT_RELOCATED_WITH_VOLUMES);
  if (kept(nowStatus) && !kept(wasStatus)) {
    out.push(on("VmNotRelocated", `not restarted elsewhere though ${after.hostId} was fenced: it ${NOT_RELOCATED_WITH_VOLUMES}; it runs again when its host is back`, after.hostId, true));
  }
  if (now === VmPhase.VM_PHASE_FAILED) {
    const newFailure =
      was === VmPhase.VM_PHASE_FAILED
        ? (wasStatus?.errorCode ?? "") !== errorCode
        : !backAsItWas && !(errorCode && (nowStatus?.attempts ?? 0) > 1 && before.generation === after.generation);
    if (newFailure) {
      const crashed = !errorCode && nowStatus?.domainState === DomainState.DOMAIN_STATE_CRASHED;
      const detail = nowStatus?.message && !crashed ? `: ${nowStatus.message.slice(0, 200)}` : "";
      out.push(on("VmFailed", `${crashed ? "crashed" : "failed"} on ${after.hostId}${errorCode ? ` (${errorCode})` : ""}${detail}`, after.hostId, true));
    }
    return out;
  }
  if (was === now) return out;
  switch (now) {
    case VmPhase.VM_PHASE_RUNNING:
      if (!backAsItWas && was !== VmPhase.VM_PHASE_MIGRATING) out.push(on("VmRunning", `running on ${after.hostId}`));
      break;
    case VmPhase.VM_PHASE_STOPPED: {
      // A VM that should run is seen defined-but-off while it starts (PENDING → STOPPED →
      // RUNNING): that is no stop. Stopped when asked, or stopped by itself after running.
      const ran = was === VmPhase.VM_PHASE_RUNNING || (was === VmPhase.VM_PHASE_UNKNOWN && wasStatus?.domainState === DomainState.DOMAIN_STATE_RUNNING);
      if (backAsItWas) break;
      if (after.desiredState === DesiredState.DESIRED_STATE_STOPPED) out.push(on("VmStopped", `stopped on ${after.hostId}`));
      else if (ran) out.push(on("VmStoppedUnasked", `stopped on ${after.hostId} though it should run (the guest shut down?); Berth starts it again`, after.hostId, true));
      break;
    }
    case VmPhase.VM_PHASE_UNKNOWN:
      out.push(on("VmUnknown", `state unknown: ${after.hostId} is not heard from`, after.hostId, true));
      break;
    case VmPhase.VM_PHASE_MIGRATING:
      out.push(on("VmMigrating", `live-migrating from ${after.hostId}`));
      break;
    default:
      break;
  }
  return out;
}

const HOST_STATE_EVENTS: Partial<Record<HostState, [string, boolean]>> = {
  [HostState.HOST_STATE_READY]: ["HostReady", false],
  [HostState.HOST_STATE_SUSPECT]: ["HostSuspect", true],
  [HostState.HOST_STATE_DOWN]: ["HostDown", true],
  [HostState.HOST_STATE_FENCED]: ["HostFenced", true],
};

function hostEvents(before: Host | undefined, after: Host | undefined): Draft[] {
  const host = after ?? before;
  if (!host) return [];
  const on = (reason: string, message: string, warning = false): Draft => ({ reason, objectName: host.id, hostId: host.id, message, warning });
  if (!after) return [on("HostDeleted", "host record deleted (retired)")];
  if (!before) return [on("HostJoined", `joined: ${after.capacity ? formatResources(after.capacity) : "capacity unknown"}${after.driver ? `, ${after.driver} hypervisor` : ""}`)];
  const out: Draft[] = [];
  const was = normalHostState(before.state);
  const now = normalHostState(after.state);
  if (was !== now) {
    const e = HOST_STATE_EVENTS[now];
    if (e) out.push(on(e[0], now === HostState.HOST_STATE_FENCED && after.confirmedDown ? "fenced: confirmed down by an operator" : `now ${e[0].slice(4).toUpperCase()}`, e[1]));
  }
  if (before.bootId !== "" && after.bootId !== "" && before.bootId !== after.bootId) out.push(on("HostAgentRestarted", `its agent restarted (version ${after.agentVersion || "unknown"})`));
  if (!before.cordoned && after.cordoned) out.push(on("HostCordoned", `cordoned${after.cordonReason ? `: ${after.cordonReason}` : ""}`));
  if (before.cordoned && !after.cordoned) out.push(on("HostUncordoned", "uncordoned: takes new VMs again"));
  const drainWas = before.drain?.phase ?? DrainPhase.DRAIN_PHASE_UNSPECIFIED;
  const drainNow = after.drain?.phase ?? DrainPhase.DRAIN_PHASE_UNSPECIFIED;
  if (drainWas !== drainNow) {
    if (drainNow === DrainPhase.DRAIN_PHASE_DRAINING) out.push(on("HostDrainStarted", `draining: ${after.drain!.toMove} VM(s) to move`));
    if (drainNow === DrainPhase.DRAIN_PHASE_DRAINED) out.push(on("HostDrained", `drained: ${after.drain!.moved} VM(s) moved`));
    if (drainNow === DrainPhase.DRAIN_PHASE_INCOMPLETE) out.push(on("HostDrainIncomplete", `drain incomplete: ${after.drain!.message || `${after.drain!.failed} failed, ${after.drain!.staying} staying`}`, true));
  }
  if (!sameLabels(before.labels, after.labels)) out.push(on("HostLabelsChanged", `labels now ${Object.entries(after.labels).map(([k, v]) => `${k}=${v}`).join(",") || "none"}`));
  return out;
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

function migrationEvents(before: Migration | undefined, after: Migration | undefined): Draft[] {
  if (!after) return [];
  const on = (reason: string, message: string, warning = false): Draft => ({ reason, objectName: after.vmName, hostId: after.sourceHost, message, warning });
  const target = after.targetHost || "a host the scheduler picks";
  // A new record for the VM (ids differ) is a new migration, even though the key is the VM's.
  const fresh = !before || before.id !== after.id;
  const out: Draft[] = [];
  if (fresh) out.push(on("MigrationRequested", `migration of ${after.vmName} from ${after.sourceHost} to ${target} asked for by ${after.requestedBy || "an operator"}`));
  const was = fresh ? MigrationPhase.MIGRATION_PHASE_UNSPECIFIED : before.phase;
  if (was === after.phase) return out;
  switch (after.phase) {
    case MigrationPhase.MIGRATION_PHASE_MIGRATING:
      out.push(on("MigrationStarted", `copying ${after.vmName} from ${after.sourceHost} to ${target}`));
      break;
    case MigrationPhase.MIGRATION_PHASE_COMPLETED:
      out.push(on("MigrationSucceeded", `${after.vmName} now runs on ${after.targetHost} (moved from ${after.sourceHost})`));
      break;
    case MigrationPhase.MIGRATION_PHASE_FAILED:
      out.push(on("MigrationFailed", `migration of ${after.vmName} failed${after.errorCode ? ` (${after.errorCode})` : ""}: ${after.message.slice(0, 200) || "no reason recorded"}; it stays on ${after.sourceHost}`, true));
      break;
    default:
      break;
  }
  return out;
}
