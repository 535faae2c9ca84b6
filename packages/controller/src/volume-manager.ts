import { randomUUID } from "node:crypto";
import { HostState, type Vm, type Volume, type VolumeInfo } from "@berth/api";
import { alreadyExists, BerthError, ErrorCode, Limits, notFound, validateHostId, validateName, validateVolume } from "@berth/core";
import type { ClusterStore, Compare, Op } from "@berth/store";
import type { Logger } from "pino";
import { volumeSubject, type AgentSession } from "./agent-session.js";
import type { ClusterState } from "./cluster-state.js";
import type { FencedWriter } from "./fenced-writer.js";
import { decodeVolume, encodeVm, encodeVolume, Keys } from "./keys.js";
import type { Placer } from "./placement.js";
import { attachDecision, planVolumeCommands, released, volumePhase } from "./volumes.js";
import { waitUpTo } from "./wait.js";

/** What the volume manager reads and writes through. */
export interface VolumeManagerDeps {
  store: ClusterStore;
  state: ClusterState;
  sessions: ReadonlyMap<string, AgentSession>;
  writer: FencedWriter;
  /** Room on a host's disk (its snapshot: allocatable, allocated), and reservations while a bind commits. */
  placer: Pick<Placer, "diskOf" | "reserve" | "release">;
  /** The epoch commands carry. */
  commandEpoch(): number;
  /** Resend a volume command not answered after this long. */
  commandResendMs: number;
  log: Logger;
  now: () => number;
}

/** Attempts of a guarded write whose records keep changing underneath. */
const MAX_WRITE_ATTEMPTS = 8;
/** How long a write waits for its own change to reach the cache before answering. */
const CACHE_CATCH_UP_MS = 5_000;

/**
 * A volume as operators see it (pure over the cache and the sessions): the record and its phase
 * (see `volumePhase`), from its host's live report.
 */
export function volumeInfo(state: ClusterState, sessions: ReadonlyMap<string, AgentSession>, volume: Volume): VolumeInfo {
  const session = volume.hostId ? sessions.get(volume.hostId) : undefined;
  const reported = session?.isLive ? session.reportedVolumes : undefined;
  const attachedVmId = volume.attachedTo ? state.vm(volume.attachedTo)?.id : undefined;
  return { volume, phase: volumePhase(volume, reported, attachedVmId) };
}

/** Every volume (or those bound to `hostId`), sorted by name, with its phase (ListVolumes). */
export function listVolumes(state: ClusterState, sessions: ReadonlyMap<string, AgentSession>, hostId: string): VolumeInfo[] {
  const volumes = hostId ? state.volumesOnHost(hostId) : state.allVolumes();
  return volumes.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((v) => volumeInfo(state, sessions, v));
}

/**
 * The one writer of volume records (besides the transactions that must move a volume with its VM:
 * a create binding it, a migration's completion, a VM record's removal releasing it): create,
 * delete, attach, detach, and each host's volume plan — `planVolumeCommands` sent through the
 * host's session, and the records of deleted volumes removed once the host no longer holds them.
 * Every write is guarded on the records it read and fenced.
 */
export class VolumeManager {
  constructor(private readonly deps: VolumeManagerDeps) {}

  /**
   * Records a volume (CreateVolume): unbound, or bound to `host_id` — which must exist (NOT_FOUND)
   * and have room on its disk for it (RESOURCE_EXHAUSTED with the figures). Create-if-absent on
   * the name (ALREADY_EXISTS), guarded on the host's record. The host makes it in its pool once
   * its plan says so.
   */
  async create(input: Volume | undefined): Promise<Volume> {
    validateVolume(input, "volume");
    const { state, writer } = this.deps;
    if (state.volume(input.name)) throw alreadyExists(`volume '${input.name}'`);
    const volume: Volume = {
      id: randomUUID(),
      name: input.name,
      sizeGib: input.sizeGib,
      hostId: input.hostId,
      attachedTo: "",
      createdAtMs: this.deps.now(),
      deleting: false,
      generation: 1,
    };
    const key = Keys.volume(volume.name);
    const compare: Compare[] = [{ key, target: "createRevision", equals: 0 }];
    const reservation = volume.hostId ? this.holdRoom(volume.hostId, volume, `volume/${volume.name}/create`) : undefined;
    try {
      if (volume.hostId) {
        const hostKv = state.hostKv(volume.hostId)!;
        compare.push({ key: hostKv.key, target: "createRevision", equals: hostKv.createRevision });
      }
      const result = await writer.commit({ compare, ops: [{ type: "put", key, value: encodeVolume(volume) }] });
      if (!result.succeeded) {
        if (await this.deps.store.get(key)) throw alreadyExists(`volume '${volume.name}'`);
        throw new BerthError(ErrorCode.Conflict, `host '${volume.hostId}' changed meanwhile; retry`);
      }
      await waitUpTo(state.volumes.waitForRevision(result.revision), CACHE_CATCH_UP_MS);
    } finally {
      if (reservation) this.deps.placer.release(reservation);
    }
    this.deps.log.info({ volume: volume.name, volumeId: volume.id, sizeGib: volume.sizeGib, hostId: volume.hostId || undefined }, "volume created");
    return volume;
  }

