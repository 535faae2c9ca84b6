import { ClusterConfig, DesiredState, EventType, Host, HostFailurePolicy, HostState, Vm, VmPhase, VmSpec } from "@berth/api";
import { BerthError, ErrorCode, notFound } from "@berth/core";
import { describe, expect, it } from "vitest";
import { ExitCode } from "./exit-codes.js";
import { run } from "./program.js";
import { closedPort, notLeader, recordingIo, stubPerTest, StubCluster } from "./stub-server.testkit.js";

const NOW = 1_700_000_000_000;

function vm(name: string, phase: VmPhase, extra: Partial<Vm> = {}): Vm {
  return Vm.fromPartial({
    id: `id-${name}`,
    spec: { name, resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 }, labels: {} },
    desiredState: DesiredState.DESIRED_STATE_RUNNING,
    hostId: "host-1",
    generation: 1,
    status: { phase, updatedAtMs: NOW - 1000 },
    createdAtMs: NOW - 5 * 60_000,
    ...extra,
  });
}

const host = (id: string): Host =>
  Host.fromPartial({
    id,
    capacity: { vcpus: 16, memoryMib: 65536, diskGib: 1024 },
    // As the controller answers it under the default ratios and reserve (4x vCPU, 1 GiB memory held back).
    allocatable: { vcpus: 64, memoryMib: 64512, diskGib: 1024 },
    state: HostState.HOST_STATE_READY,
    bootId: "b",
    agentVersion: "0.1.0",
    lastSeenMs: NOW - 2000,
    allocated: { vcpus: 2, memoryMib: 4096, diskGib: 20 },
    usage: { vcpus: 1, memoryMib: 1024, diskGib: 20 },
    driver: "fake",
  });

const stub = stubPerTest();

async function berth(s: StubCluster | string, ...argv: string[]) {
  const io = recordingIo({}, NOW);
  const code = await run(["--insecure", "--controller", typeof s === "string" ? s : s.address, ...argv], io);
  return { code, out: io.out, err: io.err };
}

