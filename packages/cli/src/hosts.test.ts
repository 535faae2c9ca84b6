import {
  ClusterConfig,
  DesiredState,
  DomainState,
  DrainDeadlineAction,
  DrainPhase,
  DrainStatus,
  GetClusterResponse,
  Host,
  HostFailurePolicy,
  HostState,
  OrphanDomain,
  Vm,
  VmPhase,
} from "@berth/api";
import { BerthError, ErrorCode } from "@berth/core";
import { describe, expect, it } from "vitest";
import { ExitCode } from "./exit-codes.js";
import { run } from "./program.js";
import { recordingIo, stubPerTest, StubCluster, type TerminalScript } from "./stub-server.testkit.js";

// Host failure handling (states, fencing, confirm-down), orphans, and `cluster show`.

const NOW = 1_700_000_000_000;
const ORPHAN_ID = "0b6f3c1e-7d4a-4c1b-9a63-2f0e8d1c5b7a";

const orphan = (vmId: string, name: string): OrphanDomain =>
  OrphanDomain.fromPartial({ vmId, name, state: DomainState.DOMAIN_STATE_RUNNING, resources: { vcpus: 1, memoryMib: 1024, diskGib: 10 } });

const host = (id: string, extra: Partial<Host> = {}): Host =>
  Host.fromPartial({
    id,
    capacity: { vcpus: 16, memoryMib: 65536, diskGib: 1024 },
    // As the controller answers it under the default ratios and reserve (4x vCPU, 1 GiB memory held back).
    allocatable: { vcpus: 64, memoryMib: 64512, diskGib: 1024 },
    state: HostState.HOST_STATE_READY,
    lastSeenMs: NOW - 2000,
    allocated: { vcpus: 2, memoryMib: 4096, diskGib: 20 },
    driver: "fake",
    ...extra,
  });

const vmOn = (name: string, hostId: string, policy = HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED): Vm =>
  Vm.fromPartial({
    id: `id-${name}`,
    spec: { name, resources: { vcpus: 1, memoryMib: 1024, diskGib: 10 }, onHostFailure: policy },
    desiredState: DesiredState.DESIRED_STATE_RUNNING,
    hostId,
    status: { phase: VmPhase.VM_PHASE_UNKNOWN },
  });

const stub = stubPerTest();

async function berth(s: StubCluster, terminal: TerminalScript, ...argv: string[]) {
  const io = recordingIo({}, NOW, terminal);
  const code = await run(["--insecure", "--controller", s.address, ...argv], io);
  return { code, out: io.out, err: io.err, questions: io.questions };
}
const script: TerminalScript = {};

