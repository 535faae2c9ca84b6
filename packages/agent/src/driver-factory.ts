import { FakeDriver, LibvirtDriver, type HypervisorDriver } from "@berth/hypervisor";
import type { Logger } from "pino";
import type { ResolvedAgentOptions } from "./options.js";

/**
 * Opens the hypervisor driver the options name. The fake keeps its state in the agent's state
 * directory; libvirt keeps it in libvirt (domain metadata), so the agent's own state stays small.
 * Throws BerthError INVALID_ARGUMENT (bad driver settings, naming the option) or
 * HYPERVISOR_UNAVAILABLE (the hypervisor cannot be reached).
 */
export async function openDriver(options: ResolvedAgentOptions, log: Logger): Promise<HypervisorDriver> {
  switch (options.driver) {
    case "fake":
      return FakeDriver.open({ stateDir: options.stateDir, ...(options.capacity ? { capacity: options.capacity } : {}) });
    case "libvirt": {
      const driver = await LibvirtDriver.open({ ...options.libvirt });
      const health = await driver.health();
      if (!health.available) log.warn({ message: health.message }, "libvirt does not answer yet; the agent will say Hello once it does");
      return driver;
    }
  }
}
