// The driver conformance suite against a real libvirtd with qemu: the same tests the fake passes.
// Skipped with a printed reason where there is no libvirt (or we are not root); a failure under CI.
// Everything made here carries a per-run name prefix and is removed afterwards, even on failure.
// The migration cases' second host is a second libvirtd on this machine (`startSecondLibvirtd`),
// started by the first case that needs it and stopped (its domains and directory removed) after
// the suite. A migration is stalled by capping its bandwidth at 1 MiB/s (`virsh migrate-setspeed`,
// before it starts) on a domain with a 1 GiB disk: an idle guest's memory is mostly zero pages,
// sent within a few seconds even at 1 MiB/s, but the disk, copied with `--copy-storage-all` (its
// unallocated clusters too: the copy goes over NBD), takes minutes: about 32 MiB of the 1 GiB is
// copied in the first 10 s (QEMU's mirror starts with a burst), while the cases abort within ~1 s.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LibvirtDriver, type HypervisorDriver } from "@berth/hypervisor";
import { describeDriverConformance } from "../../packages/hypervisor/src/conformance.testkit.js";
import {
  describeWithLibvirt,
  killQemu,
  libvirtDomainName,
  qemuPid,
  removeDomains,
  secondLibvirtdMissing,
  setMigrationSpeed,
  startLibvirtd,
  startSecondLibvirtd,
  stopLibvirtd,
  type SecondLibvirtd,
} from "../support/libvirt.js";

const PREFIX = `berth-c${process.pid}-${randomUUID().slice(0, 6)}-`;
const libvirt = (driver: HypervisorDriver): LibvirtDriver => driver as LibvirtDriver;
// The agent's state directory stand-in: the watchdog's state file outlives each driver, as it does an
// agent restart. Timer mode only (no watchdogDevice): a real /dev/watchdog would reboot this machine.
const AGENT_DIR = mkdtempSync(join(tmpdir(), "berth-libvirt-conformance-"));
const WATCHDOG_STATE_FILE = join(AGENT_DIR, "watchdog.json");
const PEER_WATCHDOG_STATE_FILE = join(AGENT_DIR, "peer-watchdog.json");
/** The stalled migrations' bandwidth (MiB/s) and disk (GiB): minutes of copying. */
const STALL_MIB_PER_S = 1;
const STALL_DISK_GIB = 1;

await describeWithLibvirt("libvirt conformance", (target) => {
  const peerMissing = secondLibvirtdMissing();
  if (peerMissing) console.warn(`libvirt conformance: no second libvirtd (${peerMissing}); the migration cases are skipped`);
  let second: Promise<SecondLibvirtd> | undefined;
  describeDriverConformance(
    `libvirt (${target.uri}, ${target.domainType})`,
    async () => ({
      open: () =>
        LibvirtDriver.open({
          uri: target.uri,
          storagePool: target.storagePool,
          domainType: target.domainType,
          namePrefix: PREFIX,
          watchdogStateFile: WATCHDOG_STATE_FILE,
        }),
      killDomainProcess: async (driver, vmId) => killQemu(await libvirtDomainName(libvirt(driver), vmId)),
      incarnation: async (driver, vmId) => String(qemuPid(await libvirtDomainName(libvirt(driver), vmId)) ?? "none"),
      stopHypervisor: () => stopLibvirtd(),
      startHypervisor: () => startLibvirtd(),
      ...(peerMissing
        ? {}
        : {
            openPeer: async () => {
              second ??= startSecondLibvirtd();
              const peer = await second;
              return LibvirtDriver.open({
                uri: peer.uri,
                storagePool: peer.storagePool,
                domainType: target.domainType,
                namePrefix: PREFIX,
                watchdogStateFile: PEER_WATCHDOG_STATE_FILE,
                // It is reached over a UNIX socket: QEMU's migration stream goes over loopback TCP.
                migrationUri: peer.uri,
                migrationDataUri: "tcp://127.0.0.1",
              });
            },
          }),
      stallMigration: async (driver, vmId) => {
        const domain = (await driver.list()).find((d) => d.vmId === vmId);
        if (!domain?.resources?.diskGib) throw new Error(`stallMigration: domain ${vmId} has no disk to copy slowly (${JSON.stringify(domain?.resources)})`);
        await setMigrationSpeed(target.uri, libvirt(driver).domainName(domain.name), STALL_MIB_PER_S);
      },
      stallDiskGib: STALL_DISK_GIB,
      cleanup: async () => {
        await startLibvirtd().catch(() => undefined);
        await removeDomains(PREFIX, target.storagePool);
        const peer = await second?.catch(() => undefined);
        await peer?.stop(PREFIX);
        rmSync(AGENT_DIR, { recursive: true, force: true });
      },
    }),
    { testTimeoutMs: 90_000, settleMs: 30_000 },
  );
});
