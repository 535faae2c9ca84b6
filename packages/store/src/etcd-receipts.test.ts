import { describe, expect, it } from "vitest";
import { ReceiptLeases } from "./etcd-receipts.js";

describe("ReceiptLeases", () => {
  it("hands out distinct receipts on one lease that outlives the caller's deadline", async () => {
    const grants: number[] = [];
    const leases = new ReceiptLeases(async (ttlSeconds) => {
      grants.push(ttlSeconds);
      return { id: `L${grants.length}`, ttlMs: ttlSeconds * 1000 };
    }, "/r/", 1_000);
    const a = await leases.issue(Date.now() + 1_000);
    const b = await leases.issue(Date.now() + 1_000);
    expect(a && b && a.key !== b.key && a.key.startsWith("/r/")).toBe(true);
    expect([a?.leaseId, b?.leaseId]).toEqual(["L1", "L1"]);
    expect(grants).toEqual([3]);
  });

  it("grants the next lease before the current one gets too old, and forgets one etcd says is gone", async () => {
    let n = 0;
    const leases = new ReceiptLeases(async (ttlSeconds) => ({ id: `L${++n}`, ttlMs: ttlSeconds * 1000 }), "/r/", 100);
    expect((await leases.issue(Date.now() + 100))?.leaseId).toBe("L1");
    await new Promise((r) => setTimeout(r, 150));
    // Still valid (3 s TTL) but older than a call timeout: used once more while L2 is granted.
    expect((await leases.issue(Date.now() + 100))?.leaseId).toBe("L1");
    await new Promise((r) => setTimeout(r, 10));
    expect((await leases.issue(Date.now() + 100))?.leaseId).toBe("L2");
    leases.invalidate("L2");
    expect((await leases.issue(Date.now() + 100))?.leaseId).toBe("L3");
  });

  it("gives no receipt when no lease can be had (the write then goes without one)", async () => {
    const leases = new ReceiptLeases(async () => {
      throw new Error("etcd is down");
    }, "/r/", 1_000);
    expect(await leases.issue(Date.now() + 1_000)).toBeUndefined();
  });
});
