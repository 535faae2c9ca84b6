import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { CloudInitSeed, HostImage, HostNetwork, HostVolume, ImageRef, VolumeRef } from "@berth/api";
import type { ConsoleConnection, ConsoleOptions } from "../driver.js";
import { DomainState, type Domain } from "@berth/api";
import { BerthError, ErrorCode, invalidArgument, isBerthError, nicMacAddress, notFound, quote, RESOURCE_FIELD, RESOURCE_NAMES } from "@berth/core";
import type {
  DomainSpec,
  DomainStats,
  DriverEvent,
  HostFacts,
  HypervisorDriver,
  HypervisorHealth,
  MigrateOutOptions,
  MigrationProgress,
  MigrationTarget,
  StopOptions,
  WatchdogStatus,
} from "../driver.js";
import {
  BERTH_XMLNS,
  BERTH_XMLNS_KEY,
  dataDiskXml,
  dataDisksOf,
  dataVolumeName,
  dataVolumeSerial,
  domainXml,
  freeVirtioTargets,
  imageIdOfVolume,
  imageVolumeName,
  incomingDiskXml,
  poolVolumeOf,
  metadataSetValue,
  orderedVolumeIds,
  parseDomainXml,
  seedVolumeName,
  volumeIdOfVolume,
  volumeName,
  type BerthMetadata,
  type DataDisk,
  type DomainNic,
  type ParsedDomainXml,
  type PoolDisk,
} from "./domain-xml.js";
import { openPtyConsole, type PtyConsole } from "./console.js";
import { checkObjectId, ImageStore, validateImageRef, volumeInfos } from "./images.js";
import { AddressBook, hostHasBridge, listLibvirtNetworks, nicsOfDomain, offeredNetworks, PROC_NET_ARP, SYS_CLASS_NET } from "./networks.js";
import { buildSeedIso, validateSeed } from "./seed-iso.js";
import { EventFollower, lifecycleKind, spawnVirshEvents, type EventProcess, type VirshEvent } from "./events.js";
import { resolveLibvirtDriverOptions, type LibvirtDriverOptions, type ResolvedLibvirtDriverOptions } from "./options.js";
import {
  domainStateOf,
  isActive,
  LibvirtState,
  parseDomstats,
  parseHostCpuModel,
  parseNodeinfo,
  parseNodeMemTotalKib,
  parseNumaCells,
  parsePoolInfo,
  parseVersion,
  parseVolList,
  isMacAddress,
  stateOfRecord,
  type VolumeInfo,
  statsFromRecord,
  type NodeInfo,
} from "./parse.js";
import { formatMigrationTargetUri, parseDomJobInfo, parseMigrationTargetUri, type LibvirtMigrationAddress } from "./migration.js";
import { execFileRunner, isConnectionFailure, mapVirshError, Virsh, virshErrorText, type CommandResult, type CommandRunner } from "./virsh.js";
import { readWatchdogStateFile, WatchdogDevice, writeWatchdogStateFile, type PersistedWatchdog } from "./watchdog.js";

/** The `kind` of the libvirt driver and the `driver` of its migration targets. */
export const LIBVIRT_DRIVER_KIND = "libvirt";

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** How often a graceful stop polls the domain's state. */
const STOP_POLL_MS = 100;
/** Time limit of `health()`'s probe. */
const HEALTH_TIMEOUT_MS = 5_000;
/** Domains per batched virsh call in `list()`. */
const LIST_CHUNK = 200;
/** Longest domain name Berth makes (prefix + VM name). */
const MAX_NAME_LENGTH = 200;
/** Longest delay a Node timer takes (about 24.8 days); a later deadline is re-checked when it ends. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** How soon a fence that failed (libvirtd did not answer) is tried again. */
const FENCE_RETRY_MS = 1_000;
/** Default of `MigrateOutOptions.progressIntervalMs`. */
export const DEFAULT_PROGRESS_INTERVAL_MS = 500;
/**
 * Time limit of one `domjobabort` (and of an abort's retries): libvirt can hang on an unresponsive
 * QEMU monitor, and an abort must not hang its caller with it (KubeVirt bounds it the same way).
 */
export const MIGRATION_ABORT_TIMEOUT_MS = 30_000;
/** How soon an abort asks again when libvirt says no job runs yet. */
const ABORT_RETRY_MS = 200;
/** Time limit of one progress sample. */
const PROGRESS_TIMEOUT_MS = 10_000;
/** virsh migrate is killed this long after the migration's deadline and abort bound (libvirt should have ended it). */
const MIGRATE_BACKSTOP_MS = 10_000;
/** virDomainPausedReason VIR_DOMAIN_PAUSED_MIGRATION: an incoming domain until its migration ends. */
const PAUSED_MIGRATION = 2;
/** Paused by a migration under way: an incoming domain until it ends (or a source at its switchover). */
const arriving = (snap: Snapshot): boolean => snap.state === LibvirtState.Paused && snap.reason === PAUSED_MIGRATION;
const GIB = 2 ** 30;
/** The key of the lock every volume-changing call takes (not a UUID: no domain's). */
const VOLUMES_LOCK = "volumes:";

/** What `prepareStorage` made for a definition. */
interface PreparedStorage {
  seed: PoolDisk | undefined;
  dataDisks: DataDisk[];
  /** Removes what was created (best effort). */
  undo(): Promise<void>;
}

/** Pool types whose volumes both hosts see (the disk is not copied). */
const SHARED_POOL_TYPES = new Set(["netfs", "gluster", "rbd", "sheepdog", "iscsi", "iscsi-direct", "scsi", "mpath", "vstorage"]);

/** Test seams beyond the runner: how the event stream is spawned, and the follower's backoff. */
export interface LibvirtDriverInternals {
  spawnEvents?: () => EventProcess;
  eventBackoffMs?: { initial: number; max: number };
  /** How soon a failed fence is retried. Default 1 s. */
  fenceRetryMs?: number;
  /** Time limit of `domjobabort`. Default {@link MIGRATION_ABORT_TIMEOUT_MS}. */
  abortTimeoutMs?: number;
  /** Where bridges are looked for. Default /sys/class/net. */
  sysClassNet?: string;
  /** The neighbour table read for bridges' addresses. Default /proc/net/arp. */
  procNetArp?: string;
  /** The fetch of http(s) images. Default Node's. */
  fetchImpl?: typeof fetch;
}

/** A `migrateOut` call under way in this driver, for `abortMigration` (which must not wait for it). */
interface MigrationJob {
  vmId: string;
  /** `abortMigration` was called. */
  aborted: boolean;
  /** The deadline passed (the job was aborted for it). */
  timedOut: boolean;
  /** virsh migrate has been run. */
  started: boolean;
  /** virsh migrate has returned (or will not be run). */
  done: boolean;
  /** The abort attempt under way. */
  abort: Promise<void> | undefined;
}

/** A domain as one lookup saw it. */
interface Snapshot {
  /** libvirt's name. */
  name: string;
  /** virDomainState and its reason. */
  state: number;
  reason: number;
  /** Berth's view; undefined for a domain Berth does not manage. */
  domain: Domain | undefined;
  /** Its XML as read (live when active), for its disks, NICs, console and metadata. */
  parsed: ParsedDomainXml;
}

/**
 * The HypervisorDriver of libvirt, driven through `virsh` (no native binding): every operation is one
 * or a few `virsh -c <uri>` runs (execFile, no shell, a time limit each), whose failures are mapped
 * once to BerthError codes (see `mapVirshError`).
 *
 * A VM is the domain named `namePrefix + name` whose uuid is the vmId; its disk is the qcow2
 * volume `<vmId>.qcow2` in `storagePool` (none when diskGib is 0; over an image, an overlay of the
 * host's copy `berth-image-<id>.qcow2`), with its NICs on offered networks, its NoCloud seed ISO
 * `<vmId>-seed.iso` and its data volumes `berth-vol-<id>.qcow2`. Berth's metadata element
 * (namespace https://berth.dev/xmlns/vm/1) records vmId, name, generation, disk size, fence, image
 * and volume order in the domain's persistent definition, so `list()` rebuilds the inventory after
 * an agent restart; domains without it are ignored. Operations on one vmId are serialized within a
 * driver; volume changes take one lock for all.
 *
 * Events come from a long-lived `virsh event --all --loop` child, run only while there are
 * subscribers; when it ends (libvirtd stopped or restarted) subscribers get `health {available:
 * false}`, and `health {available: true}` once it is re-established (re-list then). Events are
 * delivered in order; each carries the domain as looked up when the event is handled, which may
 * already reflect a later change (a "started" handled after a crash shows CRASHED). The
 * "Resumed" libvirt reports with every start is dropped (a resume is reported after a pause only).
 *
 * Fencing (`setWatchdog`): a timer in the driver destroys every active domain defined with
 * `fence: true` when the deadline passes (wall clock or monotonic clock, whichever passes first),
 * and every operation waits for a fence that is due before it runs, so nothing is started or
 * reported running past a fence. With `watchdogDevice` the driver also pets a Linux watchdog
 * device at each `setWatchdog`, so a frozen or dead agent is fenced by the kernel resetting the
 * host; `watchdogStateFile` keeps the deadline across agent restarts (a deadline passed while the
 * agent was down fences at open). See the README for the residual risk of each mode.
 *
 * Migration (`prepareIncoming`, `migrateOut`, `finishIncoming`, `abortMigration`) uses
 * `virsh migrate --live --p2p --persistent --undefinesource [--copy-storage-inc --xml | --copy-storage-all]` to the
 * destination's `migrationUri` (and `--migrateuri` its `migrationDataUri`), with progress from
 * `domjobinfo` and aborts by `domjobabort`. libvirt refuses to migrate to a daemon with its own
 * host UUID; test/drivers/libvirt-migration.test.ts runs a second libvirtd on the same machine.
 */
export class LibvirtDriver implements HypervisorDriver {
  readonly kind = LIBVIRT_DRIVER_KIND;
  readonly options: ResolvedLibvirtDriverOptions;
  private readonly virsh: Virsh;
  private readonly follower: EventFollower;
  private readonly listeners = new Set<(event: DriverEvent) => void>();
  /** libvirt name → vmId of Berth's domains seen (to name the vmId of an "Undefined" event). */
  private readonly vmIdByName = new Map<string, string>();
  private readonly locks = new Map<string, Promise<unknown>>();
  /** `migrateOut` calls under way (waiting or migrating), by vmId. */
  private readonly migrations = new Map<string, Set<MigrationJob>>();
  private readonly abortTimeoutMs: number;
  /** The last event kind reported per vmId (to drop the "Resumed" libvirt sends with every start). */
  private readonly lastKind = new Map<string, string>();
  private domainTypeOnce: Promise<"kvm" | "qemu"> | undefined;
  private nodeInfo: NodeInfo | undefined;
  private eventChain: Promise<void> = Promise.resolve();
  private closed = false;

  // Fencing. `wd` is what watchdog() reports; `fencePendingAt` the deadline whose fence (destroying
  // the fence domains) is not yet confirmed, 0 when none; `fencing` the attempt under way.
  private readonly wd: WatchdogStatus = { deadlineMs: 0, firedAtMs: 0 };
  /** performance.now() at which the armed deadline passes: a wall-clock step back does not delay the fence. */
  private monoDeadline = Infinity;
  private fencePendingAt = 0;
  private fencing: Promise<void> | undefined;
  private wdTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly device: WatchdogDevice | undefined;
  private readonly fenceRetryMs: number;
  /** The state file's writes, in order; a queued write carries every change made before it starts. */
  private wdWriteChain: Promise<void> = Promise.resolve();
  private wdQueuedWrite: Promise<void> | undefined;

