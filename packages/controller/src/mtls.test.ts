/**
 * Mutual TLS over real gRPC, in process: an agent speaks only for the host its certificate names,
 * operators may do what their role allows, a certificate of another CA (or none) never gets a
 * connection, and the controller's own certificate is replaced without a restart or a dropped
 * stream. Every refusal is proven to have written nothing (the store's revision does not move).
 */
import { randomBytes, X509Certificate } from "node:crypto";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { credentials, Metadata, status, type ChannelCredentials, type ServiceError, type StatusObject } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import {
  AgentMessage,
  AgentServiceClient,
  ClusterConfig,
  ClusterServiceClient,
  DomainState,
  HostState,
  MigrationPhase,
  RejectReason,
  VmPhase,
  VmSpec,
  type Command,
  type ControllerMessage,
  type Host,
  type Hello,
  type Migration,
  type Vm,
  type WatchEventsResponse,
} from "@berth/api";
import { createCertificateAuthority, deadlineIn, grpcClientOptions, issueCertificate, type CertificateAndKey, type TlsFiles } from "@berth/core";
import { MemoryStore } from "@berth/store";
import { issueByHand, TestPki } from "../../core/src/pki.testkit.js";
import { credentialsFor, helloFor, operatorApi, rawAgent, resultFor, startController, waitFor, type Cleanups, type RawAgent } from "./controller.testkit.js";
import { Keys } from "./keys.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A report interval long enough that a scripted agent which heartbeats (see keepAlive) never goes
 * SUSPECT: no host state is written while a test watches the store's revision.
 */
const OVER = { reportIntervalMs: 2_000 };

/** The store's revision once nothing has been written for `quietMs`. */
async function quiet(store: MemoryStore, quietMs = 500): Promise<number> {
  let rev = store.revision;
  for (let since = Date.now(); Date.now() - since < quietMs; ) {
    await sleep(50);
    if (store.revision !== rev) {
      rev = store.revision;
      since = Date.now();
    }
  }
  return rev;
}

/** Heartbeats from a scripted agent, as a real agent sends them, until the test ends. */
function keepAlive(agent: RawAgent): void {
  const t = setInterval(() => agent.send({ $case: "heartbeat", value: { leaderEpoch: 0 } }), 300);
  cleanups.push(() => clearInterval(t));
}

const heartbeats = (agent: RawAgent): number => agent.received.filter((m) => m.msg?.$case === "heartbeat").length;

/** Sends a heartbeat and waits for its answer: every message sent before it has been handled (one stream's messages are handled in order). */
async function heardBack(agent: RawAgent): Promise<void> {
  const before = heartbeats(agent);
  agent.send({ $case: "heartbeat", value: { leaderEpoch: 0 } });
  await waitFor("the controller's answer", () => heartbeats(agent) > before, 5_000);
}

async function welcomed(agent: RawAgent): Promise<RawAgent> {
  expect((await agent.first).msg?.$case).toBe("welcome");
  return agent;
}

const rejectOf = (m: ControllerMessage): { reason: RejectReason; message: string } | undefined => (m.msg?.$case === "reject" ? m.msg.value : undefined);

/**
 * An agent stream with any credentials, to the end: its final status and what it received
 * (rawAgent hides the status).
 */
function agentStream(address: string, creds: ChannelCredentials, hello: Hello): Promise<{ status: StatusObject; received: ControllerMessage[] }> {
  const client = new AgentServiceClient(address, creds, grpcClientOptions());
  cleanups.push(() => client.close());
  const call = client.connect({ deadline: deadlineIn(10_000) });
  const received: ControllerMessage[] = [];
  call.on("data", (m: ControllerMessage) => received.push(m));
  call.on("error", () => undefined);
  call.write(AgentMessage.fromPartial({ msg: { $case: "hello", value: hello } }));
  return new Promise((resolve) => call.on("status", (s: StatusObject) => resolve({ status: s, received })));
}

/** The operator API with any credentials (operatorApi's shape). */
function clusterApiWith(address: string, creds: ChannelCredentials): Api {
  const client = new ClusterServiceClient(address, creds, grpcClientOptions());
  cleanups.push(() => client.close());
  const call = <T>(fn: (m: Metadata, o: { deadline: Date }, cb: (e: ServiceError | null, r: T) => void) => void): Promise<T> =>
    new Promise((resolve, reject) => fn(new Metadata(), { deadline: deadlineIn(10_000) }, (e, r) => (e ? reject(e) : resolve(r))));
  return { client, call };
}

