import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import {
  ApplyRebalanceRequest,
  ApplyRebalanceResponse,
  MigrationPhase,
  PlanRebalanceRequest,
  RebalanceGoal,
  RebalanceMetric,
  RebalancePlan,
  type Migration,
} from "@berth/api";
import { deadlineIn, ErrorCode, fromGrpcError } from "@berth/core";
import { Option, type Command } from "commander";
import type { ControllerClient } from "../client.js";
import type { CliContext, GlobalOptions } from "../context.js";
import { CliError, ExitCode, usageError } from "../exit-codes.js";
import {
  migrationEnded,
  migrationListView,
  migrationMessage,
  rebalanceApplyText,
  rebalanceApplyView,
  rebalancePlanView,
} from "../format.js";
import { isHuman, render } from "../output.js";
import { parseInteger } from "../parse.js";
import { ProgressLine } from "../progress.js";
import { pollUntil } from "../wait.js";
import { addMigrationWaitOptions, migrationWaitTimeoutMs, type MigrationWaitFlags } from "./migration.js";

const EXIT_CODES_SEE = "Exit codes: see berth --help.";

/** Most moves one plan may hold, as the controller takes it. */
const MAX_MOVES = 1000;

const GOAL_OF_FLAG: Readonly<Record<string, RebalanceGoal>> = {
  balance: RebalanceGoal.REBALANCE_GOAL_BALANCE,
  consolidate: RebalanceGoal.REBALANCE_GOAL_CONSOLIDATE,
};

export const METRIC_OF_FLAG: Readonly<Record<string, RebalanceMetric>> = {
  usage: RebalanceMetric.REBALANCE_METRIC_USAGE,
  allocation: RebalanceMetric.REBALANCE_METRIC_ALLOCATION,
};

interface PlanFlags {
  goal?: string;
  maxMoves?: string;
  metric?: string;
}

/**
 * `--goal`, `--max-moves` and `--metric`, parsed: unset is 0 for each, the controller's defaults
 * (balance; 20; measured use when every host reports it, else allocation).
 */
function parsePlanFlags(flags: PlanFlags): { goal: RebalanceGoal; maxMoves: number; metric: RebalanceMetric } {
  const goal = flags.goal === undefined ? RebalanceGoal.REBALANCE_GOAL_UNSPECIFIED : (GOAL_OF_FLAG[flags.goal] ?? RebalanceGoal.REBALANCE_GOAL_UNSPECIFIED);
  const maxMoves = flags.maxMoves === undefined ? 0 : parseInteger(flags.maxMoves, "--max-moves", 1, MAX_MOVES);
  const metric =
    flags.metric === undefined ? RebalanceMetric.REBALANCE_METRIC_UNSPECIFIED : (METRIC_OF_FLAG[flags.metric] ?? RebalanceMetric.REBALANCE_METRIC_UNSPECIFIED);
  return { goal, maxMoves, metric };
}

function addPlanOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--goal <goal>", "balance: even out host utilisation (default); consolidate: empty hosts the others can hold").choices(
        Object.keys(GOAL_OF_FLAG),
      ),
    )
    .option("--max-moves <n>", `at most this many moves (1-${MAX_MOVES}; default: the controller's, 20)`)
    .addOption(
      new Option(
        "--metric <metric>",
        "what a host's utilisation is measured by: usage (what its VMs use, as measured) or allocation (what they ask for); default: usage when every host reports it, else allocation",
      ).choices(Object.keys(METRIC_OF_FLAG)),
    );
}

/**
 * Reads the plan `rebalance plan -o json` printed (RebalancePlan's proto JSON) from `file`, a path
 * from the working directory. A file that is not such a plan (no `moves` array: another answer's
 * JSON, say), a plan without moves, or a move without its VM or hosts is a usage error: nothing
 * is sent.
 */