  /** Runs virsh's neighbours: qemu-img, genisoimage. */
  private readonly runner: CommandRunner;
  private readonly images: ImageStore;
  private readonly addresses: AddressBook;
  private readonly sysClassNet: string;
  /** The console session of each domain that has one, by vmId. */
  private readonly consoles = new Map<string, PtyConsole>();
  /** Destination side: the data volumes `prepareIncoming` readied, by vmId, for `abortMigration`. */
  private readonly incomingVolumes = new Map<string, string[]>();
  /** The storage pool's directory once read (a dir, fs or netfs pool); undefined before, or for other pools. */
  private knownPoolPath: string | undefined;
  private poolPathRead: Promise<string | undefined> | undefined;
  /** The pool inventory read under way (see `poolInventory`). */
  private poolInventoryRead: Promise<Map<string, VolumeInfo>> | undefined;

  /** Resolves the options (INVALID_ARGUMENT on a bad one); talks to libvirt only when called. */
  constructor(options: LibvirtDriverOptions = {}, internals: LibvirtDriverInternals = {}) {
    this.options = resolveLibvirtDriverOptions(options);
    const o = this.options;
    this.runner = o.runner ?? execFileRunner;
    this.virsh = new Virsh({ uri: o.uri, virshPath: o.virshPath, timeoutMs: o.commandTimeoutMs, runner: this.runner });
    this.images = new ImageStore({
      virsh: this.virsh,
      options: o,
      runner: this.runner,
      poolMissing: (detail) => this.poolMissing(detail),
      ...(internals.fetchImpl ? { fetchImpl: internals.fetchImpl } : {}),
    });
    this.addresses = new AddressBook(this.virsh, o.addressRefreshMs, internals.procNetArp ?? PROC_NET_ARP);
    this.sysClassNet = internals.sysClassNet ?? SYS_CLASS_NET;
    this.follower = new EventFollower({
      spawn: internals.spawnEvents ?? (() => spawnVirshEvents(o.virshPath, o.uri)),
      probe: async () => (await this.health()).available,
      onEvent: (e) => this.onVirshEvent(e),
      onHealth: (h) => this.onFollowerHealth(h),
      ...(internals.eventBackoffMs ? { initialBackoffMs: internals.eventBackoffMs.initial, maxBackoffMs: internals.eventBackoffMs.max } : {}),
    });
    this.fenceRetryMs = internals.fenceRetryMs ?? FENCE_RETRY_MS;
    this.abortTimeoutMs = internals.abortTimeoutMs ?? MIGRATION_ABORT_TIMEOUT_MS;
    this.device = o.watchdogDevice === undefined ? undefined : new WatchdogDevice(o.watchdogDevice);
    if (o.watchdogStateFile !== undefined) {
      const saved = readWatchdogStateFile(o.watchdogStateFile);
      if (saved) {
        this.wd.deadlineMs = saved.deadlineMs;
        this.wd.firedAtMs = saved.firedAtMs;
        this.monoDeadline = monotonicDeadline(saved.deadlineMs);
        if (saved.fencePending) this.fencePendingAt = saved.firedAtMs || saved.deadlineMs || 1;
      }
      // A deadline that passed while no agent ran (or a fence left unconfirmed): fence now, first.
      this.checkWatchdog();
      this.scheduleWatchdog();
    }
  }

  /**
   * The constructor as a promise (the agent's factory shape). Throws INVALID_ARGUMENT for bad
   * options, FAILED_PRECONDITION for an unreadable `watchdogStateFile`. Contacts libvirt only when
   * that file shows a deadline passed (or a fence unconfirmed): then the fence domains are destroyed
   * before it resolves (if libvirtd does not answer, every operation retries the fence first and
   * fails with HYPERVISOR_UNAVAILABLE until it succeeds). An unreachable libvirtd otherwise shows in
   * `health()` and as HYPERVISOR_UNAVAILABLE from operations.
   */
  static async open(options: LibvirtDriverOptions = {}, internals: LibvirtDriverInternals = {}): Promise<LibvirtDriver> {
    const driver = new LibvirtDriver(options, internals);
    await driver.fencing?.catch(() => undefined);
    return driver;
  }

  /** The libvirt domain name of a VM name. */
  domainName(name: string): string {
    return `${this.options.namePrefix}${name}`;
  }

  // ---- facts and inventory ---------------------------------------------------------------------

  /**
   * nodeinfo (CPUs, memory), NUMA cells and CPU model from `capabilities`, the storage pool's
   * capacity (`pool-info --bytes`) and `version`, in one virsh call. Memory capacity is the node's
   * memory minus `hostReserveMib`. FAILED_PRECONDITION if the storage pool does not exist.
   */
  async hostFacts(): Promise<HostFacts> {
    this.ensureOpen();
    const { sections, stderr } = await this.virsh.batch([
      { tag: "node", args: ["nodeinfo"] },
      { tag: "memstats", args: ["nodememstats"] },
      { tag: "caps", args: ["capabilities"] },
      { tag: "pool", args: ["pool-info", "--bytes", this.options.storagePool] },
      { tag: "version", args: ["version", "--daemon"] },
    ]);
    const node = parseNodeinfo(sections.get("node") ?? "");
    if (!node) throw new BerthError(ErrorCode.HypervisorUnavailable, `virsh nodeinfo: ${virshErrorText(stderr) || "unreadable output"}`);
    this.nodeInfo = node;
    const pool = parsePoolInfo(sections.get("pool") ?? "");
    if (!pool) throw this.poolMissing(stderr);
    const caps = sections.get("caps") ?? "";
    // nodeinfo sums the NUMA nodes' memory, which misses memory a VM host was given outside them
    // (seen on a cloud VM: nodeinfo 7.5 GiB, MemTotal 24 GiB); nodememstats reads MemTotal.
    const memoryKib = Math.max(node.memoryKib, parseNodeMemTotalKib(sections.get("memstats") ?? "") ?? 0);
    return {
      capacity: {
        vcpus: node.cpus,
        memoryMib: Math.max(0, Math.floor(memoryKib / 1024) - this.options.hostReserveMib),
        diskGib: Math.floor(pool.capacityBytes / 2 ** 30),
      },
      driver: this.kind,
      cpuModel: parseHostCpuModel(caps) ?? node.cpuModel,
      numaCells: parseNumaCells(caps),
      hypervisorVersion: parseVersion(sections.get("version") ?? ""),
    };
  }

  /** Every domain with Berth's metadata, sorted by vmId: two virsh calls whatever the count. */
  async list(): Promise<Domain[]> {
    await this.fenced();
    const found = await this.scan(false);
    const nics = found.map((f) => ({ nics: nicsOfDomain(f.parsed), active: isActive(f.state) }));
    await this.addresses.refresh(nics);
    return found.map((f, i) => ({ ...f.domain, interfaces: this.addresses.known(nics[i]!.nics, nics[i]!.active) }));
  }

  /** The counters of every domain with Berth's metadata, sorted by vmId: two virsh calls whatever the count. */
  async statsAll(): Promise<DomainStats[]> {
    await this.fenced();
    return (await this.scan(true)).map((s) => s.stats!);
  }

