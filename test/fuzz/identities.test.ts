/**
 * Forged identities over mutual TLS: the fuzz generator's messages (well-formed or not) sent to a
 * TLS controller under certificates that may not do what they ask — a viewer's on every change, a
 * host's and a controller's on the operator API, operators' on the agent stream, a host's whose
 * Hello names another host, and certificates of a CA the controller does not trust. Authorization
 * comes before anything reads the request, so each is refused the same way whatever its bytes:
 * PERMISSION_DENIED naming the role (a Reject naming both hosts for the wrong-host Hello, no
 * connection for a foreign CA), and the store's revision does not move at all.
 * Replay with BERTH_FUZZ_SEED (as fuzz.test.ts); BERTH_FUZZ_FORGED sets the count (default 4,000).
 */
import { randomInt } from "node:crypto";
import { readFileSync } from "node:fs";
import { Client, credentials, Metadata, status, type ChannelCredentials, type ServiceError, type StatusObject } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { AgentMessage, ControllerMessage, RejectReason } from "@berth/api";
import { createCertificateAuthority, deadlineIn, grpcClientOptions, issueCertificate, type PeerRole } from "@berth/core";
import { MemoryStore } from "@berth/store";
import { CLUSTER_ACCESS } from "../../packages/controller/src/authorization.js";
import { startController, waitFor, type Cleanups } from "../../packages/controller/src/controller.testkit.js";
import { TestPki } from "../../packages/core/src/pki.testkit.js";
import { AGENT_CONNECT_PATH, describeCase, FuzzGenerator, type FuzzCase } from "./generator.js";

const SEED = process.env.BERTH_FUZZ_SEED ? Number(process.env.BERTH_FUZZ_SEED) : randomInt(2 ** 31);
const COUNT = Number(process.env.BERTH_FUZZ_FORGED ?? 4_000);
const CONCURRENCY = 32;
const DEADLINE_MS = 20_000;
/** The host whose certificate the wrong-host streams present. */
const FORGER = "fz-h3";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const raw = (b: Buffer): Buffer => b;
const lowerFirst = (s: string): string => s.charAt(0).toLowerCase() + s.slice(1);

type Who = { role: PeerRole; name: string } | "foreign";
const label = (w: Who): string => (w === "foreign" ? "a foreign CA's admin" : `${w.role} '${w.name}'`);

