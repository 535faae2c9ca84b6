import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { DomainEventKind, HypervisorHealth } from "../driver.js";

/** One line of `virsh event --all --loop`, parsed. */
export interface VirshEvent {
  /** libvirt's event type: "lifecycle", "reboot", "metadata-change", ... */
  type: string;
  /** The libvirt domain name. */
  domain: string;
  /** What follows the colon, e.g. "Stopped Destroyed". */
  detail: string;
}

/**
 * Parses a line `event 'lifecycle' for domain 'berth-a': Started Booted` (with or without virsh's
 * `--timestamp` prefix); undefined for any other line (e.g. `events received: 3`).
 */
export function parseEventLine(line: string): VirshEvent | undefined {
  const m = /(?:^|: )event '([^']+)' for domain '(.*)'(?:: (.*))?$/.exec(line.trim());
  if (!m) return undefined;
  return { type: m[1]!, domain: m[2]!, detail: (m[3] ?? "").trim() };
}

/**
 * The DriverEvent kind of a lifecycle event's detail ("<Event> <Detail>"), or undefined for events
 * Berth does not report (e.g. "Shutdown Finished", always followed by "Stopped Shutdown"):
 * Defined → defined, Undefined → undefined, Started → started, Suspended/PMSuspended → paused,
 * Resumed → resumed, Stopped → stopped except Stopped Failed/Crashed → crashed and Stopped
 * Migrated → migrated, Crashed → crashed.
 */
export function lifecycleKind(detail: string): DomainEventKind | undefined {
  const [event = "", ...rest] = detail.split(/\s+/);
  const reason = rest.join(" ");
  switch (event) {
    case "Defined":
      return "defined";
    case "Undefined":
      return "undefined";
    case "Started":
      return "started";
    case "Suspended":
    case "PMSuspended":
      return "paused";
    case "Resumed":
      return "resumed";
    case "Stopped":
      if (reason === "Failed" || reason === "Crashed") return "crashed";
      if (reason === "Migrated") return "migrated";
      return "stopped";
    case "Crashed":
      return "crashed";
    default:
      return undefined;
  }
}

/** The part of a child process the follower uses (a real ChildProcess fits). */
export interface EventProcess {
  readonly stdout: NodeJS.ReadableStream | null;
  readonly stderr: NodeJS.ReadableStream | null;
  once(event: "close", listener: (code: number | null, signal: NodeJS.Signals | null) => void): unknown;
  once(event: "error", listener: (error: Error) => void): unknown;
  kill(signal?: NodeJS.Signals): boolean;
}

export interface EventFollowerOptions {
  /** Starts the event stream, e.g. `virsh -c URI event --all --loop`. */
  spawn: () => EventProcess;
  /** Whether libvirtd answers now (a cheap virsh call). */
  probe: () => Promise<boolean>;
  onEvent: (event: VirshEvent) => void;
  onHealth: (health: HypervisorHealth) => void;
  /** First delay before re-spawning after the stream ended; doubles up to `maxBackoffMs`. Default 200 ms. */
  initialBackoffMs?: number;
  /** Default 2 000 ms. */
  maxBackoffMs?: number;
  /** How long a new stream must live before the probe that declares the hypervisor back. Default 150 ms. */
  settleMs?: number;
}

/** Spawns `virsh -q -c <uri> event --all --loop` with `LC_ALL=C`. */
export function spawnVirshEvents(virshPath: string, uri: string): EventProcess {
  return spawn(virshPath, ["-q", "-c", uri, "event", "--all", "--loop"], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, LC_ALL: "C", LANG: "C" },
  });
}

/**
 * Follows libvirt's event stream through a long-lived child process (not polling). When the child
 * ends (libvirtd stopped or restarted), reports `{ available: false }` once, re-spawns with
 * exponential backoff, and once a new stream has lived `settleMs` and libvirtd answers a probe,
 * reports `{ available: true }` (the subscriber should re-list then: events in between are lost).
 * `start` and `stop` are idempotent; `stop` kills the child.
 */
export class EventFollower {
  private child: EventProcess | undefined;
  private running = false;
  private available = true;
  private backoffMs: number;
  private timer: NodeJS.Timeout | undefined;
  private settleTimer: NodeJS.Timeout | undefined;
  private generation = 0;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly settleMs: number;

  constructor(private readonly options: EventFollowerOptions) {
    this.initialBackoffMs = options.initialBackoffMs ?? 200;
    this.maxBackoffMs = options.maxBackoffMs ?? 2_000;
    this.settleMs = options.settleMs ?? 150;
    this.backoffMs = this.initialBackoffMs;
  }

  get isRunning(): boolean {
    return this.running;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.available = true;
    this.backoffMs = this.initialBackoffMs;
    this.connect();
  }

  /** Stops following and kills the child; resolves once it has exited. */
  async stop(): Promise<void> {
    this.running = false;
    this.generation++;
    clearTimeout(this.timer);
    clearTimeout(this.settleTimer);
    const child = this.child;
    this.child = undefined;
    if (!child) return;
    await new Promise<void>((resolve) => {
      const done = setTimeout(resolve, 2_000);
      child.once("close", () => {
        clearTimeout(done);
        resolve();
      });
      if (!child.kill("SIGTERM")) {
        clearTimeout(done);
        resolve();
      }
    });
  }

  private connect(): void {
    if (!this.running) return;
    const generation = ++this.generation;
    let lastError = "";
    let ended = false;
    let child: EventProcess;
    try {
      child = this.options.spawn();
    } catch (e) {
      this.ended(generation, `cannot start the event stream: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    this.child = child;
    const end = (why: string): void => {
      if (ended) return;
      ended = true;
      if (this.child === child) this.child = undefined;
      this.ended(generation, why);
    };
    child.once("error", (e) => end(`event stream failed: ${e.message}`));
    child.once("close", (code, signal) => end(lastError || `event stream ended (${signal ?? `exit code ${String(code)}`})`));
    if (child.stdout) {
      createInterface({ input: child.stdout }).on("line", (line) => {
        if (generation !== this.generation) return;
        const event = parseEventLine(line);
        if (event) this.options.onEvent(event);
      });
    }
    if (child.stderr) {
      createInterface({ input: child.stderr }).on("line", (line) => {
        const text = line.replace(/^error:\s*/i, "").trim();
        if (text) lastError = lastError ? `${lastError}; ${text}` : text;
      });
    }
    if (!this.available) this.confirmBack(generation, () => ended, this.settleMs);
  }

  /** After `delayMs`, probes; once the stream still runs and the probe answers, reports the hypervisor back. */
  private confirmBack(generation: number, ended: () => boolean, delayMs: number): void {
    this.settleTimer = setTimeout(() => {
      const current = (): boolean => !ended() && generation === this.generation && this.running && !this.available;
      if (!current()) return;
      void this.options.probe().then(
        (ok) => {
          if (!current()) return;
          if (!ok) {
            this.confirmBack(generation, ended, Math.min(this.maxBackoffMs, delayMs * 2));
            return;
          }
          this.available = true;
          this.backoffMs = this.initialBackoffMs;
          this.options.onHealth({ available: true, message: "" });
        },
        () => this.confirmBack(generation, ended, Math.min(this.maxBackoffMs, delayMs * 2)),
      );
    }, delayMs);
  }

  private ended(generation: number, why: string): void {
    if (generation !== this.generation || !this.running) return;
    clearTimeout(this.settleTimer);
    if (this.available) {
      this.available = false;
      this.options.onHealth({ available: false, message: why });
    }
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.maxBackoffMs, this.backoffMs * 2);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
