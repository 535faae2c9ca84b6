import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ImageRef } from "@berth/api";
import { ErrorCode } from "@berth/core";
import {
  checkImageRef,
  FakeDriver,
  ManualClock,
  parseImageSource,
  qcow2Header,
  qcow2VirtualSize,
  readFakeHypervisorState,
  type DomainSpec,
  type FakeDriverOptions,
} from "./index.js";
import { failure, openFakeOn } from "./fake.testkit.js";

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

let dir: string;
let drivers: FakeDriver[];
let servers: Server[];

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "berth-fake-images-"));
  drivers = [];
  servers = [];
});

afterEach(async () => {
  for (const d of drivers) await d.close();
  for (const s of servers) {
    // Keep-alive connections of fetch would hold close() for seconds.
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  rmSync(dir, { recursive: true, force: true });
});

const open = (options: Partial<FakeDriverOptions> = {}, stateDir = path.join(dir, "host")) => openFakeOn(drivers, stateDir, options);

/** Writes a qcow2 header of `virtualSizeBytes` (what the fake reads); returns its path and SHA-256. */
function qcow2File(name: string, virtualSizeBytes: number): { file: string; sha256: string } {
  const bytes = qcow2Header(virtualSizeBytes);
  const file = path.join(dir, name);
  writeFileSync(file, bytes);
  return { file, sha256: createHash("sha256").update(bytes).digest("hex") };
}

const ref = (source: string, over: Partial<ImageRef> = {}): ImageRef => ({ id: "img-1", name: "debian", source, format: "qcow2", sha256: "", ...over });

const spec = (n: number, over: Partial<DomainSpec> = {}): DomainSpec => ({
  vmId: `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`,
  name: `vm-${n}`,
  resources: { vcpus: 1, memoryMib: 512, diskGib: 10 },
  generation: 1,
  ...over,
});


/** Resolves once the clock has more timers than `before` (the fetch reached its simulated transfer). */
async function timerSet(clock: ManualClock, before: number): Promise<void> {
  for (let i = 0; i < 500 && clock.pending <= before; i++) await new Promise((r) => setTimeout(r, 2));
  expect(clock.pending).toBeGreaterThan(before);
}

/** An http server on 127.0.0.1 answering each request with `handle`. */
async function serve(handle: Parameters<typeof createServer>[1]): Promise<string> {
  const server = createServer(handle);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe("image references and headers (pure)", () => {
  it("reads the virtual size of a qcow2 header and refuses anything else", () => {
    expect(qcow2VirtualSize(qcow2Header(3 * GIB))).toBe(3 * GIB);
    expect(qcow2VirtualSize(new Uint8Array(72))).toBeUndefined();
    expect(qcow2VirtualSize(qcow2Header(GIB).subarray(0, 31))).toBeUndefined();
  });

  it("parses sources: http(s) URLs, local file:// URLs, absolute paths; nothing else", () => {
    expect(parseImageSource("https://example.org/a.qcow2")).toEqual({ kind: "http", url: "https://example.org/a.qcow2" });
    expect(parseImageSource("file:///srv/images/a.qcow2")).toEqual({ kind: "file", path: "/srv/images/a.qcow2" });
    expect(parseImageSource("/srv/images/../images/a.qcow2")).toEqual({ kind: "file", path: "/srv/images/a.qcow2" });
    for (const bad of ["images/a.qcow2", "ftp://example.org/a", "file://otherhost/a.qcow2", "x".repeat(3000)]) {
      expect(() => parseImageSource(bad)).toThrow(/^image\.source: /);
    }
    // A long bad source is quoted, not echoed whole.
    expect(() => parseImageSource(`relative/${"x".repeat(500)}`)).toThrow(/… \(509 characters\)\)$/);
  });

  it.each([
    [{ id: "" }, "image.id"],
    [{ id: "a/b" }, "image.id"],
    [{ source: "" }, "image.source"],
    [{ format: "vmdk" }, "image.format"],
    [{ sha256: "ABC" }, "image.sha256"],
  ])("refuses %j naming %s", (over, field) => {
    expect(() => checkImageRef(ref("/srv/a.qcow2", over as Partial<ImageRef>))).toThrow(new RegExp(`^${field.replace(".", "\\.")}: `));
  });

  it("defaults the format to qcow2", () => {
    expect(checkImageRef(ref("/srv/a.img", { format: "" })).format).toBe("qcow2");
  });
});

describe("FakeDriver: images", () => {
  it("fetches a file once: size / imageFetchMibPerS of the clock, the virtual size from the header; held across a restart", async () => {
    // A sparse raw file of 800 MiB: read is its head only; at 400 MiB/s the copy takes 2 s.
    const file = path.join(dir, "big.img");
    writeFileSync(file, "");
    truncateSync(file, 800 * MIB);
    const { d, clock } = open();
    let done = false;
    const before = clock.pending;
    const fetching = d.ensureImage(ref(file, { format: "raw" })).then((i) => ((done = true), i));
    await timerSet(clock, before);
    await clock.advance(1999);
    expect(done).toBe(false);
    expect(await d.listImages()).toEqual([]);
    await clock.advance(1);
    expect(await fetching).toEqual({ imageId: "img-1", sizeBytes: 800 * MIB, virtualSizeBytes: 800 * MIB });
    expect(await d.listImages()).toEqual([{ imageId: "img-1", sizeBytes: 800 * MIB, virtualSizeBytes: 800 * MIB }]);
    // Held: at once, whatever the source says now.
    expect(await d.ensureImage(ref("/nowhere/else.img", { format: "raw" }))).toMatchObject({ imageId: "img-1" });
    expect(readFakeHypervisorState(path.join(dir, "host"), clock.now()).images).toEqual([
      { imageId: "img-1", name: "debian", source: file, format: "raw", sha256: "", sizeBytes: 800 * MIB, virtualSizeBytes: 800 * MIB, fetchedAtMs: clock.now() },
    ]);
    await d.close();
    const again = open({ clock }).d;
    expect(await again.listImages()).toEqual([{ imageId: "img-1", sizeBytes: 800 * MIB, virtualSizeBytes: 800 * MIB }]);
  });

  it("shares one fetch among concurrent calls for an image, at the configured rate", async () => {
    const file = path.join(dir, "big.img");
    writeFileSync(file, "");
    truncateSync(file, 100 * MIB);
    const { d, clock } = open({ imageFetchMibPerS: 50 });
    const before = clock.pending;
    const calls = [d.ensureImage(ref(file, { format: "raw" })), d.ensureImage(ref(file, { format: "raw" })), d.ensureImage(ref(file, { format: "raw" }))];
    await timerSet(clock, before);
    // One transfer under way, not three.
    expect(clock.pending).toBe(before + 1);
    await clock.advance(2000);
    const got = await Promise.all(calls);
    expect(new Set(got.map((g) => JSON.stringify(g))).size).toBe(1);
  });

  it("checks the SHA-256 when asked: a mismatch fails FAILED_PRECONDITION after the transfer and keeps nothing", async () => {
    const { file, sha256 } = qcow2File("a.qcow2", 2 * GIB);
    const { d, clock } = open();
    const e = await failure(d.ensureImage(ref(file, { sha256: "0".repeat(64) })));
    expect(e.code).toBe(ErrorCode.FailedPrecondition);
    expect(e.message).toMatch(/^image\.sha256: .*checksum mismatch/);
    expect(await d.listImages()).toEqual([]);
    expect(readFakeHypervisorState(path.join(dir, "host"), clock.now()).images).toEqual([]);
    expect(await d.ensureImage(ref(`file://${file}`, { sha256 }))).toEqual({ imageId: "img-1", sizeBytes: 72, virtualSizeBytes: 2 * GIB });
  });

  it("refuses a file that is not a qcow2 image, and a missing one (NOT_FOUND naming image.source)", async () => {
    const raw = path.join(dir, "plain.img");
    writeFileSync(raw, Buffer.alloc(4096, 7));
    const { d } = open();
    const notQcow2 = await failure(d.ensureImage(ref(raw)));
    expect(notQcow2.code).toBe(ErrorCode.FailedPrecondition);
    expect(notQcow2.message).toMatch(/not a qcow2 image/);
    // As raw it is an image of its own size.
    expect(await d.ensureImage(ref(raw, { id: "img-raw", format: "raw" }))).toEqual({ imageId: "img-raw", sizeBytes: 4096, virtualSizeBytes: 4096 });
    const missing = await failure(d.ensureImage(ref(path.join(dir, "missing.qcow2"))));
    expect(missing.code).toBe(ErrorCode.NotFound);
    expect(missing.message).toMatch(/^image\.source: no such file/);
    expect(missing.field).toBe("image.source");
    expect((await d.listImages()).map((i) => i.imageId)).toEqual(["img-raw"]);
  });

  it("fails by fault injection like any other operation, and a define over it with it", async () => {
    const { file } = qcow2File("a.qcow2", GIB);
    const { d } = open();
    d.faults.failNext({ op: "ensureImage", code: ErrorCode.Unavailable });
    expect((await failure(d.ensureImage(ref(file)))).code).toBe(ErrorCode.Unavailable);
    d.faults.failNext({ op: "ensureImage", code: ErrorCode.DeadlineExceeded });
    expect((await failure(d.define(spec(1, { image: ref(file) })))).code).toBe(ErrorCode.DeadlineExceeded);
    expect(await d.list()).toEqual([]);
    expect(await d.listImages()).toEqual([]);
  });

  it("fetches over http(s): the body read through, 404 NOT_FOUND, a server that does not answer UNAVAILABLE", async () => {
    const header = Buffer.from(qcow2Header(5 * GIB));
    const url = await serve((req, res) => {
      if (req.url === "/a.qcow2") res.end(header);
      else if (req.url === "/hang") return; // never answers
      else if (req.url === "/broken") res.writeHead(500).end("no");
      else res.writeHead(404).end("not here");
    });
    const { d } = open({ imageFetchTimeoutMs: 300 });
    const sha256 = createHash("sha256").update(header).digest("hex");
    expect(await d.ensureImage(ref(`${url}/a.qcow2`, { sha256 }))).toEqual({ imageId: "img-1", sizeBytes: 72, virtualSizeBytes: 5 * GIB });
    const missing = await failure(d.ensureImage(ref(`${url}/gone.qcow2`, { id: "img-2" })));
    expect(missing.code).toBe(ErrorCode.NotFound);
    expect(missing.message).toMatch(/HTTP 404/);
    const hung = await failure(d.ensureImage(ref(`${url}/hang`, { id: "img-3" })));
    expect(hung.code).toBe(ErrorCode.Unavailable);
    expect(hung.message).toMatch(/did not answer within 300 ms/);
    expect((await failure(d.ensureImage(ref(`${url}/broken`, { id: "img-4" })))).code).toBe(ErrorCode.Unavailable);
    // Nothing answers on a closed port.
    const closed = await serve(() => undefined);
    await new Promise((r) => servers.pop()!.close(r));
    expect((await failure(d.ensureImage(ref(`${closed}/a.qcow2`, { id: "img-5" })))).code).toBe(ErrorCode.Unavailable);
    expect((await d.listImages()).map((i) => i.imageId)).toEqual(["img-1"]);
  });

  it("defines a domain over an image (imageId recorded); a disk smaller than the virtual size, or none, is refused naming image", async () => {
    const { file } = qcow2File("a.qcow2", 10 * GIB + 1);
    for (const persist of [true, false]) {
      const { d } = open({ persist }, persist ? path.join(dir, "host") : `images-test-${process.pid}`);
      const small = await failure(d.define(spec(1, { image: ref(file), resources: { vcpus: 1, memoryMib: 512, diskGib: 10 } })));
      expect(small.code).toBe(ErrorCode.InvalidArgument);
      expect(small.field).toBe("image");
      expect(small.message).toMatch(/^image: .*more than the disk of 10 GiB/);
      const none = await failure(d.define(spec(2, { image: ref(file), resources: { vcpus: 1, memoryMib: 512, diskGib: 0 } })));
      expect(none.message).toMatch(/^image: .*disk_gib, which is 0/);
      expect(await d.list()).toEqual([]);
      const ok = await d.define(spec(3, { image: ref(file), resources: { vcpus: 1, memoryMib: 512, diskGib: 11 } }));
      expect(ok.imageId).toBe("img-1");
      expect((await d.list())[0]?.imageId).toBe("img-1");
      await d.close();
      // Kept with the domain, across a restart.
      const again = open({ persist }, persist ? path.join(dir, "host") : `images-test-${process.pid}`).d;
      expect((await again.list()).map((x) => x.imageId)).toEqual(["img-1"]);
      await again.delete(spec(3).vmId);
    }
  });

  it("refuses an image larger than the host's pool (RESOURCE_EXHAUSTED)", async () => {
    const file = path.join(dir, "huge.img");
    writeFileSync(file, "");
    truncateSync(file, 3 * GIB);
    const { d } = open({ capacity: { diskGib: 2 }, imageFetchMibPerS: 1e9 });
    const e = await failure(d.ensureImage(ref(file, { format: "raw" })));
    expect(e.code).toBe(ErrorCode.ResourceExhausted);
    expect(await d.listImages()).toEqual([]);
  });
});
