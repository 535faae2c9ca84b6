import { describe, expect, it } from "vitest";
import { Host, HostState } from "@berth/api";
import { lifecycleChanged, nextHostState, type HostTimers } from "./host-lifecycle.js";

const timers: HostTimers = { suspectAfterMs: 2_500, downAfterMs: 5_000, fenceTimeoutMs: 8_000, fenceMarginMs: 2_000 };
const host = (over: Partial<Host> = {}): Host => Host.fromPartial({ id: "h1", state: HostState.HOST_STATE_READY, stateSinceMs: 100, ...over });

describe("nextHostState", () => {
  it("walks a silent host READY → SUSPECT → DOWN → FENCED at the documented times", () => {
    const heard = 10_000;
    const at = (now: number, connected = false) => nextHostState(host(), { connected, lastHeardMs: heard }, now, timers).state;
    expect(at(heard + 1_000, true)).toBe(HostState.HOST_STATE_READY);
    // Missed heartbeats on a stream that is still open count as well as a closed stream.
    expect(at(heard + 2_500, true)).toBe(HostState.HOST_STATE_SUSPECT);
    expect(at(heard + 1)).toBe(HostState.HOST_STATE_SUSPECT);
    expect(at(heard + 4_999)).toBe(HostState.HOST_STATE_SUSPECT);
    expect(at(heard + 5_000)).toBe(HostState.HOST_STATE_DOWN);
    expect(at(heard + 9_999)).toBe(HostState.HOST_STATE_DOWN);
    expect(at(heard + 10_000)).toBe(HostState.HOST_STATE_FENCED);
  });
  it("gives the fence deadline while silent and none while heard", () => {
    expect(nextHostState(host(), { connected: false, lastHeardMs: 1_000 }, 2_000, timers).fenceDeadlineMs).toBe(11_000);
    expect(nextHostState(host(), { connected: true, lastHeardMs: 1_000 }, 2_000, timers).fenceDeadlineMs).toBe(0);
  });
  it("fences a host an operator confirmed down at once, but never a connected one", () => {
    expect(nextHostState(host({ confirmedDown: true }), { connected: false, lastHeardMs: 1_000 }, 1_001, timers).state).toBe(HostState.HOST_STATE_FENCED);
    expect(nextHostState(host({ confirmedDown: true }), { connected: true, lastHeardMs: 1_000 }, 1_001, timers).state).toBe(HostState.HOST_STATE_READY);
  });
  it("moves stateSinceMs only on a change of state (DISCONNECTED from older versions reads as SUSPECT)", () => {
    const suspect = host({ state: HostState.HOST_STATE_SUSPECT, stateSinceMs: 500 });
    const next = nextHostState(suspect, { connected: false, lastHeardMs: 400 }, 900, timers);
    expect(next).toEqual({ state: HostState.HOST_STATE_SUSPECT, stateSinceMs: 500, fenceDeadlineMs: 10_400 });
    expect(lifecycleChanged({ ...suspect, fenceDeadlineMs: 10_400 }, next)).toBe(false);
    const old = host({ state: HostState.HOST_STATE_DISCONNECTED, stateSinceMs: 500 });
    expect(nextHostState(old, { connected: false, lastHeardMs: 400 }, 900, timers).stateSinceMs).toBe(500);
    expect(nextHostState(suspect, { connected: true, lastHeardMs: 900 }, 900, timers)).toMatchObject({ state: HostState.HOST_STATE_READY, stateSinceMs: 900 });
  });
});
