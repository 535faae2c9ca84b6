/**
 * The agent's console sessions against a driver stub: open → opened or closed with the driver's
 * error, bytes both ways in bounded chunks, close on request, on the driver's end and when the
 * stream ends, and output dropped (then told) while the stream is backed up.
 */
import { describe, expect, it } from "vitest";
import type { AgentMessage, ConsoleControl, ConsoleOutput } from "@berth/api";
import { BerthError, ErrorCode, notFound } from "@berth/core";
import type { ConsoleConnection, ConsoleEnd, ConsoleOptions } from "@berth/hypervisor";
import { pino } from "pino";
import { ConsoleSessions, droppedMarker, type ConsoleSessionLimits } from "./console-sessions.js";

const log = pino({ level: "silent" });

/** A console the stub driver hands out: what was typed, a way to speak as the guest and to end it. */
class StubConsole implements ConsoleConnection {
  typed: string[] = [];
  closed = false;
  private data: ((d: Uint8Array) => void)[] = [];
  private end: ((e: ConsoleEnd | undefined) => void)[] = [];

  write(data: Uint8Array): void {
    if (!this.closed) this.typed.push(Buffer.from(data).toString());
  }
  onData(listener: (data: Uint8Array) => void): void {
    this.data.push(listener);
  }
  onEnd(listener: (end: ConsoleEnd | undefined) => void): void {
    this.end.push(listener);
  }
  close(): void {
    this.finish(undefined);
  }
  /** The guest writes. */
  say(text: string | Uint8Array): void {
    for (const l of this.data) l(typeof text === "string" ? Buffer.from(text) : text);
  }
  finish(end: ConsoleEnd | undefined): void {
    if (this.closed) return;
    this.closed = true;
    for (const l of this.end) l(end);
  }
}

/** A driver that knows one VM ("vm-1"), attaching after `delayMs`; other ids are NOT_FOUND. */
function stubDriver(delayMs = 0) {
  const consoles: StubConsole[] = [];
  const opens: { vmId: string; options: ConsoleOptions | undefined }[] = [];
  let failWith: unknown;
  return {
    consoles,
    opens,
    failNext: (e: unknown) => (failWith = e),
    driver: {
      openConsole: async (vmId: string, options?: ConsoleOptions): Promise<ConsoleConnection> => {
        opens.push({ vmId, options });
        await new Promise((r) => setTimeout(r, delayMs));
        if (failWith !== undefined) {
          const e = failWith;
          failWith = undefined;
          throw e;
        }
        if (vmId !== "vm-1") throw notFound(`domain ${vmId}`);
        const c = new StubConsole();
        consoles.push(c);
        return c;
      },
    },
  };
}

/** A sink that records what the sessions wrote, with a settable backlog. */
function stubSink() {
  const written: AgentMessage[] = [];
  return {
    written,
    queued: 0,
    write(m: AgentMessage) {
      written.push(m);
    },
    events: (): ConsoleOutput[] => written.flatMap((m) => (m.msg?.$case === "console" ? [m.msg.value] : [])),
  };
}

const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));
const open = (sessionId: string, vmId = "vm-1", force = false): ConsoleControl => ({ sessionId, vmId, action: { $case: "open", value: { force } } });
const input = (sessionId: string, text: string): ConsoleControl => ({ sessionId, vmId: "vm-1", action: { $case: "input", value: Buffer.from(text) } });
const close = (sessionId: string): ConsoleControl => ({ sessionId, vmId: "vm-1", action: { $case: "close", value: {} } });
const outputText = (events: ConsoleOutput[], sessionId: string): string[] =>
  events.flatMap((e) => (e.sessionId === sessionId && e.event?.$case === "output" ? [Buffer.from(e.event.value).toString()] : []));

function setup(limits: Partial<ConsoleSessionLimits> = {}, delayMs = 0) {
  const d = stubDriver(delayMs);
  const sink = stubSink();
  const sessions = new ConsoleSessions(d.driver, sink, log, limits);
  return { ...d, sink, sessions };
}