type Api = ReturnType<typeof operatorApi>;
const spec = (name: string, over: Partial<VmSpec> = {}): VmSpec => VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 512, diskGib: 1 }, ...over });

/** Each ClusterService call these tests make, as a promise (rejected with the ServiceError). */
function calls({ client, call }: Api) {
  return {
    listHosts: () => call<{ hosts: Host[] }>((m, o, cb) => client.listHosts({}, m, o, cb)),
    getVm: (name: string) => call<{ vm?: Vm }>((m, o, cb) => client.getVm({ name }, m, o, cb)),
    listVms: () => call<{ vms: Vm[] }>((m, o, cb) => client.listVms({ hostId: "", pageSize: 0, pageToken: "" }, m, o, cb)),
    createVm: (s: VmSpec) => call<{ vm?: Vm }>((m, o, cb) => client.createVm({ spec: s, requestId: "" }, m, o, cb)),
    deleteVm: (name: string) => call<{ vm?: Vm }>((m, o, cb) => client.deleteVm({ name }, m, o, cb)),
    updateClusterConfig: (config: ClusterConfig) => call((m, o, cb) => client.updateClusterConfig({ config }, m, o, cb)),
    cordonHost: (hostId: string) => call((m, o, cb) => client.cordonHost({ hostId, reason: "test" }, m, o, cb)),
    migrateVm: (name: string, targetHost: string) => call<{ migration?: Migration }>((m, o, cb) => client.migrateVm({ name, targetHost, requestId: "" }, m, o, cb)),
    getMigration: (name: string) => call<{ migration?: Migration }>((m, o, cb) => client.getMigration({ name }, m, o, cb)),
    /** The first message of WatchEvents (the current state), or the stream's error. */
    watchFirst: () =>
      new Promise<WatchEventsResponse>((resolve, reject) => {
        const stream = client.watchEvents({ vms: false, hosts: false, migrations: false, events: false }, new Metadata(), { deadline: deadlineIn(10_000) });
        stream.on("data", (m: WatchEventsResponse) => {
          resolve(m);
          stream.cancel();
        });
        stream.on("error", reject);
      }),
  };
}

/** The ServiceError a call fails with (fails the test if it succeeds). */
async function refusal(p: Promise<unknown>): Promise<ServiceError> {
  const e = await p.then(
    () => undefined,
    (err: ServiceError) => err,
  );
  if (!e) throw new Error("expected the call to be refused");
  return e;
}

/** The serial of the certificate a new TLS connection to `port` is served (node:tls, as any client sees it). */
function servedSerial(port: number, pem: { ca: Buffer; cert: Buffer; key: Buffer }): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, ca: pem.ca, cert: pem.cert, key: pem.key, ALPNProtocols: ["h2"], servername: "localhost" }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      resolve(serial);
    });
    socket.on("error", reject);
  });
}


const sslWith = (caPem: string | Buffer, leaf?: CertificateAndKey): ChannelCredentials =>
  leaf ? credentials.createSsl(Buffer.from(caPem), Buffer.from(leaf.keyPem), Buffer.from(leaf.certPem)) : credentials.createSsl(Buffer.from(caPem));

