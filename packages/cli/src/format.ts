import {
  desiredStateToJSON,
  Host,
  hostStateToJSON,
  Vm,
  vmPhaseToJSON,
  type DesiredState,
  type HostState,
  type Resources,
  type VmPhase,
} from "@berth/api";
import { formatMib } from "@berth/core";

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

/** `Key:  value` lines with the values aligned. Ends with a newline. */
export function renderFields(fields: readonly (readonly [string, string])[]): string {
  const width = Math.max(...fields.map(([k]) => k.length + 1));
  return fields.map(([k, v]) => `${`${k}:`.padEnd(width)}  ${v}`.trimEnd()).join("\n") + "\n";
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

/** `READY`, `DISCONNECTED`, with `,CORDONED` for a cordoned host. */
export function hostStateName(state: HostState, cordoned = false): string {
  const name = enumName(() => hostStateToJSON(state), "HOST_STATE_", state);
  const base = name === "UNSPECIFIED" ? "-" : name;
  return cordoned ? `${base},CORDONED` : base;
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

/** The `vm show` detail. */
export function vmDetail(vm: Vm, nowMs: number): string {
  const status = vm.status;
  const fields: [string, string][] = [
    ["Name", vm.spec?.name ?? "-"],
    ["ID", vm.id || "-"],
    ["Phase", phaseName(status?.phase ?? 0)],
    ["Desired", desiredName(vm.desiredState)],
    ["Host", vm.hostId || "-"],
    ["Resources", formatResourcesHuman(vm.spec?.resources)],
    ["Labels", formatLabels(vm.spec?.labels)],
    ["Generation", `${vm.generation} (observed ${status?.observedGeneration ?? 0})`],
    ["Message", status?.message || "-"],
    ["Updated", status && status.updatedAtMs > 0 ? `${formatAge(status.updatedAtMs, nowMs)} ago` : "-"],
    ["Created", vm.createdAtMs > 0 ? `${formatAge(vm.createdAtMs, nowMs)} ago` : "-"],
  ];
  return renderFields(fields);
}

/** `4 GiB / 64 GiB` style usage of capacity (`0 / 64 GiB` when nothing is used). */
function usageOf(used: number | undefined, capacity: number | undefined, format: (n: number) => string): string {
  if (capacity === undefined) return "-";
  return `${used ? format(used) : "0"} / ${format(capacity)}`;
}

/** The `host list` table. Usage is what the host's VMs use, as last reported. */
export function hostTable(hosts: readonly Host[], nowMs: number): string {
  const rows = hosts.map((h) => [
    h.id,
    hostStateName(h.state, h.cordoned),
    usageOf(h.allocated?.vcpus, h.capacity?.vcpus, String) + (h.capacity ? " vCPU" : ""),
    usageOf(h.allocated?.memoryMib, h.capacity?.memoryMib, formatMib),
    usageOf(h.allocated?.diskGib, h.capacity?.diskGib, formatGib),
    h.driver || "-",
    formatAge(h.lastSeenMs, nowMs),
  ]);
  return renderTable(["ID", "STATE", "ALLOC VCPUS", "ALLOC MEMORY", "ALLOC DISK", "DRIVER", "LAST SEEN"], rows);
}

/** The `host show` detail. */
export function hostDetail(host: Host, nowMs: number): string {
  return renderFields([
    ["ID", host.id],
    ["State", hostStateName(host.state, host.cordoned)],
    ["Capacity", formatResourcesHuman(host.capacity)],
    ["Allocated", formatResourcesHuman(host.allocated)],
    ["In use", formatResourcesHuman(host.usage)],
    ["Labels", formatLabels(host.labels)],
    ["Driver", host.driver || "-"],
    ["Agent", host.agentVersion || "-"],
    ["Boot ID", host.bootId || "-"],
    ["Last seen", host.lastSeenMs > 0 ? `${formatAge(host.lastSeenMs, nowMs)} ago` : "-"],
  ]);
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
