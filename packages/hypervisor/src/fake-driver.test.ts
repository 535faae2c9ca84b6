import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DomainState, type Domain } from "@berth/api";
import { ErrorCode, isBerthError } from "@berth/core";
import {
  DEFAULT_FAKE_CAPACITY,
  FAKE_STATE_FILE,
  FakeDriver,
  readFakeHypervisorState,
  resolveFakeDriverOptions,
  type DomainSpec,
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

function driver(stateDir = dir): FakeDriver {
  const d = new FakeDriver({ stateDir });
  drivers.push(d);
  return d;
}

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
    expect(await d.hostFacts()).toEqual({ capacity: { vcpus: 8, memoryMib: 8192, diskGib: 100 }, driver: "fake" });
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
    expect(defined).toEqual({ vmId: s.vmId, name: "vm-1", state: SHUTOFF, generation: 3, resources: s.resources });
    expect((await d.start(s.vmId)).state).toBe(RUNNING);
    expect((await d.setGeneration(s.vmId, 4)).generation).toBe(4);
    expect(await d.list()).toEqual([{ ...defined, state: RUNNING, generation: 4 }]);
    expect((await d.stop(s.vmId, { force: false })).state).toBe(SHUTOFF);
    await d.delete(s.vmId);
    expect(await d.list()).toEqual([]);

    expect(readFakeHypervisorState(dir)).toEqual({
      domains: [],
      operations: { [s.vmId]: { define: 1, start: 1, stop: 1, delete: 1 } },
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
    expect(readFakeHypervisorState(dir)).toEqual({ domains: [], operations: {} });
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
    expect(readFakeHypervisorState(path.join(dir, "nowhere"))).toEqual({ domains: [], operations: {} });
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
