import { mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BerthError, ErrorCode, isBerthError } from "@berth/core";
import type { HypervisorHealth } from "./driver.js";
import { ManualClock } from "./fake-clock.js";
import { FAKE_FAULTS_FILE, FaultPlan, validateFakeFaultSpec, writeFakeFaults } from "./fake-faults.js";

const VM = "00000000-0000-4000-8000-000000000001";
const OTHER = "00000000-0000-4000-8000-000000000002";

let dir: string;
let clock: ManualClock;
let crashes: [string, number | undefined][];
let healths: HypervisorHealth[];
let plans: FaultPlan[];

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "berth-faults-"));
  clock = new ManualClock(1_000_000);
  crashes = [];
  healths = [];
  plans = [];
});

afterEach(() => {
  for (const p of plans) p.stop();
  rmSync(dir, { recursive: true, force: true });
});

function plan(): FaultPlan {
  const p = new FaultPlan(
    dir,
    clock,
    {
      crash: async (vmId, atMs) => void crashes.push([vmId, atMs]),
      beforeLoadChange: () => undefined,
      healthChanged: (h) => void healths.push(h),
    },
    1000,
  );
  p.start();
  plans.push(p);
  return p;
}

function failure(f: () => void): BerthError | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof BerthError) return e;
    throw e;
  }
  return undefined;
}

describe("FaultPlan (API layer)", () => {
  it("fails the next count calls of an op, then lets them through", () => {
    const p = plan();
    p.failNext({ op: "start", count: 2, code: ErrorCode.HypervisorUnavailable });
    expect(failure(() => p.check("stop", VM))).toBeUndefined();
    expect(failure(() => p.check("start", VM))?.code).toBe(ErrorCode.HypervisorUnavailable);
    expect(failure(() => p.check("start", OTHER))?.code).toBe(ErrorCode.HypervisorUnavailable);
    expect(failure(() => p.check("start", VM))).toBeUndefined();
  });

  it("targets one VM when told, with the given code and message", () => {
    const p = plan();
    p.failNext({ op: "define", vmId: VM, code: ErrorCode.ResourceExhausted, message: "disk full" });
    expect(failure(() => p.check("define", OTHER))).toBeUndefined();
    const e = failure(() => p.check("define", VM));
    expect(e?.code).toBe(ErrorCode.ResourceExhausted);
    expect(e?.message).toBe("disk full");
    expect(failure(() => p.check("define", VM))).toBeUndefined();
  });

  it("applies the largest matching latency", () => {
    const p = plan();
    p.addLatency({ ms: 10 });
    p.addLatency({ op: "start", ms: 50 });
    p.addLatency({ op: "start", vmId: VM, ms: 200 });
    expect(p.latencyFor("list", undefined)).toBe(10);
    expect(p.latencyFor("start", OTHER)).toBe(50);
    expect(p.latencyFor("start", VM)).toBe(200);
    p.clear();
    expect(p.latencyFor("start", VM)).toBe(0);
  });

  it("makes the hypervisor unavailable for a window that ends on time, with a health change at each end", async () => {
    const p = plan();
    p.makeUnavailable({ forMs: 5000, message: "libvirtd stopped" });
    expect(p.health()).toEqual({ available: false, message: "libvirtd stopped" });
    expect(failure(() => p.check("list", undefined))?.code).toBe(ErrorCode.HypervisorUnavailable);
    await clock.advance(4999);
    expect(p.health().available).toBe(false);
    await clock.advance(1);
    expect(p.health()).toEqual({ available: true, message: "" });
    expect(healths).toEqual([
      { available: false, message: "libvirtd stopped" },
      { available: true, message: "" },
    ]);
  });

  it("stays unavailable until makeAvailable without a window", () => {
    const p = plan();
    p.makeUnavailable();
    expect(p.health().available).toBe(false);
    p.makeAvailable();
    p.makeAvailable();
    expect(p.health().available).toBe(true);
    expect(healths.map((h) => h.available)).toEqual([false, true]);
  });

  it("remembers guests that ignore shutdown until cleared", () => {
    const p = plan();
    p.ignoreShutdown(VM);
    expect(p.ignoresShutdown(VM)).toBe(true);
    expect(p.ignoresShutdown(OTHER)).toBe(false);
    p.ignoreShutdown(VM, false);
    expect(p.ignoresShutdown(VM)).toBe(false);
  });

  it("passes crash orders to the driver", async () => {
    const p = plan();
    await p.crash(VM);
    expect(crashes).toEqual([[VM, undefined]]);
  });

  it("validates API calls, naming the field", () => {
    const p = plan();
    expect(() => p.failNext({ op: "reboot" as never })).toThrow(/^failNext\.op: /);
    expect(() => p.failNext({ op: "start", count: 0 })).toThrow(/^failNext\.count: /);
    expect(() => p.addLatency({ ms: -1 })).toThrow(/^latency\.ms: /);
    expect(() => p.makeUnavailable({ forMs: Number.NaN })).toThrow(/^unavailable\.forMs: /);
  });
});

