import { createInterface } from "node:readline/promises";
import type { Command } from "commander";
import { CONTROLLER_ENV, ControllerClient, DEFAULT_CONTROLLER, DEFAULT_TIMEOUT_MS } from "./client.js";
import { isBerthError, messageForFlags, resolveTransport, TLS_FLAGS, type Transport } from "@berth/core";
import { usageError } from "./exit-codes.js";
import type { OutputFormat } from "./output.js";
import { parseEndpoints, parseSecondsMs } from "./parse.js";

/** Where a run of the CLI reads its environment and writes its output. */
export interface Io {
  /** Writes to standard output as is (callers end lines themselves). */
  stdout(text: string): void;
  /** Writes to standard error as is. */
  stderr(text: string): void;
  /** The environment (`BERTH_CONTROLLER`). */
  env: Readonly<Record<string, string | undefined>>;
  /** The working directory (`berth dev` keeps its state under it). */
  cwd: string;
  /** The clock, in Unix ms (ages in tables). */
  now(): number;
  /** Waits `ms` between two polls of a `--wait` (tests make it short). */
  sleep(ms: number): Promise<void>;
  /** Whether standard output is a terminal that takes colours. */
  colorize: boolean;
  /**
   * Whether standard error is a terminal, so that a `--wait` progress line can be redrawn in place;
   * otherwise (a log, a pipe) progress is written as plain lines.
   */
  stderrIsTerminal: boolean;
  /**
   * Whether a person can answer questions: standard input and standard error are terminals.
   * Destructive verbs ask for confirmation then, and require `--yes` otherwise.
   */
  interactive: boolean;
  /** Asks `question` (on stderr) and resolves with the line typed. Only called when `interactive`. */
  ask(question: string): Promise<string>;
  /**
   * Whether standard output is a terminal: `--watch` redraws its table in place then, and prints
   * changed rows as new lines otherwise. Absent: not a terminal.
   */
  stdoutIsTerminal?: boolean;
  /** Ends a watch (`events --follow`, `--watch`) as Ctrl-C would. Absent: SIGINT does (watch-stream.ts). */
  interrupt?: AbortSignal;
  /**
   * Reads standard input to its end (`--user-data -`), stopping once more than `maxBytes` have come:
   * a result longer than `maxBytes` means the input was too large. Absent: stdin cannot be read.
   */
  readStdin?(maxBytes: number): Promise<Uint8Array>;
}

/** The real process' Io. */
export function processIo(): Io {
  return {
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    env: process.env,
    cwd: process.cwd(),
    now: () => Date.now(),
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    colorize: process.stdout.isTTY === true && !("NO_COLOR" in process.env),
    stderrIsTerminal: process.stderr.isTTY === true,
    stdoutIsTerminal: process.stdout.isTTY === true,
    interactive: process.stdin.isTTY === true && process.stderr.isTTY === true,
    ask: async (question) => {
      const rl = createInterface({ input: process.stdin, output: process.stderr });
      try {
        return await rl.question(question);
      } finally {
        rl.close();
      }
    },
    readStdin: async (maxBytes) => {
      const chunks: Buffer[] = [];
      let length = 0;
      for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
        chunks.push(chunk);
        length += chunk.length;
        // Enough to tell "too large": the rest is not read into memory.
        if (length > maxBytes) break;
      }
      return Buffer.concat(chunks);
    },
  };
}

/** `-o` values (output.ts). */
export type { OutputFormat } from "./output.js";

/** The global flags, parsed. */
export interface GlobalOptions {
  endpoints: string[];
  timeoutMs: number;
  output: OutputFormat;
  /** `--tls-ca/--tls-cert/--tls-key` (or BERTH_TLS_*), or `--insecure`. */
  transport: Transport;
}

/**
 * The state of one run: its Io, and the controller client, made on first use from the global flags
 * and closed when the run ends.
 */
export class CliContext {
  readonly io: Io;
  /** The exit code of a verb that ends without an error but not with 0 (`berth dev`). */
  exitCode = 0;
  #client: ControllerClient | undefined;

  constructor(io: Io) {
    this.io = io;
  }

  /** The global flags of the command being run: `--controller`, else `$BERTH_CONTROLLER`, else the default. */
  globals(command: Command): GlobalOptions {
    const opts = command.optsWithGlobals<{ controller?: string; timeout?: string; output?: OutputFormat; tlsCa?: string; tlsCert?: string; tlsKey?: string; insecure?: boolean }>();
    const fromEnv = this.io.env[CONTROLLER_ENV]?.trim();
    const endpoints =
      opts.controller !== undefined
        ? parseEndpoints(opts.controller, "--controller")
        : fromEnv
          ? parseEndpoints(fromEnv, CONTROLLER_ENV)
          : [DEFAULT_CONTROLLER];
    const timeoutMs = opts.timeout !== undefined ? parseSecondsMs(opts.timeout, "--timeout") : DEFAULT_TIMEOUT_MS;
    let transport: Transport;
    try {
      transport = resolveTransport({ tlsCa: opts.tlsCa, tlsCert: opts.tlsCert, tlsKey: opts.tlsKey, insecure: opts.insecure }, this.io.env);
    } catch (e) {
      throw usageError(messageForFlags(e, TLS_FLAGS));
    }
    return { endpoints, timeoutMs, output: opts.output ?? "table", transport };
  }

  /** The client for these global options (one per run). Bad TLS files are a usage error naming the flag. */
  client(globals: GlobalOptions): ControllerClient {
    try {
      this.#client ??= new ControllerClient({ endpoints: globals.endpoints, timeoutMs: globals.timeoutMs, ...("tls" in globals.transport ? { tls: globals.transport.tls } : {}) });
    } catch (e) {
      if (isBerthError(e)) throw usageError(messageForFlags(e, TLS_FLAGS));
      throw e;
    }
    return this.#client;
  }

  /** Releases the client's channels. */
  close(): void {
    this.#client?.close();
    this.#client = undefined;
  }
}
