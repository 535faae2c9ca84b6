// Parsers of virsh's plain-text outputs (domstats --raw, nodeinfo, capabilities, pool-info, version)
// and libvirt's domain states. Pure functions.
import { DomainState } from "@berth/api";
import { idleStats, type DomainStats, type NumaCell } from "../driver.js";
import { parseAttributes } from "./domain-xml.js";

/** libvirt's virDomainState values, as `domstats` prints them (state.state). */
export const LibvirtState = {
  NoState: 0,
  Running: 1,
  Blocked: 2,
  Paused: 3,
  Shutdown: 4,
  Shutoff: 5,
  Crashed: 6,
  PmSuspended: 7,
} as const;
/** virDomainShutoffReason CRASHED (state.reason when state.state is shut off). */
export const SHUTOFF_REASON_CRASHED = 3;

/**
 * libvirt state (and reason) → DomainState: running, blocked, in shutdown → RUNNING; paused,
 * pmsuspended → PAUSED; shut off → SHUTOFF, or CRASHED when its reason is "crashed"; crashed →
 * CRASHED; no state → UNSPECIFIED.
 */
export function domainStateOf(state: number, reason: number): DomainState {
  switch (state) {
    case LibvirtState.Running:
    case LibvirtState.Blocked:
    case LibvirtState.Shutdown:
      return DomainState.DOMAIN_STATE_RUNNING;
    case LibvirtState.Paused:
    case LibvirtState.PmSuspended:
      return DomainState.DOMAIN_STATE_PAUSED;
    case LibvirtState.Shutoff:
      return reason === SHUTOFF_REASON_CRASHED ? DomainState.DOMAIN_STATE_CRASHED : DomainState.DOMAIN_STATE_SHUTOFF;
    case LibvirtState.Crashed:
      return DomainState.DOMAIN_STATE_CRASHED;
    default:
      return DomainState.DOMAIN_STATE_UNSPECIFIED;
  }
}

/** Whether libvirt counts the domain as active (it has a qemu process): every state but shut off. */
export function isActive(state: number): boolean {
  return state !== LibvirtState.Shutoff;
}

/** One domain's record of `virsh domstats --raw`. */
export interface DomstatsRecord {
  name: string;
  values: Map<string, string>;
}

/** Parses `virsh domstats --raw` output: `Domain: 'name'` headers, then `  key=value` lines. */
export function parseDomstats(text: string): DomstatsRecord[] {
  const records: DomstatsRecord[] = [];
  let current: DomstatsRecord | undefined;
  for (const line of text.split("\n")) {
    const header = /^Domain: '(.*)'\s*$/.exec(line);
    if (header) {
      current = { name: header[1]!, values: new Map() };
      records.push(current);
      continue;
    }
    const kv = /^\s+([^=\s]+)=(.*)$/.exec(line);
    if (kv && current) current.values.set(kv[1]!, kv[2]!.trim());
  }
  return records;
}

function num(values: Map<string, string>, key: string): number | undefined {
  const raw = values.get(key);
  if (raw === undefined) return undefined;
  const n = Number(raw);
  return Number.isFinite(n) ? n : undefined;
}

/** state.state and state.reason of a domstats record (shut off if absent). */
export function stateOfRecord(record: DomstatsRecord): { state: number; reason: number } {
  return { state: num(record.values, "state.state") ?? LibvirtState.Shutoff, reason: num(record.values, "state.reason") ?? 0 };
}

/** Sums `<prefix>.<i>.<field>` over i in 0..`<prefix>.count`-1. */
function sumIndexed(values: Map<string, string>, prefix: string, field: string): number {
  const count = num(values, `${prefix}.count`) ?? 0;
  let total = 0;
  for (let i = 0; i < count; i++) total += num(values, `${prefix}.${i}.${field}`) ?? 0;
  return total;
}

/**
 * Counters from a domstats record: cpu.time; memory used = balloon.rss, else balloon.current (KiB →
 * MiB, capped at `memoryMib` when known, 0 when inactive); block.N.rd.bytes/wr.bytes and
 * net.N.rx.bytes/tx.bytes summed.
 */
export function statsFromRecord(vmId: string, record: DomstatsRecord, memoryMib?: number): DomainStats {
  const { state, reason } = stateOfRecord(record);
  const v = record.values;
  const zero = idleStats(vmId, domainStateOf(state, reason));
  // No process, no counters: libvirt still prints a cpu.time for some inactive domains (even
  // never-started ones), which is not this domain's.
  if (!isActive(state)) return zero;
  let memoryUsedMib = Math.floor((num(v, "balloon.rss") ?? num(v, "balloon.current") ?? 0) / 1024);
  if (memoryMib !== undefined && memoryMib > 0) memoryUsedMib = Math.min(memoryUsedMib, memoryMib);
  return {
    ...zero,
    cpuTimeNs: num(v, "cpu.time") ?? 0,
    memoryUsedMib,
    diskReadBytes: sumIndexed(v, "block", "rd.bytes"),
    diskWriteBytes: sumIndexed(v, "block", "wr.bytes"),
    netRxBytes: sumIndexed(v, "net", "rx.bytes"),
    netTxBytes: sumIndexed(v, "net", "tx.bytes"),
  };
}

