import { BerthError, ErrorCode } from "@berth/core";
import { capacityFilter, groupsFilter, labelsFilter, maxVmsFilter, networksFilter, pinnedFilter, readyFilter, volumesFilter } from "./filters.js";
import {
  resolveSchedulerOptionsFor,
  type Preset,
  type ResolvedSchedulerOptions,
  type SchedulerCatalog,
  type SchedulerOptions,
} from "./options.js";
import type { Filter, Weigher } from "./stage.js";
import {
  alignedFitWeigher,
  balancedWeigher,
  groupAffinityWeigher,
  imageLocalityWeigher,
  instanceCountWeigher,
  leastAllocatedWeigher,
  mostAllocatedWeigher,
} from "./weighers.js";

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
 * Filters run in order and a host stops at the first that fails, so the order decides both the cost
 * of a decision (most hosts should be dropped by the cheap, selective checks before the costlier
 * ones run) and which reason an operator reads (the most fundamental first):
 *   1. `ready`    — a host that is down or cordoned takes nothing, whatever else its numbers say
 *                   (they may be stale); two boolean reads, the cheapest check of all.
 *   2. `pinned`   — one set lookup; when a request pins hosts it is by far the most selective
 *                   filter (all but a handful of hosts go here, with the reason that matters).
 *   3. `volumes`  — one string compare; a VM whose data volumes are bound to a host can go to that
 *                   host only, so it is as selective as a pin of one host and as cheap, and its
 *                   reason (where the data is) is what an operator must know first. After
 *                   `pinned`: a pin is the operator's own word, and the pinned hosts' reasons then
 *                   say which of them lacks the data.
 *   4. `labels`   — a few string compares per requested label; zone/hardware constraints usually
 *                   drop whole swathes of the fleet.
 *   5. `networks` — one set lookup per NIC (at most 8); like labels a fact of the host, usually met
 *                   by most hosts (a lab network on a few is the exception), and after labels
 *                   because an operator's zone choice is the more fundamental reason.
 *   6. `maxVms`   — one integer compare against a cluster limit.
 *   7. `groups`   — hard affinity / anti-affinity; one map lookup per host against facts computed
 *                   once per decision (which hosts hold members).
 *   8. `capacity` — per-resource arithmetic under ratios and reserves (with per-host overrides):
 *                   the most work per host, and its reason is the most detailed, so it comes last,
 *                   where it only runs on hosts that could otherwise take the VM.
 * `SchedulerOptions.filters` may disable some or reorder them.
 *
 * Weighers are summed (Σ wᵢ·gᵢ), so their order does not change a decision; it fixes the order of
 * the `scores` in each verdict. Weighers with weight 0 are not run.
 */
export const DEFAULT_PIPELINE: Pipeline = definePipeline(
  [readyFilter, pinnedFilter, volumesFilter, labelsFilter, networksFilter, maxVmsFilter, groupsFilter, capacityFilter],
  [leastAllocatedWeigher, mostAllocatedWeigher, alignedFitWeigher, balancedWeigher, groupAffinityWeigher, instanceCountWeigher, imageLocalityWeigher],
);

/**
 * Each preset's weights (weighers not named weigh 0); `SchedulerOptions.weights` overrides them
 * one by one. Normalised scores are in [0, 1], so a weight is the most a weigher can add.
 *   - `spread` (default): leastAllocated 1, groupAffinity 2, imageLocality 0.1 — the emptiest host
 *     wins. (Pure, so that the incremental engine can keep hosts in score order; add
 *     `instanceCount` to taste.)
 *   - `pack`: alignedFit 1, groupAffinity 2, imageLocality 0.02 — best fit, steered so that each host's mix of
 *     resources follows the fleet's demand (hosts fill on every resource at once); plain best fit
 *     is `weights: { alignedFit: 0, mostAllocated: 1 }`.
 *   - `balanced`: balanced 1, leastAllocated 0.25, groupAffinity 2, imageLocality 0.1 — keep each host's vCPU, memory
 *     and disk fractions even, then prefer room.
 * groupAffinity weighs 2 in every preset: a soft group policy outranks resource preferences, and
 * yields only when the filters leave no host that honours it (without a soft group it is equal on
 * every host and changes nothing).
 *
 * imageLocality (1 on a host holding the VM's image, 0 elsewhere; equal on every host for a VM
 * without an image, so it changes nothing then) only breaks near-ties: a host without the image
 * fetches it once, which costs seconds at the VM's first start, while a host chosen against the
 * resource weighers stays unbalanced (or a packed fleet keeps an extra host open) for the months
 * its VMs run. A weight w lets a holder win over a host whose normalised resource score is at most
 * w better, i.e. within w of the candidates' range, and exact ties (equally empty hosts, the
 * empty hosts pack opens) go to a holder whatever w is:
 *   - `spread` 0.1 and `balanced` 0.1: a holder wins within a tenth of the candidates' range of
 *     free room (balanced: of its 1.25 resource weight, 8 %);
 *   - `pack` 0.02: best fit's range is anchored by the empty hosts (raw −10, against −1 to −3
 *     for the open hosts that compete), so those sit in its top fifth: a tenth of the whole range
 *     would let a holder at 38 % free beat a host at 20 % free and undo best fit; 0.02, a tenth of
 *     that fifth, lets it win at about 24 % free against 20 %.
 * So the weight never beats capacity: the filters decide first, and the resource weigher decides
 * anything but a near-tie.
 */
export const PRESET_WEIGHTS: Readonly<Record<Preset, Readonly<Record<string, number>>>> = Object.freeze({
  spread: Object.freeze({ leastAllocated: 1, groupAffinity: 2, imageLocality: 0.1 }),
  pack: Object.freeze({ alignedFit: 1, groupAffinity: 2, imageLocality: 0.02 }),
  balanced: Object.freeze({ balanced: 1, leastAllocated: 0.25, groupAffinity: 2, imageLocality: 0.1 }),
});

/** The default pipeline's stage names and presets: what `resolveSchedulerOptions` validates against. */
export const DEFAULT_CATALOG: SchedulerCatalog = Object.freeze({
  filterNames: Object.freeze(DEFAULT_PIPELINE.filters.map((f) => f.name)),
  weigherNames: Object.freeze(DEFAULT_PIPELINE.weighers.map((w) => w.name)),
  presets: PRESET_WEIGHTS,
});

/**
 * Applies defaults — allocation ratio vcpus 4, memory 1, disk 1; reserved 0 vCPU, 1024 MiB, 0 GiB;
 * preset `spread`; no VM limit; all filters; seed 0 — and validates against the default pipeline.
 * Throws BerthError INVALID_ARGUMENT naming the option
 * (`scheduler.allocation_ratio.vcpus: must be a number from 1 to 100 (got 0.5)`,
 * `scheduler.weights.mostAllocated: must be a number from 0 to 1000 (got -1)`).
 */
export function resolveSchedulerOptions(options?: SchedulerOptions): ResolvedSchedulerOptions {
  return resolveSchedulerOptionsFor(DEFAULT_CATALOG, options);
}
