import { describe, expect, it } from "vitest";
import type { HypervisorDriver, WatchdogStatus } from "@berth/hypervisor";
import { memoryLogger } from "./stub-controller.testkit.js";
import { HostWatchdog, STALL_PET_HOLD_MS } from "./watchdog.js";

/** A driver with only the watchdog, kept in memory; `now` is the test's clock. */
function setup(initial: WatchdogStatus = { deadlineMs: 0, firedAtMs: 0 }) {
  let now = 1_000_000;
  const status = { ...initial };
  const calls: string[] = [];
  const driver = {
    setWatchdog: async (d: number) => {
      calls.push(`set ${d - now}`);
      status.deadlineMs = d;
      status.firedAtMs = 0;
    },
    clearWatchdog: async () => {
      calls.push("clear");
      status.deadlineMs = 0;
    },
    watchdog: async () => ({ ...status }),
  } as unknown as HypervisorDriver;
  const { log, messages } = memoryLogger();
  const w = new HostWatchdog(driver, log, () => now);
  return { w, calls, status, messages, tick: (ms: number) => void (now += ms) };
}

describe("HostWatchdog", () => {
  it("arms on a fence timeout, then pets at most every min(1 s, timeout/4), each time timeout ahead", async () => {
    const { w, calls, tick } = setup();
    w.configure(8_000);
    await w.settled();
    expect(calls).toEqual(["set 8000"]);
    for (let i = 0; i < 10; i++) {
      tick(250);
      w.heard();
      await w.settled();
    }
    // 2.5 s of messages every 250 ms: a pet each second (min(1000, 2000)).
    expect(calls).toEqual(["set 8000", "set 8000", "set 8000"]);
  });

  it("a short timeout pets every quarter of it", async () => {
    const { w, calls, tick } = setup();
    w.configure(400);
    for (let i = 0; i < 8; i++) {
      await w.settled();
      tick(50);
      w.heard();
    }
    await w.settled();
    expect(calls).toHaveLength(1 + 4); // at 0, 100, 200, 300, 400 ms
  });

  it("clears only for a Welcome with 0, and only when it may be armed", async () => {
    const { w, calls } = setup();
    await w.inspect(); // not armed
    w.configure(0);
    await w.settled();
    expect(calls).toEqual([]);
    w.configure(1_000);
    await w.settled();
    w.configure(0);
    await w.settled();
    expect(calls).toEqual(["set 1000", "clear"]);
  });

  it("after a stall, holds pets until a Report has gone out and the socket's backlog is past", async () => {
    const { w, calls, tick } = setup();
    w.configure(4_000);
    await w.settled();
    tick(5_000);
    w.stalled();
    w.heard(); // buffered while frozen: not proof of a live leader
    tick(STALL_PET_HOLD_MS);
    w.heard(); // late enough, but nothing of ours answered yet
    await w.settled();
    expect(calls).toEqual(["set 4000"]);
    w.reportSent();
    w.heard();
    await w.settled();
    expect(calls).toEqual(["set 4000", "set 4000"]);
  });

  it("logs a firing at start and before the next pet after a stall, once per firing", async () => {
    const { w, status, messages, tick } = setup({ deadlineMs: 5, firedAtMs: 7 });
    await w.inspect();
    expect(messages("watchdog fired")).toHaveLength(1);
    w.configure(1_000); // reads again before the first pet: same firing, not logged twice
    await w.settled();
    expect(messages("watchdog fired")).toHaveLength(1);
    status.firedAtMs = 1_000_000 + 2_000; // fired while the agent was frozen
    tick(3_000);
    w.stalled();
    tick(STALL_PET_HOLD_MS);
    w.reportSent();
    w.heard();
    await w.settled();
    expect(messages("watchdog fired")).toHaveLength(2);
  });
});
