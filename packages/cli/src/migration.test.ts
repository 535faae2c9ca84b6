import { DesiredState, Migration, MigrationPhase, MigrationReason, Vm, VmPhase, type DeepPartial } from "@berth/api";
import { BerthError, ErrorCode } from "@berth/core";
import { describe, expect, it } from "vitest";
import { ExitCode } from "./exit-codes.js";
import { run } from "./program.js";
import { status } from "@grpc/grpc-js";
import { notLeader, rawStatus, recordingIo, stubPerTest, StubCluster, type TerminalScript } from "./stub-server.testkit.js";

// Live migrations: vm migrate (--to, --wait), migration list / show / abort.

const NOW = 1_700_000_000_000;
const GIB = 1024 ** 3;
const ID = "3f9a2c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b";

const migration = (extra: DeepPartial<Migration> = {}): Migration =>
  Migration.fromPartial({
    id: ID,
    vmId: "id-web-1",
    vmName: "web-1",
    sourceHost: "host-1",
    targetHost: "host-2",
    phase: MigrationPhase.MIGRATION_PHASE_PENDING,
    reason: MigrationReason.MIGRATION_REASON_OPERATOR,
    requestedBy: "operator",
    createdAtMs: NOW - 90_000,
    ...extra,
  });

/** MIGRATING with `remaining` of 4 GiB left. */
const migrating = (remainingGib: number, extra: DeepPartial<Migration> = {}): Migration =>
  migration({
    phase: MigrationPhase.MIGRATION_PHASE_MIGRATING,
    startedAtMs: NOW - 60_000,
    progress: {
      dataTotalBytes: 4 * GIB,
      dataRemainingBytes: Math.round(remainingGib * GIB),
      dataProcessedBytes: Math.round((4 - remainingGib) * GIB),
      iteration: 1,
      updatedAtMs: NOW - 1000,
    },
    ...extra,
  });

const completed = (): Migration =>
  migration({ phase: MigrationPhase.MIGRATION_PHASE_COMPLETED, startedAtMs: NOW - 60_000, finishedAtMs: NOW - 10_000 });

const failed = (message: string): Migration =>
  migration({
    phase: MigrationPhase.MIGRATION_PHASE_FAILED,
    startedAtMs: NOW - 60_000,
    finishedAtMs: NOW - 5000,
    message,
    errorCode: "HYPERVISOR_UNAVAILABLE",
  });

/** Answers GetMigration with `states` in order, then the last one for ever. */
function sequence(states: Migration[]): () => { migration: Migration } {
  let i = 0;
  return () => ({ migration: states[Math.min(i++, states.length - 1)] as Migration });
}

const stub = stubPerTest();

async function berth(s: StubCluster, ...argv: string[]) {
  return berthOn(s, {}, ...argv);
}

async function berthOn(s: StubCluster, terminal: TerminalScript, ...argv: string[]) {
  const io = recordingIo({}, NOW, terminal);
  const code = await run(["--insecure", "--controller", s.address, ...argv], io);
  return { code, out: io.out, err: io.err };
}

