import { randomUUID } from "node:crypto";
import { readFileSync, unlinkSync } from "node:fs";
import { link, mkdir, readFile, unlink, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";

/** The lock file's name in the state directory. */
export const STATE_LOCK_FILE = "agent.lock";
/** Held for the few milliseconds in which a stale lock is removed. */
const BREAKER_FILE = `${STATE_LOCK_FILE}.break`;

/** Who holds a state directory, as its lock file says. */
export interface StateLockOwner {
  pid: number;
  hostId: string;
  /** The kernel's boot id when the lock was taken ("" where unknown): a lock from before a reboot is stale. */
  kernelBootId: string;
  /** ISO time the lock was taken. */
  since: string;
  /** Unique per lock taken: release removes the file only while it still holds this one. */
  token: string;
}

/** A second agent on one state directory: names the directory, the holder and what to do. */
export class StateDirLockedError extends Error {
  constructor(
    readonly stateDir: string,
    readonly owner: StateLockOwner,
  ) {
    super(
      `the state directory ${stateDir} is in use by another berth-agent (pid ${owner.pid}, host id '${owner.hostId}', since ${owner.since}). ` +
        `One agent per state directory: two would drive one hypervisor's VMs against each other. Stop that agent first ` +
        `(e.g. systemctl stop berth-agent), or give this one its own --state-dir. If no agent with pid ${owner.pid} is running, ` +
        `remove ${join(stateDir, STATE_LOCK_FILE)}.`,
    );
    this.name = "StateDirLockedError";
  }
}

/** Directories this process holds (a second lock from the same process is refused too). */
const heldHere = new Set<string>();

/** The lock one agent holds on its state directory until `release`. */
export class StateDirLock {
  private released = false;

  constructor(
    readonly stateDir: string,
    readonly owner: StateLockOwner,
  ) {}

  /** Removes the lock file if it is still ours. Idempotent; never throws. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    heldHere.delete(this.stateDir);
    const path = join(this.stateDir, STATE_LOCK_FILE);
    try {
      if (parseOwner(await readFile(path, "utf8"))?.token === this.owner.token) await unlink(path);
    } catch {
      // Gone already, or unreadable: nothing of ours to remove.
    }
  }

  /** `release` for a process 'exit' handler, where nothing asynchronous runs any more. */
  releaseSync(): void {
    if (this.released) return;
    this.released = true;
    heldHere.delete(this.stateDir);
    const path = join(this.stateDir, STATE_LOCK_FILE);
    try {
      if (parseOwner(readFileSync(path, "utf8"))?.token === this.owner.token) unlinkSync(path);
    } catch {
      // As in release.
    }
  }
}

/**
 * Takes `<stateDir>/agent.lock` for this process, creating the directory if needed. The file is
 * created exclusively and complete (written aside, then hard-linked into place, so no reader ever
 * sees half of it) and holds the pid, the host id and the kernel's boot id.
 *
 * A lock whose holder is gone is stale and taken over (removed under a second, short-lived lock,
 * `agent.lock.break`, so that racing agents cannot both win): its pid is not running, or it was taken
 * before the last reboot (another kernel boot id: after a power cut the old pid may belong to any
 * process), or it names this very pid without this process holding it (a restart in a PID
 * namespace). Throws {@link StateDirLockedError} when a live process holds it.
 */
export async function lockStateDir(stateDir: string, hostId: string): Promise<StateDirLock> {
  const dir = resolve(stateDir);
  await mkdir(dir, { recursive: true });
  const path = join(dir, STATE_LOCK_FILE);
  if (heldHere.has(dir)) {
    const held = parseOwner(await readFile(path, "utf8").catch(() => ""));
    if (held) throw new StateDirLockedError(dir, held);
  }
  const owner: StateLockOwner = { pid: process.pid, hostId, kernelBootId: kernelBootId(), since: new Date().toISOString(), token: randomUUID() };
  const text = `${JSON.stringify(owner)}\n`;
  const aside = `${path}.${process.pid}.${owner.token}.tmp`;
  await writeFile(aside, text, { flush: true });
  try {
    // Several rounds only when racing other agents over a stale lock.
    for (let round = 0; round < 50; round++) {
      try {
        await link(aside, path);
        heldHere.add(dir);
        return new StateDirLock(dir, owner);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      }
      let existing: string;
      try {
        existing = await readFile(path, "utf8");
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") continue; // released meanwhile
        throw e;
      }
      const holder = parseOwner(existing);
      if (holder && isLive(holder, heldHere, dir)) throw new StateDirLockedError(dir, holder);
      // Stale (or unreadable: only a torn disk write makes one, since locks are linked whole).
      // Removed only under the breaker lock, and only if it is still the stale one we read: two
      // agents taking over at once could otherwise each remove the lock the other just took.
      if (await takeBreaker(dir, aside)) {
        try {
          const now = await readFile(path, "utf8").catch(() => undefined);
          if (now === existing) await unlink(path).catch(() => undefined);
        } finally {
          await releaseBreaker(dir);
        }
      } else {
        await new Promise((r) => setTimeout(r, 10 + Math.random() * 20));
      }
    }
    throw new Error(`could not take ${path}: other agents keep taking it over`);
  } finally {
    await unlink(aside).catch(() => undefined);
  }
}

/** Directories whose breaker lock this process holds. */
const breakingHere = new Set<string>();

/**
 * Takes `agent.lock.break`, held only while a stale lock is removed. A breaker whose holder died
 * (a crash within those milliseconds) is removed and the caller tries again; were two agents to do
 * that at the same instant, both could go on: that double fault is not guarded against.
 */
async function takeBreaker(dir: string, aside: string): Promise<boolean> {
  const path = join(dir, BREAKER_FILE);
  try {
    await link(aside, path);
    breakingHere.add(dir);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  }
  const holder = parseOwner(await readFile(path, "utf8").catch(() => ""));
  if (!holder || !isLive(holder, breakingHere, dir)) await unlink(path).catch(() => undefined);
  return false;
}

async function releaseBreaker(dir: string): Promise<void> {
  breakingHere.delete(dir);
  await unlink(join(dir, BREAKER_FILE)).catch(() => undefined);
}

function parseOwner(text: string): StateLockOwner | undefined {
  try {
    const o = JSON.parse(text) as Partial<StateLockOwner>;
    if (typeof o.pid !== "number" || !Number.isInteger(o.pid) || o.pid <= 0) return undefined;
    return {
      pid: o.pid,
      hostId: typeof o.hostId === "string" ? o.hostId : "?",
      kernelBootId: typeof o.kernelBootId === "string" ? o.kernelBootId : "",
      since: typeof o.since === "string" ? o.since : "?",
      token: typeof o.token === "string" ? o.token : "",
    };
  } catch {
    return undefined;
  }
}

/** Whether the holder of a lock (of those `here` lists for this process) may still be running. */
function isLive(holder: StateLockOwner, here: ReadonlySet<string>, dir: string): boolean {
  const boot = kernelBootId();
  if (holder.kernelBootId && boot && holder.kernelBootId !== boot) return false;
  // This pid without this process holding the lock: an earlier incarnation (a restart in a PID namespace).
  if (holder.pid === process.pid) return here.has(dir);
  try {
    process.kill(holder.pid, 0);
    return true;
  } catch (e) {
    // EPERM: the pid runs as another user, which is still a live holder.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

let cachedBootId: string | undefined;
function kernelBootId(): string {
  if (cachedBootId === undefined) {
    try {
      cachedBootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    } catch {
      cachedBootId = "";
    }
  }
  return cachedBootId;
}