describe("an agent speaks only for the host its certificate names", () => {
  it("a Hello naming another host than the certificate's is rejected INVALID_HELLO naming both; that host is not registered", async () => {
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store, OVER);
    await waitFor("leadership", () => controller.isLeader);
    const before = await quiet(store);

    const liar = rawAgent(cleanups, address, helloFor("host-2"), undefined, { role: "host", name: "host-1" });
    const reject = rejectOf(await liar.first);
    expect(reject?.reason).toBe(RejectReason.REJECT_REASON_INVALID_HELLO);
    expect(reject?.message).toMatch(/^this stream's certificate names host 'host-1', but its Hello says host 'host-2': an agent speaks only for the host its certificate names/);
    expect(reject?.message).toContain("'berth certs issue host host-2'");
    expect(liar.received.some((m) => m.msg?.$case === "welcome")).toBe(false);

    // Nothing written: no host record, no revision.
    expect(await quiet(store)).toBe(before);
    expect((await store.list(Keys.hosts)).items).toEqual([]);
    const admin = calls(operatorApi(cleanups, address));
    expect((await admin.listHosts()).hosts).toEqual([]);

    // Nothing held either: host-2 itself, with its own certificate, is welcomed.
    await welcomed(rawAgent(cleanups, address, helloFor("host-2")));
    expect((await admin.listHosts()).hosts.map((h) => h.id)).toEqual(["host-2"]);
  });

  it("host-1's stream cannot settle host-2's command nor claim host-2's VM", async () => {
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store, OVER);
    await waitFor("leadership", () => controller.isLeader);
    // host-2 never answers: its create stays in flight.
    const host2 = await welcomed(rawAgent(cleanups, address, helloFor("host-2")));
    keepAlive(host2);
    const host1 = await welcomed(rawAgent(cleanups, address, helloFor("host-1")));
    keepAlive(host1);
    const admin = calls(operatorApi(cleanups, address));
    const created = (await admin.createVm(spec("web", { pinnedHosts: ["host-2"] }))).vm!;
    expect(created.hostId).toBe("host-2");
    const cmd: Command = await waitFor("host-2's create", () => host2.commands().find((c) => c.vmId === created.id && c.action?.$case === "create"));
    const before = await quiet(store);
    const vmBefore = (await admin.getVm("web")).vm!;
    expect(vmBefore.status?.phase).toBe(VmPhase.VM_PHASE_PENDING);
    const host1Commands = host1.commands().length;

    // A result copying host-2's command (id, VM id, generation), and a Report claiming its VM.
    host1.send({ $case: "result", value: resultFor(cmd, { ok: true }) });
    host1.send({ $case: "result", value: resultFor(cmd, { ok: false, code: "NOT_FOUND", message: "forged" }) });
    host1.send({
      $case: "report",
      value: {
        usage: { vcpus: 1, memoryMib: 512, diskGib: 1 },
        inventory: { domains: [{ vmId: cmd.vmId, name: "web", state: DomainState.DOMAIN_STATE_RUNNING, generation: cmd.generation, resources: { vcpus: 1, memoryMib: 512, diskGib: 1 }, fence: false }] },
        vmUsage: [],
      },
    });
    // The stream is not refused for it (the messages are well formed): they are handled and answered.
    await heardBack(host1);
    await sleep(400);

    // Nothing written: the VM is as it was, still on host-2 and still waiting on host-2.
    expect(await quiet(store)).toBe(before);
    const vm = (await admin.getVm("web")).vm!;
    expect(vm.hostId).toBe("host-2");
    expect(vm.generation).toBe(vmBefore.generation);
    expect(vm.status?.phase).toBe(VmPhase.VM_PHASE_PENDING);
    expect(vm.status?.observedGeneration).toBe(vmBefore.status?.observedGeneration);
    // host-2 was told nothing new; host-1 at most to remove its own claimed copy (a copy the
    // record places elsewhere is superseded) — never anything of host-2's.
    expect(host2.commands().map((c) => c.commandId)).toEqual([cmd.commandId]);
    for (const c of host1.commands().slice(host1Commands)) expect([c.vmId, c.action?.$case]).toEqual([cmd.vmId, "delete"]);
    const hosts = (await admin.listHosts()).hosts;
    const h2 = hosts.find((h) => h.id === "host-2")!;
    expect(h2.state).toBe(HostState.HOST_STATE_READY);
    expect(h2.orphans).toEqual([]);
    expect(hosts.find((h) => h.id === "host-1")!.orphans.every((o) => o.vmId === cmd.vmId)).toBe(true);

    // host-2's command was still in flight: its own answer settles it, and the VM runs on host-2.
    host2.send({ $case: "result", value: resultFor(cmd, { ok: true }) });
    const running = await waitFor("web running on host-2", async () => {
      const v = (await admin.getVm("web")).vm!;
      return v.status?.phase === VmPhase.VM_PHASE_RUNNING ? v : undefined;
    });
    expect(running.hostId).toBe("host-2");
  });

  it("progress for a migration is heard only from its source: its target's and a bystander's are ignored", async () => {
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store, OVER);
    await waitFor("leadership", () => controller.isLeader);
    // host-2 is the source: it runs the VM but never answers migrate_out. host-1 is the target.
    const host2 = await welcomed(rawAgent(cleanups, address, helloFor("host-2"), (c) => (c.action?.$case === "migrateOut" ? undefined : resultFor(c, { ok: true }))));
    keepAlive(host2);
    const admin = calls(operatorApi(cleanups, address));
    // Placed while host-2 is the only host.
    const vm = (await admin.createVm(spec("web"))).vm!;
    expect(vm.hostId).toBe("host-2");
    await waitFor("web running", async () => (await admin.getVm("web")).vm?.status?.phase === VmPhase.VM_PHASE_RUNNING);
    const host1 = await welcomed(
      rawAgent(cleanups, address, helloFor("host-1"), (c) =>
        c.action?.$case === "prepareMigration" ? { ...resultFor(c, { ok: true }), domain: undefined, migrationTarget: { driver: "fake", uri: "fake:///host-1" } } : undefined,
      ),
    );
    keepAlive(host1);
    const host3 = await welcomed(rawAgent(cleanups, address, helloFor("host-3")));
    keepAlive(host3);
    const migration = (await admin.migrateVm("web", "host-1")).migration!;
    await waitFor("migrate_out sent to host-2", () => host2.commands().some((c) => c.action?.$case === "migrateOut"));
    expect((await admin.getMigration("web")).migration?.phase).toBe(MigrationPhase.MIGRATION_PHASE_MIGRATING);
    const before = await quiet(store);

    const forged = { vmId: vm.id, migrationId: migration.id, progress: { dataTotalBytes: 1000, dataProcessedBytes: 999, dataRemainingBytes: 1, dirtyRateBytesPerS: 0, iteration: 9, updatedAtMs: Date.now() } };
    host1.send({ $case: "migrationProgress", value: forged });
    host3.send({ $case: "migrationProgress", value: forged });
    await heardBack(host1);
    await heardBack(host3);
    // Progress is written at most once a second, on the migration manager's 250 ms pass.
    await sleep(1_500);
    expect(await quiet(store)).toBe(before);
    expect((await admin.getMigration("web")).migration?.progress).toBeUndefined();

    // The source's own progress is written (the path the forgeries would have taken works).
    host2.send({ $case: "migrationProgress", value: { ...forged, progress: { ...forged.progress, dataProcessedBytes: 400, dataRemainingBytes: 600, iteration: 1 } } });
    const m = await waitFor("the source's progress written", async () => {
      const got = (await admin.getMigration("web")).migration;
      return got?.progress ? got : undefined;
    });
    expect(m.progress).toMatchObject({ dataRemainingBytes: 600, iteration: 1 });
  });
});

