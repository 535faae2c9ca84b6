import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ClusterEvent,
  type DeepPartial,
  EventSeverity,
  EventType,
  HostFailurePolicy,
  ScaleGroup,
  ScaleGroupInfo,
  ScaleInOrder,
  ScalePrediction,
  type WatchEventsRequest,
  type WatchEventsResponse,
} from "@berth/api";
import { BerthError, ErrorCode, notFound } from "@berth/core";
import type { ServerWritableStream } from "@grpc/grpc-js";
import { afterAll, describe, expect, it } from "vitest";
import { parseTargetCpu, splitShellWords } from "./commands/scalegroup.js";
import { bashCompletion, commandTree } from "./completion.js";
import { CliContext } from "./context.js";
import { ExitCode } from "./exit-codes.js";
import { buildProgram, run } from "./program.js";
import { recordingIo, stubPerTest, type StubCluster, type TerminalScript } from "./stub-server.testkit.js";

// `berth scalegroup create|list|show|set|delete` and `berth events --for scalegroup/NAME`, against
// a stub ClusterService: what each verb sends, what it refuses before sending, what it prints.

const NOW = 1_700_000_000_000;
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH4xk0cVkq2mJ3l7Nq0Zk9b5pQ1b0mC2o8t1e4Zq9Q2x me@laptop";
const dir = mkdtempSync(join(tmpdir(), "berth-scalegroup-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, "id.pub"), `${KEY}\n`);

const stub = stubPerTest();

async function berth(s: StubCluster, argv: string[], terminal: TerminalScript = {}) {
  const io = recordingIo({ HOME: dir }, NOW, terminal);
  io.cwd = dir;
  const code = await run(["--insecure", "--controller", s.address, ...argv], io);
  return { code, out: io.out, err: io.err, questions: io.questions };
}

const TEMPLATE = "--vcpus 2 --memory 2GiB --disk 10GiB --image base --network default --ssh-key @~/id.pub --label 'tier=web'";
const CREATE = ["scalegroup", "create", "web", "--template", TEMPLATE, "--min", "2", "--max", "10", "--target-cpu", "60%"];

/** A group as the controller writes it: members web-1..web-N added a minute apart, the newest 30 s ago. */
function group(name: string, size: number, extra: DeepPartial<ScaleGroup> = {}): ScaleGroup {
  return ScaleGroup.fromPartial({
    name,
    template: { name, resources: { vcpus: 2, memoryMib: 2048, diskGib: 10 }, image: "base", networks: ["default"], group: "web-spread" },
    minSize: 2,
    maxSize: 10,
    policy: { targetCpu: 0.6 },
    members: Array.from({ length: size }, (_, i) => ({ name: `${name}-${i + 1}`, index: i + 1, addedAtMs: NOW - 30_000 - (size - 1 - i) * 60_000 })),
    nextIndex: size + 1,
    createdAtMs: NOW - 3_600_000,
    generation: 1,
    ...extra,
  });
}

const info = (g: ScaleGroup, extra: Partial<ScaleGroupInfo> = {}): ScaleGroupInfo =>
  ScaleGroupInfo.fromPartial({ group: g, running: g.members.length, warm: g.members.length, cpuUtilization: 0.42, ...extra });

/** The stub's answer to CreateScaleGroup: the group as sent, with what the controller fills in. */
const creating = (s: { group?: ScaleGroup }) => ({
  group: ScaleGroup.fromPartial({ ...s.group, members: [{ name: "web-1", index: 1, addedAtMs: NOW }, { name: "web-2", index: 2, addedAtMs: NOW }], nextIndex: 3, createdAtMs: NOW - 1000, generation: 1 }),
});

describe("berth scalegroup create", () => {
  it("sends the group: the template parsed as vm create's flags, the target as a fraction, the placement group", async () => {
    const s = await stub({ createScaleGroup: creating });
    const r = await berth(s, [...CREATE, "--placement-group", "web-spread", "--warmup", "5m", "--tolerance", "0.2", "--scale-in-order", "newest-first", "--no-prediction"]);
    expect(r.err).toBe("");
    expect(r.code).toBe(ExitCode.Ok);
    const sent = s.requests("createScaleGroup")[0]?.group;
    expect(sent).toMatchObject({ name: "web", minSize: 2, maxSize: 10, members: [], protectedMembers: [] });
    expect(sent?.template).toMatchObject({
      name: "web",
      resources: { vcpus: 2, memoryMib: 2048, diskGib: 10 },
      image: "base",
      networks: ["default"],
      labels: { tier: "web" },
      group: "web-spread",
      volumes: [],
      onHostFailure: HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED,
      cloudInit: { sshAuthorizedKeys: [KEY], userData: "" },
    });
    // Only the flags given are set; the rest is 0, the controller's defaults.
    expect(sent?.policy).toEqual({
      targetCpu: 0.6,
      tolerance: 0.2,
      scaleDownWindowMs: 0,
      scaleUpMaxPercent: 0,
      scaleUpMaxVms: 0,
      scaleUpPeriodMs: 0,
      warmupMs: 300_000,
      intervalMs: 0,
      scaleInOrder: ScaleInOrder.SCALE_IN_ORDER_NEWEST_FIRST,
      prediction: ScalePrediction.SCALE_PREDICTION_OFF,
    });
    expect(r.out).toBe(
      "NAME  SIZE  MIN  MAX  TARGET  CPU  RUNNING  WARM  AGE\n" + //
        "web   2     2    10   60%     -    -        -     1s\n",
    );
  });

  it("reads 60%, 60 and 0.6 as the same target; a --group in the template is the placement group", async () => {
    expect([parseTargetCpu("60%"), parseTargetCpu("60"), parseTargetCpu("0.6"), parseTargetCpu(" 100 % "), parseTargetCpu("1")]).toEqual([0.6, 0.6, 0.6, 1, 1]);
    const s = await stub({ createScaleGroup: creating });
    const same = await berth(s, ["scalegroup", "create", "web", "--template", "--vcpus 1 --memory 512 --disk 5 --group web-spread", "--min", "0", "--max", "3", "--target-cpu", "0.6", "--placement-group", "web-spread"]);
    expect(same.code).toBe(ExitCode.Ok);
    const sent = s.requests("createScaleGroup")[0]?.group;
    expect(sent?.template?.group).toBe("web-spread");
    // A group may rest at 0 members (the controller's bounds: 0 ≤ min ≤ max, max ≥ 1).
    expect(sent?.minSize).toBe(0);
    expect(sent?.policy?.targetCpu).toBe(0.6);
    // Without --ssh-key / --user-data there is no seed.
    expect(sent?.template?.cloudInit).toBeUndefined();
  });

  it.each([
    ["--min above --max", ["--min", "5", "--max", "2"], /^error: --min: 5 is more than --max 2/],
    ["a zero target", ["--target-cpu", "0"], /^error: --target-cpu: must be more than 0%/],
    ["a target above 100%", ["--target-cpu", "150%"], /^error: --target-cpu: at most 100% \(got 150%\)/],
    ["a bare target above 100", ["--target-cpu", "150"], /^error: --target-cpu: at most 100%/],
    ["a target that is no number", ["--target-cpu", "high"], /^error: --target-cpu: 'high' is not a CPU utilisation/],
    ["--count in the template", ["--template", "--count 3 --vcpus 2 --memory 2GiB --disk 10GiB"], /^error: --template: --count is not for a template: the group counts its members/],
    ["--volume in the template", ["--template", "--vcpus 2 --memory 2GiB --disk 10GiB --volume data"], /^error: --template: --volume is not for a template/],
    ["an unknown template flag", ["--template", "--vcpus 2 --memory 2GiB --disk 10GiB --gpus 1"], /^error: --template: unknown option '--gpus'/],
    ["a bad size in the template", ["--template", "--vcpus 2 --memory 2G --disk 10GiB"], /^error: --template: --memory: /],
    ["a template without --vcpus", ["--template", "--memory 2GiB --disk 10GiB"], /^error: --template: required option '--vcpus <n>' not specified/],
    ["a template without --disk", ["--template", "--vcpus 2 --memory 2GiB"], /^error: --template: --disk: required/],
    ["a word that is no flag", ["--template", "--vcpus 2 --memory 2GiB --disk 10GiB web-1"], /^error: --template: 'web-1' is not a flag/],
    ["an unclosed quote", ["--template", "--vcpus 2 --memory 2GiB --disk 10GiB --label 'a=b"], /^error: --template: an unclosed ' quote/],
    ["a shell variable", ["--template", "--vcpus 2 --memory 2GiB --disk 10GiB --ssh-key $HOME/id.pub"], /^error: --template: '\$' would mean something to a shell/],
    ["an empty template", ["--template", "  "], /^error: --template: empty/],
    ["a bad template choice", ["--template", "--vcpus 2 --memory 2GiB --disk 10GiB --on-host-failure later"], /^error: --template: option '--on-host-failure <policy>' argument 'later' is invalid/],
    ["two placement groups", ["--template", "--vcpus 2 --memory 2GiB --disk 10GiB --group a", "--placement-group", "b"], /^error: --placement-group: b and the template's --group a differ/],
    ["a duration without a unit", ["--warmup", "180"], /^error: --warmup: '180' needs a unit/],
    ["a window too long", ["--scale-down-window", "2h"], /^error: --scale-down-window: must be at most 1 hour/],
    ["an interval too short", ["--interval", "100ms"], /^error: --interval: at least 1s/],
    ["a tolerance above 0.5", ["--tolerance", "60%"], /^error: --tolerance: must be more than 0 and at most 0.5 \(got 60%\)/],
    ["an interval too long", ["--interval", "15m"], /^error: --interval: must be at most 10 minutes/],
    ["a zero step", ["--scale-up-max-vms", "0"], /^error: --scale-up-max-vms: must be from 1 to 1000/],
    ["an unknown scale-in order", ["--scale-in-order", "random"], /^error: option '--scale-in-order <order>' argument 'random' is invalid/],
  ])("refuses %s with exit 2 naming the flag, and sends nothing", async (_what, flags, message) => {
    const s = await stub({ createScaleGroup: creating });
    // Later flags win in commander: each case overrides one of CREATE's.
    const r = await berth(s, [...CREATE, ...flags]);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toMatch(message);
    expect(s.calls).toHaveLength(0);
  });

  it("refuses a name too long for its members' names, and a missing required flag", async () => {
    const s = await stub({ createScaleGroup: creating });
    const long = await berth(s, ["scalegroup", "create", "a".repeat(53), ...CREATE.slice(3)]);
    expect(long.code).toBe(ExitCode.Usage);
    expect(long.err).toMatch(/^error: NAME: at most 52 characters \(got 53\)/);
    const noTarget = await berth(s, CREATE.slice(0, -2));
    expect(noTarget.code).toBe(ExitCode.Usage);
    expect(noTarget.err).toContain("required option '--target-cpu <percent>' not specified");
    expect(s.calls).toHaveLength(0);
  });

  it("says the controller's refusal with its exit code, and prints the written group as JSON", async () => {
    const taken = await stub({ createScaleGroup: () => Promise.reject(new BerthError(ErrorCode.AlreadyExists, "scale group web already exists")) });
    const r = await berth(taken, CREATE);
    expect(r.code).toBe(ExitCode.Conflict);
    expect(r.err).toBe("error: scale group web already exists\n");
    const s = await stub({ createScaleGroup: creating });
    const json = await berth(s, [...CREATE, "-o", "json"]);
    expect(json.code).toBe(ExitCode.Ok);
    const printed = ScaleGroup.fromJSON(JSON.parse(json.out));
    expect(printed).toEqual(creating({ group: s.requests("createScaleGroup")[0]?.group }).group);
  });
});

describe("splitShellWords", () => {
  it("splits as a shell: blanks, single and double quotes, backslashes", () => {
    expect(splitShellWords(`--label 'a=b c' --user-data "my file.yaml" x\\ y "q\\"uote" '' "\\$" a\\\n b`, "--t")).toEqual([
      "--label",
      "a=b c",
      "--user-data",
      "my file.yaml",
      "x y",
      'q"uote',
      "",
      "$",
      "a",
      "b",
    ]);
    expect(splitShellWords("  --vcpus\t2  ", "--t")).toEqual(["--vcpus", "2"]);
    expect(() => splitShellWords('--label "a', "--t")).toThrow(/--t: an unclosed " quote/);
    expect(() => splitShellWords("--pin a\\", "--t")).toThrow(/--t: a trailing backslash/);
    expect(() => splitShellWords("--vcpus 2; rm", "--t")).toThrow(/--t: ';' would mean something to a shell/);
    expect(() => splitShellWords('--ssh-key "$KEY"', "--t")).toThrow(/--t: '\$' inside "\.\.\." would be expanded by a shell/);
  });
});

describe("berth scalegroup list", () => {
  it("a row per group in natural order with size, bounds, target, CPU, running and warm; -o wide the policy; -o name", async () => {
    const web10 = group("web-10", 3, { policy: { targetCpu: 0.5, warmupMs: 60_000, scaleInOrder: ScaleInOrder.SCALE_IN_ORDER_NEWEST_FIRST, prediction: ScalePrediction.SCALE_PREDICTION_OFF } });
    const web9 = group("web-9", 4, { deleting: true, template: { name: "web-9", resources: { vcpus: 1, memoryMib: 512, diskGib: 5 } } });
    const s = await stub({
      listScaleGroups: () => ({ groups: [info(web10, { warm: 2, running: 3, cpuUtilization: 0.725, creating: 0 }), info(web9, { warm: 0, running: 1, creating: 3 })] }),
    });
    const r = await berth(s, ["scalegroup", "list"]);
    expect(r.code).toBe(ExitCode.Ok);
    expect(r.out).toBe(
      "NAME    SIZE          MIN  MAX  TARGET  CPU    RUNNING  WARM  AGE\n" +
        "web-9   4 (deleting)  2    10   60%     -      1        0     1h\n" +
        "web-10  3             2    10   50%     72.5%  3        2     1h\n",
    );
    const wide = await berth(s, ["scalegroup", "list", "-o", "wide"]);
    const lines = wide.out.trimEnd().split("\n");
    expect(lines[0]).toMatch(/AGE\s+CREATING\s+REMOVING\s+GROUP\s+TOLERANCE\s+WARM-UP\s+DOWN WINDOW\s+UP STEP\s+INTERVAL\s+ORDER\s+PREDICTION$/);
    // Unset policy fields show their defaults; set ones their values.
    expect(lines[1]).toMatch(/1h\s+3\s+0\s+-\s+0\.1\s+3m\s+5m\s+max\(100%,4VMs\)per15s\s+15s\s+oldest-first\s+on$/);
    expect(lines[2]).toMatch(/1h\s+0\s+0\s+web-spread\s+0\.1\s+1m\s+5m\s+max\(100%,4VMs\)per15s\s+15s\s+newest-first\s+off$/);
    expect((await berth(s, ["scalegroup", "list", "-o", "name"])).out).toBe("web-9\nweb-10\n");
  });

  it("says so when there are none; -o json round-trips through ScaleGroupInfo", async () => {
    const empty = await stub({ listScaleGroups: () => ({ groups: [] }) });
    expect((await berth(empty, ["scalegroup", "list"])).out).toBe("No scale groups.\n");
    const groups = [info(group("b", 2)), info(group("a", 3, { protectedMembers: ["a-1"] }))];
    const s = await stub({ listScaleGroups: () => ({ groups }) });
    const r = await berth(s, ["scalegroup", "list", "-o", "json"]);
    expect((JSON.parse(r.out) as unknown[]).map((j) => ScaleGroupInfo.fromJSON(j))).toEqual([groups[1], groups[0]]);
  });
});

describe("berth scalegroup show", () => {
  const decided = group("web", 4, {
    protectedMembers: ["web-1"],
    decisionCount: 7,
    policy: { targetCpu: 0.6, tolerance: 0.05 },
    decisions: [
      {
        seq: 6,
        decidedAtMs: NOW - 600_000,
        reason: "ScaledOut",
        fromSize: 2,
        toSize: 4,
        warmMembers: 2,
        warmingMembers: 0,
        cpuUtilization: 0.9,
        reactiveSize: 3,
        predictedSize: 4,
        predictedCores: 3.24,
        message: "cpu 90% > target 60%: the forecast asked for 4",
        added: ["web-3", "web-4"],
        removed: [],
      },
      {
        seq: 7,
        decidedAtMs: NOW - 120_000,
        reason: "SizeBounded",
        fromSize: 4,
        toSize: 4,
        warmMembers: 3,
        warmingMembers: 1,
        cpuUtilization: 0.5,
        reactiveSize: 0,
        predictedSize: 0,
        predictedCores: 0,
        message: "max set to 10",
        added: [],
        removed: [],
      },
    ],
    forecast: { periodMs: 86_400_000, bucketMs: 300_000, cores: [1.5, 0, 3.2, 0], periods: [2, 0, 1, 0] },
  });
  const shown = info(decided, { running: 4, warm: 3, cpuUtilization: 0.55, creating: 0, removing: 1, lastError: "RESOURCE_EXHAUSTED: no host fits web-5" });

  it("prints the group, its members with warm-up and protection, and each decision with its inputs", async () => {
    const s = await stub({ getScaleGroup: () => ({ group: shown }) });
    const r = await berth(s, ["scalegroup", "show", "web"]);
    expect(r.err).toBe("");
    expect(r.code).toBe(ExitCode.Ok);
    expect(s.requests("getScaleGroup")).toEqual([{ name: "web" }]);
    expect(r.out).toContain("Size:               4 (min 2, max 10); 4 running, 3 warm, 0 being created, 1 being removed\n");
    expect(r.out).toContain("CPU:                55% now (average of the warm members); target 60%\n");
    expect(r.out).toContain("Template:           2 vCPU, 2 GiB memory, 10 GiB disk; image base; network default\n");
    expect(r.out).toContain("Placement group:    web-spread (every member joins it)\n");
    expect(r.out).toContain("Tolerance:          0.05 (no change while CPU / target is within 1 ± 0.05)\n");
    expect(r.out).toContain("Warm-up:            3m (default)\n");
    expect(r.out).toContain("Scale-up step:      max(100%, 4 VMs) per 15s (default)\n");
    expect(r.out).toContain("Forecast:           2 of 4 buckets of 5m learnt (a period of 24h, up to 2 periods each); peak 3.2 cores at +10m into the period\n");
    expect(r.out).toContain("Protected:          web-1\n");
    expect(r.out).toContain("Last error:         RESOURCE_EXHAUSTED: no host fits web-5 (creating a member; retried)\n");
    // Members: the newest (30 s ago) still warming up for 2m30s; web-1 protected.
    expect(r.out).toMatch(/Members \(4\):\n {2}NAME\s+INDEX\s+ADDED\s+WARM-UP\s+PROTECTED\n {2}web-1\s+1\s+3m30s\s+done\s+yes\n/);
    expect(r.out).toMatch(/ {2}web-4\s+4\s+30s\s+2m30s left\s+-\n/);
    // Decisions with what they were decided on.
    expect(r.out).toContain("Decisions (latest 2 of 7, oldest first):\n");
    const rows = r.out.split("\n").filter((l) => /Scaled|SizeBounded/.test(l));
    expect(rows.map((l) => l.trim().split(/\s{2,}/))).toEqual([
      ["10m", "ScaledOut", "2 → 4", "90%", "2/0", "3", "4 (3.2 cores)", "cpu 90% > target 60%: the forecast asked for 4"],
      ["2m", "SizeBounded", "4 → 4", "50%", "3/1", "-", "-", "max set to 10"],
    ]);
    expect(r.out).toMatch(/ {2}AGE\s+REASON\s+SIZE\s+CPU\s+WARM\s+REACTIVE\s+PREDICTED\s+MESSAGE\n/);
  });

  it("-o wide adds each decision's seq, time and members; -o json round-trips; a missing group is exit 3", async () => {
    const s = await stub({ getScaleGroup: (r) => (r.name === "web" ? { group: shown } : Promise.reject(notFound(`scale group ${r.name}`))) });
    const wide = await berth(s, ["scalegroup", "show", "web", "-o", "wide"]);
    expect(wide.out).toMatch(/SEQ\s+TIME\s+AGE\s+REASON\s+SIZE\s+CPU\s+WARM\s+REACTIVE\s+PREDICTED\s+ADDED\s+REMOVED\s+MESSAGE\n/);
    expect(wide.out).toMatch(/6\s+2023-11-14T22:03:20Z\s+10m\s+ScaledOut\s+2 → 4\s+90%\s+2\/0\s+3\s+4 \(3\.2 cores\)\s+web-3,web-4\s+-\s+cpu 90%/);
    const json = await berth(s, ["scalegroup", "show", "web", "-o", "json"]);
    expect(ScaleGroupInfo.fromJSON(JSON.parse(json.out))).toEqual(shown);
    const yaml = await berth(s, ["scalegroup", "show", "web", "-o", "yaml"]);
    expect(yaml.out).toContain("reason: ScaledOut");
    const missing = await berth(s, ["scalegroup", "show", "nope"]);
    expect(missing.code).toBe(ExitCode.NotFound);
    expect(missing.err).toBe("error: scale group nope not found\n");
  });

  it("says when nothing has been decided or measured yet", async () => {
    const fresh = info(group("new", 2, { members: [] }), { running: 0, warm: 0, cpuUtilization: 0 });
    const s = await stub({ getScaleGroup: () => ({ group: fresh }) });
    const r = await berth(s, ["scalegroup", "show", "new"]);
    expect(r.out).toContain("CPU:                - (no warm member reports yet); target 60%\n");
    expect(r.out).toContain("Forecast:           - (nothing learnt yet)\n");
    expect(r.out).toContain("Members (0):\n  none\n");
    expect(r.out).toContain("Decisions (0, oldest first):\n  none yet\n");
  });
});

describe("berth scalegroup set", () => {
  const answering = () => stub({ updateScaleGroup: (r) => ({ group: group(r.name, 3, { maxSize: r.maxSize ?? 10, protectedMembers: r.protect }) }) });

  it("sends only the flags given: bounds unset stay unset, policy fields unset stay 0", async () => {
    const s = await answering();
    const max = await berth(s, ["scalegroup", "set", "web", "--max", "20"]);
    expect(max.err).toBe("");
    expect(max.code).toBe(ExitCode.Ok);
    expect(s.requests("updateScaleGroup")[0]).toEqual({ name: "web", minSize: undefined, maxSize: 20, policy: undefined, protect: [], unprotect: [] });
    expect(max.out).toMatch(/^NAME\s+SIZE\s+MIN\s+MAX\s+TARGET\s+CPU\s+RUNNING\s+WARM\s+AGE\nweb\s+3\s+2\s+20\s+60%\s+-\s+-\s+-\s+1h\n$/);

    const policy = await berth(s, ["scalegroup", "set", "web", "--target-cpu", "50%", "--scale-down-window", "15m", "--prediction", "--protect", "web-3", "--protect", "web-3", "--unprotect", "web-1"]);
    expect(policy.code).toBe(ExitCode.Ok);
    expect(s.requests("updateScaleGroup")[1]).toEqual({
      name: "web",
      minSize: undefined,
      maxSize: undefined,
      policy: {
        targetCpu: 0.5,
        tolerance: 0,
        scaleDownWindowMs: 900_000,
        scaleUpMaxPercent: 0,
        scaleUpMaxVms: 0,
        scaleUpPeriodMs: 0,
        warmupMs: 0,
        intervalMs: 0,
        scaleInOrder: ScaleInOrder.SCALE_IN_ORDER_UNSPECIFIED,
        prediction: ScalePrediction.SCALE_PREDICTION_ON,
      },
      protect: ["web-3"],
      unprotect: ["web-1"],
    });
    expect(policy.out).toMatch(/\nprotected from scale-in: web-3\n$/);
    const min = await berth(s, ["scalegroup", "set", "web", "--min", "1", "-o", "json"]);
    expect(s.requests("updateScaleGroup")[2]).toMatchObject({ minSize: 1, maxSize: undefined });
    expect(ScaleGroup.fromJSON(JSON.parse(min.out)).name).toBe("web");
  });

  it.each([
    ["nothing to change", [], /^error: nothing to change: give --min, --max/],
    ["--min above --max", ["--min", "5", "--max", "2"], /^error: --min: 5 is more than --max 2/],
    ["--max 0", ["--max", "0"], /^error: --max: must be from 1 to 1000 \(got 0\)/],
    ["a negative --min", ["--min", "-1"], /^error: --min: '-1' is not a whole number/],
    ["a target of 150%", ["--target-cpu", "150%"], /^error: --target-cpu: at most 100%/],
    ["the same VM protected and not", ["--protect", "web-1", "--unprotect", "web-1"], /^error: --unprotect: web-1 is also given to --protect/],
    ["a bad VM name", ["--protect", "Web_1"], /^error: --protect: /],
    ["a template (it cannot change)", ["--template", "--vcpus 4"], /^error: unknown option '--template'/],
  ])("refuses %s with exit 2, sending nothing", async (_what, flags, message) => {
    const s = await answering();
    const r = await berth(s, ["scalegroup", "set", "web", ...flags]);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toMatch(message);
    expect(s.calls).toHaveLength(0);
  });
});

describe("berth scalegroup delete", () => {
  const members = group("web", 3);

  it("without --delete-vms asks nothing and prints the controller's refusal of a group with members (exit 6)", async () => {
    const s = await stub({
      deleteScaleGroup: (r) =>
        r.deleteVms
          ? { group: { ...members, deleting: true } }
          : Promise.reject(new BerthError(ErrorCode.FailedPrecondition, "scale group web has 3 members")),
    });
    const r = await berth(s, ["scalegroup", "delete", "web"]);
    expect(r.code).toBe(ExitCode.Conflict);
    expect(r.err).toBe("error: scale group web has 3 members (berth scalegroup delete web --delete-vms deletes its VMs too)\n");
    expect(s.requests("deleteScaleGroup")).toEqual([{ name: "web", deleteVms: false }]);
    const empty = await stub({ deleteScaleGroup: () => ({ group: group("old", 0) }) });
    const gone = await berth(empty, ["scalegroup", "delete", "old"]);
    expect(gone.code).toBe(ExitCode.Ok);
    expect(gone.out).toBe("scalegroup old deleted\n");
  });

  it("--delete-vms refuses without --yes when nobody can confirm (exit 2), sending nothing", async () => {
    const s = await stub({ getScaleGroup: () => ({ group: info(members) }), deleteScaleGroup: () => ({ group: { ...members, deleting: true } }) });
    const r = await berth(s, ["scalegroup", "delete", "web", "--delete-vms"]);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain("scalegroup delete: refusing without --yes: standard input is not a terminal");
    expect(s.calls).toHaveLength(0);
    const yes = await berth(s, ["scalegroup", "delete", "web", "--delete-vms", "--yes"]);
    expect(yes.code).toBe(ExitCode.Ok);
    expect(s.requests("deleteScaleGroup")).toEqual([{ name: "web", deleteVms: true }]);
    expect(yes.out).toBe("scalegroup web deleting: its 3 VMs (web-1, web-2, web-3) are being deleted; the group goes with the last of them\n");
  });

  it("--delete-vms on a terminal says how many VMs go, and does nothing unless the answer is yes", async () => {
    const s = await stub({ getScaleGroup: () => ({ group: info(members) }), deleteScaleGroup: () => ({ group: { ...members, deleting: true } }) });
    const no = await berth(s, ["scalegroup", "delete", "web", "--delete-vms"], { interactive: true, answers: ["n"] });
    expect(no.code).toBe(ExitCode.Error);
    expect(no.questions).toEqual(["This deletes scale group web and its 3 VMs (web-1, web-2, web-3), with their disks: it cannot be undone.\nContinue? [y/N] "]);
    expect(s.requests("deleteScaleGroup")).toHaveLength(0);
    const ok = await berth(s, ["scalegroup", "delete", "web", "--delete-vms", "-o", "json"], { interactive: true, answers: ["y"] });
    expect(ok.code).toBe(ExitCode.Ok);
    expect(s.requests("deleteScaleGroup")).toEqual([{ name: "web", deleteVms: true }]);
    expect(ScaleGroup.fromJSON(JSON.parse(ok.out))).toEqual({ ...members, deleting: true });
  });
});

describe("berth scalegroup --help", () => {
  it("explains the rule and gives examples", async () => {
    const s = await stub();
    const r = await berth(s, ["scalegroup", "create", "--help"]);
    expect(r.code).toBe(ExitCode.Ok);
    for (const text of ["desired = ceil(size x cpu / target)", "--tolerance", "--scale-down-window", "--warmup", "oldest", "--protect", "earlier days", "Examples:"]) {
      expect(r.out).toContain(text);
    }
    for (const verb of ["list", "show", "set", "delete"]) {
      expect((await berth(s, ["scalegroup", verb, "--help"])).out).toContain("Example");
    }
  });
});

describe("berth events --for scalegroup/NAME", () => {
  type Call = ServerWritableStream<WatchEventsRequest, WatchEventsResponse>;
  const event = (revision: number, reason: string, objectKind: string, objectName: string, message: string): ClusterEvent =>
    ClusterEvent.fromPartial({ timeMs: NOW - 60_000 + revision * 1000, severity: EventSeverity.EVENT_SEVERITY_NORMAL, reason, objectKind, objectName, message, revision });
  const recent = [
    event(1, "ScaleGroupCreated", "scalegroup", "web", "scale group created: 2..10 VMs at 60% CPU"),
    event(2, "VmPlaced", "vm", "web-1", "placed on host-1"),
    event(3, "ScaledOut", "scalegroup", "web", "2 → 4: cpu 90% > target 60%"),
    event(4, "ScaledIn", "scalegroup", "api", "4 → 3: cpu 20% < target 60%"),
  ];

  it("keeps the group's own events and shows its decisions as they came", async () => {
    const s = await stub({ watchEvents: (_req: WatchEventsRequest, call: Call) => recent.forEach((e) => call.write({ type: EventType.EVENT_TYPE_EXISTING, revision: e.revision, object: { $case: "event", value: e } })) });
    const r = await berth(s, ["events", "--for", "scalegroup/web"]);
    expect(r.code).toBe(ExitCode.Ok);
    const rows = r.out.trimEnd().split("\n").slice(1).map((l) => l.split(/\s{2,}/));
    expect(rows).toEqual([
      ["59s", "Normal", "ScaleGroupCreated", "scalegroup/web", "scale group created: 2..10 VMs at 60% CPU"],
      ["57s", "Normal", "ScaledOut", "scalegroup/web", "2 → 4: cpu 90% > target 60%"],
    ]);
  });
});

describe("completion of scalegroup verbs", () => {
  it("completes an existing group's name (scalegroup list -o name) and --protect's VM, not a new group's name", () => {
    const program = buildProgram(new CliContext(recordingIo()));
    const node = (path: string) => commandTree(program).find((n) => n.path === path);
    for (const verb of ["show", "set", "delete"]) expect(node(`scalegroup ${verb}`)?.argument).toEqual({ names: "scalegroup" });
    expect(node("scalegroup create")?.argument).toBeUndefined();
    expect(node("scalegroup set")?.valued.get("--protect")).toEqual({ names: "vm" });
    expect(node("scalegroup create")?.valued.get("--scale-in-order")).toEqual({ choices: ["oldest-first", "newest-first"] });
    expect(bashCompletion(program)).toContain("_berth_names scalegroup");
  });
});
