/**
 * The daemons' admin HTTP port (`--admin-listen HOST:PORT`): `/healthz`, `/metrics` and, on the
 * controller, the web dashboard. A small router over node:http / node:https — the routes are the
 * daemon's; this module owns what every route shares: matching, errors as JSON, body limits,
 * timeouts, security headers, the client certificate's identity, and a close that ends streams.
 */
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type Server as HttpServer, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { BerthError, ErrorCode, type ErrorCode as ErrorCodeType } from "./errors.js";
import { identityOfSubject, type CertificateSubject, type PeerIdentity } from "./identity.js";
import { parseHostPort } from "./parse.js";
import type { ReloadingTlsIdentity } from "./tls.js";

/** The most a request body may hold ({@link AdminRequest.body}); more is answered 413. */
export const ADMIN_MAX_BODY_BYTES = 64 * 1024;

/** How long a client may take to send a request's headers (slowloris guard). */
export const ADMIN_HEADERS_TIMEOUT_MS = 10_000;
/**
 * How long a client may take to send a whole request (headers and body). Node applies it to
 * receiving the request only, so a long response (a server-sent event stream) outlives it.
 */
export const ADMIN_REQUEST_TIMEOUT_MS = 30_000;

/** One request, as a route sees it. */
export interface AdminRequest {
  /** "GET" | "POST" | "HEAD" ... */
  readonly method: string;
  /** Path and query, parsed against the base `http://admin`. */
  readonly url: URL;
  readonly headers: IncomingHttpHeaders;
  /** The verified client certificate's Berth identity (HTTPS with a client cert of the cluster's CA); undefined otherwise. */
  readonly identity: PeerIdentity | undefined;
  /** Whether the server is HTTPS. */
  readonly secure: boolean;
  /** Reads the request body, at most 64 KiB (more: the server answers 413 and this rejects). */
  body(): Promise<Buffer>;
  readonly raw: IncomingMessage;
}

/** One route of the admin server. */
export interface AdminRoute {
  /** GET routes also answer HEAD. */
  method: "GET" | "POST";
  /** An exact path ("/metrics"), or a prefix when it ends in "/*" ("/assets/*"). Exact beats prefix. */
  path: string;
  /**
   * Answers the request. A throw (or rejection) before the response is sent becomes an error
   * response: a BerthError its HTTP analogue with JSON `{error, code}`, anything else 500
   * `{error}` (logged; no stack reaches the client).
   */
  handle(req: AdminRequest, res: ServerResponse): void | Promise<void>;
}

/** What {@link startAdminServer} serves, and where. */
export interface AdminServerOptions {
  /** HOST:PORT, port 0 allowed (an OS-chosen port: read {@link AdminServer.port}). Bad → INVALID_ARGUMENT field "admin_listen". */
  listen: string;
  routes: readonly AdminRoute[];
  /** HTTPS with this identity (reloading, like gRPC's), requesting but not requiring a client certificate. */
  tls?: ReloadingTlsIdentity;
  log?: { info(o: object, m: string): void; warn(o: object, m: string): void };
  /**
   * Overrides of the timeouts (milliseconds), for tests that must see them act: `headers`
   * (@default {@link ADMIN_HEADERS_TIMEOUT_MS}), `request` (@default {@link ADMIN_REQUEST_TIMEOUT_MS}),
   * `check`: how often Node looks for requests past them (@default 1000).
   */
  timeouts?: { headers?: number; request?: number; check?: number };
}

/** A running admin server. */
export interface AdminServer {
  /** The bound port (the OS's choice when the listen port was 0). */
  readonly port: number;
  /** `http://HOST:PORT` or `https://HOST:PORT`, no trailing slash. */
  readonly url: string;
  /** Stops listening and ends every open connection, long-lived responses included. Idempotent. */
  close(): Promise<void>;
}

/** The HTTP status of each Berth error code (the codes not named here are 500). */
const HTTP_STATUS_OF: Partial<Record<ErrorCodeType, number>> = {
  [ErrorCode.InvalidArgument]: 400,
  [ErrorCode.NotFound]: 404,
  [ErrorCode.PermissionDenied]: 403,
  [ErrorCode.Unauthenticated]: 401,
  [ErrorCode.FailedPrecondition]: 409,
  [ErrorCode.Unavailable]: 503,
  // The rest as gRPC's own HTTP mapping has them (RESOURCE_EXHAUSTED 429, ABORTED 409, ...).
  [ErrorCode.NotLeader]: 503,
  [ErrorCode.Busy]: 503,
  [ErrorCode.HypervisorUnavailable]: 503,
  [ErrorCode.Conflict]: 409,
  [ErrorCode.AlreadyExists]: 409,
  [ErrorCode.ResourceExhausted]: 429,
  [ErrorCode.DeadlineExceeded]: 504,
};

