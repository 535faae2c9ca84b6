import {
  HostFailurePolicy,
  type CloudInit,
  type Domain,
  type Hello,
  type HostImage,
  type HostNetwork,
  type HostVolume,
  type HypervisorStatus,
  type Image,
  type Report,
  type Resources,
  type VmSpec,
  type Volume,
} from "@berth/api";
import { invalidArgument, quote } from "./errors.js";
import { Limits } from "./limits.js";

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/;
/** libvirt network and bridge names as a VM's spec may name them. */
const NETWORK_NAME = new RegExp(`^[A-Za-z0-9._-]{1,${Limits.maxNetworkNameLength}}$`);
/** The key types an OpenSSH authorized_keys line starts with (ssh-ed25519, ssh-rsa, ecdsa-sha2-…, sk-…@openssh.com). */
const SSH_KEY_TYPE_PREFIXES = ["ssh-", "ecdsa-", "sk-"] as const;
const SHA256_HEX = /^[0-9a-f]{64}$/;
/** The formats an image may be stored in (Image.format; empty is qcow2). */
export const IMAGE_FORMATS: readonly string[] = Object.freeze(["qcow2", "raw"]);

/** A DNS label: lower-case letters, digits and '-', 1..63 characters. Throws INVALID_ARGUMENT. */
export function validateName(name: string, field: string): void {
  if (name.length === 0) throw invalidArgument(field, "is required");
  if (!DNS_LABEL.test(name)) {
    throw invalidArgument(
      field,
      `'${name.slice(0, 80)}' must be 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit`,
    );
  }
}

/** Host ids follow the same rule as VM names (they appear in keys and domain names). */
export const validateHostId = (id: string, field = "host_id"): void => validateName(id, field);

export function validateLabels(labels: Record<string, string>, field: string): void {
  const entries = Object.entries(labels);
  if (entries.length > Limits.maxLabels) throw invalidArgument(field, `at most ${Limits.maxLabels} labels`);
  for (const [k, v] of entries) {
    if (!LABEL_KEY.test(k)) {
      throw invalidArgument(`${field}[${k.slice(0, 80)}]`, "key must be 1-63 letters, digits, '.', '_', '/' or '-'");
    }
    if (v.length > Limits.maxLabelValueLength) {
      throw invalidArgument(`${field}[${k}]`, `value longer than ${Limits.maxLabelValueLength} characters`);
    }
    if (/[\u0000-\u001f\u007f]/.test(v)) throw invalidArgument(`${field}[${k}]`, "value must not contain control characters (NUL, newlines, ...)");
  }
}

function checkInteger(value: number, field: string, min: number, max: number, unit: string): void {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw invalidArgument(field, `must be a whole number from ${min} to ${max} ${unit} (got ${value})`);
  }
}

/**
 * Checks a VM spec against Berth's rules and limits. Throws INVALID_ARGUMENT naming the first field
 * at fault (`spec.resources.memory_mib: must be ...`). Pure; never changes `spec`.
 */
