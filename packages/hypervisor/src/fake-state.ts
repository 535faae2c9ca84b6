/**
 * The fake hypervisor's files: the state file `<stateDir>/fake-hypervisor.json` (format v4; v3, v2
 * and v1 are still read) and the migration handoff files `<stateDir>/fake-incoming-<vmId>.json`, both
 * written atomically (temp file, fsync, rename, fsync of the directory).
 *
 * A live migration's switchover commits in one place: the source's state file. The source writes
 * the handoff into the destination's directory, tentatively, and then its own state file without
 * the domain and with an `outgoing` record naming the destination and the handoff's nonce; that
 * write (one rename) is the instant the domain leaves the source. The destination goes by it
 * ({@link fakeHandoffStatus}): it starts the domain only from a committed handoff.
 *
 * The state file also holds the host's watchdog (fencing): its deadline, when it last fired, and
 * which domains it fences (`fence` per domain). The watchdog rule — an armed deadline that has
 * passed powers the fence domains off from the deadline on — is applied by every reader at its own
 * time ({@link effectiveFakeState}), not only by the driver that wrote the file: so a host whose
 * agent is frozen (SIGSTOP) is fenced in the eyes of every other process, as a host reset by a
 * hardware watchdog would be.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { writeFileAtomically } from "./atomic-file.js";
import { domainStateFromJSON, domainStateToJSON, DomainState, type Domain, type NetworkInterface, type Resources } from "@berth/api";
import { BerthError, ErrorCode, RESOURCE_NAMES } from "@berth/core";
import type { NoCloudSeedFiles } from "./cloud-init.js";
import type { WatchdogStatus } from "./driver.js";
import { validateLoadProfile, type LoadProfile } from "./fake-load.js";

/** Name of the state file inside `stateDir`. */
export const FAKE_STATE_FILE = "fake-hypervisor.json";

/**
 * Format tag written into the state file. v4 added images, data volumes and each domain's devices
 * (`imageId`, `volumeIds`, `nics`, `seed`, `leaseAtMs`); v3 the watchdog and each domain's `fence`.
 * The tag changes so that an older reader refuses the file instead of ignoring what it does not know
 * (a v3 reader would drop data volumes at its next write).
 */
export const FAKE_STATE_FORMAT = "berth-fake-hypervisor/v4";
/** The previous format, still read (no images, no data volumes, domains without devices). */
export const FAKE_STATE_FORMAT_V3 = "berth-fake-hypervisor/v3";
/** An older format, still read (as v3, and no watchdog: disarmed, never fired; no domain fenced). */
export const FAKE_STATE_FORMAT_V2 = "berth-fake-hypervisor/v2";
/** The first format, still read (domains and counters only; volumes are inferred). */
export const FAKE_STATE_FORMAT_V1 = "berth-fake-hypervisor/v1";

/**
 * Format tag of a migration handoff file. v3 added the domain's devices (`devices`: NICs, seed,
 * lease; `domain.imageId`, `domain.volumeIds`) and the data volumes it carries (`volumes`); v2 the
 * source (`from`) and the attempt's `nonce`, which the source's state file commits.
 */
export const FAKE_HANDOFF_FORMAT = "berth-fake-handoff/v3";
/** The previous handoff format, still read (a domain without devices or data volumes). */
export const FAKE_HANDOFF_FORMAT_V2 = "berth-fake-handoff/v2";
/** The first handoff format, still read: written after nothing could still undo it, so committed. */
export const FAKE_HANDOFF_FORMAT_V1 = "berth-fake-handoff/v1";

/**
 * How many times each state-changing operation took effect on one domain. A call that found the
 * domain already in the asked-for state (or, for delete, absent) is a no-op and is not counted.
 * `stop` counts every power-off asked for (stop and destroy); undefine and the migration hooks are
 * not counted. Counters outlive the domain: after a delete they stay in the file under the vmId.
 */
export interface FakeOperationCounts {
  define: number;
  start: number;
  stop: number;
  delete: number;
}

/** A volume Berth created for a domain (by define or prepareIncoming); outlives undefine. */
export interface FakeVolume {
  vmId: string;
  /** `<domain name>.qcow2`, for people reading the file. */
  name: string;
  diskGib: number;
}

/** A destination slot made by prepareIncoming, waiting for a handoff and finishIncoming. */
export interface FakeIncoming {
  vmId: string;
  name: string;
  resources: Resources;
  generation: number;
  preparedAtMs: number;
  /** The data volumes readied for the arriving domain (attached to its vmId here), in order. */
  volumeIds: string[];
  /** Those of them the preparation created (an abort removes these, and detaches the others). */
  createdVolumeIds: string[];
}

/**
 * A NIC of a fake domain: its network, its MAC (from the spec) and the address its DHCP lease gives,
 * derived from the MAC within the network's cidr when the domain was defined here (empty: the
 * network has no cidr, so the guest never gets an address).
 */
