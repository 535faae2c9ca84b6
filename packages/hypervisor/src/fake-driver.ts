import type { CloudInitSeed, HostImage, HostNetwork, HostVolume, ImageRef, NicSpec, VolumeRef } from "@berth/api";
import { randomUUID } from "node:crypto";
import { mkdirSync, readdirSync, unlinkSync } from "node:fs";
import { unlink } from "node:fs/promises";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { domainStateToJSON, DomainState, type Domain, type Resources } from "@berth/api";
import { BerthError, ErrorCode, formatBytes, invalidArgument, notFound, quote, RESOURCE_FIELD, RESOURCE_NAMES } from "@berth/core";
import { renderNoCloudSeed } from "./cloud-init.js";
import {
  idleStats,
  type ConsoleConnection,
  type ConsoleOptions,
  type DomainEventKind,
  type DomainSpec,
  type WatchdogStatus,
  type DomainStats,
  type DriverEvent,
  type HostFacts,
  type HypervisorDriver,
  type HypervisorHealth,
  type MigrateOutOptions,
  type MigrationProgress,
  type MigrationTarget,
  type NumaCell,
  type StopOptions,
} from "./driver.js";
import { realClock, sleep, type FakeClock } from "./fake-clock.js";
import { fakeConsoleBanner, FakeConsoleSession } from "./fake-console.js";
import { DEFAULT_KILL_FRACTION, FaultPlan, type FakeKillPoint, type FaultOp } from "./fake-faults.js";
import { checkImageRef, qcow2VirtualSize, readImageSource, type CheckedImageRef } from "./fake-images.js";
import { fakeAddressFor, MAC_ADDRESS, resolveFakeNetworks, type FakeNetwork, type FakeNetworkOption } from "./fake-network.js";
import { fakeMigrationProgress, fakeMigrationTimeToSend, planFakeMigration } from "./fake-migration.js";
import { DEFAULT_LOAD_PROFILE, demandAt, integrateDemand, validateLoadProfile, type LoadProfile } from "./fake-load.js";
import {
  byVmId,
  compareIds,
  emptyStoredState,
  FAKE_STATE_FILE,
  fakeHandoffFile,
  fakeHandoffStatus,
  fakeInterfacesAt,
  fakeStateFile,
  fencedBy,
  isCount,
  isObject,
  noDevices,
  readHandoff,
  readStoredState,
  resourcesOf,
  serializeHandoff,
  serializeState,
  syncDirectory,
  unavailable,
  volumeName,
  writeFileAtomic,
  ZERO_COUNTS,
  type FakeDataVolume,
  type FakeDevices,
  type FakeHandoff,
  type FakeImage,
  type FakeIncoming,
  type FakeNic,
  type FakeOperationCounts,
  type FakeOutgoing,
  type FakeRuntime,
  type FakeStoredState,
  type FakeVolume,
} from "./fake-state.js";

export * from "./fake-migration.js";
export * from "./fake-network.js";
export { checkImageRef, parseImageSource, qcow2Header, qcow2VirtualSize, QCOW2_MAGIC, type FakeImageSource } from "./fake-images.js";
export { fakeConsoleBanner, fakeConsoleEcho, FakeConsoleSession, type FakeConsoleGuest } from "./fake-console.js";
export { ManualClock, realClock, type FakeClock, type FakeTimer } from "./fake-clock.js";
export * from "./fake-faults.js";
export * from "./fake-load.js";
export {
  effectiveFakeDomains,
  effectiveFakeState,
  FAKE_HANDOFF_FORMAT,
  FAKE_HANDOFF_FORMAT_V1,
  FAKE_HANDOFF_FORMAT_V2,
  FAKE_STATE_FILE,
  FAKE_STATE_FORMAT,
  FAKE_STATE_FORMAT_V1,
  FAKE_STATE_FORMAT_V2,
  FAKE_STATE_FORMAT_V3,
  fakeHandoffFile,
  fakeHandoffStatus,
  fakeInterfacesAt,
  fakeRunningVmIds,
  fakeStateFile,
  readFakeHypervisorState,
  readHandoff as readFakeHandoff,
  readStoredState as readFakeStoredState,
  type FakeDataVolume,
  type FakeDevices,
  type FakeHandoff,
  type FakeHypervisorState,
  type FakeImage,
  type FakeIncoming,
  type FakeNic,
  type FakeOperationCounts,
  type FakeOutgoing,
  type FakeRuntime,
  type FakeStoredState,
  type FakeVolume,
  type FakeWatchdogView,
} from "./fake-state.js";

/** Physical capacity the fake host offers when none is configured: 16 vCPU, 64 GiB memory, 1 TiB disk. */
export const DEFAULT_FAKE_CAPACITY: Readonly<Resources> = Object.freeze({ vcpus: 16, memoryMib: 65536, diskGib: 1024 });

/** How long a graceful stop waits for the guest by default before powering it off. */
export const DEFAULT_FAKE_STOP_TIMEOUT_MS = 60_000;

/** Default of {@link FakeDriverOptions.migrationBandwidthMibPerS}: 1 GiB/s, a 10 Gbit/s link. */
export const DEFAULT_FAKE_MIGRATION_BANDWIDTH_MIB_PER_S = 1024;
/** Default of {@link FakeDriverOptions.migrationMaxDowntimeMs} (Google's p99 pause). */
export const DEFAULT_FAKE_MIGRATION_MAX_DOWNTIME_MS = 300;
/** Default of {@link FakeDriverOptions.migrationTimeoutMs} (as the libvirt driver's). */
export const DEFAULT_FAKE_MIGRATION_TIMEOUT_MS = 600_000;
/** Default of `MigrateOutOptions.progressIntervalMs`. */
export const DEFAULT_FAKE_MIGRATION_PROGRESS_INTERVAL_MS = 500;
/** Default of {@link FakeDriverOptions.imageFetchMibPerS}: about a 3.3 Gbit/s download. */
export const DEFAULT_FAKE_IMAGE_FETCH_MIB_PER_S = 400;
/** Default of {@link FakeDriverOptions.imageFetchTimeoutMs}. */
export const DEFAULT_FAKE_IMAGE_FETCH_TIMEOUT_MS = 60_000;
/** Default of {@link FakeDriverOptions.addressDelayMs}: a guest's DHCP lease a second after it starts. */
export const DEFAULT_FAKE_ADDRESS_DELAY_MS = 1000;

/** The default of {@link FakeDriverOptions.onKill}: the process dies at once, as with `kill -9`. */
export function sigkillSelf(): void {
  process.kill(process.pid, "SIGKILL");
}

/** Configuration of a {@link FakeDriver}. */
export interface FakeDriverOptions {
  /**
   * Directory holding the state file; created (with parents) if missing. One driver per directory.
   * Required unless `persist` is false; then it is only the in-memory host's name (optional).
   */
  stateDir?: string;
  /**
   * false: the **in-memory mode** — the same semantics with no file: the state lives in this
   * process's memory, nothing is read from or written to disk, and there is no control file (no
   * polling; faults through {@link FakeDriver.faults} only). A driver opened again in this process
   * with the same `stateDir` (here a name, default a fresh one) finds the host as the last one left
   * it, as a restarted agent would; migrations go between in-memory hosts of one process (the
   * target is `fake-memory://<name>`). What many simulated hosts in one process use (berth-sim).
   * @default true (the state file in `stateDir`)
   */
  persist?: boolean;
  /** Physical capacity reported by `hostFacts()`; missing fields take {@link DEFAULT_FAKE_CAPACITY}. */
  capacity?: Partial<Resources>;
  /** Default "fake-cpu". */
  cpuModel?: string;
  /** Default: one cell with the whole capacity. */
  numaCells?: NumaCell[];
  /** Default "fake 1". */
  hypervisorVersion?: string;
  /** How long a guest takes to shut down once asked (graceful stop). Default 0. */
  guestShutdownDelayMs?: number;
  /** How long a graceful stop waits for the guest before powering off, unless the call says. Default 60 s. */
  stopTimeoutMs?: number;
  /** Simulated load of every VM not configured otherwise; missing parts take {@link DEFAULT_LOAD_PROFILE}. */
  load?: Partial<LoadProfile>;
  /** How often the control file is checked between operations. Default 1000 ms. */
  faultPollMs?: number;
  /**
   * Live migration: the bandwidth at which `migrateOut` copies memory, MiB/s (> 0), on `clock`.
   * @default 1024 ({@link DEFAULT_FAKE_MIGRATION_BANDWIDTH_MIB_PER_S})
   */
  migrationBandwidthMibPerS?: number;
  /**
   * Live migration: the longest pause of the guest at the switchover, ms (≥ 0). Pre-copy passes go
   * on until what is dirty fits `migrationBandwidthMibPerS` × this.
   * @default 300 ({@link DEFAULT_FAKE_MIGRATION_MAX_DOWNTIME_MS})
   */
  migrationMaxDowntimeMs?: number;
  /**
   * `migrateOut`'s time limit when the call gives no `timeoutMs`, ms (≥ 0).
   * @default 600000 ({@link DEFAULT_FAKE_MIGRATION_TIMEOUT_MS})
   */
  migrationTimeoutMs?: number;
  /**
   * What a `kill` fault (see `FaultPlan.killAt`, `FAKE_KILL_POINTS`) does: end this process at
   * once. Should not return; if it does (a test in one process), the driver acts as dead from
   * there on — it writes nothing more, closes, and the call rejects with HYPERVISOR_UNAVAILABLE —
   * so that a driver opened anew on `stateDir` finds what a killed process would have left.
   * @default {@link sigkillSelf} (`process.kill(process.pid, "SIGKILL")`)
   */
  onKill?: (point: FakeKillPoint, vmId: string) => void;
  /**
   * The networks the host offers NICs (`listNetworks()`); a NIC on another one, or on an inactive
   * one, is refused. Default: one libvirt network `default`, 10.122.0.0/16, active
   * ({@link DEFAULT_FAKE_NETWORKS}); `[]`: none.
   */
  networks?: FakeNetworkOption[];
  /**
   * How long after a domain starts its NICs get their addresses (the DHCP lease), ms on `clock`.
   * @default 1000 ({@link DEFAULT_FAKE_ADDRESS_DELAY_MS})
   */
  addressDelayMs?: number;
  /**
   * How fast `ensureImage` fetches, MiB/s (> 0): a fetch of S MiB takes S / this seconds of `clock`
   * (after the source was really read).
   * @default 400 ({@link DEFAULT_FAKE_IMAGE_FETCH_MIB_PER_S})
   */
  imageFetchMibPerS?: number;
  /**
   * How long an http(s) image source may take to answer and send the image, ms of real time (the
   * network is real): UNAVAILABLE when it has not answered by then, DEADLINE_EXCEEDED when the
   * body is still arriving.
   * @default 60000 ({@link DEFAULT_FAKE_IMAGE_FETCH_TIMEOUT_MS})
   */
  imageFetchTimeoutMs?: number;
  /** Time and timers. Default: the real clock. */
  clock?: FakeClock;
  /**
   * Told when `<stateDir>/fake-faults.json` is refused (bad JSON or an invalid field, named in
   * the message); the file is then ignored. The agent logs it, so an operator sees the mistake.
   */
  onControlFileError?: (message: string) => void;
}

/** {@link FakeDriverOptions} with every default applied and every value checked (the clock aside). */
export interface ResolvedFakeDriverOptions {
  /** The state directory (absolute); in the in-memory mode, the host's name. */
  readonly stateDir: string;
  /** false: the in-memory mode (no state file, no control file). */
  readonly persist: boolean;
  readonly capacity: Readonly<Resources>;
  readonly cpuModel: string;
  readonly numaCells: readonly NumaCell[];
  readonly hypervisorVersion: string;
  readonly guestShutdownDelayMs: number;
  readonly stopTimeoutMs: number;
  readonly load: Readonly<LoadProfile>;
  readonly faultPollMs: number;
  readonly migrationBandwidthMibPerS: number;
  readonly migrationMaxDowntimeMs: number;
  readonly migrationTimeoutMs: number;
  /** Sorted by name. */
  readonly networks: readonly FakeNetwork[];
  readonly addressDelayMs: number;
  readonly imageFetchMibPerS: number;
  readonly imageFetchTimeoutMs: number;
}

/**
 * Applies defaults and validates. Throws BerthError INVALID_ARGUMENT naming the option at fault
 * (`fake_driver.capacity.memory_mib: must be ...`). Pure: no file system access.
 */
