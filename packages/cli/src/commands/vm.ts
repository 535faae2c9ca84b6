import { setMaxListeners } from "node:events";
import { randomUUID } from "node:crypto";
import { DesiredState, HostFailurePolicy, VmPhase, type Vm, type VmStatus } from "@berth/api";
import { BerthError, ErrorCode, deadlineIn } from "@berth/core";
import { Option, type Command } from "commander";
import type { ControllerClient } from "../client.js";
import type { CliContext, GlobalOptions } from "../context.js";
import { CliError, ExitCode } from "../exit-codes.js";
import { failureText, formatIn, phaseName, sortByName, vmDetail, vmListView, vmView } from "../format.js";
import { isHuman, render } from "../output.js";
import { ProgressLine } from "../progress.js";
import { parseName, parseSecondsMs } from "../parse.js";
import { retryUntilAnswered } from "../retry.js";
import { VmEventFeed, waitForVm } from "../wait.js";
import { watchVmList } from "./list-watches.js";
import { registerVmMigrateCommand } from "./migration.js";
import { addSpecOptions, ON_HOST_FAILURE_OF_FLAG, readSpecsFromFlags, type SpecFlags } from "./spec-flags.js";

/** Default of `--wait-timeout`, in seconds. */
export const DEFAULT_WAIT_TIMEOUT_S = 300;
/**
 * Default of `--create-timeout`, in seconds: long enough to ride out a leader change (a dead
 * leader's lease runs out after about 10 s) and a lost answer or two.
 */
export const DEFAULT_CREATE_TIMEOUT_S = 30;

const EXIT_CODES_SEE = "Exit codes: see berth --help.";

function printVm(ctx: CliContext, g: GlobalOptions, vm: Vm): void {
  ctx.io.stdout(render(g.output, vmView(vm, ctx.io.now())));
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

/**
 * Whether a FAILED status ends a wait: a permanent failure (nothing is retried until the spec or
 * the desired state changes, or `berth vm retry`), or a failure with no retry record at all (a
 * crashed domain, or a controller that does not retry). Any other FAILED is an attempt the
 * controller will repeat: the wait goes on.
 */
export function isFinalFailure(status: VmStatus): boolean {
  return status.permanent || (status.attempts === 0 && status.nextAttemptAtMs === 0 && status.errorCode === "");
}

/** The exit-code-7 error of a VM that failed for good, with how to try again. */
function failedForGood(name: string, status: VmStatus | undefined): CliError {
  const why = status?.permanent ? "; permanent: not retried" : "";
  return new CliError(
    `vm ${name} failed: ${failureText(status)}${why}\n  once the cause is fixed, try again with: berth vm retry ${name}`,
    ExitCode.VmFailed,
  );
}

/** How {@link waitForPhase} reports: the one-VM default prints the progress line and a failed VM. */
interface PhaseWaitOptions {
  /** Called with the VM that failed for good, before the exit-code-7 error is thrown. */
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
 * Waits until the VM of `baseline` reaches `target` (returns it) or fails for good (prints it,
 * throws exit code 7); throws exit code 8 when `timeoutMs` passes first. A FAILED status the
 * controller will retry is not final: each new failed attempt is reported on stderr once
 * ("vm NAME: attempt N failed: CODE: message; next try in Ns") and the wait goes on.
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
  if (isHuman(g.output) && !options.quiet) {
    ctx.io.stderr(`waiting up to ${timeoutMs / 1000}s for vm ${name} to be ${want}...\n`);
  }
  let seen = false;
  // The attempt last reported, so that each failed attempt is reported once however often it is seen.
  let reportedAttempt: number | undefined;
  let lastFailure: VmStatus | undefined;
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
      if (vm.status && isFreshFailure(vm, baseline)) {
        const status = vm.status;
        if (isFinalFailure(status)) {
          onFailed(vm);
          throw failedForGood(name, status);
        }
        lastFailure = status;
        if (status.attempts > 0 && status.attempts !== reportedAttempt) {
          reportedAttempt = status.attempts;
          const next = status.nextAttemptAtMs > 0 ? `next try ${formatIn(status.nextAttemptAtMs, ctx.io.now())}` : "retrying";
          ctx.io.stderr(`vm ${name}: attempt ${status.attempts} failed: ${failureText(status)}; ${next}\n`);
        }
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
  const lastVm = result.last?.vm;
  let phase = lastVm ? phaseName(lastVm.status?.phase ?? 0) : "not seen";
  if (lastVm?.status?.phase === VmPhase.VM_PHASE_FAILED && lastFailure) {
    phase += `, attempt ${lastFailure.attempts}: ${failureText(lastFailure)}`;
  }
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
 * Waits for every VM of a gang to be RUNNING (returns them, in order). Failed attempts the
 * controller retries are reported per VM and waited through; the first VM to fail for good ends
 * the wait for all: it is printed (as a list) and the error has exit code 7.
 */
async function waitForAllRunning(
  ctx: CliContext,
  g: GlobalOptions,
  client: ControllerClient,
  baselines: readonly Vm[],
  timeoutMs: number,
): Promise<Vm[]> {
  // `12/50 RUNNING (30 PENDING, 8 STARTING)` on stderr: RUNNING counts the VMs whose wait ended,
  // the others' phases are the watch's latest. Off a terminal, a line per change at most every 2 s.
  const progress = isHuman(g.output) ? new ProgressLine(ctx.io, { plainIntervalMs: GANG_PROGRESS_INTERVAL_MS }) : undefined;
  if (progress) ctx.io.stderr(`waiting up to ${timeoutMs / 1000}s for ${baselines.length} vms to be RUNNING...\n`);
  const stop = new AbortController();
  // One listener per VM's wait on this signal: --count 11 would pass Node's default of 10 and print
  // a MaxListenersExceededWarning that is not a leak.
  setMaxListeners(baselines.length + 1, stop.signal);
  let failed: Vm | undefined;
  // One watch for the whole gang; the per-VM polls (the fallback) slow down as the gang grows, so
  // the controller sees about 20 GetVm a second at most.
  const feed = new VmEventFeed(client, deadlineIn(timeoutMs));
  const pollIntervalMs = 1000 * Math.ceil(baselines.length / 20);
  const running = new Set<string>();
  const phases = new Map<string, VmPhase>();
  const showProgress = (): void => progress?.update(gangProgressText(baselines.length, running.size, phases, running), String(running.size));
  const unsubscribe = progress
    ? baselines.map((b) =>
        feed.on(b.spec?.name ?? "", ({ vm }) => {
          if (vm?.status) phases.set(b.spec?.name ?? "", vm.status.phase);
          showProgress();
        }),
      )
    : [];
  showProgress();
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
        }).then((vm) => {
          running.add(b.spec?.name ?? "");
          showProgress();
          return vm;
        }),
      ),
    );
  } catch (e) {
    stop.abort(e);
    progress?.end();
    if (failed) printVms(ctx, g, [failed]);
    throw e;
  } finally {
    for (const off of unsubscribe) off();
    progress?.end();
    feed.close();
  }
}