export interface FakeNic {
  network: string;
  mac: string;
  address: string;
}

/**
 * What a fake domain has beside its `Domain` record, kept with it in the state file (and carried by
 * a migration's handoff); dropped when the domain is undefined.
 */
export interface FakeDevices {
  /** The NICs, in the spec's order. */
  nics: FakeNic[];
  /**
   * The NoCloud seed's two files (`meta-data`, `user-data`) exactly as `renderNoCloudSeed` made
   * them from the spec's `cloudInit`; absent without one. What a test in another process checks
   * (`readFakeHypervisorState(dir).devices[vmId].seed`).
   */
  seed?: NoCloudSeedFiles;
  /**
   * When the NICs got their addresses (the DHCP lease), on the clock's axis: a start with no lease
   * sets it to the start + `addressDelayMs`; a power-off before then clears it (the guest never
   * asked). null: no lease. Readers show the addresses once it has passed (`fakeInterfacesAt`).
   */
  leaseAtMs: number | null;
}

/** A base image the fake host holds (what `ensureImage` recorded; no bytes are kept). */
export interface FakeImage {
  imageId: string;
  name: string;
  /** Where it was fetched from (`ImageRef.source`). */
  source: string;
  format: "qcow2" | "raw";
  /** The checksum it was checked against; empty when none was asked for. */
  sha256: string;
  /** The source's size in bytes (what the copy takes). */
  sizeBytes: number;
  /** qcow2: the header's virtual size; raw: the file's size. */
  virtualSizeBytes: number;
  /** When the fetch completed (clock ms). */
  fetchedAtMs: number;
}

/** A data volume in the fake host's pool (`createVolume`, `setVolumes`, a definition or an arrival). */
export interface FakeDataVolume {
  volumeId: string;
  /** The volume's name when given (for people reading the file); may be empty. */
  name: string;
  sizeGib: number;
  /** The vmId of the domain (or incoming migration) it is attached to; empty when detached. */
  attachedVmId: string;
}

/**
 * A source's record of a domain leaving by live migration. `switchover`: the handoff is being
 * written and is not committed (a driver opened on the directory rolls it back: the domain runs on
 * here). `committed`: the domain left for `to` at `atMs`; kept until the vmId is defined or
 * arrives here again.
 */
export interface FakeOutgoing {
  vmId: string;
  /** The destination's state directory, absolute. */
  to: string;
  /** The attempt's id; the handoff carries the same. */
  nonce: string;
  phase: "switchover" | "committed";
  atMs: number;
}

/** What the state file holds, as {@link readFakeHypervisorState} returns it. */
export interface FakeHypervisorState {
  /** Domains currently defined, sorted by vmId (their `interfaces` as at the read's time). */
  domains: Domain[];
  /** Operation counters by vmId, including vmIds whose domain has since been deleted. */
  operations: Record<string, FakeOperationCounts>;
  /** The domains' own disk volumes (`<name>.qcow2`, one per vmId), sorted by vmId. */
  volumes: FakeVolume[];
  /** Incoming migration slots, sorted by vmId. */
  incoming: FakeIncoming[];
  /** The host's watchdog (see `HypervisorDriver.setWatchdog`); as read, with the rule applied at the read's time. */
  watchdog: WatchdogStatus;
  /** Each defined domain's NICs, cloud-init seed and lease, by vmId. */
  devices: Record<string, FakeDevices>;
  /** The base images held, sorted by id. */
  images: FakeImage[];
  /** The data volumes in the pool, by volume id. */
  dataVolumes: Record<string, FakeDataVolume>;
}

/** The running incarnation of an active (RUNNING or PAUSED) domain, and its CPU account. */
export interface FakeRuntime {
  /** Host-wide sequence number, new at every start. */
  incarnation: number;
  startedAtMs: number;
  /** CPU demand (fraction·ms per vCPU) of the running periods that have ended since the start. */
  cpuMs: number;
  /** Start of the current running period; null while paused. */
  runningSinceMs: number | null;
}

/** Everything the driver keeps; the state file in full. */
export interface FakeStoredState extends FakeHypervisorState {
  runtime: Record<string, FakeRuntime>;
  /** Migrations out of this host: in switchover, or committed (sorted by vmId). */
  outgoing: FakeOutgoing[];
  /** Per-VM load set through the driver's API. */
  load: Record<string, Partial<LoadProfile>>;
  nextIncarnation: number;
}

/** What a source writes into the destination's directory: the migrated domain. */
export interface FakeHandoff {
  vmId: string;
  /** The source's state directory, absolute (absent in a v1 handoff). */
  from?: string;
  /** The attempt's id, committed by the source's `outgoing` record (absent in a v1 handoff). */
  nonce?: string;
  domain: Domain;
  /** The domain's NICs, seed and lease (a v1/v2 handoff: none). */
  devices: FakeDevices;
  /** The data volumes attached to it, carried with it (the destination owns them once committed). */
  volumes: FakeDataVolume[];
  /** Memory the guest used when it left, MiB. */
  memoryUsedMib: number;
  load: Partial<LoadProfile> | undefined;
  sentAtMs: number;
}

