import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import fc from "fast-check";
import { DomainState, type Domain } from "@berth/api";
import { BerthError, ErrorCode, isBerthError } from "@berth/core";
import { idleStats } from "./driver.js";
import { writeFileAtomic } from "./fake-state.js";
import {
  DEFAULT_FAKE_CAPACITY,
  FAKE_STATE_FILE,
  FAKE_STATE_FORMAT,
  effectiveFakeDomains,
  effectiveFakeState,
  FAKE_STATE_FORMAT_V2,
  FAKE_STATE_FORMAT_V3,
  FakeDriver,
  fakeRunningVmIds,
  ManualClock,
  readFakeHypervisorState,
  readFakeStoredState,
  realClock,
  renderNoCloudSeed,
  resolveFakeDriverOptions,
  writeFakeFaults,
  type FakeClock,
  type DomainSpec,
  type DriverEvent,
  type FakeDriverOptions,
  type HypervisorDriver,
} from "./index.js";

const { DOMAIN_STATE_SHUTOFF: SHUTOFF, DOMAIN_STATE_RUNNING: RUNNING, DOMAIN_STATE_PAUSED: PAUSED, DOMAIN_STATE_CRASHED: CRASHED } =
  DomainState;

const spec = (n: number, generation = 1): DomainSpec => ({
  vmId: `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`,
  name: `vm-${n}`,
  resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 },
  generation,
});

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error("expected the promise to reject");
}

let dir: string;
let drivers: FakeDriver[];

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "berth-fake-"));
  drivers = [];
});

afterEach(async () => {
  for (const d of drivers) await d.close();
  rmSync(dir, { recursive: true, force: true });
});

function driver(stateDir = dir, options: Partial<FakeDriverOptions> = {}): FakeDriver {
  const d = new FakeDriver({ stateDir, ...options });
  drivers.push(d);
  return d;
}

/** What a domain defined without an image, NICs or data volumes has of them. */
const NO_DEVICES = { interfaces: [], volumeIds: [], imageId: "" } as const;
/** What a host that never held an image nor a data volume reports of them. */
const EMPTY_STORAGE = { devices: {}, images: [], dataVolumes: {} } as const;

/** A driver whose migrations take a few ms of real time (timing is tested in fake-migration.test.ts). */
const FAST = { migrationBandwidthMibPerS: 1_000_000 } as const;

describe("resolveFakeDriverOptions", () => {
  it("applies the default capacity", () => {
    const o = resolveFakeDriverOptions({ stateDir: "x" });
    expect(o.capacity).toEqual({ vcpus: 16, memoryMib: 65536, diskGib: 1024 });
    expect(path.isAbsolute(o.stateDir)).toBe(true);
  });

  it("merges a partial capacity with the defaults", () => {
    expect(resolveFakeDriverOptions({ stateDir: "x", capacity: { vcpus: 64 } }).capacity).toEqual({
      ...DEFAULT_FAKE_CAPACITY,
      vcpus: 64,
    });
  });

  it.each([
    [{ stateDir: "" }, "fake_driver.state_dir"],
    [{ stateDir: "x", capacity: { vcpus: 0 } }, "fake_driver.capacity.vcpus"],
    [{ stateDir: "x", capacity: { memoryMib: 1.5 } }, "fake_driver.capacity.memory_mib"],
    [{ stateDir: "x", capacity: { diskGib: -1 } }, "fake_driver.capacity.disk_gib"],
    [{ stateDir: "x", capacity: { cpus: 4 } as never }, "fake_driver.capacity.cpus"],
  ])("rejects %j naming %s", (options, field) => {
    let error: unknown;
    try {
      resolveFakeDriverOptions(options);
    } catch (e) {
      error = e;
    }
    expect(isBerthError(error, ErrorCode.InvalidArgument)).toBe(true);
    expect((error as Error).message.startsWith(`${field}: `)).toBe(true);
  });
});

