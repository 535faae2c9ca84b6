import { createHash } from "node:crypto";
import { ErrorCode, isBerthError } from "@berth/core";
import { FakeDriver, LibvirtDriver, type HypervisorDriver } from "@berth/hypervisor";
import { resolve } from "node:path";
import type { Logger } from "pino";
import type { ResolvedAgentOptions } from "./options.js";

/**
 * Opens the hypervisor driver the options name. The fake keeps its state in the agent's state
 * directory; libvirt keeps it in libvirt (domain metadata), so the agent's own state stays small.
 * Throws BerthError INVALID_ARGUMENT (bad driver settings, naming the option) or
 * FAILED_PRECONDITION (libvirt lacks what the settings name, e.g. the storage pool); an unreachable
 * libvirtd is not an error here (the agent waits for it).
 */
export async function openDriver(options: ResolvedAgentOptions, log: Logger): Promise<HypervisorDriver> {
  switch (options.driver) {
    case "fake":
      return FakeDriver.open({
        stateDir: options.stateDir,
        ...(options.capacity ? { capacity: options.capacity } : {}),
        ...(options.fakeMigrationBandwidthMibPerS !== undefined ? { migrationBandwidthMibPerS: options.fakeMigrationBandwidthMibPerS } : {}),
        ...(options.fakeNetworks ? { networks: options.fakeNetworks.map((n) => ({ name: n.source, kind: n.type, cidr: fakeCidrOf(n.source) })) } : {}),
        onControlFileError: (message) => log.warn({ error: message }, "fake-faults.json refused; the faults it held before stay in force"),
      });
    case "libvirt": {
      // The watchdog's deadline and a fence in progress outlive the agent (a restart past the
      // deadline fences before the first Hello), so they are kept in the agent's state dir.
      // Fetched images are staged on the state dir's disk (writable under the unit; /tmp may be a small tmpfs).
      const driver = await LibvirtDriver.open({ watchdogStateFile: resolve(options.stateDir, "watchdog.json"), imageStagingDir: resolve(options.stateDir, "staging"), ...options.libvirt });
      // Settings libvirt can only judge (a missing storage pool) fail here, at start, not at every
      // Hello; an unreachable libvirtd is waited for instead.
      try {
        await driver.hostFacts();
      } catch (e) {
        if (!isBerthError(e, ErrorCode.HypervisorUnavailable)) {
          await driver.close();
          throw e;
        }
        log.warn({ message: e.message }, "libvirt does not answer yet; the agent will say Hello once it does");
      }
      return driver;
    }
  }
}

/**
 * The /16 a fake network's DHCP hands addresses from: `default` has the fake's default
 * (10.122.0.0/16); any other a /16 from its name (10.128.0.0 to 10.255.0.0), so every fake host
 * offering a network gives a VM the same address on it.
 */
export function fakeCidrOf(network: string): string {
  if (network === "default") return "10.122.0.0/16";
  const digest = createHash("sha256").update(network).digest();
  return `10.${128 + (digest[0]! % 128)}.0.0/16`;
}
