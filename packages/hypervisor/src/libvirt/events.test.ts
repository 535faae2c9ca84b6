import { EventEmitter } from "node:events";
import { PassThrough } from "node:stream";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { HypervisorHealth } from "../driver.js";
import { EventFollower, lifecycleKind, parseEventLine, type EventProcess, type VirshEvent } from "./events.js";

describe("event lines", () => {
  it("parses virsh event output, with or without timestamps", () => {
    expect(parseEventLine("event 'lifecycle' for domain 'berth-web': Started Booted")).toEqual({ type: "lifecycle", domain: "berth-web", detail: "Started Booted" });
    expect(parseEventLine("2026-11-30 04:46:45.396+0000: event 'lifecycle' for domain 'berth-a b': Defined Added")).toEqual({
      type: "lifecycle",
      domain: "berth-a b",
      detail: "Defined Added",
    });
    expect(parseEventLine("event 'reboot' for domain 'berth-x'")).toEqual({ type: "reboot", domain: "berth-x", detail: "" });
    expect(parseEventLine("events received: 3")).toBeUndefined();
    expect(parseEventLine("")).toBeUndefined();
  });

  it.each([
    ["Defined Added", "defined"],
    ["Defined Updated", "defined"],
    ["Undefined Removed", "undefined"],
    ["Started Booted", "started"],
    ["Started Migrated", "started"],
    ["Suspended Paused", "paused"],
    ["PMSuspended Memory", "paused"],
    ["Resumed Unpaused", "resumed"],
    ["Stopped Shutdown", "stopped"],
    ["Stopped Destroyed", "stopped"],
    ["Stopped Failed", "crashed"],
    ["Stopped Crashed", "crashed"],
    ["Stopped Migrated", "migrated"],
    ["Crashed Panicked", "crashed"],
    ["Shutdown Finished after guest request", undefined],
    ["Whatever", undefined],
  ])("%s → %s", (detail, kind) => {
    expect(lifecycleKind(detail)).toBe(kind);
  });
});

class FakeProcess extends EventEmitter implements EventProcess {
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  killed = false;
  kill(): boolean {
    if (this.killed) return false;
    this.killed = true;
    setImmediate(() => this.exit(null, "SIGTERM"));
    return true;
  }
  exit(code: number | null, signal: NodeJS.Signals | null = null): void {
    this.stdout.end();
    this.stderr.end();
    this.emit("close", code, signal);
  }
}

describe("EventFollower", () => {
  afterEach(() => vi.useRealTimers());

  it("parses the child's lines, reports the outage once, re-spawns with backoff and reports the return", async () => {
    const processes: FakeProcess[] = [];
    let up = true;
    const events: VirshEvent[] = [];
    const health: HypervisorHealth[] = [];
    const follower = new EventFollower({
      spawn: () => {
        const p = new FakeProcess();
        processes.push(p);
        if (!up) setImmediate(() => { p.stderr.write("error: failed to connect to the hypervisor\n"); setImmediate(() => p.exit(1)); });
        return p;
      },
      probe: async () => up,
      onEvent: (e) => events.push(e),
      onHealth: (h) => health.push(h),
      initialBackoffMs: 5,
      maxBackoffMs: 20,
      settleMs: 5,
    });
    follower.start();
    follower.start(); // idempotent
    expect(processes).toHaveLength(1);
    processes[0]!.stdout.write("event 'lifecycle' for domain 'berth-a': Started Booted\nevents received: 1\n");
    await vi.waitFor(() => expect(events).toHaveLength(1));
    expect(events[0]).toEqual({ type: "lifecycle", domain: "berth-a", detail: "Started Booted" });

    up = false;
    processes[0]!.stderr.write("error: Disconnected from qemu:///system due to end of file\n");
    await new Promise((r) => setTimeout(r, 5));
    processes[0]!.exit(1);
    await vi.waitFor(() => expect(processes.length).toBeGreaterThanOrEqual(3));
    expect(health).toHaveLength(1);
    expect(health[0]!.available).toBe(false);
    expect(health[0]!.message).toContain("Disconnected");

    up = true;
    await vi.waitFor(() => expect(health).toHaveLength(2));
    expect(health[1]).toEqual({ available: true, message: "" });
    const last = processes[processes.length - 1]!;
    await follower.stop();
    expect(last.killed).toBe(true);
    const count = processes.length;
    await new Promise((r) => setTimeout(r, 40));
    expect(processes).toHaveLength(count); // no re-spawn after stop
  });
});
