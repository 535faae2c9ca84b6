import { randomUUID } from "node:crypto";
import { MigrationPhase, type Migration } from "@berth/api";
import { BerthError, deadlineIn, ErrorCode } from "@berth/core";
import type { Command } from "commander";
import type { ControllerClient } from "../client.js";
import type { CliContext, GlobalOptions } from "../context.js";
import { CliError, ExitCode, usageError } from "../exit-codes.js";
import {
  migrationDetailView,
  migrationEnded,
  migrationListView,
  migrationMessage,
  migrationPercent,
  migrationPhaseName,
  migrationProgressText,
  migrationView,
} from "../format.js";
import { isHuman, render } from "../output.js";
import { parseName, parseSecondsMs } from "../parse.js";
import { ProgressLine } from "../progress.js";
import { retryUntilAnswered } from "../retry.js";
import { pollUntil } from "../wait.js";

const EXIT_CODES_SEE = "Exit codes: see berth --help.";

/**
 * Default `--wait-timeout` of the verbs that follow migrations, in seconds. Longer than a VM's
 * create: the controller allows 150 s per GiB moved before it aborts a migration itself.
 */
export const DEFAULT_MIGRATION_WAIT_TIMEOUT_S = 3600;
/** Default `--migrate-timeout`, in seconds: as `vm create`'s `--create-timeout`. */
export const DEFAULT_MIGRATE_TIMEOUT_S = 30;

export interface MigrationWaitFlags {
  wait?: boolean;
  waitTimeout?: string;
}

export const migrationWaitTimeoutMs = (flags: MigrationWaitFlags): number =>
  parseSecondsMs(flags.waitTimeout ?? String(DEFAULT_MIGRATION_WAIT_TIMEOUT_S), "--wait-timeout");

export function addMigrationWaitOptions(cmd: Command, what: string): Command {
  return cmd
    .option("--wait", what)
    .option("--wait-timeout <seconds>", `how long --wait waits (default: ${DEFAULT_MIGRATION_WAIT_TIMEOUT_S})`);
}

/** The record in an answer, or an error saying the answer lacks it. */
export function requiredMigration(m: Migration | undefined, what: string): Migration {
  if (!m) throw new CliError(`the controller's answer to ${what} has no migration`, ExitCode.Error);
  return m;
}

/** A NAME|ID argument: the VM's name or the migration's id, passed on as given. */
function parseMigrationRef(text: string): string {
  const ref = text.trim();
  if (ref === "") throw usageError("NAME|ID: must not be empty (the VM's name or the migration's id)");
  return ref;
}

/**
 * What changes in the progress line often enough to be worth a plain line (a log): the phase, the
 * target, and the progress in steps of 10%.
 */
function progressStep(m: Migration): string {
  const percent = migrationPercent(m);
  return `${m.phase}|${m.targetHost}|${percent === undefined ? "-" : Math.floor(percent / 10)}|${m.abortRequested}`;
}

/**
 * Follows a migration (by id, so a later migration of the same VM is not mistaken for it) until it
 * is COMPLETED or FAILED, and returns it; with table output, a progress line on stderr. Exit 8 when
 * `timeoutMs` passes first.
 */
export async function followMigration(
  ctx: CliContext,
  g: GlobalOptions,
  client: ControllerClient,
  start: Migration,
  timeoutMs: number,
): Promise<Migration> {
  const ref = start.id || start.vmName;
  const progress = isHuman(g.output) ? new ProgressLine(ctx.io) : undefined;
  if (progress && !migrationEnded(start)) {
    ctx.io.stderr(`waiting up to ${timeoutMs / 1000}s for the migration of vm ${start.vmName} to end...\n`);
  }
  const result = await pollUntil(
    ctx.io,
    async (deadline) => requiredMigration((await client.getMigration({ name: ref }, { deadline })).migration, "GetMigration"),
    (m) => {
      progress?.update(migrationProgressText(m), progressStep(m));
      return migrationEnded(m) ? m : undefined;
    },
    { deadline: deadlineIn(timeoutMs), initial: start },
  ).finally(() => progress?.end());
  if (result.status === "decided") return result.value;
  const last = result.last ?? start;
  throw new CliError(
    `timed out after ${timeoutMs / 1000}s waiting for the migration of vm ${start.vmName} to end ` +
      `(last: ${migrationProgressText(last)}); it goes on: berth migration show ${start.vmName}`,
    ExitCode.WaitTimeout,
  );
}

/** The exit-code-10 error of a migration that ended FAILED. */
export function migrationFailed(m: Migration): CliError {
  return new CliError(
    `migration of vm ${m.vmName} to ${m.targetHost || "another host"} failed: ${migrationMessage(m) || "no reason given"}; ` +
      `the VM stays on ${m.sourceHost || "its host"}`,
    ExitCode.MigrationFailed,
  );
}

function printMigration(ctx: CliContext, g: GlobalOptions, m: Migration): void {
  ctx.io.stdout(render(g.output, migrationView(m, ctx.io.now())));
}

/** A message on one line (a multi-address failure lists one address a line). */
const oneLine = (text: string): string => text.replace(/\n\s*/g, "; ");

