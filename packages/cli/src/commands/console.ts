import { ClusterServiceClient, type AttachConsoleRequest, type AttachConsoleResponse } from "@berth/api";
import { BerthError, channelCredentialsOf, ErrorCode, ERROR_CODE_METADATA_KEY, fromGrpcError, grpcClientOptions, isBerthError, messageForFlags, quote, TLS_FLAGS, tlsIdentityOf } from "@berth/core";
import { Metadata, status, type ClientDuplexStream, type ServiceError } from "@grpc/grpc-js";
import type { Command } from "commander";
import type { CliContext, GlobalOptions } from "../context.js";
import { usageError } from "../exit-codes.js";

/** The operator's console stream. */
export type ConsoleStream = ClientDuplexStream<AttachConsoleRequest, AttachConsoleResponse>;

/** The default escape character: Ctrl-] (0x1d), as virsh's. */
export const DEFAULT_ESCAPE = "^]";

/** The largest input message the controller takes (cluster.proto). */
export const MAX_INPUT_BYTES = 16 * 1024;

/** How long a detach waits for the controller to end the stream before letting go of it. */
const DETACH_GRACE_MS = 2_000;
/** How long output the controller sent before it ended the stream may take to be written out. */
const OUTPUT_FLUSH_MS = 1_000;

/** Where the console streams come from: one channel per controller address. */
export interface ConsoleChannels {
  readonly endpoints: readonly string[];
  /** How long attaching may take (`--timeout`); the session itself has no deadline. */
  readonly timeoutMs: number;
  /** Opens AttachConsole on `address`. */
  open(address: string): ConsoleStream;
  close(): void;
}

/**
 * Channels to the controllers the global flags name, with their TLS identity. Bad TLS files are a
 * usage error naming the flag. (Its own channels: the console is the CLI's one bidirectional
 * stream, and the shared client has no call for it.)
 */
export function consoleChannels(globals: GlobalOptions): ConsoleChannels {
  let identity: ReturnType<typeof tlsIdentityOf>;
  try {
    identity = tlsIdentityOf(globals.transport);
  } catch (e) {
    if (isBerthError(e)) throw usageError(messageForFlags(e, TLS_FLAGS));
    throw e;
  }
  const clients = new Map<string, ClusterServiceClient>();
  return {
    endpoints: globals.endpoints,
    timeoutMs: globals.timeoutMs,
    open(address) {
      let client = clients.get(address);
      if (!client) clients.set(address, (client = new ClusterServiceClient(address, channelCredentialsOf(identity), grpcClientOptions())));
      return client.attachConsole(new Metadata());
    },
    close() {
      for (const c of clients.values()) c.close();
      clients.clear();
      identity?.close();
    },
  };
}

/** Where the console reads keystrokes and writes what the guest says: the process's own by default. */
export interface ConsoleTerminal {
  readonly input: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?(raw: boolean): unknown };
  readonly output: NodeJS.WritableStream;
  stderr(text: string): void;
  /** Calls `handler` on SIGINT, SIGTERM and SIGHUP until the returned function is called. */
  onSignal(handler: (signal: NodeJS.Signals) => void): () => void;
}

/** The process's terminal: stdin, stdout, stderr and its signals. */
export function processTerminal(): ConsoleTerminal {
  return {
    input: process.stdin,
    output: process.stdout,
    stderr: (text) => void process.stderr.write(text),
    onSignal(handler) {
      const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
      for (const s of signals) process.on(s, handler);
      return () => {
        for (const s of signals) process.removeListener(s, handler);
      };
    },
  };
}

/** An escape character as typed (`^]`) and the byte it is. */
export interface EscapeCharacter {
  name: string;
  byte: number;
}

/**
 * Reads `--escape`: `^` and a letter or one of `@[\]^_` (the control characters, as virsh takes
 * them: `^]` is 0x1d). A usage error naming the flag otherwise.
 */
export function parseEscape(text: string): EscapeCharacter {
  const m = /^\^([A-Za-z@[\\\]^_])$/.exec(text);
  if (!m) throw usageError(`--escape: expected ^ and a letter or one of @ [ \\ ] ^ _ (e.g. '^]' or '^X'), got '${quote(text, 16)}'`);
  const c = m[1]!.toUpperCase();
  return { name: `^${c}`, byte: c.charCodeAt(0) ^ 0x40 };
}

/** What `berth vm console` was asked for. */
export interface ConsoleRequest {
  name: string;
  force: boolean;
  escape: EscapeCharacter;
}

/** An attached stream, paused until the session takes it. */
interface Attached {
  call: ConsoleStream;
  vmId: string;
  hostId: string;
}

/**
 * Attaches to the VM's console: the controllers are tried in order, a follower's NOT_LEADER is
 * followed to the leader it names (once), an address that cannot be reached gives way to the next;
 * any other refusal (NOT_FOUND, FAILED_PRECONDITION, PERMISSION_DENIED...) is thrown as is.
 */
