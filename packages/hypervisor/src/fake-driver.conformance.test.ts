// The driver conformance suite against the fake: the same tests the libvirt driver passes.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeDriverConformance, type DriverHarness } from "./conformance.testkit.js";
import type { HypervisorDriver } from "./driver.js";
import { FakeDriver } from "./fake-driver.js";

const fake = (driver: HypervisorDriver): FakeDriver => driver as FakeDriver;

describeDriverConformance(
  "fake",
  async (): Promise<DriverHarness> => {
    const stateDir = mkdtempSync(join(tmpdir(), "berth-fake-conformance-"));
    const peerDir = mkdtempSync(join(tmpdir(), "berth-fake-conformance-peer-"));
    const capacity = { vcpus: 8, memoryMib: 16384, diskGib: 100 };
    return {
      open: () => FakeDriver.open({ stateDir, capacity }),
      openPeer: () => FakeDriver.open({ stateDir: peerDir, capacity }),
      // Dirtying faster than the default bandwidth (1024 MiB/s): pre-copy never converges.
      stallMigration: (driver, vmId) => fake(driver).setLoad(vmId, { dirtyRateMibPerS: 4096 }),
      killDomainProcess: async (driver, vmId) => {
        await fake(driver).faults.crash(vmId);
      },
      incarnation: async (driver, vmId) => String(fake(driver).incarnation(vmId)),
      stopHypervisor: async (driver) => fake(driver).faults.makeUnavailable({ message: "stopped by the conformance suite" }),
      startHypervisor: async (driver) => fake(driver).faults.makeAvailable(),
      cleanup: async () => {
        rmSync(stateDir, { recursive: true, force: true });
        rmSync(peerDir, { recursive: true, force: true });
      },
    };
  },
  { testTimeoutMs: 20_000, settleMs: 5_000 },
);

// The same suite on the in-memory mode (persist: false): no file at all; a "restart" is a driver
// opened again under the same name in this process, the peer is another in-memory host.
let memoryRun = 0;
describeDriverConformance(
  "fake (in memory)",
  async (): Promise<DriverHarness> => {
    const name = `conformance-${process.pid}-${++memoryRun}`;
    const capacity = { vcpus: 8, memoryMib: 16384, diskGib: 100 };
    return {
      open: () => FakeDriver.open({ stateDir: name, persist: false, capacity }),
      openPeer: () => FakeDriver.open({ stateDir: `${name}-peer`, persist: false, capacity }),
      stallMigration: (driver, vmId) => fake(driver).setLoad(vmId, { dirtyRateMibPerS: 4096 }),
      killDomainProcess: async (driver, vmId) => {
        await fake(driver).faults.crash(vmId);
      },
      incarnation: async (driver, vmId) => String(fake(driver).incarnation(vmId)),
      stopHypervisor: async (driver) => fake(driver).faults.makeUnavailable({ message: "stopped by the conformance suite" }),
      startHypervisor: async (driver) => fake(driver).faults.makeAvailable(),
      cleanup: async () => undefined,
    };
  },
  { testTimeoutMs: 20_000, settleMs: 5_000 },
);
