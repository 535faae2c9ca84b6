/**
 * The admin HTTP server over real sockets: routing (exact beats prefix, HEAD for GET, 404, 405
 * with Allow), errors (a BerthError's HTTP analogue, a plain throw a 500 with no stack), the body
 * limit (413), security headers, the request timeout that spares long responses, close() ending a
 * server-sent event stream, and HTTPS where only a client certificate the cluster's CA verified
 * names an identity.
 */
import { X509Certificate } from "node:crypto";
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { connect } from "node:net";
import { copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startAdminServer, type AdminRoute, type AdminServer } from "./admin-http.js";
import { BerthError, ErrorCode } from "./errors.js";
import { createCertificateAuthority, issueCertificate, type CertificateAndKey } from "./pki.js";
import { issueByHand, TestPki } from "./pki.testkit.js";
import { ReloadingTlsIdentity } from "./tls.js";

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  /** The server certificate's serial (HTTPS only). */
  serverSerial?: string;
}

interface ClientCert {
  cert?: string | Buffer;
  key?: string | Buffer;
  ca?: string | Buffer;
}

/** One request with node:http or node:https (a fresh connection each: no agent reuse). */
function send(url: string, o: { method?: string; path?: string; body?: string | Buffer; headers?: Record<string, string>; tls?: ClientCert } = {}): Promise<Reply> {
  const target = new URL(o.path ?? "/", url);
  const request = target.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      target,
      { method: o.method ?? "GET", headers: o.headers, agent: false, ...(o.tls ?? {}) },
      (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const peer = "getPeerCertificate" in res.socket ? (res.socket as import("node:tls").TLSSocket).getPeerCertificate() : undefined;
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8"), ...(peer?.serialNumber ? { serverSerial: peer.serialNumber } : {}) });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(o.body);
  });
}

const json = (r: Reply): Record<string, unknown> => JSON.parse(r.body) as Record<string, unknown>;

const servers: AdminServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});
async function serve(routes: AdminRoute[], more: Partial<Parameters<typeof startAdminServer>[0]> = {}): Promise<AdminServer> {
  const s = await startAdminServer({ listen: "127.0.0.1:0", routes, ...more });
  servers.push(s);
  return s;
}

const text = (body: string): AdminRoute["handle"] => (_req, res) => {
  res.setHeader("Content-Type", "text/plain");
  res.end(body);
};

