import { HostFailurePolicy, ScaleGroup, ScalePolicy, ScalePrediction, type VmSpec } from "@berth/api";
import { MAX_SCALE_GROUP_NAME, MAX_SCALE_GROUP_SIZE, SCALE_POLICY_LIMITS } from "@berth/controller/scaling";

const LIMITS = SCALE_POLICY_LIMITS;
import { BerthError, ErrorCode, formatExactDuration } from "@berth/core";
import { Command, CommanderError, Option } from "commander";
import { confirmOrRefuse } from "../confirm.js";
import type { CliContext, Io } from "../context.js";
import { CliError, ExitCode, usageError } from "../exit-codes.js";
import { isHuman, render } from "../output.js";
import { parseDurationMs, parseInteger, parseName } from "../parse.js";
import { SCALE_IN_ORDER_OF_FLAG, SCALE_POLICY_DEFAULTS, scaleGroupDetailView, scaleGroupListView, scaleGroupWrittenView } from "../scalegroup-format.js";
import { addSpecOptions, collect, ON_HOST_FAILURE_OF_FLAG, readSpecsFromFlags, specsFromFlags, type SpecFlags } from "./spec-flags.js";

const EXIT_CODES_SEE = "Exit codes: see berth --help.";

/** The longest scale group name (the controller's rule): members are named `<group>-<index>`, and a VM name has at most 63 characters. */
export const MAX_SCALE_GROUP_NAME_LENGTH = MAX_SCALE_GROUP_NAME;

/** The largest `--min` / `--max` (the controller's rule). */
export { MAX_SCALE_GROUP_SIZE };


/** A scale group NAME: a DNS label of at most {@link MAX_SCALE_GROUP_NAME_LENGTH} characters. */
export function parseScaleGroupName(text: string): string {
  parseName(text);
  if (text.length > MAX_SCALE_GROUP_NAME_LENGTH) {
    throw usageError(`NAME: at most ${MAX_SCALE_GROUP_NAME_LENGTH} characters (got ${text.length}): members are named NAME-<index>, and a VM name has at most 63`);
  }
  return text;
}

/**
 * `--target-cpu`: `60%` or `60` (percent), or `0.6` (a fraction); a bare number above 1 is a
 * percentage, one up to 1 a fraction. Returns the fraction, in (0, 1].
 */
export function parseTargetCpu(text: string, flag = "--target-cpu"): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$/.exec(text);
  if (!m) throw usageError(`${flag}: '${text}' is not a CPU utilisation (e.g. 60%, 60 or 0.6)`);
  const n = Number(m[1]);
  const fraction = m[2] === "%" || n > 1 ? n / 100 : n;
  if (!(fraction > 0)) throw usageError(`${flag}: must be more than 0% (got ${text.trim()})`);
  if (fraction > 1) throw usageError(`${flag}: at most 100% (got ${text.trim()}): the target is the average CPU of the members, each at most 100%`);
  return fraction;
}

/** The largest `--tolerance`: beyond ±50 % of the target the rule would hardly ever act. */
export const MAX_TOLERANCE = SCALE_POLICY_LIMITS.maxTolerance;

/** `--tolerance`: a fraction (`0.1`) or a percentage with its sign (`10%`), more than 0 and at most {@link MAX_TOLERANCE}. */
export function parseTolerance(text: string, flag = "--tolerance"): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$/.exec(text);
  if (!m) throw usageError(`${flag}: '${text}' is not a fraction (e.g. 0.1 or 10%)`);
  const value = m[2] === "%" ? Number(m[1]) / 100 : Number(m[1]);
  if (!(value > 0 && value <= MAX_TOLERANCE)) throw usageError(`${flag}: must be more than 0 and at most ${MAX_TOLERANCE} (got ${text.trim()})`);
  return value;
}

/** A duration flag of the policy: {@link parseDurationMs}, at least `minMs` (a duration is more than 0 anyway). */
function parsePolicyDuration(text: string, flag: string, maxMs: number, minMs = 1): number {
  const ms = parseDurationMs(text, flag, maxMs);
  if (ms < minMs) throw usageError(`${flag}: at least ${minMs / 1000}s (got ${text.trim()})`);
  return ms;
}

/** Characters a shell would act on outside quotes; the template is never run by one, so they are refused. */
const SHELL_OPERATORS = new Set(["$", "`", "|", ";", "&", "<", ">", "(", ")"]);

