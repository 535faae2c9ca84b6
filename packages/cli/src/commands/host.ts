import { DeleteOrphanResponse, DrainDeadlineAction, DrainPhase, HostFailurePolicy, type DrainStatus, type Host, type Vm } from "@berth/api";
import { deadlineIn } from "@berth/core";
import { Option, type Command } from "commander";
import type { ControllerClient } from "../client.js";
import { confirmOrRefuse } from "../confirm.js";
import type { CliContext, GlobalOptions } from "../context.js";
import { CliError, ExitCode, usageError } from "../exit-codes.js";
import {
  drainFigures,
  drainPhaseName,
  drainProgressText,
  formatAge,
  formatResourcesHuman,
  domainStateName,
  hostDetailView,
  hostListView,
  hostStateText,
  hostView,
  phaseName,
  orphanListView,
  compareNames,
  sortByName,
  vmView,
} from "../format.js";
import { isHuman, render } from "../output.js";
import { parseDurationMs, parseName, parseSecondsMs } from "../parse.js";
import { ProgressLine } from "../progress.js";
import { pollUntil } from "../wait.js";
import { registerHostAdminCommands } from "./host-admin.js";
import { watchHostList } from "./list-watches.js";

const EXIT_CODES_SEE = "Exit codes: see berth --help.";

async function getHost(client: ControllerClient, id: string): Promise<Host> {
  const found = (await client.getHost({ id })).host;
  if (!found) throw new CliError("the controller's answer to GetHost has no host", ExitCode.Error);
  return found;
}

function requireVmId(vmId: string): string {
  if (vmId.trim() === "") throw usageError("VM_ID: must not be empty (berth host orphans HOST lists them)");
  return vmId.trim();
}

