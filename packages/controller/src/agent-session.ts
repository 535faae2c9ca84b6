import type { ServerDuplexStream } from "@grpc/grpc-js";
import type { AgentMessage, CommandResult, ControllerMessage, Domain, HypervisorStatus, Resources } from "@berth/api";
import { Limits } from "@berth/core";
import type { CommandFailure, PlannedCommand } from "./reconcile.js";

/** A command sent and not answered yet. */
export interface InFlight {
  commandId: string;
  vmId: string;
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
  /** Failed attempts per VM id; the backoff and the VM's status come from here. */
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
    const prior = this.inflight.get(planned.vmId);
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
    // A newer command for the VM replaces the one in flight: the older one's result is a stray.
    const replaced = this.inflight.get(planned.vmId);
    if (replaced) this.resultWaiters.get(replaced.commandId)?.(undefined);
    this.inflight.set(planned.vmId, { commandId, vmId: planned.vmId, generation: planned.generation, action: planned.action.$case, sentAtMs: nowMs, migrationId });
    return commandId;
  }

  /**
   * Matches a result with the command in flight it answers and settles it; returns that command,
   * or undefined when the result answers none (a replayed old result, an unknown command id, a
   * command already superseded): such a result must change nothing.
   */
  settle(result: CommandResult): InFlight | undefined {
    const prior = this.inflight.get(result.vmId);
    if (!prior || prior.commandId !== result.commandId || prior.generation !== result.generation) return undefined;
    this.inflight.delete(result.vmId);
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
