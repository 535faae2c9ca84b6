import { DomainState, type Domain, type Resources, type VmUsage } from "@berth/api";
import type { DomainStats } from "@berth/hypervisor";

interface CpuSample {
  cpuTimeNs: number;
  atMs: number;
}

/**
 * What a host's running domains use, from the driver's counters: CPU as the CPU time consumed
 * between two reports (in whole vCPUs, rounded up), memory as the guests' memory in use, disk as
 * the running domains' disk sizes (a hypervisor does not say how full a guest's disk is).
 *
 * A domain seen for the first time, or restarted since the last sample (its counter went back),
 * counts no CPU until the next sample. Not thread-safe; one per agent.
 */
export class UsageMeter {
  private last = new Map<string, CpuSample>();
  private lastPerVm: VmUsage[] = [];

  /** Each running domain's use as of the last `observe` (CPU cores over the last interval; memory in use). */
  perVm(): VmUsage[] {
    return this.lastPerVm;
  }

  /** Usage at `nowMs` from `domains` and their `stats` (matched by vmId); remembers the samples. */
  observe(domains: readonly Domain[], stats: readonly DomainStats[], nowMs: number): Resources {
    const byVm = new Map(stats.map((s) => [s.vmId, s]));
    const next = new Map<string, CpuSample>();
    let busyCores = 0;
    let memoryMib = 0;
    let diskGib = 0;
    const perVm: VmUsage[] = [];
    for (const d of domains) {
      if (d.state !== DomainState.DOMAIN_STATE_RUNNING) continue;
      diskGib += d.resources?.diskGib ?? 0;
      const s = byVm.get(d.vmId);
      if (!s) {
        // No counters for it (it appeared between the two reads): count what it may use.
        memoryMib += d.resources?.memoryMib ?? 0;
        continue;
      }
      memoryMib += s.memoryUsedMib;
      const prev = this.last.get(d.vmId);
      const elapsedMs = prev ? nowMs - prev.atMs : 0;
      let vmCores = 0;
      if (prev && elapsedMs > 0 && s.cpuTimeNs >= prev.cpuTimeNs) {
        const cores = (s.cpuTimeNs - prev.cpuTimeNs) / (elapsedMs * 1e6);
        vmCores = Math.min(cores, d.resources?.vcpus ?? cores);
        busyCores += vmCores;
      }
      perVm.push({ vmId: d.vmId, cpuCores: Math.round(vmCores * 1000) / 1000, memoryUsedMib: s.memoryUsedMib });
      next.set(d.vmId, { cpuTimeNs: s.cpuTimeNs, atMs: nowMs });
    }
    this.last = next;
    this.lastPerVm = perVm;
    // Whole vCPUs (the wire type), rounded up but forgiving float noise.
    return { vcpus: Math.max(0, Math.ceil(busyCores - 1e-6)), memoryMib, diskGib };
  }
}