describe("vm create", () => {
  it("sends the spec from the flags and prints the VM as a table", async () => {
    const s = await stub({ createVm: (r) => ({ vm: vm(r.spec?.name ?? "", VmPhase.VM_PHASE_PENDING) }) });
    const r = await berth(s, "vm", "create", "web-1", "--vcpus", "2", "--memory", "4GiB", "--disk", "20GiB", "--label", "tier=web", "--label", "team=a");
    expect(r.err).toBe("");
    expect(r.code).toBe(ExitCode.Ok);
    expect(s.requests("createVm")[0]?.spec).toEqual({
      name: "web-1",
      resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 },
      labels: { tier: "web", team: "a" },
      group: "",
      requiredHostLabels: {},
      forbiddenHostLabels: {},
      pinnedHosts: [],
      onHostFailure: HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED, // unset: the cluster's default
      // No image (a blank disk), no NICs, no volumes, and no cloud-init seed (cloudInit unset).
      image: "",
      networks: [],
      volumes: [],
    });
    // A fresh idempotency key per invocation.
    expect(s.requests("createVm")[0]?.requestId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(r.out).toBe(
      "NAME   PHASE    DESIRED  HOST    VCPUS   MEMORY  DISK    AGE\n" +
        "web-1  PENDING  RUNNING  host-1  2 vCPU  4 GiB   20 GiB  5m\n",
    );
  });

  it("takes bare numbers as MiB for --memory and GiB for --disk", async () => {
    const s = await stub({ createVm: (r) => ({ vm: vm(r.spec?.name ?? "", VmPhase.VM_PHASE_PENDING) }) });
    const r = await berth(s, "vm", "create", "web-1", "--vcpus", "1", "--memory", "512", "--disk", "10");
    expect(r.code).toBe(0);
    expect(s.requests("createVm")[0]?.spec?.resources).toEqual({ vcpus: 1, memoryMib: 512, diskGib: 10 });
  });

  it("prints the VM's toJSON with -o json", async () => {
    const created = vm("web-1", VmPhase.VM_PHASE_PENDING);
    const s = await stub({ createVm: () => ({ vm: created }) });
    const r = await berth(s, "-o", "json", "vm", "create", "web-1", "--vcpus", "2", "--memory", "4GiB", "--disk", "20GiB");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual(Vm.toJSON(created));
  });

  it("accepts the global flags after the verb too", async () => {
    const created = vm("web-1", VmPhase.VM_PHASE_PENDING);
    const s = await stub({ createVm: () => ({ vm: created }) });
    const r = await run(
      ["vm", "create", "web-1", "--vcpus", "2", "--memory", "4GiB", "--disk", "20GiB", "-o", "json", "--controller", s.address, "--insecure"],
      recordingIo(),
    );
    expect(r).toBe(0);
    expect(s.requests("createVm")).toHaveLength(1);
  });

  it("prints RESOURCE_EXHAUSTED with the server's message and reasons, exit code 4", async () => {
    const s = await stub({
      createVm: () => {
        throw new BerthError(ErrorCode.ResourceExhausted, "no host can take vm web-1", {
          reasons: ["host-1: memory: needs 4 GiB, 1 GiB free", "host-2: disconnected"],
        });
      },
    });
    const r = await berth(s, "vm", "create", "web-1", "--vcpus", "2", "--memory", "4GiB", "--disk", "20GiB");
    expect(r.code).toBe(ExitCode.NoCapacity);
    expect(r.out).toBe("");
    expect(r.err).toBe("error: no host can take vm web-1:\n  host-1: memory: needs 4 GiB, 1 GiB free\n  host-2: disconnected\n");
  });

  it("prints INVALID_ARGUMENT from the controller, exit code 2", async () => {
    const s = await stub({
      createVm: () => {
        throw new BerthError(ErrorCode.InvalidArgument, "spec.labels[x]: reserved label key", { field: "spec.labels[x]" });
      },
    });
    const r = await berth(s, "vm", "create", "web-1", "--vcpus", "2", "--memory", "4GiB", "--disk", "20GiB", "--label", "x=1");
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toBe("error: spec.labels[x]: reserved label key\n");
  });

  it("prints ALREADY_EXISTS, exit code 6", async () => {
    const s = await stub({
      createVm: () => {
        throw new BerthError(ErrorCode.AlreadyExists, "vm web-1 already exists");
      },
    });
    const r = await berth(s, "vm", "create", "web-1", "--vcpus", "2", "--memory", "4GiB", "--disk", "20GiB");
    expect(r.code).toBe(ExitCode.Conflict);
    expect(r.err).toBe("error: vm web-1 already exists\n");
  });

  it.each([
    [["--memory", "4XB"], "error: --memory: unknown unit 'XB' in '4XB' (binary: Ki/KiB, Mi/MiB, Gi/GiB, Ti/TiB; decimal: kB, MB, GB, TB; or B)\n"],
    [["--memory", "lots"], "--memory: 'lots' is not a size"],
    [["--memory", "8MiB"], "--memory: must be a whole number from 16"],
    [["--disk", "20XB"], "--disk: unknown unit 'XB'"],
    [["--vcpus", "two"], "--vcpus: 'two' is not a whole number"],
    [["--vcpus", "0"], "--vcpus: must be from 1 to"],
    [["--label", "novalue"], "--label: 'novalue' must be KEY=VALUE"],
    [["--label", "-bad=1"], "--label[-bad]: key must be"],
    [["--wait-timeout", "soon"], "--wait-timeout: 'soon' is not a number of seconds"],
  ])("rejects %j locally, naming the flag, without any call", async (flags, message) => {
    const s = await stub({ createVm: (r) => ({ vm: vm(r.spec?.name ?? "", VmPhase.VM_PHASE_PENDING) }) });
    const base: Record<string, string> = { "--vcpus": "2", "--memory": "4GiB", "--disk": "20GiB" };
    for (let i = 0; i < flags.length; i += 2) base[flags[i] as string] = flags[i + 1] as string;
    const r = await berth(s, "vm", "create", "web-1", ...Object.entries(base).flat());
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain(message);
    expect(r.err.startsWith("error: ")).toBe(true);
    expect(s.calls).toEqual([]);
  });

  it("rejects a bad VM name locally, naming NAME", async () => {
    const s = await stub();
    const r = await berth(s, "vm", "create", "Web_1", "--vcpus", "2", "--memory", "4GiB", "--disk", "20GiB");
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toMatch(/^error: NAME: 'Web_1' must be 1-63 lower-case letters/);
    expect(s.calls).toEqual([]);
  });

  it("rejects a missing required flag (commander), exit code 2", async () => {
    const s = await stub();
    const r = await berth(s, "vm", "create", "web-1", "--vcpus", "2", "--memory", "4GiB");
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain("--disk");
    expect(s.calls).toEqual([]);
  });

  it("rejects a bad --controller and --timeout locally", async () => {
    const a = await run(["--insecure", "--controller", "nohost", "vm", "list"], recordingIo());
    expect(a).toBe(ExitCode.Usage);
    const io = recordingIo();
    expect(await run(["--timeout", "-1", "vm", "list"], io)).toBe(ExitCode.Usage);
    expect(io.err).toContain("--timeout");
  });
});

