import { X509Certificate } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { identityOfSubject, type CertificateSubject } from "@berth/core";
import { afterAll, describe, expect, it } from "vitest";
import { ExitCode } from "./exit-codes.js";
import { run } from "./program.js";
import { recordingIo } from "./stub-server.testkit.js";

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "berth-certs-cli-"));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/**
 * Runs berth with a controller address nothing could parse: a verb that made a client (or read the
 * global flags for one) would fail on it, so passing shows these verbs make no call.
 */
async function berth(...argv: string[]) {
  const io = recordingIo({ BERTH_CONTROLLER: "not a controller address!" });
  const code = await run(argv, io);
  return { code, out: io.out, err: io.err };
}

function subjectOf(cert: X509Certificate): CertificateSubject {
  return Object.fromEntries(cert.subject.split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
}

const certIn = (dir: string, name: string) => new X509Certificate(readFileSync(join(dir, `${name}.crt`)));
const snapshot = (dir: string) => Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), "utf8")]));

describe("berth certs init", () => {
  it("writes the CA and the controller's certificate, lists them, and says which flags take them", async () => {
    const dir = join(tempDir(), "pki");
    const r = await berth("certs", "init", "--dir", dir, "--san", "127.0.0.1,ctl-1.lab", "--san", "::1");
    expect(r.err).toBe("");
    expect(r.code).toBe(ExitCode.Ok);
    for (const f of ["ca.key", "controller.key", "ca.crt", "controller.crt"]) expect(r.out).toContain(`wrote ${join(dir, f)}\n`);
    expect(r.out).toContain(`--tls-ca ${join(dir, "ca.crt")} --tls-cert ${join(dir, "controller.crt")} --tls-key ${join(dir, "controller.key")}`);
    expect(r.out).toContain("BERTH_TLS_CA, BERTH_TLS_CERT, BERTH_TLS_KEY");
    expect(r.out).toContain(`berth certs issue host HOST_ID --dir ${dir}`);
    expect(statSync(join(dir, "ca.key")).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "controller.crt")).mode & 0o777).toBe(0o644);
    const controller = certIn(dir, "controller");
    expect(controller.checkIssued(certIn(dir, "ca"))).toBe(true);
    expect(controller.subjectAltName).toBe("IP Address:127.0.0.1, DNS:ctl-1.lab, IP Address:0:0:0:0:0:0:0:1");
    expect(identityOfSubject(subjectOf(controller))).toEqual({ role: "controller", name: "controller" });
  });

  it("prints the files as JSON with -o json", async () => {
    const dir = tempDir();
    const r = await berth("-o", "json", "certs", "init", "--dir", dir);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ written: ["ca.key", "controller.key", "ca.crt", "controller.crt"].map((f) => join(dir, f)) });
  });

  it("refuses to overwrite (exit 6, naming the file and --force), changing nothing; --force replaces", async () => {
    const dir = tempDir();
    expect((await berth("certs", "init", "--dir", dir)).code).toBe(0);
    const before = snapshot(dir);
    const r = await berth("certs", "init", "--dir", dir);
    expect(r.code).toBe(ExitCode.Conflict);
    expect(r.err).toContain(join(dir, "ca.crt"));
    expect(r.err).toContain("--force");
    expect(r.out).toBe("");
    expect(snapshot(dir)).toEqual(before);
    const forced = await berth("certs", "init", "--dir", dir, "--force");
    expect(forced.code).toBe(0);
    expect(snapshot(dir)["ca.crt"]).not.toBe(before["ca.crt"]);
  });

  it.each([
    [["--san", "not a name"], "--san: 'not a name' is neither an IP address nor a DNS name"],
    [["--days", "0"], "--days: must be from 1 to 36500 (got 0)"],
    [["--days", "soon"], "--days: 'soon' is not a whole number"],
    [["--days", "36500"], "--days: 36500 days would outlive the CA"],
  ])("refuses %j with exit 2 and writes nothing", async (flags, message) => {
    const dir = join(tempDir(), "pki");
    const r = await berth("certs", "init", "--dir", dir, ...flags);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain(`error: ${message}`);
    expect(() => statSync(dir)).toThrow();
  });

  it("requires --dir", async () => {
    const r = await berth("certs", "init");
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain("required option '--dir <dir>' not specified");
  });
});

