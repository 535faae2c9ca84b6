// The controller's log of VM lifecycle steps: the VM events of the controller's event log
// (events.ts, the one definition of what happened — the same `berth events` and the dashboard's
// feed show) written out by the leader, one line per step, each with the same fields, so
// `grep '"vm":"web-1"'` tells a VM's story. Events come from transitions only — never per
// report — so a steady cluster logs nothing, and a retried failure is told once.
import { EventSeverity, type ClusterEvent, type Domain, type Vm } from "@berth/api";
import type { Logger } from "pino";
import type { EventLog } from "./event-log.js";
import type { RecordChange } from "./events.js";

/** The fields every lifecycle line carries. */
export interface LifecycleFields {
  vm: string;
  vmId: string;
  host: string;
  generation: number;
  /** The event's reason (VmPlaced, VmRunning, VmFailed...). */
  reason: string;
  [more: string]: unknown;
}

/** One line to log: its level, the fields and a short message. */
export interface LifecycleLine {
  level: "info" | "warn";
  fields: LifecycleFields;
  msg: string;
}

/**
 * VM events another line tells at the same moment, where the step is decided: a relocation after
 * a fence (host-manager.ts, "restarted a VM elsewhere", or "not restarting a VM elsewhere" for one
 * kept by its data volumes), a migration's start and end
 * (migration-manager.ts, "migration started", "migration completed"). Host and migration events
 * are all logged where they are decided too (host state, cordon, labels, drains, migrations).
 */
const TOLD_WHERE_DECIDED = new Set(["VmRelocated", "VmNotRelocated", "VmMigrating", "VmMoved"]);

/** The placement record's why (cause, preset, winning total, runner-up), when the record has one. */
function placementWhy(vm: Vm): Record<string, unknown> {
  const p = vm.placement;
  if (!p) return {};
  const why: Record<string, unknown> = { cause: p.cause || undefined, preset: p.preset || undefined, hostsConsidered: p.hostsConsidered };
  if (p.explained) {
    why.score = round(p.total);
    why.hostsFeasible = p.hostsFeasible;
    if (p.runnerUpHost) {
      why.runnerUp = p.runnerUpHost;
      why.runnerUpScore = round(p.runnerUpTotal);
    }
  }
  return why;
}

const round = (x: number): number => Math.round(x * 1000) / 1000;

/**
 * The log line of one cluster event, or undefined when it is not the lifecycle log's (not a VM's,
 * or told elsewhere: see TOLD_WHERE_DECIDED). Pure: what happened is the event's (its message,
 * its severity: WARNING is WARN); the fields come from the VM record of the change it was derived
 * from (the record after, or before for a deletion), with the placement record's why on VmPlaced
 * and the failure's code and attempts on VmFailed.
 */
export function lifecycleLine(event: ClusterEvent, change: RecordChange): LifecycleLine | undefined {
  if (change.kind !== "vm" || event.objectKind !== "vm" || TOLD_WHERE_DECIDED.has(event.reason)) return undefined;
  const vm = change.after ?? change.before;
  if (!vm) return undefined;
  const fields: LifecycleFields = { vm: vm.spec?.name ?? "", vmId: vm.id, host: vm.hostId, generation: vm.generation, reason: event.reason };
  if (event.reason === "VmPlaced") Object.assign(fields, placementWhy(vm));
  if (event.reason === "VmFailed" && vm.status?.errorCode) {
    Object.assign(fields, { errorCode: vm.status.errorCode, attempts: vm.status.attempts || undefined, permanent: vm.status.permanent || undefined });
  }
  return { level: event.severity === EventSeverity.EVENT_SEVERITY_WARNING ? "warn" : "info", fields, msg: `VM ${event.message}` };
}

/**
 * Writes {@link lifecycleLine}'s line for every VM event of `events` from now on. Only the leader
 * runs one (every controller keeps an event log; one line per step for the cluster). Returns the
 * function that stops it.
 */
export function logVmEvents(events: EventLog, log: Logger): () => void {
  return events.subscribe((event, change) => {
    const line = lifecycleLine(event, change);
    if (line) log[line.level](line.fields, line.msg);
  });
}

/**
 * Warns once per orphan domain (one that no VM record accounts for) when it is first found on a
 * host, not at every report: remembers, per host, the orphans of the last plan, so an orphan that
 * goes away (deleted, adopted) and comes back is told again.
 */
export class OrphanLog {
  private readonly seen = new Map<string, Set<string>>();

  constructor(private readonly log: Logger) {}

  /** The host's orphans as of its latest plan (the whole list). */
  report(hostId: string, orphans: readonly Domain[]): void {
    const before = this.seen.get(hostId);
    if (orphans.length === 0) {
      this.seen.delete(hostId);
      return;
    }
    const now = new Set<string>();
    for (const d of orphans) {
      now.add(d.vmId);
      if (before?.has(d.vmId)) continue;
      this.log.warn(
        { vm: d.name, vmId: d.vmId, host: hostId, generation: d.generation },
        "orphan domain found: no VM record accounts for it (berth host orphans HOST: delete or adopt it)",
      );
    }
    this.seen.set(hostId, now);
  }
}
