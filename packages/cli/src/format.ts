import {
  ClusterConfig,
  desiredStateToJSON,
  domainStateToJSON,
  GetClusterResponse,
  Group,
  groupPolicyToJSON,
  HostFailurePolicy,
  HostState,
  PlanPlacementResponse,
  Host,
  hostStateToJSON,
  OrphanDomain,
  Vm,
  vmPhaseToJSON,
  type DesiredState,
  type DomainState,
  type GroupPolicy,
  type HostVerdict,
  type PlannedPlacement,
  type Resources,
  type VmPhase,
  type VmStatus,
} from "@berth/api";
import { DEFAULT_ALLOCATION_RATIO, DEFAULT_RESERVED } from "@berth/scheduler";
import { formatMib, normalHostState } from "@berth/core";

// Human output: aligned tables, units, ages. Pure functions of their input (and `now`).

/** Aligned columns, two spaces apart; the last column is not padded. Ends with a newline. */
export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const all = [headers, ...rows];
  const widths = headers.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  return (
    all
      .map((r) =>
        headers
          .map((_, i) => (i === headers.length - 1 ? (r[i] ?? "") : (r[i] ?? "").padEnd(widths[i] ?? 0)))
          .join("  ")
          .trimEnd(),
      )
      .join("\n") + "\n"
  );
}

/**
 * `Key:  value` lines with the values aligned. A value with newlines continues on lines indented
 * to the value column. Ends with a newline.
 */
export function renderFields(fields: readonly (readonly [string, string])[]): string {
  const width = Math.max(...fields.map(([k]) => k.length + 1));
  const indent = " ".repeat(width + 2);
  return (
    fields
      .map(([k, v]) => `${`${k}:`.padEnd(width)}  ${v.split("\n").join(`\n${indent}`)}`.trimEnd())
      .join("\n") + "\n"
  );
}

/** `2 vCPU` */
export const formatVcpus = (vcpus: number): string => `${vcpus} vCPU`;

/** A size in GiB with the largest exact unit: `20 GiB`, `1 TiB`. */
export const formatGib = (gib: number): string => formatMib(gib * 1024);

/** `2 vCPU, 4 GiB memory, 20 GiB disk` */
export function formatResourcesHuman(r: Resources | undefined): string {
  if (!r) return "-";
  return `${formatVcpus(r.vcpus)}, ${formatMib(r.memoryMib)} memory, ${formatGib(r.diskGib)} disk`;
}

/**
 * A duration the way people read an age: `45s`, `5m`, `3h`, `12d`, with a second unit where the
 * first one is small (`1m30s`, `2h5m`, `3d4h`).
 */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 10) return m % 60 === 0 ? `${h}h` : `${h}h${m % 60}m`;
  if (h < 48) return `${h}h`;
  const d = Math.floor(h / 24);
  if (d < 8 && h % 24 !== 0) return `${d}d${h % 24}h`;
  return `${d}d`;
}

/** The age of something that happened at `atMs` (Unix ms); `-` when unknown. */
export function formatAge(atMs: number, nowMs: number): string {
  return atMs > 0 ? formatDuration(nowMs - atMs) : "-";
}

function enumName(toJson: () => string, prefix: string, value: number): string {
  try {
    return toJson().replace(prefix, "");
  } catch {
    return String(value);
  }
}

/** `RUNNING`, `PENDING`...; `-` when unspecified. */
export function phaseName(phase: VmPhase): string {
  const name = enumName(() => vmPhaseToJSON(phase), "VM_PHASE_", phase);
  return name === "UNSPECIFIED" ? "-" : name;
}

/** `RUNNING`, `STOPPED`, `DELETED`; `-` when unspecified. */
export function desiredName(state: DesiredState): string {
  const name = enumName(() => desiredStateToJSON(state), "DESIRED_STATE_", state);
  return name === "UNSPECIFIED" ? "-" : name;
}

/**
 * `READY`, `SUSPECT`, `DOWN`, `FENCED`, with `,CORDONED` for a cordoned host. DISCONNECTED, written
 * by earlier controllers, means what SUSPECT means now and is shown so.
 */
export function hostStateName(state: HostState, cordoned = false): string {
  const shown = normalHostState(state);
  const name = enumName(() => hostStateToJSON(shown), "HOST_STATE_", shown);
  const base = name === "UNSPECIFIED" ? "-" : name;
  return cordoned ? `${base},CORDONED` : base;
}

