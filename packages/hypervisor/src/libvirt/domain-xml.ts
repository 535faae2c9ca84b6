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
  /**
   * The image the disk is an overlay of (`DomainSpec.image.id`); "" for a blank disk. Written as
   * `image-id` only when set.
   */
  imageId: string;
  /**
   * The data volumes in the order last asked (`setVolumes`), which `Domain.volumeIds` follows:
   * disks keep their targets when the order changes (nothing in use is unplugged to reorder), so
   * the targets alone do not say it. Written as `volumes` (space-separated ids) only when any.
   */
  volumeIds: string[];
}

/** A NIC of a domain: on a libvirt network or a host bridge, with its MAC. */
export interface DomainNic {
  type: "network" | "bridge";
  /** The libvirt network's name, or the bridge's interface name. */
  source: string;
  mac: string;
}

/** A disk backed by a volume of a storage pool. */
export interface PoolDisk {
  pool: string;
  /** The volume's name in the pool. */
  name: string;
}

/** A data volume attached as a virtio disk. */
export interface DataDisk extends PoolDisk {
  /** The target device, vdb, vdc... */
  target: string;
  /** What the guest sees as the disk's serial (/dev/disk/by-id/virtio-<serial>). */
  serial: string;
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
  /**
   * The domain's disk (vda): a qcow2 volume of a storage pool (blank, or an overlay whose backing
   * file is in its qcow2 header); absent for a diskless domain.
   */
  volume?: PoolDisk | undefined;
  /** One virtio NIC each, in order. */
  nics: readonly DomainNic[];
  /**
   * The NoCloud seed ISO, attached as a read-only IDE CD-ROM (hdc): the bus of the default `pc`
   * machine every guest kernel drives (Debian's cloud kernel, for one, has no AHCI: a SATA CD-ROM
   * would go unseen and the seed with it).
   */
  seed?: PoolDisk | undefined;
  /** Data volumes (virtio disks, at their targets). */
  dataDisks?: readonly DataDisk[];
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

/** Name of the host's one copy of an image in the storage pool (always qcow2: a raw image is converted). */
export function imageVolumeName(imageId: string): string {
  return `berth-image-${imageId}.qcow2`;
}

/** Name of a data volume in the storage pool. */
export function dataVolumeName(volumeId: string): string {
  return `berth-vol-${volumeId}.qcow2`;
}

/** Name of a VM's NoCloud seed ISO in the storage pool. */
export function seedVolumeName(vmId: string): string {
  return `${vmId}-seed.iso`;
}

/** The image id of a volume named by {@link imageVolumeName}, else undefined. */
export function imageIdOfVolume(name: string): string | undefined {
  return /^berth-image-(.+)\.qcow2$/.exec(name)?.[1];
}

/** The volume id of a volume named by {@link dataVolumeName}, else undefined. */
export function volumeIdOfVolume(name: string): string | undefined {
  return /^berth-vol-(.+)\.qcow2$/.exec(name)?.[1];
}

/**
 * The serial a data volume's disk carries: its id without dashes, cut to the 20 bytes virtio-blk
 * keeps (a UUID's first 80 bits: unique enough on one VM), so the guest finds it as
 * /dev/disk/by-id/virtio-<serial>.
 */
export function dataVolumeSerial(volumeId: string): string {
  return volumeId.replace(/-/g, "").slice(0, 20);
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
  const image = m.imageId ? ` image-id="${escapeXml(m.imageId)}"` : "";
  const volumes = m.volumeIds.length > 0 ? ` volumes="${escapeXml(m.volumeIds.join(" "))}"` : "";
  return ` id="${escapeXml(m.vmId)}" name="${escapeXml(m.name)}" generation="${escapeXml(m.generation)}" disk-gib="${escapeXml(m.diskGib)}"${fence}${image}${volumes}`;
}

/**
 * The `<disk>` element of a data volume: a qcow2 volume of the pool as a virtio disk at its
 * target, with a serial so the guest can find it by id whatever name its kernel gives it. Also what
 * `virsh attach-device` is given to hot-plug it.
 */
export function dataDiskXml(disk: DataDisk, indent = ""): string {
  return [
    `${indent}<disk type='volume' device='disk'>`,
    `${indent}  <driver name='qemu' type='qcow2'/>`,
    `${indent}  <source pool='${escapeXml(disk.pool)}' volume='${escapeXml(disk.name)}'/>`,
    `${indent}  <target dev='${escapeXml(disk.target)}' bus='virtio'/>`,
    `${indent}  <serial>${escapeXml(disk.serial)}</serial>`,
    `${indent}</disk>`,
    ``,
  ].join("\n");
}

/**
 * The domain XML of a Berth VM: uuid = vmId, vcpus, memory, an optional qcow2 volume (virtio, vda),
 * one virtio NIC per `nics` entry (libvirt network or bridge, with its MAC), the seed ISO as a
 * read-only IDE CD-ROM, data volumes as virtio disks, a pty serial console, ACPI (so a graceful
 * shutdown reaches the guest), `on_crash` destroy, and Berth's metadata. Every value is XML-escaped.
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
  if (spec.seed) {
    lines.push(
      `    <disk type='volume' device='cdrom'>`,
      `      <driver name='qemu' type='raw'/>`,
      `      <source pool='${escapeXml(spec.seed.pool)}' volume='${escapeXml(spec.seed.name)}'/>`,
      `      <target dev='hdc' bus='ide'/>`,
      `      <readonly/>`,
      `    </disk>`,
    );
  }
  for (const d of spec.dataDisks ?? []) lines.push(dataDiskXml(d, "    ").trimEnd());
  for (const n of spec.nics) {
    const kind = n.type === "bridge" ? "bridge" : "network";
    lines.push(
      `    <interface type='${kind}'>`,
      `      <mac address='${escapeXml(n.mac)}'/>`,
      `      <source ${kind}='${escapeXml(n.source)}'/>`,
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

/** A `<disk>` of a domain as `virsh dumpxml` prints it. */
export interface ParsedDisk {
  /** `disk`, `cdrom`, ... */
  device: string;
  /** The target device (vda, hdc...). */
  target: string;
  /** For `type='volume'`: the pool and the volume's name. */
  pool: string | undefined;
  volume: string | undefined;
  /** For `type='file'`: the file's path. */
  file?: string | undefined;
}

/** An `<interface>` of a domain. */
export interface ParsedInterface {
  /** `network`, `bridge`, ... (libvirt's interface type). */
  type: string;
  /** The network's name (type network) or the bridge's (type bridge); "" otherwise. */
  source: string;
  /** Lower-case MAC; "" when libvirt has not assigned one. */
  mac: string;
}

/** What Berth reads back from a domain's XML (as `virsh dumpxml` prints it). */
export interface ParsedDomainXml {
  name: string;
  uuid: string;
  vcpus: number;
  memoryMib: number;
  /** Berth's metadata; undefined for a domain Berth does not manage (or whose element is unreadable). */
  metadata: BerthMetadata | undefined;
  disks: ParsedDisk[];
  interfaces: ParsedInterface[];
  /**
   * The pty of the serial console of a running domain (`<console type='pty' tty='/dev/pts/N'>`,
   * else its `<source path>`); undefined when it has none (shut off, or not a pty).
   */
  consolePty: string | undefined;
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
    const volumeIds = (attributes.get("volumes") ?? "").split(" ").filter((v) => v !== "");
    return { vmId, name: attributes.get("name") ?? "", generation, diskGib, fence: attributes.get("fence") === "true", imageId: attributes.get("image-id") ?? "", volumeIds };
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
  const devices = /<devices>([\s\S]*?)<\/devices>/.exec(xml)?.[1] ?? "";
  return {
    name: unescapeXml(name),
    uuid: uuid.trim().toLowerCase(),
    vcpus,
    memoryMib,
    metadata: metadataBlock === undefined ? undefined : parseBerthMetadata(metadataBlock),
    disks: parseDisks(devices),
    interfaces: parseInterfaces(devices),
    consolePty: parseConsolePty(devices),
  };
}

/** The attributes of the first `<tag ...>` in `body`, or an empty map. */
function firstTagAttributes(body: string, tag: string): Map<string, string> {
  const m = new RegExp(`<${tag}\\b([^>]*?)/?>`).exec(body);
  return m ? parseAttributes(m[1] ?? "") : new Map();
}

function parseDisks(devices: string): ParsedDisk[] {
  const disks: ParsedDisk[] = [];
  for (const m of devices.matchAll(/<disk\b([^>]*)>([\s\S]*?)<\/disk>/g)) {
    const attributes = parseAttributes(m[1] ?? "");
    const body = m[2] ?? "";
    // The top source only: a live XML lists the backing chain in <backingStore>, with sources of its own.
    const top = body.replace(/<backingStore\b[\s\S]*<\/backingStore>/, "");
    const source = firstTagAttributes(top, "source");
    const disk: ParsedDisk = {
      device: attributes.get("device") ?? "disk",
      target: firstTagAttributes(top, "target").get("dev") ?? "",
      pool: attributes.get("type") === "volume" ? source.get("pool") : undefined,
      volume: attributes.get("type") === "volume" ? source.get("volume") : undefined,
    };
    if (attributes.get("type") === "file" && source.get("file") !== undefined) disk.file = source.get("file");
    disks.push(disk);
  }
  return disks;
}

function parseInterfaces(devices: string): ParsedInterface[] {
  const interfaces: ParsedInterface[] = [];
  for (const m of devices.matchAll(/<interface\b([^>]*)>([\s\S]*?)<\/interface>/g)) {
    const type = parseAttributes(m[1] ?? "").get("type") ?? "";
    const body = m[2] ?? "";
    const source = firstTagAttributes(body, "source");
    interfaces.push({
      type,
      source: (type === "network" ? source.get("network") : type === "bridge" ? source.get("bridge") : undefined) ?? "",
      mac: (firstTagAttributes(body, "mac").get("address") ?? "").toLowerCase(),
    });
  }
  return interfaces;
}

function parseConsolePty(devices: string): string | undefined {
  const m = /<console\b([^>]*)>([\s\S]*?)<\/console>/.exec(devices);
  if (!m) return undefined;
  const attributes = parseAttributes(m[1] ?? "");
  if (attributes.get("type") !== "pty") return undefined;
  const path = attributes.get("tty") ?? firstTagAttributes(m[2] ?? "", "source").get("path");
  return path && path.startsWith("/") ? path : undefined;
}

/** Splits a concatenation of domain XML documents. */
export function splitDomainXmls(text: string): string[] {
  return [...text.matchAll(/<domain\b[\s\S]*?<\/domain>/g)].map((m) => m[0]);
}

/** A data volume's disk in a domain: its volume id and target. */
export interface AttachedDataDisk {
  volumeId: string;
  target: string;
}

/**
 * The name of the volume of `pool` a disk is: a `type='volume'` disk of that pool, or a
 * `type='file'` disk directly in the pool's directory `poolPath` (how a domain that arrived by a
 * migration with `--copy-storage-inc` names its disks until it is started again); else undefined.
 */
export function poolVolumeOf(disk: ParsedDisk, pool: string, poolPath?: string): string | undefined {
  if (disk.pool === pool && disk.volume !== undefined) return disk.volume;
  if (disk.file !== undefined && poolPath !== undefined) {
    const dir = poolPath.replace(/\/+$/, "");
    const slash = disk.file.lastIndexOf("/");
    if (slash > 0 && disk.file.slice(0, slash) === dir) return disk.file.slice(slash + 1);
  }
  return undefined;
}

/** The data volumes' disks of a parsed domain: `berth-vol-<id>.qcow2` volumes of `pool` (see `poolVolumeOf`), by target. */
export function dataDisksOf(parsed: { disks: readonly ParsedDisk[] }, pool: string, poolPath?: string): AttachedDataDisk[] {
  const found: AttachedDataDisk[] = [];
  for (const d of parsed.disks) {
    const volume = d.device === "disk" ? poolVolumeOf(d, pool, poolPath) : undefined;
    const volumeId = volume === undefined ? undefined : volumeIdOfVolume(volume);
    if (volumeId !== undefined) found.push({ volumeId, target: d.target });
  }
  return found.sort((a, b) => compareTargets(a.target, b.target));
}

/**
 * The domain XML a migration with `--copy-storage-inc` gives the destination (`virsh migrate
 * --xml`): the source's migratable XML with each disk that is a volume of `pool` (see
 * `poolVolumeOf`: by pool and name, or a file in `sourcePoolPath`) named by its path in the
 * destination pool's directory (`type='file'`), and no `<backingStore>`, so the destination's
 * libvirt finds the disks it prepared (it cannot create or resolve pool volumes for an incremental
 * copy) and reads each overlay's backing chain from its own qcow2 header. Pure.
 */
export function incomingDiskXml(migratableXml: string, pool: string, destinationPoolPath: string, sourcePoolPath?: string): string {
  const dir = destinationPoolPath.replace(/\/+$/, "");
  return migratableXml.replace(/<disk\b([^>]*)>([\s\S]*?)<\/disk>/g, (whole, attrs: string, body: string) => {
    const attributes = parseAttributes(attrs);
    const type = attributes.get("type");
    if (type !== "volume" && type !== "file") return whole;
    const source = /<source\b([^>]*?)\/?>/.exec(body);
    const sourceAttributes = parseAttributes(source?.[1] ?? "");
    const volume = poolVolumeOf(
      { device: "", target: "", pool: sourceAttributes.get("pool"), volume: sourceAttributes.get("volume"), file: type === "file" ? sourceAttributes.get("file") : undefined },
      pool,
      sourcePoolPath,
    );
    if (!source || volume === undefined) return whole;
    const newBody = body
      .replace(/\s*<backingStore\b[^>]*\/>/g, "")
      .replace(/\s*<backingStore\b[\s\S]*<\/backingStore>/, "")
      .replace(source[0], `<source file='${escapeXml(`${dir}/${volume}`)}'/>`);
    return `<disk${attrs.replace(/\btype=(['"])(?:volume|file)\1/, "type='file'")}>${newBody}</disk>`;
  });
}

/**
 * `Domain.volumeIds`: the attached volumes in the order last asked (`order`, the metadata's),
 * then any other attached one by target. What is not attached is not listed, whatever was asked.
 */
export function orderedVolumeIds(attached: readonly AttachedDataDisk[], order: readonly string[]): string[] {
  const ids = new Set(attached.map((d) => d.volumeId));
  const first = order.filter((id, i) => ids.has(id) && order.indexOf(id) === i);
  return [...first, ...attached.map((d) => d.volumeId).filter((id) => !first.includes(id))];
}

/** Orders target devices as the kernel would enumerate them: vdb < vdz < vdaa. */
export function compareTargets(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

/**
 * The first `count` virtio targets from vdb on that `used` does not hold (vda is the VM's disk;
 * after vdz come vdaa, vdab... as libvirt names them). Pure.
 */
export function freeVirtioTargets(used: Iterable<string>, count: number): string[] {
  const taken = new Set(used);
  const free: string[] = [];
  for (let i = 1; free.length < count; i++) {
    const target = `vd${diskSuffix(i)}`;
    if (!taken.has(target)) free.push(target);
  }
  return free;
}

/** 0 → a, 25 → z, 26 → aa (libvirt's disk name suffixes). */
function diskSuffix(index: number): string {
  let suffix = "";
  let i = index;
  do {
    suffix = String.fromCharCode(97 + (i % 26)) + suffix;
    i = Math.floor(i / 26) - 1;
  } while (i >= 0);
  return suffix;
}