/** `virsh nodeinfo`: CPU model, logical CPUs, memory (KiB). */
export interface NodeInfo {
  cpuModel: string;
  cpus: number;
  memoryKib: number;
}

export function parseNodeinfo(text: string): NodeInfo | undefined {
  const field = (label: string): string | undefined => new RegExp(`^${label}:\\s*(.*)$`, "m").exec(text)?.[1]?.trim();
  const cpus = Number(field("CPU\\(s\\)"));
  const memory = /^Memory size:\s*(\d+)\s*KiB/m.exec(text)?.[1];
  if (!Number.isSafeInteger(cpus) || memory === undefined) return undefined;
  return { cpuModel: field("CPU model") ?? "unknown", cpus, memoryKib: Number(memory) };
}

/** `total` of `virsh nodememstats` (the host's MemTotal), in KiB; undefined when absent. */
export function parseNodeMemTotalKib(text: string): number | undefined {
  const total = /^total\s*:\s*(\d+)\s*KiB/m.exec(text)?.[1];
  return total === undefined ? undefined : Number(total);
}

/** NUMA cells of `virsh capabilities` (host topology); empty when absent. */
export function parseNumaCells(capabilities: string): NumaCell[] {
  const cells: NumaCell[] = [];
  for (const m of capabilities.matchAll(/<cell\b([^>]*)>([\s\S]*?)<\/cell>/g)) {
    const id = Number(parseAttributes(m[1] ?? "").get("id"));
    const body = m[2] ?? "";
    const memory = /<memory\b[^>]*>\s*(\d+)\s*<\/memory>/.exec(body);
    const cpus = /<cpus\b([^>]*)>/.exec(body);
    if (!Number.isSafeInteger(id)) continue;
    cells.push({
      id,
      cpus: Number(parseAttributes(cpus?.[1] ?? "").get("num") ?? "0"),
      memoryMib: memory ? Math.floor(Number(memory[1]) / 1024) : 0,
    });
  }
  return cells.sort((a, b) => a.id - b.id);
}

/** The host CPU as `virsh capabilities` names it ("AMD EPYC-Milan"), or undefined. */
export function parseHostCpuModel(capabilities: string): string | undefined {
  const cpu = /<host>[\s\S]*?<cpu>([\s\S]*?)<\/cpu>/.exec(capabilities)?.[1];
  if (!cpu) return undefined;
  const model = /<model\b[^>]*>([^<]+)<\/model>/.exec(cpu)?.[1]?.trim();
  const vendor = /<vendor>([^<]+)<\/vendor>/.exec(cpu)?.[1]?.trim();
  if (!model) return undefined;
  return vendor ? `${vendor} ${model}` : model;
}

/** `virsh pool-info --bytes`: capacity in bytes, and whether the pool is running. */
export function parsePoolInfo(text: string): { capacityBytes: number; running: boolean } | undefined {
  const capacity = /^Capacity:\s*(\d+)/m.exec(text)?.[1];
  if (capacity === undefined) return undefined;
  return { capacityBytes: Number(capacity), running: /^State:\s*running/m.test(text) };
}

/** `virsh version` → "QEMU 7.2.22, libvirt 9.0.0" (the daemon's version when it says, else the library's). */
export function parseVersion(text: string): string {
  const hypervisor = /^Running hypervisor:\s*(.+)$/m.exec(text)?.[1]?.trim();
  const daemon = /^Running against daemon:\s*(.+)$/m.exec(text)?.[1]?.trim();
  const library = /^Using library:\s*libvirt\s*(.+)$/m.exec(text)?.[1]?.trim();
  const libvirt = daemon ?? library;
  return [hypervisor, libvirt ? `libvirt ${libvirt}` : undefined].filter(Boolean).join(", ") || "libvirt";
}

// ---- networks, addresses, volumes, images ---------------------------------------------------------

/** A libvirt network as `virsh net-list --all` lists it. */
export interface ListedNetwork {
  name: string;
  active: boolean;
}

/**
 * `virsh -q net-list --all`: ` name  active|inactive  autostart  persistent` rows (the header and
 * its rule, printed without -q, are skipped). Names with spaces are not supported by this format
 * and are skipped.
 */
export function parseNetList(text: string): ListedNetwork[] {
  const networks: ListedNetwork[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*(\S+)\s+(active|inactive)\s+(?:yes|no)\s+(?:yes|no)\s*$/.exec(line);
    if (m) networks.push({ name: m[1]!, active: m[2] === "active" });
  }
  return networks;
}

const MAC_RE = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/i;

/** Whether `mac` is six colon-separated hex octets. */
export function isMacAddress(mac: string): boolean {
  return MAC_RE.test(mac);
}

/**
 * `virsh net-dhcp-leases <network>`: MAC (lower case) → the addresses leased to it, without their
 * prefix length, in the order listed. Rows are `expiry-date expiry-time mac protocol ip/prefix
 * hostname client-id`; the header and its rule are skipped.
 */
