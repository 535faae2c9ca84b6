/**
 * The console relay: in process over real gRPC (a controller on a memory store, a scripted agent
 * stream that plays the host's console, AttachConsole as an admin or a viewer), and the relay
 * alone with stand-in streams for its bounds (open timeout, session limit, backpressure,
 * leadership).
 */
import { EventEmitter } from "node:events";
import { Metadata, status, type ClientDuplexStream, type StatusObject } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { VmSpec, type AttachConsoleRequest, type AttachConsoleResponse, type ConsoleControl, type ControllerMessage, type CreateVmResponse, type Vm } from "@berth/api";
import { BerthError, ErrorCode, ERROR_CODE_METADATA_KEY } from "@berth/core";
import { MemoryStore } from "@berth/store";
import type { LeadingDeps } from "./agent-service.js";
import type { AgentSession } from "./agent-session.js";
import { ConsoleRelay, droppedMarker, type ConsoleCall, type ConsoleLimits } from "./console-relay.js";
import { helloFor, operatorApi, rawAgent, resultFor, silentLog, startController, waitFor, type Cleanups, type RawAgent } from "./controller.testkit.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const spec = (name: string): VmSpec => VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 256, diskGib: 1 } });

/** The console controls a scripted agent has received. */
const consoleControls = (agent: RawAgent): ConsoleControl[] => agent.received.flatMap((m: ControllerMessage) => (m.msg?.$case === "console" ? [m.msg.value] : []));

/** An operator's AttachConsole stream: what it received and how it ended. */
function attachStream(client: ReturnType<typeof operatorApi>["client"]) {
  const call: ClientDuplexStream<AttachConsoleRequest, AttachConsoleResponse> = client.attachConsole(new Metadata());
  const received: AttachConsoleResponse[] = [];
  call.on("data", (m: AttachConsoleResponse) => received.push(m));
  call.on("error", () => undefined);
  const ended = new Promise<StatusObject>((resolve) => call.on("status", resolve));
  const output = (): string => Buffer.concat(received.flatMap((m) => (m.msg?.$case === "output" ? [m.msg.value] : []))).toString();
  return {
    call,
    received,
    ended,
    output,
    open: (vm: string, force = false) => call.write({ msg: { $case: "open", value: { vm, force } } }),
    input: (text: string | Buffer) => call.write({ msg: { $case: "input", value: Buffer.from(text) } }),
  };
}

/** A leading controller, one agent (host h1) that carries out commands, and a VM placed on it. */
async function clusterWithVm() {
  const store = new MemoryStore();
  const { controller, address } = await startController(cleanups, store);
  await waitFor("leadership", () => controller.isLeader);
  const agent = rawAgent(cleanups, address, helloFor("h1"), (c) => resultFor(c, { ok: true }));
  expect((await agent.first).msg?.$case).toBe("welcome");
  const admin = operatorApi(cleanups, address);
  const vm = await waitFor("the VM placed", () =>
    admin.call<CreateVmResponse>((m, o, cb) => admin.client.createVm({ spec: spec("web-1"), requestId: "" }, m, o, cb)).then((r) => r.vm as Vm),
  );
  expect(vm.hostId).toBe("h1");
  return { controller, address, agent, admin, vm };
}

