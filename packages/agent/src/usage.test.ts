import { describe, expect, it } from "vitest";
import { DomainState, type Domain } from "@berth/api";
import type { DomainStats } from "@berth/hypervisor";
import { UsageMeter } from "./usage.js";

const RUNNING = DomainState.DOMAIN_STATE_RUNNING;
const domain = (vmId: string, state = RUNNING, vcpus = 4): Domain => ({
  vmId,
  name: vmId,
  fence: false, interfaces: [], volumeIds: [], imageId: "",
  state,
  generation: 1,
  resources: { vcpus, memoryMib: 4096, diskGib: 20 },
});
const stats = (vmId: string, cpuTimeNs: number, memoryUsedMib = 1024): DomainStats => ({
  vmId,
  state: RUNNING,
  cpuTimeNs,
  memoryUsedMib,
  diskReadBytes: 0,
  diskWriteBytes: 0,
  netRxBytes: 0,
  netTxBytes: 0,
});

describe("UsageMeter", () => {
  it("turns CPU time between two samples into busy vCPUs, rounded up, and sums memory in use", () => {
    const meter = new UsageMeter();
    // First sample: no CPU rate yet, memory in use is known.
    expect(meter.observe([domain("a"), domain("b")], [stats("a", 0, 1000), stats("b", 0, 500)], 0)).toEqual({ vcpus: 0, memoryMib: 1500, diskGib: 40 });
    // Over 2 s: a used 3 s of CPU (1.5 cores), b 1 s (0.5 cores): 2 vCPUs.
    expect(meter.observe([domain("a"), domain("b")], [stats("a", 3e9, 1000), stats("b", 1e9, 500)], 2000)).toEqual({ vcpus: 2, memoryMib: 1500, diskGib: 40 });
    // Over the next 2 s: a 0.6 cores, b 0.6 cores: 1.2 → 2.
    expect(meter.observe([domain("a"), domain("b")], [stats("a", 4.2e9), stats("b", 2.2e9)], 4000).vcpus).toBe(2);
  });

  it("counts nothing for domains that are not running, and restarts count from their next sample", () => {
    const meter = new UsageMeter();
    meter.observe([domain("a")], [stats("a", 5e9)], 0);
    expect(meter.observe([domain("a", DomainState.DOMAIN_STATE_SHUTOFF)], [stats("a", 0, 0)], 1000)).toEqual({ vcpus: 0, memoryMib: 0, diskGib: 0 });
    // Started again: its counter restarted from 0, so no rate until the sample after.
    expect(meter.observe([domain("a")], [stats("a", 1e8)], 2000).vcpus).toBe(0);
    expect(meter.observe([domain("a")], [stats("a", 1.1e9)], 3000).vcpus).toBe(1);
  });

  it("never counts a domain as busier than its vCPUs, and counts a domain without counters at its size", () => {
    const meter = new UsageMeter();
    meter.observe([domain("a", RUNNING, 1)], [stats("a", 0)], 0);
    expect(meter.observe([domain("a", RUNNING, 1)], [stats("a", 10e9)], 1000).vcpus).toBe(1);
    expect(meter.observe([domain("a", RUNNING, 1), domain("new")], [stats("a", 10e9)], 2000)).toEqual({ vcpus: 0, memoryMib: 1024 + 4096, diskGib: 40 });
  });
});
