/**
 * A VM people can use, through the libvirt driver on a real libvirtd with TCG: the tiny guest image
 * (test/support/tiny-image.ts) fetched into the pool as the host's image, a VM whose disk is an
 * overlay of it, with a NoCloud seed ISO the driver made and a NIC on libvirt's NAT network
 * `default`. The guest must print its banner and the seed's hostname on the serial console the
 * driver opens, answer a shell command typed there, and get a DHCP lease that `list()` reports in
 * `Domain.interfaces`. A data volume hot-plugs into it (`virsh domblklist` shows it; the guest
 * sees the disk with its serial) and is kept by a delete. The seed ISO is read back with isoinfo.
 *
 * Skipped with the reason where libvirt, the tiny image's tools, genisoimage/isoinfo or the NAT
 * network are missing; a failure under CI.
 */
import { execFile, spawnSync } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { DomainState, type ImageRef } from "@berth/api";
import { nicMacAddress } from "@berth/core";
import { dataVolumeName, imageVolumeName, LibvirtDriver, seedVolumeName, type ConsoleConnection, type ConsoleEnd } from "@berth/hypervisor";
import { ensureDefaultNetwork, ensureLibvirt, removeDomains, removeVolumes, TEST_NETWORK, virshOn } from "../support/libvirt.js";
import { waitFor } from "../support/processes.js";
import { describeRequiring } from "../support/requirements.js";
import { buildTinyImage, parseTinyImageConsole, tinyImageMissing, TINY_IMAGE_BANNER, TINY_IMAGE_READY, type TinyImage } from "../support/tiny-image.js";

const PREFIX = `berth-u${process.pid}-${randomUUID().slice(0, 6)}-`;
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH1usable1vm1test1key1aaaaaaaaaaaaaaaaaaaaaaaaa ops@example";

const libvirt = await ensureLibvirt();
function missing(): string | undefined {
  if ("skip" in libvirt) return libvirt.skip;
  for (const [binary, pkg] of [["genisoimage", "genisoimage"], ["isoinfo", "genisoimage"]] as const) {
    if (spawnSync(binary, ["--version"], { timeout: 10_000 }).error) return `${binary} is not installed (install the Debian package ${pkg})`;
  }
  return tinyImageMissing();
}
const why = missing() ?? ("skip" in libvirt ? undefined : await ensureDefaultNetwork(libvirt.uri));

/** Everything any session showed, in order (the guest prints its address once, to whichever session holds the console). */
let consoleLog = "";

/** A console session's output, gathered, with a wait for what it should show. */
class Screen {
  text = "";
  ended: ConsoleEnd | undefined | null = null;
  constructor(readonly session: ConsoleConnection) {
    session.onData((d) => {
      const text = Buffer.from(d).toString("latin1");
      this.text += text;
      consoleLog += text;
    });
    session.onEnd((e) => (this.ended = e));
  }
  /** Resolves once `test` holds for the output after `from`; rejects with the output after `ms`. */
  async shows(what: string, test: (out: string) => boolean, ms: number, from = 0): Promise<void> {
    try {
      await waitFor(what, () => test(this.text.slice(from)) || undefined, ms, 50);
    } catch (e) {
      throw new Error(`${(e as Error).message}; console so far:\n${this.text}`);
    }
  }
}

