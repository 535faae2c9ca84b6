// Base images in the storage pool: fetched from their source to a staging file (checked there:
// size bound, SHA-256, qemu-img's view of the format), then uploaded into the pool as the host's one
// copy, `berth-image-<id>.qcow2`, which every VM's disk over the image uses as its backing file.
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import type { HostImage, ImageRef } from "@berth/api";
import { BerthError, ErrorCode, invalidArgument, isBerthError, quote } from "@berth/core";
import { imageIdOfVolume, imageVolumeName } from "./domain-xml.js";
import type { ResolvedLibvirtDriverOptions } from "./options.js";
import { parseQemuImgInfo, parseVolumeXml, type ImageFileInfo, type VolumeInfo } from "./parse.js";
import { mapVirshError, type CommandRunner, type Virsh } from "./virsh.js";

/** Longest `ImageRef.source` taken (as the catalog's Image.source). */
export const MAX_IMAGE_SOURCE_LENGTH = 2048;
/** Image and volume ids: they name pool volumes and go on virsh command lines unquoted. */
const OBJECT_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const SHA256_RE = /^[0-9a-f]{64}$/;
/** The image formats `ImageRef.format` may name ("" is qcow2). */
export const IMAGE_FORMATS = ["qcow2", "raw"] as const;
/**
 * How much of the image's start is uploaded last: the qcow2 header (magic "QFI\xfb" at offset 0)
 * lives in it. Until that last write the volume starts with zeros, so a volume left by an upload
 * cut short (the agent killed) reads as raw, never as a valid (empty or truncated) image.
 */
const HEAD_BYTES = 4096;
const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]);

/** INVALID_ARGUMENT unless `value` is an id Berth names pool volumes after. */
export function checkObjectId(value: unknown, field: string): string {
  if (typeof value !== "string" || !OBJECT_ID_RE.test(value)) {
    throw invalidArgument(field, `must be an id of letters, digits, '.', '_' or '-' (at most 128), got ${quote(JSON.stringify(value))}`);
  }
  return value;
}

/** Where an image comes from, as `ImageRef.source` names it. */
export type ImageSource = { kind: "http"; url: URL } | { kind: "file"; path: string };

/**
 * Reads `ImageRef.source`: an http:// or https:// URL, a file:// URL (local, no host) or an
 * absolute path. INVALID_ARGUMENT naming `image.source` for anything else.
 */
export function parseImageSource(source: unknown): ImageSource {
  if (typeof source !== "string" || source === "") throw invalidArgument("image.source", "is required (an http(s) URL, a file:// URL or an absolute path)");
  if (source.length > MAX_IMAGE_SOURCE_LENGTH) throw invalidArgument("image.source", `must be at most ${MAX_IMAGE_SOURCE_LENGTH} characters (got ${source.length})`);
  if (/[\x00-\x1f\x7f]/.test(source)) throw invalidArgument("image.source", `must not contain control characters (got ${quote(JSON.stringify(source))})`);
  if (path.isAbsolute(source)) return { kind: "file", path: path.normalize(source) };
  let url: URL;
  try {
    url = new URL(source);
  } catch {
    throw invalidArgument("image.source", `must be an http(s) URL, a file:// URL or an absolute path (got ${quote(source)})`);
  }
  if (url.protocol === "http:" || url.protocol === "https:") return { kind: "http", url };
  if (url.protocol === "file:") {
    if (url.host !== "" && url.host !== "localhost") throw invalidArgument("image.source", `a file:// URL must name a local path (no host), got ${quote(source)}`);
    return { kind: "file", path: fileURLToPath(url) };
  }
  throw invalidArgument("image.source", `must be an http(s) URL, a file:// URL or an absolute path (got ${quote(source)})`);
}

/** Checks an ImageRef (INVALID_ARGUMENT naming the field); returns its format ("qcow2" for ""). */
export function validateImageRef(ref: ImageRef): { id: string; source: ImageSource; format: (typeof IMAGE_FORMATS)[number] } {
  if (typeof ref !== "object" || ref === null) throw invalidArgument("image", "is required");
  const id = checkObjectId(ref.id, "image.id");
  const source = parseImageSource(ref.source);
  const format = ref.format === "" || ref.format === undefined ? "qcow2" : ref.format;
  if (!(IMAGE_FORMATS as readonly string[]).includes(format)) throw invalidArgument("image.format", `must be qcow2 or raw (got ${quote(JSON.stringify(format))})`);
  if (ref.sha256 !== "" && ref.sha256 !== undefined && !SHA256_RE.test(ref.sha256)) {
    throw invalidArgument("image.sha256", `must be 64 lower-case hex digits or empty (got ${quote(JSON.stringify(ref.sha256))})`);
  }
  return { id, source, format: format as (typeof IMAGE_FORMATS)[number] };
}