/** `RUNNING`, `SHUTOFF`...: a domain's state on its host; `-` when unspecified. */
export function domainStateName(state: DomainState): string {
  const name = enumName(() => domainStateToJSON(state), "DOMAIN_STATE_", state);
  return name === "UNSPECIFIED" ? "-" : name;
}

/** `keep`, `restart`: the `--on-host-failure` spelling; `undefined` when unset. */
export function onHostFailureName(policy: HostFailurePolicy): string | undefined {
  switch (policy) {
    case HostFailurePolicy.HOST_FAILURE_POLICY_KEEP:
      return "keep";
    case HostFailurePolicy.HOST_FAILURE_POLICY_RESTART:
      return "restart";
    case HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED:
      return undefined;
    default:
      return String(policy);
  }
}

/**
 * A failed attempt's reason as `CODE: message`. The controller's message may already start with
 * the code; it is not repeated.
 */
export function failureText(status: VmStatus | undefined): string {
  const code = status?.errorCode ?? "";
  const message = status?.message ?? "";
  if (!code) return message || "no reason given";
  if (!message || message === code) return code;
  return message.startsWith(`${code}: `) ? message : `${code}: ${message}`;
}

/** `in 4s`, or `now` when the time has come; for times ahead (Unix ms). */
export function formatIn(atMs: number, nowMs: number): string {
  return atMs > nowMs ? `in ${formatDuration(atMs - nowMs)}` : "now";
}

function formatLabels(labels: Record<string, string> | undefined): string {
  const entries = Object.entries(labels ?? {}).sort(([a], [b]) => a.localeCompare(b));
  return entries.length === 0 ? "-" : entries.map(([k, v]) => `${k}=${v}`).join(",");
}

/** The `vm list` table. */
export function vmTable(vms: readonly Vm[], nowMs: number): string {
  const rows = vms.map((vm) => {
    const r = vm.spec?.resources;
    return [
      vm.spec?.name ?? "-",
      phaseName(vm.status?.phase ?? 0),
      desiredName(vm.desiredState),
      vm.hostId || "-",
      r ? formatVcpus(r.vcpus) : "-",
      r ? formatMib(r.memoryMib) : "-",
      r ? formatGib(r.diskGib) : "-",
      formatAge(vm.createdAtMs, nowMs),
    ];
  });
  return renderTable(["NAME", "PHASE", "DESIRED", "HOST", "VCPUS", "MEMORY", "DISK", "AGE"], rows);
}

/**
 * The `vm show` detail. The retry state (attempts, last error, next try, permanent) is shown while
 * there is one: a VM whose command last succeeded has none.
 */
export function vmDetail(vm: Vm, nowMs: number): string {
  const status = vm.status;
  const name = vm.spec?.name ?? "-";
  const fields: [string, string][] = [
    ["Name", name],
    ["ID", vm.id || "-"],
    ["Phase", phaseName(status?.phase ?? 0)],
    ["Desired", desiredName(vm.desiredState)],
    ["Host", vm.hostId || "-"],
    ["Resources", formatResourcesHuman(vm.spec?.resources)],
    ["Labels", formatLabels(vm.spec?.labels)],
    ["On host failure", onHostFailureName(vm.spec?.onHostFailure ?? 0) ?? "- (the cluster's default)"],
    ["Generation", `${vm.generation} (observed ${status?.observedGeneration ?? 0})`],
    ["Message", status?.message || "-"],
  ];
  if (status && (status.attempts > 0 || status.errorCode !== "" || status.permanent)) {
    fields.push(["Attempts", `${status.attempts} failed in a row`]);
    fields.push(["Last error", status.errorCode || "-"]);
    if (status.permanent) {
      fields.push(["Next try", `none: permanent (fix the cause, then berth vm retry ${name})`]);
    } else {
      fields.push(["Next try", status.nextAttemptAtMs > 0 ? formatIn(status.nextAttemptAtMs, nowMs) : "-"]);
    }
  }
  fields.push(
    ["Updated", status && status.updatedAtMs > 0 ? `${formatAge(status.updatedAtMs, nowMs)} ago` : "-"],
    ["Created", vm.createdAtMs > 0 ? `${formatAge(vm.createdAtMs, nowMs)} ago` : "-"],
  );
  if (vm.requestId) fields.push(["Request ID", vm.requestId]);
  return renderFields(fields);
}

