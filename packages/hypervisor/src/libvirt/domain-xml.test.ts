import { describe, expect, it } from "vitest";
import {
  BERTH_XMLNS,
  compareTargets,
  dataDiskXml,
  dataDisksOf,
  dataVolumeName,
  dataVolumeSerial,
  domainXml,
  freeVirtioTargets,
  imageIdOfVolume,
  imageVolumeName,
  incomingDiskXml,
  orderedVolumeIds,
  poolVolumeOf,
  seedVolumeName,
  volumeIdOfVolume,
  escapeXml,
  metadataSetValue,
  parseBerthMetadata,
  parseDomainXml,
  unescapeXml,
  volumeName,
  type DomainXmlSpec,
} from "./domain-xml.js";

const VM = "0f8fad5b-d9cb-469f-a165-70867728950e";

const spec = (over: Partial<DomainXmlSpec> = {}): DomainXmlSpec => ({
  name: "berth-web",
  uuid: VM,
  vcpus: 2,
  memoryMib: 512,
  domainType: "kvm",
  volume: { pool: "default", name: volumeName(VM) },
  nics: [
    { type: "network", source: "default", mac: "52:54:00:00:00:01" },
    { type: "bridge", source: "br0", mac: "52:54:00:00:00:02" },
  ],
  metadata: { vmId: VM, name: "web", generation: 7, diskGib: 10, fence: false, imageId: "", volumeIds: [] },
  ...over,
});

/** As `virsh dumpxml` printed a domain this module defined (libvirt 9, trimmed). */
const DUMPXML = `<domain type='kvm' id='3'>
  <name>berth-a&amp;b</name>
  <uuid>${VM}</uuid>
  <metadata>
    <other:thing xmlns:other="https://example.com/x" id="nope" generation="1"/>
    <berth:vm xmlns:berth="${BERTH_XMLNS}" id="${VM}" name="a&amp;b &lt;x&gt;" generation="42" disk-gib="10"/>
  </metadata>
  <memory unit='KiB'>524288</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
  </os>
  <devices>
    <disk type='volume' device='disk'>
      <source pool='default' volume='${VM}.qcow2'/>
    </disk>
  </devices>
</domain>
`;

/** As `virsh dumpxml` prints a running domain with an image, a seed, a data volume and NICs (libvirt 9, trimmed). */
const LIVE_XML = `<domain type='qemu' id='12'>
  <name>berth-web</name>
  <uuid>${VM}</uuid>
  <memory unit='KiB'>131072</memory>
  <vcpu placement='static'>1</vcpu>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='berth-test' volume='${VM}.qcow2' index='2'/>
      <backingStore type='file' index='3'>
        <format type='qcow2'/>
        <source file='/var/lib/pool/berth-image-i1.qcow2'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='volume' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source pool='berth-test' volume='${VM}-seed.iso' index='1'/>
      <backingStore/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <disk type='volume' device='disk'>
      <source pool='berth-test' volume='berth-vol-v1.qcow2'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <source file='/elsewhere.img'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:AB:CD:EF'/>
      <source network='default' portid='0e8f' bridge='virbr0'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:56'/>
      <source bridge='br0'/>
    </interface>
    <interface type='user'>
      <mac address='52:54:00:00:00:09'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/7'/>
      <target type='isa-serial' port='0'/>
    </serial>
    <console type='pty' tty='/dev/pts/7'>
      <source path='/dev/pts/7'/>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
`;

