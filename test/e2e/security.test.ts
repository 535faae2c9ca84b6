/**
 * A lab deployment's security end to end: etcd with TLS and client-certificate authentication plus
 * a password user (only the controller holds those credentials), the controller and agents on
 * mutual TLS, an admin and a viewer through the CLI; and no secret in any log of the whole run.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createCertificateAuthority, issueCertificate } from "@berth/core";
import { AGENT_BIN, CLI_BIN, CONTROLLER_BIN, freePort, Proc, waitFor } from "../support/processes.js";
import { tlsEnv, tlsFiles } from "../support/pki.js";
import { describeRequiring } from "../support/requirements.js";
import { etcdAvailable } from "../support/etcd.js";

const etcdctl = process.env.ETCDCTL_BIN || "etcdctl";
const etcdctlMissing = (): string | undefined => {
  const r = spawnSync(etcdctl, ["version"], { encoding: "utf8", timeout: 10_000 });
  return r.error || r.status !== 0 ? `cannot run '${etcdctl}' (install Debian's etcd-client, or set ETCDCTL_BIN)` : undefined;
};
const etcd = etcdAvailable();

/** The etcd user's password: it must appear in no log line of the run. */
const PASSWORD = `pw-${Math.random().toString(36).slice(2)}-never-logged`;

