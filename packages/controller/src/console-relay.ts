import { randomUUID } from "node:crypto";
import type { ServerDuplexStream } from "@grpc/grpc-js";
import { HostState, malformedOf, VmPhase, type AttachConsoleRequest, type AttachConsoleResponse, type ConsoleOutput, type ControllerMessage } from "@berth/api";
import { BerthError, ErrorCode, invalidArgument, notFound, peerOf, quote, toGrpcStatus, validateName } from "@berth/core";
import type { Logger } from "pino";
import type { LeadingDeps } from "./agent-service.js";
import type { AgentSession } from "./agent-session.js";
import type { ClusterState } from "./cluster-state.js";

/** The bounds of the console relay (see {@link ConsoleRelay}). */
export interface ConsoleLimits {
  /** Console sessions open at once on this controller; one more is RESOURCE_EXHAUSTED. */
  maxSessions: number;
  /** How long an operator's stream may take to send its first message (`open`). */
  openTimeoutMs: number;
  /** How long the host's agent may take to answer `open` (opened or closed). */
  agentAnswerTimeoutMs: number;
  /** The largest `input` message (bytes); a larger one is INVALID_ARGUMENT. */
  maxInputBytes: number;
  /** The largest `output` message an agent may send (bytes), as agent.proto says. */
  maxOutputBytes: number;
  /**
   * Output kept for an operator whose stream is backed up (bytes); beyond it output is dropped and
   * counted, and one marker says how much once the stream drains.
   */
  maxOutputBacklogBytes: number;
  /** How often open sessions check that this controller still leads. */
  leadershipCheckMs: number;
}

/** The default {@link ConsoleLimits}. */
export const CONSOLE_LIMITS: Readonly<ConsoleLimits> = {
  maxSessions: 64,
  openTimeoutMs: 10_000,
  agentAnswerTimeoutMs: 10_000,
  maxInputBytes: 16 * 1024,
  maxOutputBytes: 16 * 1024,
  maxOutputBacklogBytes: 1024 * 1024,
  leadershipCheckMs: 1_000,
};

/** What the relay needs from the controller. */
export interface ConsoleRelayDeps {
  state: Pick<ClusterState, "vm" | "host">;
  /** The live agent streams by host id (the map the agent service keeps). */
  sessions: ReadonlyMap<string, AgentSession>;
  /** What this controller holds while it leads; undefined on a follower or once stopped. */
  leading(): LeadingDeps | undefined;
  log: Logger;
  limits?: Partial<ConsoleLimits>;
}

/** The operator's AttachConsole stream. */
export type ConsoleCall = ServerDuplexStream<AttachConsoleRequest, AttachConsoleResponse>;

/** The line written into a backed-up operator's output where console output was dropped. */
export const droppedMarker = (bytes: number): Buffer => Buffer.from(`\r\n[berth: ${bytes} bytes of console output dropped]\r\n`);

/** One operator's console session: its stream, the host stream it is relayed over, and its output backlog. */
interface ConsoleSession {
  readonly id: string;
  readonly vmName: string;
  readonly vmId: string;
  readonly hostId: string;
  readonly agent: AgentSession;
  readonly call: ConsoleCall;
  readonly peer: string;
  readonly operator: string | undefined;
  /** The leadership the session was opened under: once it is gone, so is the session. */
  readonly leading: LeadingDeps | undefined;
  opened: boolean;
  ended: boolean;
  answerTimer: NodeJS.Timeout | undefined;
  /** The operator's stream said write() false: output waits in `backlog` until 'drain'. */
  blocked: boolean;
  backlog: Buffer[];
  backlogBytes: number;
  /** Output bytes dropped since the stream backed up past the bound (told in one marker). */
  dropped: number;
}

/**
 * The console sessions of one controller, per host stream: the operator's AttachConsole stream
 * relayed over the host's agent stream (ControllerMessage.console ↔ AgentMessage.console), bytes
 * both ways, never looked into nor logged.
 *
 * Contract:
 * - AttachConsole on the leader (NOT_LEADER naming the leader otherwise); the first message must
 *   be `open` within `openTimeoutMs` (INVALID_ARGUMENT); the VM must exist (NOT_FOUND) and be
 *   placed on a host whose agent is connected (FAILED_PRECONDITION naming the phase or the host
 *   state); at most `maxSessions` at once (RESOURCE_EXHAUSTED); inputs at most `maxInputBytes`
 *   (INVALID_ARGUMENT). Refusals send nothing to any host.
 * - The operator's stream ends with the agent's `closed` error (mapped to a gRPC status here,
 *   once), OK when it half-closes (the session is closed on the host), UNAVAILABLE when the host's
 *   stream ends, when the host does not answer `open` in time, when the host's send queue is full
 *   (input would be lost) or when this controller stops leading.
 * - Output to a backed-up operator waits up to `maxOutputBacklogBytes`; beyond that it is dropped
 *   and one {@link droppedMarker} is written when the stream drains.
 */
