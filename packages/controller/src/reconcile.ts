import {
  DesiredState,
  DomainState,
  VmPhase,
  type Command,
  type Domain,
  type DomainDevices,
  type Image,
  type ImageRef,
  type NetworkInterface,
  type Vm,
  type VmStatus,
  type Volume,
  type VolumeRef,
} from "@berth/api";
import { backoffDelayMs, ErrorCode, isRetryableErrorCode, nicMacAddress } from "@berth/core";

/** What a command asks of a domain, without the envelope (ids, generation, epoch). */
export type DomainAction = NonNullable<Command["action"]>;

/** One command the reconciler wants sent to a host. */
export interface PlannedCommand {
  vmId: string;
  generation: number;
  action: DomainAction;
  /** Set on the commands of a migration (the migration manager's, never the host plan's). */
  migrationId?: string;
  /** Set on volume commands (create_volume, delete_volume), whose vmId is then "". */
  volumeId?: string;
}

/**
 * The failed attempts at a VM's command for one generation, as its host reported them: what the
 * backoff, the VM's status and `berth vm retry` work from.
 */
export interface CommandFailure {
  generation: number;
  code: string;
  message: string;
  /** Failed attempts in a row at this generation. */
  attempts: number;
  /** When the command may be sent again (Unix ms); meaningless when `permanent`. */
  nextAttemptAtMs: number;
  /** The code is permanent (core's `isRetryableErrorCode`): no retry until the generation changes. */
  permanent: boolean;
}

/**
 * The failure record after one more failed attempt: attempts count up within a generation and
 * restart at 1 for a newer one; the next attempt waits `backoffDelayMs` (1 s doubling to 60 s,
 * jittered). Pure: the caller supplies the time and the randomness.
 */
export function recordFailure(
  prior: CommandFailure | undefined,
  failed: { generation: number; code: string; message: string },
  nowMs: number,
  random: () => number,
): CommandFailure {
  const attempts = prior && prior.generation === failed.generation ? prior.attempts + 1 : 1;
  const permanent = !isRetryableErrorCode(failed.code);
  return {
    generation: failed.generation,
    code: failed.code,
    message: failed.message,
    attempts,
    nextAttemptAtMs: permanent ? 0 : nowMs + backoffDelayMs(attempts, random),
    permanent,
  };
}

/** The failure that still applies to `vm` (one at its current generation or later), if any. */
export function currentFailure(vm: Vm, failure: CommandFailure | undefined): CommandFailure | undefined {
  return failure && failure.generation >= vm.generation ? failure : undefined;
}

/** What a VM's commands read from the catalog: images and data volumes by name (the cache's records). */
export interface DeviceCatalog {
  image(name: string): Image | undefined;
  volume(name: string): Volume | undefined;
}

/** A catalog with nothing in it (a VM with an image or volumes cannot be made from it). */
export const EMPTY_CATALOG: DeviceCatalog = Object.freeze({ image: () => undefined, volume: () => undefined });

/**
 * Why a VM's command cannot be made now: recorded as the VM's failure at its generation (NOT_FOUND
 * is permanent: nothing is retried until the spec, the desired state or `berth vm retry` changes
 * it), so the operator sees it on the VM instead of a command that would fail on the host.
 */
export interface CommandRefusal {
  $case: "refused";
  value: { code: string; message: string };
}

/** The image a command carries: the catalog's record as the host needs it to fetch the image. */
export function imageRefOf(image: Image): ImageRef {
  return { id: image.id, name: image.name, source: image.source, format: image.format || "qcow2", sha256: image.sha256 };
}

/** The volume a command carries. */
export function volumeRefOf(volume: Volume): VolumeRef {
  return { id: volume.id, name: volume.name, sizeGib: volume.sizeGib };
}

/** The VM's data volumes as commands carry them, in the spec's order; a refusal when one has no record. */
function volumeRefsOf(vm: Vm, catalog: DeviceCatalog): VolumeRef[] | CommandRefusal {
  const refs: VolumeRef[] = [];
  for (const name of vm.spec?.volumes ?? []) {
    const volume = catalog.volume(name);
    if (!volume) return { $case: "refused", value: { code: ErrorCode.NotFound, message: `volume '${name}' no longer exists (detach it: berth volume detach ${name})` } };
    refs.push(volumeRefOf(volume));
  }
  return refs;
}