export function validateVmSpec(spec: VmSpec | undefined, field = "spec"): asserts spec is VmSpec & { resources: Resources } {
  if (!spec) throw invalidArgument(field, "is required");
  validateName(spec.name, `${field}.name`);
  const r = spec.resources;
  if (!r) throw invalidArgument(`${field}.resources`, "is required");
  checkInteger(r.vcpus, `${field}.resources.vcpus`, 1, Limits.maxVcpus, "vCPUs");
  checkInteger(r.memoryMib, `${field}.resources.memory_mib`, Limits.minMemoryMib, Limits.maxMemoryMib, "MiB");
  checkInteger(r.diskGib, `${field}.resources.disk_gib`, 0, Limits.maxDiskGib, "GiB");
  validateLabels(spec.labels, `${field}.labels`);
  if (spec.group !== "") validateName(spec.group, `${field}.group`);
  validateLabels(spec.requiredHostLabels, `${field}.required_host_labels`);
  validateLabels(spec.forbiddenHostLabels, `${field}.forbidden_host_labels`);
  if (spec.pinnedHosts.length > Limits.maxPinnedHosts) {
    throw invalidArgument(`${field}.pinned_hosts`, `at most ${Limits.maxPinnedHosts} hosts`);
  }
  spec.pinnedHosts.forEach((h, i) => validateHostId(h, `${field}.pinned_hosts[${i}]`));
  const policy = spec.onHostFailure ?? HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED;
  if (!Object.values(HostFailurePolicy).includes(policy)) {
    throw invalidArgument(`${field}.on_host_failure`, `must be KEEP or RESTART (got ${String(policy).slice(0, 16)})`);
  }
  if (spec.image !== "") {
    validateName(spec.image, `${field}.image`);
    // The disk is a copy-on-write layer of disk_gib over the image: 0 would be no disk at all.
    if (r.diskGib === 0) throw invalidArgument(`${field}.resources.disk_gib`, `must be at least 1 GiB for a VM with an image (its disk is a layer of that size over image '${spec.image}')`);
  }
  if (spec.networks.length > Limits.maxNicsPerVm) {
    throw invalidArgument(`${field}.networks`, `at most ${Limits.maxNicsPerVm} NICs (got ${spec.networks.length})`);
  }
  spec.networks.forEach((n, i) => validateNetworkName(n, `${field}.networks[${i}]`));
  if (spec.cloudInit) validateCloudInit(spec.cloudInit, `${field}.cloud_init`);
  if (spec.volumes.length > Limits.maxVolumesPerVm) {
    throw invalidArgument(`${field}.volumes`, `at most ${Limits.maxVolumesPerVm} volumes (got ${spec.volumes.length})`);
  }
  const volumes = new Set<string>();
  spec.volumes.forEach((v, i) => {
    validateName(v, `${field}.volumes[${i}]`);
    if (volumes.has(v)) throw invalidArgument(`${field}.volumes[${i}]`, `'${v}' appears twice`);
    volumes.add(v);
  });
}

/**
 * A network a NIC may name: a libvirt network's or a host bridge's name, 1-64 letters, digits,
 * '.', '_' or '-'. Throws INVALID_ARGUMENT naming `field`.
 */
export function validateNetworkName(name: string, field: string): void {
  if (!NETWORK_NAME.test(name)) {
    throw invalidArgument(field, `${name === "" ? "is required" : `'${quote(name)}' is not a network name`}: 1-${Limits.maxNetworkNameLength} letters, digits, '.', '_' or '-' (a libvirt network or bridge the host offers)`);
  }
}

/**
 * A VM's cloud-init data: at most 32 SSH keys, each one line of at most 8 KiB starting with a key
 * type (`ssh-`, `ecdsa-`, `sk-`: a line of an OpenSSH .pub file), and at most 64 KiB of user-data.
 * Messages quote no more than a key's first characters and never the user-data.
 */
function validateCloudInit(ci: CloudInit, field: string): void {
  const keys = ci.sshAuthorizedKeys;
  if (keys.length > Limits.maxSshKeys) throw invalidArgument(`${field}.ssh_authorized_keys`, `at most ${Limits.maxSshKeys} keys (got ${keys.length})`);
  keys.forEach((key, i) => {
    const at = `${field}.ssh_authorized_keys[${i}]`;
    if (/[\r\n]/.test(key)) throw invalidArgument(at, "must be one line (one key per entry)");
    const bytes = Buffer.byteLength(key, "utf8");
    if (bytes > Limits.maxSshKeyBytes) throw invalidArgument(at, `at most ${Limits.maxSshKeyBytes} bytes (got ${bytes})`);
    if (!SSH_KEY_TYPE_PREFIXES.some((p) => key.startsWith(p))) {
      throw invalidArgument(at, `must start with its key type (${SSH_KEY_TYPE_PREFIXES.map((p) => `${p}…`).join(", ")}), as a line of an OpenSSH .pub file does (got '${quote(key, 10)}')`);
    }
  });
  const bytes = Buffer.byteLength(ci.userData, "utf8");
  if (bytes > Limits.maxUserDataBytes) throw invalidArgument(`${field}.user_data`, `at most ${Limits.maxUserDataBytes} bytes (got ${bytes})`);
}

/** Bytes of a spec's cloud-init data (keys and user-data): what it adds to the VM's record. */
function cloudInitBytes(spec: VmSpec): number {
  const ci = spec.cloudInit;
  if (!ci) return 0;
  let n = Buffer.byteLength(ci.userData, "utf8");
  for (const k of ci.sshAuthorizedKeys) n += Buffer.byteLength(k, "utf8");
  return n;
}

