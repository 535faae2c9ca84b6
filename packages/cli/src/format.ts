import {
  ApplyRebalanceResponse,
  ClusterConfig,
  DrainDeadlineAction,
  DrainPhase,
  drainPhaseToJSON,
  Migration,
  MigrationPhase,
  migrationPhaseToJSON,
  MigrationReason,
  RebalanceGoal,
  RebalanceMetric,
  RebalancePlan,
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
  type DrainStatus,
  type GroupPolicy,
  type HostVerdict,
  type NetworkInterface,
  type VolumeInfo,
  type PlacementRecord,
  type PlannedPlacement,
  type Resources,
  VmPhase,
  type VmStatus,
} from "@berth/api";
import { formatBytes, formatGib, formatMib, formatResources, formatVcpus, nicMacAddress, normalHostState } from "@berth/core";
import { DEFAULT_ALLOCATION_RATIO, DEFAULT_RESERVED } from "@berth/scheduler";
import type { View } from "./output.js";

// Human output: aligned tables, units, ages. Pure functions of their input (and `now`).

const NAME_COLLATOR = new Intl.Collator("en", { numeric: true });

/**
 * The one order of names the CLI prints lists in: natural (`host-2` before `host-10`), the same on
 * every machine (a fixed locale). Every sorted table and JSON list uses it.
 */
export const compareNames = (a: string, b: string): number => NAME_COLLATOR.compare(a, b);

/** `items` sorted by `key` with {@link compareNames}; a new array. */
export function sortByName<T>(items: readonly T[], key: (item: T) => string): T[] {
  return [...items].sort((a, b) => compareNames(key(a), key(b)));
}

/** Aligned columns, two spaces apart; the last column is not padded. Ends with a newline. */
export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  return alignRows([headers, ...rows]).join("\n") + "\n";
}

