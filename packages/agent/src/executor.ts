import type { Command, CommandResult, Domain, DomainDevices, MigrationTargetAddress } from "@berth/api";
import { BerthError, ErrorCode } from "@berth/core";
import type { DomainSpec, HypervisorDriver, MigrationProgress } from "@berth/hypervisor";

/** Receives a migration's progress while its migrate_out command runs. */
export type MigrationProgressSink = (vmId: string, migrationId: string, progress: MigrationProgress) => void;

/**
 * Applies controller commands to the hypervisor, idempotently: a command carries (vm id,
 * generation, leader epoch), and
 * - a command from a leader older than one already obeyed is refused (a deposed leader),
 * - a command older than the generation the domain records is refused (a stale resend),
 * - a command whose effect is already in place changes nothing (a resend after a lost result).
 * Commands for one VM run one at a time, in arrival order; different VMs run concurrently. The one
 * exception is `abort_migration`: it runs at once, beside a `migrate_out` it is there to cancel.
 * Volume commands (`create_volume`, `delete_volume`: `volume_id` set, `vm_id` empty) run one at a
 * time per volume, under the same epoch rule; their generation is the volume record's.
 */
export class CommandExecutor {
  private readonly perVm = new Map<string, Promise<void>>();
  private highestEpoch: number;

  constructor(
    private readonly driver: HypervisorDriver,
    initialEpoch: number,
    private readonly onEpoch: (epoch: number) => void,
  ) {
    this.highestEpoch = initialEpoch;
  }

  get leaderEpoch(): number {
    return this.highestEpoch;
  }

  /** Accepts a newer leader's epoch (from Welcome). Epochs never go back, except by `resetEpoch`. */
  observeEpoch(epoch: number): void {
    if (epoch > this.highestEpoch) {
      this.highestEpoch = epoch;
      this.onEpoch(epoch);
    }
  }

  /**
   * Sets the epoch to `epoch` even when lower: only for an agent entering a cluster (adopting its
   * id), whose old epoch belongs to another cluster's store and says nothing of this one's leaders.
   * Does not call `onEpoch`: the caller persists the epoch together with the cluster id, before any
   * command of the new cluster runs.
   */
  resetEpoch(epoch: number): void {
    this.highestEpoch = epoch;
  }

  /**
   * Runs the command after any earlier one for the same VM (an abort at once); never rejects.
   * `onProgress` receives a migrate_out's progress while it runs.
   */
  execute(command: Command, onProgress?: MigrationProgressSink): Promise<CommandResult> {
    if (command.action?.$case === "abortMigration") return this.apply(command, onProgress);
    const subject = commandSubject(command);
    const prior = this.perVm.get(subject) ?? Promise.resolve();
    const run = prior.then(() => (command.vmId === "" && command.volumeId !== "" ? this.applyVolume(command) : this.apply(command, onProgress)));
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.perVm.set(subject, settled);
    void settled.then(() => {
      if (this.perVm.get(subject) === settled) this.perVm.delete(subject);
    });
    return run;
  }