describeRequiring("libvirt: a usable VM (image, seed, NIC with a lease, console, data volume) on a real libvirtd", why, () => {
  const uri = "skip" in libvirt ? "" : libvirt.uri;
  const pool = "skip" in libvirt ? "" : libvirt.storagePool;
  let driver: LibvirtDriver;
  let image: TinyImage;
  let ref: ImageRef;
  let dir: string;
  const vmId = randomUUID();
  const volumeId = randomUUID();
  let screen: Screen;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "berth-usable-vm-"));
    const built = await buildTinyImage();
    if ("skip" in built) throw new Error(built.skip);
    image = built;
    const sha256 = createHash("sha256").update(readFileSync(image.path)).digest("hex");
    ref = { id: randomUUID(), name: "tiny", source: image.path, format: "qcow2", sha256 };
    // TCG whatever the probe says: where /dev/kvm exists but KVM guests die in SeaBIOS (this CI
    // machine), a kvm domain would sit paused (see test/support/tiny-image.ts).
    driver = await LibvirtDriver.open({ uri, storagePool: pool, domainType: "qemu", namePrefix: PREFIX, addressRefreshMs: 500, stopTimeoutMs: 5_000 });
  }, 120_000);

  afterAll(async () => {
    await driver?.close();
    await removeDomains(PREFIX, pool, [`${vmId}.qcow2`, seedVolumeName(vmId)]);
    await removeVolumes([dataVolumeName(volumeId), ...(ref ? [imageVolumeName(ref.id)] : [])], pool);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it("fetches the image into the pool once: listed with its virtual size; a second call is the same image", async () => {
    const fetched = await driver.ensureImage(ref);
    expect(fetched).toMatchObject({ imageId: ref.id, virtualSizeBytes: image.virtualSizeBytes });
    expect(await driver.ensureImage(ref)).toEqual(fetched);
    expect((await driver.listImages()).find((i) => i.imageId === ref.id)).toMatchObject({ virtualSizeBytes: image.virtualSizeBytes });
    const info = await virshOn(uri, "vol-dumpxml", "--pool", pool, imageVolumeName(ref.id));
    expect(info.stdout).toContain("<format type='qcow2'/>");
    expect((await driver.listNetworks()).find((n) => n.name === TEST_NETWORK)).toEqual({ name: TEST_NETWORK, kind: "network", active: true });
  }, 60_000);

  it("defines the VM over it with a seed and a NIC: the seed ISO holds the rendered files; the disk is an overlay", async () => {
    const domain = await driver.define({
      vmId,
      name: "usable",
      generation: 1,
      resources: { vcpus: 1, memoryMib: 192, diskGib: 1 },
      image: ref,
      nics: [{ network: TEST_NETWORK, mac: nicMacAddress(vmId, 0) }],
      cloudInit: { instanceId: vmId, hostname: "usable-vm", sshAuthorizedKeys: [KEY], userData: "" },
    });
    expect(domain).toMatchObject({ vmId, imageId: ref.id, state: DomainState.DOMAIN_STATE_SHUTOFF });
    expect(domain.interfaces).toEqual([{ network: TEST_NETWORK, mac: nicMacAddress(vmId, 0), ipAddresses: [], addressSource: "" }]);
    const disk = await virshOn(uri, "vol-dumpxml", "--pool", pool, `${vmId}.qcow2`);
    expect(disk.stdout).toMatch(new RegExp(`<backingStore>\\s*<path>[^<]*${imageVolumeName(ref.id).replace(/\./g, "\\.")}</path>`));

    // The seed as the guest will see it: label cidata, meta-data with the hostname and the key.
    const iso = join(dir, "seed.iso");
    const downloaded = await virshOn(uri, "vol-download", "--pool", pool, seedVolumeName(vmId), iso);
    expect(downloaded.ok, downloaded.stderr).toBe(true);
    const isoinfo = (...args: string[]): Promise<string> =>
      new Promise((resolve, reject) => execFile("isoinfo", args, (e, out, err) => (e ? reject(new Error(`isoinfo ${args.join(" ")}: ${err}`)) : resolve(String(out)))));
    expect(await isoinfo("-d", "-i", iso)).toMatch(/^Volume id: cidata$/m);
    const metaData = await isoinfo("-R", "-x", "/meta-data", "-i", iso);
    expect(metaData).toContain(`instance-id: ${vmId}`);
    expect(metaData).toContain("local-hostname: usable-vm");
    expect(metaData).toContain(KEY);
    expect(await isoinfo("-R", "-x", "/user-data", "-i", iso)).toMatch(/^#cloud-config\nhostname: usable-vm\n/);
  }, 60_000);

  it("boots: its console shows the banner and the seed's hostname, and a command typed there is answered", async () => {
    await expect(driver.openConsole(vmId)).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    const started = Date.now();
    await driver.start(vmId);
    // At once: what the guest prints before a session opens is not kept.
    screen = new Screen(await driver.openConsole(vmId));
    await screen.shows("the banner", (t) => t.includes(TINY_IMAGE_BANNER), 60_000);
    const bannerMs = Date.now() - started;
    await screen.shows("the shell", (t) => t.includes(TINY_IMAGE_READY) && /# /.test(t.slice(t.indexOf(TINY_IMAGE_READY))), 60_000);
    console.info(`tiny guest under libvirt: banner ${bannerMs} ms after start, shell after ${Date.now() - started} ms`);
    const said = parseTinyImageConsole(screen.text);
    expect(said).toMatchObject({ booted: true, hostname: "usable-vm", instanceId: vmId, sshKeys: 1 });
    expect(said.seed).toMatch(/^\/dev\//);

    const from = screen.text.length;
    // CR, as a terminal sends Enter; the answer (expanded) is not the echo of what was typed.
    screen.session.write(Buffer.from("echo hello-$((6 * 7))\r"));
    await screen.shows("the shell's answer", (t) => t.includes("hello-42"), 15_000, from);
  }, 150_000);

  it("one session at a time: a second is refused, force takes the console over", async () => {
    await expect(driver.openConsole(vmId)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/in use/) });
    const old = screen;
    screen = new Screen(await driver.openConsole(vmId, { force: true }));
    await waitFor("the old session to end", () => (old.ended !== null ? true : undefined), 5_000);
    expect(old.ended).toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/taken over/) });
    const from = screen.text.length;
    screen.session.write(Buffer.from("echo again-$((1 + 1))\r"));
    await screen.shows("the new session's answer", (t) => t.includes("again-2"), 15_000, from);
  }, 30_000);

  it("the NIC's DHCP lease shows in Domain.interfaces (what the guest printed)", async () => {
    await waitFor("the guest to print its address", () => parseTinyImageConsole(consoleLog).address !== undefined || undefined, 60_000, 100).catch(() => undefined);
    const found = await waitFor(
      "a leased address in list()",
      async () => {
        const d = (await driver.list()).find((x) => x.vmId === vmId);
        return d?.interfaces[0]?.ipAddresses.length ? d.interfaces[0] : undefined;
      },
      60_000,
      500,
    );
    expect(found).toMatchObject({ network: TEST_NETWORK, mac: nicMacAddress(vmId, 0), addressSource: "lease" });
    expect(found.ipAddresses[0]).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    const printed = parseTinyImageConsole(consoleLog).address;
    if (printed !== undefined && printed !== "none") expect(found.ipAddresses).toContain(printed);
  }, 130_000);

  it("a data volume hot-plugs: domblklist shows it, the guest sees its serial; detached it stays in the pool", async () => {
    const volume = { id: volumeId, name: "data", sizeGib: 1 };
    const attached = await driver.setVolumes(vmId, [volume]);
    expect(attached.volumeIds).toEqual([volumeId]);
    const blk = await virshOn(uri, "domblklist", vmId);
    expect(blk.stdout).toMatch(new RegExp(`vdb\\s+\\S*${dataVolumeName(volumeId).replace(/\./g, "\\.")}`));
    expect(await driver.listVolumes()).toContainEqual({ volumeId, sizeGib: 1, attachedVmId: vmId });
    // The guest finds the new PCI device (ACPI hot-plug) within a few seconds: ask until it has.
    const serial = volumeId.replace(/-/g, "").slice(0, 20);
    await waitFor(
      "the guest to see the disk's serial",
      async () => {
        const from = screen.text.length;
        screen.session.write(Buffer.from("cat /sys/block/vdb/serial; echo; echo asked-$((2 + 3))\r"));
        await screen.shows("the shell's answer", (t) => t.includes("asked-5"), 10_000, from);
        return screen.text.slice(from).includes(serial) || undefined;
      },
      30_000,
      1_000,
    );
    await expect(driver.deleteVolume(volumeId)).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
  }, 60_000);

  it("the console ends when the domain stops; delete keeps the data volume and removes disk and seed", async () => {
    await driver.destroy(vmId);
    await waitFor("the session to end", () => (screen.ended !== null ? true : undefined), 10_000);
    expect(screen.ended).toMatchObject({ code: "FAILED_PRECONDITION" });
    await driver.delete(vmId);
    const left = (await virshOn(uri, "vol-list", pool)).stdout;
    expect(left).not.toContain(`${vmId}.qcow2`);
    expect(left).not.toContain(seedVolumeName(vmId));
    expect(left).toContain(dataVolumeName(volumeId));
    expect(await driver.listVolumes()).toContainEqual({ volumeId, sizeGib: 1, attachedVmId: "" });
    await driver.deleteVolume(volumeId);
    expect((await virshOn(uri, "vol-list", pool)).stdout).not.toContain(dataVolumeName(volumeId));
  }, 60_000);
});
