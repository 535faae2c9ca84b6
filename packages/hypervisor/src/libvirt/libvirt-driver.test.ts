// The driver against a simulated virsh (an injected runner): command lines, parsing and error paths
// without libvirtd. (Migration's progress, abort and timeout are in migration.test.ts; a real
// migration between two libvirt daemons in test/drivers/libvirt-migration.test.ts.)
import { EventEmitter } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, describe, expect, it, vi } from "vitest";
import { DomainState } from "@berth/api";
import type { DomainSpec, DriverEvent } from "../driver.js";
import type { EventProcess } from "./events.js";
import { BERTH_XMLNS } from "./domain-xml.js";
import { LibvirtDriver } from "./libvirt-driver.js";
import { SimVirsh } from "./sim-virsh.testkit.js";

const A = "0f8fad5b-d9cb-469f-a165-70867728950e";
const B = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

const spec = (over: Partial<DomainSpec> = {}): DomainSpec => ({
  vmId: A,
  name: "web",
  generation: 1,
  resources: { vcpus: 2, memoryMib: 512, diskGib: 10 },
  ...over,
});

function setup(
  options: { domainType?: "kvm" | "qemu"; watchdogDevice?: string; watchdogStateFile?: string } = {},
  sim = new SimVirsh(),
): { sim: SimVirsh; driver: LibvirtDriver } {
  const driver = new LibvirtDriver({ storagePool: "vms", networks: [{ type: "bridge", source: "br0" }], runner: sim.runner, ...options }, { fenceRetryMs: 50 });
  return { sim, driver };
}

const names = (sim: SimVirsh): string[] => sim.commands.map((c) => c[0]!);

