import type { CloudInitSeed, Domain, DomainState, HostImage, HostNetwork, HostVolume, ImageRef, NicSpec, Resources, VolumeRef } from "@berth/api";

/** A NUMA cell of the host, when the hypervisor knows its topology. */
export interface NumaCell {
  id: number;
  /** Logical CPUs in the cell. */
  cpus: number;
  memoryMib: number;
}

/** What a hypervisor says of its host. */
export interface HostFacts {
  /**
   * Physical capacity offered to VMs, before allocation ratios and the scheduler's reserve:
   * logical CPUs, memory minus the driver's configured host reserve, and the VM storage pool's size.
   */
  capacity: Resources;
  /** The driver's kind, e.g. "fake" or "libvirt". */
  driver: string;
  /** e.g. "Intel(R) Xeon(R) Gold 6338" or "x86_64" when nothing better is known. */
  cpuModel: string;
  /** NUMA cells; empty when unknown. */
  numaCells: NumaCell[];
  /** e.g. "QEMU 7.2.0, libvirt 9.0.0" or "fake 1". */
  hypervisorVersion: string;
}

/** The spec of a domain to define, derived from the VM spec by the agent. */
export interface DomainSpec {
  /** The VM's id (UUID): the domain's identity on the hypervisor (libvirt: the domain's uuid). */
  vmId: string;
  /** The VM's name; drivers may prefix it to make the hypervisor-level name unique. */
  name: string;
  resources: Resources;
  /** The generation of the command that defines it, recorded with the domain. */
  generation: number;
  /**
   * Powered off when the host's watchdog deadline passes (see `setWatchdog`): the VM may be
   * recreated elsewhere once the host is fenced, so this copy must not outlive the fence.
   * Recorded with the domain (`Domain.fence`). Default false.
   */
  fence?: boolean;
  /**
   * The base image of the domain's disk: the disk is a copy-on-write layer of
   * `resources.diskGib` over the host's one copy of the image (`ensureImage` fetches it first when
   * the host has none). INVALID_ARGUMENT (field `image`) when the image's virtual size is larger than
   * the disk, or the disk is 0. Recorded with the domain (`Domain.imageId`). Default: a blank disk.
   */
  image?: ImageRef;
  /**
   * One virtio NIC per entry, in order, on the named network (one of `listNetworks()`), with the
   * given MAC. INVALID_ARGUMENT (field `nics[i].network`) for a network the host does not offer.
   * Reported back with their addresses in `Domain.interfaces`.
   */
  nics?: NicSpec[];
  /**
   * A NoCloud seed for the guest's cloud-init (rendered by `renderNoCloudSeed`), attached as a
   * CD-ROM labelled "cidata"; deleted with the domain's own volumes.
   */
  cloudInit?: CloudInitSeed;
  /** Data volumes to attach at definition (created in the pool when missing); see `setVolumes`. */
  volumes?: VolumeRef[];
}

/** The options of `openConsole`. */
export interface ConsoleOptions {
  /** Take the console from a session that holds it (that one is closed), as `virsh console --force`. */
  force?: boolean;
}

/** Why a console session ended: undefined when closed by `close()`. */
export interface ConsoleEnd {
  /** A BerthError code, e.g. FAILED_PRECONDITION when the domain stopped or another session took over. */
  code: string;
  message: string;
}

/**
 * One session on a domain's serial console: bytes both ways, as a serial line carries them (no
 * line editing or echo added here: what the guest echoes comes back).
 */
export interface ConsoleConnection {
  /** Keystrokes for the guest. Ignored once closed. */
  write(data: Uint8Array): void;
  /** What the guest writes from now on (nothing from before the session is replayed). */
  onData(listener: (data: Uint8Array) => void): void;
  /** Called once, when the session ends for any reason (after `close()`: with undefined). */
  onEnd(listener: (end: ConsoleEnd | undefined) => void): void;
  /** Ends the session. Idempotent. */
  close(): void;
}

/** The host's watchdog as the driver keeps it. */
export interface WatchdogStatus {
  /** The armed deadline (Unix ms); 0 when disarmed. */
  deadlineMs: number;
  /**
   * When the watchdog fired (Unix ms: the deadline that passed unpetted); 0 when it has not fired
   * since the last `setWatchdog`. Persisted: an agent restarted after a fire sees it.
   */
  firedAtMs: number;
}

