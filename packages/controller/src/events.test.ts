/**
 * Cluster events: the pure derivation from record changes (eventsOf), and in process what a VM's
 * life makes in WatchEvents{events} and what a controller started on an existing store knows.
 */
import { afterEach, describe, expect, it } from "vitest";
import {
  DesiredState,
  DomainState,
  DrainPhase,
  EventSeverity,
  EventType,
  Host,
  HostState,
  Migration,
  MigrationPhase,
  ScaleGroup,
  Vm,
  VmPhase,
  VmSpec,
  type ClusterEvent,
  type CreateVmResponse,
  type GetVmResponse,
  type WatchEventsResponse,
} from "@berth/api";
import { deadlineIn } from "@berth/core";
import { MemoryStore } from "@berth/store";
import { Metadata, status } from "@grpc/grpc-js";
import { helloFor, operatorApi, rawAgent, resultFor, startController, waitFor, type Cleanups } from "./controller.testkit.js";
import { eventsOf } from "./events.js";
import { NOT_RELOCATED_WITH_VOLUMES } from "./failover.js";
import { applyDecision, initialMembers } from "./scale-groups.js";

const NOW = 1_700_000_000_000;

const vm = (over: Partial<Vm> = {}, phase = VmPhase.VM_PHASE_RUNNING): Vm =>
  Vm.fromPartial({
    id: "vm-1",
    spec: { name: "web-1", resources: { vcpus: 1, memoryMib: 256, diskGib: 1 } },
    desiredState: DesiredState.DESIRED_STATE_RUNNING,
    hostId: "h1",
    generation: 1,
    status: { phase, updatedAtMs: NOW - 5_000 },
    ...over,
  });

const host = (over: Partial<Host> = {}): Host =>
  Host.fromPartial({ id: "h1", state: HostState.HOST_STATE_READY, bootId: "boot-a", capacity: { vcpus: 8, memoryMib: 16384, diskGib: 100 }, driver: "fake", ...over });

const migration = (over: Partial<Migration> = {}): Migration =>
  Migration.fromPartial({ id: "m-1", vmId: "vm-1", vmName: "web-1", sourceHost: "h1", targetHost: "h2", phase: MigrationPhase.MIGRATION_PHASE_PENDING, requestedBy: "admin", ...over });

const reasons = (events: readonly ClusterEvent[]): string[] => events.map((e) => e.reason);

/** The event a VM's phase becoming `phase` makes, or none. */
const PHASE_EVENT: Partial<Record<VmPhase, [string, EventSeverity]>> = {
  [VmPhase.VM_PHASE_RUNNING]: ["VmRunning", EventSeverity.EVENT_SEVERITY_NORMAL],
  [VmPhase.VM_PHASE_STOPPED]: ["VmStopped", EventSeverity.EVENT_SEVERITY_NORMAL],
  [VmPhase.VM_PHASE_FAILED]: ["VmFailed", EventSeverity.EVENT_SEVERITY_WARNING],
  [VmPhase.VM_PHASE_UNKNOWN]: ["VmUnknown", EventSeverity.EVENT_SEVERITY_WARNING],
  [VmPhase.VM_PHASE_MIGRATING]: ["VmMigrating", EventSeverity.EVENT_SEVERITY_NORMAL],
};
const PHASES = Object.values(VmPhase).filter((p): p is VmPhase => typeof p === "number" && p >= 0);

