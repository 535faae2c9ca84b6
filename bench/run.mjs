// Runs the benchmarks (every bench/*.bench.mjs, or the ones named on the command line) one after
// the other, each in its own process, and prints one JSON document:
//   { "machine": {...}, "benchmarks": { "<name>": <that benchmark's JSON> } }
// Progress goes to stderr. Each benchmark has an outer deadline here too: past it, its whole
// process group (the benchmark and anything it started, e.g. etcd) is sent SIGTERM, then SIGKILL.
//
//   npm run bench                      build, then run every benchmark
//   node bench/run.mjs store-writes    run only these (after `npm run build`)
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { machine } from "./lib/harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const SUFFIX = ".bench.mjs";
/** Outer deadline per benchmark; each one also stops itself well before this. */
const DEADLINE_MS = Number(process.env.BERTH_BENCH_DEADLINE_MS) || 10 * 60_000;
const GRACE_MS = 20_000;

const available = readdirSync(here)
  .filter((f) => f.endsWith(SUFFIX))
  .map((f) => f.slice(0, -SUFFIX.length))
  .sort();
const asked = process.argv.slice(2).map((a) => a.replace(/\.bench\.mjs$/, "").replace(/^.*\//, ""));
const unknown = asked.filter((a) => !available.includes(a));
if (unknown.length > 0) {
  process.stderr.write(`unknown benchmark(s): ${unknown.join(", ")}; available: ${available.join(", ")}\n`);
  process.exit(2);
}
const selected = asked.length > 0 ? asked : available;

let current; // the child running now, for the signal handlers
let interrupted = false;
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    interrupted = true;
    process.stderr.write(`[run] ${signal}: stopping the running benchmark\n`);
    if (current) killGroup(current, "SIGTERM");
  });
}
process.on("exit", () => {
  if (current) killGroup(current, "SIGKILL");
});

const results = {};
let failed = false;
for (const name of selected) {
  if (interrupted) break;
  process.stderr.write(`[run] ${name}\n`);
  const started = Date.now();
  const outcome = await runOne(name);
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  if (outcome.result) {
    const { machine: _, ...rest } = outcome.result;
    results[name] = rest;
    process.stderr.write(`[run] ${name}: done in ${seconds} s\n`);
  } else {
    failed = true;
    results[name] = { error: outcome.error };
    process.stderr.write(`[run] ${name}: FAILED after ${seconds} s: ${outcome.error}\n`);
  }
}

process.stdout.write(`${JSON.stringify({ machine: machine(), benchmarks: results }, null, 2)}\n`, () =>
  process.exit(failed || interrupted ? 1 : 0),
);

/** Runs one benchmark in its own process group with its own temp dir; resolves `{ result }` or `{ error }`. */
async function runOne(name) {
  const tmp = await mkdtemp(join(tmpdir(), `berth-bench-${name}-`));
  const child = spawn(process.execPath, [join(here, `${name}${SUFFIX}`)], {
    detached: true, // own process group: a timeout kills the benchmark and everything it started
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, BERTH_BENCH_TMP: tmp },
  });
  current = child;
  let stdout = "";
  child.stdout.on("data", (d) => (stdout += d.toString()));
  let timedOut = false;
  const term = setTimeout(() => {
    timedOut = true;
    process.stderr.write(`[run] ${name}: over ${DEADLINE_MS / 1000} s; terminating it\n`);
    killGroup(child, "SIGTERM");
  }, DEADLINE_MS);
  const kill = setTimeout(() => killGroup(child, "SIGKILL"), DEADLINE_MS + GRACE_MS);
  const { code, signal, spawnError } = await new Promise((resolve) => {
    child.once("error", (e) => resolve({ spawnError: e }));
    child.once("close", (code, signal) => resolve({ code, signal }));
  });
  clearTimeout(term);
  clearTimeout(kill);
  killGroup(child, "SIGKILL"); // anything the benchmark left behind
  current = undefined;
  await rm(tmp, { recursive: true, force: true });
  if (spawnError) return { error: `could not start: ${spawnError.message}` };
  if (timedOut) return { error: `did not finish within ${DEADLINE_MS / 1000} s` };
  if (code !== 0) return { error: `exited with ${code ?? signal}` };
  try {
    return { result: JSON.parse(stdout) };
  } catch (e) {
    return { error: `did not print one JSON document: ${e.message}` };
  }
}

function killGroup(child, signal) {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // the group is gone already
  }
}