describe("admin HTTP: routing", () => {
  it("exact paths, prefixes (exact beats prefix, the longest prefix wins), HEAD for GET, query parsed", async () => {
    const seen: string[] = [];
    const s = await serve([
      { method: "GET", path: "/metrics", handle: text("metrics") },
      { method: "GET", path: "/assets/*", handle: (req, res) => { res.end(`asset ${req.url.pathname}`); } },
      { method: "GET", path: "/assets/special", handle: text("special") },
      { method: "GET", path: "/assets/img/*", handle: text("image") },
      { method: "GET", path: "/q", handle: (req, res) => { seen.push(`${req.method} ${req.url.searchParams.get("host")}`); res.end("q"); } },
    ]);
    expect(s.url).toBe(`http://127.0.0.1:${s.port}`);
    expect((await send(s.url, { path: "/metrics" })).body).toBe("metrics");
    expect((await send(s.url, { path: "/assets/app.js" })).body).toBe("asset /assets/app.js");
    expect((await send(s.url, { path: "/assets/special" })).body).toBe("special");
    expect((await send(s.url, { path: "/assets/img/a.png" })).body).toBe("image");
    // The prefix keeps its slash: "/assets" itself is not under "/assets/*".
    expect((await send(s.url, { path: "/assets" })).status).toBe(404);
    const head = await send(s.url, { method: "HEAD", path: "/metrics" });
    expect(head.status).toBe(200);
    expect(head.body).toBe("");
    await send(s.url, { path: "/q?host=h-1" });
    await send(s.url, { method: "HEAD", path: "/q?host=h-2" });
    expect(seen).toEqual(["GET h-1", "HEAD h-2"]);
  });

  it("an unknown path is 404 JSON; a known path with another method 405 with Allow; a target that is not a path 400", async () => {
    const s = await serve([
      { method: "GET", path: "/healthz", handle: text("ok") },
      { method: "POST", path: "/action", handle: text("done") },
    ]);
    const missing = await send(s.url, { path: "/nope" });
    expect(missing.status).toBe(404);
    expect(missing.headers["content-type"]).toMatch(/^application\/json/);
    expect(json(missing)).toEqual({ error: "no such path: /nope" });
    const wrong = await send(s.url, { method: "POST", path: "/healthz" });
    expect(wrong.status).toBe(405);
    expect(wrong.headers.allow).toBe("GET, HEAD");
    expect(json(wrong).error).toBe("POST is not allowed on /healthz");
    const get = await send(s.url, { method: "GET", path: "/action" });
    expect(get.status).toBe(405);
    expect(get.headers.allow).toBe("POST");
    expect((await send(s.url, { method: "POST", path: "/action" })).body).toBe("done");
    // An absolute-form target naming another host is not served as one of these paths.
    const absolute = await rawRequest(s.port, "GET http://elsewhere/healthz HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n");
    expect(absolute).toMatch(/^HTTP\/1\.1 400/);
  });

  it("security headers on every response, errors included; a route may set its own Content-Security-Policy", async () => {
    const s = await serve([
      { method: "GET", path: "/", handle: text("page") },
      { method: "GET", path: "/own", handle: (_req, res) => { res.setHeader("Content-Security-Policy", "default-src 'self'; img-src data:"); res.end("own"); } },
    ]);
    for (const path of ["/", "/nope"]) {
      const r = await send(s.url, { path });
      expect(r.headers["x-content-type-options"]).toBe("nosniff");
      expect(r.headers["referrer-policy"]).toBe("no-referrer");
      expect(r.headers["content-security-policy"]).toBe("default-src 'self'");
    }
    expect((await send(s.url, { path: "/own" })).headers["content-security-policy"]).toBe("default-src 'self'; img-src data:");
  });

  it("a bad listen address is INVALID_ARGUMENT naming admin_listen; a busy port rejects", async () => {
    for (const listen of ["7480", "localhost", "127.0.0.1:99999", ""]) {
      const e = await startAdminServer({ listen, routes: [] }).then(() => undefined, (err: unknown) => err);
      expect(e).toBeInstanceOf(BerthError);
      expect((e as BerthError).code).toBe(ErrorCode.InvalidArgument);
      expect((e as BerthError).field).toBe("admin_listen");
    }
    const s = await serve([]);
    await expect(startAdminServer({ listen: `127.0.0.1:${s.port}`, routes: [] })).rejects.toMatchObject({ code: "EADDRINUSE" });
  });
});

/** Writes `raw` to the port and returns everything the server sends until it closes. */
function rawRequest(port: number, raw: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(raw));
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    socket.on("error", reject);
  });
}

describe("admin HTTP: errors and bodies", () => {
  it("a BerthError is its HTTP analogue with {error, code}; anything else 500 with no stack, logged", async () => {
    const warnings: object[] = [];
    const cases: [string, number][] = [
      [ErrorCode.InvalidArgument, 400],
      [ErrorCode.NotFound, 404],
      [ErrorCode.PermissionDenied, 403],
      [ErrorCode.Unauthenticated, 401],
      [ErrorCode.FailedPrecondition, 409],
      [ErrorCode.Unavailable, 503],
      [ErrorCode.Conflict, 409],
      [ErrorCode.AlreadyExists, 409],
      [ErrorCode.NotLeader, 503],
      [ErrorCode.Busy, 503],
      [ErrorCode.ResourceExhausted, 429],
      [ErrorCode.DeadlineExceeded, 504],
    ];
    const s = await serve(
      [
        { method: "GET", path: "/berth/*", handle: (req) => { throw new BerthError(req.url.pathname.slice("/berth/".length) as ErrorCode, "told you so"); } },
        { method: "GET", path: "/plain", handle: () => { throw new Error("secret internals at /srv/x.ts:12"); } },
        { method: "GET", path: "/async", handle: async () => { await Promise.resolve(); throw new TypeError("undefined is not a function"); } },
        { method: "GET", path: "/internal", handle: () => { throw new BerthError(ErrorCode.Internal, "the store said something private"); } },
      ],
      { log: { info: () => {}, warn: (o) => warnings.push(o) } },
    );
    for (const [code, status] of cases) {
      const r = await send(s.url, { path: `/berth/${code}` });
      expect(r.status, code).toBe(status);
      expect(json(r)).toEqual({ error: "told you so", code });
    }
    for (const path of ["/plain", "/async"]) {
      const r = await send(s.url, { path });
      expect(r.status).toBe(500);
      expect(json(r)).toEqual({ error: "internal error" });
      expect(r.body).not.toContain("secret");
      expect(r.body).not.toContain("at ");
    }
    const internal = await send(s.url, { path: "/internal" });
    expect(internal.status).toBe(500);
    expect(json(internal)).toEqual({ error: "internal error", code: ErrorCode.Internal });
    // Every 500 is logged with its error, for the operator (not the client) to read.
    const logged = warnings.map((w) => ((w as { err: Error }).err).message);
    expect(logged).toEqual(expect.arrayContaining(["secret internals at /srv/x.ts:12", "undefined is not a function", "the store said something private", "told you so"]));
  });

  it("body() reads up to 64 KiB; more is 413 (declared or streamed) and body() rejects", async () => {
    const outcomes: string[] = [];
    const s = await serve([
      {
        method: "POST",
        path: "/echo",
        handle: async (req, res) => {
          try {
            const b = await req.body();
            outcomes.push(`read ${b.length}`);
            res.end(`got ${b.length} bytes`);
          } catch (e) {
            outcomes.push("rejected");
            throw e;
          }
        },
      },
    ]);
    const ok = await send(s.url, { method: "POST", path: "/echo", body: Buffer.alloc(64 * 1024, 1) });
    expect(ok.body).toBe(`got ${64 * 1024} bytes`);
    const declared = await send(s.url, { method: "POST", path: "/echo", body: Buffer.alloc(64 * 1024 + 1, 1) });
    expect(declared.status).toBe(413);
    expect(json(declared).error).toMatch(/over 65536 bytes/);
    // Chunked, no Content-Length: counted as it arrives.
    const streamed = await rawRequest(
      s.port,
      `POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${(40 * 1024).toString(16)}\r\n${"a".repeat(40 * 1024)}\r\n${(40 * 1024).toString(16)}\r\n${"a".repeat(40 * 1024)}\r\n0\r\n\r\n`,
    );
    expect(streamed).toMatch(/^HTTP\/1\.1 413/);
    expect(outcomes).toEqual([`read ${64 * 1024}`, "rejected", "rejected"]);
  });
});

