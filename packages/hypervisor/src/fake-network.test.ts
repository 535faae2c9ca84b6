import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ErrorCode, nicMacAddress } from "@berth/core";
import {
  DEFAULT_FAKE_NETWORKS,
  fakeAddressFor,
  FakeDriver,
  readFakeHypervisorState,
  resolveFakeNetworks,
  type DomainSpec,
  type FakeDriverOptions,
} from "./index.js";
import { failure, openFakeOn } from "./fake.testkit.js";

let dir: string;
let drivers: FakeDriver[];

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "berth-fake-network-"));
  drivers = [];
});

afterEach(async () => {
  for (const d of drivers) await d.close();
  rmSync(dir, { recursive: true, force: true });
});

const open = (options: Partial<FakeDriverOptions> = {}, stateDir = path.join(dir, "host")) => openFakeOn(drivers, stateDir, options);

const vmId = "00000000-0000-4000-8000-000000000001";
const spec = (over: Partial<DomainSpec> = {}): DomainSpec => ({
  vmId,
  name: "vm-1",
  resources: { vcpus: 1, memoryMib: 512, diskGib: 0 },
  generation: 1,
  ...over,
});


const toNumber = (ip: string): number => ip.split(".").reduce((n, o) => n * 256 + Number(o), 0);

describe("fakeAddressFor (pure)", () => {
  it("derives the address from the MAC: the same on every host, never the network, gateway or broadcast address", () => {
    fc.assert(
      fc.property(fc.uuid(), fc.nat(7), fc.integer({ min: 8, max: 30 }), fc.nat(255), (id, index, prefix, octet) => {
        const mac = nicMacAddress(id, index);
        const cidr = `10.${octet}.0.0/${prefix}`;
        const ip = fakeAddressFor(mac, cidr);
        expect(fakeAddressFor(mac, cidr)).toBe(ip);
        const size = 2 ** (32 - prefix);
        const base = toNumber(`10.${octet}.0.0`) - (toNumber(`10.${octet}.0.0`) % size);
        const offset = toNumber(ip) - base;
        expect(offset).toBeGreaterThanOrEqual(2);
        expect(offset).toBeLessThan(size - 1);
      }),
    );
    expect(fakeAddressFor("52:54:00:00:00:00", "192.168.122.0/24")).toBe("192.168.122.2");
    expect(fakeAddressFor("52:54:00:00:00:fc", "192.168.122.0/24")).toBe("192.168.122.254");
    expect(fakeAddressFor("52:54:00:00:00:fd", "192.168.122.0/24")).toBe("192.168.122.2"); // 253 addresses: .2 to .254
    expect(fakeAddressFor("52:54:00:00:00:01", "")).toBe("");
  });
});

describe("resolveFakeNetworks", () => {
  it("defaults to libvirt's network default, normalizes cidrs, sorts by name", () => {
    expect(resolveFakeNetworks(undefined)).toEqual([...DEFAULT_FAKE_NETWORKS]);
    expect(resolveFakeNetworks([{ name: "lan", kind: "bridge" }, { name: "app", cidr: "172.16.5.9/16", active: false }])).toEqual([
      { name: "app", kind: "network", cidr: "172.16.0.0/16", active: false },
      { name: "lan", kind: "bridge", cidr: "", active: true },
    ]);
    expect(resolveFakeNetworks([])).toEqual([]);
  });

  it.each([
    [[{ name: "" }], "fake_driver.networks[0].name"],
    [[{ name: "a" }, { name: "a" }], "fake_driver.networks[1].name"],
    [[{ name: "a", kind: "vlan" }], "fake_driver.networks[0].kind"],
    [[{ name: "a", cidr: "10.0.0.0/31" }], "fake_driver.networks[0].cidr"],
    [[{ name: "a", cidr: "10.0.0.300/24" }], "fake_driver.networks[0].cidr"],
    [[{ name: "a", mtu: 9000 }], "fake_driver.networks[0].mtu"],
    [{ name: "a" }, "fake_driver.networks"],
  ])("refuses %j naming %s", (networks, field) => {
    expect(() => resolveFakeNetworks(networks)).toThrow(new RegExp(`^${field.replace(/[[\].]/g, "\\$&")}: `));
  });
});

