import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ApplyRebalanceRequest,
  ApplyRebalanceResponse,
  ClusterConfig,
  Migration,
  MigrationPhase,
  MigrationReason,
  RebalanceGoal,
  RebalanceMetric,
  RebalancePlan,
} from "@berth/api";
import { BerthError, ErrorCode } from "@berth/core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ExitCode } from "./exit-codes.js";
import { run } from "./program.js";
import { recordingIo, stubPerTest, StubCluster } from "./stub-server.testkit.js";

// rebalance plan / apply (--plan FILE, --wait), and the rebalance and migration settings of config.

const NOW = 1_700_000_000_000;

const plan = RebalancePlan.fromPartial({
  goal: RebalanceGoal.REBALANCE_GOAL_BALANCE,
  metric: RebalanceMetric.REBALANCE_METRIC_USAGE,
  moves: [
    { vmName: "web-1", vmId: "id-web-1", fromHost: "host-1", toHost: "host-3", reason: "host-1 is 31% above the mean", benefit: 0.052, costGib: 4, imbalanceAfter: 0.162 },
    { vmName: "db-2", vmId: "id-db-2", fromHost: "host-1", toHost: "host-2", reason: "host-1 is 12% above the mean", benefit: 0.0213, costGib: 16.25, imbalanceAfter: 0.1407 },
  ],
  imbalanceBefore: 0.214,
  imbalanceAfter: 0.1407,
  freedHosts: [],
  movedGib: 20.25,
  revision: 4711,
  computedAtMs: NOW - 5000,
  note: "no move lowers the imbalance by more than 0.01",
});

const started = (vmName: string, id: string, phase = MigrationPhase.MIGRATION_PHASE_PENDING, extra: Partial<Migration> = {}): Migration =>
  Migration.fromPartial({
    id,
    vmName,
    sourceHost: "host-1",
    targetHost: vmName === "web-1" ? "host-3" : "host-2",
    phase,
    reason: MigrationReason.MIGRATION_REASON_REBALANCE,
    createdAtMs: NOW - 1000,
    ...extra,
  });

const stub = stubPerTest();

let dir = "";
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "berth-rebalance-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs berth in `dir`, so that `--plan FILE` is read from there. */
async function berth(s: StubCluster, ...argv: string[]) {
  const io = recordingIo({}, NOW);
  io.cwd = dir;
  const code = await run(["--insecure", "--controller", s.address, ...argv], io);
  return { code, out: io.out, err: io.err };
}

