import {
  ScaleGroup,
  ScaleGroupInfo,
  ScaleInOrder,
  ScalePrediction,
  type LoadForecast,
  type ScaleDecision,
  type ScaleMember,
  ScalePolicy,
  type VmSpec,
} from "@berth/api";
import { formatExactDuration, formatPercent } from "@berth/core";
import { describeScaleUpStep, resolveScalePolicy, type ResolvedScalePolicy } from "@berth/controller/scaling";
import { compareNames, formatAge, formatDuration, formatNumber, formatResourcesHuman, isoTime, renderFields, renderTable, sortByName } from "./format.js";
import type { View } from "./output.js";

// Human output of `berth scalegroup`: tables, the detail with members and decisions, and their
// `-o` views. Pure functions of their input (and `now`), as format.ts.

/**
 * What a ScalePolicy field left 0 (or unspecified) means: the controller's own defaults
 * (`resolveScalePolicy`, the one definition; the reactive ones are Kubernetes HPA's), with the
 * enums as `set` sends them. Shown beside unset fields; never sent.
 */
export const SCALE_POLICY_DEFAULTS = (() => {
  const d = resolveScalePolicy(ScalePolicy.fromPartial({ targetCpu: 1 }));
  return {
    ...d,
    scaleInOrder: d.scaleInOrder === "newest-first" ? ScaleInOrder.SCALE_IN_ORDER_NEWEST_FIRST : ScaleInOrder.SCALE_IN_ORDER_OLDEST_FIRST,
    prediction: d.prediction ? ScalePrediction.SCALE_PREDICTION_ON : ScalePrediction.SCALE_PREDICTION_OFF,
  } as const;
})();

/** `--scale-in-order` values and what they send. */
export const SCALE_IN_ORDER_OF_FLAG: Readonly<Record<string, ScaleInOrder>> = {
  "oldest-first": ScaleInOrder.SCALE_IN_ORDER_OLDEST_FIRST,
  "newest-first": ScaleInOrder.SCALE_IN_ORDER_NEWEST_FIRST,
};

/** A fraction as a percentage (core's one rule): `60%`, `72.5%`. */
export { formatPercent };

/** A policy as the autoscaler applies it (the controller's resolver), and which fields took their default. */
export type EffectivePolicy = ResolvedScalePolicy & {
  /** The fields that were unset (so took their default). */
  defaulted: ReadonlySet<keyof ResolvedScalePolicy>;
};

/**
 * {@link EffectivePolicy} of `policy` (absent: every default, target 0): the controller's
 * `resolveScalePolicy`, so nothing is restated; a policy it refuses shows as stored, defaults
 * over its zeros.
 */
export function effectivePolicy(policy: ScalePolicy | undefined): EffectivePolicy {
  const p = ScalePolicy.fromPartial(policy ?? {});
  const defaulted = new Set<keyof ResolvedScalePolicy>();
  for (const key of Object.keys(p) as (keyof ScalePolicy)[]) if (key !== "targetCpu" && !p[key]) defaulted.add(key);
  let resolved: ResolvedScalePolicy;
  try {
    resolved = resolveScalePolicy({ ...p, targetCpu: p.targetCpu || 1 });
  } catch {
    resolved = resolveScalePolicy({ targetCpu: 1 } as ScalePolicy);
  }
  return { ...resolved, targetCpu: p.targetCpu, defaulted };
}

/** `on` / `off`. */
export const predictionName = (on: boolean): string => (on ? "on" : "off");

/** A scale-up step: `max(100%, 4 VMs) per 15s`, HPA's wording of its default (the controller's one wording). */
export const scaleUpStepText: (p: EffectivePolicy) => string = describeScaleUpStep;

