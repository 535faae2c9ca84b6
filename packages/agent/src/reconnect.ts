import { RejectReason } from "@berth/api";
import { backoffDelayMs } from "@berth/core";

/** How a session with one controller ended. */
export type SessionEnd =
  /** The connection could not be made: refused or unresolvable (at once), or hanging (after the connect bound). */
  | { kind: "unreachable"; why: string }
  /** The stream ended; `welcomed` when a leader had accepted it; `silent` when the agent left a controller that stopped answering. */
  | { kind: "ended"; why: string; welcomed: boolean; lastedMs: number; silent?: boolean }
  /** The controller is not the leader; `leader` is the one it names ("" when it knows none: an election is under way). */
  | { kind: "not-leader"; leader: string }
  /** Refused, by the controller, or by the agent itself (`byAgent`: a Welcome from a foreign cluster). */
  | { kind: "rejected"; reason: RejectReason; message: string; byAgent?: boolean }
  /** The hypervisor could not be read for Hello: not the controller's fault. */
  | { kind: "hypervisor"; why: string };

/** Where to connect next, and after how long. */
export interface ReconnectPlan {
  target: string;
  waitMs: number;
  /** Why, for the log. */
  note: string;
}

/** The knobs of {@link ReconnectPlanner} (all from the agent's resolved options). */
export interface ReconnectPlannerOptions {
  minBackoffMs: number;
  maxBackoffMs: number;
  electionRetryMs: number;
  duplicateHostBackoffMs: number;
}

/**
 * A controller the agent left for silence is passed over for this long: a follower names the silent
 * leader until its lease expires, and following it back would cost a whole Hello timeout.
 */
export const SILENT_CONTROLLER_SUSPICION_MS = 30_000;
/** NotLeader answers keep reconnects fast (`electionRetryMs`) for this long, then the normal backoff applies. */
export const ELECTION_FAST_RETRY_WINDOW_MS = 30_000;
/** A welcomed session that lasted this long was a success: the next reconnect starts from the shortest backoff. */
export const STABLE_SESSION_MS = 1_000;

/**
 * The agent's reconnect policy, kept apart from the network so that it can be tested alone. It
 * keeps a position in the controller list and, after each session, says where to go and how long
 * to wait first:
 * - NotLeader naming a leader moves the position to that leader (if it is in the list), so that
 *   when it fails the agent goes on to the controller after it, not back to the one it left; one
 *   redirect per wait is followed at once, a second waits (a follower naming a dead leader, or two
 *   controllers naming each other, must not spin);
 * - NotLeader without a leader (an election) retries the next controller, waiting at most
 *   `electionRetryMs`; so does any failure while controllers have been answering NotLeader for
 *   less than 30 s: the agent reaches a new leader within about `electionRetryMs` of its election;
 * - an unreachable controller costs nothing more: the next one is tried at once until every one of
 *   the list has been unreachable since the last wait;
 * - after a stream to a leader ends, the next controller is tried after the shortest backoff;
 * - DUPLICATE_HOST waits `duplicateHostBackoffMs` (jittered), longer than any normal reconnect;
 * - anything else backs off exponentially (jittered, capped at `maxBackoffMs`).
 * A controller left for silence is passed over (and not followed) for 30 s while others remain.
 */
export class ReconnectPlanner {
  private position = 0;
  private target: string;
  private failures = 0;
  private readonly unreachable = new Set<string>();
  private readonly wentSilent = new Map<string, number>();
  /** A redirect was followed since the last wait: the next one waits (no spinning between a follower and a dead leader). */
  private followedSinceWait = false;
  private electingSince: number | undefined;

  constructor(
    private readonly controllers: readonly string[],
    private readonly options: ReconnectPlannerOptions,
    private readonly random: () => number = Math.random,
    private readonly now: () => number = Date.now,
  ) {
    if (controllers.length === 0) throw new Error("no controllers");
    this.target = controllers[0]!;
  }

  /** Where to connect now. */
  get current(): string {
    return this.target;
  }

