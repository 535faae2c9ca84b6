import type { AgentMessage, ConsoleControl } from "@berth/api";
import { BerthError, ErrorCode, quote } from "@berth/core";
import type { ConsoleConnection, HypervisorDriver } from "@berth/hypervisor";
import type { Logger } from "pino";

/**
 * Where console output goes: the agent's `StreamWriter` (its `queued` is how many messages
 * wait for the stream to drain).
 */
export interface ConsoleSink {
  write(message: AgentMessage): void;
  readonly queued: number;
}

/** The bounds of one stream's console sessions (see {@link ConsoleSessions}). */
export interface ConsoleSessionLimits {
  /** Sessions open at once on this stream; one more is closed RESOURCE_EXHAUSTED. */
  maxSessions: number;
  /** The largest output message (bytes), as agent.proto says: larger writes of the guest are split. */
  maxChunkBytes: number;
  /**
   * Messages waiting in the sink beyond which output is dropped (and counted, then told in one
   * marker): the stream also carries the host's heartbeats, which must not wait behind megabytes.
   */
  maxQueuedMessages: number;
  /** Input held while the console is being opened (bytes); more closes the session RESOURCE_EXHAUSTED. */
  maxPendingInputBytes: number;
  /** How often a session that dropped output looks whether the sink has drained, to write its marker. */
  drainCheckMs: number;
}

/** The default {@link ConsoleSessionLimits}. */
export const CONSOLE_SESSION_LIMITS: Readonly<ConsoleSessionLimits> = {
  maxSessions: 64,
  maxChunkBytes: 16 * 1024,
  maxQueuedMessages: 32,
  maxPendingInputBytes: 64 * 1024,
  drainCheckMs: 100,
};

/** The text written into the output where console output was dropped (as the controller writes it). */
export const droppedMarker = (bytes: number): Buffer => Buffer.from(`\r\n[berth: ${bytes} bytes of console output dropped]\r\n`);

interface Session {
  readonly id: string;
  readonly vmId: string;
  /** Set once the driver has attached; until then input waits in `pending`. */
  connection: ConsoleConnection | undefined;
  pending: Buffer[];
  pendingBytes: number;
  ended: boolean;
  /** Output bytes dropped while the sink was backed up, not told yet. */
  dropped: number;
}

/**
 * The console sessions of one agent stream: each ConsoleControl session id is one
 * `driver.openConsole(vmId, {force})` connection, bytes relayed both ways (never logged).
 *
 * - `open` → `opened`, or `closed{code, message}` with the driver's BerthError (NOT_FOUND for a VM
 *   the driver does not know, FAILED_PRECONDITION when it is not running or another session holds
 *   its console); another error is `closed{INTERNAL}` (the details go to the agent's log only).
 * - `input` goes to the guest; input for a session this stream does not hold is answered
 *   `closed{NOT_FOUND}`. `close` closes it (no answer: the controller has forgotten it already).
 * - The driver ending a session (the domain stopped, a forced takeover) is `closed` with its reason.
 * - Output goes out in chunks of at most `maxChunkBytes`; while the sink holds `maxQueuedMessages`
 *   or more it is dropped and counted, and {@link droppedMarker} is written once it drains.
 * - Sessions are not commands: no epoch or generation; they live and die with the stream
 *   ({@link closeAll} when it ends: a reconnect starts with none).
 */
