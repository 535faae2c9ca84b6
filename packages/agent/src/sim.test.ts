import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { pino } from "pino";
import { defaultStartSpreadMs, Simulation, simulatedHostIds } from "./sim.js";
import { StubController } from "./stub-controller.testkit.js";

const silent = pino({ level: "silent" });

describe("Simulation (berth-sim)", () => {
  let stub: StubController | undefined;
  let sim: Simulation | undefined;
  afterEach(async () => {
    await sim?.stop();
    stub?.kill();
    sim = stub = undefined;
  });

  it("names hosts by prefix and zero-padded number, and spreads starts 5 ms a host up to 10 s", () => {
    expect(simulatedHostIds(3)).toEqual(["sim-0001", "sim-0002", "sim-0003"]);
    expect(simulatedHostIds(12_000, "h-")[11_999]).toBe("h-12000");
    expect(defaultStartSpreadMs(20)).toBe(100);
    expect(defaultStartSpreadMs(5_000)).toBe(10_000);
  });

  it("connects every host, each its own stream and Hello, staggered over the spread; reports flow; files only for the agents' own state", async () => {
    stub = await StubController.start("leader", { kind: "leader", welcome: { clusterId: "c1", reportIntervalMs: 200 } });
    sim = await Simulation.create({ hosts: 8, controllers: [stub.address], capacity: { vcpus: 4 }, startSpreadMs: 400 }, silent);
    const started = Date.now();
    sim.start();
    const deadline = Date.now() + 10_000;
    while (stub.sessions.length < 8 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(stub.sessions.map((s) => s.hello.hostId).sort()).toEqual(simulatedHostIds(8));
    for (const s of stub.sessions) expect(s.hello.capacity?.vcpus).toBe(4);
    // Staggered: not all Hellos at once.
    const at = stub.sessions.map((s) => s.helloAt - started);
    expect(Math.max(...at) - Math.min(...at)).toBeGreaterThan(150);
    await new Promise((r) => setTimeout(r, 600));
    for (const s of stub.sessions) expect(s.of("report").length + s.of("heartbeat").length).toBeGreaterThan(0);
    // The hypervisors are in memory; the agents' own state (agent.json) is on disk, one dir a host.
    const root = join((sim as unknown as { stateRoot: string }).stateRoot);
    expect((await readdir(root)).sort()).toEqual(simulatedHostIds(8));
    for (const h of sim.hosts) expect(h.driver.stateFile).toBeUndefined();
    await sim.stop();
    expect(existsSync(root)).toBe(false);
    sim = undefined;
  });

  it("refuses bad options before anything starts", async () => {
    await expect(Simulation.create({ hosts: 0, controllers: ["127.0.0.1:1"] }, silent)).rejects.toThrow(/hosts/);
    await expect(Simulation.create({ hosts: 2, controllers: [] }, silent)).rejects.toThrow(/controller/);
    await expect(Simulation.create({ hosts: 2, controllers: ["127.0.0.1:1"], hostPrefix: "Bad_" }, silent)).rejects.toThrow(/host_id/);
  });
});