describe("AttachConsole through the controller", () => {
  it("relays open, attached, output and input; a detach (half-close) closes the session on the host and ends OK", async () => {
    const { agent, admin, vm } = await clusterWithVm();
    const op = attachStream(admin.client);
    op.open("web-1");
    const open = await waitFor("open on the host's stream", () => consoleControls(agent).find((c) => c.action?.$case === "open"));
    expect(open.vmId).toBe(vm.id);
    expect(open.action).toEqual({ $case: "open", value: { force: false } });
    expect(open.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    // Nothing reaches the operator before the host says the console is open.
    agent.send({ $case: "console", value: { sessionId: open.sessionId, event: { $case: "opened", value: {} } } });
    agent.send({ $case: "console", value: { sessionId: open.sessionId, event: { $case: "output", value: Buffer.from("web-1 login: ") } } });
    await waitFor("the banner", () => op.output() === "web-1 login: ");
    expect(op.received[0]?.msg).toEqual({ $case: "attached", value: { vmId: vm.id, hostId: "h1" } });

    op.input("hello\r");
    const input = await waitFor("input on the host's stream", () => consoleControls(agent).find((c) => c.action?.$case === "input"));
    expect(input).toMatchObject({ sessionId: open.sessionId, vmId: vm.id });
    expect(Buffer.from((input.action as { value: Buffer }).value).toString()).toBe("hello\r");

    op.call.end();
    expect((await op.ended).code).toBe(status.OK);
    const close = await waitFor("close on the host's stream", () => consoleControls(agent).find((c) => c.action?.$case === "close"));
    expect(close.sessionId).toBe(open.sessionId);
  });

  it("ends the operator's stream with the host's closed error (FAILED_PRECONDITION), and sends the host no close for it", async () => {
    const { agent, admin } = await clusterWithVm();
    const op = attachStream(admin.client);
    op.open("web-1", true);
    const open = await waitFor("open", () => consoleControls(agent).find((c) => c.action?.$case === "open"));
    expect(open.action).toEqual({ $case: "open", value: { force: true } });
    agent.send({ $case: "console", value: { sessionId: open.sessionId, event: { $case: "closed", value: { errorCode: "FAILED_PRECONDITION", message: "another session took the console" } } } });
    const ended = await op.ended;
    expect(ended.code).toBe(status.FAILED_PRECONDITION);
    expect(ended.details).toBe("console of vm 'web-1' on host 'h1': another session took the console");
    expect(ended.metadata.get(ERROR_CODE_METADATA_KEY)).toEqual(["FAILED_PRECONDITION"]);
    await new Promise((r) => setTimeout(r, 100));
    expect(consoleControls(agent).filter((c) => c.action?.$case === "close")).toEqual([]);
  });

  it("ends every session of a host with UNAVAILABLE 'host stream lost' when its agent stream ends", async () => {
    const { agent, admin } = await clusterWithVm();
    const op = attachStream(admin.client);
    op.open("web-1");
    const open = await waitFor("open", () => consoleControls(agent).find((c) => c.action?.$case === "open"));
    agent.send({ $case: "console", value: { sessionId: open.sessionId, event: { $case: "opened", value: {} } } });
    await waitFor("attached", () => op.received.length > 0);
    agent.close();
    const ended = await op.ended;
    expect(ended.code).toBe(status.UNAVAILABLE);
    expect(ended.details).toMatch(/host stream lost \(host 'h1' disconnected\)/);
  });

  it("refuses, sending the host nothing: a first message that is not open, an unknown VM, a VM on a disconnected host, a viewer", async () => {
    const { address, agent, admin } = await clusterWithVm();
    const notOpen = attachStream(admin.client);
    notOpen.input("x");
    expect(await notOpen.ended).toMatchObject({ code: status.INVALID_ARGUMENT, details: "input: the first message must be open {vm, force}" });

    const unknown = attachStream(admin.client);
    unknown.open("nope");
    expect(await unknown.ended).toMatchObject({ code: status.NOT_FOUND, details: "vm 'nope' not found" });

    const badName = attachStream(admin.client);
    badName.open("Bad_Name");
    expect((await badName.ended).code).toBe(status.INVALID_ARGUMENT);

    const viewer = attachStream(operatorApi(cleanups, address, { role: "viewer", name: "vera" }).client);
    viewer.open("web-1");
    expect(await viewer.ended).toMatchObject({ code: status.PERMISSION_DENIED, details: "AttachConsole needs role admin; 'vera' has role viewer" });
    expect(consoleControls(agent)).toEqual([]);

    agent.close();
    await waitFor("h1 disconnected", async () => {
      const op = attachStream(admin.client);
      op.open("web-1");
      const ended = await op.ended;
      return ended.code === status.FAILED_PRECONDITION && /^vm 'web-1' is on host 'h1', whose agent is not connected \(host (READY|SUSPECT)\)/.test(ended.details);
    });
  });

  it("refuses an input larger than 16 KiB (INVALID_ARGUMENT) and closes the session on the host", async () => {
    const { agent, admin } = await clusterWithVm();
    const op = attachStream(admin.client);
    op.open("web-1");
    const open = await waitFor("open", () => consoleControls(agent).find((c) => c.action?.$case === "open"));
    op.input(Buffer.alloc(16 * 1024 + 1, 0x61));
    expect(await op.ended).toMatchObject({ code: status.INVALID_ARGUMENT, details: "input: at most 16384 bytes a message (got 16385)" });
    const close = await waitFor("close", () => consoleControls(agent).find((c) => c.action?.$case === "close"));
    expect(close.sessionId).toBe(open.sessionId);
    expect(consoleControls(agent).filter((c) => c.action?.$case === "input")).toEqual([]);
  });

  it("answers the host's output for a session it does not hold with close", async () => {
    const { agent } = await clusterWithVm();
    agent.send({ $case: "console", value: { sessionId: "stale-session", event: { $case: "output", value: Buffer.from("x") } } });
    const close = await waitFor("close", () => consoleControls(agent).find((c) => c.action?.$case === "close"));
    expect(close.sessionId).toBe("stale-session");
  });
});

// ── The relay alone ────────────────────────────────────────────────────────────────────────────

/** A stand-in for the operator's server stream: what was written, whether write() says full, how it ended. */
class FakeCall extends EventEmitter {
  written: AttachConsoleResponse[] = [];
  full = false;
  endedOk = false;
  status: { code?: number; details?: string } | undefined;

  constructor() {
    super();
    this.on("error", (e: { code?: number; details?: string }) => (this.status = e));
  }

  write(m: AttachConsoleResponse): boolean {
    this.written.push(m);
    return !this.full;
  }

  end(): void {
    this.endedOk = true;
  }

  getPeer(): string {
    return "ipv4:127.0.0.1:5555";
  }

  getAuthContext(): undefined {
    return undefined;
  }

  outputs(): string[] {
    return this.written.flatMap((m) => (m.msg?.$case === "output" ? [Buffer.from(m.msg.value).toString()] : []));
  }

  request(msg: AttachConsoleRequest["msg"]): void {
    this.emit("data", { msg });
  }
}

/** A stand-in for a host's agent session: what the relay sent it. */
function fakeAgent(accepts = true) {
  const sent: ControllerMessage[] = [];
  const session = { isLive: true, send: (m: ControllerMessage) => (sent.push(m), accepts) } as unknown as AgentSession;
  return { session, sent, controls: (): ConsoleControl[] => sent.flatMap((m) => (m.msg?.$case === "console" ? [m.msg.value] : [])) };
}

const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));