describe("FakeDriver: networks and NIC addresses", () => {
  it("lists its networks", async () => {
    const { d } = open({ networks: [{ name: "br0", kind: "bridge" }, { name: "default", cidr: "10.1.0.0/24" }, { name: "off", active: false }] });
    expect(await d.listNetworks()).toEqual([
      { name: "br0", kind: "bridge", active: true },
      { name: "default", kind: "network", active: true },
      { name: "off", kind: "network", active: false },
    ]);
  });

  it("leases the NICs' addresses addressDelayMs after the start, seen by list() without any other call, until the domain is undefined", async () => {
    const { d, clock } = open({ addressDelayMs: 1500 });
    const macs = [nicMacAddress(vmId, 0), nicMacAddress(vmId, 1)];
    const defined = await d.define(spec({ nics: macs.map((mac) => ({ network: "default", mac })) }));
    const address = fakeAddressFor(macs[0]!, "10.122.0.0/16");
    expect(defined.interfaces).toEqual(macs.map((mac) => ({ network: "default", mac, ipAddresses: [], addressSource: "fake" })));
    await d.start(vmId);
    await clock.advance(1499);
    expect((await d.list())[0]?.interfaces[0]?.ipAddresses).toEqual([]);
    await clock.advance(1);
    const leased = (await d.list())[0]!.interfaces;
    expect(leased.map((i) => i.ipAddresses)).toEqual([[address], [fakeAddressFor(macs[1]!, "10.122.0.0/16")]]);
    // Another process reads it from the state file at its own time.
    expect(readFakeHypervisorState(path.join(dir, "host"), clock.now() - 1).domains[0]?.interfaces[0]?.ipAddresses).toEqual([]);
    expect(readFakeHypervisorState(path.join(dir, "host"), clock.now()).domains[0]?.interfaces[0]?.ipAddresses).toEqual([address]);
    // The lease outlives a stop and a restart (of the domain, and of the driver).
    await d.stop(vmId, { force: true });
    expect((await d.list())[0]?.interfaces[0]?.ipAddresses).toEqual([address]);
    await d.close();
    const again = open({ clock }).d;
    expect((await again.list())[0]?.interfaces[0]?.ipAddresses).toEqual([address]);
    await again.start(vmId);
    expect((await again.list())[0]?.interfaces[0]?.ipAddresses).toEqual([address]);
    await again.delete(vmId);
    // Defined again: a new guest, a new lease.
    await again.define(spec({ nics: [{ network: "default", mac: macs[0]! }] }));
    expect((await again.list())[0]?.interfaces[0]?.ipAddresses).toEqual([]);
  });

  it("gives no address to a guest stopped before its lease; the next start waits the delay again", async () => {
    const { d, clock } = open({ addressDelayMs: 1000, persist: false }, `network-test-${process.pid}`);
    await d.define(spec({ nics: [{ network: "default", mac: nicMacAddress(vmId, 0) }] }));
    await d.start(vmId);
    await clock.advance(500);
    await d.destroy(vmId);
    await clock.advance(1000);
    expect((await d.list())[0]?.interfaces[0]?.ipAddresses).toEqual([]);
    await d.start(vmId);
    await clock.advance(999);
    expect((await d.list())[0]?.interfaces[0]?.ipAddresses).toEqual([]);
    await clock.advance(1);
    expect((await d.list())[0]?.interfaces[0]?.ipAddresses).toHaveLength(1);
  });

  it("gives one VM the same address on two hosts with the network's cidr, none on a network without one", async () => {
    const networks = [{ name: "default", cidr: "192.168.50.0/24" }, { name: "lan", kind: "bridge" as const }];
    const a = open({ networks, addressDelayMs: 0 }, path.join(dir, "a"));
    const b = open({ networks, addressDelayMs: 0, clock: a.clock }, path.join(dir, "b"));
    const nics = [{ network: "default", mac: nicMacAddress(vmId, 0) }, { network: "lan", mac: nicMacAddress(vmId, 1) }];
    const seen: string[][][] = [];
    for (const { d } of [a, b]) {
      await d.define(spec({ nics }));
      await d.start(vmId);
      seen.push((await d.list())[0]!.interfaces.map((i) => i.ipAddresses));
    }
    expect(seen[0]).toEqual([[fakeAddressFor(nics[0]!.mac, "192.168.50.0/24")], []]);
    expect(seen[1]).toEqual(seen[0]);
  });

  it("refuses a NIC on a network the host lacks or that is inactive, or with a bad MAC, naming the field; nothing is defined", async () => {
    const { d } = open({ networks: [{ name: "default" }, { name: "off", active: false }] });
    const mac = nicMacAddress(vmId, 0);
    const cases: [DomainSpec, string, RegExp][] = [
      [spec({ nics: [{ network: "default", mac }, { network: "nope", mac: nicMacAddress(vmId, 1) }] }), "nics[1].network", /no network nope \(it offers: default, off\)/],
      [spec({ nics: [{ network: "off", mac }] }), "nics[0].network", /not active/],
      [spec({ nics: [{ network: "default", mac: "52:54:00:XX:00:01" }] }), "nics[0].mac", /must be a MAC/],
      [spec({ nics: [{ network: "default", mac }, { network: "default", mac }] }), "nics[1].mac", /two NICs/],
    ];
    for (const [s, field, message] of cases) {
      const e = await failure(d.define(s));
      expect(e.code).toBe(ErrorCode.InvalidArgument);
      expect(e.field).toBe(field);
      expect(e.message).toMatch(message);
    }
    expect(await d.list()).toEqual([]);
  });

  it("carries the lease with a migration: the guest keeps its address at the destination", async () => {
    const src = open({ addressDelayMs: 100, migrationBandwidthMibPerS: 1e6 }, path.join(dir, "src"));
    const dst = open({ addressDelayMs: 100, clock: src.clock }, path.join(dir, "dst"));
    const s = spec({ nics: [{ network: "default", mac: nicMacAddress(vmId, 0) }] });
    await src.d.define(s);
    await src.d.start(vmId);
    await src.clock.advance(100);
    const address = (await src.d.list())[0]!.interfaces[0]!.ipAddresses;
    expect(address).toHaveLength(1);
    const target = await dst.d.prepareIncoming(s);
    const migrating = src.d.migrateOut(vmId, target);
    await src.clock.advance(10);
    await migrating;
    const arrived = await dst.d.finishIncoming(vmId, 2);
    expect(arrived.interfaces).toEqual([{ network: "default", mac: nicMacAddress(vmId, 0), ipAddresses: address, addressSource: "fake" }]);
  });

  it("refuses at prepareIncoming a NIC on a network the destination lacks", async () => {
    const dst = open({ networks: [{ name: "other" }] }, path.join(dir, "dst"));
    const e = await failure(dst.d.prepareIncoming(spec({ nics: [{ network: "default", mac: nicMacAddress(vmId, 0) }] })));
    expect(e.field).toBe("nics[0].network");
    expect(readFakeHypervisorState(path.join(dir, "dst"), dst.clock.now()).incoming).toEqual([]);
  });
});