/** What a fetch wrote. */
export interface FetchedFile {
  bytes: number;
  sha256: string;
}

/**
 * Copies the source into `file`, hashing as it goes, at most `maxBytes` (RESOURCE_EXHAUSTED
 * beyond, the Content-Length or file size telling before any byte when they can). Errors:
 * NOT_FOUND (no such file, HTTP 404/410), UNAVAILABLE (the server did not answer, or answered an
 * error), DEADLINE_EXCEEDED (`signal` aborted), FAILED_PRECONDITION (not a regular file, unreadable).
 * `fetchImpl` is Node's fetch unless a test passes another.
 */
export async function fetchImageSource(
  source: ImageSource,
  file: string,
  options: { maxBytes: number; signal: AbortSignal; fetchImpl?: typeof fetch },
): Promise<FetchedFile> {
  const hash = createHash("sha256");
  let bytes = 0;
  const shown = source.kind === "http" ? quote(source.url.href, 256) : quote(source.path, 256);
  const tooBig = (): BerthError =>
    new BerthError(ErrorCode.ResourceExhausted, `image.source: ${shown} is larger than libvirt.max_image_bytes (${options.maxBytes} bytes)`, { field: "image.source" });
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      bytes += chunk.length;
      if (bytes > options.maxBytes) {
        done(tooBig());
        return;
      }
      hash.update(chunk);
      done(null, chunk);
    },
  });
  let body: Readable;
  if (source.kind === "file") {
    let info;
    try {
      info = await stat(source.path);
    } catch (e) {
      throw fileError(e, shown);
    }
    if (!info.isFile()) throw new BerthError(ErrorCode.FailedPrecondition, `image.source: ${shown} is not a regular file`, { field: "image.source" });
    if (info.size > options.maxBytes) throw tooBig();
    body = createReadStream(source.path);
  } else {
    let response: Response;
    try {
      response = await (options.fetchImpl ?? fetch)(source.url, { signal: options.signal, redirect: "follow" });
    } catch (e) {
      if (options.signal.aborted) throw deadline(shown, e);
      throw new BerthError(ErrorCode.Unavailable, `image.source: ${shown} did not answer (${describe(e)})`, { field: "image.source", cause: e });
    }
    if (response.status === 404 || response.status === 410) {
      await response.body?.cancel().catch(() => undefined);
      throw new BerthError(ErrorCode.NotFound, `image.source: ${shown} answered ${response.status} (no such image)`, { field: "image.source" });
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel().catch(() => undefined);
      throw new BerthError(ErrorCode.Unavailable, `image.source: ${shown} answered ${response.status} ${quote(response.statusText)}`, { field: "image.source" });
    }
    const length = Number(response.headers.get("content-length") ?? "NaN");
    if (Number.isFinite(length) && length > options.maxBytes) {
      await response.body.cancel().catch(() => undefined);
      throw tooBig();
    }
    body = Readable.fromWeb(response.body as import("node:stream/web").ReadableStream<Uint8Array>);
  }
  try {
    await pipeline(body, meter, createWriteStream(file, { mode: 0o600 }), { signal: options.signal });
  } catch (e) {
    if (isBerthError(e)) throw e;
    if (options.signal.aborted) throw deadline(shown, e);
    if (source.kind === "file") throw fileError(e, shown);
    throw new BerthError(ErrorCode.Unavailable, `image.source: ${shown} broke off (${describe(e)})`, { field: "image.source", cause: e });
  }
  return { bytes, sha256: hash.digest("hex") };
}

function fileError(e: unknown, shown: string): BerthError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOENT" || code === "ENOTDIR") return new BerthError(ErrorCode.NotFound, `image.source: ${shown}: no such file`, { field: "image.source", cause: e });
  return new BerthError(ErrorCode.FailedPrecondition, `image.source: ${shown} cannot be read (${describe(e)})`, { field: "image.source", cause: e });
}

function deadline(shown: string, cause: unknown): BerthError {
  return new BerthError(ErrorCode.DeadlineExceeded, `image.source: fetching ${shown} took longer than libvirt.image_fetch_timeout_ms`, { field: "image.source", cause });
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as Error & { cause?: unknown }).cause;
    return cause instanceof Error ? `${e.message}: ${cause.message}` : e.message;
  }
  return String(e);
}