function relayWith(limits: Partial<ConsoleLimits> = {}, over: { leading?: () => LeadingDeps | undefined; accepts?: boolean } = {}) {
  const agent = fakeAgent(over.accepts ?? true);
  const leading = {} as LeadingDeps;
  const vm = { id: "vm-id-1", hostId: "h1", spec: { name: "web-1" }, status: { phase: 2 } } as unknown as Vm;
  const relay = new ConsoleRelay({
    state: { vm: (name: string) => (name === "web-1" ? vm : undefined), host: () => undefined },
    sessions: new Map([["h1", agent.session]]),
    leading: over.leading ?? (() => leading),
    log: silentLog,
    limits,
  });
  /** Attaches, opens web-1, and (unless told not to) has the host say opened. */
  const attach = async (opened = true) => {
    const call = new FakeCall();
    relay.attach(call as unknown as ConsoleCall, async () => undefined);
    call.request({ $case: "open", value: { vm: "web-1", force: false } });
    await tick();
    const id = agent.controls().filter((c) => c.action?.$case === "open").at(-1)?.sessionId ?? "";
    if (opened && id) relay.fromAgent(agent.session, { sessionId: id, event: { $case: "opened", value: {} } });
    return { call, id };
  };
  const output = (id: string, text: string) => relay.fromAgent(agent.session, { sessionId: id, event: { $case: "output", value: Buffer.from(text) } });
  return { relay, agent, attach, output };
}

