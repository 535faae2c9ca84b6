import type { Resources } from "@berth/api";
import { invalidArgument, RESOURCE_FIELD, RESOURCE_NAMES, type ResourceName } from "@berth/core";
import type { HostSnapshot } from "./types.js";

/**
 * Scheduler configuration, as an operator writes it. Allocation ratio and reserve are per
 * resource: allocatable = floor(ratio × physical − reserved).
 */
export interface SchedulerOptions {
  /** Overcommit factor per resource, each ≥ 1. Defaults: vcpus 4, memory 1, disk 1. */
  allocationRatio?: Partial<Resources>;
  /** Held back per host for the hypervisor itself. Defaults: 0 vCPU, 1024 MiB, 0 GiB. */
  reserved?: Partial<Resources>;
  /**
   * Weight of each weigher by name, each ≥ 0. When given, it is the whole set: weighers it does
   * not name weigh 0. Default: `{ leastAllocated: 1 }` (spread).
   */
  weights?: Record<string, number>;
}

/** {@link SchedulerOptions} with defaults applied and values checked; frozen. */
export interface ResolvedSchedulerOptions {
  readonly allocationRatio: Readonly<Resources>;
  readonly reserved: Readonly<Resources>;
  /** One entry per known weigher, in pipeline order. */
  readonly weights: Readonly<Record<string, number>>;
}

export const DEFAULT_ALLOCATION_RATIO: Readonly<Resources> = Object.freeze({ vcpus: 4, memoryMib: 1, diskGib: 1 });
export const DEFAULT_RESERVED: Readonly<Resources> = Object.freeze({ vcpus: 0, memoryMib: 1024, diskGib: 0 });
export const DEFAULT_WEIGHTS: Readonly<Record<string, number>> = Object.freeze({ leastAllocated: 1 });

/**
 * Applies defaults and validates, against the weighers in `weigherNames` (the default pipeline's
 * when omitted — see pipeline.ts). Throws BerthError INVALID_ARGUMENT naming the option at fault,
 * e.g. `scheduler.allocation_ratio.vcpus: must be a number ≥ 1 (got 0.5)`.
 */
export function resolveSchedulerOptionsFor(
  weigherNames: readonly string[],
  options: SchedulerOptions = {},
): ResolvedSchedulerOptions {
  const allocationRatio = resolveVector(
    "scheduler.allocation_ratio",
    options.allocationRatio,
    DEFAULT_ALLOCATION_RATIO,
    (v) => typeof v === "number" && Number.isFinite(v) && v >= 1,
    "must be a number ≥ 1",
  );
  const reserved = resolveVector(
    "scheduler.reserved",
    options.reserved,
    DEFAULT_RESERVED,
    (v) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0,
    "must be a whole number ≥ 0",
  );
  const given: Record<string, unknown> = options.weights ?? DEFAULT_WEIGHTS;
  for (const [name, w] of Object.entries(given)) {
    if (!weigherNames.includes(name)) {
      throw invalidArgument(`scheduler.weights.${name}`, `unknown weigher (known: ${weigherNames.join(", ")})`);
    }
    if (typeof w !== "number" || !Number.isFinite(w) || w < 0) {
      throw invalidArgument(`scheduler.weights.${name}`, `must be a number ≥ 0 (got ${String(w)})`);
    }
  }
  const weights: Record<string, number> = {};
  for (const name of weigherNames) weights[name] = (given[name] as number | undefined) ?? 0;
  return Object.freeze({
    allocationRatio: Object.freeze(allocationRatio),
    reserved: Object.freeze(reserved),
    weights: Object.freeze(weights),
  });
}

function resolveVector(
  prefix: string,
  given: Partial<Resources> | undefined,
  defaults: Readonly<Resources>,
  valid: (v: unknown) => boolean,
  rule: string,
): Resources {
  const out = { ...defaults };
  if (given === undefined) return out;
  for (const key of Object.keys(given)) {
    if (!(RESOURCE_NAMES as readonly string[]).includes(key)) {
      throw invalidArgument(`${prefix}.${key}`, `unknown resource (known: ${RESOURCE_NAMES.join(", ")})`);
    }
  }
  for (const key of RESOURCE_NAMES) {
    const v: unknown = given[key];
    if (v === undefined) continue;
    if (!valid(v)) throw invalidArgument(`${prefix}.${RESOURCE_FIELD[key]}`, `${rule} (got ${String(v)})`);
    out[key] = v as number;
  }
  return out;
}

/** floor(ratio × physical − reserved) for one resource, never negative; immune to float noise like 1.15 × 100. */
export function allocatableOf(
  host: Pick<HostSnapshot, "capacity">,
  key: ResourceName,
  options: Pick<ResolvedSchedulerOptions, "allocationRatio" | "reserved">,
): number {
  const exact = options.allocationRatio[key] * host.capacity[key] - options.reserved[key];
  const nearest = Math.round(exact);
  const value = Math.abs(exact - nearest) <= 1e-9 * Math.max(1, Math.abs(exact)) ? nearest : Math.floor(exact);
  return Math.max(0, value);
}

/**
 * What the scheduler may place on `host` in total: per resource floor(ratio × physical − reserved),
 * never negative. Free capacity is this minus `host.allocated` (negative when over-committed).
 */
export function allocatable(
  host: Pick<HostSnapshot, "capacity">,
  options: Pick<ResolvedSchedulerOptions, "allocationRatio" | "reserved">,
): Resources {
  return {
    vcpus: allocatableOf(host, "vcpus", options),
    memoryMib: allocatableOf(host, "memoryMib", options),
    diskGib: allocatableOf(host, "diskGib", options),
  };
}
