import { HostState } from "@berth/api";

/**
 * A host state as Berth reads it today: DISCONNECTED, written by earlier versions for a host whose
 * stream had gone, means what SUSPECT means now. Every reader of `Host.state` goes through this.
 */
export function normalHostState(state: HostState): HostState {
  return state === HostState.HOST_STATE_DISCONNECTED ? HostState.HOST_STATE_SUSPECT : state;
}
