import { execFileSync, spawnSync } from "node:child_process";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkServerIdentity, connect, createServer, type TLSSocket } from "node:tls";
import { credentials, makeGenericClientConstructor, Server, ServerCredentials, type handleUnaryCall, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BerthError, ErrorCode } from "./errors.js";
import { identityOfSubject, type CertificateSubject, type PeerIdentity, type PeerRole } from "./identity.js";
import {
  createCertificateAuthority,
  issueCertificate,
  issueToDirectory,
  initPkiDirectory,
  PKI_FILES,
  type CertificateAndKey,
} from "./pki.js";

const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
const DAY_MS = 86_400_000;

/** Node's one-line-per-field subject text (`CN=host-1\nO=berth:host`) as the object tls reports. */
function subjectOf(text: string): CertificateSubject {
  const out: Record<string, string | string[]> = {};
  for (const line of text.split("\n")) {
    const i = line.indexOf("=");
    const [k, v] = [line.slice(0, i), line.slice(i + 1)];
    const prev = out[k];
    out[k] = prev === undefined ? v : [...(Array.isArray(prev) ? prev : [prev]), v];
  }
  return out;
}

async function rejection(p: Promise<unknown>): Promise<BerthError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof BerthError)) throw new Error(`expected a BerthError, got ${String(e)}`);
  return e;
}

const tempDirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "berth-pki-"));
  tempDirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

let ca: CertificateAndKey;
let caCert: X509Certificate;
beforeAll(async () => {
  ca = await createCertificateAuthority();
  caCert = new X509Certificate(ca.certPem);
});

