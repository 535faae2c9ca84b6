import prettyBytes from "pretty-bytes";
import type { Resources } from "@berth/api";
import { invalidArgument } from "./errors.js";

/** The resource dimensions Berth places, in a fixed order (the order of the proto fields). */
export const RESOURCE_NAMES = ["vcpus", "memoryMib", "diskGib"] as const;
export type ResourceName = (typeof RESOURCE_NAMES)[number];

/** Proto field names, for messages that name a field. */
export const RESOURCE_FIELD: Record<ResourceName, string> = {
  vcpus: "vcpus",
  memoryMib: "memory_mib",
  diskGib: "disk_gib",
};

export const RESOURCE_UNIT: Record<ResourceName, string> = {
  vcpus: "vCPU",
  memoryMib: "MiB",
  diskGib: "GiB",
};

export const ZERO: Readonly<Resources> = Object.freeze({ vcpus: 0, memoryMib: 0, diskGib: 0 });

export function resources(vcpus: number, memoryMib: number, diskGib: number): Resources {
  return { vcpus, memoryMib, diskGib };
}

export function addResources(a: Resources, b: Resources): Resources {
  return { vcpus: a.vcpus + b.vcpus, memoryMib: a.memoryMib + b.memoryMib, diskGib: a.diskGib + b.diskGib };
}

export function subtractResources(a: Resources, b: Resources): Resources {
  return { vcpus: a.vcpus - b.vcpus, memoryMib: a.memoryMib - b.memoryMib, diskGib: a.diskGib - b.diskGib };
}

export function sumResources(items: Iterable<Resources>): Resources {
  let total: Resources = { ...ZERO };
  for (const r of items) total = addResources(total, r);
  return total;
}

/** True when `need` fits in `free` on every dimension. */
export function fitsIn(need: Resources, free: Resources): boolean {
  return RESOURCE_NAMES.every((k) => need[k] <= free[k]);
}

/**
 * The one way Berth prints a size to people: binary units, at most one decimal (truncated, so a
 * size never reads larger than it is), a space: `0 B`, `512 MiB`, `13.3 GiB`, `2 TiB`.
 * pretty-bytes does the scaling; the CLI's tables, the events, the scheduler's summaries and the
 * dashboard all go through here. (A filter's per-field reasons keep exact figures in the field's
 * own unit, `memory_mib: needs 4096 MiB`, as the API field they name.)
 */
export function formatBytes(bytes: number): string {
  return prettyBytes(Math.max(0, bytes), { binary: true, maximumFractionDigits: 1 });
}

/** A size given in MiB (memory), as {@link formatBytes} prints it: `512 MiB`, `1.5 GiB`. */
export const formatMib = (mib: number): string => formatBytes(mib * 2 ** 20);

/** A size given in GiB (disk), as {@link formatBytes} prints it: `20 GiB`, `1 TiB`. */
export const formatGib = (gib: number): string => formatBytes(gib * 2 ** 30);

/** `2 vCPU` */
export const formatVcpus = (vcpus: number): string => `${vcpus} vCPU`;

/** `2 vCPU, 4 GiB memory, 20 GiB disk` */
export function formatResources(r: Resources): string {
  return `${formatVcpus(r.vcpus)}, ${formatMib(r.memoryMib)} memory, ${formatGib(r.diskGib)} disk`;
}

/** One MiB in bytes. */
const MIB = 2 ** 20;

/**
 * The size units Berth reads, in bytes, keyed by their lower-case spelling (units are read without
 * regard to case). kubectl's convention: a unit with an `i` is binary (`Gi`, `GiB`: 1024³ bytes),
 * one without is decimal (`GB`: 10⁹ bytes). A lone letter (`4G`) is refused as ambiguous: Berth
 * once read it as binary, kubectl reads it as decimal.
 */
const SIZE_UNITS: Readonly<Record<string, number>> = {
  b: 1,
  ki: 2 ** 10, kib: 2 ** 10,
  mi: 2 ** 20, mib: 2 ** 20,
  gi: 2 ** 30, gib: 2 ** 30,
  ti: 2 ** 40, tib: 2 ** 40,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
};

/** The accepted spellings, for messages. */
export const SIZE_UNITS_HELP = "binary: Ki/KiB, Mi/MiB, Gi/GiB, Ti/TiB; decimal: kB, MB, GB, TB; or B";

/**
 * Parses a size with a unit (`512MiB`, `4Gi`, `1.5TiB`, `20GB`) into MiB, rounding up to a whole
 * MiB. A bare number is taken in `defaultUnit` (`MiB`, `GiB`). Binary units carry an `i` (`Gi`,
 * `GiB`: 1024³ bytes), decimal ones do not (`GB`: 10⁹ bytes), case aside; a lone `K`/`M`/`G`/`T`
 * is ambiguous and refused with the spellings to use. Throws INVALID_ARGUMENT naming `field`. The
 * one size parser: CLI flags, agent flags (`--capacity`, `--reserve`) and config all use it.
 */
export function parseSizeMib(text: string, field: string, defaultUnit = "MiB"): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) throw invalidArgument(field, `'${text}' is not a size (examples: 512MiB, 4GiB, 1TiB; ${SIZE_UNITS_HELP})`);
  const unit = (m[2] || defaultUnit).toLowerCase();
  if (/^[kmgt]$/.test(unit)) {
    const n = m[1];
    const letter = (m[2] ?? "").toUpperCase();
    throw invalidArgument(
      field,
      `'${text.trim()}' is ambiguous: write ${n}${letter}iB (or ${n}${letter}i) for binary, ${n}${letter === "K" ? "k" : letter}B for decimal (${SIZE_UNITS_HELP})`,
    );
  }
  const bytes = SIZE_UNITS[unit];
  if (bytes === undefined) throw invalidArgument(field, `unknown unit '${m[2]}' in '${text.trim()}' (${SIZE_UNITS_HELP})`);
  const mib = Math.ceil((Number(m[1]) * bytes) / MIB);
  if (!Number.isSafeInteger(mib)) throw invalidArgument(field, `'${text}' is too large`);
  return mib;
}

/** Like parseSizeMib, in whole GiB (rounded up). A bare number is taken in GiB. */
export function parseSizeGib(text: string, field: string): number {
  return Math.ceil(parseSizeMib(text, field, "GiB") / 1024);
}


/**
 * The one way Berth prints a fraction to people as a percentage: at most one decimal, rounded:
 * `60%`, `72.5%`. The CLI's scale group views and the dashboard go through here.
 */
export function formatPercent(fraction: number): string {
  return `${Math.round(fraction * 1000) / 10}%`;
}

/**
 * A configured duration, exactly (whole seconds, truncated), as a flag would take it back:
 * `45s`, `3m`, `1m30s`, `1h`, `1h5m`. (An age, which may round, is the CLI's formatAge.)
 */
export function formatExactDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m}m${s % 60}s` : `${m}m`;
  const h = Math.floor(m / 60);
  return m % 60 ? `${h}h${m % 60}m` : `${h}h`;
}