describe("vm migrate", () => {
  it("sends MigrateVm with the target and a fresh request id; prints the migration", async () => {
    const s = await stub({ migrateVm: (r) => ({ migration: migration({ targetHost: r.targetHost, targetRequested: true }) }) });
    const r = await berth(s, "vm", "migrate", "web-1", "--to", "host-2");
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const sent = s.requests("migrateVm");
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ name: "web-1", targetHost: "host-2" });
    expect(sent[0]?.requestId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(r.out).toBe(
      "VM     FROM    TO      PHASE    REASON    PROGRESS  AGE    DURATION  MESSAGE\n" +
        "web-1  host-1  host-2  PENDING  operator  -         1m30s  -         -\n",
    );
    const again = await berth(s, "vm", "migrate", "web-1");
    expect(again.code).toBe(0);
    expect(s.requests("migrateVm")[1]?.targetHost).toBe(""); // the scheduler picks
    expect(s.requests("migrateVm")[1]?.requestId).not.toBe(sent[0]?.requestId);
  });

  it("-o json prints the migration's proto JSON", async () => {
    const m = migration();
    const s = await stub({ migrateVm: () => ({ migration: m }) });
    const r = await berth(s, "-o", "json", "vm", "migrate", "web-1");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual(Migration.toJSON(m));
  });

  it("retries through a leader change with the same request id", async () => {
    let calls = 0;
    const s = await stub({
      migrateVm: () => {
        calls++;
        if (calls === 1) throw new BerthError(ErrorCode.Unavailable, "no leader yet");
        return { migration: migration() };
      },
    });
    const r = await berth(s, "vm", "migrate", "web-1");
    expect(r.code).toBe(0);
    const ids = s.requests("migrateVm").map((q) => q.requestId);
    expect(ids).toHaveLength(2);
    expect(ids[0]).toBe(ids[1]);
    expect(r.err).toContain("retrying in");
    expect(r.err).toContain("with the same request id");
  });

  it("an attempt cut off, then 'already migrating': its own migration (same request id) is success", async () => {
    let calls = 0;
    const s = await stub({
      migrateVm: () => {
        calls++;
        if (calls === 1) throw rawStatus(status.CANCELLED, "Call cancelled");
        throw new BerthError(ErrorCode.FailedPrecondition, "vm web-1 is already migrating");
      },
      getMigration: () => ({ migration: migration({ requestId: s.requests("migrateVm")[0]?.requestId ?? "" }) }),
    });
    const r = await berth(s, "vm", "migrate", "web-1");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^web-1 +host-1 +host-2 +PENDING /m);
    // Another request's migration is not taken for this one's.
    s.handlers.getMigration = () => ({ migration: migration({ requestId: "someone-else" }) });
    calls = 0;
    const other = await berth(s, "vm", "migrate", "web-1");
    expect(other.code).toBe(ExitCode.Conflict);
    expect(other.err).toContain("error: vm web-1 is already migrating\n");
  });

  it("no answer to any attempt before --migrate-timeout: outcome unknown, exit 9", async () => {
    const s = await stub({
      migrateVm: () => {
        throw rawStatus(status.CANCELLED, "Call cancelled");
      },
    });
    const r = await berth(s, "vm", "migrate", "web-1", "--migrate-timeout", "0.5");
    expect(r.code).toBe(ExitCode.OutcomeUnknown);
    expect(r.err).toContain("error: outcome unknown: a migration of vm web-1 may have been started; check with: berth migration show web-1\n");
    expect(r.err).toContain(`this command's request id: ${s.requests("migrateVm")[0]?.requestId}`);
    expect(new Set(s.requests("migrateVm").map((q) => q.requestId)).size).toBe(1);
  });

  it("a follower's redirect is followed (NOT_LEADER naming the leader)", async () => {
    const leader = await stub({ migrateVm: () => ({ migration: migration() }) });
    const follower = await stub({
      migrateVm: () => {
        throw notLeader(leader.address);
      },
    });
    const r = await berth(follower, "vm", "migrate", "web-1");
    expect(r.code).toBe(0);
    expect(leader.requests("migrateVm")).toHaveLength(1);
  });

  it("a target that breaks a placement rule is the controller's answer, printed as is (exit 4)", async () => {
    const s = await stub({
      migrateVm: () => {
        throw new BerthError(ErrorCode.ResourceExhausted, "host-2 cannot take vm web-1", { reasons: ["capacity: memory: needs 4 GiB, 1 GiB free"] });
      },
    });
    const r = await berth(s, "vm", "migrate", "web-1", "--to", "host-2");
    expect(r.code).toBe(ExitCode.NoCapacity);
    expect(r.err).toBe("error: host-2 cannot take vm web-1:\n  capacity: memory: needs 4 GiB, 1 GiB free\n");
    expect(s.requests("migrateVm")).toHaveLength(1); // a verdict is not retried
  });

  it("bad flags are usage errors and send nothing", async () => {
    const s = await stub({ migrateVm: () => ({ migration: migration() }) });
    for (const argv of [
      ["vm", "migrate", "Web_1"],
      ["vm", "migrate", "web-1", "--to", "Host 2"],
      ["vm", "migrate", "web-1", "--wait", "--wait-timeout", "soon"],
      ["vm", "migrate", "web-1", "--migrate-timeout", "0"],
    ]) {
      const r = await berth(s, ...argv);
      expect(r.code, argv.join(" ")).toBe(ExitCode.Usage);
      expect(r.err).toMatch(/^error: /);
    }
    expect(s.calls).toEqual([]);
  });

  it("--wait follows GetMigration by id to COMPLETED: exit 0, plain progress lines without a terminal", async () => {
    const s = await stub({
      migrateVm: () => ({ migration: migration() }),
      getMigration: sequence([
        migration({ phase: MigrationPhase.MIGRATION_PHASE_PREPARING }),
        migrating(3),
        migrating(2.9), // same 10% step: no new line
        migrating(1),
        migration({ phase: MigrationPhase.MIGRATION_PHASE_FINISHING }),
        completed(),
      ]),
    });
    const r = await berth(s, "vm", "migrate", "web-1", "--wait");
    expect(r.code).toBe(0);
    expect(s.requests("getMigration").every((q) => q.name === ID)).toBe(true);
    expect(r.err).toBe(
      "waiting up to 3600s for the migration of vm web-1 to end...\n" +
        "vm web-1: PENDING host-1 -> host-2\n" +
        "vm web-1: PREPARING host-1 -> host-2\n" +
        "vm web-1: MIGRATING host-1 -> host-2, 3 GiB / 4 GiB left (25%)\n" +
        "vm web-1: MIGRATING host-1 -> host-2, 1 GiB / 4 GiB left (75%)\n" +
        "vm web-1: FINISHING host-1 -> host-2\n" +
        "vm web-1: COMPLETED host-1 -> host-2\n",
    );
    expect(r.out).toMatch(/^web-1 +host-1 +host-2 +COMPLETED +operator +100% /m);
  });

  it("--wait on a terminal redraws one progress line in place and ends it with a newline", async () => {
    const s = await stub({
      migrateVm: () => ({ migration: migration() }),
      getMigration: sequence([migrating(3), migrating(2), completed()]),
    });
    const r = await berthOn(s, { stderrIsTerminal: true }, "vm", "migrate", "web-1", "--wait");
    expect(r.code).toBe(0);
    const redraw = "\r\u001b[2K";
    expect(r.err).toBe(
      "waiting up to 3600s for the migration of vm web-1 to end...\n" +
        `${redraw}vm web-1: PENDING host-1 -> host-2` +
        `${redraw}vm web-1: MIGRATING host-1 -> host-2, 3 GiB / 4 GiB left (25%)` +
        `${redraw}vm web-1: MIGRATING host-1 -> host-2, 2 GiB / 4 GiB left (50%)` +
        `${redraw}vm web-1: COMPLETED host-1 -> host-2\n`,
    );
  });

  it("--wait ending FAILED: exit 10 with the reason; the migration is printed", async () => {
    const s = await stub({
      migrateVm: () => ({ migration: migration() }),
      getMigration: sequence([migrating(2), failed("libvirt: connection to the target lost")]),
    });
    const r = await berth(s, "vm", "migrate", "web-1", "--wait");
    expect(r.code).toBe(ExitCode.MigrationFailed);
    expect(r.err).toContain(
      "error: migration of vm web-1 to host-2 failed: HYPERVISOR_UNAVAILABLE: libvirt: connection to the target lost; the VM stays on host-1\n",
    );
    expect(r.out).toMatch(/^web-1 +host-1 +host-2 +FAILED /m);
  });

  it("--wait -o json prints the ended migration's JSON and no progress", async () => {
    const s = await stub({ migrateVm: () => ({ migration: migration() }), getMigration: sequence([completed()]) });
    const r = await berth(s, "-o", "json", "vm", "migrate", "web-1", "--wait");
    expect(r.code).toBe(0);
    expect(r.err).toBe("");
    expect(JSON.parse(r.out)).toEqual(Migration.toJSON(completed()));
  });

  it("--wait rides out an unavailable controller between polls", async () => {
    let polls = 0;
    const s = await stub({
      migrateVm: () => ({ migration: migration() }),
      getMigration: () => {
        polls++;
        if (polls === 1) throw new BerthError(ErrorCode.Unavailable, "leader changing");
        return { migration: completed() };
      },
    });
    const r = await berth(s, "vm", "migrate", "web-1", "--wait");
    expect(r.code).toBe(0);
    expect(polls).toBe(2);
  });

  it("--wait times out with exit 8, saying where it was", async () => {
    const s = await stub({ migrateVm: () => ({ migration: migration() }), getMigration: () => ({ migration: migrating(2) }) });
    const r = await berth(s, "vm", "migrate", "web-1", "--wait", "--wait-timeout", "0.2");
    expect(r.code).toBe(ExitCode.WaitTimeout);
    expect(r.err).toContain("timed out after 0.2s waiting for the migration of vm web-1 to end (last: vm web-1: MIGRATING host-1 -> host-2, 2 GiB / 4 GiB left (50%))");
  });
});

