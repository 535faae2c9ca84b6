import type { Resources } from "@berth/api";
import { invalidArgument, quote, RESOURCE_FIELD, RESOURCE_NAMES, type ResourceName } from "@berth/core";
import type { HostSnapshot } from "./types.js";

/** A named set of weigher weights: `spread` (least allocated), `pack` (best fit), `balanced`. */
export type Preset = "spread" | "pack" | "balanced";

/** Every {@link Preset}, in the order messages list them. */
export const PRESETS: readonly Preset[] = Object.freeze(["spread", "pack", "balanced"]);

/**
 * Scheduler configuration, as an operator writes it. Allocation ratio and reserve are per
 * resource: allocatable = floor(ratio × physical − reserved); a host may override either.
 */
export interface SchedulerOptions {
  /** Overcommit factor per resource, each ≥ 1. Defaults: vcpus 4, memory 1, disk 1. */
  allocationRatio?: Partial<Resources>;
  /** Held back per host for the hypervisor itself. Defaults: 0 vCPU, 1024 MiB, 0 GiB. */
  reserved?: Partial<Resources>;
  /** The weights to start from (see pipeline.ts for each preset's). Default: `spread`. */
  preset?: Preset;
  /**
   * Weight overrides by weigher name, each a finite number ≥ 0, merged over the preset's weights
   * (weighers it does not name keep the preset's weight). An unknown name is INVALID_ARGUMENT.
   */
  weights?: Record<string, number>;
  /** At most this many VMs per host (the `maxVms` filter); 0 or absent: unlimited. */
  maxVmsPerHost?: number;
  /**
   * The filters to run, in the order to run them. Default: all of the pipeline's, in its order.
   * An unknown or repeated name is INVALID_ARGUMENT. `volumes` always runs, listed or not (first,
   * or right after `pinned`): a VM placed away from its data volumes would start on a blank copy.
   */
  filters?: readonly string[];
  /**
   * Tie-break seed: hosts with equal totals are ordered by a hash of (seed, host id). 0 or absent:
   * by host id. A whole number (safe integer).
   */
  seed?: number;
  /**
   * How long, nominally, placeVms may search for a better packing of a gang (milliseconds, a whole
   * number from 0 to 10,000; 0: no search, request order only). Used only when packing is the goal
   * (the `pack` preset, or `mostAllocated` / `alignedFit` weighting). The scheduler reads no
   * clock: the budget is a count of host checks (one VM through the filters on one host),
   * `GANG_CHECKS_PER_MS` (170) per millisecond, calibrated on the benchmark machine; the answer is
   * the same on any machine, only the time it takes differs.
   * @default 200
   */
  gangSearchMs?: number;
}

/** {@link SchedulerOptions} with defaults applied and values checked; frozen. */
export interface ResolvedSchedulerOptions {
  readonly allocationRatio: Readonly<Resources>;
  readonly reserved: Readonly<Resources>;
  /** One entry per known weigher, in pipeline order: the preset's weights with the overrides applied. */
  readonly weights: Readonly<Record<string, number>>;
  /** The preset the weights started from (absent in hand-built options: `spread`). */
  readonly preset?: Preset;
  /** 0 or absent: unlimited. */
  readonly maxVmsPerHost?: number;
  /** The enabled filters, in order; absent: all of the pipeline's, in its order. */
  readonly filters?: readonly string[];
  /** 0 or absent: ties go to the smallest host id. */
  readonly seed?: number;
  /** The gang search budget in nominal ms; absent: the default (200, `DEFAULT_GANG_SEARCH_MS`). */
  readonly gangSearchMs?: number;
}

/** The largest cluster allocation ratio accepted (as an agent's own ratio in Hello). */
export const MAX_ALLOCATION_RATIO = 100;

/** The largest cluster reserve per resource: what the largest host an agent may report has (Hello's capacity bounds). */
export const MAX_RESERVED: Readonly<Resources> = Object.freeze({ vcpus: 1 << 20, memoryMib: 1 << 30, diskGib: 1 << 30 });

/** The largest weigher weight accepted (weights are relative: a normalised score is at most 1). */
export const MAX_WEIGHT = 1000;

