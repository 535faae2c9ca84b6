/**
 * `berth vm console` against an in-process ClusterService that answers AttachConsole only: attach,
 * the escape character, stdin ending, signals, the controller's error, a follower's redirect, and
 * the terminal's raw mode restored however the session ends.
 */
import { PassThrough } from "node:stream";
import { Server, ServerCredentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { ClusterServiceService, type AttachConsoleRequest, type AttachConsoleResponse } from "@berth/api";
import { BerthError, ErrorCode, toGrpcStatus } from "@berth/core";
import { run } from "../program.js";
import { exitCodeOf, ExitCode } from "../exit-codes.js";
import { recordingIo } from "../stub-server.testkit.js";
import { attachConsole, consoleChannels, parseEscape, runConsole, type ConsoleChannels, type ConsoleTerminal } from "./console.js";

type Call = ServerDuplexStream<AttachConsoleRequest, AttachConsoleResponse>;

/** A controller that answers AttachConsole with `script` (and nothing else). */
async function consoleServer(script: (call: Call, server: { requests: AttachConsoleRequest[] }) => void) {
  const server = new Server();
  const state = { requests: [] as AttachConsoleRequest[], halfClosed: false, calls: 0 };
  server.addService(ClusterServiceService, {
    attachConsole: (call: Call) => {
      state.calls++;
      call.on("data", (r: AttachConsoleRequest) => state.requests.push(r));
      call.on("end", () => (state.halfClosed = true));
      call.on("error", () => undefined);
      script(call, state);
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  servers.push(server);
  return { address: `127.0.0.1:${port}`, state };
}

const servers: Server[] = [];
const opened: ConsoleChannels[] = [];
afterEach(() => {
  for (const c of opened.splice(0)) c.close();
  for (const s of servers.splice(0)) s.forceShutdown();
});

const channelsTo = (...endpoints: string[]): ConsoleChannels => {
  const c = consoleChannels({ endpoints, timeoutMs: 5_000, output: "table", transport: { insecure: true } } as Parameters<typeof consoleChannels>[0]);
  opened.push(c);
  return c;
};

/** A terminal of pipes: `raw` records setRawMode calls when it is a TTY; `signal()` plays SIGTERM. */
function fakeTerminal(tty: boolean) {
  const input = new PassThrough() as PassThrough & { isTTY?: boolean; setRawMode?(raw: boolean): unknown };
  const raw: boolean[] = [];
  if (tty) {
    input.isTTY = true;
    input.setRawMode = (mode: boolean) => raw.push(mode);
  }
  const output = new PassThrough();
  let out = "";
  output.on("data", (d: Buffer) => (out += d.toString()));
  let err = "";
  const handlers = new Set<(s: NodeJS.Signals) => void>();
  const terminal: ConsoleTerminal = {
    input,
    output,
    stderr: (t) => void (err += t),
    onSignal: (h) => {
      handlers.add(h);
      return () => void handlers.delete(h);
    },
  };
  return { terminal, input, raw, out: () => out, err: () => err, signal: () => handlers.forEach((h) => h("SIGTERM")), handlers };
}

const waitFor = async <T>(what: string, check: () => T | undefined | false, ms = 5_000): Promise<T> => {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

/** A server side that attaches, prints a login banner and echoes input, ending OK once the client half-closes. */
const echoing = (call: Call): void => {
  let attached = false;
  call.on("data", (r: AttachConsoleRequest) => {
    if (r.msg?.$case === "open" && !attached) {
      attached = true;
      call.write({ msg: { $case: "attached", value: { vmId: "id-1", hostId: "host-1" } } });
      call.write({ msg: { $case: "output", value: Buffer.from(`${r.msg.value.vm} login: `) } });
    } else if (r.msg?.$case === "input") call.write({ msg: { $case: "output", value: r.msg.value } });
  });
  call.on("end", () => call.end());
};

const inputs = (requests: AttachConsoleRequest[]): string =>
  requests.map((r) => (r.msg?.$case === "input" ? Buffer.from(r.msg.value).toString() : "")).join("");

const escape = parseEscape("^]");

describe("berth vm console", () => {
  it("attaches, shows the guest, sends what is typed, and detaches on Ctrl-] (raw mode on, then restored)", async () => {
    const { address, state } = await consoleServer(echoing);
    const t = fakeTerminal(true);
    const done = runConsole(channelsTo(address), { name: "web-1", force: false, escape }, t.terminal);
    await waitFor("the banner", () => t.out() === "web-1 login: ");
    expect(t.err()).toBe("Connected to VM web-1 on host-1 (escape character is ^])\n");
    expect(t.raw).toEqual([true]);
    expect(state.requests[0]?.msg).toEqual({ $case: "open", value: { vm: "web-1", force: false } });
    t.input.write("hello\r");
    await waitFor("the echo", () => t.out().endsWith("hello\r"));
    // What comes before the escape character in the same read is sent; what follows is not.
    t.input.write(Buffer.from("ls\x1dafter"));
    await done;
    expect(inputs(state.requests)).toBe("hello\rls");
    expect(state.halfClosed).toBe(true);
    expect(t.raw).toEqual([true, false]);
    expect(t.err()).toMatch(/\r\nDisconnected\.\n$/);
    expect(t.handlers.size).toBe(0);
  });

  it("with another escape character, Ctrl-] is typed to the guest; --force is sent", async () => {
    const { address, state } = await consoleServer(echoing);
    const t = fakeTerminal(false);
    const done = runConsole(channelsTo(address), { name: "web-1", force: true, escape: parseEscape("^x") }, t.terminal);
    await waitFor("the banner", () => t.out().includes("login: "));
    expect(t.err()).toContain("(escape character is ^X)");
    t.input.write(Buffer.from("a\x1db\x18"));
    await done;
    expect(inputs(state.requests)).toBe("a\x1db");
    expect(state.requests[0]?.msg).toEqual({ $case: "open", value: { vm: "web-1", force: true } });
    expect(t.raw).toEqual([]);
  });

  it("without a terminal, closes the session when stdin ends, having sent all of it", async () => {
    const { address, state } = await consoleServer(echoing);
    const t = fakeTerminal(false);
    const done = runConsole(channelsTo(address), { name: "web-1", force: false, escape }, t.terminal);
    t.input.end("root\n");
    await done;
    expect(inputs(state.requests)).toBe("root\n");
    expect(state.halfClosed).toBe(true);
  });

  it("a signal detaches as the escape character does", async () => {
    const { address, state } = await consoleServer(echoing);
    const t = fakeTerminal(true);
    const done = runConsole(channelsTo(address), { name: "web-1", force: false, escape }, t.terminal);
    await waitFor("the banner", () => t.out().includes("login: "));
    t.signal();
    await done;
    expect(state.halfClosed).toBe(true);
    expect(t.raw).toEqual([true, false]);
  });

  it("a detach lets go of a controller that does not end the stream after a grace of 2 s", async () => {
    const { address, state } = await consoleServer((call) => {
      call.once("data", () => call.write({ msg: { $case: "attached", value: { vmId: "id-1", hostId: "host-1" } } }));
    });
    const t = fakeTerminal(true);
    const done = runConsole(channelsTo(address), { name: "web-1", force: false, escape }, t.terminal);
    await waitFor("connected", () => t.err().includes("Connected"));
    const started = Date.now();
    t.input.write(Buffer.from([0x1d]));
    await done;
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_900);
    expect(state.halfClosed).toBe(true);
    expect(t.raw).toEqual([true, false]);
  });

  it("ends with the controller's error once attached (exit 6), the terminal restored and Disconnected. said", async () => {
    const { address } = await consoleServer((call) => {
      call.once("data", () => {
        call.write({ msg: { $case: "attached", value: { vmId: "id-1", hostId: "host-1" } } });
        call.write({ msg: { $case: "output", value: Buffer.from("last words") } });
        setTimeout(() => {
          const s = toGrpcStatus(new BerthError(ErrorCode.FailedPrecondition, "console of vm 'web-1' on host 'host-1': another session took the console"));
          call.emit("error", Object.assign(new Error(s.details), s));
        }, 50);
      });
    });
    const t = fakeTerminal(true);
    const e = await runConsole(channelsTo(address), { name: "web-1", force: false, escape }, t.terminal).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BerthError);
    expect((e as BerthError).code).toBe(ErrorCode.FailedPrecondition);
    expect((e as BerthError).message).toBe("console of vm 'web-1' on host 'host-1': another session took the console");
    expect(exitCodeOf(e)).toBe(ExitCode.Conflict);
    expect(t.out()).toBe("last words");
    expect(t.raw).toEqual([true, false]);
    expect(t.err()).toContain("Disconnected.");
  });

  it("a refusal before attaching (NOT_FOUND) is thrown as is: nothing said, the terminal never raw", async () => {
    const { address } = await consoleServer((call) => {
      call.once("data", () => {
        const s = toGrpcStatus(new BerthError(ErrorCode.NotFound, "vm 'nope' not found"));
        call.emit("error", Object.assign(new Error(s.details), s));
      });
    });
    const t = fakeTerminal(true);
    const e = await runConsole(channelsTo(address), { name: "nope", force: false, escape }, t.terminal).catch((x: unknown) => x);
    expect((e as BerthError).code).toBe(ErrorCode.NotFound);
    expect((e as BerthError).message).toBe("vm 'nope' not found");
    expect(exitCodeOf(e)).toBe(ExitCode.NotFound);
    expect(t.err()).toBe("");
    expect(t.raw).toEqual([]);
  });

  it("follows a follower's NOT_LEADER to the leader it names, and passes over an address nobody listens on", async () => {
    const leader = await consoleServer(echoing);
    const follower = await consoleServer((call) => {
      call.once("data", () => {
        const s = toGrpcStatus(new BerthError(ErrorCode.NotLeader, `not the leader; the leader is ${leader.address}`, { leader: leader.address }));
        call.emit("error", Object.assign(new Error(s.details), s));
      });
    });
    const attached = await attachConsole(channelsTo("127.0.0.1:1", follower.address), { name: "web-1", force: false, escape });
    expect(attached.hostId).toBe("host-1");
    expect(follower.state.calls).toBe(1);
    expect(leader.state.calls).toBe(1);
    attached.call.cancel();

    const nowhere = await attachConsole(channelsTo("127.0.0.1:1"), { name: "web-1", force: false, escape }).catch((x: unknown) => x);
    expect((nowhere as BerthError).code).toBe(ErrorCode.Unavailable);
    expect((nowhere as BerthError).message).toMatch(/^controller 127\.0\.0\.1:1: cannot connect/);
  });

  it("reads --escape as ^ and a control letter, refusing anything else (exit 2, naming the flag)", async () => {
    expect(parseEscape("^]")).toEqual({ name: "^]", byte: 0x1d });
    expect(parseEscape("^x")).toEqual({ name: "^X", byte: 0x18 });
    expect(parseEscape("^@")).toEqual({ name: "^@", byte: 0 });
    const io = recordingIo();
    expect(await run(["--insecure", "vm", "console", "web-1", "--escape", "x"], io)).toBe(ExitCode.Usage);
    expect(io.err).toContain("--escape: expected ^ and a letter");
  });

  it("--help says how to detach", async () => {
    const io = recordingIo();
    expect(await run(["vm", "console", "--help"], io)).toBe(0);
    expect(io.out).toContain("Detach with Ctrl-]");
    expect(io.out).toContain("--force");
    expect(io.out).toContain("--escape <char>");
  });

  it("does not time out an idle attached session: the deadline is for attaching only", async () => {
    const { address } = await consoleServer(echoing);
    const t = fakeTerminal(false);
    const channels = consoleChannels({ endpoints: [address], timeoutMs: 100, output: "table", transport: { insecure: true } } as Parameters<typeof consoleChannels>[0]);
    opened.push(channels);
    const done = runConsole(channels, { name: "web-1", force: false, escape }, t.terminal);
    await new Promise((r) => setTimeout(r, 300));
    t.input.write("still here");
    await waitFor("the echo", () => t.out().endsWith("still here"));
    t.input.end();
    await done;
  });
});
