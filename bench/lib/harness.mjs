import { createServer } from "node:net";
// What every benchmark shares: one JSON document on stdout, progress on stderr, an overall
// deadline, cleanups that run on success, on error, on SIGINT/SIGTERM and at the deadline, and a
// synchronous last resort (SIGKILL of child processes) when the process exits anyway.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { etcdBinary } from "../../scripts/lib/etcd-process.mjs";

/** Progress and notes: stderr only, so stdout stays one JSON document. */
export function log(message) {
  process.stderr.write(`[bench] ${message}\n`);
}

export { etcdBinary };

/** The etcd version, e.g. "3.4.23", or undefined when etcd cannot be run. */
export function etcdVersion() {
  const r = spawnSync(etcdBinary(), ["--version"], { encoding: "utf8", timeout: 10_000 });
  if (r.error || r.status !== 0) return undefined;
  return /etcd Version:\s*(\S+)/.exec(r.stdout)?.[1];
}

/** The machine the figures come from (nothing that names the host or its paths). */
export function machine() {
  const cpus = os.cpus();
  return {
    cores: typeof os.availableParallelism === "function" ? os.availableParallelism() : cpus.length,
    cpu: cpus[0]?.model?.trim() ?? "unknown",
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    etcd: etcdVersion() ?? "not available",
  };
}

/** A temporary directory under the runner's per-benchmark directory when there is one. */
export function tempDir(prefix) {
  return mkdtemp(join(process.env.BERTH_BENCH_TMP || os.tmpdir(), prefix));
}

/** A whole number from the environment (for scaling a benchmark down or up), else `fallback`. */
export function envInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name} must be a whole number ≥ 1, not '${raw}'`);
  return n;
}

/**
 * CPU time (user + system, ms) used so far by this process and, when given, another process
 * (read from /proc, so Linux only; undefined elsewhere).
 */
export function cpuMs(otherPid) {
  const own = process.cpuUsage();
  let other;
  if (otherPid !== undefined) {
    try {
      // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
      const stat = readFileSync(`/proc/${otherPid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      other = ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
    } catch {
      other = undefined;
    }
  }
  return { self: (own.user + own.system) / 1000, other };
}

/** USER_HZ: 100 on every common Linux build. */
const CLOCK_TICKS = 100;

/** p-th percentile (0..100) of numbers, nearest-rank. */
export function percentile(values, p) {
  if (values.length === 0) return undefined;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

/** A process's resident set size in MiB (from /proc), or undefined when it cannot be read. */
export function rssMiB(pid) {
  try {
    const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
    return Number.isFinite(kb) ? round(kb / 1024, 0) : undefined;
  } catch {
    return undefined;
  }
}

export const round = (x, digits = 2) => (x === undefined || !Number.isFinite(x) ? x : Number(x.toFixed(digits)));

/** A free loopback port (bound, read, released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `limit` workers over `count` jobs: `job(i)` for i in 0..count-1, until `shouldStop()`. */
export async function pool(count, limit, job, shouldStop = () => false) {
  let next = 0;
  const worker = async (w) => {
    while (next < count && !shouldStop()) {
      const i = next++;
      await job(i, w);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, (_, w) => worker(w)));
  return next;
}

/** Cleanups, run newest first. `onExit` ones are synchronous and also run at process exit. */
const cleanups = [];
const exitHooks = new Set();

/** Registers an async cleanup; returns a function that runs it at most once (and unregisters it). */
export function addCleanup(fn) {
  let done;
  const run = () => (done ??= Promise.resolve().then(fn).catch((e) => log(`cleanup failed: ${e?.message ?? e}`)));
  const entry = { run };
  cleanups.push(entry);
  return () => {
    const i = cleanups.indexOf(entry);
    if (i >= 0) cleanups.splice(i, 1);
    return run();
  };
}

/** A synchronous hook run when the process exits for any reason (e.g. SIGKILL a child). */
export function onExit(fn) {
  exitHooks.add(fn);
  return () => exitHooks.delete(fn);
}

process.on("exit", () => {
  for (const fn of exitHooks) {
    try {
      fn();
    } catch {
      // exiting anyway
    }
  }
});

async function runCleanups(limitMs) {
  const all = (async () => {
    while (cleanups.length > 0) await cleanups.pop().run();
  })();
  await Promise.race([all, sleep(limitMs)]);
}

/**
 * Runs a benchmark body and prints its result as one JSON document. The process always ends:
 * after `deadlineMs`, on SIGINT/SIGTERM, or on an error, cleanups run (bounded) and it exits.
 */
export function runBenchmark(name, deadlineMs, body) {
  let finished = false;
  const finish = async (code, why) => {
    if (finished) return;
    finished = true;
    if (why) log(`${name}: ${why}`);
    await runCleanups(20_000);
    process.exit(code);
  };
  const deadline = setTimeout(() => void finish(1, `overall deadline of ${deadlineMs / 1000} s passed; stopping`), deadlineMs);
  for (const signal of ["SIGINT", "SIGTERM"]) process.once(signal, () => void finish(1, `${signal} received; stopping`));
  process.on("unhandledRejection", (e) => void finish(1, `unhandled rejection: ${e?.stack ?? e}`));
  process.on("uncaughtException", (e) => void finish(1, `uncaught exception: ${e?.stack ?? e}`));
  const started = Date.now();
  // Other work on the machine skews every figure: say how busy it was when this started.
  const loadAverage1mAtStart = round(os.loadavg()[0]);
  const context = { deadlineAt: started + deadlineMs, remainingMs: () => started + deadlineMs - Date.now() };
  (async () => {
    const result = await body(context);
    await runCleanups(20_000);
    clearTimeout(deadline);
    const doc = { benchmark: name, machine: machine(), durationS: round((Date.now() - started) / 1000, 1), loadAverage1mAtStart, ...result };
    finished = true;
    process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`, () => process.exit(0));
  })().catch((e) => void finish(1, `failed: ${e?.stack ?? e}`));
}