/** Rows as lines of aligned columns, two spaces apart, as many columns as the first row; no header. */
export function alignRows(rows: readonly (readonly string[])[]): string[] {
  const columns = rows[0]?.length ?? 0;
  const widths = Array.from({ length: columns }, (_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) =>
    widths
      .map((w, i) => (i === columns - 1 ? (r[i] ?? "") : (r[i] ?? "").padEnd(w)))
      .join("  ")
      .trimEnd(),
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

// Sizes and resources are printed core's one way (formatBytes: binary units, one decimal).
export { formatBytes, formatGib, formatMib, formatVcpus };

/** `2 vCPU, 4 GiB memory, 20 GiB disk`; `-` when unknown. */
export function formatResourcesHuman(r: Resources | undefined): string {
  return r ? formatResources(r) : "-";
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

/** `DRAINING`, `DRAINED`, `INCOMPLETE`; `-` when unspecified. */
export function drainPhaseName(phase: DrainPhase): string {
  const name = enumName(() => drainPhaseToJSON(phase), "DRAIN_PHASE_", phase);
  return name === "UNSPECIFIED" ? "-" : name;
}

/**
 * What an operator did to the host, as a badge: the drain's phase while there is a drain (a
 * drained host is cordoned too: saying so again adds nothing), else CORDONED; `undefined` for
 * neither.
 */
function cordonBadge(host: Host): string | undefined {
  switch (host.drain?.phase) {
    case DrainPhase.DRAIN_PHASE_DRAINING:
      return "DRAINING";
    case DrainPhase.DRAIN_PHASE_DRAINED:
      return "DRAINED";
    case DrainPhase.DRAIN_PHASE_INCOMPLETE:
      return "DRAIN-INCOMPLETE";
    default:
      return host.cordoned ? "CORDONED" : undefined;
  }
}

/** A host's state with its cordon or drain badge: `READY,DRAINING`, `SUSPECT,CORDONED`. */
export function hostStateText(host: Host): string {
  const badge = cordonBadge(host);
  const base = hostStateName(host.state);
  return badge ? `${base},${badge}` : base;
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
  const entries = Object.entries(labels ?? {}).sort(([a], [b]) => compareNames(a, b));
  return entries.length === 0 ? "-" : entries.map(([k, v]) => `${k}=${v}`).join(",");
}

/** An instant as ISO 8601 (UTC, to the second); `-` when unknown. */
export const isoTime = (atMs: number): string => (atMs > 0 ? new Date(atMs).toISOString().replace(/\.\d{3}Z$/, "Z") : "-");

/**
 * The `vm list` table: NAME, PHASE, DESIRED, HOST, VCPUS, MEMORY, DISK, AGE; `wide` (`-o wide`)
 * adds IP (the first NIC's address: {@link vmAddress}), ID, GENERATION (spec generation / observed
 * by the host), GROUP, LABELS, CREATED.
 */
export function vmTable(vms: readonly Vm[], nowMs: number, wide = false): string {
  const rows = vms.map((vm) => {
    const r = vm.spec?.resources;
    const row = [
      vm.spec?.name ?? "-",
      phaseName(vm.status?.phase ?? 0),
      desiredName(vm.desiredState),
      vm.hostId || "-",
      r ? formatVcpus(r.vcpus) : "-",
      r ? formatMib(r.memoryMib) : "-",
      r ? formatGib(r.diskGib) : "-",
      formatAge(vm.createdAtMs, nowMs),
    ];
    if (!wide) return row;
    return [
      ...row,
      vmAddress(vm) ?? "-",
      vm.id || "-",
      `${vm.generation}/${vm.status?.observedGeneration ?? 0}`,
      vm.spec?.group || "-",
      formatLabels(vm.spec?.labels),
      isoTime(vm.createdAtMs),
    ];
  });
  const headers = ["NAME", "PHASE", "DESIRED", "HOST", "VCPUS", "MEMORY", "DISK", "AGE"];
  return renderTable(wide ? [...headers, "IP", "ID", "GENERATION", "GROUP", "LABELS", "CREATED"] : headers, rows);
}

/** One NIC of a VM as `vm show` prints it: the spec's network with what its host reported. */
export interface VmNic {
  /** `eth0`, `eth1`...: the NIC's place in the spec (the guest may name it otherwise, e.g. `enp1s0`). */
  name: string;
  network: string;
  /** As reported, else the one the controller gives it (core's `nicMacAddress`); empty when unknown. */
  mac: string;
  addresses: readonly string[];
  /** `lease`, `arp`, `agent`, `fake`; empty before any address. */
  source: string;
}

/**
 * The VM's NICs: one per `spec.networks` entry, in order, each matched to the interface its host
 * reported (by MAC, else by network), then any reported interface the spec does not name (an
 * adopted domain's). Pure.
 */
export function vmNics(vm: Vm): VmNic[] {
  const networks = vm.spec?.networks ?? [];
  const reported = [...(vm.status?.interfaces ?? [])];
  const take = (match: (n: NetworkInterface) => boolean): NetworkInterface | undefined => {
    const i = reported.findIndex(match);
    return i < 0 ? undefined : reported.splice(i, 1)[0];
  };
  const nics: VmNic[] = networks.map((network, i) => {
    const mac = vm.id ? nicMacAddress(vm.id, i) : "";
    const found = take((n) => mac !== "" && n.mac.toLowerCase() === mac) ?? take((n) => n.network === network);
    return { name: `eth${i}`, network, mac: found?.mac || mac, addresses: found?.ipAddresses ?? [], source: found?.addressSource ?? "" };
  });
  reported.forEach((n, j) =>
    nics.push({ name: `eth${networks.length + j}`, network: n.network, mac: n.mac, addresses: n.ipAddresses, source: n.addressSource }),
  );
  return nics;
}

/**
 * The address people reach the VM at: the first NIC's first IPv4 address, else its first address
 * (IPv6); `undefined` before the host has learnt one. `vm list -o wide`'s IP.
 */
export function vmAddress(vm: Vm): string | undefined {
  const first = vmNics(vm)[0];
  if (!first) return undefined;
  return first.addresses.find((a) => !a.includes(":")) ?? first.addresses[0];
}

/** Whether the VM's guest runs (so an address is worth waiting for). */
const guestRuns = (vm: Vm): boolean =>
  vm.status?.phase === VmPhase.VM_PHASE_RUNNING || vm.status?.phase === VmPhase.VM_PHASE_MIGRATING;

/**
 * `vm show`'s Networks: a line per NIC, aligned, `eth0  default  52:54:00:12:34:56  10.122.3.4 (lease)`;
 * without an address `waiting for an address` while the VM runs, else `-`; `-` for a VM without NICs.
 */
export function vmNetworksText(vm: Vm): string {
  const nics = vmNics(vm);
  if (nics.length === 0) return "-";
  const rows = nics.map((n) => [
    n.name,
    n.network || "-",
    n.mac || "-",
    n.addresses.length > 0 ? `${n.addresses.join(", ")}${n.source ? ` (${n.source})` : ""}` : guestRuns(vm) ? "waiting for an address" : "-",
  ]);
  return alignRows(rows).join("\n");
}

/**
 * `vm show`'s Volumes: a line per attached volume, in attach order, with its size and phase when
 * `volumes` (ListVolumes' answer) knows it; `-` for none.
 */
export function vmVolumesText(vm: Vm, volumes?: readonly VolumeInfo[]): string {
  const names = vm.spec?.volumes ?? [];
  if (names.length === 0) return "-";
  return names
    .map((name) => {
      const info = volumes?.find((v) => v.volume?.name === name);
      return info?.volume ? `${name} (${formatGib(info.volume.sizeGib)}, ${info.phase || "-"})` : name;
    })
    .join("\n");
}

/**
 * `vm show`'s Cloud-init: how many SSH keys and how large the user-data is, never what either says
 * (the user-data may hold secrets); `- (no seed)` without cloud-init.
 */
export function vmCloudInitText(vm: Vm): string {
  const c = vm.spec?.cloudInit;
  if (!c) return "- (no seed)";
  const n = c.sshAuthorizedKeys.length;
  const keys = `${n} ssh key${n === 1 ? "" : "s"}`;
  const userData = c.userData === "" ? "user-data: Berth's own (hostname and keys)" : `user-data: ${formatBytes(Buffer.byteLength(c.userData, "utf8"))}`;
  return `${keys}; ${userData}`;
}

/** `-o` views of VMs: one VM (as a one-row table) or a list; names are the VMs' names. */
export function vmView(vm: Vm, nowMs: number): View {
  return {
    data: () => Vm.toJSON(vm),
    table: () => vmTable([vm], nowMs),
    wide: () => vmTable([vm], nowMs, true),
    names: () => [vm.spec?.name ?? vm.id],
  };
}

/** See {@link vmView}; the list as given (sort it first). */
export function vmListView(vms: readonly Vm[], nowMs: number): View {
  return {
    data: () => vms.map((v) => Vm.toJSON(v)),
    table: () => vmTable(vms, nowMs),
    wide: () => vmTable(vms, nowMs, true),
    names: () => vms.map((v) => v.spec?.name ?? v.id),
  };
}

/**
 * The `vm show` detail. The retry state (attempts, last error, next try, permanent) is shown while
 * there is one: a VM whose command last succeeded has none. The guest's devices: image, NICs with
 * MACs and addresses, volumes (with size and phase from `volumes`, ListVolumes' answer, when
 * given), cloud-init (counted and sized, never its content).
 */
export function vmDetail(vm: Vm, nowMs: number, migration?: Migration, volumes?: readonly VolumeInfo[]): string {
  const status = vm.status;
  const name = vm.spec?.name ?? "-";
  const fields: [string, string][] = [
    ["Name", name],
    ["ID", vm.id || "-"],
    ["Phase", phaseName(status?.phase ?? 0)],
    ["Desired", desiredName(vm.desiredState)],
    ["Host", vm.hostId || "-"],
    ["Resources", formatResourcesHuman(vm.spec?.resources)],
    ["Image", vm.spec?.image || "- (a blank disk)"],
    ["Networks", vmNetworksText(vm)],
    ["Volumes", vmVolumesText(vm, volumes)],
    ["Cloud-init", vmCloudInitText(vm)],
    ["Labels", formatLabels(vm.spec?.labels)],
    ["On host failure", onHostFailureName(vm.spec?.onHostFailure ?? 0) ?? "- (the cluster's default)"],
    ["Generation", `${vm.generation} (observed ${status?.observedGeneration ?? 0})`],
    ["Message", status?.message || "-"],
  ];
  // While it migrates: where to and how far (berth migration show NAME has the rest).
  if (migration && !migrationEnded(migration)) fields.splice(5, 0, ["Migration", migrationState(migration)]);
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
  fields.push(...placementFields(vm.placement, nowMs));
  return renderFields(fields);
}

/**
 * Why the VM is on its host, from the placement record the controller kept with the decision:
 * the chosen host's total and each weigher's score (as `berth plan` shows them), the runner-up,
 * how many hosts fitted, and what the filters rejected. Weighers in name order.
 */
export function placementFields(p: PlacementRecord | undefined, nowMs: number): [string, string][] {
  if (!p) return [["Placed", "- (no record: placed before Berth kept one)"]];
  const when = p.decidedAtMs > 0 ? `${formatAge(p.decidedAtMs, nowMs)} ago` : "-";
  const head: [string, string] = ["Placed", `${when} (${p.cause || "create"}${p.preset ? `, preset ${p.preset}` : ""})`];
  if (!p.explained) {
    const why = p.cause === "migrate" ? "the host was a migration's target" : `not explained (the controller was busy or the fleet large: ${p.hostsConsidered} hosts); berth plan explains`;
    return [head, ["Why here", why]];
  }
  const scores = Object.keys(p.scores)
    .sort(compareNames)
    .map((k) => `${k} ${formatScore(p.scores[k]!)}`)
    .join(", ");
  const rejected = Object.entries(p.rejectedByFilter)
    .sort(([a], [b]) => compareNames(a, b))
    .map(([f, n]) => `${n} by ${f}`)
    .join(", ");
  return [
    head,
    ["Why here", `score ${formatScore(p.total)} (${scores || "no weighers"}); ${p.hostsFeasible} of ${p.hostsConsidered} hosts fitted`],
    ["Runner-up", p.runnerUpHost ? `${p.runnerUpHost} (score ${formatScore(p.runnerUpTotal)})` : "- (the only host that fitted)"],
    ["Rejected", rejected || "-"],
  ];
}

/** A weigher score or total: two decimals, as `berth plan` prints them. */
function formatScore(x: number): string {
  return x.toFixed(2);
}

/**
 * What the scheduler may place on `host` in total, as the controller computed it when it answered
 * (Host.allocatable: the scheduler's own rule, ratio × physical − reserved with the host's
 * overrides); `undefined` from a controller that does not fill it in, or before the host reported
 * a capacity.
 */
export function hostAllocatable(host: Host): Resources | undefined {
  return host.allocatable;
}

/** `4 GiB/63 GiB (6%)`: an amount against allocatable (`0/63 GiB (0%)`); `-` without an allocatable. */
function ofAllocatable(amount: number | undefined, total: number | undefined, format: (n: number) => string): string {
  if (total === undefined) return "-";
  const used = amount ?? 0;
  const percent = total > 0 ? ` (${Math.round((used / total) * 100)}%)` : "";
  return `${used ? format(used) : "0"}/${format(total)}${percent}`;
}

/** The three resources of `amount` against `total`, in table order: CPU, MEMORY, DISK. */
function resourceCells(amount: Resources | undefined, total: Resources | undefined): string[] {
  return [
    ofAllocatable(amount?.vcpus, total?.vcpus, String),
    ofAllocatable(amount?.memoryMib, total?.memoryMib, formatMib),
    ofAllocatable(amount?.diskGib, total?.diskGib, formatGib),
  ];
}

/**
 * The `host list` table. Allocation (what the host's VMs ask for) is shown against allocatable
 * (what the scheduler may place there: {@link hostAllocatable}, as the controller answers it;
 * settings), as the headers say. An ORPHANS column (how many domains no VM record accounts for)
 * appears only when some host has any. `wide` (`-o wide`) adds usage (what the VMs use, as last
 * reported) against the same allocatable, DRIVER, VERSION (the agent's), CPU MODEL and LABELS.
 */
export function hostTable(hosts: readonly Host[], nowMs: number, wide = false): string {
  const withOrphans = hosts.some((h) => h.orphans.length > 0);
  const rows = hosts.map((h) => {
    const total = hostAllocatable(h);
    return [
      h.id,
      hostStateText(h) + (h.hypervisor?.available === false ? ",HYPERVISOR-DOWN" : ""),
      ...(withOrphans ? [h.orphans.length > 0 ? String(h.orphans.length) : "-"] : []),
      ...resourceCells(h.allocated, total),
      formatAge(h.lastSeenMs, nowMs),
      ...(wide
        ? [
            ...resourceCells(h.usage, total),
            h.driver || "-",
            h.agentVersion || "-",
            h.facts?.cpuModel || "-",
            hostNetworkNames(h),
            h.images.length > 0 ? String(h.images.length) : "-",
            hostVolumesText(h),
            formatLabels(h.labels),
          ]
        : []),
    ];
  });
  return renderTable(
    [
      "ID",
      "STATE",
      ...(withOrphans ? ["ORPHANS"] : []),
      "CPU (ALLOC/ALLOCATABLE)",
      "MEMORY (ALLOC/ALLOCATABLE)",
      "DISK (ALLOC/ALLOCATABLE)",
      "LAST SEEN",
      ...(wide
        ? ["CPU (USED/ALLOCATABLE)", "MEMORY (USED/ALLOCATABLE)", "DISK (USED/ALLOCATABLE)", "DRIVER", "VERSION", "CPU MODEL", "NETWORKS", "IMAGES", "VOLUMES", "LABELS"]
        : []),
    ],
    rows,
  );
}

/** `default,br0`: the networks a host offers VMs' NICs, active ones only (VMs cannot use the others); `-` for none. */
export function hostNetworkNames(host: Host): string {
  const names = host.networks.filter((n) => n.active).map((n) => n.name).sort(compareNames);
  return names.length > 0 ? names.join(",") : "-";
}

/** `3 (60 GiB)`: the data volumes in a host's pool and their total size; `-` for none. */
export function hostVolumesText(host: Host): string {
  if (host.volumes.length === 0) return "-";
  const gib = host.volumes.reduce((sum, v) => sum + v.sizeGib, 0);
  return `${host.volumes.length} (${formatGib(gib)})`;
}

/** `host show`'s Networks: `br0 (bridge), default (network), lab (network, inactive)`; `-` for none. */
function hostNetworksDetail(host: Host): string {
  if (host.networks.length === 0) return "-";
  return sortByName(host.networks, (n) => n.name)
    .map((n) => `${n.name} (${n.kind || "-"}${n.active ? "" : ", inactive: VMs cannot use it"})`)
    .join(", ");
}

/**
 * `host show`'s Images: how many the host holds, what they take on its disk, and their names
 * (`imageNames`: image id to catalog name; an id the catalog does not know is shown as the id).
 */
function hostImagesDetail(host: Host, imageNames?: ReadonlyMap<string, string>): string {
  if (host.images.length === 0) return "-";
  const bytes = host.images.reduce((sum, i) => sum + i.sizeBytes, 0);
  const names = host.images.map((i) => imageNames?.get(i.imageId) ?? i.imageId).sort(compareNames);
  return `${host.images.length} (${formatBytes(bytes)} on disk): ${names.join(", ")}`;
}

/** `host show`'s Volumes: `3 (60 GiB), 2 attached`; `-` for none. */
function hostVolumesDetail(host: Host): string {
  if (host.volumes.length === 0) return "-";
  const attached = host.volumes.filter((v) => v.attachedVmId !== "").length;
  return `${hostVolumesText(host)}, ${attached} attached`;
}

/** `-o` views of hosts: the list (as given: sort it first), named by host id. */
export function hostListView(hosts: readonly Host[], nowMs: number): View {
  return {
    data: () => hosts.map((h) => Host.toJSON(h)),
    table: () => hostTable(hosts, nowMs),
    wide: () => hostTable(hosts, nowMs, true),
    names: () => hosts.map((h) => h.id),
  };
}

/** One host after a change (cordon, confirm-down...): a one-row table. */
export function hostView(host: Host, nowMs: number): View {
  return { ...hostListView([host], nowMs), data: () => Host.toJSON(host) };
}

/** `host show`: the detail (also under `wide`); `imageNames` maps image ids to names (ListImages). */
export function hostDetailView(host: Host, nowMs: number, imageNames?: ReadonlyMap<string, string>): View {
  return { data: () => Host.toJSON(host), table: () => hostDetail(host, nowMs, imageNames), names: () => [host.id] };
}

/** One orphan on one line: `<vm id>  <name>  <state>  <resources>`. */
function orphanLine(o: OrphanDomain): string {
  return `${o.vmId}  ${o.name || "-"}  ${domainStateName(o.state)}  ${formatResourcesHuman(o.resources)}`;
}

/** The state of a host with how long it has been so: `SUSPECT (for 40s)`. */
function hostStateSince(host: Host, nowMs: number): string {
  const state = hostStateText(host);
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

/** `2 vCPU, 4 GiB memory, 20 GiB disk`, with each share of allocatable: `2 vCPU (13%), ...`. */
function resourcesOf(amount: Resources | undefined, total: Resources | undefined): string {
  if (!amount) return "-";
  if (!total) return formatResourcesHuman(amount);
  const pct = (n: number, of: number): string => (of > 0 ? ` (${Math.round((n / of) * 100)}%)` : "");
  return (
    `${formatVcpus(amount.vcpus)}${pct(amount.vcpus, total.vcpus)}, ${formatMib(amount.memoryMib)} memory${pct(amount.memoryMib, total.memoryMib)}, ` +
    `${formatGib(amount.diskGib)} disk${pct(amount.diskGib, total.diskGib)}`
  );
}

/**
 * The `host show` detail. Capacity is physical; Allocatable what the scheduler may place there
 * (as the controller answers it); Allocated and In use are shown with their share of
 * allocatable. Networks, Images (named through `imageNames`, image id to name) and Volumes are
 * what the agent last reported.
 */
export function hostDetail(host: Host, nowMs: number, imageNames?: ReadonlyMap<string, string>): string {
  const silent = host.fenceDeadlineMs > 0;
  const total = hostAllocatable(host);
  return renderFields([
    ["ID", host.id],
    ["State", hostStateSince(host, nowMs)],
    ...(silent || host.state === HostState.HOST_STATE_FENCED
      ? ([["Fence deadline", fenceDeadlineText(host, nowMs)]] as [string, string][])
      : []),
    ...(host.confirmedDown ? ([["Confirmed down", "yes (berth host confirm-down)"]] as [string, string][]) : []),
    ...(host.cordoned ? ([["Cordoned", host.cordonReason ? `yes: ${host.cordonReason}` : "yes"]] as [string, string][]) : []),
    ...(host.drain ? ([["Drain", drainDetail(host.drain, nowMs)]] as [string, string][]) : []),
    ["Capacity", `${formatResourcesHuman(host.capacity)} (physical)`.replace(/^- \(physical\)$/, "-")],
    ["Allocatable", total ? `${formatResourcesHuman(total)} (ratio x physical - reserved)` : "-"],
    ["Allocated", `${resourcesOf(host.allocated, total)}${total && host.allocated ? " of allocatable" : ""}`],
    ["In use", `${resourcesOf(host.usage, total)}${total && host.usage ? " of allocatable" : ""}`],
    ["Labels", formatLabels(host.labels)],
    // Who set which (berth host label; berth-agent --label): the operator's win for a key both set.
    ["Operator labels", formatLabels(host.operatorLabels)],
    ["Agent labels", formatLabels(host.agentLabels)],
    ["Networks", hostNetworksDetail(host)],
    ["Images", hostImagesDetail(host, imageNames)],
    ["Volumes", hostVolumesDetail(host)],
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
  const weights = Object.entries(s?.weights ?? {}).sort(([a], [b]) => compareNames(a, b));
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
  ]) + `\nRebalancing:\n${indent(rebalanceConfigFields(config))}\nMigrations:\n${indent(migrationConfigFields(config))}`;
}

/** The controller's defaults for unset rebalance and migration settings, as migration.proto states them. */
export const REBALANCE_DEFAULTS = {
  intervalMs: 300_000,
  threshold: 0.1,
  rounds: 3,
  maxMovesPerPass: 4,
  vmCooldownMs: 3_600_000,
  hostCooldownMs: 600_000,
} as const;
export const MIGRATION_DEFAULTS = {
  parallelMigrations: 5,
  outboundPerHost: 2,
  completionTimeoutPerGibS: 150,
  progressTimeoutS: 150,
} as const;

const indent = (text: string): string =>
  text
    .split("\n")
    .map((l) => (l === "" ? l : `  ${l}`))
    .join("\n");

/** A set value, or the default it stands for when unset (0). */
function orDefault(value: number | undefined, fallback: number, format: (n: number) => string): string {
  return value ? format(value) : `${format(fallback)} (default)`;
}

function rebalanceConfigFields(config: ClusterConfig): string {
  const r = config.rebalance;
  const d = REBALANCE_DEFAULTS;
  return renderFields([
    ["Continuous", r?.enabled ? "on" : "off" + (r ? "" : " (default)")],
    ["Goal", r?.goal ? rebalanceGoalName(r.goal) : "balance (default)"],
    ["Metric", (r?.metric ? rebalanceMetricName(r.metric) : undefined) ?? "usage where measured, else allocation (default)"],
    ["Interval", orDefault(r?.intervalMs, d.intervalMs, formatDuration)],
    ["Threshold", orDefault(r?.threshold, d.threshold, formatNumber)],
    ["Rounds", orDefault(r?.rounds, d.rounds, String)],
    ["Max moves per pass", orDefault(r?.maxMovesPerPass, d.maxMovesPerPass, String)],
    ["VM cooldown", orDefault(r?.vmCooldownMs, d.vmCooldownMs, formatDuration)],
    ["Host cooldown", orDefault(r?.hostCooldownMs, d.hostCooldownMs, formatDuration)],
  ]);
}

function migrationConfigFields(config: ClusterConfig): string {
  const m = config.migration;
  const d = MIGRATION_DEFAULTS;
  const seconds = (s: number): string => formatDuration(s * 1000);
  return renderFields([
    ["Parallel", orDefault(m?.parallelMigrations, d.parallelMigrations, String)],
    ["Outbound per host", orDefault(m?.outboundPerHost, d.outboundPerHost, String)],
    ["Timeout per GiB", orDefault(m?.completionTimeoutPerGibS, d.completionTimeoutPerGibS, seconds)],
    ["Progress timeout", orDefault(m?.progressTimeoutS, d.progressTimeoutS, seconds)],
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
  return compareNames(a.hostId, b.hostId);
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

/** `PENDING`, `MIGRATING`, `COMPLETED`...; `-` when unspecified. */
export function migrationPhaseName(phase: MigrationPhase): string {
  const name = enumName(() => migrationPhaseToJSON(phase), "MIGRATION_PHASE_", phase);
  return name === "UNSPECIFIED" ? "-" : name;
}

/** `drain`, `operator`, `rebalance`; `-` when unspecified. */
export function migrationReasonName(reason: MigrationReason): string {
  switch (reason) {
    case MigrationReason.MIGRATION_REASON_DRAIN:
      return "drain";
    case MigrationReason.MIGRATION_REASON_OPERATOR:
      return "operator";
    case MigrationReason.MIGRATION_REASON_REBALANCE:
      return "rebalance";
    case MigrationReason.MIGRATION_REASON_UNSPECIFIED:
      return "-";
    default:
      return String(reason);
  }
}

/** `balance`, `consolidate`: the `--goal` spelling; unset reads as balance, the controller's default. */
export function rebalanceGoalName(goal: RebalanceGoal): string {
  switch (goal) {
    case RebalanceGoal.REBALANCE_GOAL_CONSOLIDATE:
      return "consolidate";
    case RebalanceGoal.REBALANCE_GOAL_BALANCE:
    case RebalanceGoal.REBALANCE_GOAL_UNSPECIFIED:
      return "balance";
    default:
      return String(goal);
  }
}

/** `usage`, `allocation`: the `--metric` spelling; `undefined` when unset. */
export function rebalanceMetricName(metric: RebalanceMetric): string | undefined {
  switch (metric) {
    case RebalanceMetric.REBALANCE_METRIC_USAGE:
      return "usage";
    case RebalanceMetric.REBALANCE_METRIC_ALLOCATION:
      return "allocation";
    case RebalanceMetric.REBALANCE_METRIC_UNSPECIFIED:
      return undefined;
    default:
      return String(metric);
  }
}

/** Whether a migration has ended: COMPLETED or FAILED. */
export const migrationEnded = (m: Migration): boolean =>
  m.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED || m.phase === MigrationPhase.MIGRATION_PHASE_FAILED;

/**
 * How much of the data has been sent, in whole percent, as the source's driver last reported it;
 * `undefined` before any report. Never 100 before the switchover: pre-copy passes send again what
 * the guest dirtied, so "all sent" is only known at the end.
 */
export function migrationPercent(m: Migration): number | undefined {
  const p = m.progress;
  if (m.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED) return 100;
  if (!p || p.dataTotalBytes <= 0) return undefined;
  const sent = Math.max(0, p.dataTotalBytes - p.dataRemainingBytes);
  return Math.min(99, Math.floor((sent / p.dataTotalBytes) * 100));
}

/** Where a migration goes: its target, or that the scheduler has not picked one yet. */
function migrationTarget(m: Migration): string {
  return m.targetHost || "(scheduler picks)";
}

/** `1.2 GiB / 4 GiB left (70%)`; `undefined` before the driver reported any progress. */
function dataLeftText(m: Migration): string | undefined {
  const p = m.progress;
  if (!p || p.dataTotalBytes <= 0 || migrationEnded(m)) return undefined;
  return `${formatBytes(p.dataRemainingBytes)} / ${formatBytes(p.dataTotalBytes)} left (${migrationPercent(m) ?? 0}%)`;
}

/**
 * One line on how a migration is doing, for `--wait`:
 * `vm web-1: MIGRATING host-1 -> host-2, 1.2 GiB / 4 GiB left (70%), pass 2`.
 */
export function migrationProgressText(m: Migration): string {
  return `vm ${m.vmName}: ${migrationState(m)}`;
}

/** A migration's phase, hosts and progress: `MIGRATING host-1 -> host-2, 1.2 GiB / 4 GiB left (70%)`. */
function migrationState(m: Migration): string {
  const parts = [`${migrationPhaseName(m.phase)} ${m.sourceHost || "-"} -> ${migrationTarget(m)}`];
  const left = dataLeftText(m);
  if (left) parts.push(left);
  if ((m.progress?.iteration ?? 0) > 1) parts.push(`pass ${m.progress?.iteration}`);
  if (m.abortRequested && !migrationEnded(m)) parts.push("abort requested");
  return parts.join(", ");
}

/** How long a migration has run: from leaving PENDING to its end (or now); `-` while pending. */
function migrationDuration(m: Migration, nowMs: number): string {
  if (m.startedAtMs <= 0) return "-";
  return formatDuration((m.finishedAtMs > 0 ? m.finishedAtMs : nowMs) - m.startedAtMs);
}

/** A failed migration's reason as `CODE: message` (the code not repeated when the message starts with it). */
export function migrationMessage(m: Migration): string {
  const code = m.errorCode;
  const message = m.message;
  if (!code) return message;
  if (!message || message === code) return code;
  return message.startsWith(`${code}: `) ? message : `${code}: ${message}`;
}

/** The `migration list` table, in the controller's order (in flight first, then the newest finished). */
export function migrationTable(migrations: readonly Migration[], nowMs: number): string {
  const rows = migrations.map((m) => {
    const percent = migrationPercent(m);
    return [
      m.vmName || "-",
      m.sourceHost || "-",
      m.targetHost || "-",
      migrationPhaseName(m.phase),
      migrationReasonName(m.reason),
      percent === undefined ? "-" : `${percent}%`,
      formatAge(m.createdAtMs, nowMs),
      migrationDuration(m, nowMs),
      migrationMessage(m) || (m.abortRequested && !migrationEnded(m) ? "abort requested" : "-"),
    ];
  });
  return renderTable(["VM", "FROM", "TO", "PHASE", "REASON", "PROGRESS", "AGE", "DURATION", "MESSAGE"], rows);
}

const ago = (atMs: number, nowMs: number): string => (atMs > 0 ? `${formatAge(atMs, nowMs)} ago` : "-");

/** The `migration show` detail. */
export function migrationDetail(m: Migration, nowMs: number): string {
  const p = m.progress;
  const target = m.targetHost
    ? `${m.targetHost} (${m.targetRequested ? "requested" : "chosen by the scheduler"})`
    : "- (the scheduler picks when a slot is free)";
  const fields: [string, string][] = [
    ["ID", m.id || "-"],
    ["VM", m.vmId ? `${m.vmName} (${m.vmId})` : m.vmName || "-"],
    ["Phase", m.phaseSinceMs > 0 ? `${migrationPhaseName(m.phase)} (for ${formatAge(m.phaseSinceMs, nowMs)})` : migrationPhaseName(m.phase)],
    ["Reason", m.requestedBy ? `${migrationReasonName(m.reason)} (${m.requestedBy})` : migrationReasonName(m.reason)],
    ["From", m.sourceHost || "-"],
    ["To", target],
  ];
  if (p && p.dataTotalBytes > 0) {
    const parts = [
      `${formatBytes(p.dataProcessedBytes)} sent, ${formatBytes(p.dataRemainingBytes)} of ${formatBytes(p.dataTotalBytes)} left` +
        (migrationPercent(m) !== undefined ? ` (${migrationPercent(m)}%)` : ""),
    ];
    if (p.iteration > 0) parts.push(`pass ${p.iteration}`);
    if (p.dirtyRateBytesPerS > 0) parts.push(`guest dirties ${formatBytes(p.dirtyRateBytesPerS)}/s`);
    if (p.updatedAtMs > 0) parts.push(`measured ${ago(p.updatedAtMs, nowMs)}`);
    fields.push(["Progress", parts.join(", ")]);
  } else {
    fields.push(["Progress", "-"]);
  }
  if (m.dataEstimateBytes > 0) fields.push(["Data to move", `about ${formatBytes(m.dataEstimateBytes)}`]);
  fields.push(
    ["Created", ago(m.createdAtMs, nowMs)],
    ["Started", ago(m.startedAtMs, nowMs)],
    ["Finished", ago(m.finishedAtMs, nowMs)],
    ["Duration", migrationDuration(m, nowMs)],
  );
  if (m.deadlineAtMs > 0 && !migrationEnded(m)) {
    fields.push(["Deadline", m.deadlineAtMs > nowMs ? `${formatIn(m.deadlineAtMs, nowMs)} (then it is aborted)` : `passed ${formatAge(m.deadlineAtMs, nowMs)} ago`]);
  }
  if (m.abortRequested) fields.push(["Abort requested", "yes"]);
  fields.push(["Message", migrationMessage(m) || "-"]);
  if (m.targetUri) fields.push(["Target URI", m.targetDriver ? `${m.targetUri} (${m.targetDriver})` : m.targetUri]);
  if (m.requestId) fields.push(["Request ID", m.requestId]);
  return renderFields(fields);
}

/** `-o json` for one migration. */
export function migrationJson(m: Migration): string {
  return JSON.stringify(Migration.toJSON(m), null, 2) + "\n";
}

/** `-o json` for a list of migrations: a JSON array, also when empty. */
export function migrationListJson(migrations: readonly Migration[]): string {
  return JSON.stringify(migrations.map((m) => Migration.toJSON(m)), null, 2) + "\n";
}

/** `stop`, `leave`: the `--on-deadline` spelling; unset reads as leave, the controller's default. */
export function drainDeadlineActionName(action: DrainDeadlineAction): string {
  return action === DrainDeadlineAction.DRAIN_DEADLINE_ACTION_STOP ? "stop" : "leave";
}

/** `moved 3/8, 2 in flight, 1 failed, 1 staying`: a drain's live figures. */
export function drainFigures(d: DrainStatus): string {
  return `moved ${d.moved}/${d.toMove}, ${d.inFlight} in flight, ${d.failed} failed, ${d.staying} staying`;
}

/** When the drain's deadline comes, and what happens then: `deadline in 5m, then stop`; empty without one. */
function drainDeadlineText(d: DrainStatus, nowMs: number): string {
  if (d.deadlineAtMs <= 0) return "";
  const when = d.deadlineAtMs > nowMs ? `in ${formatDuration(d.deadlineAtMs - nowMs)}` : `passed ${formatAge(d.deadlineAtMs, nowMs)} ago`;
  return `deadline ${when}, then ${drainDeadlineActionName(d.onDeadline)}`;
}

/** One line on a drain, for `host drain --wait`: `drain of host-1: DRAINING, moved 3/8, ..., deadline in 5m, then stop`. */
export function drainProgressText(hostId: string, d: DrainStatus, nowMs: number): string {
  const deadline = drainDeadlineText(d, nowMs);
  return `drain of ${hostId}: ${drainPhaseName(d.phase)}, ${drainFigures(d)}${deadline ? `, ${deadline}` : ""}`;
}

/** The `Drain:` field of `host show`: phase, figures, deadline, when asked and ended, the message. */
function drainDetail(d: DrainStatus, nowMs: number): string {
  const parts = [`${drainPhaseName(d.phase)}: ${drainFigures(d)}`];
  const deadline = drainDeadlineText(d, nowMs);
  if (deadline && d.phase === DrainPhase.DRAIN_PHASE_DRAINING) parts.push(deadline);
  if (d.requestedAtMs > 0) parts.push(`asked ${ago(d.requestedAtMs, nowMs)}`);
  if (d.finishedAtMs > 0) parts.push(`ended ${ago(d.finishedAtMs, nowMs)}`);
  return parts.join("; ") + (d.message ? `\n${d.message}` : "");
}

/** `0.214`: an imbalance (a standard deviation of utilisation) to three decimals. */
const formatImbalance = (n: number): string => n.toFixed(3);

/** `12.5`: GiB to at most one decimal. */
const formatGibAmount = (n: number): string => String(Math.round(n * 10) / 10);

/**
 * The human answer of `rebalance plan`: the ordered moves (#, VM, FROM, TO, BENEFIT, COST GIB,
 * IMBALANCE AFTER, REASON: the reason last, as it is the long one), then the imbalance before and
 * after, what is moved, the hosts freed and the controller's note.
 */
export function rebalancePlanText(plan: RebalancePlan): string {
  const moves =
    plan.moves.length === 0
      ? "no moves\n"
      : renderTable(
          ["#", "VM", "FROM", "TO", "BENEFIT", "COST GIB", "IMBALANCE AFTER", "REASON"],
          plan.moves.map((m, i) => [
            String(i + 1),
            m.vmName || "-",
            m.fromHost || "-",
            m.toHost || "-",
            formatNumber(m.benefit),
            formatGibAmount(m.costGib),
            formatImbalance(m.imbalanceAfter),
            m.reason || "-",
          ]),
        );
  const summary = renderFields([
    ["Goal", rebalanceGoalName(plan.goal)],
    ["Metric", rebalanceMetricName(plan.metric) ?? "-"],
    ["Imbalance", `${formatImbalance(plan.imbalanceBefore)} -> ${formatImbalance(plan.imbalanceAfter)}`],
    ["Moved", `${formatGibAmount(plan.movedGib)} GiB in ${plan.moves.length} move${plan.moves.length === 1 ? "" : "s"}`],
    ["Freed hosts", plan.freedHosts.length > 0 ? plan.freedHosts.join(", ") : "-"],
    ["Note", plan.note || "-"],
  ]);
  return `${moves}\n${summary}`;
}

/** `-o json` for a rebalance plan: the plan's proto JSON, which `rebalance apply --plan FILE` reads back. */
export function rebalancePlanJson(plan: RebalancePlan): string {
  return JSON.stringify(RebalancePlan.toJSON(plan), null, 2) + "\n";
}

/** A short table of migrations just started: VM, FROM, TO, PHASE, ID. */
export function startedMigrationsTable(migrations: readonly Migration[]): string {
  return renderTable(
    ["VM", "FROM", "TO", "PHASE", "ID"],
    migrations.map((m) => [m.vmName || "-", m.sourceHost || "-", migrationTarget(m), migrationPhaseName(m.phase), m.id || "-"]),
  );
}

/** The human answer of `rebalance apply`: the moves started, then those skipped and why. */
export function rebalanceApplyText(response: ApplyRebalanceResponse): string {
  const n = response.migrations.length;
  const parts = [
    n === 0 ? "started no moves\n" : `started ${n} move${n === 1 ? "" : "s"}:\n${startedMigrationsTable(response.migrations)}`,
  ];
  if (response.skipped.length > 0) {
    const lines = response.skipped.map((sk) => {
      const m = sk.move;
      return `  ${m?.vmName || "-"} ${m?.fromHost || "-"} -> ${m?.toHost || "-"}: ${sk.reason || "no reason given"}\n`;
    });
    parts.push(`skipped ${response.skipped.length}:\n${lines.join("")}`);
  }
  if (n === 0 && response.skipped.length === 0 && response.plan?.note) parts.push(`note: ${response.plan.note}\n`);
  return parts.join("");
}

/** `-o json` for `rebalance apply`: the response's proto JSON. */
export function rebalanceApplyJson(response: ApplyRebalanceResponse): string {
  return JSON.stringify(ApplyRebalanceResponse.toJSON(response), null, 2) + "\n";
}

// `-o` views of the other verbs: `data` is the proto JSON the `*Json` printers above print.

/** `group show` / `group create`: one group (a one-row table), named by its name. */
export function groupView(group: Group, nowMs: number): View {
  return { data: () => Group.toJSON(group), table: () => groupTable([group], nowMs), names: () => [group.name] };
}

/** `group list`: the groups as given (sort them first). */
export function groupListView(groups: readonly Group[], nowMs: number): View {
  return { data: () => groups.map((g) => Group.toJSON(g)), table: () => groupTable(groups, nowMs), names: () => groups.map((g) => g.name) };
}

/** `host orphans HOST`: named by VM ID (the orphan's UUID: what `host orphans delete|adopt` take). */
export function orphanListView(orphans: readonly OrphanDomain[]): View {
  return { data: () => orphans.map((o) => OrphanDomain.toJSON(o)), table: () => orphanTable(orphans), names: () => orphans.map((o) => o.vmId) };
}

/** `cluster show`. No names. */
export function clusterView(cluster: GetClusterResponse, nowMs: number, answeredBy: string): View {
  return { data: () => GetClusterResponse.toJSON(cluster), table: () => clusterDetail(cluster, nowMs, answeredBy) };
}

/** `config show` / `config set`. No names. */
export function clusterConfigView(config: ClusterConfig): View {
  return { data: () => ClusterConfig.toJSON(config), table: () => clusterConfigDetail(config) };
}

/** `berth plan`: named by the VMs planned. */
export function planView(plan: PlanPlacementResponse, all: boolean): View {
  return { data: () => PlanPlacementResponse.toJSON(plan), table: () => planText(plan, all), names: () => plan.placements.map((p) => p.vmName) };
}

/** `rebalance plan`: named by the VMs it would move, in plan order. */
export function rebalancePlanView(plan: RebalancePlan): View {
  return { data: () => RebalancePlan.toJSON(plan), table: () => rebalancePlanText(plan), names: () => plan.moves.map((m) => m.vmName) };
}

/** `rebalance apply` (without `--wait`): named by the VMs whose migrations started. */
export function rebalanceApplyView(response: ApplyRebalanceResponse): View {
  return {
    data: () => ApplyRebalanceResponse.toJSON(response),
    table: () => rebalanceApplyText(response),
    names: () => response.migrations.map((m) => m.vmName),
  };
}

/** One migration after a change (`vm migrate`, `migration abort`): a one-row table, named by its VM. */
export function migrationView(m: Migration, nowMs: number): View {
  return { data: () => Migration.toJSON(m), table: () => migrationTable([m], nowMs), names: () => [m.vmName] };
}

/** `migration list`, in the controller's order (in flight first). */
export function migrationListView(migrations: readonly Migration[], nowMs: number): View {
  return {
    data: () => migrations.map((m) => Migration.toJSON(m)),
    table: () => migrationTable(migrations, nowMs),
    names: () => migrations.map((m) => m.vmName),
  };
}

/** `migration show`: the detail. */
export function migrationDetailView(m: Migration, nowMs: number): View {
  return { data: () => Migration.toJSON(m), table: () => migrationDetail(m, nowMs), names: () => [m.vmName] };
}
