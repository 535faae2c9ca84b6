import { HostState, type Host } from "@berth/api";
import { normalHostState } from "@berth/core";

/**
 * How long a host may be silent before the controller thinks less of it. The fence rule ties the
 * controller to the agents' watchdog: an agent that hears no leader powers off its restart-policy
 * VMs `fenceTimeoutMs` after the last leader message it got, and every such message answers one of
 * its own; so once the controller has not heard a host for `fenceTimeoutMs + fenceMarginMs`, the
 * host's watchdog has fired (the margin covers the message's time on the wire and clock rates).
 */
export interface HostTimers {
  /** Silence after which a host is SUSPECT (no new VMs; its VMs' state UNKNOWN). */
  suspectAfterMs: number;
  /** Silence after which a host is DOWN. */
  downAfterMs: number;
  /** The agents' watchdog timeout, sent in Welcome. */
  fenceTimeoutMs: number;
  /** Added to the watchdog timeout before a silent host counts as fenced. */
  fenceMarginMs: number;
}

/** What the controller knows of a host's agent right now. */
export interface HostLiveness {
  /** A welcomed stream is open. */
  connected: boolean;
  /**
   * When the controller last heard the agent (Unix ms). For a host this leader has never heard,
   * the later of the record's `last_seen_ms` and the leader's election: an agent may have heard the
   * previous leader until then, so its watchdog may have been petted until then.
   */
  lastHeardMs: number;
}

/** The lifecycle fields of a host record, as `nextHostState` decides them. */
export type HostLifecycleFields = Pick<Host, "state" | "stateSinceMs" | "fenceDeadlineMs">;

/**
 * The state a host should be in now. Pure: READY while connected and heard within
 * `suspectAfterMs`; otherwise SUSPECT, then DOWN after `downAfterMs` of silence, then FENCED once
 * the fence deadline (last heard + watchdog timeout + margin) has passed or an operator confirmed
 * the host down. `stateSinceMs` moves only when the state changes.
 */
export function nextHostState(host: Host, live: HostLiveness, nowMs: number, timers: HostTimers): HostLifecycleFields {
  const silentMs = nowMs - live.lastHeardMs;
  let state: HostState;
  let fenceDeadlineMs = 0;
  if (live.connected && silentMs < timers.suspectAfterMs) {
    state = HostState.HOST_STATE_READY;
  } else {
    fenceDeadlineMs = live.lastHeardMs + timers.fenceTimeoutMs + timers.fenceMarginMs;
    if (host.confirmedDown || nowMs >= fenceDeadlineMs) state = HostState.HOST_STATE_FENCED;
    else if (silentMs >= timers.downAfterMs) state = HostState.HOST_STATE_DOWN;
    else state = HostState.HOST_STATE_SUSPECT;
  }
  const same = normalState(host.state) === state;
  return { state, stateSinceMs: same && host.stateSinceMs > 0 ? host.stateSinceMs : nowMs, fenceDeadlineMs };
}

/** A state as the lifecycle reads it (core's `normalHostState`: DISCONNECTED reads as SUSPECT). */
export const normalState = normalHostState;

/** True when the lifecycle fields differ (a write is needed). */
export function lifecycleChanged(host: Host, next: HostLifecycleFields): boolean {
  return host.state !== next.state || host.stateSinceMs !== next.stateSinceMs || host.fenceDeadlineMs !== next.fenceDeadlineMs;
}

/** The host's name for its state in logs and errors. */
export function hostStateName(state: HostState): string {
  return HostState[normalState(state)]?.replace("HOST_STATE_", "") ?? String(state);
}
