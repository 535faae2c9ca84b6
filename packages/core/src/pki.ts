import { createHash, createPrivateKey, generateKeyPairSync, KeyObject, randomBytes, webcrypto, X509Certificate as NodeX509Certificate } from "node:crypto";
import { link, lstat, mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import type * as X509 from "@peculiar/x509";
import { BerthError, ErrorCode, invalidArgument, quote } from "./errors.js";
import { ROLE_ORGANIZATION, type PeerRole } from "./identity.js";
import { validateHostId } from "./validation.js";

/**
 * Berth's certificates: one CA, and a leaf per controller, host and operator whose subject names
 * its role and name the way `identity.ts` reads them back (`CN=name, O=berth:ROLE`). ECDSA P-256
 * keys from Node's crypto; certificates built by @peculiar/x509 and signed through Node's
 * WebCrypto; no OpenSSL at run time.
 *
 * To add a role: add it to {@link PeerRole} and {@link ROLE_ORGANIZATION} in identity.ts, then give
 * it its extended key usages in {@link EXTENDED_KEY_USAGES} here (and a verb in `berth certs`).
 */

/** A certificate and its private key, both PEM: the certificate X.509, the key PKCS#8 (`BEGIN PRIVATE KEY`). */
export interface CertificateAndKey {
  certPem: string;
  keyPem: string;
}

/** What {@link createCertificateAuthority} makes. */
export interface CertificateAuthorityOptions {
  /** The CA's subject CN. Default {@link DEFAULT_CA_COMMON_NAME}. 1..64 characters, no control characters. */
  commonName?: string;
  /** Days the CA is valid from now. Default {@link DEFAULT_CA_DAYS}; 1..{@link MAX_CERTIFICATE_DAYS}. */
  days?: number;
}

/** What {@link issueCertificate} makes. */
export interface IssueCertificateOptions {
  /** The role the certificate grants: its subject O is `ROLE_ORGANIZATION[role]`. */
  role: PeerRole;
  /**
   * The subject CN: the host id for a host (which must then be a valid host id, a lower-case DNS
   * label), the operator's or controller's name otherwise. 1..64 of `[A-Za-z0-9._-]`, not starting with '-'.
   */
  name: string;
  /**
   * A controller's subject alternative names: IP addresses become IP SANs, anything else must be
   * a DNS name. Default {@link DEFAULT_CONTROLLER_SANS}. Only a controller takes them: it is the
   * one server whose address clients check.
   */
  sans?: readonly string[];
  /** Days the certificate is valid from now. Default {@link DEFAULT_LEAF_DAYS}; it may not outlive its CA. */
  days?: number;
}

/** Options of {@link initPkiDirectory}. */
export interface InitPkiDirectoryOptions {
  /** The first controller's SANs (see {@link IssueCertificateOptions.sans}). */
  sans?: readonly string[];
  /** Days the controller's certificate is valid (default {@link DEFAULT_LEAF_DAYS}); the CA's is {@link DEFAULT_CA_DAYS}, or a day more than this when that is longer. */
  days?: number;
  /** Replace files that exist. Without it nothing is written when any of them exists. */
  force?: boolean;
}

/** Options of {@link issueToDirectory}. */
export interface IssueToDirectoryOptions extends IssueCertificateOptions {
  /** Replace `NAME.crt` / `NAME.key` when they exist. Without it nothing is written when either exists. */
  force?: boolean;
}

/** The CA's subject CN unless told otherwise. */
export const DEFAULT_CA_COMMON_NAME = "Berth CA";
/** The CA's validity unless told otherwise: 10 years. */
export const DEFAULT_CA_DAYS = 3650;
/** A leaf certificate's validity unless told otherwise. */
export const DEFAULT_LEAF_DAYS = 365;
/** The longest validity accepted, in days (100 years). */
export const MAX_CERTIFICATE_DAYS = 36_500;
/** A controller's SANs unless told otherwise: it answers on this machine. */
export const DEFAULT_CONTROLLER_SANS: readonly string[] = ["localhost", "127.0.0.1", "::1"];
/** At most this many SANs on one certificate. */
export const MAX_SANS = 64;
/** How far notBefore is put in the past, so that a peer whose clock is a little behind accepts a new certificate. */
export const CLOCK_SKEW_MS = 5 * 60_000;

/** The files of a PKI directory: the CA's, and the controller's that `initPkiDirectory` issues. */
export const PKI_FILES = {
  caCert: "ca.crt",
  caKey: "ca.key",
  controllerCert: "controller.crt",
  controllerKey: "controller.key",
} as const;
/** The name (CN and file name) of the controller certificate `initPkiDirectory` issues. */
export const INIT_CONTROLLER_NAME = "controller";

const DAY_MS = 86_400_000;
const CERT_MODE = 0o644;
const KEY_MODE = 0o600;
const DIR_MODE = 0o700;

const OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

/** Each role's extended key usages: a controller serves and calls, everyone else only calls. */
export const EXTENDED_KEY_USAGES: Readonly<Record<PeerRole, readonly ("serverAuth" | "clientAuth")[]>> = {
  controller: ["serverAuth", "clientAuth"],
  host: ["clientAuth"],
  admin: ["clientAuth"],
  viewer: ["clientAuth"],
};
const OID_OF_USAGE = { serverAuth: OID_SERVER_AUTH, clientAuth: OID_CLIENT_AUTH } as const;

const NAME_RE = /^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$/;
const DNS_LABEL_RE = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

// @peculiar/x509 (and the Reflect polyfill its dependency injection needs) is loaded on first use:
// importing it costs about 200 ms, which every process importing @berth/core would otherwise pay.
let x509Loaded: Promise<typeof X509> | undefined;
function x509(): Promise<typeof X509> {
  x509Loaded ??= (async () => {
    await import("reflect-metadata");
    const lib = await import("@peculiar/x509");
    lib.cryptoProvider.set(webcrypto);
    return lib;
  })();
  return x509Loaded;
}

/** Throws INVALID_ARGUMENT on `field` unless `name` is 1..64 of `[A-Za-z0-9._-]`, not starting with '-'. */
export function validateCertificateName(name: string, field = "name"): void {
  if (name.length === 0) throw invalidArgument(field, "is required");
  if (!NAME_RE.test(name)) {
    throw invalidArgument(field, `'${quote(name)}' must be 1-64 letters, digits, '.', '_' or '-', not starting with '-'`);
  }
}

/**
 * Whether `s` is a DNS name a SAN may carry: labels of letters, digits and '-' (not at either end),
 * at most 253 characters, the last label not all digits (`10.0.0.256` is a mistyped address, not a name).
 */
export function isDnsName(s: string): boolean {
  const labels = s.split(".");
  return s.length > 0 && s.length <= 253 && labels.every((label) => DNS_LABEL_RE.test(label)) && !/^\d+$/.test(labels[labels.length - 1]!);
}

/** A validated SAN: an IP address or a DNS name. Throws INVALID_ARGUMENT on `field`. */
function sanOf(value: string, field: string): X509.JsonGeneralName {
  if (isIP(value) !== 0 && !value.includes("%")) return { type: "ip", value };
  if (isDnsName(value)) return { type: "dns", value };
  throw invalidArgument(field, `'${quote(value)}' is neither an IP address nor a DNS name (letters, digits, '-' and '.')`);
}

function validateDays(days: number | undefined, fallback: number): number {
  const d = days ?? fallback;
  if (!Number.isSafeInteger(d) || d < 1 || d > MAX_CERTIFICATE_DAYS) {
    throw invalidArgument("days", `must be a whole number of days from 1 to ${MAX_CERTIFICATE_DAYS} (got ${quote(d)})`);
  }
  return d;
}

/** 16 random bytes, the first in 0x40..0x7f: a positive DER integer of exactly 16 bytes, 126 of its bits random. */
function serialNumberHex(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x3f) | 0x40;
  return bytes.toString("hex");
}

