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
    return {
      open: () => FakeDriver.open({ stateDir, capacity: { vcpus: 8, memoryMib: 16384, diskGib: 100 } }),
      killDomainProcess: async (driver, vmId) => {
        await fake(driver).faults.crash(vmId);
      },
      incarnation: async (driver, vmId) => String(fake(driver).incarnation(vmId)),
      stopHypervisor: async (driver) => fake(driver).faults.makeUnavailable({ message: "stopped by the conformance suite" }),
      startHypervisor: async (driver) => fake(driver).faults.makeAvailable(),
      cleanup: async () => rmSync(stateDir, { recursive: true, force: true }),
    };
  },
  { testTimeoutMs: 20_000, settleMs: 5_000 },
);
