/** The environment variable a supervisor sets to have its children stop when it is gone. */
export const EXIT_WITH_PARENT_ENV = "BERTH_EXIT_WITH_PARENT";

/**
 * For daemons started by a supervisor (`berth dev`): when `BERTH_EXIT_WITH_PARENT=stdin` is set,
 * the supervisor holds the write end of this process's stdin and never writes to it, so stdin
 * ends exactly when the supervisor is gone — even SIGKILLed, which no signal handler of its own
 * could report. `onGone` is then called once (to stop as on SIGTERM). Does nothing otherwise.
 */
export function stopWhenParentGone(onGone: () => void): void {
  if (process.env[EXIT_WITH_PARENT_ENV] !== "stdin") return;
  let called = false;
  const gone = (): void => {
    if (called) return;
    called = true;
    onGone();
  };
  process.stdin.on("end", gone);
  process.stdin.on("close", gone);
  process.stdin.on("error", gone);
  process.stdin.on("data", () => undefined); // nothing is ever written; reading is what sees the end
}
