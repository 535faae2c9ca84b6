import { DesiredState, Host, HostState, Migration, MigrationPhase, Vm, VmPhase, VolumeInfo } from "@berth/api";
import { nicMacAddress } from "@berth/core";
import { describe, expect, it } from "vitest";
import { CliError, ExitCode } from "./exit-codes.js";
import { render } from "./output.js";
import {
  clusterConfigDetail,
  failureText,
  formatIn,
  formatAge,
  formatBytes,
  formatDuration,
  formatGib,
  formatMib,
  compareNames,
  hostAllocatable,
  sortByName,
  vmListView,
  formatResourcesHuman,
  formatVcpus,
  hostStateName,
  hostDetail,
  hostTable,
  migrationMessage,
  migrationPercent,
  phaseName,
  renderFields,
  renderTable,
  vmDetail,
  vmListJson,
  vmTable,
  hostNetworkNames,
  hostVolumesText,
  vmAddress,
  vmCloudInitText,
  vmNetworksText,
  vmNics,
} from "./format.js";

describe("renderTable", () => {
  it("aligns columns two spaces apart and leaves the last one unpadded", () => {
    expect(renderTable(["A", "LONGER", "C"], [["xxxx", "y", "z"], ["", "yy", "a long last"]])).toBe(
      "A     LONGER  C\n" + "xxxx  y       z\n" + "      yy      a long last\n",
    );
  });

  it("prints only the header for no rows", () => {
    expect(renderTable(["NAME", "PHASE"], [])).toBe("NAME  PHASE\n");
  });
});