describe("eventsOf (pure)", () => {
  it("a rewrite with the same phase, desired state and host makes no event, whatever else changed", () => {
    for (const phase of PHASES) {
      const before = vm({}, phase);
      const after = vm({ generation: 2, status: { ...before.status!, updatedAtMs: NOW, message: "reported", observedGeneration: 2 } }, phase);
      expect(eventsOf({ kind: "vm", before, after, revision: 7 }, NOW)).toEqual([]);
    }
    // A host's report rewrites its record (last seen, usage): no event.
    const h = host({ lastSeenMs: NOW - 1000 });
    expect(eventsOf({ kind: "host", before: h, after: { ...h, lastSeenMs: NOW, usage: { vcpus: 1, memoryMib: 1, diskGib: 1 } }, revision: 8 }, NOW)).toEqual([]);
    // DISCONNECTED (older records) reads as SUSPECT: no change.
    expect(eventsOf({ kind: "host", before: host({ state: HostState.HOST_STATE_DISCONNECTED }), after: host({ state: HostState.HOST_STATE_SUSPECT }), revision: 9 }, NOW)).toEqual([]);
    const m = migration({ phase: MigrationPhase.MIGRATION_PHASE_MIGRATING });
    expect(eventsOf({ kind: "migration", before: m, after: { ...m, progress: { dataTotalBytes: 10, dataProcessedBytes: 5, dataRemainingBytes: 5, dirtyRateBytesPerS: 0, iteration: 1, updatedAtMs: NOW } }, revision: 10 }, NOW)).toEqual([]);
  });

  it("each phase transition makes exactly its event, stamped with the change's revision and the time", () => {
    for (const from of PHASES) {
      for (const to of PHASES) {
        if (from === to) continue;
        const events = eventsOf({ kind: "vm", before: vm({}, from), after: vm({}, to), revision: 42 }, NOW);
        // The VM should run: off while it starts is no stop; off after running is a warning. Back
        // from UNKNOWN as it was (these records observe nothing different) is no step; nor is the
        // end of a migration (MIGRATING → RUNNING: the migration's events tell it).
        const asItWas = from === VmPhase.VM_PHASE_UNKNOWN && (to === VmPhase.VM_PHASE_RUNNING || to === VmPhase.VM_PHASE_FAILED);
        const migrated = from === VmPhase.VM_PHASE_MIGRATING && to === VmPhase.VM_PHASE_RUNNING;
        const expected: [string, EventSeverity] | undefined =
          asItWas || migrated
            ? undefined
            : to === VmPhase.VM_PHASE_STOPPED
              ? from === VmPhase.VM_PHASE_RUNNING
                ? ["VmStoppedUnasked", EventSeverity.EVENT_SEVERITY_WARNING]
                : undefined
              : PHASE_EVENT[to];
        if (!expected) {
          expect(events, `${VmPhase[from]} → ${VmPhase[to]}`).toEqual([]);
          continue;
        }
        expect(events, `${VmPhase[from]} → ${VmPhase[to]}`).toHaveLength(1);
        expect(events[0]).toMatchObject({ reason: expected[0], severity: expected[1], objectKind: "vm", objectName: "web-1", hostId: "h1", revision: 42, timeMs: NOW });
      }
    }
  });

  it("a VM asked to stop makes VmStopped when it is seen off; one starting (PENDING, then off, then running) makes no stop", () => {
    const asked = (phase: VmPhase) => vm({ desiredState: DesiredState.DESIRED_STATE_STOPPED }, phase);
    expect(reasons(eventsOf({ kind: "vm", before: asked(VmPhase.VM_PHASE_RUNNING), after: asked(VmPhase.VM_PHASE_STOPPED), revision: 5 }, NOW))).toEqual(["VmStopped"]);
    const starting = [VmPhase.VM_PHASE_PENDING, VmPhase.VM_PHASE_STOPPED, VmPhase.VM_PHASE_RUNNING].map((p) => vm({}, p));
    const all = [eventsOf({ kind: "vm", before: starting[0], after: starting[1], revision: 6 }, NOW), eventsOf({ kind: "vm", before: starting[1], after: starting[2], revision: 7 }, NOW)].flat();
    expect(reasons(all)).toEqual(["VmRunning"]);
  });

  it("a desired-state change makes its request event; a move makes VmMoved; two steps in one write make both, in order", () => {
    const running = vm();
    const stop = (force: boolean) => eventsOf({ kind: "vm", before: running, after: { ...running, desiredState: DesiredState.DESIRED_STATE_STOPPED, forceStop: force }, revision: 3 }, NOW);
    expect(stop(false).map((e) => [e.reason, e.message])).toEqual([["VmStopRequested", "stop asked for"]]);
    expect(stop(true).map((e) => e.message)).toEqual(["power-off asked for"]);
    const stopped = vm({ desiredState: DesiredState.DESIRED_STATE_STOPPED }, VmPhase.VM_PHASE_STOPPED);
    expect(reasons(eventsOf({ kind: "vm", before: stopped, after: { ...stopped, desiredState: DesiredState.DESIRED_STATE_RUNNING }, revision: 4 }, NOW))).toEqual(["VmStartRequested"]);
    expect(reasons(eventsOf({ kind: "vm", before: running, after: { ...running, desiredState: DesiredState.DESIRED_STATE_DELETED }, revision: 5 }, NOW))).toEqual(["VmDeleteRequested"]);
    // The end of a migration: the record moves and runs there; MigrationSucceeded tells the rest.
    const moved = eventsOf({ kind: "vm", before: vm({}, VmPhase.VM_PHASE_MIGRATING), after: vm({ hostId: "h2", placement: { cause: "migrate" } as Vm["placement"] }, VmPhase.VM_PHASE_RUNNING), revision: 6 }, NOW);
    expect(moved.map((e) => [e.reason, e.hostId])).toEqual([["VmMoved", "h2"]]);
    // One that failed stays where it was, running: MigrationFailed says so.
    expect(eventsOf({ kind: "vm", before: vm({}, VmPhase.VM_PHASE_MIGRATING), after: vm(), revision: 7 }, NOW)).toEqual([]);
    const stoppedAtOnce = eventsOf({ kind: "vm", before: running, after: vm({ desiredState: DesiredState.DESIRED_STATE_STOPPED }, VmPhase.VM_PHASE_STOPPED), revision: 8 }, NOW);
    expect(reasons(stoppedAtOnce)).toEqual(["VmStopRequested", "VmStopped"]);
  });

  describe("a failure is told once", () => {
    const failed = (code: string, attempts: number, generation = 1) =>
      vm({ generation, status: { phase: VmPhase.VM_PHASE_FAILED, errorCode: code, attempts, message: `${code}: no such image`, observedGeneration: 0, domainState: DomainState.DOMAIN_STATE_UNSPECIFIED, updatedAtMs: NOW, interfaces: [], nextAttemptAtMs: NOW + 1000, permanent: false } });
    const pending = (generation = 1) => vm({ generation }, VmPhase.VM_PHASE_PENDING);
    /** The events of a sequence of records, each change from the one before. */
    const story = (...records: Vm[]): ClusterEvent[] => records.slice(1).flatMap((after, i) => eventsOf({ kind: "vm", before: records[i], after, revision: i + 1 }, NOW));

    it("failed, PENDING for a retry, failed again with the same code at the same generation: one VmFailed", () => {
      const events = story(pending(), failed("IMAGE_NOT_FOUND", 1), pending(), failed("IMAGE_NOT_FOUND", 2), pending(), failed("IMAGE_NOT_FOUND", 3));
      expect(events.map((e) => [e.reason, e.severity, e.message])).toEqual([["VmFailed", EventSeverity.EVENT_SEVERITY_WARNING, "failed on h1 (IMAGE_NOT_FOUND): IMAGE_NOT_FOUND: no such image"]]);
      // Attempts counting up while it stays FAILED: none either.
      expect(story(failed("IMAGE_NOT_FOUND", 1), failed("IMAGE_NOT_FOUND", 2), failed("IMAGE_NOT_FOUND", 3))).toEqual([]);
      // Nor with its host unheard of in between (VmUnknown is told, not the same failure again).
      expect(reasons(story(failed("IMAGE_NOT_FOUND", 2), vm({}, VmPhase.VM_PHASE_UNKNOWN), failed("IMAGE_NOT_FOUND", 3)))).toEqual(["VmUnknown"]);
    });

    it("another error code, a new generation, or a failure after it ran again is told", () => {
      expect(reasons(story(failed("IMAGE_NOT_FOUND", 1), failed("NO_SPACE", 2)))).toEqual(["VmFailed"]);
      // `berth vm retry`, a stop: a new generation, its attempts start at 1.
      expect(reasons(story(failed("IMAGE_NOT_FOUND", 3), pending(2), failed("IMAGE_NOT_FOUND", 1, 2)))).toEqual(["VmFailed"]);
      expect(reasons(story(failed("IMAGE_NOT_FOUND", 1), vm(), failed("IMAGE_NOT_FOUND", 1)))).toEqual(["VmRunning", "VmFailed"]);
      // Attempts above 1 at a generation the VM has only now reached is no retry.
      expect(reasons(story(pending(1), failed("IMAGE_NOT_FOUND", 2, 2)))).toEqual(["VmFailed"]);
    });

    it("a crash is VmFailed \"crashed\"; a crashed VM back from UNKNOWN as it was is no new one", () => {
      const crashed = vm({ status: { phase: VmPhase.VM_PHASE_FAILED, domainState: DomainState.DOMAIN_STATE_CRASHED, message: "domain crashed", observedGeneration: 1, updatedAtMs: NOW, interfaces: [], attempts: 0, errorCode: "", nextAttemptAtMs: 0, permanent: false } });
      const unknown = vm({ status: { ...crashed.status!, phase: VmPhase.VM_PHASE_UNKNOWN, message: "host not connected" } });
      const events = story(vm(), crashed, unknown, crashed);
      expect(events.map((e) => [e.reason, e.message])).toEqual([
        ["VmFailed", "crashed on h1"],
        ["VmUnknown", "state unknown: h1 is not heard from"],
      ]);
    });
  });

  it("a VM back from UNKNOWN as it was (same observed generation and domain state: its host reconnected) makes no event; one that changed meanwhile does", () => {
    const R = DomainState.DOMAIN_STATE_RUNNING;
    const seen = (phase: VmPhase, domainState: DomainState, observedGeneration = 1) => vm({ status: { phase, domainState, observedGeneration, updatedAtMs: NOW, interfaces: [], message: "", attempts: 0, errorCode: "", nextAttemptAtMs: 0, permanent: false } });
    const change = (before: Vm, after: Vm) => reasons(eventsOf({ kind: "vm", before, after, revision: 1 }, NOW));
    expect(change(seen(VmPhase.VM_PHASE_RUNNING, R), seen(VmPhase.VM_PHASE_UNKNOWN, R))).toEqual(["VmUnknown"]);
    expect(change(seen(VmPhase.VM_PHASE_UNKNOWN, R), seen(VmPhase.VM_PHASE_RUNNING, R))).toEqual([]);
    const stopped = vm({ desiredState: DesiredState.DESIRED_STATE_STOPPED, status: seen(VmPhase.VM_PHASE_STOPPED, DomainState.DOMAIN_STATE_SHUTOFF).status });
    expect(change({ ...stopped, status: { ...stopped.status!, phase: VmPhase.VM_PHASE_UNKNOWN } }, stopped)).toEqual([]);
    // Meanwhile: restarted at a new generation (its host applied one), or stopped though it should run.
    expect(change(seen(VmPhase.VM_PHASE_UNKNOWN, R), seen(VmPhase.VM_PHASE_RUNNING, R, 2))).toEqual(["VmRunning"]);
    expect(change(seen(VmPhase.VM_PHASE_UNKNOWN, R), seen(VmPhase.VM_PHASE_STOPPED, DomainState.DOMAIN_STATE_SHUTOFF))).toEqual(["VmStoppedUnasked"]);
  });

  it("a RESTART VM its fenced host keeps for its data volumes is VmNotRelocated (warning), once", () => {
    const unknown = (message: string) => vm({ status: { phase: VmPhase.VM_PHASE_UNKNOWN, message, domainState: DomainState.DOMAIN_STATE_RUNNING, observedGeneration: 1, updatedAtMs: NOW, interfaces: [], attempts: 0, errorCode: "", nextAttemptAtMs: 0, permanent: false } });
    const suspect = unknown("host not heard from (suspect)");
    const kept = unknown(`host fenced: silent past its fence deadline; not restarted elsewhere: ${NOT_RELOCATED_WITH_VOLUMES}`);
    const events = eventsOf({ kind: "vm", before: suspect, after: kept, revision: 3 }, NOW);
    expect(events.map((e) => [e.reason, e.severity, e.message])).toEqual([
      ["VmNotRelocated", EventSeverity.EVENT_SEVERITY_WARNING, "not restarted elsewhere though h1 was fenced: it has data volumes on the fenced host; it runs again when its host is back"],
    ]);
    expect(eventsOf({ kind: "vm", before: kept, after: { ...kept, status: { ...kept.status!, updatedAtMs: NOW + 1 } }, revision: 4 }, NOW)).toEqual([]);
  });

  it("a new VM is VmPlaced on its host; a deleted one VmDeleted naming the host it was on", () => {
    const placed = eventsOf({ kind: "vm", before: undefined, after: vm({}, VmPhase.VM_PHASE_PENDING), revision: 2 }, NOW);
    expect(placed).toHaveLength(1);
    expect(placed[0]).toMatchObject({ reason: "VmPlaced", objectName: "web-1", hostId: "h1", severity: EventSeverity.EVENT_SEVERITY_NORMAL });
    expect(placed[0]!.message).toMatch(/^placed on h1 /);
    const deleted = eventsOf({ kind: "vm", before: vm(), after: undefined, revision: 9 }, NOW);
    expect(deleted.map((e) => [e.reason, e.hostId, e.message])).toEqual([["VmDeleted", "h1", "deleted (was on h1)"]]);
  });

  it("hosts: joined, each state, cordon and uncordon, drain, labels, an agent restart, deleted", () => {
    const ready = host();
    const change = (before: Host | undefined, after: Host | undefined) => reasons(eventsOf({ kind: "host", before, after, revision: 1 }, NOW));
    expect(change(undefined, ready)).toEqual(["HostJoined"]);
    expect(change(ready, undefined)).toEqual(["HostDeleted"]);
    expect(change(ready, { ...ready, state: HostState.HOST_STATE_SUSPECT })).toEqual(["HostSuspect"]);
    expect(change({ ...ready, state: HostState.HOST_STATE_SUSPECT }, { ...ready, state: HostState.HOST_STATE_DOWN })).toEqual(["HostDown"]);
    expect(change({ ...ready, state: HostState.HOST_STATE_DOWN }, { ...ready, state: HostState.HOST_STATE_FENCED })).toEqual(["HostFenced"]);
    expect(change({ ...ready, state: HostState.HOST_STATE_FENCED }, ready)).toEqual(["HostReady"]);
    expect(change(ready, { ...ready, cordoned: true, cordonReason: "disk" })).toEqual(["HostCordoned"]);
    expect(change({ ...ready, cordoned: true }, ready)).toEqual(["HostUncordoned"]);
    const draining = { ...ready, cordoned: true, drain: { phase: DrainPhase.DRAIN_PHASE_DRAINING, toMove: 2 } as Host["drain"] };
    expect(change({ ...ready, cordoned: true }, draining)).toEqual(["HostDrainStarted"]);
    expect(change(ready, { ...ready, labels: { rack: "r1" } })).toEqual(["HostLabelsChanged"]);
    expect(change(ready, { ...ready, bootId: "boot-b" })).toEqual(["HostAgentRestarted"]);
    const severities = eventsOf({ kind: "host", before: ready, after: { ...ready, state: HostState.HOST_STATE_SUSPECT }, revision: 1 }, NOW).map((e) => e.severity);
    expect(severities).toEqual([EventSeverity.EVENT_SEVERITY_WARNING]);
  });

  it("migrations: requested (again for a new record of the same VM), started, succeeded, failed; a delete makes none", () => {
    const change = (before: Migration | undefined, after: Migration | undefined) => reasons(eventsOf({ kind: "migration", before, after, revision: 1 }, NOW));
    const pending = migration();
    expect(change(undefined, pending)).toEqual(["MigrationRequested"]);
    expect(change(pending, { ...pending, phase: MigrationPhase.MIGRATION_PHASE_MIGRATING })).toEqual(["MigrationStarted"]);
    expect(change({ ...pending, phase: MigrationPhase.MIGRATION_PHASE_MIGRATING }, { ...pending, phase: MigrationPhase.MIGRATION_PHASE_COMPLETED })).toEqual(["MigrationSucceeded"]);
    expect(change(pending, { ...pending, phase: MigrationPhase.MIGRATION_PHASE_FAILED, message: "no room" })).toEqual(["MigrationFailed"]);
    const done = { ...pending, phase: MigrationPhase.MIGRATION_PHASE_COMPLETED };
    expect(change(done, { ...pending, id: "m-2" })).toEqual(["MigrationRequested"]);
    expect(change(done, undefined)).toEqual([]);
  });
});

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const spec = (name: string): VmSpec => VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 256, diskGib: 1 } });