describe("FakeDriver", () => {
  it("reports its capacity and kind", async () => {
    const d = new FakeDriver({ stateDir: dir, capacity: { vcpus: 8, memoryMib: 8192, diskGib: 100 } });
    drivers.push(d);
    expect(d.kind).toBe("fake");
    expect(await d.hostFacts()).toEqual({
      capacity: { vcpus: 8, memoryMib: 8192, diskGib: 100 },
      driver: "fake",
      cpuModel: "fake-cpu",
      numaCells: [{ id: 0, cpus: 8, memoryMib: 8192 }],
      hypervisorVersion: "fake 1",
    });
  });

  it("creates a missing state directory", async () => {
    const nested = path.join(dir, "a", "b");
    const d = driver(nested);
    await d.define(spec(1));
    expect(readdirSync(nested)).toEqual([FAKE_STATE_FILE]);
  });

  it("walks a domain through its life and counts each operation once", async () => {
    const d: HypervisorDriver = driver();
    const s = spec(1, 3);
    expect(await d.list()).toEqual([]);

    const defined = await d.define(s);
    expect(defined).toEqual({ vmId: s.vmId, name: "vm-1", state: SHUTOFF, generation: 3, resources: s.resources, fence: false, ...NO_DEVICES });
    expect((await d.start(s.vmId)).state).toBe(RUNNING);
    expect((await d.setGeneration(s.vmId, 4)).generation).toBe(4);
    expect(await d.list()).toEqual([{ ...defined, state: RUNNING, generation: 4 }]);
    expect((await d.stop(s.vmId, { force: false })).state).toBe(SHUTOFF);
    await d.delete(s.vmId);
    expect(await d.list()).toEqual([]);

    expect(readFakeHypervisorState(dir)).toEqual({
      domains: [],
      operations: { [s.vmId]: { define: 1, start: 1, stop: 1, delete: 1 } },
      volumes: [],
      incoming: [],
      watchdog: { deadlineMs: 0, firedAtMs: 0 },
      ...EMPTY_STORAGE,
    });
  });

  it("treats a repeated operation as a no-op that is not counted", async () => {
    const d = driver();
    const s = spec(1);
    const first = await d.define(s);
    // A define of an existing vmId returns it as is, even with a different spec.
    expect(await d.define({ ...s, name: "other", generation: 9, resources: { vcpus: 1, memoryMib: 16, diskGib: 0 } })).toEqual(first);
    expect(await d.stop(s.vmId, { force: true })).toEqual(first);
    const running = await d.start(s.vmId);
    expect(await d.start(s.vmId)).toEqual(running);
    expect(await d.setGeneration(s.vmId, 1)).toEqual(running);
    await d.stop(s.vmId, { force: true });
    await d.stop(s.vmId, { force: false });
    await d.delete(s.vmId);
    await d.delete(s.vmId);

    expect(d.operationCounts(s.vmId)).toEqual({ define: 1, start: 1, stop: 1, delete: 1 });
    expect(readFakeHypervisorState(dir).operations[s.vmId]).toEqual({ define: 1, start: 1, stop: 1, delete: 1 });
  });

  it("succeeds deleting an absent domain without counting it", async () => {
    const d = driver();
    await d.delete(spec(7).vmId);
    expect(readFakeHypervisorState(dir)).toEqual({ domains: [], operations: {}, volumes: [], incoming: [], watchdog: { deadlineMs: 0, firedAtMs: 0 }, ...EMPTY_STORAGE });
  });

  it("answers NOT_FOUND for start, stop and setGeneration of an unknown domain", async () => {
    const d = driver();
    const vmId = spec(1).vmId;
    for (const call of [d.start(vmId), d.stop(vmId, { force: true }), d.setGeneration(vmId, 2), d.pause(vmId)]) {
      const e = await rejection(call);
      expect(isBerthError(e, ErrorCode.NotFound)).toBe(true);
      expect((e as Error).message).toContain(vmId);
    }
  });

  it("rejects a malformed spec with INVALID_ARGUMENT and changes nothing", async () => {
    const d = driver();
    const bad = [
      { ...spec(1), vmId: "" },
      { ...spec(1), generation: -1 },
      { ...spec(1), resources: { vcpus: 1.5, memoryMib: 16, diskGib: 0 } },
    ];
    for (const s of bad) expect(isBerthError(await rejection(d.define(s)), ErrorCode.InvalidArgument)).toBe(true);
    expect(await d.list()).toEqual([]);
  });

  it("keeps domains, states, generations and counters across a new driver on the same directory", async () => {
    const a = driver();
    await a.define(spec(1, 5));
    await a.define(spec(2));
    await a.define(spec(3));
    await a.start(spec(1).vmId);
    await a.start(spec(2).vmId);
    await a.pause(spec(2).vmId);
    await a.delete(spec(3).vmId);
    const before = await a.list();
    // No close(): the first driver is abandoned as a SIGKILLed agent would leave it.
    const b = driver();
    expect(await b.list()).toEqual(before);
    expect(before.map((x) => x.state)).toEqual([RUNNING, PAUSED]);
    expect(b.operationCounts(spec(3).vmId)).toEqual({ define: 1, start: 0, stop: 0, delete: 1 });

    // Idempotency holds across the restart: the running domain is not started again.
    await b.start(spec(1).vmId);
    await b.define(spec(1));
    expect(readFakeHypervisorState(dir).operations[spec(1).vmId]).toEqual({ define: 1, start: 1, stop: 0, delete: 0 });
    expect((await b.list())[0]?.generation).toBe(5);
  });

  it("counts a re-define after delete as a second define", async () => {
    const d = driver();
    await d.define(spec(1));
    await d.delete(spec(1).vmId);
    await d.define(spec(1));
    expect(d.operationCounts(spec(1).vmId)).toEqual({ define: 2, start: 0, stop: 0, delete: 1 });
  });

  it("pauses, resumes and crashes like libvirt; start and stop recover from any state", async () => {
    const d = driver();
    const { vmId } = spec(1);
    await d.define(spec(1));
    expect(isBerthError(await rejection(d.pause(vmId)), ErrorCode.FailedPrecondition)).toBe(true);
    expect(isBerthError(await rejection(d.crash(vmId)), ErrorCode.FailedPrecondition)).toBe(true);
    await d.start(vmId);
    expect((await d.pause(vmId)).state).toBe(PAUSED);
    expect((await d.pause(vmId)).state).toBe(PAUSED);
    expect((await d.resume(vmId)).state).toBe(RUNNING);
    expect((await d.crash(vmId)).state).toBe(CRASHED);
    expect(isBerthError(await rejection(d.resume(vmId)), ErrorCode.FailedPrecondition)).toBe(true);
    expect((await d.start(vmId)).state).toBe(RUNNING);
    await d.crash(vmId);
    expect((await d.stop(vmId, { force: true })).state).toBe(SHUTOFF);
    expect(d.operationCounts(vmId)).toEqual({ define: 1, start: 2, stop: 1, delete: 0 });
  });

  it("serializes concurrent operations into a consistent file", async () => {
    const d = driver();
    const n = 40;
    const specs = Array.from({ length: n }, (_, i) => spec(i));
    await Promise.all(specs.map((s) => d.define(s)));
    // Start every domain twice, concurrently, interleaved with generation updates.
    await Promise.all(specs.flatMap((s) => [d.start(s.vmId), d.setGeneration(s.vmId, 2), d.start(s.vmId)]));
    await Promise.all(specs.filter((_, i) => i % 2 === 0).map((s) => d.delete(s.vmId)));

    const state = readFakeHypervisorState(dir);
    expect(state.domains).toEqual(await d.list());
    expect(state.domains).toHaveLength(n / 2);
    expect(state.domains.every((x: Domain) => x.state === RUNNING && x.generation === 2)).toBe(true);
    for (const [i, s] of specs.entries()) {
      expect(state.operations[s.vmId]).toEqual({ define: 1, start: 1, stop: 0, delete: i % 2 === 0 ? 1 : 0 });
    }
    expect(readdirSync(dir)).toEqual([FAKE_STATE_FILE]);
  });

  it("answers a repeated call only once the first call's change is on disk", async () => {
    const d = driver();
    const first = d.define(spec(1));
    await d.define(spec(1));
    expect(readFakeHypervisorState(dir).domains.map((x) => x.vmId)).toEqual([spec(1).vmId]);
    const start = d.start(spec(1).vmId);
    await d.start(spec(1).vmId);
    expect(readFakeHypervisorState(dir).domains[0]?.state).toBe(RUNNING);
    const del = d.delete(spec(1).vmId);
    await d.delete(spec(1).vmId);
    expect(readFakeHypervisorState(dir).domains).toEqual([]);
    await Promise.all([first, start, del]);
  });

  it("leaves no temp files and removes those a killed writer left behind", async () => {
    const d = driver();
    for (let i = 0; i < 5; i++) await d.define(spec(i));
    expect(readdirSync(dir)).toEqual([FAKE_STATE_FILE]);

    writeFileSync(path.join(dir, `${FAKE_STATE_FILE}.123.1.tmp`), "{ half a fi");
    const e = driver();
    expect(await e.list()).toHaveLength(5);
    expect(readdirSync(dir)).toEqual([FAKE_STATE_FILE]);
  });

  it("writes a readable JSON file with state names", async () => {
    const d = driver();
    await d.define(spec(1));
    await d.start(spec(1).vmId);
    const raw = JSON.parse(readFileSync(path.join(dir, FAKE_STATE_FILE), "utf8"));
    expect(raw.domains[0].state).toBe("DOMAIN_STATE_RUNNING");
  });

  it("refuses a corrupt state file with HYPERVISOR_UNAVAILABLE", () => {
    writeFileSync(path.join(dir, FAKE_STATE_FILE), "not json");
    let error: unknown;
    try {
      new FakeDriver({ stateDir: dir });
    } catch (e) {
      error = e;
    }
    expect(isBerthError(error, ErrorCode.HypervisorUnavailable)).toBe(true);
    expect(() => readFakeHypervisorState(dir)).toThrow(/not valid JSON/);
  });

  it("reads a missing state file or directory as empty", () => {
    expect(readFakeHypervisorState(path.join(dir, "nowhere"))).toEqual({
      domains: [],
      operations: {},
      volumes: [],
      incoming: [],
      watchdog: { deadlineMs: 0, firedAtMs: 0 },
      ...EMPTY_STORAGE,
    });
  });

  it("returns copies: callers cannot change the driver's state", async () => {
    const d = driver();
    const got = await d.define(spec(1));
    got.state = RUNNING;
    got.resources!.vcpus = 99;
    expect((await d.list())[0]).toMatchObject({ state: SHUTOFF, resources: { vcpus: 2 } });
  });

  it("finishes pending writes on close and then refuses calls", async () => {
    const d = driver();
    const pending = d.define(spec(1));
    await d.close();
    await d.close();
    await pending;
    expect(readFakeHypervisorState(dir).domains).toHaveLength(1);
    expect(isBerthError(await rejection(d.list()), ErrorCode.HypervisorUnavailable)).toBe(true);
  });

  it("opens through the async factory too", async () => {
    const d = await FakeDriver.open({ stateDir: dir });
    drivers.push(d);
    expect(await d.list()).toEqual([]);
  });
});

// ---- the extended contract ---------------------------------------------------------------------

function clocked(options: Partial<FakeDriverOptions> = {}, stateDir = dir): { d: FakeDriver; clock: ManualClock } {
  const clock = (options.clock as ManualClock | undefined) ?? new ManualClock(1_000_000);
  const d = new FakeDriver({ stateDir, ...options, clock });
  drivers.push(d);
  return { d, clock };
}

function events(d: FakeDriver): DriverEvent[] {
  const seen: DriverEvent[] = [];
  d.subscribe((e) => seen.push(e));
  return seen;
}

const kinds = (seen: DriverEvent[]): string[] => seen.map((e) => (e.type === "domain" ? e.kind : `health:${e.health.available}`));

async function code(p: Promise<unknown>): Promise<string | undefined> {
  const e = await rejection(p);
  return isBerthError(e) ? e.code : `not a BerthError: ${String(e)}`;
}

