// Builds the gang-packing fixtures (bench/data/gang-optimum.json): hard vector bin-packing
// instances — complementary CPU-heavy and memory-heavy VM shapes (and, in some, disk-heavy ones),
// 20 to 35 VMs on tight identical hosts — each with its optimum (fewest hosts) proven by the HiGHS
// MILP solver (the `highs` devDependency). The benchmark (bench/gang-pack.bench.mjs) and the
// scheduler's quality test read the file; neither needs HiGHS.
//
//   node bench/gang-fixtures.mjs [seed] > bench/data/gang-optimum.json
//
// Two kinds of instance, alternating:
//   - "split": k hosts' capacity is cut, per host, into 2 to 4 VMs whose CPU and memory shares are
//     anti-correlated (the largest CPU piece takes the smallest memory piece), then every VM is
//     shrunk by up to 3 %, and the VMs shuffled — the optimum is k or fewer and greedy heuristics
//     rarely find it;
//   - "mixed": VMs drawn from CPU-heavy, memory-heavy and (3-resource instances) disk-heavy shape
//     families, 30 % to 60 % of a host on their heavy resource.
// The model: x[i][j] = VM i on host j, y[j] = host j used; minimise Σ y[j] subject to Σ_j x[i][j] = 1,
// Σ_i r[i][k] x[i][j] ≤ C[k] y[j] for each resource k, y[j] ≥ y[j+1] and VM i only on hosts j ≤ i
// (symmetry breaking), with as many hosts as first-fit decreasing needs.
import loadHighs from "highs";
import { mulberry32 } from "./lib/scheduler-workload.mjs";

const SEED = Number(process.argv[2] ?? 0x6a9e) >>> 0;
const INSTANCES = 16;
const TIME_LIMIT_S = 120;
/** Hosts: 64 cores, 256 GiB, 2 TiB; the fixtures' scheduler options make allocatable = physical. */
const HOST = { vcpus: 64, memoryMib: 262144, diskGib: 2048 };
const KEYS = ["vcpus", "memoryMib", "diskGib"];


/** Cuts `total` into `n` whole parts of at least `min` each, at random. */
function cut(rng, total, n, min) {
  const w = Array.from({ length: n }, () => 0.2 + rng());
  const sum = w.reduce((s, x) => s + x, 0);
  const parts = w.map((x) => min + Math.floor(((total - n * min) * x) / sum));
  parts[n - 1] += total - parts.reduce((s, x) => s + x, 0);
  return parts;
}

function splitInstance(rng, resources) {
  const vms = [];
  for (let guard = 0; vms.length < 20; guard++) {
    vms.length = 0;
    const k = 7 + Math.floor(rng() * 4); // 7..10 hosts
    for (let h = 0; h < k; h++) {
      const n = 2 + Math.floor(rng() * 3); // 2..4 VMs per host
      const parts = resources.map((key) => cut(rng, HOST[key], n, Math.ceil(HOST[key] * 0.06)).sort((a, b) => a - b));
      // Anti-correlate: CPU ascending, memory descending, disk rotated.
      for (let i = 0; i < n; i++) {
        const r = { vcpus: 0, memoryMib: 0, diskGib: 0 };
        r.vcpus = parts[0][i];
        r.memoryMib = parts[1][n - 1 - i];
        if (resources.length > 2) r.diskGib = parts[2][(i + 1) % n];
        else r.diskGib = 20;
        vms.push(r);
      }
    }
    if (vms.length > 35) vms.length = 0;
  }
  const shrink = (x) => Math.max(1, Math.floor(x * (1 - 0.03 * rng())));
  return vms.map((r) => ({ vcpus: shrink(r.vcpus), memoryMib: shrink(r.memoryMib), diskGib: resources.length > 2 ? shrink(r.diskGib) : r.diskGib }));
}

function mixedInstance(rng, resources) {
  const n = 20 + Math.floor(rng() * 16); // 20..35
  const vms = [];
  for (let i = 0; i < n; i++) {
    const family = Math.floor(rng() * resources.length);
    const heavy = 0.3 + 0.3 * rng();
    const light = () => 0.04 + 0.16 * rng();
    const share = resources.map((_, k) => (k === family ? heavy : light()));
    vms.push({
      vcpus: Math.max(1, Math.round(share[0] * HOST.vcpus)),
      memoryMib: Math.max(1024, Math.round((share[1] * HOST.memoryMib) / 1024) * 1024),
      diskGib: resources.length > 2 ? Math.max(1, Math.round(share[2] * HOST.diskGib)) : 20,
    });
  }
  return vms;
}