/** Every VM placed on `hostId`, every page. */
async function vmsOnHost(client: ControllerClient, hostId: string): Promise<Vm[]> {
  const vms: Vm[] = [];
  let pageToken = "";
  do {
    const page = await client.listVms({ hostId, pageSize: 0, pageToken });
    vms.push(...page.vms);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return vms;
}

const names = (vms: readonly Vm[]): string => sortByName(vms.map((v) => v.spec?.name ?? v.id), (n) => n).join(", ");

/**
 * What `host confirm-down` will do to this host's VMs, for the person asked to confirm it: which
 * VMs are recreated elsewhere (their own policy, else the cluster's default) and which stay. Best
 * effort: when the controller cannot be asked, the consequences are told in general.
 */
async function confirmDownConsequences(client: ControllerClient, hostId: string, nowMs: number): Promise<string> {
  const general = [
    `Confirming ${hostId} down tells the controller the host is powered off for good (like Kubernetes'`,
    "out-of-service taint): it is fenced at once, without waiting for its fence deadline, and its VMs",
    "with on-host-failure restart are recreated on other hosts (from blank disks where their disks were",
    "host-local). If the host comes back, its superseded copies are removed.",
  ];
  const warning = `Do this only once ${hostId} is known to be powered off: VMs it still runs would run twice.`;
  try {
    const [host, vms, config] = await Promise.all([
      getHost(client, hostId),
      vmsOnHost(client, hostId),
      client.getClusterConfig({}).then((r) => r.config),
    ]);
    const fallback = config?.defaultOnHostFailure ?? HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED;
    const restarts = (vm: Vm): boolean => {
      const own = vm.spec?.onHostFailure ?? HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED;
      const policy = own === HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED ? fallback : own;
      return policy === HostFailurePolicy.HOST_FAILURE_POLICY_RESTART;
    };
    const moved = vms.filter(restarts);
    const kept = vms.filter((v) => !restarts(v));
    const since = host.stateSinceMs > 0 ? ` for ${formatAge(host.stateSinceMs, nowMs)}` : "";
    return [
      ...general,
      `${hostId} is ${hostStateText(host)}${since}.`,
      moved.length > 0 ? `  recreated elsewhere (${moved.length}): ${names(moved)}` : "  recreated elsewhere: none",
      kept.length > 0 ? `  left waiting for the host (${kept.length}, keep): ${names(kept)}` : "  left waiting for the host: none",
      warning,
    ].join("\n");
  } catch {
    return [...general, warning].join("\n");
  }
}

/** Adds `berth host list|show|orphans|confirm-down|cordon|uncordon|drain|label|delete`. */
export function registerHostCommands(program: Command, ctx: CliContext): void {
  const host = program
    .command("host")
    .description("List and inspect the hosts the agents registered; cordon and drain them; deal with orphans and dead hosts")
    .addHelpText("after", "\nExamples:\n  berth host list\n  berth host drain host-1 --deadline 30m --wait");

  host
    .command("list")
    .description("List hosts, sorted by id: state, usage of capacity, driver, when last heard from")
    .addHelpText(
      "after",
      `
STATE is READY (heard from), SUSPECT (silent or its stream gone: no new VMs, its VMs' state
unknown), DOWN (silent past the down timeout; its VMs are still assumed to run) or FENCED (known
not to run its VMs: silent past its watchdog, or confirmed down; restart-policy VMs are
recreated elsewhere), with badges: CORDONED (no new VMs: berth host cordon), DRAINING, DRAINED
or DRAIN-INCOMPLETE (berth host drain; cordoned too), HYPERVISOR-DOWN. An ORPHANS column counts domains
no VM record accounts for, when any host has some (berth host orphans HOST).
CPU, MEMORY and DISK are what the host's VMs ask for (ALLOC) against allocatable: what the
scheduler may place there, ratio x physical - reserved (berth config show; a host may override).
-o wide adds what the VMs use (USED, as last reported) against the same allocatable, DRIVER,
VERSION (the agent's), CPU MODEL, NETWORKS (the active ones VMs can use), IMAGES (how many it
holds), VOLUMES (how many, total size) and LABELS. -o json / -o yaml: the hosts; -o name: their ids.
--watch prints the table again on each change of a host (or of its VMs) from the WatchEvents
stream, until Ctrl-C (exit 0): redrawn in place on a terminal, the changed rows as new lines
otherwise, -o json one {"type","object"} line per change; at most 4 redraws a second.
${EXIT_CODES_SEE}

Examples:
  berth host list
  berth host list -o json
  berth host list --watch`,
    )
    .option("-w, --watch", "after the table, print it again on each change until Ctrl-C")
    .action(async (flags: { watch?: boolean }, cmd: Command) => {
      const g = ctx.globals(cmd);
      if (flags.watch) {
        await watchHostList(ctx, g);
        return;
      }
      const { hosts } = await ctx.client(g).listHosts({});
      const sorted = sortByName(hosts, (h) => h.id);
      ctx.io.stdout(render(g.output, hostListView(sorted, ctx.io.now())));
    });

  host
    .command("show")
    .description("Show one host in detail: state and since when, fencing, capacity, usage, labels, networks, images, volumes, agent, orphans")
    .argument("<id>", "host id, e.g. host-1")
    .addHelpText(
      "after",
      `
While the host is silent, "Fence deadline" says when it counts as fenced (its watchdog has
stopped its VMs by then) and restart-policy VMs are recreated elsewhere. A cordoned host shows
why (Cordoned), a drained or draining one its drain: phase, VMs moved of those to move, in
flight, failed, staying (stopped VMs stay), the deadline. Networks: the libvirt networks and
bridges the host offers (what vm create --network names; an inactive one cannot be used).
Images: the catalog images the host holds a copy of. Volumes: the data volumes in its pool,
their total size (counted in its allocated disk) and how many are attached.
No such host: exit code 3. ${EXIT_CODES_SEE}

Example:
  berth host show host-1`,
    )
    .action(async (id: string, _flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      const client = ctx.client(g);
      const found = await getHost(client, id);
      // Hosts report images by id; the catalog names them. Best effort: without an answer, the ids.
      const imageNames =
        isHuman(g.output) && found.images.length > 0
          ? await client.listImages({}).then(
              (r) => new Map(r.images.flatMap((i) => (i.image ? [[i.image.id, i.image.name] as const] : []))),
              () => undefined,
            )
          : undefined;
      ctx.io.stdout(render(g.output, hostDetailView(found, ctx.io.now(), imageNames)));
    });

  registerOrphanCommands(host, ctx);
  registerCordonCommands(host, ctx);
  registerHostAdminCommands(host, ctx);

  host
    .command("confirm-down")
    .description("Declare a silent host powered off for good: it is fenced now and its restart-policy VMs are recreated elsewhere")
    .argument("<id>", "host id, e.g. host-1")
    .option("--yes", "do not ask for confirmation (required without a terminal)")
    .addHelpText(
      "after",
      `
What it does: the controller marks the host confirmed down and FENCED at once, instead of
waiting for its fence deadline (berth host show), then recreates every VM of the host whose
on-host-failure is restart (its own, else the cluster's default) on other hosts, through the
scheduler; with a host-local disk the new copy starts from a blank disk. VMs with keep stay,
waiting for the host. If the host comes back, its superseded copies are removed. It is refused
for a host that is connected (FAILED_PRECONDITION, exit 6).

When to use it: like Kubernetes' out-of-service taint, only once the host is known to be
powered off (or its VMs known dead): e.g. it was switched off, its hardware died, or it was
fenced out of band. If it might still run its VMs, wait for the fence deadline instead: a VM
recreated while its old copy still runs would run twice.

On a terminal it shows what will happen and asks; without one it requires --yes (else exit 2).
${EXIT_CODES_SEE}

Examples:
  berth host confirm-down host-3
  berth host confirm-down host-3 --yes`,
    )
    .action(async (id: string, flags: { yes?: boolean }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const client = ctx.client(g);
      await confirmOrRefuse(ctx.io, {
        yes: flags.yes,
        verb: "host confirm-down",
        consequences: flags.yes || !ctx.io.interactive ? "" : await confirmDownConsequences(client, id, ctx.io.now()),
      });
      const confirmed = (await client.confirmHostDown({ hostId: id })).host;
      if (!confirmed) throw new CliError("the controller's answer to ConfirmHostDown has no host", ExitCode.Error);
      await printHost(ctx, g, confirmed);
    });
}

/** Adds `berth host orphans HOST`, `host orphans delete HOST VM_ID`, `host orphans adopt HOST VM_ID --name NAME`. */
function registerOrphanCommands(host: Command, ctx: CliContext): void {
  const orphans = host
    .command("orphans")
    .description("List the domains on a host that no VM record accounts for; delete or adopt them")
    .argument("[host]", "host id, e.g. host-1")
    .addHelpText(
      "after",
      `
An orphan is a domain carrying Berth's metadata that no VM of this cluster accounts for (a VM
deleted while its host was away, a copy superseded after a failover, another cluster's VM).
Berth leaves orphans alone: delete one (destroys it and its volumes) or adopt it as a new VM.
Columns: VM ID (the domain's UUID), name, state, size. With -o json: a JSON array.
${EXIT_CODES_SEE}

Examples:
  berth host orphans host-1
  berth host orphans delete host-1 0b6f3c1e-7d4a-4c1b-9a63-2f0e8d1c5b7a
  berth host orphans adopt host-1 0b6f3c1e-7d4a-4c1b-9a63-2f0e8d1c5b7a --name web-old`,
    )
    .action(async (hostId: string | undefined, _flags: unknown, cmd: Command) => {
      if (!hostId) throw usageError("host orphans: HOST is required (berth host orphans HOST), or a subcommand: delete, adopt");
      const g = ctx.globals(cmd);
      const found = await getHost(ctx.client(g), hostId);
      const sorted = [...found.orphans].sort((a, b) => compareNames(a.name, b.name) || compareNames(a.vmId, b.vmId));
      ctx.io.stdout(render(g.output, orphanListView(sorted)));
    });

  orphans
    .command("delete")
    .description("Delete an orphan domain and its volumes (it cannot be undone)")
    .argument("<host>", "host id")
    .argument("<vm-id>", "the orphan's VM ID (berth host orphans HOST)")
    .option("--yes", "do not ask for confirmation (required without a terminal)")
    .addHelpText(
      "after",
      `
The host must be connected; the answer comes once the host has removed the domain. On a
terminal it asks first; without one it requires --yes (else exit 2). No such host or orphan:
exit code 3. ${EXIT_CODES_SEE}

Examples:
  berth host orphans delete host-1 0b6f3c1e-7d4a-4c1b-9a63-2f0e8d1c5b7a
  berth host orphans delete host-1 0b6f3c1e-7d4a-4c1b-9a63-2f0e8d1c5b7a --yes`,
    )
    .action(async (hostId: string, vmIdArg: string, flags: { yes?: boolean }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const vmId = requireVmId(vmIdArg);
      const client = ctx.client(g);
      let what = `orphan domain ${vmId} on ${hostId}`;
      if (!flags.yes && ctx.io.interactive) {
        // Best effort: name what is about to go.
        const orphan = await getHost(client, hostId)
          .then((h) => h.orphans.find((o) => o.vmId === vmId))
          .catch(() => undefined);
        if (orphan) what += ` (${orphan.name || "no name"}, ${domainStateName(orphan.state)}, ${formatResourcesHuman(orphan.resources)})`;
      }
      await confirmOrRefuse(ctx.io, {
        yes: flags.yes,
        verb: "host orphans delete",
        consequences: `This destroys ${what} and deletes its volumes: its data is lost. To keep it, adopt it instead (berth host orphans adopt ${hostId} ${vmId} --name NAME).`,
      });
      const response = await client.deleteOrphan({ hostId, vmId });
      ctx.io.stdout(
        render(g.output, { data: () => DeleteOrphanResponse.toJSON(response), table: () => `orphan ${vmId} deleted from ${hostId}\n`, names: () => [vmId] }),
      );
    });

  orphans
    .command("adopt")
    .description("Make an orphan domain a VM of the cluster, where it is, under a new name")
    .argument("<host>", "host id")
    .argument("<vm-id>", "the orphan's VM ID (berth host orphans HOST)")
    .requiredOption("--name <name>", "the new VM's name: 1-63 lower-case letters, digits or '-', unique")
    .addHelpText(
      "after",
      `
The new VM takes the domain's resources as its spec and its current power state as its desired
state; it stays on this host. Prints the VM. The name taken: exit code 6. ${EXIT_CODES_SEE}

Example:
  berth host orphans adopt host-1 0b6f3c1e-7d4a-4c1b-9a63-2f0e8d1c5b7a --name web-old`,
    )
    .action(async (hostId: string, vmIdArg: string, flags: { name: string }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const vmId = requireVmId(vmIdArg);
      const name = parseName(flags.name, "--name");
      const adopted = (await ctx.client(g).adoptOrphan({ hostId, vmId, name })).vm;
      if (!adopted) throw new CliError("the controller's answer to AdoptOrphan has no VM", ExitCode.Error);
      printAdopted(ctx, g, adopted);
    });
}

function printAdopted(ctx: CliContext, g: GlobalOptions, vm: Vm): void {
  ctx.io.stdout(render(g.output, vmView(vm, ctx.io.now())));
}

/** Longest `--reason`, as the controller takes it. */
const MAX_REASON_CHARS = 256;
/** Longest `--deadline` of a drain, as the controller takes it. */
const MAX_DRAIN_DEADLINE_MS = 7 * 86_400_000;
/** `host drain --wait` without a deadline waits this long by default, in seconds. */
const DEFAULT_DRAIN_WAIT_TIMEOUT_S = 3600;
/** How long past its deadline a drain's wait goes on by default: the deadline's action takes a while. */
const DRAIN_WAIT_MARGIN_MS = 5 * 60_000;

const ON_DEADLINE_OF_FLAG: Readonly<Record<string, DrainDeadlineAction>> = {
  leave: DrainDeadlineAction.DRAIN_DEADLINE_ACTION_LEAVE,
  stop: DrainDeadlineAction.DRAIN_DEADLINE_ACTION_STOP,
};

function parseReason(text: string | undefined): string {
  if (text === undefined) return "";
  const reason = text.trim();
  if (reason.length > MAX_REASON_CHARS) throw usageError(`--reason: at most ${MAX_REASON_CHARS} characters (got ${reason.length})`);
  return reason;
}

function requiredHost(found: Host | undefined, what: string): Host {
  if (!found) throw new CliError(`the controller's answer to ${what} has no host`, ExitCode.Error);
  return found;
}

/** A host after a change, as a one-row `host list` table (allocatable as there). Await it. */
async function printHost(ctx: CliContext, g: GlobalOptions, h: Host): Promise<void> {
  ctx.io.stdout(render(g.output, hostView(h, ctx.io.now())));
}

/** What changes in a drain's progress line often enough to be worth a plain line (a log). */
const drainStep = (d: DrainStatus): string => `${d.phase}|${d.toMove}|${d.moved}|${d.inFlight}|${d.failed}|${d.staying}`;

/** The VMs still placed on a host, as `web-3 (RUNNING), db-1 (STOPPED)`; best effort, `undefined` when it cannot be told. */
async function vmsLeftText(client: ControllerClient, hostId: string): Promise<string | undefined> {
  try {
    const vms = await vmsOnHost(client, hostId);
    if (vms.length === 0) return "none";
    return sortByName(vms, (v) => v.spec?.name ?? v.id)
      .map((v) => `${v.spec?.name ?? v.id} (${phaseName(v.status?.phase ?? 0)})`)
      .join(", ");
  } catch {
    return undefined;
  }
}

/**
 * Follows a host's drain (GetHost, once a second) until it is DRAINED (returns the host) or
 * INCOMPLETE, or cancelled (prints the host, throws exit 11 naming the VMs left); exit 8 when
 * `timeoutMs` passes first.
 */
async function followDrain(ctx: CliContext, g: GlobalOptions, client: ControllerClient, start: Host, timeoutMs: number): Promise<Host> {
  const id = start.id;
  const progress = isHuman(g.output) ? new ProgressLine(ctx.io) : undefined;
  if (progress && start.drain?.phase === DrainPhase.DRAIN_PHASE_DRAINING) {
    ctx.io.stderr(`waiting up to ${timeoutMs / 1000}s for host ${id} to be drained...\n`);
  }
  const result = await pollUntil(
    ctx.io,
    async (deadline) => requiredHost((await client.getHost({ id }, { deadline })).host, "GetHost"),
    (h) => {
      if (h.drain) progress?.update(drainProgressText(id, h.drain, ctx.io.now()), drainStep(h.drain));
      return !h.drain || h.drain.phase !== DrainPhase.DRAIN_PHASE_DRAINING ? h : undefined;
    },
    { deadline: deadlineIn(timeoutMs), initial: start },
  ).finally(() => progress?.end());
  if (result.status === "timeout") {
    const d = result.last?.drain;
    throw new CliError(
      `timed out after ${timeoutMs / 1000}s waiting for host ${id} to be drained` +
        `${d ? ` (last: ${drainPhaseName(d.phase)}, ${drainFigures(d)})` : ""}; the drain goes on: berth host show ${id}`,
      ExitCode.WaitTimeout,
    );
  }
  const ended = result.value;
  if (ended.drain?.phase === DrainPhase.DRAIN_PHASE_DRAINED) return ended;
  await printHost(ctx, g, ended);
  const left = await vmsLeftText(client, id);
  const leftText = left === undefined ? "" : `; left on ${id}: ${left}`;
  if (!ended.drain) {
    throw new CliError(`the drain of host ${id} was cancelled (the host was uncordoned)${leftText}`, ExitCode.DrainIncomplete);
  }
  const d = ended.drain;
  throw new CliError(
    `the drain of host ${id} ended ${drainPhaseName(d.phase)}: ${drainFigures(d)}${leftText}` +
      `${d.message ? `; ${d.message}` : ""}\n  the host stays cordoned; see berth migration list --host ${id}, berth host uncordon ${id}`,
    ExitCode.DrainIncomplete,
  );
}

/** Adds `berth host cordon|uncordon|drain`. */
function registerCordonCommands(host: Command, ctx: CliContext): void {
  host
    .command("cordon")
    .description("Stop placing new VMs on a host; its VMs stay where they are")
    .argument("<id>", "host id, e.g. host-1")
    .option("--reason <text>", `why, for the other operators (shown by host show; at most ${MAX_REASON_CHARS} characters)`)
    .addHelpText(
      "after",
      `
The scheduler skips a cordoned host for new VMs and for migrations' targets; its VMs keep running.
It is set by an operator and stays through agent reconnects, until berth host uncordon. Prints the
host (STATE ...,CORDONED). To move its VMs away too: berth host drain. ${EXIT_CODES_SEE}

Examples:
  berth host cordon host-1
  berth host cordon host-1 --reason "disk replacement, ticket 4711"`,
    )
    .action(async (id: string, flags: { reason?: string }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const reason = parseReason(flags.reason);
      await printHost(ctx, g, requiredHost((await ctx.client(g).cordonHost({ hostId: id, reason })).host, "CordonHost"));
    });

  host
    .command("uncordon")
    .description("Let new VMs go to a host again; cancels its drain, if one is in progress")
    .argument("<id>", "host id, e.g. host-1")
    .addHelpText(
      "after",
      `
Cancelling a drain: its migrations still pending fail, those in flight finish. The cordon reason
and the drain status are cleared. Prints the host. ${EXIT_CODES_SEE}

Example:
  berth host uncordon host-1`,
    )
    .action(async (id: string, _flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      await printHost(ctx, g, requiredHost((await ctx.client(g).uncordonHost({ hostId: id })).host, "UncordonHost"));
    });

  host
    .command("drain")
    .description("Cordon a host and live-migrate its running VMs to other hosts")
    .argument("<id>", "host id, e.g. host-1")
    .option("--deadline <duration>", "give up moving VMs after this long, e.g. 10m, 1h30m (at most 7d; default: no deadline)")
    .addOption(
      new Option("--on-deadline <action>", "what happens at the deadline to the VMs not moved: leave them running (default) or stop them").choices(
        Object.keys(ON_DEADLINE_OF_FLAG),
      ),
    )
    .option("--reason <text>", `recorded as the cordon reason (default: "drain"; at most ${MAX_REASON_CHARS} characters)`)
    .option("--wait", "return once the host is DRAINED (exit 0) or the drain ended INCOMPLETE or was cancelled (exit 11)")
    .option(
      "--wait-timeout <seconds>",
      `how long --wait waits (default: the --deadline plus 5 minutes, else ${DEFAULT_DRAIN_WAIT_TIMEOUT_S})`,
    )
    .addHelpText(
      "after",
      `
The host is cordoned, then each running VM on it is migrated away, ahead of other migrations
(at most 2 leave a host at once by default), to the host the scheduler picks. Stopped VMs stay:
their disks are on the host. The drain ends DRAINED when no running VM is left, or at
--deadline INCOMPLETE, with --on-deadline applied to the VMs left: leave (they keep running
there) or stop (a graceful shutdown; their records stay, desired state STOPPED). The host stays
cordoned either way; berth host uncordon cancels a drain. Prints the host; host show has the
drain's figures.

--wait: follows the drain (GetHost, once a second) with a progress line on stderr (moved / to
move, in flight, failed, staying), redrawn in place on a terminal, a line per change otherwise.
DRAINED: exit 0. INCOMPLETE or cancelled: exit 11, naming the VMs left on the host.
${EXIT_CODES_SEE}

Examples:
  berth host drain host-1 --wait
  berth host drain host-1 --deadline 30m --on-deadline stop --reason "kernel upgrade" --wait
  berth host drain host-2 --deadline 1h -o json`,
    )
    .action(
      async (
        id: string,
        flags: { deadline?: string; onDeadline?: string; reason?: string; wait?: boolean; waitTimeout?: string },
        cmd: Command,
      ) => {
        const g = ctx.globals(cmd);
        const deadlineMs = flags.deadline === undefined ? 0 : parseDurationMs(flags.deadline, "--deadline", MAX_DRAIN_DEADLINE_MS);
        if (flags.onDeadline !== undefined && flags.deadline === undefined) {
          throw usageError("--on-deadline: needs --deadline (without a deadline the drain goes on until every VM has moved)");
        }
        const onDeadline =
          flags.onDeadline === undefined
            ? DrainDeadlineAction.DRAIN_DEADLINE_ACTION_UNSPECIFIED
            : (ON_DEADLINE_OF_FLAG[flags.onDeadline] ?? DrainDeadlineAction.DRAIN_DEADLINE_ACTION_UNSPECIFIED);
        const reason = parseReason(flags.reason);
        const waitMs =
          flags.waitTimeout !== undefined
            ? parseSecondsMs(flags.waitTimeout, "--wait-timeout")
            : deadlineMs > 0
              ? deadlineMs + DRAIN_WAIT_MARGIN_MS
              : DEFAULT_DRAIN_WAIT_TIMEOUT_S * 1000;
        const client = ctx.client(g);
        const draining = requiredHost((await client.drainHost({ hostId: id, deadlineMs, onDeadline, reason })).host, "DrainHost");
        await printHost(ctx, g, flags.wait ? await followDrain(ctx, g, client, draining, waitMs) : draining);
      },
    );
}