describe("units", () => {
  it("formats vCPUs, and sizes in one style: binary unit, at most one decimal, a space", () => {
    expect(formatVcpus(2)).toBe("2 vCPU");
    expect(formatGib(20)).toBe("20 GiB");
    expect(formatGib(1024)).toBe("1 TiB");
    expect(formatGib(1536)).toBe("1.5 TiB");
    expect(formatMib(13.3 * 1024)).toBe("13.3 GiB");
    expect(formatMib(1536)).toBe("1.5 GiB");
    expect(formatMib(1000)).toBe("1000 MiB");
    // The same printer whatever the unit given: MiB, GiB and bytes agree.
    expect(formatMib(4096)).toBe(formatGib(4));
    expect(formatBytes(4 * 1024 ** 3)).toBe(formatGib(4));
    expect(formatResourcesHuman({ vcpus: 2, memoryMib: 512, diskGib: 20 })).toBe("2 vCPU, 512 MiB memory, 20 GiB disk");
    expect(formatResourcesHuman(undefined)).toBe("-");
  });

  it.each([
    [0, "0s"],
    [59_999, "59s"],
    [60_000, "1m"],
    [90_000, "1m30s"],
    [10 * 60_000 + 5000, "10m"],
    [3600_000, "1h"],
    [2 * 3600_000 + 5 * 60_000, "2h5m"],
    [30 * 3600_000, "30h"],
    [3 * 86_400_000 + 4 * 3600_000, "3d4h"],
    [12 * 86_400_000 + 3600_000, "12d"],
    [-5000, "0s"],
  ])("formatDuration(%d) = %s", (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it("shows an unknown time as -", () => {
    expect(formatAge(0, 1000)).toBe("-");
    expect(formatAge(1000, 6000)).toBe("5s");
  });
});

describe("enum names", () => {
  it("drops the prefix and shows unspecified as -", () => {
    expect(phaseName(VmPhase.VM_PHASE_RUNNING)).toBe("RUNNING");
    expect(phaseName(VmPhase.VM_PHASE_UNSPECIFIED)).toBe("-");
    expect(phaseName(99 as VmPhase)).toBe("99");
    // Written by earlier controllers; it means what SUSPECT means now.
    expect(hostStateName(HostState.HOST_STATE_DISCONNECTED)).toBe("SUSPECT");
    expect(hostStateName(HostState.HOST_STATE_SUSPECT)).toBe("SUSPECT");
    expect(hostStateName(HostState.HOST_STATE_DOWN)).toBe("DOWN");
    expect(hostStateName(HostState.HOST_STATE_FENCED)).toBe("FENCED");
    expect(hostStateName(HostState.HOST_STATE_READY, true)).toBe("READY,CORDONED");
  });
});

describe("host views", () => {
  const big = Host.fromPartial({
    id: "host-1",
    capacity: { vcpus: 16, memoryMib: 65536, diskGib: 1024 },
    // As the controller answers it under the default ratios and reserve (4x vCPU, 1 GiB memory held back).
    allocatable: { vcpus: 64, memoryMib: 64512, diskGib: 1024 },
    state: HostState.HOST_STATE_DISCONNECTED,
  });

  it("shows allocation against the allocatable the controller answered, 0 without a unit", () => {
    expect(hostTable([big], 1000)).toBe(
      "ID      STATE    CPU (ALLOC/ALLOCATABLE)  MEMORY (ALLOC/ALLOCATABLE)  DISK (ALLOC/ALLOCATABLE)  LAST SEEN\n" +
        "host-1  SUSPECT  0/64 (0%)                0/63 GiB (0%)               0/1 TiB (0%)              -\n",
    );
  });

  it("allocatable is the controller's (the scheduler's rule is not restated here); - from a controller that sends none", () => {
    const h = Host.fromPartial({ ...big, allocated: { vcpus: 8, memoryMib: 16384, diskGib: 512 }, allocatable: { vcpus: 32, memoryMib: 65536, diskGib: 1024 } });
    expect(hostAllocatable(h)).toEqual({ vcpus: 32, memoryMib: 65536, diskGib: 1024 });
    expect(hostTable([h], 1000).split("\n")[1]).toBe("host-1  SUSPECT  8/32 (25%)               16 GiB/64 GiB (25%)         512 GiB/1 TiB (50%)       -");
    const old = Host.fromPartial({ ...h, allocatable: undefined });
    expect(hostTable([old], 1000).split("\n")[1]).toMatch(/^host-1 +SUSPECT +- +- +- +-$/);
  });

  it("-o wide adds usage against allocatable, driver, agent version, CPU model and labels", () => {
    const h = Host.fromPartial({
      ...big,
      usage: { vcpus: 2, memoryMib: 8192, diskGib: 100 },
      driver: "libvirt",
      agentVersion: "0.3.0",
      facts: { cpuModel: "EPYC", numaCells: [] },
      labels: { zone: "b", rack: "r10" },
    });
    const [header, row] = hostTable([h], 1000, true).split("\n");
    expect(header).toMatch(
      /LAST SEEN +CPU \(USED\/ALLOCATABLE\) +MEMORY \(USED\/ALLOCATABLE\) +DISK \(USED\/ALLOCATABLE\) +DRIVER +VERSION +CPU MODEL +NETWORKS +IMAGES +VOLUMES +LABELS$/,
    );
    expect(row).toMatch(/ 2\/64 \(3%\) +8 GiB\/63 GiB \(13%\) +100 GiB\/1 TiB \(10%\) +libvirt +0\.3\.0 +EPYC +- +- +- +rack=r10,zone=b$/);
  });

  it("host show: physical capacity, allocatable, and allocation and use as shares of it", () => {
    const h = Host.fromPartial({ ...big, allocated: { vcpus: 8, memoryMib: 16128, diskGib: 512 }, usage: { vcpus: 1, memoryMib: 1024, diskGib: 10 } });
    const detail = hostDetail(h, 1000);
    expect(detail).toMatch(/Capacity: +16 vCPU, 64 GiB memory, 1 TiB disk \(physical\)\n/);
    expect(detail).toMatch(/Allocatable: +64 vCPU, 63 GiB memory, 1 TiB disk \(ratio x physical - reserved\)\n/);
    expect(detail).toMatch(/Allocated: +8 vCPU \(13%\), 15.7 GiB memory \(25%\), 512 GiB disk \(50%\) of allocatable\n/);
    expect(detail).toMatch(/In use: +1 vCPU \(2%\), 1 GiB memory \(2%\), 10 GiB disk \(1%\) of allocatable\n/);
  });

  it("says when a host's hypervisor is down, and why", () => {
    const host = Host.fromPartial({
      id: "hv-1",
      state: HostState.HOST_STATE_READY,
      driver: "libvirt",
      facts: { cpuModel: "Xeon", hypervisorVersion: "QEMU 7.2.0", numaCells: [{ id: 0, cpus: 8, memoryMib: 16384 }] },
      hypervisor: { available: false, message: "libvirtd does not answer" },
    });
    expect(hostTable([host], 1000).split("\n")[1]).toMatch(/^hv-1 +READY,HYPERVISOR-DOWN /);
    const detail = hostDetail(host, 1000);
    expect(detail).toMatch(/Hypervisor: +QEMU 7\.2\.0 \(DOWN: libvirtd does not answer\)/);
    expect(detail).toMatch(/NUMA cells: +0: 8 CPUs, 16 GiB/);
  });
});

describe("VM views", () => {
  const now = 1_700_000_000_000;
  const vm = Vm.fromPartial({
    id: "0b9c",
    spec: { name: "web-1", resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 }, labels: { b: "2", a: "1" } },
    desiredState: DesiredState.DESIRED_STATE_RUNNING,
    hostId: "",
    generation: 3,
    status: { phase: VmPhase.VM_PHASE_PENDING, observedGeneration: 2 },
    createdAtMs: now - 3 * 3600_000,
  });

  it("lists with human units and - for what is unknown", () => {
    expect(vmTable([vm], now)).toBe(
      "NAME   PHASE    DESIRED  HOST  VCPUS   MEMORY  DISK    AGE\n" + "web-1  PENDING  RUNNING  -     2 vCPU  4 GiB   20 GiB  3h\n",
    );
  });

  it("details every field", () => {
    const text = vmDetail(vm, now);
    expect(text).toContain("Name:             web-1\n");
    expect(text).toContain("Labels:           a=1,b=2\n");
    expect(text).toContain("On host failure:  - (the cluster's default)\n");
    expect(text).toContain("Generation:       3 (observed 2)\n");
    expect(text).toContain("Created:          3h ago\n");
    expect(text).toContain("Message:          -\n");
    // No retry state while nothing failed; no request id unless the create carried one.
    expect(text).not.toContain("Attempts:");
    expect(text).not.toContain("Request ID:");
  });

  it("says why the VM is on its host, from its placement record", () => {
    const placed = Vm.fromPartial({
      ...vm,
      hostId: "host-2",
      placement: {
        decidedAtMs: now - 60_000,
        cause: "create",
        preset: "spread",
        hostsConsidered: 5,
        hostsFeasible: 3,
        scores: { leastAllocated: 0.8, balanced: 0.5 },
        total: 0.74,
        runnerUpHost: "host-10",
        runnerUpTotal: 0.61,
        rejectedByFilter: { labels: 1, capacity: 1 },
        explained: true,
      },
    });
    const text = vmDetail(placed, now);
    expect(text).toContain("Placed:           1m ago (create, preset spread)\n");
    expect(text).toContain("Why here:         score 0.74 (balanced 0.50, leastAllocated 0.80); 3 of 5 hosts fitted\n");
    expect(text).toContain("Runner-up:        host-10 (score 0.61)\n");
    expect(text).toContain("Rejected:         1 by capacity, 1 by labels\n");
    // Without scores it says why, and how to get them; without a record, that there is none.
    const busy = vmDetail(Vm.fromPartial({ ...placed, placement: { ...placed.placement!, explained: false, hostsConsidered: 4000 } }), now);
    expect(busy).toContain("Why here:         not explained (the controller was busy or the fleet large: 4000 hosts); berth plan explains\n");
    expect(busy).not.toContain("Runner-up:");
    expect(vmDetail(vm, now)).toContain("Placed:           - (no record: placed before Berth kept one)\n");
  });

  it("renders key/value fields aligned", () => {
    expect(renderFields([["A", "1"], ["Longer", "2"]])).toBe("A:       1\nLonger:  2\n");
  });

  it("prints a list as a JSON array of toJSON", () => {
    expect(JSON.parse(vmListJson([vm]))).toEqual([Vm.toJSON(vm)]);
    expect(vmListJson([])).toBe("[]\n");
  });
});

describe("failed attempts", () => {
  const status = (errorCode: string, message: string) =>
    ({ phase: VmPhase.VM_PHASE_FAILED, errorCode, message, attempts: 1, nextAttemptAtMs: 0, permanent: false, updatedAtMs: 0, domainState: 0, observedGeneration: 0, interfaces: [] });

  it("failureText is CODE: message, without repeating a code the message starts with", () => {
    expect(failureText(status("HYPERVISOR_UNAVAILABLE", "HYPERVISOR_UNAVAILABLE: busy"))).toBe("HYPERVISOR_UNAVAILABLE: busy");
    expect(failureText(status("NOT_FOUND", "image gone"))).toBe("NOT_FOUND: image gone");
    expect(failureText(status("", "domain crashed"))).toBe("domain crashed");
    expect(failureText(status("INTERNAL", ""))).toBe("INTERNAL");
    expect(failureText(undefined)).toBe("no reason given");
  });

  it("formatIn says how long until a time ahead", () => {
    expect(formatIn(5000, 1000)).toBe("in 4s");
    expect(formatIn(1000, 5000)).toBe("now");
  });
});

describe("config view", () => {
  it("spells out the scheduler's defaults for unset fields", () => {
    const text = clusterConfigDetail({ scheduler: undefined, defaultOnHostFailure: 0 });
    expect(text).toMatch(/CPU ratio: +4 \(default\)/);
    expect(text).toMatch(/Memory ratio: +1 \(default\)/);
    expect(text).toMatch(/Reserved: +.*1 GiB.*\(default\)/);
    expect(text).toMatch(/Preset: +spread \(default\)/);
  });
});

describe("migrations", () => {
  it("formatBytes: a binary unit, at most one decimal, truncated (never reads larger than it is)", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(1023)).toBe("1023 B");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(512 * 1024 ** 2)).toBe("512 MiB");
    expect(formatBytes(1.25 * 1024 ** 3)).toBe("1.2 GiB");
    expect(formatBytes(1024 ** 3 - 1)).toBe("1023.9 MiB");
    expect(formatBytes(-5)).toBe("0 B");
    expect(formatBytes(4 * 1024 ** 3)).toBe("4 GiB");
    expect(formatBytes(2 * 1024 ** 4)).toBe("2 TiB");
  });

  it("migrationPercent: sent of total, never 100 before COMPLETED, unknown before any report", () => {
    const m = (phase: MigrationPhase, total: number, remaining: number): Migration =>
      Migration.fromPartial({ phase, progress: total > 0 ? { dataTotalBytes: total, dataRemainingBytes: remaining } : undefined });
    expect(migrationPercent(m(MigrationPhase.MIGRATION_PHASE_PENDING, 0, 0))).toBeUndefined();
    expect(migrationPercent(m(MigrationPhase.MIGRATION_PHASE_MIGRATING, 400, 100))).toBe(75);
    expect(migrationPercent(m(MigrationPhase.MIGRATION_PHASE_MIGRATING, 400, 0))).toBe(99);
    expect(migrationPercent(m(MigrationPhase.MIGRATION_PHASE_MIGRATING, 400, 500))).toBe(0); // dirtied faster than sent
    expect(migrationPercent(m(MigrationPhase.MIGRATION_PHASE_COMPLETED, 0, 0))).toBe(100);
  });

  it("migrationMessage: the code once", () => {
    expect(migrationMessage(Migration.fromPartial({ errorCode: "X", message: "X: broke" }))).toBe("X: broke");
    expect(migrationMessage(Migration.fromPartial({ errorCode: "X", message: "broke" }))).toBe("X: broke");
    expect(migrationMessage(Migration.fromPartial({ message: "broke" }))).toBe("broke");
    expect(migrationMessage(Migration.fromPartial({}))).toBe("");
  });
});

