import type { ServerDuplexStream } from "@grpc/grpc-js";
import {
  malformedOf,
  RejectReason,
  type AgentMessage,
  type AgentServiceServer,
  type CommandResult,
  type ControllerMessage,
  type Hello,
  type Report,
} from "@berth/api";
import { ErrorCode, invalidArgument, isBerthError, peerOf, quote, toGrpcStatus, validateDomain, validateHello, validateReport, type PeerIdentity } from "@berth/core";
import type { Logger } from "pino";
import { AgentSession, type InFlight } from "./agent-session.js";
import { agentIdentity } from "./authorization.js";
import type { ClusterState } from "./cluster-state.js";
import type { FencedWriter } from "./fenced-writer.js";
import type { ClusterIdentity } from "./cluster-identity.js";
import type { HostManager } from "./host-manager.js";
import type { Metrics } from "./metrics.js";
import type { MigrationManager } from "./migration-manager.js";
import type { Rebalancer } from "./rebalancer.js";
import { recordFailure } from "./reconcile.js";
import type { Reconciler } from "./reconciler.js";
import type { ScaleGroupManager } from "./scale-group-manager.js";
import type { VolumeManager } from "./volume-manager.js";
import type { ConsoleRelay } from "./console-relay.js";

/** What a leading controller lends the agent service. */
export interface LeadingDeps {
  writer: FencedWriter;
  reconciler: Reconciler;
  hosts: HostManager;
  migrations: MigrationManager;
  rebalancer: Rebalancer;
  /** Data volumes: the one writer of their records, and each host's volume plan. */
  volumes: VolumeManager;
  /** Scale groups: the one writer of their records, and the autoscaler. */
  scaleGroups: ScaleGroupManager;
  /** The cluster this leader leads, and the epoch agents see. */
  identity: ClusterIdentity;
  /** The agents' watchdog timeout, sent in Welcome (0: none). */
  fenceTimeoutMs: number;
}

/** What the agent service needs from the controller; `leading` is undefined on a follower. */
export interface AgentServiceDeps {
  leading(): LeadingDeps | undefined;
  leaderAddress(): Promise<string>;
  state: ClusterState;
  sessions: Map<string, AgentSession>;
  /** The operator console sessions relayed over agent streams (shared with the cluster service). */
  consoles: ConsoleRelay;
  reportIntervalMs: number;
  hostSilenceTimeoutMs: number;
  controllerId: string;
  log: Logger;
  now: () => number;
  /** Told when a host's session may have started or stopped taking placements (see AgentSession.acceptsPlacements). */
  onPlacementChange?: (hostId: string) => void;
  /** Told each command result that answers a command in flight. */
  metrics?: Metrics;
}

/** How long an agent may take to send Hello after opening its stream. */
const HELLO_TIMEOUT_MS = 10_000;

/** The AgentService: one bidirectional stream per host. */
export function agentService(deps: AgentServiceDeps): AgentServiceServer {
  return { connect: (call) => void handleStream(deps, call) };
}

type Stream = ServerDuplexStream<AgentMessage, ControllerMessage>;

