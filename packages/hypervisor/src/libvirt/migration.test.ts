// Live migration's moving parts without libvirtd: the domjobinfo parser on recorded output, the
// target URI, and migrateOut's progress, abort and deadline against a scripted virsh whose
// `migrate` runs until the test (or a domjobabort) ends it. The real thing, between two libvirt
// daemons, is test/drivers/libvirt-migration.test.ts.
import { describe, expect, it } from "vitest";
import type { MigrationProgress, MigrationTarget } from "../driver.js";
import { domainXml } from "./domain-xml.js";
import { LibvirtDriver } from "./libvirt-driver.js";
import { formatMigrationTargetUri, parseDomJobInfo, parseMigrationTargetUri } from "./migration.js";
import type { CommandResult, CommandRunner, RunOptions } from "./virsh.js";

// Recorded from `virsh domjobinfo --rawstats` (libvirt 9.0) while a disk was being copied.
const RAW_DISK_PHASE = `Job type: 2

operation: 5
time_elapsed: 1991
data_total: 1073741824
data_processed: 16777216
data_remaining: 1056964608
memory_total: 0
memory_processed: 0
memory_remaining: 0
memory_dirty_rate: 0
memory_iteration: 0
memory_postcopy_requests: 0
disk_total: 1073741824
disk_processed: 16777216
disk_remaining: 1056964608

`;

// Recorded from `virsh domjobinfo --rawstats` while memory was being copied (diskless, 1 GiB, first pass).
const RAW_MEMORY_PHASE = `Job type: 2

operation: 5
time_elapsed: 4958
downtime: 300
setup_time: 1
data_total: 1074135040
data_processed: 108762
data_remaining: 1073098752
memory_total: 1074135040
memory_processed: 108762
memory_remaining: 1073098752
memory_constant: 227
memory_normal: 26
memory_normal_bytes: 106496
memory_dirty_rate: 0
memory_iteration: 1
memory_postcopy_requests: 0
memory_page_size: 4096
disk_total: 0
disk_processed: 0
disk_remaining: 0

`;

// Recorded from plain `virsh domjobinfo` (no --rawstats) while a disk was being copied.
const PLAIN_DISK_PHASE = `Job type:         Unbounded   
Operation:        Outgoing migration
Time elapsed:     2140         ms
Data processed:   16.000 MiB
Data remaining:   1008.000 MiB
Data total:       1.000 GiB
File processed:   16.000 MiB
File remaining:   1008.000 MiB
File total:       1.000 GiB
`;

// Recorded from plain `virsh domjobinfo --completed` on a destination.
const PLAIN_COMPLETED = `Job type:         Completed   
Operation:        Incoming migration
Data processed:   773.114 KiB
Data total:       128.508 MiB
Dirty rate:       0            pages/s
Page size:        4096         bytes
Iteration:        2           
`;