export function resolveFakeDriverOptions(options: FakeDriverOptions): ResolvedFakeDriverOptions {
  if (options.persist !== undefined && typeof options.persist !== "boolean") throw invalidArgument("fake_driver.persist", "must be a boolean");
  const persist = options.persist ?? true;
  const stateDir: unknown = persist ? options.stateDir : (options.stateDir ?? `memory-${randomUUID()}`);
  if (typeof stateDir !== "string" || stateDir.trim().length === 0) {
    throw invalidArgument(
      "fake_driver.state_dir",
      persist ? "is required (a directory for the fake hypervisor's state file), unless persist is false" : "must be a non-empty name when given",
    );
  }
  const capacity = { ...DEFAULT_FAKE_CAPACITY };
  const given: Partial<Resources> = options.capacity ?? {};
  for (const key of Object.keys(given)) {
    if (!(RESOURCE_NAMES as readonly string[]).includes(key)) {
      throw invalidArgument(`fake_driver.capacity.${key}`, `unknown resource (known: ${RESOURCE_NAMES.join(", ")})`);
    }
  }
  for (const key of RESOURCE_NAMES) {
    const value: unknown = given[key];
    if (value === undefined) continue;
    const min = key === "diskGib" ? 0 : 1;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
      throw invalidArgument(
        `fake_driver.capacity.${RESOURCE_FIELD[key]}`,
        `must be a whole number ≥ ${min} (got ${String(value)})`,
      );
    }
    capacity[key] = value;
  }
  const text = (v: unknown, field: string, dflt: string): string => {
    if (v === undefined) return dflt;
    if (typeof v !== "string" || v === "") throw invalidArgument(field, "must be a non-empty string");
    return v;
  };
  const ms = (v: unknown, field: string, dflt: number, min = 0): number => {
    if (v === undefined) return dflt;
    if (typeof v !== "number" || !Number.isFinite(v) || v < min) throw invalidArgument(field, `must be a number of ms ≥ ${min} (got ${String(v)})`);
    return v;
  };
  const rate = (v: unknown, field: string, dflt: number): number => {
    if (v === undefined) return dflt;
    if (typeof v !== "number" || !Number.isFinite(v) || !(v > 0)) throw invalidArgument(field, `must be a number of MiB/s > 0 (got ${String(v)})`);
    return v;
  };
  if (options.onKill !== undefined && typeof options.onKill !== "function") throw invalidArgument("fake_driver.on_kill", "must be a function");
  let numaCells: NumaCell[] = [{ id: 0, cpus: capacity.vcpus, memoryMib: capacity.memoryMib }];
  if (options.numaCells !== undefined) {
    if (!Array.isArray(options.numaCells)) throw invalidArgument("fake_driver.numa_cells", "must be a list");
    numaCells = options.numaCells.map((c: unknown, i) => {
      const f = `fake_driver.numa_cells[${i}]`;
      if (!isObject(c)) throw invalidArgument(f, "must be an object");
      for (const k of ["id", "cpus", "memoryMib"] as const) {
        if (!isCount(c[k])) throw invalidArgument(`${f}.${k === "memoryMib" ? "memory_mib" : k}`, `must be a whole number ≥ 0 (got ${String(c[k])})`);
      }
      return { id: c["id"] as number, cpus: c["cpus"] as number, memoryMib: c["memoryMib"] as number };
    });
  }
  const load = { ...DEFAULT_LOAD_PROFILE, ...(options.load === undefined ? {} : validateLoadProfile(options.load, "fake_driver.load")) };
  return Object.freeze({
    stateDir: persist ? path.resolve(stateDir) : stateDir,
    persist,
    capacity: Object.freeze(capacity),
    cpuModel: text(options.cpuModel, "fake_driver.cpu_model", "fake-cpu"),
    numaCells: Object.freeze(numaCells.map((c) => Object.freeze(c))),
    hypervisorVersion: text(options.hypervisorVersion, "fake_driver.hypervisor_version", "fake 1"),
    guestShutdownDelayMs: ms(options.guestShutdownDelayMs, "fake_driver.guest_shutdown_delay_ms", 0),
    stopTimeoutMs: ms(options.stopTimeoutMs, "fake_driver.stop_timeout_ms", DEFAULT_FAKE_STOP_TIMEOUT_MS),
    load: Object.freeze(load),
    faultPollMs: ms(options.faultPollMs, "fake_driver.fault_poll_ms", 1000, 1),
    migrationBandwidthMibPerS: rate(options.migrationBandwidthMibPerS, "fake_driver.migration_bandwidth_mib_per_s", DEFAULT_FAKE_MIGRATION_BANDWIDTH_MIB_PER_S),
    migrationMaxDowntimeMs: ms(options.migrationMaxDowntimeMs, "fake_driver.migration_max_downtime_ms", DEFAULT_FAKE_MIGRATION_MAX_DOWNTIME_MS),
    migrationTimeoutMs: ms(options.migrationTimeoutMs, "fake_driver.migration_timeout_ms", DEFAULT_FAKE_MIGRATION_TIMEOUT_MS),
    networks: Object.freeze(resolveFakeNetworks(options.networks).map((n) => Object.freeze(n))),
    addressDelayMs: ms(options.addressDelayMs, "fake_driver.address_delay_ms", DEFAULT_FAKE_ADDRESS_DELAY_MS),
    imageFetchMibPerS: rate(options.imageFetchMibPerS, "fake_driver.image_fetch_mib_per_s", DEFAULT_FAKE_IMAGE_FETCH_MIB_PER_S),
    imageFetchTimeoutMs: ms(options.imageFetchTimeoutMs, "fake_driver.image_fetch_timeout_ms", DEFAULT_FAKE_IMAGE_FETCH_TIMEOUT_MS, 1),
  });
}

const { DOMAIN_STATE_SHUTOFF: SHUTOFF, DOMAIN_STATE_RUNNING: RUNNING, DOMAIN_STATE_PAUSED: PAUSED, DOMAIN_STATE_CRASHED: CRASHED } =
  DomainState;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** A data volume's id names its file in the pool: a plain file name. */
const VOLUME_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
/** Longest delay a Node timer takes (about 24.8 days); a later deadline is re-checked when it ends. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Simulated I/O per busy vCPU-second: what makes the disk and network counters grow. */
const IO_PER_CPU_SECOND = { diskRead: 8 * MIB, diskWrite: 4 * MIB, netRx: 2 * MIB, netTx: 1 * MIB };

type CountedOperation = keyof FakeOperationCounts;

/**
 * A hypervisor simulated in process, with durable state: the driver of tests and `berth dev`.
 *
 * It keeps libvirt's domain model — a domain is defined (SHUTOFF), RUNNING, PAUSED or CRASHED
 * (its process killed), keyed by vmId, with a unique name, resources, the generation last applied
 * and a volume that outlives undefine — and persists it in `<stateDir>/fake-hypervisor.json`.
 * Every change is written atomically (temp file, fsync, rename, fsync of the directory) before the
 * operation's promise resolves, so an agent killed with SIGKILL and restarted on the same
 * `stateDir` finds its domains exactly as a real hypervisor would have kept them. The file also
 * counts, per vmId, the operations that took effect ({@link FakeOperationCounts});
 * {@link readFakeHypervisorState} reads it from another process.
 *
 * Construction reads the state file synchronously (creating `stateDir` if missing and removing
 * temp files a killed writer left behind); `FakeDriver.open()` is the same as a promise.
 * Operations may be called concurrently: state changes apply in call order and file writes are
 * serialized, never torn or reordered; a no-op (and `list`) resolves only once the changes it
 * reflects are on disk. One driver per `stateDir` at a time. If a write fails, the call rejects
 * with HYPERVISOR_UNAVAILABLE; its change stays in memory and goes to disk with the next write.
 *
 * Capacity is reported by `hostFacts()`; a single domain larger than the host (vCPUs or memory)
 * is refused, the sum is not checked: the controller places within capacity. Time (graceful
 * stops, load, latency, unavailability windows) runs on `options.clock`. Faults are injected
 * through {@link FakeDriver.faults} or the control file (see fake-faults.ts); each VM's CPU and
 * memory demand follows a load pattern (fake-load.ts) that `stats()` reports.
 *
 * Fencing: `setWatchdog` keeps the deadline in the state file, and the rule (an armed deadline
 * that has passed powers off the fence domains started before it) is applied by whoever reads the
 * file (`readFakeHypervisorState`, `fakeRunningVmIds`), at the reader's time: a frozen agent's
 * host is fenced for every other process, as a reset host would be. The driver applies the same
 * rule before every operation and on a timer (so subscribers get "stopped" without a call), and
 * persists it at its next write. A write that would land after the deadline on disk has passed is
 * re-made with the fence applied, so no reader ever sees a fenced domain running again.
 *
 * Migration between two fake drivers (two agents on one machine, each process its own driver):
 * the destination's `prepareIncoming` records an incoming slot (not listed as a domain) and creates
 * the volume; the source's `migrateOut` runs a simulated pre-copy transfer on the clock
 * (fake-migration.ts: memory in use, bandwidth, the VM's dirty rate, the downtime budget), with
 * progress, abort and timeout; then the switchover: it records the switchover in its state file,
 * writes a tentative handoff into the destination's directory, and commits by writing its state
 * file without the domain (its volume stays) and with an `outgoing` record of the handoff's nonce —
 * one atomic rename, the single instant the domain leaves the source. The destination's
 * `finishIncoming` turns a committed handoff into a RUNNING domain and refuses one its source has
 * not committed. So exactly one host holds the domain at every instant, whichever process is killed
 * when: from the commit until `finishIncoming` it is paused at the destination (as libvirt keeps it
 * until Finish) and runs on neither host. Kills at named points are injected with `kill` faults.
 *
 * What makes a VM usable, with libvirt's semantics: base images really read from their source (a
 * file or an http(s) URL) but recorded, not copied, the fetch taking its time on the clock; NICs on
 * the configured networks, each leased an address derived from its MAC `addressDelayMs` after the
 * start; cloud-init seeds rendered and kept with the domain in the state file; data volumes in the
 * pool, attached in order, kept when their domain goes, carried by a migration (they leave the
 * source in its commit's write); a serial console per running domain (banner, then an echo).
 */
export class FakeDriver implements HypervisorDriver {
  readonly kind = "fake";
  readonly options: ResolvedFakeDriverOptions;
  /** Absolute path of the state file; undefined in the in-memory mode. */
  readonly stateFile: string | undefined;
  /** Fault injection: the API layer here, the control file `<stateDir>/fake-faults.json` the other. */
  readonly faults: FaultPlan;

  private readonly clock: FakeClock;
  private readonly domains = new Map<string, Domain>();
  private readonly runtime = new Map<string, FakeRuntime>();
  private readonly load = new Map<string, Partial<LoadProfile>>();
  private readonly volumes = new Map<string, FakeVolume>();
  /** Each domain's NICs, seed and lease (every defined domain has an entry). */
  private readonly devices = new Map<string, FakeDevices>();
  private readonly images = new Map<string, FakeImage>();
  /** Fetches under way by image id: concurrent `ensureImage` calls for one image share one. */
  private readonly imageFetches = new Map<string, Promise<HostImage>>();
  /** The data volumes in the pool by id. */
  private readonly dataVolumes = new Map<string, FakeDataVolume>();
  /** The console session holding each domain's console. */
  private readonly consoles = new Map<string, FakeConsoleSession>();
  private readonly incoming = new Map<string, FakeIncoming>();
  /** Migrations out of here in switchover or committed (the state file's `outgoing`). */
  private readonly outgoing = new Map<string, FakeOutgoing>();
  /** Running `migrateOut` jobs by vmId. */
  private readonly jobs = new Map<string, MigrationJob>();
  private readonly onKill: (point: FakeKillPoint, vmId: string) => void;
  /** A kill fault struck: this driver is dead and writes nothing more. */
  private killed = false;
  private readonly counts = new Map<string, FakeOperationCounts>();
  private nextIncarnation = 1;
  /** The watchdog as this driver keeps it (what `watchdog()` returns). */
  private readonly wd: WatchdogStatus = { deadlineMs: 0, firedAtMs: 0 };
  /**
   * The deadline in the state file as last written (or read at open): other processes go by it, so
   * the driver fences at the earlier of it and its own until a write has landed.
   */
  private durableDeadlineMs = 0;
  /** The latest deadline that has fired, kept when `setWatchdog` resets `firedAtMs` (a fire happens once). */
  private lastFiredMs = 0;
  private wdTimer: { cancel(): void } | undefined;
  private readonly listeners = new Set<(event: DriverEvent) => void>();
  /** Graceful stops waiting for their guest, woken by any change of the domain. */
  private readonly waiters = new Map<string, Set<() => void>>();
  private closed = false;
  /** Tail of the serialized writes; never rejects. */
  private writeChain: Promise<void> = Promise.resolve();
  /** A write queued behind the chain that has not started yet: later changes ride along with it. */
  private queuedWrite: Promise<void> | undefined;

  /** Reads (or creates) the state in `options.stateDir`. Throws INVALID_ARGUMENT or HYPERVISOR_UNAVAILABLE. */
  constructor(options: FakeDriverOptions) {
    this.options = resolveFakeDriverOptions(options);
    this.clock = options.clock ?? realClock;
    this.onKill = options.onKill ?? sigkillSelf;
    let state: FakeStoredState;
    if (this.options.persist) {
      this.stateFile = fakeStateFile(this.options.stateDir);
      try {
        mkdirSync(this.options.stateDir, { recursive: true });
      } catch (e) {
        throw unavailable(`cannot create state directory ${this.options.stateDir}`, e);
      }
      removeStaleTempFiles(this.options.stateDir);
      state = readStoredState(this.options.stateDir, this.clock.now());
    } else {
      this.stateFile = undefined;
      state = memoryHost(this.options.stateDir).read();
    }
    for (const d of state.domains) {
      this.domains.set(d.vmId, d);
      this.devices.set(d.vmId, state.devices[d.vmId] ?? noDevices());
    }
    for (const i of state.images) this.images.set(i.imageId, i);
    for (const v of Object.values(state.dataVolumes)) this.dataVolumes.set(v.volumeId, v);
    for (const [vmId, r] of Object.entries(state.runtime)) this.runtime.set(vmId, r);
    for (const [vmId, l] of Object.entries(state.load)) this.load.set(vmId, l);
    for (const v of state.volumes) this.volumes.set(v.vmId, v);
    for (const s of state.incoming) this.incoming.set(s.vmId, s);
    // A switchover that was under way when the last driver here stopped (its process was killed)
    // never committed: roll it back, the domain runs on here. Its handoff at the destination is
    // then dead (the destination discards it); this driver never commits that nonce.
    let rolledBack = false;
    for (const o of state.outgoing) {
      if (o.phase === "committed") this.outgoing.set(o.vmId, o);
      else rolledBack = true;
    }
    for (const [vmId, c] of Object.entries(state.operations)) this.counts.set(vmId, c);
    this.nextIncarnation = state.nextIncarnation;
    this.wd.deadlineMs = state.watchdog.deadlineMs;
    this.wd.firedAtMs = state.watchdog.firedAtMs;
    this.durableDeadlineMs = state.watchdog.deadlineMs;
    this.lastFiredMs = state.watchdog.firedAtMs;
    this.faults = new FaultPlan(
      this.options.persist ? this.options.stateDir : undefined,
      this.clock,
      {
        crash: (vmId, atMs) => this.killProcess(vmId, atMs),
        beforeLoadChange: () => this.foldCpu(),
        healthChanged: (health) => this.emit({ type: "health", health }),
        controlFileRefused: (message) => options.onControlFileError?.(message),
      },
      this.options.faultPollMs,
    );
    this.faults.start();
    // A deadline that passed while no driver ran (the agent was down or frozen): the host was
    // fenced then, and every reader already sees it so; make the file say it too.
    this.applyWatchdog();
    if (rolledBack) this.persist().catch(() => undefined);
    this.scheduleWatchdog();
  }

