import type { IOptions } from "etcd3";
import { classifyEtcdFailure, MemberSkippedError } from "./etcd-errors.js";

/** etcd3's per-member fault policy (a cockatiel policy; etcd3 only calls `execute`). */
type HostPolicy = NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;

/** Pause before the first probe of a member that failed; doubles per failed probe up to MAX_PROBE_PAUSE_MS. */
const FIRST_PROBE_PAUSE_MS = 250;
const MAX_PROBE_PAUSE_MS = 5_000;

interface MemberState {
  host: string;
  down: boolean;
  failures: number;
  /** When the member last failed (epoch ms). */
  failedAt: number;
  probeTimer: NodeJS.Timeout | undefined;
  probing: boolean;
}

/**
 * Asks one member whether it can serve (answers, and knows a leader), within a deadline (epoch
 * ms). Resolves when it can; rejects otherwise.
 */
export type MemberProbe = (host: string, deadline: number) => Promise<void>;

/**
 * Keeps calls away from etcd members that just failed. etcd3 picks a member at random for every
 * call and stream and, with a per-member policy, moves on to the next member when that policy
 * refuses without calling through. This gate is that policy: after a member fails in a way that
 * says something about the member (no connection, a dropped connection, a deadline, no leader),
 * it is skipped, and probed in the background (after 250 ms, then doubling up to 5 s, jittered)
 * until it answers a probe again. So no caller's call waits on a dead or frozen member to find
 * out whether it is back. When every member is down, calls go to the one that failed longest
 * ago, so a cluster that is entirely down is still tried.
 *
 * Stream failures reach the gate through etcd3's `markFailed`; a stream that opens counts as
 * neither success nor failure; a unary call that answers brings its member back.
 */
export class MemberGate {
  private readonly members = new Map<string, MemberState>();
  private closed = false;

  /**
   * @param probe how a member that is down is asked whether it is back.
   * @param probeTimeoutMs how long a probe may take.
   */
  constructor(
    private readonly probe: MemberProbe,
    private readonly probeTimeoutMs: number,
  ) {}

  /** The policy for one member (etcd3's `faultHandling.host`). */
  policy(host: string): HostPolicy {
    const state: MemberState = { host, down: false, failures: 0, failedAt: 0, probeTimer: undefined, probing: false };
    this.members.set(host, state);
    const policy = {
      // async: etcd3 relies on a synchronous throw inside `fn` coming back as a rejection.
      execute: async (fn: (context: { signal: AbortSignal }) => unknown) => {
        if (state.down && !this.longestDown(state)) throw new MemberSkippedError(host);
        try {
          const result = await fn({ signal: new AbortController().signal });
          if (!isStream(result)) this.up(state);
          return result;
        } catch (e) {
          if (classifyEtcdFailure(e, "").memberSuspect) this.suspect(state);
          throw e;
        }
      },
    };
    return policy as unknown as HostPolicy;
  }

  /** Members currently skipped (for diagnostics and tests). */
  skipped(): string[] {
    return [...this.members.values()].filter((s) => s.down).map((s) => s.host);
  }

  /** Stops probing. */
  close(): void {
    this.closed = true;
    for (const s of this.members.values()) clearTimeout(s.probeTimer);
  }

  private up(state: MemberState): void {
    state.down = false;
    state.failures = 0;
    clearTimeout(state.probeTimer);
    state.probeTimer = undefined;
  }

  private suspect(state: MemberState): void {
    state.down = true;
    state.failures += 1;
    state.failedAt = Date.now();
    this.scheduleProbe(state);
  }

  private scheduleProbe(state: MemberState): void {
    if (this.closed || state.probeTimer !== undefined || state.probing) return;
    const pause = Math.min(MAX_PROBE_PAUSE_MS, FIRST_PROBE_PAUSE_MS * 2 ** (Math.max(1, state.failures) - 1));
    state.probeTimer = setTimeout(() => {
      state.probeTimer = undefined;
      if (!state.down || this.closed) return;
      state.probing = true;
      this.probe(state.host, Date.now() + this.probeTimeoutMs).then(
        () => {
          state.probing = false;
          this.up(state);
        },
        () => {
          state.probing = false;
          if (!state.down) return;
          state.failures += 1;
          this.scheduleProbe(state);
        },
      );
    }, pause * (0.8 + 0.4 * Math.random()));
    state.probeTimer.unref?.();
  }

  /** With every member down, true for the one that failed longest ago (ties: any of them). */
  private longestDown(self: MemberState): boolean {
    for (const s of this.members.values()) {
      if (s !== self && (!s.down || s.failedAt < self.failedAt)) return false;
    }
    return true;
  }
}

const isStream = (v: unknown): boolean => typeof v === "object" && v !== null && typeof (v as { on?: unknown }).on === "function";
