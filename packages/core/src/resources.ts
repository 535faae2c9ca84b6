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

/** `2 vCPU, 4096 MiB, 20 GiB` */
export function formatResources(r: Resources): string {
  return RESOURCE_NAMES.map((k) => `${r[k]} ${RESOURCE_UNIT[k]}`).join(", ");
}

const SIZE_UNITS: Record<string, number> = {
  b: 1 / 2 ** 20,
  k: 1 / 1024, kb: 1000 / 2 ** 20, kib: 1 / 1024,
  m: 1, mb: 1e6 / 2 ** 20, mib: 1,
  g: 1024, gb: 1e9 / 2 ** 20, gib: 1024,
  t: 1024 * 1024, tb: 1e12 / 2 ** 20, tib: 1024 * 1024,
};

/**
 * Parses a size with a unit (`512MiB`, `4GiB`, `1.5T`, `20G`) into MiB, rounding up to a whole MiB.
 * A bare number is taken in `defaultUnit`. Throws INVALID_ARGUMENT naming `field`.
 */
export function parseSizeMib(text: string, field: string, defaultUnit = "MiB"): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) throw invalidArgument(field, `'${text}' is not a size (examples: 512MiB, 4GiB, 1TiB)`);
  const unit = (m[2] || defaultUnit).toLowerCase();
  const factor = SIZE_UNITS[unit];
  if (factor === undefined) {
    throw invalidArgument(field, `unknown unit '${m[2]}' in '${text}' (use MiB, GiB or TiB)`);
  }
  const mib = Math.ceil(Number(m[1]) * factor);
  if (!Number.isSafeInteger(mib)) throw invalidArgument(field, `'${text}' is too large`);
  return mib;
}

/** Like parseSizeMib, in whole GiB (rounded up). A bare number is taken in GiB. */
export function parseSizeGib(text: string, field: string): number {
  return Math.ceil(parseSizeMib(text, field, "GiB") / 1024);
}

/** `512 MiB`, `4 GiB`, `2 TiB`: the largest unit that divides the size exactly. */
export function formatMib(mib: number): string {
  if (mib >= 1024 * 1024 && mib % (1024 * 1024) === 0) return `${mib / (1024 * 1024)} TiB`;
  if (mib >= 1024 && mib % 1024 === 0) return `${mib / 1024} GiB`;
  return `${mib} MiB`;
}