describe("vm create --wait", () => {
  it("returns when the watch reports RUNNING", async () => {
    const s = await stub({
      createVm: () => ({ vm: vm("web-1", VmPhase.VM_PHASE_PENDING) }),
      // The poll would keep saying PENDING: only the watch can end this wait quickly.
      getVm: () => ({ vm: vm("web-1", VmPhase.VM_PHASE_PENDING) }),
      watchEvents: (_req, call) => {
        call.write({ type: EventType.EVENT_TYPE_EXISTING, revision: 1, object: { $case: "host", value: host("host-1") } });
        call.write({ type: EventType.EVENT_TYPE_EXISTING, revision: 1, object: { $case: "vm", value: vm("other", VmPhase.VM_PHASE_RUNNING) } });
        call.write({ type: EventType.EVENT_TYPE_EXISTING, revision: 1, object: { $case: "vm", value: vm("web-1", VmPhase.VM_PHASE_PENDING) } });
        setTimeout(() => {
          call.write({ type: EventType.EVENT_TYPE_PUT, revision: 2, object: { $case: "vm", value: vm("web-1", VmPhase.VM_PHASE_RUNNING) } });
        }, 50);
      },
    });
    const started = Date.now();
    const r = await berth(s, "vm", "create", "web-1", "--vcpus", "2", "--memory", "4GiB", "--disk", "20GiB", "--wait");
    expect(r.code).toBe(0);
    expect(Date.now() - started).toBeLessThan(900);
    expect(r.out).toContain("web-1  RUNNING");
    expect(r.err).toContain("waiting up to 300s for vm web-1 to be RUNNING");
    expect(s.requests("watchEvents")[0]).toEqual({ vms: true, hosts: false, migrations: false, events: false });
  });

  it("prints status.message and exits 7 when the VM reaches FAILED", async () => {
    const failed = vm("web-1", VmPhase.VM_PHASE_FAILED, {
      status: { phase: VmPhase.VM_PHASE_FAILED, message: "host-1: disk image missing", updatedAtMs: NOW, interfaces: [], domainState: 0, observedGeneration: 1, attempts: 1, errorCode: "INVALID_ARGUMENT", nextAttemptAtMs: 0, permanent: true },
    });
    const s = await stub({
      createVm: () => ({ vm: vm("web-1", VmPhase.VM_PHASE_PENDING) }),
      watchEvents: (_req, call) => {
        call.write({ type: EventType.EVENT_TYPE_PUT, revision: 2, object: { $case: "vm", value: failed } });
      },
    });
    const r = await berth(s, "-o", "json", "vm", "create", "web-1", "--vcpus", "2", "--memory", "4GiB", "--disk", "20GiB", "--wait");
    expect(r.code).toBe(ExitCode.VmFailed);
    expect(r.err).toBe(
      "error: vm web-1 failed: INVALID_ARGUMENT: host-1: disk image missing; permanent: not retried\n" +
        "  once the cause is fixed, try again with: berth vm retry web-1\n",
    );
    expect(JSON.parse(r.out)).toEqual(Vm.toJSON(failed));
  });

  it("falls back to polling GetVm when the server has no watch", async () => {
    let polls = 0;
    const s = await stub({
      createVm: () => ({ vm: vm("web-1", VmPhase.VM_PHASE_PENDING) }),
      getVm: () => {
        polls += 1;
        if (polls === 1) throw notFound("vm web-1"); // a cache behind the write: not yet visible
        return { vm: vm("web-1", polls < 3 ? VmPhase.VM_PHASE_PENDING : VmPhase.VM_PHASE_RUNNING) };
      },
    });
    const r = await berth(s, "vm", "create", "web-1", "--vcpus", "2", "--memory", "4GiB", "--disk", "20GiB", "--wait");
    expect(r.code).toBe(0);
    expect(polls).toBe(3);
    expect(r.out).toContain("RUNNING");
  }, 10_000);

  it("times out with exit code 8 and the last phase seen", async () => {
    const s = await stub({
      createVm: () => ({ vm: vm("web-1", VmPhase.VM_PHASE_PENDING) }),
      watchEvents: (_req, call) => {
        call.write({ type: EventType.EVENT_TYPE_EXISTING, revision: 1, object: { $case: "vm", value: vm("web-1", VmPhase.VM_PHASE_PENDING) } });
      },
    });
    const r = await berth(s, "vm", "create", "web-1", "--vcpus", "2", "--memory", "4GiB", "--disk", "20GiB", "--wait", "--wait-timeout", "0.3");
    expect(r.code).toBe(ExitCode.WaitTimeout);
    expect(r.err).toContain("error: timed out after 0.3s waiting for vm web-1 to be RUNNING (last phase: PENDING)");
    expect(r.out).toBe("");
  });
});

