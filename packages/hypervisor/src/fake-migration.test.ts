import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DomainState } from "@berth/api";
import { ErrorCode, isBerthError } from "@berth/core";
import {
  FAKE_KILLS_DONE_FILE,
  FAKE_STATE_FILE,
  FakeDriver,
  fakeMigrationProgress,
  fakeMigrationTimeToSend,
  fakeRunningVmIds,
  ManualClock,
  planFakeMigration,
  readFakeStoredState,
  resolveFakeDriverOptions,
  validateFakeFaultSpec,
  writeFakeFaults,
  type DomainSpec,
  type FakeDriverOptions,
  type FakeKillPoint,
  type MigrationProgress,
  type MigrationTarget,
} from "./index.js";

const { DOMAIN_STATE_RUNNING: RUNNING } = DomainState;
const MIB = 1024 * 1024;

// 4096 MiB, half in use by default: 2048 MiB to copy.
const spec: DomainSpec = {
  vmId: "00000000-0000-4000-8000-000000000001",
  name: "vm-1",
  resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 },
  generation: 1,
};
const vmId = spec.vmId;

let dir: string;
let drivers: FakeDriver[];
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "berth-fake-migration-"));
  drivers = [];
});
afterEach(async () => {
  for (const d of drivers) await d.close();
  rmSync(dir, { recursive: true, force: true });
});

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    return isBerthError(e) ? e.code : `not a BerthError: ${String(e)}`;
  }
}

describe("planFakeMigration / fakeMigrationProgress (pure)", () => {
  it("copies the memory, then what was dirtied, until the rest fits the downtime budget", () => {
    const plan = planFakeMigration({ totalMib: 2048, bandwidthMibPerS: 1024, dirtyRateMibPerS: 128, maxDowntimeMs: 300 });
    // Pass 1: 2048 MiB in 2 s, 256 MiB dirtied; 256 ≤ 307.2 (the budget): switchover.
    expect(plan.converges).toBe(true);
    expect(plan.passes).toEqual([{ iteration: 1, startMs: 0, durationMs: 2000, copyMib: 2048 }]);
    expect(plan.switchoverAtMs).toBe(2000);
    expect(plan.switchoverMib).toBe(256);
    expect(plan.completeAtMs).toBe(2250);
    expect(fakeMigrationProgress(plan, 1000)).toEqual({
      dataTotalBytes: 2048 * MIB,
      dataProcessedBytes: 1024 * MIB,
      dataRemainingBytes: (1024 + 128) * MIB,
      dirtyRateBytesPerS: 128 * MIB,
      iteration: 1,
    });
    expect(fakeMigrationProgress(plan, 2250)).toMatchObject({ dataProcessedBytes: (2048 + 256) * MIB, dataRemainingBytes: 0 });
  });

  it("needs more passes as the dirty rate nears the bandwidth", () => {
    const plan = planFakeMigration({ totalMib: 2048, bandwidthMibPerS: 1024, dirtyRateMibPerS: 512, maxDowntimeMs: 300 });
    // 2048 → 1024 → 512 → 256 (≤ 307.2): three passes of 2 s, 1 s, 0.5 s.
    expect(plan.passes.map((p) => [p.iteration, p.copyMib, p.durationMs])).toEqual([
      [1, 2048, 2000],
      [2, 1024, 1000],
      [3, 512, 500],
    ]);
    expect(plan.switchoverAtMs).toBe(3500);
    expect(fakeMigrationProgress(plan, 2500)).toMatchObject({ iteration: 2, dataProcessedBytes: (2048 + 512) * MIB });
  });

  it("never converges at a dirty rate ≥ the bandwidth: passes repeat, what remains does not shrink", () => {
    const plan = planFakeMigration({ totalMib: 2048, bandwidthMibPerS: 1024, dirtyRateMibPerS: 1024, maxDowntimeMs: 300 });
    expect(plan.converges).toBe(false);
    expect(plan.completeAtMs).toBe(Infinity);
    const samples = [1000, 10_000, 100_001].map((t) => fakeMigrationProgress(plan, t));
    for (const s of samples) expect(s.dataRemainingBytes).toBe(2048 * MIB);
    expect(samples.map((s) => s.iteration)).toEqual([1, 6, 51]); // a pass every 2 s
    expect(samples[2]!.dataProcessedBytes).toBe(Math.round(100.001 * 1024 * MIB));
    expect(fakeMigrationTimeToSend(plan, 3)).toBe(6000);
  });

  it("converges at once when everything fits the budget, and kills by fraction only within the transfer", () => {
    const plan = planFakeMigration({ totalMib: 32, bandwidthMibPerS: 1024, dirtyRateMibPerS: 8, maxDowntimeMs: 300 });
    expect(plan.converges).toBe(true);
    expect(plan.passes).toHaveLength(1);
    expect(fakeMigrationTimeToSend(plan, 0.5)).toBe(15.625);
    expect(fakeMigrationTimeToSend(plan, 2)).toBe(Infinity);
    // Even that small, a guest dirtying as fast as the link never converges (the fake's rule).
    expect(planFakeMigration({ totalMib: 32, bandwidthMibPerS: 1024, dirtyRateMibPerS: 1024, maxDowntimeMs: 300 }).converges).toBe(false);
  });
});

