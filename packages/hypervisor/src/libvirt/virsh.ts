import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BerthError, ErrorCode } from "@berth/core";

/** How one run of a command ended. */
export interface CommandResult {
  /** The exit code; null when killed (timeout) or when it could not be started. */
  exitCode: number | null;
  stdout: string;
  stderr: string;
  /** Killed at the time limit. */
  timedOut: boolean;
  /** Why the command could not be started at all (e.g. ENOENT), else undefined. */
  spawnError?: string;
}

/** How to run one command. */
export interface RunOptions {
  /** Killed (SIGKILL) past this; the result says `timedOut`. */
  timeoutMs: number;
  /** Written to the command's stdin (then closed). */
  input?: string;
}

/** Runs an executable without a shell. Never rejects: failures are in the result. */
export type CommandRunner = (file: string, args: readonly string[], options: RunOptions) => Promise<CommandResult>;

/** The default {@link CommandRunner}: `execFile`, SIGKILL at the time limit, `LC_ALL=C` so messages are parseable. */
export const execFileRunner: CommandRunner = (file, args, options) =>
  new Promise((resolve) => {
    const child = execFile(
      file,
      [...args],
      { timeout: options.timeoutMs, killSignal: "SIGKILL", maxBuffer: 256 * 1024 * 1024, env: { ...process.env, LC_ALL: "C", LANG: "C" } },
      (error, stdout, stderr) => {
        const e = error as (NodeJS.ErrnoException & { killed?: boolean; code?: number | string }) | null;
        if (e && typeof e.code === "string") {
          resolve({ exitCode: null, stdout: String(stdout), stderr: String(stderr), timedOut: false, spawnError: `${e.code}: ${e.message}` });
          return;
        }
        resolve({
          exitCode: e ? (typeof e.code === "number" ? e.code : null) : 0,
          stdout: String(stdout),
          stderr: String(stderr),
          timedOut: e?.killed === true,
        });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
    else child.stdin?.end();
  });

const CONNECTION_RE =
  /failed to connect to the hypervisor|Failed to connect socket|Cannot recv data|Cannot write data|Disconnected from|client socket is closed|End of file while reading data|no connection driver available|unable to connect to server|Connection reset by peer|Broken pipe/i;
const NOT_FOUND_RE =
  /Domain not found|failed to get domain|no domain with matching|Storage volume not found|failed to get vol|Storage pool not found|failed to get pool|Network not found|metadata not found/i;
const ALREADY_EXISTS_RE = /already exists|exists already|is already defined with uuid/i;
const TIMEOUT_RE = /Timed out during operation|operation timed out/i;
const RESOURCE_RE = /Cannot allocate memory|cannot set up guest memory|No space left on device|Not enough space|out of memory|insufficient/i;
const PRECONDITION_RE = /Requested operation is not valid|is not running|is already active|already running|Operation not supported/i;
const INVALID_RE = /XML error|XML document failed to validate|unsupported configuration|invalid argument/i;

/** The error lines of virsh's stderr, without their `error: ` prefixes, on one line. */
export function virshErrorText(stderr: string): string {
  return stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "")
    .map((l) => l.replace(/^error:\s*/i, ""))
    .join("; ");
}

/**
 * The one mapping of virsh failures to BerthError codes:
 * timeout → DEADLINE_EXCEEDED; cannot run virsh or reach libvirtd → HYPERVISOR_UNAVAILABLE;
 * "Domain not found", "failed to get domain|vol|pool", "metadata not found" → NOT_FOUND;
 * "already exists", "already defined with uuid" → ALREADY_EXISTS; libvirt's job lock timeout →
 * DEADLINE_EXCEEDED; "Cannot allocate memory", "No space left" → RESOURCE_EXHAUSTED;
 * "Requested operation is not valid", "is not running", "is already active" → FAILED_PRECONDITION;
 * "XML error", "unsupported configuration" → INVALID_ARGUMENT; anything else → INTERNAL.
 * `command` (e.g. "virsh start berth-a") prefixes the message.
 */
export function mapVirshError(result: CommandResult, command: string): BerthError {
  const detail = virshErrorText(result.stderr) || (result.exitCode === null ? "" : `exit code ${result.exitCode}`);
  const message = (what: string): string => `${command}: ${what}`;
  if (result.timedOut) return new BerthError(ErrorCode.DeadlineExceeded, message(`no answer within the time limit${detail ? ` (${detail})` : ""}`));
  if (result.spawnError !== undefined) return new BerthError(ErrorCode.HypervisorUnavailable, message(`cannot run virsh: ${result.spawnError}`));
  const text = result.stderr;
  const code = CONNECTION_RE.test(text)
    ? ErrorCode.HypervisorUnavailable
    : NOT_FOUND_RE.test(text)
      ? ErrorCode.NotFound
      : ALREADY_EXISTS_RE.test(text)
        ? ErrorCode.AlreadyExists
        : TIMEOUT_RE.test(text)
          ? ErrorCode.DeadlineExceeded
          : RESOURCE_RE.test(text)
            ? ErrorCode.ResourceExhausted
            : PRECONDITION_RE.test(text)
              ? ErrorCode.FailedPrecondition
              : INVALID_RE.test(text)
                ? ErrorCode.InvalidArgument
                : ErrorCode.Internal;
  return new BerthError(code, message(detail || "failed"));
}

/** Whether virsh's stderr says the connection to libvirtd failed (the whole call is void). */
export function isConnectionFailure(stderr: string): boolean {
  return CONNECTION_RE.test(stderr);
}

/** Arguments allowed inside a batched command string: no quoting needed for virsh's parser. */
const PLAIN_ARG_RE = /^[A-Za-z0-9._:/=+,-]+$/;

/** Marker line that starts a section of a batch's output. */
const SECTION_MARK = "@@berth-section:";

/** One virsh command of a batch: its arguments, and the tag of its output section. */
export interface BatchCommand {
  tag: string;
  args: readonly string[];
}

/** Where and how {@link Virsh} runs virsh. */
export interface VirshOptions {
  uri: string;
  virshPath: string;
  timeoutMs: number;
  runner: CommandRunner;
}

/**
 * Runs `virsh -q -c <uri> ...` with execFile (no shell) and a time limit per call, and maps its
 * failures once, with {@link mapVirshError}. The runner is injectable.
 */
export class Virsh {
  constructor(readonly options: VirshOptions) {}

  /** The argv of one call, for logs and tests. */
  argv(args: readonly string[]): string[] {
    return ["-q", "-c", this.options.uri, ...args];
  }

  /** Runs one command; resolves stdout, rejects with a mapped BerthError. */
  async run(args: readonly string[], options: { timeoutMs?: number; input?: string } = {}): Promise<string> {
    const result = await this.exec(args, options);
    if (result.exitCode !== 0) throw mapVirshError(result, describeCommand(args));
    return result.stdout;
  }

  /**
   * Runs one command that reads a file (e.g. `define <file>`): `content` is written to a private
   * temporary file (mode 0600), `args(path)` run, the file removed. (Not /dev/stdin: Node's child
   * stdin is a socket, which virsh cannot open by path.)
   */
  async runWithFile(content: string, args: (path: string) => readonly string[], options: { timeoutMs?: number } = {}): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), "berth-virsh-"));
    try {
      const file = join(dir, "input.xml");
      await writeFile(file, content, { mode: 0o600 });
      return await this.run(args(file), options);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** Runs one command and resolves its raw result; never rejects. */
  exec(args: readonly string[], options: { timeoutMs?: number; input?: string } = {}): Promise<CommandResult> {
    const run: RunOptions = { timeoutMs: options.timeoutMs ?? this.options.timeoutMs };
    if (options.input !== undefined) run.input = options.input;
    return this.options.runner(this.options.virshPath, this.argv(args), run);
  }

  /**
   * Runs several commands in one virsh process (one connection): `echo <mark><tag>; cmd; ...`.
   * Resolves each command's stdout by tag (a failed command's section is empty; its message is in
   * `stderr`). Rejects only when the whole call failed: time limit, virsh not runnable, or libvirtd
   * unreachable. Arguments must be plain (letters, digits, `._:/=+,-`): UUIDs, numbers, flags.
   */
  async batch(commands: readonly BatchCommand[], options: { timeoutMs?: number } = {}): Promise<{ sections: Map<string, string>; stderr: string }> {
    if (commands.length === 0) return { sections: new Map(), stderr: "" };
    const script = commands
      .map((c) => {
        for (const a of [c.tag, ...c.args]) {
          if (!PLAIN_ARG_RE.test(a)) throw new BerthError(ErrorCode.Internal, `virsh batch: argument ${JSON.stringify(a)} needs quoting`);
        }
        return `echo ${SECTION_MARK}${c.tag}@@ ; ${c.args.join(" ")}`;
      })
      .join(" ; ");
    const result = await this.exec([script], options);
    const label = `virsh ${commands.map((c) => c.args[0]).filter((v, i, all) => all.indexOf(v) === i).join(",")}`;
    if (result.timedOut || result.spawnError !== undefined || (result.exitCode !== 0 && isConnectionFailure(result.stderr))) {
      throw mapVirshError(result, label);
    }
    return { sections: splitSections(result.stdout), stderr: result.stderr };
  }
}

/**
 * Splits a batch's stdout at its markers. (virsh -q prints `echo`'s text without a newline, so a
 * marker may run into the next command's output: the split is on the marker, not on lines.)
 */
export function splitSections(stdout: string): Map<string, string> {
  const sections = new Map<string, string>();
  const re = new RegExp(`${SECTION_MARK}([^\\s@]+)@@`, "g");
  const marks = [...stdout.matchAll(re)];
  marks.forEach((m, i) => {
    const start = m.index + m[0].length;
    const end = marks[i + 1]?.index ?? stdout.length;
    sections.set(m[1]!, stdout.slice(start, end).replace(/^\n/, ""));
  });
  return sections;
}

function describeCommand(args: readonly string[]): string {
  return `virsh ${args.filter((a) => !a.includes("\n")).slice(0, 4).join(" ")}`;
}
