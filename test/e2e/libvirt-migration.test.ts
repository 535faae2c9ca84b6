/**
 * Live migration end to end on real libvirt, through the product path: a real etcd, a controller
 * process, two `berth-agent --driver libvirt` processes and the `berth` CLI. Host A's agent drives
 * the system libvirtd; host B's drives a second libvirtd on this machine (`startSecondLibvirtd`:
 * its own host UUID, sockets, state and a storage pool of the same name in another directory).
 * Each agent's `--migration-uri` is where the OTHER daemon reaches its own: B's socket for A's
 * libvirtd, and for B's libvirtd (in its own mount namespace) the system socket as that namespace
 * sees it (`SecondLibvirtd.systemUri`); the data channel is `tcp://127.0.0.1` both ways (a UNIX
 * socket connection has no host name to send the data to).
 *
 * A small TCG VM created on A is moved with `berth vm migrate --to B --wait`, brought back by
 * `berth host drain B --wait`, and then a migration slowed to 1 MiB/s (`virsh migrate-setspeed` on
 * the source domain) is stopped with `berth migration abort --wait`: FAILED, the same qemu still
 * running on A, nothing left on B. After each step `virsh list` on both daemons says where the
 * domain runs (its UUID is the VM's id).
 *
 * Skipped with the reason where etcd, libvirt, root or `unshare` is missing; a failure under CI.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { HostState, MigrationPhase, VmPhase } from "@berth/api";
import { etcdAvailable, startEtcd, type RunningEtcd } from "../support/etcd.js";
import { clusterClient, type ClusterClient } from "../support/grpc.js";
import { ensureLibvirt, qemuPid, removeDomains, secondLibvirtdMissing, startSecondLibvirtd, virshOn, type SecondLibvirtd } from "../support/libvirt.js";
import { describeRequiring } from "../support/requirements.js";
import { AGENT_BIN, CLI_BIN, CONTROLLER_BIN, defaultTlsEnv, freePort, Proc, waitFor } from "../support/processes.js";

const run = Date.now().toString(36).slice(-5);
const vmName = `mig-${run}`;
const domainName = `berth-${vmName}`;
const HOST_A = "lv-a";
const HOST_B = "lv-b";

function exec(file: string, args: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, env: { ...process.env, LC_ALL: "C", ...defaultTlsEnv(args[0] ?? "", args.slice(1), {}) } }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
  });
}

const libvirt = await ensureLibvirt();
const etcdCheck = etcdAvailable();
const missing = "skip" in libvirt ? libvirt.skip : !etcdCheck.ok ? etcdCheck.reason : secondLibvirtdMissing();

describeRequiring("end to end: live migration between two berth-agent --driver libvirt hosts", missing, () => {
  const uriA = "skip" in libvirt ? "" : libvirt.uri;
  const pool = "skip" in libvirt ? "" : libvirt.storagePool;
  let etcd: RunningEtcd;
  let second: SecondLibvirtd;
  let dir: string;
  let address: string;
  let controller: Proc;
  let agentA: Proc;
  let agentB: Proc;
  let client: ClusterClient;
  let vmId = "";

  const uriB = (): string => second.uri;
  const berth = (...args: string[]) => exec(process.execPath, [CLI_BIN, "--controller", address, ...args]);
  const startAgent = (hostId: string, uri: string, migrationUri: string): Proc =>
    new Proc(hostId, AGENT_BIN, [
      "--host-id", hostId,
      "--controller", address,
      "--driver", "libvirt",
      "--libvirt-uri", uri,
      "--storage-pool", pool,
      "--domain-type", "qemu",
      "--migration-uri", migrationUri,
      "--migration-data-uri", "tcp://127.0.0.1",
      "--state-dir", join(dir, hostId),
    ]);
  const vm = async () => (await client.getVm({ name: vmName })).vm;
  const dumpLogs = (): void => console.error([controller, agentA, agentB].map((p) => p?.tail(40)).join("\n") + `\nsecond libvirtd log:\n${second?.logTail(40)}`);
  /** `virsh list --uuid` of one daemon (running domains, or all with `all`). */
  const uuids = async (uri: string, all = false): Promise<string[]> => {
    const r = await virshOn(uri, "list", "--uuid", ...(all ? ["--all"] : []));
    expect(r.ok, r.stderr).toBe(true);
    return r.stdout.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  };
  const volumeExists = async (uri: string): Promise<boolean> => (await virshOn(uri, "vol-info", "--pool", pool, `${vmId}.qcow2`)).ok;
  /** The VM is RUNNING on `host` by its record, and its domain runs on `uri` and on no other daemon. */
  const expectRunningOn = async (host: string, uri: string, otherUri: string): Promise<void> => {
    await waitFor(`the VM to be RUNNING on ${host}`, async () => {
      const v = await vm();
      return v?.hostId === host && v.status?.phase === VmPhase.VM_PHASE_RUNNING;
    }, 30_000);
    expect(await uuids(uri)).toContain(vmId);
    expect((await virshOn(uri, "domstate", vmId)).stdout.trim()).toBe("running");
    expect((await virshOn(uri, "dominfo", vmId)).stdout).toMatch(/^Persistent:\s+yes/m);
    expect(await uuids(otherUri, true)).not.toContain(vmId);
    expect(await volumeExists(uri)).toBe(true);
    expect(await volumeExists(otherUri)).toBe(false);
  };
  const withLogs = async <T>(body: () => Promise<T>): Promise<T> => {
    try {
      return await body();
    } catch (e) {
      dumpLogs();
      throw e;
    }
  };

  beforeAll(async () => {
    [etcd, second] = await Promise.all([startEtcd(), startSecondLibvirtd()]);
    dir = mkdtempSync(join(tmpdir(), "berth-e2e-migration-"));
    address = `127.0.0.1:${await freePort()}`;
    controller = new Proc("controller", CONTROLLER_BIN, ["--listen", address, "--etcd", etcd.endpoint, "--report-interval", "500"]);
    // Each --migration-uri is where the other daemon reaches this one.
    agentA = startAgent(HOST_A, uriA, second.systemUri);
    agentB = startAgent(HOST_B, second.uri, second.uri);
    client = clusterClient(address);
    await withLogs(() =>
      waitFor("both libvirt hosts to be ready", async () => {
        const { hosts } = await client.listHosts({});
        return [HOST_A, HOST_B].every((id) => hosts.some((h) => h.id === id && h.state === HostState.HOST_STATE_READY && h.driver === "libvirt"));
      }, 45_000),
    );
  }, 90_000);

  afterAll(async () => {
    client?.close();
    await Promise.all([agentA?.stop(), agentB?.stop()]);
    await controller?.stop();
    await etcd?.stop();
    await removeDomains(domainName, pool, vmId ? [`${vmId}.qcow2`] : []);
    if (second) {
      await removeDomains(domainName, pool, vmId ? [`${vmId}.qcow2`] : [], second.uri);
      await second.stop();
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it("creates the VM on host A (B cordoned meanwhile)", { timeout: 60_000 }, async () => {
    expect((await berth("host", "cordon", HOST_B)).code).toBe(0);
    await withLogs(async () => {
      const r = await berth("vm", "create", vmName, "--vcpus", "1", "--memory", "128MiB", "--disk", "1GiB", "--wait", "--wait-timeout", "45");
      expect(r.code, r.stderr).toBe(0);
    });
    expect((await berth("host", "uncordon", HOST_B)).code).toBe(0);
    vmId = (await vm())!.id;
    await expectRunningOn(HOST_A, uriA, uriB());
  });

  it("`berth vm migrate --to B --wait` moves it live to B", { timeout: 60_000 }, async () => {
    expect(qemuPid(domainName)).toBeGreaterThan(0);
    const started = Date.now();
    const r = await withLogs(async () => {
      const r = await berth("vm", "migrate", vmName, "--to", HOST_B, "--wait", "--wait-timeout", "45");
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
      return r;
    });
    console.info(`A → B: berth vm migrate --wait took ${Date.now() - started} ms`);
    expect(r.stdout).toMatch(/COMPLETED/);
    const { migration } = await client.getMigration({ name: vmName });
    expect(migration).toMatchObject({ vmId, sourceHost: HOST_A, targetHost: HOST_B, phase: MigrationPhase.MIGRATION_PHASE_COMPLETED, targetDriver: "libvirt" });
    await withLogs(() => expectRunningOn(HOST_B, uriB(), uriA));
    expect(qemuPid(domainName)).toBeUndefined(); // no qemu of it left under the system daemon
  });

  it("`berth host drain B --wait` brings it back to A", { timeout: 60_000 }, async () => {
    const started = Date.now();
    await withLogs(async () => {
      const r = await berth("host", "drain", HOST_B, "--wait", "--wait-timeout", "45");
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    });
    console.info(`B → A: berth host drain --wait took ${Date.now() - started} ms`);
    const { migration } = await client.getMigration({ name: vmName });
    expect(migration).toMatchObject({ vmId, sourceHost: HOST_B, targetHost: HOST_A, phase: MigrationPhase.MIGRATION_PHASE_COMPLETED });
    await withLogs(() => expectRunningOn(HOST_A, uriA, uriB()));
    expect(qemuPid(domainName)).toBeGreaterThan(0);
    expect((await berth("host", "uncordon", HOST_B)).code).toBe(0);
  });

  it("`berth migration abort --wait` mid-flight: FAILED, the same qemu runs on A, nothing left on B", { timeout: 90_000 }, async () => {
    const pid = qemuPid(domainName);
    expect(pid).toBeGreaterThan(0);
    // 1 MiB/s: the 1 GiB disk would take ~17 minutes, so the abort lands mid-transfer.
    const speed = await virshOn(uriA, "migrate-setspeed", domainName, "1");
    expect(speed.ok, speed.stderr).toBe(true);
    const r = await berth("vm", "migrate", vmName, "--to", HOST_B);
    expect(r.code, r.stderr).toBe(0);
    await withLogs(() =>
      waitFor("the migration to be moving data", async () => {
        const { migration } = await client.getMigration({ name: vmName });
        return migration?.phase === MigrationPhase.MIGRATION_PHASE_MIGRATING && (migration.progress?.dataProcessedBytes ?? 0) > 0;
      }, 45_000, 200),
    );
    expect((await virshOn(uriB(), "domstate", "--reason", vmId)).stdout.trim()).toBe("paused (migrating)"); // arriving on B
    const started = Date.now();
    const aborted = await berth("migration", "abort", vmName, "--wait", "--wait-timeout", "45");
    if (aborted.code !== 0) dumpLogs();
    expect(aborted.code, `${aborted.stdout}\n${aborted.stderr}`).toBe(0);
    console.info(`abort: berth migration abort --wait took ${Date.now() - started} ms`);
    const { migration } = await client.getMigration({ name: vmName });
    expect(migration).toMatchObject({ vmId, sourceHost: HOST_A, targetHost: HOST_B, phase: MigrationPhase.MIGRATION_PHASE_FAILED, abortRequested: true });
    // FAILED only once B has answered its abort, which removes what it prepared.
    expect(await volumeExists(uriB())).toBe(false);
    await withLogs(() => expectRunningOn(HOST_A, uriA, uriB()));
    expect(qemuPid(domainName)).toBe(pid);
  });
});
