import type { Etcd3, IKeyValue, IWatchResponse } from "etcd3";
import { CompactedError, StoreUnavailableError } from "./errors.js";
import { mapEtcdError } from "./etcd-errors.js";
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

/**
 * One watch on its own gRPC stream, straight on etcd's Watch API (not etcd3's Watcher, which
 * reconnects and resumes by itself and turns compaction into an untyped error). Any end other
 * than `close()` is reported once through `onError`: `CompactedError` with etcd's compact revision,
 * `StoreUnavailableError` when the stream broke. The caller decides how to resume.
 *
 * `onProgress` is called for etcd's periodic progress notifications (sent in order with the events
 * of this watcher); `progress_notify` is requested.
 */
export class EtcdWatch implements Watch {
  private ended = false;
  private stream: { cancel(): void } | undefined;

  constructor(
    client: Etcd3,
    prefix: string,
    fromRevision: number,
    private readonly handler: WatchHandler,
    private readonly onEnded: (w: EtcdWatch) => void,
  ) {
    const key = Buffer.from(prefix, "utf8");
    client.watchClient.watch().then(
      (stream) => {
        stream.on("error", (e) => this.end(mapEtcdError(e, "watching")));
        if (this.ended) {
          stream.cancel();
          return;
        }
        this.stream = stream;
        stream.on("data", (res) => this.onResponse(res));
        stream.on("end", () => this.end(new StoreUnavailableError("the etcd watch stream ended")));
        stream.write({
          create_request: {
            key,
            range_end: prefixRangeEnd(key),
            ...(fromRevision > 0 ? { start_revision: fromRevision } : {}),
            progress_notify: true,
          },
        });
      },
      (e: unknown) => this.end(mapEtcdError(e, "opening a watch")),
    );
  }

  async close(): Promise<void> {
    this.end(undefined);
  }

  /** Ends the watch without calling the handler again unless `error` is given. Idempotent. */
  end(error: Error | undefined): void {
    if (this.ended) return;
    this.ended = true;
    this.stream?.cancel();
    this.onEnded(this);
    if (error) this.handler.onError(error);
  }

  private onResponse(res: IWatchResponse): void {
    if (this.ended) return;
    const compactRevision = Number(res.compact_revision || 0);
    if (compactRevision > 0) {
      this.end(new CompactedError(compactRevision));
      return;
    }
    if (res.canceled) {
      this.end(mapEtcdError(new Error(res.cancel_reason || "etcd cancelled the watch"), "watching"));
      return;
    }
    try {
      if (res.events.length > 0) {
        const events: WatchEvent[] = res.events.map((ev) => ({
          type: ev.type === "Delete" ? "delete" : "put",
          kv: fromEtcdKv(ev.kv),
        }));
        this.handler.onEvents(events);
      } else if (!res.created) {
        this.handler.onProgress?.(Number(res.header.revision));
      }
    } catch (e) {
      this.end(e instanceof Error ? e : new Error(String(e)));
    }
  }
}