/** What options are validated against: the names of a pipeline's stages and its presets' weights. */
export interface SchedulerCatalog {
  readonly filterNames: readonly string[];
  readonly weigherNames: readonly string[];
  readonly presets: Readonly<Record<Preset, Readonly<Record<string, number>>>>;
}

export const DEFAULT_ALLOCATION_RATIO: Readonly<Resources> = Object.freeze({ vcpus: 4, memoryMib: 1, diskGib: 1 });
export const DEFAULT_RESERVED: Readonly<Resources> = Object.freeze({ vcpus: 0, memoryMib: 1024, diskGib: 0 });

/**
 * Applies defaults and validates against `catalog` (the default pipeline's via
 * `resolveSchedulerOptions` — see pipeline.ts). Throws BerthError INVALID_ARGUMENT naming the option
 * at fault, e.g. `scheduler.allocation_ratio.vcpus: must be a number ≥ 1 (got 0.5)`,
 * `scheduler.preset: unknown preset 'x' (spread, pack, balanced)`.
 */
export function resolveSchedulerOptionsFor(catalog: SchedulerCatalog, options: SchedulerOptions = {}): ResolvedSchedulerOptions {
  const allocationRatio = resolveVector(
    "scheduler.allocation_ratio",
    options.allocationRatio,
    DEFAULT_ALLOCATION_RATIO,
    () => (v) => typeof v === "number" && Number.isFinite(v) && v >= 1 && v <= MAX_ALLOCATION_RATIO,
    () => `must be a number from 1 to ${MAX_ALLOCATION_RATIO}`,
  );
  const reserved = resolveVector(
    "scheduler.reserved",
    options.reserved,
    DEFAULT_RESERVED,
    (key) => (v) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0 && v <= MAX_RESERVED[key],
    (key) => `must be a whole number from 0 to ${MAX_RESERVED[key]}`,
  );

  const preset: unknown = options.preset ?? "spread";
  if (typeof preset !== "string" || !(PRESETS as readonly string[]).includes(preset)) {
    throw invalidArgument("scheduler.preset", `unknown preset '${quote(preset)}' (${PRESETS.join(", ")})`);
  }
  const base = catalog.presets[preset as Preset];
  const overrides: Record<string, unknown> = options.weights ?? {};
  for (const [name, w] of Object.entries(overrides)) {
    if (!catalog.weigherNames.includes(name)) {
      throw invalidArgument(`scheduler.weights.${quote(name)}`, `unknown weigher (known: ${catalog.weigherNames.join(", ")})`);
    }
    if (typeof w !== "number" || !Number.isFinite(w) || w < 0 || w > MAX_WEIGHT) {
      throw invalidArgument(`scheduler.weights.${name}`, `must be a number from 0 to ${MAX_WEIGHT} (got ${quote(w)})`);
    }
  }
  const weights: Record<string, number> = {};
  for (const name of catalog.weigherNames) weights[name] = (overrides[name] as number | undefined) ?? base[name] ?? 0;

  const maxVms: unknown = options.maxVmsPerHost ?? 0;
  if (typeof maxVms !== "number" || !Number.isSafeInteger(maxVms) || maxVms < 0) {
    throw invalidArgument("scheduler.max_vms_per_host", `must be a whole number ≥ 0 (got ${quote(maxVms)})`);
  }

  const seed: unknown = options.seed ?? 0;
  if (typeof seed !== "number" || !Number.isSafeInteger(seed)) {
    throw invalidArgument("scheduler.seed", `must be a whole number (got ${quote(seed)})`);
  }

  const gangSearchMs: unknown = options.gangSearchMs;
  if (gangSearchMs !== undefined && !(typeof gangSearchMs === "number" && Number.isSafeInteger(gangSearchMs) && gangSearchMs >= 0 && gangSearchMs <= 10_000)) {
    throw invalidArgument("scheduler.gang_search_ms", `must be a whole number from 0 to 10000 (got ${quote(gangSearchMs)})`);
  }

  const resolved: {
    allocationRatio: Readonly<Resources>;
    reserved: Readonly<Resources>;
    weights: Readonly<Record<string, number>>;
    preset: Preset;
    maxVmsPerHost: number;
    seed: number;
    filters?: readonly string[];
    gangSearchMs?: number;
  } = {
    allocationRatio: Object.freeze(allocationRatio),
    reserved: Object.freeze(reserved),
    weights: Object.freeze(weights),
    preset: preset as Preset,
    maxVmsPerHost: maxVms,
    seed,
  };
  if (gangSearchMs !== undefined) resolved.gangSearchMs = gangSearchMs;
  if (options.filters !== undefined) resolved.filters = Object.freeze(resolveFilters(catalog.filterNames, options.filters));
  return Object.freeze(resolved);
}