describe("FakeDriver: define", () => {
  it("reports host facts from options", async () => {
    const d = new FakeDriver({
      stateDir: dir,
      capacity: { vcpus: 4 },
      cpuModel: "Intel(R) Xeon(R) Gold 6338",
      numaCells: [
        { id: 0, cpus: 2, memoryMib: 1024 },
        { id: 1, cpus: 2, memoryMib: 1024 },
      ],
      hypervisorVersion: "fake 2",
    });
    drivers.push(d);
    expect(await d.hostFacts()).toMatchObject({ cpuModel: "Intel(R) Xeon(R) Gold 6338", hypervisorVersion: "fake 2" });
    expect((await d.hostFacts()).numaCells).toHaveLength(2);
    expect(() => resolveFakeDriverOptions({ stateDir: "x", numaCells: [{ id: 0, cpus: -1, memoryMib: 1 }] })).toThrow(
      /^fake_driver\.numa_cells\[0\]\.cpus: /,
    );
  });

  it("refuses a name taken by another vmId with ALREADY_EXISTS, leaving nothing behind", async () => {
    const d = driver();
    await d.define(spec(1));
    expect(await code(d.define({ ...spec(2), name: "vm-1" }))).toBe(ErrorCode.AlreadyExists);
    expect((await d.list()).map((x) => x.vmId)).toEqual([spec(1).vmId]);
    expect(readFakeHypervisorState(dir).volumes.map((v) => v.vmId)).toEqual([spec(1).vmId]);
  });

  it("refuses a domain larger than the host with RESOURCE_EXHAUSTED, leaving nothing behind", async () => {
    const d = new FakeDriver({ stateDir: dir, capacity: { vcpus: 4, memoryMib: 8192 } });
    drivers.push(d);
    expect(await code(d.define({ ...spec(1), resources: { vcpus: 5, memoryMib: 16, diskGib: 1 } }))).toBe(ErrorCode.ResourceExhausted);
    expect(await code(d.define({ ...spec(1), resources: { vcpus: 1, memoryMib: 8193, diskGib: 1 } }))).toBe(ErrorCode.ResourceExhausted);
    await d.define({ ...spec(2), resources: { vcpus: 4, memoryMib: 8192, diskGib: 1 } }); // exactly the host fits
    expect(await d.list()).toHaveLength(1);
    expect(readFakeHypervisorState(dir).volumes.map((v) => v.vmId)).toEqual([spec(2).vmId]);
  });

  it("requires a UUID vmId and a name, naming the field", async () => {
    const d = driver();
    for (const [s, field] of [
      [{ ...spec(1), vmId: "vm-1" }, "domain.vm_id"],
      [{ ...spec(1), vmId: spec(1).vmId.toUpperCase().replace("0000-4000", "0000-4ABC") }, "domain.vm_id"],
      [{ ...spec(1), name: "" }, "domain.name"],
      [{ ...spec(1), name: "a/b" }, "domain.name"],
    ] as const) {
      const e = await rejection(d.define(s));
      expect(isBerthError(e, ErrorCode.InvalidArgument)).toBe(true);
      expect((e as BerthError).field).toBe(field);
    }
    expect(await d.list()).toEqual([]);
    expect(readFakeHypervisorState(dir).volumes).toEqual([]);
  });

  it("creates a volume of diskGib, none for a diskless domain", async () => {
    const d = driver();
    await d.define(spec(1));
    await d.define({ ...spec(2), resources: { vcpus: 1, memoryMib: 512, diskGib: 0 } });
    expect(readFakeHypervisorState(dir).volumes).toEqual([{ vmId: spec(1).vmId, name: "vm-1.qcow2", diskGib: 20 }]);
  });
});

describe("FakeDriver: destroy, undefine, deleteVolumes, delete", () => {
  it("destroys a running domain (counted as a stop), keeping it defined", async () => {
    const d = driver();
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.start(vmId);
    expect((await d.destroy(vmId)).state).toBe(SHUTOFF);
    expect((await d.destroy(vmId)).state).toBe(SHUTOFF);
    expect(d.operationCounts(vmId)).toMatchObject({ start: 1, stop: 1 });
    expect(await code(d.destroy(spec(2).vmId))).toBe(ErrorCode.NotFound);
  });

  it("undefines only an inactive domain and keeps its volume until deleteVolumes", async () => {
    const d = driver();
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.start(vmId);
    expect(await code(d.undefine(vmId))).toBe(ErrorCode.FailedPrecondition);
    await d.pause(vmId);
    expect(await code(d.undefine(vmId))).toBe(ErrorCode.FailedPrecondition);
    expect(await code(d.deleteVolumes(vmId))).toBe(ErrorCode.FailedPrecondition);
    await d.destroy(vmId);
    await d.undefine(vmId);
    await d.undefine(vmId);
    expect(await d.list()).toEqual([]);
    expect(readFakeHypervisorState(dir).volumes.map((v) => v.vmId)).toEqual([vmId]);
    await d.deleteVolumes(vmId);
    await d.deleteVolumes(vmId);
    expect(readFakeHypervisorState(dir).volumes).toEqual([]);
  });

  it("undefines a crashed domain (its process is gone)", async () => {
    const d = driver();
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.start(vmId);
    await d.faults.crash(vmId);
    await d.undefine(vmId);
    expect(await d.list()).toEqual([]);
  });

  it("deletes a running domain, its definition and its volume in one call", async () => {
    const d = driver();
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.start(vmId);
    const seen = events(d);
    await d.delete(vmId);
    expect(kinds(seen)).toEqual(["stopped", "undefined"]);
    expect(readFakeHypervisorState(dir)).toMatchObject({ domains: [], volumes: [] });
  });

  it("deletes the volume an undefine left, without counting a delete", async () => {
    const d = driver();
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.undefine(vmId);
    await d.delete(vmId);
    expect(readFakeHypervisorState(dir).volumes).toEqual([]);
    expect(d.operationCounts(vmId).delete).toBe(0);
  });
});

describe("FakeDriver: graceful stop", () => {
  it("waits for the guest's shutdown delay", async () => {
    const { d, clock } = clocked({ guestShutdownDelayMs: 5000 });
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.start(vmId);
    let result: Domain | undefined;
    const stopping = d.stop(vmId, { force: false }).then((x) => (result = x));
    await clock.advance(4999);
    expect(result).toBeUndefined();
    expect((await d.list())[0]?.state).toBe(RUNNING);
    await clock.advance(1);
    await stopping;
    expect(result?.state).toBe(SHUTOFF);
    expect(d.operationCounts(vmId).stop).toBe(1);
  });

  it("powers off after timeoutMs a guest that ignores shutdown", async () => {
    const { d, clock } = clocked({ guestShutdownDelayMs: 10, stopTimeoutMs: 30_000 });
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.start(vmId);
    d.faults.ignoreShutdown(vmId);
    let done = false;
    const stopping = d.stop(vmId, { force: false, timeoutMs: 2000 }).then((x) => ((done = true), x));
    await clock.advance(1999);
    expect(done).toBe(false);
    await clock.advance(1);
    expect((await stopping).state).toBe(SHUTOFF);

    // Without timeoutMs the driver's stopTimeoutMs applies.
    await d.start(vmId);
    const again = d.stop(vmId, { force: false });
    await clock.advance(29_999);
    expect((await d.list())[0]?.state).toBe(RUNNING);
    await clock.advance(1);
    expect((await again).state).toBe(SHUTOFF);
  });

  it("ends a pending graceful stop at once when the domain is forced off, counting one stop", async () => {
    const { d } = clocked({ guestShutdownDelayMs: 60_000 });
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.start(vmId);
    const graceful = d.stop(vmId, { force: false });
    const graceful2 = d.stop(vmId, { force: false });
    expect((await d.stop(vmId, { force: true })).state).toBe(SHUTOFF);
    expect((await graceful).state).toBe(SHUTOFF);
    expect((await graceful2).state).toBe(SHUTOFF);
    expect(d.operationCounts(vmId).stop).toBe(1);
  });

  it("shuts off a crashed domain at once", async () => {
    const { d, clock } = clocked({ guestShutdownDelayMs: 60_000 });
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.start(vmId);
    await d.faults.crash(vmId);
    expect((await d.stop(vmId, { force: false })).state).toBe(SHUTOFF);
    expect(clock.pending).toBe(1); // only the control-file poll
  });

  it("rejects a waiting stop when the driver closes", async () => {
    const { d } = clocked({ guestShutdownDelayMs: 60_000 });
    await d.define(spec(1));
    await d.start(spec(1).vmId);
    const stopping = d.stop(spec(1).vmId, { force: false });
    await d.close();
    expect(await code(stopping)).toBe(ErrorCode.HypervisorUnavailable);
  });
});

