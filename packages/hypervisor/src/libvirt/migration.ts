import { invalidArgument } from "@berth/core";
import type { MigrationProgress } from "../driver.js";

/**
 * What a libvirt destination's `MigrationTarget.uri` carries: the connection URI the source's
 * libvirtd opens (`virsh migrate --p2p ... <uri>`), optionally the data channel its QEMU sends
 * memory and disks to (`--migrateuri`), and the directory of the destination's storage pool (for
 * `--copy-storage-inc`, whose destination disks must be named by path), written as a fragment:
 * `qemu+tls://dst/system#migrateuri=tcp%3A%2F%2F10.0.0.5&poolpath=%2Fvar%2Flib%2Fberth`. (The
 * target travels from the destination's agent to the source's as one string; libvirt URIs have no
 * fragment of their own, so the fragment is Berth's.)
 */
export interface LibvirtMigrationAddress {
  connectionUri: string;
  /** Absent: libvirt's default (the destination's `migration_host` in qemu.conf, else its host name). */
  dataUri: string | undefined;
  /** The destination pool's directory (a dir pool's target path); absent when it has none (not a dir pool) or did not say. */
  poolPath?: string | undefined;
}

const CONNECTION_URI_RE = /^[a-z][a-z0-9+.-]*:\/\/[^#\s]*$/i;
/** A QEMU migration data URI libvirt accepts as `--migrateuri`: `tcp://host[:port]` or `rdma://host[:port]`. */
export const MIGRATION_DATA_URI_RE = /^(tcp|rdma):\/\/(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:[0-9]{1,5})?\/?$/i;
/** An absolute path without control characters or quotes (it goes into domain XML). */
const POOL_PATH_RE = /^\/[^\x00-\x1f\x7f'"<>&]*$/;

/**
 * The `MigrationTarget.uri` of a destination: its connection URI, plus a fragment with
 * `migrateuri=<data uri>` and `poolpath=<dir>` when it has them (each URI-encoded, `&` between).
 */
export function formatMigrationTargetUri(address: LibvirtMigrationAddress): string {
  const params: string[] = [];
  if (address.dataUri !== undefined) params.push(`migrateuri=${encodeURIComponent(address.dataUri)}`);
  if (address.poolPath !== undefined) params.push(`poolpath=${encodeURIComponent(address.poolPath)}`);
  return params.length === 0 ? address.connectionUri : `${address.connectionUri}#${params.join("&")}`;
}

/**
 * Splits a `MigrationTarget.uri` made by {@link formatMigrationTargetUri} (a bare connection URI
 * is accepted as such). INVALID_ARGUMENT naming `target.uri` for anything else, so nothing
 * unchecked reaches virsh's command line.
 */
export function parseMigrationTargetUri(uri: unknown): LibvirtMigrationAddress {
  if (typeof uri !== "string" || uri === "") throw invalidArgument("target.uri", "is required");
  const hash = uri.indexOf("#");
  const connectionUri = hash < 0 ? uri : uri.slice(0, hash);
  if (!CONNECTION_URI_RE.test(connectionUri)) throw invalidArgument("target.uri", `must be a libvirt URI like qemu+tls://host/system (got ${JSON.stringify(uri)})`);
  if (hash < 0) return { connectionUri, dataUri: undefined };
  const refuse = (): never => {
    throw invalidArgument("target.uri", `has a fragment other than #migrateuri=<tcp://host[:port]>&poolpath=<absolute dir> (got ${JSON.stringify(uri)})`);
  };
  let dataUri: string | undefined;
  let poolPath: string | undefined;
  for (const param of uri.slice(hash + 1).split("&")) {
    const eq = param.indexOf("=");
    if (eq < 0) refuse();
    const key = param.slice(0, eq);
    let value: string;
    try {
      value = decodeURIComponent(param.slice(eq + 1));
    } catch {
      return refuse();
    }
    if (key === "migrateuri" && dataUri === undefined && MIGRATION_DATA_URI_RE.test(value)) dataUri = value;
    else if (key === "poolpath" && poolPath === undefined && POOL_PATH_RE.test(value)) poolPath = value;
    else refuse();
  }
  return poolPath === undefined ? { connectionUri, dataUri } : { connectionUri, dataUri, poolPath };
}

/** Bytes per unit of virsh's human-readable sizes (`vshPrettyCapacity`). */
const UNIT: Record<string, number> = { b: 1, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40, pib: 2 ** 50, eib: 2 ** 60 };
/** x86's page size, for a dirty rate (pages/s) printed without `memory_page_size`. */
const DEFAULT_PAGE_SIZE = 4096;
/** virDomainJobType values (and their names in virsh's plain output) of a job that is running. */
const RUNNING_JOB = new Set(["1", "2", "bounded", "unbounded"]);

/**
 * The progress of a running job from `virsh domjobinfo [--rawstats] <dom>`, or undefined when no
 * job runs (`Job type: None`, or `0` raw). Reads both forms virsh prints:
 * - `--rawstats`: `data_total: 1073741824`, `memory_dirty_rate: 12` (pages/s),
 *   `memory_page_size: 4096`, `memory_iteration: 2`;
 * - plain: `Data total: 1.000 GiB`, `Dirty rate: 12 pages/s`, `Page size: 4096 bytes`, `Iteration: 2`.
 * A field missing (libvirt prints only what QEMU reported: no memory fields while disks are
 * copied, no page size on old versions) reads 0; a dirty rate without a page size assumes 4 KiB.
 * `iteration` is at least 1 (libvirt's 0, before the first memory pass, is still the first pass).
 */
export function parseDomJobInfo(text: string): MigrationProgress | undefined {
  const fields = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Za-z][A-Za-z0-9_ /.-]*?)\s*:\s*(.*?)\s*$/.exec(line);
    if (m) fields.set(m[1]!.toLowerCase().replace(/[\s/-]+/g, "_"), m[2]!);
  }
  const type = fields.get("job_type");
  if (type !== undefined && !RUNNING_JOB.has(type.toLowerCase())) return undefined;
  const bytes = (key: string): number => {
    const v = fields.get(key);
    if (v === undefined) return 0;
    const m = /^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$/.exec(v);
    if (!m) return 0;
    const unit = m[2] === "" ? 1 : UNIT[m[2]!.toLowerCase()];
    return unit === undefined ? 0 : Math.round(Number(m[1]) * unit);
  };
  const count = (key: string): number => {
    const m = /^([0-9]+)/.exec(fields.get(key) ?? "");
    return m ? Number(m[1]) : 0;
  };
  if (type === undefined && !fields.has("data_total") && !fields.has("data_processed")) return undefined;
  const pageSize = count("memory_page_size") || count("page_size") || DEFAULT_PAGE_SIZE;
  const dirtyPages = fields.has("memory_dirty_rate") ? count("memory_dirty_rate") : count("dirty_rate");
  return {
    dataTotalBytes: bytes("data_total"),
    dataProcessedBytes: bytes("data_processed"),
    dataRemainingBytes: bytes("data_remaining"),
    dirtyRateBytesPerS: dirtyPages * pageSize,
    // A running job is in its first pass at least: libvirt counts 0 until memory is sent (while
    // disks are copied), but the contract counts passes of the whole copy from 1.
    iteration: Math.max(1, fields.has("memory_iteration") ? count("memory_iteration") : count("iteration")),
  };
}
