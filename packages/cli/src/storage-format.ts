import { ImageInfo, VolumeInfo } from "@berth/api";
import { formatBytes, formatGib } from "@berth/core";
import { compareNames, formatAge, isoTime, renderFields, renderTable } from "./format.js";
import type { View } from "./output.js";

// Human output of `berth image` and `berth volume`: tables, details and their `-o` views. Pure
// functions of their input (and `now`), as format.ts.

/** How many characters of an image's source `image list` shows (`-o wide` shows all of it). */
export const SOURCE_COLUMN_CHARS = 56;

/**
 * `text` cut to `max` characters with `…` in the middle, keeping its last path segment: of a URL or
 * path the file name tells images apart best (`https://cloud-images.ubuntu…/jammy-server.img`).
 */
export function shortenSource(text: string, max = SOURCE_COLUMN_CHARS): string {
  if (text.length <= max) return text;
  const slash = text.lastIndexOf("/");
  const tail = slash >= 0 ? text.slice(slash) : "";
  // A tail that leaves little room for the head: the end of the text alone.
  if (tail.length === 0 || tail.length > max - 16) return `…${text.slice(text.length - (max - 1))}`;
  return `${text.slice(0, max - 1 - tail.length)}…${tail}`;
}

const ago = (atMs: number, nowMs: number): string => (atMs > 0 ? `${formatAge(atMs, nowMs)} ago (${isoTime(atMs)})` : "-");

/** The hosts holding an image, in the CLI's natural order (`host-2` before `host-10`). */
const hostsOf = (info: ImageInfo): string[] => [...info.hosts].sort(compareNames);

/** An image's format as the catalog has it; unset reads as qcow2, the default. */
const formatOf = (info: ImageInfo): string => info.image?.format || "qcow2";

/**
 * The `image list` table: NAME, FORMAT, SOURCE (shortened: {@link shortenSource}), HOSTS (how many
 * hold a copy), VMS (whose spec names it), SIZE (a copy on a host's disk), AGE. `wide`: the whole
 * SOURCE, the HOSTS by name, and VIRTUAL SIZE (the smallest disk a VM may have over it) and ID.
 */
export function imageTable(images: readonly ImageInfo[], nowMs: number, wide = false): string {
  const rows = images.map((info) => {
    const source = info.image?.source || "-";
    return [
      info.image?.name || "-",
      formatOf(info),
      wide ? source : shortenSource(source),
      wide ? (info.hosts.length > 0 ? hostsOf(info).join(",") : "-") : String(info.hosts.length),
      String(info.vms),
      info.sizeBytes > 0 ? formatBytes(info.sizeBytes) : "-",
      formatAge(info.image?.createdAtMs ?? 0, nowMs),
      ...(wide ? [info.virtualSizeBytes > 0 ? formatBytes(info.virtualSizeBytes) : "-", info.image?.id || "-"] : []),
    ];
  });
  const headers = ["NAME", "FORMAT", "SOURCE", "HOSTS", "VMS", "SIZE", "AGE"];
  return renderTable(wide ? [...headers, "VIRTUAL SIZE", "ID"] : headers, rows);
}

/** The `image show` detail: every field of the image, what the hosts report of it, and which hold it. */
export function imageDetail(info: ImageInfo, nowMs: number): string {
  const image = info.image;
  const size =
    info.sizeBytes > 0 || info.virtualSizeBytes > 0
      ? `${info.sizeBytes > 0 ? formatBytes(info.sizeBytes) : "-"} on a host's disk; virtual ${info.virtualSizeBytes > 0 ? formatBytes(info.virtualSizeBytes) : "-"} (the smallest --disk over it)`
      : "- (no host holds it yet)";
  return renderFields([
    ["Name", image?.name || "-"],
    ["ID", image?.id || "-"],
    ["Source", image?.source || "-"],
    ["Format", formatOf(info)],
    ["SHA-256", image?.sha256 || "- (not checked)"],
    ["Size", size],
    ["VMs", `${info.vms}${info.vms > 0 ? " (it cannot be deleted while a VM names it)" : ""}`],
    ["Hosts", info.hosts.length > 0 ? `${info.hosts.length}: ${hostsOf(info).join(", ")}` : "- (none yet: a host fetches it when a VM there needs it)"],
    ["Created", ago(image?.createdAtMs ?? 0, nowMs)],
  ]);
}

