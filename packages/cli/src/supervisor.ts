import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { EXIT_WITH_PARENT_ENV } from "@berth/core";
import type { LineSource } from "./log-lines.js";

/** One process `berth dev` runs. */
export interface ChildSpec {
  /** Label in the logs: `controller`, `host-1`. */
  name: string;
  /** The executable (`process.execPath`). */
  command: string;
  args: readonly string[];
}

/** How a child ended. */
export interface ChildExit {
  name: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** False when it ended on its own, not because `stop()` asked it to. */
  expected: boolean;
}

/** Options of a {@link Supervisor}. */
export interface SupervisorOptions {
  /** Every line a child writes (without its newline). */
  onLine: (name: string, line: string, source: LineSource) => void;
  /** A child ended. */
  onExit: (exit: ChildExit) => void;
  /** How long `stop()` waits after SIGTERM before SIGKILL. */
  stopGraceMs?: number;
}

interface Running {
  spec: ChildSpec;
  child: ChildProcess;
  exited: Promise<void>;
}

/**
 * Runs child processes and guarantees they end with it. Each child is the leader of its own
 * process group, so a terminal's Ctrl-C reaches only `berth dev`, which then stops the children in
 * order: SIGTERM to each group, a grace period, SIGKILL to what is left. `killAll()` is the
 * synchronous last resort for the `exit` event.
 */
export class Supervisor {
  readonly #options: SupervisorOptions;
  readonly #running = new Map<string, Running>();
  #stopping = false;

  constructor(options: SupervisorOptions) {
    this.#options = options;
  }

  /** Names of the children still running. */
  get running(): string[] {
    return [...this.#running.keys()];
  }

  /** True once `stop()` was called. */
  get stopping(): boolean {
    return this.#stopping;
  }

  /** Starts one child; its stdout and stderr are read line by line. */
  start(spec: ChildSpec): void {
    if (this.#stopping) throw new Error("supervisor is stopping");
    if (this.#running.has(spec.name)) throw new Error(`${spec.name} is already running`);
    // The child's stdin is a pipe this process never writes to: it ends when this process does,
    // however it ends (SIGKILL included), and the daemons stop then (stopWhenParentGone).
    const child = spawn(spec.command, [...spec.args], {
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
      env: { ...process.env, [EXIT_WITH_PARENT_ENV]: "stdin" },
    });
    for (const source of ["stdout", "stderr"] as const) {
      const stream = child[source];
      if (!stream) continue;
      createInterface({ input: stream, crlfDelay: Infinity }).on("line", (line) =>
        this.#options.onLine(spec.name, line, source),
      );
    }
    const exited = new Promise<void>((resolve) => {
      let done = false;
      const end = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (done) return;
        done = true;
        this.#running.delete(spec.name);
        this.#options.onExit({ name: spec.name, code, signal, expected: this.#stopping });
        resolve();
      };
      child.once("exit", end);
      child.once("error", (e) => {
        this.#options.onLine(spec.name, `cannot start: ${e.message}`, "stderr");
        end(null, null);
      });
    });
    this.#running.set(spec.name, { spec, child, exited });
  }

  /** Stops every child: SIGTERM, up to `stopGraceMs` (default 5 s), then SIGKILL. */
  async stop(): Promise<void> {
    this.#stopping = true;
    const running = [...this.#running.values()];
    for (const r of running) signalGroup(r.child, "SIGTERM");
    const grace = this.#options.stopGraceMs ?? 5000;
    let timer: NodeJS.Timeout | undefined;
    const all = Promise.all(running.map((r) => r.exited));
    await Promise.race([all, new Promise<void>((resolve) => (timer = setTimeout(resolve, grace)))]);
    clearTimeout(timer);
    for (const r of this.#running.values()) signalGroup(r.child, "SIGKILL");
    await all;
  }

  /** SIGKILL to every child, now; for a second Ctrl-C and for `process.on("exit")`. */
  killAll(): void {
    this.#stopping = true;
    for (const r of this.#running.values()) signalGroup(r.child, "SIGKILL");
  }
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // Already gone.
    }
  }
}
