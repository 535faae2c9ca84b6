/**
 * `berth vm console` end to end: a real etcd, a controller process and one agent process on the
 * fake hypervisor, the CLI as a child process with piped stdin (mutual TLS throughout). The
 * guest's banner and echo come back through agent and controller; Ctrl-] detaches (exit 0); a
 * second session is refused unless --force takes the console over (the first one then ends); a
 * viewer is refused; no daemon logs what was typed.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { HostState, VmPhase } from "@berth/api";
import { describeWithEtcd, startEtcd, type RunningEtcd } from "../support/etcd.js";
import { clusterClient, type ClusterClient } from "../support/grpc.js";
import { tlsEnv } from "../support/pki.js";
import { AGENT_BIN, CLI_BIN, CONTROLLER_BIN, freePort, Proc, waitFor } from "../support/processes.js";

/** A `berth vm console` child: its output so far, a way to type, and its exit code. */
interface ConsoleChild {
  child: ChildProcess;
  out(): string;
  err(): string;
  type(text: string | Buffer): void;
  exited: Promise<number | null>;
}

describeWithEtcd("end to end: berth vm console through the controller and the agent", () => {
  let etcd: RunningEtcd;
  let dir: string;
  let address: string;
  let controller: Proc;
  let agent: Proc;
  let client: ClusterClient;
  const children: ChildProcess[] = [];

  const vmConsole = (args: string[], as: "admin" | "viewer" = "admin"): ConsoleChild => {
    const child = spawn(process.execPath, [CLI_BIN, "--controller", address, "vm", "console", ...args], {
      env: { ...process.env, ...tlsEnv(as, as) },
      stdio: ["pipe", "pipe", "pipe"],
    });
    children.push(child);
    let out = "";
    let err = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    return { child, out: () => out, err: () => err, type: (t) => void child.stdin!.write(t), exited };
  };
  const dumpLogs = (): void => console.error([controller, agent].map((p) => p.tail(40)).join("\n"));
  const within = async <T>(what: string, p: Promise<T>, ms = 20_000): Promise<T> =>
    Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms))]);

  beforeAll(async () => {
    etcd = await startEtcd();
    dir = mkdtempSync(join(tmpdir(), "berth-e2e-console-"));
    address = `127.0.0.1:${await freePort()}`;
    controller = new Proc("controller", CONTROLLER_BIN, ["--listen", address, "--etcd", etcd.endpoint, "--report-interval", "300"]);
    agent = new Proc("host-1", AGENT_BIN, ["--host-id", "host-1", "--controller", address, "--driver", "fake", "--state-dir", join(dir, "host-1"), "--capacity", "vcpus=8,memory=16GiB,disk=200GiB"]);
    client = clusterClient(address);
    try {
      await waitFor("host-1 READY", async () => (await client.listHosts({})).hosts.some((h) => h.id === "host-1" && h.state === HostState.HOST_STATE_READY), 30_000, 200);
      await client.createVm({ spec: { name: "web-1", resources: { vcpus: 1, memoryMib: 256, diskGib: 1 }, labels: {} } });
      await waitFor("web-1 RUNNING", async () => (await client.getVm({ name: "web-1" })).vm?.status?.phase === VmPhase.VM_PHASE_RUNNING, 30_000, 200);
    } catch (e) {
      dumpLogs();
      throw e;
    }
  }, 90_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    client?.close();
    await agent?.stop();
    await controller?.stop();
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("shows the guest's banner, echoes what is typed, and detaches on Ctrl-] with exit 0; nothing typed is logged", async () => {
    const session = vmConsole(["web-1"]);
    try {
      await waitFor("the banner", () => /\[berth-fake\] web-1 booted[^\n]*\r\nweb-1 login: $/.test(session.out()), 20_000);
      expect(session.err()).toBe("Connected to VM web-1 on host-1 (escape character is ^])\n");
      session.type("zebra-hello-42");
      await waitFor("the echo", () => session.out().endsWith("web-1 login: zebra-hello-42"), 10_000);
      session.type(Buffer.from([0x1d]));
      expect(await within("the detach", session.exited)).toBe(0);
      expect(session.err()).toMatch(/Disconnected\.\n$/);
    } catch (e) {
      console.error(`console stdout: ${JSON.stringify(session.out())}\nconsole stderr: ${session.err()}`);
      dumpLogs();
      throw e;
    }
    // Opened and closed at INFO with who and where, and never the bytes.
    await waitFor("the close logged", () => controller.lines("console session closed").length > 0, 5_000);
    const opened = controller.lines("console session opened");
    expect(opened.length).toBeGreaterThan(0);
    expect(opened[0]).toMatch(/"vm":"web-1".*"host":"host-1".*"session":"[0-9a-f-]{36}"/);
    expect(controller.lines("zebra-hello-42")).toEqual([]);
    expect(agent.lines("zebra-hello-42")).toEqual([]);
  });

  it("refuses a second session (exit 6) unless --force, which takes the console over and ends the first (exit 6)", async () => {
    const first = vmConsole(["web-1"]);
    await waitFor("the first session's banner", () => first.out().includes("web-1 login: "), 20_000);

    const refused = vmConsole(["web-1"]);
    expect(await within("the refusal", refused.exited)).toBe(6);
    expect(refused.err()).toMatch(/^error: .*in use by another session/m);
    expect(refused.err()).not.toContain("Connected to VM");
    expect(first.child.exitCode).toBeNull();

    const forced = vmConsole(["web-1", "--force"]);
    await waitFor("the forced session's banner", () => forced.out().includes("web-1 login: "), 20_000);
    expect(await within("the first session's end", first.exited)).toBe(6);
    expect(first.err()).toMatch(/^error: .*taken over by another session/m);
    expect(first.err()).toContain("Disconnected.");

    // The forced one has the console now: it echoes.
    forced.type("still-mine");
    await waitFor("the forced echo", () => forced.out().endsWith("still-mine"), 10_000);
    forced.child.stdin!.end();
    expect(await within("the forced session's end", forced.exited)).toBe(0);
  });

  it("refuses a viewer's certificate (PERMISSION_DENIED: exit 12)", async () => {
    const viewer = vmConsole(["web-1"], "viewer");
    expect(await within("the refusal", viewer.exited)).toBe(12);
    expect(viewer.err()).toContain("AttachConsole needs role admin; 'viewer' has role viewer");
  });

  it("answers an unknown VM with exit 3", async () => {
    const unknown = vmConsole(["no-such-vm"]);
    expect(await within("the refusal", unknown.exited)).toBe(3);
    expect(unknown.err()).toContain("vm 'no-such-vm' not found");
  });
});