describe("fake driver options for migration", () => {
  it("defaults and validation name the field", () => {
    const o = resolveFakeDriverOptions({ stateDir: "x" });
    expect(o).toMatchObject({ migrationBandwidthMibPerS: 1024, migrationMaxDowntimeMs: 300, migrationTimeoutMs: 600_000 });
    expect(o.load.dirtyRateMibPerS).toBe(8);
    expect(() => resolveFakeDriverOptions({ stateDir: "x", migrationBandwidthMibPerS: 0 })).toThrow(/^fake_driver\.migration_bandwidth_mib_per_s: /);
    expect(() => resolveFakeDriverOptions({ stateDir: "x", migrationMaxDowntimeMs: -1 })).toThrow(/^fake_driver\.migration_max_downtime_ms: /);
    expect(() => resolveFakeDriverOptions({ stateDir: "x", migrationTimeoutMs: Number.NaN })).toThrow(/^fake_driver\.migration_timeout_ms: /);
    expect(() => resolveFakeDriverOptions({ stateDir: "x", load: { dirtyRateMibPerS: -1 } })).toThrow(/^fake_driver\.load\.dirtyRateMibPerS: /);
    expect(() => resolveFakeDriverOptions({ stateDir: "x", onKill: 3 as unknown as () => void })).toThrow(/^fake_driver\.on_kill: /);
  });

  it("kill rules are validated, naming the field", () => {
    expect(validateFakeFaultSpec({ kill: [{ point: "migrateOut:transfer" }] }, 0).kill).toEqual([{ point: "migrateOut:transfer", fraction: 0.5 }]);
    expect(validateFakeFaultSpec({ kill: [{ point: "finishIncoming:after", vmId }] }, 0).kill).toEqual([{ point: "finishIncoming:after", vmId }]);
    expect(() => validateFakeFaultSpec({ kill: [{ point: "start" }] }, 0)).toThrow(/^faults\.kill\[0\]\.point: /);
    expect(() => validateFakeFaultSpec({ kill: [{ point: "migrateOut:transfer", fraction: 0 }] }, 0)).toThrow(/^faults\.kill\[0\]\.fraction: /);
    expect(() => validateFakeFaultSpec({ kill: [{ point: "finishIncoming:before", fraction: 0.5 }] }, 0)).toThrow(/^faults\.kill\[0\]\.fraction: /);
  });
});

