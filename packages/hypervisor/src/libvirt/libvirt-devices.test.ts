// What makes a libvirt domain usable, against the simulated virsh: images in the pool, disks over
// them, NICs on offered networks with their addresses, the cloud-init seed, data volumes, and what
// a migration readies and removes. (On a real libvirtd: test/drivers/libvirt-usable-vm.test.ts.)
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DomainState, type ImageRef } from "@berth/api";
import { nicMacAddress } from "@berth/core";
import type { DomainSpec } from "../driver.js";
import { renderNoCloudSeed } from "../cloud-init.js";
import { LibvirtDriver, type LibvirtDriverInternals } from "./libvirt-driver.js";
import type { LibvirtDriverOptions } from "./options.js";
import { fakeQcow2, SimVirsh } from "./sim-virsh.testkit.js";

const A = "0f8fad5b-d9cb-469f-a165-70867728950e";
const B = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const IMAGE = "3b241101-e2bb-4255-8caf-4136c566a962";
const VOL1 = "9a1b2c3d-0000-4000-8000-000000000001";
const VOL2 = "9a1b2c3d-0000-4000-8000-000000000002";
const GIB = 2 ** 30;

const dirs: string[] = [];
const tempDir = (): string => {
  const d = mkdtempSync(path.join(tmpdir(), "berth-libvirt-devices-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const spec = (over: Partial<DomainSpec> = {}): DomainSpec => ({
  vmId: A,
  name: "web",
  generation: 1,
  resources: { vcpus: 1, memoryMib: 512, diskGib: 2 },
  ...over,
});

function setup(options: Partial<LibvirtDriverOptions> = {}, internals: LibvirtDriverInternals = {}, sim = new SimVirsh()): { sim: SimVirsh; driver: LibvirtDriver } {
  const driver = new LibvirtDriver({ storagePool: "vms", domainType: "qemu", runner: sim.runner, addressRefreshMs: 60_000, ...options }, internals);
  return { sim, driver };
}

const names = (sim: SimVirsh): string[] => sim.commands.map((c) => c[0]!);

/** A qcow2 file of `virtualSizeBytes` in a temporary directory, and its ref. */
function imageFile(virtualSizeBytes = GIB, over: Partial<ImageRef> = {}, backing = ""): { file: string; ref: ImageRef; bytes: Buffer } {
  const bytes = fakeQcow2(virtualSizeBytes, Buffer.from("image body"), backing);
  const file = path.join(tempDir(), "tiny.qcow2");
  writeFileSync(file, bytes);
  return { file, bytes, ref: { id: IMAGE, name: "tiny", source: file, format: "qcow2", sha256: "", ...over } };
}

describe("images in the pool", () => {
  it("fetches a file into the pool as a raw-created volume, head uploaded last; listed; a second call fetches nothing", async () => {
    const { sim, driver } = setup();
    const { ref, bytes } = imageFile(GIB, { sha256: "" });
    const image = await driver.ensureImage({ ...ref, sha256: createHash("sha256").update(bytes).digest("hex") });
    expect(image).toEqual({ imageId: IMAGE, sizeBytes: bytes.length, virtualSizeBytes: GIB });
    const name = `berth-image-${IMAGE}.qcow2`;
    expect(sim.commands).toContainEqual(["vol-create-as", "vms", name, String(bytes.length), "--format", "raw"]);
    const uploads = sim.commands.filter((c) => c[0] === "vol-upload");
    expect(uploads).toHaveLength(2);
    expect(uploads[1]!.slice(-4)).toEqual(["--offset", "0", "--length", "4096"]);
    // The pool's copy is the file, byte for byte.
    expect(sim.volumeData.get(name)!.data.equals(bytes)).toBe(true);
    expect(await driver.listImages()).toEqual([{ imageId: IMAGE, sizeBytes: bytes.length, virtualSizeBytes: GIB }]);

    sim.commands.length = 0;
    expect(await driver.ensureImage(ref)).toMatchObject({ imageId: IMAGE, virtualSizeBytes: GIB });
    expect(names(sim)).not.toContain("vol-upload");
  });

  it("concurrent calls for one image share one fetch", async () => {
    const { sim, driver } = setup();
    const { ref } = imageFile();
    const results = await Promise.all([driver.ensureImage(ref), driver.ensureImage(ref), driver.ensureImage(ref)]);
    expect(new Set(results.map((r) => JSON.stringify(r))).size).toBe(1);
    expect(sim.commands.filter((c) => c[0] === "vol-create-as")).toHaveLength(1);
  });

  it("a checksum mismatch, a missing file, another format, a backing file: refused, nothing left in the pool", async () => {
    const { sim, driver } = setup();
    const { ref, file } = imageFile();
    await expect(driver.ensureImage({ ...ref, sha256: "0".repeat(64) })).rejects.toMatchObject({ code: "FAILED_PRECONDITION", field: "image.sha256" });
    await expect(driver.ensureImage({ ...ref, source: path.join(path.dirname(file), "absent.qcow2") })).rejects.toMatchObject({ code: "NOT_FOUND", field: "image.source" });
    await expect(driver.ensureImage({ ...ref, source: `file://${file}`, format: "raw" })).rejects.toMatchObject({ code: "FAILED_PRECONDITION", field: "image.format" });
    const backed = imageFile(GIB, {}, "/etc/other.qcow2");
    await expect(driver.ensureImage(backed.ref)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/backing file/) });
    const notAnImage = path.join(tempDir(), "text");
    writeFileSync(notAnImage, "hello");
    await expect(driver.ensureImage({ ...ref, source: notAnImage })).rejects.toMatchObject({ code: "FAILED_PRECONDITION", field: "image.format" });
    expect(sim.volumes.size).toBe(0);
    expect(await driver.listImages()).toEqual([]);
  });

  it("refuses bad refs before reading anything, naming the field", async () => {
    const { sim, driver } = setup();
    const { ref } = imageFile();
    await expect(driver.ensureImage({ ...ref, id: "a b" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", field: "image.id" });
    await expect(driver.ensureImage({ ...ref, source: "relative/path" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", field: "image.source" });
    await expect(driver.ensureImage({ ...ref, source: "ftp://h/x" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", field: "image.source" });
    await expect(driver.ensureImage({ ...ref, source: "file://otherhost/x" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", field: "image.source" });
    await expect(driver.ensureImage({ ...ref, format: "vmdk" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", field: "image.format" });
    await expect(driver.ensureImage({ ...ref, sha256: "abc" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", field: "image.sha256" });
    expect(sim.commands).toEqual([]);
  });

  it("bounds the size (RESOURCE_EXHAUSTED) and needs room in the pool", async () => {
    const { ref } = imageFile();
    const small = setup({ maxImageBytes: 1000 });
    await expect(small.driver.ensureImage(ref)).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED", field: "image.source" });
    const full = setup();
    full.sim.availableBytes = 100;
    await expect(full.driver.ensureImage(ref)).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    expect(full.sim.volumes.size).toBe(0);
  });

  it("a raw image is converted to qcow2 before it goes into the pool", async () => {
    const { sim, driver } = setup();
    const file = path.join(tempDir(), "disk.raw");
    writeFileSync(file, Buffer.alloc(3 * 1024 * 1024, 1));
    const image = await driver.ensureImage({ id: IMAGE, name: "raw", source: file, format: "raw", sha256: "" });
    expect(image.virtualSizeBytes).toBe(3 * 1024 * 1024);
    expect(sim.commands.find((c) => c[0] === "qemu-img" && c[1] === "convert")?.slice(1, 6)).toEqual(["convert", "-f", "raw", "-O", "qcow2"]);
    expect(sim.volumeData.get(`berth-image-${IMAGE}.qcow2`)!.format).toBe("qcow2");
  });

  it("a volume an upload cut short left (no header yet) is not listed, and is replaced by the next fetch", async () => {
    const { sim, driver } = setup();
    const name = `berth-image-${IMAGE}.qcow2`;
    sim.volumes.add(name);
    sim.volumeData.set(name, { capacityBytes: 9000, format: "raw", backing: undefined, data: Buffer.alloc(9000) });
    expect(await driver.listImages()).toEqual([]);
    const { ref, bytes } = imageFile();
    await driver.ensureImage(ref);
    expect(sim.commands).toContainEqual(["vol-delete", "--pool", "vms", name]);
    expect(sim.volumeData.get(name)!.data.equals(bytes)).toBe(true);
  });

  it("fetches over http: 200 streams it, 404 is NOT_FOUND, a dead server UNAVAILABLE", async () => {
    const { bytes } = imageFile();
    const server: Server = createServer((req, res) => {
      if (req.url === "/tiny.qcow2") {
        res.writeHead(200, { "content-length": bytes.length });
        res.end(bytes);
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    try {
      const { sim, driver } = setup();
      const ref: ImageRef = { id: IMAGE, name: "tiny", source: `http://127.0.0.1:${port}/tiny.qcow2`, format: "", sha256: "" };
      expect(await driver.ensureImage(ref)).toMatchObject({ virtualSizeBytes: GIB, sizeBytes: bytes.length });
      expect(sim.volumeData.get(`berth-image-${IMAGE}.qcow2`)!.data.equals(bytes)).toBe(true);
      await expect(driver.ensureImage({ ...ref, id: "other", source: `http://127.0.0.1:${port}/absent` })).rejects.toMatchObject({ code: "NOT_FOUND", field: "image.source" });
    } finally {
      await new Promise((r) => server.close(r));
    }
    const { driver } = setup();
    await expect(driver.ensureImage({ id: "x", name: "x", source: `http://127.0.0.1:${port}/tiny.qcow2`, format: "", sha256: "" })).rejects.toMatchObject({ code: "UNAVAILABLE" });
  });

  it("a domain over an image: its disk is an overlay of the image; a disk smaller than the image is refused, naming `image`", async () => {
    const { sim, driver } = setup();
    const { ref } = imageFile(GIB);
    const domain = await driver.define(spec({ image: ref, resources: { vcpus: 1, memoryMib: 512, diskGib: 4 } }));
    expect(domain.imageId).toBe(IMAGE);
    expect(sim.commands).toContainEqual(["vol-create-as", "vms", `${A}.qcow2`, "4G", "--format", "qcow2", "--backing-vol", `berth-image-${IMAGE}.qcow2`, "--backing-vol-format", "qcow2"]);
    expect((await driver.list())[0]!.imageId).toBe(IMAGE);

    const big = imageFile(5 * GIB, { id: "big-image" });
    await expect(driver.define(spec({ vmId: B, name: "db", image: big.ref, resources: { vcpus: 1, memoryMib: 512, diskGib: 4 } }))).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      field: "image",
    });
    expect(sim.volumes.has(`${B}.qcow2`)).toBe(false);
    await expect(driver.define(spec({ vmId: B, name: "db", image: ref, resources: { vcpus: 1, memoryMib: 512, diskGib: 0 } }))).rejects.toMatchObject({ field: "image" });
  });
});

describe("NICs and their addresses", () => {
  it("a NIC on an offered network gets the MAC asked (or the one rule's); unknown or inactive networks are refused, nothing made", async () => {
    const { sim, driver } = setup();
    sim.networks.set("lab", false);
    await driver.define(spec({ nics: [{ network: "default", mac: "52:54:00:AA:00:01" }, { network: "default", mac: "" }] }));
    const xml = sim.xmlOf(A);
    expect(xml).toContain("<interface type='network'>\n      <mac address='52:54:00:aa:00:01'/>\n      <source network='default'/>\n      <model type='virtio'/>");
    expect(xml).toContain(`<mac address='${nicMacAddress(A, 1)}'/>`);
    const other = spec({ vmId: B, name: "db" });
    await expect(driver.define({ ...other, nics: [{ network: "nowhere", mac: "" }] })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", field: "nics[0].network" });
    await expect(driver.define({ ...other, nics: [{ network: "default", mac: "" }, { network: "lab", mac: "" }] })).rejects.toMatchObject({ field: "nics[1].network", message: expect.stringMatching(/not active/) });
    await expect(driver.define({ ...other, nics: [{ network: "default", mac: "zz" }] })).rejects.toMatchObject({ field: "nics[0].mac" });
    expect(sim.domains.has(B)).toBe(false);
    expect(sim.volumes.has(`${B}.qcow2`)).toBe(false);
  });

  it("offers every libvirt network by default; when configured, exactly those (bridges checked in sysfs)", async () => {
    const sys = tempDir();
    mkdirSync(path.join(sys, "br0", "bridge"), { recursive: true });
    mkdirSync(path.join(sys, "eth0"), { recursive: true });
    const all = setup();
    all.sim.networks.set("lab", false);
    expect(await all.driver.listNetworks()).toEqual([
      { name: "default", kind: "network", active: true },
      { name: "lab", kind: "network", active: false },
    ]);
    const configured = setup(
      { networks: [{ type: "bridge", source: "br0" }, { type: "bridge", source: "eth0" }, { type: "network", source: "default" }, { type: "network", source: "gone" }] },
      { sysClassNet: sys },
    );
    expect(await configured.driver.listNetworks()).toEqual([
      { name: "br0", kind: "bridge", active: true },
      { name: "default", kind: "network", active: true },
      { name: "eth0", kind: "bridge", active: false },
      { name: "gone", kind: "network", active: false },
    ]);
    await configured.driver.define(spec({ nics: [{ network: "br0", mac: "" }] }));
    expect(configured.sim.xmlOf(A)).toContain("<interface type='bridge'>");
    expect(configured.sim.xmlOf(A)).toContain("<source bridge='br0'/>");
  });

  it("list reports each NIC with its lease while the domain runs, read in one pass and reused until stale", async () => {
    const { sim, driver } = setup({ addressRefreshMs: 60_000 });
    await driver.define(spec({ nics: [{ network: "default", mac: "52:54:00:aa:00:01" }] }));
    await driver.define(spec({ vmId: B, name: "db", nics: [{ network: "default", mac: "52:54:00:aa:00:02" }] }));
    sim.leases.set("default", [
      { mac: "52:54:00:aa:00:01", ip: "192.168.122.10" },
      { mac: "52:54:00:aa:00:02", ip: "192.168.122.11" },
    ]);
    // Shut off: no address, whatever lease is left.
    expect((await driver.list())[0]!.interfaces).toEqual([{ network: "default", mac: "52:54:00:aa:00:01", ipAddresses: [], addressSource: "" }]);
    expect(names(sim)).not.toContain("net-dhcp-leases");
    await driver.start(A);
    await driver.start(B);
    sim.commands.length = 0;
    const listed = await driver.list();
    expect(listed.map((d) => d.interfaces)).toEqual([
      [{ network: "default", mac: "52:54:00:aa:00:01", ipAddresses: ["192.168.122.10"], addressSource: "lease" }],
      [{ network: "default", mac: "52:54:00:aa:00:02", ipAddresses: ["192.168.122.11"], addressSource: "lease" }],
    ]);
    expect(sim.commands.filter((c) => c[0] === "net-dhcp-leases")).toHaveLength(1);
    sim.commands.length = 0;
    await driver.list();
    expect(names(sim)).not.toContain("net-dhcp-leases");
  });

  it("addresses of NICs on a bridge come from the neighbour table", async () => {
    const sys = tempDir();
    mkdirSync(path.join(sys, "br0", "bridge"), { recursive: true });
    const arp = path.join(tempDir(), "arp");
    writeFileSync(arp, "IP address       HW type     Flags       HW address            Mask     Device\n10.0.0.8         0x1         0x2         52:54:00:aa:00:01     *        br0\n");
    const { driver } = setup({ networks: [{ type: "bridge", source: "br0" }], addressRefreshMs: 0 }, { sysClassNet: sys, procNetArp: arp });
    await driver.define(spec({ nics: [{ network: "br0", mac: "52:54:00:aa:00:01" }] }));
    await driver.start(A);
    expect((await driver.list())[0]!.interfaces).toEqual([{ network: "br0", mac: "52:54:00:aa:00:01", ipAddresses: ["10.0.0.8"], addressSource: "arp" }]);
  });
});

describe("the cloud-init seed", () => {
  const seed = { instanceId: A, hostname: "web", sshAuthorizedKeys: ["ssh-ed25519 AAAA test"], userData: "" };

  it("is rendered by renderNoCloudSeed, made an ISO labelled cidata and attached as a read-only CD-ROM; removed with the domain", async () => {
    const { sim, driver } = setup();
    await driver.define(spec({ cloudInit: seed }));
    expect(sim.seeds).toEqual([renderNoCloudSeed(seed)]);
    const iso = sim.commands.find((c) => c[0] === "genisoimage")!;
    expect(iso.slice(1, 9)).toEqual(["-quiet", "-output", expect.stringMatching(/seed\.iso$/), "-volid", "cidata", "-joliet", "-rock", expect.stringMatching(/user-data$/)]);
    expect(sim.volumes.has(`${A}-seed.iso`)).toBe(true);
    expect(sim.commands).toContainEqual(["vol-create-as", "vms", `${A}-seed.iso`, expect.stringMatching(/^\d+$/), "--format", "raw"]);
    expect(sim.xmlOf(A)).toContain(`<source pool='vms' volume='${A}-seed.iso'/>\n      <target dev='hdc' bus='ide'/>\n      <readonly/>`);
    await driver.delete(A);
    expect(sim.volumes.size).toBe(0);
  });

  it("without genisoimage: FAILED_PRECONDITION naming it, nothing left", async () => {
    const { sim, driver } = setup();
    sim.hasGenisoimage = false;
    await expect(driver.define(spec({ cloudInit: seed }))).rejects.toMatchObject({ code: "FAILED_PRECONDITION", field: "libvirt.genisoimage_path" });
    expect(sim.volumes.size).toBe(0);
    expect(sim.domains.size).toBe(0);
  });
});

describe("data volumes", () => {
  const v1 = { id: VOL1, name: "data1", sizeGib: 1 };
  const v2 = { id: VOL2, name: "data2", sizeGib: 2 };

  it("createVolume is idempotent; another size is FAILED_PRECONDITION; listed with their attachment", async () => {
    const { sim, driver } = setup();
    expect(await driver.createVolume(v1)).toEqual({ volumeId: VOL1, sizeGib: 1, attachedVmId: "" });
    expect(await driver.createVolume(v1)).toEqual({ volumeId: VOL1, sizeGib: 1, attachedVmId: "" });
    expect(sim.commands.filter((c) => c[0] === "vol-create-as")).toEqual([["vol-create-as", "vms", `berth-vol-${VOL1}.qcow2`, "1G", "--format", "qcow2"]]);
    await expect(driver.createVolume({ ...v1, sizeGib: 3 })).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    await driver.define(spec({ volumes: [v2] }));
    expect(await driver.listVolumes()).toEqual([
      { volumeId: VOL1, sizeGib: 1, attachedVmId: "" },
      { volumeId: VOL2, sizeGib: 2, attachedVmId: A },
    ]);
  });

  it("a report's images and volumes come from one read of the pool", async () => {
    const { sim, driver } = setup();
    await driver.createVolume(v1);
    await driver.ensureImage(imageFile().ref);
    sim.commands.length = 0;
    const [images, volumes] = await Promise.all([driver.listImages(), driver.listVolumes()]);
    expect(images.map((i) => i.imageId)).toEqual([IMAGE]);
    expect(volumes.map((v) => v.volumeId)).toEqual([VOL1]);
    expect(sim.commands.filter((c) => c[0] === "vol-list")).toHaveLength(1);
    expect(sim.commands.filter((c) => c[0] === "vol-dumpxml")).toHaveLength(2);
  });

  it("setVolumes hot-plugs on a running domain (--live --config), keeps targets on a reorder, records the order asked", async () => {
    const { sim, driver } = setup();
    await driver.define(spec());
    await driver.start(A);
    sim.commands.length = 0;
    const attached = await driver.setVolumes(A, [v1, v2]);
    expect(attached.volumeIds).toEqual([VOL1, VOL2]);
    expect(sim.commands.filter((c) => c[0] === "attach-device").map((c) => c.slice(2).filter((a) => a.startsWith("--")))).toEqual([
      ["--config", "--live"],
      ["--config", "--live"],
    ]);
    expect(sim.xmlOf(A)).toMatch(new RegExp(`berth-vol-${VOL1}\\.qcow2'/>\\s*<target dev='vdb'`));
    expect(sim.xmlOf(A)).toMatch(new RegExp(`berth-vol-${VOL2}\\.qcow2'/>\\s*<target dev='vdc'`));

    sim.commands.length = 0;
    const reordered = await driver.setVolumes(A, [v2, v1]);
    expect(reordered.volumeIds).toEqual([VOL2, VOL1]);
    expect(names(sim)).not.toContain("attach-device");
    expect(names(sim)).not.toContain("detach-disk");
    expect((await driver.list())[0]!.volumeIds).toEqual([VOL2, VOL1]);

    sim.commands.length = 0;
    expect((await driver.setVolumes(A, [v2])).volumeIds).toEqual([VOL2]);
    expect(sim.commands).toContainEqual(["detach-disk", A, "vdb", "--config", "--live"]);
    // Again: nothing to do.
    sim.commands.length = 0;
    expect((await driver.setVolumes(A, [v2])).volumeIds).toEqual([VOL2]);
    expect(names(sim).filter((n) => n === "attach-device" || n === "detach-disk" || n === "metadata")).toEqual([]);
  });

  it("a shut-off domain changes in its definition only (--config); a volume of another domain is refused", async () => {
    const { sim, driver } = setup();
    await driver.define(spec());
    await driver.define(spec({ vmId: B, name: "db", volumes: [v1] }));
    sim.commands.length = 0;
    await driver.setVolumes(A, [v2]);
    expect(sim.commands.find((c) => c[0] === "attach-device")!.slice(3)).toEqual(["--config"]);
    await expect(driver.setVolumes(A, [v2, v1])).rejects.toMatchObject({ code: "FAILED_PRECONDITION", field: "volumes[1]" });
    await expect(driver.define(spec({ vmId: "11111111-2222-4333-8444-555555555555", name: "x", volumes: [v1] }))).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    await expect(driver.setVolumes(A, [v1, v1])).rejects.toMatchObject({ code: "INVALID_ARGUMENT", field: "volumes[1].id" });
    await expect(driver.setVolumes("11111111-2222-4333-8444-555555555555", [])).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("deleteVolume refuses an attached volume; delete keeps the domain's data volumes, detached", async () => {
    const { sim, driver } = setup();
    await driver.define(spec({ volumes: [v1] }));
    await expect(driver.deleteVolume(VOL1)).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    await driver.delete(A);
    expect(sim.volumes).toEqual(new Set([`berth-vol-${VOL1}.qcow2`]));
    expect(await driver.listVolumes()).toEqual([{ volumeId: VOL1, sizeGib: 1, attachedVmId: "" }]);
    await driver.deleteVolume(VOL1);
    await driver.deleteVolume(VOL1);
    expect(sim.volumes.size).toBe(0);
  });
});

describe("migration with an image, a seed and data volumes", () => {
  it("the destination readies overlay, seed and volumes; its abort removes them; the source copies -inc and removes its copies", async () => {
    const dst = setup();
    const { ref } = imageFile(GIB);
    const seed = { instanceId: A, hostname: "web", sshAuthorizedKeys: [], userData: "" };
    const full = spec({ image: ref, cloudInit: seed, volumes: [{ id: VOL1, name: "data1", sizeGib: 1 }] });
    await dst.driver.prepareIncoming(full);
    expect(dst.sim.volumes).toEqual(new Set([`berth-image-${IMAGE}.qcow2`, `${A}.qcow2`, `${A}-seed.iso`, `berth-vol-${VOL1}.qcow2`]));
    expect(dst.sim.volumeData.get(`${A}.qcow2`)!.backing).toBe(`berth-image-${IMAGE}.qcow2`);
    await dst.driver.abortMigration(A);
    // The image stays: it is the host's, for the next VM over it.
    expect(dst.sim.volumes).toEqual(new Set([`berth-image-${IMAGE}.qcow2`]));

    const src = setup();
    await src.driver.define(full);
    await src.driver.start(A);
    const target = await dst.driver.prepareIncoming(full);
    await src.driver.migrateOut(A, target);
    const migrate = src.sim.commands.find((c) => c[0] === "migrate")!;
    expect(migrate).toContain("--copy-storage-inc");
    expect(migrate).not.toContain("--copy-storage-all");
    // The destination gets its disks by their paths in its pool (libvirt 9 cannot resolve pool volumes for -inc).
    expect(migrate).toContain("--xml");
    expect(src.sim.migrateXml).toContain(`<disk type='file' device='disk'>`);
    expect(src.sim.migrateXml).toContain(`<source file='/pool/${A}.qcow2'/>`);
    expect(src.sim.migrateXml).toContain(`<source file='/pool/berth-vol-${VOL1}.qcow2'/>`);
    expect(src.sim.volumes).toEqual(new Set([`berth-image-${IMAGE}.qcow2`]));
  });

  it("data volumes go incrementally too (they stay sparse); a blank disk alone is copied whole (--copy-storage-all)", async () => {
    const blank = setup();
    await blank.driver.define(spec());
    await blank.driver.start(A);
    await blank.driver.migrateOut(A, await setup().driver.prepareIncoming(spec()));
    expect(blank.sim.commands.find((c) => c[0] === "migrate")).toContain("--copy-storage-all");
    expect(blank.sim.commands.find((c) => c[0] === "migrate")).not.toContain("--xml");
  });

  it("a diskless domain with a data volume copies the volume incrementally and leaves nothing here", async () => {
    const src = setup();
    await src.driver.define(spec({ resources: { vcpus: 1, memoryMib: 512, diskGib: 0 }, volumes: [{ id: VOL1, name: "d", sizeGib: 1 }] }));
    await src.driver.start(A);
    const dst = setup();
    await src.driver.migrateOut(A, await dst.driver.prepareIncoming(spec({ resources: { vcpus: 1, memoryMib: 512, diskGib: 0 }, volumes: [{ id: VOL1, name: "d", sizeGib: 1 }] })));
    expect(src.sim.commands.find((c) => c[0] === "migrate")).toContain("--copy-storage-inc");
    expect(src.sim.volumes.size).toBe(0);
    expect(dst.sim.volumes).toEqual(new Set([`berth-vol-${VOL1}.qcow2`]));
    expect((await src.driver.list()).map((d) => d.state)).toEqual([]);
    void DomainState;
  });
});

describe("the staging directory", () => {
  it("is made when missing, and what a killed fetch left there long ago is swept; a recent one is kept", async () => {
    const staging = path.join(tempDir(), "staging");
    mkdirSync(path.join(staging, "berth-image-old"), { recursive: true });
    mkdirSync(path.join(staging, "berth-image-recent"), { recursive: true });
    mkdirSync(path.join(staging, "other"), { recursive: true });
    const old = new Date(Date.now() - 3 * 3600_000);
    utimesSync(path.join(staging, "berth-image-old"), old, old);
    utimesSync(path.join(staging, "other"), old, old);
    const { driver } = setup({ imageStagingDir: staging, imageFetchTimeoutMs: 60_000 });
    await driver.ensureImage(imageFile().ref);
    expect(readdirSync(staging).sort()).toEqual(["berth-image-recent", "other"]);
    const fresh = path.join(tempDir(), "a", "b");
    await setup({ imageStagingDir: fresh }).driver.ensureImage(imageFile().ref);
    expect(readdirSync(fresh)).toEqual([]);
  });
});
