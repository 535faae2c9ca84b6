// The driver conformance suite against the fake: the same tests the libvirt driver passes.
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeDriverConformance, type DriverHarness, type HarnessImageFile } from "./conformance.testkit.js";
import type { HypervisorDriver } from "./driver.js";
import { FakeDriver, qcow2Header } from "./fake-driver.js";

const fake = (driver: HypervisorDriver): FakeDriver => driver as FakeDriver;

/**
 * The image cases' file: a qcow2 header of 1.5 GiB virtual size (all the fake reads), so a 1 GiB
 * disk over it is too small.
 */
function writeImageFile(dir: string): HarnessImageFile {
  const bytes = qcow2Header(1.5 * 1024 ** 3);
  const file = join(dir, "conformance.qcow2");
  writeFileSync(file, bytes);
  return { path: file, format: "qcow2", virtualSizeBytes: 1.5 * 1024 ** 3, sha256: createHash("sha256").update(bytes).digest("hex") };
}

/** What both fake harnesses give the image, NIC and console cases. */
function devicesHarness(imageDir: string): Pick<DriverHarness, "imageFile" | "networkName" | "consoleProbe"> {
  return {
    imageFile: async () => writeImageFile(imageDir),
    networkName: "default",
    // The fake's guest echoes as a terminal in cooked mode does: Enter comes back as CR LF.
    consoleProbe: { send: "hello berth\r", expect: /hello berth\r\n/ },
  };
}

describeDriverConformance(
  "fake",
  async (): Promise<DriverHarness> => {
    const stateDir = mkdtempSync(join(tmpdir(), "berth-fake-conformance-"));
    const peerDir = mkdtempSync(join(tmpdir(), "berth-fake-conformance-peer-"));
    const imageDir = mkdtempSync(join(tmpdir(), "berth-fake-conformance-images-"));
    const capacity = { vcpus: 8, memoryMib: 16384, diskGib: 100 };
    return {
      ...devicesHarness(imageDir),
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
        rmSync(imageDir, { recursive: true, force: true });
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
    const imageDir = mkdtempSync(join(tmpdir(), "berth-fake-conformance-images-"));
    const capacity = { vcpus: 8, memoryMib: 16384, diskGib: 100 };
    return {
      ...devicesHarness(imageDir),
      open: () => FakeDriver.open({ stateDir: name, persist: false, capacity }),
      openPeer: () => FakeDriver.open({ stateDir: `${name}-peer`, persist: false, capacity }),
      stallMigration: (driver, vmId) => fake(driver).setLoad(vmId, { dirtyRateMibPerS: 4096 }),
      killDomainProcess: async (driver, vmId) => {
        await fake(driver).faults.crash(vmId);
      },
      incarnation: async (driver, vmId) => String(fake(driver).incarnation(vmId)),
      stopHypervisor: async (driver) => fake(driver).faults.makeUnavailable({ message: "stopped by the conformance suite" }),
      startHypervisor: async (driver) => fake(driver).faults.makeAvailable(),
      cleanup: async () => rmSync(imageDir, { recursive: true, force: true }),
    };
  },
  { testTimeoutMs: 20_000, settleMs: 5_000 },
);