describe("leader following and endpoints", () => {
  it("follows UNAVAILABLE + berth-leader to the leader, once", async () => {
    const leader = await stub({ listVms: () => ({ vms: [vm("web-1", VmPhase.VM_PHASE_RUNNING)], nextPageToken: "" }) });
    const follower = await stub({
      listVms: () => {
        throw notLeader(leader.address);
      },
    });
    const r = await berth(follower, "vm", "list");
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toContain("web-1  RUNNING");
    expect(follower.calls).toHaveLength(1);
    expect(leader.calls).toHaveLength(1);
  });

  it("does not follow a second redirect", async () => {
    const b = await stub();
    const a = await stub();
    a.handlers.listHosts = () => {
      throw notLeader(b.address);
    };
    b.handlers.listHosts = () => {
      throw notLeader(a.address);
    };
    const r = await berth(a, "host", "list");
    expect(r.code).toBe(ExitCode.Unavailable);
    expect(a.calls).toHaveLength(1);
    expect(b.calls).toHaveLength(1);
    expect(r.err).toContain(`controller ${a.address}: this controller is not the leader`);
    expect(r.err).toContain(`controller ${b.address}: this controller is not the leader`);
  });

  it("tries the next address of the list when one is down", async () => {
    const down = `127.0.0.1:${await closedPort()}`;
    const s = await stub({ listHosts: () => ({ hosts: [host("host-1")] }) });
    const r = await berth(`${down},${s.address}`, "host", "list");
    expect(r.code).toBe(0);
    expect(r.out).toContain("host-1");
  });

  it("reports an unreachable controller with exit code 5", async () => {
    const down = `127.0.0.1:${await closedPort()}`;
    const r = await berth(down, "vm", "list");
    expect(r.code).toBe(ExitCode.Unavailable);
    expect(r.err).toMatch(new RegExp(`^error: controller ${down}: cannot connect \\(.*ECONNREFUSED`));
  });

  it("uses $BERTH_CONTROLLER when --controller is not given", async () => {
    const s = await stub({ listVms: () => ({ vms: [], nextPageToken: "" }) });
    const io = recordingIo({ BERTH_CONTROLLER: s.address });
    expect(await run(["vm", "list", "-o", "json", "--insecure"], io)).toBe(0);
    expect(io.out).toBe("[]\n");
  });

  it("gives each call the --timeout deadline, exit code 5", async () => {
    const s = await stub({ getVm: () => new Promise(() => {}) });
    const r = await berth(s, "--timeout", "0.2", "vm", "show", "web-1");
    expect(r.code).toBe(ExitCode.Unavailable);
    expect(r.err).toBe(`error: controller ${s.address}: no answer within 0.2s (see --timeout)\n`);
    expect(s.calls).toHaveLength(1);
  });
});