/**
 * What the VM's domain is made of beyond its size, from its spec and the catalog (pure): the image
 * its disk is a layer over (resolved now, by name: an image deleted from the catalog since the VM
 * was created is a refusal, NOT_FOUND "image X no longer in the catalog"), one NIC per network with
 * the MAC fixed by the VM's id and the NIC's index (core's `nicMacAddress`), the cloud-init seed
 * (instance id = the VM's id, hostname = its name) when the spec has cloud-init, and its volumes.
 */
export function domainDevices(vm: Vm, catalog: DeviceCatalog): DomainDevices | CommandRefusal {
  const spec = vm.spec!;
  let image: ImageRef | undefined;
  if (spec.image !== "") {
    const record = catalog.image(spec.image);
    if (!record) {
      return { $case: "refused", value: { code: ErrorCode.NotFound, message: `image '${spec.image}' is no longer in the catalog: add it again (berth image create ${spec.image} ...), then berth vm retry ${spec.name}` } };
    }
    image = imageRefOf(record);
  }
  const volumes = volumeRefsOf(vm, catalog);
  if (!Array.isArray(volumes)) return volumes;
  const ci = spec.cloudInit;
  return {
    image,
    nics: spec.networks.map((network, i) => ({ network, mac: nicMacAddress(vm.id, i) })),
    cloudInit: ci ? { instanceId: vm.id, hostname: spec.name, sshAuthorizedKeys: [...ci.sshAuthorizedKeys], userData: ci.userData } : undefined,
    volumes,
  };
}

export const isRefusal = (a: DomainAction | CommandRefusal | DomainDevices | undefined): a is CommandRefusal => a !== undefined && "$case" in a && a.$case === "refused";

/**
 * The action that moves `domain` towards what `vm` wants, or undefined when they agree; a
 * refusal when the command cannot be made (see {@link domainDevices}). Pure.
 * A domain that is in the right state but has not recorded the VM's latest generation still gets
 * the (no-op) command, so the host records the generation and the controller can observe it.
 * `fence` marks a domain to create as one the host's watchdog powers off (restart-policy VMs).
 * A create carries the domain's devices, from `catalog`; a domain whose data volumes are not the
 * VM's (in order) is first given them (`setVolumes`, hot-plugged while it runs), whatever its
 * power state.
 */
export function desiredAction(vm: Vm, domain: Domain | undefined, fence = false, catalog: DeviceCatalog = EMPTY_CATALOG): DomainAction | CommandRefusal | undefined {
  const spec = vm.spec;
  if (!spec?.resources) return undefined;
  const current = domain !== undefined && domain.generation >= vm.generation;
  const create = (start: boolean): DomainAction | CommandRefusal => {
    const devices = domainDevices(vm, catalog);
    if (isRefusal(devices)) return devices;
    return { $case: "create", value: { name: spec.name, resources: spec.resources, start, fence, devices } };
  };
  if (domain && vm.desiredState !== DesiredState.DESIRED_STATE_DELETED && (spec.volumes.length > 0 || domain.volumeIds.length > 0)) {
    const volumes = volumeRefsOf(vm, catalog);
    if (!Array.isArray(volumes)) return volumes;
    if (!sameIds(volumes.map((v) => v.id), domain.volumeIds)) return { $case: "setVolumes", value: { volumes } };
  }
  switch (vm.desiredState) {
    case DesiredState.DESIRED_STATE_DELETED:
      return domain ? { $case: "delete", value: {} } : undefined;
    case DesiredState.DESIRED_STATE_RUNNING:
      if (!domain) return create(true);
      if (domain.state === DomainState.DOMAIN_STATE_RUNNING && current) return undefined;
      return { $case: "start", value: {} };
    case DesiredState.DESIRED_STATE_STOPPED:
      if (!domain) return create(false);
      // A crashed domain is off too: libvirt keeps "shut off (crashed)" until the next start, so
      // asking it to stop would never change what the host reports.
      if ((domain.state === DomainState.DOMAIN_STATE_SHUTOFF || domain.state === DomainState.DOMAIN_STATE_CRASHED) && current) return undefined;
      return { $case: "stop", value: { force: vm.forceStop } };
    default:
      return undefined;
  }
}

