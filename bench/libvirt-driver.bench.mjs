// Per-operation latency of the libvirt driver against a real libvirtd (built packages/hypervisor/dist):
//   virshRoundTrip          `virsh uri` through the driver's health(): the floor of every operation
//   define / defineWithDisk diskless, and with a 1 GiB qcow2 volume (vol-create-as + define)
//   start                   a diskless 64 MiB domain (no guest OS)
//   setGeneration           on a running domain (metadata --config --live)
//   stopForce               destroy
//   stopGracefulFallback    shutdown, polling, destroy after timeoutMs (the guest has no OS to answer)
//   list10                  list() with 10 of Berth's domains defined
//   delete                  destroy + undefine + vol-delete
// Needs libvirtd on BERTH_BENCH_LIBVIRT_URI (default qemu:///system) and a storage pool
// BERTH_BENCH_LIBVIRT_POOL (default berth-test, as the test suites create it); prints
// { skipped: reason } when virsh does not answer. Rounds: BERTH_BENCH_LIBVIRT_ROUNDS (default 5).
//
//   node bench/libvirt-driver.bench.mjs      (or: node bench/run.mjs libvirt-driver)
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { LibvirtDriver } from "../packages/hypervisor/dist/index.js";
import { addCleanup, envInt, log, percentile, round, runBenchmark } from "./lib/harness.mjs";

const URI = process.env.BERTH_BENCH_LIBVIRT_URI || "qemu:///system";
const POOL = process.env.BERTH_BENCH_LIBVIRT_POOL || "berth-test";
const ROUNDS = envInt("BERTH_BENCH_LIBVIRT_ROUNDS", 5);
const LIST_DOMAINS = 10;
const GRACEFUL_TIMEOUT_MS = 500;
const PREFIX = `berth-bench-${process.pid}-`;

runBenchmark("libvirt-driver", 10 * 60_000, async () => {
  const probe = spawnSync("virsh", ["-c", URI, "pool-info", POOL], { encoding: "utf8", timeout: 10_000 });
  if (probe.error || probe.status !== 0) {
    const reason = probe.error ? probe.error.message : probe.stderr.trim();
    log(`skipped: ${reason}`);
    return { skipped: `libvirt or pool ${POOL} not available on ${URI}: ${reason}` };
  }
  const driver = new LibvirtDriver({ uri: URI, storagePool: POOL, namePrefix: PREFIX });
  const made = new Set();
  addCleanup(async () => {
    for (const vmId of made) await driver.delete(vmId).catch((e) => log(`cleanup of ${vmId}: ${e.message}`));
    await driver.close();
  });
  const spec = (name, diskGib = 0) => {
    const vmId = randomUUID();
    made.add(vmId);
    return { vmId, name, generation: 1, resources: { vcpus: 1, memoryMib: 64, diskGib } };
  };
  const samples = {};
  const time = async (op, fn) => {
    const t0 = performance.now();
    const result = await fn();
    (samples[op] ??= []).push(performance.now() - t0);
    return result;
  };

  const facts = await driver.hostFacts();
  log(`host: ${facts.capacity.vcpus} CPUs, ${facts.capacity.memoryMib} MiB, ${facts.hypervisorVersion}`);
  for (let i = 0; i < 3; i++) await driver.health(); // warm up
  for (let i = 0; i < ROUNDS * 4; i++) await time("virshRoundTrip", () => driver.health());

  for (let round = 0; round < ROUNDS; round++) {
    log(`round ${round + 1}/${ROUNDS}`);
    const s = spec(`r${round}`);
    await time("define", () => driver.define(s));
    await time("start", () => driver.start(s.vmId));
    await time("setGeneration", () => driver.setGeneration(s.vmId, round + 2));
    await time("stopForce", () => driver.stop(s.vmId, { force: true }));
    await driver.start(s.vmId);
    await time("stopGracefulFallback", () => driver.stop(s.vmId, { force: false, timeoutMs: GRACEFUL_TIMEOUT_MS }));
    await driver.start(s.vmId);
    await time("delete", () => driver.delete(s.vmId));
    made.delete(s.vmId);

    const d = spec(`d${round}`, 1);
    await time("defineWithDisk", () => driver.define(d));
    await time("deleteWithDisk", () => driver.delete(d.vmId));
    made.delete(d.vmId);
  }

  const listed = [];
  for (let i = 0; i < LIST_DOMAINS; i++) listed.push(await driver.define(spec(`l${i}`)));
  for (let i = 0; i < ROUNDS * 4; i++) {
    const domains = await time("list10", () => driver.list());
    if (domains.filter((x) => x.name.startsWith("l")).length < LIST_DOMAINS) throw new Error(`list returned ${domains.length} domains`);
  }
  for (const d of listed) {
    await driver.delete(d.vmId);
    made.delete(d.vmId);
  }

  const summary = Object.fromEntries(
    Object.entries(samples).map(([op, ms]) => [
      op,
      { n: ms.length, p50Ms: round(percentile(ms, 50), 1), meanMs: round(ms.reduce((a, b) => a + b, 0) / ms.length, 1), maxMs: round(Math.max(...ms), 1) },
    ]),
  );
  return {
    config: { uri: URI, pool: POOL, rounds: ROUNDS, domain: "1 vCPU, 64 MiB, no guest OS", gracefulTimeoutMs: GRACEFUL_TIMEOUT_MS, listDomains: LIST_DOMAINS },
    host: { cpus: facts.capacity.vcpus, memoryMib: facts.capacity.memoryMib, hypervisor: facts.hypervisorVersion },
    operations: summary,
  };
});