describe("FakeDriver: stats", () => {
  const cpuHalf = { cpu: { kind: "constant", fraction: 0.5 }, memory: { kind: "constant", fraction: 0.25 } } as const;

  it("accumulates CPU time at the CPU demand while running, not while paused, and resets on a new start", async () => {
    const { d, clock } = clocked({ load: cpuHalf });
    const { vmId } = spec(1); // 2 vCPUs, 4096 MiB
    await d.define(spec(1));
    expect(await d.stats(vmId)).toEqual(idleStats(vmId, SHUTOFF));
    await d.start(vmId);
    await clock.advance(10_000);
    const s1 = await d.stats(vmId);
    expect(s1.cpuTimeNs).toBe(10e9); // 2 vCPUs × 0.5 × 10 s
    expect(s1.memoryUsedMib).toBe(1024);
    expect(s1.diskReadBytes).toBeGreaterThan(0);
    expect(s1.netTxBytes).toBeGreaterThan(0);

    await d.pause(vmId);
    await clock.advance(10_000);
    const s2 = await d.stats(vmId);
    expect(s2).toMatchObject({ state: PAUSED, cpuTimeNs: 10e9, memoryUsedMib: 1024 });
    await d.resume(vmId);
    await clock.advance(1000);
    const s3 = await d.stats(vmId);
    expect(s3.cpuTimeNs).toBe(11e9);
    expect(s3.diskWriteBytes).toBeGreaterThan(s1.diskWriteBytes);

    await d.stop(vmId, { force: true });
    expect(await d.stats(vmId)).toMatchObject({ state: SHUTOFF, cpuTimeNs: 0, memoryUsedMib: 0, diskReadBytes: 0 });
    await d.start(vmId);
    await clock.advance(1000);
    expect((await d.stats(vmId)).cpuTimeNs).toBe(1e9);
  });

  it("follows a per-VM pattern set through the API or the control file, without going back", async () => {
    const { d, clock } = clocked({ load: cpuHalf });
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.start(vmId);
    await clock.advance(1000); // 1e9 ns at 0.5
    await d.setLoad(vmId, { cpu: { kind: "constant", fraction: 1 }, memory: { kind: "diurnal", periodMs: 4000, min: 0, max: 1, peakAtMs: 0 } });
    await clock.advance(1000); // +2e9 at 1.0
    const s = await d.stats(vmId);
    expect(s.cpuTimeNs).toBe(3e9);
    expect(s.memoryUsedMib).toBe(0); // t = 1 002 000 ≡ 2000 mod 4000: half a period from the peak
    await clock.advance(2000);
    expect((await d.stats(vmId)).memoryUsedMib).toBe(4096);

    writeFakeFaults(dir, { load: { vms: { [vmId]: { cpu: { kind: "constant", fraction: 0 } } } } });
    const before = (await d.stats(vmId)).cpuTimeNs; // reads the file: the past is booked at 1.0
    await clock.advance(5000);
    expect((await d.stats(vmId)).cpuTimeNs).toBe(before);
    expect(before).toBe(7e9);
    // The API load survives a restart (it is the guest's workload).
    const e = clocked({ clock }).d;
    expect(e.loadOf(vmId).memory.kind).toBe("diurnal");
  });

  it("keeps usage within the VM's size for any valid pattern", async () => {
    const { d, clock } = clocked();
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.start(vmId);
    await fc.assert(
      fc.asyncProperty(fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), fc.integer({ min: 0, max: 1e7 }), async (c, m, dt) => {
        await d.setLoad(vmId, { cpu: { kind: "constant", fraction: c }, memory: { kind: "diurnal", periodMs: 997, min: 0, max: m } });
        const a = await d.stats(vmId);
        await clock.advance(dt);
        const b = await d.stats(vmId);
        expect(b.memoryUsedMib).toBeGreaterThanOrEqual(0);
        expect(b.memoryUsedMib).toBeLessThanOrEqual(4096);
        expect(b.cpuTimeNs - a.cpuTimeNs).toBeGreaterThanOrEqual(0);
        expect(b.cpuTimeNs - a.cpuTimeNs).toBeLessThanOrEqual(2 * dt * 1e6 + 1);
      }),
      { numRuns: 50 },
    );
  });
});

describe("FakeDriver: events", () => {
  it("pushes an event for every state change", async () => {
    const d = driver();
    const seen = events(d);
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.define(spec(1)); // no-op: no event
    await d.start(vmId);
    await d.pause(vmId);
    await d.start(vmId); // resumes a paused domain
    await d.pause(vmId);
    await d.resume(vmId);
    await d.faults.crash(vmId);
    await d.start(vmId);
    await d.stop(vmId, { force: false });
    await d.undefine(vmId);
    expect(kinds(seen)).toEqual(["defined", "started", "paused", "resumed", "paused", "resumed", "crashed", "started", "stopped", "undefined"]);
    const last = seen.at(-1);
    expect(last).toEqual({ type: "domain", vmId, kind: "undefined", domain: undefined });
    expect(seen[1]).toMatchObject({ type: "domain", vmId, domain: { state: RUNNING } });
  });

  it("stops pushing to an unsubscribed listener and survives a listener that throws", async () => {
    const d = driver();
    d.subscribe(() => {
      throw new Error("buggy listener");
    });
    const seen: DriverEvent[] = [];
    const off = d.subscribe((e) => seen.push(e));
    await d.define(spec(1));
    off();
    await d.start(spec(1).vmId);
    expect(kinds(seen)).toEqual(["defined"]);
  });

  it("gives each start a new incarnation, kept across a restart of the driver", async () => {
    const d = driver();
    const { vmId } = spec(1);
    await d.define(spec(1));
    expect(d.incarnation(vmId)).toBeUndefined();
    await d.start(vmId);
    const first = d.incarnation(vmId);
    await d.pause(vmId);
    await d.resume(vmId);
    expect(d.incarnation(vmId)).toBe(first);
    expect(driver().incarnation(vmId)).toBe(first);
    await d.faults.crash(vmId);
    await d.start(vmId);
    expect(d.incarnation(vmId)).not.toBe(first);
  });
});

describe("FakeDriver: fault injection", () => {
  it("tells its owner when the control file is refused, naming the field, and ignores it", async () => {
    const refused: string[] = [];
    const d = new FakeDriver({ stateDir: dir, onControlFileError: (m) => refused.push(m) });
    drivers.push(d);
    writeFileSync(path.join(dir, "fake-faults.json"), JSON.stringify({ unavailable: { message: 7 } }));
    expect((await d.health()).available).toBe(true);
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatch(/^fake-faults\.json\.unavailable\.message: /);
  });

  it("fails the next calls of an op without changing anything", async () => {
    const d = driver();
    const { vmId } = spec(1);
    await d.define(spec(1));
    d.faults.failNext({ op: "start", count: 2, code: ErrorCode.HypervisorUnavailable });
    expect(await code(d.start(vmId))).toBe(ErrorCode.HypervisorUnavailable);
    expect(await code(d.start(vmId))).toBe(ErrorCode.HypervisorUnavailable);
    expect((await d.list())[0]?.state).toBe(SHUTOFF);
    expect((await d.start(vmId)).state).toBe(RUNNING);
    expect(d.operationCounts(vmId).start).toBe(1);
  });

  it("fails one VM's calls only", async () => {
    const d = driver();
    d.faults.failNext({ op: "define", vmId: spec(2).vmId, code: ErrorCode.ResourceExhausted });
    await d.define(spec(1));
    expect(await code(d.define(spec(2)))).toBe(ErrorCode.ResourceExhausted);
    await d.define(spec(2));
    expect(await d.list()).toHaveLength(2);
  });

  it("delays calls by the injected latency", async () => {
    const { d, clock } = clocked();
    d.faults.addLatency({ op: "define", ms: 300 });
    let done = false;
    const defining = d.define(spec(1)).then(() => (done = true));
    await clock.advance(299);
    expect(done).toBe(false);
    await clock.advance(1);
    await defining;
    expect(await d.list()).toHaveLength(1);
  });

  it("refuses everything while unavailable, says so in health, and emits a health event at each transition; domains keep running", async () => {
    const { d, clock } = clocked({ load: { cpu: { kind: "constant", fraction: 1 } } });
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.start(vmId);
    const seen = events(d);
    d.faults.makeUnavailable({ forMs: 60_000, message: "libvirtd is down" });
    expect(await d.health()).toEqual({ available: false, message: "libvirtd is down" });
    for (const p of [d.list(), d.hostFacts(), d.stats(vmId), d.start(vmId), d.define(spec(2)), d.delete(vmId), d.prepareIncoming(spec(3))]) {
      expect(await code(p)).toBe(ErrorCode.HypervisorUnavailable);
    }
    await clock.advance(60_000);
    expect(await d.health()).toEqual({ available: true, message: "" });
    expect(seen).toEqual([
      { type: "health", health: { available: false, message: "libvirtd is down" } },
      { type: "health", health: { available: true, message: "" } },
    ]);
    expect((await d.stats(vmId)).cpuTimeNs).toBe(2 * 60e9);
    d.faults.makeUnavailable();
    d.faults.makeAvailable();
    expect(kinds(seen).slice(2)).toEqual(["health:false", "health:true"]);
  });

  it("takes faults from the control file written by another process", async () => {
    const { d, clock } = clocked({ guestShutdownDelayMs: 100 });
    const { vmId } = spec(1);
    await d.define(spec(1));
    await d.start(vmId);
    const seen = events(d);
    await clock.advance(10);
    writeFakeFaults(dir, { crash: [vmId] }, { now: clock.now() });
    // Picked up at the next operation.
    expect((await d.list())[0]?.state).toBe(CRASHED);
    expect(kinds(seen)).toEqual(["crashed"]);
    // A restarted domain is not crashed again by the same order, nor after a restart of the driver.
    await d.start(vmId);
    expect((await d.list())[0]?.state).toBe(RUNNING);
    expect((await clocked({ clock }).d.list())[0]?.state).toBe(RUNNING);

    writeFakeFaults(dir, { ignoreShutdown: [vmId], failNext: [{ op: "setGeneration", code: ErrorCode.Internal }] });
    expect(await code(d.setGeneration(vmId, 9))).toBe(ErrorCode.Internal);
    let stopped = false;
    const stopping = d.stop(vmId, { force: false, timeoutMs: 1000 }).then(() => (stopped = true));
    await clock.advance(500);
    expect(stopped).toBe(false); // the guest would have shut down at 100 ms
    await clock.advance(500);
    await stopping;

    // Unavailability starts on the slow poll, without any operation.
    writeFakeFaults(dir, { unavailable: { message: "from the file" } });
    await clock.advance(1000);
    expect(kinds(seen).filter((k) => k.startsWith("health"))).toEqual(["health:false"]);
    writeFakeFaults(dir, {});
    expect(await d.health()).toEqual({ available: true, message: "" });
  });
});

