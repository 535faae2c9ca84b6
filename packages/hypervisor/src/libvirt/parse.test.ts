import { describe, expect, it } from "vitest";
import { DomainState } from "@berth/api";
import {
  domainStateOf,
  isMacAddress,
  parseDhcpLeases,
  parseDomstats,
  parseHostCpuModel,
  parseNetList,
  parseNodeinfo,
  parseNodeMemTotalKib,
  parseNumaCells,
  parsePoolInfo,
  parseProcNetArp,
  parseQemuImgInfo,
  parseVersion,
  parseVolList,
  parseVolumeXml,
  statsFromRecord,
} from "./parse.js";

const VM = "0f8fad5b-d9cb-469f-a165-70867728950e";

const DOMSTATS = `Domain: 'berth-a'
  state.state=1
  state.reason=1
  cpu.time=389203000
  cpu.user=125207000
  balloon.current=65536
  balloon.maximum=65536
  balloon.rss=34552
  vcpu.current=1
  net.count=2
  net.0.name=vnet0
  net.0.rx.bytes=100
  net.0.tx.bytes=10
  net.1.rx.bytes=200
  net.1.tx.bytes=20
  block.count=2
  block.0.name=vda
  block.0.rd.bytes=4096
  block.0.wr.bytes=512
  block.1.rd.bytes=1
  block.1.wr.bytes=2

Domain: 'berth-b'
  state.state=5
  state.reason=3
  cpu.time=1750000000
  balloon.current=65536
  block.count=0

`;

describe("domain states", () => {
  it.each([
    [1, 1, DomainState.DOMAIN_STATE_RUNNING],
    [2, 0, DomainState.DOMAIN_STATE_RUNNING],
    [4, 1, DomainState.DOMAIN_STATE_RUNNING],
    [3, 1, DomainState.DOMAIN_STATE_PAUSED],
    [7, 0, DomainState.DOMAIN_STATE_PAUSED],
    [5, 0, DomainState.DOMAIN_STATE_SHUTOFF],
    [5, 2, DomainState.DOMAIN_STATE_SHUTOFF],
    [5, 3, DomainState.DOMAIN_STATE_CRASHED],
    [6, 0, DomainState.DOMAIN_STATE_CRASHED],
    [0, 0, DomainState.DOMAIN_STATE_UNSPECIFIED],
  ])("state %i reason %i → %i", (state, reason, expected) => {
    expect(domainStateOf(state, reason)).toBe(expected);
  });
});

describe("domstats", () => {
  it("parses records and sums block and net counters", () => {
    const records = parseDomstats(DOMSTATS);
    expect(records.map((r) => r.name)).toEqual(["berth-a", "berth-b"]);
    expect(statsFromRecord(VM, records[0]!, 64)).toEqual({
      vmId: VM,
      state: DomainState.DOMAIN_STATE_RUNNING,
      cpuTimeNs: 389203000,
      memoryUsedMib: 33,
      diskReadBytes: 4097,
      diskWriteBytes: 514,
      netRxBytes: 300,
      netTxBytes: 30,
    });
  });

  it("uses balloon.current without rss, capped at the domain's memory; 0 when shut off", () => {
    const [a, b] = parseDomstats(DOMSTATS.replace("  balloon.rss=34552\n", "").replace("balloon.current=65536", "balloon.current=131072"));
    expect(statsFromRecord(VM, a!, 64).memoryUsedMib).toBe(64);
    const off = statsFromRecord(VM, b!, 64);
    expect(off.state).toBe(DomainState.DOMAIN_STATE_CRASHED);
    expect(off.memoryUsedMib).toBe(0);
    expect(off.diskReadBytes).toBe(0);
  });

  it("reports no counters for an inactive domain, though libvirt prints a cpu.time for it", () => {
    const [never] = parseDomstats("Domain: 'berth-new'\n  state.state=5\n  state.reason=0\n  cpu.time=690000000\n");
    expect(statsFromRecord(VM, never!, 64)).toMatchObject({ state: DomainState.DOMAIN_STATE_SHUTOFF, cpuTimeNs: 0, memoryUsedMib: 0 });
  });
});

