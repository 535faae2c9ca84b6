import { PlacementEngine, type HostSnapshot, type ResolvedSchedulerOptions } from "@berth/scheduler";
import type { StateChange } from "./cluster-state.js";

/** Where the view reads the truth from: the same functions the full snapshot is built with. */
export interface PlacementViewSource {
  /** Every registered host's id. */
  hostIds(): readonly string[];
  /** One host's snapshot as the scheduler should see it now (cache, reservations, readiness); undefined when it is gone. */
  snapshotOf(hostId: string): HostSnapshot | undefined;
  /** The scheduler options now; a new object whenever they change (the view rebuilds then). */
  options(): ResolvedSchedulerOptions;
}

/**
 * The scheduler's incremental engine ({@link PlacementEngine}) kept current from the controller's
 * cache, so that a create costs a few hosts' worth of work instead of a snapshot of the whole
 * fleet.
 *
 * State-based, not replayed: the view never applies a VM's resources itself. It is told which
 * hosts may have changed ({@link touch}: a VM record put or deleted there, a migration arriving or
 * leaving, a reservation taken or released, the agent's session starting or ending) and, before
 * the next decision, asks its source for just those hosts' snapshots and hands them to the engine
 * (`update`). A change of the host set or of the options rebuilds the engine from every host
 * ({@link invalidate}). So the engine sees exactly what a full snapshot would show, at the cost of
 * the hosts that changed.
 *
 * Not a cache to trust blindly: the Placer re-reads each chosen host from its source before using
 * a decision ({@link confirm}); a difference (an event the view was not told of) is repaired and
 * counted, and the decision is taken again.
 */
export class PlacementView {
  private engine: PlacementEngine | undefined;
  private builtWith: ResolvedSchedulerOptions | undefined;
  private known = new Set<string>();
  private readonly dirty = new Set<string>();
  private stale = true;
  /** Hosts whose snapshot was found different from the engine's when confirmed (a missed change). */
  drift = 0;
  /** Engine rebuilds (host set or options changed). */
  rebuilds = 0;

  constructor(private readonly source: PlacementViewSource) {}

  /** A host's snapshot may have changed (unknown ids: the host set changed). */
  touch(hostId: string): void {
    if (hostId === "") return;
    if (this.known.has(hostId)) this.dirty.add(hostId);
    else this.stale = true;
  }

  /** Everything may have changed (hosts registered or removed): rebuild before the next decision. */
  invalidate(): void {
    this.stale = true;
  }

  /** Marks the hosts a cache change touches (an agent's report of its networks and images: `touch`, through Placer.hostChanged). */
  onStateChange(change: StateChange): void {
    switch (change.kind) {
      case "vm":
        this.touch(change.vm.hostId);
        if (change.previous) this.touch(change.previous.hostId);
        return;
      case "host":
        if (change.type === "delete") this.invalidate();
        else this.touch(change.host.id);
        return;
      case "migration":
        for (const m of [change.migration, change.previous]) {
          if (!m) continue;
          this.touch(m.sourceHost);
          this.touch(m.targetHost);
        }
        return;
      case "volume":
        // A bound volume counts in its host's disk (ClusterState.allocated). (A migrating VM's
        // volumes change only in the transaction that completes it, whose migration record
        // touches both hosts; attaching to a VM in flight is refused.)
        this.touch(change.volume.hostId);
        if (change.previous) this.touch(change.previous.hostId);
        return;
      case "image":
        return;
    }
  }

  /** The engine, brought up to date: rebuilt when the hosts or the options changed, else the touched hosts re-read. */
  current(): PlacementEngine {
    const options = this.source.options();
    if (this.stale || this.engine === undefined || options !== this.builtWith) return this.rebuild(options);
    for (const id of this.dirty) {
      const snapshot = this.source.snapshotOf(id);
      if (snapshot === undefined) return this.rebuild(options);
      this.engine.update(snapshot);
    }
    this.dirty.clear();
    return this.engine;
  }

  /**
   * Re-reads the hosts a decision chose and repairs the engine where it differed from the source.
   * True when all agreed (the decision stands); false when one was repaired (decide again).
   */
  confirm(hostIds: Iterable<string>): boolean {
    const engine = this.current();
    let agreed = true;
    for (const id of new Set(hostIds)) {
      const fresh = this.source.snapshotOf(id);
      if (fresh === undefined) {
        this.invalidate();
        return false;
      }
      if (!sameSnapshot(fresh, engine.snapshot(id))) {
        this.drift++;
        engine.update(fresh);
        agreed = false;
      }
    }
    return agreed;
  }

  private rebuild(options: ResolvedSchedulerOptions): PlacementEngine {
    const ids = this.source.hostIds();
    const hosts: HostSnapshot[] = [];
    for (const id of ids) {
      const s = this.source.snapshotOf(id);
      if (s) hosts.push(s);
    }
    this.engine = new PlacementEngine(hosts, options);
    this.builtWith = options;
    this.known = new Set(hosts.map((h) => h.id));
    this.dirty.clear();
    this.stale = false;
    this.rebuilds++;
    return this.engine;
  }
}

/** Whether two snapshots of one host say the same to the scheduler (group counts of 0 count as absent). */
export function sameSnapshot(a: HostSnapshot, b: HostSnapshot | undefined): boolean {
  if (!b) return false;
  if (a.ready !== b.ready || a.cordoned !== b.cordoned || a.vmCount !== b.vmCount) return false;
  if (!sameRecord(a.capacity, b.capacity) || !sameRecord(a.allocated, b.allocated) || !sameRecord(a.labels, b.labels)) return false;
  if (!sameRecord(a.allocationRatio ?? {}, b.allocationRatio ?? {}) || !sameRecord(a.reserved ?? {}, b.reserved ?? {})) return false;
  if (!sameSet(a.networks, b.networks) || !sameSet(a.images, b.images)) return false;
  return sameRecord(positive(a.groupMembers), positive(b.groupMembers));
}

/** Absent and empty say the same (none). */
function sameSet(a: ReadonlySet<string> | undefined, b: ReadonlySet<string> | undefined): boolean {
  if (a === b) return true;
  if ((a?.size ?? 0) !== (b?.size ?? 0)) return false;
  for (const x of a ?? []) if (!b!.has(x)) return false;
  return true;
}

function positive(members: Record<string, number> | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, n] of Object.entries(members ?? {})) if (n > 0) out[k] = n;
  return out;
}

function sameRecord(a: object, b: object): boolean {
  const ak = Object.keys(a);
  if (ak.length !== Object.keys(b).length) return false;
  for (const k of ak) if ((a as Record<string, unknown>)[k] !== (b as Record<string, unknown>)[k]) return false;
  return true;
}
