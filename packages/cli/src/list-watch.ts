import { EventType, type WatchEventsRequest, type WatchEventsResponse } from "@berth/api";
import type { ControllerClient } from "./client.js";
import type { CliContext } from "./context.js";
import { usageError } from "./exit-codes.js";
import { compareNames } from "./format.js";
import type { OutputFormat } from "./output.js";
import { followWatch, interruption } from "./watch-stream.js";

// `vm list --watch`, `host list --watch`: the table, then again on each change the WatchEvents
// stream tells of — redrawn in place on a terminal, the changed rows as new lines otherwise (as
// `kubectl get -w`), `-o json` as one {"type","object"} line per change.

/** At most this many redraws a second. */
export const WATCH_REDRAWS_PER_SECOND = 4;

/** Clears the terminal and puts the cursor top left. */
const CLEAR_SCREEN = "\x1b[H\x1b[2J";

/** What one list's watch needs to know of its objects. */
export interface TableWatch<T> {
  /** What to ask WatchEvents for. */
  request: WatchEventsRequest;
  /**
   * The list's object a stream message carries, with its key (a VM's name, a host's id); undefined
   * for a message of another kind. `previous` gives an object as last known, for fields the
   * stream does not carry.
   */
  itemOf(event: WatchEventsResponse, previous: (key: string) => T | undefined): { key: string; value: T } | undefined;
  /** Whether the object belongs in the table (`vm list --host`). @default every object */
  keep?(value: T): boolean;
  /** The table of `items` (a header, then one line per item, in their order). */
  table(items: readonly T[], wide: boolean): string;
  /** Its JSON, as `-o json` prints the list's objects. */
  toJSON(value: T): unknown;
  /** Keys of objects a message of another kind makes stale (a host whose VMs changed). */
  staleKeys?(event: WatchEventsResponse): readonly string[];
  /**
   * Re-reads what the stream's records lack (a host's allocation, usage) for the objects named
   * (`"all"`: after a stream's initial state), updating `items` in place. Best effort.
   */
  refresh?(items: Map<string, T>, keys: ReadonlySet<string> | "all"): Promise<void>;
}

type JsonChange = "ADDED" | "MODIFIED" | "DELETED";

/**
 * Prints the list and follows it until interrupted (Ctrl-C: exit 0). Redraws are throttled to
 * {@link WATCH_REDRAWS_PER_SECOND} a second: what changes in between is shown once, as it stands.
 */
