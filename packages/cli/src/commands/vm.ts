import { VmPhase, type Vm } from "@berth/api";
import { deadlineIn } from "@berth/core";
import type { Command } from "commander";
import type { ControllerClient } from "../client.js";
import type { CliContext, GlobalOptions } from "../context.js";
import { CliError, ExitCode } from "../exit-codes.js";
import { phaseName, vmDetail, vmJson, vmListJson, vmTable } from "../format.js";
import { parseSecondsMs } from "../parse.js";
import { VmEventFeed, waitForVm } from "../wait.js";
import { addSpecOptions, specsFromFlags, type SpecFlags } from "./spec-flags.js";

/** Default of `--wait-timeout`, in seconds. */
export const DEFAULT_WAIT_TIMEOUT_S = 300;

const EXIT_CODES_SEE = "Exit codes: see berth --help.";

function printVm(ctx: CliContext, g: GlobalOptions, vm: Vm): void {
  ctx.io.stdout(g.output === "json" ? vmJson(vm) : vmTable([vm], ctx.io.now()));
}

function required(vm: Vm | undefined, what: string): Vm {
  if (!vm) throw new CliError(`the controller's answer to ${what} has no VM`, ExitCode.Error);
  return vm;
}

/**
 * A FAILED status counts only if it is news since `baseline` (the VM as the request left it):
 * starting a VM that had failed before must not end the wait on the old failure.
 */
function isFreshFailure(vm: Vm, baseline: Vm): boolean {
  const before = baseline.status;
  const now = vm.status;
  if (!now || now.phase !== VmPhase.VM_PHASE_FAILED) return false;
  if (!before || before.phase !== VmPhase.VM_PHASE_FAILED) return true;
  return (
    now.updatedAtMs !== before.updatedAtMs ||
    now.message !== before.message ||
    (baseline.generation > 0 && now.observedGeneration >= baseline.generation)
  );
}

/** How {@link waitForPhase} reports: the one-VM default prints the progress line and a failed VM. */
interface PhaseWaitOptions {
  /** Called with the VM that reached FAILED, before the exit-code-7 error is thrown. */
  onFailed?: (vm: Vm) => void;
  /** Ends the wait early (another VM of a gang failed). */
  signal?: AbortSignal;
  /** Do not print "waiting up to ..." (the caller did, for a gang). */
  quiet?: boolean;
  /** The gang's shared watch, and how often each VM is polled besides it. */
  feed?: VmEventFeed;
  pollIntervalMs?: number;
}

/**
 * Waits until the VM of `baseline` reaches `target` (returns it) or FAILED (prints it, throws exit
 * code 7); throws exit code 8 when `timeoutMs` passes first.
 */
async function waitForPhase(
  ctx: CliContext,
  g: GlobalOptions,
  client: ControllerClient,
  baseline: Vm,
  target: VmPhase,
  timeoutMs: number,
  options: PhaseWaitOptions = {},
): Promise<Vm> {
  const name = baseline.spec?.name ?? "";
  const want = phaseName(target);
  const onFailed = options.onFailed ?? ((vm: Vm) => printVm(ctx, g, vm));
  if (g.output === "table" && !options.quiet) {
    ctx.io.stderr(`waiting up to ${timeoutMs / 1000}s for vm ${name} to be ${want}...\n`);
  }
  let seen = false;
  const result = await waitForVm(
    client,
    name,
    ({ vm }) => {
      const ours = vm !== undefined && (!baseline.id || !vm.id || vm.id === baseline.id);
      if (!ours) {
        // Not visible yet (a cache behind the write), or gone.
        if (seen) throw new CliError(`vm ${name} was deleted while waiting for it to be ${want}`, ExitCode.Error);
        return undefined;
      }
      seen = true;
      if (vm.status?.phase === target) return vm;
      if (isFreshFailure(vm, baseline)) {
        onFailed(vm);
        throw new CliError(`vm ${name} failed: ${vm.status?.message || "no reason given"}`, ExitCode.VmFailed);
      }
      return undefined;
    },
    {
      deadline: deadlineIn(timeoutMs),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.feed ? { feed: options.feed } : {}),
      ...(options.pollIntervalMs ? { pollIntervalMs: options.pollIntervalMs } : {}),
    },
  );
  if (result.status === "decided") return result.value;
  const phase = result.last?.vm ? phaseName(result.last.vm.status?.phase ?? 0) : "not seen";
  throw new CliError(
    `timed out after ${timeoutMs / 1000}s waiting for vm ${name} to be ${want} (last phase: ${phase})`,
    ExitCode.WaitTimeout,
  );
}

/** Waits until GetVm says NOT_FOUND (or the name belongs to another VM); exit code 8 on timeout. */
async function waitForGone(client: ControllerClient, baseline: Vm, timeoutMs: number): Promise<void> {
  const name = baseline.spec?.name ?? "";
  const result = await waitForVm(
    client,
    name,
    ({ vm }) => (vm === undefined || (baseline.id && vm.id && vm.id !== baseline.id) ? true : undefined),
    { deadline: deadlineIn(timeoutMs) },
  );
  if (result.status === "timeout") {
    const phase = result.last?.vm ? phaseName(result.last.vm.status?.phase ?? 0) : "unknown";
    throw new CliError(
      `timed out after ${timeoutMs / 1000}s waiting for vm ${name} to be deleted (last phase: ${phase})`,
      ExitCode.WaitTimeout,
    );
  }
}