export class ConsoleRelay {
  readonly limits: Readonly<ConsoleLimits>;
  private readonly byId = new Map<string, ConsoleSession>();
  private readonly byAgent = new Map<AgentSession, Set<ConsoleSession>>();
  private leadershipTimer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: ConsoleRelayDeps) {
    this.limits = { ...CONSOLE_LIMITS, ...deps.limits };
  }

  /** Console sessions open (or opening) now. */
  get size(): number {
    return this.byId.size;
  }

  /**
   * Serves one AttachConsole stream to its end. `leader` resolves when this controller leads and
   * throws NOT_LEADER (naming the leader) otherwise.
   */
  attach(call: ConsoleCall, leader: () => Promise<unknown>): void {
    // grpc-js turns an emitted 'error' into the call's status; this listener only keeps it from
    // being an unhandled error event.
    call.on("error", () => undefined);
    let session: ConsoleSession | undefined;
    let refused = false;
    const refuse = (e: unknown): void => {
      if (refused || session) return;
      refused = true;
      clearTimeout(openTimer);
      failStream(call, e);
    };
    const openTimer = setTimeout(
      () => refuse(invalidArgument("open", `the first message must be open {vm, force}, within ${this.limits.openTimeoutMs / 1000} s of attaching`)),
      this.limits.openTimeoutMs,
    );
    // Messages are handled one at a time, in order: input follows the open it belongs to.
    let chain: Promise<void> = leader().then(
      () => undefined,
      (e: unknown) => refuse(e),
    );
    const next = (step: () => void): void => {
      chain = chain.then(() => {
        if (refused || session?.ended) return;
        try {
          step();
        } catch (e) {
          if (session) this.end(session, e, true, "refused the operator's message");
          else refuse(e);
        }
      });
    };
    call.on("data", (request: AttachConsoleRequest) =>
      next(() => {
        const malformed = malformedOf(request);
        if (malformed) throw invalidArgument(malformed.field, malformed.reason);
        if (!session) {
          if (request.msg?.$case !== "open") throw invalidArgument(request.msg ? "input" : "msg", "the first message must be open {vm, force}");
          clearTimeout(openTimer);
          session = this.open(call, request.msg.value.vm, request.msg.value.force);
          return;
        }
        this.fromOperator(session, request);
      }),
    );
    // The operator half-closed (detached): the session is closed on the host and the stream ends OK.
    call.on("end", () =>
      next(() => {
        clearTimeout(openTimer);
        if (session) this.end(session, undefined, true, "detached");
        else if (!refused) {
          refused = true;
          call.end();
        }
      }),
    );
    const gone = (): void => {
      clearTimeout(openTimer);
      refused = true;
      if (session) this.end(session, undefined, true, "operator's stream gone", false);
    };
    call.on("cancelled", gone);
    call.on("close", gone);
  }

  /**
   * A console message from `agent`'s host stream. Throws INVALID_ARGUMENT for output larger than
   * agent.proto allows (the agent service then refuses the stream). A message for a session this
   * host does not hold is answered with `close`, so the agent lets go of a console nobody reads.
   */
  fromAgent(agent: AgentSession, output: ConsoleOutput): void {
    const event = output.event;
    if (event?.$case === "output" && event.value.length > this.limits.maxOutputBytes) {
      throw invalidArgument("console.output", `at most ${this.limits.maxOutputBytes} bytes a message (got ${event.value.length})`);
    }
    const session = this.byId.get(output.sessionId);
    if (!session || session.agent !== agent) {
      if (event?.$case === "opened" || event?.$case === "output") {
        agent.send({ msg: { $case: "console", value: { sessionId: output.sessionId.slice(0, 64), vmId: "", action: { $case: "close", value: {} } } } });
      }
      return;
    }
    switch (event?.$case) {
      case "opened":
        if (session.opened) return;
        session.opened = true;
        clearTimeout(session.answerTimer);
        session.answerTimer = undefined;
        session.call.write({ msg: { $case: "attached", value: { vmId: session.vmId, hostId: session.hostId } } });
        this.deps.log.info(this.logFields(session), "console session opened");
        return;
      case "output":
        // Output before the host said opened breaks the protocol's order; nothing to show it to yet.
        if (session.opened) this.writeOutput(session, event.value);
        return;
      case "closed": {
        const { errorCode, message } = event.value;
        if (!errorCode) {
          this.end(session, undefined, false, "closed by the host");
          return;
        }
        const code = (Object.values(ErrorCode) as string[]).includes(errorCode) ? (errorCode as ErrorCode) : ErrorCode.Internal;
        this.end(session, new BerthError(code, `console of vm '${session.vmName}' on host '${session.hostId}': ${quote(message, 512)}`), false, "closed by the host");
        return;
      }
      case undefined:
        return;
    }
  }

  /** Ends every console session relayed over `agent`'s stream: UNAVAILABLE "host stream lost". */
  hostStreamEnded(agent: AgentSession): void {
    for (const session of [...(this.byAgent.get(agent) ?? [])]) {
      this.end(session, new BerthError(ErrorCode.Unavailable, `console of vm '${session.vmName}': host stream lost (host '${session.hostId}' disconnected); attach again once it is back`), false, "host stream lost");
    }
  }

  /** Ends every session with `error` (a controller stepping down). */
  closeAll(error: BerthError): void {
    for (const session of [...this.byId.values()]) this.end(session, error, true, "controller stepping down");
  }

  private open(call: ConsoleCall, vmName: string, force: boolean): ConsoleSession {
    validateName(vmName, "open.vm");
    const vm = this.deps.state.vm(vmName);
    if (!vm) throw notFound(`vm '${vmName}'`);
    const phase = VmPhase[vm.status?.phase ?? VmPhase.VM_PHASE_UNSPECIFIED]?.replace(/^VM_PHASE_/, "") ?? "UNSPECIFIED";
    if (!vm.hostId) throw new BerthError(ErrorCode.FailedPrecondition, `vm '${vmName}' is not placed on a host (phase ${phase}): it has no console yet`);
    const agent = this.deps.sessions.get(vm.hostId);
    if (!agent?.isLive) {
      const hostState = HostState[this.deps.state.host(vm.hostId)?.state ?? HostState.HOST_STATE_UNSPECIFIED]?.replace(/^HOST_STATE_/, "") ?? "UNSPECIFIED";
      throw new BerthError(ErrorCode.FailedPrecondition, `vm '${vmName}' is on host '${vm.hostId}', whose agent is not connected (host ${hostState}): its console cannot be reached now`);
    }
    if (this.byId.size >= this.limits.maxSessions) {
      throw new BerthError(ErrorCode.ResourceExhausted, `this controller relays at most ${this.limits.maxSessions} console sessions at once; close one and attach again`);
    }
    let operator: string | undefined;
    try {
      const peer = peerOf(call.getAuthContext());
      operator = peer.secure ? peer.identity.name : undefined;
    } catch {
      operator = undefined;
    }
    const session: ConsoleSession = {
      id: randomUUID(),
      vmName,
      vmId: vm.id,
      hostId: vm.hostId,
      agent,
      call,
      peer: call.getPeer(),
      operator,
      leading: this.deps.leading(),
      opened: false,
      ended: false,
      answerTimer: undefined,
      blocked: false,
      backlog: [],
      backlogBytes: 0,
      dropped: 0,
    };
    if (!this.sendToAgent(session, { $case: "open", value: { force } })) {
      throw new BerthError(ErrorCode.Unavailable, `host '${vm.hostId}' is not taking messages now (its stream is backed up); attach again`);
    }
    this.byId.set(session.id, session);
    let ofAgent = this.byAgent.get(agent);
    if (!ofAgent) this.byAgent.set(agent, (ofAgent = new Set()));
    ofAgent.add(session);
    session.answerTimer = setTimeout(
      () =>
        this.end(
          session,
          new BerthError(ErrorCode.Unavailable, `host '${session.hostId}' did not answer the console request within ${this.limits.agentAnswerTimeoutMs / 1000} s (is its agent older than consoles, or busy?); attach again`),
          true,
          "host did not answer",
        ),
      this.limits.agentAnswerTimeoutMs,
    );
    call.on("drain", () => this.drained(session));
    this.watchLeadership();
    this.deps.log.info({ ...this.logFields(session), force: force || undefined }, "console session requested");
    return session;
  }

  private fromOperator(session: ConsoleSession, request: AttachConsoleRequest): void {
    const msg = request.msg;
    if (msg?.$case !== "input") throw invalidArgument(msg ? "open" : "msg", msg ? "sent twice: one stream is one console session" : "empty message: send input");
    if (msg.value.length > this.limits.maxInputBytes) throw invalidArgument("input", `at most ${this.limits.maxInputBytes} bytes a message (got ${msg.value.length})`);
    if (msg.value.length === 0) return;
    // Dropped keystrokes would garble what the operator types: the session ends instead.
    if (!this.sendToAgent(session, { $case: "input", value: msg.value })) {
      this.end(session, new BerthError(ErrorCode.Unavailable, `host '${session.hostId}' is not taking input now (its stream is backed up); attach again`), true, "host stream backed up");
    }
  }

  private sendToAgent(session: ConsoleSession, action: NonNullable<Extract<ControllerMessage["msg"], { $case: "console" }>["value"]["action"]>): boolean {
    return session.agent.send({ msg: { $case: "console", value: { sessionId: session.id, vmId: session.vmId, action } } });
  }

  private writeOutput(session: ConsoleSession, data: Buffer): void {
    // Once dropping, everything is dropped until the stream drains, so the marker sits at the gap.
    if (session.dropped > 0 || (session.blocked && session.backlogBytes + data.length > this.limits.maxOutputBacklogBytes)) {
      session.dropped += data.length;
      return;
    }
    if (session.blocked) {
      session.backlog.push(data);
      session.backlogBytes += data.length;
      return;
    }
    session.blocked = !session.call.write({ msg: { $case: "output", value: data } });
  }

  private drained(session: ConsoleSession): void {
    if (session.ended) return;
    session.blocked = false;
    while (!session.blocked && session.backlog.length > 0) {
      const data = session.backlog.shift()!;
      session.backlogBytes -= data.length;
      session.blocked = !session.call.write({ msg: { $case: "output", value: data } });
    }
    if (!session.blocked && session.backlog.length === 0 && session.dropped > 0) {
      const dropped = session.dropped;
      session.dropped = 0;
      session.blocked = !session.call.write({ msg: { $case: "output", value: droppedMarker(dropped) } });
      this.deps.log.warn({ ...this.logFields(session), droppedBytes: dropped }, "console output dropped: the operator's stream was backed up");
    }
  }

  /**
   * Ends a session once: forgets it, tells the host to close it (`tellAgent`, unless the host
   * ended it), and ends the operator's stream with `error`'s status (OK when undefined), unless
   * that stream is gone already (`answer` false).
   */
  private end(session: ConsoleSession, error: unknown, tellAgent: boolean, why: string, answer = true): void {
    if (session.ended) return;
    session.ended = true;
    clearTimeout(session.answerTimer);
    session.backlog = [];
    this.byId.delete(session.id);
    const ofAgent = this.byAgent.get(session.agent);
    ofAgent?.delete(session);
    if (ofAgent?.size === 0) this.byAgent.delete(session.agent);
    if (this.byId.size === 0) {
      clearInterval(this.leadershipTimer);
      this.leadershipTimer = undefined;
    }
    if (tellAgent) this.sendToAgent(session, { $case: "close", value: {} });
    if (answer) {
      if (error === undefined) session.call.end();
      else failStream(session.call, error);
    }
    const code = error === undefined ? undefined : error instanceof BerthError ? error.code : ErrorCode.Internal;
    if (error !== undefined && !(error instanceof BerthError)) this.deps.log.error({ ...this.logFields(session), err: error }, "console session failed");
    this.deps.log.info({ ...this.logFields(session), why, code }, "console session closed");
  }

  /**
   * While sessions are open, checks that this controller still leads: a deposed or stopping
   * controller ends them (the operator attaches again, to the new leader). Polled, because the
   * controller's step-down has no event the relay can listen to, and cheap at 64 sessions.
   */
  private watchLeadership(): void {
    if (this.leadershipTimer) return;
    this.leadershipTimer = setInterval(() => {
      for (const session of [...this.byId.values()]) {
        if (this.deps.leading() !== session.leading || session.leading === undefined) {
          this.end(session, new BerthError(ErrorCode.Unavailable, "this controller is no longer the leader; attach again"), true, "controller stepped down");
        }
      }
    }, this.limits.leadershipCheckMs);
    this.leadershipTimer.unref();
  }

  private logFields(session: ConsoleSession): Record<string, unknown> {
    return { vm: session.vmName, host: session.hostId, session: session.id, peer: session.peer, operator: session.operator };
  }
}

/**
 * Ends a server stream with the status of `e`, through the stream's 'error' event (grpc-js sends
 * that status once what was written is out; destroy() would send none).
 */
function failStream(call: ConsoleCall, e: unknown): void {
  const status = toGrpcStatus(e);
  call.emit("error", Object.assign(new Error(status.details), status));
}