describe("roles", () => {
  it("an operator certificate on AgentService.Connect: PERMISSION_DENIED, no Welcome, nothing written", async () => {
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store, OVER);
    await waitFor("leadership", () => controller.isLeader);
    const before = await quiet(store);
    for (const [role, name] of [["admin", "admin"], ["viewer", "viewer"], ["controller", "controller"]] as const) {
      const { status: s, received } = await agentStream(address, credentialsFor(address, role, name), helloFor("host-1"));
      expect(s.code, role).toBe(status.PERMISSION_DENIED);
      expect(s.details).toBe(`AgentService is for hosts; '${name}' has a ${role} certificate (agents need a host certificate: 'berth certs issue host NAME')`);
      expect(received).toEqual([]);
    }
    expect(await quiet(store)).toBe(before);
    expect((await store.list(Keys.hosts)).items).toEqual([]);
  });

  it("a host certificate on ClusterService: PERMISSION_DENIED naming the operator role needed", async () => {
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store, OVER);
    await waitFor("leadership", () => controller.isLeader);
    keepAlive(await welcomed(rawAgent(cleanups, address, helloFor("host-1"))));
    const before = await quiet(store);
    const host = calls(operatorApi(cleanups, address, { role: "host", name: "host-1" }));
    const list = await refusal(host.listHosts());
    expect(list.code).toBe(status.PERMISSION_DENIED);
    expect(list.details).toBe("ListHosts is an operator call; 'host-1' has a host certificate (operators need role viewer or admin)");
    const create = await refusal(host.createVm(spec("web")));
    expect(create.code).toBe(status.PERMISSION_DENIED);
    expect(create.details).toBe("CreateVm is an operator call; 'host-1' has a host certificate (operators need role admin)");
    const watch = await refusal(host.watchFirst());
    expect(watch.code).toBe(status.PERMISSION_DENIED);
    expect(watch.details).toBe("WatchEvents is an operator call; 'host-1' has a host certificate (operators need role viewer or admin)");
    expect(await quiet(store)).toBe(before);
    expect((await store.list(Keys.vms)).items).toEqual([]);
  });

  it("a viewer reads and watches, and is refused every change naming role admin, with nothing written; an admin may", async () => {
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store, OVER);
    await waitFor("leadership", () => controller.isLeader);
    keepAlive(await welcomed(rawAgent(cleanups, address, helloFor("host-1"), (c) => resultFor(c, { ok: true }))));
    const admin = calls(operatorApi(cleanups, address));
    await admin.createVm(spec("web"));
    await waitFor("web running", async () => (await admin.getVm("web")).vm?.status?.phase === VmPhase.VM_PHASE_RUNNING);
    const viewer = calls(operatorApi(cleanups, address, { role: "viewer", name: "viewer" }));

    // Reads.
    expect((await viewer.listHosts()).hosts.map((h) => h.id)).toEqual(["host-1"]);
    expect((await viewer.getVm("web")).vm?.hostId).toBe("host-1");
    expect((await viewer.listVms()).vms.map((v) => v.spec?.name)).toEqual(["web"]);
    expect((await viewer.watchFirst()).object).toBeDefined();

    // Changes.
    const before = await quiet(store);
    const refused: [string, Promise<unknown>][] = [
      ["CreateVm", viewer.createVm(spec("db"))],
      ["DeleteVm", viewer.deleteVm("web")],
      ["UpdateClusterConfig", viewer.updateClusterConfig(ClusterConfig.fromPartial({ scheduler: { preset: "pack" } }))],
      ["CordonHost", viewer.cordonHost("host-1")],
    ];
    for (const [rpc, p] of refused) {
      const e = await refusal(p);
      expect(e.code, rpc).toBe(status.PERMISSION_DENIED);
      expect(e.details).toBe(`${rpc} needs role admin; 'viewer' has role viewer`);
    }
    expect(await quiet(store)).toBe(before);
    expect((await viewer.getVm("web")).vm?.status?.phase).toBe(VmPhase.VM_PHASE_RUNNING);
    expect((await viewer.listHosts()).hosts[0]?.cordoned).toBe(false);
    expect(await store.get(Keys.config)).toBeUndefined();

    // The admin may.
    await admin.cordonHost("host-1");
    expect((await admin.listHosts()).hosts[0]?.cordoned).toBe(true);
    await admin.updateClusterConfig(ClusterConfig.fromPartial({ scheduler: { preset: "pack" } }));
    expect(await store.get(Keys.config)).toBeDefined();
    await admin.deleteVm("web");
    await waitFor("web gone", async () => (await admin.listVms()).vms.length === 0);
  });
});

