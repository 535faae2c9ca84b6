/**
 * The libvirt driver end to end, as a lab operator runs it: a real etcd, a controller process, one
 * `berth-agent --driver libvirt` process on this machine's libvirtd, and the `berth` CLI. A VM
 * created through the CLI must be a running qemu domain in `virsh list`; an agent restart must
 * recreate nothing; a qemu killed behind Berth's back must be reported and started again; a
 * delete must leave nothing behind.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { HostState, VmPhase } from "@berth/api";
import { etcdAvailable, startEtcd, type RunningEtcd } from "../support/etcd.js";
import { clusterClient, type ClusterClient } from "../support/grpc.js";
import { describeWithLibvirt, killQemu, qemuPid, removeDomains, startLibvirtd, stopLibvirtd } from "../support/libvirt.js";
import { AGENT_BIN, CLI_BIN, CONTROLLER_BIN, defaultTlsEnv, freePort, Proc, waitFor } from "../support/processes.js";

const run = Date.now().toString(36).slice(-5);
const vmName = `e2e-${run}`;
const domainName = `berth-${vmName}`;

function exec(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 120_000, env: { ...process.env, LC_ALL: "C", ...defaultTlsEnv(args[0] ?? "", args.slice(1), {}) } }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
  });
}

const etcdCheck = etcdAvailable();
await describeWithLibvirt("end to end: berth-agent --driver libvirt on a real libvirtd", (target) => {
  let etcd: RunningEtcd;
  let dir: string;
  let address: string;
  let controller: Proc;
  let agent: Proc;
  let client: ClusterClient;

  const virsh = (...args: string[]) => exec("virsh", ["-q", "-c", target.uri, ...args]);
  const berth = (...args: string[]) => exec(process.execPath, [CLI_BIN, "--controller", address, ...args]);
  const startAgent = (): Proc =>
    new Proc("agent", AGENT_BIN, [
      "--host-id", "hv-1",
      "--controller", address,
      "--driver", "libvirt",
      "--libvirt-uri", target.uri,
      "--storage-pool", target.storagePool,
      "--domain-type", target.domainType,
      "--state-dir", join(dir, "agent"),
    ]);
  const vm = async () => (await client.getVm({ name: vmName })).vm;
  const dumpLogs = (): void => console.error([controller, agent].map((p) => p?.tail(40)).join("\n"));

  beforeAll(async () => {
    etcd = await startEtcd();
    dir = mkdtempSync(join(tmpdir(), "berth-e2e-libvirt-"));
    address = `127.0.0.1:${await freePort()}`;
    controller = new Proc("controller", CONTROLLER_BIN, ["--listen", address, "--etcd", etcd.endpoint, "--report-interval", "300"]);
    agent = startAgent();
    client = clusterClient(address);
    try {
      await waitFor("the libvirt host to be ready", async () => {
        const { hosts } = await client.listHosts({});
        return hosts.some((h) => h.id === "hv-1" && h.state === HostState.HOST_STATE_READY && h.driver === "libvirt");
      });
    } catch (e) {
      dumpLogs();
      throw e;
    }
  }, 60_000);

  afterAll(async () => {
    client?.close();
    await agent?.stop();
    await controller?.stop();
    await etcd?.stop();
    await removeDomains(domainName, target.storagePool);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it("refuses at start a storage pool libvirt does not have, naming the option", async () => {
    const r = await exec(process.execPath, [AGENT_BIN, "--host-id", "hv-2", "--controller", address, "--driver", "libvirt", "--libvirt-uri", target.uri, "--storage-pool", `no-such-pool-${run}`, "--state-dir", join(dir, "agent-2")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/libvirt\.storage_pool: storage pool 'no-such-pool-\w+' is not usable/);
  });

  it("reports the host's real capacity and facts", async () => {
    const { host } = await client.getHost({ id: "hv-1" });
    expect(host?.capacity?.vcpus).toBeGreaterThanOrEqual(1);
    expect(host?.capacity?.memoryMib).toBeGreaterThan(512);
    expect(host?.facts?.hypervisorVersion).toMatch(/QEMU|libvirt/i);
    expect(host?.hypervisor?.available).toBe(true);
  });

  it("turns `berth vm create --wait` into a running qemu domain in `virsh list`", { timeout: 120_000 }, async () => {
    const created = await berth("vm", "create", vmName, "--vcpus", "1", "--memory", "64MiB", "--disk", "1GiB", "--wait", "--wait-timeout", "90");
    if (created.code !== 0) dumpLogs();
    expect(created.code, created.stderr).toBe(0);
    const running = await virsh("list", "--name");
    expect(running.stdout.split("\n").map((s) => s.trim())).toContain(domainName);
    expect(qemuPid(domainName)).toBeGreaterThan(0);
    const xml = (await virsh("dumpxml", domainName)).stdout;
    expect(xml).toContain(`<uuid>${(await vm())!.id}</uuid>`);
    expect((await vm())?.status?.phase).toBe(VmPhase.VM_PHASE_RUNNING);
  });

  it("recreates nothing when the agent restarts under running domains", { timeout: 60_000 }, async () => {
    const pid = qemuPid(domainName);
    await agent.stop();
    agent = startAgent();
    await waitFor("the agent to say Hello again", () => agent.lines("connected").length > 0, 30_000);
    await waitFor("the VM to be reported running", async () => (await vm())?.status?.phase === VmPhase.VM_PHASE_RUNNING, 30_000);
    expect(qemuPid(domainName)).toBe(pid);
    expect(agent.lines('"action":"create"')).toEqual([]);
  });

  it("keeps the VM through a libvirtd restart: same qemu, nothing recreated, the host never leaves READY", { timeout: 90_000 }, async () => {
    const pid = qemuPid(domainName);
    const createsBefore = agent.lines('"action":"create"').length;
    const states: HostState[] = [];
    const watching = setInterval(() => void client.getHost({ id: "hv-1" }).then((r) => r.host && states.push(r.host.state), () => undefined), 200);
    try {
      await stopLibvirtd();
      await waitFor("the hypervisor reported down", async () => (await client.getHost({ id: "hv-1" })).host?.hypervisor?.available === false, 30_000);
      await startLibvirtd();
      await waitFor("the hypervisor reported back", async () => (await client.getHost({ id: "hv-1" })).host?.hypervisor?.available === true, 60_000);
      await waitFor("the VM running", async () => (await vm())?.status?.phase === VmPhase.VM_PHASE_RUNNING, 30_000);
    } finally {
      clearInterval(watching);
    }
    expect(qemuPid(domainName)).toBe(pid);
    expect(agent.lines('"action":"create"').length).toBe(createsBefore);
    expect(states.length).toBeGreaterThan(0);
    expect(states.every((s) => s === HostState.HOST_STATE_READY)).toBe(true);
  });

  it("reports a qemu killed behind its back and starts it again", { timeout: 60_000 }, async () => {
    const pid = qemuPid(domainName);
    await killQemu(domainName);
    // The agent reports the domain CRASHED (on libvirt's event, or at the latest with the next
    // report); the controller wants the VM running, so it is started again: a new qemu process.
    await waitFor("a new qemu process", () => {
      const now = qemuPid(domainName);
      return now !== undefined && now !== pid;
    }, 30_000);
    await waitFor("the VM running again", async () => (await vm())?.status?.phase === VmPhase.VM_PHASE_RUNNING, 30_000);
  });

  it("deletes the domain and its volume with `berth vm delete`", { timeout: 60_000 }, async () => {
    const id = (await vm())!.id;
    const deleted = await berth("vm", "delete", vmName, "--wait");
    expect(deleted.code).toBe(0);
    await waitFor("the domain to be gone", async () => !(await virsh("list", "--all", "--name")).stdout.includes(domainName), 30_000);
    const volumes = (await virsh("vol-list", "--pool", target.storagePool)).stdout;
    expect(volumes).not.toContain(id);
  });
}, etcdCheck.ok ? undefined : etcdCheck.reason);
