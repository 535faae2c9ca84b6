import { HostState } from "@berth/api";

/**
 * A host state as Berth reads it today: DISCONNECTED, written by earlier versions for a host whose
 * stream had gone, means what SUSPECT means now. Every reader of `Host.state` goes through this.
 */
export function normalHostState(state: HostState): HostState {
  return state === HostState.HOST_STATE_DISCONNECTED ? HostState.HOST_STATE_SUSPECT : state;
}

/**
 * The labels a host carries, as the scheduler's filters see them: its agent's (`berth-agent
 * --label`), with the operator's (`berth host label`) over them — an operator's value wins for a
 * key both set. The one definition of that rule; the host record's `labels` is always this.
 */
export function hostLabelsOf(agentLabels: Readonly<Record<string, string>>, operatorLabels: Readonly<Record<string, string>>): Record<string, string> {
  return { ...agentLabels, ...operatorLabels };
}