export const ZERO_COUNTS: Readonly<FakeOperationCounts> = Object.freeze({ define: 0, start: 0, stop: 0, delete: 0 });

/** Path of the state file for a state directory. */
export function fakeStateFile(stateDir: string): string {
  return path.join(path.resolve(stateDir), FAKE_STATE_FILE);
}

/** Path of the handoff file of `vmId` in a (destination's) state directory. */
export function fakeHandoffFile(stateDir: string, vmId: string): string {
  return path.join(path.resolve(stateDir), `fake-incoming-${vmId}.json`);
}

/** The devices of a domain defined without NICs or a seed (and of one read from a pre-v4 file). */
export function noDevices(): FakeDevices {
  return { nics: [], leaseAtMs: null };
}

export function emptyStoredState(): FakeStoredState {
  return {
    domains: [],
    operations: {},
    volumes: [],
    incoming: [],
    watchdog: { deadlineMs: 0, firedAtMs: 0 },
    devices: {},
    images: [],
    dataVolumes: {},
    runtime: {},
    outgoing: [],
    load: {},
    nextIncarnation: 1,
  };
}

/**
 * Reads the fake hypervisor's state file in `stateDir`, synchronously, without a driver: meant for
 * another process (an end-to-end test) inspecting what an agent's driver did. The watchdog rule is
 * applied at `nowMs` (default: now, on the real clock's axis, which is the one an agent's driver
 * uses): fence domains are SHUTOFF once an armed deadline has passed, even if the file still shows
 * them running (their driver is frozen, or has not written since). A missing file (or directory)
 * reads as the empty state. Throws BerthError HYPERVISOR_UNAVAILABLE if the file is unreadable or
 * not a state file. The file is replaced atomically, so a read never sees a torn file.
 */
export function readFakeHypervisorState(stateDir: string, nowMs: number = Date.now()): FakeHypervisorState {
  const stored = readStoredState(stateDir, nowMs);
  const s = effectiveFakeState(stored, nowMs);
  return {
    domains: effectiveFakeDomains(stored, nowMs),
    operations: s.operations,
    volumes: s.volumes,
    incoming: s.incoming,
    watchdog: s.watchdog,
    devices: s.devices,
    images: s.images,
    dataVolumes: s.dataVolumes,
  };
}

/**
 * The vmIds the fake host in `stateDir` runs at `nowMs` (state RUNNING once the watchdog rule is
 * applied), sorted: what a "no VM runs on two hosts" check samples across every host's state file.
 * PAUSED domains are not counted (the agent never pauses; a paused copy runs no guest code). A
 * missing file is a host running nothing. Read-only and synchronous; throws HYPERVISOR_UNAVAILABLE
 * for an unreadable or foreign file (never for a torn one: the file is replaced atomically).
 */
export function fakeRunningVmIds(stateDir: string, nowMs: number = Date.now()): string[] {
  return effectiveFakeDomains(readStoredState(stateDir, nowMs), nowMs)
    .filter((d) => d.state === DomainState.DOMAIN_STATE_RUNNING)
    .map((d) => d.vmId);
}

/** What the watchdog rule needs of a state: {@link FakeHypervisorState} and {@link FakeStoredState} both are one. */
export interface FakeWatchdogView {
  domains: readonly Domain[];
  watchdog: WatchdogStatus;
  /** When each active domain's incarnation started; a domain without one counts as started before any deadline. */
  runtime?: Readonly<Record<string, Pick<FakeRuntime, "startedAtMs">>>;
  /** Each domain's NICs and lease: when given, the domains' `interfaces` are computed at the time asked. */
  devices?: Readonly<Record<string, FakeDevices>>;
}

/**
 * A domain's `interfaces` at `nowMs`: one per NIC, in order, `{network, mac, ipAddresses,
 * addressSource: "fake"}`, the NIC's address once the lease has come (`leaseAtMs` ≤ `nowMs`; a
 * domain whose lease was due after `leaseCutoffMs` never got it), none before. Pure.
 */
export function fakeInterfacesAt(devices: FakeDevices, nowMs: number, leaseCutoffMs = nowMs): NetworkInterface[] {
  const leased = devices.leaseAtMs !== null && devices.leaseAtMs <= Math.min(nowMs, leaseCutoffMs);
  return devices.nics.map((n) => ({ network: n.network, mac: n.mac, ipAddresses: leased && n.address !== "" ? [n.address] : [], addressSource: "fake" }));
}

/**
 * The deadline that has fired by `nowMs`: the watchdog's deadline when it is armed (> 0) and
 * `nowMs` ≥ it; otherwise undefined. Pure.
 */
