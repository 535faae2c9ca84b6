// Test helpers (not built into dist): in-process AgentService stubs that play leader, follower or
// refuser, and a driver wrapper that slows down or records calls.
import { createServer } from "node:net";
import { Server, ServerCredentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { AgentServiceService, type AgentMessage, type ControllerMessage, type Hello, type RejectReason, type Welcome } from "@berth/api";
import type { HypervisorDriver } from "@berth/hypervisor";
import { pino, type Logger } from "pino";

type Stream = ServerDuplexStream<AgentMessage, ControllerMessage>;

/** How a stub answers a Hello. */
export type StubBehaviour =
  | { kind: "leader"; welcome?: Partial<Welcome>; answerReports?: boolean; afterWelcome?: (s: StubSession) => void }
  | { kind: "follower"; leader: string }
  | { kind: "reject"; reason: RejectReason; message: string }
  /** Accepts the stream and ends it without a word once Hello arrives. */
  | { kind: "hangup" };

/** One stream a stub served. */
export class StubSession {
  readonly messages: { at: number; msg: AgentMessage }[] = [];
  ended = false;
  constructor(
    readonly hello: Hello,
    readonly helloAt: number,
    private readonly call: Stream,
  ) {}
  send(msg: ControllerMessage["msg"]): void {
    if (!this.ended) this.call.write({ msg });
  }
  end(): void {
    if (!this.ended) this.call.end();
    this.ended = true;
  }
  of(kind: NonNullable<AgentMessage["msg"]>["$case"]): { at: number; msg: AgentMessage }[] {
    return this.messages.filter((m) => m.msg.msg?.$case === kind);
  }
}

/** Every Hello any stub got, in order, across stubs (which stub: `name`). */
export const helloLog: { name: string; at: number }[] = [];

/** An AgentService on 127.0.0.1:<ephemeral port>; `behaviour` may change at any time. */
export class StubController {
  readonly sessions: StubSession[] = [];
  address = "";
  private server = new Server();

  private constructor(
    readonly name: string,
    public behaviour: StubBehaviour,
  ) {}

  static async start(name: string, behaviour: StubBehaviour, port = 0): Promise<StubController> {
    const stub = new StubController(name, behaviour);
    stub.server.addService(AgentServiceService, { connect: (call: Stream) => stub.serve(call) });
    const bound = await new Promise<number>((resolve, reject) =>
      stub.server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    stub.address = `127.0.0.1:${bound}`;
    return stub;
  }

  get last(): StubSession | undefined {
    return this.sessions.at(-1);
  }

  /** Kills it as SIGKILL would: open streams fail, the port refuses from now on. */
  kill(): void {
    this.server.forceShutdown();
  }

  private serve(call: Stream): void {
    let session: StubSession | undefined;
    call.on("error", () => undefined);
    const gone = (): void => {
      if (session) session.ended = true;
    };
    call.on("end", gone);
    call.on("close", gone);
    call.on("cancelled", gone);
    call.on("data", (m: AgentMessage) => {
      if (!session) {
        if (m.msg?.$case !== "hello") return;
        session = new StubSession(m.msg.value, Date.now(), call);
        this.sessions.push(session);
        helloLog.push({ name: this.name, at: session.helloAt });
        this.answer(session);
        return;
      }
      session.messages.push({ at: Date.now(), msg: m });
      if (m.msg?.$case === "report" && this.behaviour.kind === "leader" && this.behaviour.answerReports !== false) {
        session.send({ $case: "heartbeat", value: { leaderEpoch: this.behaviour.welcome?.leaderEpoch ?? 1 } });
      }
    });
  }

  private answer(s: StubSession): void {
    const b = this.behaviour;
    switch (b.kind) {
      case "leader":
        s.send({ $case: "welcome", value: { leaderEpoch: 1, reportIntervalMs: 200, controllerId: this.name, clusterId: "", fenceTimeoutMs: 0, ...b.welcome } });
        b.afterWelcome?.(s);
        return;
      case "follower":
        s.send({ $case: "notLeader", value: { leaderAddress: b.leader } });
        s.end();
        return;
      case "reject":
        s.send({ $case: "reject", value: { reason: b.reason, message: b.message } });
        s.end();
        return;
      case "hangup":
        s.end();
        return;
    }
  }
}

/** A port nothing listens on (connections to it are refused). */
export async function refusedAddress(): Promise<string> {
  const server = createServer();
  const port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `127.0.0.1:${port}`;
}

/** A logger that keeps its records (parsed) in `lines`. */
export function memoryLogger(): { log: Logger; lines: Record<string, unknown>[]; messages: (text: string) => Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: "debug" }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines, messages: (text) => lines.filter((l) => String(l.msg).includes(text)) };
}

/** A driver call as a wrapper saw it. */
export interface DriverCall {
  method: string;
  args: unknown[];
  at: number;
}

/**
 * Wraps a driver: records every call, and while `delayMs` > 0 makes each call (but `subscribe`
 * and `close`) wait that long first, as a hypervisor that takes that long per call would.
 * `override` replaces methods (e.g. the watchdog, where the drivers' implementations are stubs).
 */
export function wrapDriver(
  inner: HypervisorDriver,
  override: Partial<Record<keyof HypervisorDriver, (...args: never[]) => unknown>> = {},
): { driver: HypervisorDriver; calls: DriverCall[]; setDelay(ms: number): void } {
  const calls: DriverCall[] = [];
  let delayMs = 0;
  const driver = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = (override as Record<string | symbol, unknown>)[prop] ?? Reflect.get(target, prop, receiver);
      if (typeof value !== "function" || prop === "subscribe" || prop === "close") return typeof value === "function" ? value.bind(target) : value;
      return async (...args: unknown[]) => {
        calls.push({ method: String(prop), args, at: Date.now() });
        const wait = delayMs;
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { driver, calls, setDelay: (ms) => void (delayMs = ms) };
}

/** Waits until `check` returns a truthy value (polled every 10 ms) or throws after `timeoutMs`. */
export async function until<T>(what: string, check: () => T | undefined | false, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
