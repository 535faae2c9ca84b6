// A session on a domain's serial console: the pty QEMU's serial chardev offers (its slave end,
// /dev/pts/N as the domain XML names it), opened here as `virsh console` opens it inside libvirtd.
import { spawn } from "node:child_process";
import { closeSync, constants, openSync } from "node:fs";
import { ReadStream } from "node:tty";
import { BerthError, ErrorCode } from "@berth/core";
import type { ConsoleConnection, ConsoleEnd } from "../driver.js";

/** Output is passed on in chunks of at most this many bytes (the agent's ConsoleOutput limit). */
export const CONSOLE_CHUNK_BYTES = 16 * 1024;
/**
 * How long output is gathered before it is passed on. A serial line delivers a byte per read; a
 * few milliseconds turn a boot's thousands of reads into a few dozen messages, unnoticed by a
 * person typing.
 */
export const CONSOLE_FLUSH_MS = 5;
/** What is kept of the guest's output while no `onData` listener is registered yet. */
const MAX_PENDING_BYTES = 64 * 1024;

/**
 * Puts the pty in raw mode with `stty raw -echo` run on the open descriptor (its standard input,
 * so no path is looked up again), as libvirt does for `virsh console` (cfmakeraw): no echo, no
 * line editing, no signals, and no output processing, so what is written reaches the guest byte
 * for byte. (Node's `setRawMode` keeps ONLCR, which would send the guest CR LF for every LF.)
 * Resolves whether it worked.
 */
function sttyRaw(fd: number, sttyPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn(sttyPath, ["raw", "-echo"], { stdio: [fd, "ignore", "ignore"] });
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    child.on("error", () => {
      clearTimeout(timer);
      resolve(false);
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve(code === 0);
    });
  });
}

/**
 * Opens a console session on the pty `path`: O_RDWR|O_NOCTTY|O_NONBLOCK (the pty never becomes
 * this process's controlling terminal), raw mode, then a tty stream both ways. It ends (`onEnd`
 * with FAILED_PRECONDITION "domain ... stopped") when QEMU closes its end: the domain stopped,
 * crashed or left by migration (EOF or EIO on the pty). FAILED_PRECONDITION when the pty cannot
 * be opened (e.g. EACCES: the agent must be able to open the pty QEMU made: root, or the user
 * QEMU runs as).
 */
export async function openPtyConsole(path: string, domainName: string, options: { sttyPath?: string } = {}): Promise<PtyConsole> {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new BerthError(ErrorCode.FailedPrecondition, `console of ${domainName}: cannot open its pty ${path} (${code}); the agent must be able to open it (root, or QEMU's user)`, { cause: e });
  }
  const raw = await sttyRaw(fd, options.sttyPath ?? "stty");
  let stream: ReadStream;
  try {
    stream = new ReadStream(fd);
  } catch (e) {
    closeSync(fd);
    throw new BerthError(ErrorCode.FailedPrecondition, `console of ${domainName}: ${path} is not a terminal (${String(e)})`, { cause: e });
  }
  // Without stty, Node's raw mode: no echo or line editing, but LF is sent as CR LF.
  if (!raw) stream.setRawMode(true);
  return new PtyConsole(stream, domainName);
}

/** One console session on a pty (see {@link openPtyConsole}). */
export class PtyConsole implements ConsoleConnection {
  private readonly dataListeners: ((data: Uint8Array) => void)[] = [];
  private readonly endListeners: ((end: ConsoleEnd | undefined) => void)[] = [];
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private ended = false;
  private endedWith: ConsoleEnd | undefined;

  constructor(
    private readonly stream: ReadStream,
    domainName: string,
  ) {
    stream.on("data", (chunk: Buffer) => this.gather(chunk));
    const stopped = (): void => this.end({ code: ErrorCode.FailedPrecondition, message: `domain ${domainName} stopped: its console closed` });
    stream.on("end", stopped);
    stream.on("close", stopped);
    // EIO: QEMU closed the pty's other end. Anything else ends the session the same way.
    stream.on("error", stopped);
  }

  /** Whether the session has ended. */
  get isEnded(): boolean {
    return this.ended;
  }

  write(data: Uint8Array): void {
    if (this.ended || data.length === 0) return;
    this.stream.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  }

  onData(listener: (data: Uint8Array) => void): void {
    this.dataListeners.push(listener);
    if (this.dataListeners.length === 1 && this.pending.length > 0) this.flush();
  }

  onEnd(listener: (end: ConsoleEnd | undefined) => void): void {
    if (this.ended) {
      queueMicrotask(() => listener(this.endedWith));
      return;
    }
    this.endListeners.push(listener);
  }

  close(): void {
    this.end(undefined);
  }

  /** Ends the session with `why` (undefined: closed by its holder). Idempotent: the first end counts. */
  end(why: ConsoleEnd | undefined): void {
    if (this.ended) return;
    this.ended = true;
    this.endedWith = why;
    // What the guest wrote before the end still goes out first.
    if (this.dataListeners.length > 0) this.flush();
    clearTimeout(this.flushTimer);
    this.stream.removeAllListeners("data");
    this.stream.on("error", () => undefined);
    this.stream.destroy();
    for (const listener of this.endListeners.splice(0)) {
      try {
        listener(why);
      } catch {
        // A listener's failure is its own.
      }
    }
  }

  private gather(chunk: Buffer): void {
    if (this.ended) return;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.dataListeners.length === 0) {
      // Nobody listens yet: keep the latest output only, bounded.
      while (this.pendingBytes > MAX_PENDING_BYTES && this.pending.length > 1) this.pendingBytes -= this.pending.shift()!.length;
      return;
    }
    if (this.pendingBytes >= CONSOLE_CHUNK_BYTES) this.flush();
    else this.flushTimer ??= setTimeout(() => this.flush(), CONSOLE_FLUSH_MS);
  }

  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.pending.length === 0) return;
    const all = Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    for (let at = 0; at < all.length; at += CONSOLE_CHUNK_BYTES) {
      const chunk = all.subarray(at, at + CONSOLE_CHUNK_BYTES);
      for (const listener of this.dataListeners) {
        try {
          listener(chunk);
        } catch {
          // A listener's failure is its own.
        }
      }
    }
  }
}
