import type { Image, Resources, VmSpec, Volume } from "@berth/api";
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
  quote,
  validateImage,
  validateName,
  validateVmSpec,
  validateVolume,
} from "@berth/core";
import parseDurationText from "parse-duration";
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

/**
 * `--memory SIZE` in MiB: `512MiB`, `4GiB`, `4Gi` (binary), `4GB` (decimal: 10⁹ bytes); a bare
 * number is MiB; a lone `4G` is refused as ambiguous. Core's one size parser.
 */
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

/**
 * One number-and-unit term of a duration (`10m`, `1.5h`, `90 s`). parse-duration reads the units;
 * this shape check is what it does not do: it skips what it cannot read (`10m later` is 10 minutes)
 * and takes a bare number as milliseconds, both too easy to get wrong on a command line.
 */
const DURATION_TERM = String.raw`\d+(?:\.\d+)?\s*[a-zA-Z]+`;
const DURATION_SHAPE = new RegExp(String.raw`^\s*${DURATION_TERM}(?:\s*${DURATION_TERM})*\s*$`);

/**
 * A duration with units (`10m`, `90s`, `1h30m`, `2d`), returned in milliseconds, from more than 0
 * up to `maxMs`. Every number needs a unit: a bare `600` is refused rather than guessed at.
 */
export function parseDurationMs(text: string, flag: string, maxMs: number): number {
  const example = "e.g. 90s, 10m, 1h30m";
  if (!DURATION_SHAPE.test(text)) {
    throw usageError(
      /^\s*\d+(\.\d+)?\s*$/.test(text)
        ? `${flag}: '${text.trim()}' needs a unit (${example})`
        : `${flag}: '${text}' is not a duration (${example})`,
    );
  }
  // Each term on its own: parse-duration adds up the terms it knows and drops the others.
  let ms = 0;
  for (const [term] of text.matchAll(new RegExp(DURATION_TERM, "g"))) {
    const termMs = parseDurationText(term);
    if (termMs === null || !Number.isFinite(termMs)) {
      throw usageError(`${flag}: '${term}' has an unknown unit (use ms, s, m, h, d or w; ${example})`);
    }
    ms += termMs;
  }
  const rounded = Math.round(ms);
  if (rounded <= 0) throw usageError(`${flag}: must be more than 0`);
  if (rounded > maxMs) throw usageError(`${flag}: must be at most ${formatLimit(maxMs)} (got ${text.trim()})`);
  return rounded;
}

