import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { tlsEnv } from "./pki.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
/** Built entry points (the test script builds before running the suites). */
export const CONTROLLER_BIN = `${root}packages/controller/dist/main.js`;
export const AGENT_BIN = `${root}packages/agent/dist/main.js`;
/** berth-sim: many hollow agents (in-memory fake hypervisors) in one process. */
export const SIM_BIN = `${root}packages/agent/dist/sim-main.js`;
export const CLI_BIN = `${root}packages/cli/dist/main.js`;

/** A free TCP port on the loopback interface. */
export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

/**
 * The TLS identity a Berth process is started with unless it says `--insecure` or brings its own:
 * a controller's certificate, the host certificate of an agent's `--host-id`, an admin's for the
 * CLI (`berth dev` makes its own PKI).
 */
export function defaultTlsEnv(script: string, args: readonly string[], env: NodeJS.ProcessEnv): Record<string, string> {
  if (args.includes("--insecure") || args.includes("--tls-cert") || env.BERTH_TLS_CERT !== undefined) return {};
  if (script === CONTROLLER_BIN) return tlsEnv("controller", "controller");
  if (script === AGENT_BIN) {
    const at = args.indexOf("--host-id");
    return at >= 0 && args[at + 1] ? tlsEnv("host", args[at + 1]!) : {};
  }
  if (script === CLI_BIN && args[0] !== "dev") return tlsEnv("admin", "admin");
  return {};
}

/** A child process whose output is kept (the last lines are printed when a test fails). */
export class Proc {
  readonly child: ChildProcess;
  private output: string[] = [];
  readonly exited: Promise<number | null>;

  constructor(
    readonly name: string,
    script: string,
    args: string[],
    env: NodeJS.ProcessEnv = {},
  ) {
    this.child = spawn(process.execPath, [script, ...args], {
      env: { ...process.env, LOG_LEVEL: "debug", ...defaultTlsEnv(script, args, env), ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const keep = (chunk: Buffer): void => {
      this.output.push(...chunk.toString().split("\n").filter(Boolean));
      if (this.output.length > 2000) this.output = this.output.slice(-1000);
    };
    this.child.stdout!.on("data", keep);
    this.child.stderr!.on("data", keep);
    this.exited = new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Lines of output that contain `text`. */
  lines(text: string): string[] {
    return this.output.filter((l) => l.includes(text));
  }

  tail(n = 40): string {
    return this.output.slice(-n).map((l) => `[${this.name}] ${l}`).join("\n");
  }

  /** Sends `signal` and waits for the exit (SIGKILL after `graceMs`). Idempotent. */
  async stop(signal: NodeJS.Signals = "SIGTERM", graceMs = 5_000): Promise<number | null> {
    if (!this.running) return this.child.exitCode;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ""}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
