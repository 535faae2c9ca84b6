import type { PlacementRecord } from "@berth/api";
import type { HostVerdict } from "@berth/scheduler";

/**
 * How many host verdicts a create may spend on recording its explanation (hosts × VMs of the
 * request). The explanation runs the scheduler's explaining path (placeVm) over the snapshots the
 * decision was made on — about 0.8 µs a host — so up to this size it costs the create path well
 * under a millisecond; beyond it the record says `explained: false` and `berth plan` explains in
 * full. @default 1024
 */
export const EXPLAIN_BUDGET_VERDICTS = 1_024;

/** What every record says, explained or not. */
export interface PlacementContext {
  decidedAtMs: number;
  /** "create", "gang", "relocate" or "migrate" (see vm.proto). */
  cause: string;
  preset: string;
  hostsConsidered: number;
}

/**
 * The record of one decision, from the scheduler's verdicts for every host (`explanation` of
 * placeVm on the decision's snapshots) and the host that was chosen. Pure. The chosen host's scores
 * are its verdict's; the runner-up is the best-scoring other host that passed every filter (ties to
 * the smaller id, as the scheduler's order). When the chosen host has no passing verdict among them
 * (the explanation was of other snapshots), nothing is claimed: `explained` is false.
 */
export function placementRecordOf(explanation: readonly HostVerdict[], chosenHostId: string, ctx: PlacementContext): PlacementRecord {
  const chosen = explanation.find((v) => v.hostId === chosenHostId);
  if (!chosen || !chosen.passed) return unexplainedRecord(ctx);
  const rejectedByFilter: Record<string, number> = {};
  let feasible = 0;
  let runnerUp: (HostVerdict & { passed: true }) | undefined;
  for (const v of explanation) {
    if (!v.passed) {
      rejectedByFilter[v.filter] = (rejectedByFilter[v.filter] ?? 0) + 1;
      continue;
    }
    feasible++;
    if (v.hostId !== chosenHostId && (!runnerUp || v.total > runnerUp.total)) runnerUp = v;
  }
  return {
    ...unexplainedRecord(ctx),
    hostsConsidered: explanation.length,
    hostsFeasible: feasible,
    scores: { ...chosen.scores },
    total: chosen.total,
    runnerUpHost: runnerUp?.hostId ?? "",
    runnerUpTotal: runnerUp?.total ?? 0,
    rejectedByFilter,
    explained: true,
  };
}

/** A record without scores: the decision's context only. */
export function unexplainedRecord(ctx: PlacementContext): PlacementRecord {
  return {
    decidedAtMs: ctx.decidedAtMs,
    cause: ctx.cause,
    preset: ctx.preset,
    hostsConsidered: ctx.hostsConsidered,
    hostsFeasible: 0,
    scores: {},
    total: 0,
    runnerUpHost: "",
    runnerUpTotal: 0,
    rejectedByFilter: {},
    explained: false,
  };
}
