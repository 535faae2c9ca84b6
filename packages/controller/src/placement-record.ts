import type { PlacementRecord } from "@berth/api";
import type { HostVerdict } from "@berth/scheduler";

/**
 * The explanation runs the scheduler's explaining path (placeVm) over the snapshots the decision
 * was made on: 4-6 µs per host verdict (hosts × VMs of the request) on a 2-core machine, against
 * 100-350 µs for the rest of a create. An operator's create on a lab cluster pays well under a
 * millisecond; a burst of creates on a big fleet would run several times slower if every one were
 * explained. So explaining takes at most a share of the leader's time ({@link ExplainBudget}:
 * 3 %, measured) and at most {@link EXPLAIN_MAX_VERDICTS} per decision (a few ms of event loop);
 * a create past either records the context without scores (`explained: false`), and `berth plan`
 * explains any placement in full.
 */
export const EXPLAIN_MAX_VERDICTS = 2_048;
/** The share of time explanations may take, over {@link EXPLAIN_WINDOW_MS} (their garbage and bigger records cost about twice as much again, later: bench/placement-record). @default 0.03 */
export const EXPLAIN_TIME_SHARE = 0.03;
/** @default 1000 */
export const EXPLAIN_WINDOW_MS = 1_000;

/**
 * How much time explaining placements has taken lately: a leaky bucket (the time spent, decaying
 * with a time constant of {@link EXPLAIN_WINDOW_MS}); explanations are allowed while it holds less
 * than {@link EXPLAIN_TIME_SHARE} of the window, so under a sustained burst they settle at that
 * share of the time, and an idle controller explains every create.
 */
export class ExplainBudget {
  #spentMs = 0;
  #at = 0;

  constructor(private readonly clock: () => number = () => performance.now()) {}

  /** Whether a decision over `verdicts` host verdicts may be explained now. */
  allows(verdicts: number): boolean {
    return verdicts <= EXPLAIN_MAX_VERDICTS && this.spentMs() < EXPLAIN_TIME_SHARE * EXPLAIN_WINDOW_MS;
  }

  /** Records an explanation that took `ms`. */
  spend(ms: number): void {
    this.#spentMs = this.spentMs() + ms;
    this.#at = this.clock();
  }

  /** The time in the bucket now. */
  spentMs(): number {
    return this.#spentMs * Math.exp(-(this.clock() - this.#at) / EXPLAIN_WINDOW_MS);
  }
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
