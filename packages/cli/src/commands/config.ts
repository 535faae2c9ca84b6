import { ClusterConfig, SchedulerConfig, type AllocationRatio, type HostFailurePolicy, type Resources } from "@berth/api";
import type { Command } from "commander";
import { Option } from "commander";
import type { CliContext, GlobalOptions } from "../context.js";
import { CliError, ExitCode, usageError } from "../exit-codes.js";
import { clusterConfigDetail, clusterConfigJson } from "../format.js";
import { parseDecimal, parseDiskGib, parseInteger, parseMemoryMib, parseWeights } from "../parse.js";
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
}

const MAX_UINT32 = 2 ** 32 - 1;

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
  return changes;
}

/**
 * `current` with `changes` applied: every field not named by a flag is kept as it is, weights are
 * merged key by key, ratios and reservations field by field. Pure.
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
  });
}

function printConfig(ctx: CliContext, g: GlobalOptions, config: ClusterConfig | undefined, what: string): void {
  if (!config) throw new CliError(`the controller's answer to ${what} has no config`, ExitCode.Error);
  ctx.io.stdout(g.output === "json" ? clusterConfigJson(config) : clusterConfigDetail(config));
}

/** Adds `berth config show|set`. */
export function registerConfigCommands(program: Command, ctx: CliContext): void {
  const config = program
    .command("config")
    .description("Show and change the cluster's settings: scheduler, default host-failure policy")
    .addHelpText("after", "\nExample:\n  berth config set --preset pack --cpu-ratio 4");

  config
    .command("show")
    .description("Show the cluster config: preset, weights, allocation ratios, reservations, limits, host-failure default")
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
    .addHelpText(
      "after",
      `
Reads the current config, changes only what the flags name, and sends it back
(UpdateClusterConfig); prints the result. Flag syntax is checked first (exit code 2, naming the
flag); the controller checks the values (INVALID_ARGUMENT: exit code 2 with its message).
Allocatable = ratio x physical - reserved. --default-on-host-failure applies to every VM whose
own on-host-failure is unset, existing ones included (unset here: keep). Exit codes: see berth --help.

Examples:
  berth config set --preset pack
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