/**
 * Waits for every VM of a gang to be RUNNING (returns them, in order). The first VM to reach FAILED
 * ends the wait for all: it is printed (as a list) and the error has exit code 7.
 */
async function waitForAllRunning(
  ctx: CliContext,
  g: GlobalOptions,
  client: ControllerClient,
  baselines: readonly Vm[],
  timeoutMs: number,
): Promise<Vm[]> {
  if (g.output === "table") {
    ctx.io.stderr(`waiting up to ${timeoutMs / 1000}s for ${baselines.length} vms to be RUNNING...\n`);
  }
  const stop = new AbortController();
  let failed: Vm | undefined;
  // One watch for the whole gang; the per-VM polls (the fallback) slow down as the gang grows, so
  // the controller sees about 20 GetVm a second at most.
  const feed = new VmEventFeed(client, deadlineIn(timeoutMs));
  const pollIntervalMs = 1000 * Math.ceil(baselines.length / 20);
  try {
    return await Promise.all(
      baselines.map((b) =>
        waitForPhase(ctx, g, client, b, VmPhase.VM_PHASE_RUNNING, timeoutMs, {
          quiet: true,
          signal: stop.signal,
          feed,
          pollIntervalMs,
          onFailed: (vm) => {
            failed ??= vm;
          },
        }),
      ),
    );
  } catch (e) {
    stop.abort(e);
    if (failed) printVms(ctx, g, [failed]);
    throw e;
  } finally {
    feed.close();
  }
}

function printVms(ctx: CliContext, g: GlobalOptions, vms: readonly Vm[]): void {
  ctx.io.stdout(g.output === "json" ? vmListJson(vms) : vmTable(vms, ctx.io.now()));
}

interface WaitFlags {
  wait?: boolean;
  waitTimeout?: string;
}

const waitTimeoutMs = (flags: WaitFlags): number =>
  parseSecondsMs(flags.waitTimeout ?? String(DEFAULT_WAIT_TIMEOUT_S), "--wait-timeout");

function addWaitOptions(cmd: Command, what: string): Command {
  return cmd
    .option("--wait", what)
    .option("--wait-timeout <seconds>", `how long --wait waits (default: ${DEFAULT_WAIT_TIMEOUT_S})`);
}