/** `4 GiB / 64 GiB` style usage of capacity (`0 / 64 GiB` when nothing is used). */
function usageOf(used: number | undefined, capacity: number | undefined, format: (n: number) => string): string {
  if (capacity === undefined) return "-";
  return `${used ? format(used) : "0"} / ${format(capacity)}`;
}

/**
 * The `host list` table. Usage is what the host's VMs use, as last reported. An ORPHANS column
 * (how many domains no VM record accounts for) appears only when some host has any, so the usual
 * table stays as narrow as it was.
 */
export function hostTable(hosts: readonly Host[], nowMs: number): string {
  const withOrphans = hosts.some((h) => h.orphans.length > 0);
  const rows = hosts.map((h) => [
    h.id,
    hostStateName(h.state, h.cordoned) + (h.hypervisor?.available === false ? ",HYPERVISOR-DOWN" : ""),
    ...(withOrphans ? [h.orphans.length > 0 ? String(h.orphans.length) : "-"] : []),
    usageOf(h.allocated?.vcpus, h.capacity?.vcpus, String) + (h.capacity ? " vCPU" : ""),
    usageOf(h.allocated?.memoryMib, h.capacity?.memoryMib, formatMib),
    usageOf(h.allocated?.diskGib, h.capacity?.diskGib, formatGib),
    h.driver || "-",
    formatAge(h.lastSeenMs, nowMs),
  ]);
  return renderTable(
    ["ID", "STATE", ...(withOrphans ? ["ORPHANS"] : []), "ALLOC VCPUS", "ALLOC MEMORY", "ALLOC DISK", "DRIVER", "LAST SEEN"],
    rows,
  );
}

/** One orphan on one line: `<vm id>  <name>  <state>  <resources>`. */
function orphanLine(o: OrphanDomain): string {
  return `${o.vmId}  ${o.name || "-"}  ${domainStateName(o.state)}  ${formatResourcesHuman(o.resources)}`;
}

/** The state of a host with how long it has been so: `SUSPECT (for 40s)`. */
function hostStateSince(host: Host, nowMs: number): string {
  const state = hostStateName(host.state, host.cordoned);
  return host.stateSinceMs > 0 ? `${state} (for ${formatAge(host.stateSinceMs, nowMs)})` : state;
}

/**
 * When a silent host counts as fenced: `in 25s`, or `passed 5s ago`; `-` while it is heard. The
 * deadline is absolute (last heard + fence timeout + margin); passed, the host is FENCED.
 */
function fenceDeadlineText(host: Host, nowMs: number): string {
  if (host.fenceDeadlineMs <= 0) return "-";
  return host.fenceDeadlineMs > nowMs
    ? `in ${formatDuration(host.fenceDeadlineMs - nowMs)}`
    : `passed ${formatDuration(nowMs - host.fenceDeadlineMs)} ago`;
}

/** The `host show` detail. */
export function hostDetail(host: Host, nowMs: number): string {
  const silent = host.fenceDeadlineMs > 0;
  return renderFields([
    ["ID", host.id],
    ["State", hostStateSince(host, nowMs)],
    ...(silent || host.state === HostState.HOST_STATE_FENCED
      ? ([["Fence deadline", fenceDeadlineText(host, nowMs)]] as [string, string][])
      : []),
    ...(host.confirmedDown ? ([["Confirmed down", "yes (berth host confirm-down)"]] as [string, string][]) : []),
    ["Capacity", formatResourcesHuman(host.capacity)],
    ["Allocated", formatResourcesHuman(host.allocated)],
    ["In use", formatResourcesHuman(host.usage)],
    ["Labels", formatLabels(host.labels)],
    ["Driver", host.driver || "-"],
    ["Hypervisor", hypervisorText(host)],
    ["CPU model", host.facts?.cpuModel || "-"],
    ["NUMA cells", host.facts?.numaCells.length ? host.facts.numaCells.map((c) => `${c.id}: ${c.cpus} CPUs, ${formatMib(c.memoryMib)}`).join("; ") : "-"],
    ["Agent", host.agentVersion || "-"],
    ["Boot ID", host.bootId || "-"],
    ["Last seen", host.lastSeenMs > 0 ? `${formatAge(host.lastSeenMs, nowMs)} ago` : "-"],
    ["Orphans", host.orphans.length === 0 ? "-" : host.orphans.map(orphanLine).join("\n")],
  ]);
}

