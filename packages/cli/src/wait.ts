import { EventType, type Vm, type WatchEventsResponse } from "@berth/api";
import { ErrorCode, fromGrpcError } from "@berth/core";
import type { ClientReadableStream } from "@grpc/grpc-js";
import type { ControllerClient } from "./client.js";
import type { Io } from "./context.js";

/** What is known of a VM at one moment: the VM, or `undefined` when it does not exist. */
export interface VmObservation {
  readonly vm: Vm | undefined;
}

/** How `waitForVm` ended: decided by the caller's function, or the deadline passed. */
export type WaitResult<T> =
  | { readonly status: "decided"; readonly value: T }
  | { readonly status: "timeout"; readonly last: VmObservation | undefined };

/** Options of {@link waitForVm}. */
export interface WaitOptions {
  /** When to give up. */
  deadline: Date;
  /** How often GetVm is polled next to the watch. */
  pollIntervalMs?: number;
  /** Ends the wait early, rejecting with the signal's reason (e.g. another VM of a gang failed). */
  signal?: AbortSignal;
  /** A watch shared with other waits (a gang's): used instead of opening one for this wait. */
  feed?: VmEventFeed;
}

/**
 * One `WatchEvents` stream serving many waits (`vm create --count N --wait`): N VMs cost one
 * stream, not N. Events are dispatched by VM name. A broken stream is not an answer: the waits'
 * polls carry on. `close()` is idempotent.
 */
export class VmEventFeed {
  private readonly listeners = new Map<string, Set<(observation: VmObservation) => void>>();
  private readonly stream: ClientReadableStream<WatchEventsResponse> | undefined;

  constructor(client: ControllerClient, deadline: Date) {
    try {
      this.stream = client.watchEvents({ vms: true, hosts: false, migrations: false, events: false }, deadline);
      this.stream.on("data", (event: WatchEventsResponse) => {
        if (event.object?.$case !== "vm") return;
        const name = event.object.value.spec?.name ?? "";
        const observation = { vm: event.type === EventType.EVENT_TYPE_DELETED ? undefined : event.object.value };
        for (const listener of this.listeners.get(name) ?? []) listener(observation);
      });
      this.stream.on("error", () => {});
    } catch {
      this.stream = undefined;
    }
  }

  /** Calls `listener` with each change of the VM named `name`; returns the unsubscribe function. */
  on(name: string, listener: (observation: VmObservation) => void): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(name);
    };
  }

  close(): void {
    this.listeners.clear();
    this.stream?.cancel();
  }
}

const TRANSIENT: ReadonlySet<ErrorCode> = new Set([
  ErrorCode.Unavailable,
  ErrorCode.Busy,
  ErrorCode.NotLeader,
  ErrorCode.DeadlineExceeded,
]);

/**
 * Waits until `decide` returns something other than `undefined` for an observation of the VM
 * named `name`, or the deadline passes. `decide` may throw to end the wait with an error.
 *
 * Two sources feed it: the `WatchEvents` stream (the current state, then each change: prompt) and
 * a `GetVm` poll every `pollIntervalMs` (which follows a leader change, outlives a broken stream,
 * and sees a VM that vanished before the watch began). Transient errors of the poll (no leader,
 * unreachable) are retried until the deadline; other errors end the wait.
 */
export function waitForVm<T>(
  client: ControllerClient,
  name: string,
  decide: (observation: VmObservation) => T | undefined,
  options: WaitOptions,
): Promise<WaitResult<T>> {
  const pollIntervalMs = options.pollIntervalMs ?? 1000;
  return new Promise<WaitResult<T>>((resolve, reject) => {
    let settled = false;
    let last: VmObservation | undefined;
    let pollTimer: NodeJS.Timeout | undefined;

    // The shared watch of a gang, or one of its own.
    const ownFeed = options.feed ? undefined : new VmEventFeed(client, options.deadline);
    const feed = options.feed ?? ownFeed!;
    let unsubscribe: () => void = () => undefined;
    let unlisten: () => void = () => undefined;
    const finish = (end: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadlineTimer);
      clearTimeout(pollTimer);
      unsubscribe();
      unlisten();
      ownFeed?.close();
      end();
    };

    const observe = (observation: VmObservation): void => {
      if (settled) return;
      last = observation;
      let value: T | undefined;
      try {
        value = decide(observation);
      } catch (e) {
        finish(() => reject(e));
        return;
      }
      if (value !== undefined) {
        const decided = value;
        finish(() => resolve({ status: "decided", value: decided }));
      }
    };

    const deadlineTimer = setTimeout(
      () => finish(() => resolve({ status: "timeout", last })),
      Math.max(0, options.deadline.getTime() - Date.now()),
    );
    const signal = options.signal;
    if (signal) {
      const abort = (): void => finish(() => reject(signal.reason));
      if (signal.aborted) {
        abort();
        return;
      }
      signal.addEventListener("abort", abort, { once: true });
      unlisten = () => signal.removeEventListener("abort", abort);
    }

    unsubscribe = feed.on(name, observe);

    const poll = async (): Promise<void> => {
      try {
        const response = await client.getVm({ name }, { deadline: options.deadline });
        observe({ vm: response.vm });
      } catch (e) {
        const error = fromGrpcError(e);
        if (error.code === ErrorCode.NotFound) observe({ vm: undefined });
        else if (!TRANSIENT.has(error.code)) finish(() => reject(error));
      }
      if (!settled) pollTimer = setTimeout(() => void poll(), pollIntervalMs);
    };
    pollTimer = setTimeout(() => void poll(), pollIntervalMs);
  });
}

/** How {@link pollUntil} ended: decided by the caller's function, or the deadline passed (with the last value read). */
export type PollResult<T, R> =
  | { readonly status: "decided"; readonly value: R }
  | { readonly status: "timeout"; readonly last: T | undefined };

/** Options of {@link pollUntil}. */
export interface PollOptions<T> {
  /** When to give up. */
  deadline: Date;
  /** Between two reads. @default 1000 */
  intervalMs?: number;
  /** A value already in hand (the answer of the request being followed): decided on before the first read. */
  initial?: T;
}

/**
 * Reads something with `read` (given the deadline of the whole wait) every `intervalMs`, until
 * `decide` returns something other than `undefined`, or the deadline passes. For what has no watch
 * (a migration, a drain): the first read is at once. Transient failures of a read (no leader,
 * unreachable, a call's deadline) are waited through; other errors, and errors thrown by `decide`,
 * end the wait.
 */
export async function pollUntil<T, R>(
  io: Io,
  read: (deadline: Date) => Promise<T>,
  decide: (value: T) => R | undefined,
  options: PollOptions<T>,
): Promise<PollResult<T, R>> {
  const intervalMs = options.intervalMs ?? 1000;
  let last = options.initial;
  if (last !== undefined) {
    const decided = decide(last);
    if (decided !== undefined) return { status: "decided", value: decided };
  }
  for (;;) {
    if (Date.now() >= options.deadline.getTime()) return { status: "timeout", last };
    let value: T | undefined;
    try {
      value = await read(options.deadline);
    } catch (e) {
      const error = fromGrpcError(e);
      if (!TRANSIENT.has(error.code)) throw error;
    }
    if (value !== undefined) {
      last = value;
      const decided = decide(value);
      if (decided !== undefined) return { status: "decided", value: decided };
    }
    const left = options.deadline.getTime() - Date.now();
    if (left <= 0) return { status: "timeout", last };
    await io.sleep(Math.min(intervalMs, left));
  }
}