describe("berth certs issue", () => {
  async function initialized(): Promise<string> {
    const dir = tempDir();
    expect((await berth("certs", "init", "--dir", dir)).code).toBe(0);
    return dir;
  }

  it("issues a host's certificate, and says how the agent takes it", async () => {
    const dir = await initialized();
    const r = await berth("certs", "issue", "host", "host-1", "--dir", dir, "--days", "30");
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toContain(`wrote ${join(dir, "host-1.key")}\nwrote ${join(dir, "host-1.crt")}\n`);
    expect(r.out).toContain(`--tls-ca ${join(dir, "ca.crt")} --tls-cert ${join(dir, "host-1.crt")} --tls-key ${join(dir, "host-1.key")}`);
    expect(r.out).toContain("BERTH_TLS_CA, BERTH_TLS_CERT, BERTH_TLS_KEY");
    const cert = certIn(dir, "host-1");
    expect(cert.checkIssued(certIn(dir, "ca"))).toBe(true);
    expect(identityOfSubject(subjectOf(cert))).toEqual({ role: "host", name: "host-1" });
    expect(cert.keyUsage).toEqual(["1.3.6.1.5.5.7.3.2"]);
    expect(Math.round((Date.parse(cert.validTo) - Date.now()) / 86_400_000)).toBe(30);
    expect(statSync(join(dir, "host-1.key")).mode & 0o777).toBe(0o600);
  });

  it.each([["admin"], ["viewer"]] as const)("issues an operator's certificate with --role %s", async (role) => {
    const dir = await initialized();
    const r = await berth("certs", "issue", "operator", "alice", "--role", role, "--dir", dir);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`export BERTH_TLS_CA=${join(dir, "ca.crt")} BERTH_TLS_CERT=${join(dir, "alice.crt")} BERTH_TLS_KEY=${join(dir, "alice.key")}`);
    expect(identityOfSubject(subjectOf(certIn(dir, "alice")))).toEqual({ role, name: "alice" });
  });

  it("makes the CA outlive a long-lived controller certificate, and refuses a leaf that would outlive it", async () => {
    const dir = tempDir();
    expect((await berth("certs", "init", "--dir", dir, "--days", "5000")).code).toBe(0);
    expect(Date.parse(certIn(dir, "ca").validTo)).toBeGreaterThan(Date.parse(certIn(dir, "controller").validTo));
    const r = await berth("certs", "issue", "host", "host-1", "--dir", dir, "--days", "6000");
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain("error: --days: 6000 days would outlive the CA, which expires on ");
  });

  it("issues another controller's certificate with its SANs", async () => {
    const dir = await initialized();
    const r = await berth("certs", "issue", "controller", "ctl-2", "--san", "10.0.0.2,ctl-2.lab", "--dir", dir);
    expect(r.code).toBe(0);
    const cert = certIn(dir, "ctl-2");
    expect(cert.subjectAltName).toBe("IP Address:10.0.0.2, DNS:ctl-2.lab");
    expect(cert.keyUsage?.sort()).toEqual(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]);
    expect(identityOfSubject(subjectOf(cert))).toEqual({ role: "controller", name: "ctl-2" });
  });

  it("requires --san for a controller", async () => {
    const dir = await initialized();
    const r = await berth("certs", "issue", "controller", "ctl-2", "--dir", dir);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain("required option '--san <list>' not specified");
  });

  it("refuses to overwrite a certificate (exit 6), leaving both files as they were", async () => {
    const dir = await initialized();
    expect((await berth("certs", "issue", "host", "host-1", "--dir", dir)).code).toBe(0);
    const before = snapshot(dir);
    const r = await berth("certs", "issue", "host", "host-1", "--dir", dir);
    expect(r.code).toBe(ExitCode.Conflict);
    expect(r.err).toMatch(/already exist.*--force/);
    expect(r.err).toContain(join(dir, "host-1.crt"));
    expect(snapshot(dir)).toEqual(before);
    expect((await berth("certs", "issue", "host", "host-1", "--dir", dir, "--force")).code).toBe(0);
    expect(snapshot(dir)["host-1.crt"]).not.toBe(before["host-1.crt"]);
  });

  it.each([
    [[], "required option '--role <role>' not specified"],
    [["--role", "root"], "option '--role <role>' argument 'root' is invalid. Allowed choices are admin, viewer."],
  ])("refuses an operator with %j (exit 2)", async (flags, message) => {
    const dir = await initialized();
    const r = await berth("certs", "issue", "operator", "alice", "--dir", dir, ...flags);
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain(message);
    expect(readdirSync(dir).sort()).toEqual(["ca.crt", "ca.key", "controller.crt", "controller.key"]);
  });

  it.each([
    [["host", "Host_1"], "NAME: 'Host_1' must be 1-63 lower-case letters"],
    [["host", "-x"], "error: unknown option '-x'"], // commander reads it as a flag
    [["host", "--", "-x"], "NAME: '-x' must be 1-64 letters, digits, '.', '_' or '-', not starting with '-'"],
    [["operator", "a b", "--role", "admin"], "NAME: 'a b' must be 1-64 letters, digits, '.', '_' or '-'"],
    [["operator", "ca", "--role", "admin"], "NAME: 'ca' is taken"],
    [["controller", "c", "--san", "bad san"], "--san: 'bad san' is neither an IP address nor a DNS name"],
  ])("refuses %j (exit 2)", async (args, message) => {
    const dir = await initialized();
    const r = await berth("certs", "issue", args[0]!, "--dir", dir, ...args.slice(1));
    expect(r.code).toBe(ExitCode.Usage);
    expect(r.err).toContain(message);
  });

  it("says to run berth certs init first when DIR has no CA", async () => {
    const dir = tempDir();
    const r = await berth("certs", "issue", "host", "host-1", "--dir", dir);
    expect(r.code).toBe(ExitCode.Conflict);
    expect(r.err).toBe(`error: no CA in ${dir} (${join(dir, "ca.crt")} does not exist): run 'berth certs init --dir ${dir}' first\n`);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe("berth certs --help", () => {
  it("says how, with the roles, the flags the daemons take, and examples", async () => {
    const r = await berth("certs", "--help");
    expect(r.code).toBe(0);
    for (const s of [
      "berth:controller, berth:host, berth:admin",
      "berth certs init --dir DIR",
      "--tls-ca FILE --tls-cert FILE --tls-key FILE",
      "BERTH_TLS_CA, BERTH_TLS_CERT, BERTH_TLS_KEY",
      "Examples:",
      "berth certs issue operator alice --role admin --dir ./pki",
    ]) {
      expect(r.out).toContain(s);
    }
  });

  it.each(["init", "issue", "issue host", "issue operator", "issue controller"])("berth certs %s --help has an example", async (verb) => {
    const r = await berth("certs", ...verb.split(" "), "--help");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/Examples?:\n {2}berth certs /);
  });

  it("is listed in berth --help", async () => {
    const r = await berth("--help");
    expect(r.out).toContain("certs");
    expect(r.out).toContain("berth certs init --dir ./pki");
  });
});
