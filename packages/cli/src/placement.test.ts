import {
  ClusterConfig,
  DesiredState,
  EventType,
  Group,
  GroupPolicy,
  PlanPlacementResponse,
  Vm,
  VmPhase,
  type VmSpec,
} from "@berth/api";
import { BerthError, ErrorCode, notFound } from "@berth/core";
import { describe, expect, it } from "vitest";
import { ExitCode } from "./exit-codes.js";
import { run } from "./program.js";
import { recordingIo, stubPerTest, StubCluster } from "./stub-server.testkit.js";

// The placement verbs: vm create --count and host constraints, plan, group, config.

const NOW = 1_700_000_000_000;
const SIZE = ["--vcpus", "2", "--memory", "4GiB", "--disk", "20GiB"];

function vmOf(spec: VmSpec | undefined, phase: VmPhase, hostId = "host-1"): Vm {
  return Vm.fromPartial({
    id: `id-${spec?.name ?? ""}`,
    spec: spec ?? {},
    desiredState: DesiredState.DESIRED_STATE_RUNNING,
    hostId,
    generation: 1,
    status: { phase, updatedAtMs: NOW - 1000 },
    createdAtMs: NOW - 60_000,
  });
}

const stub = stubPerTest();

async function berth(s: StubCluster, ...argv: string[]) {
  const io = recordingIo({}, NOW);
  const code = await run(["--insecure", "--controller", s.address, ...argv], io);
  return { code, out: io.out, err: io.err };
}

const createVms = (phase = VmPhase.VM_PHASE_PENDING) => ({
  createVms: (r: { specs: VmSpec[] }) => ({ vms: r.specs.map((spec, i) => vmOf(spec, phase, `host-${i + 1}`)) }),
});