describe("host list and host show", () => {
  it("host list: the new states with badges; an ORPHANS column only when some host has orphans", async () => {
    const hosts = [
      host("host-1", { hypervisor: { available: false, message: "down" } }),
      host("host-2", { state: HostState.HOST_STATE_SUSPECT, orphans: [orphan(ORPHAN_ID, "old-web")] }),
      host("host-3", { state: HostState.HOST_STATE_DOWN, cordoned: true }),
      host("host-4", { state: HostState.HOST_STATE_FENCED }),
      host("host-5", { state: HostState.HOST_STATE_DISCONNECTED }),
    ];
    const s = await stub({ listHosts: () => ({ hosts }) });
    const r = await berth(s, script, "host", "list");
    expect(r.code).toBe(0);
    expect(r.out).toBe(
      "ID      STATE                  ORPHANS  CPU (ALLOC/ALLOCATABLE)  MEMORY (ALLOC/ALLOCATABLE)  DISK (ALLOC/ALLOCATABLE)  LAST SEEN\n" +
        "host-1  READY,HYPERVISOR-DOWN  -        2/64 (3%)                4 GiB/63 GiB (6%)           20 GiB/1 TiB (2%)         2s\n" +
        "host-2  SUSPECT                1        2/64 (3%)                4 GiB/63 GiB (6%)           20 GiB/1 TiB (2%)         2s\n" +
        "host-3  DOWN,CORDONED          -        2/64 (3%)                4 GiB/63 GiB (6%)           20 GiB/1 TiB (2%)         2s\n" +
        "host-4  FENCED                 -        2/64 (3%)                4 GiB/63 GiB (6%)           20 GiB/1 TiB (2%)         2s\n" +
        "host-5  SUSPECT                -        2/64 (3%)                4 GiB/63 GiB (6%)           20 GiB/1 TiB (2%)         2s\n",
    );
    s.handlers.listHosts = () => ({ hosts: [host("host-1")] });
    expect((await berth(s, script, "host", "list")).out.split("\n")[0]).not.toContain("ORPHANS");
  });

  it("host show: state and since when, the fence deadline while silent, confirmed down, the orphans", async () => {
    const s = await stub({
      getHost: (r) => ({
        host:
          r.id === "host-2"
            ? host("host-2", {
                state: HostState.HOST_STATE_DOWN,
                stateSinceMs: NOW - 90_000,
                lastSeenMs: NOW - 100_000,
                fenceDeadlineMs: NOW + 25_000,
                orphans: [orphan(ORPHAN_ID, "old-web"), orphan("9d2e", "")],
              })
            : host(r.id, { state: HostState.HOST_STATE_FENCED, stateSinceMs: NOW - 5000, fenceDeadlineMs: NOW - 5000, confirmedDown: true }),
      }),
    });
    const silent = await berth(s, script, "host", "show", "host-2");
    expect(silent.code).toBe(0);
    expect(silent.out).toMatch(/^State: +DOWN \(for 1m30s\)$/m);
    expect(silent.out).toMatch(/^Fence deadline: +in 25s$/m);
    expect(silent.out).not.toContain("Confirmed down");
    // Aligned to the value column, whatever width the longest key gives it.
    expect(silent.out).toMatch(
      new RegExp(`^Orphans: +${ORPHAN_ID}  old-web  RUNNING  1 vCPU, 1 GiB memory, 10 GiB disk\n {10,}9d2e  -  RUNNING  1 vCPU, 1 GiB memory, 10 GiB disk$`, "m"),
    );
    const fenced = await berth(s, script, "host", "show", "host-9");
    expect(fenced.out).toMatch(/^State: +FENCED \(for 5s\)$/m);
    expect(fenced.out).toMatch(/^Fence deadline: +passed 5s ago$/m);
    expect(fenced.out).toMatch(/^Confirmed down: +yes \(berth host confirm-down\)$/m);
    expect(fenced.out).toMatch(/^Orphans: +-$/m);
  });

  it("host show of a READY host has no fencing lines", async () => {
    const s = await stub({ getHost: (r) => ({ host: host(r.id, { stateSinceMs: NOW - 3_600_000 }) }) });
    const r = await berth(s, script, "host", "show", "host-1");
    expect(r.out).toMatch(/^State: +READY \(for 1h\)$/m);
    expect(r.out).not.toContain("Fence deadline");
  });
});