describe("domain XML", () => {
  it("generates the domain from the spec", () => {
    const xml = domainXml(spec());
    expect(xml).toContain("<domain type='kvm'>");
    expect(xml).toContain("<name>berth-web</name>");
    expect(xml).toContain(`<uuid>${VM}</uuid>`);
    expect(xml).toContain("<memory unit='MiB'>512</memory>");
    expect(xml).toContain("<vcpu placement='static'>2</vcpu>");
    expect(xml).toContain(`<source pool='default' volume='${VM}.qcow2'/>`);
    expect(xml).toContain("<driver name='qemu' type='qcow2'/>");
    expect(xml).toContain("<target dev='vda' bus='virtio'/>");
    expect(xml).toContain("<interface type='network'>\n      <mac address='52:54:00:00:00:01'/>\n      <source network='default'/>\n      <model type='virtio'/>");
    expect(xml).toContain("<interface type='bridge'>\n      <mac address='52:54:00:00:00:02'/>\n      <source bridge='br0'/>\n      <model type='virtio'/>");
    expect(xml).toContain("<serial type='pty'>");
    expect(xml).toContain("<console type='pty'>");
    expect(xml).toContain("<on_crash>destroy</on_crash>");
    expect(xml).toContain("<acpi/>");
    expect(xml).toContain(`<berth:vm xmlns:berth="${BERTH_XMLNS}" id="${VM}" name="web" generation="7" disk-gib="10"/>`);
  });

  it("omits the disk of a diskless domain and the NICs when the spec has none", () => {
    const xml = domainXml(spec({ volume: undefined, nics: [], domainType: "qemu" }));
    expect(xml).toContain("<domain type='qemu'>");
    expect(xml).not.toContain("<disk");
    expect(xml).not.toContain("<interface");
  });

  it("escapes every value", () => {
    const xml = domainXml(
      spec({
        name: `berth-<a href="x">&'`,
        nics: [{ type: "bridge", source: `br'0"`, mac: "52:54:00:00:00:03" }],
        volume: { pool: `p&'`, name: "v<" },
        metadata: { vmId: VM, name: `<a href="x">&'`, generation: 1, diskGib: 0, fence: false, imageId: "", volumeIds: [] },
      }),
    );
    expect(xml).toContain("<name>berth-&lt;a href=&quot;x&quot;&gt;&amp;&apos;</name>");
    expect(xml).toContain("<source bridge='br&apos;0&quot;'/>");
    expect(xml).toContain("<source pool='p&amp;&apos;' volume='v&lt;'/>");
    expect(xml).toContain(`name="&lt;a href=&quot;x&quot;&gt;&amp;&apos;"`);
    // Every tag stays well formed: no raw quote or angle bracket inside a value.
    const parsed = parseDomainXml(xml);
    expect(parsed?.name).toBe(`berth-<a href="x">&'`);
    expect(parsed?.metadata?.name).toBe(`<a href="x">&'`);
  });

  it("escapeXml and unescapeXml are inverse", () => {
    const s = `a<b>&"c'd&amp;`;
    expect(escapeXml(s)).toBe("a&lt;b&gt;&amp;&quot;c&apos;d&amp;amp;");
    expect(unescapeXml(escapeXml(s))).toBe(s);
    expect(unescapeXml("&#65;&#x42;")).toBe("AB");
  });

  it("round-trips through its own parser", () => {
    const parsed = parseDomainXml(domainXml(spec()));
    expect(parsed).toEqual({
      name: "berth-web",
      uuid: VM,
      vcpus: 2,
      memoryMib: 512,
      metadata: { vmId: VM, name: "web", generation: 7, diskGib: 10, fence: false, imageId: "", volumeIds: [] },
      disks: [{ device: "disk", target: "vda", pool: "default", volume: `${VM}.qcow2` }],
      interfaces: [
        { type: "network", source: "default", mac: "52:54:00:00:00:01" },
        { type: "bridge", source: "br0", mac: "52:54:00:00:00:02" },
      ],
      consolePty: undefined,
    });
  });

  it("attaches the seed as a read-only IDE CD-ROM and data volumes as virtio disks with serials; records image and volume order", () => {
    const xml = domainXml(
      spec({
        seed: { pool: "default", name: seedVolumeName(VM) },
        dataDisks: [
          { pool: "default", name: dataVolumeName("v-2"), target: "vdb", serial: "v2" },
          { pool: "default", name: dataVolumeName("v-1"), target: "vdc", serial: "v1" },
        ],
        metadata: { ...spec().metadata, imageId: "img-1", volumeIds: ["v-2", "v-1"] },
      }),
    );
    expect(xml).toContain(
      `    <disk type='volume' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      <source pool='default' volume='${VM}-seed.iso'/>\n      <target dev='hdc' bus='ide'/>\n      <readonly/>\n    </disk>`,
    );
    expect(xml).toContain(
      `    <disk type='volume' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      <source pool='default' volume='berth-vol-v-2.qcow2'/>\n      <target dev='vdb' bus='virtio'/>\n      <serial>v2</serial>\n    </disk>`,
    );
    expect(xml).toContain(`image-id="img-1" volumes="v-2 v-1"/>`);
    const parsed = parseDomainXml(xml)!;
    expect(parsed.metadata).toMatchObject({ imageId: "img-1", volumeIds: ["v-2", "v-1"] });
    expect(parsed.disks.map((d) => `${d.device}:${d.target}:${d.volume}`)).toEqual([
      `disk:vda:${VM}.qcow2`,
      `cdrom:hdc:${VM}-seed.iso`,
      "disk:vdb:berth-vol-v-2.qcow2",
      "disk:vdc:berth-vol-v-1.qcow2",
    ]);
    expect(dataDisksOf(parsed, "default")).toEqual([
      { volumeId: "v-2", target: "vdb" },
      { volumeId: "v-1", target: "vdc" },
    ]);
    expect(dataDisksOf(parsed, "other")).toEqual([]);
  });

  it("the hot-plug XML of a data volume is the disk element alone", () => {
    expect(dataDiskXml({ pool: "p", name: "berth-vol-x.qcow2", target: "vdd", serial: "x" })).toBe(
      "<disk type='volume' device='disk'>\n  <driver name='qemu' type='qcow2'/>\n  <source pool='p' volume='berth-vol-x.qcow2'/>\n  <target dev='vdd' bus='virtio'/>\n  <serial>x</serial>\n</disk>\n",
    );
  });
});

