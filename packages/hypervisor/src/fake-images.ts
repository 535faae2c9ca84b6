/**
 * What the fake hypervisor reads of a base image: it really reads the source (a local file, or an
 * http(s) URL with Node's fetch) for its size, its header and, when asked, its SHA-256, but keeps
 * no bytes: the fake host records the image (`FakeImage`), it does not store a copy.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ImageRef } from "@berth/api";
import { BerthError, ErrorCode, invalidArgument, quote } from "@berth/core";

/** Where an image comes from, as `ImageRef.source` says it. */
export type FakeImageSource = { kind: "file"; path: string } | { kind: "http"; url: string };

/** The bytes a qcow2 file starts with: "QFI" and 0xfb. */
export const QCOW2_MAGIC: readonly number[] = Object.freeze([0x51, 0x46, 0x49, 0xfb]);
/** How much of a file's beginning the formats are told by: the qcow2 header up to its virtual size. */
const HEAD_BYTES = 32;
/** The longest `ImageRef.source` taken (as the Image record's bound). */
const MAX_SOURCE_CHARS = 2048;
const SHA256 = /^[0-9a-f]{64}$/;
const IMAGE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** An `ImageRef` as checked: the source parsed, the format defaulted. */
export interface CheckedImageRef {
  id: string;
  name: string;
  source: string;
  parsedSource: FakeImageSource;
  format: "qcow2" | "raw";
  /** Empty: not checked. */
  sha256: string;
}

/**
 * Checks an `ImageRef` and parses its source. INVALID_ARGUMENT naming the field under `field`
 * (`image.id`, `image.source`, `image.format`, `image.sha256`), quoting a bounded prefix.
 */
export function checkImageRef(ref: unknown, field = "image"): CheckedImageRef {
  if (typeof ref !== "object" || ref === null || Array.isArray(ref)) throw invalidArgument(field, "must be an image reference {id, name, source, format, sha256}");
  const r = ref as Partial<Record<keyof ImageRef, unknown>>;
  // The id names the host's copy (a file under libvirt), so it is a plain file name.
  if (typeof r.id !== "string" || !IMAGE_ID.test(r.id)) {
    throw invalidArgument(`${field}.id`, `must be 1-128 letters, digits, '_', '.' or '-' (got ${quote(JSON.stringify(r.id))})`);
  }
  const name = r.name ?? "";
  if (typeof name !== "string") throw invalidArgument(`${field}.name`, "must be a string");
  if (typeof r.source !== "string" || r.source === "") throw invalidArgument(`${field}.source`, "is required (an http(s) URL, a file:// URL or an absolute path)");
  const format = r.format ?? "";
  if (format !== "" && format !== "qcow2" && format !== "raw") throw invalidArgument(`${field}.format`, `must be "qcow2" or "raw" (got ${quote(JSON.stringify(format))})`);
  const sha256 = r.sha256 ?? "";
  if (typeof sha256 !== "string" || (sha256 !== "" && !SHA256.test(sha256))) {
    throw invalidArgument(`${field}.sha256`, `must be 64 lower-case hex digits, or empty (got ${quote(JSON.stringify(sha256))})`);
  }
  return { id: r.id, name, source: r.source, parsedSource: parseImageSource(r.source, `${field}.source`), format: format === "" ? "qcow2" : format, sha256 };
}

/**
 * `ImageRef.source` → a file path or an http(s) URL. Accepted: `http://` and `https://` URLs, local
 * `file://` URLs, absolute paths. INVALID_ARGUMENT naming `field` otherwise.
 */
export function parseImageSource(source: string, field = "image.source"): FakeImageSource {
  if (source.length > MAX_SOURCE_CHARS) throw invalidArgument(field, `must be at most ${MAX_SOURCE_CHARS} characters (got ${source.length})`);
  const bad = (why: string): BerthError => invalidArgument(field, `${why} (got ${quote(source)})`);
  if (/^https?:\/\//i.test(source)) {
    try {
      return { kind: "http", url: new URL(source).href };
    } catch {
      throw bad("is not a valid URL");
    }
  }
  if (/^file:/i.test(source)) {
    try {
      return { kind: "file", path: fileURLToPath(source) };
    } catch {
      throw bad("must be a local file:// URL");
    }
  }
  if (path.isAbsolute(source)) return { kind: "file", path: path.resolve(source) };
  throw bad("must be an http(s) URL, a file:// URL or an absolute path");
}

/** What reading a source found. */
export interface ImageSourceRead {
  sizeBytes: number;
  /** The first bytes (up to 32): enough to tell a qcow2 header and its virtual size. */
  head: Uint8Array;
  /** Lower-case hex SHA-256 of the whole source; only when asked for. */
  sha256?: string;
}

/**
 * Reads `source` through: its size, its first bytes and (with `hash`) its SHA-256; nothing is kept.
 * A file is streamed when hashed, else only its head is read. An http(s) URL is fetched whole
 * (redirects followed) within `timeoutMs` of real time. Errors name `field`: NOT_FOUND (no such
 * file; HTTP 404 or 410), FAILED_PRECONDITION (not a regular file, not readable), UNAVAILABLE (the
 * server did not answer, or answered another error), DEADLINE_EXCEEDED (the body did not arrive
 * within `timeoutMs`).
 */
export async function readImageSource(
  source: FakeImageSource,
  options: { hash: boolean; timeoutMs: number; field?: string },
): Promise<ImageSourceRead> {
  const field = options.field ?? "image.source";
  return source.kind === "file" ? readFile(source.path, options.hash, field) : readUrl(source.url, options.hash, options.timeoutMs, field);
}

