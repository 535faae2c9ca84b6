/**
 * The controller's VM lifecycle log, read back from pino's own output: the leader writes its
 * event log's VM events (events.ts, the one definition), so these run a real controller, real
 * gRPC, an in-process agent on a fake hypervisor (or a scripted agent stream), and check one line
 * per step with the same fields, each the event `berth events` shows — and nothing more while the
 * cluster stands still, nor from a follower.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino, type Logger } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { DesiredState, DomainState, Host, HostState, Migration, Vm, VmPhase, VmSpec, type ClusterEvent, type GetHostResponse, type GetVmResponse } from "@berth/api";
import { Agent, resolveAgentOptions } from "@berth/agent";
import { FakeDriver } from "@berth/hypervisor";
import { MemoryStore } from "@berth/store";
import type { Controller } from "./controller.js";
import { eventsOf, type RecordChange } from "./events.js";
import { lifecycleLine } from "./lifecycle-log.js";
import { helloFor, operatorApi, rawAgent, resultFor, silentLog, startController, tlsFilesFor, waitFor, type Cleanups } from "./controller.testkit.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const REPORT_MS = 200;

interface Line {
  level: number;
  msg: string;
  vm?: string;
  vmId?: string;
  host?: string;
  generation?: number;
  reason?: string;
  [k: string]: unknown;
}

/** A pino logger at info whose every line lands, parsed, in `lines`. */
function capturingLog(): { log: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const log = pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s) as Line) });
  return { log, lines };
}

/** The lifecycle lines of one VM (every line naming it with the lifecycle fields). */
const of = (lines: Line[], vm: string): Line[] => lines.filter((l) => l.vm === vm && "vmId" in l && "host" in l && "generation" in l && "reason" in l);

/** The controller's events of one VM, as its event log keeps them (what `berth events` shows). */
const eventsOfVm = (controller: Controller, vm: string): ClusterEvent[] => controller.events.recent().filter((e) => e.objectKind === "vm" && e.objectName === vm);

async function startAgent(hostId: string, address: string) {
  const stateDir = mkdtempSync(join(tmpdir(), `berth-${hostId}-`));
  const driver = new FakeDriver({ stateDir, capacity: { vcpus: 4, memoryMib: 8192, diskGib: 100 } });
  const tls = await tlsFilesFor(address, "host", hostId);
  const agent = new Agent(resolveAgentOptions({ hostId, controllers: [address], ...(tls ? { tls } : {}), driver: "fake", stateDir, minBackoffMs: 50, maxBackoffMs: 200 }), driver, 0, silentLog);
  const abort = new AbortController();
  const running = agent.run(abort.signal);
  cleanups.push(async () => {
    abort.abort();
    await running.catch(() => undefined);
    await driver.close();
    rmSync(stateDir, { recursive: true, force: true });
  });
}

function api(address: string) {
  const { client, call } = operatorApi(cleanups, address);
  return {
    getVm: (name: string) => call<GetVmResponse>((m, o, cb) => client.getVm({ name }, m, o, cb)),
    getHost: (id: string) => call<GetHostResponse>((m, o, cb) => client.getHost({ id }, m, o, cb)),
    createVm: (name: string) => call((m, o, cb) => client.createVm({ spec: VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 512, diskGib: 1 } }), requestId: "" }, m, o, cb)),
    stopVm: (name: string) => call((m, o, cb) => client.stopVm({ name, force: false }, m, o, cb)),
    startVm: (name: string) => call((m, o, cb) => client.startVm({ name }, m, o, cb)),
    deleteVm: (name: string) => call((m, o, cb) => client.deleteVm({ name }, m, o, cb)),
  };
}

/** Waits until the controller has heard `n` more reports from `hostId` (its last-heard time moved on n times). */
async function reports(operator: ReturnType<typeof api>, hostId: string, n: number): Promise<void> {
  const heard = new Set<number>();
  const first = (await operator.getHost(hostId)).host?.lastSeenMs ?? 0;
  await waitFor(`${n} reports from ${hostId}`, async () => {
    const at = (await operator.getHost(hostId)).host?.lastSeenMs ?? 0;
    if (at > first) heard.add(at);
    return heard.size >= n;
  }, 20 * n * REPORT_MS);
}

/** Runs `send` (a scripted agent's message) and waits until the controller has heard it. */
async function heard(operator: ReturnType<typeof api>, hostId: string, send: () => void): Promise<void> {
  const before = (await operator.getHost(hostId)).host?.lastSeenMs ?? 0;
  await new Promise((r) => setTimeout(r, 2)); // a later millisecond, so the new last-heard time differs
  send();
  await waitFor(`${hostId}'s message heard`, async () => ((await operator.getHost(hostId)).host?.lastSeenMs ?? 0) > before);
}

