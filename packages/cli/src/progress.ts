import type { Io } from "./context.js";

/** Erases the terminal line the cursor is on and returns to its start. */
const CLEAR_LINE = "\r\u001b[2K";

/**
 * The progress line of a `--wait` that follows something long (a migration, a drain), on stderr.
 * On a terminal the one line is redrawn in place as it changes and ended with a newline by
 * {@link ProgressLine.end}; elsewhere (a log, CI) a plain line is written only when its `step`
 * changes, so a long wait writes a few lines rather than one a second.
 */
export class ProgressLine {
  readonly #io: Io;
  #shown: string | undefined;
  #step: string | undefined;

  constructor(io: Io) {
    this.#io = io;
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
    this.#io.stderr(`${text}\n`);
  }

  /** Ends the redrawn line (a terminal's), so that what is printed next starts on its own line. */
  end(): void {
    if (this.#io.stderrIsTerminal && this.#shown !== undefined) this.#io.stderr("\n");
    this.#shown = undefined;
  }
}
