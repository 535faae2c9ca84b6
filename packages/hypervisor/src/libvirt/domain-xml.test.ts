import { describe, expect, it } from "vitest";
import {
  BERTH_XMLNS,
  domainXml,
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
  networks: [
    { type: "network", source: "default" },
    { type: "bridge", source: "br0" },
  ],
  metadata: { vmId: VM, name: "web", generation: 7, diskGib: 10, fence: false },
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
    expect(xml).toContain("<interface type='network'>\n      <source network='default'/>\n      <model type='virtio'/>");
    expect(xml).toContain("<interface type='bridge'>\n      <source bridge='br0'/>\n      <model type='virtio'/>");
    expect(xml).toContain("<serial type='pty'>");
    expect(xml).toContain("<console type='pty'>");
    expect(xml).toContain("<on_crash>destroy</on_crash>");
    expect(xml).toContain("<acpi/>");
    expect(xml).toContain(`<berth:vm xmlns:berth="${BERTH_XMLNS}" id="${VM}" name="web" generation="7" disk-gib="10"/>`);
  });

  it("omits the disk of a diskless domain and the NICs when no network is configured", () => {
    const xml = domainXml(spec({ volume: undefined, networks: [], domainType: "qemu" }));
    expect(xml).toContain("<domain type='qemu'>");
    expect(xml).not.toContain("<disk");
    expect(xml).not.toContain("<interface");
  });

  it("escapes every value", () => {
    const xml = domainXml(
      spec({
        name: `berth-<a href="x">&'`,
        networks: [{ type: "bridge", source: `br'0"` }],
        volume: { pool: `p&'`, name: "v<" },
        metadata: { vmId: VM, name: `<a href="x">&'`, generation: 1, diskGib: 0, fence: false },
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
    expect(parsed).toEqual({ name: "berth-web", uuid: VM, vcpus: 2, memoryMib: 512, metadata: { vmId: VM, name: "web", generation: 7, diskGib: 10, fence: false } });
  });
});

describe("parsing virsh's output", () => {
  it("reads name, uuid, vcpus, memory (any unit) and Berth's metadata, skipping other namespaces", () => {
    expect(parseDomainXml(DUMPXML)).toEqual({
      name: "berth-a&b",
      uuid: VM,
      vcpus: 2,
      memoryMib: 512,
      metadata: { vmId: VM, name: "a&b <x>", generation: 42, diskGib: 10, fence: false },
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
    const value = metadataSetValue({ vmId: VM, name: "w", generation: 3, diskGib: 0, fence: false });
    expect(value).toBe(`<vm id="${VM}" name="w" generation="3" disk-gib="0"/>`);
    expect(parseBerthMetadata(value)).toEqual({ vmId: VM, name: "w", generation: 3, diskGib: 0, fence: false });
    expect(parseBerthMetadata(`<berth:vm xmlns:berth='${BERTH_XMLNS}' generation='5' id='${VM}'/>`)).toEqual({ vmId: VM, name: "", generation: 5, diskGib: 0, fence: false });
  });

  it("records fence only when set, and reads it back; a domain from before fencing reads unfenced", () => {
    const fenced = { vmId: VM, name: "w", generation: 3, diskGib: 0, fence: true };
    expect(metadataSetValue(fenced)).toBe(`<vm id="${VM}" name="w" generation="3" disk-gib="0" fence="true"/>`);
    expect(parseBerthMetadata(metadataSetValue(fenced))).toEqual(fenced);
    expect(parseDomainXml(domainXml(spec({ metadata: { ...spec().metadata, fence: true } })))?.metadata?.fence).toBe(true);
    expect(parseDomainXml(DUMPXML)?.metadata?.fence).toBe(false);
  });

  it("returns undefined for something that is not a domain", () => {
    expect(parseDomainXml("")).toBeUndefined();
    expect(parseDomainXml("<network><name>x</name></network>")).toBeUndefined();
  });
});
