import { GroupPolicy } from "@berth/api";
import type { Command } from "commander";
import { Option } from "commander";
import type { CliContext } from "../context.js";
import { CliError, ExitCode } from "../exit-codes.js";
import { groupListView, groupView, sortByName } from "../format.js";
import { render } from "../output.js";
import { parseName } from "../parse.js";

/** `--policy` values and what they send. */
export const POLICY_OF_FLAG: Readonly<Record<string, GroupPolicy>> = {
  "anti-affinity": GroupPolicy.GROUP_POLICY_ANTI_AFFINITY,
  affinity: GroupPolicy.GROUP_POLICY_AFFINITY,
  "soft-anti-affinity": GroupPolicy.GROUP_POLICY_SOFT_ANTI_AFFINITY,
  "soft-affinity": GroupPolicy.GROUP_POLICY_SOFT_AFFINITY,
};

/** Adds `berth group create|list|delete`. */
export function registerGroupCommands(program: Command, ctx: CliContext): void {
  const group = program
    .command("group")
    .description("Placement groups: keep VMs apart (anti-affinity) or together (affinity)")
    .addHelpText("after", "\nExample:\n  berth group create web --policy anti-affinity");

  group
    .command("create")
    .description("Create a placement group; VMs join it with berth vm create --group NAME")
    .argument("<name>", "group name: 1-63 lower-case letters, digits or '-'")
    .addOption(
      new Option("--policy <policy>", "how members are placed relative to each other")
        .choices(Object.keys(POLICY_OF_FLAG))
        .makeOptionMandatory(),
    )
    .addHelpText(
      "after",
      `
Policies: anti-affinity (never two members on one host), affinity (all on one host),
soft-anti-affinity / soft-affinity (preferred, broken when nothing else fits).
Already exists: exit code 6. Exit codes: see berth --help.

Examples:
  berth group create web --policy anti-affinity
  berth group create cache --policy soft-affinity -o json`,
    )
    .action(async (name: string, flags: { policy: string }, cmd: Command) => {
      const g = ctx.globals(cmd);
      parseName(name);
      const policy = POLICY_OF_FLAG[flags.policy] ?? GroupPolicy.GROUP_POLICY_UNSPECIFIED;
      const created = (await ctx.client(g).createGroup({ name, policy })).group;
      if (!created) throw new CliError("the controller's answer to CreateGroup has no group", ExitCode.Error);
      ctx.io.stdout(render(g.output, groupView(created, ctx.io.now())));
    });

  group
    .command("list")
    .description("List placement groups, sorted by name: policy and how many members")
    .addHelpText(
      "after",
      "\nWith -o json: a JSON array of groups (with their members). Exit codes: see berth --help.\n\nExamples:\n  berth group list\n  berth group list -o json",
    )
    .action(async (_flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      const { groups } = await ctx.client(g).listGroups({});
      const sorted = sortByName(groups, (group) => group.name);
      ctx.io.stdout(render(g.output, groupListView(sorted, ctx.io.now())));
    });

  group
    .command("delete")
    .description("Delete a placement group; refused while it has members")
    .argument("<name>", "group name")
    .addHelpText(
      "after",
      `
The controller refuses while VMs are in the group (exit code 6, with its message): delete them
first. No such group: exit code 3. Exit codes: see berth --help.

Example:
  berth group delete web`,
    )
    .action(async (name: string, _flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      await ctx.client(g).deleteGroup({ name });
      ctx.io.stdout(render(g.output, { data: () => ({ name, deleted: true }), table: () => `group ${name} deleted\n`, names: () => [name] }));
    });
}
