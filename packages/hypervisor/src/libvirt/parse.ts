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