  /**
   * The constructor as a promise, for callers that prefer an async factory; resolves once what the
   * opening wrote (a fence that came due, a switchover rolled back) is on disk.
   */
  static async open(options: FakeDriverOptions): Promise<FakeDriver> {
    const driver = new FakeDriver(options);
    await driver.writeChain;
    return driver;
  }

  async hostFacts(): Promise<HostFacts> {
    return this.run("hostFacts", undefined, () => ({
      capacity: { ...this.options.capacity },
      driver: this.kind,
      cpuModel: this.options.cpuModel,
      numaCells: this.options.numaCells.map((c) => ({ ...c })),
      hypervisorVersion: this.options.hypervisorVersion,
    }));
  }

  /** The domains as they are now, sorted by vmId; resolves once every change it reflects is on disk. */
  async list(): Promise<Domain[]> {
    return this.run("list", undefined, async () => {
      const domains = [...this.domains.values()].sort(byVmId).map((d) => this.present(d));
      await this.writeChain;
      return domains;
    });
  }

  /**
   * Defines a SHUTOFF domain and its volume (when diskGib > 0; an existing volume of the vmId is
   * kept). An existing vmId is returned as is. Refuses a name taken by another vmId (domain or
   * incoming slot: ALREADY_EXISTS) and a domain larger than the host (RESOURCE_EXHAUSTED).
   *
   * Devices: with `spec.image` the image is made held first (`ensureImage`: its errors, and its
   * injected faults, are this call's), then a disk smaller than its virtual size, or none, is
   * refused (INVALID_ARGUMENT `image`); the domain records `imageId`. Each NIC must be on one of
   * the host's networks, active (INVALID_ARGUMENT `nics[i].network`), with a MAC
   * (`nics[i].mac`); its address is derived from the MAC within the network's cidr and leased
   * `addressDelayMs` after the start. `spec.cloudInit` is rendered (`renderNoCloudSeed`) and kept
   * with the domain (`FakeDevices.seed`). `spec.volumes` are attached as `setVolumes` would
   * (FAILED_PRECONDITION when one is attached to another domain). A refused spec leaves nothing.
   */
  async define(spec: DomainSpec): Promise<Domain> {
    return this.run("define", spec?.vmId, async () => {
      validateSpec(spec);
      const existing = this.domains.get(spec.vmId);
      if (existing) return this.unchanged(existing);
      this.checkPlacement(spec);
      let nics = this.checkDevices(spec);
      if (spec.image) {
        checkImageFits(undefined, spec);
        const image = await this.ensureImage(spec.image);
        checkImageFits(image, spec);
        // The fetch took time: look again at what other calls did meanwhile.
        const arrived = this.domains.get(spec.vmId);
        if (arrived) return this.unchanged(arrived);
        this.checkPlacement(spec);
        nics = this.checkDevices(spec);
      }
      const domain: Domain = {
        vmId: spec.vmId,
        name: spec.name,
        fence: spec.fence ?? false,
        state: SHUTOFF,
        generation: spec.generation,
        resources: { vcpus: spec.resources.vcpus, memoryMib: spec.resources.memoryMib, diskGib: spec.resources.diskGib },
        interfaces: [],
        volumeIds: [],
        imageId: spec.image?.id ?? "",
      };
      this.domains.set(spec.vmId, domain);
      this.devices.set(spec.vmId, { nics, leaseAtMs: null, ...(spec.cloudInit ? { seed: renderNoCloudSeed(spec.cloudInit) } : {}) });
      domain.volumeIds = this.attachVolumes(spec.vmId, spec.volumes ?? []).volumeIds;
      // The vmId is here again: a record of it leaving no longer commits anything.
      this.outgoing.delete(spec.vmId);
      this.ensureVolume(spec);
      this.emitDomain(spec.vmId, "defined");
      return this.commit(domain, "define");
    });
  }

  /** SHUTOFF or CRASHED → RUNNING (a new incarnation, counters from zero); PAUSED → RUNNING (resumed). Counted as a start. */
  async start(vmId: string): Promise<Domain> {
    return this.run("start", vmId, () => {
      const domain = this.get(vmId);
      if (domain.state === RUNNING) return this.unchanged(domain);
      if (domain.state === PAUSED) this.setRunning(domain);
      else this.boot(domain);
      return this.commit(domain, "start");
    });
  }

  /**
   * SHUTOFF is a no-op. Forced, or from CRASHED: powered off at once. Graceful: the guest shuts
   * down after `guestShutdownDelayMs` — never if it ignores shutdown (fault injection) or is
   * PAUSED — and is powered off after `timeoutMs` (default `stopTimeoutMs`); SHUTOFF either way.
   * Counted as one stop. Concurrent stops of one domain share the outcome.
   */
  async stop(vmId: string, options: StopOptions): Promise<Domain> {
    return this.run("stop", vmId, async () => {
      const domain = this.get(vmId);
      if (domain.state === SHUTOFF) return this.unchanged(domain);
      const force = options?.force === true;
      if (force || domain.state === CRASHED) {
        this.powerOff(domain);
        return this.commit(domain, "stop");
      }
      const timeoutMs = options?.timeoutMs ?? this.options.stopTimeoutMs;
      if (typeof timeoutMs !== "number" || !Number.isFinite(timeoutMs) || timeoutMs < 0) {
        throw invalidArgument("stop.timeout_ms", `must be a number of ms ≥ 0 (got ${String(timeoutMs)})`);
      }
      const incarnation = this.runtime.get(vmId)?.incarnation;
      const guestMs = domain.state === RUNNING && !this.faults.ignoresShutdown(vmId) ? this.options.guestShutdownDelayMs : Infinity;
      const waitMs = Math.min(guestMs, timeoutMs);
      if (waitMs > 0) {
        await this.waitForChange(vmId, waitMs);
        this.ensureOpen();
      }
      const now = this.get(vmId);
      if (now.state === SHUTOFF) return this.unchanged(now);
      // Restarted by someone else meanwhile: that start came after this stop; leave it.
      if (now.state !== CRASHED && this.runtime.get(vmId)?.incarnation !== incarnation) return this.unchanged(now);
      this.powerOff(now);
      return this.commit(now, "stop");
    });
  }

  /** Powers off at once (RUNNING, PAUSED or CRASHED → SHUTOFF), counted as a stop; SHUTOFF is a no-op. */
  async destroy(vmId: string): Promise<Domain> {
    return this.run("destroy", vmId, () => {
      const domain = this.get(vmId);
      if (domain.state === SHUTOFF) return this.unchanged(domain);
      this.powerOff(domain);
      return this.commit(domain, "stop");
    });
  }

  /**
   * Removes a SHUTOFF or CRASHED domain's definition with its seed, keeping its volume; its data
   * volumes are detached and kept. Absent is a no-op. Not counted.
   */
  async undefine(vmId: string): Promise<void> {
    return this.run("undefine", vmId, async () => {
      const domain = this.domains.get(vmId);
      if (!domain) return this.writeChain;
      if (domain.state === RUNNING || domain.state === PAUSED) {
        throw new BerthError(ErrorCode.FailedPrecondition, `domain ${vmId} is ${stateName(domain.state)}; destroy it before undefining`);
      }
      this.forget(vmId);
      this.emitDomain(vmId, "undefined");
      await this.persist();
    });
  }

  /**
   * Deletes the vmId's own disk volume (never a data volume); none is a no-op. FAILED_PRECONDITION
   * while a domain or an incoming slot uses it.
   */
  async deleteVolumes(vmId: string): Promise<void> {
    return this.run("deleteVolumes", vmId, async () => {
      if (this.domains.has(vmId) || this.incoming.has(vmId)) {
        throw new BerthError(
          ErrorCode.FailedPrecondition,
          `domain ${vmId} is ${this.domains.has(vmId) ? "defined" : "an incoming migration"}; its volumes stay`,
        );
      }
      if (!this.volumes.delete(vmId)) return this.writeChain;
      await this.persist();
    });
  }

  /**
   * Destroys (if active), undefines and deletes the volume, counted as one delete; an absent domain
   * is a no-op (a volume it left is still deleted, uncounted). An incoming slot's volume stays. The
   * domain's data volumes are detached and kept.
   */
  async delete(vmId: string): Promise<void> {
    return this.run("delete", vmId, async () => {
      const domain = this.domains.get(vmId);
      const volume = !this.incoming.has(vmId) && this.volumes.has(vmId);
      if (!domain && !volume) return this.writeChain;
      if (domain) {
        if (domain.state === RUNNING || domain.state === PAUSED) {
          this.stopRuntime(domain, SHUTOFF);
          this.emitDomain(vmId, "stopped");
        }
        this.forget(vmId);
        this.emitDomain(vmId, "undefined");
        this.count(vmId, "delete");
      }
      if (volume) this.volumes.delete(vmId);
      await this.persist();
    });
  }

  /** Records `generation` on the domain; the same generation again writes nothing. Not counted. */
  async setGeneration(vmId: string, generation: number): Promise<Domain> {
    return this.run("setGeneration", vmId, () => {
      checkGeneration(generation, "generation");
      const domain = this.get(vmId);
      if (domain.generation === generation) return this.unchanged(domain);
      domain.generation = generation;
      return this.commit(domain);
    });
  }

  /**
   * Counters since the domain last started, from its simulated load: CPU time at its CPU demand
   * while RUNNING (not while PAUSED), memory used at its memory demand, disk and network bytes in
   * proportion to CPU time. All zero while SHUTOFF or CRASHED (no process), as libvirt reports.
   */
  async stats(vmId: string): Promise<DomainStats> {
    return this.run("stats", vmId, () => this.countersOf(vmId, this.get(vmId)));
  }

  /** Every domain's counters, sorted by vmId (a "stats" operation for fault injection, without a vmId). */
  async statsAll(): Promise<DomainStats[]> {
    return this.run("stats", undefined, () => [...this.domains.values()].sort(byVmId).map((d) => this.countersOf(d.vmId, d)));
  }

  private countersOf(vmId: string, domain: Domain): DomainStats {
    const rt = this.runtime.get(vmId);
    const zero = idleStats(vmId, domain.state);
    if (!rt || (domain.state !== RUNNING && domain.state !== PAUSED)) return zero;
    const r = resourcesOf(domain);
    const profile = this.loadOf(vmId);
    const now = this.clock.now();
    const cpuMs = rt.cpuMs + (rt.runningSinceMs === null ? 0 : integrateDemand(profile.cpu, rt.runningSinceMs, now));
    const busySeconds = (cpuMs * r.vcpus) / 1000;
    return {
      ...zero,
      cpuTimeNs: Math.round(cpuMs * r.vcpus * 1e6),
      memoryUsedMib: Math.min(r.memoryMib, Math.round(r.memoryMib * demandAt(profile.memory, now))),
      diskReadBytes: Math.round(busySeconds * IO_PER_CPU_SECOND.diskRead),
      diskWriteBytes: Math.round(busySeconds * IO_PER_CPU_SECOND.diskWrite),
      netRxBytes: Math.round(busySeconds * IO_PER_CPU_SECOND.netRx),
      netTxBytes: Math.round(busySeconds * IO_PER_CPU_SECOND.netTx),
    };
  }

  /** Available unless fault injection says otherwise (or the driver is closed). Never throws. */
  async health(): Promise<HypervisorHealth> {
    if (this.closed) return { available: false, message: "fake hypervisor driver is closed" };
    try {
      this.faults.poll();
    } catch {
      // Polling reads a file; the plan keeps its last view if that fails.
    }
    return this.faults.health();
  }

  /**
   * Calls `listener` synchronously at every change: domain events (defined, undefined, started,
   * stopped, paused, resumed, crashed, migrated) and a health event at each availability change.
   * A listener that throws is ignored. Nothing after close.
   */
  subscribe(listener: (event: DriverEvent) => void): () => void {
    const wrapped = (e: DriverEvent): void => listener(e);
    if (!this.closed) this.listeners.add(wrapped);
    return () => void this.listeners.delete(wrapped);
  }

  // ---- migration -------------------------------------------------------------------------------

