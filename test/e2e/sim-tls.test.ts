/**
 * berth-sim over mutual TLS: each hollow host presents its own host certificate from --tls-dir
 * (the `berth certs` layout), so the controller knows every one by its certificate; a sim without
 * --tls-dir or --insecure refuses to start. And a controller run --insecure says so loudly.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { afterAll, describe, expect, it } from "vitest";
import { credentials, Metadata } from "@grpc/grpc-js";
import { ClusterServiceClient, HostState } from "@berth/api";
import { deadlineIn, grpcClientOptions, initPkiDirectory, issueToDirectory } from "@berth/core";
import { AGENT_BIN, CONTROLLER_BIN, freePort, Proc, SIM_BIN, waitFor } from "../support/processes.js";

describe("berth-sim over mutual TLS", () => {
  const dir = mkdtempSync(join(tmpdir(), "berth-sim-tls-"));
  const procs: Proc[] = [];
  afterAll(async () => {
    for (const p of procs) await p.stop("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  it("every hollow host connects with its own certificate and is READY", { timeout: 60_000 }, async () => {
    const tls = join(dir, "tls");
    await initPkiDirectory(tls, { sans: ["127.0.0.1"] });
    for (const h of ["sim-0001", "sim-0002", "sim-0003"]) await issueToDirectory(tls, { role: "host", name: h });
    await issueToDirectory(tls, { role: "viewer", name: "viewer" });
    const address = `127.0.0.1:${await freePort()}`;
    const files = (name: string) => ["--tls-ca", join(tls, "ca.crt"), "--tls-cert", join(tls, `${name}.crt`), "--tls-key", join(tls, `${name}.key`)];
    procs.push(new Proc("controller", CONTROLLER_BIN, ["--listen", address, "--report-interval", "500", ...files("controller")]));
    procs.push(new Proc("sim", SIM_BIN, ["--hosts", "3", "--controller", address, "--tls-dir", tls, "--start-spread", "100"]));
    // This PKI is not the run's test CA: read as its own viewer.
    const c = new ClusterServiceClient(address, credentials.createSsl(readFileSync(join(tls, "ca.crt")), readFileSync(join(tls, "viewer.key")), readFileSync(join(tls, "viewer.crt"))), grpcClientOptions());
    try {
      const ready = await waitFor(
        "three READY hosts",
        () =>
          new Promise<number>((resolve, reject) =>
            c.listHosts({}, new Metadata(), { deadline: deadlineIn(5_000) }, (e, r) => (e ? reject(e) : resolve(r.hosts.filter((h) => h.state === HostState.HOST_STATE_READY).length))),
          ).then((n) => n === 3),
        30_000,
        250,
      );
      expect(ready).toBe(true);
    } finally {
      c.close();
    }
  });

  it("every daemon says its version", () => {
    for (const [bin, name] of [[CONTROLLER_BIN, "berth-controller"], [AGENT_BIN, "berth-agent"], [SIM_BIN, "berth-sim"]] as const) {
      const r = spawnSync(process.execPath, [bin, "--version"], { encoding: "utf8", timeout: 20_000 });
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^${name} \\d+\\.\\d+\\.\\d+\\n$`));
    }
  });

  it("a sim given neither --tls-dir nor --insecure refuses to start, saying so; a plaintext controller warns that it is", async () => {
    const r = spawnSync(process.execPath, [SIM_BIN, "--hosts", "1", "--controller", "127.0.0.1:1"], { encoding: "utf8", timeout: 20_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("--tls-dir DIR (one host certificate per hollow host) or --insecure (plaintext) is required");
    const plain = new Proc("plain", CONTROLLER_BIN, ["--listen", `127.0.0.1:${await freePort()}`, "--insecure"]);
    procs.push(plain);
    await waitFor("the plaintext warning", () => plain.lines("serving PLAINTEXT (--insecure)").length > 0, 20_000);
    const refused = spawnSync(process.execPath, [CONTROLLER_BIN, "--listen", `127.0.0.1:${await freePort()}`], { encoding: "utf8", timeout: 20_000, env: { ...process.env, BERTH_TLS_CA: "", BERTH_TLS_CERT: "", BERTH_TLS_KEY: "" } });
    expect(refused.status).toBe(2);
    expect(refused.stderr).toContain("TLS is required: give --tls-ca FILE --tls-cert FILE --tls-key FILE");
  });
});
