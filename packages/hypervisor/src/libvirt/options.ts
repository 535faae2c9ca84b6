import path from "node:path";
import { invalidArgument } from "@berth/core";
import { MIGRATION_DATA_URI_RE } from "./migration.js";
import type { CommandRunner } from "./virsh.js";

/** A network a domain's NIC is attached to: a libvirt network by name, or a host bridge. */
export interface LibvirtNetwork {
  type: "network" | "bridge";
  /** The libvirt network's name, or the bridge's interface name. */
  source: string;
}

/** Configuration of a {@link LibvirtDriver}. Every field is optional. */
export interface LibvirtDriverOptions {
  /** libvirt connection URI. Default `qemu:///system`. */
  uri?: string;
  /** Storage pool the VM volumes are created in. Default `default`. */
  storagePool?: string;
  /**
   * The networks this host offers VMs' NICs (`listNetworks`): libvirt networks by name and host
   * bridges. A VM gets a NIC on one of them only when its spec asks (`DomainSpec.nics`). Default:
   * every libvirt network (`virsh net-list --all`) and no bridge. Given, exactly these (a network
   * or bridge that is missing is listed inactive, and refused to NICs).
   */
  networks?: readonly LibvirtNetwork[];
  /**
   * The domain type: `kvm` (hardware virtualization) or `qemu` (TCG emulation). Default: asked once
   * of the hypervisor (`virsh domcapabilities --virttype kvm` works → kvm, else qemu).
   */
  domainType?: "kvm" | "qemu";
  /** Memory (MiB) kept for the host: subtracted from the memory capacity `hostFacts` reports. Default 0. */
  hostReserveMib?: number;
  /** Prefix of the libvirt domain names (prefix + VM name). Default `berth-`. */
  namePrefix?: string;
  /** How long a graceful stop waits for the guest before powering it off. Default 30 000 ms. */
  stopTimeoutMs?: number;
  /** Time limit of one virsh command (not of a migration). Default 60 000 ms. */
  commandTimeoutMs?: number;
  /** Time limit of a live migration when `migrateOut` is not given one. Default 600 000 ms. */
  migrationTimeoutMs?: number;
  /** The URI other hosts migrate domains to this one with. Default: `uri`. */
  migrationUri?: string;
  /**
   * Destination side: where other hosts' QEMU sends a domain migrating here (its memory, and its
   * disks with `--copy-storage-all`): `tcp://host[:port]` (or `rdma://`), passed by the source as
   * `virsh migrate --migrateuri`. Carried to the source in the `MigrationTarget` this driver's
   * `prepareIncoming` returns. Needed when `migrationUri` reaches this host's libvirtd over a UNIX
   * socket (no host name in it) or when this host's name does not resolve, on the source, to the
   * address its migration network uses.
   * @default none: libvirt's own choice (this host's `migration_host` in qemu.conf, else its host name)
   */
  migrationDataUri?: string;
  /** The virsh executable. Default `virsh` (found on PATH). */
  virshPath?: string;
  /** The qemu-img executable (inspects and converts fetched images). Default `qemu-img` (on PATH). */
  qemuImgPath?: string;
  /**
   * The genisoimage executable (makes cloud-init seed ISOs; Debian package genisoimage; `mkisofs`
   * takes the same arguments). Default `genisoimage` (on PATH).
   */
  genisoimagePath?: string;
  /**
   * Where a fetched image (and a seed ISO) is staged (downloaded, checked, converted) before it
   * goes into the storage pool: it needs room for the image, twice for a raw one. Absolute; made
   * when missing. Default: the system's temporary directory (the agent passes `<state-dir>/staging`).
   */
  imageStagingDir?: string;
  /** Largest image file `ensureImage` takes (RESOURCE_EXHAUSTED beyond). Default 64 GiB. */
  maxImageBytes?: number;
  /** Time limit of one image fetch, from its first byte to its upload into the pool. Default 1 800 000 ms (30 min). */
  imageFetchTimeoutMs?: number;
  /**
   * How long NIC addresses (DHCP leases, the neighbour table) are reused by `list()` before they
   * are read again, in one pass for every domain. Default 5 000 ms.
   */
  addressRefreshMs?: number;
  /** Runs virsh; tests inject one to check command lines without libvirtd. Default: execFile. */
  runner?: CommandRunner;
  /**
   * Fencing through a Linux watchdog device, e.g. `/dev/watchdog` (a hardware watchdog, or
   * `softdog` in a lab): opened at the first `setWatchdog` (which arms the kernel's timer), written
   * at every `setWatchdog` (a pet), closed with the magic character 'V' by `clearWatchdog`. If the
   * agent stops petting for the device's own timeout (softdog: `soft_margin`, 60 s by default) the
   * kernel resets the host — every VM on it stops, fence or not. Keep that timeout ≤ the fence
   * timeout. Default: none (the driver's timer destroys the fence domains itself; see the README for
   * the residual risk of each mode). Never point tests at a real device: it reboots the machine.
   */
  watchdogDevice?: string;
  /**
   * A small file keeping the watchdog's deadline and last fire across agent restarts, written
   * atomically at every `setWatchdog`, `clearWatchdog` and fire. At open, a deadline already passed
   * (or a fence not confirmed) fences at once, before any other operation. Default: none (a
   * restarted agent forgets a deadline that passed while it was down). The agent passes one under
   * its state directory.
   */
  watchdogStateFile?: string;
}