export function firedDeadline(watchdog: WatchdogStatus, nowMs: number): number | undefined {
  return watchdog.deadlineMs > 0 && nowMs >= watchdog.deadlineMs ? watchdog.deadlineMs : undefined;
}

/**
 * Whether the watchdog firing at `deadlineMs` powers this domain off: a fence domain whose process
 * runs (RUNNING or PAUSED) and whose incarnation started before the deadline (one started at or
 * after it was started once the host was fenced, and is not the copy the fence is about). Pure.
 */
export function fencedBy(domain: Domain, startedAtMs: number | undefined, deadlineMs: number): boolean {
  const active = domain.state === DomainState.DOMAIN_STATE_RUNNING || domain.state === DomainState.DOMAIN_STATE_PAUSED;
  return domain.fence && active && (startedAtMs === undefined || startedAtMs < deadlineMs);
}

/**
 * The domains of a fake host as they are at `nowMs`, in the order given: when the watchdog's armed
 * deadline has passed, every fence domain started before it is SHUTOFF (a copy), whatever the file
 * says (the driver that wrote it may be frozen); with `devices` given, every domain's `interfaces`
 * as at `nowMs` (a copy; a fenced domain keeps only a lease that came before the fence); the others
 * are the given objects. Pure: the same state and time give the same answer in every process, which
 * is what makes the fake's fencing hold for a frozen agent.
 */
export function effectiveFakeDomains(state: FakeWatchdogView, nowMs: number): Domain[] {
  const fired = firedDeadline(state.watchdog, nowMs);
  return state.domains.map((d) => {
    const fenced = fired !== undefined && fencedBy(d, state.runtime?.[d.vmId]?.startedAtMs, fired);
    const devices = state.devices?.[d.vmId];
    if (!fenced && devices === undefined) return d;
    return {
      ...d,
      ...(fenced ? { state: DomainState.DOMAIN_STATE_SHUTOFF } : {}),
      ...(devices ? { interfaces: fakeInterfacesAt(devices, nowMs, fenced ? fired : nowMs) } : {}),
      resources: d.resources ? { ...d.resources } : undefined,
    };
  });
}

/**
 * The whole state as it is at `nowMs` (see {@link effectiveFakeDomains}): fenced domains SHUTOFF
 * without a runtime, and a watchdog that fired shown as fired (`firedAtMs` = the deadline) and
 * disarmed. Returns `state` itself when the watchdog has not fired. Pure.
 */
export function effectiveFakeState(state: FakeStoredState, nowMs: number): FakeStoredState {
  const fired = firedDeadline(state.watchdog, nowMs);
  if (fired === undefined) return state;
  const domains = effectiveFakeDomains({ domains: state.domains, watchdog: state.watchdog, runtime: state.runtime }, nowMs);
  const runtime = { ...state.runtime };
  const devices = { ...state.devices };
  domains.forEach((d, i) => {
    if (d === state.domains[i]) return;
    delete runtime[d.vmId];
    // Powered off before its lease came: the guest never got an address.
    const dev = devices[d.vmId];
    if (dev && dev.leaseAtMs !== null && dev.leaseAtMs > fired) devices[d.vmId] = { ...dev, leaseAtMs: null };
  });
  return { ...state, domains, runtime, devices, watchdog: { deadlineMs: 0, firedAtMs: fired } };
}

/** The whole state file; `nowMs` stands for the start time of domains a v1 file shows active. */
export function readStoredState(stateDir: string, nowMs: number): FakeStoredState {
  const file = fakeStateFile(stateDir);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return emptyStoredState();
    throw unavailable(`cannot read ${file}`, e);
  }
  return parseState(text, file, nowMs);
}

// ---- state file --------------------------------------------------------------------------------

interface StoredDomain {
  vmId: string;
  name: string;
  state: string;
  generation: number;
  resources: Resources;
  fence: boolean;
  imageId: string;
  volumeIds: string[];
  nics: FakeNic[];
  seed?: NoCloudSeedFiles;
  leaseAtMs: number | null;
  run?: FakeRuntime;
  load?: Partial<LoadProfile>;
}

/** A domain as both the state file and a handoff write it (the devices beside it are the writer's). */
function domainRecordOf(d: Domain) {
  return {
    vmId: d.vmId,
    name: d.name,
    state: domainStateToJSON(d.state),
    generation: d.generation,
    resources: resourcesOf(d),
    fence: d.fence,
    imageId: d.imageId,
    volumeIds: d.volumeIds,
  };
}