export class ConsoleSessions {
  readonly limits: Readonly<ConsoleSessionLimits>;
  private readonly sessions = new Map<string, Session>();
  private drainTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly driver: Pick<HypervisorDriver, "openConsole">,
    private readonly sink: ConsoleSink,
    private readonly log: Logger,
    limits: Partial<ConsoleSessionLimits> = {},
  ) {
    this.limits = { ...CONSOLE_SESSION_LIMITS, ...limits };
  }

  /** Sessions open or being opened. */
  get size(): number {
    return this.sessions.size;
  }

  /** Applies one ConsoleControl from the controller. */
  handle(control: ConsoleControl): void {
    const { sessionId, vmId, action } = control;
    // Without an id there is nothing to answer to.
    if (this.stopped || !sessionId) return;
    const session = this.sessions.get(sessionId);
    switch (action?.$case) {
      case "open":
        if (!session) this.open(sessionId, vmId, action.value.force);
        return;
      case "input":
        if (!session) {
          this.closed(sessionId, ErrorCode.NotFound, `no console session ${quote(sessionId)} on this host (it ended)`);
          return;
        }
        this.input(session, action.value);
        return;
      case "close":
        if (session) this.finish(session, "closed on request");
        return;
      case undefined:
        return;
    }
  }

  /** Ends every session without a word (the stream they were relayed over has ended). */
  closeAll(): void {
    this.stopped = true;
    for (const session of [...this.sessions.values()]) this.finish(session, "stream ended");
    clearInterval(this.drainTimer);
    this.drainTimer = undefined;
  }

  private open(id: string, vmId: string, force: boolean): void {
    if (this.sessions.size >= this.limits.maxSessions) {
      this.closed(id, ErrorCode.ResourceExhausted, `this host relays at most ${this.limits.maxSessions} console sessions at once`);
      return;
    }
    const session: Session = { id, vmId, connection: undefined, pending: [], pendingBytes: 0, ended: false, dropped: 0 };
    this.sessions.set(id, session);
    this.driver.openConsole(vmId, { force }).then(
      (connection) => {
        // Closed (or the stream gone) while the driver attached: let go of the console at once.
        if (session.ended) {
          connection.close();
          return;
        }
        session.connection = connection;
        this.sink.write({ msg: { $case: "console", value: { sessionId: id, event: { $case: "opened", value: {} } } } });
        this.log.info({ vmId, session: id, force: force || undefined }, "console session opened");
        connection.onData((data) => this.output(session, data));
        connection.onEnd((end) => {
          if (session.ended) return;
          this.forget(session);
          this.log.info({ vmId, session: id, code: end?.code, why: end?.message }, "console session ended by the hypervisor");
          this.closed(id, end?.code ?? "", end?.message ?? "");
        });
        for (const data of session.pending) connection.write(data);
        session.pending = [];
        session.pendingBytes = 0;
      },
      (e: unknown) => {
        if (session.ended) return;
        this.forget(session);
        if (e instanceof BerthError) {
          this.log.info({ vmId, session: id, code: e.code, why: e.message }, "console session refused");
          this.closed(id, e.code, e.message);
        } else {
          this.log.error({ err: e, vmId, session: id }, "could not open the console");
          this.closed(id, ErrorCode.Internal, "the host could not open the console (see its agent's log)");
        }
      },
    );
  }

  private input(session: Session, data: Buffer): void {
    if (session.connection) {
      session.connection.write(data);
      return;
    }
    if (session.pendingBytes + data.length > this.limits.maxPendingInputBytes) {
      this.finish(session, "input while opening past the bound");
      this.closed(session.id, ErrorCode.ResourceExhausted, `more than ${this.limits.maxPendingInputBytes} bytes of input before the console was open`);
      return;
    }
    session.pending.push(data);
    session.pendingBytes += data.length;
  }

  private output(session: Session, data: Uint8Array): void {
    if (session.ended) return;
    this.tellDropped(session);
    for (let at = 0; at < data.length; at += this.limits.maxChunkBytes) {
      const chunk = data.subarray(at, at + this.limits.maxChunkBytes);
      // Once dropping, everything is dropped until the sink drains, so the marker sits at the gap.
      if (session.dropped > 0 || this.sink.queued >= this.limits.maxQueuedMessages) {
        session.dropped += chunk.length;
        this.watchDrain();
        continue;
      }
      this.sink.write({ msg: { $case: "console", value: { sessionId: session.id, event: { $case: "output", value: Buffer.from(chunk) } } } });
    }
  }

  /** Writes the marker of a session's dropped output once the sink has room again. */
  private tellDropped(session: Session): void {
    if (session.dropped === 0 || session.ended || this.sink.queued >= this.limits.maxQueuedMessages) return;
    const dropped = session.dropped;
    session.dropped = 0;
    this.sink.write({ msg: { $case: "console", value: { sessionId: session.id, event: { $case: "output", value: droppedMarker(dropped) } } } });
    this.log.warn({ vmId: session.vmId, session: session.id, droppedBytes: dropped }, "console output dropped: the stream to the controller was backed up");
  }

  /** While a session has dropped output, looks for the sink to drain (the guest may say nothing more). */
  private watchDrain(): void {
    if (this.drainTimer) return;
    this.drainTimer = setInterval(() => {
      let waiting = false;
      for (const session of this.sessions.values()) {
        this.tellDropped(session);
        waiting ||= session.dropped > 0;
      }
      if (!waiting) {
        clearInterval(this.drainTimer);
        this.drainTimer = undefined;
      }
    }, this.limits.drainCheckMs);
    this.drainTimer.unref();
  }

  /** Forgets a session and lets go of its console (the driver's onEnd then says nothing). */
  private finish(session: Session, why: string): void {
    if (session.ended) return;
    this.forget(session);
    session.connection?.close();
    this.log.info({ vmId: session.vmId, session: session.id, why }, "console session closed");
  }

  private forget(session: Session): void {
    session.ended = true;
    session.pending = [];
    this.sessions.delete(session.id);
  }

  private closed(sessionId: string, errorCode: string, message: string): void {
    this.sink.write({ msg: { $case: "console", value: { sessionId, event: { $case: "closed", value: { errorCode, message: quote(message, 1024) } } } } });
  }
}
