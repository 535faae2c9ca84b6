import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { ExitCode } from "../exit-codes.js";
import { planView } from "../format.js";
import { render } from "../output.js";
import { parseName } from "../parse.js";
import { addSpecOptions, readSpecsFromFlags, type SpecFlags } from "./spec-flags.js";

/** The VM name a plan uses when `--name` is not given. */
export const DEFAULT_PLAN_NAME = "plan";

/** Adds `berth plan`: a dry run of a placement (PlanPlacement). */
export function registerPlanCommand(program: Command, ctx: CliContext): void {
  addSpecOptions(
    program
      .command("plan")
      .description("Dry run: where would these VMs go, and how did each host fare? Nothing is created"),
    "plan this many VMs",
  )
    .option("--name <name>", `the VM name used in the plan (default: ${DEFAULT_PLAN_NAME}); with --count, NAME-1 ...`)
    .option("--all", "show the per-host table of every VM, not only the first one")
    .addHelpText(
      "after",
      `
Asks the controller where the VMs of the same flags as "berth vm create" would go (PlanPlacement);
nothing is written. Prints "placeable" or "not placeable", the host chosen for each VM, and for
the first VM a table of every host: VERDICT is "passed" or the filter that rejected the host,
SCORE the weighted total, then each weigher's score in [0, 1], and REASON. When not placeable, the
controller's reasons and the table of the VM that could not be placed are shown too; --all shows
every VM's table. -o json prints the PlanPlacement response.

Exit codes: 0 placeable, 4 not placeable (as for RESOURCE_EXHAUSTED), the others as in
berth --help (2 bad flag, 5 no controller...).

Examples:
  berth plan --vcpus 2 --memory 4GiB --disk 20GiB
  berth plan --vcpus 2 --memory 4GiB --disk 20GiB --count 3 --group web --all
  berth plan --vcpus 8 --memory 32GiB --disk 100GiB --require-host-label ssd=true -o json`,
    )
    .action(async (flags: SpecFlags & { name?: string; all?: boolean }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const name = flags.name === undefined ? DEFAULT_PLAN_NAME : parseName(flags.name, "--name");
      // The cloud-init flags are read (and checked) as vm create reads them; a plan sends them too.
      const specs = await readSpecsFromFlags(ctx.io, name, flags, false);
      const plan = await ctx.client(g).planPlacement({ specs });
      ctx.io.stdout(render(g.output, planView(plan, flags.all === true)));
      if (!plan.placeable) ctx.exitCode = ExitCode.NoCapacity;
    });
}
