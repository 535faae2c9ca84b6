import {
  ClusterConfig,
  MigrationConfig,
  RebalanceConfig,
  RebalanceGoal,
  RebalanceMetric,
  SchedulerConfig,
  type AllocationRatio,
  type HostFailurePolicy,
  type Resources,
} from "@berth/api";
import type { Command } from "commander";
import { Option } from "commander";
import type { CliContext, GlobalOptions } from "../context.js";
import { CliError, ExitCode, usageError } from "../exit-codes.js";
import { clusterConfigView } from "../format.js";
import { render } from "../output.js";
import { parseDecimal, parseDiskGib, parseDurationMs, parseInteger, parseMemoryMib, parseWeights } from "../parse.js";
import { collect, ON_HOST_FAILURE_OF_FLAG } from "./spec-flags.js";

/** `--preset` values. */
export const PRESETS = ["spread", "pack", "balanced"] as const;

/** `config set` flags, as commander hands them over. */
interface ConfigSetFlags {
  preset?: string;
  weight?: string[];
  cpuRatio?: string;
  memoryRatio?: string;
  diskRatio?: string;
  reserveVcpus?: string;
  reserveMemory?: string;
  reserveDisk?: string;
  maxVmsPerHost?: string;
  seed?: string;
  defaultOnHostFailure?: string;
  rebalance?: string;
  rebalanceGoal?: string;
  rebalanceMetric?: string;
  rebalanceInterval?: string;
  rebalanceThreshold?: string;
  rebalanceRounds?: string;
  rebalanceMaxMoves?: string;
  rebalanceVmCooldown?: string;
  rebalanceHostCooldown?: string;
  parallelMigrations?: string;
  outboundMigrationsPerHost?: string;
  migrationTimeoutPerGib?: string;
  migrationProgressTimeout?: string;
}

/** The changes `config set` asked for, parsed: only the fields given are set. */
export interface SchedulerChanges {
  /** `ClusterConfig.default_on_host_failure`: the policy of VMs that leave theirs unset. */
  defaultOnHostFailure?: HostFailurePolicy;
  preset?: string;
  /** A weight, or `undefined` to drop that override. */
  weights?: Map<string, number | undefined>;
  allocationRatio?: Partial<AllocationRatio>;
  reserved?: Partial<Resources>;
  maxVmsPerHost?: number;
  seed?: number;
  /** `ClusterConfig.rebalance`, field by field. */
  rebalance?: Partial<RebalanceConfig>;
  /** `ClusterConfig.migration`, field by field. */
  migration?: Partial<MigrationConfig>;
}

const MAX_UINT32 = 2 ** 32 - 1;
/** The longest duration a uint32 of milliseconds holds is 49 days; a month is plenty for these. */
const MAX_CONFIG_DURATION_MS = 30 * 86_400_000;

/** `--rebalance on|off`. */
const ENABLED_OF_FLAG: Readonly<Record<string, boolean>> = { on: true, off: false };
/** `--rebalance-goal`. */
const GOAL_OF_FLAG: Readonly<Record<string, RebalanceGoal>> = {
  balance: RebalanceGoal.REBALANCE_GOAL_BALANCE,
  consolidate: RebalanceGoal.REBALANCE_GOAL_CONSOLIDATE,
};

/** `--rebalance-metric`. */
const METRIC_OF_FLAG: Readonly<Record<string, RebalanceMetric>> = {
  usage: RebalanceMetric.REBALANCE_METRIC_USAGE,
  allocation: RebalanceMetric.REBALANCE_METRIC_ALLOCATION,
};

/** A duration flag in whole seconds (the migration timeouts are stored in seconds). */
function parseDurationSeconds(text: string, flag: string): number {
  const ms = parseDurationMs(text, flag, MAX_CONFIG_DURATION_MS);
  if (ms % 1000 !== 0) throw usageError(`${flag}: must be whole seconds (got ${text.trim()})`);
  return ms / 1000;
}