/** `image list`: the images as given (sort them first), named by name. */
export function imageListView(images: readonly ImageInfo[], nowMs: number): View {
  return {
    data: () => images.map((i) => ImageInfo.toJSON(i)),
    table: () => imageTable(images, nowMs),
    wide: () => imageTable(images, nowMs, true),
    names: () => images.map((i) => i.image?.name ?? ""),
  };
}

/** `image create`: the new image as a one-row table. */
export function imageView(info: ImageInfo, nowMs: number): View {
  return { ...imageListView([info], nowMs), data: () => ImageInfo.toJSON(info) };
}

/** `image show`: the detail (also under `wide`). */
export function imageDetailView(info: ImageInfo, nowMs: number): View {
  return { data: () => ImageInfo.toJSON(info), table: () => imageDetail(info, nowMs), names: () => [info.image?.name ?? ""] };
}

/** What HOST shows for a volume no host holds yet. */
export const UNBOUND = "<unbound>";

/**
 * The `volume list` table: NAME, SIZE, HOST ({@link UNBOUND} until bound), ATTACHED TO (a VM),
 * PHASE (the controller's: unbound, creating, available, attaching, attached, detaching,
 * deleting), AGE; `wide` adds ID and GENERATION.
 */
export function volumeTable(volumes: readonly VolumeInfo[], nowMs: number, wide = false): string {
  const rows = volumes.map((info) => {
    const v = info.volume;
    return [
      v?.name || "-",
      v ? formatGib(v.sizeGib) : "-",
      v?.hostId || UNBOUND,
      v?.attachedTo || "-",
      info.phase || "-",
      formatAge(v?.createdAtMs ?? 0, nowMs),
      ...(wide ? [v?.id || "-", String(v?.generation ?? 0)] : []),
    ];
  });
  const headers = ["NAME", "SIZE", "HOST", "ATTACHED TO", "PHASE", "AGE"];
  return renderTable(wide ? [...headers, "ID", "GENERATION"] : headers, rows);
}

/** The `volume show` detail. */
export function volumeDetail(info: VolumeInfo, nowMs: number): string {
  const v = info.volume;
  return renderFields([
    ["Name", v?.name || "-"],
    ["ID", v?.id || "-"],
    ["Size", v ? formatGib(v.sizeGib) : "-"],
    ["Host", v?.hostId || `${UNBOUND} (bound to the host of the first VM it is attached to)`],
    ["Attached to", v?.attachedTo || "-"],
    ["Phase", `${info.phase || "-"}${v?.deleting ? " (delete asked: the host removes it, then the record goes)" : ""}`],
    ["Generation", String(v?.generation ?? 0)],
    ["Created", ago(v?.createdAtMs ?? 0, nowMs)],
  ]);
}

/** `volume list`: the volumes as given (sort them first), named by name. */
export function volumeListView(volumes: readonly VolumeInfo[], nowMs: number): View {
  return {
    data: () => volumes.map((v) => VolumeInfo.toJSON(v)),
    table: () => volumeTable(volumes, nowMs),
    wide: () => volumeTable(volumes, nowMs, true),
    names: () => volumes.map((v) => v.volume?.name ?? ""),
  };
}

/** `volume show`: the detail (also under `wide`). */
export function volumeDetailView(info: VolumeInfo, nowMs: number): View {
  return { data: () => VolumeInfo.toJSON(info), table: () => volumeDetail(info, nowMs), names: () => [info.volume?.name ?? ""] };
}