describe("the control file", () => {
  it("is read at the next poll after it changes, from another process's writeFakeFaults", async () => {
    const p = plan();
    expect(p.health().available).toBe(true);
    writeFakeFaults(dir, {
      failNext: [{ op: "start", count: 1, code: ErrorCode.DeadlineExceeded }],
      latency: [{ op: "list", ms: 30 }],
      ignoreShutdown: [VM],
    });
    p.poll();
    expect(failure(() => p.check("start", VM))?.code).toBe(ErrorCode.DeadlineExceeded);
    expect(failure(() => p.check("start", VM))).toBeUndefined();
    expect(p.latencyFor("list", undefined)).toBe(30);
    expect(p.ignoresShutdown(VM)).toBe(true);
    expect(readdirSync(dir)).toEqual([FAKE_FAULTS_FILE]);
  });

  it("starts an unavailability window on the slow timer and ends it on time, without any operation", async () => {
    const p = plan();
    writeFakeFaults(dir, { unavailable: { forMs: 10_000, message: "maintenance" } }, { now: clock.now() });
    await clock.advance(1000); // the poll timer
    expect(healths).toEqual([{ available: false, message: "maintenance" }]);
    await clock.advance(8999);
    expect(p.health().available).toBe(false);
    await clock.advance(1);
    expect(healths.map((h) => h.available)).toEqual([false, true]);
  });

  it("replaces the file layer on each change and drops it when the file goes", () => {
    const p = plan();
    p.ignoreShutdown(OTHER);
    writeFakeFaults(dir, { unavailable: true });
    p.poll();
    expect(p.health().available).toBe(false);
    writeFakeFaults(dir, { ignoreShutdown: [VM] });
    p.poll();
    expect(p.health().available).toBe(true);
    expect(p.ignoresShutdown(VM)).toBe(true);
    unlinkSync(path.join(dir, FAKE_FAULTS_FILE));
    p.poll();
    expect(p.ignoresShutdown(VM)).toBe(false);
    expect(p.ignoresShutdown(OTHER)).toBe(true); // the API layer is separate
  });

  it("pins crash orders to the time they were written and passes them on once per change", () => {
    writeFakeFaults(dir, { crash: [VM, { vmId: OTHER, atMs: 42 }] }, { now: 777 });
    expect(JSON.parse(readFileSync(path.join(dir, FAKE_FAULTS_FILE), "utf8")).crash).toEqual([
      { vmId: VM, atMs: 777 },
      { vmId: OTHER, atMs: 42 },
    ]);
    const p = plan();
    p.poll();
    p.poll();
    expect(crashes).toEqual([
      [VM, 777],
      [OTHER, 42],
    ]);
  });

  it("keeps the previous layer and reports why when the file is invalid", () => {
    const p = plan();
    writeFakeFaults(dir, { ignoreShutdown: [VM] });
    p.poll();
    writeFileSync(path.join(dir, FAKE_FAULTS_FILE), JSON.stringify({ failNext: [{ op: "start", count: "two" }] }));
    p.poll();
    expect(p.controlFileError).toMatch(/^fake-faults\.json\.failNext\[0\]\.count: /);
    expect(p.ignoresShutdown(VM)).toBe(true);
    writeFakeFaults(dir, {});
    p.poll();
    expect(p.controlFileError).toBeUndefined();
    expect(p.ignoresShutdown(VM)).toBe(false);
  });

  it("carries per-VM and default load", () => {
    const p = plan();
    writeFakeFaults(dir, {
      load: { default: { cpu: { kind: "constant", fraction: 0.1 } }, vms: { [VM]: { memory: { kind: "constant", fraction: 0.9 } } } },
    });
    p.poll();
    expect(p.fileLoad(VM)).toEqual({ default: { cpu: { kind: "constant", fraction: 0.1 } }, vm: { memory: { kind: "constant", fraction: 0.9 } } });
    expect(p.fileLoad(OTHER).vm).toBeUndefined();
  });
});