export function serializeState(state: FakeStoredState): string {
  const domains: StoredDomain[] = state.domains.map((d) => {
    const run = state.runtime[d.vmId];
    const load = state.load[d.vmId];
    const devices = state.devices[d.vmId] ?? noDevices();
    return {
      ...domainRecordOf(d),
      nics: devices.nics,
      ...(devices.seed ? { seed: devices.seed } : {}),
      leaseAtMs: devices.leaseAtMs,
      ...(run ? { run } : {}),
      ...(load ? { load } : {}),
    };
  });
  const body = {
    format: FAKE_STATE_FORMAT,
    domains,
    volumes: state.volumes,
    dataVolumes: state.dataVolumes,
    images: state.images,
    incoming: state.incoming,
    watchdog: state.watchdog,
    outgoing: state.outgoing,
    nextIncarnation: state.nextIncarnation,
    operations: state.operations,
  };
  return `${JSON.stringify(body, null, 2)}\n`;
}

export function parseState(text: string, file: string, nowMs: number): FakeStoredState {
  const corrupt = (why: string): BerthError => unavailable(`${file} is not a fake hypervisor state file: ${why}`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw unavailable(`${file} is not valid JSON`, e);
  }
  if (!isObject(raw)) throw corrupt("not an object");
  const format = raw["format"];
  if (format !== FAKE_STATE_FORMAT && format !== FAKE_STATE_FORMAT_V3 && format !== FAKE_STATE_FORMAT_V2 && format !== FAKE_STATE_FORMAT_V1) {
    throw corrupt(
      `format is ${JSON.stringify(format)}, expected ${FAKE_STATE_FORMAT} (or ${FAKE_STATE_FORMAT_V3}, ${FAKE_STATE_FORMAT_V2}, ${FAKE_STATE_FORMAT_V1})`,
    );
  }
  const v1 = format === FAKE_STATE_FORMAT_V1;
  const v4 = format === FAKE_STATE_FORMAT;
  const v3 = v4 || format === FAKE_STATE_FORMAT_V3;
  const rawDomains = raw["domains"];
  const rawOps = raw["operations"];
  if (!Array.isArray(rawDomains)) throw corrupt("domains is not a list");
  if (!isObject(rawOps)) throw corrupt("operations is not an object");

  const out = emptyStoredState();
  const seen = new Set<string>();
  for (const [i, d] of rawDomains.entries()) {
    if (!isObject(d)) throw corrupt(`domains[${i}] is not an object`);
    const { vmId, name, state, generation, resources, fence, run, load, imageId, volumeIds, nics, seed, leaseAtMs } = d;
    if (typeof vmId !== "string" || vmId === "") throw corrupt(`domains[${i}].vmId is missing`);
    if (seen.has(vmId)) throw corrupt(`domain ${vmId} appears twice`);
    seen.add(vmId);
    if (typeof name !== "string") throw corrupt(`domains[${i}].name is missing`);
    if (!isCount(generation)) throw corrupt(`domains[${i}].generation is not a whole number`);
    let parsedState: DomainState;
    try {
      parsedState = domainStateFromJSON(state);
    } catch {
      throw corrupt(`domains[${i}].state ${JSON.stringify(state)} is not a domain state`);
    }
    const res = parseResources(resources);
    if (!res) throw corrupt(`domains[${i}].resources is not a resource vector`);
    // Before v3 nothing was fenced; in v3 the field is written for every domain.
    if (v3 ? typeof fence !== "boolean" : fence !== undefined) throw corrupt(`domains[${i}].fence is not a boolean${v3 ? "" : ` (no fence before ${FAKE_STATE_FORMAT})`}`);
    const devices = noDevices();
    let domainImage = "";
    let domainVolumes: string[] = [];
    if (v4) {
      // Before v4 a domain had no image, NICs, seed nor data volumes; in v4 the fields are written for every domain.
      if (typeof imageId !== "string") throw corrupt(`domains[${i}].imageId is not a string`);
      if (!isStringList(volumeIds)) throw corrupt(`domains[${i}].volumeIds is not a list of volume ids`);
      const parsedNics = parseNics(nics);
      if (!parsedNics) throw corrupt(`domains[${i}].nics is not a list of {network, mac, address}`);
      if (seed !== undefined && !isSeed(seed)) throw corrupt(`domains[${i}].seed is not {"meta-data", "user-data"}`);
      if (leaseAtMs !== null && !isTime(leaseAtMs)) throw corrupt(`domains[${i}].leaseAtMs is not a time or null`);
      domainImage = imageId;
      domainVolumes = [...volumeIds];
      devices.nics = parsedNics;
      if (seed !== undefined) devices.seed = { "meta-data": seed["meta-data"], "user-data": seed["user-data"] };
      devices.leaseAtMs = leaseAtMs;
    }
    out.devices[vmId] = devices;
    out.domains.push({ vmId, name, state: parsedState, generation, resources: res, fence: fence === true, interfaces: [], volumeIds: domainVolumes, imageId: domainImage });
    if (run !== undefined) {
      const rt = parseRuntime(run);
      if (!rt) throw corrupt(`domains[${i}].run is not a runtime record`);
      out.runtime[vmId] = rt;
    }
    if (load !== undefined) {
      try {
        out.load[vmId] = validateLoadProfile(load, `domains[${i}].load`);
      } catch (e) {
        throw corrupt((e as Error).message);
      }
    }
  }
  out.domains.sort(byVmId);

  for (const [vmId, c] of Object.entries(rawOps)) {
    if (!isObject(c)) throw corrupt(`operations[${vmId}] is not an object`);
    const counts = { ...ZERO_COUNTS };
    for (const op of Object.keys(ZERO_COUNTS) as (keyof FakeOperationCounts)[]) {
      const n = c[op] ?? 0;
      if (!isCount(n)) throw corrupt(`operations[${vmId}].${op} is not a whole number`);
      counts[op] = n;
    }
    out.operations[vmId] = counts;
  }

  if (v1) {
    // v1 kept no volumes nor runtimes: a defined domain has its volume, an active one started now.
    for (const d of out.domains) {
      const r = resourcesOf(d);
      if (r.diskGib > 0) out.volumes.push({ vmId: d.vmId, name: volumeName(d.name), diskGib: r.diskGib });
      if (d.state === DomainState.DOMAIN_STATE_RUNNING || d.state === DomainState.DOMAIN_STATE_PAUSED) {
        out.runtime[d.vmId] = {
          incarnation: out.nextIncarnation++,
          startedAtMs: nowMs,
          cpuMs: 0,
          runningSinceMs: d.state === DomainState.DOMAIN_STATE_RUNNING ? nowMs : null,
        };
      }
    }
    return out;
  }

  const rawVolumes = raw["volumes"];
  const rawIncoming = raw["incoming"];
  const next = raw["nextIncarnation"];
  if (!Array.isArray(rawVolumes)) throw corrupt("volumes is not a list");
  if (!Array.isArray(rawIncoming)) throw corrupt("incoming is not a list");
  if (!isCount(next) || next < 1) throw corrupt("nextIncarnation is not a whole number ≥ 1");
  out.nextIncarnation = next;
  for (const [i, v] of rawVolumes.entries()) {
    if (!isObject(v) || typeof v["vmId"] !== "string" || typeof v["name"] !== "string" || !isCount(v["diskGib"])) {
      throw corrupt(`volumes[${i}] is not a volume`);
    }
    out.volumes.push({ vmId: v["vmId"], name: v["name"], diskGib: v["diskGib"] });
  }
  for (const [i, s] of rawIncoming.entries()) {
    const res = isObject(s) ? parseResources(s["resources"]) : undefined;
    if (
      !isObject(s) ||
      typeof s["vmId"] !== "string" ||
      typeof s["name"] !== "string" ||
      !isCount(s["generation"]) ||
      typeof s["preparedAtMs"] !== "number" ||
      !res
    ) {
      throw corrupt(`incoming[${i}] is not an incoming slot`);
    }
    const readied = s["volumeIds"] ?? [];
    const created = s["createdVolumeIds"] ?? [];
    if (!isStringList(readied) || !isStringList(created)) throw corrupt(`incoming[${i}].volumeIds or .createdVolumeIds is not a list of volume ids`);
    out.incoming.push({
      vmId: s["vmId"],
      name: s["name"],
      resources: res,
      generation: s["generation"],
      preparedAtMs: s["preparedAtMs"],
      volumeIds: [...readied],
      createdVolumeIds: [...created],
    });
  }
  out.volumes.sort(byVmId);
  out.incoming.sort(byVmId);
  if (v3) {
    const w = raw["watchdog"];
    if (!isObject(w) || !isTime(w["deadlineMs"]) || !isTime(w["firedAtMs"])) throw corrupt("watchdog is not {deadlineMs, firedAtMs} (ms ≥ 0)");
    out.watchdog = { deadlineMs: w["deadlineMs"], firedAtMs: w["firedAtMs"] };
    // Added within v3: a file without it (written before live migration was modelled) has none.
    // An older reader ignores it and still sees the truth: a committed domain is gone from `domains`.
    const rawOutgoing = raw["outgoing"] ?? [];
    if (!Array.isArray(rawOutgoing)) throw corrupt("outgoing is not a list");
    for (const [i, o] of rawOutgoing.entries()) {
      if (
        !isObject(o) ||
        typeof o["vmId"] !== "string" ||
        typeof o["to"] !== "string" ||
        typeof o["nonce"] !== "string" ||
        (o["phase"] !== "switchover" && o["phase"] !== "committed") ||
        typeof o["atMs"] !== "number"
      ) {
        throw corrupt(`outgoing[${i}] is not an outgoing migration`);
      }
      out.outgoing.push({ vmId: o["vmId"], to: o["to"], nonce: o["nonce"], phase: o["phase"], atMs: o["atMs"] });
    }
    out.outgoing.sort(byVmId);
  }
  if (v4) {
    const rawImages = raw["images"];
    if (!Array.isArray(rawImages)) throw corrupt("images is not a list");
    for (const [i, im] of rawImages.entries()) {
      const image = parseImage(im);
      if (!image) throw corrupt(`images[${i}] is not an image`);
      out.images.push(image);
    }
    out.images.sort((a, b) => compareIds(a.imageId, b.imageId));
    const rawData = raw["dataVolumes"];
    if (!isObject(rawData)) throw corrupt("dataVolumes is not an object");
    for (const [id, v] of Object.entries(rawData)) {
      const volume = parseDataVolume(v);
      if (!volume || volume.volumeId !== id) throw corrupt(`dataVolumes[${JSON.stringify(id)}] is not a data volume`);
      out.dataVolumes[id] = volume;
    }
  }
  return out;
}