  /**
   * Destination: records an incoming slot for `spec` (not a domain: list() does not show it) and
   * creates its volume; returns `{ driver: "fake", uri: "fake://<stateDir>", vmId }`. Preparing
   * again returns the same target. ALREADY_EXISTS if the vmId is defined here or its name is taken.
   * Its devices are checked as `define` checks them (the NICs' networks must be here), its image
   * made held (`ensureImage`), and its data volumes (`spec.volumes`) readied: created when missing,
   * attached to the arriving vmId (FAILED_PRECONDITION when one is attached to another domain).
   */
  async prepareIncoming(spec: DomainSpec): Promise<MigrationTarget> {
    return this.run("prepareIncoming", spec?.vmId, async () => {
      validateSpec(spec);
      const target = { driver: this.kind, uri: this.uriOf(this.options.stateDir), vmId: spec.vmId };
      const prepared = async (): Promise<MigrationTarget | undefined> => {
        if (this.incoming.has(spec.vmId)) {
          await this.writeChain;
          return target;
        }
        if (this.domains.has(spec.vmId)) throw new BerthError(ErrorCode.AlreadyExists, `domain ${spec.vmId} is already defined here`);
        this.checkPlacement(spec);
        this.checkDevices(spec);
        return undefined;
      };
      const again = await prepared();
      if (again) return again;
      if (spec.image) {
        checkImageFits(undefined, spec);
        checkImageFits(await this.ensureImage(spec.image), spec);
        // The fetch took time: look again at what other calls did meanwhile.
        const meanwhile = await prepared();
        if (meanwhile) return meanwhile;
      }
      const readied = this.attachVolumes(spec.vmId, spec.volumes ?? []);
      this.incoming.set(spec.vmId, {
        vmId: spec.vmId,
        name: spec.name,
        resources: { ...spec.resources },
        generation: spec.generation,
        preparedAtMs: this.clock.now(),
        volumeIds: readied.volumeIds,
        createdVolumeIds: readied.created,
      });
      this.ensureVolume(spec);
      await this.persist();
      return target;
    });
  }

  /**
   * Source: live-migrates the RUNNING domain to the prepared destination, on the driver's clock.
   *
   * The transfer (fake-migration.ts) copies the memory in use (from the VM's load pattern; its
   * memory size if none is in use) at `migrationBandwidthMibPerS`, in pre-copy passes that resend
   * what the guest dirtied meanwhile (its load profile's `dirtyRateMibPerS`), until what is dirty
   * fits `migrationBandwidthMibPerS` × `migrationMaxDowntimeMs`. A dirty rate ≥ the bandwidth does
   * not converge: passes go on until `timeoutMs` (default `migrationTimeoutMs`, counted from the
   * call, injected latency included: then DEADLINE_EXCEEDED) or `abortMigration` here (then
   * FAILED_PRECONDITION "migration aborted"); either way the domain runs on here. `onProgress` is
   * called every `progressIntervalMs` (default 500) while the transfer runs.
   *
   * The switchover: the source records it in its state file, writes the handoff (domain,
   * generation, memory in use, load, its own directory, a fresh nonce) into the destination's
   * directory, checks the destination is still prepared, and commits by writing its state file
   * without the domain and with the nonce recorded as migrated out (its volume stays; "migrated"
   * event). A failure before the commit rolls back (the domain runs on here, the handoff is dead);
   * an abort once the switchover has begun does not stop it.
   *
   * Absent here (already migrated, e.g. a resend after a restart): success. A second call while
   * one runs to the same destination shares its outcome; to another: FAILED_PRECONDITION. Not
   * RUNNING, or the destination not prepared: FAILED_PRECONDITION. A domain stopped, crashed or
   * deleted meanwhile fails the migration (FAILED_PRECONDITION).
   */
  async migrateOut(vmId: string, target: MigrationTarget, options: MigrateOutOptions = {}): Promise<void> {
    const calledAt = this.clock.now();
    const given = options ?? {};
    const timeoutMs = given.timeoutMs ?? this.options.migrationTimeoutMs;
    if (!(typeof timeoutMs === "number" && timeoutMs >= 0)) {
      throw invalidArgument("migrate.timeout_ms", `must be a number of ms ≥ 0 (got ${String(timeoutMs)})`);
    }
    const intervalMs = given.progressIntervalMs ?? DEFAULT_FAKE_MIGRATION_PROGRESS_INTERVAL_MS;
    if (!(typeof intervalMs === "number" && Number.isFinite(intervalMs) && intervalMs > 0)) {
      throw invalidArgument("migrate.progress_interval_ms", `must be a number of ms > 0 (got ${String(intervalMs)})`);
    }
    if (given.onProgress !== undefined && typeof given.onProgress !== "function") {
      throw invalidArgument("migrate.on_progress", "must be a function");
    }
    return this.run(
      "migrateOut",
      vmId,
      async () => {
        const destDir = this.destinationOf(vmId, target);
        const running = this.jobs.get(vmId);
        if (running) {
          if (running.destDir !== destDir) {
            throw new BerthError(ErrorCode.FailedPrecondition, `domain ${vmId} is already migrating to fake://${running.destDir}`);
          }
          return running.done;
        }
        const domain = this.domains.get(vmId);
        if (!domain) return this.writeChain;
        if (domain.state !== RUNNING) {
          throw new BerthError(ErrorCode.FailedPrecondition, `domain ${vmId} is ${stateName(domain.state)}; only a running domain migrates`);
        }
        this.requirePrepared(vmId, destDir, target.uri);
        const job = new MigrationJob(destDir, this.clock);
        this.jobs.set(vmId, job);
        job.done = this.migrate(vmId, destDir, job, calledAt + timeoutMs, timeoutMs, intervalMs, given.onProgress).finally(() => {
          if (this.jobs.get(vmId) === job) this.jobs.delete(vmId);
        });
        return job.done;
      },
      timeoutMs,
    );
  }

  /**
   * Destination: turns a committed handoff into a RUNNING domain (a new incarnation) with
   * `generation`, emitting "started", and drops the slot. Already finished: the domain as is.
   * NOT_FOUND if no handoff arrived; FAILED_PRECONDITION while its source has not committed it
   * (the source still runs the domain, or is in the switchover). Not counted.
   */
  async finishIncoming(vmId: string, generation: number): Promise<Domain> {
    return this.run("finishIncoming", vmId, async () => {
      checkGeneration(generation, "generation");
      this.killPoint("finishIncoming:before", vmId);
      const here = this.options.stateDir;
      const existing = this.domains.get(vmId);
      if (existing && !this.incoming.has(vmId)) {
        await this.removeHandoff(here, vmId);
        return this.unchanged(existing);
      }
      const handoff = this.handoffAt(here, vmId);
      if (!handoff) throw notFound(`incoming migration of domain ${vmId}`);
      const status = this.handoffStatus(handoff);
      if (status !== "committed") {
        throw new BerthError(
          ErrorCode.FailedPrecondition,
          `the migration of domain ${vmId} is not committed: its source (${this.uriOf(handoff.from ?? "")}) ${status === "in-doubt" ? "is in the switchover (or was killed in it)" : "still has it (the migration failed or was rolled back)"}`,
        );
      }
      const clash = this.nameOwner(handoff.domain.name);
      if (clash !== undefined && clash !== vmId) {
        throw new BerthError(ErrorCode.AlreadyExists, `domain named ${handoff.domain.name} already exists (vmId ${clash})`);
      }
      const domain: Domain = { ...copyDomain(handoff.domain), state: SHUTOFF, generation };
      this.domains.set(vmId, domain);
      // The same guest, so the same MACs and lease; its addresses are this host's networks'.
      const devices = copyDevices(handoff.devices);
      for (const nic of devices.nics) nic.address = fakeAddressFor(nic.mac, this.options.networks.find((n) => n.name === nic.network)?.cidr ?? "");
      this.devices.set(vmId, devices);
      if (handoff.load) this.load.set(vmId, handoff.load);
      // The data volumes came with it: this host's copies are now the volumes. What the preparation
      // readied and the domain no longer has is undone.
      const slot = this.incoming.get(vmId);
      const carried = new Set(handoff.volumes.map((v) => v.volumeId));
      for (const id of slot?.volumeIds ?? []) {
        if (carried.has(id) || this.dataVolumes.get(id)?.attachedVmId !== vmId) continue;
        if (slot?.createdVolumeIds.includes(id)) this.dataVolumes.delete(id);
        else this.dataVolumes.get(id)!.attachedVmId = "";
      }
      for (const v of handoff.volumes) this.dataVolumes.set(v.volumeId, { ...v, attachedVmId: vmId });
      this.incoming.delete(vmId);
      this.outgoing.delete(vmId);
      this.ensureVolume({ vmId, name: domain.name, resources: resourcesOf(domain), generation });
      this.boot(domain);
      const result = await this.commit(domain);
      this.killPoint("finishIncoming:after", vmId);
      await this.removeHandoff(here, vmId);
      if (this.options.persist) await syncDirectory(here);
      return result;
    });
  }

  /**
   * Either side. Source: a running `migrateOut` of the domain is cancelled — it rejects with
   * FAILED_PRECONDITION, the domain runs on here — unless its switchover has begun (then it
   * completes or fails on its own); resolves once that call has settled. Destination: removes the
   * incoming slot and its volume (unless a domain uses it) and a handoff its source will never
   * commit; a handoff that is committed (the domain has arrived: its source no longer has it) or
   * in doubt (its source is in the switchover, or was killed in it and has not restarted) is kept
   * with its slot, for `finishIncoming`. Idempotent.
   */
  async abortMigration(vmId: string): Promise<void> {
    return this.run("abortMigration", vmId, async () => {
      const job = this.jobs.get(vmId);
      if (job) {
        job.abort();
        await job.done.catch(() => undefined);
      }
      const handoff = this.handoffAt(this.options.stateDir, vmId);
      if (handoff) {
        // The source's state file decides (the one commit point): what it has committed, or may
        // still commit, is the only copy of the domain.
        if (this.handoffStatus(handoff) !== "dead") return this.writeChain;
        await this.removeHandoff(this.options.stateDir, vmId);
      }
      const slot = this.incoming.get(vmId);
      if (!slot) return this.writeChain;
      this.incoming.delete(vmId);
      if (!this.domains.has(vmId)) {
        this.volumes.delete(vmId);
        // The data volumes it readied: the ones it made go, the ones that were here are let go.
        for (const id of slot.volumeIds) {
          const v = this.dataVolumes.get(id);
          if (v?.attachedVmId !== vmId) continue;
          if (slot.createdVolumeIds.includes(id)) this.dataVolumes.delete(id);
          else v.attachedVmId = "";
        }
      }
      await this.persist();
    });
  }

  /** migrateOut's job: the transfer, then the switchover. Rejects with the domain still running here. */
  private async migrate(
    vmId: string,
    destDir: string,
    job: MigrationJob,
    deadline: number,
    timeoutMs: number,
    intervalMs: number,
    onProgress: ((p: MigrationProgress) => void) | undefined,
  ): Promise<void> {
    const domain = this.get(vmId);
    const incarnation = this.runtime.get(vmId)?.incarnation;
    const r = resourcesOf(domain);
    const profile = this.loadOf(vmId);
    const usedMib = this.memoryUsedMib(vmId, domain);
    const plan = planFakeMigration({
      totalMib: usedMib > 0 ? usedMib : r.memoryMib,
      bandwidthMibPerS: this.options.migrationBandwidthMibPerS,
      dirtyRateMibPerS: profile.dirtyRateMibPerS,
      maxDowntimeMs: this.options.migrationMaxDowntimeMs,
    });
    const stillOurs = (): boolean => {
      const d = this.domains.get(vmId);
      return !this.closed && d !== undefined && d.state === RUNNING && this.runtime.get(vmId)?.incarnation === incarnation;
    };
    const changed = (): BerthError =>
      this.closed
        ? new BerthError(ErrorCode.HypervisorUnavailable, `fake hypervisor driver closed during the migration of ${vmId}`)
        : new BerthError(ErrorCode.FailedPrecondition, `domain ${vmId} changed during its migration; it stays here`);

    // ---- the transfer
    const start = this.clock.now();
    const kill = this.faults.pendingKill("migrateOut:transfer", vmId);
    const transferKillAt = kill ? start + fakeMigrationTimeToSend(plan, kill.fraction ?? DEFAULT_KILL_FRACTION) : Infinity;
    const completeAt = start + plan.completeAtMs;
    let nextTick = start + intervalMs;
    let killAt = transferKillAt;
    for (;;) {
      const now = this.clock.now();
      if (job.aborted) throw new BerthError(ErrorCode.FailedPrecondition, `migration of domain ${vmId} aborted; it runs on here`);
      if (!stillOurs()) throw changed();
      if (now >= killAt) {
        this.killPoint("migrateOut:transfer", vmId);
        killAt = Infinity; // the rule was taken by another call meanwhile
      }
      if (now >= completeAt) break;
      if (now >= deadline) {
        throw new BerthError(ErrorCode.DeadlineExceeded, `migration of domain ${vmId} ran past ${timeoutMs} ms and was aborted; it runs on here`);
      }
      if (now >= nextTick) {
        try {
          onProgress?.(fakeMigrationProgress(plan, now - start));
        } catch {
          // The caller's bug must not break the migration.
        }
        while (nextTick <= now) nextTick += intervalMs;
      }
      await job.sleep(Math.min(nextTick, completeAt, deadline, killAt) - now);
    }

    // ---- the switchover: one commit point, the source's state file
    job.switchingOver = true;
    // The data volumes go with the domain: the handoff carries them, the commit removes them here.
    const volumeIds = [...domain.volumeIds];
    const carried = volumeIds.filter((id) => this.dataVolumes.get(id)?.attachedVmId === vmId);
    const sameVolumes = (): boolean => this.domains.get(vmId)?.volumeIds.join("\n") === volumeIds.join("\n");
    const nonce = randomUUID();
    this.outgoing.set(vmId, { vmId, to: destDir, nonce, phase: "switchover", atMs: this.clock.now() });
    const rollBack = async (why: BerthError): Promise<never> => {
      if (this.outgoing.get(vmId)?.nonce === nonce) this.outgoing.delete(vmId);
      if (!this.killed) {
        await this.persist().catch(() => undefined);
        // Dead now (the record is gone), so no reader can take it; removing it is tidiness.
        const left = (() => {
          try {
            return this.handoffAt(destDir, vmId);
          } catch {
            return undefined;
          }
        })();
        if (left?.nonce === nonce) await this.removeHandoff(destDir, vmId);
      }
      throw why;
    };
    try {
      await this.persist();
      await this.writeHandoff(destDir, {
        vmId,
        from: this.options.stateDir,
        nonce,
        domain: copyDomain(domain),
        devices: copyDevices(this.devicesOf(vmId)),
        volumes: carried.map((id) => ({ ...this.dataVolumes.get(id)! })),
        memoryUsedMib: usedMib,
        load: this.load.get(vmId),
        sentAtMs: this.clock.now(),
      });
    } catch (e) {
      return rollBack(e instanceof BerthError ? e : unavailable(`migration of ${vmId}`, e));
    }
    this.killPoint("migrateOut:before-commit", vmId);
    // Volumes attached or detached since the handoff was written: it does not carry what the domain has.
    if (!stillOurs() || !sameVolumes()) return rollBack(changed());
    try {
      // The destination aborted (its slot is gone) or defined the vmId meanwhile: it will not take it.
      this.requirePrepared(vmId, destDir, this.uriOf(destDir));
    } catch (e) {
      return rollBack(e as BerthError);
    }
    this.outgoing.set(vmId, { vmId, to: destDir, nonce, phase: "committed", atMs: this.clock.now() });
    this.forget(vmId);
    // In the same write as the commit: before it the volumes are here, after it at the destination.
    for (const id of carried) this.dataVolumes.delete(id);
    this.emitDomain(vmId, "migrated");
    // The commit point. If this write fails the call rejects though the domain has left in memory:
    // the next write commits it, and until then a restart rolls it back (the handoff is in doubt,
    // then dead) — on disk it is never on both hosts.
    await this.persist();
    this.killPoint("migrateOut:after-switchover", vmId);
  }

