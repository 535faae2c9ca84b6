import { EventType, type WatchEventsRequest, type WatchEventsResponse } from "@berth/api";
import { BerthError, ErrorCode, fromGrpcError, sleepUnlessAborted } from "@berth/core";
import { status, type ServiceError } from "@grpc/grpc-js";
import type { ControllerClient } from "./client.js";
import type { Io } from "./context.js";
import { backoffMs } from "./retry.js";

// Following WatchEvents for as long as a person watches (`berth events --follow`, `--watch`): a
// stream that breaks is reopened with backoff and jitter, on the leader a follower names, and
// each new stream's first burst (the current state, type EXISTING) is told apart from the changes
// after it.

/**
 * How long a new stream may stay silent before its initial state counts as complete, when the
 * controller marks no end of it: one from before EVENT_TYPE_SYNCED (during an upgrade). Otherwise
 * SYNCED ends it, or the first change after it does.
 */
export const SNAPSHOT_QUIET_MS = 300;

/** Failures a stream is not reopened after: the controller refused the watch itself. */
const FATAL: ReadonlySet<ErrorCode> = new Set([
  ErrorCode.InvalidArgument,
  ErrorCode.PermissionDenied,
  ErrorCode.Unauthenticated,
  ErrorCode.NotFound,
  ErrorCode.FailedPrecondition,
]);

/** A stream open this long before it breaks counts as having worked: the backoff starts over. */
const HEALTHY_STREAM_MS = 10_000;

/** Options of {@link followWatch}. */
export interface FollowWatchOptions {
  request: WatchEventsRequest;
  /** Ends the watch (Ctrl-C, a test): {@link followWatch} then resolves. */
  signal: AbortSignal;
  /**
   * A stream's initial state, once complete: everything it sent as EXISTING. Called once per
   * stream, so after a reconnect too: it replaces what the previous stream said.
   */
  onSnapshot(existing: readonly WatchEventsResponse[], address: string): void;
  /** Each change after the snapshot (PUT, DELETED). */
  onChange(event: WatchEventsResponse): void;
  /** The stream broke; it is reopened on `next` after `delayMs`. */
  onBreak?(error: BerthError, delayMs: number, next: string): void;
  /** No stream is (re)opened past it: the last failure is thrown. Absent: retried until aborted. */
  deadline?: Date;
  /**
   * At most this many streams are opened: the last failure is thrown after. For a one-off read
   * (`berth events`), which should fail as fast as a unary call: each address once, and the
   * leader one of them names. Absent: no limit.
   */
  maxStreams?: number;
  /** Jitter source. @default Math.random */
  random?: () => number;
  /** @default {@link SNAPSHOT_QUIET_MS} */
  quietMs?: number;
}

/** How one stream ended. */
interface StreamEnd {
  /** Undefined when the controller ended the stream without an error. */
  error: BerthError | undefined;
  /** Whether it is worth reopening at once on the next address (a redirect, never connected). */
  healthy: boolean;
  raw: ServiceError | undefined;
}

/**
 * Follows `WatchEvents` until `signal` aborts (resolves) or a fatal refusal (throws it: bad
 * request, not allowed). A stream that ends or breaks is reopened after core's backoff with
 * jitter (250 ms doubling to 4 s; a stream that worked a while starts the schedule over): on the
 * leader when the answer was NOT_LEADER naming one (at once the first time), else on the next
 * configured address. Each stream's EXISTING burst is handed over whole ({@link
 * FollowWatchOptions.onSnapshot}), then its changes one by one.
 */
export async function followWatch(client: ControllerClient, options: FollowWatchOptions): Promise<void> {
  const { signal } = options;
  const random = options.random ?? Math.random;
  let address = client.address;
  let failures = 0;
  for (let opened = 1; !signal.aborted; opened++) {
    const end = await oneStream(client, address, options);
    if (signal.aborted) return;
    const error = end.error ?? new BerthError(ErrorCode.Unavailable, `controller ${address} ended the stream`);
    if (FATAL.has(error.code) || end.raw?.code === status.UNIMPLEMENTED) throw error;
    failures = end.healthy ? 1 : failures + 1;
    const redirect = error.leader !== undefined && error.leader !== address ? error.leader : undefined;
    const next = redirect ?? nextAddress(client.endpoints, address);
    const delay = redirect && failures === 1 ? 0 : backoffMs(failures, random);
    if (options.deadline && Date.now() + delay >= options.deadline.getTime()) throw error;
    if (options.maxStreams !== undefined && opened >= options.maxStreams) throw error;
    options.onBreak?.(error, delay, next);
    await sleepUnlessAborted(delay, signal);
    address = next;
  }
}

