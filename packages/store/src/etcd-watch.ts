import type { Etcd3, IKeyValue, IWatchResponse } from "etcd3";
import { CompactedError, StoreUnavailableError } from "./errors.js";
import { classifyEtcdFailure } from "./etcd-errors.js";
import { prefixRangeEnd } from "./txn-rules.js";
import type { KeyValue, Watch, WatchEvent, WatchHandler } from "./types.js";

/** Converts etcd's wire KeyValue (revisions as decimal strings, lease "0" for none). */
export function fromEtcdKv(kv: IKeyValue): KeyValue {
  return {
    key: kv.key.toString("utf8"),
    value: new Uint8Array(kv.value ?? []),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    version: Number(kv.version),
    lease: kv.lease && kv.lease !== "0" ? kv.lease : "",
  };
}

export interface EtcdWatchOptions {
  /**
   * How long the watch keeps trying to reopen its stream (on whichever member answers) after it
   * broke, before it ends with StoreUnavailableError.
   */
  resumeWithinMs: number;
  /** Keys never shown to the handler (EtcdStore's write receipts). */
  hidden: (key: string) => boolean;
}

type WatchStream = Awaited<ReturnType<Etcd3["watchClient"]["watch"]>>;

/**
 * One watch on its own gRPC stream, straight on etcd's Watch API (not etcd3's Watcher, which
 * turns compaction into an untyped error). When the stream breaks (its member died, a connection
 * dropped, etcd cancelled it for want of a leader), the watch reopens it, on a member the member
 * gate considers up, from the revision after the last one delivered (events or progress), so the
 * handler sees every change once and in order. It ends, reported once through `onError`, with
 * `CompactedError` (etcd's compact revision) when that revision has been compacted, and with
 * `StoreUnavailableError` when no member could be watched for `resumeWithinMs`.
 *
 * `onProgress` is called for etcd's periodic progress notifications (sent in order with the events
 * of this watcher), and for responses that held only hidden keys; `progress_notify` is requested.
 */
export class EtcdWatch implements Watch {
  private ended = false;
  private stream: WatchStream | undefined;
  /** The revision to (re)start from; 0 until known when the caller asked for "from now". */
  private next: number;
  private brokenSince: number | undefined;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly key: Buffer;

  constructor(
    private readonly client: Etcd3,
    prefix: string,
    fromRevision: number,
    private readonly handler: WatchHandler,
    private readonly onEnded: (w: EtcdWatch) => void,
    private readonly options: EtcdWatchOptions,
  ) {
    this.key = Buffer.from(prefix, "utf8");
    this.next = Math.max(0, fromRevision);
    this.open();
  }

  async close(): Promise<void> {
    this.end(undefined);
  }

  /** Ends the watch without calling the handler again unless `error` is given. Idempotent. */
  end(error: Error | undefined): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.retryTimer);
    this.detach();
    this.onEnded(this);
    if (error) this.handler.onError(error);
  }

  private open(): void {
    if (this.ended) return;
    this.client.watchClient.watch().then(
      (stream) => {
        // etcd3 reports stream errors to the member gate only while an 'error' listener exists.
        stream.on("error", (e) => this.broken(stream, e));
        if (this.ended) {
          stream.cancel();
          return;
        }
        this.stream = stream;
        stream.on("data", (res) => this.onResponse(stream, res));
        stream.on("end", () => this.broken(stream, new StoreUnavailableError("the etcd watch stream ended")));
        stream.write({
          create_request: {
            key: this.key,
            range_end: prefixRangeEnd(this.key),
            ...(this.next > 0 ? { start_revision: this.next } : {}),
            progress_notify: true,
          },
        });
      },
      (e: unknown) => this.broken(undefined, e),
    );
  }

  private detach(): void {
    const stream = this.stream;
    this.stream = undefined;
    stream?.cancel();
  }

  /** The stream `stream` (undefined: it could not be opened) failed with `error`: reopen or end. */
  private broken(stream: WatchStream | undefined, error: unknown): void {
    if (this.ended || (stream !== undefined && stream !== this.stream)) return;
    this.detach();
    const failure = classifyEtcdFailure(error, "watching");
    if (!failure.transient) {
      this.end(failure.error);
      return;
    }
    const now = Date.now();
    this.brokenSince ??= now;
    this.failures += 1;
    const pause = Math.min(1_000, 50 * 2 ** (this.failures - 1)) * (0.5 + Math.random() / 2);
    if (now + pause - this.brokenSince > this.options.resumeWithinMs) {
      this.end(
        new StoreUnavailableError(`no etcd member could be watched for ${this.options.resumeWithinMs} ms: ${failure.error.message}`, {
          cause: failure.error,
        }),
      );
      return;
    }
    this.retryTimer = setTimeout(() => this.open(), pause);
  }

  private onResponse(stream: WatchStream, res: IWatchResponse): void {
    if (this.ended || stream !== this.stream) return;
    const compactRevision = Number(res.compact_revision || 0);
    if (compactRevision > 0) {
      this.end(new CompactedError(compactRevision));
      return;
    }
    if (res.canceled) {
      this.broken(stream, new Error(res.cancel_reason || "etcd cancelled the watch"));
      return;
    }
    const revision = Number(res.header.revision);
    if (res.created) {
      this.brokenSince = undefined;
      this.failures = 0;
      if (this.next === 0) this.next = revision + 1;
      return;
    }
    try {
      if (res.events.length > 0) {
        const last = Number(res.events[res.events.length - 1]!.kv.mod_revision);
        const events: WatchEvent[] = [];
        for (const ev of res.events) {
          const kv = fromEtcdKv(ev.kv);
          if (!this.options.hidden(kv.key)) events.push({ type: ev.type === "Delete" ? "delete" : "put", kv });
        }
        // A revision's events always come in one response (no fragmenting asked): resume after it.
        this.next = Math.max(this.next, last + 1);
        if (events.length > 0) this.handler.onEvents(events);
        else this.handler.onProgress?.(last);
      } else {
        this.next = Math.max(this.next, revision + 1);
        this.handler.onProgress?.(revision);
      }
    } catch (e) {
      this.end(e instanceof Error ? e : new Error(String(e)));
    }
  }
}
