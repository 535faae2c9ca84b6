import { BerthError, ErrorCode } from "@berth/core";
import { capacityFilter, readyFilter } from "./filters.js";
import { resolveSchedulerOptionsFor, type ResolvedSchedulerOptions, type SchedulerOptions } from "./options.js";
import type { Filter, Weigher } from "./stage.js";
import { leastAllocatedWeigher } from "./weighers.js";

/** The stages of a placement, in the order they run. */
export interface Pipeline {
  readonly filters: readonly Filter[];
  readonly weighers: readonly Weigher[];
}

/** Builds a pipeline, refusing duplicate stage names (names key verdicts, scores and weights). */
export function definePipeline(filters: readonly Filter[], weighers: readonly Weigher[]): Pipeline {
  for (const stages of [filters, weighers]) {
    const seen = new Set<string>();
    for (const { name } of stages) {
      if (seen.has(name)) throw new BerthError(ErrorCode.Internal, `scheduler pipeline: stage '${name}' registered twice`);
      seen.add(name);
    }
  }
  return Object.freeze({ filters: Object.freeze([...filters]), weighers: Object.freeze([...weighers]) });
}

/**
 * The one registry of stages.
 *
 * Filters run in order and a host stops at the first that fails, so the order decides which reason
 * an operator reads; it goes from the most fundamental to the most specific:
 *   1. `ready`    — a host that is down or cordoned takes nothing, whatever its capacity says (its
 *                   numbers may be stale); saying "cordoned" beats a capacity line that would not
 *                   help. It is also the cheapest check.
 *   2. `capacity` — per-resource fit under allocation ratios and reserves.
 * Coming: required labels, then affinity / anti-affinity groups, then limits — cheap per-host
 * checks before those that need cluster-wide context.
 *
 * Weighers are summed (Σ wᵢ·gᵢ), so their order does not change a decision; it fixes the order of
 * the `scores` in each verdict. Coming: `mostAllocated` (pack), balance across resources.
 */
export const DEFAULT_PIPELINE: Pipeline = definePipeline([readyFilter, capacityFilter], [leastAllocatedWeigher]);

/**
 * Applies defaults — allocation ratio vcpus 4, memory 1, disk 1; reserved 0 vCPU, 1024 MiB, 0 GiB;
 * weights `{ leastAllocated: 1 }` — and validates against the default pipeline's weighers. Throws
 * BerthError INVALID_ARGUMENT naming the option (`scheduler.allocation_ratio.vcpus: must be a number ≥ 1 (got 0.5)`).
 */
export function resolveSchedulerOptions(options?: SchedulerOptions): ResolvedSchedulerOptions {
  return resolveSchedulerOptionsFor(
    DEFAULT_PIPELINE.weighers.map((w) => w.name),
    options,
  );
}