describe("FakeDriver: cloud-init seeds", () => {
  const seed = { instanceId: spec(1).vmId, hostname: "vm-1", sshAuthorizedKeys: ["ssh-ed25519 AAAAC3Nza key@example"], userData: "" };

  it("renders the seed with renderNoCloudSeed and keeps it with the domain, readable from another process; gone with the domain", async () => {
    const d = driver();
    await d.define({ ...spec(1), cloudInit: seed });
    await d.define({ ...spec(2), cloudInit: { ...seed, instanceId: spec(2).vmId, hostname: "vm-2", userData: "#!/bin/sh\necho hi\n" } });
    await d.define(spec(3));
    const devices = readFakeHypervisorState(dir).devices;
    expect(devices[spec(1).vmId]?.seed).toEqual(renderNoCloudSeed(seed));
    expect(devices[spec(1).vmId]?.seed?.["meta-data"]).toContain("local-hostname: vm-1");
    expect(devices[spec(2).vmId]?.seed?.["user-data"]).toBe("#!/bin/sh\necho hi\n");
    expect(devices[spec(3).vmId]).toEqual({ nics: [], leaseAtMs: null });
    expect(JSON.parse(readFileSync(path.join(dir, FAKE_STATE_FILE), "utf8")).domains[0].seed).toEqual(renderNoCloudSeed(seed));
    await d.delete(spec(1).vmId);
    expect(readFakeHypervisorState(dir).devices[spec(1).vmId]).toBeUndefined();
  });

  it("carries the seed with a migration and keeps it across a restart", async () => {
    const src = driver(path.join(dir, "a"), FAST);
    const dst = driver(path.join(dir, "b"), FAST);
    await src.define({ ...spec(1), cloudInit: seed });
    await src.start(spec(1).vmId);
    await src.migrateOut(spec(1).vmId, await dst.prepareIncoming({ ...spec(1), cloudInit: seed }));
    await dst.finishIncoming(spec(1).vmId, 2);
    await dst.close();
    driver(path.join(dir, "b"));
    expect(readFakeHypervisorState(path.join(dir, "b")).devices[spec(1).vmId]?.seed).toEqual(renderNoCloudSeed(seed));
  });

  it.each([
    [{ ...seed, hostname: 7 }, "cloud_init.hostname"],
    [{ ...seed, sshAuthorizedKeys: "key" }, "cloud_init.ssh_authorized_keys"],
    [{ ...seed, sshAuthorizedKeys: ["a", 1] }, "cloud_init.ssh_authorized_keys[1]"],
  ])("refuses a malformed seed %j naming %s", async (bad, field) => {
    const e = await rejection(driver().define({ ...spec(1), cloudInit: bad as never }));
    expect(isBerthError(e, ErrorCode.InvalidArgument) && e.field).toBe(field);
  });
});

describe("FakeDriver: state file v4", () => {
  it("still reads a v3 file: domains without devices, incoming slots without volumes, no images nor data volumes; the next write is v4", async () => {
    const vmId = spec(1).vmId;
    const incomingId = spec(2).vmId;
    writeFileSync(
      path.join(dir, FAKE_STATE_FILE),
      JSON.stringify({
        format: FAKE_STATE_FORMAT_V3,
        domains: [
          {
            vmId,
            name: "vm-1",
            state: "DOMAIN_STATE_RUNNING",
            generation: 3,
            resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 },
            fence: true,
            run: { incarnation: 4, startedAtMs: 900_000, cpuMs: 0, runningSinceMs: 900_000 },
          },
        ],
        volumes: [
          { vmId, name: "vm-1.qcow2", diskGib: 20 },
          { vmId: incomingId, name: "vm-2.qcow2", diskGib: 20 },
        ],
        incoming: [{ vmId: incomingId, name: "vm-2", resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 }, generation: 1, preparedAtMs: 950_000 }],
        watchdog: { deadlineMs: 0, firedAtMs: 0 },
        outgoing: [],
        nextIncarnation: 5,
        operations: { [vmId]: { define: 1, start: 1, stop: 0, delete: 0 } },
      }),
    );
    const { d } = clocked();
    expect(await d.list()).toEqual([{ vmId, name: "vm-1", state: RUNNING, generation: 3, resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 }, fence: true, ...NO_DEVICES }]);
    expect(readFakeHypervisorState(dir)).toMatchObject({
      devices: { [vmId]: { nics: [], leaseAtMs: null } },
      images: [],
      dataVolumes: {},
      incoming: [{ vmId: incomingId, volumeIds: [], createdVolumeIds: [] }],
    });
    expect(await d.listImages()).toEqual([]);
    expect(await d.listVolumes()).toEqual([]);
    // Works on as before: the incoming slot aborts, the domain takes volumes.
    await d.abortMigration(incomingId);
    expect((await d.setVolumes(vmId, [{ id: "data-1", name: "data", sizeGib: 4 }])).volumeIds).toEqual(["data-1"]);
    const file = JSON.parse(readFileSync(path.join(dir, FAKE_STATE_FILE), "utf8"));
    expect(file.format).toBe(FAKE_STATE_FORMAT);
    expect(FAKE_STATE_FORMAT).toBe("berth-fake-hypervisor/v4");
    expect(file.domains[0]).toMatchObject({ vmId, fence: true, imageId: "", volumeIds: ["data-1"], nics: [], leaseAtMs: null });
    expect(file.dataVolumes).toEqual({ "data-1": { volumeId: "data-1", name: "data", sizeGib: 4, attachedVmId: vmId } });
  });

  it("refuses a v4 file whose domain lacks its devices (a v4 writer always writes them)", () => {
    writeFileSync(
      path.join(dir, FAKE_STATE_FILE),
      JSON.stringify({
        format: FAKE_STATE_FORMAT,
        domains: [{ vmId: spec(1).vmId, name: "vm-1", state: "DOMAIN_STATE_SHUTOFF", generation: 1, resources: spec(1).resources, fence: false }],
        volumes: [],
        dataVolumes: {},
        images: [],
        incoming: [],
        watchdog: { deadlineMs: 0, firedAtMs: 0 },
        outgoing: [],
        nextIncarnation: 1,
        operations: {},
      }),
    );
    expect(() => readFakeHypervisorState(dir)).toThrow(/domains\[0\]\.imageId is not a string/);
  });
});

