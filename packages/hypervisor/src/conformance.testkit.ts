// The one HypervisorDriver conformance suite, run identically against the fake and libvirt.
// Excluded from the build; imported by tests only.
import { randomUUID } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DomainState, type Domain, type ImageRef, type VolumeRef } from "@berth/api";
import { BerthError, ErrorCode, nicMacAddress } from "@berth/core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ConsoleConnection, ConsoleEnd, DomainSpec, DriverEvent, HypervisorDriver, MigrationProgress } from "./driver.js";

/** An image file the harness gives the image cases (see `DriverHarness.imageFile`). */
export interface HarnessImageFile {
  /** Absolute path the driver can read (the cases also pass it as a file:// URL). */
  path: string;
  format: "qcow2" | "raw";
  /** The size a disk over it must have at least: qcow2's header states it; raw: the file's size. */
  virtualSizeBytes: number;
  /** Lower-case hex SHA-256 of the file. */
  sha256: string;
}

/** What a driver's test setup gives the conformance suite. */
export interface DriverHarness {
  /**
   * Opens a driver on this host's state: a fresh host the first time, the same host after (an agent
   * restart) — its domains and its watchdog (libvirt: the same `watchdogStateFile`).
   */
  open(): Promise<HypervisorDriver>;
  /** Kills the domain's process behind the driver's back, as an OOM kill or a qemu crash would. */
  killDomainProcess(driver: HypervisorDriver, vmId: string): Promise<void>;
  /** An id of the domain's running incarnation (libvirt: qemu pid); it changes iff the domain was (re)started. */
  incarnation(driver: HypervisorDriver, vmId: string): Promise<string>;
  /** Makes the hypervisor stop answering (libvirt: stop libvirtd) until `startHypervisor`. Domains keep running. */
  stopHypervisor(driver: HypervisorDriver): Promise<void>;
  startHypervisor(driver: HypervisorDriver): Promise<void>;
  /** Removes every domain and volume the suite made (on the peer too). */
  cleanup(): Promise<void>;
  /**
   * Opens a driver on a second host of the same kind, the destination of the migration cases: a
   * fresh host the first time, the same host after (a restart of its agent). Without it the
   * migration cases are skipped (reported as such).
   */
  openPeer?(): Promise<HypervisorDriver>;
  /**
   * Makes the domain's live migration not converge (its guest dirties memory faster than the
   * migration sends it), for the abort and timeout cases; they are skipped without it. Called on
   * the running domain (with a `stallDiskGib` disk), before `prepareIncoming`.
   */
  stallMigration?(driver: HypervisorDriver, vmId: string): Promise<void>;
  /**
   * The disk (GiB) of the domains those two cases migrate. Default 0 (none): the suite's small
   * diskless domain. For a harness that stalls a migration by throttling it, which needs data to
   * send (libvirt: an idle guest's memory is mostly zero pages, cheap at any bandwidth; its disk
   * is copied with the migration at the throttled rate).
   */
  stallDiskGib?: number;
  /**
   * A small image file for the image cases (skipped without it), called once: the fake's harness
   * writes a qcow2 header of a virtual size above 1 GiB (so a too-small disk can be refused);
   * libvirt's gives a real tiny bootable image, which the console output case then boots. Images the
   * suite makes have ids `conf-<run>-img-<n>`; `cleanup` may remove them (the contract has no delete).
   */
  imageFile?(): Promise<HarnessImageFile>;
  /** A network of the host's `listNetworks()` NICs can be on, active; the NIC cases are skipped without it. */
  networkName?: string;
  /**
   * What to type on a running domain's console and what must come back within `settleMs` (sent
   * again every second until then), for the console output case (skipped without it): the fake's
   * echo; on libvirt a shell's `echo` once the domain has booted `imageFile`'s image.
   */
  consoleProbe?: { send: string; expect: RegExp };
}

export interface ConformanceOptions {
  /** Per-test time limit; a real hypervisor boots and stops processes. Default 60 s. */
  testTimeoutMs?: number;
  /** How long to wait for an event or a state the hypervisor reaches on its own. Default 15 s. */
  settleMs?: number;
}

const { RUNNING, SHUTOFF, CRASHED } = {
  RUNNING: DomainState.DOMAIN_STATE_RUNNING,
  SHUTOFF: DomainState.DOMAIN_STATE_SHUTOFF,
  CRASHED: DomainState.DOMAIN_STATE_CRASHED,
};

/**
 * Registers the conformance suite for one driver. The harness is made once (a real hypervisor is
 * slow to set up); every test uses fresh VM ids and names and deletes what it defined, so tests
 * never depend on each other or on an empty host.
 */
