import type { ClusterEvent } from "@berth/api";
import type { ClusterState, StateChange } from "./cluster-state.js";
import { eventsOf, type RecordChange } from "./events.js";

/** How many recent events a controller keeps. @default 2000 */
export const EVENT_LOG_CAPACITY = 2_000;

/**
 * The cluster events of one controller: derived from the changes its cache sees ({@link eventsOf}),
 * the most recent {@link EVENT_LOG_CAPACITY} kept in memory, each new one told to subscribers.
 * Every controller (followers too) keeps one, so any of them answers `berth events`; the log
 * starts empty at process start — what happened before is not replayed from the store (the
 * records' current state is what the first list shows). The leader's VM lifecycle log is these
 * events written out (lifecycle-log.ts), so the log and `berth events` tell the same story.
 *
 * Start it after the cache's first list, so the records that exist already make no events.
 */
export class EventLog {
  private readonly ring: ClusterEvent[] = [];
  private next = 0;
  private readonly listeners = new Set<(e: ClusterEvent, change: RecordChange) => void>();
  private readonly unsubscribe: () => void;

  constructor(
    state: ClusterState,
    private readonly now: () => number,
    private readonly capacity = EVENT_LOG_CAPACITY,
  ) {
    this.unsubscribe = state.subscribe((c) => {
      const change = recordChangeOf(c);
      if (!change) return;
      for (const e of eventsOf(change, this.now())) this.add(e, change);
    });
  }

  /** The events kept, oldest first. */
  recent(): ClusterEvent[] {
    return this.ring.length < this.capacity ? [...this.ring] : [...this.ring.slice(this.next), ...this.ring.slice(0, this.next)];
  }

  /**
   * Calls `listener` with each new event and the record change it comes from (the record before
   * and after: a deleted VM's record too), synchronously, while the cache tells of the change,
   * until the returned function is called.
   */
  subscribe(listener: (e: ClusterEvent, change: RecordChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  stop(): void {
    this.unsubscribe();
    this.listeners.clear();
  }

  private add(e: ClusterEvent, change: RecordChange): void {
    if (this.ring.length < this.capacity) this.ring.push(e);
    else this.ring[this.next] = e;
    this.next = (this.next + 1) % this.capacity;
    for (const l of this.listeners) l(e, change);
  }
}

/** The cache's change as the before/after pair {@link eventsOf} reads; undefined for kinds that make no events (images, volumes). */
function recordChangeOf(change: StateChange): RecordChange | undefined {
  const revision = change.revision;
  switch (change.kind) {
    case "vm":
      return change.type === "put" ? { kind: "vm", before: change.previous, after: change.vm, revision } : { kind: "vm", before: change.vm, after: undefined, revision };
    case "host":
      return change.type === "put" ? { kind: "host", before: change.previous, after: change.host, revision } : { kind: "host", before: change.host, after: undefined, revision };
    case "migration":
      return change.type === "put"
        ? { kind: "migration", before: change.previous, after: change.migration, revision }
        : { kind: "migration", before: change.migration, after: undefined, revision };
    case "scalegroup":
      return change.type === "put"
        ? { kind: "scalegroup", before: change.previous, after: change.scaleGroup, revision }
        : { kind: "scalegroup", before: change.scaleGroup, after: undefined, revision };
    case "image":
    case "volume":
      return undefined;
  }
}
