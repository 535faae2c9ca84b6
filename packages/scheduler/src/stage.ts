import type { ResolvedSchedulerOptions } from "./options.js";
import type { HostSnapshot, PlacementRequest } from "./types.js";

/**
 * What every stage sees besides the host: the request, the configuration, and the cluster-wide
 * facts computed once per decision.
 */
export interface PlacementContext {
  readonly request: PlacementRequest;
  readonly options: ResolvedSchedulerOptions;
  /** Ids of the hosts (of all given, in id order) holding ≥ 1 member of the request's group; empty without a group. */
  readonly groupHosts: readonly string[];
  /** The request's pinned hosts as a set; undefined when it pins none. */
  readonly pinned: ReadonlySet<string> | undefined;
  /**
   * The fleet's demand direction ({@link fleetDirection} in weighers.ts): per resource, allocated on
   * all hosts given plus the request, over their allocatable. Absent: no direction (alignedFit is
   * then plain best fit); placeVm leaves it out unless alignedFit steers ({@link steers} in weighers.ts:
   * enough usable hosts, enough of them empty).
   */
  readonly fleetDirection?: readonly number[];
  /**
   * Whether a failing filter must say why. `false`: only pass or fail is wanted (the incremental
   * engine asks so; placeVm, whose verdicts an operator reads, never does), and a filter may return
   * {@link FILTER_FAIL} without formatting its reason. @default true
   */
  readonly explain?: boolean;
}

/** Members of `group` already on `host` (0 when the snapshot does not say). */
export const membersOn = (host: HostSnapshot, group: string): number => host.groupMembers?.[group] ?? 0;

export type FilterResult = { readonly pass: true } | { readonly pass: false; readonly reason: string };

export const FILTER_PASS: FilterResult = Object.freeze({ pass: true });
export const filterFail = (reason: string): FilterResult => ({ pass: false, reason });
/** A failure without its reason, for a context with `explain: false`. */
export const FILTER_FAIL: FilterResult = Object.freeze({ pass: false, reason: "" });

/**
 * What a filter's verdict depends on, so that an index may decide it for many hosts at once (it
 * still asks the filter itself; it never restates the rule):
 * - `allocation`: only the host's allocatable capacity (capacity, ratios, reserves), what is
 *   allocated on it, and the request's resources. Two hosts equal in both get the same verdict.
 */
export type FilterScope = "allocation";

/**
 * A feasibility stage: decides alone, for one host, whether the host can take the request. When it
 * cannot, the reason is one line an operator can act on (it appears as `<host>: <name>: <reason>`).
 * Pure and synchronous.
 */
export interface Filter {
  readonly name: string;
  filter(host: HostSnapshot, ctx: PlacementContext): FilterResult;
  /** What the verdict depends on (see {@link FilterScope}); absent: anything in the snapshot. */
  readonly scope?: FilterScope;
  /**
   * Optional index shortcut: the ids of the only hosts that can pass for this request (every other
   * host fails this filter), or undefined when any host might. The hosts listed still go through
   * the filter. E.g. `pinned` returns the pins, `groups` the hosts of a hard-affinity group.
   */
  candidates?(ctx: PlacementContext): Iterable<string> | undefined;
}

/**
 * A scoring stage: a raw score for a host that passed every filter, higher is better, on any scale;
 * the pipeline normalises raw scores to [0, 1] across the candidates before weighting, so a weigher
 * never needs to know the other hosts. Pure and synchronous.
 */
export interface Weigher {
  readonly name: string;
  weigh(host: HostSnapshot, ctx: PlacementContext): number;
}