/** The address after `address` in `endpoints`, round; `address` itself when it is not listed (a leader named by a follower) and only one is. */
function nextAddress(endpoints: readonly string[], address: string): string {
  const i = endpoints.indexOf(address);
  return endpoints[(i + 1) % endpoints.length] ?? address;
}

/** Runs one stream on `address` to its end (or the abort). */
async function oneStream(client: ControllerClient, address: string, options: FollowWatchOptions): Promise<StreamEnd> {
  const { signal } = options;
  const quietMs = options.quietMs ?? SNAPSHOT_QUIET_MS;
  const started = Date.now();
  try {
    // Connected first, so that the quiet which ends the snapshot is not a slow connect.
    await client.whenReady(address, new Date(Date.now() + client.timeoutMs));
  } catch (e) {
    client.forget(address);
    return { error: new BerthError(ErrorCode.Unavailable, `controller ${address}: ${e instanceof Error ? e.message : String(e)}`), healthy: false, raw: undefined };
  }
  if (signal.aborted) return { error: undefined, healthy: false, raw: undefined };
  return new Promise<StreamEnd>((resolve) => {
    const stream = client.watchEvents(options.request, undefined, address);
    let snapshot: WatchEventsResponse[] | undefined = [];
    let quiet: NodeJS.Timeout | undefined;
    let delivered = false;
    let settled = false;
    const endSnapshot = (): void => {
      clearTimeout(quiet);
      if (!snapshot) return;
      const existing = snapshot;
      snapshot = undefined;
      options.onSnapshot(existing, address);
    };
    const armQuiet = (): void => {
      clearTimeout(quiet);
      quiet = setTimeout(endSnapshot, quietMs);
    };
    const finish = (end: StreamEnd): void => {
      if (settled) return;
      settled = true;
      clearTimeout(quiet);
      signal.removeEventListener("abort", abort);
      resolve(end);
    };
    const abort = (): void => {
      stream.cancel();
      finish({ error: undefined, healthy: false, raw: undefined });
    };
    signal.addEventListener("abort", abort, { once: true });
    stream.on("data", (event: WatchEventsResponse) => {
      if (settled) return;
      delivered = true;
      if (snapshot && event.type === EventType.EVENT_TYPE_EXISTING) {
        snapshot.push(event);
        armQuiet();
        return;
      }
      endSnapshot();
      if (event.type === EventType.EVENT_TYPE_SYNCED) return;
      options.onChange(event);
    });
    const healthy = (): boolean => delivered || Date.now() - started >= HEALTHY_STREAM_MS;
    stream.on("error", (e: ServiceError) => {
      if (settled) return;
      // A snapshot cut short is dropped, not handed over: the next stream sends the whole state.
      const error = fromGrpcError(e);
      finish({ error: new BerthError(error.code, `controller ${address}: ${error.message}`, { cause: e, ...(error.leader ? { leader: error.leader } : {}) }), healthy: healthy(), raw: e });
    });
    stream.on("end", () => {
      finish({ error: undefined, healthy: healthy(), raw: undefined });
    });
    armQuiet();
    if (signal.aborted) abort();
  });
}

/**
 * The signal that ends a watch: `io.interrupt` when the caller gave one (tests), else Ctrl-C
 * (SIGINT) for as long as the watch runs, which then ends with exit 0 instead of killing the
 * process. Call `dispose` when the watch is over.
 */
export function interruption(io: Io): { signal: AbortSignal; dispose(): void } {
  if (io.interrupt) return { signal: io.interrupt, dispose: () => undefined };
  const controller = new AbortController();
  const onSigint = (): void => controller.abort(new Error("interrupted"));
  process.once("SIGINT", onSigint);
  return { signal: controller.signal, dispose: () => void process.removeListener("SIGINT", onSigint) };
}
