import type { ServerDuplexStream } from "@grpc/grpc-js";
import {
  HostState,
  RejectReason,
  type AgentMessage,
  type AgentServiceServer,
  type CommandResult,
  type ControllerMessage,
  type Hello,
  type Host,
  type Report,
} from "@berth/api";
import { BerthError, ErrorCode, isBerthError, validateHello, validateHypervisorStatus, Limits } from "@berth/core";
import type { Logger } from "pino";
import { AgentSession } from "./agent-session.js";
import type { ClusterState } from "./cluster-state.js";
import type { FencedWriter } from "./fenced-writer.js";
import { encodeHost, Keys } from "./keys.js";
import type { Reconciler } from "./reconciler.js";

/** What the agent service needs from the controller; `leading` is undefined on a follower. */
export interface AgentServiceDeps {
  leading(): { writer: FencedWriter; reconciler: Reconciler } | undefined;
  leaderAddress(): Promise<string>;
  state: ClusterState;
  sessions: Map<string, AgentSession>;
  reportIntervalMs: number;
  hostSilenceTimeoutMs: number;
  controllerId: string;
  log: Logger;
  now: () => number;
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
  let session: AgentSession | undefined;
  let ended = false;
  // Messages are handled one at a time, in order.
  let chain: Promise<void> = Promise.resolve();
  const helloTimer = setTimeout(() => {
    log.warn("agent stream sent no Hello in time; closing it");
    call.end();
  }, HELLO_TIMEOUT_MS);

  const gone = (why: string): void => {
    if (ended) return;
    ended = true;
    clearTimeout(helloTimer);
    if (session) void chain.then(() => disconnect(deps, session!, why));
  };
  // A stream can end in any of these ways; cleanup is idempotent.
  call.on("error", (e) => gone(`stream error: ${e.message}`));
  call.on("end", () => gone("agent closed the stream"));
  call.on("cancelled", () => gone("stream cancelled"));
  call.on("close", () => gone("stream closed"));

  call.on("data", (message: AgentMessage) => {
    chain = chain
      .then(async () => {
        if (ended && !session) return;
        const msg = message.msg;
        if (!session) {
          if (msg?.$case !== "hello") {
            reject(call, RejectReason.REJECT_REASON_INVALID_HELLO, "the first message must be Hello");
            return;
          }
          clearTimeout(helloTimer);
          session = await welcome(deps, call, msg.value);
          // The stream may have ended while the host was being registered.
          if (ended && session) await disconnect(deps, session, "stream ended during registration");
          return;
        }
        if (session.isClosed) return;
        session.lastHeardMs = deps.now();
        if (msg?.$case === "report") {
          onReport(deps, session, msg.value);
          const epoch = deps.leading()?.writer.epoch;
          if (epoch !== undefined) session.send({ msg: { $case: "heartbeat", value: { leaderEpoch: epoch } } });
        } else if (msg?.$case === "result") {
          onResult(deps, session, msg.value);
        }
      })
      .catch((e: unknown) => {
        log.error({ err: e, hostId: session?.hostId }, "agent message handling failed; closing the stream");
        session?.close();
        call.end();
      });
  });
}

function reject(call: Stream, reason: RejectReason, message: string): void {
  call.write({ msg: { $case: "reject", value: { reason, message } } });
  call.end();
}

async function welcome(deps: AgentServiceDeps, call: Stream, hello: Hello): Promise<AgentSession | undefined> {
  const { log, sessions } = deps;
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
  const epoch = leading.writer.epoch;
  if (hello.lastLeaderEpoch > epoch) {
    reject(call, RejectReason.REJECT_REASON_STALE_EPOCH, `this controller's epoch ${epoch} is older than the agent's ${hello.lastLeaderEpoch}`);
    return undefined;
  }
  const existing = sessions.get(hello.hostId);
  if (existing && !existing.isClosed) {
    const silentMs = deps.now() - existing.lastHeardMs;
    if (silentMs < deps.reportIntervalMs * 2) {
      const message = `host '${hello.hostId}' is already connected (boot ${existing.bootId}, heard ${silentMs} ms ago); a second agent for one host id is refused`;
      log.warn({ hostId: hello.hostId, bootId: hello.bootId }, message);
      reject(call, RejectReason.REJECT_REASON_DUPLICATE_HOST, message);
      return undefined;
    }
    // The old stream has gone quiet: take it to be a dead connection the transport has not noticed.
    log.info({ hostId: hello.hostId, silentMs }, "replacing a silent session for the host");
    existing.close();
    sessions.delete(hello.hostId);
  }

  const session = new AgentSession(hello.hostId, hello.bootId, call, hello.inventory?.domains ?? [], deps.now());
  session.hypervisor = hello.hypervisor;
  sessions.set(hello.hostId, session);
  try {
    await registerHost(deps, leading.writer, hello);
  } catch (e) {
    sessions.delete(hello.hostId);
    session.close();
    if (!isBerthError(e, ErrorCode.NotLeader)) log.error({ err: e, hostId: hello.hostId }, "could not register host");
    return undefined;
  }
  session.send({
    msg: {
      $case: "welcome",
      value: { leaderEpoch: epoch, reportIntervalMs: deps.reportIntervalMs, controllerId: deps.controllerId, clusterId: "", fenceTimeoutMs: 0 },
    },
  });
  session.welcomed = true;
  log.info({ hostId: hello.hostId, bootId: hello.bootId, domains: session.inventory.size, driver: hello.driver }, "host connected");
  leading.reconciler.markDirty(hello.hostId);
  return session;
}

