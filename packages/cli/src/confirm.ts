import type { Io } from "./context.js";
import { CliError, ExitCode, usageError } from "./exit-codes.js";

/**
 * The gate in front of a destructive verb. With `--yes` it passes. Otherwise a person at a
 * terminal is shown `consequences` and asked; anything but `y`/`yes` aborts (exit 1, nothing
 * done). Without a terminal (a script, a pipe) it refuses with exit 2: a script must say `--yes`,
 * so a destructive step is never taken because nobody was there to be asked.
 */
export async function confirmOrRefuse(io: Io, options: { yes: boolean | undefined; verb: string; consequences: string }): Promise<void> {
  if (options.yes) return;
  if (!io.interactive) {
    throw usageError(`${options.verb}: refusing without --yes: standard input is not a terminal, so nobody can confirm`);
  }
  const answer = await io.ask(`${options.consequences.trimEnd()}\nContinue? [y/N] `);
  if (!/^\s*y(es)?\s*$/i.test(answer)) throw new CliError(`${options.verb}: aborted; nothing was changed`, ExitCode.Error);
}
