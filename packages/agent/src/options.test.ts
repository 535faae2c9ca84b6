import { describe, expect, it } from "vitest";
import { fakeCidrOf } from "./driver-factory.js";
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

  it("takes simulated networks for the fake driver only; each fake network has its own /16", () => {
    const networks = [{ type: "network" as const, source: "lab" }];
    expect(resolveAgentOptions({ ...base, fakeNetworks: networks }).fakeNetworks).toEqual(networks);
    expect(() => resolveAgentOptions({ ...base, driver: "libvirt", fakeNetworks: networks })).toThrow(/^fake_networks: only the fake driver/);
    expect(fakeCidrOf("default")).toBe("10.122.0.0/16");
    expect(fakeCidrOf("lab")).toMatch(/^10\.(1[3-9]\d|12[89]|2[0-5]\d)\.0\.0\/16$/);
    expect(fakeCidrOf("lab")).toBe(fakeCidrOf("lab"));
  });
});