describe("migration list and show", () => {
  const list = [
    migrating(1),
    migration({ id: "b", vmName: "db-1", targetHost: "", reason: MigrationReason.MIGRATION_REASON_DRAIN, requestedBy: "drain of host host-1" }),
    failed("target went away"),
    migration({ id: "c", vmName: "api-1", phase: MigrationPhase.MIGRATION_PHASE_COMPLETED, reason: MigrationReason.MIGRATION_REASON_REBALANCE, startedAtMs: NOW - 600_000, finishedAtMs: NOW - 480_000, createdAtMs: NOW - 3_600_000 }),
  ];

  it("list: the table in the controller's order, with --active and --host sent", async () => {
    const s = await stub({ listMigrations: () => ({ migrations: list }) });
    const r = await berth(s, "migration", "list", "--active", "--host", "host-1");
    expect(r.code).toBe(0);
    expect(s.requests("listMigrations")).toEqual([{ activeOnly: true, hostId: "host-1" }]);
    expect(r.out).toBe(
      "VM     FROM    TO      PHASE      REASON     PROGRESS  AGE    DURATION  MESSAGE\n" +
        "web-1  host-1  host-2  MIGRATING  operator   75%       1m30s  1m        -\n" +
        "db-1   host-1  -       PENDING    drain      -         1m30s  -         -\n" +
        "web-1  host-1  host-2  FAILED     operator   -         1m30s  55s       HYPERVISOR_UNAVAILABLE: target went away\n" +
        "api-1  host-1  host-2  COMPLETED  rebalance  100%      1h     2m        -\n",
    );
    const all = await berth(s, "migration", "list");
    expect(all.code).toBe(0);
    expect(s.requests("listMigrations")[1]).toEqual({ activeOnly: false, hostId: "" });
  });

  it("list -o json is an array, also when empty", async () => {
    const s = await stub({ listMigrations: () => ({ migrations: list }) });
    const r = await berth(s, "-o", "json", "migration", "list");
    expect(JSON.parse(r.out)).toEqual(list.map((m) => Migration.toJSON(m)));
    s.handlers.listMigrations = () => ({ migrations: [] });
    expect(JSON.parse((await berth(s, "-o", "json", "migration", "list")).out)).toEqual([]);
  });

  it("show: by VM name or id, every detail; NOT_FOUND is exit 3", async () => {
    const s = await stub({
      getMigration: (r) => {
        if (r.name !== "web-1" && r.name !== ID) throw new BerthError(ErrorCode.NotFound, `no migration of vm ${r.name}`);
        return {
          migration: migrating(1, {
            targetRequested: true,
            phaseSinceMs: NOW - 30_000,
            deadlineAtMs: NOW + 540_000,
            dataEstimateBytes: 4 * GIB,
            targetUri: "qemu+tcp://host-2/system",
            targetDriver: "libvirt",
            requestId: "req-1",
            progress: { dataTotalBytes: 4 * GIB, dataRemainingBytes: GIB, dataProcessedBytes: 3 * GIB, iteration: 2, dirtyRateBytesPerS: 50 * 1024 ** 2, updatedAtMs: NOW - 1000, },
          }),
        };
      },
    });
    const r = await berth(s, "migration", "show", "web-1");
    expect(r.code).toBe(0);
    expect(r.out).toBe(
      `ID:            ${ID}\n` +
        "VM:            web-1 (id-web-1)\n" +
        "Phase:         MIGRATING (for 30s)\n" +
        "Reason:        operator (operator)\n" +
        "From:          host-1\n" +
        "To:            host-2 (requested)\n" +
        "Progress:      3 GiB sent, 1 GiB of 4 GiB left (75%), pass 2, guest dirties 50 MiB/s, measured 1s ago\n" +
        "Data to move:  about 4 GiB\n" +
        "Created:       1m30s ago\n" +
        "Started:       1m ago\n" +
        "Finished:      -\n" +
        "Duration:      1m\n" +
        "Deadline:      in 9m (then it is aborted)\n" +
        "Message:       -\n" +
        "Target URI:    qemu+tcp://host-2/system (libvirt)\n" +
        "Request ID:    req-1\n",
    );
    expect((await berth(s, "migration", "show", ID)).code).toBe(0);
    expect(s.requests("getMigration").map((q) => q.name)).toEqual(["web-1", ID]);
    const missing = await berth(s, "migration", "show", "nope");
    expect(missing.code).toBe(ExitCode.NotFound);
    expect(missing.err).toBe("error: no migration of vm nope\n");
  });
});