  // ---- where the state is: the state directory, or this process's memory (persist: false) ------

  /** How migrations address the host at `place` (a state directory, or an in-memory host's name). */
  private uriOf(place: string): string {
    return this.options.persist ? `fake://${place}` : `${MEMORY_SCHEME}${place}`;
  }

  /** The handoff of `vmId` that arrived at `place`, if any (HYPERVISOR_UNAVAILABLE if unreadable). */
  private handoffAt(place: string, vmId: string): FakeHandoff | undefined {
    if (this.options.persist) return readHandoff(place, vmId);
    const h = memoryHost(place).handoffs.get(vmId);
    return h === undefined ? undefined : structuredClone(h);
  }

  private async writeHandoff(place: string, handoff: FakeHandoff): Promise<void> {
    if (this.options.persist) {
      await writeFileAtomic(fakeHandoffFile(place, handoff.vmId), serializeHandoff(handoff));
      return;
    }
    memoryHost(place).handoffs.set(handoff.vmId, structuredClone(handoff));
  }

  private async removeHandoff(place: string, vmId: string): Promise<void> {
    if (this.options.persist) await unlink(fakeHandoffFile(place, vmId)).catch(() => undefined);
    else memoryHost(place).handoffs.delete(vmId);
  }

  /** {@link fakeHandoffStatus}: what the handoff's source has recorded (its file, or its memory). */
  private handoffStatus(handoff: FakeHandoff): "committed" | "in-doubt" | "dead" {
    if (this.options.persist || handoff.from === undefined || handoff.nonce === undefined) return fakeHandoffStatus(handoff, this.clock.now());
    const record = memoryHost(handoff.from)
      .read()
      .outgoing.find((o) => o.vmId === handoff.vmId && o.nonce === handoff.nonce);
    if (!record) return "dead";
    return record.phase === "committed" ? "committed" : "in-doubt";
  }

  /** FAILED_PRECONDITION unless `destDir` has an incoming slot for `vmId` and no such domain. */
  private requirePrepared(vmId: string, destDir: string, uri: string): void {
    const dest = this.options.persist ? readStoredState(destDir, this.clock.now()) : memoryHost(destDir).read();
    if (dest.domains.some((d) => d.vmId === vmId)) {
      throw new BerthError(ErrorCode.FailedPrecondition, `domain ${vmId} is already defined at the destination ${uri}`);
    }
    if (!dest.incoming.some((s) => s.vmId === vmId)) {
      throw new BerthError(ErrorCode.FailedPrecondition, `destination ${uri} is not prepared for ${vmId} (prepareIncoming first)`);
    }
  }

  /** Memory the guest uses now, MiB (0 when not active). */
  private memoryUsedMib(vmId: string, domain: Domain): number {
    const r = resourcesOf(domain);
    return Math.min(r.memoryMib, Math.round(r.memoryMib * demandAt(this.loadOf(vmId).memory, this.clock.now())));
  }

  /**
   * A kill fault's point: if a kill is armed here for `vmId`, the process dies (`onKill`). If
   * `onKill` returns (a test), the driver dies instead: it writes nothing more and closes, and the
   * call rejects, as the killed process's caller would never have heard back.
   */
  private killPoint(point: FakeKillPoint, vmId: string): void {
    if (this.killed || !this.faults.takeKill(point, vmId)) return;
    this.killed = true;
    this.onKill(point, vmId);
    void this.close();
    throw new BerthError(ErrorCode.HypervisorUnavailable, `fake hypervisor: killed at ${point} of ${vmId} (fault injection)`);
  }

  // ---- beyond the contract ---------------------------------------------------------------------

  /** Pauses a running domain (libvirt `suspend`); PAUSED is a no-op; other states: FAILED_PRECONDITION. */
  async pause(vmId: string): Promise<Domain> {
    this.ensureOpen();
    this.applyWatchdog();
    const domain = this.get(vmId);
    if (domain.state === PAUSED) return this.unchanged(domain);
    this.require(domain, [RUNNING], PAUSED);
    const rt = this.runtime.get(vmId);
    if (rt && rt.runningSinceMs !== null) {
      rt.cpuMs += integrateDemand(this.loadOf(vmId).cpu, rt.runningSinceMs, this.clock.now());
      rt.runningSinceMs = null;
    }
    domain.state = PAUSED;
    this.emitDomain(vmId, "paused");
    return this.commit(domain);
  }

  /** Resumes a paused domain; RUNNING is a no-op; other states: FAILED_PRECONDITION. */
  async resume(vmId: string): Promise<Domain> {
    this.ensureOpen();
    this.applyWatchdog();
    const domain = this.get(vmId);
    if (domain.state === RUNNING) return this.unchanged(domain);
    this.require(domain, [PAUSED], RUNNING);
    this.setRunning(domain);
    return this.commit(domain);
  }

  /**
   * Kills a running or paused domain's process (as `faults.crash` does): CRASHED, with a "crashed"
   * event; CRASHED is a no-op; SHUTOFF: FAILED_PRECONDITION. Works while the hypervisor is unavailable.
   */
  async crash(vmId: string): Promise<Domain> {
    this.ensureOpen();
    this.applyWatchdog();
    const domain = this.get(vmId);
    if (domain.state === CRASHED) return this.unchanged(domain);
    this.require(domain, [RUNNING, PAUSED], CRASHED);
    this.stopRuntime(domain, CRASHED);
    this.emitDomain(vmId, "crashed");
    return this.commit(domain);
  }

  /**
   * Sets (or, with undefined, removes) the VM's own load, kept in the state file. Precedence: the
   * control file's entry for the VM, then this, then the control file's default, then `options.load`.
   */
  async setLoad(vmId: string, profile: Partial<LoadProfile> | undefined): Promise<void> {
    this.ensureOpen();
    this.applyWatchdog();
    this.get(vmId);
    const checked = profile === undefined ? undefined : validateLoadProfile(profile, "load");
    this.foldCpu();
    if (checked) this.load.set(vmId, checked);
    else this.load.delete(vmId);
    await this.persist();
  }

  /** The load pattern the VM follows now. */
  loadOf(vmId: string): LoadProfile {
    const file = this.faults.fileLoad(vmId);
    return { ...this.options.load, ...file.default, ...this.load.get(vmId), ...file.vm };
  }

  /** An id of the domain's running incarnation, new at each start; undefined when not running or paused. */
  incarnation(vmId: string): string | undefined {
    const rt = this.runtime.get(vmId);
    return rt ? `${this.options.stateDir}#${rt.incarnation}` : undefined;
  }

  /** Operation counters of one vmId (zeros if it was never touched), from memory. */
  operationCounts(vmId: string): FakeOperationCounts {
    return { ...(this.counts.get(vmId) ?? ZERO_COUNTS) };
  }

  // ---- fencing ---------------------------------------------------------------------------------

  /**
   * Arms the watchdog or moves its deadline (`deadlineMs`, on the clock's axis: Unix ms with the
   * real clock), written to the state file before it resolves. A deadline that has already passed
   * fires first (a late pet does not undo a fence), and a deadline in the past fires at once.
   * `firedAtMs` is reset to 0, unless this call found the deadline passed (then it reports that fire).
   * Works while the hypervisor is "unavailable" (a watchdog does not need libvirtd) and ignores
   * injected faults. Idempotent. INVALID_ARGUMENT (`watchdog.deadline_ms`) for a deadline that is
   * not a time > 0; HYPERVISOR_UNAVAILABLE if the state file cannot be written (the deadline on
   * disk, the earlier one, still holds).
   */
  async setWatchdog(deadlineMs: number): Promise<void> {
    this.ensureOpen();
    checkDeadline(deadlineMs);
    await this.moveDeadline(deadlineMs, true);
  }

  /**
   * Disarms the watchdog, written before it resolves. A deadline that has already passed fires
   * first: clearing cannot take back a fence. `firedAtMs` is kept. Idempotent. HYPERVISOR_UNAVAILABLE if the state file
   * cannot be written (the deadline on disk still holds).
   */
  async clearWatchdog(): Promise<void> {
    this.ensureOpen();
    await this.moveDeadline(0, false);
  }

  /** The watchdog as it is now (a passed deadline fires first). Never throws; after close, as it was left. */
  async watchdog(): Promise<WatchdogStatus> {
    if (!this.closed) this.applyWatchdog();
    return { ...this.wd };
  }

  // ---- images ------------------------------------------------------------------------------------

  /** The images held, sorted by id (`{imageId, sizeBytes, virtualSizeBytes}`). */
  async listImages(): Promise<HostImage[]> {
    return this.run("listImages", undefined, async () => {
      const images = [...this.images.values()].sort((a, b) => compareIds(a.imageId, b.imageId)).map(hostImageOf);
      await this.writeChain;
      return images;
    });
  }

  /**
   * Makes the host hold the image. Held already: returned at once. Otherwise the source is really
   * read — a file (stat; streamed for the SHA-256 when `ref.sha256` is set) or an http(s) URL
   * (fetched whole within `imageFetchTimeoutMs`) — but no bytes are kept: the fetch then takes
   * size / `imageFetchMibPerS` of the clock (rounded to the ms), the checksum and format are checked (qcow2: the
   * virtual size from its header; raw: the file's size), and the image is recorded. Concurrent
   * calls for one id share one fetch; a failed fetch records nothing. Errors: INVALID_ARGUMENT
   * (`image.id`, `image.source`, `image.format`, `image.sha256`), NOT_FOUND (`image.source`: no such
   * file, HTTP 404/410), FAILED_PRECONDITION (`image.sha256` mismatch; `image.format`: "not a qcow2
   * image"; an unreadable file), UNAVAILABLE (the server did not answer), DEADLINE_EXCEEDED (the
   * body took too long), RESOURCE_EXHAUSTED (larger than the pool). A fault op ("ensureImage").
   */
  async ensureImage(ref: ImageRef): Promise<HostImage> {
    return this.run("ensureImage", undefined, async () => {
      const checked = checkImageRef(ref);
      const held = this.images.get(checked.id);
      if (held) {
        await this.writeChain;
        return hostImageOf(held);
      }
      let fetch = this.imageFetches.get(checked.id);
      if (!fetch) {
        fetch = this.fetchImage(checked).finally(() => this.imageFetches.delete(checked.id));
        this.imageFetches.set(checked.id, fetch);
      }
      return fetch;
    });
  }

