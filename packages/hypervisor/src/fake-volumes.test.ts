import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { VolumeRef } from "@berth/api";
import { BerthError, ErrorCode } from "@berth/core";
import {
  FakeDriver,
  fakeRunningVmIds,
  ManualClock,
  readFakeHypervisorState,
  type DomainSpec,
  type FakeDriverOptions,
  type FakeKillPoint,
  type HypervisorDriver,
} from "./index.js";
import { failure } from "./fake.testkit.js";

let dir: string;
let drivers: FakeDriver[];
let memoryRun = 0;

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "berth-fake-volumes-"));
  drivers = [];
  memoryRun++;
});

afterEach(async () => {
  for (const d of drivers) await d.close();
  rmSync(dir, { recursive: true, force: true });
});

const vmId = "00000000-0000-4000-8000-000000000001";
const otherId = "00000000-0000-4000-8000-000000000002";
const spec = (over: Partial<DomainSpec> = {}): DomainSpec => ({
  vmId,
  name: "vm-1",
  resources: { vcpus: 1, memoryMib: 512, diskGib: 10 },
  generation: 1,
  ...over,
});
const vol = (id: string, sizeGib = 5): VolumeRef => ({ id, name: `name-${id}`, sizeGib });


/** Both modes: a host in a state directory, and one in this process's memory. */
const MODES = [
  { mode: "file-backed", persist: true },
  { mode: "in memory", persist: false },
] as const;

