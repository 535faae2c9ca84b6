import { DesiredState, type HostVolume, type Vm, type VmSpec, type Volume } from "@berth/api";
import { BerthError, ErrorCode } from "@berth/core";
import { volumeSubject } from "./agent-session.js";
import type { CommandFailure, PlannedCommand } from "./reconcile.js";

// Data volumes as pure decisions: a volume's phase, what its host is told, what a create or an
// attach may do with it. The volume manager (volume-manager.ts) owns the I/O and the records.

/** A volume's phase as operators see it (VolumeInfo.phase): from its record and its host's report. */
export type VolumePhase = "unbound" | "creating" | "available" | "attaching" | "attached" | "detaching" | "deleting";

/**
 * The phase of `volume` (pure): `unbound` until a host holds it; `deleting` once asked; then from
 * its host's last report — `creating` (bound, not in the pool yet), `attaching`/`attached` (the
 * record names a VM; the host's domain has it or not yet), `detaching`/`available` (the record
 * names none; the host's domain still has it or not). `reported` undefined means the host's stream
 * is down: the phase is then the record's alone (`attached` or `available`), as last known.
 * `attachedVmId` is the id of the VM the record names (undefined when that VM has no record).
 */
export function volumePhase(volume: Volume, reported: ReadonlyMap<string, HostVolume> | undefined, attachedVmId: string | undefined): VolumePhase {
  if (volume.hostId === "") return "unbound";
  if (volume.deleting) return "deleting";
  if (!reported) return volume.attachedTo ? "attached" : "available";
  const inPool = reported.get(volume.id);
  if (volume.attachedTo) return inPool && attachedVmId !== undefined && inPool.attachedVmId === attachedVmId ? "attached" : "attaching";
  if (!inPool) return "creating";
  return inPool.attachedVmId ? "detaching" : "available";
}

/** What one host's pool should be told, and which volume records may go now. */
export interface VolumePlan {
  commands: PlannedCommand[];
  /** Volumes being deleted that the host no longer holds: their records are removed. */
  remove: Volume[];
  /** The earliest time a command held back by backoff becomes due; undefined when none waits. */
  nextRetryAtMs: number | undefined;
}

/**
 * The volume commands for one connected host (pure), from the volumes bound to it and its pool as
 * it reports it: `create_volume` for a volume not in the pool, not being deleted and attached to
 * no VM (an attached one is made by its VM's create or set_volumes, which carry it);
 * `delete_volume` for one being deleted that is in the pool and attached to no domain there (a
 * domain still holding it is detached first by its VM's set_volumes); the record of one being
 * deleted that the pool no longer has is removed. Commands carry the volume's id and generation
 * (vm_id empty); failures back off per volume as a VM's do.
 */
export function planVolumeCommands(
  volumesOnHost: readonly Volume[],
  reported: ReadonlyMap<string, HostVolume>,
  context: { failures: ReadonlyMap<string, CommandFailure>; nowMs: number },
): VolumePlan {
  const commands: PlannedCommand[] = [];
  const remove: Volume[] = [];
  let nextRetryAtMs: number | undefined;
  for (const v of volumesOnHost) {
    const inPool = reported.get(v.id);
    let command: PlannedCommand | undefined;
    if (v.deleting) {
      if (!inPool) remove.push(v);
      else if (!inPool.attachedVmId) command = { vmId: "", volumeId: v.id, generation: v.generation, action: { $case: "deleteVolume", value: {} } };
    } else if (!inPool && v.attachedTo === "") {
      command = { vmId: "", volumeId: v.id, generation: v.generation, action: { $case: "createVolume", value: { sizeGib: v.sizeGib } } };
    }
    if (!command) continue;
    // A failure at an older generation no longer applies (the record changed since).
    const recorded = context.failures.get(volumeSubject(v.id));
    const failure = recorded && recorded.generation >= v.generation ? recorded : undefined;
    if (failure?.permanent) continue;
    if (failure && context.nowMs < failure.nextAttemptAtMs) {
      nextRetryAtMs = Math.min(nextRetryAtMs ?? Infinity, failure.nextAttemptAtMs);
      continue;
    }
    commands.push(command);
  }
  return { commands, remove, nextRetryAtMs };
}

/** The volume detached from its VM (the VM's record is going, or it asked): a new generation. */
export function released(volume: Volume): Volume {
  return { ...volume, attachedTo: "", generation: volume.generation + 1 };
}

