import type { Resources } from "@berth/api";

/**
 * One host as the scheduler sees it: a value the controller builds from its cache for one
 * decision. The scheduler never changes a snapshot.
 */
export interface HostSnapshot {
  id: string;
  /** Physical capacity, before allocation ratios and reserves. */
  capacity: Resources;
  /** Sum of the resources of the VMs placed on the host (desired placement, not measured use). */
  allocated: Resources;
  vmCount: number;
  /** The host's agent is connected and reporting. */
  ready: boolean;
  /** An operator asked for no new VMs on the host. */
  cordoned: boolean;
  labels: Record<string, string>;
}

/** What is to be placed. */
export interface PlacementRequest {
  /** The VM's name, for messages. */
  name: string;
  resources: Resources;
}

/**
 * Why a host was rejected (`passed: false`: the first filter that failed and its reason) or how it
 * scored (`passed: true`: each weigher's normalised score in [0, 1] and the weighted total).
 */
export type HostVerdict =
  | { hostId: string; passed: false; filter: string; reason: string }
  | { hostId: string; passed: true; scores: Record<string, number>; total: number };

/**
 * The scheduler's answer. `explanation` has one verdict per host, sorted by host id: the dry-run
 * view of the decision. When unplaced, `reasons` has one line per host,
 * `<host-id>: <filter>: <reason>`, in the same order (empty when there are no hosts).
 */
export type PlacementDecision =
  | { placed: true; hostId: string; score: number; explanation: HostVerdict[] }
  | { placed: false; reasons: string[]; explanation: HostVerdict[] };