describe("FakeDriver: state file v2", () => {
  it("still reads a v1 file: domains, counters, inferred volumes, running domains started at open", async () => {
    const vmId = spec(1).vmId;
    writeFileSync(
      path.join(dir, FAKE_STATE_FILE),
      JSON.stringify({
        format: "berth-fake-hypervisor/v1",
        domains: [{ vmId, name: "vm-1", state: "DOMAIN_STATE_RUNNING", generation: 3, resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 } }],
        operations: { [vmId]: { define: 1, start: 1, stop: 0, delete: 0 } },
      }),
    );
    const { d, clock } = clocked({ load: { cpu: { kind: "constant", fraction: 1 } } });
    expect(await d.list()).toEqual([{ vmId, name: "vm-1", state: RUNNING, generation: 3, resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 }, fence: false, ...NO_DEVICES }]);
    expect(readFakeHypervisorState(dir).volumes).toEqual([{ vmId, name: "vm-1.qcow2", diskGib: 20 }]);
    await clock.advance(1000);
    expect((await d.stats(vmId)).cpuTimeNs).toBe(2e9);
    await d.setGeneration(vmId, 4);
    expect(JSON.parse(readFileSync(path.join(dir, FAKE_STATE_FILE), "utf8")).format).toBe(FAKE_STATE_FORMAT);
    expect(d.operationCounts(vmId)).toEqual({ define: 1, start: 1, stop: 0, delete: 0 });
  });

  it("refuses an unknown format", () => {
    writeFileSync(path.join(dir, FAKE_STATE_FILE), JSON.stringify({ format: "berth-fake-hypervisor/v9", domains: [], operations: {} }));
    expect(() => readFakeHypervisorState(dir)).toThrow(/format is "berth-fake-hypervisor\/v9"/);
  });
});

describe("FakeDriver: migration between two agents", () => {
  let srcDir: string;
  let dstDir: string;
  beforeEach(() => {
    srcDir = path.join(dir, "host-a");
    dstDir = path.join(dir, "host-b");
  });

  async function setup(): Promise<{ src: FakeDriver; dst: FakeDriver; vmId: string }> {
    const src = driver(srcDir, FAST);
    const dst = driver(dstDir, FAST);
    await src.define(spec(1, 4));
    await src.start(spec(1).vmId);
    return { src, dst, vmId: spec(1).vmId };
  }

  it("moves a running domain: prepare, migrate out, finish; every step idempotent", async () => {
    const { src, dst, vmId } = await setup();
    const srcEvents = events(src);
    const dstEvents = events(dst);

    const target = await dst.prepareIncoming(spec(1, 4));
    expect(target).toEqual({ driver: "fake", uri: `fake://${path.resolve(dstDir)}`, vmId });
    expect(await dst.prepareIncoming(spec(1, 4))).toEqual(target);
    expect(await dst.list()).toEqual([]); // an incoming slot is not a domain
    expect(readFakeHypervisorState(dstDir)).toMatchObject({ incoming: [{ vmId, name: "vm-1" }], volumes: [{ vmId }] });
    // The slot holds the name.
    expect(await code(dst.define({ ...spec(2), name: "vm-1" }))).toBe(ErrorCode.AlreadyExists);

    await src.migrateOut(vmId, target);
    await src.migrateOut(vmId, target);
    expect(await src.list()).toEqual([]);
    expect(kinds(srcEvents)).toEqual(["migrated"]);
    expect(srcEvents[0]).toMatchObject({ vmId, domain: undefined });
    expect(readFakeHypervisorState(srcDir).volumes.map((v) => v.vmId)).toEqual([vmId]); // undefined, not deleted

    const finished = await dst.finishIncoming(vmId, 5);
    expect(finished).toEqual({ vmId, name: "vm-1", state: RUNNING, generation: 5, resources: spec(1).resources, fence: false, ...NO_DEVICES });
    expect(await dst.finishIncoming(vmId, 5)).toEqual(finished);
    expect(await dst.list()).toEqual([finished]);
    expect(kinds(dstEvents)).toEqual(["started"]);
    expect(readFakeHypervisorState(dstDir).incoming).toEqual([]);
    expect(readdirSync(dstDir).sort()).toEqual([FAKE_STATE_FILE]);
    expect((await dst.stats(vmId)).memoryUsedMib).toBe(2048);

    // The destination now owns it: it stops and deletes there as any domain.
    await dst.delete(vmId);
    await src.deleteVolumes(vmId);
    expect(readFakeHypervisorState(srcDir).volumes).toEqual([]);
  });

  it("keeps the domain running on the source when migrateOut fails by fault injection", async () => {
    const { src, dst, vmId } = await setup();
    const target = await dst.prepareIncoming(spec(1));
    src.faults.failNext({ op: "migrateOut", code: ErrorCode.HypervisorUnavailable });
    expect(await code(src.migrateOut(vmId, target))).toBe(ErrorCode.HypervisorUnavailable);
    expect((await src.list())[0]?.state).toBe(RUNNING);
    expect(await code(dst.finishIncoming(vmId, 1))).toBe(ErrorCode.NotFound);
    // Both sides give up: the source is untouched, the destination forgets its slot and volume.
    await src.abortMigration(vmId);
    await dst.abortMigration(vmId);
    await dst.abortMigration(vmId);
    expect((await src.list())[0]?.state).toBe(RUNNING);
    expect(readFakeHypervisorState(dstDir)).toMatchObject({ domains: [], incoming: [], volumes: [] });
  });

  it("never discards a domain that has arrived: abort keeps it, finish still works", async () => {
    const { src, dst, vmId } = await setup();
    const target = await dst.prepareIncoming(spec(1));
    await src.migrateOut(vmId, target);
    expect(await src.list()).toEqual([]);
    // The source no longer has it, so the destination's copy is the only one.
    await dst.abortMigration(vmId);
    await src.abortMigration(vmId);
    expect((await dst.finishIncoming(vmId, 2)).state).toBe(RUNNING);
    await dst.delete(vmId);
  });

  it("fails with DEADLINE_EXCEEDED when injected latency outlasts timeoutMs, the domain still running", async () => {
    const clock = new ManualClock(0);
    const src = clocked({ clock }, srcDir).d;
    const dst = clocked({ clock }, dstDir).d;
    await src.define(spec(1));
    await src.start(spec(1).vmId);
    const target = await dst.prepareIncoming(spec(1));
    src.faults.addLatency({ op: "migrateOut", ms: 10_000 });
    const migrating = code(src.migrateOut(spec(1).vmId, target, { timeoutMs: 3000 }));
    await clock.advance(3000);
    expect(await migrating).toBe(ErrorCode.DeadlineExceeded);
    expect((await src.list())[0]?.state).toBe(RUNNING);
  });

  it("refuses a migration that cannot be done, naming why", async () => {
    const { src, dst, vmId } = await setup();
    const unprepared = { driver: "fake", uri: `fake://${path.resolve(dstDir)}`, vmId };
    expect(await code(src.migrateOut(vmId, unprepared))).toBe(ErrorCode.FailedPrecondition);
    const target = await dst.prepareIncoming(spec(1));
    expect(await code(src.migrateOut(vmId, { ...target, driver: "libvirt" }))).toBe(ErrorCode.InvalidArgument);
    expect(await code(src.migrateOut(vmId, { ...target, uri: "fake://relative/dir" }))).toBe(ErrorCode.InvalidArgument);
    expect(await code(src.migrateOut(vmId, { ...target, vmId: spec(2).vmId }))).toBe(ErrorCode.InvalidArgument);
    await src.pause(vmId);
    expect(await code(src.migrateOut(vmId, target))).toBe(ErrorCode.FailedPrecondition);
    expect(await code(src.prepareIncoming(spec(1)))).toBe(ErrorCode.AlreadyExists); // defined here
    expect(await code(dst.finishIncoming(spec(2).vmId, 1))).toBe(ErrorCode.NotFound);
    expect((await src.list())[0]?.state).toBe(PAUSED);
  });

  it("commits at one point, the source's state file: a handoff it has not committed is never started", async () => {
    const killed: string[] = [];
    const src = driver(srcDir, { ...FAST, onKill: (p) => void killed.push(p) });
    const dst = driver(dstDir, FAST);
    const vmId = spec(1).vmId;
    await src.define(spec(1));
    await src.start(vmId);
    const target = await dst.prepareIncoming(spec(1));
    // The source's process dies between writing the handoff and committing it.
    src.faults.killAt({ point: "migrateOut:before-commit", vmId });
    expect(await code(src.migrateOut(vmId, target))).toBe(ErrorCode.HypervisorUnavailable);
    expect(killed).toEqual(["migrateOut:before-commit"]);
    expect(readdirSync(dstDir)).toContain(`fake-incoming-${vmId}.json`);
    // The domain still runs at the source (the file says so); the destination refuses to start it.
    expect(fakeRunningVmIds(srcDir)).toEqual([vmId]);
    expect(await code(dst.finishIncoming(vmId, 2))).toBe(ErrorCode.FailedPrecondition);
    expect(readFakeStoredState(srcDir, 0).outgoing).toMatchObject([{ vmId, phase: "switchover" }]);
    // In doubt, the destination's abort keeps the handoff and the slot: the source might still commit.
    await dst.abortMigration(vmId);
    expect(readFakeHypervisorState(dstDir).incoming).toHaveLength(1);

    // The source restarts: the switchover is rolled back, the domain runs on there; the resend finishes the job.
    const restarted = driver(srcDir, FAST);
    expect((await restarted.list())[0]?.state).toBe(RUNNING);
    expect(readFakeStoredState(srcDir, 0).outgoing).toEqual([]);
    expect(await code(dst.finishIncoming(vmId, 2))).toBe(ErrorCode.FailedPrecondition);
    await restarted.migrateOut(vmId, target);
    expect(await restarted.list()).toEqual([]);
    expect(fakeRunningVmIds(srcDir)).toEqual([]);
    expect(readFakeStoredState(srcDir, 0).outgoing).toMatchObject([{ vmId, phase: "committed", to: path.resolve(dstDir) }]);
    expect((await dst.finishIncoming(vmId, 2)).state).toBe(RUNNING);
    expect(fakeRunningVmIds(dstDir)).toEqual([vmId]);
  });

  it("discards on the destination's abort a handoff its source will never commit", async () => {
    const src = driver(srcDir, { ...FAST, onKill: () => undefined });
    const dst = driver(dstDir, FAST);
    const vmId = spec(1).vmId;
    await src.define(spec(1));
    await src.start(vmId);
    const target = await dst.prepareIncoming(spec(1));
    src.faults.killAt({ point: "migrateOut:before-commit", vmId });
    await code(src.migrateOut(vmId, target));
    await FakeDriver.open({ stateDir: srcDir }).then((d) => drivers.push(d)); // restarted: rolled back
    await dst.abortMigration(vmId);
    expect(readdirSync(dstDir).sort()).toEqual([FAKE_STATE_FILE]);
    expect(readFakeHypervisorState(dstDir)).toMatchObject({ domains: [], incoming: [], volumes: [] });
    expect(await code(dst.finishIncoming(vmId, 2))).toBe(ErrorCode.NotFound);
  });

  it("fails the switchover when the destination aborted during the transfer, the domain still running here", async () => {
    const clock = new ManualClock(0);
    const src = clocked({ clock }, srcDir).d;
    const dst = clocked({ clock }, dstDir).d;
    await src.define(spec(1));
    await src.start(spec(1).vmId);
    const target = await dst.prepareIncoming(spec(1));
    const migrating = code(src.migrateOut(spec(1).vmId, target));
    await clock.advance(500);
    await dst.abortMigration(spec(1).vmId);
    await clock.advance(5000);
    expect(await migrating).toBe(ErrorCode.FailedPrecondition);
    expect((await src.list())[0]?.state).toBe(RUNNING);
    expect(readFakeStoredState(srcDir, 0).outgoing).toEqual([]);
    expect(readdirSync(dstDir).sort()).toEqual([FAKE_STATE_FILE]);
  });

  it("survives a restart of the destination between handoff and finish", async () => {
    const { src, dst, vmId } = await setup();
    const target = await dst.prepareIncoming(spec(1));
    await src.migrateOut(vmId, target);
    await dst.close();
    const again = driver(dstDir);
    expect(await again.list()).toEqual([]);
    expect((await again.finishIncoming(vmId, 7)).state).toBe(RUNNING);
  });
});