/** The template's VM in one line: resources, then what else it sets (image, NICs, labels...). */
export function templateText(spec: VmSpec | undefined): string {
  if (!spec) return "-";
  const parts = [formatResourcesHuman(spec.resources)];
  if (spec.image) parts.push(`image ${spec.image}`);
  if (spec.networks.length > 0) parts.push(`network${spec.networks.length === 1 ? "" : "s"} ${spec.networks.join(", ")}`);
  const labels = Object.entries(spec.labels).sort(([a], [b]) => compareNames(a, b));
  if (labels.length > 0) parts.push(`labels ${labels.map(([k, v]) => `${k}=${v}`).join(",")}`);
  const required = Object.entries(spec.requiredHostLabels);
  if (required.length > 0) parts.push(`hosts with ${required.map(([k, v]) => `${k}=${v}`).join(",")}`);
  const forbidden = Object.entries(spec.forbiddenHostLabels);
  if (forbidden.length > 0) parts.push(`no hosts with ${forbidden.map(([k, v]) => (v === "*" ? k : `${k}=${v}`)).join(",")}`);
  if (spec.pinnedHosts.length > 0) parts.push(`pinned to ${spec.pinnedHosts.join(",")}`);
  const c = spec.cloudInit;
  if (c) {
    const n = c.sshAuthorizedKeys.length;
    // Never what the user-data says (it may hold secrets): only that there is some.
    parts.push(`${n} ssh key${n === 1 ? "" : "s"}${c.userData ? ", user-data" : ""}`);
  }
  return parts.join("; ");
}

/** A group's size as the list shows it: its members' count, marked while it is being deleted. */
const sizeText = (g: ScaleGroup | undefined): string => `${g?.members.length ?? 0}${g?.deleting ? " (deleting)" : ""}`;

/** The live figures of a ScaleGroupInfo; absent for a group as written (create, set). */
type Live = Pick<ScaleGroupInfo, "running" | "warm" | "cpuUtilization" | "creating" | "removing" | "lastError">;

const liveOf = (info: ScaleGroupInfo): Live => info;

/** CPU now: the warm members' average, `-` when none is warm (nothing measured). */
const cpuText = (live: Live | undefined): string => (live && live.warm > 0 ? formatPercent(live.cpuUtilization) : "-");

/**
 * The `scalegroup list` table: NAME, SIZE (members listed), MIN, MAX, TARGET (CPU), CPU (the warm
 * members' average now), RUNNING, WARM (past their warm-up), AGE. `wide` adds CREATING, REMOVING,
 * the placement GROUP and the policy: TOLERANCE, WARM-UP, DOWN WINDOW, UP STEP, INTERVAL, ORDER,
 * PREDICTION (defaults applied). A row without live figures (a group as written) shows `-` there.
 */
export function scaleGroupTable(rows: readonly { group: ScaleGroup | undefined; live: Live | undefined }[], nowMs: number, wide = false): string {
  const cells = rows.map(({ group: g, live }) => {
    const p = effectivePolicy(g?.policy);
    const row = [
      g?.name || "-",
      sizeText(g),
      String(g?.minSize ?? 0),
      String(g?.maxSize ?? 0),
      p.targetCpu > 0 ? formatPercent(p.targetCpu) : "-",
      cpuText(live),
      live ? String(live.running) : "-",
      live ? String(live.warm) : "-",
      formatAge(g?.createdAtMs ?? 0, nowMs),
    ];
    if (!wide) return row;
    return [
      ...row,
      live ? String(live.creating) : "-",
      live ? String(live.removing) : "-",
      g?.template?.group || "-",
      formatNumber(p.tolerance),
      formatExactDuration(p.warmupMs),
      formatExactDuration(p.scaleDownWindowMs),
      scaleUpStepText(p).replace(/ /g, ""),
      formatExactDuration(p.intervalMs),
      p.scaleInOrder,
      predictionName(p.prediction),
    ];
  });
  const headers = ["NAME", "SIZE", "MIN", "MAX", "TARGET", "CPU", "RUNNING", "WARM", "AGE"];
  const wideHeaders = ["CREATING", "REMOVING", "GROUP", "TOLERANCE", "WARM-UP", "DOWN WINDOW", "UP STEP", "INTERVAL", "ORDER", "PREDICTION"];
  return renderTable(wide ? [...headers, ...wideHeaders] : headers, cells);
}

/** The fields the scale-up step is made of: marked as the default only when all three are. */
const UP_STEP_FIELDS = ["scaleUpMaxPercent", "scaleUpMaxVms", "scaleUpPeriodMs"] as const;

/** A policy field's value, marked when it is the default (unset in the group). */
function withDefault(p: EffectivePolicy, key: keyof ResolvedScalePolicy, text: string): string {
  return p.defaulted.has(key) ? `${text} (default)` : text;
}

/** Where a member is in its warm-up at `nowMs`: `done`, or how long is left. */
export function warmupText(member: ScaleMember, warmupMs: number, nowMs: number): string {
  const left = member.addedAtMs + warmupMs - nowMs;
  return left <= 0 ? "done" : `${formatDuration(left)} left`;
}

