// Test helpers (not built into dist): an in-process ClusterService with canned answers, and an Io
// that records what the CLI prints.
import { afterEach } from "vitest";
import { ClusterServiceService, type WatchEventsRequest, type WatchEventsResponse } from "@berth/api";
import { BerthError, ErrorCode, toGrpcStatus } from "@berth/core";
import {
  Server,
  ServerCredentials,
  status,
  type handleUnaryCall,
  type ServerWritableStream,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { createServer } from "node:net";
import type { Io } from "./context.js";

type Service = typeof ClusterServiceService;
type RequestOf<K extends keyof Service> = ReturnType<Service[K]["requestDeserialize"]>;
type ResponseOf<K extends keyof Service> = ReturnType<Service[K]["responseDeserialize"]>;
type UnaryMethod = Exclude<keyof Service, "watchEvents">;

/** Canned behaviour per method: return the response, or throw a BerthError to fail the call. */
export type StubHandlers = {
  [K in UnaryMethod]?: (request: RequestOf<K>) => ResponseOf<K> | Promise<ResponseOf<K>>;
} & {
  watchEvents?: (request: WatchEventsRequest, call: ServerWritableStream<WatchEventsRequest, WatchEventsResponse>) => void;
};

const RAW_STATUS = Symbol("raw gRPC status");

/**
 * Thrown by a handler: the stub answers with this bare gRPC status, without Berth's
 * `berth-error-code` trailer, the way a transport failure, a proxy or a reset stream reaches the
 * CLI (`Call cancelled`, `Connection dropped`...).
 */
export function rawStatus(code: status, details: string): Error {
  return Object.assign(new Error(details), { [RAW_STATUS]: { code, details } });
}

/** One request the stub received. */
export interface RecordedCall {
  method: keyof Service;
  request: unknown;
}

/** A ClusterService on 127.0.0.1:<ephemeral port> answering from `handlers`; records every call. */
export class StubCluster {
  readonly calls: RecordedCall[] = [];
  handlers: StubHandlers;
  address = "";
  readonly #server = new Server();

  private constructor(handlers: StubHandlers) {
    this.handlers = handlers;
  }

  static async start(handlers: StubHandlers = {}): Promise<StubCluster> {
    const stub = new StubCluster(handlers);
    const impl: UntypedServiceImplementation = {};
    for (const method of Object.keys(ClusterServiceService) as (keyof Service)[]) {
      if (method === "watchEvents") {
        impl[method] = (call: ServerWritableStream<WatchEventsRequest, WatchEventsResponse>) => {
          stub.calls.push({ method, request: call.request });
          const h = stub.handlers.watchEvents;
          if (h) h(call.request, call);
          else call.emit("error", { code: status.UNIMPLEMENTED, details: "WatchEvents is not implemented by this stub" });
        };
        continue;
      }
      const handle: handleUnaryCall<unknown, unknown> = (call, callback) => {
        stub.calls.push({ method, request: call.request });
        const h = stub.handlers[method] as ((r: unknown) => unknown) | undefined;
        if (!h) {
          callback({ code: status.UNIMPLEMENTED, details: `${method} is not implemented by this stub` });
          return;
        }
        Promise.resolve()
          .then(() => h(call.request))
          .then(
            (res) => callback(null, res),
            (e: unknown) => {
              const raw = (e as { [RAW_STATUS]?: { code: status; details: string } } | undefined)?.[RAW_STATUS];
              callback(raw ?? toGrpcStatus(e));
            },
          );
      };
      impl[method] = handle;
    }
    stub.#server.addService(ClusterServiceService, impl);
    const port = await new Promise<number>((resolve, reject) =>
      stub.#server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    stub.address = `127.0.0.1:${port}`;
    return stub;
  }

  /** The requests of one method, in order. */
  requests<K extends keyof Service>(method: K): RequestOf<K>[] {
    return this.calls.filter((c) => c.method === method).map((c) => c.request as RequestOf<K>);
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.#server.tryShutdown(() => resolve()));
  }

  /** Drops every connection at once, calls in flight included: a controller process dying. */
  kill(): void {
    this.#server.forceShutdown();
  }
}

/** What a follower answers: UNAVAILABLE naming the leader. */
export function notLeader(leader: string): BerthError {
  return new BerthError(ErrorCode.NotLeader, `this controller is not the leader; the leader is ${leader}`, { leader });
}

/** An Io that keeps what is written; `now` is fixed. */
export interface RecordingIo extends Io {
  out: string;
  err: string;
  /** What `ask` was asked, in order. */
  questions: string[];
}

/** A terminal for {@link recordingIo}: `interactive` and the answers typed, in order. */
export interface TerminalScript {
  interactive?: boolean;
  /** Standard error is a terminal: progress lines are redrawn in place. */
  stderrIsTerminal?: boolean;
  answers?: string[];
  /** What standard input holds (`--user-data -`); absent: empty. */
  stdin?: string | Uint8Array;
}

export function recordingIo(
  env: Record<string, string | undefined> = {},
  nowMs = 1_700_000_000_000,
  terminal: TerminalScript = {},
): RecordingIo {
  const answers = [...(terminal.answers ?? [])];
  const io: RecordingIo = {
    out: "",
    err: "",
    questions: [],
    stdout: (text) => void (io.out += text),
    stderr: (text) => void (io.err += text),
    env,
    cwd: "/tmp/berth-cli-test",
    now: () => nowMs,
    // Polls follow each other at once: a --wait through five states takes milliseconds, not seconds.
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.min(ms, 5))),
    colorize: false,
    stderrIsTerminal: terminal.stderrIsTerminal ?? false,
    interactive: terminal.interactive ?? false,
    ask: (question) => {
      io.questions.push(question);
      return Promise.resolve(answers.shift() ?? "");
    },
    readStdin: (maxBytes) => {
      const all = typeof terminal.stdin === "string" ? Buffer.from(terminal.stdin) : Buffer.from(terminal.stdin ?? new Uint8Array());
      return Promise.resolve(all.subarray(0, maxBytes + 1));
    },
  };
  return io;
}

/** A local port nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      const port = typeof address === "object" && address ? address.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/**
 * A starter of stub controllers for one test file: every stub it starts is stopped after each test.
 * Call it once at the top of the file.
 */
export function stubPerTest(): (handlers?: Parameters<typeof StubCluster.start>[0]) => Promise<StubCluster> {
  const started: StubCluster[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((s) => s.stop()));
  });
  return async (handlers = {}) => {
    const s = await StubCluster.start(handlers);
    started.push(s);
    return s;
  };
}