/** The `host orphans` table: the domains on a host no VM record accounts for. */
export function orphanTable(orphans: readonly OrphanDomain[]): string {
  const rows = orphans.map((o) => [
    o.vmId,
    o.name || "-",
    domainStateName(o.state),
    o.resources ? formatVcpus(o.resources.vcpus) : "-",
    o.resources ? formatMib(o.resources.memoryMib) : "-",
    o.resources ? formatGib(o.resources.diskGib) : "-",
  ]);
  return renderTable(["VM ID", "NAME", "STATE", "VCPUS", "MEMORY", "DISK"], rows);
}

/** `-o json` for a host's orphans: a JSON array. */
export function orphanListJson(orphans: readonly OrphanDomain[]): string {
  return JSON.stringify(orphans.map((o) => OrphanDomain.toJSON(o)), null, 2) + "\n";
}

/** The `cluster show` detail: identity, and who leads. `answeredBy` is the address that answered. */
export function clusterDetail(cluster: GetClusterResponse, nowMs: number, answeredBy: string): string {
  const created = cluster.cluster?.createdAtMs ?? 0;
  return renderFields([
    ["Cluster ID", cluster.cluster?.id || "-"],
    ["Created", created > 0 ? `${formatAge(created, nowMs)} ago (${new Date(created).toISOString()})` : "-"],
    ["Leader", cluster.leaderId || "-"],
    ["Leader epoch", cluster.leaderEpoch > 0 ? String(cluster.leaderEpoch) : "-"],
    ["Answered by", answeredBy],
  ]);
}

/** `-o json` for `cluster show`: the response's proto JSON. */
export function clusterJson(cluster: GetClusterResponse): string {
  return JSON.stringify(GetClusterResponse.toJSON(cluster), null, 2) + "\n";
}

/** `QEMU 7.2.0, libvirt 9.0.0 (available)`, or why it is down. */
function hypervisorText(host: Host): string {
  const version = host.facts?.hypervisorVersion || "-";
  if (!host.hypervisor) return version;
  return host.hypervisor.available ? `${version} (available)` : `${version} (DOWN: ${host.hypervisor.message || "no reason given"})`;
}

/** `-o json`: one message, two-space indented, newline-terminated. */
export function vmJson(vm: Vm): string {
  return JSON.stringify(Vm.toJSON(vm), null, 2) + "\n";
}

/** `-o json` for a list: a JSON array, also when empty. */
export function vmListJson(vms: readonly Vm[]): string {
  return JSON.stringify(vms.map((v) => Vm.toJSON(v)), null, 2) + "\n";
}

/** `-o json` for one host. */
export function hostJson(host: Host): string {
  return JSON.stringify(Host.toJSON(host), null, 2) + "\n";
}

/** `-o json` for a list of hosts. */
export function hostListJson(hosts: readonly Host[]): string {
  return JSON.stringify(hosts.map((h) => Host.toJSON(h)), null, 2) + "\n";
}

/** `anti-affinity`, `soft-affinity`...: the `--policy` spelling; `-` when unspecified. */
export function policyName(policy: GroupPolicy): string {
  const name = enumName(() => groupPolicyToJSON(policy), "GROUP_POLICY_", policy);
  return name === "UNSPECIFIED" ? "-" : name.toLowerCase().replaceAll("_", "-");
}

/** The `group list` table: name, policy, how many members, age. */
export function groupTable(groups: readonly Group[], nowMs: number): string {
  const rows = groups.map((g) => [g.name, policyName(g.policy), String(g.members.length), formatAge(g.createdAtMs, nowMs)]);
  return renderTable(["NAME", "POLICY", "MEMBERS", "AGE"], rows);
}

/** `-o json` for one group. */
export function groupJson(group: Group): string {
  return JSON.stringify(Group.toJSON(group), null, 2) + "\n";
}

/** `-o json` for a list of groups. */
export function groupListJson(groups: readonly Group[]): string {
  return JSON.stringify(groups.map((g) => Group.toJSON(g)), null, 2) + "\n";
}

/** A number as people write it: `1.5`, `2`, `0.333` (at most three decimals). */
export function formatNumber(n: number): string {
  return Number.isInteger(n) ? String(n) : String(Math.round(n * 1000) / 1000);
}