async function handleStream(deps: AgentServiceDeps, call: Stream): Promise<void> {
  const { log } = deps;
  // Under mTLS the stream speaks for the host its certificate names, and only for it.
  let identity: PeerIdentity | undefined;
  try {
    identity = agentIdentity(peerOf(call.getAuthContext()));
  } catch (e) {
    const status = toGrpcStatus(e);
    log.warn({ peer: call.getPeer(), why: status.details }, "refused an agent stream");
    // Through 'error', which grpc-js answers with the status (destroy() would send none).
    call.emit("error", Object.assign(new Error(status.details), status));
    return;
  }
  let session: AgentSession | undefined;
  let ended = false;
  // Messages are handled one at a time, in order.
  let chain: Promise<void> = Promise.resolve();
  const helloTimer = setTimeout(() => {
    log.warn({ peer: call.getPeer() }, "agent stream sent no Hello in time; closing it");
    reject(call, RejectReason.REJECT_REASON_INVALID_HELLO, `no Hello within ${HELLO_TIMEOUT_MS / 1000} s of opening the stream: the first message must be Hello`);
  }, HELLO_TIMEOUT_MS);

  const gone = (why: string): void => {
    if (ended) return;
    ended = true;
    clearTimeout(helloTimer);
    if (session) void chain.then(() => disconnect(deps, session!, why));
  };
  // A stream can end in any of these ways; cleanup is idempotent.
  call.on("error", (e) => gone(`stream error: ${e.message}`));
  call.on("end", () => {
    // An agent that half-closes before it was welcomed has nothing more to say: once what it sent
    // is answered, end our side too (otherwise the stream stays open until the client's deadline).
    // A welcomed session ends in disconnect().
    void chain.then(() => {
      if (!session && call.writable) call.end();
    });
    gone("agent closed the stream");
  });
  call.on("cancelled", () => gone("stream cancelled"));
  call.on("close", () => gone("stream closed"));

  call.on("data", (message: AgentMessage) => {
    chain = chain
      .then(async () => {
        // Nothing more is heard once the stream has ended or been refused (a Reject ends it).
        if ((ended || call.writableEnded) && !session) return;
        // Bytes that are not a well-formed AgentMessage (hardenService refused them): the fault names the field.
        const malformed = malformedOf(message);
        const msg = message.msg;
        if (!session) {
          if (malformed) {
            log.warn({ field: malformed.field, why: malformed.reason }, "refused a malformed first message on an agent stream");
            reject(call, RejectReason.REJECT_REASON_INVALID_HELLO, `${malformed.field}: ${malformed.reason}`);
            return;
          }
          if (msg?.$case !== "hello") {
            reject(call, RejectReason.REJECT_REASON_INVALID_HELLO, "the first message must be Hello");
            return;
          }
          clearTimeout(helloTimer);
          session = await welcome(deps, call, msg.value, identity);
          // The stream may have ended while the host was being registered.
          if (ended && session) await disconnect(deps, session, "stream ended during registration");
          return;
        }
        if (session.isClosed) return;
        if (malformed) throw invalidArgument(malformed.field, malformed.reason);
        session.lastHeardMs = deps.now();
        if (msg?.$case === "report") {
          onReport(deps, session, msg.value);
          answerHeartbeat(deps, session);
        } else if (msg?.$case === "heartbeat") {
          // Liveness on the agent's own timer, apart from reports that may wait on a slow driver.
          answerHeartbeat(deps, session);
        } else if (msg?.$case === "result") {
          onResult(deps, session, msg.value);
        } else if (msg?.$case === "migrationProgress") {
          deps.leading()?.migrations.onProgress(session, msg.value);
        } else if (msg?.$case === "console") {
          // A console session's bytes (console-relay.ts).
          deps.consoles.fromAgent(session, msg.value);
        } else if (msg?.$case === "hello") {
          throw invalidArgument("hello", "a second Hello on a live stream: open a new stream to say Hello again");
        }
      })
      .catch((e: unknown) => {
        if (isBerthError(e, ErrorCode.InvalidArgument)) {
          // A message that broke a rule: the agent is told which (and the stream ends); nothing of it was applied.
          log.warn({ hostId: session?.hostId, why: e.message.slice(0, 256) }, "refused an agent message; closing the stream");
          // The Reject first: closing the session ends the call, and a write after the end is lost.
          reject(call, RejectReason.REJECT_REASON_INVALID_MESSAGE, e.message.slice(0, 512));
          session?.close();
          return;
        }
        log.error({ err: e, hostId: session?.hostId }, "agent message handling failed; closing the stream");
        session?.close();
        call.end();
      });
  });
}

/**
 * Answers the agent's message with a Heartbeat: the agent's proof that the leader hears it. It is
 * only ever an answer (never sent on the controller's own initiative), so the agent's watchdog,
 * petted by it, can never run later than the controller's last hearing of the agent — the fence
 * rule depends on that.
 */