describe("migration abort", () => {
  it("sends AbortMigration and prints the migration", async () => {
    const s = await stub({ abortMigration: () => ({ migration: migrating(2, { abortRequested: true }) }) });
    const r = await berth(s, "migration", "abort", "web-1");
    expect(r.code).toBe(0);
    expect(s.requests("abortMigration")).toEqual([{ name: "web-1" }]);
    expect(r.out).toMatch(/^web-1 +host-1 +host-2 +MIGRATING .* abort requested$/m);
  });

  it("--wait until FAILED (rolled back): exit 0, the VM stays on its source", async () => {
    const s = await stub({
      abortMigration: () => ({ migration: migrating(2, { abortRequested: true }) }),
      getMigration: sequence([
        migration({ phase: MigrationPhase.MIGRATION_PHASE_ABORTING, abortRequested: true }),
        failed("aborted by an operator"),
      ]),
    });
    const r = await berth(s, "migration", "abort", "web-1", "--wait");
    expect(r.code).toBe(0);
    expect(r.err).toContain("vm web-1: ABORTING host-1 -> host-2, abort requested\n");
    expect(r.err).toContain("migration of vm web-1 aborted (FAILED); the VM stays on host-1\n");
    expect(r.out).toMatch(/FAILED/);
  });

  it("a pending migration that fails at once needs no poll", async () => {
    const s = await stub({ abortMigration: () => ({ migration: failed("aborted by an operator") }) });
    const r = await berth(s, "migration", "abort", "web-1", "--wait");
    expect(r.code).toBe(0);
    expect(s.requests("getMigration")).toEqual([]);
  });

  it("--wait ending COMPLETED (too late to roll back): exit 6, saying where the VM runs", async () => {
    const s = await stub({
      abortMigration: () => ({ migration: migration({ phase: MigrationPhase.MIGRATION_PHASE_FINISHING, abortRequested: true }) }),
      getMigration: sequence([completed()]),
    });
    const r = await berth(s, "migration", "abort", "web-1", "--wait");
    expect(r.code).toBe(ExitCode.Conflict);
    expect(r.err).toContain("error: migration of vm web-1 completed before it could be rolled back: the VM now runs on host-2\n");
  });

  it("an ended migration is the controller's FAILED_PRECONDITION: exit 6", async () => {
    const s = await stub({
      abortMigration: () => {
        throw new BerthError(ErrorCode.FailedPrecondition, "the migration of vm web-1 has ended (COMPLETED)");
      },
    });
    const r = await berth(s, "migration", "abort", "web-1");
    expect(r.code).toBe(ExitCode.Conflict);
    expect(r.err).toBe("error: the migration of vm web-1 has ended (COMPLETED)\n");
  });

  it("an empty NAME|ID is a usage error, nothing sent", async () => {
    const s = await stub();
    const r = await berth(s, "migration", "abort", " ");
    expect(r.code).toBe(ExitCode.Usage);
    expect(s.calls).toEqual([]);
  });
});

