import { describe, expect, it } from "vitest";
import { Domain, Image, Report, Volume, type Hello, type VmSpec } from "@berth/api";
import { Limits } from "./limits.js";
import { parseCapacity, parseEtcdEndpoints, parseHostPort, parseHostPortList, parseLabelAssignments } from "./parse.js";
import { validateHello, validateImage, validateReport, validateVmSpec, validateVmSpecs, validateVolume } from "./validation.js";

const spec = (over: Partial<VmSpec> = {}): VmSpec => ({
  name: "web-1",
  resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 },
  labels: {},
  group: "",
  requiredHostLabels: {},
  forbiddenHostLabels: {},
  pinnedHosts: [], image: "", networks: [], volumes: [],
  onHostFailure: 0,
  ...over,
});

describe("validateVmSpec", () => {
  it("accepts a good spec", () => expect(() => validateVmSpec(spec())).not.toThrow());
  it.each<[string, VmSpec | undefined, string]>([
    ["missing spec", undefined, "spec: is required"],
    ["empty name", spec({ name: "" }), "spec.name: is required"],
    ["upper-case name", spec({ name: "Web" }), "spec.name: 'Web' must be"],
    ["name too long", spec({ name: "a".repeat(64) }), "spec.name:"],
    ["no resources", spec({ resources: undefined }), "spec.resources: is required"],
    ["zero vcpus", spec({ resources: { vcpus: 0, memoryMib: 512, diskGib: 1 } }), "spec.resources.vcpus: must be a whole number from 1"],
    ["tiny memory", spec({ resources: { vcpus: 1, memoryMib: 1, diskGib: 1 } }), "spec.resources.memory_mib:"],
    ["fractional disk", spec({ resources: { vcpus: 1, memoryMib: 512, diskGib: 1.5 } }), "spec.resources.disk_gib:"],
    ["huge vcpus", spec({ resources: { vcpus: Limits.maxVcpus + 1, memoryMib: 512, diskGib: 1 } }), "spec.resources.vcpus:"],
    ["bad label key", spec({ labels: { "-x": "1" } }), "spec.labels[-x]: key must be"],
    ["bad group name", spec({ group: "Web Tier" }), "spec.group: 'Web Tier' must be"],
    ["bad required host label", spec({ requiredHostLabels: { "": "x" } }), "spec.required_host_labels[]:"],
    ["bad pinned host", spec({ pinnedHosts: ["ok", "Not OK"] }), "spec.pinned_hosts[1]:"],
  ])("refuses %s, naming the field", (_, s, message) => {
    expect(() => validateVmSpec(s)).toThrow(message);
  });
  it("refuses too many labels", () => {
    const labels = Object.fromEntries(Array.from({ length: Limits.maxLabels + 1 }, (_, i) => [`k${i}`, "v"]));
    expect(() => validateVmSpec(spec({ labels }))).toThrow(`spec.labels: at most ${Limits.maxLabels} labels`);
  });
});