type CryptoKey = webcrypto.CryptoKey;

function newKeyPair(): Promise<webcrypto.CryptoKeyPair> {
  return webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
}

function pkcs8Pem(key: CryptoKey | KeyObject): string {
  return (key instanceof KeyObject ? key : KeyObject.from(key)).export({ type: "pkcs8", format: "pem" }) as string;
}

const certPemOf = (cert: X509.X509Certificate): string => `${cert.toString("pem").trim()}\n`;

/**
 * A new certificate authority: an ECDSA P-256 key and a self-signed certificate, subject
 * `CN=commonName`, basicConstraints CA:true (critical, path length 0: it signs leaves only),
 * keyUsage keyCertSign + cRLSign (critical) and a subject key identifier; valid from 5 minutes ago
 * (clock skew) for `days` (default 10 years). The key is PKCS#8 PEM. Throws INVALID_ARGUMENT
 * naming `commonName` or `days` on bad input.
 */
export async function createCertificateAuthority(options: CertificateAuthorityOptions = {}): Promise<CertificateAndKey> {
  const commonName = options.commonName ?? DEFAULT_CA_COMMON_NAME;
  if (commonName.length < 1 || commonName.length > 64 || /[\u0000-\u001f\u007f]/.test(commonName)) {
    throw invalidArgument("commonName", `'${quote(commonName)}' must be 1-64 characters, no control characters`);
  }
  const days = validateDays(options.days, DEFAULT_CA_DAYS);
  const lib = await x509();
  const keys = await newKeyPair();
  const now = Date.now();
  const cert = await lib.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumberHex(),
    name: [{ CN: [commonName] }],
    notBefore: new Date(now - CLOCK_SKEW_MS),
    notAfter: new Date(now + days * DAY_MS),
    keys,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" } as webcrypto.EcdsaParams,
    extensions: [
      new lib.BasicConstraintsExtension(true, 0, true),
      new lib.KeyUsagesExtension(lib.KeyUsageFlags.keyCertSign | lib.KeyUsageFlags.cRLSign, true),
      new lib.SubjectKeyIdentifierExtension(keyIdOf(KeyObject.from(keys.publicKey))),
    ],
  });
  return { certPem: certPemOf(cert), keyPem: pkcs8Pem(keys.privateKey) };
}

