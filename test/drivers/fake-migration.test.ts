// The fake driver's live migration across processes, as two agents on one machine run it: each host's
// driver lives in its own child process (an agent stand-in taking one JSON command per line), and
// either is SIGKILLed mid-flight — by a `kill` fault at a named point (set through the host's
// control file, as a test sets it for another process), or by this process at a random instant.
// Throughout, a sampler reads both hosts' state files (what the "no VM runs on two hosts" check
// reads) and must never see the VM running on both. After a kill, the hosts are reopened and the
// outcome is decided as an agent would: by where the domain is (still at the source: resend
// migrateOut; gone from it: finishIncoming at the destination); the migration then completes.
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { DomainState, type Domain } from "@berth/api";
import { fakeRunningVmIds, writeFakeFaults, type DomainSpec, type FakeKillPoint, type MigrationTarget } from "@berth/hypervisor";

const HYPERVISOR_DIST = fileURLToPath(new URL("../../packages/hypervisor/dist/index.js", import.meta.url));
/** 512 MiB in use (half of 1 GiB) at 1024 MiB/s: a transfer of about 0.5 s of real time. */
const DRIVER_OPTIONS = { migrationBandwidthMibPerS: 1024 };
const TRANSFER_MS = 500;

/** An agent stand-in: opens the host's driver, runs `{ id, op, args }` lines, answers `{ id, ok, value | code, message }`. */
const HOST = `
  const { FakeDriver } = await import(${JSON.stringify(HYPERVISOR_DIST)});
  const { createInterface } = await import("node:readline");
  const [stateDir, options] = process.argv.slice(1);
  const driver = await FakeDriver.open({ stateDir, ...JSON.parse(options) });
  const say = (m) => process.stdout.write(JSON.stringify(m) + "\\n");
  createInterface({ input: process.stdin }).on("line", (line) => {
    const { id, op, args } = JSON.parse(line);
    driver[op](...args).then(
      (value) => say({ id, ok: true, value: value ?? null }),
      (e) => say({ id, ok: false, code: e.code ?? "", message: String(e.message) }),
    );
  });
  say({ id: 0, ok: true, value: "ready" });`;

class CallError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** One host's agent process. */
class Host {
  private readonly child: ChildProcess;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private seq = 0;
  private stderr = "";
  /** Resolves with the signal that ended the process (null: it exited). */
  readonly exited: Promise<NodeJS.Signals | null>;
  readonly ready: Promise<unknown>;

  constructor(readonly stateDir: string) {
    this.child = spawn(process.execPath, ["--input-type=module", "-e", HOST, stateDir, JSON.stringify(DRIVER_OPTIONS)], { stdio: ["pipe", "pipe", "pipe"] });
    this.child.stderr!.on("data", (c: Buffer) => (this.stderr += c.toString()));
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      const m = JSON.parse(line) as { id: number; ok: boolean; value?: unknown; code?: string; message?: string };
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (m.ok) w?.resolve(m.value);
      else w?.reject(new CallError(m.code!, m.message!));
    });
    this.exited = new Promise((resolve) =>
      this.child.on("exit", (_code, signal) => {
        for (const w of this.waiting.values()) w.reject(new CallError(`died: ${signal ?? "exit"}`, this.stderr));
        this.waiting.clear();
        resolve(signal);
      }),
    );
    this.ready = new Promise((resolve, reject) => this.waiting.set(0, { resolve, reject }));
  }

  async call<T>(op: string, ...args: unknown[]): Promise<T> {
    await this.ready;
    const id = ++this.seq;
    const result = new Promise<T>((resolve, reject) => this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject }));
    this.child.stdin!.write(`${JSON.stringify({ id, op, args })}\n`);
    return result;
  }

  /** The call's error code ("ok" if it succeeded; "died: SIGKILL" if the process was killed). */
  async code(op: string, ...args: unknown[]): Promise<string> {
    try {
      await this.call(op, ...args);
      return "ok";
    } catch (e) {
      return e instanceof CallError ? e.code : String(e);
    }
  }

  kill(): void {
    this.child.kill("SIGKILL");
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.stdin!.end();
      this.child.kill("SIGKILL");
    }
    await this.exited;
  }
}

