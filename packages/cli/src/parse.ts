import type { Resources, VmSpec } from "@berth/api";
import {
  BerthError,
  Limits,
  parseCapacity as coreParseCapacity,
  parseEtcdEndpoints,
  parseHostPort as coreParseHostPort,
  parseHostPortList,
  parseLabelAssignments,
  parseSizeGib,
  parseSizeMib,
  validateVmSpec,
} from "@berth/core";
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

/** Repeated `KEY=VALUE` labels. */
export function parseLabels(items: readonly string[], flag = "--label"): Record<string, string> {
  return asUsage(() => parseLabelAssignments(items, flag));
}

/** Splits `host:port` (or `[v6]:port`) and checks the port. */
export function parseHostPort(text: string, flag: string): { host: string; port: number } {
  return asUsage(() => coreParseHostPort(text, flag));
}

/** A comma-separated list of `HOST:PORT` controller addresses. */
export function parseEndpoints(text: string, flag: string): string[] {
  return asUsage(() => parseHostPortList(text, flag));
}

/** A comma-separated list of etcd URLs (`http://127.0.0.1:2379`). */
export function parseEtcdUrls(text: string, flag = "--etcd"): string[] {
  return asUsage(() => parseEtcdEndpoints(text, flag));
}

/** `vcpus=16,memory=64GiB,disk=1TiB`: any of the three keys; returns only the keys given. */
export function parseCapacity(text: string, flag = "--capacity"): Partial<Resources> {
  return asUsage(() => coreParseCapacity(text, flag));
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
