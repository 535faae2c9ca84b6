/**
 * The operator's host and migration actions, one definition for every front end: the gRPC
 * handlers (cluster-service.ts) and the dashboard's admin actions call these, so a rule (a bound
 * on the reason, the drain deadline's limit) is never restated. Each checks its input first
 * (INVALID_ARGUMENT naming the field, NOT_FOUND for an unknown host) and needs this controller
 * to lead (NOT_LEADER otherwise); the caller checks who may act.
 */
import { DrainDeadlineAction, MigrationReason, type Host, type Migration } from "@berth/api";
import { BerthError, ErrorCode, invalidArgument, notFound, validateName } from "@berth/core";
import type { LeadingDeps } from "./agent-service.js";
import type { ClusterState } from "./cluster-state.js";

/** What the actions read. */
export interface OperatorActionDeps {
  state: ClusterState;
  leading(): LeadingDeps | undefined;
}

/** The longest drain deadline accepted. */
export const MAX_DRAIN_DEADLINE_MS = 7 * 24 * 3600_000;
/** The longest cordon or drain reason accepted. */
export const MAX_REASON_LENGTH = 256;

/** The leader's parts; NOT_LEADER when this controller does not lead (any more). */
export function leadingNow(deps: Pick<OperatorActionDeps, "leading">): LeadingDeps {
  const l = deps.leading();
  if (!l) throw new BerthError(ErrorCode.NotLeader, "this controller is no longer the leader; retry");
  return l;
}

/** The cached host `id` (a valid name; INVALID_ARGUMENT naming `field` otherwise), NOT_FOUND when there is none. */
export function requireHost(state: ClusterState, id: string, field = "host_id"): Host {
  validateName(id, field);
  const host = state.host(id);
  if (!host) throw notFound(`host '${id}'`);
  return host;
}

function checkReason(reason: string): void {
  if (reason.length > MAX_REASON_LENGTH) throw invalidArgument("reason", `at most ${MAX_REASON_LENGTH} characters (got ${reason.length}: '${reason.slice(0, 32)}…')`);
}

/** Cordons the host (no new VMs) with the operator's reason; the record as written. */
export async function cordonHost(deps: OperatorActionDeps, hostId: string, reason: string): Promise<Host> {
  requireHost(deps.state, hostId);
  checkReason(reason);
  return await leadingNow(deps).hosts.cordon(hostId, reason);
}

/** Uncordons the host and ends its drain (its pending drain migrations fail; those in flight finish). */
export async function uncordonHost(deps: OperatorActionDeps, hostId: string): Promise<Host> {
  requireHost(deps.state, hostId);
  const leading = leadingNow(deps);
  const host = await leading.hosts.uncordon(hostId);
  await leading.migrations.cancelDrain(hostId);
  return host;
}

/** A drain request: `deadlineMs` 0 for none; `onDeadline` LEAVE (or UNSPECIFIED, the same) or STOP. */
export interface DrainRequest {
  hostId: string;
  deadlineMs: number;
  onDeadline: DrainDeadlineAction;
  reason: string;
}

/** Cordons the host and migrates its running VMs away (see MigrationManager.drain); the record as written. */
export async function drainHost(deps: OperatorActionDeps, req: DrainRequest): Promise<Host> {
  requireHost(deps.state, req.hostId);
  if (!Number.isInteger(req.deadlineMs) || req.deadlineMs < 0) throw invalidArgument("deadline_ms", `must be a whole number of milliseconds, 0 for none (got ${String(req.deadlineMs)})`);
  if (req.deadlineMs > MAX_DRAIN_DEADLINE_MS) throw invalidArgument("deadline_ms", `at most 7 days (${MAX_DRAIN_DEADLINE_MS} ms; got ${req.deadlineMs})`);
  if (!Object.values(DrainDeadlineAction).includes(req.onDeadline)) throw invalidArgument("on_deadline", `must be LEAVE or STOP (got ${String(req.onDeadline)})`);
  checkReason(req.reason);
  return await leadingNow(deps).migrations.drain(req.hostId, req.deadlineMs, req.onDeadline, req.reason || "drain");
}

/** An operator's live migration: `targetHost` "" lets the scheduler choose. */
export interface MigrateRequest {
  name: string;
  targetHost: string;
  requestId: string;
  /** Who asked, as the migration record keeps it. */
  requestedBy: string;
}

/** Requests the VM's live migration (see MigrationManager.request); the PENDING record. */
export async function migrateVm(deps: OperatorActionDeps, req: MigrateRequest): Promise<Migration> {
  return await leadingNow(deps).migrations.request({
    vmName: req.name,
    targetHost: req.targetHost,
    reason: MigrationReason.MIGRATION_REASON_OPERATOR,
    requestedBy: req.requestedBy,
    requestId: req.requestId,
  });
}
