// The fake driver's fencing across processes, as the "no VM runs on two hosts" sampler sees it: an
// agent-like child process holds the host's driver and pets its watchdog; this process reads the
// host's state file only. Frozen with SIGSTOP, the child can neither write nor run its timer, yet
// its fence domain counts as off from the deadline on — and stays off once the child thaws.
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { DomainState } from "@berth/api";
import { FakeDriver, fakeRunningVmIds } from "@berth/hypervisor";

const HYPERVISOR_DIST = fileURLToPath(new URL("../../packages/hypervisor/dist/index.js", import.meta.url));
const FENCE_MS = 1_000;
const PET_EVERY_MS = 100;

/** The agent's part: two running domains (one fence), a watchdog petted FENCE_MS ahead every PET_EVERY_MS. */
const AGENT = `
  const { FakeDriver } = await import(${JSON.stringify(HYPERVISOR_DIST)});
  const [stateDir, a, b, fenceMs, everyMs] = process.argv.slice(1);
  const driver = await FakeDriver.open({ stateDir });
  driver.subscribe((e) => { if (e.type === "domain") console.log("event " + e.kind + " " + e.vmId); });
  const resources = { vcpus: 1, memoryMib: 64, diskGib: 0 };
  await driver.define({ vmId: a, name: "a", resources, generation: 1, fence: true });
  await driver.define({ vmId: b, name: "b", resources, generation: 1 });
  await driver.start(a);
  await driver.start(b);
  const pet = () => driver.setWatchdog(Date.now() + Number(fenceMs)).catch((e) => console.log("pet failed " + e.message));
  await pet();
  setInterval(pet, Number(everyMs));
  console.log("ready");`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("fake driver: fencing a frozen agent, seen from another process", () => {
  const dirs: string[] = [];
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) {
      c.kill("SIGCONT");
      c.kill("SIGKILL");
    }
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("counts the frozen host's fence VM off from the deadline on, and never running again after it thaws", async () => {
    const stateDir = mkdtempSync(join(tmpdir(), "berth-fake-fencing-"));
    dirs.push(stateDir);
    const [a, b] = [randomUUID(), randomUUID()].sort() as [string, string];
    const child = spawn(process.execPath, ["--input-type=module", "-e", AGENT, stateDir, a, b, String(FENCE_MS), String(PET_EVERY_MS)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    let output = "";
    child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    for (const deadline = Date.now() + 20_000; !output.includes("ready"); await sleep(20)) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`the agent process did not start:\n${output}`);
    }

    // Petted: both run.
    expect(fakeRunningVmIds(stateDir)).toEqual([a, b]);
    child.kill("SIGSTOP");
    const frozenAt = Date.now();

    // The sampler's view, every 20 ms: the fence VM goes off by the last deadline the agent wrote
    // (at most FENCE_MS after the freeze), and the other one never does.
    let offAt = 0;
    while (offAt === 0) {
      const running = fakeRunningVmIds(stateDir);
      expect(running).toContain(b);
      if (!running.includes(a)) offAt = Date.now();
      else if (Date.now() - frozenAt > FENCE_MS + 2_000) throw new Error("the fence VM still runs 2 s after its deadline");
      await sleep(20);
    }
    // (The slack is the sampler's own lateness on a busy machine, not the rule's.)
    expect(offAt - frozenAt).toBeLessThanOrEqual(FENCE_MS + 500);

    // Thawed, the agent pets again at once: a late pet fires the passed deadline first, so the
    // fence VM is never seen running again; the agent's driver says "stopped".
    child.kill("SIGCONT");
    for (const until = Date.now() + 1_500; Date.now() < until; await sleep(20)) {
      expect(fakeRunningVmIds(stateDir)).toEqual([b]);
    }
    expect(output).toContain(`event stopped ${a}`);
    expect(output).not.toContain("pet failed");

    // The agent restarted (killed, a new driver on its state): the fence is kept.
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    const restarted = await FakeDriver.open({ stateDir });
    try {
      expect((await restarted.list()).map((d) => [d.vmId, d.state])).toEqual([
        [a, DomainState.DOMAIN_STATE_SHUTOFF],
        [b, DomainState.DOMAIN_STATE_RUNNING],
      ]);
    } finally {
      await restarted.close();
    }
  });
});
