import { GroupPolicy, type AllocationRatio, type ClusterConfig, type Resources, type SchedulerConfig } from "@berth/api";
import { BerthError, ErrorCode, invalidArgument } from "@berth/core";
import {
  resolveSchedulerOptions,
  type GroupPolicy as PlacementGroupPolicy,
  type ResolvedSchedulerOptions,
  type SchedulerOptions,
} from "@berth/scheduler";

/**
 * The scheduler's form of a wire AllocationRatio: only the ratios that are set (0 means unset on
 * the wire), under the resource names. Anything but 0 is set — NaN included, so that validation
 * sees it (NaN is falsy: a truthiness test let it be stored as "unset").
 */
export function ratioOf(ratio: AllocationRatio | undefined): Partial<Resources> {
  const out: Partial<Resources> = {};
  if (!ratio) return out;
  if (ratio.vcpus !== 0) out.vcpus = ratio.vcpus;
  if (ratio.memory !== 0) out.memoryMib = ratio.memory;
  if (ratio.disk !== 0) out.diskGib = ratio.disk;
  return out;
}

/** The scheduler options a stored SchedulerConfig stands for (unset fields left to the defaults). */
export function schedulerOptionsOf(config: SchedulerConfig | undefined): SchedulerOptions {
  if (!config) return {};
  const allocationRatio = ratioOf(config.allocationRatio);
  return {
    ...(config.preset ? { preset: config.preset as NonNullable<SchedulerOptions["preset"]> } : {}),
    ...(Object.keys(config.weights).length > 0 ? { weights: { ...config.weights } } : {}),
    ...(Object.keys(allocationRatio).length > 0 ? { allocationRatio } : {}),
    ...(config.reserved ? { reserved: { ...config.reserved } } : {}),
    ...(config.maxVmsPerHost ? { maxVmsPerHost: config.maxVmsPerHost } : {}),
    ...(config.filters.length > 0 ? { filters: [...config.filters] } : {}),
    ...(config.seed ? { seed: config.seed } : {}),
  };
}

/**
 * Resolves the cluster's scheduler settings. Throws INVALID_ARGUMENT naming the field
 * (`config.scheduler.weights.x: ...`) when they are not valid: UpdateClusterConfig calls it before
 * writing, so a stored config always resolves.
 */
export function resolveClusterScheduler(config: ClusterConfig | undefined): ResolvedSchedulerOptions {
  try {
    return resolveSchedulerOptions(schedulerOptionsOf(config?.scheduler));
  } catch (e) {
    if (e instanceof BerthError && e.code === ErrorCode.InvalidArgument) {
      const field = e.field?.startsWith("scheduler") ? `config.${e.field}` : `config.scheduler`;
      throw invalidArgument(field, e.message.replace(/^[^:]*: /, ""));
    }
    throw e;
  }
}

const POLICY: Partial<Record<GroupPolicy, PlacementGroupPolicy>> = {
  [GroupPolicy.GROUP_POLICY_ANTI_AFFINITY]: "anti-affinity",
  [GroupPolicy.GROUP_POLICY_AFFINITY]: "affinity",
  [GroupPolicy.GROUP_POLICY_SOFT_ANTI_AFFINITY]: "soft-anti-affinity",
  [GroupPolicy.GROUP_POLICY_SOFT_AFFINITY]: "soft-affinity",
};

/** The scheduler's name of a group policy; undefined for UNSPECIFIED or unknown values. */
export const placementPolicyOf = (policy: GroupPolicy): PlacementGroupPolicy | undefined => POLICY[policy];