// ---- handoff file ------------------------------------------------------------------------------

export function serializeHandoff(h: FakeHandoff): string {
  const d = h.domain;
  return `${JSON.stringify({ format: FAKE_HANDOFF_FORMAT, ...h, domain: domainRecordOf(d) }, null, 2)}\n`;
}

/** The handoff of `vmId` in `stateDir`, or undefined if none arrived. Throws HYPERVISOR_UNAVAILABLE if unreadable. */
export function readHandoff(stateDir: string, vmId: string): FakeHandoff | undefined {
  const file = fakeHandoffFile(stateDir, vmId);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw unavailable(`cannot read handoff ${file}`, e);
  }
  const bad = (why: string): BerthError => unavailable(`${file} is not a handoff file: ${why}`);
  if (!isObject(raw) || (raw["format"] !== FAKE_HANDOFF_FORMAT && raw["format"] !== FAKE_HANDOFF_FORMAT_V2 && raw["format"] !== FAKE_HANDOFF_FORMAT_V1)) {
    throw bad("wrong format");
  }
  const v3 = raw["format"] === FAKE_HANDOFF_FORMAT;
  const v2 = v3 || raw["format"] === FAKE_HANDOFF_FORMAT_V2;
  const from = raw["from"];
  const nonce = raw["nonce"];
  if (v2 && (typeof from !== "string" || !path.isAbsolute(from) || typeof nonce !== "string" || nonce === "")) throw bad("from or nonce");
  const d = raw["domain"];
  if (!isObject(d) || d["vmId"] !== vmId || typeof d["name"] !== "string" || !isCount(d["generation"])) throw bad("no domain");
  const res = parseResources(d["resources"]);
  if (!res) throw bad("domain.resources");
  let state: DomainState;
  try {
    state = domainStateFromJSON(d["state"]);
  } catch {
    throw bad("domain.state");
  }
  // A handoff written before fencing existed has no fence: the domain was not fenced.
  const fence = d["fence"] ?? false;
  if (typeof fence !== "boolean") throw bad("domain.fence");
  const mem = raw["memoryUsedMib"];
  const sent = raw["sentAtMs"];
  if (!isCount(mem) || typeof sent !== "number") throw bad("memoryUsedMib or sentAtMs");
  let load: Partial<LoadProfile> | undefined;
  if (raw["load"] !== undefined) {
    try {
      load = validateLoadProfile(raw["load"], "load");
    } catch (e) {
      throw bad((e as Error).message);
    }
  }
  let devices = noDevices();
  let volumes: FakeDataVolume[] = [];
  let imageId = "";
  let volumeIds: string[] = [];
  if (v3) {
    const dev = raw["devices"];
    const nics = isObject(dev) ? parseNics(dev["nics"]) : undefined;
    if (!isObject(dev) || !nics || (dev["seed"] !== undefined && !isSeed(dev["seed"])) || (dev["leaseAtMs"] !== null && !isTime(dev["leaseAtMs"]))) {
      throw bad("devices");
    }
    const seed = dev["seed"] as NoCloudSeedFiles | undefined;
    devices = { nics, leaseAtMs: dev["leaseAtMs"] as number | null, ...(seed ? { seed: { "meta-data": seed["meta-data"], "user-data": seed["user-data"] } } : {}) };
    const rawVolumes = raw["volumes"];
    if (!Array.isArray(rawVolumes)) throw bad("volumes");
    for (const v of rawVolumes) {
      const volume = parseDataVolume(v);
      if (!volume) throw bad("volumes");
      volumes.push(volume);
    }
    if (typeof d["imageId"] !== "string" || !isStringList(d["volumeIds"])) throw bad("domain.imageId or domain.volumeIds");
    imageId = d["imageId"];
    volumeIds = [...d["volumeIds"]];
  }
  return {
    vmId,
    ...(v2 ? { from: from as string, nonce: nonce as string } : {}),
    domain: { vmId, name: d["name"], state, generation: d["generation"], resources: res, fence, interfaces: [], volumeIds, imageId },
    devices,
    volumes,
    memoryUsedMib: mem,
    load,
    sentAtMs: sent,
  };
}

