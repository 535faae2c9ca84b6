import { DesiredState, EventType, HostFailurePolicy, Vm, VmPhase, type VmSpec, type VmStatus } from "@berth/api";
import { BerthError, ErrorCode } from "@berth/core";
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { ExitCode } from "./exit-codes.js";
import { run } from "./program.js";
import { backoffMs, retryUntilAnswered } from "./retry.js";
import { closedPort, notLeader, rawStatus, recordingIo, stubPerTest, StubCluster } from "./stub-server.testkit.js";

// What the CLI does when the cluster is not answering cleanly: creates retried with one request
// id through a leader change or a lost answer, "outcome unknown" when no answer ever came, and
// --wait through failed attempts the controller retries.

const NOW = 1_700_000_000_000;
const SIZE = ["--vcpus", "2", "--memory", "4GiB", "--disk", "20GiB"];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function vm(name: string, phase: VmPhase, status: Partial<VmStatus> = {}, extra: Partial<Vm> = {}): Vm {
  return Vm.fromPartial({
    id: `id-${name}`,
    spec: { name, resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 } },
    desiredState: DesiredState.DESIRED_STATE_RUNNING,
    hostId: "host-1",
    generation: 1,
    status: { phase, updatedAtMs: NOW - 1000, ...status },
    createdAtMs: NOW - 60_000,
    ...extra,
  });
}

/** A failed attempt the controller will retry: attempt `n`, next try `inMs` from NOW. */
const retrying = (name: string, n: number, inMs: number, message = "libvirtd is busy"): Vm =>
  vm(name, VmPhase.VM_PHASE_FAILED, {
    attempts: n,
    errorCode: "HYPERVISOR_UNAVAILABLE",
    message: `HYPERVISOR_UNAVAILABLE: ${message}`,
    nextAttemptAtMs: NOW + inMs,
    permanent: false,
    updatedAtMs: NOW + n,
  });

const stub = stubPerTest();

async function berth(controller: StubCluster | string, ...argv: string[]) {
  const io = recordingIo({}, NOW);
  const code = await run(["--insecure", "--controller", typeof controller === "string" ? controller : controller.address, ...argv], io);
  return { code, out: io.out, err: io.err };
}

/** A handler that fails with the given errors first, then answers with `answer`. */
function failingFirst<Req, Res>(errors: Error[], answer: (request: Req) => Res): (request: Req) => Res {
  let calls = 0;
  return (request) => {
    const error = errors[calls++];
    if (error) throw error;
    return answer(request);
  };
}