describeRequiring("security: etcd over TLS with client certificates and a password, mTLS daemons, roles, no secret logged", etcd.ok ? etcdctlMissing() : etcd.reason, () => {
  const dir = mkdtempSync(join(tmpdir(), "berth-security-"));
  let etcdProc: ChildProcess | undefined;
  let endpoint = "";
  const procs: Proc[] = [];
  /** Every line any Berth process printed, whole (Proc keeps only a tail). */
  const output: string[] = [];
  const keep = (p: Proc): Proc => {
    procs.push(p);
    p.child.stdout!.on("data", (d: Buffer) => output.push(d.toString()));
    p.child.stderr!.on("data", (d: Buffer) => output.push(d.toString()));
    return p;
  };
  const files = { ca: join(dir, "etcd-ca.crt"), serverCert: join(dir, "etcd-server.crt"), serverKey: join(dir, "etcd-server.key"), clientCert: join(dir, "etcd-client.crt"), clientKey: join(dir, "etcd-client.key") };
  const ctl = (...args: string[]) =>
    spawnSync(etcdctl, [`--endpoints=${endpoint}`, `--cacert=${files.ca}`, `--cert=${files.clientCert}`, `--key=${files.clientKey}`, ...args], { encoding: "utf8", env: { ...process.env, ETCDCTL_API: "3" }, timeout: 30_000 });
  const cli = (as: "admin" | "viewer", address: string, ...args: string[]) => {
    const r = spawnSync(process.execPath, [CLI_BIN, "--controller", address, ...args], { encoding: "utf8", env: { ...process.env, ...tlsEnv(as, as) }, timeout: 60_000 });
    output.push(r.stdout, r.stderr);
    return r;
  };
  let address = "";

  beforeAll(async () => {
    // etcd's own CA, apart from Berth's: etcd takes a client certificate's CN as its user, so a CA
    // that also signs Berth's hosts would let every host's certificate into etcd.
    const ca = await createCertificateAuthority({ commonName: "etcd test CA" });
    const server = await issueCertificate(ca, { role: "controller", name: "etcd", sans: ["127.0.0.1", "localhost"] });
    const client = await issueCertificate(ca, { role: "controller", name: "root", sans: ["localhost"] });
    writeFileSync(files.ca, ca.certPem);
    writeFileSync(files.serverCert, server.certPem);
    writeFileSync(files.serverKey, server.keyPem, { mode: 0o600 });
    writeFileSync(files.clientCert, client.certPem);
    writeFileSync(files.clientKey, client.keyPem, { mode: 0o600 });
    const [clientPort, peerPort] = [await freePort(), await freePort()];
    endpoint = `https://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    etcdProc = spawn(process.env.ETCD_BIN || "etcd", [
      "--name=sec", `--data-dir=${join(dir, "etcd")}`,
      `--listen-client-urls=${endpoint}`, `--advertise-client-urls=${endpoint}`,
      `--listen-peer-urls=${peer}`, `--initial-advertise-peer-urls=${peer}`, `--initial-cluster=sec=${peer}`,
      `--cert-file=${files.serverCert}`, `--key-file=${files.serverKey}`, `--trusted-ca-file=${files.ca}`, "--client-cert-auth",
      "--log-level=error", "--logger=zap",
    ], { stdio: "ignore" });
    await waitFor("etcd over TLS", () => ctl("endpoint", "health").status === 0, 20_000, 200);
    // A password user with the root role, then authentication on.
    for (const args of [["user", "add", `root:${PASSWORD}`], ["user", "grant-role", "root", "root"], ["auth", "enable"]]) {
      const r = ctl(...args);
      expect(r.status, `etcdctl ${args[0]} ${args[1]}: ${r.stderr}`).toBe(0);
    }
    // A client without a certificate is refused by etcd itself.
    const bare = spawnSync(etcdctl, [`--endpoints=${endpoint}`, `--cacert=${files.ca}`, "--command-timeout=3s", "get", "x"], { encoding: "utf8", env: { ...process.env, ETCDCTL_API: "3" }, timeout: 30_000 });
    expect(bare.status).not.toBe(0);

    address = `127.0.0.1:${await freePort()}`;
    keep(
      new Proc("controller", CONTROLLER_BIN, ["--listen", address, "--etcd", endpoint, "--etcd-ca", files.ca, "--etcd-cert", files.clientCert, "--etcd-key", files.clientKey, "--etcd-user", "root", "--report-interval", "300"], {
        BERTH_ETCD_PASSWORD: PASSWORD,
      }),
    );
    for (const h of ["host-1", "host-2"]) keep(new Proc(h, AGENT_BIN, ["--host-id", h, "--controller", address, "--driver", "fake", "--state-dir", join(dir, h)]));
    await waitFor("two READY hosts", () => {
      const r = cli("viewer", address, "host", "list", "-o", "json");
      return r.status === 0 && (JSON.parse(r.stdout) as { state: string }[]).filter((h) => /READY/.test(JSON.stringify(h))).length === 2;
    }, 30_000, 250);
  }, 90_000);

  afterAll(async () => {
    for (const p of procs) await p.stop("SIGKILL");
    etcdProc?.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  it("an admin creates and deletes through the CLI; a viewer reads and is refused changes (exit 12, naming the role)", () => {
    expect(cli("admin", address, "vm", "create", "sec-1", "--vcpus", "1", "--memory", "256MiB", "--disk", "1GiB", "--wait").status).toBe(0);
    const list = cli("viewer", address, "vm", "list", "-o", "json");
    expect(list.status).toBe(0);
    expect(list.stdout).toContain("sec-1");
    const refused = cli("viewer", address, "vm", "delete", "sec-1");
    expect(refused.status).toBe(12);
    expect(refused.stderr).toMatch(/DeleteVm needs role admin; 'viewer' has role viewer/);
    expect(cli("viewer", address, "vm", "list", "-o", "json").stdout).toContain("sec-1");
    expect(cli("admin", address, "vm", "delete", "sec-1", "--wait").status).toBe(0);
  });

  it("the controller's state is in etcd, readable only with credentials; a controller with a wrong password does not start", async () => {
    const r = ctl("--user", `root:${PASSWORD}`, "get", "--prefix", "--keys-only", "/berth/");
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("/berth/v1/hosts/host-1");
    const wrong = new Proc("wrong-password", CONTROLLER_BIN, ["--listen", `127.0.0.1:${await freePort()}`, "--etcd", endpoint, "--etcd-ca", files.ca, "--etcd-cert", files.clientCert, "--etcd-key", files.clientKey, "--etcd-user", "root"], {
      BERTH_ETCD_PASSWORD: "not-the-password",
    });
    keep(wrong);
    const code = await Promise.race([wrong.exited, new Promise((r) => setTimeout(() => r("still running"), 20_000))]);
    expect(code).toBe(1);
    // Asked for a password with none given: a usage error naming where it comes from.
    const none = spawnSync(process.execPath, [CONTROLLER_BIN, "--insecure", "--etcd", endpoint, "--etcd-user", "root"], { encoding: "utf8", env: { ...process.env, BERTH_ETCD_PASSWORD: "" }, timeout: 20_000 });
    expect(none.status).toBe(2);
    expect(none.stderr).toContain("--etcd-user needs a password: set BERTH_ETCD_PASSWORD or give --etcd-password-file FILE");
  });

  it("no secret is in any log of the run: not the etcd password, not a private key", () => {
    const text = output.join("");
    // The logs were captured (debug level): every daemon's start, the hosts connecting, the VM's commands.
    expect(text).toContain("serving mutual TLS");
    expect(text).toContain("host connected");
    expect(text).toContain("using etcd");
    expect(text).not.toContain(PASSWORD);
    expect(text).not.toContain("PRIVATE KEY");
    const keyLines = [files.clientKey, files.serverKey, tlsFiles("controller", "controller").key, tlsFiles("host", "host-1").key, tlsFiles("admin", "admin").key]
      .flatMap((f) => readFileSync(f, "utf8").split("\n"))
      .filter((l) => l.length >= 20 && !l.startsWith("-----"));
    expect(keyLines.length).toBeGreaterThan(5);
    for (const l of keyLines) expect(text).not.toContain(l);
  });
});