/** How a staged file and the pool are reached: what {@link ImageStore} needs of its driver. */
export interface ImageStoreContext {
  virsh: Virsh;
  options: ResolvedLibvirtDriverOptions;
  /** Runs qemu-img (the driver's runner). */
  runner: CommandRunner;
  /** FAILED_PRECONDITION naming the storage pool, for "no such pool". */
  poolMissing(detail: string): BerthError;
  /** Node's fetch unless a test passes another. */
  fetchImpl?: typeof fetch;
}

/**
 * The host's images in the storage pool: `ensure` (one fetch per image at a time, shared by
 * concurrent callers; nothing left behind by a failure) and `list`. See `LibvirtDriver.ensureImage`.
 */
export class ImageStore {
  private readonly fetching = new Map<string, Promise<HostImage>>();
  /** Images known complete (uploaded by this process, or checked once): what `list` trusts. */
  private readonly complete = new Map<string, HostImage>();
  /** The sweep of staging files a killed process left (once per process). */
  private swept: Promise<void> | undefined;

  constructor(private readonly ctx: ImageStoreContext) {}

  /**
   * The images among the pool's volumes (`volumes`: `vol-dumpxml` by name, as the driver read them
   * for this report), sorted by id; volumes left by an upload cut short are not listed.
   */
  async list(volumes: ReadonlyMap<string, VolumeInfo>): Promise<HostImage[]> {
    const images: HostImage[] = [];
    for (const [name, info] of volumes) {
      const id = imageIdOfVolume(name);
      if (id === undefined) continue;
      const image = await this.completeImage(id, info);
      if (image) images.push(image);
    }
    return images.sort((a, b) => (a.imageId < b.imageId ? -1 : a.imageId > b.imageId ? 1 : 0));
  }

  /** Makes the pool hold the image (see `LibvirtDriver.ensureImage`). */
  ensure(ref: ImageRef): Promise<HostImage> {
    const { id, source, format } = validateImageRef(ref);
    const held = this.fetching.get(id);
    if (held) return held;
    const run = this.fetch(id, source, format, ref.sha256 ?? "").finally(() => this.fetching.delete(id));
    this.fetching.set(id, run);
    return run;
  }

  /** The image's volume info, or undefined when the pool has no such volume. */
  async volume(id: string): Promise<VolumeInfo | undefined> {
    return (await volumeInfos(this.ctx.virsh, this.ctx.options.storagePool, [imageVolumeName(id)])).get(imageVolumeName(id));
  }

  /** The HostImage of a held image volume, or undefined when it is not complete. */
  private async completeImage(id: string, info: VolumeInfo): Promise<HostImage | undefined> {
    const known = this.complete.get(id);
    if (known) return { ...known, sizeBytes: info.allocationBytes || known.sizeBytes };
    // libvirt probes a file's format from its content: qcow2 means the header, uploaded last, is
    // there. Other pool types (or a probe not yet redone) are asked for the magic itself.
    if (info.format !== "qcow2" && !(await this.hasQcow2Magic(imageVolumeName(id)))) return undefined;
    const image: HostImage = { imageId: id, sizeBytes: info.allocationBytes, virtualSizeBytes: info.capacityBytes };
    this.complete.set(id, image);
    return image;
  }

