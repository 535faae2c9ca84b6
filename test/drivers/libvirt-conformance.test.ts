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
// The device cases get the tiny guest image (test/support/tiny-image.ts) as their image, libvirt's
// NAT network `default` for NICs, and a shell `echo` as the console probe (the domain over the image
// boots to a shell in ~15 s). Domains are TCG (`qemu`) whatever the KVM probe says: where /dev/kvm
// exists but KVM guests die in SeaBIOS (this CI machine), a kvm domain would never boot the image.
import { createHash, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LibvirtDriver, type HypervisorDriver } from "@berth/hypervisor";
import { describeDriverConformance } from "../../packages/hypervisor/src/conformance.testkit.js";
import {
  describeWithLibvirt,
  ensureDefaultNetwork,
  killQemu,
  libvirtDomainName,
  qemuPid,
  removeDomains,
  removeVolumes,
  secondLibvirtdMissing,
  setMigrationSpeed,
  startLibvirtd,
  startSecondLibvirtd,
  stopLibvirtd,
  TEST_NETWORK,
  virshOn,
  type SecondLibvirtd,
} from "../support/libvirt.js";
import { buildTinyImage, tinyImageMissing } from "../support/tiny-image.js";

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

/** What the device cases lack here (printed; those cases are skipped), or undefined. */
const networkMissing = await ensureDefaultNetwork();
const imageMissing = tinyImageMissing();

await describeWithLibvirt("libvirt conformance", (target) => {
  const domainType = "qemu" as const;
  if (networkMissing) console.warn(`libvirt conformance: no NAT network (${networkMissing}); the NIC cases are skipped`);
  if (imageMissing) console.warn(`libvirt conformance: no tiny image (${imageMissing}); the image and console output cases are skipped`);
  const peerMissing = secondLibvirtdMissing();
  if (peerMissing) console.warn(`libvirt conformance: no second libvirtd (${peerMissing}); the migration cases are skipped`);
  let second: Promise<SecondLibvirtd> | undefined;
  describeDriverConformance(
    `libvirt (${target.uri}, ${domainType})`,
    async () => ({
      open: () =>
        LibvirtDriver.open({
          uri: target.uri,
          storagePool: target.storagePool,
          domainType,
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
                domainType,
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
      ...(imageMissing
        ? {}
        : {
            imageFile: async () => {
              const built = await buildTinyImage();
              if ("skip" in built) throw new Error(built.skip);
              return { path: built.path, format: built.format, virtualSizeBytes: built.virtualSizeBytes, sha256: createHash("sha256").update(readFileSync(built.path)).digest("hex") };
            },
            // A shell's answer, not the terminal's echo of what was typed ($((...)) expanded).
            consoleProbe: { send: "echo conformance-$((6 * 7))\r", expect: /conformance-42/ },
          }),
      ...(networkMissing ? {} : { networkName: TEST_NETWORK }),
      cleanup: async () => {
        await startLibvirtd().catch(() => undefined);
        await removeDomains(PREFIX, target.storagePool);
        // The suite's images (ids conf-<run>-img-<n>; the contract has no delete) and seeds.
        const left = (await virshOn(target.uri, "vol-list", target.storagePool)).stdout.split("\n").map((l) => l.trim().split(/\s+/)[0] ?? "");
        await removeVolumes(left.filter((n) => /^berth-image-conf-[a-z0-9]+-img-\d+\.qcow2$/.test(n)), target.storagePool);
        const peer = await second?.catch(() => undefined);
        await peer?.stop(PREFIX);
        rmSync(AGENT_DIR, { recursive: true, force: true });
      },
    }),
    { testTimeoutMs: 90_000, settleMs: 30_000 },
  );
});