async function readPlanFile(ctx: CliContext, file: string): Promise<RebalancePlan> {
  const path = resolve(ctx.io.cwd, file);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw usageError(`--plan: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw usageError(`--plan: ${file} is not JSON (${(e as Error).message}); write it with berth rebalance plan -o json > ${file}`);
  }
  const isObject = parsed !== null && typeof parsed === "object" && !Array.isArray(parsed);
  if (!isObject || !Array.isArray((parsed as { moves?: unknown }).moves)) {
    // An empty plan's JSON has no "moves" (proto JSON leaves out empty lists), but its other fields.
    const emptyPlan = isObject && ["goal", "imbalanceBefore", "note", "computedAtMs"].some((k) => k in (parsed as object));
    throw usageError(
      emptyPlan
        ? `--plan: the plan in ${file} has no moves: nothing to apply`
        : `--plan: ${file} is not a rebalance plan (no "moves"); write one with berth rebalance plan -o json > ${file}`,
    );
  }
  let plan: RebalancePlan;
  try {
    plan = RebalancePlan.fromJSON(parsed);
  } catch (e) {
    throw usageError(`--plan: ${file} is not a rebalance plan: ${(e as Error).message}`);
  }
  if (plan.moves.length === 0) throw usageError(`--plan: the plan in ${file} has no moves: nothing to apply`);
  const blank = plan.moves.findIndex((m) => m.vmName === "" || m.fromHost === "" || m.toHost === "");
  if (blank >= 0) throw usageError(`--plan: move ${blank + 1} of ${file} lacks its VM, source or target (vmName, fromHost, toHost)`);
  return plan;
}

/** Counts of a set of migrations followed together. */
interface Tally {
  done: number;
  failed: number;
  inFlight: number;
}

function tally(migrations: readonly Migration[]): Tally {
  let done = 0;
  let failed = 0;
  for (const m of migrations) {
    if (m.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED) done++;
    else if (m.phase === MigrationPhase.MIGRATION_PHASE_FAILED) failed++;
  }
  return { done, failed, inFlight: migrations.length - done - failed };
}

const tallyText = (t: Tally, total: number): string => `rebalance: ${t.done}/${total} done, ${t.inFlight} in flight, ${t.failed} failed`;

/**
 * Follows the migrations a plan started (each by its id) until every one has ended; returns them
 * as they ended, in plan order. With table output, a progress line on stderr (done / total, in
 * flight, failed). Exit 8 when `timeoutMs` passes first.
 */
async function followAll(ctx: CliContext, g: GlobalOptions, client: ControllerClient, started: readonly Migration[], timeoutMs: number): Promise<Migration[]> {
  const current = [...started];
  const progress = isHuman(g.output) ? new ProgressLine(ctx.io) : undefined;
  if (progress) ctx.io.stderr(`waiting up to ${timeoutMs / 1000}s for ${started.length} migration(s) to end...\n`);
  const result = await pollUntil(
    ctx.io,
    async (deadline) => {
      // Only those still in flight are asked again.
      await Promise.all(
        current.map(async (m, i) => {
          if (migrationEnded(m)) return;
          try {
            const found = (await client.getMigration({ name: m.id || m.vmName }, { deadline })).migration;
            if (found) current[i] = found;
          } catch (e) {
            // Gone by id: it ended and a later migration of the VM replaced it. Its outcome is not known.
            if (fromGrpcError(e).code !== ErrorCode.NotFound) throw e;
            current[i] = { ...m, phase: MigrationPhase.MIGRATION_PHASE_FAILED, message: "no longer known to the controller (replaced by a later migration of the VM); its outcome is unknown" };
          }
        }),
      );
      return current;
    },
    (ms) => {
      const t = tally(ms);
      progress?.update(tallyText(t, ms.length));
      return t.inFlight === 0 ? [...ms] : undefined;
    },
    { deadline: deadlineIn(timeoutMs), initial: current },
  ).finally(() => progress?.end());
  if (result.status === "decided") return result.value;
  throw new CliError(
    `timed out after ${timeoutMs / 1000}s waiting for the rebalance's migrations (${tallyText(tally(current), current.length).replace("rebalance: ", "")}); ` +
      "they go on: berth migration list --active",
    ExitCode.WaitTimeout,
  );
}