/** The HTTP status an error from a route answers with. */
export function httpStatusOf(e: unknown): number {
  return e instanceof BerthError ? (HTTP_STATUS_OF[e.code] ?? 500) : 500;
}

/** The body is over the limit: the 413 is already sent. */
class BodyTooLarge extends BerthError {
  constructor() {
    super(ErrorCode.InvalidArgument, `the request body is over ${ADMIN_MAX_BODY_BYTES} bytes`, { field: "body" });
  }
}

const SECURITY_HEADERS: readonly [string, string][] = [
  ["X-Content-Type-Options", "nosniff"],
  ["Referrer-Policy", "no-referrer"],
  ["Content-Security-Policy", "default-src 'self'"],
];

function sendJson(res: ServerResponse, status: number, body: object, extra: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { ...extra, "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(text), "Cache-Control": "no-store" });
  res.end(text);
}

/** The routes that could answer `path`: the exact ones, else those of the longest matching prefix. */
function candidates(routes: readonly AdminRoute[], path: string): AdminRoute[] {
  const exact = routes.filter((r) => !r.path.endsWith("/*") && r.path === path);
  if (exact.length > 0) return exact;
  let best: AdminRoute[] = [];
  let bestLength = -1;
  for (const r of routes) {
    if (!r.path.endsWith("/*")) continue;
    const prefix = r.path.slice(0, -1); // keeps the slash: "/assets/*" matches "/assets/x", not "/assets"
    if (!path.startsWith(prefix)) continue;
    if (prefix.length > bestLength) {
      best = [r];
      bestLength = prefix.length;
    } else if (prefix.length === bestLength) best.push(r);
  }
  return best;
}

function identityOfSocket(req: IncomingMessage): PeerIdentity | undefined {
  const socket = req.socket as TLSSocket;
  // Only a certificate the CA verified says who the peer is; a foreign or self-made one is no one.
  if (!socket.encrypted || !socket.authorized) return undefined;
  const cert = socket.getPeerCertificate();
  if (!cert || !cert.subject) return undefined;
  try {
    return identityOfSubject(cert.subject as CertificateSubject);
  } catch {
    return undefined;
  }
}

function bodyReader(req: IncomingMessage, res: ServerResponse): () => Promise<Buffer> {
  let read: Promise<Buffer> | undefined;
  const tooLarge = (): BodyTooLarge => {
    // Connection: close — the rest of an oversized body is not worth reading.
    sendJson(res, 413, { error: `the request body is over ${ADMIN_MAX_BODY_BYTES} bytes` }, { Connection: "close" });
    return new BodyTooLarge();
  };
  return () =>
    (read ??= new Promise<Buffer>((resolve, reject) => {
      const declared = Number(req.headers["content-length"]);
      if (Number.isFinite(declared) && declared > ADMIN_MAX_BODY_BYTES) {
        reject(tooLarge());
        req.resume();
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      let done = false;
      req.on("data", (chunk: Buffer) => {
        if (done) return;
        size += chunk.length;
        if (size > ADMIN_MAX_BODY_BYTES) {
          done = true;
          reject(tooLarge());
          return;
        }
        chunks.push(chunk);
      });
      req.on("end", () => {
        if (done) return;
        done = true;
        resolve(Buffer.concat(chunks));
      });
      req.on("error", (e) => {
        if (done) return;
        done = true;
        reject(e);
      });
    }));
}

/**
 * Starts the admin server on `o.listen` with `o.routes`. Unknown path → 404 JSON `{error}`; a
 * known path with another method → 405 with `Allow`; a throwing route → its error's HTTP analogue
 * (see {@link AdminRoute.handle}). Every response carries `X-Content-Type-Options: nosniff`,
 * `Referrer-Policy: no-referrer` and `Content-Security-Policy: default-src 'self'` (a route may
 * set its own CSP). With `tls`, HTTPS that asks for, but does not require, a client certificate:
 * {@link AdminRequest.identity} is set only for one the cluster's CA verified that names a Berth
 * role. Throws INVALID_ARGUMENT (field `admin_listen`) for a bad address; rejects when it cannot
 * be bound (EADDRINUSE and the like, as Node reports them).
 */
export async function startAdminServer(o: AdminServerOptions): Promise<AdminServer> {
  const { host: rawHost, port: wantedPort } = parseHostPort(o.listen, "admin_listen", { allowPortZero: true });
  const host = rawHost.startsWith("[") ? rawHost.slice(1, -1) : rawHost;
  const routes = [...o.routes];
  const secure = o.tls !== undefined;
  const serverOptions = {
    headersTimeout: o.timeouts?.headers ?? ADMIN_HEADERS_TIMEOUT_MS,
    requestTimeout: o.timeouts?.request ?? ADMIN_REQUEST_TIMEOUT_MS,
    connectionsCheckingInterval: o.timeouts?.check ?? 1_000,
  };

  const handle = async (raw: IncomingMessage, res: ServerResponse): Promise<void> => {
    for (const [k, v] of SECURITY_HEADERS) res.setHeader(k, v);
    const method = raw.method ?? "GET";
    const target = raw.url ?? "/";
    // Only origin-form targets ("/path?q"): "//host/x" or "http://other/" are not paths of this server.
    if (!target.startsWith("/") || target.startsWith("//")) {
      sendJson(res, 400, { error: "the request target must be a path" });
      return;
    }
    let url: URL;
    try {
      url = new URL(`http://admin${target}`);
    } catch {
      sendJson(res, 400, { error: "the request target is not a valid path" });
      return;
    }
    const found = candidates(routes, url.pathname);
    if (found.length === 0) {
      sendJson(res, 404, { error: `no such path: ${url.pathname}` });
      return;
    }
    const route = found.find((r) => r.method === method || (method === "HEAD" && r.method === "GET"));
    if (!route) {
      const allow = [...new Set(found.flatMap((r) => (r.method === "GET" ? ["GET", "HEAD"] : [r.method])))].join(", ");
      sendJson(res, 405, { error: `${method} is not allowed on ${url.pathname}`, allow }, { Allow: allow });
      return;
    }
    const req: AdminRequest = {
      method,
      url,
      headers: raw.headers,
      identity: secure ? identityOfSocket(raw) : undefined,
      secure,
      body: bodyReader(raw, res),
      raw,
    };
    try {
      await route.handle(req, res);
    } catch (e) {
      if (e instanceof BodyTooLarge) return;
      const status = httpStatusOf(e);
      if (status >= 500) o.log?.warn({ err: e, method, path: url.pathname }, "admin HTTP route failed");
      if (res.headersSent) {
        // Too late for a status: cut the response short so the client sees it incomplete.
        res.destroy();
        return;
      }
      if (e instanceof BerthError) sendJson(res, status, { error: status === 500 && e.code === ErrorCode.Internal ? "internal error" : e.message, code: e.code });
      else sendJson(res, 500, { error: "internal error" });
    }
  };
  const listener = (raw: IncomingMessage, res: ServerResponse): void => {
    void handle(raw, res).catch((e: unknown) => {
      o.log?.warn({ err: e }, "admin HTTP request failed");
      res.destroy();
    });
  };

  let server: HttpServer;
  let unsubscribe = (): void => {};
  if (o.tls) {
    const tls = o.tls;
    // The identity's current PEM arrives through its listeners (on a later tick, then at every
    // reload): the server is made once both halves are known, and re-keyed on each change.
    const pem: { ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
    let ready!: () => void;
    const first = new Promise<void>((r) => (ready = r));
    let current: ReturnType<typeof createHttpsServer> | undefined;
    const update = (): void => {
      if (!pem.ca || !pem.cert || !pem.key) return;
      if (current) current.setSecureContext({ ca: pem.ca, cert: pem.cert, key: pem.key });
      else ready();
    };
    const onCa = (u: { caCertificate: Buffer } | null): void => {
      if (!u) return;
      pem.ca = u.caCertificate;
      update();
    };
    const onIdentity = (u: { certificate: Buffer; privateKey: Buffer } | null): void => {
      if (!u) return;
      pem.cert = u.certificate;
      pem.key = u.privateKey;
      update();
    };
    tls.addCaCertificateListener(onCa);
    tls.addIdentityCertificateListener(onIdentity);
    unsubscribe = () => {
      tls.removeCaCertificateListener(onCa);
      tls.removeIdentityCertificateListener(onIdentity);
    };
    await first;
    current = createHttpsServer(
      { ...serverOptions, ca: pem.ca, cert: pem.cert, key: pem.key, requestCert: true, rejectUnauthorized: false },
      listener,
    );
    server = current;
  } else {
    server = createHttpServer(serverOptions, listener);
  }

  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(wantedPort, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    unsubscribe();
    throw e;
  }
  // No 'clientError' listener: Node's own answers a malformed request 400 and one past the
  // request timeout 408, then closes the socket.
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(":") ? `[${host}]` : host;
  let closing: Promise<void> | undefined;
  return {
    port,
    url: `${secure ? "https" : "http"}://${urlHost}:${port}`,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        unsubscribe();
        server.close(() => resolve());
        // server.close() waits for open connections; a server-sent event stream never ends by itself.
        server.closeAllConnections();
      })),
  };
}
