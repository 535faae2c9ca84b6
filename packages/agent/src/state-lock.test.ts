import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { lockStateDir, STATE_LOCK_FILE, StateDirLockedError } from "./state-lock.js";

/** A live process that is not this one (a stand-in for another agent). */
function otherProcess() {
  const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60000)"], { stdio: "ignore" });
  return { pid: child.pid!, stop: () => child.kill("SIGKILL") };
}

describe("one agent per state dir", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-lock-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const lockPath = () => join(dir, STATE_LOCK_FILE);

  it("takes the lock with pid and host id, and removes it on release", async () => {
    const lock = await lockStateDir(dir, "hv-01");
    expect(JSON.parse(readFileSync(lockPath(), "utf8"))).toMatchObject({ pid: process.pid, holder: "berth-agent for host 'hv-01'" });
    await lock.release();
    expect(existsSync(lockPath())).toBe(false);
  });

  it("refuses a second agent while the first runs, naming the dir, the other pid and host id, and what to do", async () => {
    const other = otherProcess();
    try {
      writeFileSync(lockPath(), JSON.stringify({ pid: other.pid, holder: "berth-agent for host 'hv-01'", kernelBootId: "", since: "2026-12-01T10:00:00.000Z", token: "t" }));
      const e = await lockStateDir(dir, "hv-02").catch((x: unknown) => x);
      expect(e).toBeInstanceOf(StateDirLockedError);
      const message = (e as Error).message;
      expect(message).toContain(dir);
      expect(message).toContain(`pid ${other.pid}`);
      expect(message).toContain("'hv-01'");
      expect(message).toMatch(/stop that agent first/i);
      expect(message).toContain("--state-dir");
      // The holder's lock is untouched.
      expect(JSON.parse(readFileSync(lockPath(), "utf8"))).toMatchObject({ pid: other.pid });
    } finally {
      other.stop();
    }
  });

  it("refuses a second lock from the same process", async () => {
    const lock = await lockStateDir(dir, "hv-01");
    await expect(lockStateDir(dir, "hv-01")).rejects.toBeInstanceOf(StateDirLockedError);
    await lock.release();
  });

  it("takes over a stale lock: its pid is dead, or it predates the last reboot", async () => {
    const dead = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
    await new Promise((r) => dead.once("exit", r));
    writeFileSync(lockPath(), JSON.stringify({ pid: dead.pid, holder: "berth-agent for host 'hv-01'", kernelBootId: "", since: "x", token: "old" }));
    const lock = await lockStateDir(dir, "hv-01");
    expect(JSON.parse(readFileSync(lockPath(), "utf8"))).toMatchObject({ pid: process.pid });
    await lock.release();

    const other = otherProcess();
    try {
      // A live pid, but the lock was taken under another kernel boot: that pid is someone else now.
      writeFileSync(lockPath(), JSON.stringify({ pid: other.pid, holder: "berth-agent for host 'hv-01'", kernelBootId: "another-boot", since: "x", token: "old" }));
      const bootKnown = existsSync("/proc/sys/kernel/random/boot_id");
      const taken = await lockStateDir(dir, "hv-01").catch((x: unknown) => x);
      if (bootKnown) {
        expect(taken).not.toBeInstanceOf(Error);
        await (taken as { release(): Promise<void> }).release();
      } else {
        expect(taken).toBeInstanceOf(StateDirLockedError);
      }
    } finally {
      other.stop();
    }
  });

  it("release leaves a lock that is no longer its own", async () => {
    const lock = await lockStateDir(dir, "hv-01");
    writeFileSync(lockPath(), JSON.stringify({ pid: 1, hostId: "someone-else", kernelBootId: "", since: "x", token: "theirs" }));
    await lock.release();
    expect(JSON.parse(readFileSync(lockPath(), "utf8"))).toMatchObject({ token: "theirs" });
  });

  it("of agents racing for a stale lock, exactly one wins", async () => {
    writeFileSync(lockPath(), JSON.stringify({ pid: 999_999_999, hostId: "hv-01", kernelBootId: "", since: "x", token: "old" }));
    // In one process, as across processes: each moves the stale lock aside, and puts back a fresh one it moved by mistake.
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => lockStateDir(dir, "hv-01")));
    const won = results.filter((r) => r.status === "fulfilled");
    expect(won).toHaveLength(1);
    expect(results.filter((r) => r.status === "rejected").every((r) => (r as PromiseRejectedResult).reason instanceof StateDirLockedError)).toBe(true);
    await (won[0] as PromiseFulfilledResult<{ release(): Promise<void> }>).value.release();
  });
});
