import { randomUUID } from "node:crypto";
import {
  DesiredState,
  DomainState,
  VmPhase,
  VmStatus,
  type HostVerdict as WireVerdict,
  type Host,
  type PlacementRecord,
  type PlanPlacementResponse,
  type Resources,
  type Vm,
  type VmSpec,
  type Volume,
} from "@berth/api";
import { addResources, BerthError, ErrorCode, alreadyExists, invalidArgument, isBerthError, Limits, notFound, validateVmSpec, validateVmSpecs } from "@berth/core";
import {
  allocatable,
  gangUnplacedError,
  placeVm,
  placeVms,
  unplacedError,
  withPlacement,
  type HostSnapshot,
  type HostVerdict,
  type PlacementRequest,
  type ResolvedSchedulerOptions,
} from "@berth/scheduler";
import { MAX_TXN_OPS, type ClusterStore, type Compare, type Op } from "@berth/store";
import { holdsTarget, type ClusterState } from "./cluster-state.js";
import { NO_METRICS, type Metrics, type ScheduleResult } from "./metrics.js";
import { ExplainBudget, placementRecordOf, unexplainedRecord } from "./placement-record.js";
import { PlacementView, sameSnapshot } from "./placement-view.js";
import type { FencedWriter } from "./fenced-writer.js";
import { decodeVm, encodeGroup, encodeVm, encodeVolume, Keys } from "./keys.js";
import { volumesForCreate, type VolumesForCreate } from "./volumes.js";
import { placementPolicyOf, ratioOf, resolveClusterScheduler } from "./scheduler-config.js";
import { waitUpTo } from "./wait.js";

/** How long a reservation waits for its own write to reach the cache before it is released. */
const CACHE_CATCH_UP_MS = 5_000;
/** Decisions taken again when a chosen host's snapshot was found out of date (each repairs it). */
const MAX_VIEW_REPAIRS = 3;
/** Attempts of a placement whose commit lost a race on a host or group record. */
const MAX_CONFLICT_RETRIES = 3;
/** While hosts reconnect to a new leader, a placement without room looks again this often… */
const RECONNECT_POLL_MS = 200;
/** …this many times at most (the reconnect window, the host down timeout, usually ends first). */
const MAX_RECONNECT_WAITS = 50;

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** An idempotency key: empty (none) or 1-64 characters of [A-Za-z0-9._-]. */
function validateRequestId(id: string): void {
  if (id !== "" && !REQUEST_ID.test(id)) {
    throw invalidArgument("request_id", `'${id.slice(0, 64)}' must be 1-64 characters of letters, digits, '.', '_' or '-'`);
  }
}

/**
 * How a failed create counts as a scheduling attempt: RESOURCE_EXHAUSTED is unschedulable; the
 * caller's own mistakes (a bad spec, a taken name, an unknown group or pin) are no attempt at all;
 * anything else is an error.
 */