/** The rebalance and migration flags, parsed; only those given are set. */
function parseRebalanceAndMigration(flags: ConfigSetFlags, changes: SchedulerChanges): void {
  const r: Partial<RebalanceConfig> = {};
  if (flags.rebalance !== undefined) r.enabled = ENABLED_OF_FLAG[flags.rebalance] ?? false;
  if (flags.rebalanceGoal !== undefined) r.goal = GOAL_OF_FLAG[flags.rebalanceGoal] ?? RebalanceGoal.REBALANCE_GOAL_UNSPECIFIED;
  if (flags.rebalanceMetric !== undefined) r.metric = METRIC_OF_FLAG[flags.rebalanceMetric] ?? RebalanceMetric.REBALANCE_METRIC_UNSPECIFIED;
  if (flags.rebalanceInterval !== undefined) r.intervalMs = parseDurationMs(flags.rebalanceInterval, "--rebalance-interval", MAX_CONFIG_DURATION_MS);
  if (flags.rebalanceThreshold !== undefined) r.threshold = parseDecimal(flags.rebalanceThreshold, "--rebalance-threshold");
  if (flags.rebalanceRounds !== undefined) r.rounds = parseInteger(flags.rebalanceRounds, "--rebalance-rounds", 1, 1000);
  if (flags.rebalanceMaxMoves !== undefined) r.maxMovesPerPass = parseInteger(flags.rebalanceMaxMoves, "--rebalance-max-moves", 1, 1000);
  if (flags.rebalanceVmCooldown !== undefined) r.vmCooldownMs = parseDurationMs(flags.rebalanceVmCooldown, "--rebalance-vm-cooldown", MAX_CONFIG_DURATION_MS);
  if (flags.rebalanceHostCooldown !== undefined) {
    r.hostCooldownMs = parseDurationMs(flags.rebalanceHostCooldown, "--rebalance-host-cooldown", MAX_CONFIG_DURATION_MS);
  }
  if (Object.keys(r).length > 0) changes.rebalance = r;
  const m: Partial<MigrationConfig> = {};
  if (flags.parallelMigrations !== undefined) m.parallelMigrations = parseInteger(flags.parallelMigrations, "--parallel-migrations", 1, 1000);
  if (flags.outboundMigrationsPerHost !== undefined) {
    m.outboundPerHost = parseInteger(flags.outboundMigrationsPerHost, "--outbound-migrations-per-host", 1, 1000);
  }
  if (flags.migrationTimeoutPerGib !== undefined) {
    m.completionTimeoutPerGibS = parseDurationSeconds(flags.migrationTimeoutPerGib, "--migration-timeout-per-gib");
  }
  if (flags.migrationProgressTimeout !== undefined) {
    m.progressTimeoutS = parseDurationSeconds(flags.migrationProgressTimeout, "--migration-progress-timeout");
  }
  if (Object.keys(m).length > 0) changes.migration = m;
}

/** Parses the `config set` flags; a bad one is a usage error naming it, before any call. */
function parseChanges(flags: ConfigSetFlags): SchedulerChanges {
  const changes: SchedulerChanges = {};
  if (flags.preset !== undefined) changes.preset = flags.preset;
  if (flags.weight !== undefined) changes.weights = parseWeights(flags.weight);
  const ratio: Partial<AllocationRatio> = {};
  if (flags.cpuRatio !== undefined) ratio.vcpus = parseDecimal(flags.cpuRatio, "--cpu-ratio");
  if (flags.memoryRatio !== undefined) ratio.memory = parseDecimal(flags.memoryRatio, "--memory-ratio");
  if (flags.diskRatio !== undefined) ratio.disk = parseDecimal(flags.diskRatio, "--disk-ratio");
  if (Object.keys(ratio).length > 0) changes.allocationRatio = ratio;
  const reserved: Partial<Resources> = {};
  if (flags.reserveVcpus !== undefined) reserved.vcpus = parseInteger(flags.reserveVcpus, "--reserve-vcpus", 0, MAX_UINT32);
  if (flags.reserveMemory !== undefined) reserved.memoryMib = parseMemoryMib(flags.reserveMemory, "--reserve-memory");
  if (flags.reserveDisk !== undefined) reserved.diskGib = parseDiskGib(flags.reserveDisk, "--reserve-disk");
  if (Object.keys(reserved).length > 0) changes.reserved = reserved;
  if (flags.maxVmsPerHost !== undefined) {
    changes.maxVmsPerHost = parseInteger(flags.maxVmsPerHost, "--max-vms-per-host", 0, MAX_UINT32);
  }
  if (flags.seed !== undefined) changes.seed = parseInteger(flags.seed, "--seed", 0, Number.MAX_SAFE_INTEGER);
  if (flags.defaultOnHostFailure !== undefined) {
    const policy = ON_HOST_FAILURE_OF_FLAG[flags.defaultOnHostFailure];
    if (policy === undefined) throw usageError(`--default-on-host-failure: '${flags.defaultOnHostFailure}' must be keep or restart`);
    changes.defaultOnHostFailure = policy;
  }
  parseRebalanceAndMigration(flags, changes);
  return changes;
}