describe("vm create: retried with the same request id", () => {
  it("a CreateVm answered UNAVAILABLE then OK is retried with the same request_id", async () => {
    const s = await stub({
      createVm: failingFirst([new BerthError(ErrorCode.Unavailable, "the store did not answer")], (r) => ({
        vm: vm(r.spec?.name ?? "", VmPhase.VM_PHASE_PENDING, {}, { requestId: r.requestId }),
      })),
    });
    const r = await berth(s, "vm", "create", "web-1", ...SIZE);
    expect(r.code).toBe(ExitCode.Ok);
    const ids = s.requests("createVm").map((q) => q.requestId);
    expect(ids).toHaveLength(2);
    expect(ids[0]).toMatch(UUID);
    expect(ids[1]).toBe(ids[0]);
    expect(r.err).toMatch(/^vm create: controller .*: the store did not answer; retrying in \d\.\ds with the same request id\n$/);
    expect(r.out).toContain("web-1  PENDING");
  });

  it("retries NOT_LEADER without a known leader (an election under way) until a leader answers", async () => {
    const s = await stub({
      createVm: failingFirst(
        [
          new BerthError(ErrorCode.NotLeader, "no leader is elected yet; retry shortly"),
          new BerthError(ErrorCode.NotLeader, "no leader is elected yet; retry shortly"),
        ],
        (r) => ({ vm: vm(r.spec?.name ?? "", VmPhase.VM_PHASE_PENDING) }),
      ),
    });
    const r = await berth(s, "vm", "create", "web-1", ...SIZE);
    expect(r.code).toBe(ExitCode.Ok);
    expect(new Set(s.requests("createVm").map((q) => q.requestId)).size).toBe(1);
    expect(s.requests("createVm")).toHaveLength(3);
  });

  it("follows the berth-leader trailer with the same request id", async () => {
    const leader = await stub({ createVm: (r) => ({ vm: vm(r.spec?.name ?? "", VmPhase.VM_PHASE_PENDING) }) });
    const follower = await stub({
      createVm: () => {
        throw notLeader(leader.address);
      },
    });
    const r = await berth(follower, "vm", "create", "web-1", ...SIZE);
    expect(r.code).toBe(ExitCode.Ok);
    expect(leader.requests("createVm")[0]?.requestId).toBe(follower.requests("createVm")[0]?.requestId);
  });

  it("a call reset under it (Call cancelled) is retried, not reported as exit 1", async () => {
    const s = await stub({
      createVm: failingFirst([rawStatus(status.CANCELLED, "Call cancelled")], (r) => ({
        vm: vm(r.spec?.name ?? "", VmPhase.VM_PHASE_PENDING),
      })),
    });
    const r = await berth(s, "vm", "create", "web-1", ...SIZE);
    expect(r.code).toBe(ExitCode.Ok);
    expect(r.err).toContain("the call was cut off before an answer (Call cancelled); retrying in");
    expect(s.requests("createVm")).toHaveLength(2);
  });

  it("a leader that dies mid-call: the same request goes to the next controller, which answers", async () => {
    const next = await stub({ createVm: (r) => ({ vm: vm(r.spec?.name ?? "", VmPhase.VM_PHASE_PENDING) }) });
    const dying = await stub();
    dying.handlers.createVm = () => {
      setTimeout(() => dying.kill(), 20);
      return new Promise(() => {});
    };
    const r = await berth(`${dying.address},${next.address}`, "vm", "create", "web-1", ...SIZE);
    expect(r.code).toBe(ExitCode.Ok);
    expect(dying.requests("createVm")).toHaveLength(1);
    expect(next.requests("createVm")[0]?.requestId).toBe(dying.requests("createVm")[0]?.requestId);
    expect(r.out).toContain("web-1  PENDING");
  });

  it("a call that never answers ends as outcome unknown with the documented exit code", async () => {
    const s = await stub({ createVm: () => new Promise(() => {}) });
    const started = Date.now();
    const r = await berth(s, "--timeout", "0.2", "vm", "create", "web-1", ...SIZE, "--create-timeout", "1");
    expect(r.code).toBe(ExitCode.OutcomeUnknown);
    expect(ExitCode.OutcomeUnknown).toBe(9);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(r.err).toContain("error: outcome unknown: vm web-1 may have been created; check with: berth vm show web-1\n");
    const ids = s.requests("createVm").map((q) => q.requestId);
    expect(ids.length).toBeGreaterThanOrEqual(2);
    expect(new Set(ids).size).toBe(1);
    expect(r.err).toContain(`this command's request id: ${ids[0]}`);
    expect(r.out).toBe("");
  });

  it("outcome unknown also when the last attempt was refused but an earlier one got no answer", async () => {
    const s = await stub({
      createVm: failingFirst(
        [rawStatus(status.UNAVAILABLE, "Connection dropped"), ...Array.from({ length: 50 }, () => notLeaderNoAddress())],
        () => ({}),
      ),
    });
    const r = await berth(s, "vm", "create", "web-1", ...SIZE, "--create-timeout", "0.8");
    expect(r.code).toBe(ExitCode.OutcomeUnknown);
    expect(r.err).toContain("outcome unknown: vm web-1 may have been created");
  });

  it("no controller reachable at all: nothing was created, exit 5, not outcome unknown", async () => {
    const down = `127.0.0.1:${await closedPort()}`;
    const r = await berth(down, "vm", "create", "web-1", ...SIZE, "--create-timeout", "0.8");
    expect(r.code).toBe(ExitCode.Unavailable);
    expect(r.err).toContain("cannot connect");
    expect(r.err).toContain("nothing was created");
    expect(r.err).not.toContain("outcome unknown");
  });

  it("a busy leader (BUSY: shed before acting) is retried with backoff; given up, it says nothing was created", async () => {
    const busy = () => new BerthError(ErrorCode.Busy, "the controller is busy: 200 creates in flight (at most 200); nothing was written; retry with backoff");
    const s = await stub({
      createVm: failingFirst([busy(), busy()], (r) => ({ vm: vm(r.spec?.name ?? "", VmPhase.VM_PHASE_PENDING, {}, { requestId: r.requestId }) })),
    });
    const r = await berth(s, "vm", "create", "web-1", ...SIZE);
    expect(r.code).toBe(ExitCode.Ok);
    expect(s.requests("createVm")).toHaveLength(3);
    expect(r.err).toMatch(/the controller is busy: 200 creates in flight .*; retrying in \d\.\ds with the same request id/);
    const always = await stub({
      createVm: () => {
        throw busy();
      },
    });
    const given = await berth(always, "vm", "create", "web-2", ...SIZE, "--create-timeout", "1");
    expect(given.code).toBe(ExitCode.Unavailable);
    expect(given.err).toContain("nothing was created");
    expect(given.err).not.toContain("outcome unknown");
  });

  it("no room (RESOURCE_EXHAUSTED) is an answer: exit 4 at once, not retried", async () => {
    const s = await stub({
      createVm: () => {
        throw new BerthError(ErrorCode.ResourceExhausted, "no host can take vm web-1");
      },
    });
    const r = await berth(s, "vm", "create", "web-1", ...SIZE);
    expect(r.code).toBe(ExitCode.NoCapacity);
    expect(s.requests("createVm")).toHaveLength(1);
  });

  it("a transport RESOURCE_EXHAUSTED (a reset stream) is not 'no room': retried", async () => {
    const s = await stub({
      createVm: failingFirst([rawStatus(status.RESOURCE_EXHAUSTED, "Bandwidth exhausted or memory limit exceeded")], (r) => ({
        vm: vm(r.spec?.name ?? "", VmPhase.VM_PHASE_PENDING),
      })),
    });
    const r = await berth(s, "vm", "create", "web-1", ...SIZE);
    expect(r.code).toBe(ExitCode.Ok);
    expect(s.requests("createVm")).toHaveLength(2);
  });

  it("ALREADY_EXISTS after an unanswered attempt is success only if the VM carries this request id", async () => {
    let calls = 0;
    const s = await stub({
      createVm: () => {
        calls += 1;
        if (calls === 1) return new Promise(() => {}); // the answer is lost
        throw new BerthError(ErrorCode.AlreadyExists, "vm web-1 already exists");
      },
      getVm: () => ({ vm: vm("web-1", VmPhase.VM_PHASE_PENDING, {}, { requestId: s.requests("createVm")[0]?.requestId ?? "" }) }),
    });
    const mine = await berth(s, "--timeout", "0.2", "vm", "create", "web-1", ...SIZE);
    expect(mine.code).toBe(ExitCode.Ok);
    expect(mine.out).toContain("web-1  PENDING");

    calls = 0;
    const other = await stub({
      createVm: () => {
        calls += 1;
        if (calls === 1) return new Promise(() => {});
        throw new BerthError(ErrorCode.AlreadyExists, "vm web-1 already exists");
      },
      getVm: () => ({ vm: vm("web-1", VmPhase.VM_PHASE_RUNNING, {}, { requestId: "someone-else" }) }),
    });
    const theirs = await berth(other, "--timeout", "0.2", "vm", "create", "web-1", ...SIZE);
    expect(theirs.code).toBe(ExitCode.Conflict);
    expect(theirs.err).toContain("error: vm web-1 already exists");
  });

  it("ALREADY_EXISTS at the first attempt is a conflict (exit 6), no GetVm", async () => {
    const s = await stub({
      createVm: () => {
        throw new BerthError(ErrorCode.AlreadyExists, "vm web-1 already exists");
      },
    });
    const r = await berth(s, "vm", "create", "web-1", ...SIZE);
    expect(r.code).toBe(ExitCode.Conflict);
    expect(s.requests("getVm")).toEqual([]);
  });

  it("--count: CreateVms is retried with the same request id; outcome unknown names the gang", async () => {
    const s = await stub({
      createVms: failingFirst([new BerthError(ErrorCode.Unavailable, "store unavailable")], (r: { specs: VmSpec[] }) => ({
        vms: r.specs.map((spec) => vm(spec.name, VmPhase.VM_PHASE_PENDING)),
      })),
    });
    const r = await berth(s, "vm", "create", "web", ...SIZE, "--count", "2");
    expect(r.code).toBe(ExitCode.Ok);
    const ids = s.requests("createVms").map((q) => q.requestId);
    expect(ids).toHaveLength(2);
    expect(ids[0]).toMatch(UUID);
    expect(ids[1]).toBe(ids[0]);

    const silent = await stub({ createVms: () => new Promise(() => {}) });
    const lost = await berth(silent, "--timeout", "0.2", "vm", "create", "web", ...SIZE, "--count", "3", "--create-timeout", "0.6");
    expect(lost.code).toBe(ExitCode.OutcomeUnknown);
    expect(lost.err).toContain("outcome unknown: vms web-1 ... web-3 (all or none) may have been created; check with: berth vm show web-1");
  });

  it("each invocation has its own request id", async () => {
    const s = await stub({ createVm: (r) => ({ vm: vm(r.spec?.name ?? "", VmPhase.VM_PHASE_PENDING) }) });
    await berth(s, "vm", "create", "web-1", ...SIZE);
    await berth(s, "vm", "create", "web-2", ...SIZE);
    const [a, b] = s.requests("createVm").map((q) => q.requestId);
    expect(a).not.toBe(b);
  });

  it("rejects a bad --create-timeout locally", async () => {
    const s = await stub();
    const r = await berth(s, "vm", "create", "web-1", ...SIZE, "--create-timeout", "soon");
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain("--create-timeout: 'soon' is not a number of seconds");
    expect(s.calls).toEqual([]);
  });
});

