/**
 * The transport a daemon or the CLI runs with (resolveTransport), the TLS identity read from files
 * and re-read when they change (ReloadingTlsIdentity), and who a server call's peer is (peerOf).
 */
import { randomBytes, X509Certificate } from "node:crypto";
import { chmodSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { BerthError, ErrorCode, messageForFlags } from "./errors.js";
import { createCertificateAuthority, issueCertificate, type CertificateAndKey } from "./pki.js";
import { issueByHand } from "./pki.testkit.js";
import { peerOf, ReloadingTlsIdentity, resolveTransport, TLS_ENV, TLS_FLAGS, type TlsFiles } from "./tls.js";

const DAY_MS = 86_400_000;

/** The BerthError `fn` throws. */
function thrown(fn: () => unknown): BerthError {
  try {
    fn();
  } catch (e) {
    if (e instanceof BerthError) return e;
    throw new Error(`expected a BerthError, got ${String(e)}`);
  }
  throw new Error("expected a throw");
}


const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

let ca: CertificateAndKey;
let otherCa: CertificateAndKey;
beforeAll(async () => {
  ca = await createCertificateAuthority({ commonName: "tls test CA" });
  otherCa = await createCertificateAuthority({ commonName: "another CA" });
});

/** A directory with ca.crt, and cert.pem/key.pem of `leaf`. */
function filesWith(leaf: CertificateAndKey, caPem = ca.certPem): TlsFiles {
  const dir = mkdtempSync(join(tmpdir(), "berth-tls-"));
  dirs.push(dir);
  const files = { ca: join(dir, "ca.crt"), cert: join(dir, "cert.pem"), key: join(dir, "key.pem") };
  writeFileSync(files.ca, caPem);
  writeFileSync(files.cert, leaf.certPem);
  writeFileSync(files.key, leaf.keyPem, { mode: 0o600 });
  return files;
}

/** Replaces `path` atomically (a temporary file renamed over it), as `berth certs --force` does. */
function replace(path: string, content: string): void {
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  writeFileSync(tmp, content);
  renameSync(tmp, path);
}

const serialOf = (pem: string): string => new X509Certificate(pem).serialNumber;

describe("resolveTransport", () => {
  const files = { tlsCa: "/p/ca.crt", tlsCert: "/p/c.crt", tlsKey: "/p/c.key" };

  it("all three files from flags, or from BERTH_TLS_* when a flag is absent; a flag wins over its variable", () => {
    expect(resolveTransport(files, {})).toEqual({ tls: { ca: "/p/ca.crt", cert: "/p/c.crt", key: "/p/c.key" } });
    const env = { [TLS_ENV.ca]: "/e/ca.crt", [TLS_ENV.cert]: "/e/c.crt", [TLS_ENV.key]: "/e/c.key" };
    expect(resolveTransport({}, env)).toEqual({ tls: { ca: "/e/ca.crt", cert: "/e/c.crt", key: "/e/c.key" } });
    expect(resolveTransport({ tlsCert: "/f/c.crt" }, env)).toEqual({ tls: { ca: "/e/ca.crt", cert: "/f/c.crt", key: "/e/c.key" } });
    expect(TLS_ENV).toEqual({ ca: "BERTH_TLS_CA", cert: "BERTH_TLS_CERT", key: "BERTH_TLS_KEY" });
  });

  it("--insecure alone is plaintext; nothing at all is refused, naming the three flags and --insecure", () => {
    expect(resolveTransport({ insecure: true }, {})).toEqual({ insecure: true });
    const e = thrown(() => resolveTransport({}, {}));
    expect(e.code).toBe(ErrorCode.InvalidArgument);
    expect(e.field).toBe("tls");
    const m = messageForFlags(e, TLS_FLAGS);
    expect(m).toMatch(/^--tls-ca\/--tls-cert\/--tls-key: TLS is required: give --tls-ca FILE --tls-cert FILE --tls-key FILE \(or BERTH_TLS_CA, BERTH_TLS_CERT, BERTH_TLS_KEY\)/);
    expect(m).toContain("--insecure");
    // Blank values count as absent.
    expect(thrown(() => resolveTransport({ tlsCa: " ", tlsCert: "", tlsKey: "" }, { [TLS_ENV.ca]: "" })).field).toBe("tls");
  });

  it("some of the files but not all: refused naming the first one missing, as a flag", () => {
    const cases: [Parameters<typeof resolveTransport>[0], Record<string, string>, string][] = [
      [{ tlsCert: "/c", tlsKey: "/k" }, {}, "--tls-ca"],
      [{ tlsCa: "/a", tlsKey: "/k" }, {}, "--tls-cert"],
      [{ tlsCa: "/a", tlsCert: "/c" }, {}, "--tls-key"],
      [{ tlsCa: "/a" }, { [TLS_ENV.cert]: "/c" }, "--tls-key"],
      [{}, { [TLS_ENV.key]: "/k" }, "--tls-ca"],
    ];
    for (const [flags, env, flag] of cases) {
      const e = thrown(() => resolveTransport(flags, env));
      expect(e.code).toBe(ErrorCode.InvalidArgument);
      expect(messageForFlags(e, TLS_FLAGS)).toBe(`${flag}: is required with the other TLS files (BERTH_TLS_CA, BERTH_TLS_CERT, BERTH_TLS_KEY in the environment count too)`);
    }
  });

  it("--insecure together with any TLS flag is refused, naming --insecure and the TLS flags", () => {
    for (const flags of [files, { tlsCa: "/a" }, { tlsCert: "/c" }, { tlsKey: "/k" }]) {
      const e = thrown(() => resolveTransport({ ...flags, insecure: true }, {}));
      expect(e.code).toBe(ErrorCode.InvalidArgument);
      expect(messageForFlags(e, TLS_FLAGS)).toBe("--insecure: plaintext was asked for, but so was TLS (--tls-ca/--tls-cert/--tls-key): give one or the other");
    }
    // The explicit flag wins over ambient BERTH_TLS_* (an env file shared by a dev run).
    expect(resolveTransport({ insecure: true }, { [TLS_ENV.ca]: "/e/ca", [TLS_ENV.cert]: "/e/c", [TLS_ENV.key]: "/e/k" })).toEqual({ insecure: true });
  });
});

describe("ReloadingTlsIdentity: loading", () => {
  it("reads a good set and names its identity, subject, serial and expiry", async () => {
    const leaf = await issueCertificate(ca, { role: "host", name: "host-7" });
    const id = new ReloadingTlsIdentity(filesWith(leaf));
    try {
      expect(id.identity).toEqual({ role: "host", name: "host-7" });
      expect(id.certificate).toEqual({ subject: "CN=host-7, O=berth:host", serial: serialOf(leaf.certPem), notAfter: new X509Certificate(leaf.certPem).validTo });
    } finally {
      id.close();
    }
  });

  it("a CA file may be a bundle (the old and the new CA while the CA is rotated): a certificate of either loads, of neither not", async () => {
    const bundle = `${ca.certPem.trim()}\n${otherCa.certPem.trim()}\n`;
    for (const issuer of [ca, otherCa]) {
      const id = new ReloadingTlsIdentity(filesWith(await issueCertificate(issuer, { role: "admin", name: "ann" }), bundle));
      expect(id.identity).toEqual({ role: "admin", name: "ann" });
      id.close();
    }
    const third = await createCertificateAuthority({ commonName: "a third CA" });
    const e = thrown(() => new ReloadingTlsIdentity(filesWith(third, bundle)));
    expect(e.field).toBe("tls_cert");
    expect(e.message).toMatch(/was not signed by the CA in/);
  });

  it("a certificate of the CA naming no Berth role loads (a server need not be one) with no identity", async () => {
    const now = Date.now();
    const leaf = await issueByHand(ca, { subject: { CN: "web", O: ["acme:ops"] }, notBefore: new Date(now - DAY_MS), notAfter: new Date(now + DAY_MS) });
    const id = new ReloadingTlsIdentity(filesWith(leaf));
    expect(id.identity).toBeUndefined();
    expect(id.certificate.subject).toBe("CN=web, O=acme:ops");
    id.close();
  });

  it("refuses bad files with INVALID_ARGUMENT naming the file's flag and path, never quoting the key", async () => {
    const good = await issueCertificate(ca, { role: "admin", name: "ada" });
    const other = await issueCertificate(ca, { role: "admin", name: "bob" });
    const foreign = await issueCertificate(otherCa, { role: "admin", name: "ada" });
    const now = Date.now();
    const expired = await issueByHand(ca, { subject: { CN: "old", O: ["berth:admin"] }, notBefore: new Date(now - 30 * DAY_MS), notAfter: new Date(now - DAY_MS) });
    const early = await issueByHand(ca, { subject: { CN: "new", O: ["berth:admin"] }, notBefore: new Date(now + DAY_MS), notAfter: new Date(now + 30 * DAY_MS) });

    const cases: [string, () => TlsFiles, string, RegExp][] = [
      ["missing CA", () => ({ ...filesWith(good), ca: "/nonexistent/ca.crt" }), "--tls-ca", /^--tls-ca: cannot read \/nonexistent\/ca\.crt: ENOENT$/],
      ["missing cert", () => ({ ...filesWith(good), cert: "/nonexistent/c.crt" }), "--tls-cert", /^--tls-cert: cannot read \/nonexistent\/c\.crt: ENOENT$/],
      ["missing key", () => ({ ...filesWith(good), key: "/nonexistent/c.key" }), "--tls-key", /^--tls-key: cannot read \/nonexistent\/c\.key: ENOENT$/],
      ["a directory as the key", () => { const f = filesWith(good); return { ...f, key: join(f.key, "..") }; }, "--tls-key", /^--tls-key: cannot read .*: EISDIR$/],
      ["CA not PEM", () => filesWith(good, "not a certificate\n"), "--tls-ca", /^--tls-ca: .*ca\.crt is not a PEM certificate \(or bundle of them\)$/],
      ["cert not PEM", () => filesWith({ certPem: "garbage\n", keyPem: good.keyPem }), "--tls-cert", /^--tls-cert: .*cert\.pem is not a PEM certificate$/],
      ["key not PEM", () => filesWith({ certPem: good.certPem, keyPem: "SECRET-LOOKING-GARBAGE\n" }), "--tls-key", /^--tls-key: .*key\.pem is not a PEM private key$/],
      ["key of another certificate", () => filesWith({ certPem: good.certPem, keyPem: other.keyPem }), "--tls-key", /^--tls-key: .*key\.pem is not the key of .*cert\.pem$/],
      ["certificate of another CA", () => filesWith(foreign), "--tls-cert", /^--tls-cert: .*cert\.pem \(CN=ada, O=berth:admin\) was not signed by the CA in .*ca\.crt$/],
      ["expired", () => filesWith(expired), "--tls-cert", /^--tls-cert: .*cert\.pem expired on .*: issue a new one with 'berth certs issue'$/],
      ["not yet valid", () => filesWith(early), "--tls-cert", /^--tls-cert: .*cert\.pem is not valid before .* \(check this machine's clock\)$/],
    ];
    // An unreadable file (mode 000) is refused too, unless this runs as root (which reads anything).
    if (process.getuid?.() !== 0) {
      cases.push(["unreadable key", () => { const f = filesWith(good); chmodSync(f.key, 0o000); return f; }, "--tls-key", /^--tls-key: cannot read .*key\.pem: EACCES$/]);
    }
    for (const [what, files, flag, message] of cases) {
      const e = thrown(() => new ReloadingTlsIdentity(files()));
      expect(e.code, what).toBe(ErrorCode.InvalidArgument);
      expect(messageForFlags(e, TLS_FLAGS), what).toMatch(message);
      expect(messageForFlags(e, TLS_FLAGS).startsWith(`${flag}: `), what).toBe(true);
      expect(e.message, what).not.toContain("SECRET-LOOKING-GARBAGE");
      expect(e.message, what).not.toContain("PRIVATE KEY");
    }
  });
});

describe("ReloadingTlsIdentity: reloading", () => {
  it("poll() takes a new certificate and key of the same CA, tells the listeners and the owner, and nothing when nothing changed", async () => {
    const first = await issueCertificate(ca, { role: "controller", name: "controller" });
    const second = await issueCertificate(ca, { role: "controller", name: "controller-b" });
    const files = filesWith(first);
    const reloaded = vi.fn();
    const rejected = vi.fn();
    const id = new ReloadingTlsIdentity(files, { reloaded, rejected }, 3_600_000);
    try {
      const identities: string[] = [];
      const cas: number[] = [];
      id.addIdentityCertificateListener((u) => identities.push(serialOf(u!.certificate.toString())));
      id.addCaCertificateListener((u) => cas.push(u!.caCertificate.length));
      // The first update comes on a later tick (grpc-js registers its watcher after the listener).
      expect(identities).toEqual([]);
      await Promise.resolve();
      expect(identities).toEqual([serialOf(first.certPem)]);
      expect(cas).toHaveLength(1);

      expect(id.poll()).toBe(false); // nothing changed
      // The same bytes rewritten (a new inode, a new mtime): looked at, but not a new identity.
      replace(files.cert, first.certPem);
      expect(id.poll()).toBe(false);
      expect(reloaded).not.toHaveBeenCalled();

      replace(files.cert, second.certPem);
      replace(files.key, second.keyPem);
      expect(id.poll()).toBe(true);
      expect(id.certificate.serial).toBe(serialOf(second.certPem));
      expect(id.identity).toEqual({ role: "controller", name: "controller-b" });
      expect(identities).toEqual([serialOf(first.certPem), serialOf(second.certPem)]);
      expect(cas).toHaveLength(2);
      expect(reloaded).toHaveBeenCalledWith({ subject: "CN=controller-b, O=berth:controller", serial: serialOf(second.certPem), notAfter: new X509Certificate(second.certPem).validTo });
      expect(rejected).not.toHaveBeenCalled();
      expect(id.poll()).toBe(false);
    } finally {
      id.close();
    }
  });

  it("changed files that do not check out are rejected, the previous set stays, and they are taken once fixed", async () => {
    const first = await issueCertificate(ca, { role: "host", name: "host-1" });
    const second = await issueCertificate(ca, { role: "host", name: "host-1" });
    const foreign = await issueCertificate(otherCa, { role: "host", name: "host-1" });
    const files = filesWith(first);
    const reloaded = vi.fn();
    const rejected = vi.fn();
    const id = new ReloadingTlsIdentity(files, { reloaded, rejected }, 3_600_000);
    const updates: string[] = [];
    id.addIdentityCertificateListener((u) => updates.push(serialOf(u!.certificate.toString())));
    await Promise.resolve();
    try {
      // A garbage key.
      replace(files.key, "garbage\n");
      expect(id.poll()).toBe(false);
      expect(rejected).toHaveBeenLastCalledWith(expect.stringMatching(/^tls_key: .*key\.pem is not a PEM private key$/));
      // Told once per reason, not at every poll while the files stay bad.
      const told = rejected.mock.calls.length;
      replace(files.key, "garbage again\n");
      expect(id.poll()).toBe(false);
      expect(rejected.mock.calls.length).toBe(told);
      expect(id.certificate.serial).toBe(serialOf(first.certPem));
      // Half-way through a replacement: the new certificate with the old key.
      replace(files.key, first.keyPem);
      replace(files.cert, second.certPem);
      expect(id.poll()).toBe(false);
      expect(rejected).toHaveBeenLastCalledWith(expect.stringMatching(/^tls_key: .*key\.pem is not the key of .*cert\.pem$/));
      // A certificate (with its key) of another CA.
      replace(files.cert, foreign.certPem);
      replace(files.key, foreign.keyPem);
      expect(id.poll()).toBe(false);
      expect(rejected).toHaveBeenLastCalledWith(expect.stringMatching(/^tls_cert: .*was not signed by the CA in/));
      // A file gone (mid-rename by some tool).
      rmSync(files.cert);
      expect(id.poll()).toBe(false);
      expect(rejected).toHaveBeenLastCalledWith(expect.stringMatching(/^tls_cert: cannot read .*: ENOENT$/));
      // Retried at the next poll while the files stay bad, but the same failure is not told again.
      expect(id.poll()).toBe(false);
      expect(rejected).toHaveBeenCalledTimes(4);
      expect(id.certificate.serial).toBe(serialOf(first.certPem));
      expect(updates).toEqual([serialOf(first.certPem)]);
      expect(reloaded).not.toHaveBeenCalled();

      // Fixed: taken.
      replace(files.cert, second.certPem);
      replace(files.key, second.keyPem);
      expect(id.poll()).toBe(true);
      expect(id.certificate.serial).toBe(serialOf(second.certPem));
      expect(updates).toEqual([serialOf(first.certPem), serialOf(second.certPem)]);
      expect(reloaded).toHaveBeenCalledTimes(1);
    } finally {
      id.close();
    }
  });

  it("polls on its own at the interval given", async () => {
    const first = await issueCertificate(ca, { role: "host", name: "host-1" });
    const second = await issueCertificate(ca, { role: "host", name: "host-1" });
    const files = filesWith(first);
    const reloaded = vi.fn();
    const id = new ReloadingTlsIdentity(files, { reloaded }, 20);
    try {
      replace(files.key, second.keyPem);
      replace(files.cert, second.certPem);
      await vi.waitFor(() => expect(reloaded).toHaveBeenCalledTimes(1), { timeout: 2_000, interval: 10 });
      expect(id.certificate.serial).toBe(serialOf(second.certPem));
    } finally {
      id.close();
    }
  });

  it("a listener removed gets no update", async () => {
    const first = await issueCertificate(ca, { role: "host", name: "host-1" });
    const second = await issueCertificate(ca, { role: "host", name: "host-1" });
    const files = filesWith(first);
    const id = new ReloadingTlsIdentity(files, {}, 3_600_000);
    const l = vi.fn();
    id.addIdentityCertificateListener(l);
    id.removeIdentityCertificateListener(l);
    await Promise.resolve();
    replace(files.cert, second.certPem);
    replace(files.key, second.keyPem);
    expect(id.poll()).toBe(true);
    expect(l).not.toHaveBeenCalled();
    id.close();
  });
});

describe("peerOf", () => {
  it("plaintext has no identity; a TLS peer is the role and name of its certificate's subject", () => {
    expect(peerOf(undefined)).toEqual({ secure: false });
    expect(peerOf({ transportSecurityType: "insecure" } as never)).toEqual({ secure: false });
    const ssl = (subject: unknown) => ({ transportSecurityType: "ssl", sslPeerCertificate: subject === undefined ? undefined : { subject } }) as never;
    expect(peerOf(ssl({ CN: "host-3", O: "berth:host" }))).toEqual({ secure: true, identity: { role: "host", name: "host-3" } });
    expect(peerOf(ssl({ CN: "vera", O: ["berth:viewer", "acme"] }))).toEqual({ secure: true, identity: { role: "viewer", name: "vera" } });
  });

  it("a TLS peer with no certificate, no role, two roles or no single CN is UNAUTHENTICATED", () => {
    const ssl = (subject: unknown) => ({ transportSecurityType: "ssl", sslPeerCertificate: subject === undefined ? undefined : { subject } }) as never;
    const cases: [unknown, RegExp][] = [
      [undefined, /^no client certificate: present one signed by the cluster's CA/],
      [{ CN: "x", O: "acme:ops" }, /names no Berth role \(subject O acme:ops; expected one of berth:controller, berth:host, berth:admin, berth:viewer\)/],
      [{ CN: "x" }, /names no Berth role/],
      [{ CN: "x", O: ["berth:admin", "berth:viewer"] }, /names more than one Berth role/],
      [{ O: "berth:admin" }, /no single subject CN/],
      [{ CN: ["a", "b"], O: "berth:admin" }, /no single subject CN/],
    ];
    for (const [subject, message] of cases) {
      const e = thrown(() => peerOf(ssl(subject)));
      expect(e.code, JSON.stringify(subject)).toBe(ErrorCode.Unauthenticated);
      expect(e.message).toMatch(message);
    }
  });
});