describe("parseDomJobInfo", () => {
  it("reads --rawstats while disks are copied (no memory figures yet: libvirt's iteration 0 is the first pass)", () => {
    expect(parseDomJobInfo(RAW_DISK_PHASE)).toEqual({
      dataTotalBytes: 1073741824,
      dataProcessedBytes: 16777216,
      dataRemainingBytes: 1056964608,
      dirtyRateBytesPerS: 0,
      iteration: 1,
    });
  });

  it("reads --rawstats while memory is copied: the dirty rate in pages/s times the page size", () => {
    expect(parseDomJobInfo(RAW_MEMORY_PHASE)).toEqual({
      dataTotalBytes: 1074135040,
      dataProcessedBytes: 108762,
      dataRemainingBytes: 1073098752,
      dirtyRateBytesPerS: 0,
      iteration: 1,
    });
    expect(parseDomJobInfo(RAW_MEMORY_PHASE.replace("memory_iteration: 1", "memory_iteration: 4"))?.iteration).toBe(4);
    // A guest dirtying memory (the idle one recorded dirties none), with 2 MiB pages.
    const busy = RAW_MEMORY_PHASE.replace("memory_dirty_rate: 0", "memory_dirty_rate: 250").replace("memory_page_size: 4096", "memory_page_size: 2097152");
    expect(parseDomJobInfo(busy)?.dirtyRateBytesPerS).toBe(250 * 2097152);
  });

  it("reads the plain form with its units", () => {
    expect(parseDomJobInfo(PLAIN_DISK_PHASE)).toEqual({
      dataTotalBytes: 2 ** 30,
      dataProcessedBytes: 16 * 2 ** 20,
      dataRemainingBytes: 1008 * 2 ** 20,
      dirtyRateBytesPerS: 0,
      iteration: 1,
    });
  });

  it("no job, a finished job, or nothing readable: undefined; missing fields read 0", () => {
    expect(parseDomJobInfo("Job type:         None        \n")).toBeUndefined();
    expect(parseDomJobInfo("Job type: 0\n\n")).toBeUndefined();
    expect(parseDomJobInfo(PLAIN_COMPLETED)).toBeUndefined();
    expect(parseDomJobInfo("")).toBeUndefined();
    expect(parseDomJobInfo("Job type: 2\n\noperation: 5\nmemory_dirty_rate: 3\n")).toEqual({
      dataTotalBytes: 0,
      dataProcessedBytes: 0,
      dataRemainingBytes: 0,
      dirtyRateBytesPerS: 3 * 4096,
      iteration: 1,
    });
    expect(parseDomJobInfo("Job type: 2\ndata_total: lots\n")?.dataTotalBytes).toBe(0);
  });
});

describe("migration target URI", () => {
  it("round-trips the data URI in a fragment; a bare connection URI stays bare", () => {
    const uri = formatMigrationTargetUri({ connectionUri: "qemu+tls://dst/system", dataUri: "tcp://[fd00::5]:49152" });
    expect(uri).toBe("qemu+tls://dst/system#migrateuri=tcp%3A%2F%2F%5Bfd00%3A%3A5%5D%3A49152");
    expect(parseMigrationTargetUri(uri)).toEqual({ connectionUri: "qemu+tls://dst/system", dataUri: "tcp://[fd00::5]:49152" });
    expect(parseMigrationTargetUri("qemu+unix:///system?socket=/run/x/libvirt-sock")).toEqual({
      connectionUri: "qemu+unix:///system?socket=/run/x/libvirt-sock",
      dataUri: undefined,
    });
  });

  it("carries the destination pool's directory, with or without a data URI", () => {
    const both = formatMigrationTargetUri({ connectionUri: "qemu+tls://dst/system", dataUri: "tcp://10.0.0.5", poolPath: "/var/lib/berth pool" });
    expect(both).toBe("qemu+tls://dst/system#migrateuri=tcp%3A%2F%2F10.0.0.5&poolpath=%2Fvar%2Flib%2Fberth%20pool");
    expect(parseMigrationTargetUri(both)).toEqual({ connectionUri: "qemu+tls://dst/system", dataUri: "tcp://10.0.0.5", poolPath: "/var/lib/berth pool" });
    const pathOnly = formatMigrationTargetUri({ connectionUri: "qemu:///system", dataUri: undefined, poolPath: "/p" });
    expect(parseMigrationTargetUri(pathOnly)).toEqual({ connectionUri: "qemu:///system", dataUri: undefined, poolPath: "/p" });
  });

  it.each(["", "dst", "qemu:///system#x", "qemu:///system#poolpath=relative", "qemu:///system#poolpath=%2Fa'b", "qemu:///system#migrateuri=tcp%3A%2F%2Fh&migrateuri=tcp%3A%2F%2Fh", "qemu:///system#migrateuri=ftp%3A%2F%2Fh", "qemu:///system#migrateuri=%E0", "qemu:///sys tem"])(
    "refuses %j naming target.uri",
    (uri) => {
      expect(() => parseMigrationTargetUri(uri)).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT", field: "target.uri" }));
    },
  );
});