describe("other verbs", () => {
  it("vm list: sorted table, --host filter, JSON array", async () => {
    const vms = [vm("web-2", VmPhase.VM_PHASE_RUNNING), vm("db-1", VmPhase.VM_PHASE_STOPPED, { desiredState: DesiredState.DESIRED_STATE_STOPPED })];
    const s = await stub({ listVms: () => ({ vms, nextPageToken: "" }) });
    const table = await berth(s, "vm", "list", "--host", "host-1");
    expect(table.code).toBe(0);
    expect(table.out.split("\n").map((l) => l.split(/\s+/)[0])).toEqual(["NAME", "db-1", "web-2", ""]);
    expect(s.requests("listVms")[0]).toMatchObject({ hostId: "host-1", pageToken: "" });
    const json = await berth(s, "vm", "list", "-o", "json");
    expect(JSON.parse(json.out)).toEqual([Vm.toJSON(vms[1] as Vm), Vm.toJSON(vms[0] as Vm)]);
  });

  it("vm list follows every page", async () => {
    const pages: Record<string, { vms: Vm[]; nextPageToken: string }> = {
      "": { vms: [vm("a-1", VmPhase.VM_PHASE_RUNNING)], nextPageToken: "a-1" },
      "a-1": { vms: [vm("b-1", VmPhase.VM_PHASE_RUNNING)], nextPageToken: "b-1" },
      "b-1": { vms: [vm("c-1", VmPhase.VM_PHASE_RUNNING)], nextPageToken: "" },
    };
    const s = await stub({ listVms: (r) => pages[r.pageToken]! });
    const r = await berth(s, "-o", "json", "vm", "list");
    expect(r.code).toBe(0);
    expect((JSON.parse(r.out) as { spec: { name: string } }[]).map((v) => v.spec.name)).toEqual(["a-1", "b-1", "c-1"]);
    expect(s.requests("listVms").map((q) => (q as { pageToken: string }).pageToken)).toEqual(["", "a-1", "b-1"]);
  });

  it("vm show: details; NOT_FOUND is exit code 3 with the server's message", async () => {
    const s = await stub({
      getVm: (r) => {
        if (r.name !== "web-1") throw notFound(`vm ${r.name}`);
        return { vm: vm("web-1", VmPhase.VM_PHASE_RUNNING, { spec: VmSpec.fromPartial({ name: "web-1", resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 }, labels: { tier: "web" } }) }) };
      },
    });
    const shown = await berth(s, "vm", "show", "web-1");
    expect(shown.code).toBe(0);
    expect(shown.out).toContain("Resources:        2 vCPU, 4 GiB memory, 20 GiB disk\n");
    expect(shown.out).toContain("Labels:           tier=web\n");
    const missing = await berth(s, "vm", "show", "nope");
    expect(missing.code).toBe(ExitCode.NotFound);
    expect(missing.err).toBe("error: vm nope not found\n");
  });

  it("vm start / stop --force send the request and print the VM", async () => {
    const s = await stub({
      startVm: (r) => ({ vm: vm(r.name, VmPhase.VM_PHASE_STOPPED) }),
      stopVm: (r) => ({ vm: vm(r.name, VmPhase.VM_PHASE_RUNNING, { desiredState: DesiredState.DESIRED_STATE_STOPPED }) }),
    });
    expect((await berth(s, "vm", "start", "web-1")).code).toBe(0);
    const stopped = await berth(s, "vm", "stop", "web-1", "--force");
    expect(stopped.code).toBe(0);
    expect(stopped.out).toContain("web-1  RUNNING  STOPPED");
    expect(s.requests("stopVm")[0]).toEqual({ name: "web-1", force: true });
    expect(s.requests("startVm")[0]).toEqual({ name: "web-1" });
  });

  it("vm delete --wait returns once the VM is gone", async () => {
    const deleting = vm("web-1", VmPhase.VM_PHASE_DELETING, { desiredState: DesiredState.DESIRED_STATE_DELETED });
    const s = await stub({
      deleteVm: () => ({ vm: deleting }),
      getVm: () => ({ vm: deleting }),
      watchEvents: (_req, call) => {
        call.write({ type: EventType.EVENT_TYPE_EXISTING, revision: 5, object: { $case: "vm", value: deleting } });
        setTimeout(() => call.write({ type: EventType.EVENT_TYPE_DELETED, revision: 6, object: { $case: "vm", value: deleting } }), 30);
      },
    });
    const r = await berth(s, "vm", "delete", "web-1", "--wait");
    expect(r.code).toBe(0);
    expect(r.out).toBe("vm web-1 deleted\n");
  });

  it("vm delete --wait also ends on GetVm NOT_FOUND", async () => {
    const deleting = vm("web-1", VmPhase.VM_PHASE_DELETING, { desiredState: DesiredState.DESIRED_STATE_DELETED });
    const s = await stub({
      deleteVm: () => ({ vm: deleting }),
      getVm: () => {
        throw notFound("vm web-1");
      },
    });
    const r = await berth(s, "-o", "json", "vm", "delete", "web-1", "--wait");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual(Vm.toJSON(deleting));
  }, 10_000);

  it("host list and host show", async () => {
    const s = await stub({
      listHosts: () => ({ hosts: [host("host-2"), { ...host("host-1"), cordoned: true }] }),
      getHost: (r) => ({ host: host(r.id) }),
    });
    const list = await berth(s, "host", "list");
    expect(list.out).toBe(
      "ID      STATE           CPU (ALLOC/ALLOCATABLE)  MEMORY (ALLOC/ALLOCATABLE)  DISK (ALLOC/ALLOCATABLE)  LAST SEEN\n" +
        "host-1  READY,CORDONED  2/64 (3%)                4 GiB/63 GiB (6%)           20 GiB/1 TiB (2%)         2s\n" +
        "host-2  READY           2/64 (3%)                4 GiB/63 GiB (6%)           20 GiB/1 TiB (2%)         2s\n",
    );
    const shown = await berth(s, "-o", "json", "host", "show", "host-1");
    expect(JSON.parse(shown.out)).toMatchObject({ id: "host-1", state: "HOST_STATE_READY", driver: "fake" });
  });
});