/** The operator API calls these tests make, and a WatchEvents{events} stream's events. */
function operator(address: string) {
  const { client, call } = operatorApi(cleanups, address);
  const seen: ClusterEvent[] = [];
  const stream = client.watchEvents({ vms: false, hosts: false, migrations: false, events: true }, new Metadata(), { deadline: deadlineIn(60_000) });
  stream.on("error", () => undefined);
  stream.on("data", (w: WatchEventsResponse) => {
    if (w.object?.$case === "event") seen.push({ ...w.object.value, ...(w.type === EventType.EVENT_TYPE_EXISTING ? { message: `(existing) ${w.object.value.message}` } : {}) });
  });
  cleanups.push(() => stream.cancel());
  return {
    seen,
    create: (name: string) => call<CreateVmResponse>((m, o, cb) => client.createVm({ spec: spec(name), requestId: "" }, m, o, cb)),
    stop: (name: string) => call((m, o, cb) => client.stopVm({ name, force: false }, m, o, cb)),
    phase: async (name: string) => (await call<GetVmResponse>((m, o, cb) => client.getVm({ name }, m, o, cb))).vm?.status?.phase,
  };
}

describe("cluster events in process", () => {
  it("creating and stopping a VM makes VmPlaced, VmRunning, VmStopRequested, VmStopped, in order, in WatchEvents{events}", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    expect((await rawAgent(cleanups, address, helloFor("h1"), (c) => resultFor(c, { ok: true })).first).msg?.$case).toBe("welcome");
    const op = operator(address);
    await waitFor("h1 joined, told on the stream", () => op.seen.some((e) => e.reason === "HostJoined" && e.objectName === "h1"));
    await op.create("web-1");
    await waitFor("web-1 running", async () => (await op.phase("web-1")) === VmPhase.VM_PHASE_RUNNING);
    await op.stop("web-1");
    await waitFor("web-1 stopped", async () => (await op.phase("web-1")) === VmPhase.VM_PHASE_STOPPED);
    const ofVm = await waitFor("web-1's VmStopped on the stream", () => {
      const mine = op.seen.filter((e) => e.objectKind === "vm" && e.objectName === "web-1");
      return mine.some((e) => e.reason === "VmStopped") ? mine : undefined;
    });
    expect(reasons(ofVm)).toEqual(["VmPlaced", "VmRunning", "VmStopRequested", "VmStopped"]);
    expect(ofVm.every((e) => e.hostId === "h1")).toBe(true);
    // Revisions follow the store's order.
    const revisions = ofVm.map((e) => e.revision);
    expect([...revisions].sort((a, b) => a - b)).toEqual(revisions);
    // The controller keeps them, oldest first: a new stream starts with them, as EXISTING.
    expect(reasons(controller.events.recent().filter((e) => e.objectName === "web-1"))).toEqual(reasons(ofVm));
    const later = operator(address);
    await waitFor("the recent events on a new stream", () => later.seen.filter((e) => e.objectName === "web-1").length === 4);
    expect(later.seen.every((e) => e.message.startsWith("(existing) "))).toBe(true);
  });

  it("a follower answers WatchEvents{events} from its own log (records stay the leader's: NOT_LEADER)", async () => {
    const store = new MemoryStore();
    const leader = await startController(cleanups, store);
    await waitFor("leadership", () => leader.controller.isLeader);
    const follower = await startController(cleanups, store, { controllerId: "c2" });
    expect(follower.controller.isLeader).toBe(false);
    expect((await rawAgent(cleanups, leader.address, helloFor("h1"), (c) => resultFor(c, { ok: true })).first).msg?.$case).toBe("welcome");
    const onFollower = operator(follower.address);
    await operator(leader.address).create("web-1");
    await waitFor("the follower's stream tells of web-1", () => onFollower.seen.some((e) => e.reason === "VmPlaced" && e.objectName === "web-1"));
    const { client } = operatorApi(cleanups, follower.address);
    const records = client.watchEvents({ vms: true, hosts: false, migrations: false, events: false }, new Metadata(), { deadline: deadlineIn(10_000) });
    const refused = await new Promise<{ code: number; details: string }>((resolve) => records.on("error", resolve));
    expect(refused.code).toBe(status.UNAVAILABLE); // NOT_LEADER, naming the leader
    expect(refused.details).toContain(leader.address);
  });

  it("a controller started on an existing store makes no events for the records already there", async () => {
    const store = new MemoryStore();
    const first: Cleanups = [];
    const one = await startController(first, store);
    await waitFor("leadership", () => one.controller.isLeader);
    const agent = rawAgent(first, one.address, helloFor("h1"), (c) => resultFor(c, { ok: true }));
    expect((await agent.first).msg?.$case).toBe("welcome");
    const { client, call } = operatorApi(first, one.address);
    await call((m, o, cb) => client.createVm({ spec: spec("web-1"), requestId: "" }, m, o, cb));
    expect(reasons(one.controller.events.recent())).toContain("VmPlaced");
    for (const c of first.splice(0).reverse()) await c();

    const two = await startController(cleanups, store, { controllerId: "c2" });
    await waitFor("leadership of the second controller", () => two.controller.isLeader, 15_000);
    // What happens from now on is told (h1 back), but nothing for the records it found.
    expect((await rawAgent(cleanups, two.address, helloFor("h1", "boot-b"), (c) => resultFor(c, { ok: true })).first).msg?.$case).toBe("welcome");
    const op = operator(two.address);
    await op.create("web-2");
    await waitFor("web-2 placed", () => two.controller.events.recent().some((e) => e.reason === "VmPlaced"));
    const recent = two.controller.events.recent();
    expect(recent.filter((e) => e.reason === "VmPlaced").map((e) => e.objectName)).toEqual(["web-2"]);
    expect(recent.filter((e) => e.reason === "HostJoined")).toEqual([]);
    expect(recent.filter((e) => e.objectName === "web-1" && e.reason === "VmRunning")).toEqual([]);
  });
});

