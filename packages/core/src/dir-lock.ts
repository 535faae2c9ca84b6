import { randomUUID } from "node:crypto";
import { readFileSync, unlinkSync } from "node:fs";
import { link, mkdir, readFile, unlink, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";

/**
 * One process per directory (an agent's state dir, an embedded store's file): a lock file made
 * exclusively, holding who took it, taken over only when its holder is gone.
 */

/** Who holds a directory, as its lock file says. */
export interface DirLockOwner {
  pid: number;
  /** Who the holder is, for people (e.g. "berth-agent for host 'host-1'"). */
  holder: string;
  /** The kernel's boot id when the lock was taken ("" where unknown): a lock from before a reboot is stale. */
  kernelBootId: string;
  /** ISO time the lock was taken. */
  since: string;
  /** Unique per lock taken: release removes the file only while it still holds this one. */
  token: string;
}

/** The directory is held by another live process: names the directory, the lock and the holder. */
export class DirLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly lockFile: string,
    readonly owner: DirLockOwner,
    message: string,
  ) {
    super(message);
    this.name = "DirLockedError";
  }
}

/** How `lockDir` names its lock and explains a refusal. */
export interface DirLockOptions {
  /** The lock file's name in the directory. */
  file: string;
  /** Who this process is, written into the lock (see `DirLockOwner.holder`). */
  holder: string;
  /** The refusal's message, given the directory, the lock file's path and the live holder. */
  refusal(dir: string, lockPath: string, owner: DirLockOwner): string;
}

/** Directories this process holds (a second lock from the same process is refused too). */
const heldHere = new Set<string>();

/** The lock this process holds on a directory until `release`. */
export class DirLock {
  private released = false;

  constructor(
    readonly dir: string,
    readonly file: string,
    readonly owner: DirLockOwner,
  ) {}

  /** Removes the lock file if it is still ours. Idempotent; never throws. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    heldHere.delete(this.key);
    const path = join(this.dir, this.file);
    try {
      if (parseOwner(await readFile(path, "utf8"))?.token === this.owner.token) await unlink(path);
    } catch {
      // Gone already, or unreadable: nothing of ours to remove.
    }
  }

  private get key(): string {
    return join(this.dir, this.file);
  }

  /** `release` for a process 'exit' handler, where nothing asynchronous runs any more. */
  releaseSync(): void {
    if (this.released) return;
    this.released = true;
    heldHere.delete(this.key);
    const path = join(this.dir, this.file);
    try {
      if (parseOwner(readFileSync(path, "utf8"))?.token === this.owner.token) unlinkSync(path);
    } catch {
      // As in release.
    }
  }
}

/**
 * Takes `<dir>/<options.file>` for this process, creating the directory if needed. The file is
 * created exclusively and complete (written aside, then hard-linked into place, so no reader ever
 * sees half of it) and holds the pid, the host id and the kernel's boot id.
 *
 * A lock whose holder is gone is stale and taken over (removed under a second, short-lived lock,
 * `<file>.break`, so that racing takers cannot both win): its pid is not running, or it was taken
 * before the last reboot (another kernel boot id: after a power cut the old pid may belong to any
 * process), or it names this very pid without this process holding it (a restart in a PID
 * namespace). Throws {@link DirLockedError} when a live process holds it.
 */
export async function lockDir(directory: string, options: DirLockOptions): Promise<DirLock> {
  const dir = resolve(directory);
  await mkdir(dir, { recursive: true });
  const path = join(dir, options.file);
  const refuse = (owner: DirLockOwner): DirLockedError => new DirLockedError(dir, path, owner, options.refusal(dir, path, owner));
  if (heldHere.has(path)) {
    const held = parseOwner(await readFile(path, "utf8").catch(() => ""));
    if (held) throw refuse(held);
  }
  const owner: DirLockOwner = { pid: process.pid, holder: options.holder, kernelBootId: kernelBootId(), since: new Date().toISOString(), token: randomUUID() };
  const text = `${JSON.stringify(owner)}\n`;
  const aside = `${path}.${process.pid}.${owner.token}.tmp`;
  await writeFile(aside, text, { flush: true });
  try {
    // Several rounds only when racing other takers over a stale lock.
    for (let round = 0; round < 50; round++) {
      try {
        await link(aside, path);
        heldHere.add(path);
        return new DirLock(dir, options.file, owner);
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
      if (holder && isLive(holder, heldHere, path)) throw refuse(holder);
      // Stale (or unreadable: only a torn disk write makes one, since locks are linked whole).
      // Removed only under the breaker lock, and only if it is still the stale one we read: two
      // takers at once could otherwise each remove the lock the other just took.
      if (await takeBreaker(path, aside)) {
        try {
          const now = await readFile(path, "utf8").catch(() => undefined);
          if (now === existing) await unlink(path).catch(() => undefined);
        } finally {
          await releaseBreaker(path);
        }
      } else {
        await new Promise((r) => setTimeout(r, 10 + Math.random() * 20));
      }
    }
    throw new Error(`could not take ${path}: other processes keep taking it over`);
  } finally {
    await unlink(aside).catch(() => undefined);
  }
}

/** Lock paths whose breaker lock this process holds. */
const breakingHere = new Set<string>();

/**
 * Takes `<lock>.break`, held only while a stale lock is removed. A breaker whose holder died
 * (a crash within those milliseconds) is removed and the caller tries again; were two takers to do
 * that at the same instant, both could go on: that double fault is not guarded against.
 */
async function takeBreaker(lockPath: string, aside: string): Promise<boolean> {
  const path = `${lockPath}.break`;
  try {
    await link(aside, path);
    breakingHere.add(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  }
  const holder = parseOwner(await readFile(path, "utf8").catch(() => ""));
  if (!holder || !isLive(holder, breakingHere, path)) await unlink(path).catch(() => undefined);
  return false;
}

async function releaseBreaker(lockPath: string): Promise<void> {
  breakingHere.delete(`${lockPath}.break`);
  await unlink(`${lockPath}.break`).catch(() => undefined);
}

function parseOwner(text: string): DirLockOwner | undefined {
  try {
    const o = JSON.parse(text) as Partial<DirLockOwner>;
    if (typeof o.pid !== "number" || !Number.isInteger(o.pid) || o.pid <= 0) return undefined;
    return {
      pid: o.pid,
      holder: typeof o.holder === "string" ? o.holder : "?",
      kernelBootId: typeof o.kernelBootId === "string" ? o.kernelBootId : "",
      since: typeof o.since === "string" ? o.since : "?",
      token: typeof o.token === "string" ? o.token : "",
    };
  } catch {
    return undefined;
  }
}

/** Whether the holder of a lock (of those `here` lists for this process) may still be running. */
function isLive(holder: DirLockOwner, here: ReadonlySet<string>, key: string): boolean {
  const boot = kernelBootId();
  if (holder.kernelBootId && boot && holder.kernelBootId !== boot) return false;
  // This pid without this process holding the lock: an earlier incarnation (a restart in a PID namespace).
  if (holder.pid === process.pid) return here.has(key);
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