/**
 * Where a handoff stands, as its source's state file says (read at `nowMs`):
 * - `committed` — the source's file records the domain as migrated out with this handoff's nonce
 *   (or the handoff is v1): the domain has left the source; the destination takes it on.
 * - `in-doubt` — the source is in the switchover with this nonce (or was killed in it): it may
 *   still commit; nothing may be discarded, nothing started.
 * - `dead` — neither: the source runs the domain on (it failed, rolled back, or started another
 *   attempt); the handoff will never be committed and may be discarded.
 * Throws HYPERVISOR_UNAVAILABLE if the source's file is unreadable.
 */
export function fakeHandoffStatus(handoff: FakeHandoff, nowMs: number): "committed" | "in-doubt" | "dead" {
  if (handoff.from === undefined || handoff.nonce === undefined) return "committed";
  const record = readStoredState(handoff.from, nowMs).outgoing.find((o) => o.vmId === handoff.vmId && o.nonce === handoff.nonce);
  if (!record) return "dead";
  return record.phase === "committed" ? "committed" : "in-doubt";
}

export { syncDirectory } from "./atomic-file.js";

// ---- atomic writes -----------------------------------------------------------------------------

/**
 * Writes `text` to `file` atomically and durably (see `writeFileAtomically`). Throws
 * HYPERVISOR_UNAVAILABLE.
 */