describe("help and usage", () => {
  it("--help lists the verbs and the exit codes, exit 0", async () => {
    const io = recordingIo();
    expect(await run(["--help"], io)).toBe(0);
    expect(io.out).toContain("Exit codes:");
    expect(io.out).toContain("4  no host has room for the VM (RESOURCE_EXHAUSTED)");
    for (const verb of ["vm", "host", "dev"]) expect(io.out).toContain(verb);
  });

  it.each([["vm", "create"], ["vm", "list"], ["vm", "show"], ["vm", "start"], ["vm", "stop"], ["vm", "delete"], ["host", "list"], ["host", "show"], ["dev"]])(
    "%s %s --help shows an example",
    async (...verb) => {
      const io = recordingIo();
      expect(await run([...verb.filter(Boolean), "--help"], io)).toBe(0);
      expect(io.out).toMatch(/Examples?:\n {2}berth /);
      expect(io.out).toContain("--controller"); // global options are shown too
    },
  );

  it("an unknown verb or flag is exit code 2", async () => {
    const io = recordingIo();
    expect(await run(["vm", "explode"], io)).toBe(ExitCode.Usage);
    expect(io.err).toContain("error:");
    expect(await run(["vm", "list", "--colour"], recordingIo())).toBe(ExitCode.Usage);
    const badOutput = recordingIo();
    expect(await run(["--insecure", "-o", "xml", "vm", "list"], badOutput)).toBe(ExitCode.Usage);
    expect(badOutput.err).toContain("Allowed choices are table, wide, json, yaml, name");
  });
});