describe("vm create: --count, --group and host constraints", () => {
  it("--count 3 sends one CreateVms with NAME-1..3, the group and the constraints", async () => {
    const s = await stub(createVms());
    const r = await berth(
      s, "vm", "create", "web", ...SIZE, "--count", "3", "--group", "web", "--label", "tier=web",
      "--require-host-label", "zone=a", "--forbid-host-label", "maintenance", "--forbid-host-label", "disk=hdd",
      "--pin", "host-1,host-2", "--pin", "host-3",
    );
    expect(r.err).toBe("");
    expect(r.code).toBe(ExitCode.Ok);
    expect(s.requests("createVm")).toEqual([]);
    const calls = s.requests("createVms");
    expect(calls).toHaveLength(1);
    expect(calls[0]?.specs.map((x) => x.name)).toEqual(["web-1", "web-2", "web-3"]);
    for (const spec of calls[0]?.specs ?? []) {
      expect(spec).toMatchObject({
        resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 },
        labels: { tier: "web" },
        group: "web",
        requiredHostLabels: { zone: "a" },
        forbiddenHostLabels: { maintenance: "*", disk: "hdd" },
        pinnedHosts: ["host-1", "host-2", "host-3"],
      });
    }
    expect(r.out).toBe(
      "NAME   PHASE    DESIRED  HOST    VCPUS   MEMORY  DISK    AGE\n" +
        "web-1  PENDING  RUNNING  host-1  2 vCPU  4 GiB   20 GiB  1m\n" +
        "web-2  PENDING  RUNNING  host-2  2 vCPU  4 GiB   20 GiB  1m\n" +
        "web-3  PENDING  RUNNING  host-3  2 vCPU  4 GiB   20 GiB  1m\n",
    );
  });

  it("--count with -o json prints an array", async () => {
    const s = await stub(createVms());
    const r = await berth(s, "-o", "json", "vm", "create", "db", ...SIZE, "--count", "2");
    expect(r.code).toBe(0);
    expect((JSON.parse(r.out) as { spec: { name: string } }[]).map((v) => v.spec.name)).toEqual(["db-1", "db-2"]);
  });

  it("without --count sends CreateVm with the new fields", async () => {
    const s = await stub({ createVm: (r) => ({ vm: vmOf(r.spec, VmPhase.VM_PHASE_PENDING) }) });
    const r = await berth(s, "vm", "create", "web-1", ...SIZE, "--group", "web", "--pin", "host-2");
    expect(r.code).toBe(0);
    expect(s.requests("createVm")[0]?.spec).toMatchObject({ name: "web-1", group: "web", pinnedHosts: ["host-2"] });
    expect(s.requests("createVms")).toEqual([]);
  });

  it("a gang that does not fit is RESOURCE_EXHAUSTED: exit 4", async () => {
    const s = await stub({
      createVms: () => {
        throw new BerthError(ErrorCode.ResourceExhausted, "cannot place all 3 vms: web-3 fits nowhere");
      },
    });
    const r = await berth(s, "vm", "create", "web", ...SIZE, "--count", "3");
    expect(r.code).toBe(ExitCode.NoCapacity);
    expect(r.err).toBe("error: cannot place all 3 vms: web-3 fits nowhere\n");
  });

  it.each([
    [["--count", "0"], "--count: must be from 1 to 100"],
    [["--count", "101"], "--count: must be from 1 to 100"],
    [["--count", "three"], "--count: 'three' is not a whole number"],
    [["--group", "Web"], "--group: 'Web' must be"],
    [["--require-host-label", "zone"], "--require-host-label: 'zone' must be KEY=VALUE"],
    [["--forbid-host-label", "bad key"], "--forbid-host-label[bad key]: key must be"],
    [["--pin", "host-1,,host-2"], "--pin: 'host-1,,host-2' has an empty host name"],
    [["--pin", "Host_1"], "--pin: 'Host_1' must be"],
  ])("rejects %j locally, naming the flag, without any call", async (flags, message) => {
    const s = await stub(createVms());
    const r = await berth(s, "vm", "create", "web", ...SIZE, ...flags);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain(`error: ${message}`);
    expect(s.calls).toEqual([]);
  });

  it("--count --wait returns once every VM is RUNNING", async () => {
    const running = new Set<string>();
    const s = await stub({
      ...createVms(),
      watchEvents: (_req, call) => {
        for (const [i, name] of ["web-1", "web-2"].entries()) {
          setTimeout(() => {
            running.add(name);
            const spec = { name, resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 } } as VmSpec;
            call.write({ type: EventType.EVENT_TYPE_PUT, revision: 2 + i, object: { $case: "vm", value: vmOf(spec, VmPhase.VM_PHASE_RUNNING) } });
          }, 30 * (i + 1));
        }
      },
    });
    const r = await berth(s, "vm", "create", "web", ...SIZE, "--count", "2", "--wait");
    expect(r.code).toBe(0);
    expect(running).toEqual(new Set(["web-1", "web-2"]));
    expect(s.requests("watchEvents")).toHaveLength(1); // one watch for the gang, not one per VM
    expect(r.err).toContain("waiting up to 300s for 2 vms to be RUNNING");
    expect(r.out).toContain("web-1  RUNNING");
    expect(r.out).toContain("web-2  RUNNING");
  });

  it("--count 11 --wait (more waits than Node's default listener limit) prints no MaxListenersExceededWarning", async () => {
    const s = await stub({ ...createVms(VmPhase.VM_PHASE_RUNNING), getVm: (r) => ({ vm: vmOf(Vm.fromPartial({ spec: { name: r.name } }).spec, VmPhase.VM_PHASE_RUNNING) }) });
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
    process.on("warning", onWarning);
    try {
      const r = await berth(s, "vm", "create", "web", ...SIZE, "--count", "11", "--wait");
      expect(r.code).toBe(0);
      // Warnings are emitted on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off("warning", onWarning);
    }
    expect(warnings.filter((w) => w.includes("MaxListeners"))).toEqual([]);
  });

  it("--count --wait: any VM FAILED ends the wait with exit 7, printing that VM", async () => {
    const s = await stub({
      ...createVms(),
      getVm: (r) => {
        if (r.name === "web-2") {
          const failed = vmOf(Vm.fromPartial({ spec: { name: "web-2" } }).spec, VmPhase.VM_PHASE_FAILED);
          return { vm: { ...failed, status: { ...failed.status!, message: "image missing", updatedAtMs: NOW } } };
        }
        return { vm: vmOf(Vm.fromPartial({ spec: { name: r.name } }).spec, VmPhase.VM_PHASE_PENDING) };
      },
    });
    const started = Date.now();
    const r = await berth(s, "-o", "json", "vm", "create", "web", ...SIZE, "--count", "3", "--wait");
    expect(r.code).toBe(ExitCode.VmFailed);
    // No retry record (a controller that does not retry): final, as before.
    expect(r.err).toBe("error: vm web-2 failed: image missing\n  once the cause is fixed, try again with: berth vm retry web-2\n");
    expect((JSON.parse(r.out) as { spec: { name: string } }[]).map((v) => v.spec.name)).toEqual(["web-2"]);
    expect(Date.now() - started).toBeLessThan(5000);
  }, 10_000);
});

