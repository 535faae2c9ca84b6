import type { PlacementRecord } from "@berth/api";
import type { HostVerdict } from "@berth/scheduler";

/**
 * The explanation runs the scheduler's explaining path (placeVm) over the snapshots the decision
 * was made on: about 0.8 µs per host verdict (hosts × VMs of the request), against 75-100 µs of
 * CPU for the rest of a create. So it is always paid up to {@link EXPLAIN_ALWAYS_VERDICTS} (at most
 * about the create's own cost), and beyond that only for a create that has the controller to itself
 * (no other create in flight: an operator's create on a big fleet), up to
 * {@link EXPLAIN_MAX_VERDICTS} (a few ms). A burst of creates on a big fleet records no scores
 * (`explained: false`) instead of running ten times slower; `berth plan` explains in full.
 */
export const EXPLAIN_ALWAYS_VERDICTS = 128;
/** @see EXPLAIN_ALWAYS_VERDICTS */
export const EXPLAIN_MAX_VERDICTS = 8_192;

/** Whether a decision over `verdicts` host verdicts is explained with `createsInFlight` creates in flight (this one included). Pure. */
export function shouldExplain(verdicts: number, createsInFlight: number): boolean {
  return verdicts <= EXPLAIN_ALWAYS_VERDICTS || (createsInFlight <= 1 && verdicts <= EXPLAIN_MAX_VERDICTS);
}

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