describe("validateVmSpec: image, NICs, cloud-init, volumes", () => {
  const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop";
  it("accepts a VM with an image, NICs, keys, user-data and volumes", () => {
    expect(() =>
      validateVmSpec(spec({ image: "debian-12", networks: ["default", "br0", "lab.v2_x"], cloudInit: { sshAuthorizedKeys: [key, "ecdsa-sha2-nistp256 AAAA x", "sk-ssh-ed25519@openssh.com AAAA y"], userData: "#cloud-config\n" }, volumes: ["data-1", "data-2"] })),
    ).not.toThrow();
  });
  it.each<[string, Partial<VmSpec>, string]>([
    ["an image name that is no DNS label", { image: "Debian 12" }, "spec.image: 'Debian 12' must be"],
    ["an image over no disk", { image: "debian-12", resources: { vcpus: 1, memoryMib: 512, diskGib: 0 } }, "spec.resources.disk_gib: must be at least 1 GiB for a VM with an image"],
    ["nine NICs", { networks: Array.from({ length: 9 }, () => "default") }, "spec.networks: at most 8 NICs (got 9)"],
    ["a network with a space", { networks: ["default", "my net"] }, "spec.networks[1]: 'my net' is not a network name"],
    ["an empty network", { networks: [""] }, "spec.networks[0]: is required"],
    ["a network name of 65 characters", { networks: ["n".repeat(65)] }, "spec.networks[0]:"],
    ["33 keys", { cloudInit: { sshAuthorizedKeys: Array.from({ length: 33 }, () => key), userData: "" } }, "spec.cloud_init.ssh_authorized_keys: at most 32 keys (got 33)"],
    ["a key of two lines", { cloudInit: { sshAuthorizedKeys: [key, `${key}\n${key}`], userData: "" } }, "spec.cloud_init.ssh_authorized_keys[1]: must be one line"],
    ["a key of 9 KiB", { cloudInit: { sshAuthorizedKeys: [`ssh-rsa ${"A".repeat(9 * 1024)}`], userData: "" } }, "spec.cloud_init.ssh_authorized_keys[0]: at most 8192 bytes"],
    ["a private key pasted as a key", { cloudInit: { sshAuthorizedKeys: ["-----BEGIN OPENSSH PRIVATE KEY-----"], userData: "" } }, "spec.cloud_init.ssh_authorized_keys[0]: must start with its key type (ssh-…, ecdsa-…, sk-…)"],
    ["user-data over 64 KiB", { cloudInit: { sshAuthorizedKeys: [], userData: "x".repeat(64 * 1024 + 1) } }, "spec.cloud_init.user_data: at most 65536 bytes (got 65537)"],
    ["17 volumes", { volumes: Array.from({ length: 17 }, (_, i) => `v-${i}`) }, "spec.volumes: at most 16 volumes (got 17)"],
    ["a volume name that is no DNS label", { volumes: ["Data"] }, "spec.volumes[0]: 'Data' must be"],
    ["a volume named twice", { volumes: ["data-1", "data-2", "data-1"] }, "spec.volumes[2]: 'data-1' appears twice"],
  ])("refuses %s, naming the field", (_, over, message) => {
    expect(() => validateVmSpec(spec(over))).toThrow(message);
  });
  it("counts user-data in bytes, not characters", () => {
    // 'é' is two bytes in UTF-8: 32 Ki of them are 64 KiB.
    expect(() => validateVmSpec(spec({ cloudInit: { sshAuthorizedKeys: [], userData: "é".repeat(32 * 1024) } }))).not.toThrow();
    expect(() => validateVmSpec(spec({ cloudInit: { sshAuthorizedKeys: [], userData: "é".repeat(32 * 1024 + 1) } }))).toThrow("spec.cloud_init.user_data: at most 65536 bytes (got 65538)");
  });
  it("never quotes user-data, and of a key only its first characters", () => {
    const secret = "-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ";
    const bad = (() => {
      try {
        validateVmSpec(spec({ cloudInit: { sshAuthorizedKeys: [secret], userData: "" } }));
      } catch (e) {
        return (e as Error).message;
      }
      return "";
    })();
    expect(bad).toContain("'-----BEGIN…");
    expect(bad).not.toContain("b3BlbnNzaC1rZXkt");
    const big = (() => {
      try {
        validateVmSpec(spec({ cloudInit: { sshAuthorizedKeys: [], userData: `password: hunter2 ${"x".repeat(70_000)}` } }));
      } catch (e) {
        return (e as Error).message;
      }
      return "";
    })();
    expect(big).toMatch(/^spec\.cloud_init\.user_data:/);
    expect(big).not.toContain("hunter2");
  });
});