/** First-fit decreasing by the sum of shares: an upper bound on the hosts needed. */
function ffd(vms, keys) {
  const size = (r) => keys.reduce((s, k) => s + r[k] / HOST[k], 0);
  const order = vms.map((_, i) => i).sort((a, b) => size(vms[b]) - size(vms[a]) || a - b);
  const bins = [];
  for (const i of order) {
    const r = vms[i];
    let bin = bins.find((b) => keys.every((k) => b[k] + r[k] <= HOST[k]));
    if (!bin) bins.push((bin = { vcpus: 0, memoryMib: 0, diskGib: 0 }));
    for (const k of keys) bin[k] += r[k];
  }
  return bins.length;
}

function lowerBound(vms, keys) {
  return Math.max(...keys.map((k) => Math.ceil(vms.reduce((s, r) => s + r[k], 0) / HOST[k])));
}

function model(vms, keys, bins) {
  const lines = ["Minimize", " obj: " + Array.from({ length: bins }, (_, j) => `y${j}`).join(" + "), "Subject To"];
  vms.forEach((_, i) => {
    const hosts = Array.from({ length: Math.min(i + 1, bins) }, (_, j) => `x${i}_${j}`);
    lines.push(` a${i}: ${hosts.join(" + ")} = 1`);
  });
  for (let j = 0; j < bins; j++) {
    for (const k of keys) {
      const terms = [];
      vms.forEach((r, i) => {
        if (j <= i) terms.push(`${r[k]} x${i}_${j}`);
      });
      if (terms.length > 0) lines.push(` c${j}_${k}: ${terms.join(" + ")} - ${HOST[k]} y${j} <= 0`);
    }
    if (j + 1 < bins) lines.push(` s${j}: y${j} - y${j + 1} >= 0`);
  }
  lines.push("Binary");
  for (let j = 0; j < bins; j++) lines.push(` y${j}`);
  vms.forEach((_, i) => {
    for (let j = 0; j <= Math.min(i, bins - 1); j++) lines.push(` x${i}_${j}`);
  });
  lines.push("End");
  return lines.join("\n");
}

const highs = await loadHighs();
const rng = mulberry32(SEED);
const instances = [];
for (let n = 0; instances.length < INSTANCES && n < INSTANCES * 4; n++) {
  const kind = n % 2 === 0 ? "split" : "mixed";
  const resources = n % 4 < 2 ? ["vcpus", "memoryMib"] : KEYS;
  const vms = kind === "split" ? splitInstance(rng, resources) : mixedInstance(rng, resources);
  // A gang arrives in no particular order (a split instance is built host by host).
  for (let i = vms.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [vms[i], vms[j]] = [vms[j], vms[i]];
  }
  const upper = ffd(vms, KEYS);
  const lb = lowerBound(vms, KEYS);
  const started = Date.now();
  const result = highs.solve(model(vms, KEYS, upper), { output_flag: false, time_limit: TIME_LIMIT_S, mip_rel_gap: 0 });
  const seconds = (Date.now() - started) / 1000;
  process.stderr.write(`[fixtures] #${n} ${kind} ${resources.length}r ${vms.length} VMs: LB ${lb}, FFD ${upper}, HiGHS ${result.Status} ${result.ObjectiveValue} in ${seconds.toFixed(1)} s\n`);
  if (result.Status !== "Optimal") continue;
  const optimum = Math.round(result.ObjectiveValue);
  instances.push({
    name: `${kind}-${resources.length}r-${instances.length}`,
    kind,
    resources: resources.length,
    lowerBound: lb,
    ffdHosts: upper,
    optimum,
    solveSeconds: Number(seconds.toFixed(2)),
    vms: vms.map((r, i) => ({ name: `vm-${String(i).padStart(2, "0")}`, resources: r })),
  });
}

const doc = {
  description:
    "Vector bin-packing instances for gang placement, each with its optimum (fewest hosts) proven by HiGHS; generated by bench/gang-fixtures.mjs.",
  seed: SEED,
  solver: "HiGHS (npm highs), MILP, mip_rel_gap 0",
  host: { capacity: HOST },
  scheduler: { allocationRatio: { vcpus: 1, memoryMib: 1, diskGib: 1 }, reserved: { vcpus: 0, memoryMib: 0, diskGib: 0 } },
  instances,
};
process.stdout.write(`${JSON.stringify(doc, null, 1)}\n`);