describe("rebalance plan", () => {
  it("sends the goal and max moves; prints the ordered moves, then the summary", async () => {
    const s = await stub({ planRebalance: () => ({ plan }) });
    const r = await berth(s, "rebalance", "plan", "--goal", "consolidate", "--max-moves", "5");
    expect(r.code).toBe(0);
    expect(s.requests("planRebalance")).toHaveLength(1);
    expect(s.requests("planRebalance")[0]).toMatchObject({ goal: RebalanceGoal.REBALANCE_GOAL_CONSOLIDATE, maxMoves: 5 });
    expect(r.out).toBe(
      "#  VM     FROM    TO      BENEFIT  COST GIB  IMBALANCE AFTER  REASON\n" +
        "1  web-1  host-1  host-3  0.052    4         0.162            host-1 is 31% above the mean\n" +
        "2  db-2   host-1  host-2  0.021    16.3      0.141            host-1 is 12% above the mean\n" +
        "\n" +
        "Goal:         balance\n" +
        "Metric:       usage\n" +
        "Imbalance:    0.214 -> 0.141\n" +
        "Moved:        20.3 GiB in 2 moves\n" +
        "Freed hosts:  -\n" +
        "Note:         no move lowers the imbalance by more than 0.01\n",
    );
    await berth(s, "rebalance", "plan");
    expect(s.requests("planRebalance")[1]).toEqual({
      goal: RebalanceGoal.REBALANCE_GOAL_UNSPECIFIED,
      maxMoves: 0,
      metric: RebalanceMetric.REBALANCE_METRIC_UNSPECIFIED,
    });
    await berth(s, "rebalance", "plan", "--metric", "allocation");
    expect(s.requests("planRebalance")[2]?.metric).toBe(RebalanceMetric.REBALANCE_METRIC_ALLOCATION);
  });

  it("a plan without moves says so, with the note", async () => {
    const s = await stub({ planRebalance: () => ({ plan: RebalancePlan.fromPartial({ imbalanceBefore: 0.02, imbalanceAfter: 0.02, note: "the hosts are balanced (0.020 < 0.1)" }) }) });
    const r = await berth(s, "rebalance", "plan");
    expect(r.out.startsWith("no moves\n\n")).toBe(true);
    expect(r.out).toContain("Note:         the hosts are balanced (0.020 < 0.1)\n");
  });

  it("consolidate lists the hosts freed", async () => {
    const s = await stub({ planRebalance: () => ({ plan: { ...plan, goal: RebalanceGoal.REBALANCE_GOAL_CONSOLIDATE, freedHosts: ["host-1", "host-4"] } }) });
    const r = await berth(s, "rebalance", "plan", "--goal", "consolidate");
    expect(r.out).toContain("Goal:         consolidate\n");
    expect(r.out).toContain("Freed hosts:  host-1, host-4\n");
  });

  it("-o json prints the plan's proto JSON", async () => {
    const s = await stub({ planRebalance: () => ({ plan }) });
    const r = await berth(s, "-o", "json", "rebalance", "plan");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual(RebalancePlan.toJSON(plan));
  });

  it.each([
    [["--goal", "spread"], "--goal"],
    [["--metric", "cpu"], "--metric"],
    [["--max-moves", "0"], "--max-moves: must be from 1 to 1000"],
    [["--max-moves", "1001"], "--max-moves: must be from 1 to 1000"],
    [["--max-moves", "lots"], "--max-moves: 'lots' is not a whole number"],
  ])("%j is a usage error, nothing sent", async (flags, message) => {
    const s = await stub({ planRebalance: () => ({ plan }) });
    const r = await berth(s, "rebalance", "plan", ...flags);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain(message);
    expect(s.calls).toEqual([]);
  });
});

