import { stringify as yamlStringify } from "yaml";
import { usageError } from "./exit-codes.js";

// `-o FORMAT`, kubectl's habits: one definition of what a verb shows (its JSON value), printed as
// JSON or YAML; a human table, with more columns under `wide`; or just the names.

/** Every `-o` value, in the order help and errors list them. */
export const OUTPUT_FORMATS = ["table", "wide", "json", "yaml", "name"] as const;

/** One of {@link OUTPUT_FORMATS}. */
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** Whether `format` is one a person reads (a table, `wide` too): progress and notes go to stderr then. */
export const isHuman = (format: OutputFormat): boolean => format === "table" || format === "wide";

/**
 * What one verb can print. `data` is the single definition of the machine-readable answer (proto
 * JSON): `-o json` and `-o yaml` both print it, so the two never differ in shape.
 */
export interface View {
  /** The JSON value (e.g. `Vm.toJSON(vm)`, or an array of them). */
  data(): unknown;
  /** The default human answer (a table or a detail). */
  table(): string;
  /** `-o wide`: the table with more columns; the table itself when the verb has no wider form. */
  wide?(): string;
  /** `-o name`: the names, one a line; a verb without names refuses `-o name` (usage error). */
  names?(): readonly string[];
}

/** JSON as the CLI prints it: two-space indented, newline-terminated. */
export const jsonText = (value: unknown): string => JSON.stringify(value, null, 2) + "\n";

/** YAML of the same value (block style, as kubectl prints it). */
export const yamlText = (value: unknown): string => yamlStringify(value);

/** Renders `view` in `format`. `-o name` on a verb that has no names is a usage error (exit 2). */
export function render(format: OutputFormat, view: View): string {
  switch (format) {
    case "json":
      return jsonText(view.data());
    case "yaml":
      return yamlText(view.data());
    case "wide":
      return (view.wide ?? view.table)();
    case "name": {
      if (!view.names) {
        throw usageError(`-o name: this verb prints no names (use one of: ${OUTPUT_FORMATS.filter((f) => f !== "name").join(", ")})`);
      }
      return view.names().map((n) => `${n}\n`).join("");
    }
    default:
      return view.table();
  }
}