describe("createCertificateAuthority", () => {
  it("makes a self-signed P-256 CA valid for 10 years, with a PKCS#8 key", async () => {
    expect(caCert.ca).toBe(true);
    expect(caCert.subject).toBe("CN=Berth CA");
    expect(caCert.verify(caCert.publicKey)).toBe(true);
    expect(caCert.checkIssued(caCert)).toBe(true);
    expect(ca.keyPem.startsWith("-----BEGIN PRIVATE KEY-----\n")).toBe(true);
    const key = createPrivateKey(ca.keyPem);
    expect(key.asymmetricKeyType).toBe("ec");
    expect(key.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    expect(caCert.checkPrivateKey(key)).toBe(true);
    const years = (Date.parse(caCert.validTo) - Date.now()) / (365 * DAY_MS);
    expect(years).toBeGreaterThan(9.9);
    expect(years).toBeLessThan(10.1);
  });

  it("marks basicConstraints CA:true and keyUsage keyCertSign, cRLSign critical, with a subject key id", async () => {
    const x509 = await peculiar();
    const c = new x509.X509Certificate(ca.certPem);
    const bc = c.getExtension(x509.BasicConstraintsExtension)!;
    expect([bc.ca, bc.critical]).toEqual([true, true]);
    const ku = c.getExtension(x509.KeyUsagesExtension)!;
    expect(ku.critical).toBe(true);
    expect(ku.usages).toBe(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
    expect(c.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId).toMatch(/^[0-9a-f]{40}$/);
  });

  it("takes a common name and a validity, and refuses bad ones naming the field", async () => {
    const c = new X509Certificate((await createCertificateAuthority({ commonName: "Lab CA 2", days: 30 })).certPem);
    expect(c.subject).toBe("CN=Lab CA 2");
    expect(Date.parse(c.validTo) - Date.now()).toBeLessThanOrEqual(30 * DAY_MS);
    expect((await rejection(createCertificateAuthority({ days: 0 }))).field).toBe("days");
    expect((await rejection(createCertificateAuthority({ days: 1.5 }))).field).toBe("days");
    expect((await rejection(createCertificateAuthority({ commonName: "" }))).field).toBe("commonName");
    expect((await rejection(createCertificateAuthority({ commonName: "a\nb" }))).field).toBe("commonName");
  });
});

/** What Node's X509Certificate says of a leaf issued for `role`/`name`. */
async function leaf(role: PeerRole, name: string, sans?: string[]): Promise<{ made: CertificateAndKey; cert: X509Certificate }> {
  const made = await issueCertificate(ca, { role, name, ...(sans ? { sans } : {}) });
  return { made, cert: new X509Certificate(made.certPem) };
}

describe("issueCertificate", () => {
  it.each<[PeerRole, string, string[], string | undefined]>([
    ["controller", "controller", [SERVER_AUTH, CLIENT_AUTH], "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"],
    ["host", "host-1", [CLIENT_AUTH], "DNS:host-1"],
    ["admin", "alice", [CLIENT_AUTH], "DNS:alice"],
    ["viewer", "bob_the.viewer", [CLIENT_AUTH], undefined], // '_' is not DNS: no SAN
  ])("a %s certificate verifies against the CA, names its identity, and has its EKU and SANs", async (role, name, eku, sans) => {
    const { made, cert } = await leaf(role, name);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.checkIssued(caCert)).toBe(true); // "this certificate was issued by caCert"
    expect(made.keyPem.startsWith("-----BEGIN PRIVATE KEY-----\n")).toBe(true);
    expect(cert.checkPrivateKey(createPrivateKey(made.keyPem))).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.issuer).toBe(caCert.subject);
    expect(cert.subject).toBe(`CN=${name}\nO=berth:${role}`);
    expect(identityOfSubject(subjectOf(cert.subject))).toEqual<PeerIdentity>({ role, name });
    expect([...(cert.keyUsage ?? [])].sort()).toEqual([...eku].sort());
    expect(cert.subjectAltName).toBe(sans);
    expect(cert.serialNumber).toMatch(/^[0-9A-F]{32}$/);
    // 5 minutes of clock skew; a year of validity.
    const from = Date.parse(cert.validFrom);
    expect(Date.now() - from).toBeGreaterThanOrEqual(4 * 60_000);
    expect(Date.now() - from).toBeLessThanOrEqual(6 * 60_000);
    expect(Math.round((Date.parse(cert.validTo) - Date.now()) / DAY_MS)).toBe(365);
  });

  it("marks keyUsage digitalSignature critical, CA:false, and links the CA's key id", async () => {
    const x509 = await peculiar();
    const { made } = await leaf("host", "host-2");
    const c = new x509.X509Certificate(made.certPem);
    const ku = c.getExtension(x509.KeyUsagesExtension)!;
    expect([ku.usages, ku.critical]).toEqual([x509.KeyUsageFlags.digitalSignature, true]);
    expect(c.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(false);
    const caKeyId = new x509.X509Certificate(ca.certPem).getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
    expect(c.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId).toBe(caKeyId);
  });

  it("gives a random serial to each certificate", async () => {
    const serials = new Set<string>();
    for (let i = 0; i < 5; i++) serials.add((await leaf("host", "host-1")).cert.serialNumber);
    expect(serials.size).toBe(5);
  });

  it("puts a controller's SANs as IP and DNS names, without duplicates", async () => {
    const { cert } = await leaf("controller", "ctl-1", ["10.0.0.1", "ctl-1.lab", "fd00::1", "CTL-1.lab", "10.0.0.1"]);
    expect(cert.subjectAltName).toBe("IP Address:10.0.0.1, DNS:ctl-1.lab, IP Address:FD00:0:0:0:0:0:0:1");
    expect(checkServerIdentity("ctl-1.lab", cert.toLegacyObject())).toBeUndefined();
    expect(checkServerIdentity("10.0.0.1", cert.toLegacyObject())).toBeUndefined();
    expect(checkServerIdentity("ctl-2.lab", cert.toLegacyObject())).toBeInstanceOf(Error);
  });

  it.each<[string, Parameters<typeof issueCertificate>[1], string]>([
    ["an empty name", { role: "host", name: "" }, "name"],
    ["a name starting with '-'", { role: "admin", name: "-alice" }, "name"],
    ["a name with a space", { role: "admin", name: "alice smith" }, "name"],
    ["a name with a '/'", { role: "admin", name: "../alice" }, "name"],
    ["a 65-character name", { role: "viewer", name: "a".repeat(65) }, "name"],
    ["a host name that is not a host id", { role: "host", name: "Host_1" }, "name"],
    ["an unknown role", { role: "root" as PeerRole, name: "x" }, "role"],
    ["a SAN that is neither IP nor DNS", { role: "controller", name: "c", sans: ["ok.lab", "bad san"] }, "sans[1]"],
    ["a mistyped IP address SAN", { role: "controller", name: "c", sans: ["10.0.0.256"] }, "sans[0]"],
    ["a zoned IPv6 SAN", { role: "controller", name: "c", sans: ["fe80::1%eth0"] }, "sans[0]"],
    ["a controller with no SAN", { role: "controller", name: "c", sans: [] }, "sans"],
    ["SANs on a host", { role: "host", name: "host-1", sans: ["10.0.0.1"] }, "sans"],
    ["0 days", { role: "host", name: "host-1", days: 0 }, "days"],
    ["more days than the CA has left", { role: "host", name: "host-1", days: 4000 }, "days"],
  ])("refuses %s, naming the field", async (_what, options, field) => {
    const e = await rejection(issueCertificate(ca, options));
    expect(e.code).toBe(ErrorCode.InvalidArgument);
    expect(e.field).toBe(field);
    expect(e.message.startsWith(`${field}: `)).toBe(true);
  });

  it("quotes at most 64 characters of a bad value", async () => {
    const e = await rejection(issueCertificate(ca, { role: "admin", name: "x y".repeat(1000) }));
    expect(e.message.length).toBeLessThan(200);
  });

  it("refuses a CA that is not one, or whose key is not its own", async () => {
    const { made } = await leaf("controller", "c");
    expect((await rejection(issueCertificate(made, { role: "host", name: "h" }))).code).toBe(ErrorCode.FailedPrecondition);
    const other = await createCertificateAuthority();
    const e = await rejection(issueCertificate({ certPem: ca.certPem, keyPem: other.keyPem }, { role: "host", name: "h" }));
    expect(e.code).toBe(ErrorCode.FailedPrecondition);
    expect(e.message).toContain("is not the key of");
  });

  it("is fast enough to make certificates in tests: a CA and 10 leaves", async () => {
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const c = await createCertificateAuthority();
    for (let i = 0; i < 10; i++) await issueCertificate(c, { role: "host", name: `host-${i}` });
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    console.log(`pki: a CA and 10 leaf certificates in ${ms.toFixed(1)} ms (${cpuMs.toFixed(1)} ms of CPU)`);
    // CPU time, not wall time: other processes on a busy machine slow the wall clock, not the work.
    expect(cpuMs).toBeLessThan(1000);
  });
});

/** A TLS server on 127.0.0.1 that requires a client certificate from `ca`, and what it saw. */
async function mtlsServer(server: CertificateAndKey, trust: string) {
  const seen: { identities: PeerIdentity[]; clientErrors: Error[] } = { identities: [], clientErrors: [] };
  const s = createServer({ key: server.keyPem, cert: server.certPem, ca: trust, requestCert: true, rejectUnauthorized: true }, (socket: TLSSocket) => {
    seen.identities.push(identityOfSubject(socket.getPeerCertificate().subject));
    socket.end("hello\n");
  });
  s.on("tlsClientError", (e) => seen.clientErrors.push(e));
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const address = s.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return { port, seen, close: () => new Promise<void>((resolve) => s.close(() => resolve())) };
}

/** Connects with `client`'s certificate; resolves with what the server sent, or the error. */
function talk(port: number, client: CertificateAndKey, trust: string): Promise<{ data: string; error?: Error }> {
  return new Promise((resolve) => {
    let data = "";
    const socket = connect({ host: "127.0.0.1", port, ca: trust, key: client.keyPem, cert: client.certPem });
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => (data += d));
    socket.on("error", (error) => resolve({ data, error }));
    socket.on("close", () => resolve({ data }));
  });
}