describe("host orphans", () => {
  const withOrphans = host("host-1", { orphans: [orphan(ORPHAN_ID, "web-old"), orphan("1111", "db-old")] });

  it("lists a host's orphans, sorted by name; -o json is an array", async () => {
    const s = await stub({ getHost: () => ({ host: withOrphans }) });
    const r = await berth(s, script, "host", "orphans", "host-1");
    expect(r.code).toBe(0);
    expect(r.out).toBe(
      "VM ID                                 NAME     STATE    VCPUS   MEMORY  DISK\n" +
        "1111                                  db-old   RUNNING  1 vCPU  1 GiB   10 GiB\n" +
        `${ORPHAN_ID}  web-old  RUNNING  1 vCPU  1 GiB   10 GiB\n`,
    );
    expect(s.requests("getHost")).toEqual([{ id: "host-1" }]);
    const json = await berth(s, script, "-o", "json", "host", "orphans", "host-1");
    expect(JSON.parse(json.out)).toEqual([OrphanDomain.toJSON(orphan("1111", "db-old")), OrphanDomain.toJSON(orphan(ORPHAN_ID, "web-old"))]);
  });

  it("without HOST is a usage error", async () => {
    const s = await stub();
    const r = await berth(s, script, "host", "orphans");
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain("HOST is required");
  });

  it("delete refuses without --yes when not a TTY: exit 2, nothing sent", async () => {
    const s = await stub({ deleteOrphan: () => ({}) });
    const r = await berth(s, { interactive: false }, "host", "orphans", "delete", "host-1", ORPHAN_ID);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain("refusing without --yes");
    expect(s.requests("deleteOrphan")).toEqual([]);
  });

  it("delete --yes sends DeleteOrphan and says so", async () => {
    const s = await stub({ deleteOrphan: () => ({}) });
    const r = await berth(s, script, "host", "orphans", "delete", "host-1", ORPHAN_ID, "--yes");
    expect(r.code).toBe(0);
    expect(s.requests("deleteOrphan")).toEqual([{ hostId: "host-1", vmId: ORPHAN_ID }]);
    expect(r.out).toBe(`orphan ${ORPHAN_ID} deleted from host-1\n`);
  });

  it("delete on a terminal asks, naming the domain; only yes goes ahead", async () => {
    const s = await stub({ getHost: () => ({ host: withOrphans }), deleteOrphan: () => ({}) });
    const no = await berth(s, { interactive: true, answers: ["n"] }, "host", "orphans", "delete", "host-1", ORPHAN_ID);
    expect(no.code).toBe(ExitCode.Error);
    expect(no.err).toContain("aborted; nothing was changed");
    expect(no.questions[0]).toContain(`destroys orphan domain ${ORPHAN_ID} on host-1 (web-old, RUNNING, 1 vCPU, 1 GiB memory, 10 GiB disk)`);
    expect(no.questions[0]).toMatch(/Continue\? \[y\/N\] $/);
    expect(s.requests("deleteOrphan")).toEqual([]);
    const yes = await berth(s, { interactive: true, answers: ["yes"] }, "host", "orphans", "delete", "host-1", ORPHAN_ID);
    expect(yes.code).toBe(0);
    expect(s.requests("deleteOrphan")).toHaveLength(1);
  });

  it("delete of an unknown orphan is the controller's NOT_FOUND: exit 3", async () => {
    const s = await stub({
      deleteOrphan: () => {
        throw new BerthError(ErrorCode.NotFound, "orphan x on host-1 not found");
      },
    });
    const r = await berth(s, script, "host", "orphans", "delete", "host-1", "x", "--yes");
    expect(r.code).toBe(ExitCode.NotFound);
  });

  it("adopt --name sends AdoptOrphan and prints the new VM", async () => {
    const s = await stub({ adoptOrphan: (r) => ({ vm: vmOn(r.name, r.hostId) }) });
    const r = await berth(s, script, "host", "orphans", "adopt", "host-1", ORPHAN_ID, "--name", "web-old");
    expect(r.code).toBe(0);
    expect(s.requests("adoptOrphan")).toEqual([{ hostId: "host-1", vmId: ORPHAN_ID, name: "web-old" }]);
    expect(r.out).toContain("web-old  UNKNOWN");
  });

  it("adopt needs a valid --name, checked before any call", async () => {
    const s = await stub();
    const missing = await berth(s, script, "host", "orphans", "adopt", "host-1", ORPHAN_ID);
    expect(missing.code).toBe(ExitCode.Usage);
    expect(missing.err).toContain("--name");
    const bad = await berth(s, script, "host", "orphans", "adopt", "host-1", ORPHAN_ID, "--name", "Web_Old");
    expect(bad.code).toBe(ExitCode.Usage);
    expect(bad.err).toContain("--name: 'Web_Old' must be");
    expect(s.calls).toEqual([]);
  });
});