describe("VM lifecycle logs", () => {
  it("one line per step, create → running → stop → start → delete, with vm, vmId, host and generation; none in steady state", async () => {
    const { log, lines } = capturingLog();
    const { controller, address } = await startController(cleanups, new MemoryStore(), { reportIntervalMs: REPORT_MS }, log);
    await waitFor("leadership", () => controller.isLeader);
    await startAgent("h1", address);
    const operator = api(address);
    await waitFor("h1 ready", async () => (await operator.getHost("h1")).host?.state === HostState.HOST_STATE_READY);
    const phase = async () => (await operator.getVm("web-1")).vm?.status?.phase;

    await operator.createVm("web-1");
    await waitFor("web-1 running", async () => (await phase()) === VmPhase.VM_PHASE_RUNNING);
    await waitFor("the running line", () => of(lines, "web-1").some((l) => l.reason === "VmRunning"));

    // Steady state: five reports of a running VM add no lifecycle line.
    const before = of(lines, "web-1").length;
    await reports(operator, "h1", 5);
    expect(of(lines, "web-1")).toHaveLength(before);

    await operator.stopVm("web-1");
    await waitFor("web-1 stopped", async () => (await phase()) === VmPhase.VM_PHASE_STOPPED);
    await waitFor("the stopped line", () => of(lines, "web-1").some((l) => l.reason === "VmStopped"));
    await operator.startVm("web-1");
    await waitFor("web-1 running again", async () => (await phase()) === VmPhase.VM_PHASE_RUNNING);
    await waitFor("the second running line", () => of(lines, "web-1").filter((l) => l.reason === "VmRunning").length === 2);
    await operator.deleteVm("web-1");
    await waitFor("the deleted line", () => of(lines, "web-1").some((l) => l.reason === "VmDeleted"));
    await reports(operator, "h1", 2);

    const mine = of(lines, "web-1");
    const vmId = mine[0]!.vmId;
    expect(vmId).toMatch(/^[0-9a-f-]{36}$/);
    expect(mine.map((l) => [l.reason, l.generation, l.level])).toEqual([
      ["VmPlaced", 1, 30],
      ["VmRunning", 1, 30],
      ["VmStopRequested", 2, 30],
      ["VmStopped", 2, 30],
      ["VmStartRequested", 3, 30],
      ["VmRunning", 3, 30],
      ["VmDeleteRequested", 4, 30],
      ["VmDeleted", 4, 30],
    ]);
    for (const l of mine) expect(l).toMatchObject({ vm: "web-1", vmId, host: "h1" });
    // Each line is an event of the controller's log, told as `berth events` tells it.
    expect(mine.map((l) => l.msg)).toEqual(eventsOfVm(controller, "web-1").map((e) => `VM ${e.message}`));
    expect(mine.map((l) => l.msg).slice(1)).toEqual(["VM running on h1", "VM stop asked for", "VM stopped on h1", "VM start asked for", "VM running on h1", "VM delete asked for", "VM deleted (was on h1)"]);
    // Why h1: the placement record's cause, preset and winning total (the only host: no runner-up).
    expect(mine[0]!.msg).toMatch(/^VM placed on h1 \(/);
    expect(mine[0]).toMatchObject({ cause: "create", preset: "spread", hostsConsidered: 1, hostsFeasible: 1 });
    expect(mine[0]!.score).toEqual(expect.any(Number));
    expect(mine[0]!.runnerUp).toBeUndefined();
  });

  it("a failed create warns once with its error code, however many reports and retries follow", async () => {
    const { log, lines } = capturingLog();
    const { controller, address } = await startController(cleanups, new MemoryStore(), { reportIntervalMs: REPORT_MS }, log);
    await waitFor("leadership", () => controller.isLeader);
    const agent = rawAgent(cleanups, address, helloFor("h1"), (c) => resultFor(c, { ok: false, code: "IMAGE_NOT_FOUND", message: "no such image" }));
    await agent.first;
    const operator = api(address);
    await waitFor("h1 ready", async () => (await operator.getHost("h1")).host?.state === HostState.HOST_STATE_READY);
    await operator.createVm("db-1");
    await waitFor("db-1 failed", async () => (await operator.getVm("db-1")).vm?.status?.phase === VmPhase.VM_PHASE_FAILED);
    await waitFor("the failed line", () => of(lines, "db-1").some((l) => l.reason === "VmFailed"));
    // The code is retryable: the controller tries again after its backoff, and fails the same way.
    await waitFor("a second failed attempt", async () => ((await operator.getVm("db-1")).vm?.status?.attempts ?? 0) >= 2);
    for (let i = 0; i < 5; i++) await heard(operator, "h1", () => agent.send({ $case: "report", value: { usage: { vcpus: 0, memoryMib: 0, diskGib: 0 }, hypervisor: { available: true, message: "" } } }));
    const failed = of(lines, "db-1").filter((l) => l.reason === "VmFailed");
    expect(failed, JSON.stringify(of(lines, "db-1"))).toHaveLength(1);
    expect(failed[0]).toMatchObject({ level: 40, host: "h1", generation: 1, errorCode: "IMAGE_NOT_FOUND", attempts: 1 });
    expect(failed[0]!.msg).toMatch(/^VM failed on h1 \(IMAGE_NOT_FOUND\)/);
    // The event feed tells it once too (the same rule).
    expect(eventsOfVm(controller, "db-1").filter((e) => e.reason === "VmFailed")).toHaveLength(1);
  });

  it("only the leader writes the lines: a follower keeps the same events and logs none of them", async () => {
    const store = new MemoryStore();
    const leaderLog = capturingLog();
    const followerLog = capturingLog();
    const leader = await startController(cleanups, store, { reportIntervalMs: REPORT_MS }, leaderLog.log);
    await waitFor("leadership", () => leader.controller.isLeader);
    const follower = await startController(cleanups, store, { controllerId: "c2", reportIntervalMs: REPORT_MS }, followerLog.log);
    expect(follower.controller.isLeader).toBe(false);
    await (rawAgent(cleanups, leader.address, helloFor("h1"), (c) => resultFor(c, { ok: true })).first);
    const operator = api(leader.address);
    await waitFor("h1 ready", async () => (await operator.getHost("h1")).host?.state === HostState.HOST_STATE_READY);
    await operator.createVm("web-1");
    await waitFor("the follower's VmPlaced", () => eventsOfVm(follower.controller, "web-1").some((e) => e.reason === "VmPlaced"));
    await waitFor("the leader's placed line", () => of(leaderLog.lines, "web-1").some((l) => l.reason === "VmPlaced"));
    expect(of(followerLog.lines, "web-1")).toEqual([]);
  });

  it("an orphan domain is warned of once per domain, not at every report", async () => {
    const { log, lines } = capturingLog();
    const { controller, address } = await startController(cleanups, new MemoryStore(), { reportIntervalMs: REPORT_MS }, log);
    await waitFor("leadership", () => controller.isLeader);
    const stray = { vmId: "00000000-0000-4000-8000-000000000001", name: "stray", state: DomainState.DOMAIN_STATE_RUNNING, generation: 7, resources: { vcpus: 1, memoryMib: 512, diskGib: 1 }, fence: false, interfaces: [], volumeIds: [], imageId: "" };
    const agent = rawAgent(cleanups, address, helloFor("h1", "boot-a", { inventory: { domains: [stray] } }));
    await agent.first;
    const operator = api(address);
    await waitFor("the orphan listed", async () => (await operator.getHost("h1")).host?.orphans.length === 1);
    // Each report carrying the inventory plans the host again; the orphan stays the same one.
    for (let i = 0; i < 5; i++) {
      await heard(operator, "h1", () => agent.send({ $case: "report", value: { inventory: { domains: [stray] }, hypervisor: { available: true, message: "" } } }));
    }
    expect((await operator.getHost("h1")).host?.orphans.map((o) => o.vmId)).toEqual([stray.vmId]);
    const warned = lines.filter((l) => l.msg.startsWith("orphan domain found"));
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ level: 40, vm: "stray", vmId: stray.vmId, host: "h1", generation: 7 });
  });
});