describe("rebalance apply", () => {
  const answer = (request: ApplyRebalanceRequest): ApplyRebalanceResponse =>
    ApplyRebalanceResponse.fromPartial({
      plan: request.plan ?? plan,
      migrations: [started("web-1", "m-1")],
      skipped: [{ move: plan.moves[1], reason: "db-2 is no longer on host-1" }],
    });

  it("a fresh plan: sends the goal and max moves, prints what started and what was skipped", async () => {
    const s = await stub({ applyRebalance: answer });
    const r = await berth(s, "rebalance", "apply", "--goal", "balance", "--max-moves", "2");
    expect(r.code).toBe(0);
    expect(s.requests("applyRebalance")).toHaveLength(1);
    expect(s.requests("applyRebalance")[0]).toMatchObject({ goal: RebalanceGoal.REBALANCE_GOAL_BALANCE, maxMoves: 2 });
    expect(s.requests("applyRebalance")[0]?.plan).toBeUndefined();
    expect(r.out).toBe(
      "started 1 move:\n" +
        "VM     FROM    TO      PHASE    ID\n" +
        "web-1  host-1  host-3  PENDING  m-1\n" +
        "skipped 1:\n" +
        "  db-2 host-1 -> host-2: db-2 is no longer on host-1\n",
    );
  });

  it("--plan FILE: the JSON that plan -o json printed is sent back as the same plan", async () => {
    const s = await stub({ planRebalance: () => ({ plan }), applyRebalance: answer });
    const printed = await berth(s, "-o", "json", "rebalance", "plan");
    await writeFile(join(dir, "plan.json"), printed.out);
    const r = await berth(s, "rebalance", "apply", "--plan", "plan.json");
    expect(r.code).toBe(0);
    const sent = s.requests("applyRebalance")[0];
    expect(sent?.plan).toEqual(plan); // every field, through proto JSON and the wire
    expect(sent?.goal).toBe(plan.goal);
    expect(sent?.metric).toBe(plan.metric);
    expect(sent?.maxMoves).toBe(0);
  });

  it("-o json prints the response", async () => {
    const s = await stub({ applyRebalance: answer });
    const r = await berth(s, "-o", "json", "rebalance", "apply");
    expect(JSON.parse(r.out)).toEqual(ApplyRebalanceResponse.toJSON(answer(ApplyRebalanceRequest.fromPartial({}))));
  });

  it("started nothing: says so, with the plan's note", async () => {
    const s = await stub({
      applyRebalance: () => ({ plan: RebalancePlan.fromPartial({ note: "the hosts are balanced" }), migrations: [], skipped: [] }),
    });
    const r = await berth(s, "rebalance", "apply", "--wait");
    expect(r.code).toBe(0);
    expect(r.out).toBe("started no moves\nnote: the hosts are balanced\n");
  });

  it.each([
    ["missing.json", undefined, "--plan: cannot read missing.json: ENOENT"],
    ["bad.json", "{ not json", "--plan: bad.json is not JSON"],
    ["vms.json", JSON.stringify([{ name: "web-1" }]), "--plan: vms.json is not a rebalance plan"],
    ["empty.json", JSON.stringify(RebalancePlan.toJSON(RebalancePlan.fromPartial({ imbalanceBefore: 0.02, note: "balanced" }))), "--plan: the plan in empty.json has no moves: nothing to apply"],
    ["goal.json", JSON.stringify({ goal: "REBALANCE_GOAL_SIDEWAYS", moves: [] }), "--plan: goal.json is not a rebalance plan: Unrecognized enum value"],
    ["blank.json", JSON.stringify({ moves: [{ vmName: "web-1", fromHost: "host-1" }] }), "--plan: move 1 of blank.json lacks its VM, source or target"],
  ])("--plan %s that is not a plan with moves: exit 2, nothing sent", async (file, content, message) => {
    if (content !== undefined) await writeFile(join(dir, file), content);
    const s = await stub({ applyRebalance: answer });
    const r = await berth(s, "rebalance", "apply", "--plan", file);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain(message);
    expect(s.calls).toEqual([]);
  });

  it("--plan with --goal or --max-moves is a usage error, nothing sent", async () => {
    await writeFile(join(dir, "plan.json"), JSON.stringify(RebalancePlan.toJSON(plan)));
    const s = await stub({ applyRebalance: answer });
    for (const extra of [["--max-moves", "1"], ["--goal", "balance"], ["--metric", "usage"]]) {
      const r = await berth(s, "rebalance", "apply", "--plan", "plan.json", ...extra);
      expect(r.code).toBe(ExitCode.Usage);
      expect(r.err).toContain("--plan: applies the saved plan as it is");
    }
    expect(s.calls).toEqual([]);
  });

  it("the controller's refusal is printed as is", async () => {
    const s = await stub({
      applyRebalance: () => {
        throw new BerthError(ErrorCode.FailedPrecondition, "a rebalance is already running (3 migrations in flight)");
      },
    });
    const r = await berth(s, "rebalance", "apply");
    expect(r.code).toBe(ExitCode.Conflict);
    expect(r.err).toBe("error: a rebalance is already running (3 migrations in flight)\n");
  });

  it("--wait follows every migration started (by id) until all end: all COMPLETED is exit 0", async () => {
    const polls = new Map<string, number>();
    const s = await stub({
      applyRebalance: () => ({ plan, migrations: [started("web-1", "m-1"), started("db-2", "m-2")], skipped: [] }),
      getMigration: (r) => {
        const n = (polls.get(r.name) ?? 0) + 1;
        polls.set(r.name, n);
        const vm = r.name === "m-1" ? "web-1" : "db-2";
        // m-1 completes on its first poll, m-2 on its third.
        const done = r.name === "m-1" ? n >= 1 : n >= 3;
        return { migration: started(vm, r.name, done ? MigrationPhase.MIGRATION_PHASE_COMPLETED : MigrationPhase.MIGRATION_PHASE_MIGRATING) };
      },
    });
    const r = await berth(s, "rebalance", "apply", "--wait");
    expect(r.code).toBe(0);
    expect(polls.get("m-1")).toBe(1); // not asked again once it ended
    expect(polls.get("m-2")).toBe(3);
    expect(r.err).toBe(
      "waiting up to 3600s for 2 migration(s) to end...\n" +
        "rebalance: 0/2 done, 2 in flight, 0 failed\n" +
        "rebalance: 1/2 done, 1 in flight, 0 failed\n" +
        "rebalance: 2/2 done, 0 in flight, 0 failed\n",
    );
    expect(r.out).toMatch(/^started 2 moves:\n/);
    expect(r.out).toMatch(/^web-1 +host-1 +host-3 +COMPLETED +rebalance /m);
    expect(r.out).toMatch(/^db-2 +host-1 +host-2 +COMPLETED +rebalance /m);
  });

  it("--wait with a FAILED migration: exit 10, naming it and why", async () => {
    const s = await stub({
      applyRebalance: () => ({ plan, migrations: [started("web-1", "m-1"), started("db-2", "m-2")], skipped: [] }),
      getMigration: (r) =>
        r.name === "m-1"
          ? { migration: started("web-1", "m-1", MigrationPhase.MIGRATION_PHASE_COMPLETED) }
          : { migration: started("db-2", "m-2", MigrationPhase.MIGRATION_PHASE_FAILED, { message: "no progress for 150s", errorCode: "DEADLINE_EXCEEDED" }) },
    });
    const r = await berth(s, "rebalance", "apply", "--wait");
    expect(r.code).toBe(ExitCode.MigrationFailed);
    expect(r.err).toContain("rebalance: 1/2 done, 0 in flight, 1 failed\n");
    expect(r.err).toContain(
      "error: 1 of 2 migration(s) failed (those VMs stay on their source hosts):\n  db-2 host-1 -> host-2: DEADLINE_EXCEEDED: no progress for 150s\n",
    );
  });

  it("--wait -o json prints the response with the migrations as they ended", async () => {
    const s = await stub({
      applyRebalance: () => ({ plan, migrations: [started("web-1", "m-1")], skipped: [] }),
      getMigration: () => ({ migration: started("web-1", "m-1", MigrationPhase.MIGRATION_PHASE_COMPLETED) }),
    });
    const r = await berth(s, "-o", "json", "rebalance", "apply", "--wait");
    expect(r.code).toBe(0);
    expect(r.err).toBe("");
    const json = ApplyRebalanceResponse.fromJSON(JSON.parse(r.out));
    expect(json.migrations.map((m) => m.phase)).toEqual([MigrationPhase.MIGRATION_PHASE_COMPLETED]);
  });

  it("--wait times out with exit 8", async () => {
    const s = await stub({
      applyRebalance: () => ({ plan, migrations: [started("web-1", "m-1")], skipped: [] }),
      getMigration: () => ({ migration: started("web-1", "m-1", MigrationPhase.MIGRATION_PHASE_MIGRATING) }),
    });
    const r = await berth(s, "rebalance", "apply", "--wait", "--wait-timeout", "0.2");
    expect(r.code).toBe(ExitCode.WaitTimeout);
    expect(r.err).toContain("timed out after 0.2s waiting for the rebalance's migrations (0/1 done, 1 in flight, 0 failed)");
  });
});