describe("fuzzing the controller with forged identities over mutual TLS", () => {
  it(`${COUNT} messages under certificates that may not send them: all refused before they are read, nothing written`, async () => {
    console.log(`fuzz identities: seed ${SEED}, ${COUNT} messages (replay: BERTH_FUZZ_SEED=${SEED} BERTH_FUZZ_FORGED=${COUNT})`);
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store, { reportIntervalMs: 1_000 });
    expect(controller.tls).toBeDefined();
    await waitFor("leadership", () => controller.isLeader);

    const pki = await TestPki.shared();
    const creds = async (role: PeerRole, name: string): Promise<ChannelCredentials> => {
      const p = await pki.pem(role, name);
      return credentials.createSsl(p.ca, p.key, p.cert);
    };
    const foreignCa = await createCertificateAuthority({ commonName: "not the cluster's CA" });
    const foreignAdmin = await issueCertificate(foreignCa, { role: "admin", name: "admin" });
    const options = { ...grpcClientOptions(), "grpc.use_local_subchannel_pool": 1 };
    const clients = new Map<string, Client>();
    const client = async (w: Who): Promise<Client> => {
      const key = label(w);
      let c = clients.get(key);
      if (!c) {
        const cred =
          w === "foreign"
            ? credentials.createSsl(readFileSync(pki.caFile), Buffer.from(foreignAdmin.keyPem), Buffer.from(foreignAdmin.certPem))
            : await creds(w.role, w.name);
        c = new Client(address, cred, options);
        clients.set(key, c);
      }
      return c;
    };
    cleanups.push(() => {
      for (const c of clients.values()) c.close();
    });

    const revision = store.revision;
    const failures: string[] = [];
    const fail = (c: FuzzCase, w: Who, why: string): void => {
      if (failures.length < 25) failures.push(`${describeCase(c)} as ${label(w)}: ${why}`);
    };
    const tally = new Map<string, number>();
    const count = (k: string): void => void tally.set(k, (tally.get(k) ?? 0) + 1);

    const gen = new FuzzGenerator(SEED ^ 0x1d);
    const rand = (n: number): number => Math.floor(Math.random() * n);
    let sent = 0;
    const next = (): { c: FuzzCase; who: Who } | undefined => {
      for (;;) {
        if (sent >= COUNT) return undefined;
        const c = gen.next();
        // Over the receive cap grpc-js refuses before any handler; large frames are fuzz.test.ts's.
        const frames = c.kind === "unary" ? [c] : c.frames;
        if (frames.some((f) => f.overCap || f.bytes.length > 64 * 1024)) continue;
        if (c.kind === "unary") {
          const change = CLUSTER_ACCESS[lowerFirst(c.method) as keyof typeof CLUSTER_ACCESS] === "change";
          const who: Who[] = [{ role: "host", name: FORGER }, { role: "controller", name: "controller" }, ...(change ? [{ role: "viewer", name: "viewer" } as const] : [])];
          sent++;
          return { c, who: rand(50) === 0 ? "foreign" : who[rand(who.length)]! };
        }
        // Streams: operators and controllers on the agent stream, whatever they send; a host
        // whose well-formed Hello names another host.
        const first = c.frames[0]!;
        const hello = first.fault ? undefined : AgentMessage.decode(first.bytes).msg;
        const wrongHost = hello?.$case === "hello" && hello.value.hostId !== FORGER && /^[a-z0-9-]+$/.test(hello.value.hostId) ? hello.value.hostId : undefined;
        const who: Who[] = [{ role: "admin", name: "admin" }, { role: "viewer", name: "viewer" }, { role: "controller", name: "controller" }];
        sent++;
        if (wrongHost && rand(2) === 0) return { c: { ...c, frames: [first] }, who: { role: "host", name: FORGER } };
        return { c, who: rand(50) === 0 ? "foreign" : who[rand(who.length)]! };
      }
    };

    const unary = async (c: Extract<FuzzCase, { kind: "unary" }>, w: Who): Promise<void> => {
      const cl = await client(w);
      const s = await new Promise<Partial<StatusObject> & { code: status }>((resolve) => {
        if (c.serverStream) {
          const call = cl.makeServerStreamRequest(c.path, raw, raw, c.bytes, new Metadata(), { deadline: deadlineIn(DEADLINE_MS) });
          call.on("data", () => call.cancel());
          call.on("error", () => undefined);
          call.on("status", resolve);
          return;
        }
        cl.makeUnaryRequest(c.path, raw, raw, c.bytes, new Metadata(), { deadline: deadlineIn(DEADLINE_MS) }, (e: ServiceError | null) => resolve(e ?? { code: status.OK }));
      });
      count(`${c.kind} ${w === "foreign" ? "foreign" : w.role}: ${status[s.code]}`);
      if (w === "foreign") {
        if (s.code !== status.UNAVAILABLE) fail(c, w, `answered ${status[s.code]}, not UNAVAILABLE (no connection)`);
        return;
      }
      const want = w.role === "viewer" ? `${c.method} needs role admin; 'viewer' has role viewer` : `${c.method} is an operator call; '${w.name}' has a ${w.role} certificate`;
      if (s.code !== status.PERMISSION_DENIED || !s.details?.startsWith(want)) fail(c, w, `answered ${status[s.code]} '${(s.details ?? "").slice(0, 200)}', not PERMISSION_DENIED '${want}…'`);
    };

    const stream = async (c: Extract<FuzzCase, { kind: "stream" }>, w: Who): Promise<void> => {
      const cl = await client(w);
      const call = cl.makeBidiStreamRequest(AGENT_CONNECT_PATH, raw, (b: Buffer) => ControllerMessage.decode(b), new Metadata(), { deadline: deadlineIn(DEADLINE_MS) });
      const received: ControllerMessage[] = [];
      call.on("data", (m: ControllerMessage) => received.push(m));
      call.on("error", () => undefined);
      const ended = new Promise<StatusObject>((resolve) => call.on("status", resolve));
      for (const f of c.frames) call.write(f.bytes);
      call.end();
      const s = await ended;
      count(`stream ${w === "foreign" ? "foreign" : w.role}: ${status[s.code]}${received[0]?.msg ? ` ${received[0].msg.$case}` : ""}`);
      if (received.some((m) => m.msg?.$case === "welcome")) fail(c, w, "was welcomed");
      if (w === "foreign") {
        if (s.code !== status.UNAVAILABLE) fail(c, w, `ended ${status[s.code]}, not UNAVAILABLE (no connection)`);
        return;
      }
      if (w.role === "host") {
        const r = received[0]?.msg;
        if (r?.$case !== "reject" || r.value.reason !== RejectReason.REJECT_REASON_INVALID_HELLO || !r.value.message.startsWith(`this stream's certificate names host '${FORGER}', but its Hello says host '`)) {
          fail(c, w, `got ${JSON.stringify(r ?? null).slice(0, 200)}, not Reject INVALID_HELLO naming both hosts`);
        }
        return;
      }
      if (s.code !== status.PERMISSION_DENIED || received.length > 0 || !s.details.startsWith("AgentService is for hosts")) {
        fail(c, w, `ended ${status[s.code]} '${s.details.slice(0, 200)}' after ${received.length} messages, not PERMISSION_DENIED with none`);
      }
    };

    const started = Date.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        for (let x = next(); x; x = next()) {
          if (x.c.kind === "unary") await unary(x.c, x.who);
          else await stream(x.c, x.who);
        }
      }),
    );
    const seconds = (Date.now() - started) / 1000;
    console.log(`fuzz identities: ${sent} messages in ${seconds.toFixed(1)} s; ${JSON.stringify(Object.fromEntries([...tally].sort()))}`);
    expect(failures, failures.join("\n")).toEqual([]);
    expect(sent).toBe(COUNT);
    // Nothing forged was written, and the controller still leads.
    expect(store.revision, "a refused identity moved the store's revision").toBe(revision);
    expect(controller.isLeader).toBe(true);
  }, 300_000);
});