/** How to stop a domain. */
export interface StopOptions {
  /** Power off at once instead of asking the guest to shut down. */
  force: boolean;
  /**
   * Graceful stops only: how long to wait for the guest before powering it off. Default: the
   * driver's `stopTimeoutMs`. The stop resolves with the domain SHUTOFF either way.
   */
  timeoutMs?: number;
}

/** Counters of one domain; cumulative since the domain last started (as the hypervisor counts). */
export interface DomainStats {
  vmId: string;
  state: DomainState;
  /** CPU time consumed by the guest, in nanoseconds. */
  cpuTimeNs: number;
  /** Memory the guest uses now, in MiB (≤ the domain's memory). */
  memoryUsedMib: number;
  diskReadBytes: number;
  diskWriteBytes: number;
  netRxBytes: number;
  netTxBytes: number;
}

/** The counters of a domain without a process (shut off, crashed): all zero, as libvirt resets them. */
export function idleStats(vmId: string, state: DomainState): DomainStats {
  return { vmId, state, cpuTimeNs: 0, memoryUsedMib: 0, diskReadBytes: 0, diskWriteBytes: 0, netRxBytes: 0, netTxBytes: 0 };
}

/** Whether the hypervisor itself answers. The agent reports this apart from its own liveness. */
export interface HypervisorHealth {
  available: boolean;
  /** Why it is unavailable (empty when available). */
  message: string;
}

/** Why a domain's state changed, as the hypervisor tells it. */
export type DomainEventKind =
  | "defined"
  | "undefined"
  | "started"
  | "stopped"
  | "paused"
  | "resumed"
  | "crashed"
  | "migrated";

/** Something that happened on the hypervisor, pushed (not polled) to subscribers. */
export type DriverEvent =
  | {
      type: "domain";
      vmId: string;
      kind: DomainEventKind;
      /** The domain's state after the event; absent when it no longer exists. */
      domain: Domain | undefined;
    }
  | { type: "health"; health: HypervisorHealth };

/** Where a migrating domain goes, as the destination's `prepareIncoming` describes it. */
export interface MigrationTarget {
  /** The destination driver's kind; a driver refuses a target of another kind. */
  driver: string;
  /** Driver-specific address: libvirt connection URI, or the fake's state directory URI. */
  uri: string;
  vmId: string;
}

/** How far a live migration's transfer is (libvirt: `domjobinfo`); sizes in bytes. */
export interface MigrationProgress {
  dataTotalBytes: number;
  dataProcessedBytes: number;
  dataRemainingBytes: number;
  /** Memory the guest dirties per second while it is copied; 0 when unknown. */
  dirtyRateBytesPerS: number;
  /** Pre-copy pass, 1 for the first full copy. */
  iteration: number;
}

/** Options of `migrateOut`. */
export interface MigrateOutOptions {
  /**
   * Past this the migration job is aborted (the domain keeps running here) and the call fails with
   * DEADLINE_EXCEEDED. Default: the driver's own.
   */
  timeoutMs?: number;
  /** Called with the job's progress while it runs (at most every `progressIntervalMs`); must not throw. */
  onProgress?: (progress: MigrationProgress) => void;
  /** How often progress is sampled (default 500 ms). */
  progressIntervalMs?: number;
}

/**
 * A hypervisor as the agent drives it.
 *
 * Every operation is idempotent: asking for the state a domain is already in succeeds and changes
 * nothing, so the agent may resend after a lost result. Errors are `BerthError`s from @berth/core,
 * with these codes:
 * - NOT_FOUND: no such domain;
 * - ALREADY_EXISTS: a domain with the same name but another vmId is there;
 * - INVALID_ARGUMENT: a bad spec (names the field; nothing is left defined);
 * - RESOURCE_EXHAUSTED: the hypervisor cannot give what the spec asks for;
 * - HYPERVISOR_UNAVAILABLE: the hypervisor does not answer (retry later);
 * - DEADLINE_EXCEEDED: an operation ran past its time limit;
 * - FAILED_PRECONDITION: the domain is in a state the operation cannot start from.
 */
