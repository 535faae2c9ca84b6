// What keeping the placement explanation on the VM record costs the controller's create path
// (bench/lib/controller-path.mjs: Placer.create in process, the real informers over the in-memory
// store, no gRPC and no etcd). Each case runs the same stream of creates twice, interleaved in
// rounds: with the product's explanation budget (placement-record.ts: explanations take at most
// 3 % of the time, and at most 2,048 host verdicts each) and with explanations off (the
// reference: the create path as it was before records). Cases: fleets of 50, 128 and 1,000 hosts,
// one create in flight (an operator's) and 16 (a burst). Figures: creates/s each way (the median
// of the rounds), the ratio, and the share of creates that got scores.
//
//   node bench/placement-record.bench.mjs      (or: node bench/run.mjs placement-record)
// Scale with BERTH_BENCH_RECORD_ROUNDS (default 9) and BERTH_BENCH_RECORD_CREATES (per round and
// way, default 8,000). About 2 minutes.
import { controllerPath } from "./lib/controller-path.mjs";
import { envInt, log, pool, round, runBenchmark } from "./lib/harness.mjs";

const ROUNDS = envInt("BERTH_BENCH_RECORD_ROUNDS", 9);
const CREATES = envInt("BERTH_BENCH_RECORD_CREATES", 8000);
const DEADLINE_MS = 240_000;
const CASES = [
  { hosts: 50, inFlight: 1 },
  { hosts: 128, inFlight: 1 },
  { hosts: 1000, inFlight: 1 },
  { hosts: 1000, inFlight: 16 },
];

function fleet(n) {
  // Big hosts, so the rounds never fill them (every create is placed).
  return Array.from({ length: n }, (_, i) => ({ id: `host-${String(i).padStart(4, "0")}`, capacity: { vcpus: 4096, memoryMib: 4096 * 1024, diskGib: 1 << 20 }, labels: {} }));
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

runBenchmark("placement-record", DEADLINE_MS, async () => {
  const out = [];
  for (const c of CASES) {
    const path = await controllerPath(fleet(c.hosts), { preset: "spread" });
    const product = path.placer.explainBudget;
    const off = { allows: () => false, spend: () => undefined };
    const rates = { explained: [], reference: [] };
    let withScores = 0;
    let total = 0;
    try {
      for (let r = 0; r < ROUNDS; r++) {
        for (const way of r % 2 === 0 ? ["explained", "reference"] : ["reference", "explained"]) {
          path.placer.explainBudget = way === "explained" ? product : off;
          const request = { resources: { vcpus: 1, memoryMib: 256, diskGib: 1 } };
          const started = performance.now();
          await pool(CREATES, c.inFlight, async () => {
            const vm = await path.create(request);
            if (way === "explained") {
              total++;
              if (vm.placement?.explained) withScores++;
            }
          });
          rates[way].push(CREATES / ((performance.now() - started) / 1000));
        }
      }
    } finally {
      await path.close();
    }
    const explained = median(rates.explained);
    const reference = median(rates.reference);
    const row = {
      hosts: c.hosts,
      inFlight: c.inFlight,
      createsPerS: round(explained, 0),
      referenceCreatesPerS: round(reference, 0),
      ratio: round(explained / reference, 3),
      explainedPct: round((100 * withScores) / total, 1),
    };
    log(JSON.stringify(row));
    out.push(row);
  }
  return { rounds: ROUNDS, createsPerRound: CREATES, cases: out };
});