const verdicts = [
  { hostId: "host-3", passed: false, filter: "capacity", reason: "memory: needs 4 GiB, 1 GiB free", scores: {}, total: 0 },
  { hostId: "host-1", passed: true, filter: "", reason: "", scores: { leastAllocated: 0.5, spread: 1 }, total: 1.5 },
  { hostId: "host-2", passed: true, filter: "", reason: "", scores: { leastAllocated: 0.75, spread: 1 }, total: 1.75 },
];

const placeable = PlanPlacementResponse.fromPartial({
  placeable: true,
  placements: [
    { vmName: "web-1", hostId: "host-2", verdicts },
    { vmName: "web-2", hostId: "host-1", verdicts: verdicts.slice(0, 2) },
  ],
});

describe("plan", () => {
  it("sends the specs and prints the chosen hosts and the first VM's host table, exit 0", async () => {
    const s = await stub({ planPlacement: () => placeable });
    const r = await berth(s, "plan", ...SIZE, "--count", "2", "--name", "web", "--group", "web", "--forbid-host-label", "gpu");
    expect(r.err).toBe("");
    expect(r.code).toBe(ExitCode.Ok);
    const req = s.requests("planPlacement")[0];
    expect(req?.specs.map((x) => [x.name, x.group, x.forbiddenHostLabels])).toEqual([
      ["web-1", "web", { gpu: "*" }],
      ["web-2", "web", { gpu: "*" }],
    ]);
    expect(r.out).toBe(
      "placeable\n" +
        "VM     HOST\n" +
        "web-1  host-2\n" +
        "web-2  host-1\n" +
        "\n" +
        "hosts for vm web-1 (chosen: host-2):\n" +
        "HOST    VERDICT   SCORE  LEASTALLOCATED  SPREAD  REASON\n" +
        "host-2  passed    1.75   0.75            1.00    -\n" +
        "host-1  passed    1.50   0.50            1.00    -\n" +
        "host-3  capacity  -      -               -       memory: needs 4 GiB, 1 GiB free\n",
    );
  });

  it("--all shows every VM's table; the default name is 'plan'", async () => {
    const s = await stub({ planPlacement: () => placeable });
    const r = await berth(s, "plan", ...SIZE, "--all");
    expect(r.code).toBe(0);
    expect(s.requests("planPlacement")[0]?.specs.map((x) => x.name)).toEqual(["plan"]);
    expect(r.out).toContain("hosts for vm web-1 (chosen: host-2):");
    expect(r.out).toContain("hosts for vm web-2 (chosen: host-1):");
  });

  it("not placeable: exit 4, the reasons and the failing VM's table", async () => {
    const plan = PlanPlacementResponse.fromPartial({
      placeable: false,
      placements: [
        { vmName: "web-1", hostId: "host-1", verdicts: verdicts.slice(1, 2) },
        { vmName: "web-2", hostId: "", verdicts: [{ ...verdicts[0]!, hostId: "host-1", filter: "anti-affinity", reason: "web-1 is there" }] },
      ],
      reasons: ["host-1: anti-affinity: web-1 is there"],
    });
    const s = await stub({ planPlacement: () => plan });
    const r = await berth(s, "plan", ...SIZE, "--count", "2", "--name", "web");
    expect(r.code).toBe(ExitCode.NoCapacity);
    expect(r.err).toBe("");
    expect(r.out.startsWith("not placeable\nVM     HOST\nweb-1  host-1\nweb-2  - (no host)\n\nreasons:\n  host-1: anti-affinity: web-1 is there\n")).toBe(true);
    expect(r.out).toContain("hosts for vm web-1 (chosen: host-1):");
    expect(r.out).toContain("hosts for vm web-2 (no host):\nHOST    VERDICT        SCORE  REASON\nhost-1  anti-affinity  -      web-1 is there\n");

    const json = await berth(s, "-o", "json", "plan", ...SIZE);
    expect(json.code).toBe(ExitCode.NoCapacity);
    expect(JSON.parse(json.out)).toEqual(PlanPlacementResponse.toJSON(plan));
  });

  it("-o json prints the response's toJSON, exit 0", async () => {
    const s = await stub({ planPlacement: () => placeable });
    const r = await berth(s, "plan", ...SIZE, "-o", "json");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual(PlanPlacementResponse.toJSON(placeable));
  });

  it("bad flags are exit 2 without a call; server errors keep their exit codes", async () => {
    const s = await stub({
      planPlacement: () => {
        throw new BerthError(ErrorCode.NotFound, "group web not found");
      },
    });
    const bad = await berth(s, "plan", ...SIZE, "--name", "Bad_Name");
    expect(bad.code).toBe(ExitCode.Usage);
    expect(bad.err).toContain("error: --name: 'Bad_Name' must be");
    expect(s.calls).toEqual([]);
    const missing = await berth(s, "plan", ...SIZE, "--group", "web");
    expect(missing.code).toBe(ExitCode.NotFound);
    expect(missing.err).toBe("error: group web not found\n");
  });
});

