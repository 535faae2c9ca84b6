import { describe, expect, it } from "vitest";
import { RejectReason } from "@berth/api";
import { ELECTION_FAST_RETRY_WINDOW_MS, ReconnectPlanner, SILENT_CONTROLLER_SUSPICION_MS } from "./reconnect.js";

const options = { minBackoffMs: 250, maxBackoffMs: 5_000, electionRetryMs: 500, duplicateHostBackoffMs: 15_000 };

function planner(list = ["A", "B", "C"], random = () => 1) {
  let now = 1_000_000;
  const p = new ReconnectPlanner(list, options, random, () => now);
  return { p, advance: (ms: number) => void (now += ms) };
}
const unreachable = { kind: "unreachable", why: "refused" } as const;
const notLeader = (leader: string) => ({ kind: "not-leader", leader }) as const;
const ended = (welcomed: boolean, lastedMs = 60_000, silent = false) => ({ kind: "ended", why: "x", welcomed, lastedMs, silent }) as const;

describe("ReconnectPlanner", () => {
  it("follows NotLeader at once and moves its place to the leader: a failure there goes on to the next one", () => {
    const { p } = planner();
    expect(p.next(notLeader("C"))).toMatchObject({ target: "C", waitMs: 0 });
    // C fails: the controller after C (A), not the one after the redirecting A (B).
    expect(p.next(unreachable)).toMatchObject({ target: "A", waitMs: 0 });
  });

  it("a leader outside the list is followed; a failure there goes on after the one that named it", () => {
    const { p } = planner();
    p.next(unreachable); // A → B
    expect(p.next(notLeader("X"))).toMatchObject({ target: "X", waitMs: 0 });
    expect(p.next(unreachable).target).toBe("C");
  });

  it("waits before a redirect that follows a redirect (controllers naming each other)", () => {
    const { p } = planner(["A", "B"]);
    expect(p.next(notLeader("B")).waitMs).toBe(0);
    const second = p.next(notLeader("A"));
    expect(second.target).toBe("A");
    expect(second.waitMs).toBeGreaterThan(0);
  });

  it("tries every unreachable controller once at once, then backs off", () => {
    const { p } = planner();
    expect(p.next(unreachable)).toMatchObject({ target: "B", waitMs: 0 });
    expect(p.next(unreachable)).toMatchObject({ target: "C", waitMs: 0 });
    const round = p.next(unreachable);
    expect(round.target).toBe("A");
    expect(round.waitMs).toBeGreaterThan(0);
    // A new round after the wait.
    expect(p.next(unreachable).waitMs).toBe(0);
  });

  it("while controllers answer NotLeader, waits are capped at electionRetryMs; after 30 s of it, the normal backoff", () => {
    const { p, advance } = planner(["A"]);
    const waits: number[] = [];
    for (let i = 0; i < 10; i++) {
      waits.push(p.next(notLeader("")).waitMs);
      waits.push(p.next(unreachable).waitMs);
    }
    expect(Math.max(...waits)).toBeLessThanOrEqual(500);
    advance(ELECTION_FAST_RETRY_WINDOW_MS);
    expect(p.next(notLeader("")).waitMs).toBe(5_000);
  });

  it("after a stream to the leader ends, goes to the next controller after the shortest backoff", () => {
    const { p } = planner(["A", "B"], () => 0.5);
    for (let i = 0; i < 5; i++) p.next(ended(false)); // failures grow; now at B
    const plan = p.next(ended(true, 60_000));
    expect(plan.target).toBe("A"); // the next one after B
    expect(plan.waitMs).toBeGreaterThanOrEqual(125);
    expect(plan.waitMs).toBeLessThanOrEqual(250);
  });

  it("a short-lived welcomed session does not reset the backoff (a flapping leader is not hammered)", () => {
    const { p } = planner(["A"]);
    const waits = Array.from({ length: 6 }, () => p.next(ended(true, 10)).waitMs);
    expect(waits).toEqual([250, 500, 1_000, 2_000, 4_000, 5_000]);
  });

  it("passes over a controller left for silence, and does not follow a NotLeader naming it, for 30 s", () => {
    const { p, advance } = planner();
    expect(p.next(ended(true, 60_000, true)).target).toBe("B"); // left A silent
    const named = p.next(notLeader("A"));
    expect(named.target).toBe("C");
    expect(named.note).toContain("not following");
    expect(p.next(unreachable).target).toBe("B"); // skips A
    advance(SILENT_CONTROLLER_SUSPICION_MS);
    expect(p.next(notLeader("A"))).toMatchObject({ target: "A" });
  });

  it("DUPLICATE_HOST: stays on the leader and waits half to all of duplicateHostBackoffMs", () => {
    for (const r of [0, 1]) {
      const { p } = planner(["A", "B"], () => r);
      const plan = p.next({ kind: "rejected", reason: RejectReason.REJECT_REASON_DUPLICATE_HOST, message: "" });
      expect(plan.target).toBe("A");
      expect(plan.waitMs).toBe(r === 0 ? 7_500 : 15_000);
    }
  });

  it("FOREIGN_CLUSTER: exponential backoff capped at maxBackoffMs, never the election's short cap", () => {
    const { p } = planner(["A"]);
    p.next(notLeader("")); // an election seen: must not shorten a refusal's backoff
    const waits = Array.from({ length: 8 }, () => p.next({ kind: "rejected", reason: RejectReason.REJECT_REASON_FOREIGN_CLUSTER, message: "" }).waitMs);
    expect(waits.slice(-3)).toEqual([5_000, 5_000, 5_000]);
    expect(waits[0]).toBeGreaterThan(0);
  });

  it("a follower naming a dead leader does not make it spin: one immediate redirect per wait", () => {
    const { p } = planner(["L", "F"]);
    p.next(unreachable); // L dead → F
    const plans = [];
    for (let i = 0; i < 6; i++) {
      plans.push(p.next(notLeader("L"))); // F names L
      plans.push(p.next(unreachable)); // L refuses → F at once
    }
    expect(plans.map((x) => x.target)).toEqual(["L", "F", "L", "F", "L", "F", "L", "F", "L", "F", "L", "F"]);
    const follows = plans.filter((_, i) => i % 2 === 0).map((x) => x.waitMs);
    expect(follows[0]).toBe(0);
    expect(follows.slice(1).every((w) => w > 0 && w <= 500)).toBe(true);
  });
});