function notLeaderNoAddress(): BerthError {
  return new BerthError(ErrorCode.NotLeader, "no leader is elected yet; retry shortly");
}

describe("other verbs when a call is cut off", () => {
  it("vm show: a reset call is exit 5 with what happened, not 'Call cancelled' exit 1", async () => {
    const s = await stub({
      getVm: () => {
        throw rawStatus(status.CANCELLED, "Call cancelled");
      },
    });
    const r = await berth(s, "vm", "show", "web-1");
    expect(r.code).toBe(ExitCode.Unavailable);
    expect(r.err).toBe(`error: controller ${s.address}: the call was cut off before an answer (Call cancelled)\n`);
  });

  it("a start cut off is not sent to the next controller (it is not known to be safe to repeat)", async () => {
    const b = await stub({ startVm: (r) => ({ vm: vm(r.name, VmPhase.VM_PHASE_STOPPED) }) });
    const a = await stub({
      startVm: () => {
        throw rawStatus(status.INTERNAL, "Received RST_STREAM with code 2 (Internal server error)");
      },
    });
    const r = await berth(`${a.address},${b.address}`, "vm", "start", "web-1");
    expect(r.code).toBe(ExitCode.Unavailable);
    expect(b.calls).toEqual([]);
  });

  it("an RPC the controller does not know says so (an older controller)", async () => {
    const s = await stub();
    const r = await berth(s, "vm", "retry", "web-1");
    expect(r.code).toBe(ExitCode.Error);
    expect(r.err).toContain("the controller does not implement this call");
  });
});

