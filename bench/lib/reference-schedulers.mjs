// Two reference schedulers for the scheduler benchmark, written plainly: every placement scans
// every host (no index, no cache), checks the fit on all three resources and scores the host;
// the best score wins, ties go to the lowest host index (= smallest id in the benchmark's fleet).
// They know nothing of labels or groups; the benchmark uses them on the workload without groups.
//
//   leastAllocated  Kubernetes NodeResourcesLeastAllocated style (spread):
//                   score = mean over cpu, memory of (allocatable − used − request) / allocatable
//   nomadBinpack    Nomad's ScoreFitBinPack (pack): with the free fractions after placement,
//                   score = 20 − (10^freeCpuFrac + 10^freeMemFrac); the highest wins
//
// Both take `allocatable` (per host, the same for every host here) and keep the per-host use in
// typed arrays. `place(resources)` returns the chosen host's index or -1; `commit(i, resources)`
// applies it.

class FullScan {
  constructor(hostCount, allocatable) {
    this.n = hostCount;
    this.capCpu = allocatable.vcpus;
    this.capMem = allocatable.memoryMib;
    this.capDisk = allocatable.diskGib;
    this.cpu = new Float64Array(hostCount);
    this.mem = new Float64Array(hostCount);
    this.disk = new Float64Array(hostCount);
    this.vms = new Int32Array(hostCount);
  }

  commit(i, r) {
    this.cpu[i] += r.vcpus;
    this.mem[i] += r.memoryMib;
    this.disk[i] += r.diskGib;
    this.vms[i] += 1;
  }

  hostsUsed() {
    let used = 0;
    for (let i = 0; i < this.n; i++) if (this.vms[i] > 0) used++;
    return used;
  }
}

export class LeastAllocatedReference extends FullScan {
  name = "leastAllocated";

  place(r) {
    const { capCpu, capMem, capDisk, cpu, mem, disk } = this;
    let best = -1;
    let bestScore = -Infinity;
    for (let i = 0; i < this.n; i++) {
      const c = cpu[i] + r.vcpus;
      const m = mem[i] + r.memoryMib;
      if (c > capCpu || m > capMem || disk[i] + r.diskGib > capDisk) continue;
      const score = ((capCpu - c) / capCpu + (capMem - m) / capMem) / 2;
      if (score > bestScore) {
        bestScore = score;
        best = i;
      }
    }
    return best;
  }
}

export class NomadBinpackReference extends FullScan {
  name = "nomadBinpack";

  place(r) {
    const { capCpu, capMem, capDisk, cpu, mem, disk } = this;
    let best = -1;
    let bestScore = -Infinity;
    for (let i = 0; i < this.n; i++) {
      const c = cpu[i] + r.vcpus;
      const m = mem[i] + r.memoryMib;
      if (c > capCpu || m > capMem || disk[i] + r.diskGib > capDisk) continue;
      const freeCpu = 1 - c / capCpu;
      const freeMem = 1 - m / capMem;
      const score = 20 - (10 ** freeCpu + 10 ** freeMem);
      if (score > bestScore) {
        bestScore = score;
        best = i;
      }
    }
    return best;
  }
}

export const REFERENCES = { leastAllocated: LeastAllocatedReference, nomadBinpack: NomadBinpackReference };