describe("FakeDriver: live migration on the clock", () => {
  let clock: ManualClock;
  let srcDir: string;
  let dstDir: string;
  beforeEach(() => {
    clock = new ManualClock(1_000_000);
    srcDir = path.join(dir, "host-a");
    dstDir = path.join(dir, "host-b");
  });
  const open = (stateDir: string, options: Partial<FakeDriverOptions> = {}): FakeDriver => {
    const d = new FakeDriver({ stateDir, clock, ...options });
    drivers.push(d);
    return d;
  };
  async function setup(srcOptions: Partial<FakeDriverOptions> = {}): Promise<{ src: FakeDriver; dst: FakeDriver; target: MigrationTarget }> {
    const src = open(srcDir, srcOptions);
    const dst = open(dstDir);
    await src.define(spec);
    await src.start(vmId);
    return { src, dst, target: await dst.prepareIncoming(spec) };
  }
  /** Tracks a promise's outcome without awaiting it. */
  function track(p: Promise<unknown>): { outcome: () => string | undefined; done: Promise<string> } {
    let outcome: string | undefined;
    const done = code(p).then((c) => (outcome = c));
    return { outcome: () => outcome, done };
  }

  it("takes the time pre-copy takes, reporting progress every interval; then the domain has left", async () => {
    const { src, dst, target } = await setup();
    const progress: MigrationProgress[] = [];
    // 2048 MiB at 1024 MiB/s, 8 MiB/s dirtied: pass 1 in 2 s, 16 MiB left, sent in 15.6 ms.
    const m = track(src.migrateOut(vmId, target, { onProgress: (p) => progress.push(p) }));
    await clock.advance(1999);
    expect(m.outcome()).toBeUndefined();
    expect((await src.list())[0]?.state).toBe(RUNNING);
    expect(progress.map((p) => p.dataProcessedBytes)).toEqual([512, 1024, 1536].map((x) => x * MIB));
    expect(progress.every((p) => p.dataTotalBytes === 2048 * MIB && p.iteration === 1 && p.dirtyRateBytesPerS === 8 * MIB)).toBe(true);
    expect(progress[0]!.dataRemainingBytes).toBe((1536 + 4) * MIB);
    await clock.advance(20);
    expect(await m.done).toBe("ok");
    expect(await src.list()).toEqual([]);
    expect((await dst.finishIncoming(vmId, 2)).state).toBe(RUNNING);
  });

  it("samples progress at the interval asked for", async () => {
    const { src, target } = await setup();
    const seen: number[] = [];
    const m = track(src.migrateOut(vmId, target, { progressIntervalMs: 250, onProgress: () => seen.push(clock.now()) }));
    await clock.advance(3000);
    expect(await m.done).toBe("ok");
    // Done at 2015.6 ms: a sample every 250 ms before that.
    expect(seen).toEqual([250, 500, 750, 1000, 1250, 1500, 1750, 2000].map((t) => 1_000_000 + t));
    expect(await code(src.migrateOut(vmId, target, { progressIntervalMs: 0 }))).toBe(ErrorCode.InvalidArgument);
  });

  it("goes slower at a lower bandwidth and with a busier guest", async () => {
    const { src, target } = await setup({ migrationBandwidthMibPerS: 512 });
    await src.setLoad(vmId, { dirtyRateMibPerS: 256 });
    // 2048 MiB at 512 MiB/s: 4 s, 1024 dirtied; 2 s, 512; 1 s, 256; 0.5 s, 128 ≤ 153.6: 7.5 s + 0.25 s.
    const m = track(src.migrateOut(vmId, target));
    await clock.advance(7700);
    expect(m.outcome()).toBeUndefined();
    await clock.advance(100);
    expect(await m.done).toBe("ok");
  });

  it("does not converge at a dirty rate ≥ the bandwidth: progress stalls until the timeout, the domain running on", async () => {
    const { src, dst, target } = await setup();
    await src.setLoad(vmId, { dirtyRateMibPerS: 2048 });
    const progress: MigrationProgress[] = [];
    const m = track(src.migrateOut(vmId, target, { timeoutMs: 60_000, onProgress: (p) => progress.push(p) }));
    await clock.advance(59_999);
    expect(m.outcome()).toBeUndefined();
    expect(progress.at(-1)!.dataRemainingBytes).toBe(2048 * MIB);
    expect(progress.at(-1)!.iteration).toBe(30);
    await clock.advance(1);
    expect(await m.done).toBe(ErrorCode.DeadlineExceeded);
    expect((await src.list())[0]?.state).toBe(RUNNING);
    expect(fakeRunningVmIds(srcDir, clock.now())).toEqual([vmId]);
    expect(await code(dst.finishIncoming(vmId, 2))).toBe(ErrorCode.NotFound);
  });

  it("times out by the driver's default when the call gives none", async () => {
    const { src, target } = await setup({ migrationTimeoutMs: 5000, load: { dirtyRateMibPerS: 4096 } });
    const m = track(src.migrateOut(vmId, target));
    await clock.advance(5000);
    expect(await m.done).toBe(ErrorCode.DeadlineExceeded);
  });

  it("aborts on the source: the call fails FAILED_PRECONDITION, the domain runs on, the destination can clean up", async () => {
    const { src, dst, target } = await setup();
    const m = track(src.migrateOut(vmId, target));
    await clock.advance(1000);
    await src.abortMigration(vmId);
    expect(await m.done).toBe(ErrorCode.FailedPrecondition);
    expect((await src.list())[0]?.state).toBe(RUNNING);
    await dst.abortMigration(vmId);
    expect(readdirSync(dstDir).sort()).toEqual([FAKE_STATE_FILE]);
    // A new attempt after the abort works.
    const again = track(src.migrateOut(vmId, await dst.prepareIncoming(spec)));
    await clock.advance(3000);
    expect(await again.done).toBe("ok");
  });

  it("joins a resend while the migration runs; refuses one to another destination", async () => {
    const { src, target } = await setup();
    const first = track(src.migrateOut(vmId, target));
    const second = track(src.migrateOut(vmId, target));
    const other = { ...target, uri: `fake://${path.join(dir, "host-c")}` };
    expect(await code(src.migrateOut(vmId, other))).toBe(ErrorCode.FailedPrecondition);
    await clock.advance(3000);
    expect([await first.done, await second.done]).toEqual(["ok", "ok"]);
  });

  it("fails when the domain is stopped during the transfer", async () => {
    const { src, target } = await setup();
    const m = track(src.migrateOut(vmId, target));
    await clock.advance(500);
    await src.destroy(vmId);
    await clock.advance(500);
    expect(await m.done).toBe(ErrorCode.FailedPrecondition);
    expect(readFakeStoredState(srcDir, 0).outgoing).toEqual([]);
  });

  it("fails each phase by fault injection without changing anything; the next attempt goes on", async () => {
    const src = open(srcDir);
    const dst = open(dstDir);
    await src.define(spec);
    await src.start(vmId);
    // From the control file, as a test in another process would set it.
    writeFakeFaults(dstDir, { failNext: [{ op: "prepareIncoming" }, { op: "finishIncoming", code: ErrorCode.Internal }, { op: "abortMigration" }] });
    expect(await code(dst.prepareIncoming(spec))).toBe(ErrorCode.HypervisorUnavailable);
    expect(readFakeStoredState(dstDir, 0)).toMatchObject({ incoming: [], volumes: [] });
    const target = await dst.prepareIncoming(spec);
    src.faults.failNext({ op: "migrateOut", vmId });
    expect(await code(src.migrateOut(vmId, target))).toBe(ErrorCode.HypervisorUnavailable);
    expect((await src.list())[0]?.state).toBe(RUNNING);
    const m = track(src.migrateOut(vmId, target));
    await clock.advance(3000);
    expect(await m.done).toBe("ok");
    expect(await code(dst.finishIncoming(vmId, 2))).toBe(ErrorCode.Internal);
    expect(fakeRunningVmIds(dstDir, clock.now())).toEqual([]);
    expect(await code(dst.abortMigration(vmId))).toBe(ErrorCode.HypervisorUnavailable);
    expect((await dst.finishIncoming(vmId, 2)).state).toBe(RUNNING);
  });

  it("removes at open the temp files of handoffs whose writer died, not those of a live writer", () => {
    const dead = `fake-incoming-${vmId}.json.999999999.1.tmp`;
    const live = `fake-incoming-${vmId}.json.${process.pid}.1.tmp`;
    mkdirSync(dstDir, { recursive: true });
    for (const f of [dead, live]) writeFileSync(path.join(dstDir, f), "{");
    open(dstDir);
    expect(readdirSync(dstDir).filter((f) => f.endsWith(".tmp"))).toEqual([live]);
  });

  describe("kill points", () => {
    const killedAt: string[] = [];
    beforeEach(() => void (killedAt.length = 0));
    const onKill = (p: FakeKillPoint): void => void killedAt.push(p);

    it("migrateOut:transfer strikes at the fraction sent; nothing committed, the resend after restart finishes", async () => {
      const { src, dst, target } = await setup({ onKill });
      src.faults.killAt({ point: "migrateOut:transfer", vmId, fraction: 0.25 });
      const m = track(src.migrateOut(vmId, target));
      await clock.advance(499);
      expect(killedAt).toEqual([]);
      await clock.advance(1);
      expect(killedAt).toEqual(["migrateOut:transfer"]);
      expect(await m.done).toBe(ErrorCode.HypervisorUnavailable);
      expect(fakeRunningVmIds(srcDir, clock.now())).toEqual([vmId]);
      const restarted = open(srcDir);
      expect((await restarted.list())[0]?.state).toBe(RUNNING);
      const again = track(restarted.migrateOut(vmId, target));
      await clock.advance(3000);
      expect(await again.done).toBe("ok");
      expect((await dst.finishIncoming(vmId, 2)).state).toBe(RUNNING);
    });

    it("migrateOut:after-switchover: committed, the domain has left; the resend succeeds; finishIncoming takes it on", async () => {
      const { src, dst, target } = await setup({ onKill });
      src.faults.killAt({ point: "migrateOut:after-switchover" });
      const m = track(src.migrateOut(vmId, target));
      await clock.advance(3000);
      expect(await m.done).toBe(ErrorCode.HypervisorUnavailable);
      expect(fakeRunningVmIds(srcDir, clock.now())).toEqual([]);
      expect(fakeRunningVmIds(dstDir, clock.now())).toEqual([]); // paused at the destination until finish
      const restarted = open(srcDir);
      expect(await restarted.list()).toEqual([]);
      await restarted.migrateOut(vmId, target);
      // Aborting on the destination now keeps what has arrived.
      await dst.abortMigration(vmId);
      expect((await dst.finishIncoming(vmId, 2)).state).toBe(RUNNING);
    });

    it("finishIncoming:before and :after: the restarted destination finishes, once", async () => {
      const { src, target } = await setup();
      const dst = drivers.find((d) => d.options.stateDir === path.resolve(dstDir))!;
      await dst.close();
      const dying = open(dstDir, { onKill });
      dying.faults.killAt({ point: "finishIncoming:before", vmId });
      const m = track(src.migrateOut(vmId, target));
      await clock.advance(3000);
      expect(await m.done).toBe("ok");
      expect(await code(dying.finishIncoming(vmId, 2))).toBe(ErrorCode.HypervisorUnavailable);
      expect(fakeRunningVmIds(dstDir, clock.now())).toEqual([]);

      const second = open(dstDir, { onKill });
      second.faults.killAt({ point: "finishIncoming:after", vmId });
      expect(await code(second.finishIncoming(vmId, 2))).toBe(ErrorCode.HypervisorUnavailable);
      expect(killedAt).toEqual(["finishIncoming:before", "finishIncoming:after"]);
      expect(fakeRunningVmIds(dstDir, clock.now())).toEqual([vmId]);
      expect(readdirSync(dstDir)).toContain(`fake-incoming-${vmId}.json`);

      const third = open(dstDir);
      const incarnation = third.incarnation(vmId);
      expect((await third.finishIncoming(vmId, 2)).state).toBe(RUNNING);
      expect(third.incarnation(vmId)).toBe(incarnation);
      expect(readdirSync(dstDir).filter((f) => f.startsWith("fake-incoming-"))).toEqual([]);
    });

    it("a kill from the control file strikes once, not again in the restarted process", async () => {
      const { src, target } = await setup({ onKill });
      writeFakeFaults(srcDir, { kill: [{ point: "migrateOut:transfer", vmId, fraction: 0.5 }] });
      const m = track(src.migrateOut(vmId, target));
      await clock.advance(3000);
      expect(await m.done).toBe(ErrorCode.HypervisorUnavailable);
      expect(readdirSync(srcDir)).toContain(FAKE_KILLS_DONE_FILE);
      const restarted = open(srcDir, { onKill });
      const again = track(restarted.migrateOut(vmId, target));
      await clock.advance(3000);
      expect(await again.done).toBe("ok");
      expect(killedAt).toEqual(["migrateOut:transfer"]);
    });
  });
});