describe("lifecycleLine (an event as a line)", () => {
  const NOW = 1_700_000_000_000;
  const record = (over: Partial<Vm> = {}) =>
    Vm.fromPartial({ id: "id-1", hostId: "h1", generation: 3, desiredState: DesiredState.DESIRED_STATE_RUNNING, spec: { name: "web-1" }, status: { phase: VmPhase.VM_PHASE_RUNNING, domainState: DomainState.DOMAIN_STATE_RUNNING, observedGeneration: 3 }, ...over });
  /** Each event of `change` with its line. */
  const lines = (change: RecordChange) => eventsOf(change, NOW).map((e) => [e.reason, lifecycleLine(e, change)] as const);

  it("a VM event's line: its message, WARN for a WARNING, the fields from the record it came from", () => {
    const failed = record({ status: { phase: VmPhase.VM_PHASE_FAILED, errorCode: "IMAGE_NOT_FOUND", attempts: 1, permanent: true, message: "IMAGE_NOT_FOUND: gone", domainState: DomainState.DOMAIN_STATE_UNSPECIFIED, observedGeneration: 3, updatedAtMs: NOW, interfaces: [], nextAttemptAtMs: 0 } });
    expect(lines({ kind: "vm", before: record(), after: failed, revision: 5 })).toEqual([
      ["VmFailed", { level: "warn", fields: { vm: "web-1", vmId: "id-1", host: "h1", generation: 3, reason: "VmFailed", errorCode: "IMAGE_NOT_FOUND", attempts: 1, permanent: true }, msg: "VM failed on h1 (IMAGE_NOT_FOUND): IMAGE_NOT_FOUND: gone" }],
    ]);
    // A deleted VM: the record before its removal.
    expect(lines({ kind: "vm", before: record({ generation: 4 }), after: undefined, revision: 6 })).toEqual([
      ["VmDeleted", { level: "info", fields: { vm: "web-1", vmId: "id-1", host: "h1", generation: 4, reason: "VmDeleted" }, msg: "VM deleted (was on h1)" }],
    ]);
  });

  it("a placement names the winning total and the runner-up when its record explains them", () => {
    const placed = record({ generation: 1, status: { phase: VmPhase.VM_PHASE_PENDING } as Vm["status"], placement: { cause: "create", preset: "pack", explained: true, total: 0.8312, runnerUpHost: "h2", runnerUpTotal: 0.7, hostsConsidered: 3, hostsFeasible: 2 } as Vm["placement"] });
    const [[reason, line]] = lines({ kind: "vm", before: undefined, after: placed, revision: 1 }) as [[string, ReturnType<typeof lifecycleLine>]];
    expect(reason).toBe("VmPlaced");
    expect(line).toMatchObject({ level: "info", fields: { vm: "web-1", vmId: "id-1", host: "h1", generation: 1, reason: "VmPlaced", cause: "create", preset: "pack", hostsConsidered: 3, hostsFeasible: 2, score: 0.831, runnerUp: "h2", runnerUpScore: 0.7 } });
    expect(line!.msg).toBe("VM placed on h1 (no size; create, pack: score 0.83, runner-up h2 0.70; 2/3 hosts fitted)");
  });

  it("no line for what is logged where it is decided: a relocation, a migration's start and end, hosts and migrations", () => {
    const moved = lines({ kind: "vm", before: record({ status: { phase: VmPhase.VM_PHASE_MIGRATING } as Vm["status"] }), after: record({ hostId: "h2", placement: { cause: "migrate" } as Vm["placement"] }), revision: 2 });
    expect(moved).toEqual([["VmMoved", undefined]]);
    expect(lines({ kind: "vm", before: record(), after: record({ status: { phase: VmPhase.VM_PHASE_MIGRATING } as Vm["status"] }), revision: 3 })).toEqual([["VmMigrating", undefined]]);
    const relocated = lines({ kind: "vm", before: record({ status: { phase: VmPhase.VM_PHASE_UNKNOWN } as Vm["status"] }), after: record({ hostId: "h2", generation: 4, placement: { cause: "relocate" } as Vm["placement"], status: { phase: VmPhase.VM_PHASE_PENDING } as Vm["status"] }), revision: 4 });
    expect(relocated).toEqual([["VmRelocated", undefined]]);
    const h = Host.fromPartial({ id: "h1", state: HostState.HOST_STATE_READY });
    expect(lines({ kind: "host", before: h, after: { ...h, state: HostState.HOST_STATE_SUSPECT }, revision: 5 })).toEqual([["HostSuspect", undefined]]);
    expect(lines({ kind: "migration", before: undefined, after: Migration.fromPartial({ id: "m-1", vmName: "web-1", sourceHost: "h1" }), revision: 6 })).toEqual([["MigrationRequested", undefined]]);
  });

  it("the rules are the events': a VM back from UNKNOWN as it was, or a retried failure, makes no line", () => {
    const unknown = record({ status: { ...record().status!, phase: VmPhase.VM_PHASE_UNKNOWN } });
    expect(lines({ kind: "vm", before: record(), after: unknown, revision: 1 }).map(([, l]) => [l?.level, l?.msg])).toEqual([["warn", "VM state unknown: h1 is not heard from"]]);
    expect(lines({ kind: "vm", before: unknown, after: record(), revision: 2 })).toEqual([]);
    const retried = record({ status: { phase: VmPhase.VM_PHASE_FAILED, errorCode: "IMAGE_NOT_FOUND", attempts: 2 } as Vm["status"] });
    expect(lines({ kind: "vm", before: record({ status: { phase: VmPhase.VM_PHASE_PENDING } as Vm["status"] }), after: retried, revision: 3 })).toEqual([]);
    const crashed = record({ status: { ...record().status!, phase: VmPhase.VM_PHASE_FAILED, domainState: DomainState.DOMAIN_STATE_CRASHED, message: "domain crashed" } });
    expect(lines({ kind: "vm", before: record(), after: crashed, revision: 4 }).map(([, l]) => [l?.level, l?.msg])).toEqual([["warn", "VM crashed on h1"]]);
  });
});