describe("host confirm-down", () => {
  it("refuses without --yes when not a TTY: exit 2, nothing sent", async () => {
    const s = await stub({ confirmHostDown: (r) => ({ host: host(r.hostId) }) });
    const r = await berth(s, { interactive: false }, "host", "confirm-down", "host-3");
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toBe("error: host confirm-down: refusing without --yes: standard input is not a terminal, so nobody can confirm\n");
    expect(s.calls).toEqual([]);
  });

  it("--yes sends ConfirmHostDown and prints the host", async () => {
    const s = await stub({
      confirmHostDown: (r) => ({ host: host(r.hostId, { state: HostState.HOST_STATE_FENCED, confirmedDown: true }) }),
    });
    const r = await berth(s, script, "host", "confirm-down", "host-3", "--yes");
    expect(r.code).toBe(0);
    expect(s.requests("confirmHostDown")).toEqual([{ hostId: "host-3" }]);
    expect(r.out).toMatch(/^host-3 +FENCED /m);
  });

  it("on a terminal it says which VMs will be recreated elsewhere (own policy, else the cluster's default) and asks", async () => {
    const vms = [
      vmOn("web-1", "host-3"), // unset: the cluster's default, restart
      vmOn("db-1", "host-3", HostFailurePolicy.HOST_FAILURE_POLICY_KEEP),
      vmOn("api-1", "host-3", HostFailurePolicy.HOST_FAILURE_POLICY_RESTART),
    ];
    const s = await stub({
      getHost: (r) => ({ host: host(r.id, { state: HostState.HOST_STATE_SUSPECT, stateSinceMs: NOW - 120_000 }) }),
      listVms: () => ({ vms, nextPageToken: "" }),
      getClusterConfig: () => ({ config: ClusterConfig.fromPartial({ defaultOnHostFailure: HostFailurePolicy.HOST_FAILURE_POLICY_RESTART }) }),
      confirmHostDown: (r) => ({ host: host(r.hostId, { state: HostState.HOST_STATE_FENCED }) }),
    });
    const r = await berth(s, { interactive: true, answers: ["y"] }, "host", "confirm-down", "host-3");
    expect(r.code).toBe(0);
    const q = r.questions[0] ?? "";
    expect(q).toContain("host-3 is SUSPECT for 2m.");
    expect(q).toContain("recreated elsewhere (2): api-1, web-1");
    expect(q).toContain("left waiting for the host (1, keep): db-1");
    expect(q).toContain("only once host-3 is known to be powered off");
    expect(s.requests("listVms")[0]).toMatchObject({ hostId: "host-3" });
    expect(s.requests("confirmHostDown")).toHaveLength(1);
  });

  it("a connected host is refused by the controller: exit 6", async () => {
    const s = await stub({
      confirmHostDown: () => {
        throw new BerthError(ErrorCode.FailedPrecondition, "host host-1 is connected; confirm-down is for a host that is down");
      },
    });
    const r = await berth(s, script, "host", "confirm-down", "host-1", "--yes");
    expect(r.code).toBe(ExitCode.Conflict);
  });

  it("--help says what it does and when to use it", async () => {
    const io = recordingIo();
    expect(await run(["host", "confirm-down", "--help"], io)).toBe(0);
    expect(io.out).toContain("out-of-service taint");
    expect(io.out).toContain("known to be");
    expect(io.out).toContain("recreates every VM of the host whose");
    expect(io.out).toContain("--yes");
  });
});

describe("cluster show", () => {
  const cluster = GetClusterResponse.fromPartial({
    cluster: { id: "6f1c2a9e-0d3b-4e57-8a1f-3c2d1b0a9e8f", createdAtMs: NOW - 3 * 86_400_000 },
    leaderEpoch: 42,
    leaderId: "controller-a",
  });

  it("shows the id, when it was created, the leader and its epoch", async () => {
    const s = await stub({ getCluster: () => cluster });
    const r = await berth(s, script, "cluster", "show");
    expect(r.code).toBe(0);
    expect(r.out).toBe(
      "Cluster ID:    6f1c2a9e-0d3b-4e57-8a1f-3c2d1b0a9e8f\n" +
        `Created:       3d ago (${new Date(NOW - 3 * 86_400_000).toISOString()})\n` +
        "Leader:        controller-a\n" +
        "Leader epoch:  42\n" +
        `Answered by:   ${s.address}\n`,
    );
    const json = await berth(s, script, "-o", "json", "cluster", "show");
    expect(JSON.parse(json.out)).toEqual(GetClusterResponse.toJSON(cluster));
  });
});