describe("pool volume names, targets and order", () => {
  it("names images, data volumes and seeds, and reads the ids back", () => {
    expect(imageVolumeName("i-1")).toBe("berth-image-i-1.qcow2");
    expect(imageIdOfVolume("berth-image-i-1.qcow2")).toBe("i-1");
    expect(dataVolumeName("v-1")).toBe("berth-vol-v-1.qcow2");
    expect(volumeIdOfVolume("berth-vol-v-1.qcow2")).toBe("v-1");
    expect(volumeIdOfVolume(`${VM}.qcow2`)).toBeUndefined();
    expect(imageIdOfVolume("berth-vol-v-1.qcow2")).toBeUndefined();
    expect(seedVolumeName(VM)).toBe(`${VM}-seed.iso`);
  });

  it("a volume's serial is its id without dashes, at most 20 characters (virtio-blk's limit)", () => {
    expect(dataVolumeSerial("8c2a4f0e-1b2c-4d5e-8f90-123456789abc")).toBe("8c2a4f0e1b2c4d5e8f90");
    expect(dataVolumeSerial("short")).toBe("short");
  });

  it("free virtio targets start at vdb, skip the used, and go on past vdz as libvirt names them", () => {
    expect(freeVirtioTargets([], 3)).toEqual(["vdb", "vdc", "vdd"]);
    expect(freeVirtioTargets(["vda", "vdc", "hdc"], 2)).toEqual(["vdb", "vdd"]);
    const used = Array.from({ length: 25 }, (_, i) => `vd${String.fromCharCode(97 + i)}`);
    expect(freeVirtioTargets(used, 2)).toEqual(["vdz", "vdaa"]);
    expect(compareTargets("vdz", "vdaa")).toBeLessThan(0);
    expect(compareTargets("vdb", "vdc")).toBeLessThan(0);
  });

  it("volume ids follow the order last asked, then the target order; what is not attached is not listed", () => {
    const attached = [
      { volumeId: "a", target: "vdb" },
      { volumeId: "b", target: "vdc" },
      { volumeId: "c", target: "vdd" },
    ];
    expect(orderedVolumeIds(attached, ["c", "a"])).toEqual(["c", "a", "b"]);
    expect(orderedVolumeIds(attached, [])).toEqual(["a", "b", "c"]);
    expect(orderedVolumeIds(attached.slice(0, 1), ["gone", "a"])).toEqual(["a"]);
  });
});