/**
 * `current` with `changes` applied: every field not named by a flag is kept as it is, weights are
 * merged key by key; ratios, reservations, rebalance and migration settings field by field. Pure.
 */
export function applySchedulerChanges(current: ClusterConfig, changes: SchedulerChanges): ClusterConfig {
  const s = SchedulerConfig.fromPartial(current.scheduler ?? {});
  if (changes.preset !== undefined) s.preset = changes.preset;
  if (changes.weights) {
    const weights = { ...s.weights };
    for (const [name, value] of changes.weights) {
      if (value === undefined) delete weights[name];
      else weights[name] = value;
    }
    s.weights = weights;
  }
  if (changes.allocationRatio) {
    s.allocationRatio = { vcpus: 0, memory: 0, disk: 0, ...s.allocationRatio, ...changes.allocationRatio };
  }
  if (changes.reserved) s.reserved = { vcpus: 0, memoryMib: 0, diskGib: 0, ...s.reserved, ...changes.reserved };
  if (changes.maxVmsPerHost !== undefined) s.maxVmsPerHost = changes.maxVmsPerHost;
  if (changes.seed !== undefined) s.seed = changes.seed;
  return ClusterConfig.fromPartial({
    ...current,
    scheduler: s,
    ...(changes.defaultOnHostFailure !== undefined ? { defaultOnHostFailure: changes.defaultOnHostFailure } : {}),
    ...(changes.rebalance ? { rebalance: RebalanceConfig.fromPartial({ ...current.rebalance, ...changes.rebalance }) } : {}),
    ...(changes.migration ? { migration: MigrationConfig.fromPartial({ ...current.migration, ...changes.migration }) } : {}),
  });
}

function printConfig(ctx: CliContext, g: GlobalOptions, config: ClusterConfig | undefined, what: string): void {
  if (!config) throw new CliError(`the controller's answer to ${what} has no config`, ExitCode.Error);
  ctx.io.stdout(render(g.output, clusterConfigView(config)));
}