describe("retryUntilAnswered", () => {
  it("backs off exponentially with jitter, capped", () => {
    expect(backoffMs(1, () => 0)).toBe(125);
    expect(backoffMs(1, () => 1)).toBe(250);
    expect(backoffMs(3, () => 1)).toBe(1000);
    expect(backoffMs(30, () => 0.5)).toBe(3000);
  });

  it("stops at the deadline and says whether an attempt went unanswered", async () => {
    const outcome = await retryUntilAnswered(
      () => Promise.reject(new BerthError(ErrorCode.Unavailable, "nobody")),
      { deadline: new Date(Date.now() + 300), initialDelayMs: 50 },
    );
    expect(outcome).toMatchObject({ ok: false, unanswered: false, exhausted: true });
    expect(outcome.attempts).toBeGreaterThan(1);
  });

  it("does not retry a verdict", async () => {
    let calls = 0;
    const outcome = await retryUntilAnswered(
      () => {
        calls += 1;
        return Promise.reject(new BerthError(ErrorCode.InvalidArgument, "spec.name: bad"));
      },
      { deadline: new Date(Date.now() + 5000) },
    );
    expect(calls).toBe(1);
    expect(outcome).toMatchObject({ ok: false, exhausted: false, attempts: 1 });
  });
});

describe("--wait through failed attempts the controller retries", () => {
  it("a retryable FAILED then RUNNING exits 0, one progress line per new attempt", async () => {
    const s = await stub({
      createVm: () => ({ vm: vm("web-1", VmPhase.VM_PHASE_PENDING) }),
      watchEvents: (_req, call) => {
        const events = [retrying("web-1", 1, 4000), retrying("web-1", 1, 4000), retrying("web-1", 2, 8000), vm("web-1", VmPhase.VM_PHASE_RUNNING)];
        events.forEach((v, i) =>
          setTimeout(() => call.write({ type: EventType.EVENT_TYPE_PUT, revision: 2 + i, object: { $case: "vm", value: v } }), 20 * (i + 1)),
        );
      },
    });
    const r = await berth(s, "vm", "create", "web-1", ...SIZE, "--wait");
    expect(r.code).toBe(ExitCode.Ok);
    expect(r.out).toContain("web-1  RUNNING");
    const progress = r.err.split("\n").filter((l) => l.includes("attempt"));
    expect(progress).toEqual([
      "vm web-1: attempt 1 failed: HYPERVISOR_UNAVAILABLE: libvirtd is busy; next try in 4s",
      "vm web-1: attempt 2 failed: HYPERVISOR_UNAVAILABLE: libvirtd is busy; next try in 8s",
    ]);
  });

  it("a permanent FAILED exits 7 with the retry hint", async () => {
    const permanent = vm("web-1", VmPhase.VM_PHASE_FAILED, {
      attempts: 1,
      errorCode: "INVALID_ARGUMENT",
      message: "INVALID_ARGUMENT: disk image missing",
      permanent: true,
      updatedAtMs: NOW,
    });
    const s = await stub({
      createVm: () => ({ vm: vm("web-1", VmPhase.VM_PHASE_PENDING) }),
      watchEvents: (_req, call) => {
        setTimeout(() => call.write({ type: EventType.EVENT_TYPE_PUT, revision: 2, object: { $case: "vm", value: retrying("web-1", 1, 2000) } }), 20);
        setTimeout(() => call.write({ type: EventType.EVENT_TYPE_PUT, revision: 3, object: { $case: "vm", value: permanent } }), 40);
      },
    });
    const r = await berth(s, "vm", "create", "web-1", ...SIZE, "--wait");
    expect(r.code).toBe(ExitCode.VmFailed);
    expect(r.err).toContain("vm web-1: attempt 1 failed: HYPERVISOR_UNAVAILABLE: libvirtd is busy; next try in 2s\n");
    expect(r.err).toContain(
      "error: vm web-1 failed: INVALID_ARGUMENT: disk image missing; permanent: not retried\n" +
        "  once the cause is fixed, try again with: berth vm retry web-1\n",
    );
    expect(r.out).toContain("web-1  FAILED");
  });

  it("times out (exit 8) naming the last failed attempt", async () => {
    const s = await stub({
      createVm: () => ({ vm: vm("web-1", VmPhase.VM_PHASE_PENDING) }),
      watchEvents: (_req, call) => {
        call.write({ type: EventType.EVENT_TYPE_PUT, revision: 2, object: { $case: "vm", value: retrying("web-1", 3, 30_000) } });
      },
    });
    const r = await berth(s, "vm", "create", "web-1", ...SIZE, "--wait", "--wait-timeout", "0.3");
    expect(r.code).toBe(ExitCode.WaitTimeout);
    expect(r.err).toContain("(last phase: FAILED, attempt 3: HYPERVISOR_UNAVAILABLE: libvirtd is busy)");
  });

  it("vm start --wait and vm stop --wait wait through retries too", async () => {
    const stopped = vm("web-1", VmPhase.VM_PHASE_STOPPED, {}, { desiredState: DesiredState.DESIRED_STATE_STOPPED });
    const s = await stub({
      startVm: () => ({ vm: stopped }),
      stopVm: () => ({ vm: vm("web-1", VmPhase.VM_PHASE_RUNNING, {}, { desiredState: DesiredState.DESIRED_STATE_STOPPED }) }),
    });
    s.handlers.watchEvents = (_req, call) => {
      const end = s.requests("stopVm").length > 0 ? stopped : vm("web-1", VmPhase.VM_PHASE_RUNNING);
      setTimeout(() => call.write({ type: EventType.EVENT_TYPE_PUT, revision: 2, object: { $case: "vm", value: retrying("web-1", 1, 1000) } }), 20);
      setTimeout(() => call.write({ type: EventType.EVENT_TYPE_PUT, revision: 3, object: { $case: "vm", value: end } }), 40);
    };
    const started = await berth(s, "vm", "start", "web-1", "--wait");
    expect(started.code).toBe(ExitCode.Ok);
    expect(started.err).toContain("attempt 1 failed");
    const stop = await berth(s, "vm", "stop", "web-1", "--wait");
    expect(stop.code).toBe(ExitCode.Ok);
    expect(stop.out).toContain("web-1  STOPPED");
  });

  it("--count --wait: a VM whose attempt failed and is retried does not end the gang's wait", async () => {
    const s = await stub({
      createVms: (r) => ({ vms: r.specs.map((spec) => vm(spec.name, VmPhase.VM_PHASE_PENDING)) }),
      watchEvents: (_req, call) => {
        const events = [retrying("web-2", 1, 1000), vm("web-1", VmPhase.VM_PHASE_RUNNING), vm("web-2", VmPhase.VM_PHASE_RUNNING)];
        events.forEach((v, i) =>
          setTimeout(() => call.write({ type: EventType.EVENT_TYPE_PUT, revision: 2 + i, object: { $case: "vm", value: v } }), 20 * (i + 1)),
        );
      },
    });
    const r = await berth(s, "vm", "create", "web", ...SIZE, "--count", "2", "--wait");
    expect(r.code).toBe(ExitCode.Ok);
    expect(r.err).toContain("vm web-2: attempt 1 failed: HYPERVISOR_UNAVAILABLE: libvirtd is busy; next try in 1s");
  });
});

