import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { clusterView } from "../format.js";
import { render } from "../output.js";

/** Adds `berth cluster show`. */
export function registerClusterCommands(program: Command, ctx: CliContext): void {
  const cluster = program
    .command("cluster")
    .description("The cluster's identity and who leads it")
    .addHelpText("after", "\nExample:\n  berth cluster show");

  cluster
    .command("show")
    .description("Show the cluster: its id, when it was created, the leader's id and epoch")
    .addHelpText(
      "after",
      `
The cluster id is made once, when the first leader initialises an empty store; agents remember
it and refuse to serve another cluster's controller. The epoch grows with every leader change.
"Answered by" is the controller address that answered (the leader, after any redirect).
With -o json: the GetCluster response. Exit codes: see berth --help.

Examples:
  berth cluster show
  berth cluster show -o json`,
    )
    .action(async (_flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      const client = ctx.client(g);
      const response = await client.getCluster({});
      ctx.io.stdout(render(g.output, clusterView(response, ctx.io.now(), client.address)));
    });
}