/**
 * Splits `text` into words as a POSIX shell would, without running anything: blanks separate
 * words; `'...'` is literal; in `"..."` a backslash escapes `"`, `\`, `$` and `` ` ``; outside
 * quotes a backslash escapes any character. An unclosed quote, a trailing backslash, or an unquoted
 * `$`, `` ` ``, `|`, `;`, `&`, `<`, `>`, `(`, `)` (which a shell would expand or act on, and this does
 * not) is a usage error naming `flag`.
 */
export function splitShellWords(text: string, flag: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
      i++;
      continue;
    }
    inWord = true;
    if (c === "'") {
      const end = text.indexOf("'", i + 1);
      if (end < 0) throw usageError(`${flag}: an unclosed ' quote (from: ${text.slice(i, i + 40)})`);
      word += text.slice(i + 1, end);
      i = end + 1;
    } else if (c === '"') {
      i++;
      for (;;) {
        if (i >= text.length) throw usageError(`${flag}: an unclosed " quote`);
        const d = text[i] as string;
        if (d === '"') break;
        if (d === "\\" && i + 1 < text.length && '"\\$`'.includes(text[i + 1] as string)) {
          word += text[i + 1];
          i += 2;
          continue;
        }
        if (d === "$" || d === "`") {
          throw usageError(`${flag}: '${d}' inside "..." would be expanded by a shell, but the template is not run by one: let your shell expand it outside the template, or write \\${d}`);
        }
        word += d;
        i++;
      }
      i++;
    } else if (c === "\\") {
      if (i + 1 >= text.length) throw usageError(`${flag}: a trailing backslash`);
      const next = text[i + 1] as string;
      // Backslash-newline joins lines, as in a shell.
      if (next !== "\n") word += next;
      else if (word === "") inWord = false;
      i += 2;
    } else if (SHELL_OPERATORS.has(c)) {
      throw usageError(
        `${flag}: '${c}' would mean something to a shell, but the template is not run by one: quote it ('${c}') or let your shell expand variables outside the template`,
      );
    } else {
      word += c;
      i++;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/** What a template holds: the spec flags of `vm create`, as commander hands them over. */
type TemplateFlags = SpecFlags & { onHostFailure?: string };

/**
 * The parser of `--template`: the very options `vm create` has for a VM's spec
 * ({@link addSpecOptions} and `--on-host-failure`), nothing printed, errors thrown.
 */
function templateCommand(): Command {
  return addSpecOptions(new Command("template"), "not in a template")
    .addOption(new Option("--on-host-failure <policy>", "restart or keep").choices(Object.keys(ON_HOST_FAILURE_OF_FLAG)))
    .argument("[words...]")
    .helpOption(false)
    .exitOverride()
    .configureOutput({ writeOut: () => undefined, writeErr: () => undefined });
}

/** A usage error from parsing or checking the template, told as the template's. */
function inTemplate(e: unknown): unknown {
  if (e instanceof CommanderError) return usageError(`--template: ${e.message.replace(/^error: /, "")} (a template holds the VM flags of berth vm create)`);
  if (e instanceof CliError && e.exitCode === ExitCode.Usage) return usageError(`--template: ${e.message}`);
  return e;
}

/**
 * `--template "VM-FLAGS"` (with `--placement-group`) as the spec flags of `vm create`, checked as
 * `vm create` checks them but for the files `--ssh-key` / `--user-data` name (read later by
 * {@link readTemplate}). `--count` and `--volume` are refused: the group counts its members, and a
 * volume attaches to one VM. A `--group` in the template is the placement group as
 * `--placement-group` is; both given and different is a usage error.
 */
export function parseTemplate(name: string, text: string, placementGroup: string | undefined): TemplateFlags {
  const words = splitShellWords(text, "--template");
  if (words.length === 0) throw usageError("--template: empty: give the VM flags of berth vm create, e.g. \"--vcpus 2 --memory 2GiB --disk 10GiB\"");
  const cmd = templateCommand();
  try {
    cmd.parse(words, { from: "user" });
  } catch (e) {
    throw inTemplate(e);
  }
  const flags = cmd.opts<TemplateFlags>();
  const [stray] = cmd.args;
  if (stray !== undefined) {
    throw usageError(`--template: '${stray}' is not a flag: a template holds only the VM flags of berth vm create (the members are named ${name}-1, ${name}-2, ...)`);
  }
  if (flags.count !== undefined) {
    throw usageError("--template: --count is not for a template: the group counts its members (--min, --max, and the autoscaler in between)");
  }
  if (flags.volume !== undefined) {
    throw usageError("--template: --volume is not for a template: a data volume attaches to one VM at a time, and a group has many");
  }
  if (placementGroup !== undefined) {
    parseName(placementGroup, "--placement-group");
    if (flags.group !== undefined && flags.group !== placementGroup) {
      throw usageError(
        `--placement-group: ${placementGroup} and the template's --group ${flags.group} differ: they name the same thing (the placement group every member joins); give one`,
      );
    }
    flags.group = placementGroup;
  }
  try {
    specsFromFlags(name, flags);
  } catch (e) {
    throw inTemplate(e);
  }
  return flags;
}

/**
 * The template's spec, its `--ssh-key` / `--user-data` files read (call once every other flag is
 * checked). Its name is the group's. `note`: human output, so the "no seed" note may go to stderr.
 */
export async function readTemplate(io: Io, name: string, flags: TemplateFlags, note: boolean): Promise<VmSpec> {
  let specs: VmSpec[];
  try {
    specs = await readSpecsFromFlags(io, name, flags, note);
  } catch (e) {
    throw inTemplate(e);
  }
  const onHostFailure = flags.onHostFailure === undefined ? HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED : (ON_HOST_FAILURE_OF_FLAG[flags.onHostFailure] ?? HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED);
  return { ...(specs[0] as VmSpec), onHostFailure };
}

/** The policy flags of `create` and `set`, as commander hands them over. */
interface PolicyFlags {
  targetCpu?: string;
  tolerance?: string;
  warmup?: string;
  scaleDownWindow?: string;
  scaleUpMaxVms?: string;
  scaleUpMaxPercent?: string;
  scaleUpPeriod?: string;
  interval?: string;
  scaleInOrder?: string;
  /** `--prediction` true, `--no-prediction` false, neither undefined. */
  prediction?: boolean;
}

/**
 * The ScalePolicy of the flags given, every other field 0 (unspecified): what `create` sends (the
 * controller applies the defaults) and what `set` sends (0: unchanged). `given` counts the fields set.
 */
export function policyFromFlags(flags: PolicyFlags): { policy: ScalePolicy; given: number } {
  const policy = ScalePolicy.fromPartial({});
  let given = 0;
  const set = <K extends keyof ScalePolicy>(key: K, value: ScalePolicy[K]): void => {
    policy[key] = value;
    given++;
  };
  if (flags.targetCpu !== undefined) set("targetCpu", parseTargetCpu(flags.targetCpu));
  if (flags.tolerance !== undefined) set("tolerance", parseTolerance(flags.tolerance));
  if (flags.warmup !== undefined) set("warmupMs", parsePolicyDuration(flags.warmup, "--warmup", LIMITS.maxDurationMs));
  if (flags.scaleDownWindow !== undefined) set("scaleDownWindowMs", parsePolicyDuration(flags.scaleDownWindow, "--scale-down-window", LIMITS.maxDurationMs));
  if (flags.scaleUpMaxVms !== undefined) set("scaleUpMaxVms", parseInteger(flags.scaleUpMaxVms, "--scale-up-max-vms", 1, LIMITS.maxScaleUpVms));
  if (flags.scaleUpMaxPercent !== undefined) set("scaleUpMaxPercent", parseInteger(flags.scaleUpMaxPercent, "--scale-up-max-percent", 1, LIMITS.maxScaleUpPercent));
  if (flags.scaleUpPeriod !== undefined) set("scaleUpPeriodMs", parsePolicyDuration(flags.scaleUpPeriod, "--scale-up-period", LIMITS.maxDurationMs));
  // The autoscaler reads every group's load each interval: not more often than each second.
  if (flags.interval !== undefined) set("intervalMs", parsePolicyDuration(flags.interval, "--interval", LIMITS.maxIntervalMs, LIMITS.minIntervalMs));
  // Commander checks the choices; an unknown value cannot reach here.
  if (flags.scaleInOrder !== undefined) set("scaleInOrder", SCALE_IN_ORDER_OF_FLAG[flags.scaleInOrder] ?? SCALE_POLICY_DEFAULTS.scaleInOrder);
  if (flags.prediction !== undefined) set("prediction", flags.prediction ? ScalePrediction.SCALE_PREDICTION_ON : ScalePrediction.SCALE_PREDICTION_OFF);
  return { policy, given };
}

/** Adds the policy flags (all but `--target-cpu`) shared by `create` and `set`. */
function addPolicyOptions(cmd: Command): Command {
  const d = SCALE_POLICY_DEFAULTS;
  const t = formatExactDuration;
  return cmd
    .option("--tolerance <fraction>", `no change while CPU / target is within 1 ± this: 0.1 or 10%, at most ${MAX_TOLERANCE} (default: ${d.tolerance})`)
    .option("--warmup <duration>", `a new member's CPU is not counted for this long after it is added: 3m, 90s; at most ${t(LIMITS.maxDurationMs)} (default: ${t(d.warmupMs)})`)
    .option("--scale-down-window <duration>", `a scale-in takes the highest size asked for within this window; at most ${t(LIMITS.maxDurationMs)} (default: ${t(d.scaleDownWindowMs)})`)
    .option("--scale-up-max-vms <n>", `a scale-out adds at most max(this, --scale-up-max-percent) per --scale-up-period (default: ${d.scaleUpMaxVms})`)
    .option("--scale-up-max-percent <n>", `...or this percentage of the size, 1-${LIMITS.maxScaleUpPercent} (default: ${d.scaleUpMaxPercent})`)
    .option("--scale-up-period <duration>", `the period of the scale-up limit; at most ${t(LIMITS.maxDurationMs)} (default: ${t(d.scaleUpPeriodMs)})`)
    .option("--interval <duration>", `how often the autoscaler decides: ${t(LIMITS.minIntervalMs)} to ${t(LIMITS.maxIntervalMs)} (default: ${t(d.intervalMs)})`)
    .addOption(new Option("--scale-in-order <order>", "which members a scale-in removes first (default: oldest-first)").choices(Object.keys(SCALE_IN_ORDER_OF_FLAG)))
    .option("--prediction", "also scale ahead of the daily load learnt from earlier days (the default)")
    .option("--no-prediction", "the reactive rule alone (Kubernetes HPA's)");
}

/** How the autoscaler decides: the help of `scalegroup` and `scalegroup create`. */
const HOW_IT_SCALES = `
How it scales (Kubernetes HPA's rule, with AWS's warm-up, scale-in order and protection):
  Every --interval the leader's autoscaler reads the members' measured CPU and asks for
  desired = ceil(size x cpu / target), where cpu is the average of the warm members (those past
  --warmup since they were added; new ones count as idle on scale-out, busy on scale-in). No change
  while cpu / target is within 1 ± --tolerance. A scale-out adds at most
  max(--scale-up-max-percent % of the size, --scale-up-max-vms) per --scale-up-period; a scale-in
  takes the highest size asked for within --scale-down-window, so a short dip removes nothing.
  The size stays within --min and --max. A scale-in removes members in --scale-in-order (oldest
  first by default), never a protected one (berth scalegroup set NAME --protect VM). With
  prediction on (the default; --no-prediction turns it off) the group also learns its load per
  time of day and scales out ahead of a pattern seen on earlier days. Every decision is recorded
  with what it was decided on (berth scalegroup show NAME) and is an event (berth events --for
  scalegroup/NAME).`;

/** Adds `berth scalegroup create|list|show|set|delete`. */
export function registerScaleGroupCommands(program: Command, ctx: CliContext): void {
  const scalegroup = program
    .command("scalegroup")
    .description("Scale groups: VMs made from one template that the controller adds and removes on their measured CPU")
    .addHelpText(
      "after",
      `
Members are VMs named NAME-1, NAME-2, ... (an index is never reused), labelled
berth.io/scale-group=NAME; the group starts at --min. A member's VM deleted by hand is made
again (the group still lists it): to have fewer, lower --max.
${HOW_IT_SCALES}

Examples:
  berth group create web --policy anti-affinity
  berth scalegroup create web --template "--vcpus 2 --memory 2GiB --disk 10GiB --image base --network default" \\
      --min 2 --max 10 --target-cpu 60% --placement-group web
  berth scalegroup show web`,
    );

  addPolicyOptions(
    scalegroup
      .command("create")
      .description("Create a scale group: --min VMs from --template at once, then as many as the load asks, within --min and --max")
      .argument("<name>", `scale group name: 1-${MAX_SCALE_GROUP_NAME_LENGTH} lower-case letters, digits or '-', unique; members are NAME-<index>`)
      .requiredOption("--template <vm-flags>", 'the members\' spec, as the flags of berth vm create in one string: "--vcpus 2 --memory 2GiB --disk 10GiB ..."')
      .requiredOption("--min <n>", `the fewest members (0-${MAX_SCALE_GROUP_SIZE}); the group starts with this many`)
      .requiredOption("--max <n>", `the most members (--min to ${MAX_SCALE_GROUP_SIZE})`)
      .requiredOption("--target-cpu <percent>", "the average CPU of the warm members to hold: 60%, 60 or 0.6")
      .option("--placement-group <group>", "the placement group every member joins (berth group create; e.g. anti-affinity keeps them apart)"),
  ).addHelpText(
    "after",
    `
--template takes the VM flags of berth vm create (see berth vm create --help) as one string,
split as a shell would (quotes, backslashes; no variables: let your shell expand them outside):
--vcpus, --memory, --disk, --image, --network, --ssh-key, --user-data, --label, --group,
--require-host-label, --forbid-host-label, --pin, --on-host-failure. --count and --volume are
refused (the group counts its members; a volume attaches to one VM). --ssh-key and --user-data
files are read here, once, and every member gets what they held. A --group in the template is
the same as --placement-group. Every flag, those in the template too, is checked before
anything is sent: a bad one is reported by name with exit code 2.
${HOW_IT_SCALES}

Durations take units (90s, 3m, 1h). A policy flag left out takes its default (shown above),
which berth scalegroup show marks "(default)". Already exists: exit 6. Admin only. ${EXIT_CODES_SEE}

Examples:
  berth scalegroup create web --template "--vcpus 2 --memory 2GiB --disk 10GiB --image base --network default --ssh-key @~/.ssh/id_ed25519.pub" \\
      --min 2 --max 10 --target-cpu 60%
  berth scalegroup create api --template "--vcpus 4 --memory 8GiB --disk 20GiB --label tier=api" \\
      --min 3 --max 30 --target-cpu 0.5 --placement-group api-spread --warmup 5m --scale-down-window 10m
  berth scalegroup create batch --template "--vcpus 8 --memory 16GiB --disk 50GiB" --min 1 --max 20 \\
      --target-cpu 80 --scale-in-order newest-first --no-prediction`,
  )
    .action(async (name: string, flags: PolicyFlags & { template: string; min: string; max: string; placementGroup?: string }, cmd: Command) => {
      const g = ctx.globals(cmd);
      parseScaleGroupName(name);
      const minSize = parseInteger(flags.min, "--min", 0, MAX_SCALE_GROUP_SIZE);
      const maxSize = parseInteger(flags.max, "--max", 1, MAX_SCALE_GROUP_SIZE);
      if (minSize > maxSize) throw usageError(`--min: ${minSize} is more than --max ${maxSize}`);
      const { policy } = policyFromFlags(flags);
      const templateFlags = parseTemplate(name, flags.template, flags.placementGroup);
      // The files the template names are read last: a typo elsewhere never waits on stdin.
      const template = await readTemplate(ctx.io, name, templateFlags, isHuman(g.output));
      const response = await ctx.client(g).createScaleGroup({ group: ScaleGroup.fromPartial({ name, template, minSize, maxSize, policy }) });
      const created = required(response.group, "CreateScaleGroup");
      ctx.io.stdout(render(g.output, scaleGroupWrittenView(created, ctx.io.now())));
    });

  scalegroup
    .command("list")
    .description("List scale groups, sorted by name: size, bounds, target and measured CPU, members running and warm")
    .addHelpText(
      "after",
      `
Columns: NAME, SIZE (members the group wants now; "(deleting)" while berth scalegroup delete
--delete-vms runs), MIN, MAX, TARGET (CPU), CPU (the warm members' average now; - when none is
warm), RUNNING (members whose VM runs), WARM (past their warm-up), AGE. -o wide adds CREATING
(members whose VM does not exist yet), REMOVING (VMs no longer members, being deleted), GROUP
(the placement group) and the policy: TOLERANCE, WARM-UP, DOWN WINDOW, UP STEP, INTERVAL, ORDER,
PREDICTION (defaults applied). -o json / -o yaml: the groups with those figures; -o name: their
names. ${EXIT_CODES_SEE}

Examples:
  berth scalegroup list
  berth scalegroup list -o wide`,
    )
    .action(async (_flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      const { groups } = await ctx.client(g).listScaleGroups({});
      ctx.io.stdout(render(g.output, scaleGroupListView(groups, ctx.io.now())));
    });

  scalegroup
    .command("show")
    .description("Show one scale group: bounds, CPU, template, policy, its members (warm-up, protection) and its decisions with their inputs")
    .argument("<name>", "scale group name")
    .addHelpText(
      "after",
      `
The decisions (the latest 50, oldest first) are what changed the size, each with what it was
decided on: AGE, REASON (ScaledOut, ScaledIn, SizeBounded when set moved the bounds), SIZE
(from → to), CPU (the warm members' average it saw), WARM (warm/warming members), REACTIVE (the
size HPA's rule asked for, before the limits), PREDICTED (the size and CPU cores the learnt
daily pattern asked for; - without a prediction) and MESSAGE (which rule or limit gave the size).
-o wide adds each decision's SEQ, TIME, and the members it ADDED and REMOVED. No such group:
exit 3. ${EXIT_CODES_SEE}

Examples:
  berth scalegroup show web
  berth scalegroup show web -o wide
  berth scalegroup show web -o json | jq '.group.decisions[-1]'`,
    )
    .action(async (name: string, _flags: unknown, cmd: Command) => {
      const g = ctx.globals(cmd);
      parseName(name);
      const info = (await ctx.client(g).getScaleGroup({ name })).group;
      if (!info?.group) throw new CliError("the controller's answer to GetScaleGroup has no group", ExitCode.Error);
      ctx.io.stdout(render(g.output, scaleGroupDetailView(info, ctx.io.now())));
    });

  addPolicyOptions(
    scalegroup
      .command("set")
      .description("Change a scale group's bounds, target, policy or protected members; only the flags given change")
      .argument("<name>", "scale group name")
      .option("--min <n>", `the fewest members (0-${MAX_SCALE_GROUP_SIZE})`)
      .option("--max <n>", `the most members (1-${MAX_SCALE_GROUP_SIZE})`)
      .option("--target-cpu <percent>", "the average CPU of the warm members to hold: 60%, 60 or 0.6")
      .option("--protect <vm>", "a member a scale-in never removes; repeat for more", collect)
      .option("--unprotect <vm>", "a member to stop protecting; repeat for more", collect),
  ).addHelpText(
    "after",
    `
Only what is given is sent; the rest stays as it is. A size outside the new bounds is brought
inside at once (a SizeBounded decision). --protect keeps a member from being removed by a
scale-in (AWS's scale-in protection); --unprotect releases it. --prediction turns the learnt
daily pattern back on after --no-prediction. The template cannot be changed: create a new group.
The answer is the group as written; berth scalegroup show NAME has the rest. No such group:
exit 3; --min above the group's max (or --max below its min): the controller refuses, exit 2.
Admin only. ${EXIT_CODES_SEE}

Examples:
  berth scalegroup set web --max 20
  berth scalegroup set web --min 4 --target-cpu 50%
  berth scalegroup set web --protect web-3 --protect web-7
  berth scalegroup set web --unprotect web-3 --scale-down-window 15m`,
    )
    .action(async (name: string, flags: PolicyFlags & { min?: string; max?: string; protect?: string[]; unprotect?: string[] }, cmd: Command) => {
      const g = ctx.globals(cmd);
      parseName(name);
      const minSize = flags.min === undefined ? undefined : parseInteger(flags.min, "--min", 0, MAX_SCALE_GROUP_SIZE);
      const maxSize = flags.max === undefined ? undefined : parseInteger(flags.max, "--max", 1, MAX_SCALE_GROUP_SIZE);
      if (minSize !== undefined && maxSize !== undefined && minSize > maxSize) throw usageError(`--min: ${minSize} is more than --max ${maxSize}`);
      const { policy, given } = policyFromFlags(flags);
      const protect = (flags.protect ?? []).map((vm) => parseName(vm, "--protect"));
      const unprotect = (flags.unprotect ?? []).map((vm) => parseName(vm, "--unprotect"));
      const both = protect.find((vm) => unprotect.includes(vm));
      if (both !== undefined) throw usageError(`--unprotect: ${both} is also given to --protect; give one`);
      if (minSize === undefined && maxSize === undefined && given === 0 && protect.length === 0 && unprotect.length === 0) {
        throw usageError("nothing to change: give --min, --max, --target-cpu, a policy flag, --protect or --unprotect (berth scalegroup set --help)");
      }
      const response = await ctx.client(g).updateScaleGroup({
        name,
        minSize,
        maxSize,
        policy: given > 0 ? policy : undefined,
        protect: [...new Set(protect)],
        unprotect: [...new Set(unprotect)],
      });
      const updated = required(response.group, "UpdateScaleGroup");
      const after =
        protect.length > 0 || unprotect.length > 0
          ? `protected from scale-in: ${updated.protectedMembers.length > 0 ? updated.protectedMembers.join(", ") : "none"}\n`
          : "";
      ctx.io.stdout(render(g.output, scaleGroupWrittenView(updated, ctx.io.now(), after)));
    });

  scalegroup
    .command("delete")
    .description("Delete a scale group; with --delete-vms its member VMs and their disks too")
    .argument("<name>", "scale group name")
    .option("--delete-vms", "delete the members' VMs (and their disks) too; the group goes with the last of them")
    .option("--yes", "with --delete-vms: do not ask for confirmation (required without a terminal)")
    .addHelpText(
      "after",
      `
Without --delete-vms a group that has members is refused (FAILED_PRECONDITION, exit 6, with the
controller's message): its VMs are never deleted by surprise. With --delete-vms the group is
marked deleting (the autoscaler stops; SIZE shows "(deleting)"), its VMs are deleted, and the
record goes with the last of them. That asks first on a terminal, saying how many VMs go;
without one it requires --yes (else exit 2, nothing sent). No such group: exit 3. Admin only.
${EXIT_CODES_SEE}

Examples:
  berth scalegroup delete old-web
  berth scalegroup delete web --delete-vms
  berth scalegroup delete web --delete-vms --yes`,
    )
    .action(async (name: string, flags: { deleteVms?: boolean; yes?: boolean }, cmd: Command) => {
      const g = ctx.globals(cmd);
      parseName(name);
      const client = ctx.client(g);
      const deleteVms = flags.deleteVms === true;
      if (deleteVms) {
        let what = `scale group ${name} and its VMs`;
        if (!flags.yes && ctx.io.interactive) {
          // Say how many VMs go; a group that does not exist ends here (exit 3).
          const group = (await client.getScaleGroup({ name })).group?.group;
          if (group) what = `scale group ${name} and its ${vmCount(group.members.map((m) => m.name))}`;
        }
        await confirmOrRefuse(ctx.io, {
          yes: flags.yes,
          verb: "scalegroup delete",
          consequences: `This deletes ${what}, with their disks: it cannot be undone.`,
        });
      }
      let deleted: ScaleGroup | undefined;
      try {
        deleted = (await client.deleteScaleGroup({ name, deleteVms })).group;
      } catch (e) {
        if (!deleteVms && e instanceof BerthError && e.code === ErrorCode.FailedPrecondition && !/delete.vms/i.test(e.message)) {
          throw new BerthError(e.code, `${e.message} (berth scalegroup delete ${name} --delete-vms deletes its VMs too)`, { cause: e });
        }
        throw e;
      }
      const table = (): string =>
        deleted?.deleting
          ? `scalegroup ${name} deleting: its ${vmCount(deleted.members.map((m) => m.name))} are being deleted; the group goes with the last of them\n`
          : `scalegroup ${name} deleted\n`;
      ctx.io.stdout(render(g.output, { data: () => (deleted ? ScaleGroup.toJSON(deleted) : { name, deleted: true }), table, names: () => [name] }));
    });
}

/** `3 VMs (web-1, web-4, web-7)`, at most 10 named. */
function vmCount(names: readonly string[]): string {
  const n = names.length;
  if (n === 0) return "0 VMs";
  const shown = names.slice(0, 10).join(", ");
  return `${n} VM${n === 1 ? "" : "s"} (${shown}${n > 10 ? `, and ${n - 10} more` : ""})`;
}

function required(group: ScaleGroup | undefined, what: string): ScaleGroup {
  if (!group) throw new CliError(`the controller's answer to ${what} has no group`, ExitCode.Error);
  return group;
}
