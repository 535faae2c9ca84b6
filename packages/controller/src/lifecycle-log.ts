// The controller's log of VM lifecycle steps: one line per step an operator follows a VM by
// (placed, asked to start/stop/delete, running, stopped, failed, deleted, orphan found), each with
// the same fields, so `grep '"vm":"web-1"'` tells a VM's story. Derived from transitions only —
// never per report — so a steady cluster logs nothing.
import { DesiredState, DomainState, VmPhase, type Domain, type Vm } from "@berth/api";
import type { Logger } from "pino";
import type { ClusterState } from "./cluster-state.js";

/** The fields every lifecycle line carries. */
export interface LifecycleFields {
  vm: string;
  vmId: string;
  host: string;
  generation: number;
  [more: string]: unknown;
}

/** One line to log: its level, the fields and a short message. */
export interface LifecycleLine {
  level: "info" | "warn";
  fields: LifecycleFields;
  msg: string;
}

const fieldsOf = (vm: Vm): LifecycleFields => ({ vm: vm.spec?.name ?? "", vmId: vm.id, host: vm.hostId, generation: vm.generation });

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
 * The lifecycle lines one VM record change means (`before` undefined: the record is new; `after`
 * undefined: it was removed). Pure. Rules:
 * - a new record: "placed" (with the placement record's why when it has one);
 * - a new desired state: "start asked", "stop asked" (or "power-off asked"), "delete asked";
 * - the observed phase turning RUNNING or STOPPED: "running on host" / "stopped on host" — not
 *   when the VM only comes back from UNKNOWN as it was (same observed generation and domain
 *   state: its host reconnected, the VM did nothing), nor at the end of a migration (the migration
 *   manager logs that);
 * - turning FAILED, or failing with another error code: "failed" (WARN, with the code; the
 *   logger tells each generation's failure with one code once, however often it is retried);
 * - the record removed: "deleted".
 * A change of host (a relocation after a fence, a migration) is logged where it is decided
 * (host-manager.ts, migration-manager.ts), not here.
 */
export function vmLifecycle(before: Vm | undefined, after: Vm | undefined): LifecycleLine[] {
  if (!after) return before ? [{ level: "info", fields: fieldsOf(before), msg: "VM deleted: its record is removed" }] : [];
  const fields = fieldsOf(after);
  if (!before) return [{ level: "info", fields: { ...fields, ...placementWhy(after) }, msg: `VM placed on ${after.hostId}` }];
  const out: LifecycleLine[] = [];
  if (before.desiredState !== after.desiredState) {
    switch (after.desiredState) {
      case DesiredState.DESIRED_STATE_RUNNING:
        out.push({ level: "info", fields, msg: "VM start asked" });
        break;
      case DesiredState.DESIRED_STATE_STOPPED:
        out.push({ level: "info", fields: { ...fields, force: after.forceStop || undefined }, msg: after.forceStop ? "VM power-off asked" : "VM stop asked" });
        break;
      case DesiredState.DESIRED_STATE_DELETED:
        out.push({ level: "info", fields, msg: "VM delete asked" });
        break;
      default:
        break;
    }
  }
  const was = before.status;
  const now = after.status;
  const wasPhase = was?.phase ?? VmPhase.VM_PHASE_UNSPECIFIED;
  const nowPhase = now?.phase ?? VmPhase.VM_PHASE_UNSPECIFIED;
  const backAsItWas =
    wasPhase === VmPhase.VM_PHASE_UNKNOWN && was?.observedGeneration === now?.observedGeneration && was?.domainState === now?.domainState;
  if (nowPhase !== wasPhase && !backAsItWas && wasPhase !== VmPhase.VM_PHASE_MIGRATING) {
    if (nowPhase === VmPhase.VM_PHASE_RUNNING) out.push({ level: "info", fields, msg: `VM running on ${after.hostId}` });
    if (nowPhase === VmPhase.VM_PHASE_STOPPED) out.push({ level: "info", fields, msg: `VM stopped on ${after.hostId}` });
  }
  if (nowPhase === VmPhase.VM_PHASE_FAILED && (wasPhase !== VmPhase.VM_PHASE_FAILED || was?.errorCode !== now?.errorCode)) {
    const crashed = now?.domainState === DomainState.DOMAIN_STATE_CRASHED && !now.errorCode;
    out.push({
      level: "warn",
      fields: { ...fields, errorCode: now?.errorCode || (crashed ? "CRASHED" : undefined), attempts: now?.attempts || undefined, permanent: now?.permanent || undefined, why: now?.message.slice(0, 256) || undefined },
      msg: crashed ? `VM crashed on ${after.hostId}` : `VM failed on ${after.hostId}`,
    });
  }
  return out;
}

/**
 * Logs {@link vmLifecycle}'s lines for every VM record change the cache sees, from now on. Only
 * the leader should run one (followers see the same changes; one line per step for the cluster).
 * Returns the function that stops it.
 */
export function logVmLifecycle(state: ClusterState, log: Logger): () => void {
  // A retried command shows PENDING between its failed attempts: the same failure (generation and
  // code) is told once, until the VM runs or stops again.
  const failuresTold = new Map<string, string>();
  return state.subscribe((change) => {
    if (change.kind !== "vm") return;
    const lines = change.type === "put" ? vmLifecycle(change.previous, change.vm) : vmLifecycle(change.vm, undefined);
    if (change.type === "delete") failuresTold.delete(change.vm.id);
    for (const line of lines) {
      if (line.level === "warn" && line.fields.errorCode !== undefined) {
        const key = `${line.fields.generation}/${String(line.fields.errorCode)}`;
        if (failuresTold.get(line.fields.vmId) === key) continue;
        failuresTold.set(line.fields.vmId, key);
      } else if (line.msg.startsWith("VM running") || line.msg.startsWith("VM stopped")) {
        failuresTold.delete(line.fields.vmId);
      }
      log[line.level](line.fields, line.msg);
    }
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
