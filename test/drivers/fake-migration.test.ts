// The fake driver's migration hooks across processes, as two agents on one machine use them: the
// destination's driver stays open in this process while another process, holding the source host's
// driver, migrates the domain out to it.
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { DomainState } from "@berth/api";
import { FakeDriver, type MigrationTarget } from "@berth/hypervisor";

const HYPERVISOR_DIST = fileURLToPath(new URL("../../packages/hypervisor/dist/index.js", import.meta.url));

/** Runs `migrateOut` in a separate Node process on the source host's state directory. */
function migrateOutInAnotherProcess(stateDir: string, vmId: string, target: MigrationTarget): Promise<{ code: number; stderr: string }> {
  const script = `
    const { FakeDriver } = await import(${JSON.stringify(HYPERVISOR_DIST)});
    const [stateDir, vmId, target] = process.argv.slice(1);
    const driver = await FakeDriver.open({ stateDir });
    await driver.migrateOut(vmId, JSON.parse(target));
    await driver.close();`;
  return new Promise((resolve) => {
    execFile(process.execPath, ["--input-type=module", "-e", script, stateDir, vmId, JSON.stringify(target)], { timeout: 30_000 }, (error, _stdout, stderr) =>
      resolve({ code: error ? 1 : 0, stderr: String(stderr) }),
    );
  });
}

describe("fake driver: migration between two agent processes", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("hands a running domain from one process's host to another's, once", async () => {
    const root = mkdtempSync(join(tmpdir(), "berth-fake-migration-"));
    dirs.push(root);
    const srcDir = join(root, "host-a");
    const dstDir = join(root, "host-b");
    const spec = { vmId: randomUUID(), name: "web-1", resources: { vcpus: 2, memoryMib: 2048, diskGib: 10 }, generation: 3 };

    const source = await FakeDriver.open({ stateDir: srcDir });
    await source.define(spec);
    await source.start(spec.vmId);
    await source.close(); // the source agent's process takes over its host

    const destination = await FakeDriver.open({ stateDir: dstDir });
    const events: string[] = [];
    destination.subscribe((e) => e.type === "domain" && events.push(e.kind));
    const target = await destination.prepareIncoming(spec);
    expect(target).toEqual({ driver: "fake", uri: `fake://${dstDir}`, vmId: spec.vmId });

    const out = await migrateOutInAnotherProcess(srcDir, spec.vmId, target);
    expect(out.stderr).toBe("");
    expect(out.code).toBe(0);

    const arrived = await destination.finishIncoming(spec.vmId, 4);
    expect(arrived).toMatchObject({ vmId: spec.vmId, name: "web-1", state: DomainState.DOMAIN_STATE_RUNNING, generation: 4 });
    expect(events).toContain("started");
    expect(await destination.list()).toEqual([arrived]);

    // The source host no longer has it; a second migrateOut there is the idempotent "already gone".
    const again = await migrateOutInAnotherProcess(srcDir, spec.vmId, target);
    expect(again.code).toBe(0);
    const reopened = await FakeDriver.open({ stateDir: srcDir });
    expect(await reopened.list()).toEqual([]);
    await reopened.close();
    await destination.close();
  });
});
