import { ClusterEvent, DesiredState, EventSeverity, EventType, Host, HostState, Vm, VmPhase, type WatchEventsRequest, type WatchEventsResponse } from "@berth/api";
import { BerthError, ErrorCode, invalidArgument, toGrpcStatus } from "@berth/core";
import type { ServerWritableStream } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { eventKey, PrintedEvents } from "./commands/events.js";
import { parseLabelArgs } from "./commands/host-admin.js";
import { ExitCode } from "./exit-codes.js";
import { run } from "./program.js";
import { closedPort, notLeader, recordingIo, stubPerTest, StubCluster, type RecordingIo } from "./stub-server.testkit.js";

// berth events [--follow], vm list / host list --watch, host label, host delete — against a stub
// controller whose WatchEvents stream each test scripts.

const NOW = 1_700_000_000_000;
const stub = stubPerTest();
type Call = ServerWritableStream<WatchEventsRequest, WatchEventsResponse>;

const event = (revision: number, reason: string, objectName: string, over: Partial<ClusterEvent> = {}): ClusterEvent =>
  ClusterEvent.fromPartial({
    timeMs: NOW - 60_000 + revision * 1000,
    severity: EventSeverity.EVENT_SEVERITY_NORMAL,
    reason,
    objectKind: "vm",
    objectName,
    hostId: "host-1",
    message: `${reason.toLowerCase()} ${objectName}`,
    revision,
    ...over,
  });

const existing = (e: ClusterEvent): WatchEventsResponse => ({ type: EventType.EVENT_TYPE_EXISTING, revision: e.revision, object: { $case: "event", value: e } });
const put = (e: ClusterEvent): WatchEventsResponse => ({ type: EventType.EVENT_TYPE_PUT, revision: e.revision, object: { $case: "event", value: e } });

function vm(name: string, phase: VmPhase, hostId = "host-1"): Vm {
  return Vm.fromPartial({
    id: `id-${name}`,
    spec: { name, resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 } },
    desiredState: DesiredState.DESIRED_STATE_RUNNING,
    hostId,
    generation: 1,
    status: { phase, updatedAtMs: NOW - 1000 },
    createdAtMs: NOW - 5 * 60_000,
  });
}

const host = (id: string, over: Partial<Host> = {}): Host =>
  Host.fromPartial({
    id,
    capacity: { vcpus: 16, memoryMib: 65536, diskGib: 1024 },
    // As the controller answers it under the default ratios and reserve (4x vCPU, 1 GiB memory held back).
    allocatable: { vcpus: 64, memoryMib: 64512, diskGib: 1024 },
    state: HostState.HOST_STATE_READY,
    lastSeenMs: NOW - 2000,
    driver: "fake",
    ...over,
  });

async function berth(s: StubCluster | string, argv: string[], io: RecordingIo = recordingIo({}, NOW)) {
  const code = await run(["--insecure", "--controller", typeof s === "string" ? s : s.address, ...argv], io);
  return { code, out: io.out, err: io.err };
}

/** Resolves once `check` holds (polled; the test's own timeout bounds it). */
async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setTimeout(resolve, 10));
}

/** Runs a verb that follows a stream, with an interrupt the test pulls (as Ctrl-C). */
function following(s: StubCluster | string, argv: string[], over: Partial<RecordingIo> = {}) {
  const stop = new AbortController();
  const io = Object.assign(recordingIo({}, NOW), { interrupt: stop.signal }, over);
  const done = berth(s, argv, io);
  return { io, done, stop: async () => (stop.abort(), await done) };
}

/** Lines of the table rows in `out` naming `what`. */
const linesWith = (out: string, what: string): string[] => out.split("\n").filter((l) => l.includes(what));