describe("mutual TLS with node:tls", () => {
  it("a host certificate is accepted by a controller and names the host; another CA's is refused", async () => {
    const controller = await issueCertificate(ca, { role: "controller", name: "controller" });
    const host = await issueCertificate(ca, { role: "host", name: "host-7" });
    const server = await mtlsServer(controller, ca.certPem);
    try {
      const ok = await talk(server.port, host, ca.certPem);
      expect(ok.error).toBeUndefined();
      expect(ok.data).toBe("hello\n");
      expect(server.seen.identities).toEqual([{ role: "host", name: "host-7" }]);

      const otherCa = await createCertificateAuthority({ commonName: "Other CA" });
      const impostor = await issueCertificate(otherCa, { role: "host", name: "host-7" });
      const refused = await talk(server.port, impostor, ca.certPem);
      expect(refused.data).toBe("");
      await expect.poll(() => server.seen.clientErrors.length).toBeGreaterThan(0);
      expect(server.seen.identities).toHaveLength(1);
    } finally {
      await server.close();
    }
  });

  it("a client refuses a server whose certificate lacks serverAuth (a host's)", async () => {
    const host = await issueCertificate(ca, { role: "host", name: "host-1" });
    const admin = await issueCertificate(ca, { role: "admin", name: "alice" });
    const server = await mtlsServer(host, ca.certPem);
    try {
      const r = await talk(server.port, admin, ca.certPem);
      expect(r.error?.message).toMatch(/unsuitable certificate purpose/);
      expect(server.seen.identities).toEqual([]);
    } finally {
      await server.close();
    }
  });
});

