import type { ServerDuplexStream } from "@grpc/grpc-js";
import type { AgentMessage, CommandResult, ControllerMessage, Domain, HostImage, HostNetwork, HostVolume, HypervisorStatus, Resources } from "@berth/api";
import { Limits } from "@berth/core";
import type { CommandFailure, PlannedCommand } from "./reconcile.js";

/**
 * What a command is about, the key of the commands in flight and of the failures: the VM's id for
 * a VM's commands, `volume:<id>` for a volume command (whose vm_id is empty).
 */
export function commandSubject(c: { vmId: string; volumeId?: string }): string {
  return c.volumeId ? volumeSubject(c.volumeId) : c.vmId;
}

/** The subject of a volume's commands (see {@link commandSubject}). */
export const volumeSubject = (volumeId: string): string => `volume:${volumeId}`;

/** What a host holds and offers, as its agent last reported it (Hello, then every Report). */
export interface HostHoldings {
  images: readonly HostImage[];
  networks: readonly HostNetwork[];
  volumes: readonly HostVolume[];
}

/** A command sent and not answered yet. */
export interface InFlight {
  commandId: string;
  /** See {@link commandSubject}. */
  subject: string;
  vmId: string;
  /** Set for a volume command ("" for others). */
  volumeId: string;
  generation: number;
  action: string;
  sentAtMs: number;
  /** The migration the command belongs to ("" for others). */
  migrationId: string;
}

/**
 * One agent's live stream, and what the controller knows of its host through it: the reported
 * inventory, the commands sent and not yet answered, the last failure per VM.
 *
 * Sending respects backpressure: when the stream's buffer is full, messages wait in a bounded
 * queue until 'drain'; commands that do not fit are not sent and are planned again on the next pass
 * (reconciliation is level-triggered, so nothing is lost by dropping them).
 */
export class AgentSession {
  readonly connectedAtMs: number;
  lastHeardMs: number;
  inventory: Map<string, Domain>;
  usage: Resources | undefined;
  /** Failed attempts per subject (a VM id, or `volume:<id>`); the backoff and the VM's status come from here. */
  readonly failures = new Map<string, CommandFailure>();
  /**
   * Until when missing domains are not created on this host (Unix ms; 0: no hold): a new agent
   * process whose predecessor may still run the VMs until its watchdog fires.
   */
  holdCreatesUntilMs = 0;
  /** Domains no VM record accounts for, as of the last reconcile pass (see `planHostCommands`). */
  orphans: Domain[] = [];
  /** Measured use per running VM id, as last reported. */
  vmUsage = new Map<string, { cpuCores: number; memoryMib: number }>();
  /** Results dropped because they answered no command in flight (replays, strays). */
  droppedResults = 0;
  private holdingsNow: HostHoldings = { images: [], networks: [], volumes: [] };
  private activeNetworksNow: ReadonlySet<string> = new Set();
  private imageIdsNow: ReadonlySet<string> = new Set();
  private volumesNow: ReadonlyMap<string, HostVolume> = new Map();
  private readonly inflight = new Map<string, InFlight>();
  private readonly resultWaiters = new Map<string, (result: CommandResult | undefined) => void>();
  private readonly queue: ControllerMessage[] = [];
  private blocked = false;
  private closed = false;
  private nextCommand = 0;
  private isWelcomed = false;
  private hypervisorStatus: HypervisorStatus | undefined;

  constructor(
    readonly hostId: string,
    readonly bootId: string,
    private readonly call: ServerDuplexStream<AgentMessage, ControllerMessage>,
    /** The inventory from Hello (reconnect = full resync). */
    inventory: readonly Domain[],
    nowMs: number,
    /** Called whenever {@link acceptsPlacements} may have changed (welcomed, closed, hypervisor reported). */
    private readonly onPlacementChange: () => void = () => undefined,
  ) {
    this.inventory = new Map(inventory.map((d) => [d.vmId, d]));
    this.connectedAtMs = nowMs;
    this.lastHeardMs = nowMs;
    call.on("drain", () => this.flush());
  }

  /** Set once Welcome is on the stream: before that the agent would ignore commands. */
  get welcomed(): boolean {
    return this.isWelcomed;
  }

  set welcomed(value: boolean) {
    this.isWelcomed = value;
    this.onPlacementChange();
  }

  /** The hypervisor's health as last reported; absent from agents that do not report it. */
  get hypervisor(): HypervisorStatus | undefined {
    return this.hypervisorStatus;
  }