export interface HypervisorDriver {
  readonly kind: string;
  /** Host facts. May throw HYPERVISOR_UNAVAILABLE. */
  hostFacts(): Promise<HostFacts>;
  /** Every domain Berth manages on this host, with its state and recorded generation, sorted by vmId. */
  list(): Promise<Domain[]>;
  /** Defines the domain (SHUTOFF), creating its volume. Idempotent: an existing domain with this vmId is returned as is. */
  define(spec: DomainSpec): Promise<Domain>;
  /** Starts (or resumes) the domain. Idempotent: a running domain is left running. NOT_FOUND if undefined. */
  start(vmId: string): Promise<Domain>;
  /**
   * Stops the domain: graceful (the guest is asked, then powered off after `timeoutMs`) or forced.
   * Idempotent: a shut-off domain stays so. NOT_FOUND if undefined.
   */
  stop(vmId: string, options: StopOptions): Promise<Domain>;
  /** Powers the domain off at once, keeping it defined (libvirt `destroy`). Idempotent. NOT_FOUND if undefined. */
  destroy(vmId: string): Promise<Domain>;
  /** Removes the definition of a shut-off domain, keeping its volumes. Idempotent: absent is success. FAILED_PRECONDITION if active. */
  undefine(vmId: string): Promise<void>;
  /** Deletes the volumes Berth created for the domain. Idempotent: no volumes is success. FAILED_PRECONDITION while defined. */
  deleteVolumes(vmId: string): Promise<void>;
  /** Destroy, undefine and delete volumes in one call. Idempotent: an absent domain is success. */
  delete(vmId: string): Promise<void>;
  /** Records the generation last applied to the domain (libvirt: domain metadata). NOT_FOUND if undefined. */
  setGeneration(vmId: string, generation: number): Promise<Domain>;
  /** Counters of one domain. NOT_FOUND if undefined. Read-only. */
  stats(vmId: string): Promise<DomainStats>;
  /** Counters of every domain Berth manages, sorted by vmId, in one pass (what a report reads). Read-only. */
  statsAll(): Promise<DomainStats[]>;
  /** Probes the hypervisor. Never throws: an unreachable hypervisor is `{ available: false }`. */
  health(): Promise<HypervisorHealth>;
  /**
   * Follows the hypervisor's events until unsubscribed; returns the unsubscribe function. Events are
   * pushed as they happen (libvirt: the event stream, re-established after libvirtd restarts, when a
   * `health` event says so; the subscriber should re-list then). Never throws.
   */
  subscribe(listener: (event: DriverEvent) => void): () => void;

  // ---- migration hooks (used by rebalancing) ---------------------------------------------------

  /**
   * Destination side: gets ready to receive `spec` (checks the name is free, creates the volume).
   * Idempotent: preparing twice returns the same target.
   */
  prepareIncoming(spec: DomainSpec): Promise<MigrationTarget>;
  /**
   * Source side: live-migrates the running domain to `target` and undefines it here once the
   * destination has it. Idempotent: a domain already gone from here (migrated) is success, so a
   * resend after a restart of either side finishes the job. On failure (timeout: DEADLINE_EXCEEDED;
   * abort: FAILED_PRECONDITION) the domain keeps running here. The switchover commits at a single
   * instant: before it the domain is the source's, after it the destination's, whoever is killed
   * when; at no instant does it run on both sides (it is paused for the switchover, and may stay
   * paused at the destination until `finishIncoming`). After a crash, `list()` on the source tells
   * the outcome: the domain still there means the migration did not happen. `abortMigration` on
   * this side while it runs makes it fail with FAILED_PRECONDITION (aborted) unless the switchover
   * has begun.
   */
  migrateOut(vmId: string, target: MigrationTarget, options?: MigrateOutOptions): Promise<void>;
  /**
   * Destination side: makes the received domain persistent and running. Idempotent (also after a
   * restart of this side). NOT_FOUND if nothing arrived; FAILED_PRECONDITION while the source has
   * not given the domain up (its switchover has not committed).
   */
  finishIncoming(vmId: string, generation: number): Promise<Domain>;
  /**
   * Either side: gives up a migration. On the source it cancels a running migration job (the
   * domain keeps running); on the destination it removes what `prepareIncoming` made. A domain that
   * has already arrived is never discarded (its source no longer has it): abort leaves it, and
   * `finishIncoming` takes it on. Idempotent.
   */
  abortMigration(vmId: string): Promise<void>;

  // ---- fencing (host failure handling) ---------------------------------------------------------