/** Adds `berth vm create|list|show|start|stop|delete`. */
export function registerVmCommands(program: Command, ctx: CliContext): void {
  const vm = program
    .command("vm")
    .description("Create, list, inspect, start, stop and delete VMs")
    .addHelpText("after", "\nExample:\n  berth vm create web-1 --vcpus 2 --memory 4GiB --disk 20GiB --wait");

  addWaitOptions(
    addSpecOptions(
      vm
        .command("create")
        .description("Create a VM (or --count VMs at once); the controller places it on a host with room and starts it")
        .argument("<name>", "VM name: 1-63 lower-case letters, digits or '-', unique in the cluster"),
      "create this many VMs",
    ),
    "return once the VM (every VM) is RUNNING (exit 0) or one is FAILED (exit 7, with the reason)",
  )
    .addHelpText(
      "after",
      `
Prints the new VM (phase PENDING until its host reports it). Sizes take MiB, GiB or TiB (also
M, G, T; MB, GB, TB are powers of ten). Flags are checked before anything is sent: a bad one is
reported by name with exit code 2. No host with room: exit code 4.

--count N creates NAME-1 ... NAME-N in one CreateVms call: all of them are placed, or none is
created. --group puts the VM(s) in a placement group (berth group create). Host constraints:
--require-host-label k=v (the host must have it), --forbid-host-label k=v or k (it must not;
a bare key forbids any value), --pin HOST[,HOST...] (only these hosts). Try a placement first
with berth plan. ${EXIT_CODES_SEE}

Examples:
  berth vm create web-1 --vcpus 2 --memory 4GiB --disk 20GiB
  berth vm create db-1 --vcpus 8 --memory 32GiB --disk 500GiB --label tier=db --wait
  berth vm create web --count 3 --group web --vcpus 2 --memory 4GiB --disk 20GiB --wait
  berth vm create gpu-1 --vcpus 4 --memory 16GiB --disk 100GiB --require-host-label gpu=a100 --forbid-host-label maintenance
  berth vm create web-2 --vcpus 1 --memory 512 --disk 10 -o json`,
    )
    .action(async (name: string, flags: WaitFlags & SpecFlags, cmd: Command) => {
      const g = ctx.globals(cmd);
      const specs = specsFromFlags(name, flags);
      const waitMs = waitTimeoutMs(flags);
      const client = ctx.client(g);
      if (flags.count === undefined) {
        const created = required((await client.createVm({ spec: specs[0], requestId: "" })).vm, "CreateVm");
        const shown = flags.wait
          ? await waitForPhase(ctx, g, client, created, VmPhase.VM_PHASE_RUNNING, waitMs)
          : created;
        printVm(ctx, g, shown);
        return;
      }
      const { vms } = await client.createVms({ specs, requestId: "" });
      if (vms.length !== specs.length) {
        throw new CliError(
          `the controller's answer to CreateVms has ${vms.length} VMs for ${specs.length} specs`,
          ExitCode.Error,
        );
      }
      printVms(ctx, g, flags.wait ? await waitForAllRunning(ctx, g, client, vms, waitMs) : vms);
    });

  vm.command("list")
    .description("List VMs, sorted by name")
    .option("--host <id>", "only the VMs placed on this host")
    .addHelpText(
      "after",
      `
Columns: name, phase (what the host last reported), desired state, host, size, age.
With -o json: a JSON array of VMs. ${EXIT_CODES_SEE}

Examples:
  berth vm list
  berth vm list --host host-1 -o json`,
    )
    .action(async (flags: { host?: string }, cmd: Command) => {
      const g = ctx.globals(cmd);
      // Every page, each its own call with its own deadline.
      const vms: Vm[] = [];
      let pageToken = "";
      do {
        const page = await ctx.client(g).listVms({ hostId: flags.host ?? "", pageSize: 0, pageToken });
        vms.push(...page.vms);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      const sorted = [...vms].sort((a, b) => (a.spec?.name ?? "").localeCompare(b.spec?.name ?? ""));
      ctx.io.stdout(g.output === "json" ? vmListJson(sorted) : vmTable(sorted, ctx.io.now()));
    });

  vm.command("show")
    .description("Show one VM in detail: placement, resources, labels, status and its message")
    .argument("<name>", "VM name")
    .addHelpText("after", `\nNo such VM: exit code 3. ${EXIT_CODES_SEE}\n\nExample:\n  berth vm show web-1`)
    .action(async (name: string, _flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      const vmFound = required((await ctx.client(g).getVm({ name })).vm, "GetVm");
      ctx.io.stdout(g.output === "json" ? vmJson(vmFound) : vmDetail(vmFound, ctx.io.now()));
    });

  addWaitOptions(
    vm.command("start").description("Start a stopped VM (sets its desired state to RUNNING)").argument("<name>", "VM name"),
    "return once the VM is RUNNING (exit 0) or FAILED (exit 7)",
  )
    .addHelpText("after", `\n${EXIT_CODES_SEE}\n\nExamples:\n  berth vm start web-1\n  berth vm start web-1 --wait`)
    .action(async (name: string, flags: WaitFlags, cmd: Command) => {
      const g = ctx.globals(cmd);
      const waitMs = waitTimeoutMs(flags);
      const client = ctx.client(g);
      const started = required((await client.startVm({ name })).vm, "StartVm");
      printVm(ctx, g, flags.wait ? await waitForPhase(ctx, g, client, started, VmPhase.VM_PHASE_RUNNING, waitMs) : started);
    });

  addWaitOptions(
    vm
      .command("stop")
      .description("Stop a VM (sets its desired state to STOPPED); graceful shutdown unless --force")
      .argument("<name>", "VM name")
      .option("--force", "power off at once instead of a graceful shutdown"),
    "return once the VM is STOPPED (exit 0) or FAILED (exit 7)",
  )
    .addHelpText(
      "after",
      `\n${EXIT_CODES_SEE}\n\nExamples:\n  berth vm stop web-1\n  berth vm stop web-1 --force --wait`,
    )
    .action(async (name: string, flags: WaitFlags & { force?: boolean }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const waitMs = waitTimeoutMs(flags);
      const client = ctx.client(g);
      const stopped = required((await client.stopVm({ name, force: flags.force === true })).vm, "StopVm");
      printVm(ctx, g, flags.wait ? await waitForPhase(ctx, g, client, stopped, VmPhase.VM_PHASE_STOPPED, waitMs) : stopped);
    });

  addWaitOptions(
    vm
      .command("delete")
      .description("Delete a VM: its host removes it, then the cluster forgets it")
      .argument("<name>", "VM name"),
    "return once the VM is gone (GetVm answers NOT_FOUND)",
  )
    .addHelpText(
      "after",
      `
Prints the VM as the deletion left it (phase DELETING); with --wait and table output, prints
"vm NAME deleted" once it is gone. No such VM: exit code 3. ${EXIT_CODES_SEE}

Examples:
  berth vm delete web-1
  berth vm delete web-1 --wait --wait-timeout 60`,
    )
    .action(async (name: string, flags: WaitFlags, cmd: Command) => {
      const g = ctx.globals(cmd);
      const waitMs = waitTimeoutMs(flags);
      const client = ctx.client(g);
      const deleted = required((await client.deleteVm({ name })).vm, "DeleteVm");
      if (!flags.wait) {
        printVm(ctx, g, deleted);
        return;
      }
      if (g.output === "table") ctx.io.stderr(`waiting up to ${waitMs / 1000}s for vm ${name} to be deleted...\n`);
      await waitForGone(client, deleted, waitMs);
      ctx.io.stdout(g.output === "json" ? vmJson(deleted) : `vm ${name} deleted\n`);
    });
}