/**
 * An image as CreateImage takes it: a DNS-label name; a source that is an http:// or https:// URL,
 * a file:// URL or an absolute path, at most 2,048 characters; format empty (qcow2), `qcow2` or
 * `raw`; sha256 empty or 64 lower-case hex digits. Throws INVALID_ARGUMENT naming the field.
 */
export function validateImage(image: Image | undefined, field = "image"): asserts image is Image {
  if (!image) throw invalidArgument(field, "is required");
  validateName(image.name, `${field}.name`);
  validateImageSource(image.source, `${field}.source`);
  if (image.format !== "" && !IMAGE_FORMATS.includes(image.format)) {
    throw invalidArgument(`${field}.format`, `must be ${IMAGE_FORMATS.join(" or ")} (got '${quote(image.format, 16)}')`);
  }
  if (image.sha256 !== "" && !SHA256_HEX.test(image.sha256)) {
    throw invalidArgument(`${field}.sha256`, `must be 64 lower-case hex digits (a SHA-256), or empty not to check (got '${quote(image.sha256)}')`);
  }
}

function validateImageSource(source: string, field: string): void {
  if (source === "") throw invalidArgument(field, "is required: an http(s):// URL, a file:// URL or an absolute path every host can read");
  if (source.length > Limits.maxImageSourceLength) throw invalidArgument(field, `at most ${Limits.maxImageSourceLength} characters (got ${source.length})`);
  if (/[\u0000-\u001f\u007f]/.test(source)) throw invalidArgument(field, "must not contain control characters (NUL, newlines, ...)");
  if (source.startsWith("/")) return;
  let url: URL;
  try {
    url = new URL(source);
  } catch {
    throw invalidArgument(field, `'${quote(source)}' is neither a URL (http://, https://, file://) nor an absolute path`);
  }
  if (url.protocol === "http:" || url.protocol === "https:") {
    if (url.hostname === "") throw invalidArgument(field, `'${quote(source)}' names no host`);
    return;
  }
  if (url.protocol === "file:") {
    if (url.hostname !== "" && url.hostname !== "localhost") throw invalidArgument(field, `'${quote(source)}': a file:// URL names a path on each host, not another host (file:///path)`);
    return;
  }
  throw invalidArgument(field, `'${quote(source)}': only http://, https:// and file:// URLs or absolute paths are fetched (got ${quote(url.protocol, 16)})`);
}

/**
 * A data volume as CreateVolume takes it: a DNS-label name, 1 to Limits.maxDiskGib GiB, and an
 * optional host id. Throws INVALID_ARGUMENT naming the field.
 */
export function validateVolume(volume: Volume | undefined, field = "volume"): asserts volume is Volume {
  if (!volume) throw invalidArgument(field, "is required");
  validateName(volume.name, `${field}.name`);
  checkInteger(volume.sizeGib, `${field}.size_gib`, 1, Limits.maxDiskGib, "GiB");
  if (volume.hostId !== "") validateHostId(volume.hostId, `${field}.host_id`);
}

/** Checks the specs of a gang (CreateVms, PlanPlacement): count, each spec, distinct names. */
export function validateVmSpecs(specs: readonly VmSpec[], field = "specs"): void {
  if (specs.length === 0) throw invalidArgument(field, "at least one spec is required");
  if (specs.length > Limits.maxGangSize) throw invalidArgument(field, `at most ${Limits.maxGangSize} VMs at once (got ${specs.length})`);
  const names = new Set<string>();
  const volumes = new Map<string, number>();
  let seedBytes = 0;
  specs.forEach((spec, i) => {
    validateVmSpec(spec, `${field}[${i}]`);
    if (names.has(spec.name)) throw invalidArgument(`${field}[${i}].name`, `'${spec.name}' appears twice`);
    names.add(spec.name);
    spec.volumes.forEach((v, j) => {
      const other = volumes.get(v);
      if (other !== undefined) throw invalidArgument(`${field}[${i}].volumes[${j}]`, `volume '${v}' is named by ${field}[${other}] too: a volume is attached to one VM`);
      volumes.set(v, i);
    });
    seedBytes += cloudInitBytes(spec);
    if (seedBytes > Limits.maxGangCloudInitBytes) {
      throw invalidArgument(`${field}[${i}].cloud_init`, `the gang's cloud-init data passes ${Limits.maxGangCloudInitBytes} bytes (one transaction holds the gang): create these VMs in smaller gangs`);
    }
  });
}

