/**
 * Test helpers for the controller in process: a controller on a store, real gRPC, raw agent
 * streams that script what an agent says, and polling with a deadline.
 */
import { credentials, Metadata, type ClientDuplexStream, type ServiceError } from "@grpc/grpc-js";
import { pino } from "pino";
import { AgentMessage, AgentServiceClient, ClusterServiceClient, type DeepPartial, type Command, type CommandResult, type ControllerMessage, type Domain, type Hello } from "@berth/api";
import { deadlineIn, grpcClientOptions } from "@berth/core";
import type { MemoryStore } from "@berth/store";
import { Controller } from "./controller.js";
import { resolveControllerOptions, type ControllerOptions } from "./options.js";

export const silentLog = pino({ level: "silent" });

/** Things to undo after each test, newest first (the test file's afterEach runs them). */
export type Cleanups = (() => Promise<void> | void)[];

export async function startController(
  cleanups: Cleanups,
  store: MemoryStore,
  over: Partial<ControllerOptions> = {},
): Promise<{ controller: Controller; address: string }> {
  const options = resolveControllerOptions({ listen: "127.0.0.1:0", controllerId: "c1", reportIntervalMs: 200, leaderTtlMs: 2_000, ...over });
  const controller = await Controller.start(options, store, silentLog);
  cleanups.push(() => controller.stop());
  return { controller, address: `127.0.0.1:${controller.port}` };
}

export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await Promise.resolve().then(check).catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const helloFor = (hostId: string, bootId = "boot-a", over: Partial<Hello> = {}): Hello => ({
  hostId,
  bootId,
  capacity: { vcpus: 8, memoryMib: 16384, diskGib: 100 },
  labels: {},
  inventory: { domains: [] },
  agentVersion: "test",
  driver: "fake",
  lastLeaderEpoch: 0,
  allocationRatio: undefined,
  reserved: undefined,
  facts: undefined,
  hypervisor: undefined,
  clusterId: "",
  ...over,
});

/** A scripted agent stream: what the controller sent, and a way to say anything back. */
export interface RawAgent {
  /** The controller's first answer (Welcome, Reject or NotLeader). */
  first: Promise<ControllerMessage>;
  /** Every message received, in order. */
  received: ControllerMessage[];
  commands(): Command[];
  /** Any message; fields left out take their proto defaults. */
  send(message: DeepPartial<AgentMessage>["msg"]): void;
  close(): void;
}

export function rawAgent(cleanups: Cleanups, address: string, hello: Hello, answer?: (command: Command) => CommandResult | undefined): RawAgent {
  const client = new AgentServiceClient(address, credentials.createInsecure(), grpcClientOptions());
  const call: ClientDuplexStream<AgentMessage, ControllerMessage> = client.connect();
  const close = (): void => {
    call.cancel();
    client.close();
  };
  cleanups.push(close);
  call.on("error", () => undefined);
  const received: ControllerMessage[] = [];
  const first = new Promise<ControllerMessage>((resolve) => call.once("data", resolve));
  call.on("data", (m: ControllerMessage) => {
    received.push(m);
    if (m.msg?.$case === "command" && answer) {
      const result = answer(m.msg.value);
      if (result) call.write(AgentMessage.fromPartial({ msg: { $case: "result", value: result } }));
    }
  });
  call.write({ msg: { $case: "hello", value: hello } });
  return {
    first,
    received,
    commands: () => received.flatMap((m) => (m.msg?.$case === "command" ? [m.msg.value] : [])),
    // Through fromPartial, so a script may leave out fields (they take their proto defaults).
    send: (msg) => call.write(AgentMessage.fromPartial({ msg } as AgentMessage)),
    close,
  };
}

/** The operator API as promises. */
export function operatorApi(cleanups: Cleanups, address: string) {
  const client = new ClusterServiceClient(address, credentials.createInsecure(), grpcClientOptions());
  cleanups.push(() => client.close());
  const call = <T>(fn: (m: Metadata, o: { deadline: Date }, cb: (e: ServiceError | null, r: T) => void) => void): Promise<T> =>
    new Promise((resolve, reject) => fn(new Metadata(), { deadline: deadlineIn(10_000) }, (e, r) => (e ? reject(e) : resolve(r))));
  return { client, call };
}

/** An answer to `command` as a fake agent would give it: ok with the domain, or failed with `code`. */
export function resultFor(command: Command, outcome: { ok: true; domain?: Partial<Domain> } | { ok: false; code: string; message?: string }): CommandResult {
  const base = { commandId: command.commandId, vmId: command.vmId, generation: command.generation, migrationId: command.migrationId, migrationTarget: undefined };
  if (!outcome.ok) return { ...base, ok: false, errorCode: outcome.code, errorMessage: outcome.message ?? "injected", domain: undefined };
  if (command.action?.$case === "delete") return { ...base, ok: true, errorCode: "", errorMessage: "", domain: undefined };
  const running = command.action?.$case === "start" || (command.action?.$case === "create" && command.action.value.start);
  const create = command.action?.$case === "create" ? command.action.value : undefined;
  return {
    ...base,
    ok: true,
    errorCode: "",
    errorMessage: "",
    domain: { vmId: command.vmId, name: create?.name ?? "vm", state: running ? 2 : 1, generation: command.generation, resources: create?.resources, fence: create?.fence ?? false, ...outcome.domain },
  };
}