describe("berth events", () => {
  const recent = [
    event(3, "VmPlaced", "web-1", { message: "placed on host-1" }),
    event(4, "HostSuspect", "host-2", { objectKind: "host", hostId: "host-2", severity: EventSeverity.EVENT_SEVERITY_WARNING, message: "now SUSPECT" }),
    event(5, "VmRunning", "web-1", { message: "running on host-1" }),
    event(6, "VmPlaced", "db-1", { hostId: "host-2", message: "placed on host-2" }),
  ];
  const keeping = (events: ClusterEvent[]) => (_req: WatchEventsRequest, call: Call) => {
    for (const e of events) call.write(existing(e));
  };

  it("prints the recent events oldest first, as kubectl get events, asking only for events", async () => {
    const s = await stub({ watchEvents: keeping(recent) });
    const r = await berth(s, ["events"]);
    expect(r.err).toBe("");
    expect(r.code).toBe(ExitCode.Ok);
    const lines = r.out.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^AGE\s+TYPE\s+REASON\s+OBJECT\s+MESSAGE$/);
    expect(lines.slice(1).map((l) => l.split(/\s{2,}/).slice(1, 4))).toEqual([
      ["Normal", "VmPlaced", "vm/web-1"],
      ["Warning", "HostSuspect", "host/host-2"],
      ["Normal", "VmRunning", "vm/web-1"],
      ["Normal", "VmPlaced", "vm/db-1"],
    ]);
    expect(lines[1]).toMatch(/^57s\s+Normal\s+VmPlaced\s+vm\/web-1\s+placed on host-1$/);
    expect(s.requests("watchEvents")).toEqual([{ vms: false, hosts: false, migrations: false, events: true }]);
  });

  it("--for and --warnings keep what they name; -o json prints the array", async () => {
    const s = await stub({ watchEvents: keeping(recent) });
    const forVm = await berth(s, ["events", "--for", "vm/web-1"]);
    expect(linesWith(forVm.out, "vm/").map((l) => l.split(/\s{2,}/)[2])).toEqual(["VmPlaced", "VmRunning"]);
    // host/NAME: the host's own events and what happened on it.
    const forHost = await berth(s, ["events", "--for", "host/host-2"]);
    expect(linesWith(forHost.out, "/").map((l) => l.split(/\s{2,}/)[3])).toEqual(["host/host-2", "vm/db-1"]);
    const warnings = await berth(s, ["events", "--warnings", "-o", "json"]);
    expect(JSON.parse(warnings.out)).toEqual([ClusterEvent.toJSON(recent[1]!)]);
    const bad = await berth(s, ["events", "--for", "web-1"]);
    expect(bad.code).toBe(ExitCode.Usage);
    expect(bad.err).toContain("--for: expected vm/NAME, host/NAME or migration/NAME");
  });

  it("tries the next address when one is unreachable, and fails as a unary call would when none answers (exit 5)", async () => {
    const s = await stub({ watchEvents: keeping(recent) });
    const dead = `127.0.0.1:${await closedPort()}`;
    const r = await berth(`${dead},${s.address}`, ["events"]);
    expect(r.code).toBe(ExitCode.Ok);
    expect(linesWith(r.out, "VmPlaced")).toHaveLength(2);
    // Not retried until --timeout: each address once.
    const none = await berth(dead, ["--timeout", "60", "events"]);
    expect(none.code).toBe(ExitCode.Unavailable);
    expect(none.err).toContain(`controller ${dead}: cannot connect`);
  });

  it("says so when there are none", async () => {
    const s = await stub({ watchEvents: () => undefined });
    const r = await berth(s, ["events"]);
    expect(r.code).toBe(ExitCode.Ok);
    expect(r.out).toBe("No events.\n");
  });

  it("--follow prints each new event after the recent ones, and ends with exit 0 when interrupted", async () => {
    let stream: Call | undefined;
    const s = await stub({
      watchEvents: (_req, call) => {
        stream = call;
        call.write(existing(recent[0]!));
      },
    });
    const f = following(s, ["events", "--follow"]);
    await until(() => f.io.out.includes("VmPlaced"));
    stream!.write(put(event(9, "VmStopped", "web-1", { message: "stopped on host-1" })));
    await until(() => f.io.out.includes("VmStopped"));
    const r = await f.stop();
    expect(r.code).toBe(ExitCode.Ok);
    const lines = r.out.trimEnd().split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^AGE\s+TYPE\s+REASON\s+OBJECT\s+MESSAGE$/);
    expect(lines[2]).toMatch(/Normal\s+VmStopped\s+vm\/web-1\s+stopped on host-1$/);
    // The rows keep the columns of the first batch.
    expect(lines[2]!.indexOf("VmStopped")).toBe(lines[0]!.indexOf("REASON"));
  });

  it("--follow reopens a broken stream and prints no event twice", async () => {
    const calls: Call[] = [];
    const s = await stub({
      watchEvents: (_req, call) => {
        calls.push(call);
        if (calls.length === 1) {
          call.write(existing(recent[0]!));
          call.write(existing(recent[1]!));
          call.write(put(recent[2]!));
          // The controller goes away mid-stream.
          setTimeout(() => call.emit("error", toGrpcStatus(new BerthError(ErrorCode.Unavailable, "controller shutting down"))), 20);
        } else {
          // The recent events again, and one that is new.
          for (const e of recent.slice(0, 3)) call.write(existing(e));
          call.write(existing(recent[3]!));
        }
      },
    });
    const f = following(s, ["events", "-f", "-o", "json"]);
    await until(() => f.io.out.includes("db-1"));
    const r = await f.stop();
    expect(r.code).toBe(ExitCode.Ok);
    expect(calls).toHaveLength(2);
    const printed = r.out.trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(printed.map((e) => `${e["reason"]}/${e["objectName"]}`)).toEqual(["VmPlaced/web-1", "HostSuspect/host-2", "VmRunning/web-1", "VmPlaced/db-1"]);
    expect(r.err).toMatch(/events: the stream broke \(.*controller shutting down\); reopening on 127\.0\.0\.1:\d+ in \d\.\ds\n/);
  });

  it("--follow moves to the next controller when the one it follows dies, printing no event twice", async () => {
    const first = await stub({ watchEvents: keeping(recent.slice(0, 2)) });
    const second = await stub({ watchEvents: keeping(recent) });
    const f = following(`${first.address},${second.address}`, ["events", "--follow", "-o", "json"]);
    await until(() => f.io.out.includes("HostSuspect"));
    first.kill();
    await until(() => f.io.out.includes("db-1"));
    const r = await f.stop();
    expect(r.out.trimEnd().split("\n").map((l) => (JSON.parse(l) as { revision: number }).revision)).toEqual([3, 4, 5, 6]);
    expect(r.err).toContain(`reopening on ${second.address}`);
  });

  it("--follow goes to the leader a follower names", async () => {
    const leader = await stub({ watchEvents: (_req, call) => call.write(existing(recent[0]!)) });
    const follower = await stub({ watchEvents: (_req, call) => call.emit("error", toGrpcStatus(notLeader(leader.address))) });
    const f = following(follower, ["events", "--follow"]);
    await until(() => f.io.out.includes("VmPlaced"));
    const r = await f.stop();
    expect(r.code).toBe(ExitCode.Ok);
    expect(r.err).toContain(`reopening on ${leader.address}\n`);
    expect(leader.requests("watchEvents")).toHaveLength(1);
  });

  it("--follow stops on a refusal that another stream would not change", async () => {
    const s = await stub({ watchEvents: (_req, call) => call.emit("error", toGrpcStatus(new BerthError(ErrorCode.PermissionDenied, "role 'host' may not watch"))) });
    const r = await following(s, ["events", "--follow"]).done;
    expect(r.code).toBe(ExitCode.Denied);
    expect(r.err).toContain("may not watch");
  });

  it("--follow -o yaml is a usage error", async () => {
    const r = await berth("127.0.0.1:1", ["events", "--follow", "-o", "yaml"]);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain("--follow: -o yaml cannot be streamed");
  });
});

