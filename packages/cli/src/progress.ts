import type { Io } from "./context.js";

/** Erases the terminal line the cursor is on and returns to its start. */
const CLEAR_LINE = "\r\u001b[2K";

/** Options of {@link ProgressLine}. */
export interface ProgressOptions {
  /**
   * Off a terminal, at most one plain line per this many ms (by `io.now()`): a step that changes
   * sooner is held, and the last one held is written by {@link ProgressLine.end}. For a count that
   * moves often (`--count 50 --wait`: a step per VM). Default 0: a line per step.
   */
  plainIntervalMs?: number;
}

/**
 * The progress line of a `--wait` that follows something long (a gang of VMs, a migration, a
 * drain, a rebalance), on stderr, so that stdout holds only the answer. On a terminal the one line
 * is redrawn in place as it changes and ended with a newline by {@link ProgressLine.end};
 * elsewhere (a log, CI) a plain line is written only when its `step` changes (and, with
 * `plainIntervalMs`, not more often than that), so a long wait writes a few lines rather than one
 * a second.
 */
export class ProgressLine {
  readonly #io: Io;
  readonly #plainIntervalMs: number;
  #shown: string | undefined;
  #step: string | undefined;
  /** When the last plain line was written (io.now()). */
  #writtenAtMs: number | undefined;
  /** A plain line held back by the interval, written at the end unless a later one replaced it. */
  #held: string | undefined;

  constructor(io: Io, options: ProgressOptions = {}) {
    this.#io = io;
    this.#plainIntervalMs = options.plainIntervalMs ?? 0;
  }

  /** Shows `text`; `step` (default: the text) is what must change for a plain line to be written. */
  update(text: string, step: string = text): void {
    if (this.#io.stderrIsTerminal) {
      if (text === this.#shown) return;
      this.#io.stderr(`${CLEAR_LINE}${text}`);
      this.#shown = text;
      return;
    }
    if (step === this.#step) return;
    this.#step = step;
    const now = this.#io.now();
    if (this.#writtenAtMs !== undefined && now - this.#writtenAtMs < this.#plainIntervalMs) {
      this.#held = text;
      return;
    }
    this.#held = undefined;
    this.#writtenAtMs = now;
    this.#io.stderr(`${text}\n`);
  }

  /**
   * Ends the redrawn line (a terminal's), so that what is printed next starts on its own line;
   * off a terminal, writes the last step the interval held back.
   */
  end(): void {
    if (this.#io.stderrIsTerminal && this.#shown !== undefined) this.#io.stderr("\n");
    if (this.#held !== undefined) this.#io.stderr(`${this.#held}\n`);
    this.#shown = undefined;
    this.#held = undefined;
  }
}
