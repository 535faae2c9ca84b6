/**
 * The tiny guest image the libvirt suites boot (test/support/tiny-image.ts), proved on plain QEMU
 * without libvirt: built from Debian's packages, booted under TCG from a qcow2 overlay on it, with
 * a NoCloud seed ISO on the CD-ROM and user-mode (slirp) networking, whose built-in DHCP server
 * gives the guest an address. The guest must say it booted, read the seed's hostname and ssh
 * keys, get an address, and echo what is written to its serial console.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeRequiring } from "../support/requirements.js";
import {
  buildSeedIso,
  buildTinyImage,
  parseTinyImageConsole,
  tinyImageMissing,
  TINY_IMAGE_BANNER,
  TINY_IMAGE_READY,
  type TinyImage,
} from "../support/tiny-image.js";

function missing(): string | undefined {
  for (const [binary, pkg] of [["qemu-system-x86_64", "qemu-system-x86"], ["genisoimage", "genisoimage"]] as const) {
    if (spawnSync(binary, ["--version"], { timeout: 10_000 }).error) return `${binary} is not installed (install the Debian package ${pkg})`;
  }
  return tinyImageMissing();
}

const KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH1tiny1mage1test1key1aaaaaaaaaaaaaaaaaaaaaaaa alice@example";
const KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH1tiny1mage1test1key1bbbbbbbbbbbbbbbbbbbbbbbb bob@example";

describeRequiring("the tiny guest image boots on QEMU (TCG) with a NoCloud seed and DHCP", missing(), () => {
  let dir: string;
  let image: TinyImage;
  let qemu: ChildProcess | undefined;
  let output = "";

  /** Resolves once `test` holds for the console output so far; rejects after `ms` with the output. */
  const waitForConsole = (what: string, test: (out: string) => boolean, ms: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const started = Date.now();
      const timer = setInterval(() => {
        if (test(output)) {
          clearInterval(timer);
          resolve();
        } else if (Date.now() - started > ms || qemu?.exitCode !== null) {
          clearInterval(timer);
          reject(new Error(`no ${what} on the console within ${ms} ms (qemu exit ${qemu?.exitCode}); console so far:\n${output}`));
        }
      }, 50);
    });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "berth-tiny-image-"));
    const built = await buildTinyImage();
    if ("skip" in built) throw new Error(built.skip);
    image = built;
  }, 60_000);

  afterAll(() => {
    if (qemu?.pid !== undefined && qemu.exitCode === null) qemu.kill("SIGKILL");
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("prints its banner, the seed's hostname and ssh keys, a DHCP address, and echoes the console", async () => {
    expect(image.format).toBe("qcow2");
    expect(image.virtualSizeBytes).toBeGreaterThan(0);
    // Boot from an overlay, as a VM's disk does: the cached image stays untouched.
    const overlay = join(dir, "disk.qcow2");
    const created = spawnSync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image.path, overlay], { encoding: "utf8" });
    expect(created.status, created.stderr).toBe(0);
    const seed = await buildSeedIso(dir, {
      metaData: `instance-id: iid-tiny-1\nlocal-hostname: tiny-guest-1\npublic-keys:\n  - ${KEY_A}\n`,
      // KEY_A again: the guest counts distinct keys.
      userData: `#cloud-config\nssh_authorized_keys:\n  - ${KEY_A}\n  - ${KEY_B}\n`,
    });
    qemu = spawn(
      "qemu-system-x86_64",
      [
        "-machine", "pc,accel=tcg",
        "-m", "256",
        "-display", "none",
        "-monitor", "none",
        "-serial", "stdio",
        "-no-reboot",
        "-drive", `file=${overlay},if=virtio,format=qcow2`,
        "-drive", `file=${seed},media=cdrom,format=raw,readonly=on`,
        "-nic", "user,model=virtio-net-pci",
      ],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    qemu.stdout!.on("data", (d: Buffer) => (output += d.toString("latin1")));
    qemu.stderr!.on("data", (d: Buffer) => (output += d.toString("latin1")));
    const started = Date.now();

    await waitForConsole("banner", (out) => out.includes(TINY_IMAGE_BANNER), 40_000);
    const bannerMs = Date.now() - started;
    await waitForConsole("address", (out) => parseTinyImageConsole(out).address !== undefined, 30_000);
    const addressMs = Date.now() - started;
    // The prompt follows the ready line: from then on a shell reads what we write.
    await waitForConsole("shell prompt", (out) => /# /.test(out.slice(out.indexOf(TINY_IMAGE_READY))), 15_000);
    console.log(`tiny image on TCG: banner after ${bannerMs} ms, address after ${addressMs} ms`);

    const said = parseTinyImageConsole(output);
    expect(said.seed).toMatch(/^\/dev\//);
    expect(said.instanceId).toBe("iid-tiny-1");
    expect(said.hostname).toBe("tiny-guest-1");
    expect(said.sshKeys).toBe(2);
    // slirp's DHCP server hands out 10.0.2.15 to the first guest.
    expect(said.address).toBe("10.0.2.15");

    const before = output.length;
    qemu.stdin!.write("echo hello-$((6 * 7))-console\n");
    // The shell's output, not the terminal's echo of what we typed ($((...)) expanded).
    await waitForConsole("echo", (out) => out.slice(before).includes("hello-42-console"), 15_000);
  }, 90_000);
});
