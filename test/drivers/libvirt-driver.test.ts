// The libvirt driver against the real libvirtd: lifecycle, inventory, events, a killed qemu, a
// libvirtd restart. Skipped with a printed reason where there is no libvirt (or we are not root);
// under CI that is a failure. Every domain and volume made here carries a per-run prefix and is
// removed in afterAll, even when a test fails.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { DomainState } from "@berth/api";
import { LibvirtDriver, type DomainSpec, type DriverEvent } from "@berth/hypervisor";
import { describeWithLibvirt, killQemu, qemuPid, removeDomains, startLibvirtd, stopLibvirtd } from "../support/libvirt.js";

const PREFIX = `berth-t${process.pid}-${randomUUID().slice(0, 6)}-`;
const made: string[] = [];

await describeWithLibvirt("LibvirtDriver on a real libvirtd", (target) => {
  let driver: LibvirtDriver;
  const events: DriverEvent[] = [];
  let unsubscribe: () => void = () => undefined;

  const open = (): LibvirtDriver =>
    new LibvirtDriver({ uri: target.uri, storagePool: target.storagePool, domainType: target.domainType, namePrefix: PREFIX, commandTimeoutMs: 30_000 });

  const spec = (name: string, diskGib = 1): DomainSpec => {
    const vmId = randomUUID();
    made.push(vmId);
    return { vmId, name, generation: 1, resources: { vcpus: 1, memoryMib: 64, diskGib } };
  };

  const domainEvents = (vmId: string): string[] => events.flatMap((e) => (e.type === "domain" && e.vmId === vmId ? [e.kind] : []));

  beforeAll(() => {
    driver = open();
    unsubscribe = driver.subscribe((e) => events.push(e));
  });

  afterAll(async () => {
    unsubscribe();
    await driver?.close();
    await startLibvirtd().catch(() => undefined); // in case a test failed while it was stopped
    await removeDomains(PREFIX, target.storagePool, made.map((id) => `${id}.qcow2`));
  });

  it("reports host facts and health", async () => {
    const facts = await driver.hostFacts();
    expect(facts.driver).toBe("libvirt");
    expect(facts.capacity.vcpus).toBeGreaterThan(0);
    expect(facts.capacity.memoryMib).toBeGreaterThan(0);
    expect(facts.hypervisorVersion).toMatch(/libvirt \d+/);
    expect(await driver.health()).toEqual({ available: true, message: "" });
  });

  it("define → start → graceful stop (falls back to destroy) → start → delete, with events", async () => {
    const s = spec("life");
    const defined = await driver.define(s);
    expect(defined).toEqual({ vmId: s.vmId, name: "life", state: DomainState.DOMAIN_STATE_SHUTOFF, generation: 1, resources: s.resources });
    expect(await driver.define(s)).toEqual(defined);
    await expect(driver.define({ ...s, vmId: randomUUID() })).rejects.toMatchObject({ code: "ALREADY_EXISTS" });

    expect((await driver.start(s.vmId)).state).toBe(DomainState.DOMAIN_STATE_RUNNING);
    expect((await driver.start(s.vmId)).state).toBe(DomainState.DOMAIN_STATE_RUNNING);
    expect(qemuPid(`${PREFIX}life`)).toBeGreaterThan(0);
    await expect(driver.undefine(s.vmId)).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    const stats = await driver.stats(s.vmId);
    expect(stats.state).toBe(DomainState.DOMAIN_STATE_RUNNING);
    expect(stats.cpuTimeNs).toBeGreaterThan(0);

    // No guest OS: nothing answers ACPI, so the stop powers off after timeoutMs.
    const started = Date.now();
    expect((await driver.stop(s.vmId, { force: false, timeoutMs: 500 })).state).toBe(DomainState.DOMAIN_STATE_SHUTOFF);
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
    expect((await driver.stop(s.vmId, { force: false, timeoutMs: 500 })).state).toBe(DomainState.DOMAIN_STATE_SHUTOFF);

    expect((await driver.start(s.vmId)).state).toBe(DomainState.DOMAIN_STATE_RUNNING);
    expect((await driver.setGeneration(s.vmId, 7)).generation).toBe(7);

    // A new driver (an agent restart) finds the domain, its state and generation.
    const again = open();
    const listed = (await again.list()).find((d) => d.vmId === s.vmId);
    await again.close();
    expect(listed).toEqual({ ...defined, state: DomainState.DOMAIN_STATE_RUNNING, generation: 7 });

    await driver.delete(s.vmId);
    await driver.delete(s.vmId);
    expect((await driver.list()).some((d) => d.vmId === s.vmId)).toBe(false);
    await expect(driver.start(s.vmId)).rejects.toMatchObject({ code: "NOT_FOUND" });

    await vi.waitFor(() => expect(domainEvents(s.vmId)).toContain("undefined"), { timeout: 5_000 });
    const kinds = domainEvents(s.vmId);
    expect(kinds[0]).toBe("defined");
    expect(kinds.filter((k) => k === "started")).toHaveLength(2);
    expect(kinds).toContain("stopped");
    expect(kinds).not.toContain("resumed"); // libvirt's "Resumed Unpaused" on every start is not a resume
    const startedEvent = events.find((e) => e.type === "domain" && e.vmId === s.vmId && e.kind === "started");
    expect(startedEvent?.type === "domain" && startedEvent.domain?.name).toBe("life");
  });

  it("a killed qemu is CRASHED, reported as a crashed event", async () => {
    const s = spec("crash", 0);
    await driver.define(s);
    await driver.start(s.vmId);
    await killQemu(`${PREFIX}crash`);
    await vi.waitFor(() => expect(domainEvents(s.vmId)).toContain("crashed"), { timeout: 5_000 });
    expect((await driver.list()).find((d) => d.vmId === s.vmId)?.state).toBe(DomainState.DOMAIN_STATE_CRASHED);
    expect((await driver.start(s.vmId)).state).toBe(DomainState.DOMAIN_STATE_RUNNING);
    await driver.delete(s.vmId);
  });

  it("follows libvirtd through a restart: health events, running domains survive", async () => {
    const s = spec("survivor", 0);
    await driver.define(s);
    await driver.start(s.vmId);
    const pid = qemuPid(`${PREFIX}survivor`);
    const healthEvents = (): boolean[] => events.flatMap((e) => (e.type === "health" ? [e.health.available] : []));
    const before = healthEvents().length;
    await stopLibvirtd();
    try {
      await vi.waitFor(() => expect(healthEvents().slice(before)).toContain(false), { timeout: 5_000 });
      expect((await driver.health()).available).toBe(false);
      await expect(driver.list()).rejects.toMatchObject({ code: "HYPERVISOR_UNAVAILABLE" });
    } finally {
      await startLibvirtd();
    }
    await vi.waitFor(() => expect(healthEvents().slice(before)).toEqual([false, true]), { timeout: 10_000 });
    expect(qemuPid(`${PREFIX}survivor`)).toBe(pid);
    expect((await driver.list()).find((d) => d.vmId === s.vmId)?.state).toBe(DomainState.DOMAIN_STATE_RUNNING);
    // The stream is back: a new event arrives.
    await driver.stop(s.vmId, { force: true });
    await vi.waitFor(() => expect(domainEvents(s.vmId)).toContain("stopped"), { timeout: 5_000 });
    await driver.delete(s.vmId);
  }, 60_000);
});
