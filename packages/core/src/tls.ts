import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import {
  credentials,
  experimental,
  ServerCredentials,
  type ChannelCredentials,
  type ServerUnaryCall,
} from "@grpc/grpc-js";
import { BerthError, ErrorCode, invalidArgument, quote } from "./errors.js";
import { identityOfSubject, type PeerIdentity } from "./identity.js";

type CertificateProvider = experimental.CertificateProvider;
/** What grpc-js says of a server call's transport. */
type AuthContext = ReturnType<ServerUnaryCall<unknown, unknown>["getAuthContext"]>;
type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

/** The three PEM files of a mutual-TLS identity (`berth certs` writes them). */
export interface TlsFiles {
  /** The CA that signed every Berth certificate: peers are verified against it. */
  ca: string;
  /** This process' certificate. */
  cert: string;
  /** Its private key. */
  key: string;
}

/**
 * How a daemon or the CLI talks gRPC: mutual TLS (the default everywhere), or plaintext, which
 * only an explicit `--insecure` gives (every peer is then trusted as whatever it says it is).
 */
export type Transport = { tls: TlsFiles } | { insecure: true };

/** The flags and environment variables the daemons and the CLI read a {@link Transport} from. */
export const TLS_ENV = { ca: "BERTH_TLS_CA", cert: "BERTH_TLS_CERT", key: "BERTH_TLS_KEY" } as const;

/** What the command line said about the transport. */
export interface TransportFlags {
  tlsCa?: string | undefined;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
  insecure?: boolean | undefined;
}

/**
 * The transport from `--tls-ca/--tls-cert/--tls-key` (each falling back to its BERTH_TLS_*
 * variable) or `--insecure`. Throws INVALID_ARGUMENT naming the flag when only some files are
 * given, when both TLS files and `--insecure` are given, or when neither is: plaintext is never a
 * silent default.
 */
export function resolveTransport(flags: TransportFlags, env: Readonly<Record<string, string | undefined>>): Transport {
  const pick = (flag: string | undefined, name: string): string | undefined => {
    const v = flag ?? env[name];
    return v === undefined || v.trim() === "" ? undefined : v;
  };
  const ca = pick(flags.tlsCa, TLS_ENV.ca);
  const cert = pick(flags.tlsCert, TLS_ENV.cert);
  const key = pick(flags.tlsKey, TLS_ENV.key);
  const given = [ca, cert, key].filter((v) => v !== undefined).length;
  if (flags.insecure) {
    if (flags.tlsCa !== undefined || flags.tlsCert !== undefined || flags.tlsKey !== undefined) {
      throw invalidArgument("insecure", "plaintext was asked for, but so was TLS (--tls-ca/--tls-cert/--tls-key): give one or the other");
    }
    return { insecure: true };
  }
  if (given === 0) {
    throw invalidArgument(
      "tls",
      `TLS is required: give --tls-ca FILE --tls-cert FILE --tls-key FILE (or ${TLS_ENV.ca}, ${TLS_ENV.cert}, ${TLS_ENV.key}); ` +
        "'berth certs init --dir DIR' makes them. --insecure runs plaintext, where anyone who reaches the port is trusted",
    );
  }
  const missing = ([["tls_ca", ca], ["tls_cert", cert], ["tls_key", key]] as const).find(([, v]) => v === undefined);
  if (missing) throw invalidArgument(missing[0], `is required with the other TLS files (${TLS_ENV.ca}, ${TLS_ENV.cert}, ${TLS_ENV.key} in the environment count too)`);
  return { tls: { ca: ca!, cert: cert!, key: key! } };
}

/** One loaded, checked set of PEM files. */
interface Loaded {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
  /** What the certificate says, for logs. */
  subject: string;
  /** The Berth identity it names, if it names one. */
  identity: PeerIdentity | undefined;
  serial: string;
  notAfter: string;
  /** Files' change stamps when read. */
  stamp: string;
}

function stampOf(files: TlsFiles): string {
  return [files.ca, files.cert, files.key]
    .map((f) => {
      try {
        const s = statSync(f);
        return `${s.ino}:${s.size}:${s.mtimeMs}`;
      } catch {
        return "missing";
      }
    })
    .join("|");
}

/**
 * Reads and checks the files: each parses, the key is the certificate's, the CA signed the
 * certificate, and it is within its validity. Throws INVALID_ARGUMENT naming the file's flag
 * (`tls_ca`, `tls_cert`, `tls_key`); never quotes key material.
 */