describe("FakeDriver: fencing (watchdog)", () => {
  const fenced = (n: number): DomainSpec => ({ ...spec(n), fence: true });
  /** A fence domain (1) and a plain one (2), both running. */
  async function twoRunning(d: FakeDriver): Promise<{ a: string; b: string }> {
    await d.define(fenced(1));
    await d.define(spec(2));
    await d.start(spec(1).vmId);
    await d.start(spec(2).vmId);
    return { a: spec(1).vmId, b: spec(2).vmId };
  }
  const states = async (d: FakeDriver): Promise<Record<string, DomainState>> => Object.fromEntries((await d.list()).map((x) => [x.vmId, x.state]));

  it("records fence with the domain: define → list, in the file and through a restart", async () => {
    const d = driver();
    expect((await d.define(fenced(1))).fence).toBe(true);
    expect((await d.define(spec(2))).fence).toBe(false);
    expect((await d.list()).map((x) => x.fence)).toEqual([true, false]);
    expect(JSON.parse(readFileSync(path.join(dir, FAKE_STATE_FILE), "utf8")).domains.map((x: { fence: boolean }) => x.fence)).toEqual([true, false]);
    await d.close();
    expect((await driver().list()).map((x) => x.fence)).toEqual([true, false]);
    expect(await code(driver().define({ ...spec(3), fence: "yes" as unknown as boolean }))).toBe(ErrorCode.InvalidArgument);
  });

  it("fires on its timer when the deadline passes: fence domains off with a 'stopped' event, the others run on", async () => {
    const { d, clock } = clocked();
    const { a, b } = await twoRunning(d);
    const seen = events(d);
    const deadline = clock.now() + 1000;
    await d.setWatchdog(deadline);
    await d.setWatchdog(deadline);
    expect(await d.watchdog()).toEqual({ deadlineMs: deadline, firedAtMs: 0 });
    await clock.advance(999);
    expect(seen).toEqual([]);
    await clock.advance(1);
    // No call needed: the timer fired, told subscribers, and wrote the file.
    expect(seen).toMatchObject([{ type: "domain", vmId: a, kind: "stopped", domain: { state: SHUTOFF, fence: true } }]);
    expect(await d.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: deadline });
    expect(await states(d)).toEqual({ [a]: SHUTOFF, [b]: RUNNING }); // list resolves once the fire is on disk
    const file = readFakeStoredState(dir, clock.now());
    expect(file.domains.map((x) => x.state)).toEqual([SHUTOFF, RUNNING]);
    expect(file.watchdog).toEqual({ deadlineMs: 0, firedAtMs: deadline });
    expect(file.runtime[a]).toBeUndefined();
    // The fence is not an operation anyone asked for: not counted as a stop.
    expect(d.operationCounts(a).stop).toBe(0);

    // Moving the deadline afterwards powers nothing back on (and forgets the fire); start works as
    // usual, and a later fire fences the new incarnation.
    await d.setWatchdog(clock.now() + 1000);
    expect((await d.watchdog()).firedAtMs).toBe(0);
    expect(readFakeStoredState(dir, clock.now()).watchdog.firedAtMs).toBe(0);
    await clock.advance(500);
    expect((await states(d))[a]).toBe(SHUTOFF);
    expect((await d.start(a)).state).toBe(RUNNING);
    await clock.advance(500);
    expect(await states(d)).toEqual({ [a]: SHUTOFF, [b]: RUNNING });
    expect((await d.watchdog()).firedAtMs).toBe(deadline + 1000);
  });

  it("clearWatchdog disarms; a deadline in the past fires at once; a bad deadline is refused", async () => {
    const { d, clock } = clocked();
    const { a } = await twoRunning(d);
    await d.setWatchdog(clock.now() + 1000);
    await d.clearWatchdog();
    await d.clearWatchdog();
    await clock.advance(5000);
    expect((await states(d))[a]).toBe(RUNNING);
    expect(readFakeStoredState(dir, clock.now()).watchdog).toEqual({ deadlineMs: 0, firedAtMs: 0 });
    for (const bad of [0, -1, Number.NaN, Infinity, "1" as unknown as number]) {
      const e = await rejection(d.setWatchdog(bad));
      expect(e).toMatchObject({ code: ErrorCode.InvalidArgument, field: "watchdog.deadline_ms" });
    }
    await d.setWatchdog(clock.now() - 1);
    expect((await states(d))[a]).toBe(SHUTOFF);
    expect(await d.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: clock.now() - 1 });
    // Even a deadline from before the domain started: set in the past, it fires on what runs now.
    await d.start(a);
    await d.setWatchdog(clock.now() - 60_000);
    expect((await states(d))[a]).toBe(SHUTOFF);
    expect(await d.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: clock.now() - 60_000 });
  });

  it("fires whether or not the hypervisor answers, and before any operation", async () => {
    const { d, clock } = clocked();
    const { a } = await twoRunning(d);
    await d.setWatchdog(clock.now() + 1000);
    d.faults.makeUnavailable();
    await clock.advance(1000);
    expect(await code(d.list())).toBe(ErrorCode.HypervisorUnavailable);
    d.faults.makeAvailable();
    expect((await states(d))[a]).toBe(SHUTOFF);
  });

  it("every reader applies the rule at its own time, though the driver has not written since (a frozen agent)", async () => {
    const { d, clock } = clocked();
    const { a, b } = await twoRunning(d);
    const deadline = clock.now() + 1000;
    await d.setWatchdog(deadline);
    await d.close(); // as good as frozen: no timer, no writes
    expect(fakeRunningVmIds(dir, deadline - 1)).toEqual([a, b]);
    expect(fakeRunningVmIds(dir, deadline)).toEqual([b]);
    expect(fakeRunningVmIds(path.join(dir, "nowhere"), deadline)).toEqual([]);
    const seen = readFakeHypervisorState(dir, deadline + 5);
    expect(seen.domains.map((x) => [x.vmId, x.state])).toEqual([[a, SHUTOFF], [b, RUNNING]]);
    expect(seen.watchdog).toEqual({ deadlineMs: 0, firedAtMs: deadline });
    // The file itself still says running: the rule, not a write, fenced it.
    expect(readFakeStoredState(dir, deadline + 5).domains.map((x) => x.state)).toEqual([RUNNING, RUNNING]);

    // A driver opened on that state later (the agent restarted) reports it off, and writes so.
    await clock.advance(1005);
    const again = clocked({ clock }).d;
    expect(await states(again)).toEqual({ [a]: SHUTOFF, [b]: RUNNING });
    expect(await again.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: deadline });
    expect(readFakeStoredState(dir, clock.now()).domains.map((x) => x.state)).toEqual([SHUTOFF, RUNNING]);
  });

  it("the rule is pure: effectiveFakeDomains / effectiveFakeState", () => {
    const vm = (n: number, state: DomainState, fence: boolean): Domain => ({ vmId: spec(n).vmId, name: `vm-${n}`, state, generation: 1, resources: spec(n).resources, fence, interfaces: [], volumeIds: [], imageId: "" });
    const state = {
      domains: [vm(1, RUNNING, true), vm(2, PAUSED, true), vm(3, RUNNING, false), vm(4, CRASHED, true), vm(5, RUNNING, true)],
      watchdog: { deadlineMs: 100, firedAtMs: 7 },
      // 5 started at the deadline: after the host was fenced, so not the copy the fence is about.
      runtime: { [spec(1).vmId]: { startedAtMs: 10 }, [spec(2).vmId]: { startedAtMs: 10 }, [spec(5).vmId]: { startedAtMs: 100 } },
    };
    expect(effectiveFakeDomains(state, 99).map((x) => x.state)).toEqual([RUNNING, PAUSED, RUNNING, CRASHED, RUNNING]);
    expect(effectiveFakeDomains(state, 100).map((x) => x.state)).toEqual([SHUTOFF, SHUTOFF, RUNNING, CRASHED, RUNNING]);
    expect(effectiveFakeDomains({ ...state, watchdog: { deadlineMs: 0, firedAtMs: 0 } }, 1e15).map((x) => x.state)).toEqual([RUNNING, PAUSED, RUNNING, CRASHED, RUNNING]);
    expect(state.domains[0]!.state).toBe(RUNNING); // not mutated
    const full = { ...state, operations: {}, volumes: [], incoming: [], load: {}, nextIncarnation: 9, runtime: { ...state.runtime, [spec(3).vmId]: { incarnation: 1, startedAtMs: 10, cpuMs: 0, runningSinceMs: 10 } } } as never;
    const eff = effectiveFakeState(full, 150);
    expect(eff.watchdog).toEqual({ deadlineMs: 0, firedAtMs: 100 });
    expect(Object.keys(eff.runtime).sort()).toEqual([spec(3).vmId, spec(5).vmId].sort());
    expect(effectiveFakeState(full, 50)).toBe(full);
  });

  it("a pet that would land after the deadline on disk is written again with the fence applied", async () => {
    // A clock the test moves by hand while a write is under way (as if the agent were frozen mid-write).
    let t = 1_000_000;
    const clock: FakeClock = { now: () => t, setTimer: (fn, ms) => realClock.setTimer(fn, ms, { background: true }) };
    const d = new FakeDriver({ stateDir: dir, clock });
    drivers.push(d);
    const { a } = await twoRunning(d);
    const first = t + 10_000;
    await d.setWatchdog(first);
    const seen = events(d);
    t += 5_000;
    const pet = d.setWatchdog(t + 10_000);
    // The pet's state is serialized now; the deadline on disk passes before its rename.
    setImmediate(() => (t = first));
    await pet;
    const file = readFakeStoredState(dir, t);
    expect(file.domains.map((x) => x.state)).toEqual([SHUTOFF, RUNNING]);
    expect(file.watchdog).toEqual({ deadlineMs: first + 5_000, firedAtMs: first });
    expect(kinds(seen)).toEqual(["stopped"]);
    expect((await d.list()).find((x) => x.vmId === a)?.state).toBe(SHUTOFF);
  });

  it("writeFileAtomic leaves the file as it was when the write is no longer current", async () => {
    const file = path.join(dir, "x.json");
    writeFileSync(file, "old");
    expect(await writeFileAtomic(file, "new", () => false)).toBe(false);
    expect(readFileSync(file, "utf8")).toBe("old");
    expect(readdirSync(dir)).toEqual(["x.json"]);
    expect(await writeFileAtomic(file, "new", () => true)).toBe(true);
    expect(readFileSync(file, "utf8")).toBe("new");
  });

  it("still reads a v2 file: nothing fenced, the watchdog disarmed", async () => {
    const vmId = spec(1).vmId;
    const run = { incarnation: 1, startedAtMs: 5, cpuMs: 0, runningSinceMs: 5 };
    writeFileSync(
      path.join(dir, FAKE_STATE_FILE),
      JSON.stringify({
        format: FAKE_STATE_FORMAT_V2,
        domains: [{ vmId, name: "vm-1", state: "DOMAIN_STATE_RUNNING", generation: 3, resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 }, run }],
        volumes: [],
        incoming: [],
        nextIncarnation: 2,
        operations: {},
      }),
    );
    expect(readFakeHypervisorState(dir)).toMatchObject({ domains: [{ vmId, fence: false, state: RUNNING }], watchdog: { deadlineMs: 0, firedAtMs: 0 } });
    const d = driver();
    await d.setGeneration(vmId, 4);
    const raw = JSON.parse(readFileSync(path.join(dir, FAKE_STATE_FILE), "utf8"));
    expect(raw.format).toBe(FAKE_STATE_FORMAT);
    expect(raw.domains[0].fence).toBe(false);
    expect(raw.watchdog).toEqual({ deadlineMs: 0, firedAtMs: 0 });
  });

  it("a migrated domain keeps its fence", async () => {
    const src = driver(path.join(dir, "a"), FAST);
    const dst = driver(path.join(dir, "b"), FAST);
    await src.define(fenced(1));
    await src.start(spec(1).vmId);
    await src.migrateOut(spec(1).vmId, await dst.prepareIncoming(fenced(1)));
    expect((await dst.finishIncoming(spec(1).vmId, 2)).fence).toBe(true);
  });
});
