import { randomUUID } from "node:crypto";
import { ClusterInfo } from "@berth/api";
import { BerthError, ErrorCode } from "@berth/core";
import type { ClusterStore } from "@berth/store";
import type { Logger } from "pino";
import type { FencedWriter } from "./fenced-writer.js";
import { Keys } from "./keys.js";

/**
 * The cluster's identity: read from the store, or made once (a fenced create-if-absent) by the
 * first leader of a store that has none. Never changed afterwards, so a store restored from a
 * snapshot keeps it and its agents come back; a fresh or foreign store has another id, and agents
 * of this cluster refuse it.
 */
export async function ensureClusterIdentity(store: ClusterStore, writer: FencedWriter, now: () => number, log: Logger): Promise<ClusterInfo> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const kv = await store.get(Keys.cluster);
    if (kv) return ClusterInfo.decode(kv.value);
    const info: ClusterInfo = { id: randomUUID(), createdAtMs: now() };
    const result = await writer.commit({
      compare: [{ key: Keys.cluster, target: "createRevision", equals: 0 }],
      ops: [{ type: "put", key: Keys.cluster, value: ClusterInfo.encode(info).finish() }],
    });
    if (result.succeeded) {
      log.info({ clusterId: info.id }, "this store had no cluster identity: made one");
      return info;
    }
  }
  throw new BerthError(ErrorCode.Conflict, "the cluster identity record kept changing");
}