export async function attachConsole(channels: ConsoleChannels, request: ConsoleRequest): Promise<Attached> {
  const queue = [...channels.endpoints];
  const tried = new Set<string>();
  const failures: BerthError[] = [];
  let followedLeader = false;
  for (let address = queue.shift(); address !== undefined; address = queue.shift()) {
    if (tried.has(address)) continue;
    tried.add(address);
    const outcome = await attachOnce(channels, address, request);
    if ("call" in outcome) return outcome;
    const { error, tryNext } = outcome;
    if (!tryNext) throw error;
    failures.push(error);
    if (error.leader && !followedLeader && !tried.has(error.leader)) {
      followedLeader = true;
      queue.unshift(error.leader);
    }
  }
  const only = failures.length === 1 ? failures[0] : undefined;
  throw new BerthError(ErrorCode.Unavailable, only ? only.message : `no controller could attach the console:\n  ${failures.map((f) => f.message).join("\n  ")}`);
}

function attachOnce(channels: ConsoleChannels, address: string, request: ConsoleRequest): Promise<Attached | { error: BerthError; tryNext: boolean }> {
  return new Promise((resolve) => {
    const call = channels.open(address);
    // Kept for the call's life: a cancel (a timeout here, the caller's later) ends it with an
    // 'error' that nothing may be left listening for.
    call.on("error", () => undefined);
    let done = false;
    const finish = (outcome: Attached | { error: BerthError; tryNext: boolean }): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      call.removeListener("data", onData);
      call.removeListener("error", onError);
      call.removeListener("end", onEnd);
      if (!("call" in outcome)) call.cancel();
      resolve(outcome);
    };
    const timer = setTimeout(
      () => finish({ error: new BerthError(ErrorCode.DeadlineExceeded, `controller ${address}: no answer within ${channels.timeoutMs / 1000}s (see --timeout)`), tryNext: false }),
      channels.timeoutMs,
    );
    const onData = (m: AttachConsoleResponse): void => {
      if (m.msg?.$case !== "attached") {
        finish({ error: new BerthError(ErrorCode.Internal, `controller ${address} sent console output before saying the console was attached`), tryNext: false });
        return;
      }
      // Held until the session listens: output may follow in the same read.
      call.pause();
      finish({ call, vmId: m.msg.value.vmId, hostId: m.msg.value.hostId });
    };
    const onError = (e: ServiceError): void => {
      const error = fromGrpcError(e);
      const fromServer = (e.metadata?.get(ERROR_CODE_METADATA_KEY).length ?? 0) > 0;
      if (!fromServer && e.code === status.UNAVAILABLE) {
        finish({ error: new BerthError(ErrorCode.Unavailable, `controller ${address}: cannot connect (${error.message})`), tryNext: true });
        return;
      }
      const redirect = error.code === ErrorCode.NotLeader || (fromServer && error.code === ErrorCode.Unavailable && error.leader !== undefined);
      finish({ error: redirect ? new BerthError(error.code, `controller ${address}: ${error.message}`, { ...(error.leader ? { leader: error.leader } : {}) }) : error, tryNext: redirect });
    };
    const onEnd = (): void => finish({ error: new BerthError(ErrorCode.Unavailable, `controller ${address} ended the stream before attaching the console`), tryNext: false });
    call.on("data", onData);
    call.on("error", onError);
    call.on("end", onEnd);
    call.write({ msg: { $case: "open", value: { vm: request.name, force: request.force } } });
  });
}

/**
 * `berth vm console NAME`: attaches, says `Connected to VM NAME on HOST (escape character is ^])`
 * on stderr, puts a terminal stdin in raw mode (restored on every way out), sends what is typed
 * and writes what the guest says to stdout, both ways with backpressure. Ends on the escape
 * character, the end of stdin, or a signal (the session is closed: resolves), or when the
 * controller ends the stream: OK resolves, an error (the host's reason) is thrown as a
 * BerthError. Says `Disconnected.` at the end of an attached session.
 */
export async function runConsole(channels: ConsoleChannels, request: ConsoleRequest, terminal: ConsoleTerminal): Promise<void> {
  const { call, hostId } = await attachConsole(channels, request);
  terminal.stderr(`Connected to VM ${request.name} on ${hostId} (escape character is ${request.escape.name})\n`);
  const input = terminal.input;
  const raw = input.isTTY === true && typeof input.setRawMode === "function";
  const cleanups: (() => void)[] = [];
  try {
    if (raw) {
      input.setRawMode!(true);
      cleanups.push(() => input.setRawMode!(false));
      // A last resort should the process exit from elsewhere: a raw terminal left behind is unusable.
      const onExit = (): void => void input.setRawMode!(false);
      process.once("exit", onExit);
      cleanups.push(() => void process.removeListener("exit", onExit));
    }
    await relay(call, request, terminal, cleanups);
  } finally {
    for (const undo of cleanups.reverse()) {
      try {
        undo();
      } catch {
        // Restoring is best effort on a terminal that may be gone; the rest must still run.
      }
    }
    terminal.stderr("\r\nDisconnected.\n");
  }
}