/** Adds `berth config show|set`. */
export function registerConfigCommands(program: Command, ctx: CliContext): void {
  const config = program
    .command("config")
    .description("Show and change the cluster's settings: scheduler, default host-failure policy, rebalancing, migrations")
    .addHelpText("after", "\nExample:\n  berth config set --preset pack --cpu-ratio 4");

  config
    .command("show")
    .description(
      "Show the cluster config: preset, weights, allocation ratios, reservations, limits, host-failure default, rebalancing, migration limits",
    )
    .addHelpText(
      "after",
      "\nWith -o json: the ClusterConfig as proto JSON. Exit codes: see berth --help.\n\nExamples:\n  berth config show\n  berth config show -o json",
    )
    .action(async (_flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      printConfig(ctx, g, (await ctx.client(g).getClusterConfig({})).config, "GetClusterConfig");
    });

  config
    .command("set")
    .description("Change some cluster settings: the others keep their current values")
    .addOption(new Option("--preset <preset>", "a set of weigher weights").choices([...PRESETS]))
    .option("--weight <name=value>", "override one weigher's weight (NAME= drops the override); repeat for more", collect)
    .option("--cpu-ratio <x>", "vCPUs allocatable per physical CPU (0: default, 1)")
    .option("--memory-ratio <x>", "memory allocatable per physical memory (0: default, 1)")
    .option("--disk-ratio <x>", "disk allocatable per physical disk (0: default, 1)")
    .option("--reserve-vcpus <n>", "CPUs kept back on every host")
    .option("--reserve-memory <size>", "memory kept back on every host: 2GiB (a bare number is MiB)")
    .option("--reserve-disk <size>", "disk kept back on every host: 50GiB (a bare number is GiB)")
    .option("--max-vms-per-host <n>", "at most this many VMs on a host (0: no limit)")
    .option("--seed <n>", "seed of the tie-break between hosts that score the same")
    .addOption(
      new Option(
        "--default-on-host-failure <policy>",
        "what happens to VMs that leave --on-host-failure unset when their host fails: keep (wait for it) or restart (elsewhere, once fenced)",
      ).choices(Object.keys(ON_HOST_FAILURE_OF_FLAG)),
    )
    .addOption(new Option("--rebalance <on|off>", "continuous rebalancing by the controller (default: off)").choices(Object.keys(ENABLED_OF_FLAG)))
    .addOption(new Option("--rebalance-goal <goal>", "what continuous rebalancing aims at (default: balance)").choices(Object.keys(GOAL_OF_FLAG)))
    .addOption(
      new Option("--rebalance-metric <metric>", "what it measures utilisation by: usage or allocation (default: usage when every host reports it)").choices(
        Object.keys(METRIC_OF_FLAG),
      ),
    )
    .option("--rebalance-interval <duration>", "how often the rebalancer looks, e.g. 5m (default: 5m)")
    .option("--rebalance-threshold <x>", "it acts when the imbalance (std-dev of utilisation) is above this (default: 0.1)")
    .option("--rebalance-rounds <n>", "... in this many looks in a row (default: 3)")
    .option("--rebalance-max-moves <n>", "at most this many moves per pass (default: 4)")
    .option("--rebalance-vm-cooldown <duration>", "a VM it moved is not moved again for this long (default: 1h)")
    .option("--rebalance-host-cooldown <duration>", "a host a move left or entered is not touched again for this long (default: 10m)")
    .option("--parallel-migrations <n>", "live migrations in flight in the cluster (default: 5)")
    .option("--outbound-migrations-per-host <n>", "live migrations leaving one host at once (default: 2)")
    .option("--migration-timeout-per-gib <duration>", "time allowed per GiB moved before a migration is aborted, e.g. 150s (default: 150s)")
    .option("--migration-progress-timeout <duration>", "abort a migration whose data left has not fallen for this long (default: 150s)")
    .addHelpText(
      "after",
      `
Reads the current config, changes only what the flags name, and sends it back
(UpdateClusterConfig); prints the result. Flag syntax is checked first (exit code 2, naming the
flag); the controller checks the values (INVALID_ARGUMENT: exit code 2 with its message).
Allocatable = ratio x physical - reserved. --default-on-host-failure applies to every VM whose
own on-host-failure is unset, existing ones included (unset here: keep). Durations take units
(90s, 10m, 1h30m). --rebalance on lets the controller run the plans of berth rebalance plan on
its own, every --rebalance-interval, once the imbalance has been above --rebalance-threshold in
--rebalance-rounds looks in a row. Exit codes: see berth --help.

Examples:
  berth config set --preset pack
  berth config set --rebalance on --rebalance-goal consolidate --rebalance-interval 10m
  berth config set --parallel-migrations 8 --outbound-migrations-per-host 3 --migration-timeout-per-gib 200s
  berth config set --default-on-host-failure restart
  berth config set --weight mostAllocated=2 --cpu-ratio 4 --memory-ratio 1.5
  berth config set --reserve-vcpus 2 --reserve-memory 4GiB --max-vms-per-host 50`,
    )
    .action(async (flags: ConfigSetFlags, cmd: Command) => {
      const g = ctx.globals(cmd);
      const changes = parseChanges(flags);
      if (Object.keys(changes).length === 0) throw usageError("config set: no setting given (see berth config set --help)");
      const client = ctx.client(g);
      const current = (await client.getClusterConfig({})).config ?? ClusterConfig.fromPartial({});
      const updated = applySchedulerChanges(current, changes);
      printConfig(ctx, g, (await client.updateClusterConfig({ config: updated })).config, "UpdateClusterConfig");
    });
}