describe("group", () => {
  const web = Group.fromPartial({ name: "web", policy: GroupPolicy.GROUP_POLICY_ANTI_AFFINITY, members: ["web-1", "web-2"], createdAtMs: NOW - 3_600_000 });
  const cache = Group.fromPartial({ name: "cache", policy: GroupPolicy.GROUP_POLICY_SOFT_AFFINITY, members: [], createdAtMs: NOW - 60_000 });

  it("create sends the policy and prints the group", async () => {
    const s = await stub({ createGroup: (r) => ({ group: Group.fromPartial({ name: r.name, policy: r.policy, createdAtMs: NOW }) }) });
    const r = await berth(s, "group", "create", "web", "--policy", "soft-anti-affinity");
    expect(r.code).toBe(0);
    expect(s.requests("createGroup")).toEqual([{ name: "web", policy: GroupPolicy.GROUP_POLICY_SOFT_ANTI_AFFINITY }]);
    expect(r.out).toBe("NAME  POLICY              MEMBERS  AGE\nweb   soft-anti-affinity  0        0s\n");
    const json = await berth(s, "-o", "json", "group", "create", "db", "--policy", "affinity");
    expect(JSON.parse(json.out)).toMatchObject({ name: "db", policy: "GROUP_POLICY_AFFINITY" });
  });

  it.each([[["--policy", "sideways"]], [[]]])("create with a bad or missing --policy %j: exit 2, no call", async (flags) => {
    const s = await stub();
    const r = await berth(s, "group", "create", "web", ...flags);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain("--policy");
    expect(s.calls).toEqual([]);
  });

  it("create with a bad name: exit 2, no call", async () => {
    const s = await stub();
    const r = await berth(s, "group", "create", "Web", "--policy", "affinity");
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toMatch(/^error: NAME: 'Web' must be/);
    expect(s.calls).toEqual([]);
  });

  it("list: sorted table with member counts; JSON array", async () => {
    const s = await stub({ listGroups: () => ({ groups: [web, cache] }) });
    const r = await berth(s, "group", "list");
    expect(r.code).toBe(0);
    expect(r.out).toBe(
      "NAME   POLICY         MEMBERS  AGE\n" +
        "cache  soft-affinity  0        1m\n" +
        "web    anti-affinity  2        1h\n",
    );
    const json = await berth(s, "group", "list", "-o", "json");
    expect(JSON.parse(json.out)).toEqual([Group.toJSON(cache), Group.toJSON(web)]);
  });

  it("delete: ok; with members FAILED_PRECONDITION is exit 6 with the message; missing is 3", async () => {
    const s = await stub({
      deleteGroup: (r) => {
        if (r.name === "web") throw new BerthError(ErrorCode.FailedPrecondition, "group web has 2 members: web-1, web-2");
        if (r.name === "nope") throw notFound("group nope");
        return {};
      },
    });
    const ok = await berth(s, "group", "delete", "cache");
    expect(ok.code).toBe(0);
    expect(ok.out).toBe("group cache deleted\n");
    const busy = await berth(s, "group", "delete", "web");
    expect(busy.code).toBe(ExitCode.Conflict);
    expect(busy.err).toBe("error: group web has 2 members: web-1, web-2\n");
    expect((await berth(s, "group", "delete", "nope")).code).toBe(ExitCode.NotFound);
    expect(s.requests("deleteGroup").map((q) => q.name)).toEqual(["cache", "web", "nope"]);
  });
});