  private async fetchImage(ref: CheckedImageRef): Promise<HostImage> {
    const read = await readImageSource(ref.parsedSource, { hash: ref.sha256 !== "", timeoutMs: this.options.imageFetchTimeoutMs });
    this.ensureOpen();
    // The bytes were read (or fetched) at the speed of this machine; the copy a host makes takes
    // the configured bandwidth's time (to the ms: a tiny test image takes none), so a test sees a
    // large image take long.
    await sleep(this.clock, Math.round((read.sizeBytes / MIB / this.options.imageFetchMibPerS) * 1000));
    this.ensureOpen();
    if (ref.sha256 !== "" && read.sha256 !== ref.sha256) {
      throw new BerthError(
        ErrorCode.FailedPrecondition,
        `image.sha256: ${quote(ref.source)} has the SHA-256 ${read.sha256 ?? "?"}, not ${ref.sha256} (checksum mismatch; nothing kept)`,
        { field: "image.sha256" },
      );
    }
    let virtualSizeBytes = read.sizeBytes;
    if (ref.format === "qcow2") {
      const v = qcow2VirtualSize(read.head);
      if (v === undefined) {
        throw new BerthError(ErrorCode.FailedPrecondition, `image.format: ${quote(ref.source)} is not a qcow2 image (no "QFI\\xfb" header)`, {
          field: "image.format",
        });
      }
      virtualSizeBytes = v;
    }
    const poolBytes = this.options.capacity.diskGib * GIB;
    if (read.sizeBytes > poolBytes) {
      throw new BerthError(
        ErrorCode.ResourceExhausted,
        `image ${quote(ref.name || ref.id)} takes ${formatBytes(read.sizeBytes)}; the host's pool has ${formatBytes(poolBytes)}`,
        { field: "image.source" },
      );
    }
    const image: FakeImage = {
      imageId: ref.id,
      name: ref.name,
      source: ref.source,
      format: ref.format,
      sha256: ref.sha256,
      sizeBytes: read.sizeBytes,
      virtualSizeBytes,
      fetchedAtMs: this.clock.now(),
    };
    this.images.set(image.imageId, image);
    await this.persist();
    return hostImageOf(image);
  }

  // ---- networks ----------------------------------------------------------------------------------

  /** The configured networks (`FakeDriverOptions.networks`), sorted by name. */
  async listNetworks(): Promise<HostNetwork[]> {
    return this.run("listNetworks", undefined, () => this.options.networks.map((n) => ({ name: n.name, kind: n.kind, active: n.active })));
  }

  // ---- data volumes ------------------------------------------------------------------------------

  /** The data volumes in the pool, sorted by id (`attachedVmId`: a domain's, or an arriving migration's). */
  async listVolumes(): Promise<HostVolume[]> {
    return this.run("listVolumes", undefined, async () => {
      const volumes = [...this.dataVolumes.values()].sort((a, b) => compareIds(a.volumeId, b.volumeId)).map(hostVolumeOf);
      await this.writeChain;
      return volumes;
    });
  }

  /**
   * Makes an empty data volume of `ref.sizeGib`. Idempotent: an existing one of that id is
   * returned (FAILED_PRECONDITION when its size differs). INVALID_ARGUMENT (`volume.id`,
   * `volume.size_gib`); RESOURCE_EXHAUSTED when it is larger than the pool (the sum is the
   * controller's to keep within capacity, as for domain disks).
   */
  async createVolume(ref: VolumeRef): Promise<HostVolume> {
    return this.run("createVolume", undefined, async () => {
      const [checked] = checkVolumeRefs([ref], "volume", true);
      const existing = this.dataVolumes.get(checked!.id);
      if (existing) {
        if (existing.sizeGib !== checked!.sizeGib) {
          throw new BerthError(
            ErrorCode.FailedPrecondition,
            `volume ${quote(checked!.id)} exists with ${existing.sizeGib} GiB, not ${checked!.sizeGib} GiB`,
            { field: "volume.size_gib" },
          );
        }
        await this.writeChain;
        return hostVolumeOf(existing);
      }
      this.checkVolumeFits(checked!, "volume");
      const volume: FakeDataVolume = { volumeId: checked!.id, name: checked!.name, sizeGib: checked!.sizeGib, attachedVmId: "" };
      this.dataVolumes.set(volume.volumeId, volume);
      await this.persist();
      return hostVolumeOf(volume);
    });
  }

  /** Deletes a data volume. Absent: success. FAILED_PRECONDITION while a domain (or an arriving migration) has it. */
  async deleteVolume(volumeId: string): Promise<void> {
    return this.run("deleteVolume", undefined, async () => {
      if (typeof volumeId !== "string" || volumeId === "") throw invalidArgument("volume_id", "is required");
      const volume = this.dataVolumes.get(volumeId);
      if (!volume) return this.writeChain;
      if (volume.attachedVmId !== "") {
        const holder = this.domains.get(volume.attachedVmId);
        throw new BerthError(
          ErrorCode.FailedPrecondition,
          `volume ${quote(volumeId)} is attached to ${holder ? `domain ${holder.name}` : `an incoming migration of ${volume.attachedVmId}`}; detach it first`,
        );
      }
      this.dataVolumes.delete(volumeId);
      await this.persist();
    });
  }

  /**
   * Makes exactly `volumes` attached to the domain, in order: missing ones are created, others
   * detached (kept in the pool with their data); live while it runs, in its definition either way.
   * The same list again writes nothing. NOT_FOUND for an unknown domain; FAILED_PRECONDITION when
   * a volume is attached to another domain (or an arriving migration); INVALID_ARGUMENT
   * (`volumes[i].id`, `volumes[i].size_gib`); RESOURCE_EXHAUSTED for a new volume larger than the
   * pool. A refused call changes nothing.
   */
  async setVolumes(vmId: string, volumes: VolumeRef[]): Promise<Domain> {
    return this.run("setVolumes", vmId, async () => {
      const refs = checkVolumeRefs(volumes, "volumes");
      const domain = this.get(vmId);
      this.checkAttachable(vmId, refs, "volumes");
      if (domain.volumeIds.join("\n") === refs.map((r) => r.id).join("\n")) return this.unchanged(domain);
      const wanted = new Set(refs.map((r) => r.id));
      for (const id of domain.volumeIds) {
        const v = this.dataVolumes.get(id);
        if (!wanted.has(id) && v?.attachedVmId === vmId) v.attachedVmId = "";
      }
      domain.volumeIds = this.attachVolumes(vmId, refs).volumeIds;
      return this.commit(domain);
    });
  }

  // ---- console -----------------------------------------------------------------------------------

  /**
   * Attaches to the running domain's serial console. The session starts with the guest's banner —
   * `\r\n[berth-fake] <name> booted: hostname <hostname>, <n> ssh keys, address <ip | none yet>\r\n<name> login: `,
   * from its seed and its first NIC's lease — then echoes what is written (CR as CR LF). It ends
   * (FAILED_PRECONDITION) when the domain stops, crashes, is deleted or migrates away, and when a
   * session with `force` takes over ("taken over by another session"); HYPERVISOR_UNAVAILABLE when
   * the driver closes. Errors: NOT_FOUND (no such domain), FAILED_PRECONDITION (not RUNNING;
   * "console in use" by another session without `force`). In process only.
   */
  async openConsole(vmId: string, options: ConsoleOptions = {}): Promise<ConsoleConnection> {
    return this.run("openConsole", vmId, () => {
      const force = options?.force ?? false;
      if (typeof force !== "boolean") throw invalidArgument("console.force", "must be a boolean");
      const domain = this.get(vmId);
      if (domain.state !== RUNNING) {
        throw new BerthError(ErrorCode.FailedPrecondition, `domain ${domain.name} is ${stateName(domain.state)}; its console needs it running`);
      }
      const holder = this.consoles.get(vmId);
      if (holder && !force) {
        throw new BerthError(ErrorCode.FailedPrecondition, `the console of domain ${domain.name} is in use by another session (force takes it over)`);
      }
      holder?.end({ code: ErrorCode.FailedPrecondition, message: `the console of domain ${domain.name} was taken over by another session` });
      const session = new FakeConsoleSession(domain.name, (ended) => {
        if (this.consoles.get(vmId) === ended) this.consoles.delete(vmId);
      });
      this.consoles.set(vmId, session);
      session.output(fakeConsoleBanner(this.guestOf(domain)));
      return session;
    });
  }

  /** What the guest tells of itself on its console: its seed's hostname and keys, its first lease. */
  private guestOf(domain: Domain): { name: string; hostname: string; sshKeys: number; address: string | undefined } {
    let hostname = domain.name;
    let sshKeys = 0;
    const seed = this.devices.get(domain.vmId)?.seed;
    if (seed) {
      // Read as the guest's cloud-init reads it.
      const meta: unknown = parseYaml(seed["meta-data"]);
      if (isObject(meta)) {
        if (typeof meta["local-hostname"] === "string") hostname = meta["local-hostname"];
        if (Array.isArray(meta["public-keys"])) sshKeys = meta["public-keys"].length;
      }
    }
    const address = this.present(domain).interfaces[0]?.ipAddresses[0];
    return { name: domain.name, hostname, sshKeys, address };
  }