/** A limit of {@link parseDurationMs} as people say it: `7 days`, `24 hours`. */
function formatLimit(ms: number): string {
  const units: [number, string][] = [
    [86_400_000, "day"],
    [3_600_000, "hour"],
    [60_000, "minute"],
    [1000, "second"],
  ];
  for (const [size, name] of units) {
    if (ms % size === 0) {
      const n = ms / size;
      return `${n} ${name}${n === 1 ? "" : "s"}`;
    }
  }
  return `${ms} ms`;
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

/** The most VMs one `--count` asks for (CreateVms / PlanPlacement take at most this many specs). */
export const MAX_COUNT = Limits.maxGangSize;

/** `--count N`: how many VMs, 1 to {@link MAX_COUNT}. */
export const parseCount = (text: string, flag = "--count"): number => parseInteger(text, flag, 1, MAX_COUNT);

/** A name argument (VM, group): a DNS label, reported against `what` (`NAME`). */
export function parseName(text: string, what = "NAME"): string {
  asUsage(() => validateName(text, what));
  return text;
}

/**
 * Repeated `--forbid-host-label` items: `KEY=VALUE` forbids that pair, a bare `KEY` forbids the key
 * itself (sent as the value `*`).
 */
export function parseForbiddenHostLabels(items: readonly string[], flag = "--forbid-host-label"): Record<string, string> {
  return parseLabels(
    items.map((item) => (item.includes("=") || item.trim() === "" ? item : `${item}=*`)),
    flag,
  );
}

/** Repeated, comma-separated `--pin HOST[,HOST...]`: the hosts in order, each once. */
export function parseHostList(items: readonly string[], flag = "--pin"): string[] {
  const hosts: string[] = [];
  for (const item of items) {
    const parts = item.split(",").map((s) => s.trim());
    if (parts.some((p) => p === "")) throw usageError(`${flag}: '${item}' has an empty host name`);
    for (const h of parts) {
      asUsage(() => validateName(h, flag));
      if (!hosts.includes(h)) hosts.push(h);
    }
  }
  return hosts;
}

/** A decimal number of at least 0 (`1.5`, `4`), e.g. an allocation ratio. */
export function parseDecimal(text: string, flag: string): number {
  if (!/^\s*\d+(\.\d+)?\s*$/.test(text)) throw usageError(`${flag}: '${text}' is not a number (e.g. 1.5)`);
  const n = Number(text);
  if (!Number.isFinite(n)) throw usageError(`${flag}: '${text}' is too large`);
  return n;
}

/**
 * Repeated `NAME=VALUE` weigher weights (`mostAllocated=2`, `balanced=-0.5`). An empty value
 * (`NAME=`) yields `undefined`: drop that override.
 */
export function parseWeights(items: readonly string[], flag = "--weight"): Map<string, number | undefined> {
  const weights = new Map<string, number | undefined>();
  for (const item of items) {
    const eq = item.indexOf("=");
    const name = eq < 0 ? "" : item.slice(0, eq).trim();
    if (eq <= 0 || !/^[A-Za-z][A-Za-z0-9_.-]{0,62}$/.test(name)) {
      throw usageError(`${flag}: '${item}' must be NAME=VALUE with a weigher name (e.g. mostAllocated=2)`);
    }
    const value = item.slice(eq + 1).trim();
    if (value === "") {
      weights.set(name, undefined);
      continue;
    }
    if (!/^-?\d+(\.\d+)?$/.test(value) || !Number.isFinite(Number(value))) {
      throw usageError(`${flag} ${name}: '${value}' is not a number`);
    }
    weights.set(name, Number(value));
  }
  return weights;
}

/** Where each VmSpec field comes from on the `vm create` / `plan` command line. */
const FLAG_OF_SPEC_FIELD: ReadonlyArray<readonly [string, string]> = [
  ["spec.name", "NAME"],
  ["spec.resources.vcpus", "--vcpus"],
  ["spec.resources.memory_mib", "--memory"],
  ["spec.resources.disk_gib", "--disk"],
  ["spec.labels", "--label"],
  ["spec.group", "--group"],
  ["spec.required_host_labels", "--require-host-label"],
  ["spec.forbidden_host_labels", "--forbid-host-label"],
  ["spec.pinned_hosts", "--pin"],
  ["spec.image", "--image"],
  ["spec.networks", "--network"],
  ["spec.cloud_init.ssh_authorized_keys", "--ssh-key"],
  ["spec.cloud_init.user_data", "--user-data"],
  ["spec.volumes", "--volume"],
];

/** Repeatable flags whose fields are lists: an error names the one at fault by its place, `--network #2`. */
const LIST_FLAGS: ReadonlySet<string> = new Set(["--network", "--ssh-key", "--volume"]);

/**
 * A spec field's error (core's INVALID_ARGUMENT naming `spec.…`) told against the `vm create` /
 * `plan` flag it came from: `--memory: must be ...`, `--label tier: ...`, `--network #2: ...` (the
 * second `--network` given); the message as it is for a field no flag sets.
 */
export function specErrorAgainstFlags(e: BerthError & { field: string }): string {
  const field = e.field;
  const rule = e.message.startsWith(`${field}: `) ? e.message.slice(field.length + 2) : e.message;
  const match = FLAG_OF_SPEC_FIELD.find(([prefix]) => field === prefix || field.startsWith(`${prefix}[`));
  if (!match) return e.message;
  const [prefix, flag] = match;
  const key = field.slice(prefix.length); // `[key]` for a label, `[i]` for a pinned host, a NIC...
  if (flag === "--pin") return `${flag}: ${rule}`;
  const index = /^\[(\d+)\]$/.exec(key)?.[1];
  if (LIST_FLAGS.has(flag) && index !== undefined) return `${flag} #${Number(index) + 1}: ${rule}`;
  return `${flag}${key ? ` ${key.slice(1, -1)}` : ""}: ${rule}`;
}

/**
 * Checks a spec built from flags with core's validation (the controller's rules), and reports a
 * failure against the flag rather than the proto field ({@link specErrorAgainstFlags}).
 */
export function validateSpecFromFlags(spec: VmSpec): void {
  try {
    validateVmSpec(spec);
  } catch (e) {
    if (!(e instanceof BerthError) || e.field === undefined) throw e;
    throw usageError(specErrorAgainstFlags(e as BerthError & { field: string }));
  }
}

/**
 * Runs a core validation and re-throws its INVALID_ARGUMENT as a usage error told against the flag
 * that set the field (`image.source` is `--source`); a field not in `flagOfField` keeps its name.
 */
function checkNaming(check: () => void, flagOfField: Readonly<Record<string, string>>): void {
  try {
    check();
  } catch (e) {
    if (!(e instanceof BerthError) || e.field === undefined) throw e;
    const flag = flagOfField[e.field];
    throw usageError(flag && e.message.startsWith(`${e.field}: `) ? `${flag}: ${e.message.slice(e.field.length + 2)}` : e.message);
  }
}

/**
 * `image create`'s flags as the Image CreateImage takes, checked with core's `validateImage` (the
 * controller's rule: an http(s):// or file:// URL or an absolute path, qcow2 or raw, a SHA-256)
 * and told against the flags. A relative `--source` (`./jammy.img`, `~/jammy.img`) is refused
 * with the reason rather than made absolute here: every host reads the source itself, and a path
 * resolved on this machine names a file the hosts cannot see. `--sha256` may be upper-case or
 * carry a `sha256:` prefix.
 */
export function imageFromFlags(name: string, flags: { source: string; format?: string; sha256?: string }): Image {
  const source = flags.source.trim();
  if (source !== "" && !source.startsWith("/") && !/^[A-Za-z][A-Za-z0-9+.-]*:/.test(source)) {
    throw usageError(
      `--source: ${quote(source)} is a relative path, but each host reads the source itself: give an absolute path every host can read ` +
        `(a shared mount, e.g. /srv/images/${quote(source.split("/").pop() || "image.qcow2", 40)}) or an http(s):// URL`,
    );
  }
  const image: Image = {
    id: "",
    name,
    source,
    format: flags.format ?? "qcow2",
    sha256: flags.sha256 === undefined ? "" : flags.sha256.trim().replace(/^sha256:/i, "").toLowerCase(),
    createdAtMs: 0,
  };
  checkNaming(() => validateImage(image), { "image.name": "NAME", "image.source": "--source", "image.format": "--format", "image.sha256": "--sha256" });
  return image;
}

/**
 * `volume create`'s flags as the Volume CreateVolume takes: `--size` in whole GiB through the
 * `--disk` parser (`10GiB`, `1TiB`, a bare number is GiB, rounded up), checked with core's
 * `validateVolume` (1 GiB or more; a host id) and told against the flags.
 */
export function volumeFromFlags(name: string, flags: { size: string; host?: string }): Volume {
  const volume: Volume = {
    id: "",
    name,
    sizeGib: parseDiskGib(flags.size, "--size"),
    hostId: flags.host ?? "",
    attachedTo: "",
    createdAtMs: 0,
    deleting: false,
    generation: 0,
  };
  checkNaming(() => validateVolume(volume), { "volume.name": "NAME", "volume.size_gib": "--size", "volume.host_id": "--host" });
  return volume;
}