/** Creates or refreshes the host record: guarded on the record's revision, fenced by the writer. */
async function registerHost(deps: AgentServiceDeps, writer: FencedWriter, hello: Hello): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const kv = deps.state.hostKv(hello.hostId);
    const prior = deps.state.host(hello.hostId);
    const host: Host = {
      id: hello.hostId,
      labels: hello.labels,
      capacity: hello.capacity,
      state: HostState.HOST_STATE_READY,
      cordoned: prior?.cordoned ?? false,
      bootId: hello.bootId,
      agentVersion: hello.agentVersion.slice(0, 64),
      lastSeenMs: deps.now(),
      usage: prior?.usage,
      driver: hello.driver.slice(0, 32),
      allocationRatio: hello.allocationRatio,
      reserved: hello.reserved,
      facts: hello.facts,
      hypervisor: hello.hypervisor,
      orphans: [],
      stateSinceMs: prior?.state === HostState.HOST_STATE_READY ? prior.stateSinceMs : deps.now(),
      fenceDeadlineMs: 0,
      confirmedDown: false,
    };
    const key = Keys.host(hello.hostId);
    const result = await writer.commit({
      compare: kv ? [{ key, target: "modRevision", equals: kv.modRevision }] : [{ key, target: "createRevision", equals: 0 }],
      ops: [{ type: "put", key, value: encodeHost(host) }],
    });
    if (result.succeeded) {
      await deps.state.hosts.waitForRevision(result.revision);
      return;
    }
    await deps.state.hosts.waitForRevision(result.revision);
  }
  throw new BerthError(ErrorCode.Conflict, `host '${hello.hostId}' record kept changing during registration`);
}

async function setHostState(deps: AgentServiceDeps, writer: FencedWriter, hostId: string, state: HostState): Promise<void> {
  const kv = deps.state.hostKv(hostId);
  const host = deps.state.host(hostId);
  if (!kv || !host || host.state === state) return;
  await writer.commit({
    compare: [{ key: kv.key, target: "modRevision", equals: kv.modRevision }],
    ops: [{ type: "put", key: kv.key, value: encodeHost({ ...host, state, lastSeenMs: deps.now() }) }],
  });
}

function onReport(deps: AgentServiceDeps, session: AgentSession, report: Report): void {
  if (report.usage) session.usage = report.usage;
  if (report.hypervisor) {
    validateHypervisorStatus(report.hypervisor, "report.hypervisor");
    const was = session.hypervisor?.available;
    session.hypervisor = report.hypervisor;
    if (was !== report.hypervisor.available) {
      deps.log.warn({ hostId: session.hostId, available: report.hypervisor.available, message: report.hypervisor.message }, "host's hypervisor availability changed");
    }
  }
  if (report.inventory) {
    if (report.inventory.domains.length > Limits.maxDomainsPerHost) {
      throw new BerthError(ErrorCode.InvalidArgument, `report.inventory.domains: at most ${Limits.maxDomainsPerHost}`);
    }
    session.inventory = new Map(report.inventory.domains.map((d) => [d.vmId, d]));
    deps.leading()?.reconciler.markDirty(session.hostId);
  }
}

function onResult(deps: AgentServiceDeps, session: AgentSession, result: CommandResult): void {
  session.settle(result.vmId, result.commandId);
  if (result.domain) session.inventory.set(result.vmId, result.domain);
  else if (result.ok) session.inventory.delete(result.vmId);
  if (result.ok) session.failures.delete(result.vmId);
  else {
    session.failures.set(result.vmId, { generation: result.generation, code: result.errorCode, message: result.errorMessage.slice(0, 1024) });
    deps.log.warn({ hostId: session.hostId, vmId: result.vmId, generation: result.generation, code: result.errorCode, error: result.errorMessage.slice(0, 1024) }, "command failed on host");
  }
  deps.leading()?.reconciler.markDirty(session.hostId);
}

async function disconnect(deps: AgentServiceDeps, session: AgentSession, why: string): Promise<void> {
  session.close();
  // A newer session for the same host may already have replaced this one.
  if (deps.sessions.get(session.hostId) !== session) return;
  deps.sessions.delete(session.hostId);
  deps.log.info({ hostId: session.hostId, why }, "host disconnected");
  const leading = deps.leading();
  if (!leading) return;
  try {
    await setHostState(deps, leading.writer, session.hostId, HostState.HOST_STATE_DISCONNECTED);
  } catch (e) {
    if (!isBerthError(e, ErrorCode.NotLeader)) deps.log.warn({ err: e, hostId: session.hostId }, "could not record the host as disconnected");
  }
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