  /**
   * Stops timers and events, ends console sessions (HYPERVISOR_UNAVAILABLE), wakes waiting stops
   * (they reject), waits for pending writes; then calls reject with HYPERVISOR_UNAVAILABLE. Idempotent.
   */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.wdTimer?.cancel();
      this.wdTimer = undefined;
      this.faults.stop();
      this.listeners.clear();
      for (const session of [...this.consoles.values()]) session.end({ code: ErrorCode.HypervisorUnavailable, message: "fake hypervisor driver closed" });
      for (const wake of [...this.waiters.values()].flatMap((s) => [...s])) wake();
      // A migration under way fails (before its switchover: the domain stays here).
      for (const job of this.jobs.values()) job.wake();
    }
    await this.writeChain;
  }

  // ---- internals -------------------------------------------------------------------------------

  /**
   * Every contract operation: the control file is checked, injected latency waited, then the call
   * fails if the hypervisor is unavailable or a failure is due; otherwise `body` runs. With no
   * latency, `body` starts synchronously, so changes apply in call order.
   */
  private async run<T>(op: FaultOp, vmId: string | undefined, body: () => T | Promise<T>, timeoutMs?: number): Promise<T> {
    this.ensureOpen();
    this.faults.poll();
    const delay = this.faults.latencyFor(op, vmId);
    if (delay > 0) {
      if (timeoutMs !== undefined && delay > timeoutMs) {
        await sleep(this.clock, timeoutMs);
        throw new BerthError(ErrorCode.DeadlineExceeded, `fake hypervisor: ${op}${vmId ? ` of ${vmId}` : ""} ran past ${timeoutMs} ms`);
      }
      await sleep(this.clock, delay);
      this.ensureOpen();
      this.faults.poll();
    }
    // Before the unavailability check: a watchdog fires whether or not libvirtd answers.
    this.applyWatchdog();
    this.faults.check(op, vmId);
    return body();
  }

  private ensureOpen(): void {
    if (this.closed) throw new BerthError(ErrorCode.HypervisorUnavailable, "fake hypervisor driver is closed");
  }

  private get(vmId: string): Domain {
    const domain = this.domains.get(vmId);
    if (!domain) throw notFound(`domain ${vmId}`);
    return domain;
  }

  private require(domain: Domain, from: readonly DomainState[], to: DomainState): void {
    if (!from.includes(domain.state)) {
      throw new BerthError(
        ErrorCode.FailedPrecondition,
        `domain ${domain.vmId} is ${stateName(domain.state)}; cannot go to ${stateName(to)}`,
      );
    }
  }

  /** The vmId holding `name` (a domain or an incoming slot), if any. */
  private nameOwner(name: string): string | undefined {
    for (const d of this.domains.values()) if (d.name === name) return d.vmId;
    for (const s of this.incoming.values()) if (s.name === name) return s.vmId;
    return undefined;
  }

  private checkPlacement(spec: DomainSpec): void {
    const owner = this.nameOwner(spec.name);
    if (owner !== undefined && owner !== spec.vmId) {
      throw new BerthError(ErrorCode.AlreadyExists, `domain named ${spec.name} already exists (vmId ${owner})`);
    }
    const cap = this.options.capacity;
    for (const k of ["vcpus", "memoryMib"] as const) {
      if (spec.resources[k] > cap[k]) {
        throw new BerthError(
          ErrorCode.ResourceExhausted,
          `domain.resources.${RESOURCE_FIELD[k]}: domain ${spec.vmId} asks for ${spec.resources[k]} ${k === "vcpus" ? "vCPUs" : "MiB"}; the host has ${cap[k]}`,
          { field: `domain.resources.${RESOURCE_FIELD[k]}` },
        );
      }
    }
  }

  /**
   * The host-dependent checks of a spec's devices, before anything changes: every NIC on a network
   * of this host that is active (INVALID_ARGUMENT `nics[i].network`), every data volume attachable
   * (FAILED_PRECONDITION), each new one within the pool (RESOURCE_EXHAUSTED). Returns the NICs with
   * the addresses their leases will give here.
   */
  private checkDevices(spec: DomainSpec): FakeNic[] {
    const nics = (spec.nics ?? []).map((nic, i): FakeNic => {
      const network = this.options.networks.find((n) => n.name === nic.network);
      if (!network) {
        const offered = this.options.networks.map((n) => n.name).join(", ") || "none";
        throw invalidArgument(`nics[${i}].network`, `this host has no network ${quote(nic.network)} (it offers: ${offered})`);
      }
      if (!network.active) throw invalidArgument(`nics[${i}].network`, `network ${quote(nic.network)} is not active on this host`);
      return { network: nic.network, mac: nic.mac, address: fakeAddressFor(nic.mac, network.cidr) };
    });
    const refs = checkVolumeRefs(spec.volumes ?? [], "volumes");
    this.checkAttachable(spec.vmId, refs, "volumes");
    return nics;
  }

  /** FAILED_PRECONDITION if one of `refs` is attached to another vmId; RESOURCE_EXHAUSTED if a missing one is larger than the pool. */
  private checkAttachable(vmId: string, refs: readonly CheckedVolumeRef[], field: string): void {
    refs.forEach((ref, i) => {
      const v = this.dataVolumes.get(ref.id);
      if (!v) {
        this.checkVolumeFits(ref, `${field}[${i}]`);
        return;
      }
      if (v.attachedVmId !== "" && v.attachedVmId !== vmId) {
        const holder = this.domains.get(v.attachedVmId);
        throw new BerthError(
          ErrorCode.FailedPrecondition,
          `${field}[${i}]: volume ${quote(ref.id)} is attached to ${holder ? `domain ${holder.name}` : `an incoming migration of ${v.attachedVmId}`}`,
          { field: `${field}[${i}]` },
        );
      }
    });
  }

  /** RESOURCE_EXHAUSTED when one volume alone is larger than the pool (as a domain larger than the host is refused). */
  private checkVolumeFits(ref: CheckedVolumeRef, field: string): void {
    if (ref.sizeGib > this.options.capacity.diskGib) {
      throw new BerthError(
        ErrorCode.ResourceExhausted,
        `${field}.size_gib: volume ${quote(ref.id)} of ${ref.sizeGib} GiB is larger than the host's pool (${this.options.capacity.diskGib} GiB)`,
        { field: `${field}.size_gib` },
      );
    }
  }

  /**
   * Attaches `refs` to `vmId` in order, creating the missing ones (checked first by
   * {@link checkAttachable}). Returns their ids and those it created.
   */
  private attachVolumes(vmId: string, refs: readonly VolumeRef[]): { volumeIds: string[]; created: string[] } {
    const created: string[] = [];
    for (const ref of refs) {
      let v = this.dataVolumes.get(ref.id);
      if (!v) {
        v = { volumeId: ref.id, name: ref.name ?? "", sizeGib: ref.sizeGib, attachedVmId: "" };
        this.dataVolumes.set(ref.id, v);
        created.push(ref.id);
      }
      v.attachedVmId = vmId;
    }
    return { volumeIds: refs.map((r) => r.id), created };
  }

  private ensureVolume(spec: DomainSpec): void {
    if (spec.resources.diskGib > 0 && !this.volumes.has(spec.vmId)) {
      this.volumes.set(spec.vmId, { vmId: spec.vmId, name: volumeName(spec.name), diskGib: spec.resources.diskGib });
    }
  }

  /** SHUTOFF/CRASHED → RUNNING with a new incarnation; a guest without a lease gets one `addressDelayMs` on. */
  private boot(domain: Domain): void {
    const now = this.clock.now();
    this.runtime.set(domain.vmId, { incarnation: this.nextIncarnation++, startedAtMs: now, cpuMs: 0, runningSinceMs: now });
    const devices = this.devicesOf(domain.vmId);
    if (devices.leaseAtMs === null) devices.leaseAtMs = now + this.options.addressDelayMs;
    domain.state = RUNNING;
    this.emitDomain(domain.vmId, "started");
  }

  /** PAUSED → RUNNING. */
  private setRunning(domain: Domain): void {
    const rt = this.runtime.get(domain.vmId);
    if (rt) rt.runningSinceMs = this.clock.now();
    domain.state = RUNNING;
    this.emitDomain(domain.vmId, "resumed");
  }

  /** Any active state (or CRASHED) → SHUTOFF, with a "stopped" event. */
  private powerOff(domain: Domain): void {
    this.stopRuntime(domain, SHUTOFF);
    this.emitDomain(domain.vmId, "stopped");
  }

  private stopRuntime(domain: Domain, to: DomainState): void {
    this.runtime.delete(domain.vmId);
    // Gone before its DHCP lease came: the guest never got an address (the next start asks anew).
    const devices = this.devices.get(domain.vmId);
    if (devices && devices.leaseAtMs !== null && devices.leaseAtMs > this.clock.now()) devices.leaseAtMs = null;
    domain.state = to;
  }

  /**
   * Drops the domain with its devices (seed, lease) — not its volume, not its counters. Its data
   * volumes stay in the pool, detached (libvirt: the definition that attached them is gone).
   */
  private forget(vmId: string): void {
    this.domains.delete(vmId);
    this.runtime.delete(vmId);
    this.load.delete(vmId);
    this.devices.delete(vmId);
    for (const v of this.dataVolumes.values()) if (v.attachedVmId === vmId) v.attachedVmId = "";
  }

  /** The domain's devices (an entry is made for a domain read without one). */
  private devicesOf(vmId: string): FakeDevices {
    let devices = this.devices.get(vmId);
    if (!devices) {
      devices = noDevices();
      this.devices.set(vmId, devices);
    }
    return devices;
  }

  /** The domain as callers see it: a copy, with its interfaces as they are now (a lease shows once due). */
  private present(domain: Domain): Domain {
    return { ...copyDomain(domain), interfaces: fakeInterfacesAt(this.devices.get(domain.vmId) ?? noDevices(), this.clock.now()) };
  }

  /** The plan's crash hook: kills the process of an active domain (one started before `atMs`, if given). */
  private async killProcess(vmId: string, atMs: number | undefined): Promise<void> {
    if (atMs === undefined) {
      await this.crash(vmId);
      return;
    }
    const domain = this.domains.get(vmId);
    const rt = this.runtime.get(vmId);
    if (this.closed || !domain || !rt || rt.startedAtMs >= atMs) return;
    await this.crash(vmId);
  }

  /** Books the CPU demand of every running period so far under the current load, before the load changes. */
  private foldCpu(): void {
    const now = this.clock.now();
    for (const [vmId, rt] of this.runtime) {
      if (rt.runningSinceMs === null) continue;
      rt.cpuMs += integrateDemand(this.loadOf(vmId).cpu, rt.runningSinceMs, now);
      rt.runningSinceMs = now;
    }
  }

  private destinationOf(vmId: string, target: MigrationTarget): string {
    if (!isObject(target)) throw invalidArgument("target", "is required");
    if (target.driver !== this.kind) throw invalidArgument("target.driver", `must be "${this.kind}" (got ${JSON.stringify(target.driver)})`);
    if (target.vmId !== vmId) throw invalidArgument("target.vm_id", `must be ${vmId} (got ${JSON.stringify(target.vmId)})`);
    const uri = target.uri;
    if (!this.options.persist) {
      // An in-memory host migrates to another in-memory host of this process only.
      if (typeof uri !== "string" || !uri.startsWith(MEMORY_SCHEME) || uri.length === MEMORY_SCHEME.length) {
        throw invalidArgument("target.uri", `must be ${MEMORY_SCHEME}<name> (an in-memory host of this process; got ${JSON.stringify(uri)})`);
      }
      const name = uri.slice(MEMORY_SCHEME.length);
      if (name === this.options.stateDir) throw invalidArgument("target.uri", "is this host: a domain cannot migrate to where it is");
      return name;
    }
    if (typeof uri !== "string" || !uri.startsWith("fake://") || !path.isAbsolute(uri.slice("fake://".length))) {
      throw invalidArgument("target.uri", `must be fake://<absolute state directory> (got ${JSON.stringify(uri)})`);
    }
    const dir = path.resolve(uri.slice("fake://".length));
    if (dir === this.options.stateDir) throw invalidArgument("target.uri", "is this host: a domain cannot migrate to where it is");
    return dir;
  }

  /**
   * The watchdog rule, applied now: when an armed deadline has passed — this driver's, or the one
   * in the state file (other processes go by the file, so a pet not yet written does not count) —
   * every fence domain started before it is powered off ("stopped" event; not counted as a stop),
   * `firedAtMs` records the deadline and a passed deadline is disarmed. Runs before every
   * operation, on the timer and in every snapshot, so no write ever shows a fenced domain running.
   * Returns whether anything changed (then the caller writes).
   */
  private checkWatchdog(): boolean {
    const now = this.clock.now();
    const due = [this.wd.deadlineMs, this.durableDeadlineMs].filter((d) => d > 0 && d <= now);
    if (due.length === 0) return false;
    const at = Math.min(...due);
    return this.fire(at, at, now);
  }

  /**
   * Powers off the fence domains started before `cutoffMs`, records a fire at `atMs` (once per
   * deadline), and disarms a deadline that has passed by `nowMs`. Returns whether anything changed.
   */
  private fire(atMs: number, cutoffMs: number, nowMs: number): boolean {
    let changed = false;
    for (const domain of [...this.domains.values()].sort(byVmId)) {
      if (!fencedBy(domain, this.runtime.get(domain.vmId)?.startedAtMs, cutoffMs)) continue;
      this.powerOff(domain);
      changed = true;
    }
    if (this.lastFiredMs < atMs) {
      this.lastFiredMs = atMs;
      this.wd.firedAtMs = atMs;
      changed = true;
    }
    if (this.wd.deadlineMs > 0 && this.wd.deadlineMs <= nowMs) {
      this.wd.deadlineMs = 0;
      changed = true;
    }
    return changed;
  }

  /**
   * {@link checkWatchdog}, and a write when it changed something (its failure is not this caller's:
   * the file's deadline still fences every reader, and the next write carries the change).
   */
  private applyWatchdog(): void {
    if (this.checkWatchdog()) this.persist().catch(() => undefined);
  }

  /**
   * setWatchdog / clearWatchdog: fire what is due, move the deadline (0: disarm), write. A pet
   * (`resetFired`) forgets an earlier fire, but not one it finds itself: that is news to its caller.
   */
  private async moveDeadline(deadlineMs: number, resetFired: boolean): Promise<void> {
    const before = this.lastFiredMs;
    let changed = this.checkWatchdog();
    if (resetFired && this.lastFiredMs === before && this.wd.firedAtMs !== 0) {
      this.wd.firedAtMs = 0;
      changed = true;
    }
    if (this.wd.deadlineMs !== deadlineMs) {
      this.wd.deadlineMs = deadlineMs;
      const now = this.clock.now();
      if (deadlineMs > 0 && deadlineMs <= now) {
        // Set in the past, it fires now: on every fence domain running now, as a reset would (and
        // as libvirt's destroy does), not only on those started before that past time.
        this.fire(deadlineMs, Infinity, now);
        this.wd.firedAtMs = deadlineMs;
      }
      changed = true;
    }
    this.scheduleWatchdog();
    // Also when nothing changed here but the file lags (an earlier write failed).
    if (changed || this.durableDeadlineMs !== this.wd.deadlineMs) await this.persist();
    else await this.writeChain;
  }

  /** Arms the timer for the next armed deadline (this driver's or the file's), so a fire needs no call. */
  private scheduleWatchdog(): void {
    this.wdTimer?.cancel();
    this.wdTimer = undefined;
    if (this.closed) return;
    const now = this.clock.now();
    const next = [this.wd.deadlineMs, this.durableDeadlineMs].filter((d) => d > now);
    if (next.length === 0) return;
    const delay = Math.min(Math.min(...next) - now, MAX_TIMER_MS);
    // Background: the deadline is in the file, so a process that exits meanwhile loses nothing.
    this.wdTimer = this.clock.setTimer(
      () => {
        this.wdTimer = undefined;
        if (this.closed) return;
        this.applyWatchdog();
        this.scheduleWatchdog();
      },
      delay,
      { background: true },
    );
  }

  /** Resolves after `ms` or at the next change of the domain, whichever comes first. */
  private waitForChange(vmId: string, ms: number): Promise<void> {
    if (!(ms > 0)) return Promise.resolve();
    return new Promise((resolve) => {
      const set = this.waiters.get(vmId) ?? new Set();
      this.waiters.set(vmId, set);
      let timer: { cancel(): void } | undefined;
      const done = (): void => {
        timer?.cancel();
        set.delete(done);
        if (set.size === 0 && this.waiters.get(vmId) === set) this.waiters.delete(vmId);
        resolve();
      };
      set.add(done);
      if (ms !== Infinity) timer = this.clock.setTimer(done, ms);
    });
  }

  private emitDomain(vmId: string, kind: DomainEventKind): void {
    const d = this.domains.get(vmId);
    // The serial line goes with the guest's process (or the guest goes elsewhere).
    const why = CONSOLE_ENDS[kind];
    const session = why ? this.consoles.get(vmId) : undefined;
    session?.end({ code: ErrorCode.FailedPrecondition, message: `domain ${session.domainName} ${why}; the console session ended` });
    this.emit({ type: "domain", vmId, kind, domain: d ? this.present(d) : undefined });
    for (const wake of [...(this.waiters.get(vmId) ?? [])]) wake();
  }

  private emit(event: DriverEvent): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch {
        // A subscriber's bug must not break the hypervisor.
      }
    }
  }

  private count(vmId: string, op: CountedOperation): void {
    const c = this.counts.get(vmId) ?? { ...ZERO_COUNTS };
    c[op] += 1;
    this.counts.set(vmId, c);
  }

  /**
   * The answer of a no-op: the domain as it is, once every earlier change is on disk (or its write
   * has failed, which the call that made it reported). So a repeated call never confirms a state
   * that a SIGKILL could still lose.
   */
  private async unchanged(domain: Domain): Promise<Domain> {
    const result = this.present(domain);
    await this.writeChain;
    return result;
  }

  /** Counts `op` (if given), then persists; resolves to the domain as this operation left it. */
  private async commit(domain: Domain, op?: CountedOperation): Promise<Domain> {
    if (op) this.count(domain.vmId, op);
    const result = this.present(domain);
    await this.persist();
    return result;
  }

  /**
   * Schedules a write of the whole state after the writes already scheduled. The state is
   * serialized when the write starts, so it includes every change made before; changes made while
   * a write waits in the queue share that write.
   */
  private persist(): Promise<void> {
    if (this.queuedWrite) return this.queuedWrite;
    const write = this.writeChain.then(async () => {
      this.queuedWrite = undefined;
      // A killed process writes nothing more: the file stays as the kill left it.
      if (this.killed) throw new BerthError(ErrorCode.HypervisorUnavailable, "fake hypervisor: killed (fault injection)");
      for (;;) {
        const serializedAt = this.clock.now();
        const state = this.snapshot();
        // If the deadline on disk passes while this write is under way (a slow disk, or this process
        // frozen mid-write), the snapshot may show running a domain every reader now sees fenced:
        // it must not land. Made again, the snapshot has the fence applied (then at most once more).
        const stillCurrent = (): boolean => {
          const d = this.durableDeadlineMs;
          return !(d > 0 && serializedAt < d && this.clock.now() >= d);
        };
        const landed = this.stateFile !== undefined ? await writeFileAtomic(this.stateFile, serializeState(state), stillCurrent) : memoryHost(this.options.stateDir).write(state, stillCurrent);
        if (landed) {
          this.durableDeadlineMs = state.watchdog.deadlineMs;
          this.scheduleWatchdog();
          return;
        }
      }
    });
    this.queuedWrite = write;
    this.writeChain = write.catch(() => undefined);
    return write;
  }

  /** The whole state to write, with the watchdog rule applied first. */
  private snapshot(): FakeStoredState {
    this.checkWatchdog();
    const operations: Record<string, FakeOperationCounts> = {};
    for (const vmId of [...this.counts.keys()].sort()) operations[vmId] = { ...this.counts.get(vmId)! };
    const runtime: Record<string, FakeRuntime> = {};
    for (const [vmId, r] of this.runtime) runtime[vmId] = { ...r };
    return {
      domains: [...this.domains.values()].sort(byVmId),
      operations,
      volumes: [...this.volumes.values()].sort(byVmId),
      incoming: [...this.incoming.values()].sort(byVmId),
      watchdog: { ...this.wd },
      runtime,
      outgoing: [...this.outgoing.values()].sort(byVmId).map((o) => ({ ...o })),
      load: Object.fromEntries(this.load),
      nextIncarnation: this.nextIncarnation,
      devices: Object.fromEntries([...this.devices].map(([vmId, d]) => [vmId, copyDevices(d)])),
      images: [...this.images.values()].sort((a, b) => compareIds(a.imageId, b.imageId)).map((i) => ({ ...i })),
      dataVolumes: Object.fromEntries([...this.dataVolumes.keys()].sort().map((id) => [id, { ...this.dataVolumes.get(id)! }])),
    };
  }
}

