import { ClusterEvent, EventSeverity, EventType, type WatchEventsResponse } from "@berth/api";
import type { Command } from "commander";
import type { ControllerClient } from "../client.js";
import type { CliContext } from "../context.js";
import { usageError } from "../exit-codes.js";
import { formatAge, renderTable } from "../format.js";
import { isHuman, render, type OutputFormat } from "../output.js";
import { followWatch, interruption } from "../watch-stream.js";

const EXIT_CODES_SEE = "Exit codes: see berth --help.";

/** What `--for KIND/NAME` keeps. */
export interface EventFilter {
  kind?: "vm" | "host" | "migration" | "scalegroup";
  name?: string;
  warningsOnly: boolean;
}

/** Parses `--for vm/NAME|host/NAME|migration/NAME|scalegroup/NAME`; a usage error naming the flag otherwise. */
export function parseEventFor(text: string | undefined): Pick<EventFilter, "kind" | "name"> {
  if (text === undefined) return {};
  const m = /^(vm|host|migration|scalegroup)\/(.+)$/.exec(text.trim());
  if (!m) throw usageError(`--for: expected vm/NAME, host/NAME or migration/NAME, or scalegroup/NAME for a scale group's decisions (got '${text}')`);
  return { kind: m[1] as EventFilter["kind"], name: m[2] as string };
}

/**
 * Whether `filter` keeps `e`. `vm/NAME` keeps the VM's events and its migrations' (a migration is
 * named by its VM); `host/NAME` keeps the host's own events and every event that happened on it
 * (a VM placed there, a migration leaving it); `migration/NAME` and `scalegroup/NAME` keep that
 * object's own events.
 */
export function keepsEvent(filter: EventFilter, e: ClusterEvent): boolean {
  if (filter.warningsOnly && e.severity !== EventSeverity.EVENT_SEVERITY_WARNING) return false;
  switch (filter.kind) {
    case undefined:
      return true;
    case "vm":
      return (e.objectKind === "vm" || e.objectKind === "migration") && e.objectName === filter.name;
    case "host":
      return (e.objectKind === "host" && e.objectName === filter.name) || e.hostId === filter.name;
    case "migration":
    case "scalegroup":
      // The object's own events: a scale group's are its decisions (ScaledOut, ScaledIn,
      // SizeBounded) and its life (created, deleting, deleted).
      return e.objectKind === filter.kind && e.objectName === filter.name;
  }
}

/** `Normal` or `Warning`, as kubectl names an event's type. */
export const severityName = (s: EventSeverity): string => (s === EventSeverity.EVENT_SEVERITY_WARNING ? "Warning" : "Normal");

const HEADERS = ["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"] as const;
const WIDE_HEADERS = [...HEADERS, "HOST", "REVISION", "TIME"] as const;

/** An instant as ISO 8601, UTC, to the millisecond. */
const isoTime = (ms: number): string => (ms > 0 ? new Date(ms).toISOString() : "-");

/** One event's cells (see {@link eventTable}). */
export function eventRow(e: ClusterEvent, nowMs: number, wide = false): string[] {
  const row = [formatAge(e.timeMs, nowMs), severityName(e.severity), e.reason, `${e.objectKind}/${e.objectName}`, e.message];
  return wide ? [...row, e.hostId || "-", String(e.revision), isoTime(e.timeMs)] : row;
}

/**
 * The `berth events` table, like `kubectl get events`: AGE, TYPE (Normal/Warning), REASON,
 * OBJECT (kind/name), MESSAGE, in the order given (oldest first); `wide` adds HOST, REVISION and
 * the TIME.
 */
export function eventTable(events: readonly ClusterEvent[], nowMs: number, wide = false): string {
  return renderTable(wide ? WIDE_HEADERS : HEADERS, events.map((e) => eventRow(e, nowMs, wide)));
}

/** One event as one line of a table printed before (`--follow`): padded to that table's columns. */
function followLine(cells: readonly string[], widths: readonly number[]): string {
  return cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  ").trimEnd() + "\n";
}

/**
 * Least widths of the streamed columns (AGE, TYPE, REASON, OBJECT), so that the events after the
 * first batch mostly fit: the longest type and reasons, a usual object name.
 */
const FOLLOW_MIN_WIDTHS = [4, 7, 19, 16];

function columnWidths(headers: readonly string[], rows: readonly (readonly string[])[]): number[] {
  return headers.map((h, i) => Math.max(h.length, FOLLOW_MIN_WIDTHS[i] ?? 0, ...rows.map((r) => (r[i] ?? "").length)));
}

/** The identity of an event across streams (a reconnect sends the recent ones again). */
export const eventKey = (e: ClusterEvent): string => `${e.revision}|${e.reason}|${e.objectName}|${e.timeMs}`;

/** Keys remembered to skip repeats after a reconnect; more than a controller keeps (2,000). */
const SEEN_CAPACITY = 10_000;

/**
 * What `--follow` has printed: an event is new unless its key was printed (the same controller
 * sending it again), or, in a later stream's initial burst, it is older than the newest event
 * printed — the stream before delivered in store order, so such an event was printed (or is the
 * same change as told by another controller, stamped at another time).
 */
export class PrintedEvents {
  readonly #seen = new Set<string>();
  #maxRevision = 0;