describe("admin HTTP: long responses", () => {
  /** A server-sent event stream: one event now, one every 50 ms, never ending by itself. */
  const sse: AdminRoute = {
    method: "GET",
    path: "/events",
    handle: (_req, res) => {
      res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-store" });
      res.write("data: hello\n\n");
      const t = setInterval(() => res.write("data: tick\n\n"), 50);
      res.on("close", () => clearInterval(t));
    },
  };

  /** Opens the stream; resolves with the response once the first event arrived. */
  function openStream(url: string): Promise<{ res: IncomingMessage; received: () => string; ended: Promise<void> }> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(new URL("/events", url), { agent: false }, (res) => {
        let got = "";
        const ended = new Promise<void>((r) => res.on("close", () => r()));
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          const first = got === "";
          got += c;
          if (first) resolve({ res, received: () => got, ended });
        });
        res.on("error", () => {});
      });
      req.on("error", reject);
      req.end();
    });
  }

  it("the request timeout bounds receiving a request, not a long response: a stream outlives it, a stalled request does not", async () => {
    const s = await serve([sse, { method: "POST", path: "/slow", handle: async (req, res) => { await req.body(); res.end("never"); } }], { timeouts: { request: 200, headers: 200, check: 20 } });
    const stream = await openStream(s.url);
    // A request that sends headers and then stalls in its body is cut off with 408 ...
    const stalled = await new Promise<string>((resolve, reject) => {
      const socket = connect(s.port, "127.0.0.1", () => socket.write("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"));
      let got = "";
      socket.on("data", (c: Buffer) => (got += c.toString("utf8")));
      socket.on("close", () => resolve(got));
      socket.on("error", reject);
    });
    expect(stalled).toMatch(/^HTTP\/1\.1 408/);
    // ... while the stream, open for longer than that, still receives events.
    const before = stream.received().length;
    await new Promise((r) => setTimeout(r, 300));
    expect(stream.res.destroyed).toBe(false);
    expect(stream.received().length).toBeGreaterThan(before);
    expect(stream.received()).toMatch(/^data: hello\n\n(data: tick\n\n)+/);
  });

  it("close() ends an open server-sent event stream and resolves; a second close() is the same", async () => {
    const s = await startAdminServer({ listen: "127.0.0.1:0", routes: [sse] });
    const stream = await openStream(s.url);
    const closing = s.close();
    await stream.ended;
    await closing;
    await s.close();
    expect(stream.res.complete).toBe(false);
    await expect(send(s.url, { path: "/events" })).rejects.toMatchObject({ code: "ECONNREFUSED" });
  });
});