/** Checks an agent's Hello. Throws INVALID_ARGUMENT naming the field. */
export function validateHello(hello: Hello): void {
  validateHostId(hello.hostId, "hello.host_id");
  if (hello.bootId.length === 0 || hello.bootId.length > 128) {
    throw invalidArgument("hello.boot_id", "must be 1-128 characters");
  }
  // The agent's --join-cluster bound (a cluster id is a UUID; the rule leaves room).
  if (hello.clusterId.length > 128 || !/^[\x21-\x7e]*$/.test(hello.clusterId)) {
    throw invalidArgument("hello.cluster_id", `must be at most 128 printable characters without spaces (got ${quote(hello.clusterId)})`);
  }
  const c = hello.capacity;
  if (!c) throw invalidArgument("hello.capacity", "is required");
  checkInteger(c.vcpus, "hello.capacity.vcpus", 1, 1 << 20, "vCPUs");
  checkInteger(c.memoryMib, "hello.capacity.memory_mib", 1, Number.MAX_SAFE_INTEGER, "MiB");
  checkInteger(c.diskGib, "hello.capacity.disk_gib", 0, Number.MAX_SAFE_INTEGER, "GiB");
  validateLabels(hello.labels, "hello.labels");
  const ratio = hello.allocationRatio;
  if (ratio) {
    for (const [k, v] of [["vcpus", ratio.vcpus], ["memory", ratio.memory], ["disk", ratio.disk]] as const) {
      if (!Number.isFinite(v) || v < 0 || v > 100) throw invalidArgument(`hello.allocation_ratio.${k}`, `must be from 0 (unset) to 100 (got ${v})`);
    }
  }
  const reserved = hello.reserved;
  if (reserved) {
    checkInteger(reserved.vcpus, "hello.reserved.vcpus", 0, c.vcpus, "vCPUs");
    checkInteger(reserved.memoryMib, "hello.reserved.memory_mib", 0, c.memoryMib, "MiB");
    checkInteger(reserved.diskGib, "hello.reserved.disk_gib", 0, c.diskGib, "GiB");
  }
  const n = hello.inventory?.domains.length ?? 0;
  if (n > Limits.maxDomainsPerHost) {
    throw invalidArgument("hello.inventory.domains", `at most ${Limits.maxDomainsPerHost} domains (got ${n})`);
  }
  hello.inventory?.domains.forEach((d, i) => validateDomain(d, `hello.inventory.domains[${i}]`));
  validateHostHoldings(hello, "hello");
  const facts = hello.facts;
  if (facts) {
    checkFact(facts.cpuModel, "hello.facts.cpu_model");
    checkFact(facts.hypervisorVersion, "hello.facts.hypervisor_version");
    if (facts.numaCells.length > Limits.maxNumaCells) {
      throw invalidArgument("hello.facts.numa_cells", `at most ${Limits.maxNumaCells} cells (got ${facts.numaCells.length})`);
    }
  }
  if (hello.hypervisor) validateHypervisorStatus(hello.hypervisor, "hello.hypervisor");
}

/**
 * Checks an agent's Report before anything of it is applied: usage within bounds (whole numbers, at
 * most the largest host Hello accepts), the hypervisor status, and at most maxDomainsPerHost
 * domains and per-VM usage entries. Throws INVALID_ARGUMENT naming the field.
 */
export function validateReport(report: Report, field = "report"): void {
  const u = report.usage;
  if (u) {
    checkInteger(u.vcpus, `${field}.usage.vcpus`, 0, 1 << 20, "vCPUs");
    checkInteger(u.memoryMib, `${field}.usage.memory_mib`, 0, Number.MAX_SAFE_INTEGER, "MiB");
    checkInteger(u.diskGib, `${field}.usage.disk_gib`, 0, Number.MAX_SAFE_INTEGER, "GiB");
  }
  if (report.hypervisor) validateHypervisorStatus(report.hypervisor, `${field}.hypervisor`);
  if (report.vmUsage.length > Limits.maxDomainsPerHost) {
    throw invalidArgument(`${field}.vm_usage`, `at most ${Limits.maxDomainsPerHost} entries (got ${report.vmUsage.length})`);
  }
  const n = report.inventory?.domains.length ?? 0;
  if (n > Limits.maxDomainsPerHost) throw invalidArgument(`${field}.inventory.domains`, `at most ${Limits.maxDomainsPerHost} domains (got ${n})`);
  report.inventory?.domains.forEach((d, i) => validateDomain(d, `${field}.inventory.domains[${i}]`));
  validateHostHoldings(report, field);
}

