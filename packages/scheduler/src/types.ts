import type { Resources } from "@berth/api";

/**
 * How the members of a placement group relate:
 * - `anti-affinity` — never two members on one host (a filter);
 * - `affinity` — once the group has members, new members go only to hosts that already have some
 *   (a filter);
 * - `soft-anti-affinity` / `soft-affinity` — the same as preferences (the `groupAffinity`
 *   weigher): fewer / more members on a host is better, but any host that passes the filters may win.
 */
export type GroupPolicy = "anti-affinity" | "affinity" | "soft-anti-affinity" | "soft-affinity";

/** Every {@link GroupPolicy}, for validation and messages. */
export const GROUP_POLICIES: readonly GroupPolicy[] = Object.freeze(["anti-affinity", "affinity", "soft-anti-affinity", "soft-affinity"]);

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
  /**
   * Per-host override of the cluster's allocation ratio, per resource (each a finite number > 0);
   * resources it does not name use the cluster's.
   */
  allocationRatio?: Partial<Resources>;
  /** Per-host override of the cluster's reserve, per resource (each a whole number ≥ 0). */
  reserved?: Partial<Resources>;
  /** Group name → how many members of that group are already on this host (absent: none). */
  groupMembers?: Record<string, number>;
  /**
   * Names of the networks the host offers VMs' NICs (libvirt networks and bridges), active ones
   * only: a defined but stopped libvirt network is not listed. Absent: the host offers none (the
   * `networks` filter rejects it for any request that names a network).
   */
  networks?: ReadonlySet<string>;
  /**
   * Ids (Image.id, not names) of the base images the host holds a copy of. Absent: none. Only the
   * `imageLocality` weigher reads it: a host without the image still passes (it fetches it).
   * Placing a VM on the host does not add its image here (withPlacement leaves it as it is).
   */
  images?: ReadonlySet<string>;
}

/** What is to be placed. */
export interface PlacementRequest {
  /** The VM's name, for messages. */
  name: string;
  resources: Resources;
  /** The host must have each `key=value` label. */
  requiredLabels?: Record<string, string>;
  /** The host must not have `key=value`; the value `"*"` means it must not have the key at all. */
  forbiddenLabels?: Record<string, string>;
  /** The placement group the VM joins, and its policy (see {@link GroupPolicy}). */
  group?: { name: string; policy: GroupPolicy };
  /** When non-empty, only these hosts may be chosen. */
  pinnedHosts?: readonly string[];
  /**
   * The networks of the VM's NICs, in NIC order (a network may repeat: two NICs on one network).
   * Every one must be among the host's `networks` (the `networks` filter). Absent or empty: no NIC
   * constraint.
   */
  networks?: readonly string[];
  /**
   * The id of the image the VM's disk starts from (Image.id). Hosts holding it are preferred
   * (the `imageLocality` weigher); any host may still take the VM. Absent: a blank disk.
   */
  imageId?: string;
  /**
   * The VM's data volumes that are bound to a host, and that host: only it may take the VM (the
   * `volumes` filter; a volume's data lives in one host's pool). `names` are for the reason and
   * must not be empty. Absent when none is bound — a VM without volumes, volumes not yet bound
   * (they bind to the host chosen), or a migration (they travel with the VM; the mover adds their
   * size to `resources.diskGib` instead).
   */
  volumes?: { hostId: string; names: readonly string[] };
}

/**
 * Why a host was rejected (`passed: false`: the first filter that failed and its reason) or how it
 * scored (`passed: true`: each weighted weigher's normalised score in [0, 1] and the weighted total).
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

/**
 * The answer for a gang (several VMs placed all-or-nothing). Placed: one placement per request, in
 * request order. Not placed: the name of the first request that found no host (after the ones before
 * it were placed virtually), that decision's per-host reasons, and no placements at all.
 */
export type GangDecision =
  | { placed: true; placements: { name: string; hostId: string }[] }
  | { placed: false; failed: string; reasons: string[]; placements: [] };