describe("config: the cluster's default on-host-failure", () => {
  it("config set --default-on-host-failure restart changes only that", async () => {
    const current = ClusterConfig.fromPartial({ scheduler: { preset: "pack", seed: 3 } });
    const s = await stub({ getClusterConfig: () => ({ config: current }), updateClusterConfig: (r) => ({ config: r.config }) });
    const r = await berth(s, script, "config", "set", "--default-on-host-failure", "restart");
    expect(r.code).toBe(0);
    const sent = s.requests("updateClusterConfig")[0]?.config;
    expect(sent?.defaultOnHostFailure).toBe(HostFailurePolicy.HOST_FAILURE_POLICY_RESTART);
    expect(sent?.scheduler).toMatchObject({ preset: "pack", seed: 3 });
    expect(r.out).toContain("On host failure:   restart\n");
  });

  it("a --preset change keeps the default on-host-failure", async () => {
    const current = ClusterConfig.fromPartial({ defaultOnHostFailure: HostFailurePolicy.HOST_FAILURE_POLICY_RESTART });
    const s = await stub({ getClusterConfig: () => ({ config: current }), updateClusterConfig: (r) => ({ config: r.config }) });
    expect((await berth(s, script, "config", "set", "--preset", "pack")).code).toBe(0);
    expect(s.requests("updateClusterConfig")[0]?.config?.defaultOnHostFailure).toBe(HostFailurePolicy.HOST_FAILURE_POLICY_RESTART);
  });

  it("another value is exit 2 without a call", async () => {
    const s = await stub();
    const r = await berth(s, script, "config", "set", "--default-on-host-failure", "sometimes");
    expect(r.code).toBe(ExitCode.Usage);
    expect(s.calls).toEqual([]);
  });
});

describe("help", () => {
  it("--help documents exit code 9 and lists the new verbs", async () => {
    const io = recordingIo();
    expect(await run(["--help"], io)).toBe(0);
    expect(io.out).toContain("9  vm create, vm migrate: outcome unknown");
    expect(io.out).toMatch(/^ {2}cluster /m);
  });

  it.each([["vm", "retry"], ["vm", "create"], ["host", "orphans"], ["host", "orphans", "delete"], ["host", "orphans", "adopt"], ["host", "confirm-down"], ["cluster", "show"]])(
    "%s %s --help shows an example",
    async (...verb) => {
      const io = recordingIo();
      expect(await run([...verb, "--help"], io)).toBe(0);
      expect(io.out).toMatch(/Examples?:\n {2}berth /);
    },
  );

  it("vm create --help tells of the request id, --create-timeout and exit 9", async () => {
    const io = recordingIo();
    expect(await run(["vm", "create", "--help"], io)).toBe(0);
    expect(io.out).toContain("--create-timeout");
    expect(io.out).toContain("--on-host-failure");
    expect(io.out).toContain("exits 9");
  });
});