/**
 * Bounds what an agent says of one domain beyond its state: at most 8 interfaces of at most 16
 * addresses each, at most 16 volume ids, every string bounded. Throws INVALID_ARGUMENT naming the
 * field (`report.inventory.domains[3].interfaces[0].ip_addresses: ...`).
 */
export function validateDomain(domain: Domain, field: string): void {
  if (domain.interfaces.length > Limits.maxNicsPerVm) {
    throw invalidArgument(`${field}.interfaces`, `at most ${Limits.maxNicsPerVm} interfaces (got ${domain.interfaces.length})`);
  }
  domain.interfaces.forEach((nic, i) => {
    const at = `${field}.interfaces[${i}]`;
    checkReported(nic.network, `${at}.network`, Limits.maxNetworkNameLength);
    checkReported(nic.mac, `${at}.mac`, 32);
    checkReported(nic.addressSource, `${at}.address_source`, 16);
    if (nic.ipAddresses.length > Limits.maxAddressesPerNic) {
      throw invalidArgument(`${at}.ip_addresses`, `at most ${Limits.maxAddressesPerNic} addresses (got ${nic.ipAddresses.length})`);
    }
    // The longest IPv6 text form with a zone is well under 64 characters.
    nic.ipAddresses.forEach((a, j) => checkReported(a, `${at}.ip_addresses[${j}]`, 64));
  });
  if (domain.volumeIds.length > Limits.maxVolumesPerVm) {
    throw invalidArgument(`${field}.volume_ids`, `at most ${Limits.maxVolumesPerVm} volumes (got ${domain.volumeIds.length})`);
  }
  domain.volumeIds.forEach((id, i) => checkReported(id, `${field}.volume_ids[${i}]`, Limits.maxReportedIdLength));
  checkReported(domain.imageId, `${field}.image_id`, Limits.maxReportedIdLength);
}

/** Bounds the images, networks and volumes a Hello or Report says the host holds. */
function validateHostHoldings(m: { images: readonly HostImage[]; networks: readonly HostNetwork[]; volumes: readonly HostVolume[] }, field: string): void {
  if (m.images.length > Limits.maxHostImages) throw invalidArgument(`${field}.images`, `at most ${Limits.maxHostImages} images (got ${m.images.length})`);
  if (m.networks.length > Limits.maxHostNetworks) throw invalidArgument(`${field}.networks`, `at most ${Limits.maxHostNetworks} networks (got ${m.networks.length})`);
  if (m.volumes.length > Limits.maxHostVolumes) throw invalidArgument(`${field}.volumes`, `at most ${Limits.maxHostVolumes} volumes (got ${m.volumes.length})`);
  m.images.forEach((img, i) => checkReported(img.imageId, `${field}.images[${i}].image_id`, Limits.maxReportedIdLength));
  m.networks.forEach((net, i) => {
    checkReported(net.name, `${field}.networks[${i}].name`, Limits.maxNetworkNameLength);
    checkReported(net.kind, `${field}.networks[${i}].kind`, 16);
  });
  m.volumes.forEach((v, i) => {
    checkReported(v.volumeId, `${field}.volumes[${i}].volume_id`, Limits.maxReportedIdLength);
    checkReported(v.attachedVmId, `${field}.volumes[${i}].attached_vm_id`, Limits.maxReportedIdLength);
  });
}

/** A string an agent reports: at most `max` printable characters (no control characters). */
function checkReported(text: string, field: string, max: number): void {
  if (text.length > max) throw invalidArgument(field, `at most ${max} characters (got ${text.length})`);
  if (/[\u0000-\u001f\u007f]/.test(text)) throw invalidArgument(field, "must not contain control characters");
}

/** Bounds a hypervisor status from an agent. Throws INVALID_ARGUMENT naming `field`. */
export function validateHypervisorStatus(status: HypervisorStatus, field: string): void {
  checkFact(status.message, `${field}.message`);
}

function checkFact(text: string, field: string): void {
  if (text.length > Limits.maxFactLength) throw invalidArgument(field, `at most ${Limits.maxFactLength} characters (got ${text.length})`);
}