/** {@link LibvirtDriverOptions} with every default applied (but `domainType`, resolved at first use) and every value checked. */
export interface ResolvedLibvirtDriverOptions {
  readonly uri: string;
  readonly storagePool: string;
  readonly networks: readonly Readonly<LibvirtNetwork>[];
  readonly domainType: "kvm" | "qemu" | undefined;
  readonly hostReserveMib: number;
  readonly namePrefix: string;
  readonly stopTimeoutMs: number;
  readonly commandTimeoutMs: number;
  readonly migrationTimeoutMs: number;
  readonly migrationUri: string;
  readonly migrationDataUri: string | undefined;
  readonly virshPath: string;
  readonly qemuImgPath: string;
  readonly genisoimagePath: string;
  readonly imageStagingDir: string | undefined;
  readonly maxImageBytes: number;
  readonly imageFetchTimeoutMs: number;
  readonly addressRefreshMs: number;
  readonly runner: CommandRunner | undefined;
  readonly watchdogDevice: string | undefined;
  readonly watchdogStateFile: string | undefined;
}

/** Default of {@link LibvirtDriverOptions.uri}. */
export const DEFAULT_LIBVIRT_URI = "qemu:///system";
/** Default of {@link LibvirtDriverOptions.storagePool}. */
export const DEFAULT_STORAGE_POOL = "default";
/** Default of {@link LibvirtDriverOptions.namePrefix}. */
export const DEFAULT_NAME_PREFIX = "berth-";
/** Default of {@link LibvirtDriverOptions.stopTimeoutMs}. */
export const DEFAULT_STOP_TIMEOUT_MS = 30_000;
/** Default of {@link LibvirtDriverOptions.commandTimeoutMs}. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;
/** Default of {@link LibvirtDriverOptions.migrationTimeoutMs}. */
export const DEFAULT_MIGRATION_TIMEOUT_MS = 600_000;
/** Default of {@link LibvirtDriverOptions.maxImageBytes}: 64 GiB. */
export const DEFAULT_MAX_IMAGE_BYTES = 64 * 2 ** 30;
/** Default of {@link LibvirtDriverOptions.imageFetchTimeoutMs}: 30 minutes. */
export const DEFAULT_IMAGE_FETCH_TIMEOUT_MS = 1_800_000;
/** Default of {@link LibvirtDriverOptions.addressRefreshMs}. */
export const DEFAULT_ADDRESS_REFRESH_MS = 5_000;

