// A real libvirtd for tests: found running, or prepared and started here when we are root.
// Helpers for the conformance harness: stop/start libvirtd behind a driver's back, find and kill a
// domain's qemu process.
import { execFile, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeRequiring } from "./requirements.js";

export const TEST_URI = "qemu:///system";
/** The dir storage pool the test suites use (defined and started by `ensureLibvirt`). */
export const TEST_POOL = "berth-test";
const RUN_DIR = "/var/run";
const QEMU_RUN_DIR = "/var/run/libvirt/qemu";

export interface LibvirtTarget {
  uri: string;
  storagePool: string;
  domainType: "kvm" | "qemu";
}
export type EnsureLibvirtResult = LibvirtTarget | { skip: string };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Run {
  ok: boolean;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], timeoutMs = 15_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: "SIGKILL", env: { ...process.env, LC_ALL: "C" } }, (error, stdout, stderr) =>
      resolve({ ok: !error, stdout: String(stdout), stderr: String(stderr) || (error ? error.message : "") }),
    );
  });
}

const virsh = (...args: string[]): Promise<Run> => run("virsh", ["-q", "-c", TEST_URI, ...args]);

function installed(binary: string): boolean {
  const r = spawnSync(binary, ["--version"], { encoding: "utf8", timeout: 10_000 });
  return !r.error;
}

const isRoot = (): boolean => typeof process.getuid === "function" && process.getuid() === 0;

async function waitForVirsh(timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await virsh("version")).ok) return true;
    await sleep(100);
  }
  return false;
}

let ensured: Promise<EnsureLibvirtResult> | undefined;

/**
 * Makes a libvirtd answer on qemu:///system and a dir storage pool exist for the tests. If virsh does
 * not answer and we are root, prepares the host (run and log directories, the kvm/libvirt-qemu
 * groups and user, /dev/kvm group kvm mode 660) and starts `virtlogd -d` and `libvirtd -d`.
 * The domain type is kvm when /dev/kvm exists and a probe (`virsh domcapabilities --virttype kvm`)
 * works, else qemu (TCG). Resolves `{ skip: reason }` when libvirt is not installed, we are not
 * root, or the daemon will not start. Memoized per process.
 */
export function ensureLibvirt(): Promise<EnsureLibvirtResult> {
  ensured ??= doEnsureLibvirt();
  return ensured;
}

async function doEnsureLibvirt(): Promise<EnsureLibvirtResult> {
  if (!installed("virsh")) return { skip: "virsh is not installed (install libvirt-clients, libvirt-daemon-system, qemu-system-x86)" };
  if (!(await virsh("version")).ok) {
    if (!isRoot()) return { skip: `libvirtd does not answer on ${TEST_URI} and we are not root (cannot start it)` };
    if (!installed("libvirtd")) return { skip: "libvirtd is not installed (install libvirt-daemon-system)" };
    prepareHost();
    await startDaemon("virtlogd");
    await startDaemon("libvirtd");
    if (!(await waitForVirsh(20_000))) return { skip: `libvirtd started but ${TEST_URI} does not answer` };
  } else if (!isRoot()) {
    return { skip: "the libvirt tests need root (they kill libvirtd and qemu processes)" };
  }
  const domainType = existsSync("/dev/kvm") && (await virsh("domcapabilities", "--virttype", "kvm")).ok ? "kvm" : "qemu";
  const pool = await ensurePool();
  if ("skip" in pool) return pool;
  return { uri: TEST_URI, storagePool: pool.name, domainType };
}

function prepareHost(): void {
  for (const dir of ["/var/log/libvirt", "/var/run/libvirt"]) mkdirSync(dir, { recursive: true });
  const has = (db: string, name: string): boolean => spawnSync("getent", [db, name]).status === 0;
  if (!has("group", "kvm")) spawnSync("groupadd", ["-r", "kvm"]);
  if (!has("group", "libvirt-qemu")) spawnSync("groupadd", ["-r", "libvirt-qemu"]);
  if (!has("passwd", "libvirt-qemu")) spawnSync("useradd", ["-r", "-g", "libvirt-qemu", "-G", "kvm", "libvirt-qemu"]);
  if (existsSync("/dev/kvm")) {
    spawnSync("chgrp", ["kvm", "/dev/kvm"]);
    spawnSync("chmod", ["660", "/dev/kvm"]);
  }
}

async function startDaemon(name: "virtlogd" | "libvirtd"): Promise<void> {
  if (daemonPid(name) !== undefined) return;
  await run(name, ["-d"]);
}

async function ensurePool(): Promise<{ name: string } | { skip: string }> {
  const info = await virsh("pool-info", TEST_POOL);
  if (!info.ok) {
    const dir = join(tmpdir(), TEST_POOL);
    mkdirSync(dir, { recursive: true });
    const defined = await virsh("pool-define-as", TEST_POOL, "dir", "--target", dir);
    if (!defined.ok) return { skip: `cannot define storage pool ${TEST_POOL}: ${defined.stderr.trim()}` };
  }
  if (!/State:\s+running/.test((await virsh("pool-info", TEST_POOL)).stdout)) {
    const started = await virsh("pool-start", TEST_POOL);
    if (!started.ok) return { skip: `cannot start storage pool ${TEST_POOL}: ${started.stderr.trim()}` };
  }
  return { name: TEST_POOL };
}

