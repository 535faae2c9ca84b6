import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ErrorCode, nicMacAddress } from "@berth/core";
import {
  fakeAddressFor,
  fakeConsoleBanner,
  fakeConsoleEcho,
  FakeDriver,
  type ConsoleConnection,
  type ConsoleEnd,
  type DomainSpec,
  type FakeDriverOptions,
} from "./index.js";
import { failure, openFakeOn } from "./fake.testkit.js";

let dir: string;
let drivers: FakeDriver[];

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "berth-fake-console-"));
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
  name: "web-1",
  resources: { vcpus: 1, memoryMib: 512, diskGib: 0 },
  generation: 1,
  ...over,
});


/** A session with its output (as text) and its ends recorded, listened to at once as a relay does. */
function record(connection: ConsoleConnection): { connection: ConsoleConnection; text: () => string; ends: (ConsoleEnd | undefined)[] } {
  const chunks: Uint8Array[] = [];
  const ends: (ConsoleEnd | undefined)[] = [];
  connection.onData((d) => chunks.push(d));
  connection.onEnd((e) => ends.push(e));
  return { connection, text: () => Buffer.concat(chunks).toString("utf8"), ends };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

describe("fake console (pure)", () => {
  it("echoes as a terminal in cooked mode: CR becomes CR LF, the rest as typed", () => {
    expect(Buffer.from(fakeConsoleEcho(bytes("ls -l\r"))).toString()).toBe("ls -l\r\n");
    expect(Buffer.from(fakeConsoleEcho(bytes("a\nb\x1d"))).toString()).toBe("a\nb\x1d");
  });

  it("greets with the guest's name, hostname, keys and address", () => {
    expect(fakeConsoleBanner({ name: "web-1", hostname: "web-1", sshKeys: 2, address: "10.122.3.4" })).toBe(
      "\r\n[berth-fake] web-1 booted: hostname web-1, 2 ssh keys, address 10.122.3.4\r\nweb-1 login: ",
    );
    expect(fakeConsoleBanner({ name: "db", hostname: "db", sshKeys: 0, address: undefined })).toContain("address none yet\r\n");
  });
});

describe("FakeDriver: console", () => {
  it("opens with the banner from the seed and the lease, then echoes what is typed", async () => {
    const { d, clock } = open({ addressDelayMs: 1000 });
    const mac = nicMacAddress(vmId, 0);
    await d.define(
      spec({
        nics: [{ network: "default", mac }],
        cloudInit: { instanceId: vmId, hostname: "web-1", sshAuthorizedKeys: ["ssh-ed25519 AAAA one", "ssh-ed25519 AAAA two"], userData: "" },
      }),
    );
    await d.start(vmId);
    const early = record(await d.openConsole(vmId));
    await tick();
    expect(early.text()).toBe("\r\n[berth-fake] web-1 booted: hostname web-1, 2 ssh keys, address none yet\r\nweb-1 login: ");
    early.connection.write(bytes("root\r"));
    await tick();
    expect(early.text().endsWith("web-1 login: root\r\n")).toBe(true);
    early.connection.close();
    await clock.advance(1000);
    const later = record(await d.openConsole(vmId));
    await tick();
    expect(later.text()).toContain(`address ${fakeAddressFor(mac, "10.122.0.0/16")}\r\n`);
  });

  it("keeps what the guest printed before anyone listened (the banner), and nothing once ended", async () => {
    const { d } = open();
    await d.define(spec());
    await d.start(vmId);
    const connection = await d.openConsole(vmId);
    await tick();
    const seen: string[] = [];
    connection.onData((data) => seen.push(Buffer.from(data).toString()));
    await tick();
    expect(seen.join("")).toMatch(/^\r\n\[berth-fake\] web-1 booted: hostname web-1, 0 ssh keys, address none yet\r\nweb-1 login: $/);
    connection.close();
    connection.write(bytes("late\r"));
    await tick();
    expect(seen.join("")).not.toContain("late");
  });

  it("holds one session: a second is refused without force; force takes over, ending the first", async () => {
    const { d } = open({ persist: false }, `console-test-${process.pid}`);
    await d.define(spec());
    await d.start(vmId);
    const first = record(await d.openConsole(vmId));
    const busy = await failure(d.openConsole(vmId));
    expect(busy.code).toBe(ErrorCode.FailedPrecondition);
    expect(busy.message).toMatch(/console of domain web-1 is in use/);
    const second = record(await d.openConsole(vmId, { force: true }));
    await tick();
    expect(first.ends).toEqual([{ code: ErrorCode.FailedPrecondition, message: "the console of domain web-1 was taken over by another session" }]);
    first.connection.write(bytes("x"));
    second.connection.write(bytes("y"));
    await tick();
    expect(first.text()).not.toContain("x");
    expect(second.text().endsWith("y")).toBe(true);
    // close: once, with undefined; the console is free again.
    second.connection.close();
    second.connection.close();
    await tick();
    expect(second.ends).toEqual([undefined]);
    const third = record(await d.openConsole(vmId));
    // An end listener added after the end still hears of it, once.
    third.connection.close();
    const late: (ConsoleEnd | undefined)[] = [];
    third.connection.onEnd((e) => late.push(e));
    await tick();
    expect(late).toEqual([undefined]);
  });

  it.each([
    ["stops", (d: FakeDriver) => d.stop(vmId, { force: true }), /web-1 stopped/],
    ["crashes", (d: FakeDriver) => d.crash(vmId), /web-1 crashed/],
    ["is deleted", (d: FakeDriver) => d.delete(vmId), /web-1 stopped/],
  ])("ends the session (FAILED_PRECONDITION) when the domain %s", async (_what, act, message) => {
    const { d } = open();
    await d.define(spec());
    await d.start(vmId);
    const session = record(await d.openConsole(vmId));
    await act(d);
    await tick();
    expect(session.ends).toHaveLength(1);
    expect(session.ends[0]?.code).toBe(ErrorCode.FailedPrecondition);
    expect(session.ends[0]?.message).toMatch(message);
  });

  it("ends the session when the domain migrates away, and when the driver closes (HYPERVISOR_UNAVAILABLE)", async () => {
    const src = open({ migrationBandwidthMibPerS: 1e6 }, path.join(dir, "src"));
    const dst = open({ clock: src.clock }, path.join(dir, "dst"));
    await src.d.define(spec());
    await src.d.start(vmId);
    const session = record(await src.d.openConsole(vmId));
    const migrating = src.d.migrateOut(vmId, await dst.d.prepareIncoming(spec()));
    await src.clock.advance(10);
    await migrating;
    await tick();
    expect(session.ends).toEqual([{ code: ErrorCode.FailedPrecondition, message: "domain web-1 migrated to another host; the console session ended" }]);
    await dst.d.finishIncoming(vmId, 2);
    const there = record(await dst.d.openConsole(vmId));
    await dst.d.close();
    await tick();
    expect(there.ends).toEqual([{ code: ErrorCode.HypervisorUnavailable, message: "fake hypervisor driver closed" }]);
  });

  it("refuses an unknown domain (NOT_FOUND), one not running (FAILED_PRECONDITION), and fails by fault injection", async () => {
    const { d } = open();
    expect((await failure(d.openConsole(vmId))).code).toBe(ErrorCode.NotFound);
    await d.define(spec());
    const off = await failure(d.openConsole(vmId));
    expect(off.code).toBe(ErrorCode.FailedPrecondition);
    expect(off.message).toMatch(/is SHUTOFF/);
    await d.start(vmId);
    await d.pause(vmId);
    expect((await failure(d.openConsole(vmId))).code).toBe(ErrorCode.FailedPrecondition);
    await d.resume(vmId);
    d.faults.failNext({ op: "openConsole", vmId, code: ErrorCode.HypervisorUnavailable });
    expect((await failure(d.openConsole(vmId))).code).toBe(ErrorCode.HypervisorUnavailable);
    expect(await d.openConsole(vmId)).toBeDefined();
  });
});