describe("certificates that are not the cluster's", () => {
  it("another CA's certificate, or none, gets no connection (UNAVAILABLE); a certificate naming no Berth role is UNAUTHENTICATED; the controller serves on", async () => {
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store, OVER);
    await waitFor("leadership", () => controller.isLeader);
    const pki = await TestPki.shared();
    const host1 = await welcomed(rawAgent(cleanups, address, helloFor("host-1")));
    keepAlive(host1);
    const admin = calls(operatorApi(cleanups, address));
    const before = await quiet(store);

    const otherCa = await createCertificateAuthority({ commonName: "Not the cluster's CA" });
    const foreignAdmin = await issueCertificate(otherCa, { role: "admin", name: "admin" });
    const foreignHost = await issueCertificate(otherCa, { role: "host", name: "host-2" });
    const call = (creds: ChannelCredentials) => calls(clusterApiWith(address, creds));

    for (const [what, creds] of [
      ["another CA's admin certificate", sslWith(pki.ca.certPem, foreignAdmin)],
      ["no client certificate", sslWith(pki.ca.certPem)],
    ] as const) {
      const e = await refusal(call(creds).listHosts());
      expect(e.code, what).toBe(status.UNAVAILABLE);
      // The controller still answers a client of its own CA.
      expect((await admin.listHosts()).hosts.map((h) => h.id), what).toEqual(["host-1"]);
    }
    const agent = await agentStream(address, sslWith(pki.ca.certPem, foreignHost), helloFor("host-2"));
    expect(agent.status.code).toBe(status.UNAVAILABLE);
    expect(agent.received).toEqual([]);

    // Signed by the cluster's CA, but the subject names no Berth role, or two.
    for (const [what, O, says] of [
      ["no role", ["acme:ops"], "names no Berth role (subject O acme:ops;"],
      ["two roles", ["berth:viewer", "berth:admin"], "names more than one Berth role"],
    ] as const) {
      const leaf = await issueByHand(pki.ca, { subject: { CN: "mallory", O: [...O] } });
      const e = await refusal(call(sslWith(pki.ca.certPem, leaf)).listHosts());
      expect(e.code, what).toBe(status.UNAUTHENTICATED);
      expect(e.details).toContain(says);
      const s = await agentStream(address, sslWith(pki.ca.certPem, leaf), helloFor("mallory"));
      expect(s.status.code, what).toBe(status.UNAUTHENTICATED);
      expect(s.status.details).toContain(says);
      expect(s.received).toEqual([]);
    }

    // Nothing written; the host's stream lives on.
    expect(await quiet(store)).toBe(before);
    await heardBack(host1);
    expect((await admin.listHosts()).hosts).toMatchObject([{ id: "host-1", state: HostState.HOST_STATE_READY }]);
  });
});