/** A libvirt object name we put on a command line or in XML: printable, no slash, not blank. */
const NAME_RE = /^[^\s/\\'"<>&\x00-\x1f\x7f][^/\\'"<>&\x00-\x1f\x7f]*$/;

/**
 * Applies defaults and validates. Throws BerthError INVALID_ARGUMENT naming the option at fault
 * (`libvirt.storage_pool: must be ...`). Pure: touches neither libvirt nor the file system.
 */
export function resolveLibvirtDriverOptions(options: LibvirtDriverOptions = {}): ResolvedLibvirtDriverOptions {
  const uri = text(options.uri, "libvirt.uri", DEFAULT_LIBVIRT_URI);
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(uri)) throw invalidArgument("libvirt.uri", `must be a libvirt URI like qemu:///system (got ${JSON.stringify(uri)})`);
  const storagePool = text(options.storagePool, "libvirt.storage_pool", DEFAULT_STORAGE_POOL);
  if (!NAME_RE.test(storagePool)) throw invalidArgument("libvirt.storage_pool", `must be a storage pool name (got ${JSON.stringify(storagePool)})`);

  const given: unknown = options.networks ?? [];
  if (!Array.isArray(given)) throw invalidArgument("libvirt.networks", "must be a list of {type, source}");
  const networks = given.map((n: unknown, i) => {
    const field = `libvirt.networks[${i}]`;
    if (typeof n !== "object" || n === null) throw invalidArgument(field, "must be {type: network|bridge, source}");
    const { type, source } = n as Record<string, unknown>;
    if (type !== "network" && type !== "bridge") throw invalidArgument(`${field}.type`, `must be "network" or "bridge" (got ${JSON.stringify(type)})`);
    if (typeof source !== "string" || !NAME_RE.test(source)) {
      throw invalidArgument(`${field}.source`, `must be a ${type === "network" ? "libvirt network" : "bridge"} name (got ${JSON.stringify(source)})`);
    }
    return Object.freeze({ type, source });
  });
  const seen = new Set<string>();
  networks.forEach((n, i) => {
    // A NIC names a network by name alone: a network and a bridge of one name would be ambiguous.
    if (seen.has(n.source)) throw invalidArgument(`libvirt.networks[${i}].source`, `${JSON.stringify(n.source)} is offered twice`);
    seen.add(n.source);
  });

  const domainType: unknown = options.domainType;
  if (domainType !== undefined && domainType !== "kvm" && domainType !== "qemu") {
    throw invalidArgument("libvirt.domain_type", `must be "kvm" or "qemu" (got ${JSON.stringify(domainType)})`);
  }
  const namePrefix = options.namePrefix ?? DEFAULT_NAME_PREFIX;
  if (typeof namePrefix !== "string" || (namePrefix !== "" && !NAME_RE.test(namePrefix))) {
    throw invalidArgument("libvirt.name_prefix", `must be printable, without / \\ quotes < > & (got ${JSON.stringify(namePrefix)})`);
  }
  const migrationUri = text(options.migrationUri, "libvirt.migration_uri", uri);
  if (migrationUri.includes("#")) throw invalidArgument("libvirt.migration_uri", `must be a libvirt URI without a fragment (got ${JSON.stringify(migrationUri)})`);
  const migrationDataUri: unknown = options.migrationDataUri;
  if (migrationDataUri !== undefined && (typeof migrationDataUri !== "string" || !MIGRATION_DATA_URI_RE.test(migrationDataUri))) {
    throw invalidArgument("libvirt.migration_data_uri", `must be tcp://host[:port] or rdma://host[:port] (got ${JSON.stringify(migrationDataUri)})`);
  }
  const virshPath = text(options.virshPath, "libvirt.virsh_path", "virsh");
  const qemuImgPath = text(options.qemuImgPath, "libvirt.qemu_img_path", "qemu-img");
  const genisoimagePath = text(options.genisoimagePath, "libvirt.genisoimage_path", "genisoimage");
  const imageStagingDir = absolutePath(options.imageStagingDir, "libvirt.image_staging_dir");
  const runner: unknown = options.runner;
  if (runner !== undefined && typeof runner !== "function") throw invalidArgument("libvirt.runner", "must be a function");
  const watchdogDevice = absolutePath(options.watchdogDevice, "libvirt.watchdog_device");
  const watchdogStateFile = absolutePath(options.watchdogStateFile, "libvirt.watchdog_state_file");
  if (watchdogDevice !== undefined && watchdogDevice === watchdogStateFile) {
    throw invalidArgument("libvirt.watchdog_state_file", "must not be the watchdog device");
  }

  return Object.freeze({
    uri,
    storagePool,
    networks: Object.freeze(networks),
    domainType,
    hostReserveMib: whole(options.hostReserveMib, "libvirt.host_reserve_mib", 0, 0),
    namePrefix,
    stopTimeoutMs: whole(options.stopTimeoutMs, "libvirt.stop_timeout_ms", DEFAULT_STOP_TIMEOUT_MS, 0),
    commandTimeoutMs: whole(options.commandTimeoutMs, "libvirt.command_timeout_ms", DEFAULT_COMMAND_TIMEOUT_MS, 1),
    migrationTimeoutMs: whole(options.migrationTimeoutMs, "libvirt.migration_timeout_ms", DEFAULT_MIGRATION_TIMEOUT_MS, 1),
    migrationUri,
    migrationDataUri: migrationDataUri as string | undefined,
    virshPath,
    qemuImgPath,
    genisoimagePath,
    imageStagingDir,
    maxImageBytes: whole(options.maxImageBytes, "libvirt.max_image_bytes", DEFAULT_MAX_IMAGE_BYTES, 1),
    imageFetchTimeoutMs: whole(options.imageFetchTimeoutMs, "libvirt.image_fetch_timeout_ms", DEFAULT_IMAGE_FETCH_TIMEOUT_MS, 1),
    addressRefreshMs: whole(options.addressRefreshMs, "libvirt.address_refresh_ms", DEFAULT_ADDRESS_REFRESH_MS, 0),
    runner: runner as CommandRunner | undefined,
    watchdogDevice,
    watchdogStateFile,
  });
}

/** An absolute path (normalized), or undefined when not given. */
function absolutePath(value: unknown, field: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || !path.isAbsolute(value) || /[\x00]/.test(value)) {
    throw invalidArgument(field, `must be an absolute path (got ${JSON.stringify(value)})`);
  }
  return path.normalize(value);
}

function text(value: unknown, field: string, fallback: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== "string" || value.trim() === "") throw invalidArgument(field, `must be a non-empty string (got ${JSON.stringify(value)})`);
  return value;
}

function whole(value: unknown, field: string, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
    throw invalidArgument(field, `must be a whole number ≥ ${min} (got ${String(value)})`);
  }
  return value;
}
