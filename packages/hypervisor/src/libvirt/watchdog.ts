/**
 * The libvirt driver's fencing pieces that are not libvirt: the Linux watchdog device it pets, and
 * the small state file that keeps the watchdog's deadline across agent restarts.
 */
import { readFileSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { constants } from "node:fs";
import { BerthError, ErrorCode } from "@berth/core";
import { writeFileAtomically } from "../atomic-file.js";

// ---- the state file ----------------------------------------------------------------------------

/** Format tag of the watchdog state file. */
export const LIBVIRT_WATCHDOG_FORMAT = "berth-libvirt-watchdog/v1";

/** What the watchdog state file keeps. */
export interface PersistedWatchdog {
  /** The armed deadline (Unix ms); 0 when disarmed. */
  deadlineMs: number;
  /** When the watchdog last fired (Unix ms); 0 when never. */
  firedAtMs: number;
  /**
   * The last fire's fence domains are not all known to be destroyed (libvirtd did not answer, or
   * the agent stopped first): the next open fences again before anything else.
   */
  fencePending: boolean;
}

const STATE_FIELD = "libvirt.watchdog_state_file";

/**
 * Reads the watchdog state file; undefined when it does not exist. Throws FAILED_PRECONDITION
 * (field `libvirt.watchdog_state_file`) when it cannot be read or is not such a file: the agent
 * must not guess whether its host was fenced. The file is replaced atomically, so it is never torn.
 */
export function readWatchdogStateFile(file: string): PersistedWatchdog | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw stateFileError(`cannot read ${file}`, e);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw stateFileError(`${file} is not valid JSON (remove it to start with no watchdog history)`, e);
  }
  const r = raw as Record<string, unknown>;
  const time = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v) && v >= 0;
  if (
    typeof raw !== "object" ||
    raw === null ||
    r["format"] !== LIBVIRT_WATCHDOG_FORMAT ||
    !time(r["deadlineMs"]) ||
    !time(r["firedAtMs"]) ||
    typeof r["fencePending"] !== "boolean"
  ) {
    throw stateFileError(`${file} is not a ${LIBVIRT_WATCHDOG_FORMAT} file {deadlineMs, firedAtMs, fencePending} (remove it to start with no watchdog history)`);
  }
  return { deadlineMs: r["deadlineMs"], firedAtMs: r["firedAtMs"], fencePending: r["fencePending"] };
}


/**
 * Writes the watchdog state file atomically and durably (temp file, fsync, rename, fsync of the
 * directory). Throws FAILED_PRECONDITION (field `libvirt.watchdog_state_file`).
 */
export async function writeWatchdogStateFile(file: string, state: PersistedWatchdog): Promise<void> {
  try {
    await writeFileAtomically(file, `${JSON.stringify({ format: LIBVIRT_WATCHDOG_FORMAT, ...state })}\n`);
  } catch (e) {
    throw stateFileError(`cannot write ${file}`, e);
  }
}

function stateFileError(message: string, cause?: unknown): BerthError {
  const detail = cause instanceof Error ? `: ${cause.message}` : "";
  return new BerthError(ErrorCode.FailedPrecondition, `${STATE_FIELD}: ${message}${detail}`, { field: STATE_FIELD, cause });
}

// ---- the device --------------------------------------------------------------------------------

const DEVICE_FIELD = "libvirt.watchdog_device";

/**
 * A Linux watchdog device (`/dev/watchdog`), as the kernel's watchdog API has it: opening it arms
 * the kernel's timer, any write other than 'V' pets it, and closing it right after writing 'V'
 * (the "magic close") disarms it — unless the driver was loaded with `nowayout`. Closing without
 * the magic character leaves the timer running: the host resets unless someone opens and pets
 * the device again in time. Only one process may have it open.
 */
export class WatchdogDevice {
  private handle: FileHandle | undefined;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(readonly devicePath: string) {}

  /** Whether the device is open (armed by us). */
  get isOpen(): boolean {
    return this.handle !== undefined;
  }

  /**
   * Pets the watchdog: opens the device the first time (arming it), then writes one byte.
   * Throws FAILED_PRECONDITION (field `libvirt.watchdog_device`) if the device cannot be opened or
   * written (missing, busy, no permission): the host then resets when the device times out, if it
   * was armed.
   */
  pet(): Promise<void> {
    return this.serial(async () => {
      try {
        // O_WRONLY only, no O_CREAT: a mistyped path must fail, not create a file that pets nothing.
        this.handle ??= await open(this.devicePath, constants.O_WRONLY);
        await this.handle.write("1");
      } catch (e) {
        throw deviceError(`cannot pet ${this.devicePath}`, e);
      }
    });
  }

  /** The magic close: writes 'V', then closes. Nothing when not open. Idempotent. Throws FAILED_PRECONDITION. */
  disarm(): Promise<void> {
    return this.serial(async () => {
      const handle = this.handle;
      if (!handle) return;
      this.handle = undefined;
      try {
        await handle.write("V");
      } catch (e) {
        await handle.close().catch(() => undefined);
        throw deviceError(`cannot disarm ${this.devicePath} (the host will reset when it times out)`, e);
      }
      await handle.close();
    });
  }

  /** Closes without the magic character: the kernel's timer keeps running. Never throws. Idempotent. */
  release(): Promise<void> {
    return this.serial(async () => {
      const handle = this.handle;
      this.handle = undefined;
      await handle?.close().catch(() => undefined);
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }
}

function deviceError(message: string, cause: unknown): BerthError {
  const detail = cause instanceof Error ? `: ${cause.message}` : "";
  return new BerthError(ErrorCode.FailedPrecondition, `${DEVICE_FIELD}: ${message}${detail}`, { field: DEVICE_FIELD, cause });
}
