import type { LibvirtNetwork } from "./options.js";

/** Namespace of Berth's metadata element in a domain's `<metadata>`. */
export const BERTH_XMLNS = "https://berth.dev/xmlns/vm/1";
/** The namespace prefix (virsh `metadata --key`) Berth's element is written with. */
export const BERTH_XMLNS_KEY = "berth";

/** What Berth records in a domain: enough to rebuild its inventory after an agent restart. */
export interface BerthMetadata {
  vmId: string;
  /** The VM's name, unprefixed. */
  name: string;
  generation: number;
  /** Size of the volume Berth created (0: diskless). */
  diskGib: number;
  /**
   * Destroyed when the host's watchdog fires (`DomainSpec.fence`). Written as `fence="true"` only
   * when set, so a domain defined before fencing existed reads back unfenced, as it was defined.
   */
  fence: boolean;
}

/** Everything the domain XML is generated from. */
export interface DomainXmlSpec {
  /** libvirt domain name (prefix + VM name). */
  name: string;
  /** The domain's uuid (the vmId). */
  uuid: string;
  vcpus: number;
  memoryMib: number;
  domainType: "kvm" | "qemu";
  /** The domain's disk: a qcow2 volume of a storage pool; absent for a diskless domain. */
  volume?: { pool: string; name: string } | undefined;
  networks: readonly LibvirtNetwork[];
  metadata: BerthMetadata;
}

const ENTITIES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" };