// ---- the in-memory mode -------------------------------------------------------------------------

/** The target URI scheme of in-memory hosts (`fake-memory://<name>`). */
const MEMORY_SCHEME = "fake-memory://";

/**
 * An in-memory host (`persist: false`): what its state file and incoming handoffs would hold,
 * kept in this process. Writes store a copy (the driver goes on changing its own objects), reads
 * return one.
 */
class MemoryHost {
  private state: FakeStoredState | undefined;
  readonly handoffs = new Map<string, FakeHandoff>();

  read(): FakeStoredState {
    return this.state === undefined ? emptyStoredState() : structuredClone(this.state);
  }

  /** Stores the state unless `stillCurrent` says it must not land (as the file write's guard). */
  write(state: FakeStoredState, stillCurrent: () => boolean): boolean {
    if (!stillCurrent()) return false;
    this.state = structuredClone(state);
    return true;
  }
}

/** This process's in-memory hosts by name: a driver opened again on a name finds its host. */
const memoryHosts = new Map<string, MemoryHost>();

function memoryHost(name: string): MemoryHost {
  let host = memoryHosts.get(name);
  if (!host) {
    host = new MemoryHost();
    memoryHosts.set(name, host);
  }
  return host;
}

// ---- helpers -----------------------------------------------------------------------------------

/** Whether a process of this machine runs with that pid (signal 0 probes without signalling). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A running migrateOut: what abort, close and a concurrent resend reach. */
class MigrationJob {
  /** The job's outcome (set right after construction). */
  done: Promise<void> = Promise.resolve();
  aborted = false;
  /** The switchover has begun: an abort no longer stops it. */
  switchingOver = false;
  private wakeUp: (() => void) | undefined;

  constructor(
    readonly destDir: string,
    private readonly clock: FakeClock,
  ) {}

  abort(): void {
    if (this.switchingOver) return;
    this.aborted = true;
    this.wake();
  }

  /** Ends the current sleep now. */
  wake(): void {
    const w = this.wakeUp;
    this.wakeUp = undefined;
    w?.();
  }

  /** Resolves after `ms` on the clock, or at {@link wake}. */
  sleep(ms: number): Promise<void> {
    if (!(ms > 0)) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = this.clock.setTimer(() => {
        this.wakeUp = undefined;
        resolve();
      }, ms);
      this.wakeUp = () => {
        timer.cancel();
        resolve();
      };
    });
  }
}

function copyDomain(d: Domain): Domain {
  return {
    ...d,
    resources: d.resources ? { ...d.resources } : undefined,
    interfaces: d.interfaces.map((i) => ({ ...i, ipAddresses: [...i.ipAddresses] })),
    volumeIds: [...d.volumeIds],
  };
}

/** Domain events whose domain's console session ends, and how the end says it. */
const CONSOLE_ENDS: Partial<Record<DomainEventKind, string>> = {
  stopped: "stopped",
  crashed: "crashed",
  undefined: "was undefined",
  migrated: "migrated to another host",
};

function copyDevices(d: FakeDevices): FakeDevices {
  return { nics: d.nics.map((n) => ({ ...n })), leaseAtMs: d.leaseAtMs, ...(d.seed ? { seed: { ...d.seed } } : {}) };
}

function stateName(s: DomainState): string {
  return domainStateToJSON(s).replace("DOMAIN_STATE_", "");
}

function checkGeneration(generation: unknown, field: string): void {
  if (!isCount(generation)) {
    throw invalidArgument(field, `must be a whole number ≥ 0 (got ${String(generation)})`);
  }
}

function checkDeadline(deadlineMs: unknown): void {
  if (typeof deadlineMs !== "number" || !Number.isFinite(deadlineMs) || deadlineMs <= 0) {
    throw invalidArgument("watchdog.deadline_ms", `must be a time in ms > 0 (got ${String(deadlineMs)})`);
  }
}

function hostImageOf(i: FakeImage): HostImage {
  return { imageId: i.imageId, sizeBytes: i.sizeBytes, virtualSizeBytes: i.virtualSizeBytes };
}

function hostVolumeOf(v: FakeDataVolume): HostVolume {
  return { volumeId: v.volumeId, sizeGib: v.sizeGib, attachedVmId: v.attachedVmId };
}

/**
 * The disk over an image holds it: INVALID_ARGUMENT (`image`) when the disk is 0 or smaller than
 * the image's virtual size. Without the image yet (undefined), only the first.
 */
function checkImageFits(image: HostImage | undefined, spec: DomainSpec): void {
  const disk = spec.resources.diskGib;
  const name = quote(spec.image?.name || spec.image?.id);
  if (disk === 0) throw invalidArgument("image", `the disk over image ${name} is a layer of resources.disk_gib, which is 0; give it at least the image's virtual size`);
  if (image && image.virtualSizeBytes > disk * GIB) {
    throw invalidArgument(
      "image",
      `image ${name} has a virtual size of ${formatBytes(image.virtualSizeBytes)} (${image.virtualSizeBytes} bytes), more than the disk of ${disk} GiB (resources.disk_gib)`,
    );
  }
}

/** A `VolumeRef` as checked. */
interface CheckedVolumeRef {
  id: string;
  name: string;
  sizeGib: number;
}

/**
 * Checks a list of volume references: each `{id, name?, sizeGib ≥ 1}`, no id twice.
 * INVALID_ARGUMENT naming `<field>[i].id` / `.size_gib` (`single`: `<field>.id`).
 */
function checkVolumeRefs(refs: unknown, field: string, single = false): CheckedVolumeRef[] {
  if (!Array.isArray(refs)) throw invalidArgument(field, "must be a list of volumes {id, name, sizeGib}");
  const seen = new Set<string>();
  return refs.map((ref: unknown, i): CheckedVolumeRef => {
    const f = single ? field : `${field}[${i}]`;
    if (!isObject(ref)) throw invalidArgument(f, "must be a volume {id, name, sizeGib}");
    const { id, name, sizeGib } = ref;
    if (typeof id !== "string" || !VOLUME_ID.test(id)) throw invalidArgument(`${f}.id`, `must be 1-128 letters, digits, '_', '.' or '-' (got ${quote(JSON.stringify(id))})`);
    if (seen.has(id)) throw invalidArgument(`${f}.id`, `volume ${quote(id)} is listed twice`);
    seen.add(id);
    if (name !== undefined && typeof name !== "string") throw invalidArgument(`${f}.name`, "must be a string");
    if (!isCount(sizeGib) || sizeGib < 1) throw invalidArgument(`${f}.size_gib`, `must be a whole number of GiB ≥ 1 (got ${quote(String(sizeGib))})`);
    return { id, name: name ?? "", sizeGib };
  });
}

/** The shape of a spec's devices (what needs no host to judge); the host's part is `checkDevices`. */
function validateDevices(spec: DomainSpec): void {
  if (spec.image !== undefined) checkImageRef(spec.image, "image");
  if (spec.nics !== undefined) {
    if (!Array.isArray(spec.nics)) throw invalidArgument("nics", "must be a list of {network, mac}");
    const macs = new Set<string>();
    spec.nics.forEach((nic: NicSpec, i) => {
      if (!isObject(nic)) throw invalidArgument(`nics[${i}]`, "must be a NIC {network, mac}");
      if (typeof nic.network !== "string" || nic.network === "") throw invalidArgument(`nics[${i}].network`, "is required");
      if (typeof nic.mac !== "string" || !MAC_ADDRESS.test(nic.mac)) {
        throw invalidArgument(`nics[${i}].mac`, `must be a MAC address like 52:54:00:3a:91:0c (got ${quote(JSON.stringify(nic.mac))})`);
      }
      if (macs.has(nic.mac)) throw invalidArgument(`nics[${i}].mac`, `${nic.mac} is given to two NICs`);
      macs.add(nic.mac);
    });
  }
  if (spec.cloudInit !== undefined) checkSeed(spec.cloudInit);
  if (spec.volumes !== undefined) checkVolumeRefs(spec.volumes, "volumes");
}

function checkSeed(seed: CloudInitSeed): void {
  if (!isObject(seed)) throw invalidArgument("cloud_init", "must be a seed {instanceId, hostname, sshAuthorizedKeys, userData}");
  for (const k of ["instanceId", "hostname", "userData"] as const) {
    if (typeof seed[k] !== "string") throw invalidArgument(`cloud_init.${k === "instanceId" ? "instance_id" : k === "userData" ? "user_data" : k}`, "must be a string");
  }
  if (!Array.isArray(seed.sshAuthorizedKeys)) throw invalidArgument("cloud_init.ssh_authorized_keys", "must be a list of keys");
  seed.sshAuthorizedKeys.forEach((key, i) => {
    if (typeof key !== "string") throw invalidArgument(`cloud_init.ssh_authorized_keys[${i}]`, "must be a string");
  });
}

function validateSpec(spec: DomainSpec): void {
  if (!isObject(spec)) throw invalidArgument("domain", "is required");
  if (typeof spec.vmId !== "string" || spec.vmId.length === 0) throw invalidArgument("domain.vm_id", "is required");
  if (!UUID.test(spec.vmId)) throw invalidArgument("domain.vm_id", `must be a UUID in lowercase canonical form (got ${JSON.stringify(spec.vmId)})`);
  if (typeof spec.name !== "string" || spec.name.length === 0) throw invalidArgument("domain.name", "is required");
  if (spec.name.includes("/")) throw invalidArgument("domain.name", `must not contain "/" (got ${JSON.stringify(spec.name)})`);
  checkGeneration(spec.generation, "domain.generation");
  if (spec.fence !== undefined && typeof spec.fence !== "boolean") throw invalidArgument("domain.fence", `must be a boolean (got ${String(spec.fence)})`);
  const r: unknown = spec.resources;
  if (!isObject(r)) throw invalidArgument("domain.resources", "is required");
  for (const k of RESOURCE_NAMES) {
    // A domain needs a CPU and some memory (libvirt refuses none); a disk is optional.
    const min = k === "diskGib" ? 0 : 1;
    if (!isCount(r[k]) || r[k] < min) {
      throw invalidArgument(`domain.resources.${RESOURCE_FIELD[k]}`, `must be a whole number ≥ ${min} (got ${String(r[k])})`);
    }
  }
  validateDevices(spec);
}

/**
 * Removes `fake-hypervisor.json.*.tmp` left by a writer killed between write and rename, and the
 * temp files of handoffs (`fake-incoming-<vmId>.json.<pid>.<n>.tmp`, written here by a source in
 * another process) whose writer is dead: a live one may be about to rename its file.
 */
function removeStaleTempFiles(stateDir: string): void {
  let names: string[];
  try {
    names = readdirSync(stateDir);
  } catch (e) {
    throw unavailable(`cannot read state directory ${stateDir}`, e);
  }
  for (const name of names) {
    const handoffTemp = /^fake-incoming-.*\.json\.(\d+)\.\d+\.tmp$/.exec(name);
    if ((name.startsWith(`${FAKE_STATE_FILE}.`) && name.endsWith(".tmp")) || (handoffTemp && !processAlive(Number(handoffTemp[1])))) {
      try {
        unlinkSync(path.join(stateDir, name));
      } catch {
        // Already gone, or not ours to remove: harmless either way.
      }
    }
  }
}
