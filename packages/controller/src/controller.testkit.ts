/**
 * Test helpers for the controller in process: a controller on a store, real gRPC, raw agent
 * streams that script what an agent says, and polling with a deadline.
 */
import { credentials, experimental, Metadata, type ChannelCredentials, type ClientDuplexStream, type ServiceError } from "@grpc/grpc-js";
import { pino, type Logger } from "pino";
import { AgentMessage, AgentServiceClient, ClusterServiceClient, type DeepPartial, type Command, type CommandResult, type ControllerMessage, type Domain, type Hello } from "@berth/api";
import { deadlineIn, grpcClientOptions, type PeerRole, type TlsFiles } from "@berth/core";
import { TestPki } from "../../core/src/pki.testkit.js";
import type { MemoryStore } from "@berth/store";
import { Controller } from "./controller.js";
import { resolveControllerOptions, type ControllerOptions } from "./options.js";

export const silentLog = pino({ level: "silent" });

/** Things to undo after each test, newest first (the test file's afterEach runs them). */
export type Cleanups = (() => Promise<void> | void)[];

/** Addresses of the controllers this process started with TLS (clients of them present certificates). */
const secureAddresses = new Set<string>();

/**
 * A controller on `store`, serving mutual TLS with a certificate of the test CA unless `over`
 * sets `tls` itself (`tls: undefined` for plaintext). The clients below present certificates of
 * the same CA to a TLS controller.
 */
export async function startController(
  cleanups: Cleanups,
  store: MemoryStore,
  over: Partial<ControllerOptions> = {},
  /** Where the controller logs (silent by default; a test that reads the log passes its own). */
  log: Logger = silentLog,
): Promise<{ controller: Controller; address: string }> {
  const tls = "tls" in over ? over.tls : await (await TestPki.shared()).files("controller", "controller");
  const options = resolveControllerOptions({ listen: "127.0.0.1:0", controllerId: "c1", reportIntervalMs: 200, leaderTtlMs: 2_000, ...over, ...(tls ? { tls } : {}) });
  const controller = await Controller.start(options, store, log);
  const address = `127.0.0.1:${controller.port}`;
  if (tls) secureAddresses.add(address);
  cleanups.push(async () => {
    secureAddresses.delete(address);
    await controller.stop();
  });
  return { controller, address };
}

/** The TLS files a process of `role`/`name` needs to reach `address` (undefined for a plaintext controller). */
export async function tlsFilesFor(address: string, role: PeerRole, name: string): Promise<TlsFiles | undefined> {
  return secureAddresses.has(address) ? await (await TestPki.shared()).files(role, name) : undefined;
}

/**
 * Credentials for a client of `address`: plaintext for a plaintext controller, else a certificate
 * of the test CA for `role`/`name`. Made at once; the certificate joins when issued (grpc-js waits
 * for it before the first handshake).
 */
export function credentialsFor(address: string, role: PeerRole, name: string): ChannelCredentials {
  if (!secureAddresses.has(address)) return credentials.createInsecure();
  const caListeners = new Set<experimental.CaCertificateUpdateListener>();
  const idListeners = new Set<experimental.IdentityCertificateUpdateListener>();
  let pem: { ca: Buffer; cert: Buffer; key: Buffer } | undefined;
  void TestPki.shared()
    .then((pki) => pki.pem(role, name))
    .then((p) => {
      pem = p;
      for (const l of caListeners) l({ caCertificate: p.ca });
      for (const l of idListeners) l({ certificate: p.cert, privateKey: p.key });
    });
  const provider: experimental.CertificateProvider = {
    addCaCertificateListener: (l) => {
      caListeners.add(l);
      if (pem) queueMicrotask(() => l({ caCertificate: pem!.ca }));
    },
    removeCaCertificateListener: (l) => void caListeners.delete(l),
    addIdentityCertificateListener: (l) => {
      idListeners.add(l);
      if (pem) queueMicrotask(() => l({ certificate: pem!.cert, privateKey: pem!.key }));
    },
    removeIdentityCertificateListener: (l) => void idListeners.delete(l),
  };
  return experimental.createCertificateProviderChannelCredentials(provider, provider);
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
  clusterId: "", images: [], networks: [], volumes: [],
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

/**
 * An agent stream whose every message the test scripts. Under TLS it presents the host
 * certificate of `hello.hostId`, or of `as` (a stream with another host's certificate).
 */
export function rawAgent(
  cleanups: Cleanups,
  address: string,
  hello: Hello,
  answer?: (command: Command) => CommandResult | undefined,
  as: { role: PeerRole; name: string } = { role: "host", name: hello.hostId },
): RawAgent {
  const client = new AgentServiceClient(address, credentialsFor(address, as.role, as.name), grpcClientOptions());
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

/** The operator API as promises, as an admin (or as `as`: a viewer, a host...) under TLS. */
export function operatorApi(cleanups: Cleanups, address: string, as: { role: PeerRole; name: string } = { role: "admin", name: "admin" }) {
  const client = new ClusterServiceClient(address, credentialsFor(address, as.role, as.name), grpcClientOptions());
  cleanups.push(() => client.close());
  const call = <T>(fn: (m: Metadata, o: { deadline: Date }, cb: (e: ServiceError | null, r: T) => void) => void): Promise<T> =>
    new Promise((resolve, reject) => fn(new Metadata(), { deadline: deadlineIn(10_000) }, (e, r) => (e ? reject(e) : resolve(r))));
  return { client, call };
}

/** An answer to `command` as a fake agent would give it: ok with the domain, or failed with `code`. */
export function resultFor(command: Command, outcome: { ok: true; domain?: Partial<Domain> } | { ok: false; code: string; message?: string }): CommandResult {
  const base = { commandId: command.commandId, vmId: command.vmId, generation: command.generation, migrationId: command.migrationId, volumeId: command.volumeId, migrationTarget: undefined };
  if (!outcome.ok) return { ...base, ok: false, errorCode: outcome.code, errorMessage: outcome.message ?? "injected", domain: undefined };
  if (command.action?.$case === "delete") return { ...base, ok: true, errorCode: "", errorMessage: "", domain: undefined };
  const running = command.action?.$case === "start" || (command.action?.$case === "create" && command.action.value.start);
  const create = command.action?.$case === "create" ? command.action.value : undefined;
  return {
    ...base,
    ok: true,
    errorCode: "",
    errorMessage: "",
    domain: { vmId: command.vmId, name: create?.name ?? "vm", state: running ? 2 : 1, generation: command.generation, resources: create?.resources, fence: create?.fence ?? false, interfaces: [], volumeIds: [], imageId: "", ...outcome.domain },
  };
}
