/**
 * A usable VM on a real libvirtd, as a lab operator makes one: a real etcd, a controller process,
 * one `berth-agent --driver libvirt` process on this machine's libvirtd, and the `berth` CLI. A
 * real tiny image (test/support/tiny-image.ts: a Debian kernel and busybox that read the NoCloud
 * seed and ask DHCP for an address), an SSH key and libvirt's NAT network `default` give a guest
 * whose address (from dnsmasq's lease) `berth vm show` prints, and whose serial console, reached
 * through the controller and the agent, is a shell on a guest named by its seed, holding the key,
 * with that address.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { HostState } from "@berth/api";
import { etcdAvailable, startEtcd, type RunningEtcd } from "../support/etcd.js";
import { clusterClient, type ClusterClient } from "../support/grpc.js";
import { describeWithLibvirt, ensureDefaultNetwork, removeDomains, removeVolumes, TEST_NETWORK } from "../support/libvirt.js";
import { tlsEnv } from "../support/pki.js";
import { AGENT_BIN, CLI_BIN, CONTROLLER_BIN, freePort, Proc, waitFor } from "../support/processes.js";
import { buildTinyImage, TINY_IMAGE_READY, tinyImageMissing } from "../support/tiny-image.js";

const run = Date.now().toString(36).slice(-5);
const vmName = `usable-${run}`;
const imageName = `tiny-${run}`;
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk0mXu0v8m2b3Zp7xQy1Wq3r9Jt6sLh2n5Vd8cPe4Ff operator@lab";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

const etcd = etcdAvailable();
const missing = etcd.ok ? tinyImageMissing() : etcd.reason;
await describeWithLibvirt(
  "end to end: a usable VM (image, key, network, console) on a real libvirtd",
  (target) => {
    let etcdServer: RunningEtcd;
    let dir: string;
    let address: string;
    let controller: Proc;
    let agent: Proc;
    let client: ClusterClient;
    let imagePath: string;
    const children: ChildProcess[] = [];

    const berth = (...args: string[]): Promise<Run> =>
      new Promise((resolve) => {
        execFile(process.execPath, [CLI_BIN, "--controller", address, ...args], { env: { ...process.env, ...tlsEnv("admin", "admin") }, timeout: 120_000 }, (error, stdout, stderr) =>
          resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr }),
        );
      });
    const ok = async (...args: string[]): Promise<string> => {
      const r = await berth(...args);
      if (r.code !== 0) throw new Error(`berth ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
      return r.stdout;
    };
    const dumpLogs = (): void => console.error([controller, agent].map((p) => p?.tail(40)).join("\n"));

    beforeAll(async () => {
      const network = await ensureDefaultNetwork(target.uri);
      if (network !== undefined) throw new Error(network);
      const image = await buildTinyImage();
      if ("skip" in image) throw new Error(image.skip);
      imagePath = image.path;
      etcdServer = await startEtcd();
      dir = mkdtempSync(join(tmpdir(), "berth-e2e-libvirt-usable-"));
      address = `127.0.0.1:${await freePort()}`;
      controller = new Proc("controller", CONTROLLER_BIN, ["--listen", address, "--etcd", etcdServer.endpoint, "--report-interval", "300"]);
      agent = new Proc("agent", AGENT_BIN, [
        "--host-id", "hv-1",
        "--controller", address,
        "--driver", "libvirt",
        "--libvirt-uri", target.uri,
        "--storage-pool", target.storagePool,
        // TCG: this guest boots under it everywhere (on CI machines KVM may be offered and still fail).
        "--domain-type", "qemu",
        "--network", TEST_NETWORK,
        "--state-dir", join(dir, "agent"),
      ]);
      client = clusterClient(address);
      try {
        await waitFor("the libvirt host to be ready", async () => (await client.listHosts({})).hosts.some((h) => h.id === "hv-1" && h.state === HostState.HOST_STATE_READY), 30_000, 200);
      } catch (e) {
        dumpLogs();
        throw e;
      }
    }, 180_000);

    afterAll(async () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      const image = address ? await berth("image", "show", imageName, "-o", "json").catch(() => undefined) : undefined;
      const imageId = image?.code === 0 ? ((JSON.parse(image.stdout) as { image?: { id?: string } }).image?.id ?? "") : "";
      client?.close();
      await agent?.stop();
      await controller?.stop();
      await removeDomains(`berth-${vmName}`, target.storagePool, [], target.uri);
      if (imageId) await removeVolumes([`berth-image-${imageId}.qcow2`], target.storagePool, target.uri);
      await etcdServer?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it("vm create with the image, a key and a network: vm show prints the leased address; the console is the booted guest's shell", async () => {
      try {
        await ok("image", "create", imageName, "--source", imagePath);
        await ok("vm", "create", vmName, "--vcpus", "1", "--memory", "256MiB", "--disk", "1GiB", "--image", imageName, "--network", TEST_NETWORK, "--ssh-key", KEY, "--wait");
        const shown = await waitFor(
          "a leased address in vm show",
          async () => {
            const out = await ok("vm", "show", vmName);
            return /eth0\s+default\s+52:54(:[0-9a-f]{2}){4}\s+\d+\.\d+\.\d+\.\d+ \(lease\)/.test(out) ? out : undefined;
          },
          90_000,
          1_000,
        );
        const address4 = /eth0\s+default\s+\S+\s+(\d+\.\d+\.\d+\.\d+)/.exec(shown)![1]!;

        // The console, through the controller and the agent: the guest's shell answers with the
        // hostname its seed gave it, the key count and the address dnsmasq leased it.
        const session = spawn(process.execPath, [CLI_BIN, "--controller", address, "vm", "console", vmName], { env: { ...process.env, ...tlsEnv("admin", "admin") }, stdio: ["pipe", "pipe", "pipe"] });
        children.push(session);
        let out = "";
        session.stdout!.on("data", (d: Buffer) => (out += d.toString()));
        const exited = new Promise<number | null>((resolve) => session.once("exit", (code) => resolve(code)));
        // QEMU drops what the guest printed before anyone held the console: ask the shell again
        // (it prints its ready line at each start; exit restarts it) until it answers.
        await waitFor(
          "the guest's shell",
          () => {
            if (out.includes(TINY_IMAGE_READY)) return true;
            session.stdin!.write("exit\r");
            return false;
          },
          60_000,
          2_000,
        );
        session.stdin!.write('echo "seen-as-$(hostname)-keys-$(wc -l < /root/.ssh/authorized_keys)"; ip -4 addr show eth0\r');
        await waitFor("the guest's answer", () => out.includes(`seen-as-${vmName}-keys-1`) && out.includes(`inet ${address4}/`), 30_000, 200);
        session.stdin!.write(Buffer.from([0x1d]));
        expect(await exited).toBe(0);
      } catch (e) {
        dumpLogs();
        throw e;
      }
    }, 240_000);
  },
  missing,
);