/** The members' table of `scalegroup show`: NAME, INDEX, ADDED (age), WARM-UP, PROTECTED. */
export function memberTable(group: ScaleGroup, nowMs: number): string {
  const p = effectivePolicy(group.policy);
  const protectedSet = new Set(group.protectedMembers);
  const rows = group.members.map((m) => [m.name, String(m.index), formatAge(m.addedAtMs, nowMs), warmupText(m, p.warmupMs, nowMs), protectedSet.has(m.name) ? "yes" : "-"]);
  return renderTable(["NAME", "INDEX", "ADDED", "WARM-UP", "PROTECTED"], rows);
}

/** `5 (3.2 cores)`: the size a prediction asked for, `-` when none was made. */
function predictedText(d: ScaleDecision): string {
  return d.predictedSize > 0 ? `${d.predictedSize} (${formatNumber(Math.round(d.predictedCores * 10) / 10)} cores)` : "-";
}

/**
 * The decisions' table of `scalegroup show`, oldest first: AGE, REASON, SIZE (from → to), CPU (the
 * warm members' average it saw), WARM (warm/warming members), REACTIVE (the HPA rule's size before
 * the limits), PREDICTED (the learnt pattern's size and cores), MESSAGE. `wide` adds SEQ, TIME
 * (ISO), ADDED and REMOVED (the members).
 */
export function decisionTable(decisions: readonly ScaleDecision[], nowMs: number, wide = false): string {
  const rows = decisions.map((d) => {
    const row = [
      formatAge(d.decidedAtMs, nowMs),
      d.reason || "-",
      `${d.fromSize} → ${d.toSize}`,
      d.warmMembers > 0 ? formatPercent(d.cpuUtilization) : "-",
      `${d.warmMembers}/${d.warmingMembers}`,
      d.reactiveSize > 0 ? String(d.reactiveSize) : "-",
      predictedText(d),
      d.message || "-",
    ];
    if (!wide) return row;
    const [age, ...rest] = row;
    const message = rest.pop() as string;
    return [String(d.seq), isoTime(d.decidedAtMs), age as string, ...rest, d.added.join(",") || "-", d.removed.join(",") || "-", message];
  });
  const headers = ["AGE", "REASON", "SIZE", "CPU", "WARM", "REACTIVE", "PREDICTED", "MESSAGE"];
  const wideHeaders = ["SEQ", "TIME", "AGE", "REASON", "SIZE", "CPU", "WARM", "REACTIVE", "PREDICTED", "ADDED", "REMOVED", "MESSAGE"];
  return renderTable(wide ? wideHeaders : headers, rows);
}

/** What the group learnt of its daily load: how many buckets of the period have been seen, and the peak. */
export function forecastText(f: LoadForecast | undefined): string {
  if (!f || f.cores.length === 0) return "- (nothing learnt yet)";
  const seen = f.periods.filter((n) => n > 0).length;
  if (seen === 0) return "- (nothing learnt yet)";
  const periodMs = f.periodMs || 86_400_000;
  const bucketMs = f.bucketMs || 300_000;
  let peak = 0;
  let peakAt = 0;
  f.cores.forEach((c, i) => {
    if ((f.periods[i] ?? 0) > 0 && c > peak) [peak, peakAt] = [c, i];
  });
  const offset = formatDuration(peakAt * bucketMs);
  return (
    `${seen} of ${f.cores.length} buckets of ${formatDuration(bucketMs)} learnt (a period of ${formatDuration(periodMs)}, up to ${Math.max(...f.periods)} periods each); ` +
    `peak ${formatNumber(Math.round(peak * 10) / 10)} cores at +${offset} into the period`
  );
}

/**
 * The `scalegroup show` detail: the group's bounds and size, CPU against the target, the
 * template, the placement group, the policy (each unset field with its default), what it learnt,
 * why its last member create failed (while retried), then its members (with warm-up and
 * protection) and its latest decisions with their inputs.
 * `live` absent (a group as written): no live figures.
 */