function answerHeartbeat(deps: AgentServiceDeps, session: AgentSession): void {
  const epoch = deps.leading()?.identity.epoch;
  if (epoch !== undefined) session.send({ msg: { $case: "heartbeat", value: { leaderEpoch: epoch } } });
}

function reject(call: Stream, reason: RejectReason, message: string): void {
  call.write({ msg: { $case: "reject", value: { reason, message } } });
  call.end();
}

/**
 * Registers the host a Hello names and sends Welcome, or refuses it with a Reject saying why.
 * `identity` is the stream's certificate under mTLS: a Hello naming any other host is refused.
 */
async function welcome(deps: AgentServiceDeps, call: Stream, hello: Hello, identity: PeerIdentity | undefined): Promise<AgentSession | undefined> {
  const { log, sessions } = deps;
  // Who may speak for which host comes first, before anything else of the Hello is looked at.
  if (identity && hello.hostId !== identity.name) {
    const message = `this stream's certificate names host '${identity.name}', but its Hello says host '${quote(hello.hostId)}': an agent speaks only for the host its certificate names (check --host-id, or issue a certificate for that host with 'berth certs issue host ${quote(hello.hostId)}')`;
    log.warn({ certificateHost: identity.name, helloHost: hello.hostId.slice(0, 64), peer: call.getPeer() }, "refused a Hello naming another host than its certificate");
    reject(call, RejectReason.REJECT_REASON_INVALID_HELLO, message);
    return undefined;
  }
  const leading = deps.leading();
  if (!leading) {
    call.write({ msg: { $case: "notLeader", value: { leaderAddress: await deps.leaderAddress() } } });
    call.end();
    return undefined;
  }
  try {
    validateHello(hello);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    log.warn({ hostId: hello.hostId.slice(0, 64), reason: message }, "rejected an invalid Hello");
    reject(call, RejectReason.REJECT_REASON_INVALID_HELLO, message);
    return undefined;
  }
  const clusterId = leading.identity.id;
  if (hello.clusterId !== "" && hello.clusterId !== clusterId) {
    const message =
      `host '${hello.hostId}' belongs to cluster ${hello.clusterId} (kept in its agent's state dir), but this controller leads cluster ${clusterId}. ` +
      `To move the host to this cluster, restart its agent once with --join-cluster ${clusterId}; its domains are then listed as orphans ` +
      `('berth host orphans ${hello.hostId}') and left alone. Otherwise point the agent at its own cluster's controllers.`;
    log.warn({ hostId: hello.hostId, agentCluster: hello.clusterId, clusterId }, "refused an agent of another cluster");
    reject(call, RejectReason.REJECT_REASON_FOREIGN_CLUSTER, message);
    return undefined;
  }
  // Epochs are compared within one cluster only: an agent that has not joined one yet (or comes
  // from a version without cluster ids) has no epoch of this cluster to compare.
  if (hello.clusterId === clusterId && hello.lastLeaderEpoch > leading.identity.epoch && !(await leading.identity.adoptIfRestored(hello.lastLeaderEpoch))) {
    reject(call, RejectReason.REJECT_REASON_STALE_EPOCH, `this controller's epoch ${leading.identity.epoch} is older than the agent's ${hello.lastLeaderEpoch}`);
    return undefined;
  }
  const epoch = leading.identity.epoch;
  const existing = sessions.get(hello.hostId);
  if (existing && !existing.isClosed) {
    const silentMs = deps.now() - existing.lastHeardMs;
    if (existing.bootId !== hello.bootId) {
      // Another agent process for a host whose stream is still open: perhaps a second agent given
      // the same --host-id, perhaps the real one is only briefly frozen. Believing the newcomer's
      // inventory would start the host's VMs a second time, so it waits until the open stream is
      // gone for good (closed after the silence timeout).
      const message = `host '${hello.hostId}' is already connected from another agent (boot ${existing.bootId.slice(0, 8)}, heard ${silentMs} ms ago); a second agent for one host id is refused while that one's stream is open (check for two agents with --host-id ${hello.hostId})`;
      log.warn({ hostId: hello.hostId, bootId: hello.bootId, connectedBoot: existing.bootId, silentMs }, "refused a second agent for a connected host");
      reject(call, RejectReason.REJECT_REASON_DUPLICATE_HOST, message);
      return undefined;
    }
    // The same agent process on a new stream: the old one is a dead connection it has left.
    log.info({ hostId: hello.hostId, silentMs }, "the host's agent reconnected; replacing its old stream");
    existing.close();
    sessions.delete(hello.hostId);
  }

  const session = new AgentSession(hello.hostId, hello.bootId, call, hello.inventory?.domains ?? [], deps.now(), () => deps.onPlacementChange?.(hello.hostId));
  session.hypervisor = hello.hypervisor;
  session.setHoldings(hello);
  // A new agent process whose predecessor may still run the host's VMs: its inventory is believed
  // (missing domains created) only once that one's watchdog must have fired.
  session.holdCreatesUntilMs = leading.hosts.holdCreatesUntilMs(hello.hostId, hello.bootId);
  sessions.set(hello.hostId, session);
  try {
    await leading.hosts.register(hello);
  } catch (e) {
    sessions.delete(hello.hostId);
    session.close();
    if (!isBerthError(e, ErrorCode.NotLeader)) log.error({ err: e, hostId: hello.hostId }, "could not register host");
    return undefined;
  }
  session.send({
    msg: {
      $case: "welcome",
      value: { leaderEpoch: epoch, reportIntervalMs: deps.reportIntervalMs, controllerId: deps.controllerId, clusterId, fenceTimeoutMs: leading.fenceTimeoutMs },
    },
  });
  session.welcomed = true;
  log.info({ hostId: hello.hostId, bootId: hello.bootId, domains: session.inventory.size, driver: hello.driver, holdCreatesMs: session.holdCreatesUntilMs ? session.holdCreatesUntilMs - deps.now() : undefined }, "host connected");
  leading.reconciler.markDirty(hello.hostId);
  return session;
}