async function readFile(file: string, hash: boolean, field: string): Promise<ImageSourceRead> {
  const failed = (e: unknown): BerthError => {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return new BerthError(ErrorCode.NotFound, `${field}: no such file ${quote(file)}`, { field });
    if (code === "EACCES" || code === "EPERM") return new BerthError(ErrorCode.FailedPrecondition, `${field}: ${quote(file)} is not readable by the host`, { field });
    return new BerthError(ErrorCode.Unavailable, `${field}: cannot read ${quote(file)}: ${quote((e as Error).message, 200)}`, { field, cause: e });
  };
  let size: number;
  try {
    const st = await stat(file);
    if (!st.isFile()) throw new BerthError(ErrorCode.FailedPrecondition, `${field}: ${quote(file)} is not a regular file`, { field });
    size = st.size;
  } catch (e) {
    throw e instanceof BerthError ? e : failed(e);
  }
  try {
    if (!hash) {
      const fh = await open(file, "r");
      try {
        const head = new Uint8Array(HEAD_BYTES);
        const { bytesRead } = await fh.read(head, 0, HEAD_BYTES, 0);
        return { sizeBytes: size, head: head.subarray(0, bytesRead) };
      } finally {
        await fh.close();
      }
    }
    const reader = new SourceReader(true);
    for await (const chunk of createReadStream(file)) reader.add(chunk as Buffer);
    return reader.done();
  } catch (e) {
    throw failed(e);
  }
}

async function readUrl(url: string, hash: boolean, timeoutMs: number, field: string): Promise<ImageSourceRead> {
  const signal = AbortSignal.timeout(timeoutMs);
  let response: Response;
  try {
    response = await fetch(url, { signal, redirect: "follow" });
  } catch (e) {
    const why = signal.aborted ? `did not answer within ${timeoutMs} ms` : `did not answer (${quote(causeOf(e), 200)})`;
    throw new BerthError(ErrorCode.Unavailable, `${field}: ${quote(url)} ${why}`, { field, cause: e });
  }
  if (response.status === 404 || response.status === 410) {
    await response.body?.cancel().catch(() => undefined);
    throw new BerthError(ErrorCode.NotFound, `${field}: ${quote(url)} answered HTTP ${response.status} (no such image)`, { field });
  }
  if (!response.ok || !response.body) {
    await response.body?.cancel().catch(() => undefined);
    throw new BerthError(ErrorCode.Unavailable, `${field}: ${quote(url)} answered HTTP ${response.status}`, { field });
  }
  const reader = new SourceReader(hash);
  const body = response.body.getReader();
  try {
    for (;;) {
      const { done, value } = await body.read();
      if (done) break;
      reader.add(value);
    }
  } catch (e) {
    if (signal.aborted) throw new BerthError(ErrorCode.DeadlineExceeded, `${field}: ${quote(url)} was not fetched within ${timeoutMs} ms`, { field, cause: e });
    throw new BerthError(ErrorCode.Unavailable, `${field}: ${quote(url)} broke off (${quote(causeOf(e), 200)})`, { field, cause: e });
  }
  return reader.done();
}

/** Counts, hashes and keeps the head of a stream of chunks. */
class SourceReader {
  private size = 0;
  private readonly head: Uint8Array[] = [];
  private headBytes = 0;
  private readonly hash;

  constructor(hash: boolean) {
    this.hash = hash ? createHash("sha256") : undefined;
  }

  add(chunk: Uint8Array): void {
    this.size += chunk.length;
    this.hash?.update(chunk);
    if (this.headBytes < HEAD_BYTES) {
      const part = chunk.subarray(0, HEAD_BYTES - this.headBytes);
      this.head.push(Uint8Array.from(part));
      this.headBytes += part.length;
    }
  }

  done(): ImageSourceRead {
    const head = Buffer.concat(this.head);
    return { sizeBytes: this.size, head, ...(this.hash ? { sha256: this.hash.digest("hex") } : {}) };
  }
}

/**
 * The virtual size a qcow2 header states (big-endian u64 at offset 24, after the magic "QFI\xfb",
 * the version, the backing file's offset and size, and the cluster bits); undefined when `head` is
 * not the start of a qcow2 file (or states a size beyond 2^53). Pure.
 */
export function qcow2VirtualSize(head: Uint8Array): number | undefined {
  if (head.length < HEAD_BYTES || !QCOW2_MAGIC.every((b, i) => head[i] === b)) return undefined;
  const size = Buffer.from(head.buffer, head.byteOffset, head.byteLength).readBigUInt64BE(24);
  return size <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(size) : undefined;
}

/**
 * A minimal qcow2 (version 2) header of an empty image of `virtualSizeBytes`: what qemu-img writes
 * first, and all the fake reads. For tests and development hosts that need an image file; a real
 * hypervisor needs a real image.
 */
export function qcow2Header(virtualSizeBytes: number): Uint8Array {
  const header = Buffer.alloc(72);
  Buffer.from(QCOW2_MAGIC).copy(header, 0);
  header.writeUInt32BE(2, 4); // version
  header.writeUInt32BE(16, 20); // cluster_bits: 64 KiB clusters
  header.writeBigUInt64BE(BigInt(virtualSizeBytes), 24);
  return new Uint8Array(header);
}

function causeOf(e: unknown): string {
  const cause = (e as { cause?: unknown }).cause;
  if (cause instanceof Error) return cause.message;
  return e instanceof Error ? e.message : String(e);
}