/** The `config show` detail. Unset values are shown with what they mean. */
export function clusterConfigDetail(config: ClusterConfig): string {
  const s = config.scheduler;
  const ratio = (n: number | undefined, fallback: number): string => (n ? formatNumber(n) : `${formatNumber(fallback)} (default)`);
  const weights = Object.entries(s?.weights ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const r = s?.reserved;
  return renderFields([
    ["Preset", s?.preset || "spread (default)"],
    ["Weights", weights.length === 0 ? "- (the preset's)" : weights.map(([k, v]) => `${k}=${formatNumber(v)}`).join(", ")],
    ["CPU ratio", ratio(s?.allocationRatio?.vcpus, DEFAULT_ALLOCATION_RATIO.vcpus)],
    ["Memory ratio", ratio(s?.allocationRatio?.memory, DEFAULT_ALLOCATION_RATIO.memoryMib)],
    ["Disk ratio", ratio(s?.allocationRatio?.disk, DEFAULT_ALLOCATION_RATIO.diskGib)],
    ["Reserved", r ? formatResourcesHuman(r) : `${formatResourcesHuman(DEFAULT_RESERVED)} (default)`],
    ["Max VMs per host", s?.maxVmsPerHost ? String(s.maxVmsPerHost) : "no limit"],
    ["Filters", s && s.filters.length > 0 ? s.filters.join(", ") : "all (default order)"],
    ["Seed", String(s?.seed ?? 0)],
    // The policy of VMs whose spec leaves it unset.
    ["On host failure", onHostFailureName(config.defaultOnHostFailure) ?? "keep (default)"],
  ]);
}

/** `-o json` for the cluster config. */
export function clusterConfigJson(config: ClusterConfig): string {
  return JSON.stringify(ClusterConfig.toJSON(config), null, 2) + "\n";
}

/** Passed hosts first, best total first; then rejected ones; ties by host id. */
function verdictOrder(a: HostVerdict, b: HostVerdict): number {
  if (a.passed !== b.passed) return a.passed ? -1 : 1;
  if (a.passed && a.total !== b.total) return b.total - a.total;
  return a.hostId.localeCompare(b.hostId);
}

/**
 * One VM's per-host table of a plan: HOST, VERDICT (`passed`, or the filter that rejected the
 * host), SCORE (the weighted total), one column per weigher, REASON.
 */
export function verdictTable(placement: PlannedPlacement): string {
  const verdicts = [...placement.verdicts].sort(verdictOrder);
  const weighers = [...new Set(verdicts.flatMap((v) => Object.keys(v.scores)))].sort();
  const score = (n: number | undefined): string => (n === undefined ? "-" : n.toFixed(2));
  const rows = verdicts.map((v) => [
    v.hostId,
    v.passed ? "passed" : v.filter || "rejected",
    v.passed ? score(v.total) : "-",
    ...weighers.map((w) => (v.passed ? score(v.scores[w]) : "-")),
    v.reason || "-",
  ]);
  return renderTable(["HOST", "VERDICT", "SCORE", ...weighers.map((w) => w.toUpperCase()), "REASON"], rows);
}

/**
 * The human answer of `berth plan`: `placeable` or `not placeable`, the host chosen for each VM,
 * the controller's reasons when not placeable, then per-host tables: the first VM's, the one of the
 * VM that could not be placed, or every VM's with `all`.
 */
export function planText(plan: PlanPlacementResponse, all = false): string {
  const head = plan.placeable ? "placeable\n" : "not placeable\n";
  const parts: string[] = [
    plan.placements.length === 0
      ? head
      : head + renderTable(["VM", "HOST"], plan.placements.map((p) => [p.vmName, p.hostId || "- (no host)"])),
  ];
  if (!plan.placeable && plan.reasons.length > 0) {
    parts.push(`reasons:\n${plan.reasons.map((r) => `  ${r}\n`).join("")}`);
  }
  const failed = plan.placeable ? undefined : plan.placements.find((p) => p.hostId === "");
  const shown = all ? plan.placements : [...new Set([plan.placements[0], failed])];
  for (const p of shown) {
    if (!p || p.verdicts.length === 0) continue;
    parts.push(`hosts for vm ${p.vmName}${p.hostId ? ` (chosen: ${p.hostId})` : " (no host)"}:\n${verdictTable(p)}`);
  }
  return parts.join("\n");
}

/** `-o json` for a plan: the response's proto JSON. */
export function planJson(plan: PlanPlacementResponse): string {
  return JSON.stringify(PlanPlacementResponse.toJSON(plan), null, 2) + "\n";
}