/**
 * Sends MigrateVm carrying `requestId`, and again with the same id while no leader, nobody
 * reachable or no answer at all (as `vm create` does): the controller returns the migration that
 * request made rather than starting a second. Sent with no answer ever: "outcome unknown", exit 9.
 */
async function migrateIdempotently(
  ctx: CliContext,
  client: ControllerClient,
  name: string,
  targetHost: string,
  timeoutMs: number,
): Promise<Migration> {
  // One id for every attempt of this invocation: a retry is the same request, not a new one.
  const requestId = randomUUID();
  const outcome = await retryUntilAnswered((deadline) => client.migrateVm({ name, targetHost, requestId }, { deadline }), {
    deadline: deadlineIn(timeoutMs),
    onRetry: (error, delayMs) => {
      ctx.io.stderr(`vm migrate: ${oneLine(error.message)}; retrying in ${(delayMs / 1000).toFixed(1)}s with the same request id\n`);
    },
  });
  if (outcome.ok) return requiredMigration(outcome.value.migration, "MigrateVm");
  const { error } = outcome;
  const unknown = (last: BerthError): CliError =>
    new CliError(
      `outcome unknown: a migration of vm ${name} may have been started; check with: berth migration show ${name}\n` +
        `  no answer after ${outcome.attempts} attempt(s) in ${timeoutMs / 1000}s (--migrate-timeout); last: ${oneLine(last.message)}\n` +
        `  this command's request id: ${requestId}`,
      ExitCode.OutcomeUnknown,
      { cause: last },
    );
  if (outcome.unanswered && (error.code === ErrorCode.AlreadyExists || error.code === ErrorCode.FailedPrecondition)) {
    // "Already migrating" after an attempt got no answer may be this command's own migration,
    // started by the lost attempt: it is, if it carries this request id.
    let mine: Migration | undefined;
    try {
      mine = await migrationOfRequest(client, name, requestId);
    } catch (e) {
      throw unknown(e instanceof BerthError ? e : error);
    }
    if (mine) return mine;
    throw error;
  }
  if (outcome.unanswered && outcome.exhausted) throw unknown(error);
  if (outcome.exhausted && outcome.attempts > 1) {
    throw new BerthError(error.code, `${error.message}\n  (tried ${outcome.attempts} times in ${timeoutMs / 1000}s; no migration was started)`, {
      cause: error,
    });
  }
  throw error;
}

/** The VM's latest migration if the MigrateVm with `requestId` started it; `undefined` if another did or there is none. */
async function migrationOfRequest(client: ControllerClient, name: string, requestId: string): Promise<Migration | undefined> {
  try {
    const { migration } = await client.getMigration({ name });
    return migration?.requestId === requestId ? migration : undefined;
  } catch (e) {
    if (e instanceof BerthError && e.code === ErrorCode.NotFound) return undefined;
    throw e;
  }
}

/** Adds `berth vm migrate` to the `vm` command. */
export function registerVmMigrateCommand(vm: Command, ctx: CliContext): void {
  addMigrationWaitOptions(
    vm
      .command("migrate")
      .description("Live-migrate a running VM to another host: the one named by --to, or the one the scheduler picks")
      .argument("<name>", "VM name")
      .option("--to <host>", "the target host (default: the scheduler picks, with the filters and weighers of a create)")
      .option(
        "--migrate-timeout <seconds>",
        `how long to keep retrying the request through a leader change or a lost answer (default: ${DEFAULT_MIGRATE_TIMEOUT_S})`,
      ),
    "return once the migration is COMPLETED (exit 0) or FAILED (exit 10, with the reason)",
  )
    .addHelpText(
      "after",
      `
The controller records the migration (PENDING) and runs it when a slot is free (at most 2
outbound per host and 5 in the cluster by default, drains first): it picks the target if --to is
not given, prepares it (PREPARING), copies the running VM's memory while it runs (MIGRATING),
switches over (FINISHING) and ends COMPLETED, the VM running on the target; or it rolls back
(ABORTING) and ends FAILED, the VM still running on its source. Prints the migration. A --to that
breaks a placement rule is refused with the filter's reason, as is a VM that is not running or
is already migrating: the controller's error is printed with its exit code. Follow it with berth
migration show NAME, stop it with berth migration abort NAME.

As vm create, the request carries a fresh request id and is sent again, with the same id, through
a leader change or a lost answer until --migrate-timeout: the controller returns the migration
that id started; "already migrating" after a lost answer is success only if the VM's migration
carries this id (migration show prints its Request ID). Sent but never answered: exit 9 (check
with berth migration show NAME).

--wait: follows the migration (GetMigration, once a second) with a progress line on stderr (phase,
target, data left / total, %), redrawn in place on a terminal, a line per phase or 10% otherwise;
prints the migration as it ended. ${EXIT_CODES_SEE}

Examples:
  berth vm migrate web-1
  berth vm migrate web-1 --to host-3 --wait
  berth vm migrate db-1 --wait --wait-timeout 7200 -o json`,
    )
    .action(async (name: string, flags: MigrationWaitFlags & { to?: string; migrateTimeout?: string }, cmd: Command) => {
      const g = ctx.globals(cmd);
      parseName(name);
      const targetHost = flags.to === undefined ? "" : parseName(flags.to.trim(), "--to");
      const waitMs = migrationWaitTimeoutMs(flags);
      const timeoutMs = parseSecondsMs(flags.migrateTimeout ?? String(DEFAULT_MIGRATE_TIMEOUT_S), "--migrate-timeout");
      const client = ctx.client(g);
      const started = await migrateIdempotently(ctx, client, name, targetHost, timeoutMs);
      if (!flags.wait) {
        printMigration(ctx, g, started);
        return;
      }
      const ended = await followMigration(ctx, g, client, started, waitMs);
      printMigration(ctx, g, ended);
      if (ended.phase === MigrationPhase.MIGRATION_PHASE_FAILED) throw migrationFailed(ended);
    });
}

