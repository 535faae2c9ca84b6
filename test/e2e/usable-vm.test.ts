/**
 * A VM people can use, end to end as an operator makes one: a real etcd, a controller process and
 * two agent processes on the fake hypervisor, every step through the `berth` CLI (mutual TLS). An
 * image, an SSH key and a network give a VM whose `vm show` prints its address and whose console
 * shows it booted; the seed the host got carries the hostname and the key; a NIC on a network only
 * one host offers goes there, one no host offers is refused with the filter's reason; a data volume
 * is bound to its VM's host, hot-plugged, carried by a live migration (sampled: the VM never runs on
 * two hosts, and runs nowhere without its volume), kept through a detach and deleted from the host.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { HostState, VmPhase } from "@berth/api";
import { fakeRunningVmIds, qcow2Header, readFakeHypervisorState } from "@berth/hypervisor";
import { describeWithEtcd, startEtcd, type RunningEtcd } from "../support/etcd.js";
import { clusterClient, type ClusterClient } from "../support/grpc.js";
import { tlsEnv } from "../support/pki.js";
import { AGENT_BIN, CLI_BIN, CONTROLLER_BIN, freePort, Proc, waitFor } from "../support/processes.js";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk0mXu0v8m2b3Zp7xQy1Wq3r9Jt6sLh2n5Vd8cPe4Ff operator@lab";
const HOSTS = ["host-1", "host-2"] as const;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

describeWithEtcd("end to end: a usable VM (image, key, network, console, data volume) on fake hosts", () => {
  let etcd: RunningEtcd;
  let dir: string;
  let address: string;
  let controller: Proc;
  const agents = new Map<string, Proc>();
  let client: ClusterClient;
  const children: ChildProcess[] = [];

  const berth = (...args: string[]): Promise<Run> =>
    new Promise((resolve) => {
      execFile(process.execPath, [CLI_BIN, "--controller", address, ...args], { env: { ...process.env, ...tlsEnv("admin", "admin") }, timeout: 60_000 }, (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr }),
      );
    });
  const ok = async (...args: string[]): Promise<string> => {
    const r = await berth(...args);
    if (r.code !== 0) throw new Error(`berth ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  };
  const vm = async (name: string) => (await client.getVm({ name })).vm!;
  const stateOf = (host: string) => readFakeHypervisorState(join(dir, host));
  const dumpLogs = (): void => console.error([controller, ...agents.values()].map((p) => p.tail(40)).join("\n"));

  beforeAll(async () => {
    etcd = await startEtcd();
    dir = mkdtempSync(join(tmpdir(), "berth-e2e-usable-"));
    address = `127.0.0.1:${await freePort()}`;
    controller = new Proc("controller", CONTROLLER_BIN, ["--listen", address, "--etcd", etcd.endpoint, "--report-interval", "300"]);
    for (const host of HOSTS) {
      // host-2 alone offers the "lab" network besides the default one.
      const networks = host === "host-2" ? ["--network", "default", "--network", "lab"] : [];
      agents.set(
        host,
        new Proc(host, AGENT_BIN, ["--host-id", host, "--controller", address, "--driver", "fake", "--state-dir", join(dir, host), "--capacity", "vcpus=8,memory=16GiB,disk=100GiB", ...networks]),
      );
    }
    client = clusterClient(address);
    // A base image as hosts would fetch it: a qcow2 of 512 MiB virtual size (the fake reads its header).
    writeFileSync(join(dir, "tiny.qcow2"), qcow2Header(512 * 1024 * 1024));
    try {
      await waitFor("two READY hosts", async () => (await client.listHosts({})).hosts.filter((h) => h.state === HostState.HOST_STATE_READY).length === 2, 30_000, 200);
    } catch (e) {
      dumpLogs();
      throw e;
    }
  }, 90_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    client?.close();
    await Promise.all([...agents.values()].map((a) => a.stop()));
    await controller?.stop();
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("vm create with an image, a key and a network: vm show prints the address, the console shows it booted, the seed has the hostname and key", async () => {
    try {
      await ok("image", "create", "tiny", "--source", join(dir, "tiny.qcow2"));
      await ok("vm", "create", "web-1", "--vcpus", "1", "--memory", "256MiB", "--disk", "1GiB", "--image", "tiny", "--network", "default", "--ssh-key", KEY, "--wait");
      const shown = await waitFor(
        "an address in vm show",
        async () => {
          const out = await ok("vm", "show", "web-1");
          return /eth0\s+default\s+52:54(:[0-9a-f]{2}){4}\s+10\.122\.\d+\.\d+/.test(out) ? out : undefined;
        },
        20_000,
        300,
      );
      expect(shown).toMatch(/Image:\s+tiny/);
      const web = await vm("web-1");
      expect(web.status?.interfaces[0]).toMatchObject({ network: "default", addressSource: "fake" });
      // The host that runs it holds the image, and the seed it attached says who the guest is.
      const seed = stateOf(web.hostId).devices[web.id]?.seed;
      expect(seed?.["meta-data"]).toContain("local-hostname: web-1");
      expect(seed?.["meta-data"]).toContain(`instance-id: ${web.id}`);
      expect(seed?.["user-data"]).toContain(KEY);
      const images = JSON.parse(await ok("image", "list", "-o", "json")) as { hosts: string[] }[];
      expect(images[0]?.hosts).toEqual([web.hostId]);

      // The console: the guest's boot banner (with the address it got), then its login prompt.
      const session = spawn(process.execPath, [CLI_BIN, "--controller", address, "vm", "console", "web-1"], { env: { ...process.env, ...tlsEnv("admin", "admin") }, stdio: ["pipe", "pipe", "pipe"] });
      children.push(session);
      let out = "";
      session.stdout!.on("data", (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((resolve) => session.once("exit", (code) => resolve(code)));
      await waitFor("the boot banner", () => /web-1 booted: hostname web-1, 1 ssh keys, address 10\.122\.\d+\.\d+/.test(out), 20_000);
      session.stdin!.write(Buffer.from([0x1d]));
      expect(await exited).toBe(0);
    } catch (e) {
      dumpLogs();
      throw e;
    }
  });

  it("a NIC on a network only host-2 offers goes to host-2; a network no host offers is refused with the filter's reason", async () => {
    await ok("vm", "create", "lab-1", "--vcpus", "1", "--memory", "256MiB", "--disk", "1GiB", "--network", "lab", "--wait");
    expect((await vm("lab-1")).hostId).toBe("host-2");
    const refused = await berth("vm", "create", "nowhere-1", "--vcpus", "1", "--memory", "256MiB", "--disk", "1GiB", "--network", "nope");
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/host-1: networks: lacks network "nope"/);
    expect(refused.stderr).toMatch(/host-2: networks: lacks network "nope"/);
    expect((await client.listVms({ hostId: "", pageSize: 0, pageToken: "" })).vms.map((v) => v.spec?.name)).not.toContain("nowhere-1");
  });

  it("a data volume is bound to its VM's host, hot-plugged, carried by a live migration, kept through a detach and deleted from the host", async () => {
    const web = await vm("web-1");
    const source = web.hostId;
    const target = HOSTS.find((h) => h !== source)!;
    await ok("volume", "create", "data-1", "--size", "2GiB");
    await ok("volume", "attach", "data-1", "web-1");
    const attachedOn = (host: string): string[] => Object.values(stateOf(host).dataVolumes ?? {}).filter((v) => v.attachedVmId === web.id).map(() => host);
    await waitFor("data-1 attached on the VM's host", () => attachedOn(source).length === 1, 20_000, 200);
    expect(JSON.parse(await ok("volume", "show", "data-1", "-o", "json"))).toMatchObject({ volume: { hostId: source, attachedTo: "web-1" } });

    // Migrate it, sampling both hosts' state files all along: one copy running, with its volume.
    let sampling = true;
    const violations: string[] = [];
    const sampler = (async () => {
      while (sampling) {
        const running = HOSTS.filter((h) => fakeRunningVmIds(join(dir, h)).includes(web.id));
        if (running.length > 1) violations.push(`web-1 running on ${running.join(" and ")}`);
        // Wherever it runs, its volume is attached there (a prepared target holds a copy meanwhile).
        for (const h of running) if (attachedOn(h).length === 0) violations.push(`web-1 running on ${h} without data-1`);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      await ok("vm", "migrate", "web-1", "--to", target, "--wait");
    } finally {
      sampling = false;
      await sampler;
    }
    expect(violations).toEqual([]);
    expect((await vm("web-1")).hostId).toBe(target);
    await waitFor("data-1 on the target only", () => attachedOn(target).length === 1 && Object.keys(stateOf(source).dataVolumes ?? {}).length === 0, 20_000, 200);
    expect(JSON.parse(await ok("volume", "show", "data-1", "-o", "json"))).toMatchObject({ volume: { hostId: target, attachedTo: "web-1" } });

    // Detached, the volume and its data stay on the host; deleted, the host removes it, then the record goes.
    await ok("volume", "detach", "data-1");
    await waitFor("data-1 detached and kept", () => Object.values(stateOf(target).dataVolumes ?? {}).some((v) => v.attachedVmId === ""), 20_000, 200);
    expect((await vm("web-1")).status?.phase).toBe(VmPhase.VM_PHASE_RUNNING);
    await ok("volume", "delete", "data-1", "--yes");
    await waitFor("data-1 gone from the host and the store", async () => Object.keys(stateOf(target).dataVolumes ?? {}).length === 0 && (await berth("volume", "show", "data-1")).code !== 0, 20_000, 200);
  });
});