  /** Berth's domains, and their counters when asked: `list --uuid`, then per chunk one batched virsh. */
  private async scan(withCounters: boolean): Promise<{ domain: Domain; stats: DomainStats | undefined; parsed: ParsedDomainXml; state: number }[]> {
    this.ensureOpen();
    await this.poolPath();
    const uuids = (await this.virsh.run(["list", "--all", "--uuid"]))
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => UUID_RE.test(l));
    const found: { domain: Domain; stats: DomainStats | undefined; parsed: ParsedDomainXml; state: number }[] = [];
    const domstats = withCounters ? ["domstats", "--raw", "--state", "--cpu-total", "--balloon", "--block", "--interface"] : ["domstats", "--raw", "--state"];
    for (let i = 0; i < uuids.length; i += LIST_CHUNK) {
      const chunk = uuids.slice(i, i + LIST_CHUNK);
      const { sections } = await this.virsh.batch([
        ...chunk.map((u) => ({ tag: `xml-${u}`, args: ["dumpxml", u] })),
        // Last, so a domain whose XML was read has its state here unless it was undefined since.
        { tag: "stats", args: domstats },
      ]);
      const records = new Map(parseDomstats(sections.get("stats") ?? "").map((r) => [r.name, r]));
      for (const u of chunk) {
        const parsed = parseDomainXml(sections.get(`xml-${u}`) ?? "");
        const record = parsed && records.get(parsed.name);
        if (!parsed?.metadata || !record) continue;
        const state = stateOfRecord(record);
        found.push({
          domain: this.toDomain(parsed, parsed.metadata, state.state, state.reason),
          stats: withCounters ? statsFromRecord(parsed.metadata.vmId, record, parsed.memoryMib) : undefined,
          parsed,
          state: state.state,
        });
      }
    }
    return found.sort((a, b) => (a.domain.vmId < b.domain.vmId ? -1 : a.domain.vmId > b.domain.vmId ? 1 : 0));
  }

  // ---- lifecycle -------------------------------------------------------------------------------

  /**
   * Defines the domain SHUTOFF: checks the spec (INVALID_ARGUMENT, e.g. a vmId that is not a UUID,
   * a NIC on a network this host does not offer: `nics[i].network`) and the host's size
   * (RESOURCE_EXHAUSTED when the spec asks more vcpus or memory than the host has), fetches the
   * image when the host has none (`ensureImage`; INVALID_ARGUMENT naming `image` when the disk is
   * smaller than its virtual size), creates the disk (`<vmId>.qcow2`: blank, or a qcow2 overlay of
   * `diskGib` over `berth-image-<id>.qcow2`), the cloud-init seed ISO (`<vmId>-seed.iso`) and the
   * missing data volumes (FAILED_PRECONDITION for one attached to another domain), then defines
   * the domain. A failure removes what it created (a fetched image stays: it is the host's).
   * Idempotent by vmId; ALREADY_EXISTS when the name (or the uuid) belongs to another domain.
   */
  async define(spec: DomainSpec): Promise<Domain> {
    this.ensureOpen();
    validateSpec(spec);
    await this.fenced();
    const vmId = spec.vmId.toLowerCase();
    return this.locked(vmId, async () => {
      const existing = await this.lookup(vmId);
      if (existing) {
        if (existing.domain) return existing.domain;
        throw new BerthError(ErrorCode.AlreadyExists, `domain ${existing.name} (not Berth's) already exists with uuid ${vmId}`);
      }
      await this.checkFits(spec);
      const nics = await this.resolveNics(spec);
      const name = this.domainName(spec.name);
      const volumes = spec.volumes ?? [];
      const build = async (): Promise<Domain> => {
        const storage = await this.prepareStorage(spec);
        const metadata: BerthMetadata = {
          vmId,
          name: spec.name,
          generation: spec.generation,
          diskGib: spec.resources.diskGib,
          fence: spec.fence ?? false,
          imageId: spec.image?.id ?? "",
          volumeIds: volumes.map((v) => v.id),
        };
        const xml = domainXml({
          name,
          uuid: vmId,
          vcpus: spec.resources.vcpus,
          memoryMib: spec.resources.memoryMib,
          domainType: await this.domainType(),
          volume: spec.resources.diskGib > 0 ? { pool: this.options.storagePool, name: volumeName(vmId) } : undefined,
          nics,
          seed: storage.seed,
          dataDisks: storage.dataDisks,
          metadata,
        });
        try {
          await this.virsh.runWithFile(xml, (file) => ["define", file]);
        } catch (e) {
          await storage.undo();
          if (isBerthError(e, ErrorCode.AlreadyExists)) {
            throw new BerthError(ErrorCode.AlreadyExists, `domain ${name} already exists with another uuid (${e.message})`, { cause: e });
          }
          throw e;
        }
        this.vmIdByName.set(name, vmId);
        return (await this.get(vmId)).domain;
      };
      // Data volumes are checked and attached under the volumes' lock: no other domain takes one meanwhile.
      return volumes.length > 0 ? this.volumesLocked(build) : build();
    });
  }

  /**
   * The NICs of `spec` as domain XML takes them: each on a network this host offers and that is
   * active (INVALID_ARGUMENT naming `nics[i].network` otherwise), with its MAC (the spec's, or the
   * one rule's, `nicMacAddress`, when the spec gives none).
   */
  private async resolveNics(spec: DomainSpec): Promise<DomainNic[]> {
    const wanted = spec.nics ?? [];
    if (wanted.length === 0) return [];
    const offered = await this.listNetworksUnchecked();
    return wanted.map((n, i) => {
      const network = offered.find((o) => o.name === n.network);
      const names = offered.map((o) => o.name).join(", ") || "none";
      if (!network) throw invalidArgument(`nics[${i}].network`, `${quote(JSON.stringify(n.network))} is not a network this host offers (offered: ${quote(names, 256)})`);
      if (!network.active) throw invalidArgument(`nics[${i}].network`, `${quote(JSON.stringify(n.network))} is not active on this host`);
      return { type: network.kind === "bridge" ? "bridge" : "network", source: network.name, mac: (n.mac || nicMacAddress(spec.vmId.toLowerCase(), i)).toLowerCase() };
    });
  }

  /**
   * Creates what a domain's definition refers to, for `define` and `prepareIncoming`: the image
   * (fetched when missing), the disk (blank or an overlay of the image), the seed ISO and the data
   * volumes that are missing. `undo()` removes what this call created. A data volume attached to
   * another domain is FAILED_PRECONDITION. Call it under the volumes' lock when there are volumes.
   */
  private async prepareStorage(spec: DomainSpec): Promise<PreparedStorage> {
    const vmId = spec.vmId.toLowerCase();
    const pool = this.options.storagePool;
    const created: string[] = [];
    const undo = async (): Promise<void> => {
      for (const name of created.reverse()) await this.deletePoolVolume(name).catch(() => undefined);
    };
    try {
      let backing: string | undefined;
      if (spec.image) {
        if (spec.resources.diskGib === 0) throw invalidArgument("image", "a VM over an image needs a disk (resources.disk_gib > 0)");
        const image = await this.images.ensure(spec.image);
        if (image.virtualSizeBytes > spec.resources.diskGib * GIB) {
          throw invalidArgument("image", `image ${quote(spec.image.name || spec.image.id)} needs a disk of at least ${Math.ceil(image.virtualSizeBytes / GIB)} GiB (its virtual size is ${image.virtualSizeBytes} bytes); the disk is ${spec.resources.diskGib} GiB`);
        }
        backing = imageVolumeName(image.imageId);
      }
      if (await this.createDiskVolume(vmId, spec.resources.diskGib, backing)) created.push(volumeName(vmId));
      let seed: PoolDisk | undefined;
      if (spec.cloudInit) {
        await this.createSeedVolume(vmId, spec.cloudInit);
        created.push(seedVolumeName(vmId));
        seed = { pool, name: seedVolumeName(vmId) };
      }
      const volumes = spec.volumes ?? [];
      const dataDisks: DataDisk[] = [];
      if (volumes.length > 0) {
        const attachedTo = await this.volumeAttachments();
        const targets = freeVirtioTargets([], volumes.length);
        for (const [i, v] of volumes.entries()) {
          const holder = attachedTo.get(v.id);
          if (holder !== undefined && holder !== vmId) {
            throw new BerthError(ErrorCode.FailedPrecondition, `volume ${quote(v.name || v.id)} is attached to another domain (${holder})`, { field: `volumes[${i}]` });
          }
          const made = await this.ensureDataVolume(v, `volumes[${i}]`);
          if (made) created.push(dataVolumeName(v.id));
          dataDisks.push({ pool, name: dataVolumeName(v.id), target: targets[i]!, serial: dataVolumeSerial(v.id) });
        }
      }
      return { seed, dataDisks, undo };
    } catch (e) {
      await undo();
      throw e;
    }
  }

  /** `start` (shut off or crashed), `resume` (paused); running is left running. */
  async start(vmId: string): Promise<Domain> {
    this.ensureOpen();
    await this.fenced();
    return this.locked(vmId, async () => {
      const snap = await this.get(vmId);
      const id = snap.domain.vmId;
      switch (snap.state) {
        case LibvirtState.Running:
        case LibvirtState.Blocked:
        case LibvirtState.Shutdown:
          return snap.domain;
        case LibvirtState.Paused:
          await this.tolerate(this.virsh.run(["resume", id]), ErrorCode.FailedPrecondition);
          break;
        case LibvirtState.PmSuspended:
          await this.virsh.run(["dompmwakeup", id]);
          break;
        case LibvirtState.Crashed:
          await this.tolerate(this.virsh.run(["destroy", id]), ErrorCode.FailedPrecondition);
          await this.virsh.run(["start", id]);
          break;
        default:
          await this.tolerate(this.virsh.run(["start", id]), ErrorCode.FailedPrecondition);
      }
      return { ...snap.domain, state: DomainState.DOMAIN_STATE_RUNNING };
    });
  }

  /**
   * Forced: `destroy`. Graceful: `shutdown` (ACPI), then the state is polled every 100 ms until shut
   * off; after `timeoutMs` (default `stopTimeoutMs`) the domain is destroyed. A paused domain
   * cannot hear the request and is destroyed at once. Resolves with the domain SHUTOFF.
   */
  async stop(vmId: string, options: StopOptions): Promise<Domain> {
    this.ensureOpen();
    const timeoutMs = options.timeoutMs ?? this.options.stopTimeoutMs;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 0) throw invalidArgument("timeout_ms", `must be a whole number ≥ 0 (got ${String(timeoutMs)})`);
    await this.fenced();
    return this.locked(vmId, async () => {
      const snap = await this.get(vmId);
      const id = snap.domain.vmId;
      if (!isActive(snap.state)) return snap.domain;
      const graceful = !options.force && snap.state !== LibvirtState.Paused && snap.state !== LibvirtState.PmSuspended && timeoutMs > 0;
      if (graceful) {
        await this.tolerate(this.virsh.run(["shutdown", id]), ErrorCode.FailedPrecondition);
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const state = (await this.virsh.run(["domstate", id])).trim();
          if (state.startsWith("shut off")) return shutOff(snap.domain);
          if (Date.now() >= deadline) break;
          await sleep(Math.min(STOP_POLL_MS, Math.max(0, deadline - Date.now())));
        }
      }
      await this.tolerate(this.virsh.run(["destroy", id]), ErrorCode.FailedPrecondition);
      return shutOff(snap.domain);
    });
  }

  /** `destroy`: powers off at once; a shut-off domain is left as is. */
  async destroy(vmId: string): Promise<Domain> {
    this.ensureOpen();
    await this.fenced();
    return this.locked(vmId, async () => {
      const snap = await this.get(vmId);
      if (!isActive(snap.state)) return snap.domain;
      await this.tolerate(this.virsh.run(["destroy", snap.domain.vmId]), ErrorCode.FailedPrecondition);
      return shutOff(snap.domain);
    });
  }

  /** `undefine` (with managed save, snapshot and checkpoint metadata, nvram); refuses an active domain. */
  async undefine(vmId: string): Promise<void> {
    this.ensureOpen();
    if (!isUuid(vmId)) return;
    await this.fenced();
    return this.locked(vmId, () => this.undefineUnlocked(vmId));
  }

  /**
   * Deletes `<vmId>.qcow2` and the seed ISO `<vmId>-seed.iso` from the storage pool (data volumes
   * are not the domain's own: they stay); FAILED_PRECONDITION while the domain is defined.
   */
  async deleteVolumes(vmId: string): Promise<void> {
    this.ensureOpen();
    if (!isUuid(vmId)) return;
    await this.fenced();
    return this.locked(vmId, async () => {
      const snap = await this.lookup(vmId);
      if (snap) throw new BerthError(ErrorCode.FailedPrecondition, `domain ${snap.name} is still defined; undefine it before deleting its volumes`);
      await this.removeVolume(vmId);
      await this.deletePoolVolume(seedVolumeName(vmId.toLowerCase()));
    });
  }

  /**
   * destroy, undefine, delete the disk and the seed; an absent domain is success (its leftover
   * volumes are removed). Data volumes are detached by the undefine and kept, with their data.
   */
  async delete(vmId: string): Promise<void> {
    this.ensureOpen();
    if (!isUuid(vmId)) return;
    await this.fenced();
    return this.locked(vmId, async () => {
      const snap = await this.lookup(vmId);
      if (snap && !snap.domain) throw new BerthError(ErrorCode.FailedPrecondition, `domain ${snap.name} with uuid ${vmId} is not Berth's; not deleting it`);
      if (snap && isActive(snap.state)) await this.tolerate(this.virsh.run(["destroy", vmId]), ErrorCode.FailedPrecondition);
      if (snap) await this.undefineUnlocked(vmId);
      this.consoles.get(vmId.toLowerCase())?.end({ code: ErrorCode.FailedPrecondition, message: `domain ${snap?.name ?? vmId} was deleted` });
      await this.removeVolume(vmId);
      await this.deletePoolVolume(seedVolumeName(vmId.toLowerCase()));
    });
  }

  /** `virsh metadata ... --config` (and `--live` when active); the same generation again changes nothing. */
  async setGeneration(vmId: string, generation: number): Promise<Domain> {
    this.ensureOpen();
    checkWhole(generation, "generation", 0);
    await this.fenced();
    return this.locked(vmId, () => this.setGenerationUnlocked(vmId, generation));
  }

  /** `domstats --raw` (state, cpu.time, balloon, block, net), with the domain XML in the same call. */
  async stats(vmId: string): Promise<DomainStats> {
    this.ensureOpen();
    if (!isUuid(vmId)) throw notFound(`domain ${vmId}`);
    await this.fenced();
    const id = vmId.toLowerCase();
    const { sections, stderr } = await this.virsh.batch([
      { tag: "xml", args: ["dumpxml", id] },
      { tag: "stats", args: ["domstats", "--raw", "--state", "--cpu-total", "--balloon", "--block", "--interface", id] },
    ]);
    const parsed = parseDomainXml(sections.get("xml") ?? "");
    const record = parseDomstats(sections.get("stats") ?? "")[0];
    if (!parsed || !record) throw lookupFailure(stderr, vmId);
    if (!parsed.metadata) throw notFound(`domain ${vmId}`);
    return statsFromRecord(parsed.metadata.vmId, record, parsed.memoryMib);
  }

  /** `virsh uri` with a short time limit. Never throws. */
  async health(): Promise<HypervisorHealth> {
    if (this.closed) return { available: false, message: "libvirt driver is closed" };
    try {
      const result = await this.virsh.exec(["uri"], { timeoutMs: Math.min(HEALTH_TIMEOUT_MS, this.options.commandTimeoutMs) });
      if (result.exitCode === 0) return { available: true, message: "" };
      return { available: false, message: mapVirshError(result, "virsh uri").message };
    } catch (e) {
      return { available: false, message: e instanceof Error ? e.message : String(e) };
    }
  }

  /** Follows `virsh event --all --loop` while there are subscribers. Never throws. */
  subscribe(listener: (event: DriverEvent) => void): () => void {
    if (this.closed) return () => undefined;
    this.listeners.add(listener);
    if (!this.follower.isRunning) {
      this.follower.start();
      this.eventChain = this.eventChain.then(() => this.learnDomains());
    }
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) void this.follower.stop();
    };
  }

  // ---- migration -------------------------------------------------------------------------------

  /**
   * Destination side: checks the spec, that the name is free, the host big enough and its
   * networks offered here (`nics[i].network`), then readies the storage the migration fills: the
   * image (fetched when missing), the disk (an overlay of the same size over this host's copy of
   * the image, or blank), the seed ISO (rendered here from the same seed: libvirt copies no
   * read-only disk), and the data volumes (empty; the migration copies their data). Returns a
   * target whose `uri` is this driver's `migrationUri`, with `#migrateuri=<migrationDataUri>` when
   * that is set (see `formatMigrationTargetUri`). Idempotent (also once the domain has arrived).
   */
  async prepareIncoming(spec: DomainSpec): Promise<MigrationTarget> {
    this.ensureOpen();
    validateSpec(spec);
    const vmId = spec.vmId.toLowerCase();
    await this.fenced();
    const poolPath = await this.poolPath();
    const uri = formatMigrationTargetUri({ connectionUri: this.options.migrationUri, dataUri: this.options.migrationDataUri, poolPath });
    const target: MigrationTarget = { driver: this.kind, uri, vmId };
    return this.locked(vmId, async () => {
      const existing = await this.lookup(vmId);
      if (existing) {
        if (existing.domain) return target;
        throw new BerthError(ErrorCode.AlreadyExists, `domain ${existing.name} (not Berth's) already exists with uuid ${vmId}`);
      }
      const name = this.domainName(spec.name);
      const other = await this.virsh.exec(["domuuid", name]);
      if (other.exitCode === 0 && other.stdout.trim().toLowerCase() !== vmId) {
        throw new BerthError(ErrorCode.AlreadyExists, `domain ${name} already exists with uuid ${other.stdout.trim()}`);
      }
      await this.checkFits(spec);
      await this.resolveNics(spec);
      const volumes = spec.volumes ?? [];
      const ready = async (): Promise<void> => {
        await this.prepareStorage(spec);
        // What abortMigration removes here, beyond the disk and the seed (named by the vmId).
        if (volumes.length > 0) this.incomingVolumes.set(vmId, volumes.map((v) => dataVolumeName(v.id)));
      };
      await (volumes.length > 0 ? this.volumesLocked(ready) : ready());
      return target;
    });
  }

  /**
   * Source side: `virsh migrate --live --p2p --persistent --undefinesource [--copy-storage-inc
   * --xml <file> | --copy-storage-all] <name> <connection uri> [--migrateuri <data uri>]` (from
   * `target.uri`, see `parseMigrationTargetUri`). `--p2p`: this host's libvirtd drives the
   * migration itself, so it goes on (and ends, defined on the destination, undefined here) even if
   * this process dies. Storage is copied when the domain's disk or data volumes are in this host's
   * pool and the pool is local (not netfs, rbd, gluster, iSCSI...): incrementally (only the
   * overlay's top layer and what volumes hold) for a domain over an image or with data volumes
   * when the target names its pool directory, else whole; once it succeeded the disk, the seed
   * and the data volumes here are deleted (the image stays).
   *
   * While it runs, `virsh domjobinfo --rawstats` is sampled every `progressIntervalMs` (default
   * 500) and passed to `onProgress` (a throwing listener is ignored). Past `timeoutMs` (default
   * `migrationTimeoutMs`) the job is aborted (`domjobabort`) and the call fails with
   * DEADLINE_EXCEEDED; `abortMigration` while it runs makes it fail with FAILED_PRECONDITION
   * ("migration aborted"). Whatever virsh says, a failed migrate is judged by where the domain is
   * (Nova's rule): still active here, it failed (and keeps running here); gone from here, it
   * completed (success). A definition left here but inactive means libvirt did not confirm it
   * (`--undefinesource` undefines only after the destination took over): the guest died, the
   * error is reported. A domain already gone is success; a shut-off one is FAILED_PRECONDITION.
   * INVALID_ARGUMENT for a target of another driver or vmId, or an unreadable `target.uri`.
   */
  async migrateOut(vmId: string, target: MigrationTarget, options: MigrateOutOptions = {}): Promise<void> {
    this.ensureOpen();
    if (target.driver !== this.kind) throw invalidArgument("target.driver", `must be "${this.kind}" (got ${JSON.stringify(target.driver)})`);
    if (typeof target.vmId !== "string" || target.vmId.toLowerCase() !== vmId.toLowerCase()) throw invalidArgument("target.vm_id", `is ${target.vmId}, not ${vmId}`);
    const address = parseMigrationTargetUri(target.uri);
    const timeoutMs = options.timeoutMs ?? this.options.migrationTimeoutMs;
    checkWhole(timeoutMs, "timeout_ms", 1);
    const intervalMs = options.progressIntervalMs ?? DEFAULT_PROGRESS_INTERVAL_MS;
    checkWhole(intervalMs, "progress_interval_ms", 1);
    const onProgress = options.onProgress;
    if (onProgress !== undefined && typeof onProgress !== "function") throw invalidArgument("on_progress", "must be a function");
    if (!isUuid(vmId)) return;
    // Known to abortMigration from now on, so that an abort while this waits (for a fence, for an
    // earlier operation on the domain) is not queued behind the migration it means to stop.
    const key = vmId.toLowerCase();
    const job: MigrationJob = { vmId: key, aborted: false, timedOut: false, started: false, done: false, abort: undefined };
    const jobs = this.migrations.get(key) ?? new Set<MigrationJob>();
    this.migrations.set(key, jobs.add(job));
    try {
      await this.fenced();
      return await this.locked(vmId, () => this.migrateOutUnlocked(job, address, timeoutMs, intervalMs, onProgress));
    } finally {
      job.done = true;
      jobs.delete(job);
      if (jobs.size === 0 && this.migrations.get(key) === jobs) this.migrations.delete(key);
    }
  }

  /** `migrateOut` once it holds the domain's lock. */
  private async migrateOutUnlocked(
    job: MigrationJob,
    address: LibvirtMigrationAddress,
    timeoutMs: number,
    intervalMs: number,
    onProgress: ((p: MigrationProgress) => void) | undefined,
  ): Promise<void> {
    const snap = await this.lookup(job.vmId);
    if (!snap?.domain) return;
    const id = snap.domain.vmId;
    if (!isActive(snap.state)) throw new BerthError(ErrorCode.FailedPrecondition, `domain ${snap.name} is not running; live migration needs a running domain`);
    const local = await this.localVolumes(snap as Snapshot & { domain: Domain });
    // -inc (QEMU's mirror in sync=top): over an image only the overlay's top layer travels (the
    // destination has its own copy of the image, prepareIncoming fetched it), and a disk without a
    // backing file (a data volume) travels as what it holds, staying sparse; -all (sync=full) sends
    // the whole virtual disk, the image's data and the zeros too, and the destination's qcow2
    // ends up allocated in full (measured: a 1 GiB overlay over a 16 MiB image arrives 1 GiB with
    // -all, 200 KiB with -inc). libvirt 9 refuses -inc for disks it would have to create or resolve
    // from a pool at the destination ("pre-creation of storage targets for incremental storage
    // migration is not supported"), so the destination is given its disks by their paths there
    // (`--xml`, from the pool directory its target names). -all stays for a domain with a blank
    // disk alone, and for a destination that named no pool directory (not a directory pool).
    const dataVolumes = local.some((v) => volumeIdOfVolume(v) !== undefined);
    const incremental = local.length > 0 && (snap.domain.imageId !== "" || dataVolumes) && address.poolPath !== undefined;
    const copyFlag = local.length === 0 ? [] : incremental ? ["--copy-storage-inc"] : ["--copy-storage-all"];
    const xmlDir = incremental ? await mkdtemp(path.join(tmpdir(), "berth-migrate-")) : undefined;
    const xmlFile = xmlDir === undefined ? undefined : path.join(xmlDir, "incoming.xml");
    if (xmlFile !== undefined) {
      try {
        const migratable = await this.virsh.run(["dumpxml", "--migratable", id]);
        await writeFile(xmlFile, incomingDiskXml(migratable, this.options.storagePool, address.poolPath!, this.knownPoolPath), { mode: 0o600 });
      } catch (e) {
        await rm(xmlDir!, { recursive: true, force: true });
        throw e;
      }
    }
    const args = [
      "migrate", "--live", "--p2p", "--persistent", "--undefinesource",
      ...copyFlag,
      ...(xmlFile !== undefined ? ["--xml", xmlFile] : []),
      snap.name, address.connectionUri,
      ...(address.dataUri !== undefined ? ["--migrateuri", address.dataUri] : []),
    ];
    if (job.aborted) {
      if (xmlDir !== undefined) await rm(xmlDir, { recursive: true, force: true });
      throw new BerthError(ErrorCode.FailedPrecondition, `migration of ${snap.name} aborted before it started; the domain keeps running here`);
    }
    job.started = true;
    const deadline = setTimeout(() => {
      job.timedOut = true;
      this.abortJob(job).catch(() => undefined);
    }, Math.min(timeoutMs, MAX_TIMER_MS));
    let stopProgress: () => Promise<void> = async () => undefined;
    if (onProgress) stopProgress = this.followProgress(id, intervalMs, onProgress);
    let result: CommandResult;
    try {
      // virsh is killed only as a backstop: the deadline above aborts the job, after which
      // libvirt ends the migrate within the abort's own bound.
      result = await this.virsh.exec(args, { timeoutMs: timeoutMs + this.abortTimeoutMs + MIGRATE_BACKSTOP_MS });
    } finally {
      job.done = true;
      clearTimeout(deadline);
      await stopProgress();
      if (xmlDir !== undefined) await rm(xmlDir, { recursive: true, force: true });
    }
    if (result.exitCode !== 0) {
      const error = mapVirshError(result, `virsh migrate ${snap.name}`);
      if (result.timedOut) {
        job.timedOut = true;
        await this.virsh.exec(["domjobabort", id], { timeoutMs: this.abortTimeoutMs });
      }
      // Decide by where the domain is. If libvirtd cannot say, neither can we: that error.
      const after = await this.lookup(id);
      if (after) {
        if (!isActive(after.state)) throw error;
        if (job.timedOut) {
          throw new BerthError(ErrorCode.DeadlineExceeded, `virsh migrate ${snap.name}: not done within ${timeoutMs} ms; aborted, the domain keeps running here (${error.message})`, { cause: error });
        }
        if (job.aborted) throw new BerthError(ErrorCode.FailedPrecondition, `virsh migrate ${snap.name}: migration aborted; the domain keeps running here`, { cause: error });
        throw error;
      }
    }
    // The name stays known while events are followed: the "Stopped Migrated" event may be
    // handled after this returns, and needs it to name the vmId (the handler forgets it then).
    if (this.listeners.size === 0) this.vmIdByName.delete(snap.name);
    // The destination has its copies now (the seed it made itself): these are garbage.
    for (const name of local) await this.deletePoolVolume(name).catch(() => undefined);
    if (local.length > 0) await this.deletePoolVolume(seedVolumeName(id)).catch(() => undefined);
  }

  /**
   * Destination side: makes the arrived domain persistent (if transient) and running, and records
   * `generation`. (With `--p2p --persistent` it arrives persistent and running: only the generation
   * is written.) FAILED_PRECONDITION while it is still arriving (paused, reason "migrating"):
   * defining it then would leave a persistent copy here if the migration is aborted, and libvirt
   * holds its job lock until the migration ends.
   */
  async finishIncoming(vmId: string, generation: number): Promise<Domain> {
    this.ensureOpen();
    checkWhole(generation, "generation", 0);
    await this.fenced();
    return this.locked(vmId, async () => {
      const snap = await this.get(vmId);
      const id = snap.domain.vmId;
      if (arriving(snap)) {
        throw new BerthError(ErrorCode.FailedPrecondition, `domain ${snap.name} is still arriving (paused: migrating); finish it once the source's migrateOut has returned`);
      }
      const info = await this.virsh.run(["dominfo", id]);
      if (/^Persistent:\s*no/m.test(info)) {
        const xml = await this.virsh.run(["dumpxml", "--inactive", "--migratable", id]);
        await this.virsh.runWithFile(xml, (file) => ["define", file]);
      }
      if (snap.state === LibvirtState.Paused) await this.tolerate(this.virsh.run(["resume", id]), ErrorCode.FailedPrecondition);
      else if (!isActive(snap.state)) await this.tolerate(this.virsh.run(["start", id]), ErrorCode.FailedPrecondition);
      this.incomingVolumes.delete(id);
      return this.setGenerationUnlocked(id, generation, true);
    });
  }

  /**
   * Source (the domain is here and active): `domjobabort`, tolerating "no job" (the domain keeps
   * running). While this driver has a `migrateOut` of the domain under way, the abort does not
   * wait for it: one still waiting (for the domain's lock) will not start its migrate, and for a
   * running one `domjobabort` is sent at once (and again until libvirt has the job, so an abort
   * that comes before the job began still counts); either `migrateOut` fails with
   * FAILED_PRECONDITION unless the switchover had happened. Each `domjobabort` is bounded by 30 s
   * (libvirt can hang on an unresponsive QEMU monitor): past it, DEADLINE_EXCEEDED.
   * Destination (no domain here): deletes the volume `prepareIncoming` created. A domain still
   * arriving (paused: migrating; only the destination of a migration sees it so, or a source
   * with no `migrateOut` of this driver at its switchover) is waited for, within the abort time
   * limit: libvirt cannot abort an incoming migration (`domjobabort` there waits for the job lock
   * the migration holds, then fails), and destroying it could lose a domain that has just
   * switched over; the source's abort (or its switchover) ends it. Then what is here decides:
   * nothing, the volume is deleted; the domain, it stays. Still arriving at the limit:
   * FAILED_PRECONDITION (to be asked again). Idempotent.
   */
  async abortMigration(vmId: string): Promise<void> {
    this.ensureOpen();
    if (!isUuid(vmId)) return;
    const jobs = [...(this.migrations.get(vmId.toLowerCase()) ?? [])];
    if (jobs.length > 0) {
      // Marked first: one that has not started its migrate yet will not start it.
      for (const job of jobs) job.aborted = true;
      await Promise.all(jobs.filter((j) => j.started && !j.done).map((j) => this.abortJob(j)));
      return;
    }
    await this.fenced();
    return this.locked(vmId, async () => {
      let snap = await this.lookup(vmId);
      if (snap && arriving(snap)) snap = await this.untilArrivalEnds(vmId, snap);
      if (snap) {
        if (isActive(snap.state)) await this.domjobabort(snap.domain?.vmId ?? vmId.toLowerCase());
        return;
      }
      await this.removeVolume(vmId);
      await this.deletePoolVolume(seedVolumeName(vmId.toLowerCase()));
      const volumes = this.incomingVolumes.get(vmId.toLowerCase()) ?? [];
      if (volumes.length > 0) {
        await this.volumesLocked(async () => {
          // Copies that did not arrive: nothing here uses them (checked: another domain might).
          const inUse = new Set([...(await this.volumeAttachments(false)).keys()].map(dataVolumeName));
          for (const name of volumes) if (!inUse.has(name)) await this.deletePoolVolume(name);
        });
      }
      this.incomingVolumes.delete(vmId.toLowerCase());
    });
  }

  /**
   * Waits, within the abort time limit, until the domain is no longer arriving (paused:
   * migrating), nor a transient one stopped by the failed arrival and not yet removed by libvirt:
   * resolves it as it is then (undefined: gone). FAILED_PRECONDITION past the limit.
   */
  private async untilArrivalEnds(vmId: string, snap: Snapshot): Promise<Snapshot | undefined> {
    const deadline = performance.now() + this.abortTimeoutMs;
    const ending = async (s: Snapshot): Promise<boolean> =>
      arriving(s) || (!isActive(s.state) && /^Persistent:\s*no/m.test((await this.virsh.exec(["dominfo", vmId.toLowerCase()])).stdout));
    let now: Snapshot | undefined = snap;
    while (now && (await ending(now))) {
      if (performance.now() >= deadline) {
        throw new BerthError(ErrorCode.FailedPrecondition, `domain ${now.name} is still arriving (paused: migrating) after ${this.abortTimeoutMs} ms; its migration ends at the source (abort it there)`);
      }
      await sleep(ABORT_RETRY_MS);
      now = await this.lookup(vmId);
    }
    return now;
  }

  /**
   * Aborts a running `migrateOut`'s job: `domjobabort` until it succeeds or the migrate has ended,
   * within the abort time limit (DEADLINE_EXCEEDED past it). Concurrent calls share one attempt.
   */
  private abortJob(job: MigrationJob): Promise<void> {
    job.abort ??= (async () => {
      const deadline = performance.now() + this.abortTimeoutMs;
      try {
        while (!job.done) {
          const left = Math.max(1, Math.ceil(deadline - performance.now()));
          const result = await this.virsh.exec(["domjobabort", job.vmId], { timeoutMs: left });
          if (result.exitCode === 0) return;
          const error = mapVirshError(result, `virsh domjobabort ${job.vmId}`);
          if (result.timedOut || performance.now() >= deadline) {
            throw new BerthError(ErrorCode.DeadlineExceeded, `virsh domjobabort ${job.vmId}: no answer within ${this.abortTimeoutMs} ms (is QEMU's monitor unresponsive?)`, { cause: error });
          }
          // "No job": the migrate has not started its job yet, or has just finished. Either way the
          // migrate's own end tells; until then, ask again.
          if (!isBerthError(error, ErrorCode.FailedPrecondition) && !isBerthError(error, ErrorCode.NotFound)) throw error;
          await sleep(Math.min(ABORT_RETRY_MS, Math.max(0, deadline - performance.now())));
        }
      } finally {
        job.abort = undefined;
      }
    })();
    return job.abort;
  }

  /** `domjobabort` within the abort time limit; "no job" (or no domain) is success. */
  private async domjobabort(vmId: string): Promise<void> {
    const result = await this.virsh.exec(["domjobabort", vmId], { timeoutMs: this.abortTimeoutMs });
    if (result.exitCode === 0) return;
    const error = mapVirshError(result, `virsh domjobabort ${vmId}`);
    if (result.timedOut) {
      throw new BerthError(ErrorCode.DeadlineExceeded, `virsh domjobabort ${vmId}: no answer within ${this.abortTimeoutMs} ms (is QEMU's monitor unresponsive?)`, { cause: error });
    }
    if (isBerthError(error, ErrorCode.FailedPrecondition) || isBerthError(error, ErrorCode.NotFound)) return;
    throw error;
  }

  /**
   * Samples `domjobinfo --rawstats` every `intervalMs` until the returned stop is called (which
   * resolves once no sample is under way), handing each running job's progress to `listener`.
   */
  private followProgress(vmId: string, intervalMs: number, listener: (p: MigrationProgress) => void): () => Promise<void> {
    let stopped = false;
    let wake: () => void = () => undefined;
    const loop = (async () => {
      while (!stopped) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, intervalMs);
        });
        if (stopped) return;
        const result = await this.virsh.exec(["domjobinfo", "--rawstats", vmId], { timeoutMs: Math.min(this.options.commandTimeoutMs, PROGRESS_TIMEOUT_MS) });
        const progress = result.exitCode === 0 ? parseDomJobInfo(result.stdout) : undefined;
        if (progress === undefined || stopped) continue;
        try {
          listener(progress);
        } catch {
          // The listener's failure is its own: the migration goes on.
        }
      }
    })();
    return async () => {
      stopped = true;
      wake();
      await loop.catch(() => undefined);
    };
  }

  /**
   * The volumes a migration copies: the domain's disk and data volumes when they are in this host's
   * pool and the pool is local to this host (a shared pool is the same storage on both ends:
   * copying would write the disk onto itself); none otherwise. The seed ISO is read-only: libvirt
   * does not copy it (the destination renders its own).
   */
  private async localVolumes(snap: Snapshot & { domain: Domain }): Promise<string[]> {
    const names = snap.parsed.disks
      .filter((d) => d.device === "disk")
      .map((d) => poolVolumeOf(d, this.options.storagePool, this.knownPoolPath))
      .filter((v): v is string => v !== undefined && (v === volumeName(snap.domain.vmId) || volumeIdOfVolume(v) !== undefined));
    if (names.length === 0) return [];
    const pool = await this.virsh.exec(["pool-dumpxml", this.options.storagePool]);
    if (pool.exitCode !== 0) throw this.poolMissing(pool.stderr);
    const type = /<pool\b[^>]*\btype=['"]([^'"]+)['"]/.exec(pool.stdout)?.[1];
    return type === undefined || !SHARED_POOL_TYPES.has(type) ? names : [];
  }

  // ---- fencing ---------------------------------------------------------------------------------

  /**
   * Arms the watchdog or moves its deadline (Unix ms). A deadline that has already passed fires
   * first (a late pet does not undo a fence); a deadline in the past fires at once. `firedAtMs` is
   * reset to 0, unless this call found the deadline passed (then it reports that fire). Then, in this
   * order: the state file is written (if configured), and the device is petted (if configured;
   * opened at the first call, which arms the kernel's timer) — unless a fence is not yet confirmed:
   * then the device is left unpetted, so that the kernel completes the fence by resetting the host.
   * Does not need libvirtd. Idempotent (the same deadline again still pets the device).
   * INVALID_ARGUMENT (`watchdog.deadline_ms`); FAILED_PRECONDITION naming
   * `libvirt.watchdog_state_file` or `libvirt.watchdog_device` when either fails (the timer is armed
   * all the same; a failed write leaves the earlier deadline on disk, which fences sooner).
   */
  async setWatchdog(deadlineMs: number): Promise<void> {
    this.ensureOpen();
    if (typeof deadlineMs !== "number" || !Number.isFinite(deadlineMs) || deadlineMs <= 0) {
      throw invalidArgument("watchdog.deadline_ms", `must be a time in Unix ms > 0 (got ${String(deadlineMs)})`);
    }
    const before = this.wd.firedAtMs;
    this.checkWatchdog();
    // A pet forgets an earlier fire, but not one it finds itself: that is news to its caller.
    if (this.wd.firedAtMs === before) this.wd.firedAtMs = 0;
    this.wd.deadlineMs = deadlineMs;
    this.monoDeadline = monotonicDeadline(deadlineMs);
    this.checkWatchdog(); // a deadline in the past fires at once
    this.scheduleWatchdog();
    let failure: unknown;
    await this.persistWatchdog().catch((e: unknown) => (failure = e));
    if (this.device && this.wd.deadlineMs > 0 && this.fencePendingAt === 0) await this.device.pet();
    if (failure !== undefined) throw failure;
  }

  /**
   * Disarms the watchdog: the state file says so, and the device (if open) gets the magic close.
   * A deadline that has already passed fires first (clearing cannot take back a fence);
   * `firedAtMs` is kept. While a
   * fence is not confirmed (libvirtd did not answer) the device stays open and unpetted: the kernel
   * resets the host. Idempotent. FAILED_PRECONDITION naming the file or the device when either fails.
   */
  async clearWatchdog(): Promise<void> {
    this.ensureOpen();
    this.checkWatchdog();
    this.wd.deadlineMs = 0;
    this.monoDeadline = Infinity;
    this.scheduleWatchdog();
    let failure: unknown;
    await this.persistWatchdog().catch((e: unknown) => (failure = e));
    await this.fencing?.catch(() => undefined);
    if (this.device && this.fencePendingAt === 0) await this.device.disarm();
    if (failure !== undefined) throw failure;
  }

  /** The watchdog as it is now (a passed deadline fires first). Never throws; after close, as it was left. */
  async watchdog(): Promise<WatchdogStatus> {
    if (!this.closed) this.checkWatchdog();
    return { ...this.wd };
  }

  // ---- images, networks, data volumes, console -----------------------------------------------

  /**
   * The images in the pool (`berth-image-<id>.qcow2` volumes), sorted by id: size = the volume's
   * allocation, virtual size = its capacity. A volume an upload cut short left is not listed (it
   * does not start with the qcow2 header, which is uploaded last).
   */
  async listImages(): Promise<HostImage[]> {
    this.ensureOpen();
    return this.images.list(await this.poolInventory());
  }

  /**
   * Makes the pool hold the image (see the contract): fetches `ref.source` (http(s) with Node's
   * fetch, or a local file) into a staging file under `imageStagingDir`, at most `maxImageBytes`,
   * within `imageFetchTimeoutMs`; checks `ref.sha256`; `qemu-img info` must read it as
   * `ref.format` (default qcow2) without a backing or external data file; a raw image is converted
   * to qcow2; then it is uploaded into the pool (`vol-create-as` + `vol-upload`: any pool type) as
   * `berth-image-<id>.qcow2`, its first 4 KiB last. Concurrent calls for one id share one fetch; a
   * failure deletes the partial volume and the staging files.
   */
  async ensureImage(ref: ImageRef): Promise<HostImage> {
    this.ensureOpen();
    await this.fenced();
    return this.images.ensure(ref);
  }

  /**
   * The networks this host offers (see `LibvirtDriverOptions.networks`), sorted by name: libvirt
   * networks with their state (`net-list --all`), configured bridges active when the kernel has them.
   */
  async listNetworks(): Promise<HostNetwork[]> {
    this.ensureOpen();
    return this.listNetworksUnchecked();
  }

  private async listNetworksUnchecked(): Promise<HostNetwork[]> {
    const configured = this.options.networks;
    const wantsLibvirt = configured.length === 0 || configured.some((n) => n.type === "network");
    const listed = wantsLibvirt ? await listLibvirtNetworks(this.virsh) : [];
    return offeredNetworks(configured, listed, (name) => hostHasBridge(name, this.sysClassNet));
  }

  /**
   * The data volumes in the pool (`berth-vol-<id>.qcow2`), sorted by id, with the domain that has
   * each attached (from the domains' XML). Sizes are whole GiB (rounded down).
   */
  async listVolumes(): Promise<HostVolume[]> {
    this.ensureOpen();
    const [infos, attached] = await Promise.all([this.poolInventory(), this.volumeAttachments()]);
    const volumes: HostVolume[] = [];
    for (const [name, info] of infos) {
      const volumeId = volumeIdOfVolume(name);
      if (volumeId === undefined) continue;
      volumes.push({ volumeId, sizeGib: Math.floor(info.capacityBytes / GIB), attachedVmId: attached.get(volumeId) ?? "" });
    }
    return volumes.sort((a, b) => (a.volumeId < b.volumeId ? -1 : a.volumeId > b.volumeId ? 1 : 0));
  }

  /**
   * The pool's images and data volumes, `vol-dumpxml` by name: `vol-list` and one batched
   * `vol-dumpxml`, shared by the calls made while it runs (a report asks for images and volumes at
   * once: one read for both).
   */
  private poolInventory(): Promise<Map<string, VolumeInfo>> {
    this.poolInventoryRead ??= (async () => {
      const names = parseVolList(await this.poolCall(["vol-list", this.options.storagePool])).filter(
        (n) => imageIdOfVolume(n) !== undefined || volumeIdOfVolume(n) !== undefined,
      );
      return volumeInfos(this.virsh, this.options.storagePool, names);
    })().finally(() => (this.poolInventoryRead = undefined));
    return this.poolInventoryRead;
  }

  /** `vol-create-as <pool> berth-vol-<id>.qcow2 <size>G --format qcow2` unless it exists (with that size). */
  async createVolume(ref: VolumeRef): Promise<HostVolume> {
    this.ensureOpen();
    validateVolumeRef(ref, "volume");
    await this.fenced();
    return this.volumesLocked(async () => {
      await this.ensureDataVolume(ref, "volume");
      const attached = (await this.volumeAttachments()).get(ref.id) ?? "";
      return { volumeId: ref.id, sizeGib: ref.sizeGib, attachedVmId: attached };
    });
  }

  /** `vol-delete`, unless a domain has it attached (FAILED_PRECONDITION naming it); absent is success. */
  async deleteVolume(volumeId: string): Promise<void> {
    this.ensureOpen();
    checkObjectId(volumeId, "volume_id");
    await this.fenced();
    return this.volumesLocked(async () => {
      const holder = (await this.volumeAttachments()).get(volumeId);
      if (holder !== undefined) throw new BerthError(ErrorCode.FailedPrecondition, `volume ${volumeId} is attached to domain ${holder}; detach it first`);
      await this.deletePoolVolume(dataVolumeName(volumeId));
    });
  }

  /**
   * Attaches and detaches data volumes so that exactly `volumes` are attached (see the contract).
   * A volume already attached keeps its target (nothing in use is unplugged to reorder); a new one
   * gets the first free virtio target from vdb; the order asked is recorded in the metadata
   * (`Domain.volumeIds` follows it). `virsh detach-disk` / `attach-device` with `--config`, plus
   * `--live` while the domain runs (hot-plug; an unplug completes when the guest lets the disk go:
   * until then the disk is still listed). Missing volumes are created. NOT_FOUND if undefined;
   * FAILED_PRECONDITION for a volume attached to another domain (naming `volumes[i]`).
   */
  async setVolumes(vmId: string, volumes: VolumeRef[]): Promise<Domain> {
    this.ensureOpen();
    if (!Array.isArray(volumes)) throw invalidArgument("volumes", "must be a list");
    volumes.forEach((v, i) => validateVolumeRef(v, `volumes[${i}]`));
    checkDistinctVolumes(volumes);
    if (!isUuid(vmId)) throw notFound(`domain ${vmId}`);
    await this.fenced();
    return this.locked(vmId, () =>
      this.volumesLocked(async () => {
        let snap = await this.get(vmId);
        const id = snap.domain.vmId;
        const pool = this.options.storagePool;
        const current = dataDisksOf(snap.parsed, pool, this.knownPoolPath);
        const wanted = new Set(volumes.map((v) => v.id));
        const attachedTo = await this.volumeAttachments();
        for (const [i, v] of volumes.entries()) {
          const holder = attachedTo.get(v.id);
          if (holder !== undefined && holder !== id) {
            throw new BerthError(ErrorCode.FailedPrecondition, `volume ${quote(v.name || v.id)} is attached to another domain (${holder})`, { field: `volumes[${i}]` });
          }
        }
        const attached = new Set(current.map((c) => c.volumeId));
        const missing = volumes.filter((v) => !attached.has(v.id));
        // Every volume is there (created, or of the right size) before anything is plugged.
        for (const v of missing) await this.ensureDataVolume(v, `volumes[${volumes.indexOf(v)}]`);
        const live = isActive(snap.state) ? ["--live"] : [];
        for (const d of current.filter((c) => !wanted.has(c.volumeId))) await this.detachDisk(id, d.target, live.length > 0);
        // Not the targets just freed: a guest may not have let go of an unplugged disk yet.
        const targets = freeVirtioTargets(snap.parsed.disks.map((d) => d.target), missing.length);
        for (const [j, v] of missing.entries()) {
          const disk = dataDiskXml({ pool, name: dataVolumeName(v.id), target: targets[j]!, serial: dataVolumeSerial(v.id) });
          await this.virsh.runWithFile(disk, (file) => ["attach-device", id, file, "--config", ...live]);
        }
        snap = await this.get(id);
        const order = volumes.map((v) => v.id);
        if (order.join(" ") !== snap.parsed.metadata!.volumeIds.join(" ")) {
          await this.writeMetadata(snap, { ...snap.parsed.metadata!, volumeIds: order });
          snap = await this.get(id);
        }
        return snap.domain;
      }),
    );
  }

  /**
   * Opens the domain's serial console (its pty, `openPtyConsole`). One session per domain: another
   * one open is FAILED_PRECONDITION unless `force`, which ends it (FAILED_PRECONDITION "taken over
   * by another session"). NOT_FOUND for an unknown domain, FAILED_PRECONDITION when it is not
   * running. The session ends when the domain stops (its pty closes).
   */
  async openConsole(vmId: string, options: ConsoleOptions = {}): Promise<ConsoleConnection> {
    this.ensureOpen();
    if (!isUuid(vmId)) throw notFound(`domain ${vmId}`);
    await this.fenced();
    return this.locked(vmId, async () => {
      const snap = await this.get(vmId);
      const id = snap.domain.vmId;
      if (snap.domain.state !== DomainState.DOMAIN_STATE_RUNNING) {
        throw new BerthError(ErrorCode.FailedPrecondition, `domain ${snap.name} is not running; its console exists only while it runs`);
      }
      const pty = snap.parsed.consolePty;
      if (pty === undefined) throw new BerthError(ErrorCode.FailedPrecondition, `domain ${snap.name} has no pty console`);
      const held = this.consoles.get(id);
      if (held && !held.isEnded) {
        if (!options.force) throw new BerthError(ErrorCode.FailedPrecondition, `the console of ${snap.name} is in use by another session (force takes it over)`);
        held.end({ code: ErrorCode.FailedPrecondition, message: `the console of ${snap.name} was taken over by another session` });
      }
      const session = await openPtyConsole(pty, snap.name);
      this.consoles.set(id, session);
      session.onEnd(() => {
        if (this.consoles.get(id) === session) this.consoles.delete(id);
      });
      return session;
    });
  }

  /**
   * Detaches the disk at `target` (`--config`, and `--live` when `live`). A disk already being
   * unplugged (the guest has not let go of it yet) is success; so is a disk the definition no
   * longer has (an earlier detach whose live half the guest completed later): then only the live
   * half is asked for.
   */
  private async detachDisk(vmId: string, target: string, live: boolean): Promise<void> {
    const underWay = (e: unknown): boolean => isBerthError(e) && /already in the process of unplug|unplug.*in progress/i.test(e.message);
    try {
      await this.virsh.run(["detach-disk", vmId, target, "--config", ...(live ? ["--live"] : [])]);
    } catch (e) {
      if (underWay(e)) return;
      if (!(isBerthError(e) && /No disk found/i.test(e.message))) throw e;
      if (!live) return;
      try {
        await this.virsh.run(["detach-disk", vmId, target, "--live"]);
      } catch (again) {
        if (underWay(again) || (isBerthError(again) && /No disk found/i.test(again.message))) return;
        throw again;
      }
    }
  }

  /** Runs a pool command; a missing pool is FAILED_PRECONDITION naming it. */
  private async poolCall(args: string[]): Promise<string> {
    try {
      return await this.virsh.run(args);
    } catch (e) {
      if (isBerthError(e, ErrorCode.NotFound)) throw this.poolMissing(e.message);
      throw e;
    }
  }

  /**
   * Kills the event stream child and refuses further calls with HYPERVISOR_UNAVAILABLE; stops the
   * watchdog timer after a fence under way ends. The watchdog device, if open, is closed without
   * the magic character: the kernel keeps counting, so an agent that stops without
   * `clearWatchdog` is still fenced. Console sessions end (HYPERVISOR_UNAVAILABLE). Idempotent.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
    for (const session of this.consoles.values()) session.end({ code: ErrorCode.HypervisorUnavailable, message: "the libvirt driver closed" });
    this.consoles.clear();
    clearTimeout(this.wdTimer);
    clearTimeout(this.retryTimer);
    await this.fencing?.catch(() => undefined);
    await this.device?.release();
    await this.wdWriteChain;
    await this.follower.stop();
    await this.eventChain;
  }

  // ---- internals -------------------------------------------------------------------------------

  /**
   * Fires the watchdog if its armed deadline has passed (wall or monotonic clock): `firedAtMs`
   * records the deadline, the deadline is disarmed, and a fence (destroying every active fence
   * domain) starts unless one is under way. Also restarts a fence left unconfirmed.
   */
  private checkWatchdog(): void {
    const d = this.wd.deadlineMs;
    if (d > 0 && (Date.now() >= d || performance.now() >= this.monoDeadline)) {
      this.wd.firedAtMs = Math.max(this.wd.firedAtMs, d);
      this.wd.deadlineMs = 0;
      this.monoDeadline = Infinity;
      this.fencePendingAt = d;
      clearTimeout(this.wdTimer);
      this.wdTimer = undefined;
    }
    if (this.fencePendingAt !== 0 && !this.fencing && !this.closed) this.startFence();
  }

  /** Waits for a fence that is due: what every operation does first. Throws what the fence threw. */
  private async fenced(): Promise<void> {
    for (;;) {
      this.checkWatchdog();
      if (!this.fencing) return;
      await this.fencing;
    }
  }

  private startFence(): void {
    const attempt = (async () => {
      while (this.fencePendingAt !== 0) {
        const at = this.fencePendingAt;
        await this.destroyFenceDomains();
        if (this.fencePendingAt === at) this.fencePendingAt = 0;
      }
      await this.persistWatchdog();
    })();
    this.fencing = attempt;
    attempt.then(
      () => {
        if (this.fencing === attempt) this.fencing = undefined;
        // The watchdog fired again while the attempt was writing the file: fence again.
        this.checkWatchdog();
      },
      () => {
        if (this.fencing === attempt) this.fencing = undefined;
        // libvirtd did not answer (or the file could not be written): try again soon, on a timer,
        // so the fence completes without waiting for the next operation.
        if (this.closed) return;
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.checkWatchdog(), this.fenceRetryMs);
        this.retryTimer.unref();
      },
    );
  }

  /**
   * Destroys every active fence domain. Domains with an operation under way (a start issued before
   * the deadline may land after it) are looked at again once that operation is done.
   */
  private async destroyFenceDomains(): Promise<void> {
    const busy = new Set(this.locks.keys());
    const fence = (await this.scan(false)).map((s) => s.domain).filter((d) => d.fence);
    for (const d of fence) {
      if (d.state !== DomainState.DOMAIN_STATE_SHUTOFF) await this.tolerate(this.virsh.run(["destroy", d.vmId]), ErrorCode.FailedPrecondition);
    }
    for (const d of fence.filter((x) => busy.has(x.vmId))) {
      await this.locked(d.vmId, async () => {
        const snap = await this.lookup(d.vmId);
        if (snap?.domain?.fence && isActive(snap.state)) await this.tolerate(this.virsh.run(["destroy", d.vmId]), ErrorCode.FailedPrecondition);
      });
    }
  }

  /** Arms the timer for the armed deadline, so a fence needs no call. Unref'd: the deadline is on disk if configured. */
  private scheduleWatchdog(): void {
    clearTimeout(this.wdTimer);
    this.wdTimer = undefined;
    if (this.closed || this.wd.deadlineMs === 0) return;
    const delay = Math.max(0, Math.min(this.wd.deadlineMs - Date.now(), this.monoDeadline - performance.now(), MAX_TIMER_MS));
    this.wdTimer = setTimeout(() => {
      this.wdTimer = undefined;
      if (this.closed) return;
      this.checkWatchdog();
      this.scheduleWatchdog();
    }, delay);
    this.wdTimer.unref();
  }

  /** Writes the watchdog state file (if configured), in order; a queued write carries every change made before it starts. */
  private persistWatchdog(): Promise<void> {
    const file = this.options.watchdogStateFile;
    if (file === undefined) return Promise.resolve();
    if (this.wdQueuedWrite) return this.wdQueuedWrite;
    const write = this.wdWriteChain.then(() => {
      this.wdQueuedWrite = undefined;
      const state: PersistedWatchdog = { deadlineMs: this.wd.deadlineMs, firedAtMs: this.wd.firedAtMs, fencePending: this.fencePendingAt !== 0 };
      return writeWatchdogStateFile(file, state);
    });
    this.wdQueuedWrite = write;
    this.wdWriteChain = write.catch(() => undefined);
    return write;
  }

  private ensureOpen(): void {
    if (this.closed) throw new BerthError(ErrorCode.HypervisorUnavailable, "libvirt driver is closed");
  }

  /** Runs `fn` after every earlier call on the same vmId. */
  private async locked<T>(vmId: string, fn: () => Promise<T>): Promise<T> {
    const key = vmId.toLowerCase();
    const previous = this.locks.get(key) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    }
  }

  /** Resolves `op`, treating a BerthError with `code` as success. */
  private async tolerate(op: Promise<unknown>, code: ErrorCode): Promise<void> {
    try {
      await op;
    } catch (e) {
      if (!isBerthError(e, code)) throw e;
    }
  }

  /** The domain with uuid `vmId` (one virsh call), or undefined when there is none. */
  private async lookup(vmId: string): Promise<Snapshot | undefined> {
    if (!isUuid(vmId)) return undefined;
    await this.poolPath();
    const id = vmId.toLowerCase();
    const { sections, stderr } = await this.virsh.batch([
      { tag: "xml", args: ["dumpxml", id] },
      { tag: "state", args: ["domstats", "--raw", "--state", id] },
    ]);
    const parsed = parseDomainXml(sections.get("xml") ?? "");
    const record = parseDomstats(sections.get("state") ?? "")[0];
    if (!parsed || !record) {
      const error = lookupFailure(stderr, vmId);
      if (error.code === ErrorCode.NotFound) return undefined;
      throw error;
    }
    const { state, reason } = stateOfRecord(record);
    const domain = parsed.metadata ? this.toDomain(parsed, parsed.metadata, state, reason) : undefined;
    return { name: parsed.name, state, reason, domain, parsed };
  }

  /** The Berth domain with uuid `vmId`; NOT_FOUND when absent or not Berth's. */
  private async get(vmId: string): Promise<Snapshot & { domain: Domain }> {
    const snap = await this.lookup(vmId);
    if (!snap?.domain) throw notFound(`domain ${vmId}`);
    return snap as Snapshot & { domain: Domain };
  }

  /**
   * Berth's view of a domain: from its metadata, its XML's data disks (in the order last asked)
   * and NICs (addresses as last learnt: `list()` reads them again when they are stale).
   */
  private toDomain(parsed: ParsedDomainXml, m: BerthMetadata, state: number, reason: number): Domain {
    const name = parsed.name;
    this.vmIdByName.set(name, m.vmId);
    const prefix = this.options.namePrefix;
    const nics = nicsOfDomain(parsed);
    return {
      vmId: m.vmId,
      fence: m.fence,
      name: m.name || (name.startsWith(prefix) ? name.slice(prefix.length) : name),
      state: domainStateOf(state, reason),
      generation: m.generation,
      resources: { vcpus: parsed.vcpus, memoryMib: parsed.memoryMib, diskGib: m.diskGib },
      interfaces: this.addresses.known(nics, isActive(state)),
      volumeIds: orderedVolumeIds(dataDisksOf(parsed, this.options.storagePool, this.knownPoolPath), m.volumeIds),
      imageId: m.imageId,
    };
  }

  private async undefineUnlocked(vmId: string): Promise<void> {
    const snap = await this.lookup(vmId);
    if (!snap?.domain) return;
    if (isActive(snap.state)) {
      throw new BerthError(ErrorCode.FailedPrecondition, `domain ${snap.name} is active; stop or destroy it before undefining it`);
    }
    try {
      await this.virsh.run(["undefine", snap.domain.vmId, "--managed-save", "--snapshots-metadata", "--checkpoints-metadata", "--nvram"]);
    } catch (e) {
      if (!isBerthError(e, ErrorCode.NotFound)) throw e;
    }
    this.vmIdByName.delete(snap.name);
  }

  private async setGenerationUnlocked(vmId: string, generation: number, force = false): Promise<Domain> {
    const snap = await this.get(vmId);
    const domain = snap.domain;
    if (domain.generation === generation && !force) return domain;
    await this.writeMetadata(snap, { ...snap.parsed.metadata!, generation });
    return { ...domain, generation };
  }

  /** Writes Berth's metadata element whole: `--config`, and `--live` too while the domain is active. */
  private async writeMetadata(snap: Snapshot & { domain: Domain }, metadata: BerthMetadata): Promise<void> {
    const args = ["metadata", snap.domain.vmId, BERTH_XMLNS, "--key", BERTH_XMLNS_KEY, "--set", metadataSetValue(metadata), "--config"];
    if (isActive(snap.state)) {
      try {
        await this.virsh.run([...args, "--live"]);
      } catch (e) {
        // Stopped in between: the persistent definition is what counts.
        if (!isBerthError(e, ErrorCode.FailedPrecondition)) throw e;
        await this.virsh.run(args);
      }
    } else {
      await this.virsh.run(args);
    }
  }

  /**
   * Creates `<vmId>.qcow2` of `diskGib` GiB, blank or a qcow2 overlay over the pool volume
   * `backing` (a qcow2 image: the overlay's header names it with its format, as libvirt requires);
   * resolves whether it was created (false: none asked, or it existed).
   */
  private async createDiskVolume(vmId: string, diskGib: number, backing?: string): Promise<boolean> {
    if (diskGib === 0) return false;
    const overlay = backing === undefined ? [] : ["--backing-vol", backing, "--backing-vol-format", "qcow2"];
    try {
      await this.virsh.run(["vol-create-as", this.options.storagePool, volumeName(vmId), `${diskGib}G`, "--format", "qcow2", ...overlay]);
      return true;
    } catch (e) {
      if (isBerthError(e, ErrorCode.AlreadyExists)) return false;
      if (isBerthError(e, ErrorCode.NotFound)) throw this.poolMissing(e.message);
      throw e;
    }
  }

  /** Deletes `<vmId>.qcow2`; absent is success. */
  private async removeVolume(vmId: string): Promise<void> {
    await this.deletePoolVolume(volumeName(vmId.toLowerCase()));
  }

  /** Deletes the pool volume `name`; absent is success, a missing pool FAILED_PRECONDITION. */
  private async deletePoolVolume(name: string): Promise<void> {
    try {
      await this.virsh.run(["vol-delete", "--pool", this.options.storagePool, name]);
    } catch (e) {
      if (!isBerthError(e, ErrorCode.NotFound)) throw e;
      if (/failed to get pool|Storage pool not found/i.test(e.message)) throw this.poolMissing(e.message);
    }
  }

  /**
   * Builds the seed ISO (`buildSeedIso`) and uploads it as the raw volume `<vmId>-seed.iso`,
   * replacing one left by an earlier attempt (the seed is rendered from the spec: same spec, same
   * bytes). The volume is removed if the upload fails.
   */
  private async createSeedVolume(vmId: string, seed: CloudInitSeed): Promise<void> {
    const name = seedVolumeName(vmId);
    const iso = await buildSeedIso(seed, { genisoimagePath: this.options.genisoimagePath, runner: this.runner, timeoutMs: this.options.commandTimeoutMs, dir: this.options.imageStagingDir });
    try {
      await this.deletePoolVolume(name);
      try {
        await this.virsh.run(["vol-create-as", this.options.storagePool, name, String(iso.bytes), "--format", "raw"]);
      } catch (e) {
        if (isBerthError(e, ErrorCode.NotFound)) throw this.poolMissing(e.message);
        throw e;
      }
      try {
        await this.virsh.run(["vol-upload", "--pool", this.options.storagePool, name, iso.file]);
      } catch (e) {
        await this.deletePoolVolume(name).catch(() => undefined);
        throw e;
      }
    } finally {
      await iso.remove();
    }
  }

  /**
   * Creates the data volume `berth-vol-<id>.qcow2` of `ref.sizeGib` (qcow2, empty) unless it
   * exists; resolves whether it was created. FAILED_PRECONDITION (naming `field`) when it exists
   * with another size. Call under the volumes' lock.
   */
  private async ensureDataVolume(ref: VolumeRef, field: string): Promise<boolean> {
    const name = dataVolumeName(ref.id);
    const existing = (await volumeInfos(this.virsh, this.options.storagePool, [name])).get(name);
    if (existing) {
      if (existing.capacityBytes !== ref.sizeGib * GIB) {
        throw new BerthError(ErrorCode.FailedPrecondition, `volume ${quote(ref.name || ref.id)} exists in the pool with ${existing.capacityBytes} bytes, not ${ref.sizeGib} GiB`, { field });
      }
      return false;
    }
    try {
      await this.virsh.run(["vol-create-as", this.options.storagePool, name, `${ref.sizeGib}G`, "--format", "qcow2"]);
      return true;
    } catch (e) {
      if (isBerthError(e, ErrorCode.AlreadyExists)) return false;
      if (isBerthError(e, ErrorCode.NotFound)) throw this.poolMissing(e.message);
      throw e;
    }
  }

  /**
   * Which domain (vmId) has each data volume attached, from every Berth domain's XML (one scan);
   * with `incoming`, also the volumes `prepareIncoming` readied for a domain still to arrive
   * (they are that domain's: no other may take them meanwhile).
   */
  private async volumeAttachments(incoming = true): Promise<Map<string, string>> {
    const attached = new Map<string, string>();
    for (const { parsed, domain } of await this.scan(false)) {
      for (const d of dataDisksOf(parsed, this.options.storagePool, this.knownPoolPath)) attached.set(d.volumeId, domain.vmId);
    }
    if (incoming) {
      for (const [vmId, names] of this.incomingVolumes) {
        for (const name of names) {
          const id = volumeIdOfVolume(name);
          if (id !== undefined && !attached.has(id)) attached.set(id, vmId);
        }
      }
    }
    return attached;
  }

  /** Runs `fn` after every earlier volume-changing call (create, delete, attach): one at a time. */
  private volumesLocked<T>(fn: () => Promise<T>): Promise<T> {
    return this.locked(VOLUMES_LOCK, fn);
  }

  /**
   * The storage pool's directory (`pool-dumpxml`'s target path), read once: for a dir, fs or netfs
   * pool, whose volumes are files in it; undefined for other pool types. Never throws (a pool that
   * cannot be read now is asked again next time).
   */
  private poolPath(): Promise<string | undefined> {
    this.poolPathRead ??= this.virsh.exec(["pool-dumpxml", this.options.storagePool]).then((r) => {
      if (r.exitCode !== 0) {
        this.poolPathRead = undefined;
        return undefined;
      }
      const type = /<pool\b[^>]*\btype=['"]([^'"]+)['"]/.exec(r.stdout)?.[1];
      const path = /<target>\s*<path>([^<]+)<\/path>/.exec(r.stdout)?.[1];
      this.knownPoolPath = path !== undefined && (type === "dir" || type === "fs" || type === "netfs") ? path : undefined;
      return this.knownPoolPath;
    });
    return this.poolPathRead;
  }

  private poolMissing(detail: string): BerthError {
    return new BerthError(
      ErrorCode.FailedPrecondition,
      `libvirt.storage_pool: storage pool '${this.options.storagePool}' is not usable (${virshErrorText(detail) || "not found"})`,
      { field: "libvirt.storage_pool" },
    );
  }

  /** RESOURCE_EXHAUSTED when the spec asks more vcpus or memory than the host has (nodeinfo, cached). */
  private async checkFits(spec: DomainSpec): Promise<void> {
    if (!this.nodeInfo) {
      const node = parseNodeinfo(await this.virsh.run(["nodeinfo"]));
      if (!node) throw new BerthError(ErrorCode.HypervisorUnavailable, "virsh nodeinfo: unreadable output");
      this.nodeInfo = node;
    }
    const memoryMib = Math.floor(this.nodeInfo.memoryKib / 1024) - this.options.hostReserveMib;
    const reasons: string[] = [];
    if (spec.resources.vcpus > this.nodeInfo.cpus) reasons.push(`vcpus ${spec.resources.vcpus} > the host's ${this.nodeInfo.cpus} CPUs`);
    if (spec.resources.memoryMib > memoryMib) reasons.push(`memory ${spec.resources.memoryMib} MiB > the host's ${memoryMib} MiB`);
    if (reasons.length > 0) {
      throw new BerthError(ErrorCode.ResourceExhausted, `domain ${spec.vmId} does not fit this host: ${reasons.join("; ")}`, { reasons });
    }
  }

  /** The configured domain type, else kvm if `domcapabilities --virttype kvm` works, else qemu (asked once). */
  private domainType(): Promise<"kvm" | "qemu"> {
    if (this.options.domainType) return Promise.resolve(this.options.domainType);
    this.domainTypeOnce ??= this.virsh.exec(["domcapabilities", "--virttype", "kvm"]).then((r) => {
      if (r.exitCode !== 0 && (r.timedOut || r.spawnError !== undefined || isConnectionFailure(r.stderr))) {
        this.domainTypeOnce = undefined; // could not ask: ask again next time
        throw mapVirshError(r, "virsh domcapabilities");
      }
      return r.exitCode === 0 ? "kvm" : "qemu";
    });
    return this.domainTypeOnce;
  }

  // ---- events ----------------------------------------------------------------------------------

  private emit(event: DriverEvent): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch {
        // A listener's failure is its own; others still get the event.
      }
    }
  }

  private onFollowerHealth(health: HypervisorHealth): void {
    this.eventChain = this.eventChain.then(async () => {
      if (health.available) await this.learnDomains();
      this.emit({ type: "health", health });
    });
  }

  /** Lists the domains to learn name → vmId (for "Undefined" events) and each one's state. Never throws. */
  private async learnDomains(): Promise<void> {
    try {
      for (const { domain: d } of await this.scan(false)) {
        const kind = d.state === DomainState.DOMAIN_STATE_PAUSED ? "paused" : d.state === DomainState.DOMAIN_STATE_RUNNING ? "started" : "stopped";
        this.lastKind.set(d.vmId, kind);
      }
    } catch {
      // libvirtd is down: the follower reports it.
    }
  }

  /** Lifecycle events of domains named with our prefix, in arrival order, with the domain's state after. */
  private onVirshEvent(event: VirshEvent): void {
    if (event.type !== "lifecycle" || !event.domain.startsWith(this.options.namePrefix)) return;
    const kind = lifecycleKind(event.detail);
    if (!kind) return;
    this.eventChain = this.eventChain.then(async () => {
      try {
        let vmId = this.vmIdByName.get(event.domain);
        if (vmId === undefined && kind !== "undefined") {
          const r = await this.virsh.exec(["domuuid", event.domain]);
          if (r.exitCode === 0 && isUuid(r.stdout.trim())) vmId = r.stdout.trim().toLowerCase();
        }
        if (vmId === undefined) return;
        const snap = kind === "undefined" ? undefined : await this.lookup(vmId);
        if (snap && !snap.domain) return; // not Berth's
        if (kind === "undefined" || kind === "migrated") {
          if (!snap) this.vmIdByName.delete(event.domain);
        }
        // libvirt starts qemu paused and reports "Resumed Unpaused" just before "Started Booted":
        // a resume only means something after a pause (or when we know nothing before it).
        const last = this.lastKind.get(vmId);
        if (kind === "resumed" && last !== undefined && last !== "paused") return;
        if (kind === "undefined" || kind === "migrated") this.lastKind.delete(vmId);
        else this.lastKind.set(vmId, kind);
        if (this.listeners.size === 0) return;
        this.emit({ type: "domain", vmId, kind, domain: snap?.domain });
      } catch {
        // libvirtd went away while we looked: the health event that follows makes subscribers re-list.
      }
    });
  }
}