export async function writeFileAtomic(file: string, text: string, stillCurrent?: () => boolean): Promise<boolean> {
  try {
    return await writeFileAtomically(file, text, stillCurrent);
  } catch (e) {
    throw unavailable(`cannot write ${file}`, e);
  }
}

// ---- helpers -----------------------------------------------------------------------------------

export function volumeName(domainName: string): string {
  return `${domainName}.qcow2`;
}

export function resourcesOf(d: Domain): Resources {
  return { vcpus: d.resources?.vcpus ?? 0, memoryMib: d.resources?.memoryMib ?? 0, diskGib: d.resources?.diskGib ?? 0 };
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A time in ms (or 0 for none): a finite number ≥ 0. */
export function isTime(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v) && v >= 0;
}

export function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

export function byVmId(a: { vmId: string }, b: { vmId: string }): number {
  return compareIds(a.vmId, b.vmId);
}

/** Code-unit order of ids (what every list of the state is sorted by). */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}

function isSeed(v: unknown): v is NoCloudSeedFiles {
  return isObject(v) && typeof v["meta-data"] === "string" && typeof v["user-data"] === "string";
}

function parseNics(v: unknown): FakeNic[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: FakeNic[] = [];
  for (const n of v) {
    if (!isObject(n) || typeof n["network"] !== "string" || typeof n["mac"] !== "string" || typeof n["address"] !== "string") return undefined;
    out.push({ network: n["network"], mac: n["mac"], address: n["address"] });
  }
  return out;
}

function parseImage(v: unknown): FakeImage | undefined {
  if (!isObject(v)) return undefined;
  const { imageId, name, source, format, sha256, sizeBytes, virtualSizeBytes, fetchedAtMs } = v;
  if (typeof imageId !== "string" || imageId === "" || typeof name !== "string" || typeof source !== "string" || typeof sha256 !== "string") return undefined;
  if ((format !== "qcow2" && format !== "raw") || !isCount(sizeBytes) || !isCount(virtualSizeBytes) || !isTime(fetchedAtMs)) return undefined;
  return { imageId, name, source, format, sha256, sizeBytes, virtualSizeBytes, fetchedAtMs };
}

function parseDataVolume(v: unknown): FakeDataVolume | undefined {
  if (!isObject(v)) return undefined;
  const { volumeId, name, sizeGib, attachedVmId } = v;
  if (typeof volumeId !== "string" || volumeId === "" || typeof name !== "string" || !isCount(sizeGib) || typeof attachedVmId !== "string") return undefined;
  return { volumeId, name, sizeGib, attachedVmId };
}

export function unavailable(message: string, cause?: unknown): BerthError {
  const detail = cause instanceof Error ? `: ${cause.message}` : "";
  return new BerthError(ErrorCode.HypervisorUnavailable, `fake hypervisor: ${message}${detail}`, { cause });
}

function parseResources(r: unknown): Resources | undefined {
  if (!isObject(r) || !RESOURCE_NAMES.every((k) => isCount(r[k]))) return undefined;
  return { vcpus: r["vcpus"] as number, memoryMib: r["memoryMib"] as number, diskGib: r["diskGib"] as number };
}

function parseRuntime(r: unknown): FakeRuntime | undefined {
  if (!isObject(r)) return undefined;
  const { incarnation, startedAtMs, cpuMs, runningSinceMs } = r;
  if (!isCount(incarnation) || typeof startedAtMs !== "number" || typeof cpuMs !== "number" || cpuMs < 0) return undefined;
  if (runningSinceMs !== null && typeof runningSinceMs !== "number") return undefined;
  return { incarnation, startedAtMs, cpuMs, runningSinceMs };
}
