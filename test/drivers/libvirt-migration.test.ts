/**
 * Live migration through the libvirt driver, for real: two libvirt daemons on this one machine —
 * the system libvirtd (the source) and a second libvirtd (the destination) that `startSecondLibvirtd`
 * runs in a private mount namespace with its own configuration, sockets, state, logs, storage pool
 * directory and `host_uuid` (libvirt refuses a migration between two ends with one host UUID).
 * A small TCG domain (type 'qemu': no KVM needed) with a 1 GiB qcow2 volume is migrated with
 * `prepareIncoming` (destination) → `migrateOut` (source) → `finishIncoming` (destination).
 *
 * Storage: both daemons have a dir pool of the same name (the domain's disk is `<source pool=...
 * volume=...>`, so it resolves on both ends) in two different directories, and the driver copies
 * the disk with `--copy-storage-all`. One shared directory would not do: the destination's NBD
 * server would write the copy onto the very file the source's QEMU is running from.
 * Data channel: the destination is reached over a UNIX socket, so its driver sets
 * `migrationDataUri: tcp://127.0.0.1` (passed on as `--migrateuri`).
 * Bandwidth is set with `virsh migrate-setspeed`: 200 MiB/s for the migration that completes (so
 * progress samples see data move), 1 MiB/s for the abort and the deadline (a 1 GiB disk would
 * take about 17 minutes to copy).
 *
 * A VM over an image (the tiny guest, test/support/tiny-image.ts) with a cloud-init seed and a data
 * volume moves with `--copy-storage-inc`: the destination's `prepareIncoming` fetched the image into
 * its own pool and made the overlay over it, so only the overlay and the volume travel; the bytes on
 * the volume and on the disk are read back at the destination (`qemu-io`) while the guest runs there.
 * That case is skipped where the tiny image cannot be built.
 *
 * Skipped with the reason where libvirt is missing or we are not root; a failure under CI.
 */
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, expect, it } from "vitest";
import { DomainState } from "@berth/api";
import {
  dataVolumeName,
  imageVolumeName,
  LibvirtDriver,
  seedVolumeName,
  volumeName,
  type DomainSpec,
  type DriverEvent,
  type MigrationProgress,
} from "@berth/hypervisor";
import { ensureLibvirt, qemuPid, removeDomains, removeVolumes, secondLibvirtdMissing, startSecondLibvirtd, virshOn, type SecondLibvirtd } from "../support/libvirt.js";
import { buildTinyImage, tinyImageMissing } from "../support/tiny-image.js";
import { describeRequiring } from "../support/requirements.js";
import { waitFor } from "../support/processes.js";

const PREFIX = `berth-m${process.pid}-${randomUUID().slice(0, 6)}-`;
const GIB = 2 ** 30;

const libvirt = await ensureLibvirt();
const missing = "skip" in libvirt ? libvirt.skip : secondLibvirtdMissing();