// ---- helpers -----------------------------------------------------------------------------------

function isUuid(v: unknown): v is string {
  return typeof v === "string" && UUID_RE.test(v);
}

/** Why a lookup found nothing: NOT_FOUND, or what virsh said went wrong. */
function lookupFailure(stderr: string, vmId: string): BerthError {
  if (stderr.trim() === "") return notFound(`domain ${vmId}`);
  return mapVirshError({ exitCode: 1, stdout: "", stderr, timedOut: false }, `virsh dumpxml ${vmId}`);
}

function shutOff(domain: Domain): Domain {
  return { ...domain, state: DomainState.DOMAIN_STATE_SHUTOFF };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** performance.now() at which the wall-clock time `deadlineMs` comes, as of now; Infinity when disarmed. */
function monotonicDeadline(deadlineMs: number): number {
  return deadlineMs > 0 ? performance.now() + (deadlineMs - Date.now()) : Infinity;
}

function checkWhole(value: unknown, field: string, min: number): void {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
    throw invalidArgument(field, `must be a whole number ≥ ${min} (got ${String(value)})`);
  }
}

/** INVALID_ARGUMENT naming the field, before anything is created. */
function validateSpec(spec: DomainSpec): void {
  if (!isUuid(spec.vmId)) throw invalidArgument("domain.vm_id", `must be a UUID (libvirt's domain uuid), got ${JSON.stringify(spec.vmId)}`);
  if (typeof spec.name !== "string" || spec.name === "") throw invalidArgument("domain.name", "is required");
  if (/[/\x00-\x1f\x7f]/.test(spec.name) || spec.name.length > MAX_NAME_LENGTH) {
    throw invalidArgument("domain.name", `must be at most ${MAX_NAME_LENGTH} characters, without '/' or control characters`);
  }
  checkWhole(spec.generation, "domain.generation", 0);
  if (spec.fence !== undefined && typeof spec.fence !== "boolean") throw invalidArgument("domain.fence", `must be a boolean (got ${String(spec.fence)})`);
  const r: unknown = spec.resources;
  if (typeof r !== "object" || r === null) throw invalidArgument("domain.resources", "is required");
  for (const k of RESOURCE_NAMES) {
    checkWhole((r as Record<string, unknown>)[k], `domain.resources.${RESOURCE_FIELD[k]}`, k === "diskGib" ? 0 : 1);
  }
  if (spec.image !== undefined) {
    validateImageRef(spec.image);
    if (spec.resources.diskGib === 0) throw invalidArgument("image", "a VM over an image needs a disk (resources.disk_gib > 0)");
  }
  const nics: unknown = spec.nics ?? [];
  if (!Array.isArray(nics)) throw invalidArgument("nics", "must be a list");
  const macs = new Set<string>();
  nics.forEach((n: unknown, i) => {
    const nic = n as { network?: unknown; mac?: unknown } | null;
    if (typeof nic !== "object" || nic === null || typeof nic.network !== "string" || nic.network === "") throw invalidArgument(`nics[${i}].network`, "is required");
    if (typeof nic.mac !== "string" || (nic.mac !== "" && !isMacAddress(nic.mac))) throw invalidArgument(`nics[${i}].mac`, `must be a MAC address like 52:54:00:12:34:56 (got ${quote(JSON.stringify(nic.mac))})`);
    const mac = (nic.mac || nicMacAddress(spec.vmId.toLowerCase(), i)).toLowerCase();
    if (macs.has(mac)) throw invalidArgument(`nics[${i}].mac`, `${mac} is another NIC's of this VM`);
    macs.add(mac);
  });
  if (spec.cloudInit !== undefined) validateSeed(spec.cloudInit);
  const volumes: unknown = spec.volumes ?? [];
  if (!Array.isArray(volumes)) throw invalidArgument("volumes", "must be a list");
  (volumes as VolumeRef[]).forEach((v, i) => validateVolumeRef(v, `volumes[${i}]`));
  checkDistinctVolumes(volumes as VolumeRef[]);
}

/** INVALID_ARGUMENT naming `field` for a VolumeRef without an id or a size. */
function validateVolumeRef(ref: VolumeRef, field: string): void {
  if (typeof ref !== "object" || ref === null) throw invalidArgument(field, "must be a volume");
  checkObjectId(ref.id, `${field}.id`);
  checkWhole(ref.sizeGib, `${field}.size_gib`, 1);
}

/** INVALID_ARGUMENT for a volume asked twice. */
function checkDistinctVolumes(volumes: readonly VolumeRef[]): void {
  const seen = new Set<string>();
  volumes.forEach((v, i) => {
    if (seen.has(v.id)) throw invalidArgument(`volumes[${i}].id`, `${quote(v.id)} is listed twice`);
    seen.add(v.id);
  });
}