/** The filter a custom list cannot leave out. */
const ALWAYS_RUN_FILTER = "volumes";

function resolveFilters(known: readonly string[], given: unknown): string[] {
  if (!Array.isArray(given)) throw invalidArgument("scheduler.filters", "must be a list of filter names");
  const out: string[] = [];
  given.forEach((name: unknown, i) => {
    if (typeof name !== "string" || !known.includes(name)) {
      throw invalidArgument(`scheduler.filters[${i}]`, `unknown filter '${quote(name)}' (known: ${known.join(", ")})`);
    }
    if (out.includes(name)) throw invalidArgument(`scheduler.filters[${i}]`, `filter '${name}' listed twice`);
    out.push(name);
  });
  // Not the operator's to drop: without it a VM with volumes could land away from them, and its
  // host would make empty volumes of the same ids (a config from before volumes lacks it, too).
  if (known.includes(ALWAYS_RUN_FILTER) && !out.includes(ALWAYS_RUN_FILTER)) {
    const pinned = out.indexOf("pinned");
    out.splice(pinned + 1, 0, ALWAYS_RUN_FILTER);
  }
  return out;
}

function resolveVector(
  prefix: string,
  given: Partial<Resources> | undefined,
  defaults: Readonly<Resources>,
  valid: (key: ResourceName) => (v: unknown) => boolean,
  rule: (key: ResourceName) => string,
): Resources {
  const out = { ...defaults };
  if (given === undefined) return out;
  for (const key of Object.keys(given)) {
    if (!(RESOURCE_NAMES as readonly string[]).includes(key)) {
      throw invalidArgument(`${prefix}.${quote(key)}`, `unknown resource (known: ${RESOURCE_NAMES.join(", ")})`);
    }
  }
  for (const key of RESOURCE_NAMES) {
    const v: unknown = given[key];
    if (v === undefined) continue;
    if (!valid(key)(v)) throw invalidArgument(`${prefix}.${RESOURCE_FIELD[key]}`, `${rule(key)} (got ${quote(v)})`);
    out[key] = v as number;
  }
  return out;
}

/** floor(x), except that x within float noise of a whole number (1.15 × 100) counts as that number. */
function floorExact(exact: number): number {
  const nearest = Math.round(exact);
  return Math.abs(exact - nearest) <= 1e-9 * Math.max(1, Math.abs(exact)) ? nearest : Math.floor(exact);
}

/**
 * floor(ratio × physical − reserved) for one resource, never negative; the host's own ratio and
 * reserve win over the cluster's. Immune to float noise like 1.15 × 100.
 */
export function allocatableOf(
  host: Pick<HostSnapshot, "capacity" | "allocationRatio" | "reserved">,
  key: ResourceName,
  options: Pick<ResolvedSchedulerOptions, "allocationRatio" | "reserved">,
): number {
  const ratio = host.allocationRatio?.[key] ?? options.allocationRatio[key];
  const reserve = host.reserved?.[key] ?? options.reserved[key];
  return Math.max(0, floorExact(ratio * host.capacity[key] - reserve));
}

/**
 * What the scheduler may place on `host` in total: per resource floor(ratio × physical − reserved),
 * never negative, with the host's overrides applied. Free capacity is this minus `host.allocated`
 * (negative when over-committed).
 */
export function allocatable(
  host: Pick<HostSnapshot, "capacity" | "allocationRatio" | "reserved">,
  options: Pick<ResolvedSchedulerOptions, "allocationRatio" | "reserved">,
): Resources {
  return {
    vcpus: allocatableOf(host, "vcpus", options),
    memoryMib: allocatableOf(host, "memoryMib", options),
    diskGib: allocatableOf(host, "diskGib", options),
  };
}