const VM = "0f8fad5b-d9cb-469f-a165-70867728950e";
const NAME = "berth-web";
const TARGET: MigrationTarget = { driver: "libvirt", uri: "qemu+tls://dst/system#migrateuri=tcp%3A%2F%2F10.0.0.5", vmId: VM };
const XML = domainXml({
  name: NAME,
  uuid: VM,
  vcpus: 1,
  memoryMib: 128,
  domainType: "qemu",
  volume: { pool: "vms", name: `${VM}.qcow2` },
  nics: [],
  metadata: { vmId: VM, name: "web", generation: 3, diskGib: 1, fence: false, imageId: "", volumeIds: [] },
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A virsh whose `migrate` runs until `finish()` (or an accepted domjobabort) ends it. The domain is
 * running here until a migration completes. Records every command.
 */
class MigratingVirsh {
  readonly commands: string[][] = [];
  /** The domain exists here (false once migrated away) and its virDomainState. */
  present = true;
  state = 1;
  volume = true;
  /** domjobabort says "no job" this many times first (the migrate has not started its job yet). */
  noJobAnswers = 0;
  /** domjobabort never answers (an unresponsive QEMU monitor): only the time limit ends it. */
  abortHangs = false;
  /** What domjobinfo prints. */
  jobInfo = RAW_DISK_PHASE;
  private endMigrate: ((result: CommandResult) => void) | undefined;

  get migrating(): boolean {
    return this.endMigrate !== undefined;
  }

  /** Ends the running migrate: success moves the domain away. */
  finish(result: "success" | CommandResult): void {
    const end = this.endMigrate;
    this.endMigrate = undefined;
    if (result === "success") {
      this.present = false;
      end?.({ exitCode: 0, stdout: "", stderr: "", timedOut: false });
    } else {
      end?.(result);
    }
  }

  count(command: string): number {
    return this.commands.filter((c) => c[0] === command).length;
  }

  readonly runner: CommandRunner = (_file, argv, options) => {
    const rest = argv.slice(3);
    if (rest.length === 1 && rest[0]!.includes(" ; ")) {
      let stdout = "";
      let stderr = "";
      for (const command of rest[0]!.split(" ; ")) {
        const r = this.one(command.trim().split(" "), options);
        if (r instanceof Promise) throw new Error("no async command in a batch");
        stdout += r.stdout;
        stderr += r.stderr;
      }
      return Promise.resolve({ exitCode: 0, stdout, stderr, timedOut: false });
    }
    return Promise.resolve(this.one(rest, options));
  };

  private one(args: string[], options: RunOptions): CommandResult | Promise<CommandResult> {
    const [command = "", ...rest] = args;
    if (command !== "echo") this.commands.push(args);
    const ok = (stdout = ""): CommandResult => ({ exitCode: 0, stdout, stderr: "", timedOut: false });
    const fail = (stderr: string): CommandResult => ({ exitCode: 1, stdout: "", stderr: `error: ${stderr}\n`, timedOut: false });
    const noDomain = (): CommandResult => fail(`failed to get domain '${VM}'`);
    switch (command) {
      case "echo":
        return ok(rest.join(" "));
      case "dumpxml":
        return this.present ? ok(XML) : noDomain();
      case "domstats":
        return this.present ? ok(`Domain: '${NAME}'\n  state.state=${this.state}\n  state.reason=1\n\n`) : noDomain();
      case "vol-info":
        return this.volume ? ok("Name: x\n") : fail("Storage volume not found: no storage vol with matching path");
      case "vol-delete":
        this.volume = false;
        return ok();
      case "pool-dumpxml":
        return ok("<pool type='dir'>\n  <name>vms</name>\n</pool>\n");
      case "migrate":
        return new Promise((resolve) => {
          this.endMigrate = resolve;
        });
      case "domjobinfo":
        return this.migrating ? ok(this.jobInfo) : ok("Job type: 0\n\n");
      case "domjobabort":
        if (this.abortHangs) return sleep(options.timeoutMs).then(() => ({ exitCode: null, stdout: "", stderr: "", timedOut: true }));
        if (!this.present) return noDomain();
        if (!this.migrating || this.noJobAnswers > 0) {
          this.noJobAnswers--;
          return fail("Requested operation is not valid: no job is active on the domain");
        }
        // libvirt cancels the job; virsh migrate then fails, and the domain runs on here.
        setTimeout(() => this.finish({ exitCode: 1, stdout: "", stderr: "error: operation aborted: migration out: canceled by client\n", timedOut: false }), 5);
        return ok();
      default:
        return fail(`unknown command '${command}'`);
    }
  }
}

async function until(what: string, check: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

describe("LibvirtDriver.migrateOut (scripted virsh)", () => {
  const setup = (abortTimeoutMs?: number): { virsh: MigratingVirsh; driver: LibvirtDriver } => {
    const virsh = new MigratingVirsh();
    const driver = new LibvirtDriver({ runner: virsh.runner, storagePool: "vms" }, abortTimeoutMs === undefined ? {} : { abortTimeoutMs });
    return { virsh, driver };
  };

  it("runs one p2p migrate with --migrateuri, samples domjobinfo while it runs, and stops sampling when it ends", async () => {
    const { virsh, driver } = setup();
    const progress: MigrationProgress[] = [];
    let calls = 0;
    const done = driver.migrateOut(VM, TARGET, {
      progressIntervalMs: 10,
      onProgress: (p) => {
        calls++;
        if (calls === 1) throw new Error("a listener's failure is its own");
        progress.push(p);
      },
    });
    await until("three samples", () => calls >= 3);
    virsh.jobInfo = RAW_MEMORY_PHASE;
    await until("a memory-phase sample", () => progress.some((p) => p.dataTotalBytes === 1074135040));
    virsh.finish("success");
    await done;
    expect(virsh.commands).toContainEqual(["migrate", "--live", "--p2p", "--persistent", "--undefinesource", "--copy-storage-all", NAME, "qemu+tls://dst/system", "--migrateuri", "tcp://10.0.0.5"]);
    expect(virsh.commands).toContainEqual(["domjobinfo", "--rawstats", VM]);
    expect(progress[0]).toEqual(parseDomJobInfo(RAW_DISK_PHASE));
    expect(progress.at(-1)).toEqual(parseDomJobInfo(RAW_MEMORY_PHASE));
    expect(virsh.volume).toBe(false); // copied: the local volume is deleted
    const samples = virsh.count("domjobinfo");
    await sleep(50);
    expect(virsh.count("domjobinfo")).toBe(samples);
  });

  it("abortMigration does not wait for the running migrateOut: domjobabort, and migrateOut fails FAILED_PRECONDITION; the domain stays", async () => {
    const { virsh, driver } = setup();
    const done = driver.migrateOut(VM, TARGET);
    const outcome = done.catch((e: unknown) => e);
    await until("the migrate", () => virsh.migrating);
    await driver.abortMigration(VM);
    expect(virsh.commands).toContainEqual(["domjobabort", VM]);
    expect(await outcome).toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/migration aborted/) });
    expect(virsh.present).toBe(true);
    expect(virsh.volume).toBe(true);
    // Nothing runs any more: aborting again is a no-op on the domain.
    await driver.abortMigration(VM);
  });

  it("a migrateOut still waiting for the domain when abortMigration comes never starts its migrate", async () => {
    const { virsh, driver } = setup();
    const first = driver.migrateOut(VM, TARGET).catch((e: unknown) => e);
    await until("the migrate", () => virsh.migrating);
    const second = driver.migrateOut(VM, TARGET).catch((e: unknown) => e); // a resend, queued behind the first
    await driver.abortMigration(VM);
    expect(await first).toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/migration aborted/) });
    expect(await second).toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/aborted before it started/) });
    expect(virsh.count("migrate")).toBe(1);
    expect(virsh.present).toBe(true);
  });

  it("an abort that comes before libvirt started the job is sent again until it takes", async () => {
    const { virsh, driver } = setup();
    virsh.noJobAnswers = 2;
    const outcome = driver.migrateOut(VM, TARGET).catch((e: unknown) => e);
    await until("the migrate", () => virsh.migrating);
    await driver.abortMigration(VM);
    expect(virsh.count("domjobabort")).toBe(3);
    expect(await outcome).toMatchObject({ code: "FAILED_PRECONDITION" });
  });

  it("an abort after the switchover changes nothing: the migration succeeded", async () => {
    const { virsh, driver } = setup();
    virsh.noJobAnswers = 1_000;
    const done = driver.migrateOut(VM, TARGET);
    await until("the migrate", () => virsh.migrating);
    const aborted = driver.abortMigration(VM);
    await until("an abort attempt", () => virsh.count("domjobabort") > 0);
    virsh.finish("success");
    await done;
    await aborted;
    expect(virsh.present).toBe(false);
  });

  it("a domjobabort that hangs is given up after its time limit: DEADLINE_EXCEEDED", async () => {
    const { virsh, driver } = setup(50);
    virsh.abortHangs = true;
    const outcome = driver.migrateOut(VM, TARGET).catch((e: unknown) => e);
    await until("the migrate", () => virsh.migrating);
    const started = Date.now();
    await expect(driver.abortMigration(VM)).rejects.toMatchObject({ code: "DEADLINE_EXCEEDED", message: expect.stringMatching(/domjobabort/) });
    expect(Date.now() - started).toBeLessThan(1_000);
    virsh.finish({ exitCode: 1, stdout: "", stderr: "error: operation aborted: migration out: canceled by client\n", timedOut: false });
    expect(await outcome).toMatchObject({ code: "FAILED_PRECONDITION" });
  });

  it("past timeoutMs the job is aborted and migrateOut fails DEADLINE_EXCEEDED; the domain stays", async () => {
    const { virsh, driver } = setup();
    await expect(driver.migrateOut(VM, TARGET, { timeoutMs: 30 })).rejects.toMatchObject({ code: "DEADLINE_EXCEEDED" });
    expect(virsh.commands).toContainEqual(["domjobabort", VM]);
    expect(virsh.present).toBe(true);
  });

  it("a failed migrate is judged by where the domain is: gone from here is success (Nova's rule)", async () => {
    const { virsh, driver } = setup();
    const done = driver.migrateOut(VM, TARGET);
    await until("the migrate", () => virsh.migrating);
    virsh.present = false; // the switchover happened; then the client lost libvirtd
    virsh.finish({ exitCode: 1, stdout: "", stderr: "error: Cannot recv data: Connection reset by peer\n", timedOut: false });
    await done;
    expect(virsh.volume).toBe(false);
  });

  it("a failed migrate that leaves the domain running here is that failure; one left shut off is too", async () => {
    const { virsh, driver } = setup();
    let outcome = driver.migrateOut(VM, TARGET).catch((e: unknown) => e);
    await until("the migrate", () => virsh.migrating);
    virsh.finish({ exitCode: 1, stdout: "", stderr: "error: operation failed: migration out job: unexpectedly failed\n", timedOut: false });
    expect(await outcome).toMatchObject({ code: "INTERNAL", message: expect.stringMatching(/unexpectedly failed/) });

    outcome = driver.migrateOut(VM, TARGET).catch((e: unknown) => e);
    await until("the migrate", () => virsh.migrating);
    virsh.state = 5; // qemu died during the migration; the definition is left
    virsh.finish({ exitCode: 1, stdout: "", stderr: "error: operation failed: domain is not running\n", timedOut: false });
    expect(await outcome).toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/not running/) });
    expect(virsh.volume).toBe(true);
  });
});