/** Adds `berth rebalance plan|apply`. */
export function registerRebalanceCommands(program: Command, ctx: CliContext): void {
  const rebalance = program
    .command("rebalance")
    .description("Even out (or consolidate) the hosts by live-migrating VMs: see the plan, then apply it")
    .addHelpText("after", "\nExamples:\n  berth rebalance plan\n  berth rebalance apply --wait");

  addPlanOptions(
    rebalance
      .command("plan")
      .description("Show the moves the rebalancer would make now, in order, each with its reason, benefit and cost; nothing is changed"),
  )
    .addHelpText(
      "after",
      `
balance lowers the imbalance (the standard deviation of the hosts' utilisation); consolidate
empties hosts whose VMs the others can hold (keeping some free capacity), to switch them off.
Utilisation is measured by --metric: usage (what the VMs use, as the agents measure it) or
allocation (what they ask for, against allocatable capacity); unset, the controller takes usage
when every host reports it, else allocation, and the plan says which.
Columns: # (the order the moves are made in), VM, FROM, TO, BENEFIT (the drop in imbalance, or
for consolidate the host it helps to free), COST GIB (memory, and copied disk, moved), IMBALANCE
AFTER (the plan's imbalance once this move is made), REASON. Then the imbalance before -> after,
GiB moved, hosts freed, and the controller's note (why there are no more moves).

With -o json: the plan (RebalancePlan's proto JSON). Save it and apply exactly it later, each
move re-checked first: berth rebalance apply --plan FILE. ${EXIT_CODES_SEE}

Examples:
  berth rebalance plan
  berth rebalance plan --goal consolidate --max-moves 5
  berth rebalance plan --metric allocation
  berth rebalance plan -o json > plan.json`,
    )
    .action(async (flags: PlanFlags, cmd: Command) => {
      const g = ctx.globals(cmd);
      const request = parsePlanFlags(flags);
      const { plan } = await ctx.client(g).planRebalance(PlanRebalanceRequest.fromPartial(request));
      if (!plan) throw new CliError("the controller's answer to PlanRebalance has no plan", ExitCode.Error);
      ctx.io.stdout(render(g.output, rebalancePlanView(plan)));
    });

  addMigrationWaitOptions(
    addPlanOptions(
      rebalance
        .command("apply")
        .description("Start the moves of a fresh plan, or of a saved one (--plan FILE), as live migrations")
        .option("--plan <file>", "apply this plan (what berth rebalance plan -o json printed) instead of a fresh one"),
    ),
    "return once every migration started has ended: all COMPLETED (exit 0), or any FAILED (exit 10)",
  )
    .addHelpText(
      "after",
      `
The controller re-checks each move against the cluster as it is now (the VM still where the plan
found it and running, the target still fitting it) and starts those that pass as migrations
(reason rebalance), in plan order; the others are skipped, each with why. Prints the moves started
(VM, FROM, TO, PHASE, migration ID) and those skipped. --plan takes the plan's own goal and
metric: it does not go with --goal, --max-moves or --metric. A file that is not a plan, or a plan without moves, is exit 2
and nothing is sent.

--wait: follows every migration started (GetMigration, once a second) with a progress line on
stderr (done / total, in flight, failed), then prints them as they ended. Any FAILED: exit 10,
naming them. With -o json: the ApplyRebalanceResponse (with --wait, the migrations as they
ended). ${EXIT_CODES_SEE}

Examples:
  berth rebalance apply --wait
  berth rebalance apply --goal consolidate --max-moves 3
  berth rebalance plan -o json > plan.json && berth rebalance apply --plan plan.json --wait`,
    )
    .action(async (flags: PlanFlags & MigrationWaitFlags & { plan?: string }, cmd: Command) => {
      const g = ctx.globals(cmd);
      if (flags.plan !== undefined && (flags.goal !== undefined || flags.maxMoves !== undefined || flags.metric !== undefined)) {
        throw usageError("--plan: applies the saved plan as it is; --goal, --max-moves and --metric are for a fresh plan, leave them out");
      }
      const waitMs = migrationWaitTimeoutMs(flags);
      const fresh = parsePlanFlags(flags);
      const plan = flags.plan === undefined ? undefined : await readPlanFile(ctx, flags.plan);
      const client = ctx.client(g);
      // A saved plan is applied as it is: the goal and limits of a fresh plan do not apply to it.
      const response = await client.applyRebalance(
        ApplyRebalanceRequest.fromPartial(plan ? { goal: plan.goal, maxMoves: 0, metric: plan.metric, plan } : { ...fresh }),
      );
      if (!flags.wait || response.migrations.length === 0) {
        ctx.io.stdout(render(g.output, rebalanceApplyView(response)));
        return;
      }
      if (isHuman(g.output)) ctx.io.stdout(rebalanceApplyText(response));
      const ended = await followAll(ctx, g, client, response.migrations, waitMs);
      const endedView = migrationListView(ended, ctx.io.now());
      ctx.io.stdout(
        isHuman(g.output)
          ? `\n${render(g.output, endedView)}`
          : render(g.output, { ...rebalanceApplyView(ApplyRebalanceResponse.fromPartial({ ...response, migrations: ended })), names: endedView.names }),
      );
      const failed = ended.filter((m) => m.phase === MigrationPhase.MIGRATION_PHASE_FAILED);
      if (failed.length > 0) {
        const lines = failed.map((m) => `  ${m.vmName} ${m.sourceHost} -> ${m.targetHost || "-"}: ${migrationMessage(m) || "no reason given"}`);
        throw new CliError(
          `${failed.length} of ${ended.length} migration(s) failed (those VMs stay on their source hosts):\n${lines.join("\n")}`,
          ExitCode.MigrationFailed,
        );
      }
    });
}
