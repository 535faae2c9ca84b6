import { randomUUID } from "node:crypto";
import { ClusterInfo } from "@berth/api";
import { BerthError, ErrorCode } from "@berth/core";
import type { ClusterStore } from "@berth/store";
import type { Logger } from "pino";
import type { FencedWriter } from "./fenced-writer.js";
import { Keys } from "./keys.js";

/** Revisions below this fit in an epoch's low part (2^40: decades of writes at thousands per second). */
export const ERA_FACTOR = 2 ** 40;

/** The epoch agents see: the era, then the election key's create revision. */
export function agentEpoch(era: number, revision: number): number {
  return era * ERA_FACTOR + revision;
}

/** The two parts of an agent-facing epoch. */
export function splitEpoch(epoch: number): { era: number; revision: number } {
  return { era: Math.floor(epoch / ERA_FACTOR), revision: epoch % ERA_FACTOR };
}

/**
 * The cluster this leader leads: its identity record, and the epoch agents see (era × 2^40 + the
 * election key's create revision). Read from the store, or made once (a fenced create-if-absent)
 * by the first leader of a store that has none; the id never changes, so a store restored from a
 * snapshot keeps it and its agents come back, while a fresh or foreign store has another id.
 */
export class ClusterIdentity {
  private constructor(
    private info: ClusterInfo,
    private readonly store: ClusterStore,
    private readonly writer: FencedWriter,
    private readonly log: Logger,
  ) {}

  static async load(store: ClusterStore, writer: FencedWriter, now: () => number, log: Logger): Promise<ClusterIdentity> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const kv = await store.get(Keys.cluster);
      if (kv) return new ClusterIdentity(ClusterInfo.decode(kv.value), store, writer, log);
      const info: ClusterInfo = { id: randomUUID(), createdAtMs: now(), era: 0 };
      const result = await writer.commit({
        compare: [{ key: Keys.cluster, target: "createRevision", equals: 0 }],
        ops: [{ type: "put", key: Keys.cluster, value: ClusterInfo.encode(info).finish() }],
      });
      if (result.succeeded) {
        log.info({ clusterId: info.id }, "this store had no cluster identity: made one");
        return new ClusterIdentity(info, store, writer, log);
      }
    }
    throw new BerthError(ErrorCode.Conflict, "the cluster identity record kept changing");
  }

  get id(): string {
    return this.info.id;
  }

  get cluster(): ClusterInfo {
    return this.info;
  }

  /** What Welcome, Heartbeat and every Command carry. */
  get epoch(): number {
    return agentEpoch(this.info.era, this.writer.epoch);
  }

  /**
   * An agent of this cluster has obeyed `obeyed`, a higher epoch than ours. Either a newer leader
   * exists (we are stale: false), or the store went back in time — restored from an older snapshot —
   * and the agent obeyed a leader of a history that is gone. The second is proven when the epoch
   * is of our era and its revision is one this store has never reached: a newer leader of this
   * store would have a revision at or below the store's. Then the era is bumped (fenced, guarded),
   * so this leader outranks every leader from before the restore, and true is returned.
   */
  async adoptIfRestored(obeyed: number): Promise<boolean> {
    const { era, revision } = splitEpoch(obeyed);
    if (era !== this.info.era) return false;
    const { revision: storeRevision } = await this.store.list(Keys.cluster);
    if (revision <= storeRevision) return false;
    const kv = await this.store.get(Keys.cluster);
    if (!kv) return false;
    const current = ClusterInfo.decode(kv.value);
    if (current.era !== this.info.era) {
      this.info = current;
      return this.epoch > obeyed;
    }
    const next: ClusterInfo = { ...current, era: current.era + 1 };
    const result = await this.writer.commit({
      compare: [{ key: Keys.cluster, target: "modRevision", equals: kv.modRevision }],
      ops: [{ type: "put", key: Keys.cluster, value: ClusterInfo.encode(next).finish() }],
    });
    if (!result.succeeded) return false;
    this.info = next;
    this.log.warn(
      { clusterId: next.id, era: next.era, agentEpoch: obeyed, storeRevision },
      "an agent obeyed an epoch this store never reached: the store was restored from an older snapshot; a new era begins so no leader from before outranks this one",
    );
    return true;
  }
}
