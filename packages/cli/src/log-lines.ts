import pinoPretty from "pino-pretty";

/** Where a child's line came from. */
export type LineSource = "stdout" | "stderr";

/** Turns one line of a child's output into the text `berth dev` shows (newline-terminated). */
export type LineFormatter = (name: string, line: string, source: LineSource) => string;

const LABEL_COLOURS = [36, 35, 33, 32, 34, 96, 95, 93, 92, 94];
const paint = (code: number, text: string): string => `\u001b[${code}m${text}\u001b[0m`;

/**
 * The log view of `berth dev`: every line is labelled with its process (`controller | `,
 * `host-1     | `); pino JSON lines are made readable with pino-pretty, anything else is shown
 * as it came. `names` fixes the label width and colours.
 */
export function createLineFormatter(names: readonly string[], options: { colorize: boolean }): LineFormatter {
  const width = Math.max(0, ...names.map((n) => n.length));
  const prettify = pinoPretty.prettyFactory({
    colorize: options.colorize,
    ignore: "pid,hostname,name",
    translateTime: "SYS:HH:MM:ss.l",
    singleLine: true,
  });
  const labels = new Map<string, string>();
  const labelOf = (name: string): string => {
    let label = labels.get(name);
    if (label === undefined) {
      const padded = `${name.padEnd(width)} |`;
      const index = names.indexOf(name);
      const colour = LABEL_COLOURS[(index < 0 ? labels.size : index) % LABEL_COLOURS.length] ?? 36;
      label = options.colorize ? paint(colour, padded) : padded;
      labels.set(name, label);
    }
    return label;
  };

  return (name, line, source) => {
    const label = labelOf(name);
    let body = line;
    if (source === "stdout" && line.trimStart().startsWith("{")) {
      try {
        const parsed: unknown = JSON.parse(line);
        if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) body = prettify(parsed).trimEnd();
      } catch {
        // Not JSON after all: shown as is.
      }
    } else if (source === "stderr" && options.colorize) {
      body = paint(31, line);
    }
    return (
      body
        .split("\n")
        .map((l) => `${label} ${l}`)
        .join("\n") + "\n"
    );
  };
}