describe("config", () => {
  const current = ClusterConfig.fromPartial({
    scheduler: {
      preset: "spread",
      weights: { leastAllocated: 1, spread: 2 },
      allocationRatio: { vcpus: 4, memory: 1, disk: 0 },
      reserved: { vcpus: 1, memoryMib: 2048, diskGib: 0 },
      maxVmsPerHost: 20,
      filters: ["capacity", "labels"],
      seed: 7,
    },
  });

  it("show: fields and JSON", async () => {
    const s = await stub({ getClusterConfig: () => ({ config: current }) });
    const r = await berth(s, "config", "show");
    expect(r.code).toBe(0);
    expect(r.out).toBe(
      "Preset:            spread\n" +
        "Weights:           leastAllocated=1, spread=2\n" +
        "CPU ratio:         4\n" +
        "Memory ratio:      1\n" +
        "Disk ratio:        1 (default)\n" +
        "Reserved:          1 vCPU, 2 GiB memory, 0 B disk\n" +
        "Max VMs per host:  20\n" +
        "Filters:           capacity, labels\n" +
        "Seed:              7\n" +
        "On host failure:   keep (default)\n" +
        "\n" +
        "Rebalancing:\n" +
        "  Continuous:          off (default)\n" +
        "  Goal:                balance (default)\n" +
        "  Metric:              usage where measured, else allocation (default)\n" +
        "  Interval:            5m (default)\n" +
        "  Threshold:           0.1 (default)\n" +
        "  Rounds:              3 (default)\n" +
        "  Max moves per pass:  4 (default)\n" +
        "  VM cooldown:         1h (default)\n" +
        "  Host cooldown:       10m (default)\n" +
        "\n" +
        "Migrations:\n" +
        "  Parallel:           5 (default)\n" +
        "  Outbound per host:  2 (default)\n" +
        "  Timeout per GiB:    2m30s (default)\n" +
        "  Progress timeout:   2m30s (default)\n",
    );
    const json = await berth(s, "-o", "json", "config", "show");
    expect(JSON.parse(json.out)).toEqual(ClusterConfig.toJSON(current));
  });

  it("set merges the flags over the current config and prints the result", async () => {
    const s = await stub({
      getClusterConfig: () => ({ config: current }),
      updateClusterConfig: (r) => ({ config: r.config }),
    });
    const r = await berth(
      s, "-o", "json", "config", "set", "--preset", "pack", "--weight", "mostAllocated=2.5", "--weight", "spread=",
      "--memory-ratio", "1.5", "--reserve-memory", "4GiB", "--max-vms-per-host", "0",
    );
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(s.calls.map((c) => c.method)).toEqual(["getClusterConfig", "updateClusterConfig"]);
    const sent = s.requests("updateClusterConfig")[0]?.config;
    expect(sent).toEqual(
      ClusterConfig.fromPartial({
        scheduler: {
          preset: "pack",
          weights: { leastAllocated: 1, mostAllocated: 2.5 },
          allocationRatio: { vcpus: 4, memory: 1.5, disk: 0 },
          reserved: { vcpus: 1, memoryMib: 4096, diskGib: 0 },
          maxVmsPerHost: 0,
          filters: ["capacity", "labels"],
          seed: 7,
        },
      }),
    );
    expect(JSON.parse(r.out)).toEqual(ClusterConfig.toJSON(sent!));
  });

  it("set on an empty config fills only what was given", async () => {
    const s = await stub({ getClusterConfig: () => ({}), updateClusterConfig: (r) => ({ config: r.config }) });
    const r = await berth(s, "config", "set", "--cpu-ratio", "2", "--seed", "42", "--reserve-disk", "50");
    expect(r.code).toBe(0);
    expect(s.requests("updateClusterConfig")[0]?.config?.scheduler).toMatchObject({
      preset: "",
      weights: {},
      allocationRatio: { vcpus: 2, memory: 0, disk: 0 },
      reserved: { vcpus: 0, memoryMib: 0, diskGib: 50 },
      seed: 42,
    });
    expect(r.out).toContain("CPU ratio:         2\n");
  });

  it.each([
    [["--preset", "random"], "--preset"],
    [["--weight", "spread"], "--weight: 'spread' must be NAME=VALUE"],
    [["--weight", "spread=lots"], "--weight spread: 'lots' is not a number"],
    [["--cpu-ratio", "-1"], "--cpu-ratio: '-1' is not a number"],
    [["--reserve-vcpus", "x"], "--reserve-vcpus: 'x' is not a whole number"],
    [["--reserve-memory", "4XB"], "--reserve-memory: unknown unit"],
    [["--max-vms-per-host", "1.5"], "--max-vms-per-host: '1.5' is not a whole number"],
    [["--seed", "-3"], "--seed: '-3' is not a whole number"],
    [[], "config set: no setting given"],
  ])("set %j: exit 2 naming the flag, no call", async (flags, message) => {
    const s = await stub({ getClusterConfig: () => ({ config: current }) });
    const r = await berth(s, "config", "set", ...flags);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain(message);
    expect(s.calls).toEqual([]);
  });

  it("set: the controller's INVALID_ARGUMENT is exit 2 with its message", async () => {
    const s = await stub({
      getClusterConfig: () => ({ config: current }),
      updateClusterConfig: () => {
        throw new BerthError(ErrorCode.InvalidArgument, "scheduler.weights[bogus]: unknown weigher", { field: "scheduler.weights[bogus]" });
      },
    });
    const r = await berth(s, "config", "set", "--weight", "bogus=1");
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toBe("error: scheduler.weights[bogus]: unknown weigher\n");
  });
});

describe("help", () => {
  it.each([["plan"], ["group", "create"], ["group", "list"], ["group", "delete"], ["config", "show"], ["config", "set"]])(
    "%s %s --help shows an example",
    async (...verb) => {
      const io = recordingIo();
      expect(await run([...verb.filter(Boolean), "--help"], io)).toBe(0);
      expect(io.out).toMatch(/Examples?:\n {2}berth /);
    },
  );

  it("berth --help lists the new verbs and plan's exit code", async () => {
    const io = recordingIo();
    expect(await run(["--help"], io)).toBe(0);
    for (const verb of ["plan", "group", "config"]) expect(io.out).toMatch(new RegExp(`^  ${verb} `, "m"));
    expect(io.out).toContain("berth plan: not placeable");
  });
});