describeRequiring("libvirt live migration between two daemons", missing, () => {
  const sourceUri = "skip" in libvirt ? "" : libvirt.uri;
  const pool = "skip" in libvirt ? "" : libvirt.storagePool;
  let second: SecondLibvirtd;
  let source: LibvirtDriver;
  let dest: LibvirtDriver;
  const vmIds: string[] = [];
  /** Pool volumes a case made beyond the domains' disks (images, data volumes), removed on both daemons. */
  const poolVolumes: string[] = [];

  const spec = (name: string): DomainSpec => {
    const vmId = randomUUID();
    vmIds.push(vmId);
    return { vmId, name, generation: 1, resources: { vcpus: 1, memoryMib: 128, diskGib: 1 } };
  };
  /** Names of the domains a daemon has (`virsh list --name`, with `--all` for inactive ones too). */
  const names = async (uri: string, all = false): Promise<string[]> => {
    const r = await virshOn(uri, "list", "--name", ...(all ? ["--all"] : []));
    expect(r.ok, r.stderr).toBe(true);
    return r.stdout.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  };
  const volumeExists = async (uri: string, vmId: string): Promise<boolean> => (await virshOn(uri, "vol-info", "--pool", pool, volumeName(vmId))).ok;
  const setSpeed = async (domain: string, mibPerS: number): Promise<void> => {
    const r = await virshOn(sourceUri, "migrate-setspeed", domain, String(mibPerS));
    expect(r.ok, r.stderr).toBe(true);
  };
  /** Defines and starts `s` on the source; resolves its libvirt name. */
  const running = async (s: DomainSpec): Promise<string> => {
    await source.define(s);
    expect((await source.start(s.vmId)).state).toBe(DomainState.DOMAIN_STATE_RUNNING);
    return source.domainName(s.name);
  };
  const dumpLogs = (): void => console.error(`second libvirtd log:\n${second?.logTail(60)}`);

  beforeAll(async () => {
    second = await startSecondLibvirtd();
    const sourceHost = (await virshOn(sourceUri, "capabilities")).stdout.match(/<uuid>([^<]+)<\/uuid>/)?.[1];
    expect(sourceHost).toBeDefined();
    expect(sourceHost).not.toBe(second.hostUuid);
    source = await LibvirtDriver.open({ uri: sourceUri, storagePool: pool, domainType: "qemu", namePrefix: PREFIX });
    dest = await LibvirtDriver.open({
      uri: second.uri,
      storagePool: second.storagePool,
      domainType: "qemu",
      namePrefix: PREFIX,
      migrationUri: second.uri,
      migrationDataUri: "tcp://127.0.0.1",
    });
  }, 60_000);

  afterAll(async () => {
    await source?.close();
    await dest?.close();
    await removeDomains(PREFIX, pool, vmIds.map(volumeName));
    await removeVolumes(poolVolumes, pool);
    await second?.stop(PREFIX);
  }, 90_000);

  it("moves a running domain live: prepareIncoming → migrateOut → finishIncoming; progress is reported", async () => {
    const s = spec("live");
    const events: DriverEvent[] = [];
    const unsubscribe = source.subscribe((e) => events.push(e));
    const hasEvent = (kind: string) => (): true | undefined => events.some((e) => e.type === "domain" && e.vmId === s.vmId && e.kind === kind) || undefined;
    const name = await running(s);
    // Its "started" event: the source's event stream is live before the migration starts.
    await waitFor("a 'started' event at the source", hasEvent("started"), 15_000);
    // At full speed QEMU copies the sparse volume in jumps, so a sample may never see data move:
    // 200 MiB/s makes the 1 GiB copy last ~5 s, in steady steps.
    await setSpeed(name, 200);
    const target = await dest.prepareIncoming(s);
    expect(target).toEqual({ driver: "libvirt", uri: `${second.uri}#migrateuri=tcp%3A%2F%2F127.0.0.1&poolpath=${encodeURIComponent(`${second.dir}/pool`)}`, vmId: s.vmId });
    expect(await volumeExists(second.uri, s.vmId)).toBe(true);

    const progress: MigrationProgress[] = [];
    const started = Date.now();
    try {
      await source.migrateOut(s.vmId, target, { onProgress: (p) => progress.push(p), progressIntervalMs: 100 });
    } catch (e) {
      dumpLogs();
      throw e;
    }
    const tookMs = Date.now() - started;
    const arrived = await dest.finishIncoming(s.vmId, 2);
    console.info(`migrated ${name} (1 GiB disk copied, 128 MiB memory, at most 200 MiB/s) in ${tookMs} ms; ${progress.length} progress samples; last: ${JSON.stringify(progress.at(-1))}`);

    expect(arrived).toMatchObject({ vmId: s.vmId, name: "live", state: DomainState.DOMAIN_STATE_RUNNING, generation: 2 });
    // Running on the destination, persistent there; gone from the source, volume and all.
    expect(await names(second.uri)).toContain(name);
    const info = await virshOn(second.uri, "dominfo", name);
    expect(info.stdout).toMatch(/^State:\s+running/m);
    expect(info.stdout).toMatch(/^Persistent:\s+yes/m);
    expect(await names(sourceUri, true)).not.toContain(name);
    expect((await source.list()).map((d) => d.vmId)).not.toContain(s.vmId);
    expect((await dest.list()).find((d) => d.vmId === s.vmId)).toMatchObject({ state: DomainState.DOMAIN_STATE_RUNNING, generation: 2 });
    expect(await volumeExists(sourceUri, s.vmId)).toBe(false);
    expect(await volumeExists(second.uri, s.vmId)).toBe(true);
    // The source's event stream says where it went.
    await waitFor("a 'migrated' event at the source", hasEvent("migrated"), 15_000);
    unsubscribe();

    // Progress: samples of the running job, the 1 GiB disk in its total, some of it sent.
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.some((p) => p.dataTotalBytes >= GIB && p.dataProcessedBytes > 0)).toBe(true);
    for (const p of progress) {
      expect(p.iteration).toBeGreaterThanOrEqual(1);
      expect(p.dataProcessedBytes + p.dataRemainingBytes).toBeLessThanOrEqual(p.dataTotalBytes + GIB);
    }

    // Idempotent on both sides.
    await source.migrateOut(s.vmId, target);
    expect((await dest.finishIncoming(s.vmId, 2)).state).toBe(DomainState.DOMAIN_STATE_RUNNING);
  }, 180_000);

  it("an abort mid-migration leaves the domain running on the source and nothing on the destination; a retry then succeeds", async () => {
    const s = spec("abort");
    const name = await running(s);
    const pid = qemuPid(name);
    expect(pid).toBeDefined();
    await setSpeed(name, 1);
    const target = await dest.prepareIncoming(s);
    const progress: MigrationProgress[] = [];
    const outcome = source.migrateOut(s.vmId, target, { onProgress: (p) => progress.push(p), progressIntervalMs: 200 }).then(
      () => "resolved",
      (e: unknown) => e,
    );
    await waitFor("the migration to be under way", () => progress.some((p) => p.dataProcessedBytes > 0), 60_000);
    // Still arriving at the destination (paused, migrating): it cannot be finished yet.
    await expect(dest.finishIncoming(s.vmId, 2)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/still arriving/) });
    const abortStarted = Date.now();
    await source.abortMigration(s.vmId);
    const error = await outcome;
    console.info(`aborted ${name} after ${progress.at(-1)?.dataProcessedBytes} bytes; migrateOut rejected ${Date.now() - abortStarted} ms after abortMigration was called`);
    expect(error).toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/migration aborted/) });

    // Still the same qemu on the source, running; nothing arrived on the destination.
    expect(await names(sourceUri)).toContain(name);
    expect(qemuPid(name)).toBe(pid);
    expect((await source.list()).find((d) => d.vmId === s.vmId)?.state).toBe(DomainState.DOMAIN_STATE_RUNNING);
    expect(await names(second.uri, true)).not.toContain(name);
    expect((await dest.list()).map((d) => d.vmId)).not.toContain(s.vmId);
    // The destination gives up what prepareIncoming made.
    await dest.abortMigration(s.vmId);
    expect(await volumeExists(second.uri, s.vmId)).toBe(false);
    expect(await volumeExists(sourceUri, s.vmId)).toBe(true);

    // A new attempt at full speed goes through.
    await setSpeed(name, 0);
    await source.migrateOut(s.vmId, await dest.prepareIncoming(s));
    expect((await dest.finishIncoming(s.vmId, 3)).state).toBe(DomainState.DOMAIN_STATE_RUNNING);
    expect(await names(second.uri)).toContain(name);
    expect(await names(sourceUri, true)).not.toContain(name);
  }, 240_000);

  it("past timeoutMs the job is aborted: DEADLINE_EXCEEDED, and the domain runs on on the source", async () => {
    const s = spec("deadline");
    const name = await running(s);
    await setSpeed(name, 1);
    const target = await dest.prepareIncoming(s);
    const started = Date.now();
    await expect(source.migrateOut(s.vmId, target, { timeoutMs: 3_000 })).rejects.toMatchObject({ code: "DEADLINE_EXCEEDED" });
    const tookMs = Date.now() - started;
    console.info(`migrateOut with timeoutMs 3000 rejected after ${tookMs} ms`);
    expect(tookMs).toBeGreaterThanOrEqual(3_000);
    expect(tookMs).toBeLessThan(30_000);
    expect(await names(sourceUri)).toContain(name);
    expect(await names(second.uri, true)).not.toContain(name);
    await dest.abortMigration(s.vmId);
  }, 120_000);

  it("a VM over an image moves with --copy-storage-inc: the destination has its own image and overlay; the data volume's bytes and the seed arrive", async (ctx) => {
    const imageMissing = tinyImageMissing();
    if (imageMissing) ctx.skip(imageMissing);
    const built = await buildTinyImage();
    if ("skip" in built) return ctx.skip(built.skip);
    const imageId = randomUUID();
    const volumeId = randomUUID();
    poolVolumes.push(imageVolumeName(imageId), dataVolumeName(volumeId));
    const s: DomainSpec = {
      ...spec("over-image"),
      resources: { vcpus: 1, memoryMib: 192, diskGib: 1 },
      image: { id: imageId, name: "tiny", source: built.path, format: "qcow2", sha256: "" },
      cloudInit: { instanceId: "", hostname: "over-image", sshAuthorizedKeys: [], userData: "" },
      volumes: [{ id: volumeId, name: "data", sizeGib: 1 }],
    };
    s.cloudInit!.instanceId = s.vmId;
    /** `qemu-io` on a qcow2 file (`-U`: while a QEMU has it open); resolves its output, throws on failure. */
    const qemuIo = (file: string, command: string, readOnly = false): Promise<string> =>
      new Promise((resolve, reject) =>
        execFile("qemu-io", [...(readOnly ? ["-r", "-U"] : []), "-f", "qcow2", "-c", command, file], (e, out, err) =>
          e || /fail/i.test(String(out)) ? reject(new Error(`qemu-io ${command} ${file}: ${String(out)} ${String(err)}`)) : resolve(String(out)),
        ),
      );
    const pathOf = async (uri: string, p: string, volume: string): Promise<string> => (await virshOn(uri, "vol-path", "--pool", p, volume)).stdout.trim();

    await source.define(s);
    // What the guest would have written: 1 MiB on its volume, 1 MiB on its disk (in the overlay,
    // past the image's 20 MiB). Written before it runs, read at the destination while it runs there.
    await qemuIo(await pathOf(sourceUri, pool, dataVolumeName(volumeId)), "write -P 0x42 0 1M");
    await qemuIo(await pathOf(sourceUri, pool, volumeName(s.vmId)), "write -P 0x43 512M 1M");
    await source.start(s.vmId);

    const target = await dest.prepareIncoming(s);
    const overlay = await virshOn(second.uri, "vol-dumpxml", "--pool", second.storagePool, volumeName(s.vmId));
    expect(overlay.stdout).toContain(`${second.dir}/pool/${imageVolumeName(imageId)}`);
    for (const v of [imageVolumeName(imageId), seedVolumeName(s.vmId), dataVolumeName(volumeId)]) {
      expect((await virshOn(second.uri, "vol-info", "--pool", second.storagePool, v)).ok, v).toBe(true);
    }
    const started = Date.now();
    try {
      await source.migrateOut(s.vmId, target);
    } catch (e) {
      dumpLogs();
      throw e;
    }
    const tookMs = Date.now() - started;
    // Only the top layer traveled: the destination's overlay holds what was written to the disk
    // (1 MiB), not the image's data (which -all would have copied into it, and zeros for the rest).
    const allocation = async (volume: string): Promise<number> =>
      Number(/<allocation unit='bytes'>(\d+)</.exec((await virshOn(second.uri, "vol-dumpxml", "--pool", second.storagePool, volume)).stdout)?.[1]);
    const overlayBytes = await allocation(volumeName(s.vmId));
    const imageBytes = await allocation(imageVolumeName(imageId));
    console.info(`migrated a VM over an image (--copy-storage-inc) in ${tookMs} ms: the destination's overlay holds ${overlayBytes} bytes, its image ${imageBytes}`);
    expect(overlayBytes).toBeLessThan(imageBytes / 4);
    const arrived = await dest.finishIncoming(s.vmId, 2);
    expect(arrived).toMatchObject({ state: DomainState.DOMAIN_STATE_RUNNING, imageId, volumeIds: [volumeId] });

    // It runs there with what it had written, on its volume and on its disk.
    await qemuIo(`${second.dir}/pool/${dataVolumeName(volumeId)}`, "read -P 0x42 0 1M", true);
    await qemuIo(`${second.dir}/pool/${volumeName(s.vmId)}`, "read -P 0x43 512M 1M", true);

    // The source keeps its image (the host's) and nothing of the VM.
    const left = (await virshOn(sourceUri, "vol-list", pool)).stdout;
    expect(left).toContain(imageVolumeName(imageId));
    for (const v of [volumeName(s.vmId), seedVolumeName(s.vmId), dataVolumeName(volumeId)]) expect(left).not.toContain(v);
    expect(await dest.listVolumes()).toContainEqual({ volumeId, sizeGib: 1, attachedVmId: s.vmId });
  }, 180_000);
});