describe("transport", () => {
  it("refuses to talk plaintext unless told --insecure, saying how to get certificates", async () => {
    const io = recordingIo({ BERTH_CONTROLLER: "127.0.0.1:1" });
    expect(await run(["vm", "list"], io)).toBe(ExitCode.Usage);
    expect(io.err).toMatch(/TLS is required: give --tls-ca FILE --tls-cert FILE --tls-key FILE/);
    expect(io.err).toContain("berth certs init");
  });

  it("names the missing TLS file, and a file that cannot be read", async () => {
    const io = recordingIo({ BERTH_CONTROLLER: "127.0.0.1:1" });
    expect(await run(["--tls-ca", "/nonexistent/ca.crt", "--tls-cert", "/nonexistent/a.crt", "vm", "list"], io)).toBe(ExitCode.Usage);
    expect(io.err).toMatch(/--tls-key: is required/);
    const io2 = recordingIo({ BERTH_CONTROLLER: "127.0.0.1:1", BERTH_TLS_CA: "/nonexistent/ca.crt", BERTH_TLS_CERT: "/nonexistent/a.crt", BERTH_TLS_KEY: "/nonexistent/a.key" });
    expect(await run(["vm", "list"], io2)).toBe(ExitCode.Usage);
    expect(io2.err).toMatch(/--tls-ca: cannot read \/nonexistent\/ca.crt: ENOENT/);
  });
});

describe("--version", () => {
  it("prints berth and its version, exit 0, without calling anything", async () => {
    const io = recordingIo({ BERTH_CONTROLLER: "not an address!" });
    expect(await run(["--version"], io)).toBe(0);
    expect(io.out).toMatch(/^berth \d+\.\d+\.\d+\n$/);
  });
});

