import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { BerthError, ErrorCode, lockDir } from "@berth/core";
import { MemoryStore, type MemoryStoreOptions, type MemoryStoreState } from "./memory-store.js";
import type { KeyValue } from "./types.js";

/** A MemoryStore kept in a file: see `openFileStore`. */
export interface FileStore {
  store: MemoryStore;
  /** Writes what is not written yet and stops following commits. Idempotent. */
  flush(): Promise<void>;
}

/** Most time between a commit and the write of the file. */
const WRITE_DELAY_MS = 20;
const FORMAT = "berth-embedded-store";

/**
 * The embedded store, kept in `path` so that a restarted `berth dev` keeps its cluster: loaded at
 * open (a missing file is an empty store), rewritten atomically (temp file + rename) within
 * `WRITE_DELAY_MS` of each commit, and on `flush()`. Keys attached to leases are not kept (a
 * lease does not outlive its process: the leader key is made again by the next election, at a
 * later revision, so epochs keep growing). A crash can lose the last moment's writes: this is
 * for one machine's local cluster; deployments use etcd. One process per file: a second one is
 * refused (core's `DirLockedError`, naming the holder) — two would overwrite each other's writes.
 * Throws INVALID_ARGUMENT naming the file when it is not one this function wrote.
 */
export async function openFileStore(path: string, options: Omit<MemoryStoreOptions, "initial"> = {}): Promise<FileStore> {
  await mkdir(dirname(path), { recursive: true });
  const lock = await lockDir(dirname(path), {
    file: `${basename(path)}.lock`,
    holder: "berth-controller",
    refusal: (_dir, lockPath, owner) =>
      `${path} is in use by another controller (pid ${owner.pid}, since ${owner.since}): one controller per data file, or they would overwrite each other. ` +
      `Stop that one (another berth dev in this directory?) or give this one its own --data-file. If no process with pid ${owner.pid} runs, remove ${lockPath}.`,
  });
  let initial: MemoryStoreState | undefined;
  try {
    initial = await load(path);
  } catch (e) {
    await lock.release();
    throw e;
  }
  process.once("exit", () => lock.releaseSync());
  const store = new MemoryStore({ ...options, ...(initial ? { initial } : {}) });
  let timer: NodeJS.Timeout | undefined;
  let writing: Promise<void> = Promise.resolve();
  let closed = false;
  const write = (): Promise<void> => {
    timer = undefined;
    const state = store.exportState();
    writing = writing.then(() => save(path, state)).catch(() => undefined);
    return writing;
  };
  const unsubscribe = store.onCommit(() => {
    if (!closed && !timer) timer = setTimeout(() => void write(), WRITE_DELAY_MS);
  });
  return {
    store,
    flush: async () => {
      if (closed) return writing;
      closed = true;
      unsubscribe();
      clearTimeout(timer);
      await write();
      await lock.release();
    },
  };
}

interface FileKv {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
}

async function load(path: string): Promise<MemoryStoreState | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  const bad = (why: string): BerthError => new BerthError(ErrorCode.InvalidArgument, `${path}: ${why} (not a Berth embedded store file; move it away to start empty)`, { field: "data_file" });
  let parsed: { format?: unknown; revision?: unknown; kvs?: unknown };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch (e) {
    throw bad(`unreadable JSON: ${(e as Error).message.slice(0, 120)}`);
  }
  if (parsed.format !== FORMAT || !Number.isSafeInteger(parsed.revision) || !Array.isArray(parsed.kvs)) throw bad("unknown format");
  const kvs: KeyValue[] = (parsed.kvs as FileKv[]).map((kv, i) => {
    if (typeof kv?.key !== "string" || typeof kv.value !== "string" || ![kv.createRevision, kv.modRevision, kv.version].every(Number.isSafeInteger)) {
      throw bad(`kvs[${i}] is malformed`);
    }
    return { key: kv.key, value: new Uint8Array(Buffer.from(kv.value, "base64")), createRevision: kv.createRevision, modRevision: kv.modRevision, version: kv.version, lease: "" };
  });
  return { revision: parsed.revision as number, kvs };
}

async function save(path: string, state: MemoryStoreState): Promise<void> {
  const kvs: FileKv[] = state.kvs.map((kv) => ({
    key: kv.key,
    value: Buffer.from(kv.value).toString("base64"),
    createRevision: kv.createRevision,
    modRevision: kv.modRevision,
    version: kv.version,
  }));
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify({ format: FORMAT, revision: state.revision, kvs }), { flush: true });
  await rename(tmp, path);
}
