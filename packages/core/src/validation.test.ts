import { describe, expect, it } from "vitest";
import { Domain, Report, type Hello, type VmSpec } from "@berth/api";
import { Limits } from "./limits.js";
import { parseCapacity, parseEtcdEndpoints, parseHostPort, parseHostPortList, parseLabelAssignments } from "./parse.js";
import { validateHello, validateReport, validateVmSpec, validateVmSpecs } from "./validation.js";

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

describe("validateVmSpecs", () => {
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
});