/** The curves a CA key may be on, and the hash each signs with. */
const CA_CURVES: Readonly<Record<string, { namedCurve: string; hash: string }>> = {
  prime256v1: { namedCurve: "P-256", hash: "SHA-256" },
  secp384r1: { namedCurve: "P-384", hash: "SHA-384" },
  secp521r1: { namedCurve: "P-521", hash: "SHA-512" },
};

/** A CA loaded for signing. */
interface LoadedCa {
  cert: X509.X509Certificate;
  notAfterMs: number;
  signingKey: CryptoKey;
  hash: string;
  /** Its subject key identifier (hex), which a leaf's authority key identifier repeats. */
  keyId: string;
}

/**
 * The CA last loaded, kept so that issuing many certificates with one CA (a test making a host per
 * case) parses and imports it once. Keyed by both PEM texts; its expiry is checked on every use.
 */
let lastCa: { certPem: string; keyPem: string; loaded: LoadedCa } | undefined;

/** Parses and checks a CA: a CA certificate, an ECDSA key that matches it. Throws FAILED_PRECONDITION naming `where`. */
async function loadCa(ca: CertificateAndKey, where: { cert: string; key: string }): Promise<LoadedCa> {
  const refuse = (message: string, cause?: unknown): BerthError =>
    new BerthError(ErrorCode.FailedPrecondition, message, cause === undefined ? {} : { cause });
  const expiredCheck = (loaded: LoadedCa): LoadedCa => {
    if (loaded.notAfterMs <= Date.now()) throw refuse(`${where.cert} expired on ${new Date(loaded.notAfterMs).toISOString()}: make a new CA`);
    return loaded;
  };
  if (lastCa && lastCa.certPem === ca.certPem && lastCa.keyPem === ca.keyPem) return expiredCheck(lastCa.loaded);
  let nodeCert: NodeX509Certificate;
  try {
    nodeCert = new NodeX509Certificate(ca.certPem);
  } catch (e) {
    throw refuse(`${where.cert} is not a PEM certificate`, e);
  }
  if (!nodeCert.ca) throw refuse(`${where.cert} is not a CA certificate (its basicConstraints do not say CA:true)`);
  let key: KeyObject;
  try {
    key = createPrivateKey(ca.keyPem);
  } catch (e) {
    throw refuse(`${where.key} is not a PEM private key`, e);
  }
  const curve = key.asymmetricKeyType === "ec" ? CA_CURVES[key.asymmetricKeyDetails?.namedCurve ?? ""] : undefined;
  if (!curve) throw refuse(`${where.key} is not an ECDSA P-256, P-384 or P-521 key`);
  if (!nodeCert.checkPrivateKey(key)) throw refuse(`${where.key} is not the key of ${where.cert}`);
  const lib = await x509();
  const signingKey = await webcrypto.subtle.importKey(
    "pkcs8",
    key.export({ type: "pkcs8", format: "der" }),
    { name: "ECDSA", namedCurve: curve.namedCurve },
    false,
    ["sign"],
  );
  const cert = new lib.X509Certificate(ca.certPem);
  const loaded: LoadedCa = {
    cert,
    notAfterMs: Date.parse(nodeCert.validTo),
    signingKey,
    hash: curve.hash,
    keyId: cert.getExtension(lib.SubjectKeyIdentifierExtension)?.keyId ?? keyIdOf(nodeCert.publicKey),
  };
  lastCa = { certPem: ca.certPem, keyPem: ca.keyPem, loaded };
  return expiredCheck(loaded);
}