describe("natural order", () => {
  it("host-2 before host-10, the same everywhere", () => {
    const names = ["host-10", "host-2", "host-1", "db-1", "host-02b"];
    expect([...names].sort(compareNames)).toEqual(["db-1", "host-1", "host-2", "host-02b", "host-10"]);
    expect(sortByName([{ id: "web-10" }, { id: "web-9" }], (x) => x.id).map((x) => x.id)).toEqual(["web-9", "web-10"]);
  });
});

describe("VM list views", () => {
  const now = 1_700_000_000_000;
  const vms = ["web-1", "web-2"].map((name, i) =>
    Vm.fromPartial({
      id: `id-${i}`,
      spec: { name, resources: { vcpus: 1, memoryMib: 1536, diskGib: 10 }, labels: { tier: "web" }, group: i === 0 ? "front" : "" },
      hostId: "host-1",
      generation: 4,
      status: { phase: VmPhase.VM_PHASE_RUNNING, observedGeneration: 3 },
      createdAtMs: now - 60_000,
    }),
  );

  it("json and yaml print the same object; name prints one name a line", async () => {
    const { parse } = await import("yaml");
    const view = vmListView(vms, now);
    expect(parse(render("yaml", view))).toEqual(JSON.parse(render("json", view)));
    expect(JSON.parse(render("json", view))).toEqual(vms.map((v) => Vm.toJSON(v)));
    expect(render("yaml", view)).toMatch(/^- id: id-0\n/);
    expect(render("name", view)).toBe("web-1\nweb-2\n");
  });

  it("wide adds IP, ID, GENERATION (spec/observed), GROUP, LABELS, CREATED", () => {
    const [header, first, second] = render("wide", vmListView(vms, now)).split("\n");
    expect(header).toMatch(/AGE +IP +ID +GENERATION +GROUP +LABELS +CREATED$/);
    expect(first).toMatch(/^web-1 .* 1\.5 GiB .* 1m +- +id-0 +4\/3 +front +tier=web +2023-11-14T22:12:20Z$/);
    expect(second).toMatch(/ - +id-1 +4\/3 +- +tier=web /);
    expect(render("table", vmListView(vms, now)).split("\n")[0]).not.toContain("GENERATION");
  });

  it("-o name on a verb without names is a usage error listing the formats", () => {
    let error: unknown;
    try {
      render("name", { data: () => ({}), table: () => "" });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(CliError);
    expect((error as CliError).exitCode).toBe(ExitCode.Usage);
    expect((error as Error).message).toBe("-o name: this verb prints no names (use one of: table, wide, json, yaml)");
  });
});

describe("usable VMs: image, NICs with MACs and addresses, volumes, cloud-init", () => {
  const now = 1_700_000_000_000;
  const base = Vm.fromPartial({
    id: "4f1c2a9e-0000-4000-8000-000000000001",
    spec: {
      name: "app-1",
      resources: { vcpus: 2, memoryMib: 2048, diskGib: 20 },
      image: "jammy",
      networks: ["default", "storage"],
      volumes: ["db-data", "logs"],
      cloudInit: { sshAuthorizedKeys: ["ssh-ed25519 AAAAC3Nz a@b", "ssh-ed25519 AAAAC3Nx c@d"], userData: "#cloud-config\npassword: secret-value\n" },
    },
    hostId: "host-2",
    status: { phase: VmPhase.VM_PHASE_RUNNING },
  });
  const mac0 = nicMacAddress(base.id, 0);
  const mac1 = nicMacAddress(base.id, 1);

  it("a NIC per network, in order: MAC (the controller's rule before the host reports), and waiting for an address while it runs", () => {
    expect(vmNetworksText(base)).toBe(`eth0  default  ${mac0}  waiting for an address\n` + `eth1  storage  ${mac1}  waiting for an address`);
    const stopped = Vm.fromPartial({ ...base, status: { phase: VmPhase.VM_PHASE_STOPPED } });
    expect(vmNetworksText(stopped)).toBe(`eth0  default  ${mac0}  -\n` + `eth1  storage  ${mac1}  -`);
    expect(vmNetworksText(Vm.fromPartial({ ...base, spec: { ...base.spec!, networks: [] } }))).toBe("-");
  });

  it("matches reported interfaces to the spec's NICs by MAC, whatever order the host reports them in", () => {
    const reported = Vm.fromPartial({
      ...base,
      status: {
        phase: VmPhase.VM_PHASE_RUNNING,
        interfaces: [
          { network: "storage", mac: mac1, ipAddresses: ["192.168.50.7"], addressSource: "arp" },
          { network: "default", mac: mac0.toUpperCase(), ipAddresses: ["fe80::1", "10.122.3.4"], addressSource: "lease" },
        ],
      },
    });
    expect(vmNetworksText(reported)).toBe(
      `eth0  default  ${mac0.toUpperCase()}  fe80::1, 10.122.3.4 (lease)\n` + `eth1  storage  ${mac1}  192.168.50.7 (arp)`,
    );
    // vm list -o wide's IP: the first NIC's first IPv4 address.
    expect(vmAddress(reported)).toBe("10.122.3.4");
    expect(vmAddress(base)).toBeUndefined();
    const row = vmTable([reported], now, true).split("\n")[1];
    expect(row).toMatch(/ 10\.122\.3\.4 +4f1c2a9e-/);
  });

  it("vm show: image, networks, volumes with size and phase, cloud-init counted and sized but never shown", () => {
    const volumes = [VolumeInfo.fromPartial({ volume: { name: "db-data", sizeGib: 100 }, phase: "attached" })];
    const text = vmDetail(base, now, undefined, volumes);
    expect(text).toContain("Image:            jammy\n");
    expect(text).toContain(`Networks:         eth0  default  ${mac0}  waiting for an address\n                  eth1  storage  ${mac1}  waiting for an address\n`);
    // logs is not in the answer: its name alone.
    expect(text).toContain("Volumes:          db-data (100 GiB, attached)\n                  logs\n");
    expect(text).toContain("Cloud-init:       2 ssh keys; user-data: 37 B\n");
    expect(text).not.toContain("secret-value");
    expect(text).not.toContain("AAAAC3Nz");
    const plain = vmDetail(Vm.fromPartial({ ...base, spec: { name: "b", resources: base.spec!.resources } }), now);
    expect(plain).toContain("Image:            - (a blank disk)\n");
    expect(plain).toContain("Networks:         -\n");
    expect(plain).toContain("Volumes:          -\n");
    expect(plain).toContain("Cloud-init:       - (no seed)\n");
    expect(vmCloudInitText(Vm.fromPartial({ ...base, spec: { ...base.spec!, cloudInit: { sshAuthorizedKeys: ["k"], userData: "" } } }))).toBe(
      "1 ssh key; user-data: Berth's own (hostname and keys)",
    );
  });

  it("a reported interface the spec does not name (an adopted domain's) is listed after the spec's", () => {
    const adopted = Vm.fromPartial({
      id: "x",
      spec: { name: "old", networks: [] },
      status: { phase: VmPhase.VM_PHASE_RUNNING, interfaces: [{ network: "br0", mac: "52:54:00:00:00:01", ipAddresses: [], addressSource: "" }] },
    });
    expect(vmNics(adopted)).toEqual([{ name: "eth0", network: "br0", mac: "52:54:00:00:00:01", addresses: [], source: "" }]);
  });

  it("hosts: networks offered (active ones in the list), images held (named from the catalog), volumes (count, GiB)", () => {
    const h = Host.fromPartial({
      id: "host-2",
      state: HostState.HOST_STATE_READY,
      networks: [
        { name: "default", kind: "network", active: true },
        { name: "br0", kind: "bridge", active: true },
        { name: "lab", kind: "network", active: false },
      ],
      images: [
        { imageId: "id-jammy", sizeBytes: 700 * 2 ** 20, virtualSizeBytes: 2 ** 32 },
        { imageId: "id-gone", sizeBytes: 300 * 2 ** 20, virtualSizeBytes: 2 ** 30 },
      ],
      volumes: [
        { volumeId: "v1", sizeGib: 100, attachedVmId: "vm-1" },
        { volumeId: "v2", sizeGib: 20, attachedVmId: "" },
      ],
    });
    expect(hostNetworkNames(h)).toBe("br0,default");
    expect(hostVolumesText(h)).toBe("2 (120 GiB)");
    expect(hostTable([h], 1000, true).split("\n")[1]).toMatch(/ br0,default +2 +2 \(120 GiB\) +-$/);
    const detail = hostDetail(h, 1000, new Map([["id-jammy", "jammy"]]));
    expect(detail).toContain("Networks:         br0 (bridge), default (network), lab (network, inactive: VMs cannot use it)\n");
    expect(detail).toContain("Images:           2 (1000 MiB on disk): id-gone, jammy\n");
    expect(detail).toContain("Volumes:          2 (120 GiB), 1 attached\n");
    const bare = hostDetail(Host.fromPartial({ id: "h" }), 1000);
    expect(bare).toMatch(/Networks: +-\nImages: +-\nVolumes: +-\n/);
  });
});
