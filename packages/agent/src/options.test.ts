import { describe, expect, it } from "vitest";
import { resolveAgentOptions } from "./options.js";

const base = { hostId: "hv-01", controllers: ["c:7400"], driver: "fake" as const, stateDir: "/tmp/x" };

describe("resolveAgentOptions", () => {
  it("fills the reconnect defaults", () => {
    expect(resolveAgentOptions(base)).toMatchObject({
      joinCluster: undefined,
      minBackoffMs: 250,
      maxBackoffMs: 5_000,
      electionRetryMs: 500,
      duplicateHostBackoffMs: 15_000,
      connectTimeoutMs: 5_000,
    });
    // The duplicate-host wait stays longer than any normal one.
    expect(resolveAgentOptions({ ...base, maxBackoffMs: 20_000 }).duplicateHostBackoffMs).toBe(40_000);
    expect(() => resolveAgentOptions({ ...base, maxBackoffMs: 1_000, duplicateHostBackoffMs: 1_500 })).toThrow(/duplicate_host_backoff_ms/);
  });

  it("takes a cluster id to join, and refuses one with spaces or too long", () => {
    expect(resolveAgentOptions({ ...base, joinCluster: "7d0c3f4e-2b1a-4c8e-9f00-1a2b3c4d5e6f" }).joinCluster).toBe("7d0c3f4e-2b1a-4c8e-9f00-1a2b3c4d5e6f");
    expect(resolveAgentOptions({ ...base, joinCluster: "" }).joinCluster).toBeUndefined();
    expect(() => resolveAgentOptions({ ...base, joinCluster: "a b" })).toThrow(/join_cluster/);
    expect(() => resolveAgentOptions({ ...base, joinCluster: "x".repeat(129) })).toThrow(/join_cluster/);
  });
});