describe("validateVmSpecs", () => {
  it("refuses one volume named by two VMs of a gang, and a gang whose cloud-init passes one transaction's room", () => {
    expect(() => validateVmSpecs([spec({ volumes: ["data-1"] }), spec({ name: "web-2", volumes: ["data-2", "data-1"] })])).toThrow(
      "specs[1].volumes[1]: volume 'data-1' is named by specs[0] too",
    );
    const userData = "x".repeat(60 * 1024);
    const gang = Array.from({ length: 20 }, (_, i) => spec({ name: `v-${i}`, cloudInit: { sshAuthorizedKeys: [], userData } }));
    expect(() => validateVmSpecs(gang.slice(0, 17))).not.toThrow();
    expect(() => validateVmSpecs(gang)).toThrow(/^specs\[17\]\.cloud_init: the gang's cloud-init data passes 1048576 bytes/);
  });

  it("bounds the gang and refuses repeated names, naming the index", () => {
    expect(() => validateVmSpecs([spec(), spec({ name: "web-2" })])).not.toThrow();
    expect(() => validateVmSpecs([])).toThrow("specs: at least one spec");
    expect(() => validateVmSpecs(Array.from({ length: Limits.maxGangSize + 1 }, (_, i) => spec({ name: `v-${i}` })))).toThrow(`at most ${Limits.maxGangSize} VMs`);
    expect(() => validateVmSpecs([spec(), spec()])).toThrow("specs[1].name: 'web-1' appears twice");
    expect(() => validateVmSpecs([spec(), spec({ name: "x", resources: undefined })])).toThrow("specs[1].resources: is required");
  });
});

describe("validateHello", () => {
  const hello = (over: Partial<Hello> = {}): Hello => ({
    hostId: "host-1",
    bootId: "b",
    capacity: { vcpus: 8, memoryMib: 1024, diskGib: 10 },
    labels: {},
    inventory: { domains: [] },
    agentVersion: "x",
    driver: "fake",
    lastLeaderEpoch: 0,
    clusterId: "", images: [], networks: [], volumes: [],
    ...over,
  });
  it("accepts a good Hello and refuses bad fields by name", () => {
    expect(() => validateHello(hello())).not.toThrow();
    expect(() => validateHello(hello({ hostId: "Host 1" }))).toThrow(/^hello\.host_id:/);
    expect(() => validateHello(hello({ bootId: "" }))).toThrow(/^hello\.boot_id:/);
    expect(() => validateHello(hello({ capacity: undefined }))).toThrow(/^hello\.capacity: is required/);
    const domains = Array.from({ length: Limits.maxDomainsPerHost + 1 }, (_, i) => ({ vmId: `${i}`, name: "x", state: 2, generation: 1, resources: undefined, fence: false, interfaces: [], volumeIds: [], imageId: "" }));
    expect(() => validateHello(hello({ inventory: { domains } }))).toThrow(/^hello\.inventory\.domains: at most/);
  });
  it("bounds the host facts and the hypervisor status", () => {
    const facts = { cpuModel: "Xeon", hypervisorVersion: "QEMU 7.2", numaCells: [{ id: 0, cpus: 8, memoryMib: 1024 }] };
    expect(() => validateHello(hello({ facts, hypervisor: { available: false, message: "libvirtd is down" } }))).not.toThrow();
    expect(() => validateHello(hello({ facts: { ...facts, cpuModel: "x".repeat(Limits.maxFactLength + 1) } }))).toThrow(/^hello\.facts\.cpu_model: at most/);
    const numaCells = Array.from({ length: Limits.maxNumaCells + 1 }, (_, id) => ({ id, cpus: 1, memoryMib: 1 }));
    expect(() => validateHello(hello({ facts: { ...facts, numaCells } }))).toThrow(/^hello\.facts\.numa_cells: at most/);
    expect(() => validateHello(hello({ hypervisor: { available: false, message: "y".repeat(Limits.maxFactLength + 1) } }))).toThrow(
      /^hello\.hypervisor\.message: at most/,
    );
  });
});

describe("operator text", () => {
  it("parses host:port, refusing port 0 unless allowed", () => {
    expect(parseHostPort("127.0.0.1:7400", "--listen")).toEqual({ host: "127.0.0.1", port: 7400 });
    expect(parseHostPort("[::1]:7400", "--listen")).toEqual({ host: "[::1]", port: 7400 });
    expect(() => parseHostPort("127.0.0.1:0", "--controller")).toThrow(/^--controller: '127.0.0.1:0' is not HOST:PORT/);
    expect(parseHostPort("127.0.0.1:0", "listen", { allowPortZero: true }).port).toBe(0);
    expect(() => parseHostPort("7400", "--listen")).toThrow("--listen:");
    expect(parseHostPortList("a:1, b:2,a:1", "--controller")).toEqual(["a:1", "b:2"]);
    expect(() => parseHostPortList(" , ", "--controller")).toThrow("no address given");
  });
  it("parses etcd endpoints", () => {
    expect(parseEtcdEndpoints("http://a:2379,https://b:2379", "--etcd")).toEqual(["http://a:2379", "https://b:2379"]);
    expect(() => parseEtcdEndpoints("a:2379", "--etcd")).toThrow(/^--etcd: 'a:2379' must be an http/);
    expect(() => parseEtcdEndpoints("", "--etcd")).toThrow("no URL given");
  });
  it("parses capacity and labels", () => {
    expect(parseCapacity("vcpus=16,memory=64GiB,disk=1TiB", "--capacity")).toEqual({ vcpus: 16, memoryMib: 65536, diskGib: 1024 });
    expect(parseCapacity("memory=512", "--capacity")).toEqual({ memoryMib: 512 });
    expect(() => parseCapacity("cpus=4", "--capacity")).toThrow("unknown key 'cpus'");
    expect(() => parseCapacity("vcpus=0", "--capacity")).toThrow("--capacity vcpus:");
    expect(parseLabelAssignments(["zone=a", "rack=r1=x"], "--label")).toEqual({ zone: "a", rack: "r1=x" });
    expect(() => parseLabelAssignments(["=a"], "--label")).toThrow("must be KEY=VALUE");
  });
});

describe("validateImage", () => {
  const image = (over: Partial<Image> = {}): Image => Image.fromPartial({ name: "debian-12", source: "https://cloud.debian.org/images/debian-12-genericcloud-amd64.qcow2", ...over });
  it("accepts http(s) and file URLs, absolute paths, qcow2 and raw, a SHA-256 or none", () => {
    for (const source of ["http://mirror.local/x.img", "https://a.example/b/c.qcow2?x=1", "file:///srv/images/x.qcow2", "/srv/images/x.raw"]) {
      expect(() => validateImage(image({ source }))).not.toThrow();
    }
    expect(() => validateImage(image({ format: "raw", sha256: "a".repeat(64) }))).not.toThrow();
    expect(() => validateImage(image({ format: "qcow2" }))).not.toThrow();
  });
  it.each<[string, Image | undefined, string]>([
    ["no image", undefined, "image: is required"],
    ["a bad name", image({ name: "Debian" }), "image.name: 'Debian' must be"],
    ["no source", image({ source: "" }), "image.source: is required"],
    ["a relative path", image({ source: "images/x.qcow2" }), "image.source: 'images/x.qcow2' is neither a URL"],
    ["an ftp URL", image({ source: "ftp://a.example/x.qcow2" }), "image.source: 'ftp://a.example/x.qcow2': only http://, https:// and file://"],
    ["a file URL naming a host", image({ source: "file://nas/x.qcow2" }), "image.source: 'file://nas/x.qcow2': a file:// URL names a path on each host"],
    ["a source of 2,049 characters", image({ source: `/${"a".repeat(2048)}` }), "image.source: at most 2048 characters (got 2049)"],
    ["a newline in the source", image({ source: "/srv/x\n.qcow2" }), "image.source: must not contain control characters"],
    ["format vmdk", image({ format: "vmdk" }), "image.format: must be qcow2 or raw (got 'vmdk')"],
    ["an upper-case SHA-256", image({ sha256: "A".repeat(64) }), "image.sha256: must be 64 lower-case hex digits"],
    ["a short SHA-256", image({ sha256: "abc" }), "image.sha256:"],
  ])("refuses %s, naming the field", (_, i, message) => {
    expect(() => validateImage(i)).toThrow(message);
  });
});

describe("validateVolume", () => {
  const volume = (over: Partial<Volume> = {}): Volume => Volume.fromPartial({ name: "data-1", sizeGib: 10, ...over });
  it("accepts a size from 1 GiB and an optional host, and refuses the rest naming the field", () => {
    expect(() => validateVolume(volume())).not.toThrow();
    expect(() => validateVolume(volume({ hostId: "hv-1", sizeGib: Limits.maxDiskGib }))).not.toThrow();
    expect(() => validateVolume(undefined)).toThrow("volume: is required");
    expect(() => validateVolume(volume({ name: "" }))).toThrow("volume.name: is required");
    expect(() => validateVolume(volume({ sizeGib: 0 }))).toThrow("volume.size_gib: must be a whole number from 1 to 1048576 GiB (got 0)");
    expect(() => validateVolume(volume({ sizeGib: Limits.maxDiskGib + 1 }))).toThrow("volume.size_gib:");
    expect(() => validateVolume(volume({ hostId: "HV 1" }))).toThrow("volume.host_id: 'HV 1' must be");
  });
});

describe("validateReport", () => {
  const report = (over: Partial<Report> = {}): Report => Report.fromPartial({ usage: { vcpus: 2, memoryMib: 1024, diskGib: 10 }, vmUsage: [], ...over });
  it("accepts a sane Report, and names the field of each bound it breaks", () => {
    expect(() => validateReport(report())).not.toThrow();
    expect(() => validateReport(report({ usage: { vcpus: 2 ** 21, memoryMib: 0, diskGib: 0 } }))).toThrow(/^report\.usage\.vcpus: must be a whole number from 0 to 1048576 vCPUs/);
    expect(() => validateReport(report({ usage: { vcpus: 0, memoryMib: 1.5, diskGib: 0 } }))).toThrow(/^report\.usage\.memory_mib:/);
    expect(() => validateReport(report({ hypervisor: { available: false, message: "x".repeat(100_000) } }))).toThrow(/^report\.hypervisor\.message:/);
    expect(() => validateReport(report({ inventory: { domains: Array.from({ length: 4_097 }, () => Domain.fromPartial({})) } }))).toThrow("report.inventory.domains: at most 4096 domains (got 4097)");
    expect(() => validateReport(report({ vmUsage: Array.from({ length: 4_097 }, () => ({ vmId: "v", cpuCores: 0, memoryUsedMib: 0 })) }))).toThrow("report.vm_usage: at most 4096 entries (got 4097)");
  });
  it("bounds the images, networks and volumes a host reports, and each domain's interfaces and volumes", () => {
    const nic = { network: "default", mac: "52:54:00:00:00:01", ipAddresses: ["10.0.0.2", "fe80::1"], addressSource: "lease" };
    const good = report({
      images: [{ imageId: "img-1", sizeBytes: 1, virtualSizeBytes: 2 }],
      networks: [{ name: "default", kind: "network", active: true }],
      volumes: [{ volumeId: "vol-1", sizeGib: 1, attachedVmId: "" }],
      inventory: { domains: [Domain.fromPartial({ vmId: "v", interfaces: [nic], volumeIds: ["vol-1"] })] },
    });
    expect(() => validateReport(good)).not.toThrow();
    expect(() => validateReport(report({ images: Array.from({ length: 1025 }, () => ({ imageId: "i", sizeBytes: 0, virtualSizeBytes: 0 })) }))).toThrow("report.images: at most 1024 images (got 1025)");
    expect(() => validateReport(report({ networks: Array.from({ length: 65 }, () => ({ name: "n", kind: "bridge", active: true })) }))).toThrow("report.networks: at most 64 networks (got 65)");
    expect(() => validateReport(report({ volumes: Array.from({ length: 4097 }, () => ({ volumeId: "v", sizeGib: 1, attachedVmId: "" })) }))).toThrow("report.volumes: at most 4096 volumes (got 4097)");
    expect(() => validateReport(report({ networks: [{ name: "n".repeat(65), kind: "bridge", active: true }] }))).toThrow("report.networks[0].name: at most 64 characters");
    expect(() => validateReport(report({ images: [{ imageId: "x".repeat(129), sizeBytes: 0, virtualSizeBytes: 0 }] }))).toThrow("report.images[0].image_id: at most 128 characters");
    const domainWith = (d: Partial<Domain>) => report({ inventory: { domains: [Domain.fromPartial({ vmId: "a" }), Domain.fromPartial({ vmId: "v", ...d })] } });
    expect(() => validateReport(domainWith({ interfaces: Array.from({ length: 9 }, () => nic) }))).toThrow("report.inventory.domains[1].interfaces: at most 8 interfaces (got 9)");
    expect(() => validateReport(domainWith({ interfaces: [{ ...nic, ipAddresses: Array.from({ length: 17 }, () => "10.0.0.1") }] }))).toThrow("report.inventory.domains[1].interfaces[0].ip_addresses: at most 16 addresses (got 17)");
    expect(() => validateReport(domainWith({ interfaces: [{ ...nic, ipAddresses: ["1".repeat(65)] }] }))).toThrow("report.inventory.domains[1].interfaces[0].ip_addresses[0]: at most 64 characters");
    expect(() => validateReport(domainWith({ volumeIds: Array.from({ length: 17 }, () => "v") }))).toThrow("report.inventory.domains[1].volume_ids: at most 16 volumes (got 17)");
    const hello: Hello = { hostId: "h", bootId: "b", capacity: { vcpus: 1, memoryMib: 1, diskGib: 1 }, labels: {}, inventory: { domains: [] }, agentVersion: "", driver: "", lastLeaderEpoch: 0, clusterId: "", images: [], networks: [{ name: "bad\nname", kind: "bridge", active: true }], volumes: [] };
    expect(() => validateHello(hello)).toThrow("hello.networks[0].name: must not contain control characters");
  });
});