describe("LibvirtDriver (simulated virsh)", () => {
  it("defines: volume, then the domain from a generated XML; idempotent by vmId", async () => {
    const { sim, driver } = setup();
    const domain = await driver.define(spec());
    expect(domain).toEqual({
      vmId: A,
      name: "web",
      state: DomainState.DOMAIN_STATE_SHUTOFF,
      generation: 1,
      resources: { vcpus: 2, memoryMib: 512, diskGib: 10 },
      fence: false,
      interfaces: [],
      volumeIds: [],
      imageId: "",
    });
    expect(sim.commands).toContainEqual(["vol-create-as", "vms", `${A}.qcow2`, "10G", "--format", "qcow2"]);
    expect(sim.commands).toContainEqual(["domcapabilities", "--virttype", "kvm"]);
    const xml = sim.domains.get(A)!.xml;
    expect(xml).toContain("<domain type='kvm'>");
    expect(xml).toContain("<name>berth-web</name>");
    // The bridge is offered, not given to every VM: NICs come from the spec only.
    expect(xml).not.toContain("<interface");
    expect(sim.volumes).toEqual(new Set([`${A}.qcow2`]));

    sim.commands.length = 0;
    expect(await driver.define(spec({ generation: 9 }))).toEqual(domain);
    expect(names(sim)).toEqual(["dumpxml", "domstats"]);
    expect(await driver.list()).toEqual([domain]);
  });

  it("refuses a non-UUID vmId and bad resources before running anything", async () => {
    const { sim, driver } = setup();
    await expect(driver.define(spec({ vmId: "web-1" }))).rejects.toMatchObject({ code: "INVALID_ARGUMENT", field: "domain.vm_id" });
    await expect(driver.define(spec({ resources: { vcpus: 0, memoryMib: 1, diskGib: 0 } }))).rejects.toMatchObject({ field: "domain.resources.vcpus" });
    await expect(driver.define(spec({ name: "a/b" }))).rejects.toMatchObject({ field: "domain.name" });
    expect(sim.commands).toEqual([]);
  });

  it("RESOURCE_EXHAUSTED when the host is too small; nothing is created", async () => {
    const { sim, driver } = setup({ domainType: "qemu" });
    await expect(driver.define(spec({ resources: { vcpus: 64, memoryMib: 512, diskGib: 1 } }))).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    await expect(driver.define(spec({ resources: { vcpus: 1, memoryMib: 1 << 20, diskGib: 1 } }))).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    expect(sim.volumes.size).toBe(0);
    expect(sim.domains.size).toBe(0);
  });

  it("ALREADY_EXISTS for the name under another uuid, and the volume it made is removed", async () => {
    const { sim, driver } = setup();
    await driver.define(spec());
    await expect(driver.define(spec({ vmId: B }))).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
    expect(sim.volumes).toEqual(new Set([`${A}.qcow2`]));
    expect(sim.commands).toContainEqual(["vol-delete", "--pool", "vms", `${B}.qcow2`]);
  });

  it("a define that fails after creating the volume leaves nothing behind", async () => {
    const { sim, driver } = setup();
    sim.failures.set("define", "XML error: oops");
    await expect(driver.define(spec())).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(sim.volumes.size).toBe(0);
    expect(sim.domains.size).toBe(0);
  });

  it("a diskless domain gets no volume", async () => {
    const { sim, driver } = setup({ domainType: "qemu" });
    await driver.define(spec({ resources: { vcpus: 1, memoryMib: 64, diskGib: 0 } }));
    expect(names(sim)).not.toContain("vol-create-as");
    expect(sim.domains.get(A)!.xml).not.toContain("<disk");
    expect(sim.domains.get(A)!.xml).toContain("<domain type='qemu'>");
  });

  it("stop: graceful falls back to destroy after the time limit; forced destroys at once", async () => {
    const { sim, driver } = setup();
    await driver.define(spec());
    await driver.start(A);
    sim.commands.length = 0;
    const started = Date.now();
    expect((await driver.stop(A, { force: false, timeoutMs: 250 })).state).toBe(DomainState.DOMAIN_STATE_SHUTOFF);
    expect(Date.now() - started).toBeGreaterThanOrEqual(240);
    expect(names(sim).filter((n) => n !== "domstate")).toEqual(["dumpxml", "domstats", "shutdown", "destroy"]);

    await driver.start(A);
    sim.guestObeysShutdown = true;
    sim.commands.length = 0;
    await driver.stop(A, { force: false, timeoutMs: 5_000 });
    expect(names(sim)).toEqual(["dumpxml", "domstats", "shutdown", "domstate"]);

    await driver.start(A);
    sim.commands.length = 0;
    await driver.stop(A, { force: true });
    expect(sim.commands.slice(2)).toEqual([["destroy", A]]);
    sim.commands.length = 0;
    await driver.stop(A, { force: true });
    expect(names(sim)).toEqual(["dumpxml", "domstats"]);
  });

  it("undefine refuses an active domain; deleteVolumes refuses a defined one; delete does all three", async () => {
    const { sim, driver } = setup();
    await driver.define(spec());
    await driver.start(A);
    await expect(driver.undefine(A)).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    await expect(driver.deleteVolumes(A)).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    await driver.delete(A);
    expect(sim.domains.size).toBe(0);
    expect(sim.volumes.size).toBe(0);
    await driver.delete(A);
    await driver.undefine(A);
    await driver.deleteVolumes(A);
    await expect(driver.start(A)).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(driver.stats(A)).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("setGeneration writes the metadata --config, plus --live when running", async () => {
    const { sim, driver } = setup();
    await driver.define(spec());
    sim.commands.length = 0;
    expect((await driver.setGeneration(A, 2)).generation).toBe(2);
    const value = `<vm id="${A}" name="web" generation="2" disk-gib="10"/>`;
    expect(sim.commands.at(-1)).toEqual(["metadata", A, BERTH_XMLNS, "--key", "berth", "--set", value, "--config"]);
    await driver.start(A);
    await driver.setGeneration(A, 3);
    expect(sim.commands.at(-1)).toContain("--live");
    sim.commands.length = 0;
    await driver.setGeneration(A, 3);
    expect(names(sim)).not.toContain("metadata");
    expect((await driver.list())[0]!.generation).toBe(3);
  });

  it("list ignores domains without Berth's metadata and sorts by vmId", async () => {
    const { sim, driver } = setup();
    await driver.define(spec({ vmId: B, name: "b" }));
    await driver.define(spec({ vmId: A, name: "a" }));
    sim.domains.set("11111111-1111-4111-8111-111111111111", { name: "other", xml: "<domain type='kvm'>\n  <name>other</name>\n  <uuid>11111111-1111-4111-8111-111111111111</uuid>\n</domain>\n", state: 1, reason: 1, persistent: true });
    sim.domains.get(B)!.state = 5;
    sim.domains.get(B)!.reason = 3;
    sim.commands.length = 0;
    const list = await driver.list();
    expect(list.map((d) => [d.vmId, d.name, d.state])).toEqual([
      [A, "a", DomainState.DOMAIN_STATE_SHUTOFF],
      [B, "b", DomainState.DOMAIN_STATE_CRASHED],
    ]);
    expect(sim.commands.map((c) => c[0])).toEqual(["list", "dumpxml", "dumpxml", "dumpxml", "domstats"]);
    await expect(driver.start("11111111-1111-4111-8111-111111111111")).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("hostFacts subtracts the host reserve", async () => {
    const sim = new SimVirsh();
    sim.failures.set("capabilities", "x");
    const driver = new LibvirtDriver({ runner: sim.runner, hostReserveMib: 1024 });
    expect((await driver.hostFacts()).capacity).toEqual({ vcpus: 4, memoryMib: 8 * 1024 - 1024, diskGib: 200 });
    // Without the pool, the pool is reported unusable.
    sim.failures.set("pool-info", "failed to get pool 'default'");
    await expect(driver.hostFacts()).rejects.toMatchObject({ code: "FAILED_PRECONDITION", field: "libvirt.storage_pool" });
  });

  it("health never throws", async () => {
    const sim = new SimVirsh();
    sim.failures.set("uri", "failed to connect to the hypervisor");
    const driver = new LibvirtDriver({ runner: sim.runner });
    const h = await driver.health();
    expect(h.available).toBe(false);
    expect(h.message).toContain("failed to connect");
    const broken = new LibvirtDriver({ runner: async () => { throw new Error("boom"); } });
    expect(await broken.health()).toEqual({ available: false, message: "boom" });
  });

  describe("migration (command lines)", () => {
    it("prepareIncoming creates the volume and returns this host's migration URI; idempotent", async () => {
      const sim = new SimVirsh();
      const driver = new LibvirtDriver({ runner: sim.runner, storagePool: "vms", migrationUri: "qemu+tls://dst/system" });
      const target = await driver.prepareIncoming(spec());
      // The pool's directory rides along, for an incremental copy of disks over an image.
      expect(target).toEqual({ driver: "libvirt", uri: "qemu+tls://dst/system#poolpath=%2Fpool", vmId: A });
      expect(sim.commands).toContainEqual(["domuuid", "berth-web"]);
      expect(sim.commands).toContainEqual(["vol-create-as", "vms", `${A}.qcow2`, "10G", "--format", "qcow2"]);
      expect(await driver.prepareIncoming(spec())).toEqual(target);
      await driver.abortMigration(A);
      expect(sim.volumes.size).toBe(0);
    });

    it("prepareIncoming refuses a name taken by another uuid", async () => {
      const { driver } = setup();
      await driver.define(spec({ vmId: B }));
      await expect(driver.prepareIncoming(spec())).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
    });

    it("prepareIncoming carries migrationDataUri in the target; migrateOut passes it as --migrateuri", async () => {
      const sim = new SimVirsh();
      const driver = new LibvirtDriver({ runner: sim.runner, storagePool: "vms", migrationDataUri: "tcp://10.0.0.5:49152" });
      const target = await driver.prepareIncoming(spec());
      expect(target.uri).toBe("qemu:///system#migrateuri=tcp%3A%2F%2F10.0.0.5%3A49152&poolpath=%2Fpool");
      await driver.abortMigration(A);
      await driver.define(spec());
      await driver.start(A);
      sim.commands.length = 0;
      await driver.migrateOut(A, target);
      expect(sim.commands).toContainEqual(["migrate", "--live", "--p2p", "--persistent", "--undefinesource", "--copy-storage-all", "berth-web", "qemu:///system", "--migrateuri", "tcp://10.0.0.5:49152"]);
    });

    it("migrateOut does not copy a volume of a shared pool (netfs), and keeps it", async () => {
      const { sim, driver } = setup();
      sim.poolType = "netfs";
      await driver.define(spec());
      await driver.start(A);
      await driver.migrateOut(A, { driver: "libvirt", uri: "qemu+ssh://dst/system", vmId: A });
      expect(sim.commands).toContainEqual(["migrate", "--live", "--p2p", "--persistent", "--undefinesource", "berth-web", "qemu+ssh://dst/system"]);
      expect(sim.volumes.size).toBe(1);
    });

    it("migrateOut runs virsh migrate --live --p2p --persistent --undefinesource --copy-storage-all, then drops the local volume", async () => {
      const { sim, driver } = setup();
      await driver.define(spec());
      await driver.start(A);
      sim.commands.length = 0;
      await driver.migrateOut(A, { driver: "libvirt", uri: "qemu+ssh://dst/system", vmId: A });
      expect(sim.commands).toContainEqual(["migrate", "--live", "--p2p", "--persistent", "--undefinesource", "--copy-storage-all", "berth-web", "qemu+ssh://dst/system"]);
      expect(sim.volumes.size).toBe(0);
      // Already gone: success, nothing run but the lookup.
      sim.commands.length = 0;
      await driver.migrateOut(A, { driver: "libvirt", uri: "qemu+ssh://dst/system", vmId: A });
      expect(names(sim)).toEqual(["dumpxml", "domstats"]);
    });

    it("migrateOut of a diskless domain does not copy storage", async () => {
      const { sim, driver } = setup();
      await driver.define(spec({ resources: { vcpus: 1, memoryMib: 64, diskGib: 0 } }));
      await driver.start(A);
      await driver.migrateOut(A, { driver: "libvirt", uri: "qemu+ssh://dst/system", vmId: A }, { timeoutMs: 1000 });
      expect(sim.commands).toContainEqual(["migrate", "--live", "--p2p", "--persistent", "--undefinesource", "berth-web", "qemu+ssh://dst/system"]);
    });

    it("migrateOut refuses other drivers' targets and shut-off domains; on failure the domain stays", async () => {
      const { sim, driver } = setup();
      await driver.define(spec());
      await expect(driver.migrateOut(A, { driver: "fake", uri: "file:///x", vmId: A })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", field: "target.driver" });
      await expect(driver.migrateOut(A, { driver: "libvirt", uri: "qemu:///x", vmId: B })).rejects.toMatchObject({ field: "target.vm_id" });
      await expect(driver.migrateOut(A, { driver: "libvirt", uri: "qemu:///x#y", vmId: A })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", field: "target.uri" });
      await expect(driver.migrateOut(A, { driver: "libvirt", uri: "qemu:///x", vmId: A }, { progressIntervalMs: 0 })).rejects.toMatchObject({ field: "progress_interval_ms" });
      await expect(driver.migrateOut(A, { driver: "libvirt", uri: "qemu:///x", vmId: A })).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
      await driver.start(A);
      sim.failures.set("migrate", "operation failed: migration out job: unexpectedly failed");
      await expect(driver.migrateOut(A, { driver: "libvirt", uri: "qemu:///x", vmId: A })).rejects.toMatchObject({ code: "INTERNAL" });
      expect(sim.domains.has(A)).toBe(true);
      expect(sim.volumes.size).toBe(1);
    });

    it("finishIncoming makes the domain persistent and running with the generation; NOT_FOUND if nothing arrived", async () => {
      const { sim, driver } = setup();
      await expect(driver.finishIncoming(A, 4)).rejects.toMatchObject({ code: "NOT_FOUND" });
      await driver.define(spec());
      sim.domains.get(A)!.persistent = false;
      sim.domains.get(A)!.state = 3; // paused, as an incoming domain may be
      sim.commands.length = 0;
      const domain = await driver.finishIncoming(A, 4);
      expect(domain.state).toBe(DomainState.DOMAIN_STATE_RUNNING);
      expect(domain.generation).toBe(4);
      expect(names(sim)).toEqual(["dumpxml", "domstats", "dominfo", "dumpxml", "define", "resume", "dumpxml", "domstats", "metadata"]);
      expect(sim.commands).toContainEqual(["dumpxml", "--inactive", "--migratable", A]);
    });

    it("finishIncoming refuses a domain still arriving (paused: migrating) and changes nothing", async () => {
      const { sim, driver } = setup();
      await driver.define(spec());
      Object.assign(sim.domains.get(A)!, { persistent: false, state: 3, reason: 2 });
      sim.commands.length = 0;
      await expect(driver.finishIncoming(A, 4)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/still arriving/) });
      expect(names(sim)).toEqual(["dumpxml", "domstats"]);
    });

    it("abortMigration on the source aborts the job (no job is fine) and keeps the domain", async () => {
      const { sim, driver } = setup();
      await driver.define(spec());
      await driver.start(A);
      await driver.abortMigration(A);
      expect(sim.commands).toContainEqual(["domjobabort", A]);
      expect(sim.domains.has(A)).toBe(true);
      expect(sim.volumes.size).toBe(1);
    });

    describe("abortMigration on a destination whose domain is still arriving (paused: migrating)", () => {
      /** prepareIncoming, then the domain arriving: paused (reason migrating), transient. */
      const arrivingHere = async () => {
        const sim = new SimVirsh();
        const driver = new LibvirtDriver({ runner: sim.runner, storagePool: "vms" }, { abortTimeoutMs: 2_000 });
        await driver.prepareIncoming(spec());
        await driver.define(spec());
        Object.assign(sim.domains.get(A)!, { persistent: false, state: 3, reason: 2 });
        sim.commands.length = 0;
        return { sim, driver };
      };

      it("waits until the source's abort has removed it, then deletes the prepared volume (no domjobabort: libvirt cannot abort an incoming migration)", async () => {
        const { sim, driver } = await arrivingHere();
        setTimeout(() => sim.domains.delete(A), 300);
        await driver.abortMigration(A);
        expect(sim.domains.has(A)).toBe(false);
        expect(sim.volumes.size).toBe(0);
        expect(names(sim)).not.toContain("domjobabort");
        expect(names(sim)).not.toContain("destroy");
      });

      it("also waits out the moment its transient domain is shut off but not yet removed", async () => {
        const { sim, driver } = await arrivingHere();
        setTimeout(() => Object.assign(sim.domains.get(A)!, { state: 5, reason: 5 }), 200);
        setTimeout(() => sim.domains.delete(A), 600);
        await driver.abortMigration(A);
        expect(sim.domains.has(A)).toBe(false);
        expect(sim.volumes.size).toBe(0);
      });

      it("keeps a domain that arrived meanwhile (the switchover won), volume and all", async () => {
        const { sim, driver } = await arrivingHere();
        setTimeout(() => Object.assign(sim.domains.get(A)!, { persistent: true, state: 1, reason: 1 }), 300);
        await driver.abortMigration(A);
        expect(sim.domains.get(A)?.state).toBe(1);
        expect(sim.volumes.size).toBe(1);
        expect(names(sim)).not.toContain("destroy");
      });

      it("still arriving at the abort's time limit: FAILED_PRECONDITION, nothing removed", async () => {
        const { sim, driver } = await arrivingHere();
        await expect(driver.abortMigration(A)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/still arriving/) });
        expect(sim.domains.has(A)).toBe(true);
        expect(sim.volumes.size).toBe(1);
        expect(names(sim)).not.toContain("domjobabort");
      });
    });
  });

  it("turns the event stream into DriverEvents: prefix filter, name → vmId, spurious resume dropped, outage reported", async () => {
    class FakeStream extends EventEmitter implements EventProcess {
      readonly stdout = new PassThrough();
      readonly stderr = new PassThrough();
      kill(): boolean {
        setImmediate(() => this.end(null));
        return true;
      }
      end(code: number | null): void {
        this.stdout.end();
        this.stderr.end();
        this.emit("close", code, null);
      }
    }
    const sim = new SimVirsh();
    const streams: FakeStream[] = [];
    const driver = new LibvirtDriver({ runner: sim.runner }, { spawnEvents: () => { const p = new FakeStream(); streams.push(p); return p; }, eventBackoffMs: { initial: 5, max: 10 } });
    await driver.define(spec());
    const events: DriverEvent[] = [];
    const unsubscribe = driver.subscribe((e) => events.push(e));
    expect(streams).toHaveLength(1);
    const line = (domain: string, detail: string): void => void streams[0]!.stdout.write(`event 'lifecycle' for domain '${domain}': ${detail}\n`);
    line("other-vm", "Started Booted");
    line("berth-web", "Resumed Unpaused");
    sim.domains.get(A)!.state = 1;
    line("berth-web", "Started Booted");
    await vi.waitFor(() => expect(events).toHaveLength(1));
    expect(events[0]).toMatchObject({ type: "domain", vmId: A, kind: "started", domain: { state: DomainState.DOMAIN_STATE_RUNNING } });
    sim.domains.get(A)!.state = 5;
    sim.domains.get(A)!.reason = 3;
    line("berth-web", "Stopped Failed");
    await vi.waitFor(() => expect(events).toHaveLength(2));
    expect(events[1]).toMatchObject({ kind: "crashed", domain: { state: DomainState.DOMAIN_STATE_CRASHED } });
    sim.domains.delete(A);
    line("berth-web", "Undefined Removed");
    await vi.waitFor(() => expect(events).toHaveLength(3));
    expect(events[2]).toEqual({ type: "domain", vmId: A, kind: "undefined", domain: undefined });

    sim.failures.set("uri", "failed to connect to the hypervisor");
    streams[0]!.stderr.write("error: Disconnected from qemu:///system due to end of file\n");
    streams[0]!.end(1);
    await vi.waitFor(() => expect(events).toHaveLength(4));
    expect(events[3]).toMatchObject({ type: "health", health: { available: false } });
    sim.failures.delete("uri");
    await vi.waitFor(() => expect(events).toHaveLength(5), { timeout: 3_000 });
    expect(events[4]).toEqual({ type: "health", health: { available: true, message: "" } });
    unsubscribe();
    await driver.close();
  });

  it("close refuses further calls", async () => {
    const { driver } = setup();
    await driver.close();
    await driver.close();
    await expect(driver.list()).rejects.toMatchObject({ code: "HYPERVISOR_UNAVAILABLE" });
    expect((await driver.health()).available).toBe(false);
  });
});

describe("LibvirtDriver: fencing (simulated virsh)", () => {
  const dirs: string[] = [];
  const tempDir = (): string => {
    const d = mkdtempSync(path.join(tmpdir(), "berth-libvirt-wd-"));
    dirs.push(d);
    return d;
  };
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const destroyed = (sim: SimVirsh): string[] => sim.commands.filter((c) => c[0] === "destroy").map((c) => c[1]!);
  /** A fence domain A and a plain domain B, both running. */
  async function twoRunning(driver: LibvirtDriver): Promise<void> {
    await driver.define(spec({ fence: true }));
    await driver.define(spec({ vmId: B, name: "db" }));
    await driver.start(A);
    await driver.start(B);
  }
  const states = async (driver: LibvirtDriver): Promise<Record<string, DomainState>> =>
    Object.fromEntries((await driver.list()).map((d) => [d.vmId, d.state]));
  const { DOMAIN_STATE_RUNNING: RUNNING, DOMAIN_STATE_SHUTOFF: SHUTOFF } = DomainState;

  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("records fence in the metadata: define → list, and setGeneration keeps it", async () => {
    const { sim, driver } = setup();
    expect((await driver.define(spec({ fence: true }))).fence).toBe(true);
    expect(sim.domains.get(A)!.xml).toContain(`fence="true"`);
    await driver.setGeneration(A, 2);
    expect(sim.commands.at(-1)).toContain(`<vm id="${A}" name="web" generation="2" disk-gib="10" fence="true"/>`);
    expect(await driver.list()).toMatchObject([{ vmId: A, fence: true, generation: 2 }]);
    await expect(driver.define(spec({ vmId: B, fence: "yes" as unknown as boolean }))).rejects.toMatchObject({ field: "domain.fence" });
  });

  it("timer mode: destroys the fence domains when the deadline passes, without a call; the others run on", async () => {
    const { sim, driver } = setup();
    await twoRunning(driver);
    expect(await driver.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: 0 });
    const deadline = Date.now() + 150;
    await driver.setWatchdog(deadline);
    await driver.setWatchdog(deadline); // idempotent
    expect(await driver.watchdog()).toEqual({ deadlineMs: deadline, firedAtMs: 0 });
    await vi.waitFor(() => expect(destroyed(sim)).toEqual([A]), { timeout: 2_000 });
    expect(Date.now()).toBeGreaterThanOrEqual(deadline);
    expect(await driver.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: deadline });
    expect(await states(driver)).toEqual({ [A]: SHUTOFF, [B]: RUNNING });
    // Moving the deadline afterwards powers nothing back on (and forgets the fire); a start works as usual.
    await driver.setWatchdog(Date.now() + 60_000);
    expect((await states(driver))[A]).toBe(SHUTOFF);
    expect((await driver.start(A)).state).toBe(RUNNING);
    await driver.clearWatchdog();
    expect(await driver.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: 0 });
    await driver.close();
  });

  it("clearWatchdog disarms: nothing is destroyed", async () => {
    const { sim, driver } = setup();
    await twoRunning(driver);
    await driver.setWatchdog(Date.now() + 100);
    await driver.clearWatchdog();
    await driver.clearWatchdog();
    await sleep(250);
    expect(destroyed(sim)).toEqual([]);
    expect(await driver.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: 0 });
    await driver.close();
  });

  it("a deadline in the past fires at once; an operation never runs before a due fence", async () => {
    const { sim, driver } = setup();
    await twoRunning(driver);
    await expect(driver.setWatchdog(0)).rejects.toMatchObject({ code: "INVALID_ARGUMENT", field: "watchdog.deadline_ms" });
    await driver.setWatchdog(Date.now() - 1);
    expect(await states(driver)).toEqual({ [A]: SHUTOFF, [B]: RUNNING });
    expect(destroyed(sim)).toEqual([A]);
    await driver.close();
  });

  it("keeps the watchdog in its state file: a driver opened after the deadline fences before anything else", async () => {
    const file = path.join(tempDir(), "watchdog.json");
    const sim = new SimVirsh();
    const first = setup({ watchdogStateFile: file }, sim).driver;
    await twoRunning(first);
    const deadline = Date.now() + 100;
    await first.setWatchdog(deadline);
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual({ format: "berth-libvirt-watchdog/v1", deadlineMs: deadline, firedAtMs: 0, fencePending: false });
    await first.close(); // the agent stops (or is killed) before the deadline: its timer is gone
    await sleep(150);
    expect(destroyed(sim)).toEqual([]);

    const second = await LibvirtDriver.open({ storagePool: "vms", runner: sim.runner, watchdogStateFile: file });
    expect(destroyed(sim)).toEqual([A]);
    expect(await second.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: deadline });
    expect(JSON.parse(readFileSync(file, "utf8"))).toMatchObject({ deadlineMs: 0, firedAtMs: deadline, fencePending: false });
    expect(await states(second)).toEqual({ [A]: SHUTOFF, [B]: RUNNING });
    await second.close();
  });

  it("a fence libvirtd refuses stays pending: operations fail until it succeeds (retried on a timer), and it is persisted", async () => {
    const file = path.join(tempDir(), "watchdog.json");
    const { sim, driver } = setup({ watchdogStateFile: file });
    await twoRunning(driver);
    sim.failures.set("list", "failed to connect to the hypervisor");
    await driver.setWatchdog(Date.now() - 1);
    await expect(driver.start(B)).rejects.toMatchObject({ code: "HYPERVISOR_UNAVAILABLE" });
    await driver.setWatchdog(Date.now() + 60_000);
    expect(JSON.parse(readFileSync(file, "utf8"))).toMatchObject({ fencePending: true });
    sim.failures.delete("list");
    await vi.waitFor(() => expect(destroyed(sim)).toEqual([A]), { timeout: 2_000 });
    await vi.waitFor(() => expect(JSON.parse(readFileSync(file, "utf8"))).toMatchObject({ fencePending: false }));
    expect(await states(driver)).toEqual({ [A]: SHUTOFF, [B]: RUNNING });
    await driver.close();
  });

  it("refuses an unreadable state file, naming it", () => {
    const file = path.join(tempDir(), "watchdog.json");
    writeFileSync(file, "{ torn");
    expect(() => setup({ watchdogStateFile: file })).toThrow(/^libvirt\.watchdog_state_file: .*not valid JSON/);
  });

  it("device mode: opened at the first pet, a write per pet, the magic 'V' on clear; never created", async () => {
    const dir = tempDir();
    const device = path.join(dir, "watchdog"); // a plain file standing in for /dev/watchdog
    writeFileSync(device, "");
    const { driver } = setup({ watchdogDevice: device });
    await twoRunning(driver);
    expect(readFileSync(device, "utf8")).toBe("");
    await driver.setWatchdog(Date.now() + 60_000);
    await driver.setWatchdog(Date.now() + 60_000);
    expect(readFileSync(device, "utf8")).toBe("11");
    await driver.clearWatchdog();
    await driver.clearWatchdog();
    expect(readFileSync(device, "utf8")).toBe("11V");
    // Armed again: opened again (writing from the start of the stand-in file). close() leaves it
    // armed: no magic character.
    writeFileSync(device, "");
    await driver.setWatchdog(Date.now() + 60_000);
    await driver.close();
    expect(readFileSync(device, "utf8")).toBe("1");

    const missing = setup({ watchdogDevice: path.join(dir, "no-such-device") });
    await expect(missing.driver.setWatchdog(Date.now() + 60_000)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", field: "libvirt.watchdog_device" });
    expect(existsSync(path.join(dir, "no-such-device"))).toBe(false);
    // The timer is armed all the same.
    expect((await missing.driver.watchdog()).deadlineMs).toBeGreaterThan(0);
    await missing.driver.close();
  });

  it("device mode: a fired watchdog is not petted while its fence is unconfirmed", async () => {
    const device = path.join(tempDir(), "watchdog");
    writeFileSync(device, "");
    const { sim, driver } = setup({ watchdogDevice: device });
    await twoRunning(driver);
    await driver.setWatchdog(Date.now() + 60_000);
    sim.failures.set("list", "failed to connect to the hypervisor");
    await driver.setWatchdog(Date.now() - 1);
    await driver.setWatchdog(Date.now() + 60_000);
    await driver.clearWatchdog();
    expect(readFileSync(device, "utf8")).toBe("1"); // no pet, no magic close: the kernel resets the host
    sim.failures.delete("list");
    await vi.waitFor(() => expect(destroyed(sim)).toEqual([A]), { timeout: 2_000 });
    await driver.close();
  });
});