/**
 * A key identifier, RFC 5280 4.2.1.2 method (1): the SHA-1 of the subjectPublicKey bits, which for
 * an EC key are its uncompressed point 04 || X || Y.
 */
function keyIdOf(publicKey: KeyObject): string {
  const jwk = publicKey.export({ format: "jwk" });
  if (jwk.kty !== "EC" || !jwk.x || !jwk.y) throw new BerthError(ErrorCode.Internal, "not an EC public key");
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x, "base64url"), Buffer.from(jwk.y, "base64url")]);
  return createHash("sha1").update(point).digest("hex");
}

/** Validates a leaf's options; returns its SANs. */
function leafSans(options: IssueCertificateOptions): X509.JsonGeneralName[] {
  if (!Object.hasOwn(ROLE_ORGANIZATION, options.role)) {
    throw invalidArgument("role", `'${quote(options.role)}' is not one of ${Object.keys(ROLE_ORGANIZATION).join(", ")}`);
  }
  validateCertificateName(options.name, "name");
  // The agent says which host it is in Hello; its certificate must name a host id it can say.
  if (options.role === "host") validateHostId(options.name, "name");
  if (options.role !== "controller") {
    if (options.sans !== undefined) throw invalidArgument("sans", `only a controller certificate takes SANs (this is a ${options.role} certificate)`);
    return isDnsName(options.name) ? [{ type: "dns", value: options.name }] : [];
  }
  const sans = options.sans ?? DEFAULT_CONTROLLER_SANS;
  if (sans.length === 0) throw invalidArgument("sans", "a controller certificate needs at least one SAN: the names and addresses clients reach it by");
  if (sans.length > MAX_SANS) throw invalidArgument("sans", `at most ${MAX_SANS} SANs (got ${sans.length})`);
  const seen = new Set<string>();
  const names: X509.JsonGeneralName[] = [];
  sans.forEach((s, i) => {
    const san = sanOf(s, `sans[${i}]`);
    const key = `${san.type}:${san.value.toLowerCase()}`;
    if (!seen.has(key)) names.push(san);
    seen.add(key);
  });
  return names;
}

/**
 * A leaf certificate signed by `ca` for one peer: a new ECDSA P-256 key; subject
 * `CN=name, O=ROLE_ORGANIZATION[role]` (what {@link identityOfSubject} reads back); a random 16-byte
 * serial; basicConstraints CA:false and keyUsage digitalSignature (both critical); extended key
 * usage clientAuth, plus serverAuth for a controller; subject and authority key identifiers; SANs:
 * a controller's from `sans` (IP addresses as IP SANs, the rest as DNS names; default
 * `localhost, 127.0.0.1, ::1`), a host's or operator's its name as a DNS SAN when that is a DNS
 * name (none otherwise). Valid from 5 minutes ago for `days` (default 365), never past the CA's
 * own expiry. The key is PKCS#8 PEM, as Node's tls and @grpc/grpc-js take it.
 *
 * Throws INVALID_ARGUMENT naming the field (`role`, `name`, `sans`, `sans[i]`, `days`) on bad
 * input, FAILED_PRECONDITION when `ca` is not a usable CA (not a CA, key not its own, expired).
 */
export async function issueCertificate(ca: CertificateAndKey, options: IssueCertificateOptions): Promise<CertificateAndKey> {
  return issueWith(ca, options, { cert: "the CA certificate", key: "the CA key" });
}