function scheduleResultOf(e: unknown): ScheduleResult | undefined {
  if (isBerthError(e, ErrorCode.ResourceExhausted)) return "unschedulable";
  for (const code of [ErrorCode.InvalidArgument, ErrorCode.AlreadyExists, ErrorCode.NotFound, ErrorCode.FailedPrecondition]) {
    if (isBerthError(e, code)) return undefined;
  }
  return "error";
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A commit lost a race on a host or group record; the store was at `revision` then. */
class PlacementConflict extends BerthError {
  constructor(
    message: string,
    readonly revision: number,
  ) {
    super(ErrorCode.Conflict, message);
  }
}

/** Async locks by name; several are taken in the given (sorted) order, so callers cannot deadlock. */
class KeyedLocks {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(names: readonly string[], fn: () => Promise<T>): Promise<T> {
    const releases: (() => void)[] = [];
    try {
      for (const name of names) {
        const prior = this.tails.get(name) ?? Promise.resolve();
        let release!: () => void;
        const mine = new Promise<void>((r) => (release = r));
        const tail = prior.then(() => mine);
        this.tails.set(name, tail);
        releases.push(() => {
          release();
          if (this.tails.get(name) === tail) this.tails.delete(name);
        });
        await prior;
      }
      return await fn();
    } finally {
      for (const r of releases.reverse()) r();
    }
  }
}

interface Reservation {
  /** The VM's name (a volume's, for a volume's). */
  name: string;
  hostId: string;
  resources: Resources;
  group: string;
  /** A data volume being bound to the host (its disk), not a VM. */
  volume?: boolean;
}

/** What a host offers VMs beyond capacity, as its agent last reported it (see HostSnapshot). */
export interface HostOffers {
  /** Active networks, by name. */
  networks: ReadonlySet<string>;
  /** Held images, by id. */
  images: ReadonlySet<string>;
}

/**
 * How a VM is to be placed: `create` — a new VM, whose bound volumes pin it to their host and
 * whose unbound ones bind to the chosen host (their disk asked for there); `move` — a VM that
 * exists (migration, relocation, a rebalance move checked), whose volumes travel with it (their
 * disk asked for on the target, no pin); `own` — the VM's own request, its volumes left out
 * altogether (the rebalancer's input, which gives the planner their size apart).
 */
export type RequestMode = "create" | "move" | "own";

/**
 * Places new VMs and commits them. Between the scheduler's decision and the moment the committed
 * records reach the cache, each VM's resources and group membership are held as a reservation, so
 * concurrent requests see each other and cannot overfill a host or break a group. The commit is one
 * fenced transaction: create-if-absent on every VM key (names are unique), the hosts' records
 * unchanged, and every group touched rewritten under a compare on its revision, so two placements
 * into one group conflict on the group record even if the reservations were bypassed.
 *
 * Creates are decided by the scheduler's incremental engine, kept current by a
 * {@link PlacementView} from the same per-host snapshots {@link snapshot} builds (its cost is the
 * hosts that changed, not the fleet); the explaining path (placeVm on a full snapshot) serves
 * `plan`, relocations, migration targets and the per-host reasons of RESOURCE_EXHAUSTED (the
 * engine computes those with placeVm on its own snapshots, the same ones).
 */
export class Placer {
  private readonly reservations = new Map<string, Reservation>();
  /** The same reservations by host (a host's snapshot reads its own, not every one in flight). */
  private readonly reservationsByHost = new Map<string, Map<string, Reservation>>();
  /** The engine the creates are decided by (see the class comment). */
  readonly view: PlacementView;
  private readonly groupLocks = new KeyedLocks();
  /** Create calls being placed and committed now (bounded by maxCreatesInFlight). */
  private createsInFlight = 0;
  /** Create calls refused because maxCreatesInFlight were in flight. */
  shedCreates = 0;
  #pendingVms = 0;
  /**
   * The time explanations may take (see placement-record.ts). Replaceable, so a benchmark can run
   * the create path without explanations as its reference. @default a fresh ExplainBudget
   */
  explainBudget: Pick<ExplainBudget, "allows" | "spend"> = new ExplainBudget();
  private optionsCache: { revision: number; options: ResolvedSchedulerOptions } | undefined;

  constructor(
    private readonly store: ClusterStore,
    private readonly state: ClusterState,
    /** Whether the host takes new VMs now: its agent's stream is live and its hypervisor not reported down. */
    private readonly acceptsPlacements: (hostId: string) => boolean,
    private readonly now: () => number,
    /**
     * Whether hosts are still reconnecting to a newly elected leader (`waiting`: the window is open)
     * and how many of those ready before it are still `missing`: a placement that finds no room
     * then waits for them, and answers UNAVAILABLE (retryable), never "no room", if they stay away.
     */
    private readonly hostsReconnecting: () => { waiting: boolean; missing: number } = () => ({ waiting: false, missing: 0 }),
    /** Creates placed at once; one more is refused with UNAVAILABLE (ControllerOptions.maxCreatesInFlight). */
    private readonly maxCreatesInFlight = Infinity,
    /** Told how each create's scheduling attempt ended, and how long it took. */
    private readonly metrics: Metrics = NO_METRICS,
    /**
     * The networks and images each host offers, from its agent's reports (undefined: none). A
     * change must be told through {@link hostChanged}.
     */
    private readonly hostOffers: (hostId: string) => HostOffers | undefined = () => undefined,
  ) {
    this.view = new PlacementView({
      hostIds: () => this.state.allHosts().map((h) => h.id),
      snapshotOf: (id) => this.snapshotOf(id),
      options: () => this.options(),
    });
    this.state.subscribe((change) => this.view.onStateChange(change));
  }

  /** Whether `hostId` takes placements may have changed (its agent's session started, ended, or reported its hypervisor). */
  hostChanged(hostId: string): void {
    this.view.touch(hostId);
  }

  /** The cluster's scheduler options (from the stored config, defaults when none). */
  options(): ResolvedSchedulerOptions {
    const revision = this.state.config.getKv(Keys.config)?.modRevision ?? 0;
    if (this.optionsCache?.revision !== revision) {
      this.optionsCache = { revision, options: resolveClusterScheduler(this.state.clusterConfig()) };
    }
    return this.optionsCache.options;
  }

  /** The scheduler's view: registered hosts with what is placed or reserved on them (a full pass; see {@link view} for creates). */
  snapshot(): HostSnapshot[] {
    const reservedByHost = new Map<string, Reservation[]>();
    for (const r of this.reservations.values()) {
      if (!this.counts(r)) continue;
      const onHost = reservedByHost.get(r.hostId);
      if (onHost) onHost.push(r);
      else reservedByHost.set(r.hostId, [r]);
    }
    return this.state.allHosts().map((host) => this.hostSnapshot(host, reservedByHost.get(host.id) ?? []));
  }

  /**
   * The hosts on which the create path's engine disagrees with a full {@link snapshot} now (after
   * bringing it up to date); empty when the view is exact. For tests and diagnostics: O(hosts).
   */
  viewDisagreements(): string[] {
    const engine = this.view.current();
    const full = this.snapshot();
    const out = full.filter((h) => !sameSnapshot(h, engine.snapshot(h.id))).map((h) => h.id);
    if (engine.hostIds().length !== full.length) out.push(`(engine has ${engine.hostIds().length} hosts, the cache ${full.length})`);
    return out;
  }

  /** One host's entry of {@link snapshot}, or undefined for a host not registered. */
  snapshotOf(hostId: string): HostSnapshot | undefined {
    const host = this.state.host(hostId);
    if (!host) return undefined;
    const reserved: Reservation[] = [];
    for (const r of this.reservationsByHost.get(hostId)?.values() ?? []) if (this.counts(r)) reserved.push(r);
    return this.hostSnapshot(host, reserved);
  }

  /** Whether a reservation still adds to its host (its VM or volume record, or the migration holding it, is not in the cache yet). */
  private counts(r: Reservation): boolean {
    if (r.volume) return this.state.volume(r.name)?.hostId !== r.hostId;
    if (this.state.vm(r.name)?.hostId === r.hostId) return false; // already counted from the cache
    const migration = this.state.migration(r.name);
    if (migration && holdsTarget(migration) && migration.targetHost === r.hostId) return false; // counted as incoming
    return true;
  }

  private hostSnapshot(host: Host, reserved: readonly Reservation[]): HostSnapshot {
    let allocated = this.state.allocated(host.id);
    const groupMembers = this.state.groupMembersOn(host.id);
    for (const r of reserved) {
      allocated = addResources(allocated, r.resources);
      if (r.group) groupMembers[r.group] = (groupMembers[r.group] ?? 0) + 1;
    }
    const allocationRatio = ratioOf(host.allocationRatio);
    const offers = this.hostOffers(host.id);
    return {
      id: host.id,
      capacity: host.capacity ?? { vcpus: 0, memoryMib: 0, diskGib: 0 },
      allocated,
      // A VM migrating here counts here too (it counts on its source as well until it has moved).
      vmCount: this.state.vmCountOn(host.id) + this.state.incomingCount(host.id) + reserved.length,
      ready: this.acceptsPlacements(host.id),
      cordoned: host.cordoned,
      labels: host.labels,
      groupMembers,
      ...(Object.keys(allocationRatio).length > 0 ? { allocationRatio } : {}),
      ...(host.reserved ? { reserved: host.reserved } : {}),
      ...(offers ? { networks: offers.networks, images: offers.images } : {}),
    };
  }

  /**
   * The host's disk as placement counts it (its snapshot, reservations included): allocatable
   * (the scheduler's rule: capacity × ratio − reserve) and allocated, in GiB. Undefined for a host
   * not registered.
   */
  diskOf(hostId: string): { allocatableGib: number; allocatedGib: number } | undefined {
    const snapshot = this.snapshotOf(hostId);
    if (!snapshot) return undefined;
    return { allocatableGib: allocatable(snapshot, this.options()).diskGib, allocatedGib: snapshot.allocated.diskGib };
  }

  /** Holds a decision's resources on its host until {@link drop}. */
  private hold(key: string, reservation: Reservation): void {
    this.drop(key);
    this.reservations.set(key, reservation);
    let onHost = this.reservationsByHost.get(reservation.hostId);
    if (!onHost) this.reservationsByHost.set(reservation.hostId, (onHost = new Map()));
    onHost.set(key, reservation);
    this.view.touch(reservation.hostId);
  }

  private drop(key: string): void {
    const r = this.reservations.get(key);
    if (!r) return;
    this.reservations.delete(key);
    const onHost = this.reservationsByHost.get(r.hostId);
    onHost?.delete(key);
    if (onHost?.size === 0) this.reservationsByHost.delete(r.hostId);
    this.view.touch(r.hostId);
  }

  /**
   * Validates, places and commits new VMs (desired: running), all or none. Throws INVALID_ARGUMENT
   * (bad spec; nothing written), NOT_FOUND (unknown group), ALREADY_EXISTS, RESOURCE_EXHAUSTED with
   * one reason per host, CONFLICT when the placement raced a change of a host or group (retry),
   * BUSY (gRPC UNAVAILABLE) when maxCreatesInFlight creates are already in flight: nothing was
   * written, retry with backoff;
   * NOT_LEADER.
   */
  async create(specs: readonly VmSpec[], writer: FencedWriter, field: SpecField = "specs", requestId = ""): Promise<Vm[]> {
    validateSpecs(specs, field);
    validateRequestId(requestId);
    if (this.createsInFlight >= this.maxCreatesInFlight) {
      this.shedCreates++;
      throw new BerthError(ErrorCode.Busy, `the controller is busy: ${this.createsInFlight} creates in flight (at most ${this.maxCreatesInFlight}); nothing was written; retry with backoff`);
    }
    this.createsInFlight++;
    this.#pendingVms += specs.length;
    const started = process.hrtime.bigint();
    let result: ScheduleResult | undefined = "error";
    try {
      const vms = await this.createAdmitted(specs, writer, field, requestId);
      result = "scheduled";
      return vms;
    } catch (e) {
      result = scheduleResultOf(e);
      throw e;
    } finally {
      this.createsInFlight--;
      this.#pendingVms -= specs.length;
      if (result) this.metrics.scheduleAttempt(result, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  /** VMs of the create calls admitted and being placed and committed now (berth_scheduler_pending_vms). */
  get pendingVms(): number {
    return this.#pendingVms;
  }

  private async createAdmitted(specs: readonly VmSpec[], writer: FencedWriter, field: SpecField, requestId: string): Promise<Vm[]> {
    const groupNames = [...new Set(specs.map((s) => s.group).filter(Boolean))].sort();
    // A retry of a request that was committed (its answer lost with a leader) gets what it made.
    const earlier = this.madeBy(specs, requestId);
    if (earlier) return earlier;
    this.checkPinnedHosts(specs, field);
    // Placements into one group take turns in this leader: each sees the previous one's record.
    return await this.groupLocks.run(groupNames, async () => {
      let waits = 0;
      for (let attempt = 1; ; attempt++) {
        try {
          return await this.placeAndCommit(specs, groupNames, writer, field, requestId);
        } catch (e) {
          const again = isBerthError(e, ErrorCode.AlreadyExists) ? await this.madeByInStore(specs, requestId) : undefined;
          if (again) return again;
          if (isBerthError(e, ErrorCode.ResourceExhausted)) {
            const reconnect = this.hostsReconnecting();
            if (reconnect.waiting && waits < MAX_RECONNECT_WAITS) {
              // A new leader whose hosts are still coming back has no room yet, not no room.
              waits++;
              attempt--;
              await sleep(RECONNECT_POLL_MS);
              continue;
            }
            if (waits > 0 && reconnect.missing > 0) {
              throw new BerthError(
                ErrorCode.Unavailable,
                `${reconnect.missing} host(s) that were ready before the leader change have not reconnected to the new leader; retry in a few seconds`,
                { cause: e },
              );
            }
          }
          // A group record can still change under us (a member's deletion): decide again.
          if (!(e instanceof PlacementConflict) || attempt >= MAX_CONFLICT_RETRIES) throw e;
          // Wait only on the kinds the placement read (an informer with no event at that revision
          // confirms it with a list).
          const read: Promise<void>[] = [this.state.vms.waitForRevision(e.revision), this.state.groups.waitForRevision(e.revision)];
          if (specs.some((s) => s.volumes.length > 0)) read.push(this.state.volumes.waitForRevision(e.revision));
          if (specs.some((s) => s.image !== "")) read.push(this.state.images.waitForRevision(e.revision));
          await waitUpTo(Promise.all(read), CACHE_CATCH_UP_MS);
        }
      }
    });
  }

  /** The VMs request `requestId` made, when every spec's name holds one it made; else undefined. */
  private madeBy(specs: readonly VmSpec[], requestId: string): Vm[] | undefined {
    if (!requestId) return undefined;
    const vms = specs.map((s) => this.state.vm(s.name));
    return vms.every((vm) => vm?.requestId === requestId) ? (vms as Vm[]) : undefined;
  }

  /** As `madeBy`, read from the store (the cache may not have the records yet). */
  private async madeByInStore(specs: readonly VmSpec[], requestId: string): Promise<Vm[] | undefined> {
    if (!requestId) return undefined;
    const vms = await Promise.all(specs.map(async (s) => {
      const kv = await this.store.get(Keys.vm(s.name));
      return kv ? decodeVm(kv.value) : undefined;
    }));
    return vms.every((vm) => vm?.requestId === requestId) ? (vms as Vm[]) : undefined;
  }

  /**
   * Places a VM again, on another host, keeping its name, id and spec: its host was fenced, so the
   * copy there is known to be off. One fenced transaction moves the record (guarded on its revision,
   * the generation bumped so the new host applies it afresh); the group record is rewritten under a
   * compare so a concurrent placement into the group cannot miss it. Throws RESOURCE_EXHAUSTED when
   * no other host fits, CONFLICT when the record changed meanwhile.
   */
  async relocate(vm: Vm, writer: FencedWriter, why: string): Promise<Vm> {
    const spec = vm.spec!;
    const groupNames = spec.group ? [spec.group] : [];
    return await this.groupLocks.run(groupNames, async () => {
      const kv = this.state.vmKv(spec.name);
      const current = this.state.vm(spec.name);
      if (!kv || current?.id !== vm.id || current.hostId !== vm.hostId) throw new BerthError(ErrorCode.Conflict, `vm '${spec.name}' changed meanwhile`);
      const request = this.requestOf(spec, "spec", "move");
      // The VM no longer counts where it was: its old host is excluded (the VM must move).
      const hosts = this.snapshot().filter((h) => h.id !== vm.hostId);
      const decision = placeVm(hosts, request, this.options());
      if (!decision.placed) throw unplacedError(request, decision);
      const reservationKey = `relocate/${spec.name}`;
      this.hold(reservationKey, { name: spec.name, hostId: decision.hostId, resources: spec.resources!, group: spec.group });
      try {
        const hostKv = this.state.hostKv(decision.hostId)!;
        const compare: Compare[] = [
          { key: kv.key, target: "modRevision", equals: kv.modRevision },
          { key: hostKv.key, target: "createRevision", equals: hostKv.createRevision },
        ];
        const ops: Op[] = [];
        if (spec.group) {
          const groupKv = this.state.groupKv(spec.group);
          const group = this.state.group(spec.group);
          if (groupKv && group) {
            compare.push({ key: groupKv.key, target: "modRevision", equals: groupKv.modRevision });
            ops.push({ type: "put", key: groupKv.key, value: encodeGroup(group) });
          }
        }
        const moved: Vm = {
          ...current,
          hostId: decision.hostId,
          placement: placementRecordOf(decision.explanation, decision.hostId, {
            decidedAtMs: this.now(),
            cause: "relocate",
            preset: this.options().preset ?? "spread",
            hostsConsidered: hosts.length,
          }),
          generation: current.generation + 1,
          status: VmStatus.fromPartial({ phase: VmPhase.VM_PHASE_PENDING, message: `restarted here: ${why}`, updatedAtMs: this.now() }),
        };
        ops.push({ type: "put", key: kv.key, value: encodeVm(moved) });
        const result = await writer.commit({ compare, ops });
        if (!result.succeeded) throw new BerthError(ErrorCode.Conflict, `vm '${spec.name}' or its new host changed during the restart; retry`);
        await waitUpTo(this.state.vms.waitForRevision(result.revision), CACHE_CATCH_UP_MS);
        return moved;
      } finally {
        this.drop(reservationKey);
      }
    });
  }

  /**
   * Where `vm` would go if it left its host now: the host the scheduler picks among the others
   * (the same filters and weighers as a create), or `requested` when it passes every filter. Pure
   * of side effects. Throws NOT_FOUND (unknown host), FAILED_PRECONDITION (the VM is already there),
   * RESOURCE_EXHAUSTED with the filter's reason (the requested host, or every host, refuses it).
   */
  migrationTarget(vm: Vm, requested: string, exclude: ReadonlySet<string> = new Set()): string {
    const spec = vm.spec!;
    // Its volumes travel with it: the target needs their disk too.
    const request = this.requestOf(spec, "spec", "move");
    // The VM is leaving its host: that host is no candidate (and its members there stay counted,
    // which is right for the groups: the VM runs there until it has moved).
    let hosts = this.snapshot().filter((h) => h.id !== vm.hostId && !exclude.has(h.id));
    if (requested !== "") {
      if (requested === vm.hostId) throw new BerthError(ErrorCode.FailedPrecondition, `vm '${spec.name}' already runs on host '${requested}'`);
      if (!this.state.host(requested)) throw notFound(`host '${requested}'`);
      hosts = hosts.filter((h) => h.id === requested);
      const decision = placeVm(hosts, request, this.options());
      if (!decision.placed) {
        throw new BerthError(ErrorCode.ResourceExhausted, `host '${requested}' cannot take vm '${spec.name}': ${decision.reasons[0]?.replace(`${requested}: `, "") ?? "it is not a candidate"}`, { reasons: decision.reasons });
      }
      return requested;
    }
    const decision = placeVm(hosts, request, this.options());
    if (!decision.placed) throw unplacedError(request, decision);
    return decision.hostId;
  }

  /**
   * Holds `resources` (and a group membership) on a host until `release`: a decision not yet in
   * the cache. `volume`: a data volume's disk being bound there (held until the volume's record
   * in the cache names the host).
   */
  reserve(key: string, reservation: { name: string; hostId: string; resources: Resources; group: string; volume?: boolean }): void {
    this.hold(key, reservation);
  }

  release(key: string): void {
    this.drop(key);
  }

  private async placeAndCommit(specs: readonly VmSpec[], groupNames: readonly string[], writer: FencedWriter, field: SpecField, requestId: string): Promise<Vm[]> {
    const prepared = specs.map((spec, i) => this.requestAndVolumes(spec, fieldOf(field, i), "create"));
    const requests = prepared.map((p) => p.request);
    for (const spec of specs) {
      if (this.state.vm(spec.name) || this.reservations.has(spec.name)) throw alreadyExists(`vm '${spec.name}'`);
    }
    if (specs.length + groupNames.length > MAX_TXN_OPS) {
      throw invalidArgument("specs", `${specs.length} VMs in ${groupNames.length} groups do not fit one transaction (${MAX_TXN_OPS} writes)`);
    }

    // Decide and reserve with no await in between: concurrent requests see each other.
    const { hostIds, records } = this.decide(requests);
    // Unbound volumes bind to the chosen host: their disk is held there as well, each until the
    // cache has its record (keyed per VM too, so two creates racing for one volume hold apart).
    const volumeKeys: string[] = [];
    specs.forEach((spec, i) => {
      this.hold(spec.name, { name: spec.name, hostId: hostIds[i]!, resources: spec.resources!, group: spec.group });
      for (const v of prepared[i]!.volumes?.volumes ?? []) {
        if (v.hostId !== "") continue;
        const key = `volume/${v.name}/for/${spec.name}`;
        this.hold(key, { name: v.name, hostId: hostIds[i]!, resources: { vcpus: 0, memoryMib: 0, diskGib: v.sizeGib }, group: "", volume: true });
        volumeKeys.push(key);
      }
    });

    try {
      const compare: Compare[] = [];
      const ops: Op[] = [];
      for (const hostId of new Set(hostIds)) {
        const kv = this.state.hostKv(hostId);
        if (!kv) throw new BerthError(ErrorCode.Conflict, `host '${hostId}' vanished during placement; retry`);
        compare.push({ key: kv.key, target: "createRevision", equals: kv.createRevision });
      }
      for (const name of groupNames) {
        const kv = this.state.groupKv(name)!;
        const group = this.state.group(name)!;
        const joining = specs.filter((s) => s.group === name).map((s) => s.name);
        if (group.members.length + joining.length > Limits.maxGroupMembers) {
          throw new BerthError(ErrorCode.FailedPrecondition, `group '${name}' would have more than ${Limits.maxGroupMembers} members`);
        }
        compare.push({ key: kv.key, target: "modRevision", equals: kv.modRevision });
        ops.push({ type: "put", key: kv.key, value: encodeGroup({ ...group, members: [...group.members, ...joining] }) });
      }
      const vms = specs.map((spec, i) => this.newVm(spec, hostIds[i]!, requestId, records[i]!));
      for (const vm of vms) {
        compare.push({ key: Keys.vm(vm.spec!.name), target: "createRevision", equals: 0 });
        ops.push({ type: "put", key: Keys.vm(vm.spec!.name), value: encodeVm(vm) });
      }
      // The images named are still those of the catalog (not deleted, nor made again meanwhile).
      for (const name of new Set(specs.map((s) => s.image).filter(Boolean))) {
        const kv = this.state.imageKv(name);
        if (!kv) throw new PlacementConflict(`image '${name}' left the catalog during placement; retry`, this.state.images.revision);
        compare.push({ key: kv.key, target: "createRevision", equals: kv.createRevision });
      }
      // The volumes are taken as they were read: attached to the new VM, bound to its host.
      specs.forEach((spec, i) => {
        for (const v of prepared[i]!.volumes?.volumes ?? []) {
          const kv = this.state.volumeKv(v.name);
          if (!kv) throw new PlacementConflict(`volume '${v.name}' vanished during placement; retry`, this.state.volumes.revision);
          compare.push({ key: kv.key, target: "modRevision", equals: kv.modRevision });
          ops.push({ type: "put", key: kv.key, value: encodeVolume(boundFor(v, hostIds[i]!, spec.name)) });
        }
      });
      // Each VM's create-if-absent and each chosen host's guard is one compare; etcd takes at most
      // MAX_TXN_OPS (--max-txn-ops) in one transaction, and all-or-none needs one transaction.
      if (ops.length > MAX_TXN_OPS) {
        throw invalidArgument("specs", `${specs.length} VMs with their groups and volumes need ${ops.length} writes in one transaction, more than the store's ${MAX_TXN_OPS}: create them in smaller gangs`);
      }
      if (compare.length > MAX_TXN_OPS) {
        const hosts = new Set(hostIds).size;
        throw invalidArgument(
          "specs",
          `${specs.length} VMs placed on ${hosts} hosts need ${compare.length} guards in one transaction, more than the store's ${MAX_TXN_OPS}: ` +
            `create them in smaller gangs (at most ${Math.floor(MAX_TXN_OPS / 2) - groupNames.length} always fit), or pin them to fewer hosts`,
        );
      }
      const result = await writer.commit({ compare, ops });
      if (!result.succeeded) {
        for (const spec of specs) if (await this.store.get(Keys.vm(spec.name))) throw alreadyExists(`vm '${spec.name}'`);
        throw new PlacementConflict(`a host or group changed during placement of ${describe(specs)}; retry`, result.revision);
      }
      // Hold the reservations until the cache has the records, so no request sees a host emptier.
      // Wait only on the informers whose keys were written: one with no event at that revision
      // would have to confirm it with a list.
      const written = [this.state.vms.waitForRevision(result.revision)];
      if (groupNames.length > 0) written.push(this.state.groups.waitForRevision(result.revision));
      if (prepared.some((p) => p.volumes)) written.push(this.state.volumes.waitForRevision(result.revision));
      await waitUpTo(Promise.all(written), CACHE_CATCH_UP_MS);
      return vms;
    } finally {
      for (const spec of specs) this.drop(spec.name);
      for (const key of volumeKeys) this.drop(key);
    }
  }

  /**
   * The hosts for `requests` (one, or a gang all-or-none), by the incremental engine; each chosen
   * host re-read from the cache before the answer is used. Throws RESOURCE_EXHAUSTED with one
   * reason per host.
   */
  private decide(requests: readonly PlacementRequest[]): { hostIds: string[]; records: PlacementRecord[] } {
    for (let repairs = 0; repairs < MAX_VIEW_REPAIRS; repairs++) {
      const engine = this.view.current();
      let hostIds: string[];
      if (requests.length === 1) {
        const decision = engine.place(requests[0]!);
        if (!decision.placed) throw unplacedError(requests[0]!, decision);
        hostIds = [decision.hostId];
      } else {
        const decision = engine.placeGang(requests);
        if (!decision.placed) throw gangUnplacedError(decision);
        hostIds = decision.placements.map((p) => p.hostId);
      }
      if (this.view.confirm(hostIds)) {
        const ids = engine.hostIds();
        return { hostIds, records: this.recordsOf(requests, hostIds, ids.length, () => ids.map((id) => engine.snapshot(id)!)) };
      }
    }
    // The view kept finding chosen hosts out of date: decide on a full snapshot instead.
    const hosts = this.snapshot();
    let hostIds: string[];
    if (requests.length === 1) {
      const decision = placeVm(hosts, requests[0]!, this.options());
      if (!decision.placed) throw unplacedError(requests[0]!, decision);
      hostIds = [decision.hostId];
    } else {
      const decision = placeVms(hosts, requests, this.options());
      if (!decision.placed) throw gangUnplacedError(decision);
      hostIds = decision.placements.map((p) => p.hostId);
    }
    return { hostIds, records: this.recordsOf(requests, hostIds, hosts.length, () => hosts) };
  }

  /**
   * The placement records of a decision just taken, before its reservations are held: the
   * scheduler's explaining path (placeVm) over the snapshots the decision was made on, each VM of a
   * gang seeing the ones before it placed, as the decision did. When that would cost the create
   * path too much (past the ExplainBudget: a burst, or a huge decision) the records carry no scores.
   */
  private recordsOf(requests: readonly PlacementRequest[], hostIds: readonly string[], fleet: number, snapshots: () => readonly HostSnapshot[]): PlacementRecord[] {
    const options = this.options();
    const ctx = { decidedAtMs: this.now(), cause: requests.length === 1 ? "create" : "gang", preset: options.preset ?? "spread", hostsConsidered: fleet };
    if (!this.explainBudget.allows(fleet * requests.length)) return requests.map(() => unexplainedRecord(ctx));
    const started = performance.now();
    let hosts = snapshots();
    const records = requests.map((request, i) => {
      const record = placementRecordOf(placeVm(hosts, request, options).explanation, hostIds[i]!, ctx);
      hosts = hosts.map((h) => (h.id === hostIds[i] ? withPlacement(h, request.resources, request.group?.name) : h));
      return record;
    });
    this.explainBudget.spend(performance.now() - started);
    return records;
  }

  /**
   * Where `specs` would go, as a gang, and every host's verdict for each: a dry run that writes
   * nothing. Throws INVALID_ARGUMENT or NOT_FOUND (unknown group) for bad input.
   */
  /**
   * A pinned host the cluster has never heard of is a typo, not a constraint: `--pin host-1,host-9`
   * would otherwise place on host-1 and say nothing of host-9. INVALID_ARGUMENT naming the entry.
   */
  private checkPinnedHosts(specs: readonly VmSpec[], field: SpecField): void {
    specs.forEach((spec, i) =>
      spec.pinnedHosts.forEach((h, j) => {
        if (!this.state.host(h)) throw invalidArgument(`${fieldOf(field, i)}.pinned_hosts[${j}]`, `no host '${h}' in the cluster (berth host list shows them)`);
      }),
    );
  }

  plan(specs: readonly VmSpec[]): PlanPlacementResponse {
    validateSpecs(specs, "specs");
    this.checkPinnedHosts(specs, "specs");
    const requests = specs.map((spec, i) => this.requestOf(spec, `specs[${i}]`));
    let hosts = this.snapshot();
    const options = this.options();
    const placements: PlanPlacementResponse["placements"] = [];
    for (const request of requests) {
      const decision = placeVm(hosts, request, options);
      const verdicts = decision.explanation.map(toWire);
      if (!decision.placed) {
        placements.push({ vmName: request.name, hostId: "", verdicts });
        return { placeable: false, placements, reasons: decision.reasons.length > 0 ? decision.reasons : ["no hosts are registered"] };
      }
      placements.push({ vmName: request.name, hostId: decision.hostId, verdicts });
      hosts = hosts.map((h) => (h.id === decision.hostId ? withPlacement(h, request.resources, request.group?.name) : h));
    }
    return { placeable: true, placements, reasons: [] };
  }

  /**
   * The scheduler's request for a VM of `spec`: its group's policy, its NICs' networks and its
   * image's id looked up; its data volumes as `mode` says (see {@link RequestMode}). NOT_FOUND for
   * an unknown group, and when creating, for an image not in the catalog or an unknown volume
   * (naming the field); FAILED_PRECONDITION when creating with a volume attached elsewhere, being
   * deleted, or on another host than the spec's other volumes.
   */
  requestOf(spec: VmSpec, field: string, mode: RequestMode = "create"): PlacementRequest {
    return this.requestAndVolumes(spec, field, mode).request;
  }

  private requestAndVolumes(spec: VmSpec, field: string, mode: RequestMode): { request: PlacementRequest; volumes: VolumesForCreate | undefined } {
    const request: PlacementRequest = { name: spec.name, resources: spec.resources! };
    if (spec.networks.length > 0) request.networks = spec.networks;
    if (spec.image !== "") {
      const image = this.state.image(spec.image);
      if (image) request.imageId = image.id;
      else if (mode === "create") throw new BerthError(ErrorCode.NotFound, `${field}.image: image '${spec.image}' not found (berth image list shows the catalog)`, { field: `${field}.image` });
    }
    let volumes: VolumesForCreate | undefined;
    if (spec.volumes.length > 0) {
      if (mode === "create") {
        volumes = volumesForCreate(spec, field, (name) => this.state.volume(name));
        if (volumes.hostId !== undefined) request.volumes = { hostId: volumes.hostId, names: volumes.volumes.filter((v) => v.hostId !== "").map((v) => v.name) };
        if (volumes.unboundGib > 0) request.resources = { ...request.resources, diskGib: request.resources.diskGib + volumes.unboundGib };
      } else if (mode === "move") {
        const gib = this.state.attachedVolumeGib(spec.name);
        if (gib > 0) request.resources = { ...request.resources, diskGib: request.resources.diskGib + gib };
      }
    }
    if (Object.keys(spec.requiredHostLabels).length > 0) request.requiredLabels = spec.requiredHostLabels;
    if (Object.keys(spec.forbiddenHostLabels).length > 0) request.forbiddenLabels = spec.forbiddenHostLabels;
    if (spec.pinnedHosts.length > 0) request.pinnedHosts = spec.pinnedHosts;
    if (spec.group) {
      const group = this.state.group(spec.group);
      if (!group) throw new BerthError(ErrorCode.NotFound, `${field}.group: group '${spec.group}' not found (create it first)`, { field: `${field}.group` });
      const policy = placementPolicyOf(group.policy);
      if (policy) request.group = { name: group.name, policy };
    }
    return { request, volumes };
  }

  private newVm(spec: VmSpec, hostId: string, requestId: string, placement: PlacementRecord): Vm {
    return {
      id: randomUUID(),
      spec: { ...spec, resources: { ...spec.resources! }, labels: { ...spec.labels } },
      desiredState: DesiredState.DESIRED_STATE_RUNNING,
      hostId,
      generation: 1,
      status: VmStatus.fromPartial({ phase: VmPhase.VM_PHASE_PENDING, domainState: DomainState.DOMAIN_STATE_UNSPECIFIED, updatedAtMs: this.now() }),
      createdAtMs: this.now(),
      forceStop: false,
      requestId,
      placement,
    };
  }
}

/** A volume as a new VM takes it: attached to the VM, bound to its host (if it was not yet), a new generation. */
function boundFor(v: Volume, hostId: string, vmName: string): Volume {
  return { ...v, hostId: v.hostId || hostId, attachedTo: vmName, generation: v.generation + 1 };
}

function toWire(v: HostVerdict): WireVerdict {
  return v.passed
    ? { hostId: v.hostId, passed: true, filter: "", reason: "", scores: v.scores, total: v.total }
    : { hostId: v.hostId, passed: false, filter: v.filter, reason: v.reason, scores: {}, total: 0 };
}

/** How the request names its specs: CreateVm has one `spec`, CreateVms and PlanPlacement `specs`. */
export type SpecField = "spec" | "specs";

const fieldOf = (field: SpecField, i: number): string => (field === "spec" ? "spec" : `specs[${i}]`);

function validateSpecs(specs: readonly VmSpec[], field: SpecField): void {
  if (field === "spec") validateVmSpec(specs[0], "spec");
  else validateVmSpecs(specs, "specs");
}

function describe(specs: readonly VmSpec[]): string {
  return specs.length === 1 ? `'${specs[0]!.name}'` : `${specs.length} VMs`;
}