function load(files: TlsFiles, now: Date): Loaded {
  const stamp = stampOf(files);
  const read = (path: string, field: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (e) {
      throw invalidArgument(field, `cannot read ${quote(path, 256)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  const ca = read(files.ca, "tls_ca");
  const cert = read(files.cert, "tls_cert");
  const key = read(files.key, "tls_key");
  // A bundle may hold several CAs (the old and the new one while a CA is rotated): each is read.
  let caCerts: X509Certificate[];
  let leaf: X509Certificate;
  try {
    const blocks = ca.toString("utf8").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    caCerts = blocks.map((b) => new X509Certificate(b));
    if (caCerts.length === 0) throw new Error("no certificate");
  } catch {
    throw invalidArgument("tls_ca", `${quote(files.ca, 256)} is not a PEM certificate (or bundle of them)`);
  }
  try {
    leaf = new X509Certificate(cert);
  } catch {
    throw invalidArgument("tls_cert", `${quote(files.cert, 256)} is not a PEM certificate`);
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch {
    // The parser's message could echo part of the file: it is not repeated.
    throw invalidArgument("tls_key", `${quote(files.key, 256)} is not a PEM private key`);
  }
  if (!leaf.checkPrivateKey(privateKey)) throw invalidArgument("tls_key", `${quote(files.key, 256)} is not the key of ${quote(files.cert, 256)}`);
  if (!caCerts.some((c) => leaf.checkIssued(c) && leaf.verify(c.publicKey))) {
    throw invalidArgument("tls_cert", `${quote(files.cert, 256)} (${leaf.subject.replace(/\n/g, ", ")}) was not signed by the CA in ${quote(files.ca, 256)}`);
  }
  if (new Date(leaf.validTo) < now) throw invalidArgument("tls_cert", `${quote(files.cert, 256)} expired on ${leaf.validTo}: issue a new one with 'berth certs issue'`);
  if (new Date(leaf.validFrom) > now) throw invalidArgument("tls_cert", `${quote(files.cert, 256)} is not valid before ${leaf.validFrom} (check this machine's clock)`);
  return { ca, cert, key, subject: leaf.subject.replace(/\n/g, ", "), identity: identityOfText(leaf.subject), serial: leaf.serialNumber, notAfter: leaf.validTo, stamp };
}

/** The identity in an X509Certificate's subject text (`CN=host-1\nO=berth:host`), if it names one. */
function identityOfText(subject: string): PeerIdentity | undefined {
  const fields: { CN?: string[]; O?: string[] } = {};
  for (const line of subject.split("\n")) {
    const at = line.indexOf("=");
    const k = line.slice(0, at);
    if (k === "CN" || k === "O") (fields[k] ??= []).push(line.slice(at + 1));
  }
  try {
    return identityOfSubject(fields);
  } catch {
    return undefined;
  }
}

/** What {@link ReloadingTlsIdentity} tells its owner (a logger, typically). */
export interface TlsReloadEvents {
  /** New files were read and are used for new connections from now on. */
  reloaded?(what: { subject: string; serial: string; notAfter: string }): void;
  /** Changed files failed their checks: the previous ones stay in use. */
  rejected?(why: string): void;
}

/**
 * A mutual-TLS identity read from {@link TlsFiles} and re-read when they change, with no restart:
 * the files are polled (a rename or an in-place write both count), and a new set is used for new
 * connections only once all three parse and match each other — a half-written key or a certificate
 * of another CA is refused and the previous set stays. Streams already open are never dropped.
 * It is grpc-js's CertificateProvider, so one object serves server and channel credentials.
 */
export class ReloadingTlsIdentity implements CertificateProvider {
  #current: Loaded;
  readonly #caListeners = new Set<CaListener>();
  readonly #identityListeners = new Set<IdentityListener>();
  readonly #timer: NodeJS.Timeout;
  #lastRejection: string | undefined;

  /**
   * Reads the files at once: throws INVALID_ARGUMENT naming the bad one. `reloadIntervalMs` is how
   * often the files' change stamps are looked at (@default 2000).
   */
  constructor(
    readonly files: TlsFiles,
    private readonly events: TlsReloadEvents = {},
    reloadIntervalMs = 2_000,
  ) {
    this.#current = load(files, new Date());
    this.#timer = setInterval(() => this.poll(), reloadIntervalMs);
    this.#timer.unref();
  }

  /** The Berth identity (role and name) the loaded certificate names; undefined if it names none. */
  get identity(): PeerIdentity | undefined {
    return this.#current.identity;
  }

  /** Who the loaded certificate names, its serial and expiry (for logs). */
  get certificate(): { subject: string; serial: string; notAfter: string } {
    return { subject: this.#current.subject, serial: this.#current.serial, notAfter: this.#current.notAfter };
  }

  /** Re-reads the files if their change stamps moved. Returns whether a new set was taken. */
  poll(): boolean {
    const stamp = stampOf(this.files);
    if (stamp === this.#current.stamp) return false;
    let next: Loaded;
    try {
      next = load(this.files, new Date());
    } catch (e) {
      // Tried again at the next poll (a writer may be between two of the files); told once per
      // reason, not every poll while the files stay bad.
      const why = (e as Error).message;
      if (why !== this.#lastRejection) this.events.rejected?.(why);
      this.#lastRejection = why;
      return false;
    }
    this.#lastRejection = undefined;
    const same = next.ca.equals(this.#current.ca) && next.cert.equals(this.#current.cert) && next.key.equals(this.#current.key);
    this.#current = next;
    if (same) return false;
    for (const l of this.#identityListeners) l({ certificate: next.cert, privateKey: next.key });
    for (const l of this.#caListeners) l({ caCertificate: next.ca });
    this.events.reloaded?.(this.certificate);
    return true;
  }

  // The first update is delivered on a later tick, as grpc-js's own providers do: its server
  // credentials register their watcher only after adding these listeners, and would miss an
  // update given synchronously (the server would then drop every connection).
  addCaCertificateListener(listener: CaListener): void {
    this.#caListeners.add(listener);
    queueMicrotask(() => this.#caListeners.has(listener) && listener({ caCertificate: this.#current.ca }));
  }
  removeCaCertificateListener(listener: CaListener): void {
    this.#caListeners.delete(listener);
  }
  addIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.add(listener);
    queueMicrotask(() => this.#identityListeners.has(listener) && listener({ certificate: this.#current.cert, privateKey: this.#current.key }));
  }
  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.delete(listener);
  }

  /** Stops polling. */
  close(): void {
    clearInterval(this.#timer);
  }
}

/** Server credentials that require a client certificate signed by the identity's CA. */
export function serverCredentialsOf(identity: ReloadingTlsIdentity | undefined): ServerCredentials {
  return identity ? experimental.createCertificateProviderServerCredentials(identity, identity, true) : ServerCredentials.createInsecure();
}

/** Channel credentials presenting the identity's certificate and verifying the server against its CA. */
export function channelCredentialsOf(identity: ReloadingTlsIdentity | undefined): ChannelCredentials {
  return identity ? experimental.createCertificateProviderChannelCredentials(identity, identity) : credentials.createInsecure();
}

/** The transport's identity, loaded (undefined for plaintext). */
export function tlsIdentityOf(transport: Transport, events?: TlsReloadEvents): ReloadingTlsIdentity | undefined {
  return "tls" in transport ? new ReloadingTlsIdentity(transport.tls, events) : undefined;
}

/** What a server call's transport says of its peer. */
export type PeerOf =
  /** Plaintext: the peer is whoever it says it is. */
  | { secure: false }
  /** Mutual TLS: the verified certificate's identity. */
  | { secure: true; identity: PeerIdentity };

/**
 * The peer of a server call, from grpc-js's AuthContext. A TLS call without a verified client
 * certificate cannot happen (the server requires one) and is refused as UNAUTHENTICATED, as is a
 * certificate naming no Berth role.
 */
export function peerOf(auth: AuthContext | null | undefined): PeerOf {
  if (!auth || auth.transportSecurityType !== "ssl") return { secure: false };
  const cert = auth.sslPeerCertificate;
  if (!cert || !cert.subject) throw new BerthError(ErrorCode.Unauthenticated, "no client certificate: present one signed by the cluster's CA (--tls-cert/--tls-key)");
  return { secure: true, identity: identityOfSubject(cert.subject as { CN?: string | string[]; O?: string | string[] }) };
}

/** The command-line flags of the fields {@link resolveTransport} and the TLS loader name (for `messageForFlags`). */
export const TLS_FLAGS: Readonly<Record<string, string>> = {
  tls: "--tls-ca/--tls-cert/--tls-key",
  tls_ca: "--tls-ca",
  tls_cert: "--tls-cert",
  tls_key: "--tls-key",
  insecure: "--insecure",
};

/** The TLS flags as the daemons' `--help` lists them. */
export const TLS_HELP = `  --tls-ca FILE           the cluster's CA certificate (default: $${TLS_ENV.ca})
  --tls-cert FILE         this process' certificate, signed by that CA (default: $${TLS_ENV.cert})
  --tls-key FILE          its private key (default: $${TLS_ENV.key}); 'berth certs' makes all
                          three. The files are re-read when they change (no restart)
  --insecure              plaintext gRPC instead: anyone who reaches the port is trusted as any
                          host or operator. Only for a machine of your own; logged loudly`;

/**
 * Drops Node's DEP0123 warning ("Setting the TLS ServerName to an IP address is not permitted by
 * RFC 6066"), which grpc-js triggers whenever a TLS channel dials an IP address (it passes the
 * target host as SNI): the certificate is still checked against the IP, Berth's servers do not use
 * SNI, and the warning would otherwise be printed by every `berth` run against 10.0.0.5:7400.
 * Every other warning is emitted as before. Call once at process start.
 */
export function silenceIpServernameWarning(): void {
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const code = typeof rest[0] === "object" && rest[0] !== null ? (rest[0] as { code?: string }).code : rest[1];
    if (code === "DEP0123" || (warning instanceof Error && (warning as { code?: string }).code === "DEP0123")) return;
    emit(warning, ...rest);
  }) as typeof process.emitWarning;
}
