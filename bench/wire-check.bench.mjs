// What the strict wire check (packages/api/src/wire.ts) adds to decoding a request: the generated
// decoder alone (what grpc-js ran before) against the hardened deserializer (checkWire, then the
// same decoder), on the two hot messages:
//   report4096   an AgentMessage with a Report of 4,096 domains (the most a host may report), with
//                usage, hypervisor status and 4,096 VmUsage entries: what every agent sends every
//                report interval
//   createVm     a CreateVmRequest with labels, placement constraints and a request id: one per
//                create (the create path runs at ~10,000/s in process)
// and checkWire alone on each. Figures are µs per message, the median of ROUNDS interleaved rounds
// (decode, check, hardened, decode, ...); the percentages are the medians of each round's ratios.
//
//   node bench/wire-check.bench.mjs      (or: node bench/run.mjs wire-check)
// Scale with BERTH_BENCH_WIRE_ROUNDS (default 7).
import { performance } from "node:perf_hooks";
import { AgentMessage, AgentServiceService, checkWire, ClusterServiceService, CreateVmRequest, hardenService, malformedOf, VmSpec } from "../packages/api/dist/index.js";
import { envInt, log, round, runBenchmark } from "./lib/harness.mjs";

const ROUNDS = envInt("BERTH_BENCH_WIRE_ROUNDS", 9);
/** Each timed round of each way runs for at least this long. */
const ROUND_MS = 300;
const DEADLINE_MS = 120_000;

const uuid = (i) => `${(0x10000000 + i).toString(16)}-1111-4111-8111-${(0x100000000000 + i).toString(16)}`;

function report4096() {
  const domains = Array.from({ length: 4096 }, (_, i) => ({
    vmId: uuid(i),
    name: `vm-${i}-web-frontend`,
    state: 2,
    generation: 3 + (i % 17),
    resources: { vcpus: 1 + (i % 8), memoryMib: 1024 * (1 + (i % 16)), diskGib: 20 + (i % 200) },
    fence: i % 3 === 0,
  }));
  const vmUsage = domains.map((d, i) => ({ vmId: d.vmId, cpuCores: 0.25 + (i % 7) / 3, memoryUsedMib: 512 + i }));
  const msg = AgentMessage.fromPartial({
    msg: { $case: "report", value: { usage: { vcpus: 512, memoryMib: 2_000_000, diskGib: 40_000 }, inventory: { domains }, hypervisor: { available: true, message: "" }, vmUsage } },
  });
  return Buffer.from(AgentMessage.encode(msg).finish());
}

function createVm() {
  const spec = VmSpec.fromPartial({
    name: "web-frontend-0042",
    resources: { vcpus: 4, memoryMib: 8192, diskGib: 80 },
    labels: { app: "web", tier: "frontend", team: "payments", env: "prod" },
    group: "web-spread",
    requiredHostLabels: { zone: "eu-west-1a" },
    forbiddenHostLabels: { maintenance: "*" },
    pinnedHosts: [],
    onHostFailure: 2,
  });
  return Buffer.from(CreateVmRequest.encode({ spec, requestId: "cli-3f2a9c1e-0042" }).finish());
}

/** µs per call of fn(bytes) over at least ROUND_MS. */
function timeRound(fn, bytes) {
  let n = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < ROUND_MS) {
    for (let i = 0; i < 8; i++) fn(bytes);
    n += 8;
    t = performance.now();
  }
  return ((t - t0) * 1000) / n;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * The three ways to read `bytes`, measured in interleaved rounds (this machine's speed drifts by
 * up to 2x over seconds, so ratios are taken within a round, then the median of the rounds').
 */
function measure(fns, bytes) {
  for (const fn of Object.values(fns)) {
    const warmUntil = performance.now() + ROUND_MS;
    while (performance.now() < warmUntil) fn(bytes);
  }
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) rounds.push(Object.fromEntries(Object.entries(fns).map(([k, fn]) => [k, timeRound(fn, bytes)])));
  return {
    decodeUs: median(rounds.map((x) => x.decode)),
    checkWireUs: median(rounds.map((x) => x.check)),
    hardenedUs: median(rounds.map((x) => x.hardened)),
    checkOverDecodePct: median(rounds.map((x) => (100 * x.check) / x.decode)),
    hardenedOverheadPct: median(rounds.map((x) => (100 * (x.hardened - x.decode)) / x.decode)),
  };
}

runBenchmark("wire-check", DEADLINE_MS, async () => {
  const agent = hardenService(AgentServiceService);
  const cluster = hardenService(ClusterServiceService);
  const cases = {
    report4096: { bytes: report4096(), type: "berth.v1.AgentMessage", plain: AgentServiceService.connect.requestDeserialize, hardened: agent.connect.requestDeserialize },
    createVm: { bytes: createVm(), type: "berth.v1.CreateVmRequest", plain: ClusterServiceService.createVm.requestDeserialize, hardened: cluster.createVm.requestDeserialize },
  };
  const out = {};
  for (const [name, c] of Object.entries(cases)) {
    if (malformedOf(c.hardened(c.bytes)) || checkWire(c.type, c.bytes)) throw new Error(`${name}: the well-formed frame was refused`);
    log(`${name}: ${c.bytes.length} bytes`);
    const m = measure({ decode: c.plain, check: (b) => checkWire(c.type, b), hardened: c.hardened }, c.bytes);
    const us = (x) => round(x, x < 10 ? 3 : 1);
    out[name] = {
      bytes: c.bytes.length,
      decodeUs: us(m.decodeUs),
      checkWireUs: us(m.checkWireUs),
      hardenedUs: us(m.hardenedUs),
      /** checkWire alone as a share of decoding alone (median of the rounds' ratios). */
      checkOverDecodePct: round(m.checkOverDecodePct, 1),
      /** What the hardened deserializer costs over the plain one (median of the rounds' ratios). */
      hardenedOverheadPct: round(m.hardenedOverheadPct, 1),
      checkMBPerS: round(c.bytes.length / m.checkWireUs, 0),
    };
    log(`${name}: ${JSON.stringify(out[name])}`);
  }
  return { rounds: ROUNDS, roundMs: ROUND_MS, ...out };
});
