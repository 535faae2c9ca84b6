import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { CliError, ExitCode } from "../exit-codes.js";
import { hostDetail, hostJson, hostListJson, hostTable } from "../format.js";

/** Adds `berth host list|show`. */
export function registerHostCommands(program: Command, ctx: CliContext): void {
  const host = program
    .command("host")
    .description("List and inspect the hosts the agents registered")
    .addHelpText("after", "\nExample:\n  berth host list");

  host
    .command("list")
    .description("List hosts, sorted by id: state, usage of capacity, driver, when last heard from")
    .addHelpText(
      "after",
      `
Usage is what the host's VMs use, as last reported, over the host's physical capacity.
With -o json: a JSON array of hosts. Exit codes: see berth --help.

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
    .description("Show one host in detail: capacity, usage, labels, agent")
    .argument("<id>", "host id, e.g. host-1")
    .addHelpText("after", "\nNo such host: exit code 3. Exit codes: see berth --help.\n\nExample:\n  berth host show host-1")
    .action(async (id: string, _flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      const found = (await ctx.client(g).getHost({ id })).host;
      if (!found) throw new CliError("the controller's answer to GetHost has no host", ExitCode.Error);
      ctx.io.stdout(g.output === "json" ? hostJson(found) : hostDetail(found, ctx.io.now()));
    });
}