async function issueWith(ca: CertificateAndKey, options: IssueCertificateOptions, where: { cert: string; key: string }): Promise<CertificateAndKey> {
  const sans = leafSans(options);
  const days = validateDays(options.days, DEFAULT_LEAF_DAYS);
  const loaded = await loadCa(ca, where);
  const now = Date.now();
  const notAfterMs = now + days * DAY_MS;
  if (notAfterMs > loaded.notAfterMs) {
    throw invalidArgument(
      "days",
      `${days} days would outlive the CA, which expires on ${new Date(loaded.notAfterMs).toISOString()}: ask for fewer days or make a new CA`,
    );
  }
  const lib = await x509();
  // Node's own key generation: synchronous, and a fraction of WebCrypto's cost per call. Only the
  // CA's signature goes through WebCrypto.
  const keys = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const extensions: X509.Extension[] = [
    new lib.BasicConstraintsExtension(false, undefined, true),
    new lib.KeyUsagesExtension(lib.KeyUsageFlags.digitalSignature, true),
    new lib.ExtendedKeyUsageExtension(EXTENDED_KEY_USAGES[options.role].map((u) => OID_OF_USAGE[u])),
    new lib.SubjectKeyIdentifierExtension(keyIdOf(keys.publicKey)),
    new lib.AuthorityKeyIdentifierExtension(loaded.keyId),
  ];
  if (sans.length > 0) extensions.push(new lib.SubjectAlternativeNameExtension(sans));
  const cert = await lib.X509CertificateGenerator.create({
    serialNumber: serialNumberHex(),
    subject: [{ CN: [options.name] }, { O: [ROLE_ORGANIZATION[options.role]] }],
    issuer: loaded.cert.subjectName,
    notBefore: new Date(now - CLOCK_SKEW_MS),
    notAfter: new Date(notAfterMs),
    publicKey: keys.publicKey.export({ type: "spki", format: "der" }),
    signingKey: loaded.signingKey,
    signingAlgorithm: { name: "ECDSA", hash: loaded.hash } as webcrypto.EcdsaParams,
    extensions,
  });
  return { certPem: certPemOf(cert), keyPem: pkcs8Pem(keys.privateKey) };
}

/** One file to write. */
interface FileToWrite {
  name: string;
  content: string;
  mode: number;
}

const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code;

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (e) {
    if (errnoOf(e) === "ENOENT") return false;
    throw e;
  }
}

function refuseOverwrite(paths: readonly string[]): BerthError {
  const what = paths.length === 1 ? `${paths[0]} already exists` : `${paths.join(", ")} already exist`;
  return new BerthError(ErrorCode.AlreadyExists, `${what}: refusing to overwrite (--force replaces; nothing was written)`);
}

/**
 * Writes `files` into `dir` (made 0700 if missing), each atomically: a temporary file with its
 * mode, synced, then renamed (with `force`) or hard-linked (without: a file that appeared meanwhile
 * is never clobbered) into place. Without `force`, when any target exists nothing is written.
 */
async function writeFilesAtomically(dir: string, files: readonly FileToWrite[], force: boolean): Promise<string[]> {
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
  const targets = files.map((f) => join(dir, f.name));
  if (!force) {
    const present: string[] = [];
    for (const t of targets) if (await exists(t)) present.push(t);
    if (present.length > 0) throw refuseOverwrite(present);
  }
  const temps: string[] = [];
  const placed: string[] = [];
  try {
    for (const f of files) {
      const tmp = join(dir, `.${f.name}.${randomBytes(6).toString("hex")}.tmp`);
      const fh = await open(tmp, "wx", f.mode);
      temps.push(tmp);
      try {
        await fh.chmod(f.mode); // exactly this mode, whatever the umask
        await fh.writeFile(f.content);
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    for (const [i, tmp] of temps.entries()) {
      const target = targets[i]!;
      if (force) {
        await rename(tmp, target);
      } else {
        try {
          await link(tmp, target);
        } catch (e) {
          if (errnoOf(e) === "EEXIST") throw refuseOverwrite([target]);
          // A filesystem without hard links: no atomic no-clobber; the check above stands.
          if (!["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EXDEV"].includes(errnoOf(e) ?? "")) throw e;
          if (await exists(target)) throw refuseOverwrite([target]);
          await rename(tmp, target);
        }
      }
      placed.push(target);
    }
  } catch (e) {
    // Without force nothing was there before: take back what this call placed.
    if (!force) for (const p of placed) await unlink(p).catch(() => undefined);
    throw e;
  } finally {
    for (const t of temps) await unlink(t).catch(() => undefined);
  }
  await syncDir(dir);
  return targets;
}

async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // Not every platform syncs a directory; the files themselves are synced.
  }
}