export function describeDriverConformance(name: string, makeHarness: () => Promise<DriverHarness>, options: ConformanceOptions = {}): void {
  const testTimeoutMs = options.testTimeoutMs ?? 60_000;
  const settleMs = options.settleMs ?? 15_000;

  describe(`HypervisorDriver conformance: ${name}`, { timeout: testTimeoutMs }, () => {
    const run = Date.now().toString(36).slice(-5);
    let seq = 0;
    let harness: DriverHarness;
    let driver: HypervisorDriver;
    const made = new Set<string>();
    /** Data volumes the cases made, deleted after each case (on the peer too). */
    const madeVolumes = new Set<string>();
    /** Console sessions the cases opened, closed after each case. */
    const consoles = new Set<ConsoleConnection>();
    const events: DriverEvent[] = [];
    let unsubscribe: () => void = () => undefined;
    /** The second host (migration cases), opened by the first case that needs it. */
    let peer: HypervisorDriver | undefined;

    const follow = (d: HypervisorDriver): void => {
      unsubscribe();
      unsubscribe = d.subscribe((e) => events.push(e));
    };
    const spec = (over: Partial<DomainSpec> = {}): DomainSpec => {
      const s: DomainSpec = {
        vmId: randomUUID(),
        name: `conf-${run}-${++seq}`,
        resources: { vcpus: 1, memoryMib: 64, diskGib: 0 },
        generation: 1,
        ...over,
      };
      made.add(s.vmId);
      return s;
    };
    const find = async (vmId: string): Promise<Domain | undefined> => (await driver.list()).find((d) => d.vmId === vmId);
    const eventually = async <T>(what: string, probe: () => Promise<T | undefined>): Promise<T> => {
      const deadline = Date.now() + settleMs;
      let last: unknown;
      let lookedAfterDeadline = false;
      for (;;) {
        try {
          const v = await probe();
          if (v !== undefined) return v;
        } catch (e) {
          last = e;
        }
        // The verdict needs a look taken after a pause begun past the deadline: a process stalled
        // for longer than settleMs wakes with this loop's timer due before the driver's own (a
        // watchdog's), and must let that one run before it calls the wait failed.
        if (lookedAfterDeadline) throw new Error(`timed out after ${settleMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ""}`);
        lookedAfterDeadline = Date.now() > deadline;
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const domainEvent = (vmId: string, kind: string) => (e: DriverEvent) => e.type === "domain" && e.vmId === vmId && e.kind === kind;
    const waitForEvent = (what: string, pred: (e: DriverEvent) => boolean, from = 0): Promise<DriverEvent> =>
      eventually(what, async () => events.slice(from).find(pred));
    const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
    /** A fence domain and a plain one, both running. */
    const fenceAndPlain = async (): Promise<{ f: DomainSpec; o: DomainSpec }> => {
      const f = spec({ fence: true });
      const o = spec();
      expect((await driver.define(f)).fence).toBe(true);
      expect((await driver.define(o)).fence).toBe(false);
      await driver.start(f.vmId);
      await driver.start(o.vmId);
      return { f, o };
    };
    const codeOf = async (p: Promise<unknown>): Promise<string> => {
      try {
        await p;
        return "ok";
      } catch (e) {
        if (e instanceof BerthError) return e.code;
        throw e;
      }
    };

    beforeAll(async () => {
      harness = await makeHarness();
      driver = await harness.open();
      follow(driver);
    }, 120_000);

    afterEach(async () => {
      // The watchdog outlives a test (it is the host's): disarm it before the next one.
      await driver.clearWatchdog().catch(() => undefined);
      for (const vmId of made) {
        await driver.abortMigration(vmId).catch(() => undefined);
        await driver.delete(vmId).catch(() => undefined);
        if (peer) {
          await peer.abortMigration(vmId).catch(() => undefined);
          await peer.delete(vmId).catch(() => undefined);
        }
      }
      made.clear();
      for (const c of consoles) c.close();
      consoles.clear();
      for (const id of madeVolumes) {
        await driver.deleteVolume(id).catch(() => undefined);
        if (peer) await peer.deleteVolume(id).catch(() => undefined);
      }
      madeVolumes.clear();
      events.length = 0;
    });

    afterAll(async () => {
      unsubscribe();
      await driver?.close();
      await peer?.close();
      await harness?.cleanup();
    }, 120_000);

    it("reports the host's facts", async () => {
      const facts = await driver.hostFacts();
      expect(facts.driver).toBe(driver.kind);
      expect(facts.capacity.vcpus).toBeGreaterThanOrEqual(1);
      expect(facts.capacity.memoryMib).toBeGreaterThanOrEqual(64);
      expect(facts.capacity.diskGib).toBeGreaterThanOrEqual(0);
      expect(facts.cpuModel.length).toBeGreaterThan(0);
      expect(facts.hypervisorVersion.length).toBeGreaterThan(0);
      for (const cell of facts.numaCells) {
        expect(cell.cpus).toBeGreaterThanOrEqual(1);
        expect(cell.memoryMib).toBeGreaterThan(0);
      }
      expect(await driver.health()).toEqual({ available: true, message: "" });
    });

    it("defines a domain once: shut off, with its generation, listed, and a 'defined' event", async () => {
      const s = spec({ generation: 3 });
      const defined = await driver.define(s);
      expect(defined).toMatchObject({ vmId: s.vmId, state: SHUTOFF, generation: 3, resources: s.resources });
      // Idempotent: a resend (even a later generation's) finds the domain as it is.
      expect(await driver.define({ ...s, generation: 4 })).toMatchObject({ vmId: s.vmId, generation: 3 });
      const listed = (await driver.list()).filter((d) => d.vmId === s.vmId);
      expect(listed).toHaveLength(1);
      expect(listed[0]).toMatchObject({ state: SHUTOFF, generation: 3, resources: s.resources });
      await waitForEvent("a 'defined' event", domainEvent(s.vmId, "defined"));
      const all = await driver.list();
      expect(all.map((d) => d.vmId)).toEqual([...all.map((d) => d.vmId)].sort());
    });

    it("defines a domain once under concurrent identical defines", async () => {
      const s = spec();
      const results = await Promise.all([driver.define(s), driver.define(s), driver.define(s)]);
      for (const r of results) expect(r.vmId).toBe(s.vmId);
      expect((await driver.list()).filter((d) => d.vmId === s.vmId)).toHaveLength(1);
    });

    it("walks define → running → stop → start → destroy → delete, every step idempotent, with events", async () => {
      const s = spec();
      await driver.define(s);
      expect((await driver.start(s.vmId)).state).toBe(RUNNING);
      expect((await driver.start(s.vmId)).state).toBe(RUNNING);
      expect((await find(s.vmId))?.state).toBe(RUNNING);
      await waitForEvent("a 'started' event", domainEvent(s.vmId, "started"));

      // Graceful: a guest that does not shut down in time is powered off; either way SHUTOFF.
      const stopped = await driver.stop(s.vmId, { force: false, timeoutMs: 1_000 });
      expect(stopped.state).toBe(SHUTOFF);
      expect((await driver.stop(s.vmId, { force: false, timeoutMs: 1_000 })).state).toBe(SHUTOFF);
      expect((await driver.stop(s.vmId, { force: true })).state).toBe(SHUTOFF);
      await waitForEvent("a 'stopped' event", domainEvent(s.vmId, "stopped"));

      expect((await driver.start(s.vmId)).state).toBe(RUNNING);
      expect((await driver.destroy(s.vmId)).state).toBe(SHUTOFF);
      expect((await driver.destroy(s.vmId)).state).toBe(SHUTOFF);
      expect((await find(s.vmId))?.state).toBe(SHUTOFF);

      await driver.delete(s.vmId);
      await driver.delete(s.vmId);
      expect(await find(s.vmId)).toBeUndefined();
      await waitForEvent("an 'undefined' event", domainEvent(s.vmId, "undefined"));
    });

    it("deletes a running domain in one call", async () => {
      const s = spec();
      await driver.define(s);
      await driver.start(s.vmId);
      await driver.delete(s.vmId);
      expect(await find(s.vmId)).toBeUndefined();
    });

    it("keeps the disk volume apart from the definition: undefine keeps it, deleteVolumes removes it", async () => {
      const s = spec({ resources: { vcpus: 1, memoryMib: 64, diskGib: 1 } });
      await driver.define(s);
      await driver.start(s.vmId);
      expect(await codeOf(driver.undefine(s.vmId))).toBe(ErrorCode.FailedPrecondition);
      expect((await find(s.vmId))?.state).toBe(RUNNING);
      expect(await codeOf(driver.deleteVolumes(s.vmId))).toBe(ErrorCode.FailedPrecondition);
      await driver.destroy(s.vmId);
      await driver.undefine(s.vmId);
      await driver.undefine(s.vmId);
      expect(await find(s.vmId)).toBeUndefined();
      await driver.deleteVolumes(s.vmId);
      await driver.deleteVolumes(s.vmId);
      // Nothing of the old domain is in the way of defining it again.
      expect((await driver.define(s)).state).toBe(SHUTOFF);
    });

    it("records generations and finds running domains after a driver restart, recreating nothing", async () => {
      const a = spec({ generation: 2 });
      const b = spec({ generation: 5 });
      await driver.define(a);
      await driver.start(a.vmId);
      await driver.define(b);
      expect((await driver.setGeneration(a.vmId, 7)).generation).toBe(7);
      expect((await driver.setGeneration(a.vmId, 7)).generation).toBe(7);
      const before = await harness.incarnation(driver, a.vmId);

      unsubscribe();
      await driver.close();
      driver = await harness.open();
      follow(driver);

      expect(await find(a.vmId)).toMatchObject({ state: RUNNING, generation: 7, resources: a.resources });
      expect(await find(b.vmId)).toMatchObject({ state: SHUTOFF, generation: 5 });
      expect(await harness.incarnation(driver, a.vmId)).toBe(before);
      expect((await driver.start(a.vmId)).state).toBe(RUNNING);
      expect((await driver.define(a)).generation).toBe(7);
      expect(await harness.incarnation(driver, a.vmId)).toBe(before);
    });

    it("answers NOT_FOUND for an unknown domain, and success for removing one", async () => {
      const vmId = randomUUID();
      expect(await codeOf(driver.start(vmId))).toBe(ErrorCode.NotFound);
      expect(await codeOf(driver.stop(vmId, { force: true }))).toBe(ErrorCode.NotFound);
      expect(await codeOf(driver.destroy(vmId))).toBe(ErrorCode.NotFound);
      expect(await codeOf(driver.setGeneration(vmId, 1))).toBe(ErrorCode.NotFound);
      expect(await codeOf(driver.stats(vmId))).toBe(ErrorCode.NotFound);
      expect(await codeOf(driver.finishIncoming(vmId, 1))).toBe(ErrorCode.NotFound);
      expect(await codeOf(driver.delete(vmId))).toBe("ok");
      expect(await codeOf(driver.undefine(vmId))).toBe("ok");
      expect(await codeOf(driver.deleteVolumes(vmId))).toBe("ok");
      expect(await codeOf(driver.abortMigration(vmId))).toBe("ok");
    });

    it("refuses bad specs with a typed error naming the problem, leaving nothing defined", async () => {
      const facts = await driver.hostFacts();
      const ids = async (): Promise<string[]> => (await driver.list()).map((d) => d.vmId);
      const before = await ids();
      const refuse = async (s: DomainSpec, code: ErrorCode, message: RegExp): Promise<void> => {
        const e = await driver.define(s).then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(e, `define ${JSON.stringify(s)}`).toBeInstanceOf(BerthError);
        expect((e as BerthError).code).toBe(code);
        expect((e as BerthError).message).toMatch(message);
      };
      await refuse(spec({ vmId: "not-a-uuid" }), ErrorCode.InvalidArgument, /vm_id/);
      await refuse(spec({ resources: { vcpus: 1, memoryMib: 0, diskGib: 0 } }), ErrorCode.InvalidArgument, /memory/);
      await refuse(spec({ resources: { vcpus: 0, memoryMib: 64, diskGib: 0 } }), ErrorCode.InvalidArgument, /vcpus/);
      await refuse(spec({ resources: { vcpus: 1, memoryMib: facts.capacity.memoryMib * 4, diskGib: 0 } }), ErrorCode.ResourceExhausted, /memory/);
      await refuse(spec({ resources: { vcpus: facts.capacity.vcpus * 64, memoryMib: 64, diskGib: 0 } }), ErrorCode.ResourceExhausted, /vcpu/i);
      expect(await ids()).toEqual(before);

      // The same name under another id is another VM: refused, the first one untouched.
      const first = spec();
      await driver.define(first);
      await refuse({ ...spec(), name: first.name }, ErrorCode.AlreadyExists, new RegExp(first.name));
      expect((await ids()).filter((id) => !before.includes(id))).toEqual([first.vmId]);
    });

    it("reports the counters of a running domain, one by one and all at once", async () => {
      const s = spec();
      await driver.define(s);
      await driver.start(s.vmId);
      const stats = await eventually("CPU time to accrue", async () => {
        const st = await driver.stats(s.vmId);
        return st.cpuTimeNs > 0 ? st : undefined;
      });
      expect(stats).toMatchObject({ vmId: s.vmId, state: RUNNING });
      expect(stats.memoryUsedMib).toBeGreaterThan(0);
      expect(stats.memoryUsedMib).toBeLessThanOrEqual(s.resources.memoryMib);
      for (const k of ["diskReadBytes", "diskWriteBytes", "netRxBytes", "netTxBytes"] as const) expect(stats[k]).toBeGreaterThanOrEqual(0);
      // statsAll: every listed domain once, in vmId order, agreeing with stats.
      const off = spec();
      await driver.define(off);
      const all = await driver.statsAll();
      const listed = (await driver.list()).map((d) => d.vmId);
      expect(all.map((x) => x.vmId)).toEqual(listed);
      const mine = all.find((x) => x.vmId === s.vmId)!;
      expect(mine.state).toBe(RUNNING);
      expect(mine.cpuTimeNs).toBeGreaterThanOrEqual(stats.cpuTimeNs);
      expect(all.find((x) => x.vmId === off.vmId)).toMatchObject({ state: SHUTOFF, cpuTimeNs: 0, memoryUsedMib: 0 });
      await driver.destroy(s.vmId);
      expect((await driver.stats(s.vmId)).state).toBe(SHUTOFF);
    });

    it("sees a domain killed behind its back: a 'crashed' event, CRASHED in the inventory, and it starts again", async () => {
      const s = spec();
      await driver.define(s);
      await driver.start(s.vmId);
      const from = events.length;
      await harness.killDomainProcess(driver, s.vmId);
      await waitForEvent("a 'crashed' event", domainEvent(s.vmId, "crashed"), from);
      expect((await find(s.vmId))?.state).toBe(CRASHED);
      expect((await driver.start(s.vmId)).state).toBe(RUNNING);
    });

    it("fences: past the watchdog's deadline the fence domains are off ('stopped'), the others run on; a fired watchdog stays fired", async () => {
      const { f, o } = await fenceAndPlain();
      expect(await find(f.vmId)).toMatchObject({ state: RUNNING, fence: true });
      expect(await find(o.vmId)).toMatchObject({ state: RUNNING, fence: false });
      const from = events.length;
      const deadline = Date.now() + 300;
      await driver.setWatchdog(deadline);
      await driver.setWatchdog(deadline);
      const armed = await driver.watchdog();
      // (On a slow machine the deadline may already have passed by now.)
      if (Date.now() < deadline) expect(armed).toMatchObject({ deadlineMs: deadline });

      // No call is needed for it to fire: the driver's own timer (or the host's device) does it.
      await waitForEvent("a 'stopped' event of the fence domain", domainEvent(f.vmId, "stopped"), from);
      expect(Date.now()).toBeGreaterThanOrEqual(deadline);
      expect((await find(f.vmId))?.state).toBe(SHUTOFF);
      expect((await find(o.vmId))?.state).toBe(RUNNING);
      expect(events.slice(from).some(domainEvent(o.vmId, "stopped"))).toBe(false);
      expect((await driver.watchdog()).firedAtMs).toBe(deadline);

      // Clearing keeps the record of the fire; petting again forgets it, and powers nothing back
      // on; start works as usual.
      await driver.clearWatchdog();
      expect(await driver.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: deadline });
      const next = Date.now() + 60_000;
      await driver.setWatchdog(next);
      expect(await driver.watchdog()).toEqual({ deadlineMs: next, firedAtMs: 0 });
      expect((await find(f.vmId))?.state).toBe(SHUTOFF);
      expect((await driver.start(f.vmId)).state).toBe(RUNNING);
      expect((await find(f.vmId))?.state).toBe(RUNNING);
      await driver.clearWatchdog();
      await driver.clearWatchdog();
      expect(await driver.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: 0 });
    });

    it("does not fence once the watchdog is cleared", async () => {
      const { f } = await fenceAndPlain();
      // Far enough ahead that the clear surely comes first, even on a slow machine.
      const deadline = Date.now() + 1_000;
      await driver.setWatchdog(deadline);
      await driver.clearWatchdog();
      await sleep(deadline + 400 - Date.now());
      expect((await find(f.vmId))?.state).toBe(RUNNING);
      // The pet forgot any earlier fire (another case's), and nothing has fired since.
      expect(await driver.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: 0 });
    });

    it("keeps a fence across a driver restart: opened after the deadline passed, the fence domain is off", async () => {
      const { f, o } = await fenceAndPlain();
      const deadline = Date.now() + 300;
      await driver.setWatchdog(deadline);
      // The agent stops (or is killed) before the deadline; nothing of it runs when it passes.
      unsubscribe();
      await driver.close();
      await sleep(deadline + 200 - Date.now());
      driver = await harness.open();
      follow(driver);
      expect((await find(f.vmId))?.state).toBe(SHUTOFF);
      expect((await find(o.vmId))?.state).toBe(RUNNING);
      expect(await driver.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: deadline });
      expect((await driver.start(f.vmId)).state).toBe(RUNNING);
      // A deadline already passed fires at once, and the call that set it does not hide the fire.
      const past = Date.now() - 1;
      await driver.setWatchdog(past);
      expect((await find(f.vmId))?.state).toBe(SHUTOFF);
      expect((await find(o.vmId))?.state).toBe(RUNNING);
      expect(await driver.watchdog()).toEqual({ deadlineMs: 0, firedAtMs: past });
    });

    it("tells a hypervisor outage apart from the agent's, and follows events again after it", async () => {
      const s = spec();
      await driver.define(s);
      await driver.start(s.vmId);
      const before = await harness.incarnation(driver, s.vmId);
      const from = events.length;

      await harness.stopHypervisor(driver);
      try {
        await eventually("health to go down", async () => ((await driver.health()).available ? undefined : true));
        expect((await driver.health()).message.length).toBeGreaterThan(0);
        await waitForEvent("a health event saying unavailable", (e) => e.type === "health" && !e.health.available, from);
        expect(await codeOf(driver.list())).toBe(ErrorCode.HypervisorUnavailable);
        expect(await codeOf(driver.start(s.vmId))).toBe(ErrorCode.HypervisorUnavailable);
      } finally {
        await harness.startHypervisor(driver);
      }
      await eventually("health to come back", async () => ((await driver.health()).available ? true : undefined));
      await waitForEvent("a health event saying available", (e) => e.type === "health" && e.health.available, from);

      // The domain ran on through the outage, and events flow again.
      expect(await find(s.vmId)).toMatchObject({ state: RUNNING });
      expect(await harness.incarnation(driver, s.vmId)).toBe(before);
      const after = events.length;
      await driver.stop(s.vmId, { force: true });
      await waitForEvent("a 'stopped' event after the outage", domainEvent(s.vmId, "stopped"), after);
    });

    // ---- images (need harness.imageFile) --------------------------------------------------------

    const GIB = 1024 ** 3;
    let imageSeq = 0;
    let imageFile: Promise<HarnessImageFile> | undefined;
    /** The harness's image file, or a skip of the case when it gives none. */
    const needImage = async (ctx: { skip: (note?: string) => never }): Promise<HarnessImageFile> => {
      if (!harness.imageFile) ctx.skip("the harness gives no image file (imageFile)");
      imageFile ??= harness.imageFile!();
      return imageFile;
    };
    /** A reference to a new image (an id never used before) of the file. */
    const imageRef = (file: HarnessImageFile, over: Partial<ImageRef> = {}): ImageRef => {
      const id = `conf-${run}-img-${++imageSeq}`;
      return { id, name: id, source: file.path, format: file.format, sha256: "", ...over };
    };
    /** The smallest disk (GiB) over the image. */
    const diskFor = (file: HarnessImageFile): number => Math.max(1, Math.ceil(file.virtualSizeBytes / GIB));
    const errorOf = async (p: Promise<unknown>): Promise<BerthError> => {
      const e = await p.then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e).toBeInstanceOf(BerthError);
      return e as BerthError;
    };

    it("holds an image once: ensureImage is idempotent, concurrent calls share the fetch, listImages has it", async (ctx) => {
      const file = await needImage(ctx);
      const ref = imageRef(file, { sha256: file.sha256 });
      const [a, b] = await Promise.all([driver.ensureImage(ref), driver.ensureImage(ref)]);
      expect(a).toEqual(b);
      expect(a).toMatchObject({ imageId: ref.id, virtualSizeBytes: file.virtualSizeBytes });
      expect(a.sizeBytes).toBeGreaterThan(0);
      expect(await driver.ensureImage(ref)).toEqual(a);
      const listed = await driver.listImages();
      expect(listed.filter((i) => i.imageId === ref.id)).toEqual([a]);
      expect(listed.map((i) => i.imageId)).toEqual([...listed.map((i) => i.imageId)].sort());
      // A file:// URL is the same source.
      const byUrl = imageRef(file, { source: `file://${file.path}` });
      expect(await driver.ensureImage(byUrl)).toMatchObject({ imageId: byUrl.id, virtualSizeBytes: file.virtualSizeBytes });
    });

    it("defines a domain over an image: it records the image; a disk smaller than the image, or none, is refused naming image", async (ctx) => {
      const file = await needImage(ctx);
      const image = imageRef(file);
      const before = (await driver.list()).map((d) => d.vmId);
      expect(await codeOf(driver.define(spec({ image, resources: { vcpus: 1, memoryMib: 64, diskGib: 0 } })))).toBe(ErrorCode.InvalidArgument);
      const small = Math.ceil(file.virtualSizeBytes / GIB) - 1;
      if (small >= 1) {
        const e = await errorOf(driver.define(spec({ image, resources: { vcpus: 1, memoryMib: 64, diskGib: small } })));
        expect(e.code).toBe(ErrorCode.InvalidArgument);
        expect(e.message).toMatch(/^image: /);
      }
      expect((await driver.list()).map((d) => d.vmId)).toEqual(before);

      const s = spec({ image, resources: { vcpus: 1, memoryMib: 64, diskGib: diskFor(file) } });
      expect(await driver.define(s)).toMatchObject({ vmId: s.vmId, state: SHUTOFF, imageId: image.id });
      expect(await find(s.vmId)).toMatchObject({ imageId: image.id });
      expect((await driver.listImages()).map((i) => i.imageId)).toContain(image.id);
      expect((await driver.start(s.vmId)).state).toBe(RUNNING);
      await driver.delete(s.vmId);
      // The image outlives the domain: it is the host's, for the next VM over it.
      expect((await driver.listImages()).map((i) => i.imageId)).toContain(image.id);
    });

    it("refuses a source that is not there (NOT_FOUND naming image.source) and a checksum mismatch, holding nothing", async (ctx) => {
      const file = await needImage(ctx);
      const missing = imageRef(file, { source: join(tmpdir(), `berth-conformance-missing-${randomUUID()}.qcow2`) });
      const e = await errorOf(driver.ensureImage(missing));
      expect(e.code).toBe(ErrorCode.NotFound);
      expect(e.message).toMatch(/image\.source/);
      const wrong = imageRef(file, { sha256: "0".repeat(64) });
      expect(await codeOf(driver.ensureImage(wrong))).toBe(ErrorCode.FailedPrecondition);
      const held = (await driver.listImages()).map((i) => i.imageId);
      expect(held).not.toContain(missing.id);
      expect(held).not.toContain(wrong.id);
      // Nothing of the failed fetch is in the way: the right checksum then works.
      expect(await driver.ensureImage({ ...wrong, sha256: file.sha256 })).toMatchObject({ imageId: wrong.id });
    });

    // ---- networks (need harness.networkName) ----------------------------------------------------

    const needNetwork = (ctx: { skip: (note?: string) => never }): string => {
      if (!harness.networkName) ctx.skip("the harness names no network (networkName)");
      return harness.networkName!;
    };

    it("lists the host's networks, sorted by name, with the harness's among them, active", async (ctx) => {
      const name = needNetwork(ctx);
      const networks = await driver.listNetworks();
      expect(networks.map((n) => n.name)).toEqual([...networks.map((n) => n.name)].sort());
      expect(networks.find((n) => n.name === name)).toMatchObject({ name, active: true });
      for (const n of networks) expect(["network", "bridge"]).toContain(n.kind);
    });

    it("reports a domain's NICs in order with the MACs asked for", async (ctx) => {
      const network = needNetwork(ctx);
      const vmId = randomUUID();
      const nics = [0, 1].map((i) => ({ network, mac: nicMacAddress(vmId, i) }));
      const s = spec({ vmId, nics });
      const defined = await driver.define(s);
      expect(defined.interfaces.map((i) => ({ network: i.network, mac: i.mac }))).toEqual(nics);
      await driver.start(vmId);
      const started = await find(vmId);
      expect(started?.interfaces.map((i) => ({ network: i.network, mac: i.mac }))).toEqual(nics);
      for (const i of started?.interfaces ?? []) expect(Array.isArray(i.ipAddresses)).toBe(true);
    });

    it("refuses a NIC on a network the host lacks, naming nics[i].network, leaving nothing defined", async () => {
      const vmId = randomUUID();
      const unknown = `no-such-net-${run}`;
      const nics = harness.networkName ? [{ network: harness.networkName, mac: nicMacAddress(vmId, 0) }] : [];
      nics.push({ network: unknown, mac: nicMacAddress(vmId, nics.length) });
      const e = await errorOf(driver.define(spec({ vmId, nics })));
      expect(e.code).toBe(ErrorCode.InvalidArgument);
      expect(e.message).toContain(`nics[${nics.length - 1}].network`);
      expect(await find(vmId)).toBeUndefined();
    });

    // ---- cloud-init -------------------------------------------------------------------------------

    it("accepts a cloud-init seed: the domain defines, starts and deletes as any other", async () => {
      const s = spec();
      s.cloudInit = { instanceId: s.vmId, hostname: s.name, sshAuthorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIConformanceSuiteKeyOnly conformance"], userData: "" };
      expect((await driver.define(s)).state).toBe(SHUTOFF);
      expect((await driver.start(s.vmId)).state).toBe(RUNNING);
      await driver.delete(s.vmId);
      expect(await find(s.vmId)).toBeUndefined();
      // A seed with the operator's own user-data too.
      const t = spec();
      t.cloudInit = { instanceId: t.vmId, hostname: t.name, sshAuthorizedKeys: [], userData: "#cloud-config\nruncmd:\n  - echo conformance\n" };
      expect((await driver.define(t)).state).toBe(SHUTOFF);
    });

    // ---- data volumes -----------------------------------------------------------------------------

    let volumeSeq = 0;
    const volume = (sizeGib = 1): VolumeRef => {
      const id = `conf-${run}-vol-${++volumeSeq}`;
      madeVolumes.add(id);
      return { id, name: id, sizeGib };
    };
    const volumeOf = async (d: HypervisorDriver, id: string) => (await d.listVolumes()).find((v) => v.volumeId === id);

    it("creates, lists and deletes a data volume, each idempotent; another size of the same id is refused", async () => {
      const v = volume(1);
      const made = await driver.createVolume(v);
      expect(made).toEqual({ volumeId: v.id, sizeGib: 1, attachedVmId: "" });
      expect(await driver.createVolume(v)).toEqual(made);
      expect(await codeOf(driver.createVolume({ ...v, sizeGib: 2 }))).toBe(ErrorCode.FailedPrecondition);
      const listed = await driver.listVolumes();
      expect(listed.filter((x) => x.volumeId === v.id)).toEqual([made]);
      expect(listed.map((x) => x.volumeId)).toEqual([...listed.map((x) => x.volumeId)].sort());
      await driver.deleteVolume(v.id);
      await driver.deleteVolume(v.id);
      expect(await volumeOf(driver, v.id)).toBeUndefined();
    });

    it("attaches and detaches data volumes in the order asked (creating missing ones); detached ones stay", async () => {
      const [a, b] = [volume(1), volume(1)];
      const s = spec();
      await driver.define(s);
      await driver.createVolume(a);
      expect((await driver.setVolumes(s.vmId, [a, b])).volumeIds).toEqual([a.id, b.id]);
      expect((await driver.setVolumes(s.vmId, [a, b])).volumeIds).toEqual([a.id, b.id]);
      expect(await volumeOf(driver, b.id)).toEqual({ volumeId: b.id, sizeGib: 1, attachedVmId: s.vmId });
      expect((await driver.setVolumes(s.vmId, [b])).volumeIds).toEqual([b.id]);
      expect(await volumeOf(driver, a.id)).toEqual({ volumeId: a.id, sizeGib: 1, attachedVmId: "" });
      expect((await driver.setVolumes(s.vmId, [b, a])).volumeIds).toEqual([b.id, a.id]);
      expect((await find(s.vmId))?.volumeIds).toEqual([b.id, a.id]);
      // The domain starts with them attached.
      expect((await driver.start(s.vmId)).volumeIds).toEqual([b.id, a.id]);
      await driver.destroy(s.vmId);
      expect((await driver.setVolumes(s.vmId, [])).volumeIds).toEqual([]);
      expect((await volumeOf(driver, a.id))?.attachedVmId).toBe("");
      expect((await volumeOf(driver, b.id))?.attachedVmId).toBe("");
      expect(await codeOf(driver.setVolumes(randomUUID(), [a]))).toBe(ErrorCode.NotFound);
    });

    it("keeps data volumes when their domain is deleted; a volume attached elsewhere is refused; deleteVolume refuses while attached", async () => {
      const v = volume(1);
      const s = spec({ volumes: [v] });
      expect((await driver.define(s)).volumeIds).toEqual([v.id]);
      expect(await volumeOf(driver, v.id)).toMatchObject({ attachedVmId: s.vmId });
      expect(await codeOf(driver.deleteVolume(v.id))).toBe(ErrorCode.FailedPrecondition);
      // One domain at a time: another one cannot have it, by definition or by setVolumes.
      const other = spec();
      expect(await codeOf(driver.define({ ...other, volumes: [v] }))).toBe(ErrorCode.FailedPrecondition);
      expect(await find(other.vmId)).toBeUndefined();
      await driver.define(other);
      expect(await codeOf(driver.setVolumes(other.vmId, [v]))).toBe(ErrorCode.FailedPrecondition);
      expect((await find(other.vmId))?.volumeIds).toEqual([]);

      await driver.delete(s.vmId);
      expect(await volumeOf(driver, v.id)).toEqual({ volumeId: v.id, sizeGib: 1, attachedVmId: "" });
      expect((await driver.setVolumes(other.vmId, [v])).volumeIds).toEqual([v.id]);
      await driver.delete(other.vmId);
      await driver.deleteVolume(v.id);
      expect(await volumeOf(driver, v.id)).toBeUndefined();
    });

    // ---- console ----------------------------------------------------------------------------------

    /** A console session, closed after the case; its output and its end recorded. */
    const attach = async (vmId: string, force = false) => {
      const connection = await driver.openConsole(vmId, { force });
      consoles.add(connection);
      const session = { connection, output: "", ends: [] as (ConsoleEnd | undefined)[] };
      connection.onData((data) => (session.output += Buffer.from(data).toString("latin1")));
      connection.onEnd((end) => session.ends.push(end));
      return session;
    };
    /** A running domain to attach to: it boots the harness's image on its network when there is one. */
    const bootable = async (ctx: { skip: (note?: string) => never }): Promise<DomainSpec> => {
      const over: Partial<DomainSpec> = {};
      if (harness.imageFile) {
        const file = await needImage(ctx);
        over.image = imageRef(file);
        over.resources = { vcpus: 1, memoryMib: 256, diskGib: diskFor(file) };
      }
      const s = spec(over);
      if (harness.networkName) s.nics = [{ network: harness.networkName, mac: nicMacAddress(s.vmId, 0) }];
      s.cloudInit = { instanceId: s.vmId, hostname: s.name, sshAuthorizedKeys: [], userData: "" };
      await driver.define(s);
      await driver.start(s.vmId);
      return s;
    };

    it("refuses a console on an unknown domain (NOT_FOUND) and on one not running (FAILED_PRECONDITION)", async () => {
      expect(await codeOf(driver.openConsole(randomUUID()))).toBe(ErrorCode.NotFound);
      const s = spec();
      await driver.define(s);
      expect(await codeOf(driver.openConsole(s.vmId))).toBe(ErrorCode.FailedPrecondition);
    });

    it("gives what the guest prints: the console probe comes back", async (ctx) => {
      if (!harness.consoleProbe) ctx.skip("the harness gives no console probe (consoleProbe)");
      const probe = harness.consoleProbe!;
      const s = await bootable(ctx);
      const session = await attach(s.vmId);
      // A booting guest may not listen yet: the probe is sent again every second until it answers.
      let sentAt = 0;
      await eventually(`${probe.expect} on the console`, async () => {
        if (probe.expect.test(session.output)) return true;
        if (Date.now() - sentAt >= 1000) {
          session.connection.write(new TextEncoder().encode(probe.send));
          sentAt = Date.now();
        }
        return undefined;
      }).catch((e: unknown) => {
        throw new Error(`${String(e)}; the console said: ${JSON.stringify(session.output.slice(-400))}`);
      });
      expect(session.ends).toEqual([]);
    });

    it("holds one session per console: a second is refused without force, force takes over; close is idempotent", async () => {
      const s = await running();
      const first = await attach(s.vmId);
      const refused = await errorOf(driver.openConsole(s.vmId));
      expect(refused.code).toBe(ErrorCode.FailedPrecondition);
      expect(first.ends).toEqual([]);
      const second = await attach(s.vmId, true);
      await eventually("the first session to end", async () => (first.ends.length > 0 ? true : undefined));
      expect(first.ends).toHaveLength(1);
      expect(first.ends[0]?.code).toBe(ErrorCode.FailedPrecondition);
      expect(second.ends).toEqual([]);
      // Writing to an ended session is harmless.
      first.connection.write(new TextEncoder().encode("ignored\r"));
      second.connection.close();
      second.connection.close();
      await eventually("the closed session's end", async () => (second.ends.length > 0 ? true : undefined));
      await sleep(100);
      expect(second.ends).toEqual([undefined]);
      // Released: a new session needs no force.
      const third = await attach(s.vmId);
      expect(third.ends).toEqual([]);
    });

    it("ends a console session when the domain stops", async () => {
      const s = await running();
      const session = await attach(s.vmId);
      await driver.destroy(s.vmId);
      await eventually("the session to end", async () => (session.ends.length > 0 ? true : undefined));
      expect(session.ends).toHaveLength(1);
      expect(session.ends[0]?.code).toBe(ErrorCode.FailedPrecondition);
    });

    // ---- live migration (needs a second host: harness.openPeer) --------------------------------

    /** The second host, or a skip of the case when the harness has none. */
    const needPeer = async (ctx: { skip: (note?: string) => never }): Promise<HypervisorDriver> => {
      if (!harness.openPeer) ctx.skip("the harness gives no second host (openPeer)");
      peer ??= await harness.openPeer!();
      return peer;
    };
    const running = async (over: Partial<DomainSpec> = {}): Promise<DomainSpec> => {
      const s = spec(over);
      await driver.define(s);
      await driver.start(s.vmId);
      return s;
    };
    const on = async (d: HypervisorDriver, vmId: string): Promise<Domain | undefined> => (await d.list()).find((x) => x.vmId === vmId);
    /** A running domain whose migration the harness has stalled. */
    const stalled = async (): Promise<DomainSpec> => {
      const s = await running({ resources: { vcpus: 1, memoryMib: 64, diskGib: harness.stallDiskGib ?? 0 } });
      await harness.stallMigration!(driver, s.vmId);
      return s;
    };

    it("migrates a running domain: prepare, migrate out, finish, every step idempotent; it leaves the source", async (ctx) => {
      const dst = await needPeer(ctx);
      const s = await running({ generation: 2 });
      const target = await dst.prepareIncoming(s);
      expect(target).toMatchObject({ driver: dst.kind, vmId: s.vmId });
      expect(await dst.prepareIncoming(s)).toEqual(target);
      expect(await on(dst, s.vmId)).toBeUndefined(); // prepared, not a domain yet
      const from = events.length;
      const progress: MigrationProgress[] = [];
      await driver.migrateOut(s.vmId, target, { progressIntervalMs: 100, onProgress: (p) => progress.push(p) });
      for (const p of progress) {
        expect(p.iteration).toBeGreaterThanOrEqual(1);
        for (const k of ["dataTotalBytes", "dataProcessedBytes", "dataRemainingBytes", "dirtyRateBytesPerS"] as const) expect(p[k]).toBeGreaterThanOrEqual(0);
      }
      expect(await on(driver, s.vmId)).toBeUndefined();
      await waitForEvent("a 'migrated' event at the source", domainEvent(s.vmId, "migrated"), from);
      // A resend (a lost result) finds it gone: success.
      await driver.migrateOut(s.vmId, target);
      const arrived = await dst.finishIncoming(s.vmId, 3);
      expect(arrived).toMatchObject({ vmId: s.vmId, name: s.name, state: RUNNING, generation: 3, resources: s.resources });
      expect(await dst.finishIncoming(s.vmId, 3)).toMatchObject({ state: RUNNING, generation: 3 });
      expect(await on(dst, s.vmId)).toMatchObject({ state: RUNNING, generation: 3 });
      // Aborting after the fact discards nothing on either side.
      await dst.abortMigration(s.vmId);
      await driver.abortMigration(s.vmId);
      expect(await on(dst, s.vmId)).toMatchObject({ state: RUNNING });
      expect(await on(driver, s.vmId)).toBeUndefined();
    });

    it("finishes a migration after the destination's driver restarts, and the source's restart does not bring the domain back", async (ctx) => {
      let dst = await needPeer(ctx);
      const s = await running();
      const target = await dst.prepareIncoming(s);
      await driver.migrateOut(s.vmId, target);
      await dst.close();
      peer = dst = await harness.openPeer!();
      unsubscribe();
      await driver.close();
      driver = await harness.open();
      follow(driver);
      expect(await on(driver, s.vmId)).toBeUndefined();
      await driver.migrateOut(s.vmId, target);
      expect((await dst.finishIncoming(s.vmId, 2)).state).toBe(RUNNING);
    });

    it("refuses to migrate a domain that is not running, leaving it as it was; nothing arrives", async (ctx) => {
      const dst = await needPeer(ctx);
      const off = spec();
      await driver.define(off);
      expect(await codeOf(driver.migrateOut(off.vmId, await dst.prepareIncoming(off)))).toBe(ErrorCode.FailedPrecondition);
      expect(await find(off.vmId)).toMatchObject({ state: SHUTOFF });
      expect(await codeOf(dst.finishIncoming(off.vmId, 2))).toBe(ErrorCode.NotFound);
      // Giving up on the destination removes the preparation, twice as well as once.
      await dst.abortMigration(off.vmId);
      await dst.abortMigration(off.vmId);
      expect(await on(dst, off.vmId)).toBeUndefined();
      expect(await find(off.vmId)).toMatchObject({ state: SHUTOFF });
    });

    it("carries a domain's data volumes: they leave the source at the commit and are attached at the destination", async (ctx) => {
      const dst = await needPeer(ctx);
      const v = volume(1);
      const s = await running({ volumes: [v] });
      const target = await dst.prepareIncoming(s);
      expect(await volumeOf(dst, v.id)).toMatchObject({ attachedVmId: s.vmId });
      await driver.migrateOut(s.vmId, target);
      expect(await volumeOf(driver, v.id)).toBeUndefined();
      const arrived = await dst.finishIncoming(s.vmId, 2);
      expect(arrived.volumeIds).toEqual([v.id]);
      expect(await volumeOf(dst, v.id)).toEqual({ volumeId: v.id, sizeGib: 1, attachedVmId: s.vmId });
      await dst.delete(s.vmId);
      expect(await volumeOf(dst, v.id)).toMatchObject({ attachedVmId: "" });
    });

    it("aborts a migration that does not converge: the call fails FAILED_PRECONDITION, the domain runs on at the source", async (ctx) => {
      const dst = await needPeer(ctx);
      if (!harness.stallMigration) ctx.skip("the harness cannot make a migration stall (stallMigration)");
      const s = await stalled();
      const target = await dst.prepareIncoming(s);
      const progress: MigrationProgress[] = [];
      const migrating = codeOf(driver.migrateOut(s.vmId, target, { progressIntervalMs: 100, onProgress: (p) => progress.push(p) }));
      await eventually("migration progress", async () => (progress.length >= 2 ? true : undefined));
      await driver.abortMigration(s.vmId);
      expect(await migrating).toBe(ErrorCode.FailedPrecondition);
      expect(await on(driver, s.vmId)).toMatchObject({ state: RUNNING });
      await dst.abortMigration(s.vmId);
      expect(await codeOf(dst.finishIncoming(s.vmId, 2))).toBe(ErrorCode.NotFound);
      expect(await on(dst, s.vmId)).toBeUndefined();
    });

    it("gives up a migration past its timeout with DEADLINE_EXCEEDED, the domain running on at the source", async (ctx) => {
      const dst = await needPeer(ctx);
      if (!harness.stallMigration) ctx.skip("the harness cannot make a migration stall (stallMigration)");
      const s = await stalled();
      const started = Date.now();
      expect(await codeOf(driver.migrateOut(s.vmId, await dst.prepareIncoming(s), { timeoutMs: 1_000 }))).toBe(ErrorCode.DeadlineExceeded);
      expect(Date.now() - started).toBeGreaterThanOrEqual(900);
      expect(await on(driver, s.vmId)).toMatchObject({ state: RUNNING });
      await dst.abortMigration(s.vmId);
      expect(await on(dst, s.vmId)).toBeUndefined();
    });
  });
}