describe("admin HTTPS: client identity", () => {
  const dirs: string[] = [];
  let pki: TestPki;
  let otherCa: CertificateAndKey;
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  beforeAll(async () => {
    pki = await TestPki.shared();
    otherCa = await createCertificateAuthority({ commonName: "a foreign CA" });
  });

  /** The controller's TLS files copied to a directory of this test (so they can be replaced). */
  async function serverIdentity(): Promise<ReloadingTlsIdentity> {
    const f = await pki.files("controller", "admin-http-test");
    const dir = mkdtempSync(join(tmpdir(), "berth-admin-http-"));
    dirs.push(dir);
    const files = { ca: join(dir, "ca.crt"), cert: join(dir, "c.crt"), key: join(dir, "c.key") };
    copyFileSync(f.ca, files.ca);
    copyFileSync(f.cert, files.cert);
    copyFileSync(f.key, files.key);
    // Polled by hand in the test, not by the timer.
    return new ReloadingTlsIdentity(files, {}, 3_600_000);
  }

  const whoami: AdminRoute = {
    method: "GET",
    path: "/whoami",
    handle: (req, res) => {
      res.setHeader("Content-Type", "application/json");
      res.end(JSON.stringify({ secure: req.secure, identity: req.identity ?? null }));
    },
  };

  it("a client certificate of the cluster's CA naming a role is the identity; none, a foreign one or one naming no role is no one", async () => {
    const tls = await serverIdentity();
    const s = await serve([whoami], { tls });
    expect(s.url).toBe(`https://127.0.0.1:${s.port}`);
    const ca = (await pki.pem("admin", "ann")).ca;
    const admin = await pki.pem("admin", "ann");
    const viewer = await pki.pem("viewer", "vic");
    const foreign = await issueCertificate(otherCa, { role: "admin", name: "mallory" });
    const noRole = await issueByHand(pki.ca, { subject: { CN: "web", O: ["acme:ops"] } });

    expect(json(await send(s.url, { path: "/whoami", tls: { ca, cert: admin.cert, key: admin.key } }))).toEqual({ secure: true, identity: { role: "admin", name: "ann" } });
    expect(json(await send(s.url, { path: "/whoami", tls: { ca, cert: viewer.cert, key: viewer.key } }))).toEqual({ secure: true, identity: { role: "viewer", name: "vic" } });
    expect(json(await send(s.url, { path: "/whoami", tls: { ca } }))).toEqual({ secure: true, identity: null });
    expect(json(await send(s.url, { path: "/whoami", tls: { ca, cert: foreign.certPem, key: foreign.keyPem } }))).toEqual({ secure: true, identity: null });
    expect(json(await send(s.url, { path: "/whoami", tls: { ca, cert: noRole.certPem, key: noRole.keyPem } }))).toEqual({ secure: true, identity: null });
    // The server's certificate is verified by the client against the cluster's CA (no
    // rejectUnauthorized: false anywhere on the client side).
    await expect(send(s.url, { path: "/whoami", tls: { ca: otherCa.certPem } })).rejects.toThrow();
    tls.close();
  });

  it("plain HTTP: not secure, no identity", async () => {
    const s = await serve([whoami]);
    expect(json(await send(s.url, { path: "/whoami" }))).toEqual({ secure: false, identity: null });
  });

  it("a reloaded identity serves new connections with the new certificate, no restart", async () => {
    const tls = await serverIdentity();
    const s = await serve([whoami], { tls });
    const ca = (await pki.pem("admin", "ann")).ca;
    const before = await send(s.url, { path: "/whoami", tls: { ca } });
    expect(before.serverSerial).toBe(new X509Certificate(readPem(tls.files.cert)).serialNumber);
    const next = await issueCertificate(pki.ca, { role: "controller", name: "admin-http-test", sans: ["127.0.0.1"] });
    writeFileSync(`${tls.files.key}.tmp`, next.keyPem, { mode: 0o600 });
    writeFileSync(`${tls.files.cert}.tmp`, next.certPem);
    renameSync(`${tls.files.key}.tmp`, tls.files.key);
    renameSync(`${tls.files.cert}.tmp`, tls.files.cert);
    expect(tls.poll()).toBe(true);
    const after = await send(s.url, { path: "/whoami", tls: { ca } });
    expect(after.serverSerial).toBe(new X509Certificate(next.certPem).serialNumber);
    expect(after.serverSerial).not.toBe(before.serverSerial);
    tls.close();
  });
});

const readPem = (path: string): string => readFileSync(path, "utf8");