export function parseDhcpLeases(text: string): Map<string, string[]> {
  const leases = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const fields = line.trim().split(/\s+/);
    const macAt = fields.findIndex((f) => MAC_RE.test(f));
    if (macAt < 0) continue;
    const protocol = fields[macAt + 1];
    const address = fields[macAt + 2]?.replace(/\/\d+$/, "");
    if ((protocol !== "ipv4" && protocol !== "ipv6") || !address) continue;
    const mac = fields[macAt]!.toLowerCase();
    const list = leases.get(mac) ?? [];
    if (!list.includes(address)) list.push(address);
    leases.set(mac, list);
  }
  return leases;
}

/** One complete entry of the host's neighbour table. */
export interface ArpEntry {
  ip: string;
  mac: string;
  /** The host interface it was learnt on (for a VM on a bridge: the bridge). */
  device: string;
}

/**
 * `/proc/net/arp`: `IP address  HW type  Flags  HW address  Mask  Device`. Incomplete entries
 * (flags 0x0, or an all-zero MAC) are skipped; MACs in lower case.
 */
export function parseProcNetArp(text: string): ArpEntry[] {
  const entries: ArpEntry[] = [];
  for (const line of text.split("\n").slice(1)) {
    const [ip, , flags, mac, , device] = line.trim().split(/\s+/);
    if (!ip || !flags || !mac || !device || !MAC_RE.test(mac)) continue;
    if (Number(flags) === 0 || mac === "00:00:00:00:00:00") continue;
    entries.push({ ip, mac: mac.toLowerCase(), device });
  }
  return entries;
}

/** `virsh -q vol-list <pool>`: the volumes' names (the first column; `name  path` rows). */
export function parseVolList(text: string): string[] {
  const names: string[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*(\S+)\s+\//.exec(line) ?? /^\s*(\S+)\s*$/.exec(line);
    if (m && !/^-+$/.test(m[1]!) && m[1] !== "Name") names.push(m[1]!);
  }
  return names;
}

/** What Berth reads of `virsh vol-dumpxml`: sizes in bytes, the format libvirt probed, the backing file. */
export interface VolumeInfo {
  name: string;
  /** The virtual size (what a guest sees). */
  capacityBytes: number;
  /** What the volume takes in the pool. */
  allocationBytes: number;
  /** `qcow2`, `raw`, `iso`...; "" when not said. */
  format: string;
  /** The path of the backing file (qcow2 overlays); undefined when none. */
  backingPath: string | undefined;
}

const bytesOf = (xml: string, tag: string): number => {
  const m = new RegExp(`<${tag}\\b([^>]*)>\\s*(\\d+)\\s*</${tag}>`).exec(xml);
  if (!m) return 0;
  const unit = (parseAttributes(m[1] ?? "").get("unit") ?? "bytes").toLowerCase();
  return Number(m[2]) * (UNIT_SCALE[unit] ?? 1);
};
const UNIT_SCALE: Record<string, number> = { b: 1, bytes: 1, k: 1024, kib: 1024, m: 2 ** 20, mib: 2 ** 20, g: 2 ** 30, gib: 2 ** 30, t: 2 ** 40, tib: 2 ** 40 };

/** Parses one `<volume>` document; undefined if it is not one. */
export function parseVolumeXml(xml: string): VolumeInfo | undefined {
  const name = /<volume\b[^>]*>\s*<name>([^<]*)<\/name>/.exec(xml)?.[1];
  if (name === undefined) return undefined;
  const backing = /<backingStore>([\s\S]*?)<\/backingStore>/.exec(xml)?.[1];
  const target = /<target>([\s\S]*?)<\/target>/.exec(xml)?.[1] ?? "";
  const format = /<format\b([^>]*)\/?>/.exec(target);
  return {
    name,
    capacityBytes: bytesOf(xml, "capacity"),
    allocationBytes: bytesOf(xml, "allocation"),
    format: format ? (parseAttributes(format[1] ?? "").get("type") ?? "") : "",
    backingPath: backing === undefined ? undefined : /<path>([^<]+)<\/path>/.exec(backing)?.[1],
  };
}

/** What Berth needs of `qemu-img info --output=json`. */
export interface ImageFileInfo {
  format: string;
  virtualSizeBytes: number;
  /** The backing file named in the image's header; undefined when none. */
  backingFile: string | undefined;
  /** A qcow2 external data file (`data-file`): its name, undefined when none. */
  dataFile: string | undefined;
}

/** Parses `qemu-img info --output=json`; undefined when it is not that. */
export function parseQemuImgInfo(json: string): ImageFileInfo | undefined {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const info = value as Record<string, unknown>;
  const size = info["virtual-size"];
  if (typeof info["format"] !== "string" || typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) return undefined;
  const specific = (info["format-specific"] as { data?: Record<string, unknown> } | undefined)?.data;
  const dataFile = specific?.["data-file"];
  const backing = info["backing-filename"] ?? info["full-backing-filename"];
  return {
    format: info["format"],
    virtualSizeBytes: size,
    backingFile: typeof backing === "string" ? backing : undefined,
    dataFile: typeof dataFile === "string" ? dataFile : undefined,
  };
}
