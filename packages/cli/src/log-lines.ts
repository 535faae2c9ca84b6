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

/** pino's own fields: not worth repeating in a one-line summary. */
const PINO_FIELDS = new Set(["level", "time", "pid", "hostname", "name", "msg", "v"]);

function fieldText(value: unknown): string {
  if (typeof value === "string") return value;
  if (value !== null && typeof value === "object" && typeof (value as { message?: unknown }).message === "string") {
    return (value as { message: string }).message;
  }
  return JSON.stringify(value);
}

/** A problem a child reported: from its log (pino, warn or worse), or a plain stderr line. */
export interface Problem {
  text: string;
  /** `log`: the daemon said it on purpose; `stderr`: a crash, a usage error, a Node warning. */
  from: "log" | "stderr";
  /** pino's level (40 warn, 50 error, 60 fatal); 0 for stderr. */
  level: number;
}

/**
 * A child's line as a one-line problem, when it is one: a pino line at level warn (40) or above
 * (`controller rejected this agent (reason: REJECT_REASON_FOREIGN_CLUSTER, message: ...)`), or a
 * plain stderr line (not a stack frame, not Node's version footer). `undefined` otherwise. `berth
 * dev` keeps the last one per process to say why a host never became READY.
 */
export function problemOf(line: string, source: LineSource): Problem | undefined {
  const text = line.trim();
  if (text === "") return undefined;
  if (source === "stdout" && text.startsWith("{")) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return undefined;
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return undefined;
    const record = parsed as Record<string, unknown>;
    if (typeof record["level"] !== "number" || record["level"] < 40) return undefined;
    const fields = Object.entries(record)
      .filter(([k]) => !PINO_FIELDS.has(k))
      .map(([k, v]) => `${k}: ${fieldText(v)}`);
    const msg = typeof record["msg"] === "string" ? record["msg"] : "(no message)";
    const summary = fields.length > 0 ? `${msg} (${fields.join(", ")})` : msg;
    return { text: summary.length > 400 ? `${summary.slice(0, 397)}...` : summary, from: "log", level: record["level"] };
  }
  if (source === "stderr" && !/^\s/.test(line) && !/^Node\.js v\d/.test(text)) return { text: text.slice(0, 400), from: "stderr", level: 0 };
  return undefined;
}
