import { StoreUnavailableError } from "./errors.js";
import type { ClusterStore, KeyValue, Watch, WatchEvent } from "./types.js";

/** A change of the cache, as subscribers see it. */
export type InformerEvent<T> =
  | { type: "put"; key: string; value: T; previous: T | undefined; kv: KeyValue; revision: number }
  | { type: "delete"; key: string; value: T | undefined; kv: KeyValue; revision: number };

export interface InformerOptions {
  /** First pause before re-listing after a watch error; doubles up to `maxBackoffMs`. Default 100. */
  backoffMs?: number;
  /** Default 5000. */
  maxBackoffMs?: number;
  /**
   * How long `waitForRevision` waits for the watch alone before checking with a list (the watch
   * only reports revisions that changed this prefix). Default 200.
   */
  probeAfterMs?: number;
  /**
   * How often the cache is checked against a fresh list while running (a watch that silently
   * stopped delivering is then noticed and replaced). Default 300000; 0 disables.
   */
  resyncIntervalMs?: number;
  /** Errors the informer handled itself: watch failures, failed re-lists, values `decode` rejected. */
  onError?: (error: Error) => void;
}

interface Waiter {
  revision: number;
  delayMs: number;
  timer: NodeJS.Timeout | undefined;
  resolve(): void;
  reject(e: Error): void;
}

/**
 * A list + watch cache of every key under a prefix (like a Kubernetes informer): `start()` lists,
 * then watches from the list's revision + 1 and applies each change, in order, to a map
 * key → { decoded value, KeyValue }, telling subscribers. When the watch fails (compaction, store
 * outage) it re-lists after a backoff, diffs the list against the cache and emits the puts and
 * deletes that bring subscribers to the store's state, then watches again. Keys whose value
 * `decode` rejects are kept as raw KeyValues only (`getKv`), and reported to `onError`.
 *
 * Subscribers are called synchronously, in revision order; an exception in one is reported to
 * `onError` and does not stop the others.
 */
export class Informer<T> {
  private readonly kvs = new Map<string, KeyValue>();
  private readonly decoded = new Map<string, T>();
  private readonly subscribers = new Set<(e: InformerEvent<T>) => void>();
  private waiters: Waiter[] = [];
  private rev = 0;
  private listed = false;
  private running = false;
  private generation = 0;
  private watch: Watch | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private checkTimer: NodeJS.Timeout | undefined;
  private backoffMs: number;
  private probing = false;
  private readonly options: Required<Omit<InformerOptions, "onError">> & Pick<InformerOptions, "onError">;

  constructor(
    private readonly store: ClusterStore,
    readonly prefix: string,
    private readonly decode: (kv: KeyValue) => T,
    options: InformerOptions = {},
  ) {
    this.options = {
      backoffMs: options.backoffMs ?? 100,
      maxBackoffMs: options.maxBackoffMs ?? 5_000,
      probeAfterMs: options.probeAfterMs ?? 200,
      resyncIntervalMs: options.resyncIntervalMs ?? 300_000,
      onError: options.onError,
    };
    this.backoffMs = this.options.backoffMs;
  }

  /** The store revision the cache reflects (0 before the first list). */
  get revision(): number {
    return this.rev;
  }

  /** True once the first list has been applied. */
  get synced(): boolean {
    return this.listed;
  }

  get size(): number {
    return this.decoded.size;
  }