  /** Whether `e` should be printed; remembers it when so. */
  admit(e: ClusterEvent, fromLaterSnapshot: boolean): boolean {
    const key = eventKey(e);
    if (this.#seen.has(key)) return false;
    if (fromLaterSnapshot && e.revision < this.#maxRevision) return false;
    this.#seen.add(key);
    if (this.#seen.size > SEEN_CAPACITY) this.#seen.delete(this.#seen.values().next().value as string);
    this.#maxRevision = Math.max(this.#maxRevision, e.revision);
    return true;
  }
}

const eventsOfStream = (events: readonly WatchEventsResponse[]): ClusterEvent[] =>
  events.flatMap((w) => (w.object?.$case === "event" ? [w.object.value] : []));

/** Adds `berth events`. */
export function registerEventsCommand(program: Command, ctx: CliContext): void {
  program
    .command("events")
    .description("Show what happened in the cluster, oldest first: VMs placed, started, failed; hosts gone silent; migrations; scale decisions")
    .option("-f, --follow", "after the recent events, print each new one until Ctrl-C")
    .option("--for <kind/name>", "only the events of vm/NAME (with its migrations'), host/NAME (with what happened on it), migration/NAME or scalegroup/NAME (its scaling decisions)")
    .option("--warnings", "only the events of type Warning (failures, silent hosts, failed migrations)")
    .addHelpText(
      "after",
      `
Events are derived by the controller from the changes it sees, kept in its memory (the most
recent 2,000), and not replayed after it restarts: a controller knows only what happened since
it started. The table: AGE, TYPE (Normal, or Warning for what needs a look), REASON (a stable
CamelCase word: VmPlaced, VmRunning, VmFailed, HostSuspect, HostFenced, MigrationSucceeded,
ScaledOut, ScaledIn, SizeBounded...), OBJECT (vm/NAME, host/ID, migration/VM, scalegroup/NAME)
and MESSAGE (a scale decision's: from → to, then what was measured and which rule or limit gave
the size); -o wide adds HOST, REVISION and TIME.
-o json / -o yaml: the events as an array; with --follow, -o json prints one JSON object a line.

Any controller answers, followers too (each keeps its own log). --follow keeps the stream open;
when it breaks (a controller restarts or dies) it is reopened with backoff, on the next address
of --controller, and the events printed already are not printed again. Ctrl-C ends it (exit 0).
${EXIT_CODES_SEE}

Examples:
  berth events
  berth events --for vm/web-1
  berth events --for scalegroup/web --follow
  berth events --warnings --follow
  berth events -f -o json | jq -r .reason`,
    )
    .action(async (flags: { follow?: boolean; for?: string; warnings?: boolean }, cmd: Command) => {
      const g = ctx.globals(cmd);
      const filter: EventFilter = { ...parseEventFor(flags.for), warningsOnly: flags.warnings === true };
      if (flags.follow && g.output !== "json" && !isHuman(g.output)) {
        throw usageError(`--follow: -o ${g.output} cannot be streamed; use -o table, wide or json (one object a line)`);
      }
      const client = ctx.client(g);
      if (!flags.follow) {
        ctx.io.stdout(render(g.output, eventsView(await recentEvents(client), filter, ctx.io.now())));
        return;
      }
      await followEvents(ctx, client, g.output, filter);
    });
}

/** The events the controller keeps: its stream's initial burst (the stream is then closed). */
async function recentEvents(client: ControllerClient): Promise<ClusterEvent[]> {
  const done = new AbortController();
  let events: ClusterEvent[] = [];
  await followWatch(client, {
    request: { vms: false, hosts: false, migrations: false, events: true },
    signal: done.signal,
    deadline: new Date(Date.now() + client.timeoutMs),
    maxStreams: client.endpoints.length + 1,
    onSnapshot: (existing) => {
      events = eventsOfStream(existing);
      done.abort();
    },
    onChange: () => undefined,
  });
  return events;
}

function eventsView(events: readonly ClusterEvent[], filter: EventFilter, nowMs: number) {
  const kept = events.filter((e) => keepsEvent(filter, e));
  return {
    data: () => kept.map((e) => ClusterEvent.toJSON(e)),
    table: () => (kept.length === 0 ? "No events.\n" : eventTable(kept, nowMs)),
    wide: () => (kept.length === 0 ? "No events.\n" : eventTable(kept, nowMs, true)),
  };
}

/** `berth events --follow`: the recent events, then each new one, across reconnects, until interrupted. */
async function followEvents(ctx: CliContext, client: ControllerClient, output: OutputFormat, filter: EventFilter): Promise<void> {
  const wide = output === "wide";
  const headers = wide ? WIDE_HEADERS : HEADERS;
  const printed = new PrintedEvents();
  let widths: number[] | undefined;
  let streams = 0;
  const print = (events: readonly ClusterEvent[], fromLaterSnapshot: boolean): void => {
    const fresh = events.filter((e) => keepsEvent(filter, e) && printed.admit(e, fromLaterSnapshot));
    if (output === "json") {
      for (const e of fresh) ctx.io.stdout(JSON.stringify(ClusterEvent.toJSON(e)) + "\n");
      return;
    }
    const rows = fresh.map((e) => eventRow(e, ctx.io.now(), wide));
    if (!widths) {
      // The first batch sets the columns, as a table; later lines keep to them.
      widths = columnWidths(headers, rows);
      ctx.io.stdout(followLine(headers, widths));
    }
    for (const r of rows) ctx.io.stdout(followLine(r, widths));
  };
  const { signal, dispose } = interruption(ctx.io);
  try {
    await followWatch(client, {
      request: { vms: false, hosts: false, migrations: false, events: true },
      signal,
      onSnapshot: (existing) => print(eventsOfStream(existing), streams++ > 0),
      onChange: (w) => {
        if (w.type === EventType.EVENT_TYPE_PUT && w.object?.$case === "event") print([w.object.value], false);
      },
      onBreak: (error, delayMs, next) =>
        ctx.io.stderr(`events: the stream broke (${error.message}); reopening on ${next}${delayMs > 0 ? ` in ${(delayMs / 1000).toFixed(1)}s` : ""}\n`),
    });
  } finally {
    dispose();
  }
}