describe("PrintedEvents (the --follow dedupe)", () => {
  it("admits an event once; a later stream's older events are skipped, new ones of the same revision are not", () => {
    const p = new PrintedEvents();
    const a = event(5, "VmMoved", "web-1");
    expect(p.admit(a, false)).toBe(true);
    expect(p.admit(a, true)).toBe(false);
    expect(p.admit({ ...a }, false)).toBe(false);
    // The same change told by another controller (stamped later) in its initial burst.
    expect(p.admit({ ...event(4, "VmPlaced", "web-1"), timeMs: NOW }, true)).toBe(false);
    // Another event of the same change is new.
    expect(p.admit(event(5, "VmRunning", "web-1"), true)).toBe(true);
    expect(eventKey(a)).not.toBe(eventKey(event(5, "VmRunning", "web-1")));
  });
});

describe("vm list --watch", () => {
  const watching = (first: Vm[]) => {
    const calls: Call[] = [];
    return {
      calls,
      handler: (_req: WatchEventsRequest, call: Call) => {
        calls.push(call);
        for (const v of first) call.write({ type: EventType.EVENT_TYPE_EXISTING, revision: 1, object: { $case: "vm", value: v } });
      },
    };
  };

  it("prints the table, then each changed row as a new line (not a terminal), from the stream", async () => {
    const w = watching([vm("web-2", VmPhase.VM_PHASE_PENDING), vm("web-10", VmPhase.VM_PHASE_RUNNING)]);
    const s = await stub({ watchEvents: w.handler });
    const f = following(s, ["vm", "list", "--watch"]);
    await until(() => f.io.out.includes("web-10"));
    w.calls[0]!.write({ type: EventType.EVENT_TYPE_PUT, revision: 2, object: { $case: "vm", value: vm("web-2", VmPhase.VM_PHASE_RUNNING) } });
    await until(() => linesWith(f.io.out, "web-2").length === 2);
    w.calls[0]!.write({ type: EventType.EVENT_TYPE_DELETED, revision: 3, object: { $case: "vm", value: vm("web-10", VmPhase.VM_PHASE_STOPPED) } });
    await until(() => linesWith(f.io.out, "web-10").length === 2);
    const r = await f.stop();
    expect(r.code).toBe(ExitCode.Ok);
    const lines = r.out.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^NAME\s+PHASE/);
    // Natural order, then the changes in the order they came.
    expect(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 2))).toEqual([
      ["web-2", "PENDING"],
      ["web-10", "RUNNING"],
      ["web-2", "RUNNING"],
      ["web-10", "STOPPED"],
    ]);
    expect(s.requests("listVms")).toHaveLength(0);
    expect(s.requests("watchEvents")[0]).toEqual({ vms: true, hosts: false, migrations: false, events: false });
  });

  it("on a terminal, clears and redraws the whole table on a change", async () => {
    const w = watching([vm("web-1", VmPhase.VM_PHASE_PENDING)]);
    const s = await stub({ watchEvents: w.handler });
    const f = following(s, ["vm", "list", "-w"], { stdoutIsTerminal: true });
    await until(() => f.io.out.includes("web-1"));
    w.calls[0]!.write({ type: EventType.EVENT_TYPE_PUT, revision: 2, object: { $case: "vm", value: vm("web-3", VmPhase.VM_PHASE_PENDING) } });
    await until(() => f.io.out.includes("web-3"));
    const r = await f.stop();
    const screens = r.out.split("\x1b[H\x1b[2J").slice(1);
    expect(screens).toHaveLength(2);
    expect(linesWith(screens[1]!, "web-")).toHaveLength(2);
    expect(screens[1]).toMatch(/^NAME\s+PHASE/);
  });

  it("--host keeps that host's VMs; -o json prints one change a line", async () => {
    const w = watching([vm("a", VmPhase.VM_PHASE_RUNNING, "host-1"), vm("b", VmPhase.VM_PHASE_RUNNING, "host-2")]);
    const s = await stub({ watchEvents: w.handler, getHost: (r) => ({ host: host(r.id) }) });
    const f = following(s, ["vm", "list", "--watch", "--host", "host-2", "-o", "json"]);
    await until(() => f.io.out.includes('"b"'));
    w.calls[0]!.write({ type: EventType.EVENT_TYPE_PUT, revision: 2, object: { $case: "vm", value: vm("b", VmPhase.VM_PHASE_STOPPED, "host-2") } });
    await until(() => f.io.out.split("\n").length > 2);
    const r = await f.stop();
    const changes = r.out.trimEnd().split("\n").map((l) => JSON.parse(l) as { type: string; object: { spec: { name: string }; status: { phase: string } } });
    expect(changes.map((c) => [c.type, c.object.spec.name, c.object.status.phase])).toEqual([
      ["ADDED", "b", "VM_PHASE_RUNNING"],
      ["MODIFIED", "b", "VM_PHASE_STOPPED"],
    ]);
  });
});