export async function watchTable<T>(ctx: CliContext, client: ControllerClient, output: OutputFormat, spec: TableWatch<T>): Promise<void> {
  if (output === "yaml") throw usageError("--watch: -o yaml cannot be streamed; use -o table, wide, json (one object a line) or name");
  const keep = spec.keep ?? (() => true);
  const wide = output === "wide";
  const redrawInPlace = ctx.io.stdoutIsTerminal === true && (output === "table" || output === "wide");
  const intervalMs = 1000 / WATCH_REDRAWS_PER_SECOND;

  const current = new Map<string, T>();
  /** Keys changed since the last print, with their value before the change. */
  const dirty = new Map<string, T | undefined>();
  /** What a DELETED message said last of an object, to print its last row. */
  const departed = new Map<string, T>();
  const stale = new Set<string>();
  let fullRefresh = false;
  let printedOnce = false;
  /** What was printed last: the screen (in place), each key's line (new lines), each key's JSON. */
  let lastScreen = "";
  const printedLines = new Map<string, string>();
  const printedJson = new Map<string, string>();

  let timer: NodeJS.Timeout | undefined;
  let flushing: Promise<void> | undefined;
  let lastFlushMs = 0;
  let ended = false;

  const markDirty = (key: string): void => {
    if (!dirty.has(key)) dirty.set(key, current.get(key));
  };
  const schedule = (): void => {
    if (ended || timer || flushing) return;
    timer = setTimeout(() => {
      timer = undefined;
      flushing = flush().finally(() => {
        flushing = undefined;
        if (dirty.size > 0 || fullRefresh) schedule();
      });
    }, Math.max(0, lastFlushMs + intervalMs - Date.now()));
  };

  const sortedKeys = (keys: Iterable<string>): string[] => [...keys].sort(compareNames);

  const flush = async (): Promise<void> => {
    if (spec.refresh && (fullRefresh || stale.size > 0 || dirty.size > 0)) {
      const keys = fullRefresh ? ("all" as const) : new Set([...stale, ...[...dirty.keys()].filter((k) => current.has(k))]);
      fullRefresh = false;
      stale.clear();
      try {
        await spec.refresh(current, keys);
      } catch {
        // Best effort: the stream's records stand.
      }
    }
    lastFlushMs = Date.now();
    const changed = new Map(dirty);
    dirty.clear();
    const lastSaid = new Map(departed);
    departed.clear();
    const visible = sortedKeys([...current.keys()].filter((k) => keep(current.get(k) as T)));
    const first = !printedOnce;
    printedOnce = true;
    if (output === "json" || output === "name") {
      const keys = first ? visible : sortedKeys(changed.keys());
      for (const key of keys) {
        const now = current.get(key);
        const shown = now !== undefined && keep(now);
        const json = shown ? JSON.stringify(spec.toJSON(now)) : undefined;
        const before = printedJson.get(key);
        let type: JsonChange;
        if (json !== undefined) {
          if (json === before) continue;
          type = before === undefined ? "ADDED" : "MODIFIED";
          printedJson.set(key, json);
        } else {
          if (before === undefined) continue;
          type = "DELETED";
          printedJson.delete(key);
        }
        if (output === "name") ctx.io.stdout(`${key}\n`);
        else {
          const gone = lastSaid.get(key);
          ctx.io.stdout(`{"type":"${type}","object":${json ?? (gone !== undefined ? JSON.stringify(spec.toJSON(gone)) : before)}}\n`);
        }
      }
      return;
    }
    if (redrawInPlace) {
      const screen = spec.table(visible.map((k) => current.get(k) as T), wide);
      if (screen !== lastScreen) ctx.io.stdout(CLEAR_SCREEN + screen);
      lastScreen = screen;
      return;
    }
    // New lines: the rows are rendered together (with the rows that left the table, in their
    // last state) so that they keep one set of columns, and only those that changed are printed.
    const gone = sortedKeys([...changed.keys()].filter((k) => !visible.includes(k) && printedLines.has(k)));
    const rowKeys = [...visible, ...gone];
    const lastValue = (k: string): T => (current.get(k) ?? lastSaid.get(k) ?? changed.get(k)) as T;
    const lines = spec.table(rowKeys.map(lastValue), wide).split("\n");
    if (first) {
      ctx.io.stdout(lines.slice(0, visible.length + 1).join("\n") + "\n");
      visible.forEach((k, i) => printedLines.set(k, lines[i + 1] ?? ""));
      return;
    }
    rowKeys.forEach((k, i) => {
      if (!changed.has(k)) return;
      const line = lines[i + 1] ?? "";
      if (gone.includes(k)) {
        printedLines.delete(k);
        ctx.io.stdout(`${line}\n`);
      } else if (printedLines.get(k) !== line) {
        printedLines.set(k, line);
        ctx.io.stdout(`${line}\n`);
      }
    });
  };

  const { signal, dispose } = interruption(ctx.io);
  try {
    await followWatch(client, {
      request: spec.request,
      signal,
      onSnapshot: (existing) => {
        const fresh = new Map<string, T>();
        for (const e of existing) {
          const item = spec.itemOf(e, (k) => current.get(k));
          if (item) fresh.set(item.key, item.value);
        }
        for (const [key, value] of current) {
          const now = fresh.get(key);
          if (now === undefined || JSON.stringify(spec.toJSON(now)) !== JSON.stringify(spec.toJSON(value))) markDirty(key);
        }
        for (const key of fresh.keys()) if (!current.has(key)) markDirty(key);
        current.clear();
        for (const [k, v] of fresh) current.set(k, v);
        fullRefresh = true;
        schedule();
      },
      onChange: (e) => {
        for (const key of spec.staleKeys?.(e) ?? []) stale.add(key);
        const item = spec.itemOf(e, (k) => current.get(k));
        if (item) {
          markDirty(item.key);
          if (e.type === EventType.EVENT_TYPE_DELETED) {
            current.delete(item.key);
            departed.set(item.key, item.value);
          } else {
            current.set(item.key, item.value);
            departed.delete(item.key);
          }
        }
        if (item || stale.size > 0) schedule();
      },
      onBreak: (error, delayMs, next) =>
        ctx.io.stderr(`watch: the stream broke (${error.message}); reopening on ${next}${delayMs > 0 ? ` in ${(delayMs / 1000).toFixed(1)}s` : ""}\n`),
    });
  } finally {
    ended = true;
    clearTimeout(timer);
    await flushing;
    dispose();
  }
}