  set hypervisor(value: HypervisorStatus | undefined) {
    const changed = this.hypervisorStatus?.available !== value?.available;
    this.hypervisorStatus = value;
    if (changed) this.onPlacementChange();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The images, networks and volumes the host last reported (Host.images/networks/volumes in answers). */
  get holdings(): HostHoldings {
    return this.holdingsNow;
  }

  /** Names of the networks the host offers that VMs can use now (active ones): placement's `networks`. */
  get activeNetworks(): ReadonlySet<string> {
    return this.activeNetworksNow;
  }

  /** Ids of the images the host holds: placement's image locality. */
  get imageIds(): ReadonlySet<string> {
    return this.imageIdsNow;
  }

  /** The data volumes in the host's pool, by volume id. */
  get reportedVolumes(): ReadonlyMap<string, HostVolume> {
    return this.volumesNow;
  }

  /**
   * Replaces what the host holds with its latest report, whole (Hello and every Report carry all
   * of it). Says what changed: `placement` when the active networks or the images differ (the
   * host's snapshot for the scheduler), `volumes` when the pool's volumes differ (its volume plan).
   */
  setHoldings(next: HostHoldings): { placement: boolean; volumes: boolean } {
    const networks = new Set(next.networks.filter((n) => n.active).map((n) => n.name));
    const images = new Set(next.images.map((i) => i.imageId));
    const volumes = new Map(next.volumes.map((v) => [v.volumeId, v]));
    const placement = !sameSet(networks, this.activeNetworksNow) || !sameSet(images, this.imageIdsNow);
    const volumesChanged = volumes.size !== this.volumesNow.size || [...volumes].some(([id, v]) => {
      const was = this.volumesNow.get(id);
      return !was || was.attachedVmId !== v.attachedVmId || was.sizeGib !== v.sizeGib;
    });
    this.holdingsNow = { images: [...next.images], networks: [...next.networks], volumes: [...next.volumes] };
    if (placement) {
      this.activeNetworksNow = networks;
      this.imageIdsNow = images;
    }
    this.volumesNow = volumes;
    if (placement) this.onPlacementChange();
    return { placement, volumes: volumesChanged };
  }

  /** A volume command succeeded: the pool is as it said until the next report replaces it. */
  volumeCommandApplied(volumeId: string, made: HostVolume | undefined): void {
    const volumes = new Map(this.volumesNow);
    if (made) volumes.set(volumeId, made);
    else volumes.delete(volumeId);
    this.volumesNow = volumes;
    this.holdingsNow = { ...this.holdingsNow, volumes: [...volumes.values()] };
  }

  /** Live, and its hypervisor not reported down: the host may take new VMs. */
  get acceptsPlacements(): boolean {
    return this.isLive && this.hypervisor?.available !== false;
  }

  /** Welcomed and not closed: commands sent now will be executed. */
  get isLive(): boolean {
    return this.welcomed && !this.closed;
  }

  /** Sends a message, queueing it while the stream is backed up. False when it was dropped. */
  send(message: ControllerMessage): boolean {
    if (this.closed) return false;
    if (this.blocked) {
      if (this.queue.length >= Limits.maxQueuedCommandsPerHost) return false;
      this.queue.push(message);
      return true;
    }
    this.blocked = !this.call.write(message);
    return true;
  }

  /**
   * Sends a planned command unless the same one is already in flight and younger than
   * `resendAfterMs`. Commands are idempotent, so a resend after a lost result is safe.
   */
  sendCommand(planned: PlannedCommand, leaderEpoch: number, nowMs: number, resendAfterMs: number): string | undefined {
    const subject = commandSubject(planned);
    const prior = this.inflight.get(subject);
    const migrationId = planned.migrationId ?? "";
    if (
      prior &&
      prior.generation === planned.generation &&
      prior.action === planned.action.$case &&
      prior.migrationId === migrationId &&
      nowMs - prior.sentAtMs < resendAfterMs
    ) {
      return undefined;
    }
    const commandId = `${this.bootId.slice(0, 8)}-${++this.nextCommand}`;
    const sent = this.send({
      msg: {
        $case: "command",
        value: {
          commandId,
          vmId: planned.vmId,
          generation: planned.generation,
          leaderEpoch,
          migrationId,
          volumeId: planned.volumeId ?? "",
          action: planned.action,
        },
      },
    });
    if (!sent) return undefined;
    // A newer command for the subject replaces the one in flight: the older one's result is a stray.
    const replaced = this.inflight.get(subject);
    if (replaced) this.resultWaiters.get(replaced.commandId)?.(undefined);
    this.inflight.set(subject, { commandId, subject, vmId: planned.vmId, volumeId: planned.volumeId ?? "", generation: planned.generation, action: planned.action.$case, sentAtMs: nowMs, migrationId });
    return commandId;
  }

  /**
   * Matches a result with the command in flight it answers and settles it; returns that command,
   * or undefined when the result answers none (a replayed old result, an unknown command id, a
   * command already superseded): such a result must change nothing.
   */
  settle(result: CommandResult): InFlight | undefined {
    const subject = commandSubject(result);
    const prior = this.inflight.get(subject);
    if (!prior || prior.commandId !== result.commandId || prior.generation !== result.generation) return undefined;
    this.inflight.delete(subject);
    this.resultWaiters.get(prior.commandId)?.(result);
    return prior;
  }

  /**
   * Resolves with the result of the command `commandId` once it arrives, or undefined when the
   * stream closes, a newer command for the VM replaces it, or `timeoutMs` passes.
   */
  waitForResult(commandId: string, timeoutMs: number): Promise<CommandResult | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(undefined), timeoutMs);
      const done = (result: CommandResult | undefined): void => {
        clearTimeout(timer);
        this.resultWaiters.delete(commandId);
        resolve(result);
      };
      this.resultWaiters.set(commandId, done);
      if (this.closed) done(undefined);
    });
  }

  /** The command in flight for the VM, if any. */
  inflightFor(vmId: string): InFlight | undefined {
    return this.inflight.get(vmId);
  }

  /** The command in flight for the volume (by id), if any. */
  inflightForVolume(volumeId: string): InFlight | undefined {
    return this.inflight.get(volumeSubject(volumeId));
  }

  get inflightCount(): number {
    return this.inflight.size;
  }

  /** Ends the stream (idempotent). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.onPlacementChange();
    this.queue.length = 0;
    for (const waiter of [...this.resultWaiters.values()]) waiter(undefined);
    try {
      this.call.end();
    } catch {
      // The stream may already be gone; closing is best effort and idempotent.
    }
  }

  private flush(): void {
    this.blocked = false;
    while (!this.closed && !this.blocked && this.queue.length > 0) {
      this.blocked = !this.call.write(this.queue.shift()!);
    }
  }
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}
