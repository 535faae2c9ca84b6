import type { Resources, VmSpec } from "@berth/api";
import { BerthError, Limits, parseSizeGib, parseSizeMib, validateVmSpec } from "@berth/core";
import { usageError } from "./exit-codes.js";

// Parsers of local input: each names the flag at fault and throws a usage error (exit code 2), so
// bad input never reaches the controller.

/** Re-throws a core INVALID_ARGUMENT (whose message starts with the flag) as a usage error. */
function asUsage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof BerthError) throw usageError(e.message);
    throw e;
  }
}

/** A whole number in [min, max]. */
export function parseInteger(text: string, flag: string, min: number, max: number): number {
  if (!/^\s*\d+\s*$/.test(text)) throw usageError(`${flag}: '${text}' is not a whole number`);
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw usageError(`${flag}: must be from ${min} to ${max} (got ${text.trim()})`);
  }
  return n;
}

/** `--vcpus N`: 1 up to the largest VM Berth accepts. */
export const parseVcpus = (text: string, flag = "--vcpus"): number => parseInteger(text, flag, 1, Limits.maxVcpus);

/** `--memory SIZE` in MiB: `512MiB`, `4GiB`, `4G`; a bare number is MiB. */
export const parseMemoryMib = (text: string, flag = "--memory"): number => asUsage(() => parseSizeMib(text, flag, "MiB"));

/** `--disk SIZE` in GiB: `20GiB`, `1TiB`; a bare number is GiB. */
export const parseDiskGib = (text: string, flag = "--disk"): number => asUsage(() => parseSizeGib(text, flag));

/** A positive number of seconds (`10`, `0.5`), returned in milliseconds. */
export function parseSecondsMs(text: string, flag: string): number {
  if (!/^\s*\d+(\.\d+)?\s*$/.test(text)) throw usageError(`${flag}: '${text}' is not a number of seconds`);
  const ms = Math.round(Number(text) * 1000);
  if (ms <= 0) throw usageError(`${flag}: must be more than 0 seconds`);
  if (ms > 24 * 3600 * 1000) throw usageError(`${flag}: must be at most one day (86400 seconds)`);
  return ms;
}

/** `--label k=v`, repeated: the labels as a map (a later key wins). */
export function parseLabels(items: readonly string[], flag = "--label"): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf("=");
    if (eq <= 0) throw usageError(`${flag}: '${item}' must be KEY=VALUE`);
    labels[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return labels;
}

/** Splits `host:port` (or `[v6]:port`) and checks the port. */
export function parseHostPort(text: string, flag: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw usageError(`${flag}: '${text}' is not HOST:PORT (example: 127.0.0.1:7400)`);
  return { host: m[1] ?? "", port };
}

/** A comma-separated list of `HOST:PORT` controller addresses. */
export function parseEndpoints(text: string, flag: string): string[] {
  const endpoints = text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (endpoints.length === 0) throw usageError(`${flag}: no address given (example: 127.0.0.1:7400)`);
  for (const e of endpoints) parseHostPort(e, flag);
  return [...new Set(endpoints)];
}

/** A comma-separated list of etcd URLs (`http://127.0.0.1:2379`). */
export function parseEtcdUrls(text: string, flag = "--etcd"): string[] {
  const urls = text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (urls.length === 0) throw usageError(`${flag}: no URL given (example: http://127.0.0.1:2379)`);
  for (const u of urls) {
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      throw usageError(`${flag}: '${u}' is not a URL (example: http://127.0.0.1:2379)`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw usageError(`${flag}: '${u}' must be an http:// or https:// URL`);
    }
  }
  return urls;
}

/**
 * `vcpus=16,memory=64GiB,disk=1TiB`: any of the three keys, in any order. Memory takes MiB when
 * bare, disk GiB. Returns only the keys given.
 */
export function parseCapacity(text: string, flag = "--capacity"): Partial<Resources> {
  const capacity: Partial<Resources> = {};
  const parts = text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (parts.length === 0) throw usageError(`${flag}: empty (example: vcpus=16,memory=64GiB,disk=1TiB)`);
  for (const part of parts) {
    const eq = part.indexOf("=");
    const key = eq < 0 ? part : part.slice(0, eq).trim();
    const value = eq < 0 ? "" : part.slice(eq + 1).trim();
    if (eq < 0 || value === "") throw usageError(`${flag}: '${part}' must be KEY=VALUE (keys: vcpus, memory, disk)`);
    switch (key) {
      case "vcpus":
        capacity.vcpus = parseInteger(value, `${flag} vcpus`, 1, 1 << 20);
        break;
      case "memory":
        capacity.memoryMib = parseMemoryMib(value, `${flag} memory`);
        if (capacity.memoryMib < 1) throw usageError(`${flag} memory: must be more than 0`);
        break;
      case "disk":
        capacity.diskGib = parseDiskGib(value, `${flag} disk`);
        break;
      default:
        throw usageError(`${flag}: unknown key '${key}' (keys: vcpus, memory, disk)`);
    }
  }
  return capacity;
}

/** Where each VmSpec field comes from on the `vm create` command line. */
const FLAG_OF_SPEC_FIELD: ReadonlyArray<readonly [string, string]> = [
  ["spec.name", "NAME"],
  ["spec.resources.vcpus", "--vcpus"],
  ["spec.resources.memory_mib", "--memory"],
  ["spec.resources.disk_gib", "--disk"],
  ["spec.labels", "--label"],
];

/**
 * Checks a spec built from flags with core's validation (the controller's rules), and reports a
 * failure against the flag rather than the proto field: `--memory: must be a whole number from 16...`.
 */
export function validateSpecFromFlags(spec: VmSpec): void {
  try {
    validateVmSpec(spec);
  } catch (e) {
    if (!(e instanceof BerthError) || e.field === undefined) throw e;
    const field = e.field;
    const rule = e.message.startsWith(`${field}: `) ? e.message.slice(field.length + 2) : e.message;
    const match = FLAG_OF_SPEC_FIELD.find(([prefix]) => field === prefix || field.startsWith(`${prefix}[`));
    if (!match) throw usageError(e.message);
    const [prefix, flag] = match;
    const key = field.slice(prefix.length); // `[key]` for a label
    throw usageError(`${flag}${key ? ` ${key.slice(1, -1)}` : ""}: ${rule}`);
  }
}