function onReport(deps: AgentServiceDeps, session: AgentSession, report: Report): void {
  // Everything checked before anything is applied: a refused Report changes nothing.
  validateReport(report);
  if (report.usage) session.usage = report.usage;
  if (report.hypervisor) {
    const was = session.hypervisor?.available;
    session.hypervisor = report.hypervisor;
    if (was !== report.hypervisor.available) {
      deps.log.warn({ hostId: session.hostId, available: report.hypervisor.available, message: report.hypervisor.message }, "host's hypervisor availability changed");
    }
  }
  if (report.vmUsage.length > 0 || report.usage) {
    session.vmUsage = new Map(report.vmUsage.map((u) => [u.vmId.slice(0, 64), { cpuCores: Number.isFinite(u.cpuCores) ? Math.max(0, u.cpuCores) : 0, memoryMib: u.memoryUsedMib }]));
  }
  // Each report replaces what the host holds, whole; a change of its pool's volumes is a change
  // of its volume plan (and of what their records may be removed after).
  const held = session.setHoldings(report);
  if (report.inventory || held.volumes) {
    if (report.inventory) session.inventory = new Map(report.inventory.domains.map((d) => [d.vmId, d]));
    deps.leading()?.reconciler.markDirty(session.hostId);
  }
}

/**
 * Applies a command's result, only when it answers the command in flight for that VM (same command
 * id and generation): a replayed old result, an unknown command id or a result for a command
 * already superseded changes nothing — no status, no inventory entry — and is counted and dropped.
 */