describe("vm list and show: MIGRATING", () => {
  it("shows the phase", async () => {
    const vm = Vm.fromPartial({
      id: "id-web-1",
      spec: { name: "web-1", resources: { vcpus: 2, memoryMib: 4096, diskGib: 20 } },
      desiredState: DesiredState.DESIRED_STATE_RUNNING,
      hostId: "host-1",
      status: { phase: VmPhase.VM_PHASE_MIGRATING },
      createdAtMs: NOW - 60_000,
    });
    const s = await stub({ listVms: () => ({ vms: [vm], nextPageToken: "" }), getVm: () => ({ vm }), getMigration: () => ({ migration: migrating(1) }) });
    expect((await berth(s, "vm", "list")).out).toMatch(/^web-1 +MIGRATING +RUNNING +host-1 /m);
    const shown = await berth(s, "vm", "show", "web-1");
    expect(shown.out).toContain("Phase:            MIGRATING\n");
    expect(shown.out).toContain("Host:             host-1\n" + "Migration:        MIGRATING host-1 -> host-2, 1 GiB / 4 GiB left (75%)\n");
    expect(s.requests("getMigration")).toEqual([{ name: "web-1" }]);
    // Without an answer about the migration, the VM is shown all the same.
    s.handlers.getMigration = () => {
      throw new BerthError(ErrorCode.NotFound, "no migration of vm web-1");
    };
    const alone = await berth(s, "vm", "show", "web-1");
    expect(alone.code).toBe(0);
    expect(alone.out).not.toContain("Migration:");
  });
});

describe("help", () => {
  it.each([["vm migrate"], ["migration"], ["migration list"], ["migration show"], ["migration abort"]])(
    "%s --help says what it does, with examples",
    async (words) => {
      const verb = words.split(" ");
      const io = recordingIo();
      expect(await run([...verb, "--help"], io)).toBe(0);
      expect(io.out).toMatch(/Examples?:\n {2}berth /);
    },
  );

  it("vm migrate --help tells of --to, the request id, --wait and the exit codes", async () => {
    const io = recordingIo();
    expect(await run(["vm", "migrate", "--help"], io)).toBe(0);
    expect(io.out).toContain("--to <host>");
    expect(io.out).toContain("request id");
    expect(io.out).toContain("exit 10");
    expect(io.out).toContain("exit 9");
  });

  it("berth --help lists the migration verbs and exit codes 10 and 11", async () => {
    const io = recordingIo();
    expect(await run(["--help"], io)).toBe(0);
    expect(io.out).toMatch(/^ {2}migration /m);
    expect(io.out).toMatch(/^ {2}rebalance /m);
    expect(io.out).toContain(" 10  --wait: a migration failed");
    expect(io.out).toContain(" 11  host drain --wait");
  });
});