describe.each(MODES)("FakeDriver: data volumes ($mode)", ({ persist }) => {
  const place = (host: string): string => (persist ? path.join(dir, host) : `volumes-${process.pid}-${memoryRun}-${host}`);
  const open = (host = "host", options: Partial<FakeDriverOptions> = {}): FakeDriver => {
    const d = new FakeDriver({ stateDir: place(host), persist, ...options });
    drivers.push(d);
    return d;
  };

  it("creates, lists and deletes volumes, idempotent, and keeps them across a restart", async () => {
    const d = open();
    expect(await d.createVolume(vol("b", 5))).toEqual({ volumeId: "b", sizeGib: 5, attachedVmId: "" });
    expect(await d.createVolume(vol("a", 1))).toEqual({ volumeId: "a", sizeGib: 1, attachedVmId: "" });
    expect(await d.createVolume(vol("a", 1))).toEqual({ volumeId: "a", sizeGib: 1, attachedVmId: "" });
    expect((await failure(d.createVolume(vol("a", 2)))).code).toBe(ErrorCode.FailedPrecondition);
    expect((await d.listVolumes()).map((v) => v.volumeId)).toEqual(["a", "b"]);
    await d.close();
    const again = open();
    expect(await again.listVolumes()).toEqual([
      { volumeId: "a", sizeGib: 1, attachedVmId: "" },
      { volumeId: "b", sizeGib: 5, attachedVmId: "" },
    ]);
    await again.deleteVolume("a");
    await again.deleteVolume("a");
    expect((await again.listVolumes()).map((v) => v.volumeId)).toEqual(["b"]);
  });

  it("refuses bad volumes naming the field, and one larger than the pool (RESOURCE_EXHAUSTED)", async () => {
    const d = open("host", { capacity: { diskGib: 100 } });
    expect((await failure(d.createVolume({ id: "../x", name: "", sizeGib: 1 }))).field).toBe("volume.id");
    expect((await failure(d.createVolume({ id: "x", name: "", sizeGib: 0 }))).field).toBe("volume.size_gib");
    const big = await failure(d.createVolume(vol("x", 101)));
    expect(big.code).toBe(ErrorCode.ResourceExhausted);
    await d.define(spec());
    expect((await failure(d.setVolumes(vmId, [vol("a"), vol("a")]))).field).toBe("volumes[1].id");
    expect((await failure(d.setVolumes(vmId, [vol("a"), vol("y", 500)]))).code).toBe(ErrorCode.ResourceExhausted);
    expect(await d.listVolumes()).toEqual([]);
    expect((await d.list())[0]?.volumeIds).toEqual([]);
  });

  it("attaches in the order asked, creating missing volumes, hot while running; detached volumes keep their place in the pool", async () => {
    const d = open();
    await d.define(spec());
    await d.start(vmId);
    await d.createVolume(vol("b", 2));
    const attached = await d.setVolumes(vmId, [vol("b", 2), vol("a")]);
    expect(attached).toMatchObject({ state: 2, volumeIds: ["b", "a"] });
    expect(await d.listVolumes()).toEqual([
      { volumeId: "a", sizeGib: 5, attachedVmId: vmId },
      { volumeId: "b", sizeGib: 2, attachedVmId: vmId },
    ]);
    expect((await d.setVolumes(vmId, [vol("a")])).volumeIds).toEqual(["a"]);
    expect((await d.listVolumes()).find((v) => v.volumeId === "b")?.attachedVmId).toBe("");
    expect((await d.setVolumes(vmId, [vol("a"), vol("b", 2)])).volumeIds).toEqual(["a", "b"]);
    if (persist) {
      const state = readFakeHypervisorState(place("host"));
      expect(state.domains[0]?.volumeIds).toEqual(["a", "b"]);
      expect(state.dataVolumes).toEqual({
        a: { volumeId: "a", name: "name-a", sizeGib: 5, attachedVmId: vmId },
        b: { volumeId: "b", name: "name-b", sizeGib: 2, attachedVmId: vmId },
      });
    }
    // The same list again: unchanged; another domain cannot take them; deleteVolume is refused.
    expect((await d.setVolumes(vmId, [vol("a"), vol("b", 2)])).volumeIds).toEqual(["a", "b"]);
    await d.define(spec({ vmId: otherId, name: "vm-2" }));
    const taken = await failure(d.setVolumes(otherId, [vol("c"), vol("b", 2)]));
    expect(taken.code).toBe(ErrorCode.FailedPrecondition);
    expect(taken.message).toMatch(/volumes\[1\]: volume b is attached to domain vm-1/);
    expect((await d.listVolumes()).map((v) => v.volumeId)).toEqual(["a", "b"]); // "c" was not made
    expect((await failure(d.deleteVolume("a"))).code).toBe(ErrorCode.FailedPrecondition);
    expect((await failure(d.setVolumes("00000000-0000-4000-8000-000000000009", []))).code).toBe(ErrorCode.NotFound);
  });

  it("keeps data volumes, detached, when the domain is deleted or undefined; deleteVolumes removes only the domain's own disk", async () => {
    const d = open();
    expect((await d.define(spec({ volumes: [vol("a"), vol("b")] }))).volumeIds).toEqual(["a", "b"]);
    await d.start(vmId);
    await d.delete(vmId);
    expect(await d.listVolumes()).toEqual([
      { volumeId: "a", sizeGib: 5, attachedVmId: "" },
      { volumeId: "b", sizeGib: 5, attachedVmId: "" },
    ]);
    await d.define(spec({ volumes: [vol("b")] }));
    await d.undefine(vmId);
    await d.deleteVolumes(vmId);
    expect((await d.listVolumes()).map((v) => [v.volumeId, v.attachedVmId])).toEqual([
      ["a", ""],
      ["b", ""],
    ]);
    if (persist) expect(readFakeHypervisorState(place("host")).volumes).toEqual([]);
    // A definition refused for its volumes leaves nothing.
    await d.define(spec({ vmId: otherId, name: "vm-2", volumes: [vol("a")] }));
    expect((await failure(d.define(spec({ volumes: [vol("a")] })))).code).toBe(ErrorCode.FailedPrecondition);
    expect((await d.list()).map((x) => x.vmId)).toEqual([otherId]);
  });

  describe("migration", () => {
    const clock = new ManualClock(1_000_000);
    const pair = (options: Partial<FakeDriverOptions> = {}) => {
      const src = open("src", { clock, migrationBandwidthMibPerS: 1e6, ...options });
      const dst = open("dst", { clock });
      return { src, dst };
    };
    /** migrateOut, with the clock moved on until it settles. */
    const migrate = async (src: FakeDriver, dst: HypervisorDriver): Promise<string> => {
      const target = await dst.prepareIncoming(spec({ volumes: [vol("a"), vol("b", 2)] }));
      let outcome: string | undefined;
      src.migrateOut(vmId, target).then(
        () => (outcome = "ok"),
        (e: unknown) => (outcome = e instanceof BerthError ? e.code : String(e)),
      );
      // The switchover writes files (real I/O, fsynced): real time passes between the clock's steps.
      for (let i = 0; i < 500 && outcome === undefined; i++) {
        await clock.advance(10);
        await new Promise((r) => setTimeout(r, 5));
      }
      return outcome ?? "still running";
    };

    it("carries the attached volumes: readied at prepare, gone from the source at the commit, attached at the destination", async () => {
      const { src, dst } = pair();
      await src.define(spec({ volumes: [vol("a"), vol("b", 2)] }));
      await src.createVolume(vol("spare"));
      await src.start(vmId);
      // A volume of the same id waiting at the destination, detached, is taken (not made anew).
      await dst.createVolume(vol("b", 2));
      expect(await migrate(src, dst)).toBe("ok");
      expect(await src.listVolumes()).toEqual([{ volumeId: "spare", sizeGib: 5, attachedVmId: "" }]);
      expect(await dst.listVolumes()).toEqual([
        { volumeId: "a", sizeGib: 5, attachedVmId: vmId },
        { volumeId: "b", sizeGib: 2, attachedVmId: vmId },
      ]);
      // Held for the arrival: nothing may delete them before finishIncoming.
      expect((await failure(dst.deleteVolume("a"))).code).toBe(ErrorCode.FailedPrecondition);
      const arrived = await dst.finishIncoming(vmId, 2);
      expect(arrived.volumeIds).toEqual(["a", "b"]);
      expect((await dst.list())[0]?.volumeIds).toEqual(["a", "b"]);
      if (persist) {
        expect(Object.keys(readFakeHypervisorState(place("src")).dataVolumes)).toEqual(["spare"]);
        expect(readFakeHypervisorState(place("dst")).dataVolumes["a"]).toMatchObject({ attachedVmId: vmId, name: "name-a" });
      }
    });

    it("an abort at the destination removes the volumes its preparation made and lets go of those it found", async () => {
      const { src, dst } = pair();
      await src.define(spec({ volumes: [vol("a"), vol("b", 2)] }));
      await dst.createVolume(vol("b", 2));
      await dst.prepareIncoming(spec({ volumes: [vol("a"), vol("b", 2)] }));
      expect((await dst.listVolumes()).map((v) => [v.volumeId, v.attachedVmId])).toEqual([
        ["a", vmId],
        ["b", vmId],
      ]);
      await dst.abortMigration(vmId);
      expect(await dst.listVolumes()).toEqual([{ volumeId: "b", sizeGib: 2, attachedVmId: "" }]);
      expect((await src.listVolumes()).map((v) => v.volumeId)).toEqual(["a", "b"]);
    });

    it("refuses to prepare when a volume is attached to another domain at the destination", async () => {
      const { dst } = pair();
      await dst.define(spec({ vmId: otherId, name: "vm-2", volumes: [vol("b", 2)] }));
      expect((await failure(dst.prepareIncoming(spec({ volumes: [vol("a"), vol("b", 2)] })))).code).toBe(ErrorCode.FailedPrecondition);
      expect((await dst.listVolumes()).map((v) => v.volumeId)).toEqual(["b"]);
    });

    it.each([
      ["migrateOut:before-commit", true],
      ["migrateOut:after-switchover", false],
    ] as const)("killed at %s: the volumes are where the domain is", async (point: FakeKillPoint, atSource: boolean) => {
      const { src, dst } = pair({ onKill: () => undefined });
      await src.define(spec({ volumes: [vol("a"), vol("b", 2)] }));
      await src.start(vmId);
      src.faults.killAt({ point, vmId });
      expect(await migrate(src, dst)).toBe(ErrorCode.HypervisorUnavailable);
      const restarted = open("src", { clock });
      if (atSource) {
        expect((await restarted.list())[0]?.volumeIds).toEqual(["a", "b"]);
        expect((await restarted.listVolumes()).map((v) => [v.volumeId, v.attachedVmId])).toEqual([
          ["a", vmId],
          ["b", vmId],
        ]);
        expect(await migrate(restarted, dst)).toBe("ok");
      } else {
        expect(await restarted.list()).toEqual([]);
        expect(await restarted.listVolumes()).toEqual([]);
        if (persist) expect(fakeRunningVmIds(place("src"), clock.now())).toEqual([]);
      }
      expect(await restarted.listVolumes()).toEqual([]);
      expect((await dst.finishIncoming(vmId, 2)).volumeIds).toEqual(["a", "b"]);
      expect((await dst.listVolumes()).map((v) => [v.volumeId, v.attachedVmId])).toEqual([
        ["a", vmId],
        ["b", vmId],
      ]);
    });
  });
});