  /**
   * Lists and starts watching; resolves once the cache holds a consistent view. After `stop()`,
   * resumes watching from the cache's revision + 1 (re-listing if that history is compacted).
   * Throws what `list` throws (StoreUnavailableError) on the first start. Idempotent while running.
   */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    if (this.listed) {
      this.startWatch(this.rev + 1, ++this.generation);
    } else {
      try {
        await this.resync();
      } catch (e) {
        this.running = false;
        throw e;
      }
    }
    if (this.options.resyncIntervalMs > 0 && this.running) {
      this.checkTimer = setInterval(() => void this.probe(true), this.options.resyncIntervalMs);
      this.checkTimer.unref();
    }
  }

  /** Stops watching; keeps the cache. Pending `waitForRevision` calls reject. Idempotent. */
  async stop(): Promise<void> {
    this.running = false;
    this.generation += 1;
    clearTimeout(this.retryTimer);
    clearInterval(this.checkTimer);
    const watch = this.watch;
    this.watch = undefined;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) {
      clearTimeout(w.timer);
      w.reject(new StoreUnavailableError(`the informer of '${this.prefix}' was stopped`));
    }
    await watch?.close();
  }

  /** Calls `fn` for every later change. Returns the unsubscribe function. */
  subscribe(fn: (e: InformerEvent<T>) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  get(key: string): T | undefined {
    return this.decoded.get(key);
  }

  getKv(key: string): KeyValue | undefined {
    return this.kvs.get(key);
  }

  values(): T[] {
    return [...this.decoded.values()];
  }

  entries(): Array<[string, T]> {
    return [...this.decoded.entries()];
  }

  /**
   * Resolves once the cache reflects at least `revision` (e.g. the revision of the caller's own
   * write, under this prefix or not). Rejects when the informer stops first.
   */
  waitForRevision(revision: number): Promise<void> {
    if (this.rev >= revision) return Promise.resolve();
    if (!this.running) return Promise.reject(new StoreUnavailableError(`the informer of '${this.prefix}' is not running`));
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { revision, delayMs: this.options.probeAfterMs, timer: undefined, resolve, reject };
      this.waiters.push(waiter);
      this.armProbe(waiter);
    });
  }

  private armProbe(w: Waiter): void {
    w.timer = setTimeout(() => void this.probe(), w.delayMs);
    w.delayMs = Math.min(w.delayMs * 2, this.options.maxBackoffMs);
  }

  /**
   * Lists the prefix. When the list equals the cache, nothing under the prefix changed between
   * the cache's revision and the list's: the cache reflects the list's revision. Otherwise re-sync.
   */
  private async probe(always = false): Promise<void> {
    if (this.probing || !this.running || (this.waiters.length === 0 && !always)) return;
    this.probing = true;
    const generation = this.generation;
    try {
      const { items, revision } = await this.store.list(this.prefix);
      if (generation !== this.generation || revision <= this.rev) return;
      const same = items.length === this.kvs.size && items.every((kv) => this.kvs.get(kv.key)?.modRevision === kv.modRevision);
      if (same) {
        this.rev = revision;
        this.wakeWaiters();
      } else {
        await this.resync();
      }
    } catch (e) {
      this.report(e);
      // A failed re-sync leaves no watch behind: keep trying.
      if (this.running && this.watch === undefined && !(e instanceof StoreUnavailableError && e.closed)) this.scheduleResync();
    } finally {
      this.probing = false;
      for (const w of this.waiters) {
        clearTimeout(w.timer);
        this.armProbe(w);
      }
    }
  }

  /** Closes the watch, lists, applies the difference and watches from the list's revision + 1. */
  private async resync(): Promise<void> {
    const generation = ++this.generation;
    const old = this.watch;
    this.watch = undefined;
    void old?.close();
    const { items, revision } = await this.store.list(this.prefix);
    if (generation !== this.generation) return;
    const seen = new Set<string>();
    for (const kv of items) {
      seen.add(kv.key);
      if (this.kvs.get(kv.key)?.modRevision !== kv.modRevision) this.applyPut(kv, revision);
    }
    for (const key of [...this.kvs.keys()]) if (!seen.has(key)) this.applyDelete(key, revision);
    this.rev = Math.max(this.rev, revision);
    this.listed = true;
    this.backoffMs = this.options.backoffMs;
    this.wakeWaiters();
    this.startWatch(revision + 1, generation);
  }

  private startWatch(fromRevision: number, generation: number): void {
    this.watch = this.store.watch(this.prefix, fromRevision, {
      onEvents: (events) => {
        if (generation === this.generation) this.applyEvents(events);
      },
      onProgress: (revision) => {
        if (generation !== this.generation || revision <= this.rev) return;
        this.rev = revision;
        this.wakeWaiters();
      },
      onError: (error) => {
        if (generation !== this.generation) return;
        this.watch = undefined;
        this.report(error);
        if (error instanceof StoreUnavailableError && error.closed) {
          void this.stop();
          return;
        }
        this.scheduleResync();
      },
    });
  }

  private scheduleResync(): void {
    clearTimeout(this.retryTimer);
    const delay = this.backoffMs * (0.5 + Math.random() / 2);
    this.backoffMs = Math.min(this.backoffMs * 2, this.options.maxBackoffMs);
    this.retryTimer = setTimeout(() => {
      if (!this.running) return;
      this.resync().catch((e: unknown) => {
        this.report(e);
        if (this.running && !(e instanceof StoreUnavailableError && e.closed)) this.scheduleResync();
      });
    }, delay);
  }

  private applyEvents(events: WatchEvent[]): void {
    const before = this.rev;
    let highest = before;
    for (const e of events) {
      const revision = e.kv.modRevision;
      if (revision <= before) continue; // already reflected (a probe or re-list got there first)
      if (e.type === "put") this.applyPut(e.kv, revision);
      else this.applyDelete(e.kv.key, revision);
      highest = Math.max(highest, revision);
    }
    this.rev = highest;
    this.wakeWaiters();
  }

  private applyPut(kv: KeyValue, revision: number): void {
    const previous = this.decoded.get(kv.key);
    this.kvs.set(kv.key, kv);
    let value: T;
    try {
      value = this.decode(kv);
    } catch (e) {
      this.report(e);
      if (this.decoded.delete(kv.key)) this.emit({ type: "delete", key: kv.key, value: previous, kv, revision });
      return;
    }
    this.decoded.set(kv.key, value);
    this.emit({ type: "put", key: kv.key, value, previous, kv, revision });
  }

  private applyDelete(key: string, revision: number): void {
    const kv = this.kvs.get(key);
    const value = this.decoded.get(key);
    this.kvs.delete(key);
    this.decoded.delete(key);
    if (kv) this.emit({ type: "delete", key, value, kv, revision });
  }

  private emit(event: InformerEvent<T>): void {
    for (const fn of this.subscribers) {
      try {
        fn(event);
      } catch (e) {
        this.report(e);
      }
    }
  }

  private wakeWaiters(): void {
    if (this.waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.revision <= this.rev) {
        clearTimeout(w.timer);
        w.resolve();
      } else {
        still.push(w);
      }
    }
    this.waiters = still;
  }

  private report(e: unknown): void {
    this.options.onError?.(e instanceof Error ? e : new Error(String(e)));
  }
}