describe("ConsoleRelay", () => {
  it("keeps output for a backed-up operator up to the bound, drops the rest, and writes one marker when the stream drains", async () => {
    const { attach, output } = relayWith({ maxOutputBacklogBytes: 10 });
    const { call, id } = await attach();
    call.full = true;
    output(id, "first"); // written: write() now says full
    output(id, "12345"); // kept (5 of 10)
    output(id, "67890"); // kept (10 of 10)
    output(id, "lost-1"); // dropped
    output(id, "x"); // dropped too: once dropping, until the drain
    expect(call.outputs()).toEqual(["first"]);
    call.full = false;
    call.emit("drain");
    expect(call.outputs()).toEqual(["first", "12345", "67890", droppedMarker(7).toString()]);
    expect(droppedMarker(7).toString()).toBe("\r\n[berth: 7 bytes of console output dropped]\r\n");
    output(id, "after");
    expect(call.outputs().at(-1)).toBe("after");
  });

  it("refuses a stream whose first message does not come in time (INVALID_ARGUMENT) and one session past the limit (RESOURCE_EXHAUSTED)", async () => {
    const { relay, agent, attach } = relayWith({ openTimeoutMs: 20, maxSessions: 1 });
    const silent = new FakeCall();
    relay.attach(silent as unknown as ConsoleCall, async () => undefined);
    await tick(60);
    expect(silent.status).toMatchObject({ code: status.INVALID_ARGUMENT, details: "open: the first message must be open {vm, force}, within 0.02 s of attaching" });

    const first = await attach();
    expect(first.call.status).toBeUndefined();
    const second = await attach();
    expect(second.call.status).toMatchObject({ code: status.RESOURCE_EXHAUSTED });
    expect(second.call.status?.details).toMatch(/at most 1 console sessions at once/);
    expect(agent.controls().filter((c) => c.action?.$case === "open")).toHaveLength(1);
    expect(relay.size).toBe(1);
  });

  it("ends a session whose host does not answer open in time, telling the host to close it", async () => {
    const { relay, agent, attach } = relayWith({ agentAnswerTimeoutMs: 20 });
    const { call, id } = await attach(false);
    await tick(60);
    expect(call.status).toMatchObject({ code: status.UNAVAILABLE });
    expect(call.status?.details).toMatch(/did not answer the console request within 0.02 s/);
    expect(agent.controls().at(-1)).toMatchObject({ sessionId: id, action: { $case: "close" } });
    expect(relay.size).toBe(0);
  });

  it("ends a session when its input cannot be queued on the host's stream (UNAVAILABLE), rather than lose keystrokes", async () => {
    const { relay, attach } = relayWith({}, { accepts: true });
    const { call, id } = await attach();
    expect(id).not.toBe("");
    // The host's queue fills from now on.
    (relay as unknown as { byId: Map<string, { agent: { send: () => boolean } }> }).byId.get(id)!.agent.send = () => false;
    call.request({ $case: "input", value: Buffer.from("ls\r") });
    await tick();
    expect(call.status).toMatchObject({ code: status.UNAVAILABLE });
    expect(call.status?.details).toMatch(/not taking input now/);
    expect(relay.size).toBe(0);
  });

  it("ends every session with UNAVAILABLE once this controller no longer leads", async () => {
    let leading: LeadingDeps | undefined = {} as LeadingDeps;
    const { relay, agent, attach } = relayWith({ leadershipCheckMs: 10 }, { leading: () => leading });
    const { call, id } = await attach();
    leading = undefined;
    await tick(50);
    expect(call.status).toMatchObject({ code: status.UNAVAILABLE, details: "this controller is no longer the leader; attach again" });
    expect(agent.controls().at(-1)).toMatchObject({ sessionId: id, action: { $case: "close" } });
    expect(relay.size).toBe(0);
  });

  it("answers a follower's NOT_LEADER before reading anything, and maps an unknown code from the host to INTERNAL", async () => {
    const { relay, agent, attach } = relayWith();
    const follower = new FakeCall();
    relay.attach(follower as unknown as ConsoleCall, async () => {
      throw new BerthError(ErrorCode.NotLeader, "not the leader; the leader is 10.0.0.2:7400", { leader: "10.0.0.2:7400" });
    });
    follower.request({ $case: "open", value: { vm: "web-1", force: false } });
    await tick();
    expect(follower.status).toMatchObject({ code: status.UNAVAILABLE, details: "not the leader; the leader is 10.0.0.2:7400" });
    expect(agent.controls()).toEqual([]);

    const { call, id } = await attach();
    relay.fromAgent(agent.session, { sessionId: id, event: { $case: "closed", value: { errorCode: "WHATEVER", message: "x".repeat(2000) } } });
    expect(call.status?.code).toBe(status.INTERNAL);
    expect(call.status?.details?.length).toBeLessThan(700);
  });

  it("refuses output larger than agent.proto allows from the host (INVALID_ARGUMENT, for the agent service to refuse the stream)", async () => {
    const { relay, agent, attach } = relayWith();
    const { id } = await attach();
    expect(() => relay.fromAgent(agent.session, { sessionId: id, event: { $case: "output", value: Buffer.alloc(16 * 1024 + 1) } })).toThrow(/console.output: at most 16384 bytes/);
  });
});
