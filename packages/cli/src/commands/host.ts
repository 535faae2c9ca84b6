import { DeleteOrphanResponse, HostFailurePolicy, type Host, type Vm } from "@berth/api";
import type { Command } from "commander";
import type { ControllerClient } from "../client.js";
import { confirmOrRefuse } from "../confirm.js";
import type { CliContext, GlobalOptions } from "../context.js";
import { CliError, ExitCode, usageError } from "../exit-codes.js";
import {
  formatAge,
  formatResourcesHuman,
  domainStateName,
  hostDetail,
  hostJson,
  hostListJson,
  hostStateName,
  hostTable,
  orphanListJson,
  orphanTable,
  vmJson,
  vmTable,
} from "../format.js";
import { parseName } from "../parse.js";

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

const names = (vms: readonly Vm[]): string =>
  vms
    .map((v) => v.spec?.name ?? v.id)
    .sort()
    .join(", ");

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
      `${hostId} is ${hostStateName(host.state, host.cordoned)}${since}.`,
      moved.length > 0 ? `  recreated elsewhere (${moved.length}): ${names(moved)}` : "  recreated elsewhere: none",
      kept.length > 0 ? `  left waiting for the host (${kept.length}, keep): ${names(kept)}` : "  left waiting for the host: none",
      warning,
    ].join("\n");
  } catch {
    return [...general, warning].join("\n");
  }
}

/** Adds `berth host list|show|orphans|confirm-down`. */
export function registerHostCommands(program: Command, ctx: CliContext): void {
  const host = program
    .command("host")
    .description("List and inspect the hosts the agents registered; deal with orphans and dead hosts")
    .addHelpText("after", "\nExample:\n  berth host list");

  host
    .command("list")
    .description("List hosts, sorted by id: state, usage of capacity, driver, when last heard from")
    .addHelpText(
      "after",
      `
STATE is READY (heard from), SUSPECT (silent or its stream gone: no new VMs, its VMs' state
unknown), DOWN (silent past the down timeout; its VMs are still assumed to run) or FENCED (known
not to run its VMs: silent past its watchdog, or confirmed down; restart-policy VMs are
recreated elsewhere), with badges: CORDONED, HYPERVISOR-DOWN. An ORPHANS column counts domains
no VM record accounts for, when any host has some (berth host orphans HOST).
Usage is what the host's VMs use, as last reported, over the host's physical capacity.
With -o json: a JSON array of hosts. ${EXIT_CODES_SEE}

Examples:
  berth host list
  berth host list -o json`,
    )
    .action(async (_flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      const { hosts } = await ctx.client(g).listHosts({});
      const sorted = [...hosts].sort((a, b) => a.id.localeCompare(b.id));
      ctx.io.stdout(g.output === "json" ? hostListJson(sorted) : hostTable(sorted, ctx.io.now()));
    });

  host
    .command("show")
    .description("Show one host in detail: state and since when, fencing, capacity, usage, labels, agent, orphans")
    .argument("<id>", "host id, e.g. host-1")
    .addHelpText(
      "after",
      `
While the host is silent, "Fence deadline" says when it counts as fenced (its watchdog has
stopped its VMs by then) and restart-policy VMs are recreated elsewhere. No such host: exit
code 3. ${EXIT_CODES_SEE}

Example:
  berth host show host-1`,
    )
    .action(async (id: string, _flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      const found = await getHost(ctx.client(g), id);
      ctx.io.stdout(g.output === "json" ? hostJson(found) : hostDetail(found, ctx.io.now()));
    });

  registerOrphanCommands(host, ctx);

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
      ctx.io.stdout(g.output === "json" ? hostJson(confirmed) : hostTable([confirmed], ctx.io.now()));
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
      const sorted = [...found.orphans].sort((a, b) => a.name.localeCompare(b.name) || a.vmId.localeCompare(b.vmId));
      ctx.io.stdout(g.output === "json" ? orphanListJson(sorted) : orphanTable(sorted));
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
        g.output === "json"
          ? JSON.stringify(DeleteOrphanResponse.toJSON(response), null, 2) + "\n"
          : `orphan ${vmId} deleted from ${hostId}\n`,
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
  ctx.io.stdout(g.output === "json" ? vmJson(vm) : vmTable([vm], ctx.io.now()));
}