describe("host facts", () => {
  it("parses nodeinfo", () => {
    const text = `CPU model:           x86_64
CPU(s):              2
CPU frequency:       2445 MHz
NUMA cell(s):        1
Memory size:         4286240 KiB
`;
    expect(parseNodeinfo(text)).toEqual({ cpuModel: "x86_64", cpus: 2, memoryKib: 4286240 });
    expect(parseNodeinfo("garbage")).toBeUndefined();
  });
  it("parses nodememstats' total", () => {
    const text = `total  :             24683656 KiB
free   :             24027572 KiB
buffers:                10316 KiB
cached :               433724 KiB
`;
    expect(parseNodeMemTotalKib(text)).toBe(24683656);
    expect(parseNodeMemTotalKib("error: failed")).toBeUndefined();
  });

  it("parses NUMA cells and the CPU model from capabilities", () => {
    const caps = `<capabilities>
  <host>
    <uuid>e4230a9e</uuid>
    <cpu>
      <arch>x86_64</arch>
      <model>EPYC-Milan</model>
      <vendor>AMD</vendor>
    </cpu>
    <topology>
      <cells num='2'>
        <cell id='1'>
          <memory unit='KiB'>2097152</memory>
          <cpus num='4'>
            <cpu id='4' socket_id='1'/>
          </cpus>
        </cell>
        <cell id='0'>
          <memory unit='KiB'>1048576</memory>
          <cpus num='2'>
            <cpu id='0' socket_id='0'/>
          </cpus>
        </cell>
      </cells>
    </topology>
  </host>
  <guest><arch name='x86_64'><model>ignored</model></arch></guest>
</capabilities>`;
    expect(parseNumaCells(caps)).toEqual([
      { id: 0, cpus: 2, memoryMib: 1024 },
      { id: 1, cpus: 4, memoryMib: 2048 },
    ]);
    expect(parseHostCpuModel(caps)).toBe("AMD EPYC-Milan");
    expect(parseNumaCells("<capabilities/>")).toEqual([]);
  });

  it("parses pool-info --bytes and version", () => {
    expect(parsePoolInfo("Name:           default\nState:          running\nCapacity:       270553174016\nAllocation:     1\n")).toEqual({ capacityBytes: 270553174016, running: true });
    expect(parsePoolInfo("")).toBeUndefined();
    const version = "Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0\nUsing API: QEMU 9.0.0\nRunning hypervisor: QEMU 7.2.22\nRunning against daemon: 9.0.1\n";
    expect(parseVersion(version)).toBe("QEMU 7.2.22, libvirt 9.0.1");
    expect(parseVersion("Using library: libvirt 9.0.0\n")).toBe("libvirt 9.0.0");
  });
});