describe("-o yaml, wide and name; natural order", () => {
  const hosts = ["host-10", "host-2", "host-1"].map((id) => host(id));
  const vms = ["web-10", "web-9", "db-1"].map((name) => vm(name, VmPhase.VM_PHASE_RUNNING));

  it("lists sort naturally (host-2 before host-10) in tables, JSON and names", async () => {
    const s = await stub({ listHosts: () => ({ hosts }), listVms: () => ({ vms, nextPageToken: "" }) });
    const table = await berth(s, "host", "list");
    expect(table.out.split("\n").slice(1, 4).map((l) => l.split(" ")[0])).toEqual(["host-1", "host-2", "host-10"]);
    const json = await berth(s, "-o", "json", "host", "list");
    expect((JSON.parse(json.out) as { id: string }[]).map((h) => h.id)).toEqual(["host-1", "host-2", "host-10"]);
    expect((await berth(s, "-o", "name", "vm", "list")).out).toBe("db-1\nweb-9\nweb-10\n");
  });

  it("-o yaml prints the object -o json prints", async () => {
    const { parse } = await import("yaml");
    const s = await stub({ listVms: () => ({ vms, nextPageToken: "" }), getHost: (r) => ({ host: host(r.id) }) });
    for (const argv of [["vm", "list"], ["host", "show", "host-1"]]) {
      const json = await berth(s, "-o", "json", ...argv);
      const yaml = await berth(s, "-o", "yaml", ...argv);
      expect(yaml.code).toBe(0);
      expect(yaml.out).not.toMatch(/^[[{]/); // block YAML, not JSON
      expect(parse(yaml.out)).toEqual(JSON.parse(json.out));
    }
  });

  it("host list: allocation against the allocatable the controller answered, no config read; -o wide adds usage, driver, version, CPU model, labels", async () => {
    const s = await stub({ listHosts: () => ({ hosts: [{ ...host("host-1"), allocatable: { vcpus: 32, memoryMib: 65536, diskGib: 1024 } }] }) });
    const r = await berth(s, "host", "list");
    expect(r.err).toBe("");
    expect(r.out.split("\n")[1]).toBe("host-1  READY  2/32 (6%)                4 GiB/64 GiB (6%)           20 GiB/1 TiB (2%)         2s");
    const wide = await berth(s, "-o", "wide", "host", "list");
    expect(wide.out.split("\n")[0]).toContain("CPU (USED/ALLOCATABLE)");
    // ... CPU MODEL, NETWORKS, IMAGES, VOLUMES (none reported), LABELS.
    expect(wide.out.split("\n")[1]).toMatch(/ 1\/32 \(3%\) +1 GiB\/64 GiB \(2%\) +20 GiB\/1 TiB \(2%\) +fake +0\.1\.0 +- +- +- +- +-$/);
    // The rule is the controller's: the CLI reads no cluster config to restate it.
    expect(s.requests("getClusterConfig")).toHaveLength(0);
  });

  it("host list from a controller that sends no allocatable: - in those columns, nothing guessed", async () => {
    const s = await stub({ listHosts: () => ({ hosts: [{ ...host("host-1"), allocatable: undefined }] }) });
    const r = await berth(s, "host", "list");
    expect(r.code).toBe(0);
    expect(r.out.split("\n")[1]).toMatch(/^host-1 +READY +- +- +- +2s$/);
  });

  it("-o wide on vm list adds IP, ID, GENERATION, GROUP, LABELS, CREATED", async () => {
    const s = await stub({ listVms: () => ({ vms: [vm("web-1", VmPhase.VM_PHASE_RUNNING, { spec: VmSpec.fromPartial({ name: "web-1", group: "front", labels: { tier: "web" }, resources: { vcpus: 1, memoryMib: 512, diskGib: 10 } }) })], nextPageToken: "" }) });
    const r = await berth(s, "-o", "wide", "vm", "list");
    expect(r.out).toBe(
      "NAME   PHASE    DESIRED  HOST    VCPUS   MEMORY   DISK    AGE  IP  ID        GENERATION  GROUP  LABELS    CREATED\n" +
        "web-1  RUNNING  RUNNING  host-1  1 vCPU  512 MiB  10 GiB  5m   -   id-web-1  1/0         front  tier=web  2023-11-14T22:08:20Z\n",
    );
  });

  it("-o name on a verb without names is exit 2", async () => {
    const s = await stub({ getClusterConfig: () => ({ config: ClusterConfig.fromPartial({}) }) });
    const r = await berth(s, "-o", "name", "config", "show");
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toBe("error: -o name: this verb prints no names (use one of: table, wide, json, yaml)\n");
  });
});

describe("vm create --count N --wait: the gang's progress line", () => {
  const spec = (name: string): VmSpec => VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 512, diskGib: 10 } });
  const gang = (phaseOf: (name: string) => VmPhase) => ({
    createVms: (r: { specs: VmSpec[] }) => ({ vms: r.specs.map((sp) => vm(sp.name, VmPhase.VM_PHASE_PENDING, { spec: sp })) }),
    watchEvents: (_req: unknown, call: { write: (e: unknown) => void }) => {
      for (const [i, name] of ["web-1", "web-2", "web-3"].entries()) {
        setTimeout(() => call.write({ type: EventType.EVENT_TYPE_PUT, revision: 2 + i, object: { $case: "vm", value: vm(name, phaseOf(name), { spec: spec(name) }) } }), 20 * (i + 1));
      }
    },
  });

  it("off a terminal: a first line, then (throttled: the clock stands still here) the last one at the end", async () => {
    const s = await stub(gang(() => VmPhase.VM_PHASE_RUNNING) as never);
    const r = await berth(s, "vm", "create", "web", "--vcpus", "1", "--memory", "512MiB", "--disk", "10GiB", "--count", "3", "--wait");
    expect(r.code).toBe(0);
    expect(r.err).toBe("waiting up to 300s for 3 vms to be RUNNING...\n0/3 RUNNING\n3/3 RUNNING\n");
    expect(r.out.split("\n")).toHaveLength(5); // header, 3 VMs, the final newline
  });

  it("on a terminal: one line redrawn, with the others' phases, ended by a newline; -o json: none", async () => {
    const s = await stub(gang((name) => (name === "web-3" ? VmPhase.VM_PHASE_PENDING : VmPhase.VM_PHASE_RUNNING)) as never);
    s.handlers.getVm = (r) => ({ vm: vm(r.name, VmPhase.VM_PHASE_RUNNING, { spec: spec(r.name) }) });
    const io = recordingIo({}, NOW, { stderrIsTerminal: true });
    const code = await run(["--insecure", "--controller", s.address, "vm", "create", "web", "--vcpus", "1", "--memory", "512MiB", "--disk", "10GiB", "--count", "3", "--wait"], io);
    expect(code).toBe(0);
    expect(io.err).toContain("\r\u001b[2K2/3 RUNNING (1 PENDING)");
    expect(io.err.endsWith("\r\u001b[2K3/3 RUNNING\n")).toBe(true);
    const json = await berth(s, "-o", "json", "vm", "create", "web", "--vcpus", "1", "--memory", "512MiB", "--disk", "10GiB", "--count", "3", "--wait");
    expect(json.err).toBe("");
    expect(JSON.parse(json.out)).toHaveLength(3);
  });
});
