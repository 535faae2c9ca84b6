import { renameSync } from "node:fs";
import { open, unlink } from "node:fs/promises";
import path from "node:path";

let tempSeq = 0;

/**
 * Writes `text` to `file` atomically and durably: a temp file beside it, fsync, rename, fsync of
 * the directory. A reader sees the old content or the new, never a torn file. Throws the file
 * system's error (the temp file removed); callers map it to their own.
 *
 * `stillCurrent`, if given, is asked just before the rename (the moment the new content becomes
 * visible): when it answers false the temp file is removed, `file` is left as it was and the call
 * resolves false. The rename follows the check synchronously (no await in between), so a process
 * frozen mid-write (SIGSTOP) that thaws later is caught by the check; only a freeze in the
 * microseconds between the check and the rename system call could slip through.
 */
export async function writeFileAtomically(file: string, text: string, stillCurrent?: () => boolean): Promise<boolean> {
  const temp = `${file}.${process.pid}.${++tempSeq}.tmp`;
  try {
    const handle = await open(temp, "w", 0o644);
    try {
      await handle.writeFile(text, "utf8");
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (stillCurrent && !stillCurrent()) {
      await unlink(temp).catch(() => undefined);
      return false;
    }
    renameSync(temp, file);
  } catch (e) {
    await unlink(temp).catch(() => undefined);
    throw e;
  }
  await syncDirectory(path.dirname(file));
  return true;
}

/** Makes a rename or unlink durable. Best effort: some platforms cannot open a directory for sync. */
export async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // The rename itself is atomic; only its durability across a power loss depends on this.
  }
}