describe("mutual TLS with @grpc/grpc-js", () => {
  it("takes the PEM files as they are and carries the caller's identity", async () => {
    const controller = await issueCertificate(ca, { role: "controller", name: "controller" });
    const admin = await issueCertificate(ca, { role: "admin", name: "alice" });
    const service = {
      who: { path: "/t.T/Who", requestStream: false, responseStream: false, requestSerialize: (x: Buffer) => x, requestDeserialize: (x: Buffer) => x, responseSerialize: (x: Buffer) => x, responseDeserialize: (x: Buffer) => x },
    };
    const who: handleUnaryCall<Buffer, Buffer> = (call, cb) => {
      const identity = identityOfSubject(call.getAuthContext()?.sslPeerCertificate?.subject);
      cb(null, Buffer.from(`${identity.role}/${identity.name}`));
    };
    const server = new Server();
    server.addService(service, { who });
    const creds = ServerCredentials.createSsl(Buffer.from(ca.certPem), [{ private_key: Buffer.from(controller.keyPem), cert_chain: Buffer.from(controller.certPem) }], true);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", creds, (err, p) => (err ? reject(err) : resolve(p))));
    const Client = makeGenericClientConstructor(service, "T");
    const client = new Client(`localhost:${port}`, credentials.createSsl(Buffer.from(ca.certPem), Buffer.from(admin.keyPem), Buffer.from(admin.certPem)), {
      "grpc.ssl_target_name_override": "localhost",
    }) as unknown as { who(req: Buffer, cb: (err: ServiceError | null, res?: Buffer) => void): void; close(): void };
    try {
      const answer = await new Promise<string>((resolve, reject) => client.who(Buffer.alloc(0), (err, res) => (err ? reject(err) : resolve(String(res)))));
      expect(answer).toBe("admin/alice");
    } finally {
      client.close();
      server.forceShutdown();
    }
  });
});

describe("PKI directories", () => {
  const mode = (p: string): number => statSync(p).mode & 0o777;

  it("init writes the CA and the controller's certificate, keys 0600, certificates 0644, a new directory 0700", async () => {
    const dir = join(tempDir(), "pki");
    const written = await initPkiDirectory(dir, { sans: ["127.0.0.1", "ctl-1.lab"] });
    expect(written.map((p) => p.slice(dir.length + 1)).sort()).toEqual(["ca.crt", "ca.key", "controller.crt", "controller.key"]);
    expect(mode(dir)).toBe(0o700);
    expect(mode(join(dir, "ca.key"))).toBe(0o600);
    expect(mode(join(dir, "controller.key"))).toBe(0o600);
    expect(mode(join(dir, "ca.crt"))).toBe(0o644);
    expect(mode(join(dir, "controller.crt"))).toBe(0o644);
    expect(readdirSync(dir).sort()).toEqual(["ca.crt", "ca.key", "controller.crt", "controller.key"]); // no temporary files left
    const c = new X509Certificate(readFileSync(join(dir, "controller.crt")));
    expect(c.checkIssued(c)).toBe(false);
    expect(c.checkIssued(new X509Certificate(readFileSync(join(dir, "ca.crt"))))).toBe(true);
    expect(c.subjectAltName).toBe("IP Address:127.0.0.1, DNS:ctl-1.lab");
    expect(identityOfSubject(subjectOf(c.subject))).toEqual({ role: "controller", name: "controller" });
  });

  it("refuses to overwrite without force, naming the files and --force, and changes nothing", async () => {
    const dir = tempDir();
    await initPkiDirectory(dir);
    const before = Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), "utf8")]));
    const e = await rejection(initPkiDirectory(dir));
    expect(e.code).toBe(ErrorCode.AlreadyExists);
    expect(e.message).toContain(join(dir, "ca.crt"));
    expect(e.message).toContain("--force");
    expect(Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), "utf8")]))).toEqual(before);

    const replaced = await initPkiDirectory(dir, { force: true });
    expect(replaced).toHaveLength(4);
    expect(readFileSync(join(dir, "ca.crt"), "utf8")).not.toBe(before["ca.crt"]);
    expect(mode(join(dir, "ca.key"))).toBe(0o600);
  });

  it("writes nothing when only one of the files exists", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "controller.key"), "mine");
    const e = await rejection(initPkiDirectory(dir));
    expect(e.message).toContain(join(dir, "controller.key"));
    expect(readdirSync(dir)).toEqual(["controller.key"]);
    expect(readFileSync(join(dir, "controller.key"), "utf8")).toBe("mine");
  });

  it("issues into the directory with its CA, and refuses to overwrite without force", async () => {
    const dir = tempDir();
    await initPkiDirectory(dir);
    const written = await issueToDirectory(dir, { role: "host", name: "host-1" });
    expect(written).toEqual([join(dir, "host-1.key"), join(dir, "host-1.crt")]);
    expect(mode(join(dir, "host-1.key"))).toBe(0o600);
    expect(mode(join(dir, "host-1.crt"))).toBe(0o644);
    const dirCa = new X509Certificate(readFileSync(join(dir, PKI_FILES.caCert)));
    const host = new X509Certificate(readFileSync(join(dir, "host-1.crt")));
    expect(host.checkIssued(dirCa)).toBe(true);
    expect(host.verify(dirCa.publicKey)).toBe(true);
    expect(host.checkPrivateKey(createPrivateKey(readFileSync(join(dir, "host-1.key"))))).toBe(true);

    const before = readFileSync(join(dir, "host-1.crt"), "utf8");
    const e = await rejection(issueToDirectory(dir, { role: "host", name: "host-1" }));
    expect(e.code).toBe(ErrorCode.AlreadyExists);
    expect(e.message).toContain(join(dir, "host-1.key"));
    expect(e.message).toContain("--force");
    expect(readFileSync(join(dir, "host-1.crt"), "utf8")).toBe(before);
    await issueToDirectory(dir, { role: "host", name: "host-1", force: true });
    expect(readFileSync(join(dir, "host-1.crt"), "utf8")).not.toBe(before);

    await issueToDirectory(dir, { role: "controller", name: "ctl-2", sans: ["10.0.0.2"] });
    expect(new X509Certificate(readFileSync(join(dir, "ctl-2.crt"))).subjectAltName).toBe("IP Address:10.0.0.2");
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("says to run berth certs init first when the directory has no CA", async () => {
    const dir = tempDir();
    const e = await rejection(issueToDirectory(dir, { role: "admin", name: "alice" }));
    expect(e.code).toBe(ErrorCode.FailedPrecondition);
    expect(e.message).toContain(`run 'berth certs init --dir ${dir}' first`);
    expect(readdirSync(dir)).toEqual([]);
  });

  it("refuses the name 'ca' (the CA's own files), even with force", async () => {
    const dir = tempDir();
    await initPkiDirectory(dir);
    const key = readFileSync(join(dir, "ca.key"), "utf8");
    const e = await rejection(issueToDirectory(dir, { role: "admin", name: "ca", force: true }));
    expect(e.field).toBe("name");
    expect(readFileSync(join(dir, "ca.key"), "utf8")).toBe(key);
  });

  it("checks its input before touching the directory", async () => {
    const dir = join(tempDir(), "never");
    expect((await rejection(initPkiDirectory(dir, { sans: ["no way"] }))).field).toBe("sans[0]");
    expect((await rejection(issueToDirectory(dir, { role: "host", name: "-h" }))).field).toBe("name");
    expect(() => statSync(dir)).toThrow();
  });
});