  /** Whether `address` was left for silence within the last 30 s. */
  isSuspect(address: string): boolean {
    return this.now() - (this.wentSilent.get(address) ?? -Infinity) < SILENT_CONTROLLER_SUSPICION_MS;
  }

  /** The plan after the session with {@link current} ended as `end`. */
  next(end: SessionEnd): ReconnectPlan {
    const from = this.target;
    switch (end.kind) {
      case "not-leader": {
        this.electingSince ??= this.now();
        const leader = end.leader;
        if (leader && leader !== from) {
          if (this.isSuspect(leader)) {
            return this.advance(this.backoff(), `not following ${leader}: it went silent on this agent less than ${SILENT_CONTROLLER_SUSPICION_MS / 1000} s ago`);
          }
          this.follow(leader);
          const plan = this.plan(this.followedSinceWait ? this.backoff() : 0, `following the leader ${leader} named by ${from}`);
          this.followedSinceWait = true;
          return plan;
        }
        return this.advance(this.backoff(), `${from} knows no leader (election in progress)`);
      }
      case "unreachable": {
        this.unreachable.add(from);
        if (this.controllers.some((c) => !this.unreachable.has(c))) return this.advance(0, `${from} unreachable; trying the next controller at once`);
        return this.advance(this.backoff(), "no controller reachable");
      }
      case "ended": {
        if (end.welcomed) {
          this.electingSince = undefined;
          if (end.lastedMs >= STABLE_SESSION_MS) this.failures = 0;
        }
        if (end.silent) this.wentSilent.set(from, this.now());
        return this.advance(this.backoff(), end.welcomed ? "stream to the leader ended" : "stream ended before a Welcome");
      }
      case "hypervisor":
        return this.plan(this.backoff(this.options.maxBackoffMs), "hypervisor unreadable");
      case "rejected": {
        this.electingSince = undefined; // a leader answered
        if (end.reason === RejectReason.REJECT_REASON_DUPLICATE_HOST) {
          // The leader itself answered: stay on it, but give the other agent's stream time to be
          // found dead (or an operator time to stop the second agent).
          const d = this.options.duplicateHostBackoffMs;
          return this.plan(Math.round(d / 2 + this.random() * (d / 2)), "duplicate host id");
        }
        // A foreign cluster, a stale epoch: the normal exponential backoff, never the election's.
        return this.advance(this.backoff(this.options.maxBackoffMs), `rejected (${RejectReason[end.reason] ?? end.reason})`);
      }
    }
  }

  private follow(leader: string): void {
    const i = this.controllers.indexOf(leader);
    // A leader outside the list is followed, and a failure there goes on from the one that named it.
    if (i >= 0) this.position = i;
    this.target = leader;
  }

  /** The next controller in the list, passing over those that just went silent while others remain. */
  private advance(waitMs: number, note: string): ReconnectPlan {
    const n = this.controllers.length;
    for (let step = 1; step <= n; step++) {
      this.position = (this.position + 1) % n;
      if (!this.isSuspect(this.controllers[this.position]!) || step === n) break;
    }
    this.target = this.controllers[this.position]!;
    return this.plan(waitMs, note);
  }

  private plan(waitMs: number, note: string): ReconnectPlan {
    // A wait starts a new round: every controller may be tried again at once after it, and a
    // redirect followed at once.
    if (waitMs > 0) {
      this.unreachable.clear();
      this.followedSinceWait = false;
    }
    return { target: this.target, waitMs, note };
  }

  /** The next exponential backoff, capped at `capMs` (default: the election's cap while controllers answer NotLeader). */
  private backoff(capMs?: number): number {
    this.failures++;
    const electing = this.electingSince !== undefined && this.now() - this.electingSince < ELECTION_FAST_RETRY_WINDOW_MS;
    const maxMs = capMs ?? (electing ? this.options.electionRetryMs : this.options.maxBackoffMs);
    return backoffDelayMs(this.failures, this.random, { initialMs: Math.min(this.options.minBackoffMs, maxMs), maxMs });
  }
}
