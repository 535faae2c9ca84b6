import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { openFileStore } from "./file-store.js";

const put = (key: string, value: string) => ({ compare: [], ops: [{ type: "put" as const, key, value: new TextEncoder().encode(value) }] });

describe("openFileStore", () => {
  it("keeps keys and revisions across a restart, but not leased keys, and revisions keep growing", async () => {
    const path = join(await mkdtemp(join(tmpdir(), "berth-file-store-")), "dev", "store.json");
    const first = await openFileStore(path);
    await first.store.txn(put("/a", "1"));
    await first.store.txn(put("/a", "2"));
    const lease = await first.store.grantLease(10_000);
    await first.store.txn({ compare: [], ops: [{ type: "put", key: "/leader", value: new Uint8Array([1]), lease: lease.id }] });
    const before = await first.store.get("/a");
    const revision = first.store.revision;
    await first.flush();
    await first.store.close();

    const second = await openFileStore(path);
    expect(await second.store.get("/a")).toEqual(before);
    expect(await second.store.get("/leader")).toBeUndefined();
    expect(second.store.revision).toBe(revision);
    const next = await second.store.txn(put("/leader", "x"));
    expect(next.revision).toBe(revision + 1);
    // A watch from before the restart cannot be served: it is told to re-list.
    const error = await new Promise<Error>((resolve) => second.store.watch("/", 2, { onEvents: () => undefined, onError: resolve }));
    expect(error.name).toBe("CompactedError");
    await second.flush();
    await second.store.close();
  });

  it("writes within moments of a commit, without flush", async () => {
    const path = join(await mkdtemp(join(tmpdir(), "berth-file-store-")), "store.json");
    const fs = await openFileStore(path);
    await fs.store.txn(put("/k", "v"));
    await new Promise((r) => setTimeout(r, 200));
    expect(JSON.parse(await readFile(path, "utf8")).kvs).toHaveLength(1);
    await fs.flush();
  });

  it("refuses a file it did not write, naming it, and changes nothing", async () => {
    const path = join(await mkdtemp(join(tmpdir(), "berth-file-store-")), "store.json");
    await writeFile(path, '{"hello": 1}');
    await expect(openFileStore(path)).rejects.toThrow(`${path}: unknown format`);
    expect(await readFile(path, "utf8")).toBe('{"hello": 1}');
  });

  it("refuses a second opener of one file while the first holds it, then lets the next one in", async () => {
    const path = join(await mkdtemp(join(tmpdir(), "berth-file-store-")), "store.json");
    const first = await openFileStore(path);
    await expect(openFileStore(path)).rejects.toThrow(/is in use by another controller \(pid \d+/);
    await first.flush();
    const second = await openFileStore(path);
    await second.flush();
  });
});