/** Escapes text for XML content and attribute values (either quote). */
export function escapeXml(value: string | number): string {
  return String(value).replace(/[&<>"']/g, (c) => ENTITIES[c] ?? c);
}

/** Decodes the five named entities and numeric character references. */
export function unescapeXml(value: string): string {
  return value.replace(/&(#x[0-9a-f]+|#[0-9]+|amp|lt|gt|quot|apos);/gi, (whole, ref: string) => {
    const lower = ref.toLowerCase();
    if (lower.startsWith("#x")) return String.fromCodePoint(parseInt(lower.slice(2), 16));
    if (lower.startsWith("#")) return String.fromCodePoint(parseInt(lower.slice(1), 10));
    return { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" }[lower] ?? whole;
  });
}

/** Name of the volume Berth creates for a VM in the storage pool. */
export function volumeName(vmId: string): string {
  return `${vmId}.qcow2`;
}

/** Berth's metadata element with its namespace declared, as it sits in the domain XML. */
export function metadataElement(m: BerthMetadata): string {
  return `<${BERTH_XMLNS_KEY}:vm xmlns:${BERTH_XMLNS_KEY}="${BERTH_XMLNS}"${metadataAttributes(m)}/>`;
}

/** The element given to `virsh metadata <dom> <ns> --key berth --set` (libvirt adds the namespace). */
export function metadataSetValue(m: BerthMetadata): string {
  return `<vm${metadataAttributes(m)}/>`;
}

function metadataAttributes(m: BerthMetadata): string {
  const fence = m.fence ? ` fence="true"` : "";
  return ` id="${escapeXml(m.vmId)}" name="${escapeXml(m.name)}" generation="${escapeXml(m.generation)}" disk-gib="${escapeXml(m.diskGib)}"${fence}`;
}

/**
 * The domain XML of a Berth VM: uuid = vmId, vcpus, memory, an optional qcow2 volume (virtio), one
 * virtio NIC per configured network or bridge, a pty serial console, ACPI (so a graceful shutdown
 * reaches the guest), `on_crash` destroy, and Berth's metadata. Every value is XML-escaped.
 */
export function domainXml(spec: DomainXmlSpec): string {
  const lines = [
    `<domain type='${escapeXml(spec.domainType)}'>`,
    `  <name>${escapeXml(spec.name)}</name>`,
    `  <uuid>${escapeXml(spec.uuid)}</uuid>`,
    `  <metadata>`,
    `    ${metadataElement(spec.metadata)}`,
    `  </metadata>`,
    `  <memory unit='MiB'>${escapeXml(spec.memoryMib)}</memory>`,
    `  <currentMemory unit='MiB'>${escapeXml(spec.memoryMib)}</currentMemory>`,
    `  <vcpu placement='static'>${escapeXml(spec.vcpus)}</vcpu>`,
    `  <os>`,
    `    <type>hvm</type>`,
    `    <boot dev='hd'/>`,
    `  </os>`,
    `  <features>`,
    `    <acpi/>`,
    `    <apic/>`,
    `  </features>`,
    `  <clock offset='utc'/>`,
    `  <on_poweroff>destroy</on_poweroff>`,
    `  <on_reboot>restart</on_reboot>`,
    `  <on_crash>destroy</on_crash>`,
    `  <devices>`,
  ];
  if (spec.volume) {
    lines.push(
      `    <disk type='volume' device='disk'>`,
      `      <driver name='qemu' type='qcow2'/>`,
      `      <source pool='${escapeXml(spec.volume.pool)}' volume='${escapeXml(spec.volume.name)}'/>`,
      `      <target dev='vda' bus='virtio'/>`,
      `    </disk>`,
    );
  }
  for (const n of spec.networks) {
    lines.push(
      `    <interface type='${n.type === "bridge" ? "bridge" : "network"}'>`,
      `      <source ${n.type === "bridge" ? "bridge" : "network"}='${escapeXml(n.source)}'/>`,
      `      <model type='virtio'/>`,
      `    </interface>`,
    );
  }
  lines.push(
    `    <serial type='pty'>`,
    `      <target port='0'/>`,
    `    </serial>`,
    `    <console type='pty'>`,
    `      <target type='serial' port='0'/>`,
    `    </console>`,
    `  </devices>`,
    `</domain>`,
    ``,
  );
  return lines.join("\n");
}

/** What Berth reads back from a domain's XML (as `virsh dumpxml` prints it). */
export interface ParsedDomainXml {
  name: string;
  uuid: string;
  vcpus: number;
  memoryMib: number;
  /** Berth's metadata; undefined for a domain Berth does not manage (or whose element is unreadable). */
  metadata: BerthMetadata | undefined;
}

/** Parses the attributes of one start tag (either quote style), entities decoded. */
export function parseAttributes(tag: string): Map<string, string> {
  const attributes = new Map<string, string>();
  for (const m of tag.matchAll(/([A-Za-z_][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
    attributes.set(m[1]!, unescapeXml(m[2] ?? m[3] ?? ""));
  }
  return attributes;
}

const UNIT_BYTES: Record<string, number> = {
  b: 1, bytes: 1,
  kb: 1e3, k: 1024, kib: 1024,
  mb: 1e6, m: 2 ** 20, mib: 2 ** 20,
  gb: 1e9, g: 2 ** 30, gib: 2 ** 30,
  tb: 1e12, t: 2 ** 40, tib: 2 ** 40,
};

/** Berth's metadata element found in a domain XML (or in `virsh metadata` output), or undefined. */
export function parseBerthMetadata(xml: string): BerthMetadata | undefined {
  for (const m of xml.matchAll(/<(?:([A-Za-z_][\w.-]*):)?vm\b([^>]*)>/g)) {
    const attributes = parseAttributes(m[2] ?? "");
    const prefix = m[1];
    const ns = prefix === undefined ? attributes.get("xmlns") : attributes.get(`xmlns:${prefix}`);
    // `virsh metadata <dom> <ns>` prints the element alone, without its namespace.
    if (ns !== undefined && ns !== BERTH_XMLNS) continue;
    if (ns === undefined && prefix !== undefined) continue;
    const vmId = attributes.get("id");
    const generation = Number(attributes.get("generation"));
    const diskGib = Number(attributes.get("disk-gib") ?? "0");
    if (!vmId || !Number.isSafeInteger(generation) || generation < 0 || !Number.isSafeInteger(diskGib) || diskGib < 0) continue;
    return { vmId, name: attributes.get("name") ?? "", generation, diskGib, fence: attributes.get("fence") === "true" };
  }
  return undefined;
}

/** Parses the elements Berth needs from `virsh dumpxml` output; undefined if it is not a domain XML. */
export function parseDomainXml(xml: string): ParsedDomainXml | undefined {
  const name = /<domain\b[^>]*>\s*<name>([^<]*)<\/name>/.exec(xml)?.[1];
  const uuid = /<uuid>([^<]*)<\/uuid>/.exec(xml)?.[1];
  if (name === undefined || uuid === undefined) return undefined;
  const vcpus = Number(/<vcpu\b[^>]*>\s*(\d+)\s*<\/vcpu>/.exec(xml)?.[1] ?? "0");
  const memory = /<memory\b([^>]*)>\s*(\d+)\s*<\/memory>/.exec(xml);
  let memoryMib = 0;
  if (memory) {
    const unit = (parseAttributes(memory[1] ?? "").get("unit") ?? "KiB").toLowerCase();
    memoryMib = Math.floor((Number(memory[2]) * (UNIT_BYTES[unit] ?? 1024)) / 2 ** 20);
  }
  const metadataBlock = /<metadata>([\s\S]*?)<\/metadata>/.exec(xml)?.[1];
  return {
    name: unescapeXml(name),
    uuid: uuid.trim().toLowerCase(),
    vcpus,
    memoryMib,
    metadata: metadataBlock === undefined ? undefined : parseBerthMetadata(metadataBlock),
  };
}

/** Splits a concatenation of domain XML documents. */
export function splitDomainXmls(text: string): string[] {
  return [...text.matchAll(/<domain\b[\s\S]*?<\/domain>/g)].map((m) => m[0]);
}