describe("vm retry", () => {
  it("calls RetryVm and prints the VM", async () => {
    const s = await stub({ retryVm: (r) => ({ vm: vm(r.name, VmPhase.VM_PHASE_FAILED, {}, { generation: 2 }) }) });
    const r = await berth(s, "vm", "retry", "web-1");
    expect(r.code).toBe(ExitCode.Ok);
    expect(s.requests("retryVm")).toEqual([{ name: "web-1" }]);
    expect(r.out).toContain("web-1  FAILED");
    const json = await berth(s, "-o", "json", "vm", "retry", "web-1");
    expect(JSON.parse(json.out)).toMatchObject({ spec: { name: "web-1" }, generation: 2 });
  });

  it("--wait waits for the desired state's phase", async () => {
    const s = await stub({
      retryVm: (r) => ({ vm: vm(r.name, VmPhase.VM_PHASE_FAILED, { permanent: true, attempts: 1, errorCode: "NOT_FOUND", updatedAtMs: NOW - 5000 }, { generation: 2 }) }),
      watchEvents: (_req, call) => {
        setTimeout(() => call.write({ type: EventType.EVENT_TYPE_PUT, revision: 2, object: { $case: "vm", value: vm("web-1", VmPhase.VM_PHASE_RUNNING) } }), 30);
      },
    });
    const r = await berth(s, "vm", "retry", "web-1", "--wait");
    expect(r.code).toBe(ExitCode.Ok);
    expect(r.out).toContain("web-1  RUNNING");
  });

  it("NOT_FOUND is exit 3; a bad name exit 2 without a call", async () => {
    const s = await stub({
      retryVm: (r) => {
        throw new BerthError(ErrorCode.NotFound, `vm ${r.name} not found`);
      },
    });
    expect((await berth(s, "vm", "retry", "nope")).code).toBe(ExitCode.NotFound);
    const bad = await berth(s, "vm", "retry", "Bad_Name");
    expect(bad.code).toBe(ExitCode.Usage);
    expect(s.requests("retryVm")).toHaveLength(1);
  });
});