/** Reads both hosts' state files every few ms; `both` counts samples showing the VM running on both. */
function sampler(vmId: string, dirs: [string, string]): { stop: () => { samples: number; both: number; seen: Set<string> } } {
  let samples = 0;
  let both = 0;
  const seen = new Set<string>();
  const timer = setInterval(() => {
    const on = dirs.map((d) => fakeRunningVmIds(d).includes(vmId));
    samples++;
    if (on[0] && on[1]) both++;
    seen.add(on.map((x) => (x ? "1" : "0")).join(""));
  }, 2);
  return {
    stop: () => {
      clearInterval(timer);
      return { samples, both, seen };
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const RUNNING = DomainState.DOMAIN_STATE_RUNNING;

describe("fake driver: live migration between two agent processes, either killed mid-flight", { timeout: 30_000 }, () => {
  const dirs: string[] = [];
  const hosts: Host[] = [];
  afterEach(async () => {
    for (const h of hosts.splice(0)) await h.stop();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  const host = (stateDir: string): Host => {
    const h = new Host(stateDir);
    hosts.push(h);
    return h;
  };

  /** Two hosts, a running domain on the first, the second prepared for it. */
  async function setup(): Promise<{ srcDir: string; dstDir: string; src: Host; dst: Host; spec: DomainSpec; target: MigrationTarget }> {
    const root = mkdtempSync(join(tmpdir(), "berth-fake-migration-"));
    dirs.push(root);
    const srcDir = join(root, "host-a");
    const dstDir = join(root, "host-b");
    const spec: DomainSpec = { vmId: randomUUID(), name: "web-1", resources: { vcpus: 2, memoryMib: 1024, diskGib: 10 }, generation: 3 };
    const src = host(srcDir);
    const dst = host(dstDir);
    await src.call("define", spec);
    await src.call("start", spec.vmId);
    const target = await dst.call<MigrationTarget>("prepareIncoming", spec);
    expect(target).toEqual({ driver: "fake", uri: `fake://${dstDir}`, vmId: spec.vmId });
    return { srcDir, dstDir, src, dst, spec, target };
  }

  const find = async (h: Host, vmId: string): Promise<Domain | undefined> => (await h.call<Domain[]>("list")).find((d) => d.vmId === vmId);

  /**
   * After a kill: reopens whichever host died, decides the outcome by where the domain is, as an
   * agent (and the controller) would, and completes the migration. Returns whether the source
   * still had the domain.
   */
  async function recover(s: { srcDir: string; dstDir: string; spec: DomainSpec; target: MigrationTarget }, src: Host, dst: Host): Promise<boolean> {
    const atSource = (await find(src, s.spec.vmId))?.state === RUNNING;
    if (atSource) {
      // Not migrated: the destination must not start it, and the resend finishes the job.
      expect(await find(dst, s.spec.vmId)).toBeUndefined();
      expect(["FAILED_PRECONDITION", "NOT_FOUND"]).toContain(await dst.code("finishIncoming", s.spec.vmId, 4));
      await src.call("migrateOut", s.spec.vmId, s.target, {});
    } else {
      expect(await find(src, s.spec.vmId)).toBeUndefined();
      // A resend at the source is the idempotent "already gone".
      await src.call("migrateOut", s.spec.vmId, s.target, {});
    }
    expect(await find(src, s.spec.vmId)).toBeUndefined();
    const arrived = await dst.call<Domain>("finishIncoming", s.spec.vmId, 4);
    expect(arrived).toMatchObject({ vmId: s.spec.vmId, name: "web-1", state: RUNNING, generation: 4 });
    expect(await dst.call<Domain>("finishIncoming", s.spec.vmId, 4)).toMatchObject({ state: RUNNING, generation: 4 });
    return atSource;
  }

  it("migrates once with both alive: progress, then the domain runs at the destination only", async () => {
    const s = await setup();
    const watch = sampler(s.spec.vmId, [s.srcDir, s.dstDir]);
    const started = Date.now();
    await s.src.call("migrateOut", s.spec.vmId, s.target, {});
    expect(Date.now() - started).toBeGreaterThanOrEqual(TRANSFER_MS - 50);
    await s.dst.call("finishIncoming", s.spec.vmId, 4);
    await sleep(20);
    const seen = watch.stop();
    expect(seen.both).toBe(0);
    // Seen at the source, then at the destination (and, between the commit and the finish, on neither).
    expect(seen.seen.has("10") && seen.seen.has("01") && !seen.seen.has("11")).toBe(true);
    expect(fakeRunningVmIds(s.dstDir)).toEqual([s.spec.vmId]);
  });

  const sourceKills: [FakeKillPoint, boolean][] = [
    ["migrateOut:transfer", true],
    ["migrateOut:before-commit", true],
    ["migrateOut:after-switchover", false],
  ];
  for (const [point, stillAtSource] of sourceKills) {
    it(`source killed at ${point}: ${stillAtSource ? "the domain runs on at the source; the resend migrates it" : "the domain has left; the destination takes it on"}`, async () => {
      const s = await setup();
      writeFakeFaults(s.srcDir, { kill: [{ point, vmId: s.spec.vmId }] });
      const watch = sampler(s.spec.vmId, [s.srcDir, s.dstDir]);
      expect(await s.src.code("migrateOut", s.spec.vmId, s.target, {})).toBe("died: SIGKILL");
      expect(await s.src.exited).toBe("SIGKILL");
      expect(fakeRunningVmIds(s.srcDir).includes(s.spec.vmId)).toBe(stillAtSource);
      const src = host(s.srcDir); // the agent restarts on the same host
      expect(await recover(s, src, s.dst)).toBe(stillAtSource);
      expect(watch.stop().both).toBe(0);
      expect(fakeRunningVmIds(s.srcDir)).toEqual([]);
      expect(fakeRunningVmIds(s.dstDir)).toEqual([s.spec.vmId]);
    });
  }

  for (const point of ["finishIncoming:before", "finishIncoming:after"] as const) {
    it(`destination killed at ${point}: the restarted destination finishes, once`, async () => {
      const s = await setup();
      const watch = sampler(s.spec.vmId, [s.srcDir, s.dstDir]);
      await s.src.call("migrateOut", s.spec.vmId, s.target, {});
      writeFakeFaults(s.dstDir, { kill: [{ point }] });
      expect(await s.dst.code("finishIncoming", s.spec.vmId, 4)).toBe("died: SIGKILL");
      expect(fakeRunningVmIds(s.dstDir).includes(s.spec.vmId)).toBe(point === "finishIncoming:after");
      const dst = host(s.dstDir);
      expect(await recover(s, s.src, dst)).toBe(false);
      expect(watch.stop().both).toBe(0);
      expect(fakeRunningVmIds(s.srcDir)).toEqual([]);
      expect(fakeRunningVmIds(s.dstDir)).toEqual([s.spec.vmId]);
    });
  }

  it("source SIGKILLed from outside at arbitrary instants of the migration: never on two hosts, and it completes", async () => {
    for (const atMs of [60, 250, TRANSFER_MS - 10, TRANSFER_MS + 5]) {
      const s = await setup();
      const watch = sampler(s.spec.vmId, [s.srcDir, s.dstDir]);
      const migrating = s.src.code("migrateOut", s.spec.vmId, s.target, {});
      await sleep(atMs);
      s.src.kill();
      const outcome = await migrating;
      expect(["ok", "died: SIGKILL"], `killed at ${atMs} ms`).toContain(outcome);
      const src = host(s.srcDir);
      await recover(s, src, s.dst);
      expect(watch.stop().both, `killed at ${atMs} ms`).toBe(0);
      expect(fakeRunningVmIds(s.dstDir)).toEqual([s.spec.vmId]);
    }
  });

  it("an abort at the source while the transfer runs keeps the domain there; the destination then drops its preparation", async () => {
    const s = await setup();
    const watch = sampler(s.spec.vmId, [s.srcDir, s.dstDir]);
    const migrating = s.src.code("migrateOut", s.spec.vmId, s.target, {});
    await sleep(TRANSFER_MS / 2);
    await s.src.call("abortMigration", s.spec.vmId);
    expect(await migrating).toBe("FAILED_PRECONDITION");
    await s.dst.call("abortMigration", s.spec.vmId);
    expect(await s.dst.code("finishIncoming", s.spec.vmId, 4)).toBe("NOT_FOUND");
    expect(watch.stop().both).toBe(0);
    expect((await find(s.src, s.spec.vmId))?.state).toBe(RUNNING);
    expect(fakeRunningVmIds(s.dstDir)).toEqual([]);
  });
});