describe("scale group events", () => {
  const group = (over: Partial<ScaleGroup> = {}): ScaleGroup =>
    ScaleGroup.fromPartial({ name: "web", minSize: 2, maxSize: 4, policy: { targetCpu: 0.6 }, members: initialMembers("web", 2, NOW), nextIndex: 3, ...over });
  const reasons = (before: ScaleGroup | undefined, after: ScaleGroup | undefined): string[] => eventsOf({ kind: "scalegroup", before, after, revision: 9 }, NOW).map((e) => `${e.reason}: ${e.message}`);
  const decision = { decidedAtMs: 0, reason: "ScaledOut", fromSize: 2, toSize: 4, warmMembers: 2, warmingMembers: 0, cpuUtilization: 0.95, reactiveSize: 4, predictedSize: 0, predictedCores: 0, message: "cpu 95% of 2 warm VMs against 60%" };

  it("tells a group's creation, each decision once with its message, and its deletion", () => {
    const created = group();
    expect(reasons(undefined, created)).toEqual(["ScaleGroupCreated: scale group created: 2..4 VMs at 60% CPU"]);
    const out = applyDecision(created, decision, NOW);
    expect(reasons(created, out)).toEqual(["ScaledOut: 2 → 4: cpu 95% of 2 warm VMs against 60%"]);
    // A rewrite that decides nothing (a forecast learnt, protection changed) tells nothing again.
    expect(reasons(out, { ...out, protectedMembers: ["web-1"] })).toEqual([]);
    const deleting = { ...out, deleting: true };
    expect(reasons(out, deleting)).toEqual(["ScaleGroupDeleting: deleting the group and its 4 VMs"]);
    expect(reasons(deleting, undefined)).toEqual(["ScaleGroupDeleted: scale group deleted (4 members left)"]);
    const e = eventsOf({ kind: "scalegroup", before: created, after: out, revision: 9 }, NOW)[0]!;
    expect(e).toMatchObject({ objectKind: "scalegroup", objectName: "web", severity: EventSeverity.EVENT_SEVERITY_NORMAL, revision: 9 });
  });
});