describe("networks, leases, the neighbour table", () => {
  it("parses net-list --all, with or without its header", () => {
    const quiet = " default             active   no   yes\n tinytest-isolated   inactive yes  yes\n\n";
    const full = ` Name      State      Autostart   Persistent\n----------------------------------------------\n${quiet}`;
    expect(parseNetList(quiet)).toEqual([
      { name: "default", active: true },
      { name: "tinytest-isolated", active: false },
    ]);
    expect(parseNetList(full)).toEqual(parseNetList(quiet));
  });

  it("maps MACs to leased addresses without their prefix, header skipped, v4 and v6", () => {
    const text = [
      " Expiry Time           MAC address         Protocol   IP address           Hostname     Client ID or DUID",
      "--------------------------------------------------------------------------------------------------------------",
      " 2026-12-02 02:16:44   52:54:00:44:FA:A6   ipv4       192.168.122.117/24   tiny-one     01:52:54:00:44:fa:a6",
      " 2026-12-02 02:23:01   52:54:00:b8:14:7b   ipv4       192.168.122.140/24   -            -",
      " 2026-12-02 02:23:01   52:54:00:b8:14:7b   ipv6       fd00::5/64           -            00:01:00:01",
      "",
    ].join("\n");
    expect(parseDhcpLeases(text)).toEqual(
      new Map([
        ["52:54:00:44:fa:a6", ["192.168.122.117"]],
        ["52:54:00:b8:14:7b", ["192.168.122.140", "fd00::5"]],
      ]),
    );
    expect(parseDhcpLeases("")).toEqual(new Map());
  });

  it("parses /proc/net/arp, skipping incomplete entries", () => {
    const text = [
      "IP address       HW type     Flags       HW address            Mask     Device",
      "192.0.2.1        0x1         0x2         02:FC:00:00:00:05     *        eth0",
      "10.0.0.7         0x1         0x0         00:00:00:00:00:00     *        br0",
      "10.0.0.8         0x1         0x2         52:54:00:12:34:56     *        br0",
      "",
    ].join("\n");
    expect(parseProcNetArp(text)).toEqual([
      { ip: "192.0.2.1", mac: "02:fc:00:00:00:05", device: "eth0" },
      { ip: "10.0.0.8", mac: "52:54:00:12:34:56", device: "br0" },
    ]);
  });

  it("tells MAC addresses", () => {
    expect(isMacAddress("52:54:00:ab:CD:ef")).toBe(true);
    expect(isMacAddress("52:54:00:ab:cd")).toBe(false);
    expect(isMacAddress("52-54-00-ab-cd-ef")).toBe(false);
  });
});

describe("volumes and images", () => {
  it("parses vol-list: names, with or without paths and header", () => {
    expect(parseVolList(" berth-image-a.qcow2   /pool/berth-image-a.qcow2\n x.qcow2   /pool/x.qcow2\n\n")).toEqual(["berth-image-a.qcow2", "x.qcow2"]);
    expect(parseVolList(" Name   Path\n------------\n a   /p/a\n")).toEqual(["a"]);
  });

  it("parses vol-dumpxml: sizes, probed format, backing file", () => {
    const xml = `<volume type='file'>
  <name>ov.qcow2</name>
  <key>/pool/ov.qcow2</key>
  <capacity unit='bytes'>1073741824</capacity>
  <allocation unit='bytes'>200704</allocation>
  <target>
    <path>/pool/ov.qcow2</path>
    <format type='qcow2'/>
  </target>
  <backingStore>
    <path>/pool/berth-image-i.qcow2</path>
    <format type='qcow2'/>
  </backingStore>
</volume>`;
    expect(parseVolumeXml(xml)).toEqual({ name: "ov.qcow2", capacityBytes: 2 ** 30, allocationBytes: 200704, format: "qcow2", backingPath: "/pool/berth-image-i.qcow2" });
    const raw = xml.replace(/<backingStore>[\s\S]*<\/backingStore>/, "").replace("type='qcow2'", "type='raw'").replace("unit='bytes'>1073741824", "unit='KiB'>1024");
    expect(parseVolumeXml(raw)).toMatchObject({ capacityBytes: 2 ** 20, format: "raw", backingPath: undefined });
    expect(parseVolumeXml("<pool/>")).toBeUndefined();
  });

  it("parses qemu-img info: format, virtual size, backing file, external data file", () => {
    expect(parseQemuImgInfo(JSON.stringify({ "virtual-size": 20971520, format: "qcow2", "format-specific": { type: "qcow2", data: { compat: "1.1" } } }))).toEqual({
      format: "qcow2",
      virtualSizeBytes: 20971520,
      backingFile: undefined,
      dataFile: undefined,
    });
    expect(parseQemuImgInfo(JSON.stringify({ "virtual-size": 1, format: "qcow2", "backing-filename": "/etc/shadow" }))?.backingFile).toBe("/etc/shadow");
    expect(parseQemuImgInfo(JSON.stringify({ "virtual-size": 1, format: "qcow2", "format-specific": { data: { "data-file": "df.raw" } } }))?.dataFile).toBe("df.raw");
    expect(parseQemuImgInfo("qemu-img: Could not open")).toBeUndefined();
    expect(parseQemuImgInfo(JSON.stringify({ format: "raw" }))).toBeUndefined();
  });
});