describe("parsing virsh's output", () => {
  it("reads name, uuid, vcpus, memory (any unit) and Berth's metadata, skipping other namespaces", () => {
    expect(parseDomainXml(DUMPXML)).toMatchObject({
      name: "berth-a&b",
      uuid: VM,
      vcpus: 2,
      memoryMib: 512,
      metadata: { vmId: VM, name: "a&b <x>", generation: 42, diskGib: 10, fence: false, imageId: "", volumeIds: [] },
    });
    expect(parseDomainXml(DUMPXML.replace("<memory unit='KiB'>524288", "<memory unit='GiB'>2"))?.memoryMib).toBe(2048);
  });

  it("a domain without Berth's metadata has none", () => {
    const foreign = DUMPXML.replace(/<berth:vm[^>]*>/, "");
    expect(parseDomainXml(foreign)?.metadata).toBeUndefined();
    const noMetadata = DUMPXML.replace(/<metadata>[\s\S]*<\/metadata>/, "");
    expect(parseDomainXml(noMetadata)?.metadata).toBeUndefined();
  });

  it("refuses unreadable metadata (bad generation) rather than guessing", () => {
    expect(parseBerthMetadata(`<berth:vm xmlns:berth="${BERTH_XMLNS}" id="${VM}" generation="x"/>`)).toBeUndefined();
    expect(parseBerthMetadata(`<berth:vm xmlns:berth="${BERTH_XMLNS}" generation="1"/>`)).toBeUndefined();
  });

  it("reads the element as `virsh metadata` prints it (no namespace) and as `--set` writes it", () => {
    const value = metadataSetValue({ vmId: VM, name: "w", generation: 3, diskGib: 0, fence: false, imageId: "", volumeIds: [] });
    expect(value).toBe(`<vm id="${VM}" name="w" generation="3" disk-gib="0"/>`);
    expect(parseBerthMetadata(value)).toEqual({ vmId: VM, name: "w", generation: 3, diskGib: 0, fence: false, imageId: "", volumeIds: [] });
    expect(parseBerthMetadata(`<berth:vm xmlns:berth='${BERTH_XMLNS}' generation='5' id='${VM}'/>`)).toEqual({ vmId: VM, name: "", generation: 5, diskGib: 0, fence: false, imageId: "", volumeIds: [] });
  });

  it("records fence only when set, and reads it back; a domain from before fencing reads unfenced", () => {
    const fenced = { vmId: VM, name: "w", generation: 3, diskGib: 0, fence: true, imageId: "", volumeIds: [] };
    expect(metadataSetValue(fenced)).toBe(`<vm id="${VM}" name="w" generation="3" disk-gib="0" fence="true"/>`);
    expect(parseBerthMetadata(metadataSetValue(fenced))).toEqual(fenced);
    expect(parseDomainXml(domainXml(spec({ metadata: { ...spec().metadata, fence: true, imageId: "", volumeIds: [] } })))?.metadata?.fence).toBe(true);
    expect(parseDomainXml(DUMPXML)?.metadata?.fence).toBe(false);
  });

  it("reads a running domain's disks (top source, not the backing chain), NICs (MAC, network or bridge) and console pty", () => {
    const parsed = parseDomainXml(LIVE_XML)!;
    expect(parsed.disks).toEqual([
      { device: "disk", target: "vda", pool: "berth-test", volume: `${VM}.qcow2` },
      { device: "cdrom", target: "hdc", pool: "berth-test", volume: `${VM}-seed.iso` },
      { device: "disk", target: "vdb", pool: "berth-test", volume: "berth-vol-v1.qcow2" },
      { device: "disk", target: "vdc", pool: undefined, volume: undefined, file: "/elsewhere.img" },
    ]);
    expect(parsed.interfaces).toEqual([
      { type: "network", source: "default", mac: "52:54:00:ab:cd:ef" },
      { type: "bridge", source: "br0", mac: "52:54:00:12:34:56" },
      { type: "user", source: "", mac: "52:54:00:00:00:09" },
    ]);
    expect(parsed.consolePty).toBe("/dev/pts/7");
    expect(parseDomainXml(LIVE_XML.replace(" tty='/dev/pts/7'", ""))?.consolePty).toBe("/dev/pts/7");
    expect(parseDomainXml(DUMPXML)?.consolePty).toBeUndefined();
  });

  it("a file disk in the pool's directory is that pool's volume (a domain arrived by an incremental migration)", () => {
    const file = { device: "disk", target: "vdb", pool: undefined, volume: undefined, file: "/var/lib/pool/berth-vol-v1.qcow2" };
    expect(poolVolumeOf(file, "vms", "/var/lib/pool/")).toBe("berth-vol-v1.qcow2");
    expect(poolVolumeOf(file, "vms", "/var/lib/other")).toBeUndefined();
    expect(poolVolumeOf(file, "vms")).toBeUndefined();
    expect(dataDisksOf({ disks: [file] }, "vms", "/var/lib/pool")).toEqual([{ volumeId: "v1", target: "vdb" }]);
  });

  it("gives an incremental migration's destination its disks by path in its pool, without the source's backing chain", () => {
    const xml = incomingDiskXml(LIVE_XML, "berth-test", "/dst/pool/");
    const parsed = parseDomainXml(xml)!;
    expect(parsed.disks).toEqual([
      { device: "disk", target: "vda", pool: undefined, volume: undefined, file: `/dst/pool/${VM}.qcow2` },
      { device: "cdrom", target: "hdc", pool: undefined, volume: undefined, file: `/dst/pool/${VM}-seed.iso` },
      { device: "disk", target: "vdb", pool: undefined, volume: undefined, file: "/dst/pool/berth-vol-v1.qcow2" },
      { device: "disk", target: "vdc", pool: undefined, volume: undefined, file: "/elsewhere.img" },
    ]);
    expect(xml).not.toContain("backingStore");
    expect(xml).not.toContain("berth-image-i1");
    expect(xml).toContain("<readonly/>");
    expect(xml).toContain("<interface type='network'>");
    // Again from there (its disks are files in its own pool now): the same, for the next host.
    expect(parseDomainXml(incomingDiskXml(xml, "berth-test", "/third", "/dst/pool"))!.disks.map((d) => d.file)).toEqual([
      `/third/${VM}.qcow2`,
      `/third/${VM}-seed.iso`,
      "/third/berth-vol-v1.qcow2",
      "/elsewhere.img",
    ]);
  });

  it("returns undefined for something that is not a domain", () => {
    expect(parseDomainXml("")).toBeUndefined();
    expect(parseDomainXml("<network><name>x</name></network>")).toBeUndefined();
  });
});