describe("host cordon, uncordon, drain", () => {
  const drain = (extra: Partial<DrainStatus> = {}): DrainStatus =>
    DrainStatus.fromPartial({ phase: DrainPhase.DRAIN_PHASE_DRAINING, requestedAtMs: NOW - 120_000, toMove: 4, ...extra });
  const draining = (extra: Partial<DrainStatus> = {}): Host => host("host-1", { cordoned: true, cordonReason: "drain", drain: drain(extra) });

  /** Answers GetHost with `states` in order, then the last one for ever. */
  const sequence = (states: Host[]) => {
    let i = 0;
    return () => ({ host: states[Math.min(i++, states.length - 1)] as Host });
  };

  it("host list: CORDONED, DRAINING, DRAINED, DRAIN-INCOMPLETE in STATE", async () => {
    const hosts = [
      host("host-1", { cordoned: true, cordonReason: "disk swap" }),
      host("host-2", { cordoned: true, drain: drain() }),
      host("host-3", { cordoned: true, drain: drain({ phase: DrainPhase.DRAIN_PHASE_DRAINED }) }),
      host("host-4", { cordoned: true, drain: drain({ phase: DrainPhase.DRAIN_PHASE_INCOMPLETE }) }),
      host("host-5", { state: HostState.HOST_STATE_SUSPECT, cordoned: true }),
    ];
    const s = await stub({ listHosts: () => ({ hosts }) });
    const r = await berth(s, script, "host", "list");
    expect(r.code).toBe(0);
    const states = r.out
      .split("\n")
      .slice(1, -1)
      .map((l) => l.split(/ +/).slice(0, 2).join(" "));
    expect(states).toEqual([
      "host-1 READY,CORDONED",
      "host-2 READY,DRAINING",
      "host-3 READY,DRAINED",
      "host-4 READY,DRAIN-INCOMPLETE",
      "host-5 SUSPECT,CORDONED",
    ]);
  });

  it("host show: the cordon reason and the drain's figures, deadline and message", async () => {
    const s = await stub({
      getHost: () => ({
        host: draining({ moved: 1, inFlight: 2, failed: 0, staying: 1, deadlineAtMs: NOW + 300_000, onDeadline: DrainDeadlineAction.DRAIN_DEADLINE_ACTION_STOP }),
      }),
    });
    const r = await berth(s, script, "host", "show", "host-1");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^State: +READY,DRAINING$/m);
    expect(r.out).toMatch(/^Cordoned: +yes: drain$/m);
    expect(r.out).toMatch(/^Drain: +DRAINING: moved 1\/4, 2 in flight, 0 failed, 1 staying; deadline in 5m, then stop; asked 2m ago$/m);
    s.handlers.getHost = () => ({
      host: draining({ phase: DrainPhase.DRAIN_PHASE_INCOMPLETE, moved: 3, failed: 1, finishedAtMs: NOW - 60_000, message: "web-4: no host can take it" }),
    });
    const ended = await berth(s, script, "host", "show", "host-1");
    expect(ended.out).toMatch(
      /^Drain: +INCOMPLETE: moved 3\/4, 0 in flight, 1 failed, 0 staying; asked 2m ago; ended 1m ago\n {10,}web-4: no host can take it$/m,
    );
    s.handlers.getHost = () => ({ host: host("host-1") });
    const plain = await berth(s, script, "host", "show", "host-1");
    expect(plain.out).not.toContain("Cordoned");
    expect(plain.out).not.toContain("Drain");
  });

  it("cordon sends the reason and prints the host; uncordon sends the id", async () => {
    const s = await stub({
      cordonHost: (r) => ({ host: host(r.hostId, { cordoned: true, cordonReason: r.reason }) }),
      uncordonHost: (r) => ({ host: host(r.hostId) }),
    });
    const r = await berth(s, script, "host", "cordon", "host-1", "--reason", "disk swap, ticket 4711");
    expect(r.code).toBe(0);
    expect(s.requests("cordonHost")).toEqual([{ hostId: "host-1", reason: "disk swap, ticket 4711" }]);
    expect(r.out).toMatch(/^host-1 +READY,CORDONED /m);
    expect((await berth(s, script, "host", "cordon", "host-2")).code).toBe(0);
    expect(s.requests("cordonHost")[1]).toEqual({ hostId: "host-2", reason: "" });
    const u = await berth(s, script, "host", "uncordon", "host-1");
    expect(u.code).toBe(0);
    expect(s.requests("uncordonHost")).toEqual([{ hostId: "host-1" }]);
    expect(u.out).toMatch(/^host-1 +READY /m);
    const json = await berth(s, script, "-o", "json", "host", "cordon", "host-1");
    expect(JSON.parse(json.out)).toEqual(Host.toJSON(host("host-1", { cordoned: true })));
  });

  it("an unknown host is the controller's NOT_FOUND: exit 3", async () => {
    const s = await stub({
      cordonHost: (r) => {
        throw new BerthError(ErrorCode.NotFound, `host ${r.hostId} not found`);
      },
    });
    const r = await berth(s, script, "host", "cordon", "host-9");
    expect(r.code).toBe(ExitCode.NotFound);
    expect(r.err).toBe("error: host host-9 not found\n");
  });

  it("drain sends the deadline in ms, the action and the reason", async () => {
    const s = await stub({ drainHost: () => ({ host: draining() }) });
    const r = await berth(s, script, "host", "drain", "host-1", "--deadline", "1h30m", "--on-deadline", "stop", "--reason", "kernel upgrade");
    expect(r.code).toBe(0);
    expect(s.requests("drainHost")).toEqual([
      { hostId: "host-1", deadlineMs: 5_400_000, onDeadline: DrainDeadlineAction.DRAIN_DEADLINE_ACTION_STOP, reason: "kernel upgrade" },
    ]);
    expect(r.out).toMatch(/^host-1 +READY,DRAINING /m);
    expect((await berth(s, script, "host", "drain", "host-2")).code).toBe(0);
    expect(s.requests("drainHost")[1]).toEqual({ hostId: "host-2", deadlineMs: 0, onDeadline: DrainDeadlineAction.DRAIN_DEADLINE_ACTION_UNSPECIFIED, reason: "" });
    expect((await berth(s, script, "host", "drain", "host-3", "--deadline", "10m", "--on-deadline", "leave")).code).toBe(0);
    expect(s.requests("drainHost")[2]).toMatchObject({ deadlineMs: 600_000, onDeadline: DrainDeadlineAction.DRAIN_DEADLINE_ACTION_LEAVE });
  });

  it.each([
    [["--deadline", "600"], "--deadline: '600' needs a unit"],
    [["--deadline", "10 minutes later"], "--deadline: '10 minutes later' is not a duration"],
    [["--deadline", "8d"], "--deadline: must be at most 7 days"],
    [["--deadline", "10m", "--on-deadline", "kill"], "--on-deadline"],
    [["--on-deadline", "stop"], "--on-deadline: needs --deadline"],
    [["--reason", "x".repeat(257)], "--reason: at most 256 characters"],
    [["--wait", "--wait-timeout", "-1"], "--wait-timeout"],
  ])("drain %j is a usage error, nothing sent", async (flags, message) => {
    const s = await stub({ drainHost: () => ({ host: draining() }) });
    const r = await berth(s, script, "host", "drain", "host-1", ...flags);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain(message);
    expect(s.calls).toEqual([]);
  });

  it("drain --wait: progress lines from Host.drain until DRAINED, exit 0", async () => {
    const s = await stub({
      drainHost: () => ({ host: draining() }),
      getHost: sequence([
        draining({ inFlight: 2 }),
        draining({ inFlight: 2 }), // no change: no new line
        draining({ moved: 2, inFlight: 2 }),
        draining({ moved: 4, staying: 1, phase: DrainPhase.DRAIN_PHASE_DRAINED }),
      ]),
    });
    const r = await berth(s, script, "host", "drain", "host-1", "--wait");
    expect(r.code).toBe(0);
    expect(r.err).toBe(
      "waiting up to 3600s for host host-1 to be drained...\n" +
        "drain of host-1: DRAINING, moved 0/4, 0 in flight, 0 failed, 0 staying\n" +
        "drain of host-1: DRAINING, moved 0/4, 2 in flight, 0 failed, 0 staying\n" +
        "drain of host-1: DRAINING, moved 2/4, 2 in flight, 0 failed, 0 staying\n" +
        "drain of host-1: DRAINED, moved 4/4, 0 in flight, 0 failed, 1 staying\n",
    );
    expect(s.requests("getHost").every((q) => q.id === "host-1")).toBe(true);
    expect(r.out).toMatch(/^host-1 +READY,DRAINED /m);
  });

  it("drain --wait on a terminal redraws the line in place", async () => {
    const s = await stub({
      drainHost: () => ({ host: draining() }),
      getHost: sequence([draining({ moved: 2 }), draining({ moved: 4, phase: DrainPhase.DRAIN_PHASE_DRAINED })]),
    });
    const r = await berth(s, { stderrIsTerminal: true }, "host", "drain", "host-1", "--wait");
    expect(r.code).toBe(0);
    expect(r.err).toContain("\r\u001b[2Kdrain of host-1: DRAINING, moved 2/4");
    expect(r.err.endsWith("\r\u001b[2Kdrain of host-1: DRAINED, moved 4/4, 0 in flight, 0 failed, 0 staying\n")).toBe(true);
  });

  it("drain --wait ending INCOMPLETE: exit 11, naming the VMs left on the host", async () => {
    const s = await stub({
      drainHost: () => ({ host: draining({ deadlineAtMs: NOW + 600_000 }) }),
      getHost: sequence([
        draining({ moved: 2, phase: DrainPhase.DRAIN_PHASE_INCOMPLETE, failed: 2, message: "deadline passed; 2 VMs left running" }),
      ]),
      listVms: () => ({
        vms: [
          Vm.fromPartial({ id: "a", spec: { name: "web-3" }, hostId: "host-1", status: { phase: VmPhase.VM_PHASE_RUNNING } }),
          Vm.fromPartial({ id: "b", spec: { name: "db-1" }, hostId: "host-1", status: { phase: VmPhase.VM_PHASE_STOPPED } }),
        ],
        nextPageToken: "",
      }),
    });
    const r = await berth(s, script, "host", "drain", "host-1", "--deadline", "10m", "--wait");
    expect(r.code).toBe(ExitCode.DrainIncomplete);
    expect(r.err).toContain("waiting up to 900s for host host-1 to be drained...\n"); // the deadline plus 5 minutes
    expect(r.err).toContain(
      "error: the drain of host host-1 ended INCOMPLETE: moved 2/4, 0 in flight, 2 failed, 0 staying; left on host-1: db-1 (STOPPED), web-3 (RUNNING); " +
        "deadline passed; 2 VMs left running\n  the host stays cordoned",
    );
    expect(s.requests("listVms")[0]).toMatchObject({ hostId: "host-1" });
    expect(r.out).toMatch(/^host-1 +READY,DRAIN-INCOMPLETE /m);
  });

  it("drain --wait when the drain is cancelled (uncordoned meanwhile): exit 11", async () => {
    const s = await stub({
      drainHost: () => ({ host: draining() }),
      getHost: sequence([host("host-1")]),
      listVms: () => ({ vms: [], nextPageToken: "" }),
    });
    const r = await berth(s, script, "host", "drain", "host-1", "--wait");
    expect(r.code).toBe(ExitCode.DrainIncomplete);
    expect(r.err).toContain("error: the drain of host host-1 was cancelled (the host was uncordoned); left on host-1: none\n");
  });

  it("drain --wait of a host with nothing to move ends at once", async () => {
    const s = await stub({ drainHost: () => ({ host: draining({ toMove: 0, phase: DrainPhase.DRAIN_PHASE_DRAINED }) }) });
    const r = await berth(s, script, "host", "drain", "host-1", "--wait");
    expect(r.code).toBe(0);
    expect(s.requests("getHost")).toEqual([]);
  });

  it("drain --wait times out with exit 8", async () => {
    const s = await stub({ drainHost: () => ({ host: draining() }), getHost: () => ({ host: draining({ moved: 1 }) }) });
    const r = await berth(s, script, "host", "drain", "host-1", "--wait", "--wait-timeout", "0.2");
    expect(r.code).toBe(ExitCode.WaitTimeout);
    expect(r.err).toContain("timed out after 0.2s waiting for host host-1 to be drained (last: DRAINING, moved 1/4");
  });

  it.each([["host cordon"], ["host uncordon"], ["host drain"]])("%s --help says what it does, with examples", async (words) => {
    const io = recordingIo();
    expect(await run([...words.split(" "), "--help"], io)).toBe(0);
    expect(io.out).toMatch(/Examples?:\n {2}berth /);
  });

  it("host drain --help tells of the deadline, its actions, --wait and exit 11", async () => {
    const io = recordingIo();
    expect(await run(["host", "drain", "--help"], io)).toBe(0);
    expect(io.out).toContain("--deadline <duration>");
    expect(io.out).toContain("--on-deadline <action>");
    expect(io.out).toContain("exit 11");
  });
});