function sameIds(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** What one host should be told, and what the controller leaves alone there. */
export interface HostPlan {
  commands: PlannedCommand[];
  /** VMs whose command cannot be made now, with why: the caller records each as the VM's failure. */
  refusals: { vmId: string; generation: number; code: string; message: string }[];
  /**
   * Domains with Berth's metadata that no VM record of this cluster accounts for. They are never
   * deleted on sight (a controller on an empty or foreign store would destroy real VMs): they are
   * reported for the operator to delete or adopt.
   */
  orphans: Domain[];
  /** The earliest time a command held back by backoff becomes due; undefined when none waits. */
  nextRetryAtMs: number | undefined;
}

/** What `planHostCommands` needs to know beyond the host's VMs and inventory. */
export interface HostPlanContext {
  /** Failed attempts per VM id (see `recordFailure`). */
  failures: ReadonlyMap<string, CommandFailure>;
  nowMs: number;
  /**
   * True when the VM with this id has a record placed on another host: a copy here has been
   * superseded (the VM was recreated elsewhere after this host was fenced) and is removed.
   */
  placedElsewhere(vmId: string): boolean;
  /**
   * Creating missing domains is held back (e.g. a new agent for the host whose predecessor may
   * still run the VMs elsewhere: its inventory is believed only once that one is fenced).
   */
  holdCreates?: boolean;
  /** Whether the VM's domain is to be powered off by the host's watchdog (its policy is RESTART). */
  fence?(vm: Vm): boolean;
  /** Images and volumes by name, for the devices commands carry. @default EMPTY_CATALOG */
  catalog?: DeviceCatalog;
  /**
   * True for a VM whose migration holds it (from PREPARING until it ends): the migration manager
   * alone commands its domain on both hosts, so this plan neither recreates it on its source nor
   * takes its arriving domain on the target for an orphan or a superseded copy.
   */
  inFlight?(vmId: string): boolean;
  /**
   * True when a domain here that the VM's record places elsewhere may still be the only copy (the
   * VM's last migration came here and failed): it is left alone as an orphan, never deleted.
   */
  mayBeOnlyCopy?(vmId: string): boolean;
}

/**
 * Commands for one host: each VM placed there moved towards its desired state, unless its last
 * failure is permanent or its backoff has not run out; superseded copies removed; every other
 * unknown domain left alone as an orphan. Only call with a synced cache: an incomplete VM list
 * would make orphans of real VMs (harmless now: orphans are only reported). Pure.
 */
export function planHostCommands(vmsOnHost: readonly Vm[], inventory: ReadonlyMap<string, Domain>, context: HostPlanContext): HostPlan {
  const commands: PlannedCommand[] = [];
  const refusals: HostPlan["refusals"] = [];
  const orphans: Domain[] = [];
  let nextRetryAtMs: number | undefined;
  const wanted = new Set<string>();
  for (const vm of vmsOnHost) {
    wanted.add(vm.id);
    if (context.inFlight?.(vm.id)) continue;
    const domain = inventory.get(vm.id);
    const action = desiredAction(vm, domain, context.fence?.(vm) ?? false, context.catalog);
    if (!action) continue;
    if (!isRefusal(action) && action.$case === "create" && context.holdCreates) continue;
    const failure = currentFailure(vm, context.failures.get(vm.id));
    if (failure?.permanent) continue;
    if (failure && context.nowMs < failure.nextAttemptAtMs) {
      nextRetryAtMs = Math.min(nextRetryAtMs ?? Infinity, failure.nextAttemptAtMs);
      continue;
    }
    if (isRefusal(action)) refusals.push({ vmId: vm.id, generation: vm.generation, ...action.value });
    else commands.push({ vmId: vm.id, generation: vm.generation, action });
  }
  for (const domain of inventory.values()) {
    if (wanted.has(domain.vmId)) continue;
    if (context.inFlight?.(domain.vmId)) continue; // arriving here
    if (context.placedElsewhere(domain.vmId) && !context.mayBeOnlyCopy?.(domain.vmId)) {
      commands.push({ vmId: domain.vmId, generation: domain.generation, action: { $case: "delete", value: {} } });
    } else {
      orphans.push(domain);
    }
  }
  return { commands, refusals, orphans, nextRetryAtMs };
}

/**
 * The status the controller should record for `vm`, from what its host reports. Pure: the caller
 * supplies the time, and compares with `sameStatus` to avoid writing what has not changed.
 */
export function observedStatus(
  vm: Vm,
  hostConnected: boolean,
  domain: Domain | undefined,
  failure: CommandFailure | undefined,
  nowMs: number,
  /** Why the host's account is not believed, when `hostConnected` is false. */
  awayMessage = "host not connected",
): VmStatus {
  const previous = vm.status;
  const base = {
    domainState: domain?.state ?? DomainState.DOMAIN_STATE_UNSPECIFIED,
    observedGeneration: domain?.generation ?? previous?.observedGeneration ?? 0,
    updatedAtMs: nowMs,
    attempts: 0,
    errorCode: "",
    nextAttemptAtMs: 0,
    permanent: false,
    // Addresses are kept while the host is away or the domain is being made: the last known.
    interfaces: domain?.interfaces ?? previous?.interfaces ?? [],
  };
  if (!hostConnected) {
    // Nothing is known until the host is back; keep the last observation for the operator.
    return { ...base, domainState: previous?.domainState ?? base.domainState, phase: VmPhase.VM_PHASE_UNKNOWN, message: awayMessage };
  }
  const failed = currentFailure(vm, failure);
  if (failed) {
    return {
      ...base,
      phase: VmPhase.VM_PHASE_FAILED,
      message: `${failed.code}: ${failed.message}`,
      attempts: failed.attempts,
      errorCode: failed.code,
      nextAttemptAtMs: failed.permanent ? 0 : failed.nextAttemptAtMs,
      permanent: failed.permanent,
    };
  }
  if (vm.desiredState === DesiredState.DESIRED_STATE_DELETED) {
    return { ...base, phase: VmPhase.VM_PHASE_DELETING, message: "" };
  }
  if (!domain) return { ...base, phase: VmPhase.VM_PHASE_PENDING, message: "" };
  const phase =
    domain.state === DomainState.DOMAIN_STATE_RUNNING
      ? VmPhase.VM_PHASE_RUNNING
      : domain.state === DomainState.DOMAIN_STATE_CRASHED
        ? VmPhase.VM_PHASE_FAILED
        : VmPhase.VM_PHASE_STOPPED;
  // Until the host has applied the latest generation the VM is on its way, not there.
  const settled = domain.generation >= vm.generation;
  return {
    ...base,
    phase: settled ? phase : VmPhase.VM_PHASE_PENDING,
    message: domain.state === DomainState.DOMAIN_STATE_CRASHED ? "domain crashed" : "",
  };
}

/**
 * The status of a VM a migration holds: MIGRATING, with where it goes and the migration's phase
 * (`migration` undefined: the migration has just completed and the VM's record is on its way).
 * The domain state is the source's while it has the domain. Pure.
 */
export function migratingStatus(vm: Vm, domain: Domain | undefined, migration: { targetHost: string; phase: string } | undefined, nowMs: number): VmStatus {
  return {
    ...(vm.status ?? { observedGeneration: 0 }),
    phase: VmPhase.VM_PHASE_MIGRATING,
    domainState: domain?.state ?? vm.status?.domainState ?? DomainState.DOMAIN_STATE_UNSPECIFIED,
    message: migration ? `migrating to ${migration.targetHost} (${migration.phase})` : "migrated",
    updatedAtMs: nowMs,
    attempts: 0,
    errorCode: "",
    nextAttemptAtMs: 0,
    permanent: false,
    interfaces: domain?.interfaces ?? vm.status?.interfaces ?? [],
  };
}

/** True when two statuses say the same thing (the timestamp aside). */
export function sameStatus(a: VmStatus | undefined, b: VmStatus): boolean {
  return (
    a !== undefined &&
    a.phase === b.phase &&
    a.domainState === b.domainState &&
    a.observedGeneration === b.observedGeneration &&
    a.message === b.message &&
    a.attempts === b.attempts &&
    a.errorCode === b.errorCode &&
    a.nextAttemptAtMs === b.nextAttemptAtMs &&
    a.permanent === b.permanent &&
    sameInterfaces(a.interfaces, b.interfaces)
  );
}

function sameInterfaces(a: readonly NetworkInterface[], b: readonly NetworkInterface[]): boolean {
  return (
    a.length === b.length &&
    a.every((x, i) => {
      const y = b[i]!;
      return x.network === y.network && x.mac === y.mac && x.addressSource === y.addressSource && x.ipAddresses.join(",") === y.ipAddresses.join(",");
    })
  );
}