/** How a create may use the volumes a spec names. */
export interface VolumesForCreate {
  /** The volumes, in the spec's order. */
  volumes: Volume[];
  /** The host the bound ones are on (they pin the VM there); undefined when none is bound. */
  hostId: string | undefined;
  /** GiB of the unbound ones: they bind to the chosen host, whose disk must have room for them. */
  unboundGib: number;
}

/**
 * Checks the volumes a new VM's spec names (pure): each must exist (NOT_FOUND naming
 * `<field>.volumes[i]`), not be being deleted nor attached to another VM (FAILED_PRECONDITION),
 * and the bound ones must all be on one host (FAILED_PRECONDITION naming both hosts).
 */
export function volumesForCreate(spec: VmSpec, field: string, lookup: (name: string) => Volume | undefined): VolumesForCreate {
  const volumes: Volume[] = [];
  let hostId: string | undefined;
  let boundName = "";
  let unboundGib = 0;
  spec.volumes.forEach((name, i) => {
    const at = `${field}.volumes[${i}]`;
    const v = lookup(name);
    if (!v) throw new BerthError(ErrorCode.NotFound, `${at}: volume '${name}' not found (berth volume create ${name} --size SIZE)`, { field: at });
    if (v.deleting) throw new BerthError(ErrorCode.FailedPrecondition, `${at}: volume '${name}' is being deleted`, { field: at });
    if (v.attachedTo !== "") {
      throw new BerthError(ErrorCode.FailedPrecondition, `${at}: volume '${name}' is attached to vm '${v.attachedTo}' (detach it first: berth volume detach ${name})`, { field: at });
    }
    if (v.hostId === "") unboundGib += v.sizeGib;
    else if (hostId === undefined) {
      hostId = v.hostId;
      boundName = name;
    } else if (v.hostId !== hostId) {
      throw new BerthError(
        ErrorCode.FailedPrecondition,
        `${at}: volume '${name}' is on host '${v.hostId}' but volume '${boundName}' is on host '${hostId}': a VM's volumes must be on one host`,
        { field: at },
      );
    }
    volumes.push(v);
  });
  return { volumes, hostId, unboundGib };
}

/**
 * Whether `volume` may be attached to `vm` now, and how (pure): `bind` when it is unbound (it is
 * then bound to the VM's host). Throws FAILED_PRECONDITION naming what stands in the way: the
 * volume being deleted or attached elsewhere, the VM being deleted or migrating, too many volumes,
 * or the volume on another host than the VM's — with the way out (`berth vm migrate VM --to HOST`).
 * Undefined when it is attached to that VM already (nothing to do).
 */
export function attachDecision(volume: Volume, vm: Vm, migrating: boolean, maxVolumes: number): { bind: boolean } | undefined {
  const vmName = vm.spec?.name ?? "";
  if (volume.attachedTo === vmName && vm.spec?.volumes.includes(volume.name)) return undefined;
  if (volume.deleting) throw new BerthError(ErrorCode.FailedPrecondition, `volume '${volume.name}' is being deleted`);
  if (volume.attachedTo !== "" && volume.attachedTo !== vmName) {
    throw new BerthError(ErrorCode.FailedPrecondition, `volume '${volume.name}' is attached to vm '${volume.attachedTo}' (detach it first: berth volume detach ${volume.name})`);
  }
  if (vm.desiredState === DesiredState.DESIRED_STATE_DELETED) throw new BerthError(ErrorCode.FailedPrecondition, `vm '${vmName}' is being deleted`);
  if (migrating) throw new BerthError(ErrorCode.FailedPrecondition, `vm '${vmName}' is migrating: attach the volume once it has moved (berth migration show ${vmName})`);
  if ((vm.spec?.volumes.length ?? 0) >= maxVolumes) throw new BerthError(ErrorCode.FailedPrecondition, `vm '${vmName}' has ${maxVolumes} volumes already, the most a VM may have`);
  if (volume.hostId !== "" && volume.hostId !== vm.hostId) {
    throw new BerthError(
      ErrorCode.FailedPrecondition,
      `volume '${volume.name}' is on host '${volume.hostId}' but vm '${vmName}' runs on host '${vm.hostId}': a volume's data stays on its host; move the VM there first (berth vm migrate ${vmName} --to ${volume.hostId}), then attach`,
    );
  }
  return { bind: volume.hostId === "" };
}