  /**
   * Deletes a detached volume and its data (DeleteVolume). FAILED_PRECONDITION naming the VM while
   * it is attached. A volume never bound, or whose host record is gone, has its record removed at
   * once; otherwise it is marked deleting (a new generation) and its host removes it, after which
   * the record goes. Idempotent: a volume being deleted is answered as it is. Returns the record
   * as written (marked deleting, or as it was when removed).
   */
  async delete(name: string): Promise<Volume> {
    validateName(name, "name");
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      const kv = await this.deps.store.get(Keys.volume(name));
      if (!kv) throw notFound(`volume '${name}'`);
      const volume = decodeVolume(kv.value);
      if (volume.attachedTo) {
        throw new BerthError(ErrorCode.FailedPrecondition, `volume '${name}' is attached to vm '${volume.attachedTo}': detach it first (berth volume detach ${name})`);
      }
      if (volume.deleting) return volume;
      const guard: Compare = { key: kv.key, target: "modRevision", equals: kv.modRevision };
      // No host will ever confirm it: never bound, its host forgotten, or its host fenced (silent
      // past its watchdog or confirmed down: a host gone for good, as retiring one goes). Only the
      // record is forgotten then; a fenced host that returns keeps the data in its pool.
      const host = volume.hostId === "" ? undefined : this.deps.state.host(volume.hostId);
      const atOnce = host === undefined || host.state === HostState.HOST_STATE_FENCED;
      const next: Volume = { ...volume, deleting: true, generation: volume.generation + 1 };
      const result = await this.deps.writer.commit({ compare: [guard], ops: [atOnce ? { type: "delete", key: kv.key } : { type: "put", key: kv.key, value: encodeVolume(next) }] });
      if (!result.succeeded) continue;
      await waitUpTo(this.deps.state.volumes.waitForRevision(result.revision), CACHE_CATCH_UP_MS);
      this.deps.log.info(
        { volume: name, volumeId: volume.id, hostId: volume.hostId || undefined },
        !atOnce ? "volume delete asked for; its host removes it" : host ? "volume record deleted; its host is fenced, so its data stays in that host's pool" : "volume deleted",
      );
      return atOnce ? volume : next;
    }
    throw new BerthError(ErrorCode.Conflict, `volume '${name}' kept changing; retry`);
  }

  /**
   * Attaches a volume to a VM (AttachVolume): hot-plugged by its host if the VM runs. An unbound
   * volume is bound to the VM's host, if its disk has room (RESOURCE_EXHAUSTED with the figures);
   * one bound elsewhere is FAILED_PRECONDITION naming both hosts and the way out (see
   * `attachDecision` for the other refusals). One transaction, guarded on the volume, the VM, the
   * VM's migration record and (binding) the host: the volume names the VM, the VM's spec.volumes
   * gains the volume and its generation is bumped (its host then sets the domain's volumes).
   * Idempotent: a volume attached to that VM already is answered as it is.
   */
  async attach(volumeName: string, vmName: string): Promise<{ volume: Volume; vm: Vm }> {
    validateName(volumeName, "volume");
    validateName(vmName, "vm");
    const { state } = this.deps;
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      const vkv = state.volumeKv(volumeName);
      const volume = state.volume(volumeName);
      if (!vkv || !volume) throw notFound(`volume '${volumeName}'`);
      const mkv = state.vmKv(vmName);
      const vm = state.vm(vmName);
      if (!mkv || !vm?.spec) throw notFound(`vm '${vmName}'`);
      const decision = attachDecision(volume, vm, state.activeMigration(vm.id) !== undefined, Limits.maxVolumesPerVm);
      if (!decision) return { volume, vm };
      const key = `volume/${volumeName}/attach`;
      if (decision.bind) this.holdRoom(vm.hostId, volume, key);
      try {
        const nextVolume: Volume = { ...volume, hostId: volume.hostId || vm.hostId, attachedTo: vmName, generation: volume.generation + 1 };
        const volumes = vm.spec.volumes.includes(volumeName) ? vm.spec.volumes : [...vm.spec.volumes, volumeName];
        const nextVm: Vm = { ...vm, spec: { ...vm.spec, volumes }, generation: vm.generation + 1 };
        const compare: Compare[] = [
          { key: vkv.key, target: "modRevision", equals: vkv.modRevision },
          { key: mkv.key, target: "modRevision", equals: mkv.modRevision },
          this.noMigrationStarted(vmName),
        ];
        if (decision.bind) {
          const hostKv = state.hostKv(vm.hostId);
          if (!hostKv) throw notFound(`host '${vm.hostId}'`);
          compare.push({ key: hostKv.key, target: "createRevision", equals: hostKv.createRevision });
        }
        const ops: Op[] = [
          { type: "put", key: vkv.key, value: encodeVolume(nextVolume) },
          { type: "put", key: mkv.key, value: encodeVm(nextVm) },
        ];
        const result = await this.deps.writer.commit({ compare, ops });
        await waitUpTo(Promise.all([state.volumes.waitForRevision(result.revision), state.vms.waitForRevision(result.revision)]), CACHE_CATCH_UP_MS);
        if (!result.succeeded) continue;
        this.deps.log.info({ volume: volumeName, vm: vmName, hostId: vm.hostId, bound: decision.bind || undefined, generation: nextVm.generation }, "volume attached");
        return { volume: nextVolume, vm: nextVm };
      } finally {
        if (decision.bind) this.deps.placer.release(key);
      }
    }
    throw new BerthError(ErrorCode.Conflict, `volume '${volumeName}' or vm '${vmName}' kept changing; retry`);
  }

  /**
   * Detaches a volume from its VM (DetachVolume); the volume and its data stay, bound to the host.
   * The reverse of {@link attach}, in one guarded transaction (the VM's generation bumped: its host
   * detaches it from the domain). FAILED_PRECONDITION while the VM migrates. Idempotent: a volume
   * attached to nothing is answered as it is (without a VM).
   */
  async detach(volumeName: string): Promise<{ volume: Volume; vm: Vm | undefined }> {
    validateName(volumeName, "volume");
    const { state } = this.deps;
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      const vkv = state.volumeKv(volumeName);
      const volume = state.volume(volumeName);
      if (!vkv || !volume) throw notFound(`volume '${volumeName}'`);
      if (!volume.attachedTo) return { volume, vm: undefined };
      const vmName = volume.attachedTo;
      const mkv = state.vmKv(vmName);
      const vm = state.vm(vmName);
      if (vm && state.activeMigration(vm.id)) {
        throw new BerthError(ErrorCode.FailedPrecondition, `vm '${vmName}' is migrating: detach the volume once it has moved (berth migration show ${vmName})`);
      }
      const nextVolume = released(volume);
      const compare: Compare[] = [{ key: vkv.key, target: "modRevision", equals: vkv.modRevision }];
      const ops: Op[] = [{ type: "put", key: vkv.key, value: encodeVolume(nextVolume) }];
      let nextVm: Vm | undefined;
      if (vm?.spec && mkv) {
        nextVm = { ...vm, spec: { ...vm.spec, volumes: vm.spec.volumes.filter((v) => v !== volumeName) }, generation: vm.generation + 1 };
        compare.push({ key: mkv.key, target: "modRevision", equals: mkv.modRevision }, this.noMigrationStarted(vmName));
        ops.push({ type: "put", key: mkv.key, value: encodeVm(nextVm) });
      } else {
        // The record names a VM that is gone: nothing holds the volume but the record.
        compare.push({ key: Keys.vm(vmName), target: "createRevision", equals: 0 });
      }
      const result = await this.deps.writer.commit({ compare, ops });
      await waitUpTo(Promise.all([state.volumes.waitForRevision(result.revision), state.vms.waitForRevision(result.revision)]), CACHE_CATCH_UP_MS);
      if (!result.succeeded) continue;
      this.deps.log.info({ volume: volumeName, vm: vmName, hostId: volume.hostId, generation: nextVm?.generation }, "volume detached");
      return { volume: nextVolume, vm: nextVm };
    }
    throw new BerthError(ErrorCode.Conflict, `volume '${volumeName}' or its VM kept changing; retry`);
  }

  /**
   * One host's volume plan (called by the reconciler's pass of the host): the commands of
   * `planVolumeCommands` sent through its live session, the records of deleted volumes it no
   * longer holds removed — and, when the host's record is gone, those of its volumes being deleted
   * at once (nothing will ever report them gone). Returns when a command held back by backoff is
   * due (undefined: none).
   */
  async reconcileHost(hostId: string, session: AgentSession | undefined, nowMs: number): Promise<number | undefined> {
    const { state } = this.deps;
    const volumes = state.volumesOnHost(hostId);
    if (volumes.length === 0) return undefined;
    if (!state.host(hostId)) {
      for (const v of volumes) if (v.deleting) await this.removeRecord(v, "its host's record is gone");
      return undefined;
    }
    if (!session?.isLive) return undefined;
    const plan = planVolumeCommands(volumes, session.reportedVolumes, { failures: session.failures, nowMs });
    for (const planned of plan.commands) session.sendCommand(planned, this.deps.commandEpoch(), nowMs, this.deps.commandResendMs);
    for (const v of plan.remove) {
      if (await this.removeRecord(v, "its host no longer holds it")) session.failures.delete(volumeSubject(v.id));
    }
    return plan.nextRetryAtMs;
  }

  /** Removes a deleted volume's record, guarded on the cache's revision of it (still the one being deleted). */
  private async removeRecord(v: Volume, why: string): Promise<boolean> {
    const kv = this.deps.state.volumeKv(v.name);
    const current = this.deps.state.volume(v.name);
    if (!kv || current?.id !== v.id || !current.deleting) return false;
    const result = await this.deps.writer.commit({ compare: [{ key: kv.key, target: "modRevision", equals: kv.modRevision }], ops: [{ type: "delete", key: kv.key }] });
    if (result.succeeded) this.deps.log.info({ volume: v.name, volumeId: v.id, hostId: v.hostId, why }, "volume deleted");
    return result.succeeded;
  }

  /**
   * Checks that the host's disk has room for the volume and holds it there (a reservation under
   * `key`, released by the caller once the write is in the cache or failed). NOT_FOUND for an
   * unknown host; RESOURCE_EXHAUSTED with the figures. No await between the check and the hold,
   * so concurrent binds see each other.
   */
  private holdRoom(hostId: string, volume: Volume, key: string): string {
    validateHostId(hostId);
    const disk = this.deps.placer.diskOf(hostId);
    if (!disk) throw notFound(`host '${hostId}'`);
    const free = disk.allocatableGib - disk.allocatedGib;
    if (volume.sizeGib > free) {
      throw new BerthError(
        ErrorCode.ResourceExhausted,
        `host '${hostId}' has no room for volume '${volume.name}': ${volume.sizeGib} GiB asked, ${Math.max(0, free)} GiB free (${disk.allocatedGib} of ${disk.allocatableGib} GiB allocatable allocated to VMs and volumes)`,
      );
    }
    this.deps.placer.reserve(key, { name: volume.name, hostId, resources: { vcpus: 0, memoryMib: 0, diskGib: volume.sizeGib }, group: "", volume: true });
    return key;
  }

  /** A compare that fails once a migration of the VM is asked for (its record appears or changes). */
  private noMigrationStarted(vmName: string): Compare {
    const kv = this.deps.state.migrationKv(vmName);
    return kv ? { key: kv.key, target: "modRevision", equals: kv.modRevision } : { key: Keys.migration(vmName), target: "createRevision", equals: 0 };
  }
}