/** Adds `berth migration list|show|abort`. */
export function registerMigrationCommands(program: Command, ctx: CliContext): void {
  const migration = program
    .command("migration")
    .description("List, inspect and abort live migrations (started by vm migrate, host drain or rebalance)")
    .addHelpText("after", "\nExample:\n  berth migration list --active");

  migration
    .command("list")
    .description("List migrations: those in flight first (oldest first), then finished ones (newest first)")
    .option("--active", "only migrations in flight (not COMPLETED or FAILED)")
    .option("--host <id>", "only migrations leaving or entering this host")
    .addHelpText(
      "after",
      `
Columns: VM, FROM, TO (- while the scheduler has not picked), PHASE (PENDING, PREPARING,
MIGRATING, FINISHING, COMPLETED, ABORTING, FAILED), REASON (operator, drain, rebalance),
PROGRESS (data sent, as the source last reported), AGE (since it was asked for), DURATION (since
it left PENDING, to its end), MESSAGE (why it failed). A VM keeps its last migration until its
next one. With -o json: a JSON array of migrations. ${EXIT_CODES_SEE}

Examples:
  berth migration list
  berth migration list --active --host host-1 -o json`,
    )
    .action(async (flags: { active?: boolean; host?: string }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const hostId = flags.host === undefined ? "" : parseName(flags.host.trim(), "--host");
      const { migrations } = await ctx.client(g).listMigrations({ activeOnly: flags.active === true, hostId });
      ctx.io.stdout(render(g.output, migrationListView(migrations, ctx.io.now())));
    });

  migration
    .command("show")
    .description("Show one migration in detail: phase and since when, hosts, progress, timings, deadline, why it failed")
    .argument("<name|id>", "the VM's name (its latest migration) or the migration's id")
    .addHelpText(
      "after",
      `
Progress is what the source's hypervisor last reported: data sent and left, the pre-copy pass,
how fast the guest dirties memory. Deadline: when the controller aborts it if still copying. No
migration for that VM or id: exit 3. ${EXIT_CODES_SEE}

Examples:
  berth migration show web-1
  berth migration show 3f9a2c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b -o json`,
    )
    .action(async (ref: string, _flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      const found = requiredMigration((await ctx.client(g).getMigration({ name: parseMigrationRef(ref) })).migration, "GetMigration");
      ctx.io.stdout(render(g.output, migrationDetailView(found, ctx.io.now())));
    });

  addMigrationWaitOptions(
    migration
      .command("abort")
      .description("Stop a migration: a pending one fails at once, one in flight is rolled back (the VM stays on its source)")
      .argument("<name|id>", "the VM's name (its migration in flight) or the migration's id"),
    "return once the migration has ended: FAILED, rolled back (exit 0), or COMPLETED, too late to roll back (exit 6)",
  )
    .addHelpText(
      "after",
      `
A migration whose domain has already left its source cannot be rolled back: it completes, the VM
on the target. Prints the migration (abort requested, ABORTING while it is rolled back). An ended
migration, or none: the controller's answer (exit 6 or 3). ${EXIT_CODES_SEE}

Examples:
  berth migration abort web-1
  berth migration abort web-1 --wait`,
    )
    .action(async (ref: string, flags: MigrationWaitFlags, cmd: Command) => {
      const g = ctx.globals(cmd);
      const name = parseMigrationRef(ref);
      const waitMs = migrationWaitTimeoutMs(flags);
      const client = ctx.client(g);
      const aborting = requiredMigration((await client.abortMigration({ name })).migration, "AbortMigration");
      if (!flags.wait) {
        printMigration(ctx, g, aborting);
        return;
      }
      const ended = await followMigration(ctx, g, client, aborting, waitMs);
      printMigration(ctx, g, ended);
      if (ended.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED) {
        throw new CliError(
          `migration of vm ${ended.vmName} completed before it could be rolled back: the VM now runs on ${ended.targetHost || "its target"}`,
          ExitCode.Conflict,
        );
      }
      if (isHuman(g.output)) {
        ctx.io.stderr(`migration of vm ${ended.vmName} aborted (${migrationPhaseName(ended.phase)}); the VM stays on ${ended.sourceHost || "its host"}\n`);
      }
    });
}
