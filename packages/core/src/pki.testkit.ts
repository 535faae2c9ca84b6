/**
 * Test helpers (not exported from the package): a certificate authority made on the fly, so tests
 * run with mutual TLS as the product does. Certificates are issued on demand and kept as files,
 * because the product reads its TLS identity from files.
 */
import { createPrivateKey, generateKeyPairSync, randomBytes, webcrypto } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PeerRole } from "./identity.js";
import { createCertificateAuthority, issueCertificate, type CertificateAndKey } from "./pki.js";
import type { TlsFiles } from "./tls.js";

/**
 * The run-wide test PKI directory, made once by the test run's global setup (test/support): its
 * `ca.crt`/`ca.key` and pre-issued `NAME.crt`/`NAME.key`, for processes that need files at once.
 */
export const TEST_PKI_DIR_ENV = "BERTH_TEST_PKI_DIR";

/** One CA and the certificates issued from it, as PEM and as files in `dir`. */
export class TestPki {
  readonly #issued = new Map<string, Promise<TlsFiles>>();

  private constructor(
    /** Where the files are. */
    readonly dir: string,
    readonly ca: CertificateAndKey,
  ) {}

  /** A new CA in a new temporary directory (removed when the process exits). */
  static async create(): Promise<TestPki> {
    const dir = mkdtempSync(join(tmpdir(), "berth-test-pki-"));
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
    const ca = await createCertificateAuthority({ commonName: "Berth test CA" });
    writeFileSync(join(dir, "ca.crt"), ca.certPem);
    writeFileSync(join(dir, "ca.key"), ca.keyPem, { mode: 0o600 });
    return new TestPki(dir, ca);
  }

  /** The CA already in `dir` (as {@link create} or the global setup left it); new certificates go to a subdirectory of this process. */
  static open(dir: string): TestPki {
    const ca = { certPem: readFileSync(join(dir, "ca.crt"), "utf8"), keyPem: readFileSync(join(dir, "ca.key"), "utf8") };
    return new TestPki(dir, ca);
  }

  /** The run-wide PKI when the global setup made one, else one of this process. */
  static shared(): Promise<TestPki> {
    sharedPki ??= (async () => {
      const dir = process.env[TEST_PKI_DIR_ENV];
      return dir && existsSync(join(dir, "ca.key")) ? TestPki.open(dir) : await TestPki.create();
    })();
    return sharedPki;
  }

  /** The path of the CA certificate. */
  get caFile(): string {
    return join(this.dir, "ca.crt");
  }

  /**
   * The files of a certificate for `role`/`name` (the controller's with SANs for loopback), issued
   * on first use: pre-issued ones in the directory are used as they are.
   */
  files(role: PeerRole, name: string): Promise<TlsFiles> {
    const key = `${role}/${name}`;
    let files = this.#issued.get(key);
    if (!files) {
      files = this.#issue(role, name);
      this.#issued.set(key, files);
    }
    return files;
  }

  /** The PEM of a certificate (see {@link files}), for a credentials object made in process. */
  async pem(role: PeerRole, name: string): Promise<{ ca: Buffer; cert: Buffer; key: Buffer }> {
    const f = await this.files(role, name);
    return { ca: readFileSync(f.ca), cert: readFileSync(f.cert), key: readFileSync(f.key) };
  }

  async #issue(role: PeerRole, name: string): Promise<TlsFiles> {
    const preissued = { ca: this.caFile, cert: join(this.dir, `${role}-${name}.crt`), key: join(this.dir, `${role}-${name}.key`) };
    if (existsSync(preissued.cert) && existsSync(preissued.key)) return preissued;
    const own = join(this.dir, `pid-${process.pid}`);
    mkdirSync(own, { recursive: true });
    const leaf = await issueCertificate(this.ca, { role, name, ...(role === "controller" ? { sans: ["localhost", "127.0.0.1", "::1"] } : {}) });
    const files = { ca: this.caFile, cert: join(own, `${role}-${name}.crt`), key: join(own, `${role}-${name}.key`) };
    writeFileSync(files.cert, leaf.certPem);
    writeFileSync(files.key, leaf.keyPem, { mode: 0o600 });
    return files;
  }

  /** Issues every `role`/`name` now, into the directory itself (the global setup's pre-issue). */
  async preissue(certs: readonly { role: PeerRole; name: string }[]): Promise<void> {
    for (const { role, name } of certs) {
      const leaf = await issueCertificate(this.ca, { role, name, ...(role === "controller" ? { sans: ["localhost", "127.0.0.1", "::1"] } : {}) });
      writeFileSync(join(this.dir, `${role}-${name}.crt`), leaf.certPem);
      writeFileSync(join(this.dir, `${role}-${name}.key`), leaf.keyPem, { mode: 0o600 });
    }
  }
}

let sharedPki: Promise<TestPki> | undefined;

/**
 * A client certificate signed by `ca` with whatever subject and validity a test says, made by hand
 * with @peculiar/x509 for what issueCertificate refuses to make: one already expired, one not yet
 * valid, one whose subject names no Berth role (or two). Validity defaults: from 5 minutes ago
 * for a day.
 */
export async function issueByHand(
  ca: CertificateAndKey,
  o: { subject: { CN?: string; O?: string[] }; notBefore?: Date; notAfter?: Date },
): Promise<CertificateAndKey> {
  await import("reflect-metadata");
  const lib = await import("@peculiar/x509");
  lib.cryptoProvider.set(webcrypto);
  const caCert = new lib.X509Certificate(ca.certPem);
  const signingKey = await webcrypto.subtle.importKey("pkcs8", createPrivateKey(ca.keyPem).export({ type: "pkcs8", format: "der" }), { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
  const keys = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x3f) | 0x40;
  const now = Date.now();
  const cert = await lib.X509CertificateGenerator.create({
    serialNumber: serial.toString("hex"),
    subject: [...(o.subject.CN ? [{ CN: [o.subject.CN] }] : []), ...(o.subject.O ?? []).map((v) => ({ O: [v] }))],
    issuer: caCert.subjectName,
    notBefore: o.notBefore ?? new Date(now - 300_000),
    notAfter: o.notAfter ?? new Date(now + 86_400_000),
    publicKey: keys.publicKey.export({ type: "spki", format: "der" }),
    signingKey,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" } as webcrypto.EcdsaParams,
    extensions: [new lib.BasicConstraintsExtension(false, undefined, true), new lib.ExtendedKeyUsageExtension(["1.3.6.1.5.5.7.3.2"])],
  });
  return { certPem: `${cert.toString("pem").trim()}\n`, keyPem: keys.privateKey.export({ type: "pkcs8", format: "pem" }) as string };
}