describe("config: rebalance and migration settings", () => {
  it("config show: set values, and the defaults of those unset", async () => {
    const config = ClusterConfig.fromPartial({
      rebalance: { enabled: true, goal: RebalanceGoal.REBALANCE_GOAL_CONSOLIDATE, intervalMs: 600_000, threshold: 0.15 },
      migration: { parallelMigrations: 8, completionTimeoutPerGibS: 200 },
    });
    const s = await stub({ getClusterConfig: () => ({ config }) });
    const r = await berth(s, "config", "show");
    expect(r.code).toBe(0);
    expect(r.out).toContain(
      "Rebalancing:\n" +
        "  Continuous:          on\n" +
        "  Goal:                consolidate\n" +
        "  Metric:              usage where measured, else allocation (default)\n" +
        "  Interval:            10m\n" +
        "  Threshold:           0.15\n" +
        "  Rounds:              3 (default)\n" +
        "  Max moves per pass:  4 (default)\n" +
        "  VM cooldown:         1h (default)\n" +
        "  Host cooldown:       10m (default)\n" +
        "\n" +
        "Migrations:\n" +
        "  Parallel:           8\n" +
        "  Outbound per host:  2 (default)\n" +
        "  Timeout per GiB:    3m20s\n" +
        "  Progress timeout:   2m30s (default)\n",
    );
  });

  it("config set changes only the rebalance and migration fields named, keeping the rest", async () => {
    const current = ClusterConfig.fromPartial({
      scheduler: { preset: "pack" },
      rebalance: { enabled: false, threshold: 0.2, rounds: 5 },
      migration: { outboundPerHost: 3 },
    });
    const s = await stub({ getClusterConfig: () => ({ config: current }), updateClusterConfig: (r) => ({ config: r.config }) });
    const r = await berth(
      s, "config", "set",
      "--rebalance", "on", "--rebalance-goal", "consolidate", "--rebalance-metric", "allocation", "--rebalance-interval", "10m", "--rebalance-max-moves", "6",
      "--rebalance-vm-cooldown", "2h", "--rebalance-host-cooldown", "15m",
      "--parallel-migrations", "8", "--migration-timeout-per-gib", "3m20s", "--migration-progress-timeout", "90s",
    );
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const sent = s.requests("updateClusterConfig")[0]?.config;
    expect(sent?.scheduler?.preset).toBe("pack");
    expect(sent?.rebalance).toMatchObject({
      enabled: true,
      goal: RebalanceGoal.REBALANCE_GOAL_CONSOLIDATE,
      metric: RebalanceMetric.REBALANCE_METRIC_ALLOCATION,
      intervalMs: 600_000,
      threshold: 0.2,
      rounds: 5,
      maxMovesPerPass: 6,
      vmCooldownMs: 7_200_000,
      hostCooldownMs: 900_000,
    });
    expect(sent?.migration).toEqual({ parallelMigrations: 8, outboundPerHost: 3, completionTimeoutPerGibS: 200, progressTimeoutS: 90 });
  });

  it("a scheduler change leaves the rebalance and migration settings as they are", async () => {
    const current = ClusterConfig.fromPartial({ rebalance: { enabled: true, rounds: 5 }, migration: { parallelMigrations: 8 } });
    const s = await stub({ getClusterConfig: () => ({ config: current }), updateClusterConfig: (r) => ({ config: r.config }) });
    expect((await berth(s, "config", "set", "--preset", "spread")).code).toBe(0);
    const sent = s.requests("updateClusterConfig")[0]?.config;
    expect(sent?.rebalance).toEqual(current.rebalance);
    expect(sent?.migration).toEqual(current.migration);
  });

  it.each([
    [["--rebalance", "yes"], "--rebalance"],
    [["--rebalance-goal", "spread"], "--rebalance-goal"],
    [["--rebalance-metric", "cpu"], "--rebalance-metric"],
    [["--rebalance-interval", "300"], "--rebalance-interval: '300' needs a unit"],
    [["--rebalance-threshold", "-1"], "--rebalance-threshold"],
    [["--rebalance-rounds", "0"], "--rebalance-rounds: must be from 1 to 1000"],
    [["--parallel-migrations", "many"], "--parallel-migrations: 'many' is not a whole number"],
    [["--migration-timeout-per-gib", "1500ms"], "--migration-timeout-per-gib: must be whole seconds"],
    [["--migration-progress-timeout", "60d"], "--migration-progress-timeout: must be at most 30 days"],
  ])("config set %j is a usage error, nothing sent", async (flags, message) => {
    const s = await stub({ getClusterConfig: () => ({}), updateClusterConfig: (r) => ({ config: r.config }) });
    const r = await berth(s, "config", "set", ...flags);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain(message);
    expect(s.calls).toEqual([]);
  });
});

describe("help", () => {
  it.each([["rebalance"], ["rebalance plan"], ["rebalance apply"]])("%s --help says what it does, with examples", async (words) => {
    const io = recordingIo();
    expect(await run([...words.split(" "), "--help"], io)).toBe(0);
    expect(io.out).toMatch(/Examples?:\n {2}berth /);
  });

  it("rebalance apply --help tells of --plan FILE, the re-check, --wait and exit 10", async () => {
    const io = recordingIo();
    expect(await run(["rebalance", "apply", "--help"], io)).toBe(0);
    expect(io.out).toContain("--plan <file>");
    expect(io.out).toContain("re-checks each move");
    expect(io.out).toContain("exit 10");
  });

  it("config set --help shows the rebalance and migration flags", async () => {
    const io = recordingIo();
    expect(await run(["config", "set", "--help"], io)).toBe(0);
    for (const flag of ["--rebalance <on|off>", "--rebalance-goal", "--parallel-migrations", "--migration-timeout-per-gib"]) {
      expect(io.out).toContain(flag);
    }
  });
});