function onResult(deps: AgentServiceDeps, session: AgentSession, result: CommandResult): void {
  // Checked before anything of it is applied (the domain joins the inventory).
  if (result.domain) validateDomain(result.domain, "result.domain");
  const inflight = session.settle(result);
  if (!inflight) {
    if (session.droppedResults++ % 100 === 0) {
      deps.log.warn({ hostId: session.hostId, vmId: result.vmId.slice(0, 64), commandId: result.commandId.slice(0, 64), dropped: session.droppedResults }, "dropped a command result that answers no command in flight");
    }
    return;
  }
  deps.metrics?.agentCommand(inflight.action, result.ok);
  if (inflight.volumeId) {
    onVolumeResult(deps, session, inflight, result);
    return;
  }
  if (result.domain && result.domain.vmId === inflight.vmId) session.inventory.set(inflight.vmId, result.domain);
  else if (result.ok && !result.domain) session.inventory.delete(inflight.vmId);
  if (inflight.migrationId) {
    // A migration's command: its manager decides; the VM's own failure record is not touched.
    deps.leading()?.migrations.onResult(session, inflight, result);
    deps.leading()?.reconciler.markDirty(session.hostId);
    return;
  }
  if (result.ok) session.failures.delete(inflight.vmId);
  else recordCommandFailure(deps, session, inflight.vmId, inflight, result, { vmId: inflight.vmId }, "command failed on host");
  deps.leading()?.reconciler.markDirty(session.hostId);
}

/**
 * Counts a failed attempt at a command under its subject (a VM id, or `volume:<id>`): the backoff
 * and what the status says come from it. Logged with `who` (the subject's ids) at WARN.
 */
function recordCommandFailure(deps: AgentServiceDeps, session: AgentSession, subject: string, inflight: InFlight, result: CommandResult, who: Record<string, unknown>, message: string): void {
  const failure = recordFailure(
    session.failures.get(subject),
    { generation: inflight.generation, code: result.errorCode.slice(0, 64) || ErrorCode.Internal, message: result.errorMessage.slice(0, 1024) },
    deps.now(),
    Math.random,
  );
  session.failures.set(subject, failure);
  deps.log.warn(
    { hostId: session.hostId, ...who, generation: inflight.generation, action: inflight.action, code: failure.code, error: failure.message, attempts: failure.attempts, retryInMs: failure.permanent ? undefined : failure.nextAttemptAtMs - deps.now(), permanent: failure.permanent || undefined },
    message,
  );
}

/**
 * A volume command's result: the pool as the host now has it (until its next report says it
 * whole), or a failure kept under the volume's subject for the backoff, as a VM's are.
 */
function onVolumeResult(deps: AgentServiceDeps, session: AgentSession, inflight: InFlight, result: CommandResult): void {
  if (result.ok) {
    session.failures.delete(inflight.subject);
    if (inflight.action === "deleteVolume") session.volumeCommandApplied(inflight.volumeId, undefined);
    else if (inflight.action === "createVolume") {
      const sizeGib = deps.state.volumeWithId(inflight.volumeId)?.sizeGib ?? 0;
      session.volumeCommandApplied(inflight.volumeId, session.reportedVolumes.get(inflight.volumeId) ?? { volumeId: inflight.volumeId, sizeGib, attachedVmId: "" });
    }
  } else {
    recordCommandFailure(deps, session, inflight.subject, inflight, result, { volumeId: inflight.volumeId, volume: deps.state.volumeWithId(inflight.volumeId)?.name }, "volume command failed on host");
  }
  deps.leading()?.reconciler.markDirty(session.hostId);
}

async function disconnect(deps: AgentServiceDeps, session: AgentSession, why: string): Promise<void> {
  session.close();
  // Its console sessions went with the stream, even when a newer stream has replaced it.
  deps.consoles.hostStreamEnded(session);
  // A newer session for the same host may already have replaced this one.
  if (deps.sessions.get(session.hostId) !== session) return;
  deps.sessions.delete(session.hostId);
  deps.log.info({ hostId: session.hostId, why }, "host disconnected");
  const leading = deps.leading();
  if (!leading) return;
  leading.hosts.sessionEnded(session);
  leading.reconciler.markDirty(session.hostId);
}

/** Closes sessions whose streams have been silent too long (the transport may not notice). */
export function closeSilentSessions(deps: AgentServiceDeps): void {
  const now = deps.now();
  for (const session of deps.sessions.values()) {
    if (now - session.lastHeardMs > deps.hostSilenceTimeoutMs) {
      deps.log.warn({ hostId: session.hostId, silentMs: now - session.lastHeardMs }, "host silent too long; closing its stream");
      void disconnect(deps, session, "silent too long");
    }
  }
}