  /**
   * Arms the host's watchdog, or moves its deadline (Unix ms): if it is not moved again before the
   * deadline passes, every domain defined with `fence: true` is powered off from the deadline on,
   * as a host reset by a hardware watchdog would be. The rule holds even while the caller is frozen:
   * the fake keeps the deadline in its state file, so any process reading it applies it; libvirt
   * uses a watchdog device when configured, else a timer in the driver (the docs state the residual
   * risk). A deadline that has already passed fires before it is moved (a late pet never undoes a
   * fence), and a fired watchdog powers nothing back on: the domains it powered off stay off until
   * started again. A fired watchdog stays fired (`firedAtMs`, persisted) until the next
   * `setWatchdog`, which resets it — unless that call itself finds the deadline passed: then it
   * reports that fire. Only domains defined with `fence: true` are affected. Idempotent.
   * INVALID_ARGUMENT for a deadline that is not a time > 0.
   */
  setWatchdog(deadlineMs: number): Promise<void>;
  /**
   * Disarms the watchdog (an agent stopping cleanly, or one with no leader's fence timeout). A
   * deadline that has already passed fires first; `firedAtMs` is kept. Idempotent.
   */
  clearWatchdog(): Promise<void>;
  /** The watchdog's deadline (0: disarmed) and when it fired (see `WatchdogStatus`); a passed deadline fires first. Never throws. */
  watchdog(): Promise<WatchdogStatus>;

  // ---- images, networks, data volumes, console (what makes a VM usable) -------------------------

  /** The base images this host holds (one copy each, shared by every domain over it), sorted by id. Read-only. */
  listImages(): Promise<HostImage[]>;
  /**
   * Makes the host hold the image: fetches it from `ref.source` (an http(s) URL, a file:// URL or
   * an absolute path) when missing, checks `ref.sha256` when given, and keeps it in the pool under
   * its id. Idempotent: a held image returns at once; concurrent calls for one image share one
   * fetch. Nothing is left behind by a failed fetch. Errors: INVALID_ARGUMENT (a bad source or
   * format, naming `image.source`/`image.format`), NOT_FOUND (the source has no such file),
   * FAILED_PRECONDITION (checksum mismatch, or not an image of that format), UNAVAILABLE (the
   * source did not answer), DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (the pool is full).
   */
  ensureImage(ref: ImageRef): Promise<HostImage>;
  /** The networks this host offers NICs (libvirt networks and bridges), sorted by name. Read-only. */
  listNetworks(): Promise<HostNetwork[]>;
  /** The data volumes in this host's pool (made by `createVolume` or a definition), sorted by id. Read-only. */
  listVolumes(): Promise<HostVolume[]>;
  /**
   * Makes a data volume of `ref.sizeGib` in the pool, empty. Idempotent: an existing volume of that
   * id is returned (FAILED_PRECONDITION if its size differs). RESOURCE_EXHAUSTED when the pool is full.
   */
  createVolume(ref: VolumeRef): Promise<HostVolume>;
  /**
   * Deletes a data volume and its data. Idempotent: absent is success. FAILED_PRECONDITION while a
   * domain has it attached.
   */
  deleteVolume(volumeId: string): Promise<void>;
  /**
   * Attaches and detaches data volumes so that exactly `volumes` are attached to the domain, in
   * order, creating missing ones in the pool; live (hot-plug) while the domain runs, and in its
   * definition either way. Detached volumes stay in the pool with their data. Idempotent.
   * NOT_FOUND if undefined; FAILED_PRECONDITION if a volume is attached to another domain.
   * `delete` (and `deleteVolumes`) never delete data volumes: they are detached and kept.
   * A migration carries the attached volumes to the destination (which `prepareIncoming` readies
   * from `spec.volumes`) and removes them here once it has committed.
   */
  setVolumes(vmId: string, volumes: VolumeRef[]): Promise<Domain>;
  /**
   * Attaches to the domain's serial console. Errors: NOT_FOUND (no such domain), FAILED_PRECONDITION
   * (not running, or another session holds the console and `force` is not set).
   */
  openConsole(vmId: string, options?: ConsoleOptions): Promise<ConsoleConnection>;

  /** Stops following events and releases resources (files, connections, child processes). Idempotent. */
  close(): Promise<void>;
}
