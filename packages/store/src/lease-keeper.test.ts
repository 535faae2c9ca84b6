import { describe, expect, it } from "vitest";
import { LeaseLostError, StoreUnavailableError } from "./errors.js";
import { LeaseKeeper } from "./lease-keeper.js";
import { MemoryStore } from "./memory-store.js";
import { sleep, stillPending, within } from "./test-helpers.testkit.js";
import type { Lease } from "./types.js";

const fakeLease = (ttlMs: number, keepAliveOnce: () => Promise<void>): Lease => ({
  id: "7",
  ttlMs,
  keepAliveOnce,
  revoke: async () => undefined,
});

describe("LeaseKeeper", () => {
  it("keeps a lease alive past its TTL", async () => {
    const store = new MemoryStore({ leaseGranularityMs: 300 });
    const lease = await store.grantLease(300);
    const keeper = new LeaseKeeper(lease, { marginMs: 100 });
    expect(await stillPending(keeper.lost, 1_000)).toBe(true);
    await expect(lease.keepAliveOnce()).resolves.toBeUndefined();
    keeper.stop();
    await store.close();
  });

  it("declares the lease lost before its TTL when keepalives keep failing", async () => {
    const started = Date.now();
    const keeper = new LeaseKeeper(
      fakeLease(1_000, async () => {
        throw new StoreUnavailableError("etcd did not answer");
      }),
      { marginMs: 300 },
    );
    const error = await within(keeper.lost, 3_000);
    const elapsed = Date.now() - started;
    expect(error).toBeInstanceOf(LeaseLostError);
    expect(error.message).toMatch(/no keepalive/);
    expect(elapsed).toBeGreaterThanOrEqual(690); // ttl - margin
    expect(elapsed).toBeLessThan(1_000); // before the store could expire it
  });

  it("declares the lease lost when a keepalive hangs", async () => {
    const keeper = new LeaseKeeper(fakeLease(600, () => new Promise(() => undefined)), { marginMs: 200 });
    expect(await within(keeper.lost, 2_000)).toBeInstanceOf(LeaseLostError);
  });

  it("declares it lost at once when the store says it expired", async () => {
    const keeper = new LeaseKeeper(
      fakeLease(3_000, async () => {
        throw new LeaseLostError("7");
      }),
    );
    const started = Date.now();
    await within(keeper.lost, 2_000);
    expect(Date.now() - started).toBeLessThan(1_500);
    expect(keeper.lostReason).toBeInstanceOf(LeaseLostError);
  });

  it("stops quietly", async () => {
    let calls = 0;
    const keeper = new LeaseKeeper(fakeLease(300, async () => void calls++), { marginMs: 100 });
    keeper.stop();
    await sleep(400);
    expect(calls).toBe(0);
    expect(keeper.lostReason).toBeUndefined();
  });
});
