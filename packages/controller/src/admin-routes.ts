/**
 * The controller's own admin HTTP routes (the admin server is core's admin-http.ts; the
 * dashboard's routes are the dashboard's).
 */
import type { AdminRoute } from "@berth/core";
import type { ClusterStore } from "@berth/store";
import type { ClusterState } from "./cluster-state.js";
import { Keys } from "./keys.js";

/** How long /healthz waits for the store to answer before it calls it unreachable. */
export const HEALTH_STORE_TIMEOUT_MS = 2_000;

/** What /healthz looks at. */
export interface HealthDeps {
  store: ClusterStore;
  state: ClusterState;
  isLeader(): boolean;
}

/** /healthz's answer. */
export type Health = { status: "ok"; leader: boolean } | { status: "unavailable"; leader: boolean; reason: string };

/**
 * Whether this controller can serve: its cache has listed every kind and the store answers a
 * linearizable read within {@link HEALTH_STORE_TIMEOUT_MS} (an etcd without quorum does not). A
 * follower is healthy too: it serves reads from its cache and sends writers to the leader.
 */
export async function checkHealth(deps: HealthDeps): Promise<Health> {
  const leader = deps.isLeader();
  const unsynced = (["vms", "hosts", "groups", "config", "migrations", "images", "volumes", "scaleGroups"] as const).filter((k) => !deps.state[k].synced);
  if (unsynced.length > 0) return { status: "unavailable", leader, reason: `the cache has not listed ${unsynced.join(", ")} from the store yet` };
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      deps.store.get(Keys.leader),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${HEALTH_STORE_TIMEOUT_MS} ms`)), HEALTH_STORE_TIMEOUT_MS);
      }),
    ]);
  } catch (e) {
    return { status: "unavailable", leader, reason: `the store is unreachable: ${(e as Error).message}` };
  } finally {
    clearTimeout(timer);
  }
  return { status: "ok", leader };
}

/**
 * GET /healthz: 200 `{"status":"ok","leader":true|false}` while the cache is live and the store
 * answers; 503 `{"status":"unavailable","leader":…,"reason":"…"}` otherwise.
 */
export function healthRoutes(deps: HealthDeps): AdminRoute[] {
  return [
    {
      method: "GET",
      path: "/healthz",
      handle: async (_req, res) => {
        const health = await checkHealth(deps);
        const body = `${JSON.stringify(health)}\n`;
        res.writeHead(health.status === "ok" ? 200 : 503, { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store" });
        res.end(body);
      },
    },
  ];
}