/**
 * Makes a PKI directory: a new CA (`ca.crt`, `ca.key`; valid 10 years, or a day longer than
 * `days` when that is more) and the first controller's certificate (`controller.crt`,
 * `controller.key`, CN `controller`, SANs from `sans`, valid `days`). The
 * directory is made (mode 0700) if missing; keys are written 0600, certificates 0644, each
 * atomically (temporary file, then rename). When any of the four exists nothing is written, unless
 * `force` (then all four are replaced: a new CA, so every certificate it issued before stops being
 * trusted). Returns the paths written, keys before certificates.
 *
 * Throws ALREADY_EXISTS naming the files (and `--force`), INVALID_ARGUMENT naming `sans[i]` or `days`.
 */
export async function initPkiDirectory(dir: string, options: InitPkiDirectoryOptions = {}): Promise<string[]> {
  const leaf = { role: "controller" as const, name: INIT_CONTROLLER_NAME, days: options.days, ...(options.sans ? { sans: options.sans } : {}) };
  leafSans(leaf);
  const force = options.force ?? false;
  if (!force) await refuseExisting(dir, Object.values(PKI_FILES));
  // The CA outlives the certificate it is made with, whatever `days` asks.
  const days = validateDays(options.days, DEFAULT_LEAF_DAYS);
  const ca = await createCertificateAuthority({ days: Math.min(MAX_CERTIFICATE_DAYS, Math.max(DEFAULT_CA_DAYS, days + 1)) });
  const controller = await issueCertificate(ca, leaf);
  return writeFilesAtomically(
    dir,
    [
      { name: PKI_FILES.caKey, content: ca.keyPem, mode: KEY_MODE },
      { name: PKI_FILES.controllerKey, content: controller.keyPem, mode: KEY_MODE },
      { name: PKI_FILES.caCert, content: ca.certPem, mode: CERT_MODE },
      { name: PKI_FILES.controllerCert, content: controller.certPem, mode: CERT_MODE },
    ],
    force,
  );
}

async function refuseExisting(dir: string, names: readonly string[]): Promise<void> {
  const present: string[] = [];
  for (const n of names) if (await exists(join(dir, n))) present.push(join(dir, n));
  if (present.length > 0) throw refuseOverwrite(present);
}

/**
 * Issues a certificate with the CA of a PKI directory (`dir/ca.crt`, `dir/ca.key`, as
 * {@link initPkiDirectory} made them) and writes `dir/NAME.key` (0600) and `dir/NAME.crt` (0644),
 * each atomically. When either exists nothing is written, unless `force`. The name `ca` is refused:
 * those are the CA's files. Returns the paths written, key first.
 *
 * Throws INVALID_ARGUMENT naming the field (as {@link issueCertificate}); FAILED_PRECONDITION when
 * the directory has no CA (saying to run `berth certs init --dir DIR` first) or its CA is unusable;
 * ALREADY_EXISTS naming the files (and `--force`).
 */
export async function issueToDirectory(dir: string, options: IssueToDirectoryOptions): Promise<string[]> {
  const { force = false, ...issue } = options;
  leafSans(issue);
  validateDays(issue.days, DEFAULT_LEAF_DAYS);
  if (issue.name === "ca") throw invalidArgument("name", `'ca' is taken: ${join(dir, PKI_FILES.caCert)} and ${join(dir, PKI_FILES.caKey)} are the CA's own files`);
  const certFile = `${issue.name}.crt`;
  const keyFile = `${issue.name}.key`;
  if (!force) await refuseExisting(dir, [keyFile, certFile]);
  const where = { cert: join(dir, PKI_FILES.caCert), key: join(dir, PKI_FILES.caKey) };
  const read = async (path: string): Promise<string> => {
    try {
      return await readFile(path, "utf8");
    } catch (e) {
      if (errnoOf(e) !== "ENOENT") throw e;
      throw new BerthError(ErrorCode.FailedPrecondition, `no CA in ${dir} (${path} does not exist): run 'berth certs init --dir ${dir}' first`);
    }
  };
  const ca = { certPem: await read(where.cert), keyPem: await read(where.key) };
  const made = await issueWith(ca, issue, where);
  return writeFilesAtomically(
    dir,
    [
      { name: keyFile, content: made.keyPem, mode: KEY_MODE },
      { name: certFile, content: made.certPem, mode: CERT_MODE },
    ],
    force,
  );
}

/** The modes the directory helpers write with: certificates, keys, and a directory they make. */
export const PKI_FILE_MODES = { cert: CERT_MODE, key: KEY_MODE, dir: DIR_MODE } as const;