describe("ConsoleSessions", () => {
  it("opens the driver's console (force passed on), says opened, relays input to the guest and output back", async () => {
    const { sessions, sink, consoles, opens } = setup();
    sessions.handle(open("s1", "vm-1", true));
    await tick();
    expect(opens).toEqual([{ vmId: "vm-1", options: { force: true } }]);
    expect(sink.events()).toEqual([{ sessionId: "s1", event: { $case: "opened", value: {} } }]);
    sessions.handle(input("s1", "root\r"));
    expect(consoles[0]!.typed).toEqual(["root\r"]);
    consoles[0]!.say("Password: ");
    expect(outputText(sink.events(), "s1")).toEqual(["Password: "]);
  });

  it("holds input that arrives while the console is being opened, and types it once open", async () => {
    const { sessions, sink, consoles } = setup({}, 20);
    sessions.handle(open("s1"));
    sessions.handle(input("s1", "a"));
    sessions.handle(input("s1", "b"));
    await tick(40);
    expect(sink.events()[0]?.event?.$case).toBe("opened");
    expect(consoles[0]!.typed).toEqual(["a", "b"]);
  });

  it("answers a VM the driver does not know with closed NOT_FOUND, and input for a session it does not hold likewise", async () => {
    const { sessions, sink } = setup();
    sessions.handle(open("s1", "no-such-vm"));
    await tick();
    expect(sink.events()).toEqual([{ sessionId: "s1", event: { $case: "closed", value: { errorCode: "NOT_FOUND", message: "domain no-such-vm not found" } } }]);
    expect(sessions.size).toBe(0);
    sessions.handle(input("s9", "x"));
    expect(sink.events().at(-1)).toMatchObject({ sessionId: "s9", event: { $case: "closed", value: { errorCode: "NOT_FOUND" } } });
  });

  it("passes the driver's BerthError on (FAILED_PRECONDITION) and hides any other error behind INTERNAL", async () => {
    const { sessions, sink, failNext } = setup();
    failNext(new BerthError(ErrorCode.FailedPrecondition, "domain vm-1 is not running"));
    sessions.handle(open("s1"));
    await tick();
    expect(sink.events().at(-1)).toEqual({ sessionId: "s1", event: { $case: "closed", value: { errorCode: "FAILED_PRECONDITION", message: "domain vm-1 is not running" } } });
    failNext(new Error("socket /var/run/libvirt/secret-path gone"));
    sessions.handle(open("s2"));
    await tick();
    expect(sink.events().at(-1)).toEqual({ sessionId: "s2", event: { $case: "closed", value: { errorCode: "INTERNAL", message: "the host could not open the console (see its agent's log)" } } });
  });

  it("closes on request without answering; the driver ending a session (a forced takeover) is closed with its reason", async () => {
    const { sessions, sink, consoles } = setup();
    sessions.handle(open("s1"));
    sessions.handle(open("s2"));
    await tick();
    sessions.handle(close("s1"));
    expect(consoles[0]!.closed).toBe(true);
    expect(sink.events().filter((e) => e.event?.$case === "closed")).toEqual([]);
    sessions.handle(input("s1", "late"));
    expect(consoles[0]!.typed).toEqual([]);

    consoles[1]!.finish({ code: "FAILED_PRECONDITION", message: "another session took the console" });
    expect(sink.events().at(-1)).toEqual({ sessionId: "s2", event: { $case: "closed", value: { errorCode: "FAILED_PRECONDITION", message: "another session took the console" } } });
    expect(sessions.size).toBe(0);
  });

  it("a close that arrives while the driver attaches lets go of the console at once", async () => {
    const { sessions, sink, consoles } = setup({}, 20);
    sessions.handle(open("s1"));
    sessions.handle(close("s1"));
    await tick(40);
    expect(consoles[0]!.closed).toBe(true);
    expect(sink.events()).toEqual([]);
  });

  it("closes every session without a word when the stream ends, including one still opening; later controls change nothing", async () => {
    const { sessions, sink, consoles } = setup({}, 20);
    sessions.handle(open("s1"));
    await tick(40);
    sessions.handle(open("s2"));
    sessions.closeAll();
    await tick(40);
    expect(consoles.map((c) => c.closed)).toEqual([true, true]);
    expect(sink.events().map((e) => e.event?.$case)).toEqual(["opened"]);
    sessions.handle(open("s3"));
    await tick(40);
    expect(consoles).toHaveLength(2);
  });

  it("splits output into chunks of at most 16 KiB", async () => {
    const { sessions, sink, consoles } = setup();
    sessions.handle(open("s1"));
    await tick();
    consoles[0]!.say(Buffer.alloc(40 * 1024, 0x62));
    const sizes = sink.events().flatMap((e) => (e.event?.$case === "output" ? [e.event.value.length] : []));
    expect(sizes).toEqual([16384, 16384, 8192]);
  });

  it("drops output while the stream is backed up, and writes one marker with the count once it drains", async () => {
    const { sessions, sink, consoles } = setup({ maxQueuedMessages: 2, drainCheckMs: 10 });
    sessions.handle(open("s1"));
    await tick();
    consoles[0]!.say("kept");
    sink.queued = 2;
    consoles[0]!.say("lost!");
    consoles[0]!.say("gone");
    expect(outputText(sink.events(), "s1")).toEqual(["kept"]);
    sink.queued = 0;
    // Told without waiting for the guest to say more.
    await tick(40);
    expect(outputText(sink.events(), "s1")).toEqual(["kept", droppedMarker(9).toString()]);
    consoles[0]!.say("next");
    expect(outputText(sink.events(), "s1").at(-1)).toBe("next");
  });

  it("refuses a session past the limit with closed RESOURCE_EXHAUSTED, and input past the bound while opening", async () => {
    const { sessions, sink, consoles } = setup({ maxSessions: 1, maxPendingInputBytes: 4 }, 20);
    sessions.handle(open("s1"));
    sessions.handle(open("s2"));
    expect(sink.events().at(-1)).toMatchObject({ sessionId: "s2", event: { $case: "closed", value: { errorCode: "RESOURCE_EXHAUSTED" } } });
    sessions.handle(input("s1", "12345"));
    expect(sink.events().at(-1)).toMatchObject({ sessionId: "s1", event: { $case: "closed", value: { errorCode: "RESOURCE_EXHAUSTED" } } });
    await tick(40);
    expect(consoles[0]!.closed).toBe(true);
    expect(sessions.size).toBe(0);
  });
});
