// A real libvirtd for tests: found running, or prepared and started here when we are root.
// Helpers for the conformance harness: stop/start libvirtd behind a driver's back, find and kill a
// domain's qemu process.
import { execFile, spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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

const virshAt = (uri: string, ...args: string[]): Promise<Run> => run("virsh", ["-q", "-c", uri, ...args]);
const virsh = (...args: string[]): Promise<Run> => virshAt(TEST_URI, ...args);

function installed(binary: string): boolean {
  const r = spawnSync(binary, ["--version"], { encoding: "utf8", timeout: 10_000 });
  return !r.error;
}

const isRoot = (): boolean => typeof process.getuid === "function" && process.getuid() === 0;

async function waitForVirsh(timeoutMs: number, uri = TEST_URI): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await virshAt(uri, "version")).ok) return true;
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

async function ensurePool(uri = TEST_URI, dir = join(tmpdir(), TEST_POOL)): Promise<{ name: string } | { skip: string }> {
  const info = await virshAt(uri, "pool-info", TEST_POOL);
  if (!info.ok) {
    mkdirSync(dir, { recursive: true });
    const defined = await virshAt(uri, "pool-define-as", TEST_POOL, "dir", "--target", dir);
    if (!defined.ok) return { skip: `cannot define storage pool ${TEST_POOL}: ${defined.stderr.trim()}` };
  }
  if (!/State:\s+running/.test((await virshAt(uri, "pool-info", TEST_POOL)).stdout)) {
    const started = await virshAt(uri, "pool-start", TEST_POOL);
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
 * (`<uuid>.qcow2` and the seed `<uuid>-seed.iso` in `storagePool`), and the volumes named in `volumeNames` (e.g. `<vmId>.qcow2`
 * of every vmId a suite used, for volumes whose domain is already gone). Best effort: never throws.
 * For suites' afterAll.
 */
export async function removeDomains(namePrefix: string, storagePool = TEST_POOL, volumeNames: readonly string[] = [], uri = TEST_URI): Promise<void> {
  const virsh = (...args: string[]): Promise<Run> => virshAt(uri, ...args);
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
    volumes.add(`${uuid}-seed.iso`);
  }
  for (const volume of volumes) await virsh("vol-delete", "--pool", storagePool, volume);
}

// ---- a second libvirtd on this machine (the other end of a migration) ---------------------------

/** A libvirtd started by {@link startSecondLibvirtd}, with its own host UUID, state and storage pool. */
export interface SecondLibvirtd {
  /** Its connection URI: `qemu+unix:///system?socket=<its socket>`. */
  uri: string;
  /**
   * The system libvirtd's URI as this daemon reaches it, for a migration the other way (this
   * daemon's peer-to-peer connection to the system one): in its mount namespace /run/libvirt is its
   * own, so the system daemon's run directory is bind-mounted at `<dir>/system-run` there first;
   * `qemu+unix:///system?socket=<dir>/system-run/libvirt-sock`. Only works from inside that
   * namespace (outside, the directory is empty): it is for this daemon, not for clients.
   */
  systemUri: string;
  /** The host UUID it reports (the system libvirtd's differs, so libvirt allows a migration between them). */
  hostUuid: string;
  /** A dir pool named {@link TEST_POOL}, like the system daemon's but in another directory. */
  storagePool: string;
  /** Its private directory (config, sockets, state, logs, pool). */
  dir: string;
  /** The tail of its log, for a failing test's output. */
  logTail(lines?: number): string;
  /**
   * Removes every domain named with `namePrefix` (when given), stops the daemon (SIGTERM, then
   * SIGKILL) and removes its directory. Never throws.
   */
  stop(namePrefix?: string): Promise<void>;
}

/** Why {@link startSecondLibvirtd} cannot work here, or undefined when it can (checked without starting anything). */
export function secondLibvirtdMissing(): string | undefined {
  if (!isRoot()) return "a second libvirtd needs root";
  if (!installed("libvirtd")) return "libvirtd is not installed (install libvirt-daemon)";
  const probe = spawnSync("unshare", ["--mount", "--propagation", "private", "true"], { encoding: "utf8", timeout: 10_000 });
  if (probe.error || probe.status !== 0) return `cannot make a private mount namespace for a second libvirtd (unshare --mount: ${probe.error?.message ?? probe.stderr.trim()})`;
  return undefined;
}

/** The directories a privileged libvirtd and its QEMU driver keep their configuration and state in (fixed at build time). */
const LIBVIRT_DIRS = { etc: "/etc/libvirt", run: "/run/libvirt", lib: "/var/lib/libvirt", cache: "/var/cache/libvirt", log: "/var/log/libvirt" } as const;

/**
 * Starts a second privileged libvirtd beside the system one, for migrations between two "hosts" on
 * this machine. A root libvirtd's QEMU driver keeps its state in fixed directories (/etc/libvirt,
 * /run/libvirt, /var/lib/libvirt, ...; only `qemu:///embed` moves them), so two of them would read
 * each other's domains; this one runs in a private mount namespace (`unshare --mount`) where its
 * own directories are bind-mounted over those, with its own libvirtd.conf (a fresh `host_uuid`:
 * libvirt refuses a migration between two daemons with the same host UUID) and qemu.conf:
 * `stdio_handler = "file"` (no virtlogd of its own) and no cgroup controllers (both daemons would
 * name a migrating domain's cgroup machine/qemu-<id>-<name>, which clash when the ids do).
 * Its socket stays reachable from outside through its directory, so the system libvirtd can open
 * `qemu+unix:///system?socket=...` for a peer-to-peer migration. The directory is world-readable:
 * its QEMU runs as the libvirt-qemu user and must open the volumes in its pool.
 * Needs the system daemon to be up (see `ensureLibvirt`) for its run directories and users.
 */
export async function startSecondLibvirtd(): Promise<SecondLibvirtd> {
  const missing = secondLibvirtdMissing();
  if (missing) throw new Error(missing);
  const dir = mkdtempSync(join(tmpdir(), "berth-libvirtd2-"));
  chmodSync(dir, 0o755);
  const own = Object.fromEntries(Object.keys(LIBVIRT_DIRS).map((k) => [k, join(dir, k)])) as Record<keyof typeof LIBVIRT_DIRS, string>;
  for (const d of Object.values(own)) mkdirSync(d, { recursive: true, mode: 0o755 });
  for (const d of Object.values(LIBVIRT_DIRS)) mkdirSync(d, { recursive: true });
  const poolDir = join(dir, "pool");
  mkdirSync(poolDir, { mode: 0o755 });
  const systemRun = join(dir, "system-run");
  mkdirSync(systemRun, { mode: 0o755 });
  const hostUuid = randomUUID();
  const logFile = join(dir, "libvirtd.log");
  const pidFile = join(dir, "libvirtd.pid");
  writeFileSync(join(own.etc, "libvirtd.conf"), [`host_uuid = "${hostUuid}"`, `log_outputs = "3:file:${logFile}"`, ""].join("\n"));
  writeFileSync(join(own.etc, "qemu.conf"), ['stdio_handler = "file"', "cgroup_controllers = [ ]", ""].join("\n"));
  const script = [
    "set -e",
    // Before its own /run/libvirt hides the system daemon's socket from it (see `systemUri`).
    `mount --bind '${LIBVIRT_DIRS.run}' '${systemRun}'`,
    ...Object.entries(LIBVIRT_DIRS).map(([k, target]) => `mount --bind '${own[k as keyof typeof LIBVIRT_DIRS]}' '${target}'`),
    `exec libvirtd -d --config '${join(own.etc, "libvirtd.conf")}' --pid-file '${pidFile}'`,
  ].join("\n");
  const started = await run("unshare", ["--mount", "--propagation", "private", "sh", "-c", script], 30_000);
  const uri = `qemu+unix:///system?socket=${join(own.run, "libvirt-sock")}`;
  const logTail = (lines = 40): string => {
    try {
      return readFileSync(logFile, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  };
  const daemon: SecondLibvirtd = {
    uri,
    systemUri: `qemu+unix:///system?socket=${join(systemRun, "libvirt-sock")}`,
    hostUuid,
    storagePool: TEST_POOL,
    dir,
    logTail,
    stop: async (namePrefix) => {
      if (namePrefix !== undefined) await removeDomains(namePrefix, TEST_POOL, [], uri).catch(() => undefined);
      const pid = readPid(pidFile);
      const signal = (sig: NodeJS.Signals): void => {
        try {
          process.kill(pid!, sig);
        } catch {
          // already gone
        }
      };
      if (pid !== undefined) {
        signal("SIGTERM");
        if (!(await waitExited(pid, 10_000))) {
          signal("SIGKILL");
          await waitExited(pid, 5_000);
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  if (!started.ok || !(await waitForVirsh(20_000, uri))) {
    const why = `second libvirtd did not answer on ${uri}: ${started.stderr.trim()} ${logTail(10)}`;
    await daemon.stop();
    throw new Error(why);
  }
  const pool = await ensurePool(uri, poolDir);
  if ("skip" in pool) {
    await daemon.stop();
    throw new Error(pool.skip);
  }
  return daemon;
}

/** Gone, or a zombie (a daemonized process is reparented to a pid 1 that may never reap it). */
async function waitExited(pid: number, timeoutMs: number): Promise<boolean> {
  const exited = (): boolean => {
    if (!pidAlive(pid)) return true;
    try {
      return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
    } catch {
      return true;
    }
  };
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited()) return true;
    await sleep(50);
  }
  return exited();
}

/** `virsh -c <uri> <args...>` for suites: ok, stdout, stderr. Never throws. */
export function virshOn(uri: string, ...args: string[]): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  return virshAt(uri, ...args);
}

/**
 * Caps the domain's next live migrations (memory, and disks copied with `--copy-storage-all`) at
 * `mibPerS` MiB/s: `virsh migrate-setspeed`, set before the migration starts (libvirt applies it
 * to the job it starts), checked with `migrate-getspeed`. 0 lifts the cap. Throws if libvirt
 * refuses it.
 */
export async function setMigrationSpeed(uri: string, domainName: string, mibPerS: number): Promise<void> {
  const set = await virshAt(uri, "migrate-setspeed", domainName, String(mibPerS));
  if (!set.ok) throw new Error(`virsh migrate-setspeed ${domainName} ${mibPerS}: ${set.stderr.trim()}`);
  const got = await virshAt(uri, "migrate-getspeed", domainName);
  if (mibPerS !== 0 && Number(got.stdout.trim()) !== mibPerS) throw new Error(`virsh migrate-getspeed ${domainName}: ${got.stdout.trim()} ${got.stderr.trim()}, not ${mibPerS}`);
}

// ---- networks and images for the suites that boot a guest ---------------------------------------

/** libvirt's NAT network (dnsmasq gives its guests addresses): the one the guest-booting suites' NICs use. */
export const TEST_NETWORK = "default";

/**
 * libvirt's stock NAT network, as Debian's libvirt-daemon-config-network ships it: what a machine
 * with only libvirt-daemon lacks (a CI machine: no default.xml anywhere), defined from here then.
 */
const DEFAULT_NETWORK_XML = `<network>
  <name>${TEST_NETWORK}</name>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='on' delay='0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp>
  </ip>
</network>
`;

/**
 * Makes libvirt's network `default` exist and run (defined from libvirt's own default.xml when
 * there is one, else from libvirt's stock definition; started when inactive): its dnsmasq gives
 * guests DHCP leases. Resolves why it cannot (dnsmasq missing, no bridge allowed in this
 * container...), or undefined when it runs.
 */
export async function ensureDefaultNetwork(uri = TEST_URI): Promise<string | undefined> {
  const info = await virshAt(uri, "net-info", TEST_NETWORK);
  if (!info.ok) {
    let template = ["/usr/share/libvirt/networks/default.xml", "/etc/libvirt/qemu/networks/default.xml"].find((f) => existsSync(f));
    const scratch = template ? undefined : mkdtempSync(join(tmpdir(), "berth-net-"));
    if (scratch) writeFileSync((template = join(scratch, "default.xml")), DEFAULT_NETWORK_XML);
    const defined = await virshAt(uri, "net-define", template!);
    if (scratch) rmSync(scratch, { recursive: true, force: true });
    if (!defined.ok) return `cannot define libvirt's network '${TEST_NETWORK}': ${defined.stderr.trim()}`;
  }
  if (!/^Active:\s+yes/m.test((await virshAt(uri, "net-info", TEST_NETWORK)).stdout)) {
    const started = await virshAt(uri, "net-start", TEST_NETWORK);
    if (!started.ok) return `cannot start libvirt's network '${TEST_NETWORK}' (it needs dnsmasq-base and a bridge): ${started.stderr.trim()}`;
  }
  return undefined;
}

/** Removes pool volumes by name (images, data volumes, seeds a suite made). Best effort: never throws. */
export async function removeVolumes(names: readonly string[], storagePool = TEST_POOL, uri = TEST_URI): Promise<void> {
  for (const name of names) await virshAt(uri, "vol-delete", "--pool", storagePool, name);
}