describe("vm show and --on-host-failure", () => {
  it("vm show: attempts, last error, next try, permanent, policy, request id", async () => {
    const s = await stub({
      getVm: (r) =>
        r.name === "web-1"
          ? { vm: { ...retrying("web-1", 3, 90_000), requestId: "0b6f3c1e-7d4a-4c1b-9a63-2f0e8d1c5b7a" } }
          : {
              vm: vm(
                r.name,
                VmPhase.VM_PHASE_FAILED,
                { attempts: 1, errorCode: "INVALID_ARGUMENT", message: "INVALID_ARGUMENT: bad image", permanent: true },
                { spec: { name: r.name, labels: {}, requiredHostLabels: {}, forbiddenHostLabels: {}, pinnedHosts: [], image: "", networks: [], volumes: [], group: "", onHostFailure: HostFailurePolicy.HOST_FAILURE_POLICY_RESTART } },
              ),
            },
    });
    const retryingVm = await berth(s, "vm", "show", "web-1");
    expect(retryingVm.out).toContain("Attempts:         3 failed in a row\n");
    expect(retryingVm.out).toContain("Last error:       HYPERVISOR_UNAVAILABLE\n");
    expect(retryingVm.out).toContain("Next try:         in 1m30s\n");
    expect(retryingVm.out).toContain("On host failure:  - (the cluster's default)\n");
    expect(retryingVm.out).toContain("Request ID:       0b6f3c1e-7d4a-4c1b-9a63-2f0e8d1c5b7a\n");
    const failed = await berth(s, "vm", "show", "db-1");
    expect(failed.out).toContain("Next try:         none: permanent (fix the cause, then berth vm retry db-1)\n");
    expect(failed.out).toContain("On host failure:  restart\n");
  });

  it("vm list stays compact", async () => {
    const s = await stub({ listVms: () => ({ vms: [retrying("web-1", 3, 1000)], nextPageToken: "" }) });
    const r = await berth(s, "vm", "list");
    expect(r.out.split("\n")[0]).toBe("NAME   PHASE   DESIRED  HOST    VCPUS   MEMORY  DISK    AGE");
  });

  it.each([
    ["restart", HostFailurePolicy.HOST_FAILURE_POLICY_RESTART],
    ["keep", HostFailurePolicy.HOST_FAILURE_POLICY_KEEP],
  ])("vm create --on-host-failure %s sends it (every VM of a --count)", async (flag, policy) => {
    const s = await stub({
      createVm: (r) => ({ vm: vm(r.spec?.name ?? "", VmPhase.VM_PHASE_PENDING) }),
      createVms: (r) => ({ vms: r.specs.map((spec) => vm(spec.name, VmPhase.VM_PHASE_PENDING)) }),
    });
    expect((await berth(s, "vm", "create", "web-1", ...SIZE, "--on-host-failure", flag)).code).toBe(0);
    expect(s.requests("createVm")[0]?.spec?.onHostFailure).toBe(policy);
    expect((await berth(s, "vm", "create", "web", ...SIZE, "--count", "2", "--on-host-failure", flag)).code).toBe(0);
    expect(s.requests("createVms")[0]?.specs.map((x) => x.onHostFailure)).toEqual([policy, policy]);
  });

  it("vm create --on-host-failure with another value is exit 2 without a call", async () => {
    const s = await stub();
    const r = await berth(s, "vm", "create", "web-1", ...SIZE, "--on-host-failure", "migrate");
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain("--on-host-failure");
    expect(s.calls).toEqual([]);
  });
});