  private async hasQcow2Magic(name: string): Promise<boolean> {
    const dir = await mkdtemp(path.join(tmpdir(), "berth-image-head-"));
    try {
      const file = path.join(dir, "head");
      const r = await this.ctx.virsh.exec(["vol-download", "--pool", this.ctx.options.storagePool, name, file, "--offset", "0", "--length", "4"]);
      if (r.exitCode !== 0) return false;
      return (await readFile(file)).subarray(0, 4).equals(QCOW2_MAGIC);
    } catch {
      return false;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  private async fetch(id: string, source: ImageSource, format: string, sha256: string): Promise<HostImage> {
    const o = this.ctx.options;
    const name = imageVolumeName(id);
    const existing = await this.volume(id);
    if (existing) {
      const image = await this.completeImage(id, existing);
      if (image) return image;
      // A volume an earlier upload left half-written (that agent was killed): start again.
      await this.deleteVolume(name);
    }
    // The pool is there (before minutes of download, not after).
    await this.checkRoom(0);
    const signal = AbortSignal.timeout(o.imageFetchTimeoutMs);
    const deadlineAt = performance.now() + o.imageFetchTimeoutMs;
    const left = (): number => Math.max(1, Math.ceil(deadlineAt - performance.now()));
    const stagingRoot = o.imageStagingDir ?? tmpdir();
    await mkdir(stagingRoot, { recursive: true, mode: 0o700 });
    if (o.imageStagingDir !== undefined) await (this.swept ??= sweepStaging(o.imageStagingDir, o.imageFetchTimeoutMs));
    const staging = await mkdtemp(path.join(stagingRoot, "berth-image-"));
    let created = false;
    try {
      const fetched = path.join(staging, "fetched");
      const { sha256: got } = await fetchImageSource(source, fetched, { maxBytes: o.maxImageBytes, signal, ...(this.ctx.fetchImpl ? { fetchImpl: this.ctx.fetchImpl } : {}) });
      if (sha256 !== "" && got !== sha256) {
        throw new BerthError(ErrorCode.FailedPrecondition, `image.sha256: the file fetched from the source has SHA-256 ${got}, not ${sha256}`, { field: "image.sha256" });
      }
      const info = await this.inspect(fetched, left());
      if (info.format !== format) {
        throw new BerthError(ErrorCode.FailedPrecondition, `image.format: the source is not a ${format} image (qemu-img reads it as ${quote(info.format)})`, { field: "image.format" });
      }
      if (info.backingFile !== undefined) {
        throw new BerthError(ErrorCode.FailedPrecondition, `image.source: the image has a backing file of its own (${quote(info.backingFile)}); give a self-contained image (qemu-img convert)`, { field: "image.source" });
      }
      if (info.dataFile !== undefined) {
        throw new BerthError(ErrorCode.FailedPrecondition, `image.source: the image keeps its data in an external file (${quote(info.dataFile)}); give a self-contained image`, { field: "image.source" });
      }
      let upload = fetched;
      let virtualSizeBytes = info.virtualSizeBytes;
      if (format === "raw") {
        // The pool keeps every image as qcow2, so every overlay has one backing format.
        upload = path.join(staging, "converted.qcow2");
        await this.qemuImg(["convert", "-f", "raw", "-O", "qcow2", fetched, upload], left(), "convert");
        await rm(fetched, { force: true });
        virtualSizeBytes = (await this.inspect(upload, left())).virtualSizeBytes;
      }
      const size = (await stat(upload)).size;
      await this.checkRoom(size);
      const head = await takeHead(upload, path.join(staging, "head"));
      try {
        // Raw, so that a volume whose upload was cut short never reads as an image (see HEAD_BYTES).
        await this.ctx.virsh.run(["vol-create-as", o.storagePool, name, String(size), "--format", "raw"]);
        created = true;
      } catch (e) {
        if (isBerthError(e, ErrorCode.NotFound)) throw this.ctx.poolMissing(e.message);
        throw e;
      }
      await this.ctx.virsh.run(["vol-upload", "--pool", o.storagePool, name, upload], { timeoutMs: left() });
      await this.ctx.virsh.run(["vol-upload", "--pool", o.storagePool, name, head.file, "--offset", "0", "--length", String(head.bytes)], { timeoutMs: left() });
      const image: HostImage = { imageId: id, sizeBytes: size, virtualSizeBytes };
      this.complete.set(id, image);
      return image;
    } catch (e) {
      if (created) await this.deleteVolume(name).catch(() => undefined);
      if (isBerthError(e, ErrorCode.DeadlineExceeded) || signal.aborted) {
        throw isBerthError(e, ErrorCode.DeadlineExceeded) ? e : new BerthError(ErrorCode.DeadlineExceeded, `image ${id}: not in the pool within libvirt.image_fetch_timeout_ms (${o.imageFetchTimeoutMs} ms)`, { cause: e });
      }
      throw e;
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }

  /** qemu-img info (format probed: the format is what is checked). FAILED_PRECONDITION when it cannot read it. */
  private async inspect(file: string, timeoutMs: number): Promise<ImageFileInfo> {
    const stdout = await this.qemuImg(["info", "--output=json", file], timeoutMs, "info");
    const info = parseQemuImgInfo(stdout);
    if (!info) throw new BerthError(ErrorCode.FailedPrecondition, `image.source: qemu-img info gave no readable answer for the fetched file`, { field: "image.source" });
    return info;
  }

  private async qemuImg(args: string[], timeoutMs: number, what: string): Promise<string> {
    const r = await this.ctx.runner(this.ctx.options.qemuImgPath, args, { timeoutMs });
    if (r.exitCode === 0) return r.stdout;
    if (r.spawnError !== undefined) {
      throw new BerthError(ErrorCode.FailedPrecondition, `libvirt.qemu_img_path: cannot run ${quote(this.ctx.options.qemuImgPath)} (${r.spawnError}); install qemu-utils`, { field: "libvirt.qemu_img_path" });
    }
    if (r.timedOut) throw new BerthError(ErrorCode.DeadlineExceeded, `qemu-img ${what}: no answer within the image fetch's time limit`);
    throw new BerthError(ErrorCode.FailedPrecondition, `image.source: qemu-img ${what} refused the fetched file: ${quote(r.stderr.trim(), 256)}`, { field: "image.source" });
  }

  /** RESOURCE_EXHAUSTED when the pool has less room than `bytes` (pool-info's Available). */
  private async checkRoom(bytes: number): Promise<void> {
    let text: string;
    try {
      text = await this.ctx.virsh.run(["pool-info", "--bytes", this.ctx.options.storagePool]);
    } catch (e) {
      if (isBerthError(e, ErrorCode.NotFound)) throw this.ctx.poolMissing(e.message);
      throw e;
    }
    const available = Number(/^Available:\s*(\d+)/m.exec(text)?.[1] ?? "NaN");
    if (Number.isFinite(available) && available < bytes) {
      throw new BerthError(ErrorCode.ResourceExhausted, `storage pool ${this.ctx.options.storagePool} has ${available} bytes free; the image needs ${bytes}`);
    }
  }

  private async deleteVolume(name: string): Promise<void> {
    try {
      await this.ctx.virsh.run(["vol-delete", "--pool", this.ctx.options.storagePool, name]);
    } catch (e) {
      if (!isBerthError(e, ErrorCode.NotFound)) throw e;
    }
  }
}

/**
 * Removes what fetches and seeds left in a configured staging directory when their process was
 * killed: `berth-image-*` and `berth-seed-*` entries older than a fetch can last (plus a minute),
 * so none of a fetch under way. Never throws.
 */
async function sweepStaging(dir: string, fetchTimeoutMs: number): Promise<void> {
  try {
    const before = Date.now() - fetchTimeoutMs - 60_000;
    for (const entry of await readdir(dir)) {
      if (!/^berth-(image|seed)-/.test(entry)) continue;
      const full = path.join(dir, entry);
      const info = await stat(full).catch(() => undefined);
      if (info && info.mtimeMs < before) await rm(full, { recursive: true, force: true });
    }
  } catch {
    // An unreadable directory: the fetch itself will say so.
  }
}

/**
 * Moves the first HEAD_BYTES of `file` into `headFile` and zeroes them in `file` (see
 * HEAD_BYTES): the file is uploaded first, the head last.
 */
async function takeHead(file: string, headFile: string): Promise<{ file: string; bytes: number }> {
  const handle = await open(file, "r+");
  try {
    const head = Buffer.alloc(HEAD_BYTES);
    const { bytesRead } = await handle.read(head, 0, HEAD_BYTES, 0);
    const out = await open(headFile, "w", 0o600);
    try {
      await out.write(head, 0, bytesRead, 0);
    } finally {
      await out.close();
    }
    await handle.write(Buffer.alloc(bytesRead), 0, bytesRead, 0);
    return { file: headFile, bytes: bytesRead };
  } finally {
    await handle.close();
  }
}

/** `vol-dumpxml` of each named volume, in one virsh call when the names allow; absent ones are left out. */
export async function volumeInfos(virsh: Virsh, pool: string, names: readonly string[]): Promise<Map<string, VolumeInfo>> {
  const infos = new Map<string, VolumeInfo>();
  if (names.length === 0) return infos;
  const plain = /^[A-Za-z0-9._:/=+,-]+$/;
  if (plain.test(pool) && names.every((n) => plain.test(n))) {
    const { sections } = await virsh.batch(names.map((n, i) => ({ tag: `v${i}`, args: ["vol-dumpxml", "--pool", pool, n] })));
    names.forEach((n, i) => {
      const info = parseVolumeXml(sections.get(`v${i}`) ?? "");
      if (info) infos.set(n, info);
    });
    return infos;
  }
  for (const n of names) {
    const r = await virsh.exec(["vol-dumpxml", "--pool", pool, n]);
    if (r.exitCode !== 0) {
      const error = mapVirshError(r, `virsh vol-dumpxml ${n}`);
      if (error.code === ErrorCode.NotFound) continue;
      throw error;
    }
    const info = parseVolumeXml(r.stdout);
    if (info) infos.set(n, info);
  }
  return infos;
}