  private async apply(command: Command, onProgress?: MigrationProgressSink): Promise<CommandResult> {
    const base = { commandId: command.commandId, vmId: command.vmId, generation: command.generation, migrationId: command.migrationId, volumeId: command.volumeId, migrationTarget: undefined as MigrationTargetAddress | undefined };
    const fail = (code: string, message: string, domain?: Domain): CommandResult => ({
      ...base,
      ok: false,
      errorCode: code,
      errorMessage: message,
      domain,
    });
    const findDomain = async (): Promise<Domain | undefined> =>
      (await this.driver.list()).find((d) => d.vmId === command.vmId);
    try {
      if (command.leaderEpoch < this.highestEpoch) {
        return fail(ErrorCode.FailedPrecondition, `command from leader epoch ${command.leaderEpoch}; this host follows epoch ${this.highestEpoch}`, await findDomain());
      }
      this.observeEpoch(command.leaderEpoch);
      const existing = await findDomain();
      // An abort only ever cancels: it may come with an older generation than the domain records.
      if (existing && command.generation < existing.generation && command.action?.$case !== "abortMigration") {
        return fail(ErrorCode.Conflict, `stale command: generation ${command.generation} < applied ${existing.generation}`, existing);
      }
      const action = command.action;
      if (!action) return fail(ErrorCode.InvalidArgument, "command.action is required", existing);
      let domain: Domain | undefined;
      const needsMigration = (): void => {
        if (!command.migrationId) throw new BerthError(ErrorCode.InvalidArgument, `command.migration_id is required for ${action.$case}`);
      };
      switch (action.$case) {
        case "create": {
          const { name, resources, start, fence, devices } = action.value;
          if (!resources) return fail(ErrorCode.InvalidArgument, "command.create.resources is required", existing);
          // `fence`: the host's watchdog powers this domain off when its deadline passes.
          domain = existing ?? (await this.driver.define({ vmId: command.vmId, name, resources, generation: command.generation, fence, ...devicesOf(devices) }));
          if (start) domain = await this.driver.start(command.vmId);
          break;
        }
        case "start":
          domain = await this.driver.start(command.vmId);
          break;
        case "stop":
          domain = await this.driver.stop(command.vmId, { force: action.value.force });
          break;
        case "delete":
          await this.driver.delete(command.vmId);
          return { ...base, ok: true, errorCode: "", errorMessage: "", domain: undefined };
        case "prepareMigration": {
          needsMigration();
          const { name, resources, fence, devices } = action.value;
          if (!resources) return fail(ErrorCode.InvalidArgument, "command.prepare_migration.resources is required", existing);
          const target = await this.driver.prepareIncoming({ vmId: command.vmId, name, resources, generation: command.generation, fence, ...devicesOf(devices) });
          return { ...base, ok: true, errorCode: "", errorMessage: "", domain: await findDomain(), migrationTarget: { driver: target.driver, uri: target.uri } };
        }
        case "migrateOut": {
          needsMigration();
          const { targetDriver, targetUri, timeoutMs } = action.value;
          if (!targetDriver || !targetUri) return fail(ErrorCode.InvalidArgument, "command.migrate_out.target_driver and target_uri are required", existing);
          const progress = onProgress ? (p: MigrationProgress): void => onProgress(command.vmId, command.migrationId, p) : undefined;
          await this.driver.migrateOut(
            command.vmId,
            { driver: targetDriver, uri: targetUri, vmId: command.vmId },
            { ...(timeoutMs > 0 ? { timeoutMs } : {}), ...(progress ? { onProgress: progress } : {}) },
          );
          return { ...base, ok: true, errorCode: "", errorMessage: "", domain: await findDomain() };
        }
        case "finishMigration":
          needsMigration();
          domain = await this.driver.finishIncoming(command.vmId, command.generation);
          break;
        case "abortMigration":
          needsMigration();
          await this.driver.abortMigration(command.vmId);
          return { ...base, ok: true, errorCode: "", errorMessage: "", domain: await findDomain() };
        case "setVolumes":
          domain = await this.driver.setVolumes(command.vmId, action.value.volumes);
          break;
        case "createVolume":
        case "deleteVolume":
          return fail(ErrorCode.InvalidArgument, `command.volume_id is required for ${action.$case} (and vm_id must be empty)`, existing);
      }
      if (domain.generation < command.generation) domain = await this.driver.setGeneration(command.vmId, command.generation);
      return { ...base, ok: true, errorCode: "", errorMessage: "", domain };
    } catch (e) {
      const code = e instanceof BerthError ? e.code : ErrorCode.Internal;
      const message = e instanceof Error ? e.message : String(e);
      return fail(code, message, await findDomain().catch(() => undefined));
    }
  }

  /** A volume command: the volume's subject has no domain, so only the epoch guards it. */
  private async applyVolume(command: Command): Promise<CommandResult> {
    const base = { commandId: command.commandId, vmId: "", volumeId: command.volumeId, generation: command.generation, migrationId: "", migrationTarget: undefined, domain: undefined };
    const done = (): CommandResult => ({ ...base, ok: true, errorCode: "", errorMessage: "" });
    const fail = (code: string, message: string): CommandResult => ({ ...base, ok: false, errorCode: code, errorMessage: message });
    try {
      if (command.leaderEpoch < this.highestEpoch) {
        return fail(ErrorCode.FailedPrecondition, `command from leader epoch ${command.leaderEpoch}; this host follows epoch ${this.highestEpoch}`);
      }
      this.observeEpoch(command.leaderEpoch);
      const action = command.action;
      switch (action?.$case) {
        case "createVolume":
          await this.driver.createVolume({ id: command.volumeId, name: "", sizeGib: action.value.sizeGib });
          return done();
        case "deleteVolume":
          await this.driver.deleteVolume(command.volumeId);
          return done();
        default:
          return fail(ErrorCode.InvalidArgument, `command.vm_id is required for ${action?.$case ?? "a command without an action"}`);
      }
    } catch (e) {
      return fail(e instanceof BerthError ? e.code : ErrorCode.Internal, e instanceof Error ? e.message : String(e));
    }
  }
}

/** What one command's subject is: its VM, or for a volume command its volume. Commands of one subject run in order. */
function commandSubject(command: Command): string {
  return command.vmId !== "" ? command.vmId : `volume:${command.volumeId}`;
}

/** The driver's view of the devices a command carries (absent fields stay absent). */
function devicesOf(devices: DomainDevices | undefined): Pick<DomainSpec, "image" | "nics" | "cloudInit" | "volumes"> {
  if (!devices) return {};
  return {
    ...(devices.image ? { image: devices.image } : {}),
    ...(devices.nics.length > 0 ? { nics: devices.nics } : {}),
    ...(devices.cloudInit ? { cloudInit: devices.cloudInit } : {}),
    ...(devices.volumes.length > 0 ? { volumes: devices.volumes } : {}),
  };
}