describe("the controller's certificate is replaced without a restart", () => {
  it("new connections get the new certificate; an agent stream opened before lives on; a bad key is refused and the current one stays", async () => {
    const pki = await TestPki.shared();
    const dir = mkdtempSync(join(tmpdir(), "berth-mtls-reload-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const files: TlsFiles = { ca: join(dir, "ca.crt"), cert: join(dir, "controller.crt"), key: join(dir, "controller.key") };
    const issue = () => issueCertificate(pki.ca, { role: "controller", name: "controller", sans: ["localhost", "127.0.0.1"] });
    /** Atomically, as `berth certs issue --force` writes: a temporary file renamed over the old one. */
    const put = (path: string, content: string): void => {
      const tmp = join(dir, `.${randomBytes(4).toString("hex")}.tmp`);
      writeFileSync(tmp, content, { mode: 0o600 });
      renameSync(tmp, path);
    };
    const first = await issue();
    writeFileSync(files.ca, pki.ca.certPem);
    put(files.cert, first.certPem);
    put(files.key, first.keyPem);
    const serialOf = (c: CertificateAndKey): string => new X509Certificate(c.certPem).serialNumber;

    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store, { ...OVER, tls: files });
    await waitFor("leadership", () => controller.isLeader);
    const clientPem = await pki.pem("admin", "admin");
    expect(await servedSerial(controller.port, clientPem)).toBe(serialOf(first));

    const host1 = await welcomed(rawAgent(cleanups, address, helloFor("host-1")));
    keepAlive(host1);

    const second = await issue();
    expect(serialOf(second)).not.toBe(serialOf(first));
    put(files.cert, second.certPem);
    put(files.key, second.keyPem);
    expect(controller.tls!.poll()).toBe(true);
    expect(controller.tls!.certificate.serial).toBe(serialOf(second));

    // A new connection sees the new certificate, and a new client works with it.
    expect(await servedSerial(controller.port, clientPem)).toBe(serialOf(second));
    const admin = calls(operatorApi(cleanups, address));
    expect((await admin.listHosts()).hosts).toMatchObject([{ id: "host-1", state: HostState.HOST_STATE_READY }]);
    await welcomed(rawAgent(cleanups, address, helloFor("host-2")));
    // The stream opened before is the same session, still heard and answered.
    await heardBack(host1);
    await heardBack(host1);
    expect(host1.received.filter((m) => m.msg?.$case === "welcome")).toHaveLength(1);
    expect(host1.received.some((m) => m.msg?.$case === "reject")).toBe(false);

    // A garbage key: refused; the second certificate stays in use for new connections.
    put(files.key, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n");
    expect(controller.tls!.poll()).toBe(false);
    expect(controller.tls!.certificate.serial).toBe(serialOf(second));
    expect(await servedSerial(controller.port, clientPem)).toBe(serialOf(second));
    const again = calls(operatorApi(cleanups, address));
    expect((await again.listHosts()).hosts.map((h) => h.id).sort()).toEqual(["host-1", "host-2"]);
    // A certificate of another CA (with its own key): refused too.
    const foreign = await issueCertificate(await createCertificateAuthority(), { role: "controller", name: "controller", sans: ["127.0.0.1"] });
    put(files.cert, foreign.certPem);
    put(files.key, foreign.keyPem);
    expect(controller.tls!.poll()).toBe(false);
    expect(await servedSerial(controller.port, clientPem)).toBe(serialOf(second));
    await heardBack(host1);
  });
});