/** Off a terminal, at most one gang progress line per this many ms. */
const GANG_PROGRESS_INTERVAL_MS = 2000;

/**
 * `12/50 RUNNING (30 PENDING, 8 STARTING)`: how many of a gang are RUNNING, then the others by
 * their latest phase (those not seen yet are left out).
 */
export function gangProgressText(total: number, runningCount: number, phases: ReadonlyMap<string, VmPhase>, running: ReadonlySet<string>): string {
  const others = new Map<string, number>();
  for (const [name, phase] of phases) {
    if (running.has(name) || phase === VmPhase.VM_PHASE_RUNNING) continue;
    const shown = phaseName(phase);
    others.set(shown, (others.get(shown) ?? 0) + 1);
  }
  const rest = [...others].map(([phase, n]) => `${n} ${phase}`).join(", ");
  return `${runningCount}/${total} RUNNING${rest ? ` (${rest})` : ""}`;
}

function printVms(ctx: CliContext, g: GlobalOptions, vms: readonly Vm[]): void {
  ctx.io.stdout(render(g.output, vmListView(vms, ctx.io.now())));
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

/** A message on one line (a multi-address failure lists one address a line). */
const oneLine = (text: string): string => text.replace(/\n\s*/g, "; ");

/**
 * Sends a create that carries `requestId`, and sends it again, with the same id, while the answer
 * is no leader, nobody reachable, or none at all (a leader that died mid-call, a call cut off, a
 * deadline): with exponential backoff and jitter, until `createTimeoutMs`. Repeating is safe: for
 * a request id it knows, the controller returns the VM(s) that request made.
 *
 * - A verdict is trusted (RESOURCE_EXHAUSTED stays exit 4, INVALID_ARGUMENT 2...).
 * - ALREADY_EXISTS after an attempt went unanswered may be this command's own VM, made by the lost
 *   attempt: `recover` looks (GetVm) and succeeds only if the VM carries this request id.
 * - Out of time after an attempt went unanswered: "outcome unknown" (exit 9), never "failed".
 *   Out of time without any request delivered: the last error (exit 5), since nothing was created.
 */
async function createIdempotently<T>(
  ctx: CliContext,
  names: readonly string[],
  requestId: string,
  createTimeoutMs: number,
  send: (deadline: Date) => Promise<T>,
  recover: () => Promise<T | undefined>,
): Promise<T> {
  const outcome = await retryUntilAnswered(send, {
    deadline: deadlineIn(createTimeoutMs),
    onRetry: (error, delayMs) => {
      ctx.io.stderr(`vm create: ${oneLine(error.message)}; retrying in ${(delayMs / 1000).toFixed(1)}s with the same request id\n`);
    },
  });
  if (outcome.ok) return outcome.value;
  const { error } = outcome;
  const unknown = (last: BerthError): CliError => {
    const what = names.length === 1 ? `vm ${names[0]}` : `vms ${names[0]} ... ${names.at(-1)} (all or none)`;
    return new CliError(
      `outcome unknown: ${what} may have been created; check with: berth vm show ${names[0]}\n` +
        `  no answer after ${outcome.attempts} attempt(s) in ${createTimeoutMs / 1000}s (--create-timeout); last: ${oneLine(last.message)}\n` +
        `  this command's request id: ${requestId} (berth vm show prints the Request ID of the create that made a VM)`,
      ExitCode.OutcomeUnknown,
      { cause: last },
    );
  };
  if (outcome.unanswered && error.code === ErrorCode.AlreadyExists) {
    let mine: T | undefined;
    try {
      mine = await recover();
    } catch (e) {
      throw unknown(e instanceof BerthError ? e : error);
    }
    if (mine !== undefined) return mine;
    throw error;
  }
  if (outcome.unanswered && outcome.exhausted) throw unknown(error);
  if (outcome.exhausted && outcome.attempts > 1) {
    throw new BerthError(error.code, `${error.message}\n  (tried ${outcome.attempts} times in ${createTimeoutMs / 1000}s; nothing was created)`, {
      cause: error,
    });
  }
  throw error;
}

/** The VM named `name` if the create with `requestId` made it; `undefined` if another did or none exists. */
async function vmOfRequest(client: ControllerClient, name: string, requestId: string): Promise<Vm | undefined> {
  try {
    const { vm } = await client.getVm({ name });
    return vm?.requestId === requestId ? vm : undefined;
  } catch (e) {
    if (e instanceof BerthError && e.code === ErrorCode.NotFound) return undefined;
    throw e;
  }
}

/** `vm create` flags, as commander hands them over. */
interface CreateFlags extends WaitFlags, SpecFlags {
  onHostFailure?: string;
  createTimeout?: string;
}

/** The phase a VM heads for with this desired state (`undefined`: DELETED, it goes away). */
function targetPhase(desired: DesiredState): VmPhase | undefined {
  switch (desired) {
    case DesiredState.DESIRED_STATE_STOPPED:
      return VmPhase.VM_PHASE_STOPPED;
    case DesiredState.DESIRED_STATE_DELETED:
      return undefined;
    default:
      return VmPhase.VM_PHASE_RUNNING;
  }
}

/** Adds `berth vm create|list|show|start|stop|retry|delete|migrate`. */
export function registerVmCommands(program: Command, ctx: CliContext): void {
  const vm = program
    .command("vm")
    .description("Create, list, inspect, start, stop, retry, delete and live-migrate VMs")
    .addHelpText("after", "\nExample:\n  berth vm create web-1 --vcpus 2 --memory 4GiB --disk 20GiB --wait");

  addWaitOptions(
    addSpecOptions(
      vm
        .command("create")
        .description("Create a VM (or --count VMs at once); the controller places it on a host with room and starts it")
        .argument("<name>", "VM name: 1-63 lower-case letters, digits or '-', unique in the cluster"),
      "create this many VMs",
    )
      .addOption(
        new Option("--on-host-failure <policy>", "when its host fails and is fenced: restart elsewhere, or keep waiting for it (default: the cluster's, see berth config show)")
          .choices(Object.keys(ON_HOST_FAILURE_OF_FLAG)),
      )
      .option(
        "--create-timeout <seconds>",
        `how long to keep retrying the create through a leader change or a lost answer (default: ${DEFAULT_CREATE_TIMEOUT_S})`,
      ),
    "return once the VM (every VM) is RUNNING (exit 0) or failed for good (exit 7, with the reason)",
  )
    .addHelpText(
      "after",
      `
Prints the new VM (phase PENDING until its host reports it). Sizes (kubectl's convention): a
unit with an i is binary, Mi/MiB, Gi/GiB, Ti/TiB (4GiB = 4 x 1024^3 bytes); one without is
decimal, MB, GB, TB (4GB = 4 x 10^9 bytes); a lone M, G or T is refused as ambiguous; a bare
number is MiB for --memory, GiB for --disk. Flags are checked before anything is sent: a bad one is
reported by name with exit code 2. No host with room: exit code 4.

--count N creates NAME-1 ... NAME-N in one CreateVms call: all of them are placed, or none is
created. --group puts the VM(s) in a placement group (berth group create). Host constraints:
--require-host-label k=v (the host must have it), --forbid-host-label k=v or k (it must not;
a bare key forbids any value), --pin HOST[,HOST...] (only these hosts). Try a placement first
with berth plan.

A usable guest: --image NAME starts the disk from a catalog image (berth image create; the disk is
a copy-on-write layer over the host's copy, so --disk must be at least the image's virtual size:
berth image show NAME). --network NAME adds a NIC on a network the host offers (berth host show
lists them); repeat it for more NICs, eth0, eth1... in the order given; their MACs are fixed by the
VM's id. --ssh-key gives cloud-init a public key for the default user: the key itself
("ssh-ed25519 AAAA... me@laptop"), or a file of keys, one a line (# comments and empty lines
skipped): @PATH is always a file; another value is taken as a key when it reads as one
(ssh-..., ecdsa-..., sk-...), else as a file path (~/.ssh/id_ed25519.pub); neither is exit 2. A
private key is refused. --user-data FILE (- for standard input) is given to cloud-init as is
(#cloud-config YAML, a script, MIME multipart), at most 64 KiB of UTF-8; without it Berth writes a
#cloud-config that sets the hostname (the VM's name) and the keys. Without either flag the guest
gets no cloud-init seed. --volume NAME attaches a data volume (berth volume create); the VM is
then placed on the volume's host (not with --count). berth vm show NAME prints the NICs' MACs and
addresses once the guest has them.

--on-host-failure restart: once the VM's host has failed and is fenced (known not to run it),
the controller recreates the VM on another host (from a blank disk if its disk was host-local);
keep: it waits for the host to come back. Unset: the cluster's default (berth config show).

Each create carries a fresh request id. When no leader answers, the call is cut off, or no
answer comes within --timeout, the same request is sent again (backoff with jitter) until
--create-timeout: the controller returns the VM that request id made rather than a second VM.
If a request was sent and no answer ever came, it prints "outcome unknown: vm NAME may have been
created; check with: berth vm show NAME" and exits 9; if no controller ever took the request,
nothing was created: exit 5.

--wait: a failed attempt the controller retries is not the end: one line per failed attempt is
printed to stderr ("attempt N failed: CODE: message; next try in Ns") and the wait goes on. A
permanent failure (a bad spec, a missing image...) ends it with exit 7 and the reason; fix the
cause, then berth vm retry NAME. ${EXIT_CODES_SEE}

Examples:
  berth vm create web-1 --vcpus 2 --memory 4GiB --disk 20GiB
  berth vm create db-1 --vcpus 8 --memory 32GiB --disk 500GiB --label tier=db --wait
  berth vm create web --count 3 --group web --vcpus 2 --memory 4GiB --disk 20GiB --wait
  berth vm create api-1 --vcpus 2 --memory 4GiB --disk 20GiB --on-host-failure restart
  berth vm create gpu-1 --vcpus 4 --memory 16GiB --disk 100GiB --require-host-label gpu=a100 --forbid-host-label maintenance
  berth vm create web-2 --vcpus 1 --memory 512 --disk 10 -o json
  berth vm create app-1 --vcpus 2 --memory 2GiB --disk 20GiB --image jammy --network default --ssh-key ~/.ssh/id_ed25519.pub --wait
  berth vm create db-2 --vcpus 4 --memory 8GiB --disk 40GiB --image jammy --network default --network storage \\
      --ssh-key @team-keys.pub --user-data db.yaml --volume db-data`,
    )
    .action(async (name: string, flags: CreateFlags, cmd: Command) => {
      const g = ctx.globals(cmd);
      const onHostFailure =
        flags.onHostFailure === undefined
          ? HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED
          : (ON_HOST_FAILURE_OF_FLAG[flags.onHostFailure] ?? HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED);
      const specs = (await readSpecsFromFlags(ctx.io, name, flags, isHuman(g.output))).map((spec) => ({ ...spec, onHostFailure }));
      const waitMs = waitTimeoutMs(flags);
      const createTimeoutMs = parseSecondsMs(flags.createTimeout ?? String(DEFAULT_CREATE_TIMEOUT_S), "--create-timeout");
      const client = ctx.client(g);
      // One id for every attempt of this invocation: a retry is the same request, not a new one.
      const requestId = randomUUID();
      const names = specs.map((spec) => spec.name);
      if (flags.count === undefined) {
        const response = await createIdempotently(
          ctx,
          names,
          requestId,
          createTimeoutMs,
          (deadline) => client.createVm({ spec: specs[0], requestId }, { deadline }),
          async () => {
            const vm = await vmOfRequest(client, name, requestId);
            return vm ? { vm } : undefined;
          },
        );
        const created = required(response.vm, "CreateVm");
        const shown = flags.wait
          ? await waitForPhase(ctx, g, client, created, VmPhase.VM_PHASE_RUNNING, waitMs)
          : created;
        printVm(ctx, g, shown);
        return;
      }
      const { vms } = await createIdempotently(
        ctx,
        names,
        requestId,
        createTimeoutMs,
        (deadline) => client.createVms({ specs, requestId }, { deadline }),
        async () => {
          const found: Vm[] = [];
          for (const n of names) {
            const vm = await vmOfRequest(client, n, requestId);
            if (!vm) return undefined;
            found.push(vm);
          }
          return { vms: found };
        },
      );
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
    .option("-w, --watch", "after the table, print it again on each change until Ctrl-C (see below)")
    .addHelpText(
      "after",
      `
Columns: name, phase (what the host last reported; MIGRATING while it is live-migrated, HOST
then being its source), desired state, host, size, age. -o wide adds IP (the first NIC's first
IPv4 address, else its first; - until the host learns one), ID, GENERATION, GROUP, LABELS, CREATED.
With -o json: a JSON array of VMs. ${EXIT_CODES_SEE}

--watch follows the cluster's WatchEvents stream: on a terminal the table is redrawn in place,
otherwise each changed row is printed as a new line (as kubectl get -w); -o json prints one
{"type":"ADDED|MODIFIED|DELETED","object":VM} line per change. At most 4 redraws a second; a
broken stream is reopened (on the new leader) with backoff. Ctrl-C ends it (exit 0).

Examples:
  berth vm list
  berth vm list --host host-1 -o json
  berth vm list --watch`,
    )
    .action(async (flags: { host?: string; watch?: boolean }, cmd: Command) => {
      const g = ctx.globals(cmd);
      if (flags.watch) {
        // An unknown --host is NOT_FOUND, as without --watch.
        if (flags.host) await ctx.client(g).getHost({ id: flags.host });
        await watchVmList(ctx, g, flags.host);
        return;
      }
      // Every page, each its own call with its own deadline.
      const vms: Vm[] = [];
      let pageToken = "";
      do {
        const page = await ctx.client(g).listVms({ hostId: flags.host ?? "", pageSize: 0, pageToken });
        vms.push(...page.vms);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      const sorted = sortByName(vms, (v) => v.spec?.name ?? "");
      ctx.io.stdout(render(g.output, vmListView(sorted, ctx.io.now())));
    });

  vm.command("show")
    .description("Show one VM in detail: placement, resources, image, NICs and addresses, volumes, cloud-init, labels, status, retries")
    .argument("<name>", "VM name")
    .addHelpText(
      "after",
      `
While the VM's command is failing it shows how many attempts failed in a row, the last error
code, and when the controller tries again (or that the failure is permanent: berth vm retry NAME
once the cause is fixed). While the VM is MIGRATING, Migration says where to and how far (berth
migration show NAME has the rest). Request ID: the id of the create that made the VM.
Networks: a line per NIC, "eth0  default  52:54:00:12:34:56  10.122.3.4 (lease)": its place
(ethN counts the NICs in order; the guest may name them otherwise), network, MAC, and the
addresses its host learnt, with how (lease: the network's DHCP, arp, agent: the guest agent);
"waiting for an address" while the VM runs and none is known yet. Volumes: the attached data
volumes, in order. Cloud-init: how many SSH keys and how large the user-data is (never what it
says; -o json has the VM as stored). No such VM: exit code 3. ${EXIT_CODES_SEE}

Example:
  berth vm show web-1`,
    )
    .action(async (name: string, _flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      const client = ctx.client(g);
      const vmFound = required((await client.getVm({ name })).vm, "GetVm");
      if (!isHuman(g.output)) {
        ctx.io.stdout(render(g.output, vmView(vmFound, ctx.io.now())));
        return;
      }
      // Best effort: a VM that is migrating shows where to and how far; without an answer, just the VM.
      const migration =
        vmFound.status?.phase === VmPhase.VM_PHASE_MIGRATING
          ? await client.getMigration({ name }).then((r) => r.migration, () => undefined)
          : undefined;
      // Best effort too: the attached volumes' sizes and phases; without an answer, their names.
      const volumes =
        (vmFound.spec?.volumes.length ?? 0) > 0 ? await client.listVolumes({ hostId: "" }).then((r) => r.volumes, () => undefined) : undefined;
      ctx.io.stdout(vmDetail(vmFound, ctx.io.now(), migration, volumes));
    });

  addWaitOptions(
    vm.command("start").description("Start a stopped VM (sets its desired state to RUNNING)").argument("<name>", "VM name"),
    "return once the VM is RUNNING (exit 0) or failed for good (exit 7)",
  )
    .addHelpText(
      "after",
      `\n--wait: failed attempts the controller retries are shown and waited through. ${EXIT_CODES_SEE}\n\nExamples:\n  berth vm start web-1\n  berth vm start web-1 --wait`,
    )
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
    "return once the VM is STOPPED (exit 0) or failed for good (exit 7)",
  )
    .addHelpText(
      "after",
      `\n--wait: failed attempts the controller retries are shown and waited through. ${EXIT_CODES_SEE}\n\nExamples:\n  berth vm stop web-1\n  berth vm stop web-1 --force --wait`,
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
      .command("retry")
      .description("Send the VM's current command to its host again now: clears a permanent failure or a retry's backoff")
      .argument("<name>", "VM name"),
    "return once the VM is where its desired state says (RUNNING, STOPPED, or gone) or failed for good (exit 7)",
  )
    .addHelpText(
      "after",
      `
A failed command is retried by the controller on its own, with backoff, unless the failure is
permanent (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION): then nothing
happens until the spec or desired state changes, or until this. Fix the cause first (berth vm
show NAME has the last error). Prints the VM (its generation is bumped, so the host applies the
command afresh). No such VM: exit code 3. ${EXIT_CODES_SEE}

Examples:
  berth vm retry web-1
  berth vm retry web-1 --wait`,
    )
    .action(async (name: string, flags: WaitFlags, cmd: Command) => {
      const g = ctx.globals(cmd);
      parseName(name);
      const waitMs = waitTimeoutMs(flags);
      const client = ctx.client(g);
      const retried = required((await client.retryVm({ name })).vm, "RetryVm");
      if (!flags.wait) {
        printVm(ctx, g, retried);
        return;
      }
      const target = targetPhase(retried.desiredState);
      if (target === undefined) {
        if (isHuman(g.output)) ctx.io.stderr(`waiting up to ${waitMs / 1000}s for vm ${name} to be deleted...\n`);
        await waitForGone(client, retried, waitMs);
        ctx.io.stdout(isHuman(g.output) ? `vm ${name} deleted\n` : render(g.output, vmView(retried, ctx.io.now())));
        return;
      }
      printVm(ctx, g, await waitForPhase(ctx, g, client, retried, target, waitMs));
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
      if (isHuman(g.output)) ctx.io.stderr(`waiting up to ${waitMs / 1000}s for vm ${name} to be deleted...\n`);
      await waitForGone(client, deleted, waitMs);
      ctx.io.stdout(isHuman(g.output) ? `vm ${name} deleted\n` : render(g.output, vmView(deleted, ctx.io.now())));
    });

  registerVmMigrateCommand(vm, ctx);
}