describe("openssl agrees", () => {
  it("verifies a host certificate for sslclient and a controller's for sslserver", async (ctx) => {
    const found = spawnSync("openssl", ["version"], { encoding: "utf8" });
    if (found.error || found.status !== 0) {
      if (process.env["CI"]) throw new Error("openssl is not on PATH, and CI is set: the openssl cross-check must run in CI");
      console.log("skipped the openssl cross-check: openssl is not on PATH");
      ctx.skip("openssl is not on PATH");
    }
    const dir = tempDir();
    await initPkiDirectory(dir);
    await issueToDirectory(dir, { role: "host", name: "host-1" });
    await issueToDirectory(dir, { role: "viewer", name: "bob" });
    const verify = (purpose: string, file: string) =>
      spawnSync("openssl", ["verify", "-CAfile", join(dir, "ca.crt"), "-purpose", purpose, join(dir, file)], { encoding: "utf8" });
    for (const [purpose, file] of [["sslclient", "host-1.crt"], ["sslclient", "bob.crt"], ["sslserver", "controller.crt"], ["sslclient", "controller.crt"]] as const) {
      const r = verify(purpose, file);
      expect(`${r.status} ${r.stdout}${r.stderr}`).toBe(`0 ${join(dir, file)}: OK\n`);
    }
    expect(verify("sslserver", "host-1.crt").status).not.toBe(0);
    // The key files are what openssl calls PKCS#8 and match their certificates.
    const pub = (args: string[]) => execFileSync("openssl", args, { encoding: "utf8" });
    expect(pub(["pkey", "-in", join(dir, "host-1.key"), "-pubout"])).toBe(pub(["x509", "-in", join(dir, "host-1.crt"), "-noout", "-pubkey"]));
  });
});

/** @peculiar/x509 to read extensions' criticality (Node's X509Certificate does not say). */
async function peculiar() {
  await import("reflect-metadata");
  return import("@peculiar/x509");
}
