import { Host } from "@berth/api";
import type { Command } from "commander";
import { confirmOrRefuse } from "../confirm.js";
import type { CliContext } from "../context.js";
import { CliError, ExitCode, usageError } from "../exit-codes.js";
import { compareNames, formatAge, hostStateText, renderTable } from "../format.js";
import { render } from "../output.js";

const EXIT_CODES_SEE = "Exit codes: see berth --help.";

/** What `host label`'s arguments ask for. */
export interface LabelChange {
  set: Record<string, string>;
  remove: string[];
}

/**
 * `KEY=VALUE` sets, `KEY-` removes (kubectl's syntax). Keys and values are not checked here: the
 * controller is the authority on them and names a bad one (INVALID_ARGUMENT, exit 2).
 */
export function parseLabelArgs(args: readonly string[]): LabelChange {
  if (args.length === 0) throw usageError("host label: give KEY=VALUE to set a label or KEY- to remove one (berth host label HOST rack=r1 zone-)");
  const set: Record<string, string> = {};
  const remove: string[] = [];
  for (const arg of args) {
    const eq = arg.indexOf("=");
    if (eq >= 0) {
      const key = arg.slice(0, eq);
      if (key in set && set[key] !== arg.slice(eq + 1)) throw usageError(`host label: '${key}' is given twice with different values`);
      set[key] = arg.slice(eq + 1);
    } else if (arg.endsWith("-")) {
      remove.push(arg.slice(0, -1));
    } else {
      throw usageError(`host label: '${arg}' is neither KEY=VALUE (set) nor KEY- (remove)`);
    }
  }
  const both = remove.filter((k) => k in set);
  if (both.length > 0) throw usageError(`host label: '${both[0]}' is both set and removed`);
  return { set, remove };
}

/** The labels of a host with who set each: `operator`, `agent`, or `operator (agent: V)` where one hides the other. */
export function hostLabelsTable(host: Host): string {
  const keys = [...new Set([...Object.keys(host.labels), ...Object.keys(host.operatorLabels), ...Object.keys(host.agentLabels)])].sort(compareNames);
  if (keys.length === 0) return "No labels.\n";
  const rows = keys.map((k) => {
    const op = host.operatorLabels[k];
    const agent = host.agentLabels[k];
    const from =
      op !== undefined ? (agent !== undefined && agent !== op ? `operator (over the agent's ${agent})` : "operator") : agent !== undefined ? "agent" : "-";
    return [k, host.labels[k] ?? op ?? agent ?? "", from];
  });
  return renderTable(["KEY", "VALUE", "SET BY"], rows);
}

/** Adds `berth host label` and `berth host delete` to `host`. */
export function registerHostAdminCommands(host: Command, ctx: CliContext): void {
  host
    .command("label")
    .description("Set or remove a host's operator labels (the scheduler's --require-host-label and --forbid-host-label read them)")
    .argument("<id>", "host id, e.g. host-1")
    .argument("<changes...>", "KEY=VALUE to set a label, KEY- to remove one")
    .option("--overwrite", "allow changing the value of a label an operator set before")
    .addHelpText(
      "after",
      `
A host's labels are its agent's (berth-agent --label, sent at each connect) with the operator's
over them: an operator's value wins for a key both set, and stays across the agent's reconnects.
KEY- removes an operator label (the agent's value, if it has one, shows again); a label only the
agent sets cannot be removed here (FAILED_PRECONDITION, exit 6): change the agent's --label.
Changing an operator label's value needs --overwrite (exit 6 without it), as kubectl label.
Keys and values are checked by the controller (INVALID_ARGUMENT, exit 2, naming the label).
Prints the host's labels and who set each; host show has both sets. ${EXIT_CODES_SEE}

Examples:
  berth host label host-1 rack=r1 ssd=true
  berth host label host-1 rack=r2 --overwrite
  berth host label host-1 ssd-
  berth vm create db-1 --vcpus 4 --memory 16GiB --disk 100GiB --require-host-label ssd=true`,
    )
    .action(async (id: string, changes: string[], flags: { overwrite?: boolean }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const change = parseLabelArgs(changes);
      const client = ctx.client(g);
      const before = (await client.getHost({ id })).host;
      if (!before) throw new CliError("the controller's answer to GetHost has no host", ExitCode.Error);
      for (const [key, value] of Object.entries(change.set)) {
        const had = before.operatorLabels[key];
        if (had !== undefined && had !== value && !flags.overwrite) {
          throw new CliError(`host label: '${key}' already has the value '${had}' on ${id}; to change it, add --overwrite`, ExitCode.Conflict);
        }
        const agent = before.agentLabels[key];
        if (had === undefined && agent !== undefined && agent !== value) {
          ctx.io.stderr(`note: ${key}=${value} hides the agent's value '${agent}' on ${id} (removing it with ${key}- shows the agent's again)\n`);
        }
      }
      for (const key of change.remove) {
        if (!(key in before.operatorLabels) && !(key in before.agentLabels)) ctx.io.stderr(`note: ${id} has no label '${key}'\n`);
      }
      const after = (await client.labelHost({ hostId: id, set: change.set, remove: change.remove })).host;
      if (!after) throw new CliError("the controller's answer to LabelHost has no host", ExitCode.Error);
      ctx.io.stdout(render(g.output, { data: () => Host.toJSON(after), table: () => hostLabelsTable(after), names: () => [after.id] }));
    });

  host
    .command("delete")
    .description("Forget a retired host: its record goes (refused while its agent is connected or anything is on it)")
    .argument("<id>", "host id, e.g. host-1")
    .option("--yes", "do not ask for confirmation (required without a terminal)")
    .addHelpText(
      "after",
      `
For a host taken out of the cluster for good: the controller deletes its record (its labels,
cordon and state go with it). It is refused (FAILED_PRECONDITION, exit 6, saying what holds it)
while the host's agent is connected (stop it first), while any VM record names the host (drain
it, or delete them), or while a migration in flight involves it. If the agent connects again
later, the host is registered anew. No such host: exit 3.
On a terminal it asks first; without one it requires --yes (else exit 2). ${EXIT_CODES_SEE}

Examples:
  berth host delete host-9
  berth host delete host-9 --yes`,
    )
    .action(async (id: string, flags: { yes?: boolean }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const client = ctx.client(g);
      let what = `host ${id}`;
      if (!flags.yes && ctx.io.interactive) {
        // Best effort: say what is about to go.
        const found = await client
          .getHost({ id })
          .then((r) => r.host)
          .catch(() => undefined);
        if (found) what += ` (${hostStateText(found)}${found.lastSeenMs > 0 ? `, last seen ${formatAge(found.lastSeenMs, ctx.io.now())} ago` : ""})`;
      }
      await confirmOrRefuse(ctx.io, {
        yes: flags.yes,
        verb: "host delete",
        consequences: `This deletes the record of ${what}: its labels, cordon and state are forgotten. If its agent connects again, it is registered as a new host.`,
      });
      await client.deleteHost({ hostId: id });
      ctx.io.stdout(render(g.output, { data: () => ({}), table: () => `host ${id} deleted\n`, names: () => [id] }));
    });
}