describe("validateFakeFaultSpec", () => {
  it.each<[unknown, string]>([
    [[], "faults"],
    [{ failnext: [] }, "faults.failnext"],
    [{ failNext: {} }, "faults.failNext"],
    [{ failNext: [{ op: "start", code: "OOPS" }] }, "faults.failNext[0].code"],
    [{ failNext: [{ count: 1 }] }, "faults.failNext[0].op"],
    [{ latency: [{ op: "start" }] }, "faults.latency[0].ms"],
    [{ crash: [""] }, "faults.crash[0]"],
    [{ crash: [{ vmId: VM, atMs: "now" }] }, "faults.crash[0].atMs"],
    [{ ignoreShutdown: [3] }, "faults.ignoreShutdown[0]"],
    [{ unavailable: { forMs: 1, untilMs: 2 } }, "faults.unavailable.forMs"],
    [{ unavailable: "yes" }, "faults.unavailable"],
    [{ load: { vms: { [VM]: { cpu: { kind: "constant", fraction: 2 } } } } }, `faults.load.vms.${VM}.cpu.fraction`],
  ])("rejects %j naming %s", (raw, field) => {
    let error: unknown;
    try {
      validateFakeFaultSpec(raw, 0);
    } catch (e) {
      error = e;
    }
    expect(isBerthError(error, ErrorCode.InvalidArgument)).toBe(true);
    expect((error as Error).message.startsWith(`${field}: `)).toBe(true);
  });

  it("refuses to write an invalid spec and leaves no file", () => {
    expect(() => writeFakeFaults(dir, { latency: [{ ms: -5 }] })).toThrow(/^faults\.latency\[0\]\.ms: /);
    expect(readdirSync(dir)).toEqual([]);
  });

  it("pins a window's forMs to an absolute untilMs", () => {
    writeFakeFaults(dir, { unavailable: { forMs: 500 } }, { now: 1000 });
    const raw = JSON.parse(readFileSync(path.join(dir, FAKE_FAULTS_FILE), "utf8"));
    expect(raw.unavailable.untilMs).toBe(1500);
    expect(raw.unavailable.forMs).toBeUndefined();
  });
});

describe("kill rules", () => {
  it("API layer: armed per point and VM, peeked without consuming, taken once, cleared by clear()", () => {
    const p = plan();
    p.killAt({ point: "migrateOut:transfer", vmId: VM, fraction: 0.25 });
    p.killAt({ point: "finishIncoming:after" });
    expect(p.pendingKill("migrateOut:transfer", OTHER)).toBeUndefined();
    expect(p.pendingKill("migrateOut:transfer", VM)).toEqual({ point: "migrateOut:transfer", vmId: VM, fraction: 0.25 });
    expect(p.takeKill("migrateOut:transfer", VM)).toBe(true);
    expect(p.takeKill("migrateOut:transfer", VM)).toBe(false);
    p.clear();
    expect(p.takeKill("finishIncoming:after", OTHER)).toBe(false);
    expect(() => p.killAt({ point: "nowhere" as never })).toThrow(/^kill\.point: /);
    // API rules leave no trace on disk.
    expect(readdirSync(dir)).toEqual([]);
  });

  it("control file: a rule that struck stays done for a plan reading the same file again (a restarted process); a rewrite re-arms", () => {
    writeFakeFaults(dir, { kill: [{ point: "migrateOut:before-commit", vmId: VM }, { point: "finishIncoming:before" }] });
    expect(JSON.parse(readFileSync(path.join(dir, FAKE_FAULTS_FILE), "utf8")).kill).toEqual([
      { point: "migrateOut:before-commit", vmId: VM },
      { point: "finishIncoming:before" },
    ]);
    const first = plan();
    expect(first.takeKill("migrateOut:before-commit", VM)).toBe(true);
    const restarted = plan();
    expect(restarted.takeKill("migrateOut:before-commit", VM)).toBe(false);
    expect(restarted.takeKill("finishIncoming:before", VM)).toBe(true);
    expect(plan().takeKill("finishIncoming:before", VM)).toBe(false);
    // Written anew (another inode): armed again.
    clock = new ManualClock(2_000_000);
    writeFakeFaults(dir, { kill: [{ point: "migrateOut:before-commit" }] });
    expect(plan().takeKill("migrateOut:before-commit", OTHER)).toBe(true);
  });
});