export function scaleGroupDetail(group: ScaleGroup, live: Live | undefined, nowMs: number, wide = false): string {
  const p = effectivePolicy(group.policy);
  const sizeLine =
    `${group.members.length} (min ${group.minSize}, max ${group.maxSize})` +
    (live ? `; ${live.running} running, ${live.warm} warm, ${live.creating} being created, ${live.removing} being removed` : "");
  const cpu = live
    ? `${cpuText(live)}${live.warm > 0 ? " now (average of the warm members)" : " (no warm member reports yet)"}; target ${formatPercent(p.targetCpu)}`
    : `target ${formatPercent(p.targetCpu)}`;
  const fields: [string, string][] = [
    ["Name", group.name],
    ["Size", sizeLine],
    ["CPU", cpu],
    ["Template", templateText(group.template)],
    ["Placement group", group.template?.group ? `${group.template.group} (every member joins it)` : "-"],
    ["Tolerance", withDefault(p, "tolerance", `${formatNumber(p.tolerance)} (no change while CPU / target is within 1 ± ${formatNumber(p.tolerance)})`)],
    ["Scale-up step", scaleUpStepText(p) + (UP_STEP_FIELDS.every((k) => p.defaulted.has(k)) ? " (default)" : "")],
    ["Scale-down window", withDefault(p, "scaleDownWindowMs", formatExactDuration(p.scaleDownWindowMs))],
    ["Warm-up", withDefault(p, "warmupMs", formatExactDuration(p.warmupMs))],
    ["Interval", withDefault(p, "intervalMs", formatExactDuration(p.intervalMs))],
    ["Scale-in order", withDefault(p, "scaleInOrder", p.scaleInOrder)],
    ["Prediction", withDefault(p, "prediction", predictionName(p.prediction))],
    ["Forecast", forecastText(group.forecast)],
    ["Protected", group.protectedMembers.length > 0 ? [...group.protectedMembers].sort(compareNames).join(", ") : "-"],
    ["Generation", String(group.generation)],
    ["Created", group.createdAtMs > 0 ? `${formatAge(group.createdAtMs, nowMs)} ago (${isoTime(group.createdAtMs)})` : "-"],
  ];
  if (live?.lastError) fields.push(["Last error", `${live.lastError} (creating a member; retried)`]);
  if (group.deleting) fields.push(["Deleting", "yes: its VMs are being deleted; the record goes with the last of them"]);
  let text = renderFields(fields);
  text += `\nMembers (${group.members.length}):\n`;
  text += group.members.length > 0 ? indent(memberTable(group, nowMs)) : "  none\n";
  const shown = group.decisions.length;
  text += `\nDecisions (${shown === group.decisionCount ? shown : `latest ${shown} of ${group.decisionCount}`}, oldest first):\n`;
  text += shown > 0 ? indent(decisionTable(group.decisions, nowMs, wide)) : "  none yet\n";
  return text;
}

const indent = (text: string): string =>
  text
    .split("\n")
    .map((l) => (l ? `  ${l}` : l))
    .join("\n");

/** `scalegroup list`: the groups sorted by name, named by name; JSON: ScaleGroupInfo each. */
export function scaleGroupListView(groups: readonly ScaleGroupInfo[], nowMs: number): View {
  const sorted = sortByName(groups, (i) => i.group?.name ?? "");
  const rows = sorted.map((i) => ({ group: i.group, live: liveOf(i) }));
  return {
    data: () => sorted.map((i) => ScaleGroupInfo.toJSON(i)),
    table: () => (rows.length === 0 ? "No scale groups.\n" : scaleGroupTable(rows, nowMs)),
    wide: () => (rows.length === 0 ? "No scale groups.\n" : scaleGroupTable(rows, nowMs, true)),
    names: () => sorted.map((i) => i.group?.name ?? ""),
  };
}

/** `scalegroup show`: the detail (`wide`: the decisions with their members and times); JSON: ScaleGroupInfo. */
export function scaleGroupDetailView(info: ScaleGroupInfo, nowMs: number): View {
  const group = info.group ?? ScaleGroup.fromPartial({});
  return {
    data: () => ScaleGroupInfo.toJSON(info),
    table: () => scaleGroupDetail(group, liveOf(info), nowMs),
    wide: () => scaleGroupDetail(group, liveOf(info), nowMs, true),
    names: () => [group.name],
  };
}

/** `scalegroup create` / `set`: the group as the controller wrote it, as a one-row table; JSON: ScaleGroup. */
export function scaleGroupWrittenView(group: ScaleGroup, nowMs: number, after = ""): View {
  const rows = [{ group, live: undefined }];
  return {
    data: () => ScaleGroup.toJSON(group),
    table: () => scaleGroupTable(rows, nowMs) + after,
    wide: () => scaleGroupTable(rows, nowMs, true) + after,
    names: () => [group.name],
  };
}