describe("host list --watch", () => {
  it("re-prints a host whose record changed, with what GetHost adds (allocation)", async () => {
    let stream: Call | undefined;
    const s = await stub({
      watchEvents: (_req, call) => {
        stream = call;
        call.write({ type: EventType.EVENT_TYPE_EXISTING, revision: 1, object: { $case: "host", value: host("host-1") } });
      },
      listHosts: () => ({ hosts: [host("host-1", { allocated: { vcpus: 2, memoryMib: 4096, diskGib: 20 } })] }),
      getHost: (r) => ({ host: host(r.id, { cordoned: true, allocated: { vcpus: 4, memoryMib: 8192, diskGib: 40 } }) }),
      getClusterConfig: () => ({}),
    });
    const f = following(s, ["host", "list", "--watch"]);
    await until(() => f.io.out.includes("host-1"));
    stream!.write({ type: EventType.EVENT_TYPE_PUT, revision: 2, object: { $case: "host", value: host("host-1", { cordoned: true }) } });
    await until(() => linesWith(f.io.out, "host-1").length === 2);
    const r = await f.stop();
    const rows = linesWith(r.out, "host-1");
    expect(rows[0]).toMatch(/^host-1\s+READY\s+2\//);
    expect(rows[1]).toMatch(/^host-1\s+READY,CORDONED\s+4\//);
    expect(s.requests("getHost")).toEqual([{ id: "host-1" }]);
  });
});

describe("host label", () => {
  const labelled = host("host-1", { labels: { rack: "r1", zone: "a" }, operatorLabels: { rack: "r1" }, agentLabels: { zone: "a", rack: "r0" } });

  it("parses KEY=VALUE and KEY- (kubectl's syntax)", () => {
    expect(parseLabelArgs(["ssd=true", "rack-", "note=a=b"])).toEqual({ set: { ssd: "true", note: "a=b" }, remove: ["rack"] });
    expect(() => parseLabelArgs(["ssd"])).toThrow(/'ssd' is neither KEY=VALUE \(set\) nor KEY- \(remove\)/);
    expect(() => parseLabelArgs(["a=1", "a-"])).toThrow(/'a' is both set and removed/);
    expect(() => parseLabelArgs([])).toThrow(/give KEY=VALUE/);
  });

  it("sets and removes operator labels and prints the labels with who set each", async () => {
    const s = await stub({
      getHost: () => ({ host: labelled }),
      labelHost: () => ({ host: host("host-1", { labels: { rack: "r0", zone: "a", ssd: "true" }, operatorLabels: { ssd: "true" }, agentLabels: { zone: "a", rack: "r0" } }) }),
    });
    const r = await berth(s, ["host", "label", "host-1", "ssd=true", "rack-"]);
    expect(r.err).toBe("");
    expect(r.code).toBe(ExitCode.Ok);
    expect(s.requests("labelHost")).toEqual([{ hostId: "host-1", set: { ssd: "true" }, remove: ["rack"] }]);
    expect(r.out.split("\n").map((l) => l.split(/\s{2,}/))).toEqual([["KEY", "VALUE", "SET BY"], ["rack", "r0", "agent"], ["ssd", "true", "operator"], ["zone", "a", "agent"], [""]]);
  });

  it("refuses to change an operator label's value without --overwrite, and does with it", async () => {
    const s = await stub({ getHost: () => ({ host: labelled }), labelHost: () => ({ host: labelled }) });
    const refused = await berth(s, ["host", "label", "host-1", "rack=r2"]);
    expect(refused.code).toBe(ExitCode.Conflict);
    expect(refused.err).toContain("'rack' already has the value 'r1' on host-1; to change it, add --overwrite");
    expect(s.requests("labelHost")).toHaveLength(0);
    // The same value again is no change: no --overwrite needed.
    expect((await berth(s, ["host", "label", "host-1", "rack=r1"])).code).toBe(ExitCode.Ok);
    expect((await berth(s, ["host", "label", "host-1", "rack=r2", "--overwrite"])).code).toBe(ExitCode.Ok);
    expect(s.requests("labelHost").map((q) => q.set)).toEqual([{ rack: "r1" }, { rack: "r2" }]);
  });

  it("prints the controller's refusal of a bad key (exit 2) and of an agent's label (exit 6)", async () => {
    const s = await stub({ getHost: () => ({ host: labelled }), labelHost: () => Promise.reject(invalidArgument("set", "label key 'Bad Key': must be ...")) });
    const bad = await berth(s, ["host", "label", "host-1", "Bad Key=1"]);
    expect(bad.code).toBe(ExitCode.Usage);
    expect(bad.err).toContain("Bad Key");
    s.handlers.labelHost = () => Promise.reject(new BerthError(ErrorCode.FailedPrecondition, "host 'host-1': label 'zone' is set by its agent"));
    const agent = await berth(s, ["host", "label", "host-1", "zone-"]);
    expect(agent.code).toBe(ExitCode.Conflict);
    expect(agent.err).toContain("label 'zone' is set by its agent");
  });

  it("host show tells the operator's labels from the agent's", async () => {
    const s = await stub({ getHost: () => ({ host: labelled }), getClusterConfig: () => ({}) });
    const r = await berth(s, ["host", "show", "host-1"]);
    expect(r.out).toMatch(/^Labels:\s+rack=r1,zone=a$/m);
    expect(r.out).toMatch(/^Operator labels:\s+rack=r1$/m);
    expect(r.out).toMatch(/^Agent labels:\s+rack=r0,zone=a$/m);
  });
});

describe("host delete", () => {
  it("without a terminal needs --yes; asked, 'n' does nothing and 'y' deletes", async () => {
    const s = await stub({ getHost: (r) => ({ host: host(r.id, { state: HostState.HOST_STATE_DOWN }) }), deleteHost: () => ({}) });
    const script = await berth(s, ["host", "delete", "host-9"]);
    expect(script.code).toBe(ExitCode.Usage);
    expect(script.err).toContain("host delete: refusing without --yes");
    const no = recordingIo({}, NOW, { interactive: true, answers: ["n"] });
    expect((await berth(s, ["host", "delete", "host-9"], no)).code).toBe(ExitCode.Error);
    expect(no.questions[0]).toContain("This deletes the record of host host-9 (DOWN");
    expect(s.requests("deleteHost")).toHaveLength(0);
    const yes = recordingIo({}, NOW, { interactive: true, answers: ["y"] });
    const r = await berth(s, ["host", "delete", "host-9"], yes);
    expect(r.code).toBe(ExitCode.Ok);
    expect(r.out).toBe("host host-9 deleted\n");
    expect(s.requests("deleteHost")).toEqual([{ hostId: "host-9" }]);
  });

  it("prints the refusal of a host still in use with exit 6", async () => {
    const s = await stub({
      deleteHost: () => Promise.reject(new BerthError(ErrorCode.FailedPrecondition, "host 'host-1' still has 2 VM record(s) (db-1, web-1): drain it first")),
    });
    const r = await berth(s, ["host", "delete", "host-1", "--yes"]);
    expect(r.code).toBe(ExitCode.Conflict);
    expect(r.err).toContain("still has 2 VM record(s) (db-1, web-1)");
  });
});

describe("--help", () => {
  it.each([
    [["events", "--help"], "berth events --for vm/web-1"],
    [["host", "label", "--help"], "berth host label host-1 rack=r2 --overwrite"],
    [["host", "delete", "--help"], "berth host delete host-9 --yes"],
    [["vm", "list", "--help"], "berth vm list --watch"],
    [["host", "list", "--help"], "berth host list --watch"],
  ])("%j has an example", async (argv, example) => {
    const io = recordingIo();
    expect(await run(argv, io)).toBe(ExitCode.Ok);
    expect(io.out).toContain(example);
  });
});