/** Relays bytes until the session ends; resolves on a detach or an OK end, rejects with the controller's error. */
function relay(call: ConsoleStream, request: ConsoleRequest, terminal: ConsoleTerminal, cleanups: (() => void)[]): Promise<void> {
  const { input, output } = terminal;
  return new Promise<void>((resolve, reject) => {
    let detaching = false;
    let settled = false;
    let failure: BerthError | undefined;
    let statusSeen = false;
    const settle = (): void => {
      if (settled) return;
      settled = true;
      if (failure) reject(failure);
      else resolve();
    };
    /** The controller has ended the stream: settle once its last output is out (or soon anyway). */
    const serverEnded = (): void => {
      if (statusSeen) return;
      statusSeen = true;
      const flushTimer = setTimeout(settle, OUTPUT_FLUSH_MS);
      cleanups.push(() => clearTimeout(flushTimer));
      if (call.readableEnded) settle();
      else call.once("end", settle);
      call.resume();
    };
    /** Ends the session from this side: half-close, and let go if the controller does not end it. */
    const detach = (): void => {
      if (detaching || statusSeen) return;
      detaching = true;
      stopReading();
      call.end();
      const grace = setTimeout(() => {
        // Settled first: the cancel's own CANCELLED is not the session's outcome.
        settle();
        call.cancel();
      }, DETACH_GRACE_MS);
      cleanups.push(() => clearTimeout(grace));
    };

    // ── Keystrokes → controller ──
    const onInput = (chunk: Buffer | string): void => {
      let data = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      const at = data.indexOf(request.escape.byte);
      if (at >= 0) data = data.subarray(0, at);
      let full = false;
      for (let from = 0; from < data.length; from += MAX_INPUT_BYTES) {
        full = !call.write({ msg: { $case: "input", value: Buffer.from(data.subarray(from, from + MAX_INPUT_BYTES)) } }) || full;
      }
      if (at >= 0) {
        detach();
        return;
      }
      // The controller is slower than the typist (a paste, a pipe): read on once it drains.
      if (full) {
        input.pause();
        call.once("drain", () => {
          if (!detaching && !statusSeen) input.resume();
        });
      }
    };
    const onInputEnd = (): void => detach();
    const stopReading = (): void => {
      input.removeListener("data", onInput);
      input.removeListener("end", onInputEnd);
      input.pause();
    };
    input.on("data", onInput);
    input.on("end", onInputEnd);
    cleanups.push(stopReading);

    // ── Guest output → stdout ──
    const onOutput = (m: AttachConsoleResponse): void => {
      if (m.msg?.$case !== "output") return;
      if (!output.write(m.msg.value)) {
        call.pause();
        output.once("drain", () => call.resume());
      }
    };
    call.on("data", onOutput);
    call.on("error", (e: ServiceError) => {
      failure = fromGrpcError(e);
      serverEnded();
    });
    call.on("status", (s: { code: status }) => {
      if (s.code === status.OK) serverEnded();
    });
    cleanups.push(() => call.removeListener("data", onOutput));

    // A signal detaches as the escape character does (in raw mode Ctrl-C is the guest's, not ours).
    cleanups.push(terminal.onSignal(() => detach()));
    call.resume();
    input.resume();
  });
}

/** Adds `berth vm console NAME` under the `vm` verb. */
export function registerConsoleCommand(program: Command, ctx: CliContext): void {
  const vm = program.commands.find((c) => c.name() === "vm");
  if (!vm) throw new Error("registerConsoleCommand: register the vm verb first");
  vm.command("console")
    .description("Attach to a VM's serial console (through its host's agent; no access to the host is needed)")
    .argument("<name>", "VM name")
    .option("--force", "take the console over from another session that holds it (that one ends)")
    .option("--escape <char>", `the character that detaches, as ^ and a letter or one of @[\\]^_ (default: ${DEFAULT_ESCAPE}, Ctrl-])`)
    .addHelpText(
      "after",
      `
Detach with Ctrl-] (the escape character; --escape '^X' makes it Ctrl-X), as with virsh console.
On a terminal keys go to the guest as typed (raw mode: Ctrl-C is the guest's); the terminal is
restored however the command ends. With stdin not a terminal (a script piping input), input is
sent as it comes and the session is closed when stdin ends. One session per VM: another one is
refused (exit 6) unless --force takes the console over. Prints "Connected to VM NAME on HOST" and
"Disconnected." on stderr. Exit 0 on a detach; the controller's error ends it otherwise (exit 6
when the VM is not running or its host is not connected, 3 when there is no such VM, 12 for a
viewer). Needs an admin certificate. Exit codes: see berth --help.

Examples:
  berth vm console web-1
  berth vm console web-1 --force --escape '^X'
  printf 'root\\n' | berth vm console web-1`,
    )
    .action(async (name: string, flags: { force?: boolean; escape?: string }, cmd: Command) => {
      const escape = parseEscape(flags.escape ?? DEFAULT_ESCAPE);
      const channels = consoleChannels(ctx.globals(cmd));
      try {
        await runConsole(channels, { name, force: flags.force === true, escape }, processTerminal());
      } finally {
        channels.close();
      }
    });
}
