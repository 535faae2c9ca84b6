/**
 * The fake hypervisor's serial console: a session per running domain that greets with a boot
 * banner and a login prompt, then echoes what is typed as a terminal in cooked mode would. In
 * process only (the agent holding the driver relays it); nothing of it is in the state file.
 */
import type { ConsoleConnection, ConsoleEnd } from "./driver.js";

/** What the banner says of the guest. */
export interface FakeConsoleGuest {
  /** The domain's name (the login prompt's). */
  name: string;
  /** The hostname the guest took from its seed (the name without one). */
  hostname: string;
  /** How many SSH keys its seed gave it. */
  sshKeys: number;
  /** Its first NIC's address once leased; undefined before (or without a NIC). */
  address: string | undefined;
}

/**
 * What a fake console prints when a session opens:
 * `\r\n[berth-fake] <name> booted: hostname <hostname>, <n> ssh keys, address <ip | none yet>\r\n<name> login: `.
 * A test (or an operator of `berth dev`) sees in it what the guest got: its seed, its lease. Pure.
 */
export function fakeConsoleBanner(guest: FakeConsoleGuest): string {
  return (
    `\r\n[berth-fake] ${guest.name} booted: hostname ${guest.hostname}, ${guest.sshKeys} ssh keys, ` +
    `address ${guest.address ?? "none yet"}\r\n${guest.name} login: `
  );
}

/**
 * The echo of keystrokes on a terminal in cooked mode: every byte back as typed, CR (Enter) as CR LF.
 * Pure.
 */
export function fakeConsoleEcho(input: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (const b of input) {
    out.push(b);
    if (b === 0x0d) out.push(0x0a);
  }
  return Uint8Array.from(out);
}

/**
 * One console session of a fake domain (a {@link ConsoleConnection}). Output written before the
 * first `onData` listener is kept for it (the banner is written at open, before the caller could
 * listen); listeners are called asynchronously (a microtask), in order, never from inside `write`.
 * The session ends once: by `close()` (listeners get undefined) or by the driver ({@link end}:
 * the domain stopped, crashed, was deleted or migrated away, another session took over).
 */
export class FakeConsoleSession implements ConsoleConnection {
  private readonly dataListeners: ((data: Uint8Array) => void)[] = [];
  private readonly endListeners: ((end: ConsoleEnd | undefined) => void)[] = [];
  /** Output before anyone listened. */
  private held: Uint8Array[] = [];
  private ending: { end: ConsoleEnd | undefined } | undefined;

  /**
   * `domainName`: whose console it is (for the messages of its end); `released` is told once when
   * the session ends, so the driver frees the console.
   */
  constructor(
    readonly domainName: string,
    private readonly released: (session: FakeConsoleSession) => void,
  ) {}

  /** Whether the session has ended. */
  get ended(): boolean {
    return this.ending !== undefined;
  }

  /** Keystrokes: echoed (CR as CR LF). Ignored once ended. */
  write(data: Uint8Array): void {
    if (this.ending || !(data instanceof Uint8Array) || data.length === 0) return;
    this.output(fakeConsoleEcho(data));
  }

  onData(listener: (data: Uint8Array) => void): void {
    this.dataListeners.push(listener);
    if (this.dataListeners.length === 1 && this.held.length > 0) {
      const held = this.held;
      this.held = [];
      for (const data of held) this.deliver(data);
    }
  }

  onEnd(listener: (end: ConsoleEnd | undefined) => void): void {
    const ending = this.ending;
    if (ending) queueMicrotask(() => call(listener, ending.end));
    else this.endListeners.push(listener);
  }

  /** Ends the session (listeners get undefined). Idempotent. */
  close(): void {
    this.end(undefined);
  }

  /** What the guest prints. Nothing once ended. */
  output(data: Uint8Array | string): void {
    if (this.ending) return;
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    if (this.dataListeners.length === 0) this.held.push(bytes);
    else this.deliver(bytes);
  }

  /** Ends the session with `end` (undefined: closed by its holder); the first end wins. */
  end(end: ConsoleEnd | undefined): void {
    if (this.ending) return;
    this.ending = { end };
    this.held = [];
    const listeners = this.endListeners.splice(0);
    // After any output already queued, as a line's last bytes come before its hang-up.
    queueMicrotask(() => {
      for (const l of listeners) call(l, end);
    });
    this.released(this);
  }

  private deliver(data: Uint8Array): void {
    const listeners = [...this.dataListeners];
    queueMicrotask(() => {
      for (const l of listeners) call(l, data);
    });
  }
}

function call<T>(listener: (value: T) => void, value: T): void {
  try {
    listener(value);
  } catch {
    // A listener's bug must not break the console or the driver.
  }
}