/**
 * `describe` for suites that need a real libvirtd (and whatever else `alsoMissing` says is absent):
 * skipped with the reason where something is missing, a failure in CI (see `describeRequiring`).
 * The body gets the target, resolved before `describe` is called.
 */
export async function describeWithLibvirt(name: string, body: (target: LibvirtTarget) => void, alsoMissing?: string): Promise<void> {
  const result = await ensureLibvirt();
  const target = "skip" in result ? { uri: TEST_URI, storagePool: TEST_POOL, domainType: "qemu" as const } : result;
  describeRequiring(name, "skip" in result ? result.skip : alsoMissing, () => body(target));
}

// ---- daemons -----------------------------------------------------------------------------------

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, "utf8").trim());
    return Number.isSafeInteger(pid) && pid > 0 && pidAlive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The pid of a running daemon started with `-d` (from its pid file), or undefined. */
export function daemonPid(name: "libvirtd" | "virtlogd" | "virtqemud"): number | undefined {
  return readPid(join(RUN_DIR, `${name}.pid`));
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!pidAlive(pid)) return true;
    await sleep(50);
  }
  return !pidAlive(pid);
}

/**
 * Stops the libvirt daemon (libvirtd, or virtqemud on a modular install): SIGTERM, then SIGKILL
 * after 10 s. Running qemu domains survive (qemu is not a child of the daemon). Resolves once
 * `virsh` no longer answers. Does nothing if no daemon runs. Not for hosts where systemd
 * socket-activates libvirtd (the next connection would start it again).
 */
export async function stopLibvirtd(): Promise<void> {
  for (const name of ["libvirtd", "virtqemud"] as const) {
    const pid = daemonPid(name);
    if (pid === undefined) continue;
    process.kill(pid, "SIGTERM");
    if (!(await waitGone(pid, 10_000))) {
      process.kill(pid, "SIGKILL");
      await waitGone(pid, 5_000);
    }
  }
}

/** Starts libvirtd again (`libvirtd -d`, virtlogd too if needed) and waits until virsh answers (20 s). */
export async function startLibvirtd(): Promise<void> {
  await startDaemon("virtlogd");
  if (daemonPid("libvirtd") === undefined && daemonPid("virtqemud") === undefined) await run("libvirtd", ["-d"]);
  if (!(await waitForVirsh(20_000))) throw new Error(`libvirtd did not answer on ${TEST_URI} within 20 s`);
}

/** The pid of a running domain's qemu process (from /var/run/libvirt/qemu/<name>.pid), or undefined. */
export function qemuPid(domainName: string): number | undefined {
  return readPid(join(QEMU_RUN_DIR, `${domainName}.pid`));
}

/**
 * Kills the domain's qemu process with SIGKILL, as an OOM kill would, and waits until it is gone.
 * Throws if the domain has no running qemu process.
 */
export async function killQemu(domainName: string): Promise<void> {
  const pid = qemuPid(domainName);
  if (pid === undefined) throw new Error(`domain ${domainName} has no running qemu process`);
  process.kill(pid, "SIGKILL");
  if (!(await waitGone(pid, 10_000))) throw new Error(`qemu process ${pid} of ${domainName} did not exit`);
}

/**
 * The libvirt domain name of the driver's domain `vmId` (prefix + VM name), for `qemuPid` and
 * `killQemu`. Throws if the driver does not list it.
 */
export async function libvirtDomainName(driver: { list(): Promise<{ vmId: string; name: string }[]>; domainName(name: string): string }, vmId: string): Promise<string> {
  const domain = (await driver.list()).find((d) => d.vmId === vmId);
  if (!domain) throw new Error(`domain ${vmId} is not listed`);
  return driver.domainName(domain.name);
}

/**
 * Removes every domain whose name starts with `namePrefix` (destroyed first), their volumes
 * (`<uuid>.qcow2` in `storagePool`), and the volumes named in `volumeNames` (e.g. `<vmId>.qcow2`
 * of every vmId a suite used, for volumes whose domain is already gone). Best effort: never throws.
 * For suites' afterAll.
 */
export async function removeDomains(namePrefix: string, storagePool = TEST_POOL, volumeNames: readonly string[] = []): Promise<void> {
  const domains = (await virsh("list", "--all", "--uuid", "--name")).stdout
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter((parts): parts is [string, string] => parts.length === 2 && parts[1]!.startsWith(namePrefix));
  const volumes = new Set(volumeNames);
  for (const [uuid, name] of domains) {
    await virsh("destroy", name);
    await virsh("undefine", name, "--managed-save", "--snapshots-metadata", "--nvram");
    await virsh("undefine", name);
    volumes.add(`${uuid}.qcow2`);
  }
  for (const volume of volumes) await virsh("vol-delete", "--pool", storagePool, volume);
}
