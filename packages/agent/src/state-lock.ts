import { DirLock, DirLockedError, lockDir } from "@berth/core";

/** The lock file's name in the state directory. */
export const STATE_LOCK_FILE = "agent.lock";

/** The lock one agent holds on its state directory until `release` (core's `DirLock`). */
export type StateDirLock = DirLock;

/** A second agent on one state directory: the message names the directory, the holder and what to do. */
export const StateDirLockedError = DirLockedError;

/**
 * Takes `<stateDir>/agent.lock` for this agent (one agent per state directory: two would drive one
 * hypervisor's VMs against each other). Throws `StateDirLockedError` while a live process holds it;
 * a lock whose holder is gone is taken over (core's `lockDir`).
 */
export function lockStateDir(stateDir: string, hostId: string): Promise<StateDirLock> {
  return lockDir(stateDir, {
    file: STATE_LOCK_FILE,
    holder: `berth-agent for host '${hostId}'`,
    refusal: (dir, path, owner) =>
      `the state directory ${dir} is in use by another berth-agent (pid ${owner.pid}, ${owner.holder}, since ${owner.since}). ` +
      `One agent per state directory: two would drive one hypervisor's VMs against each other. Stop that agent first ` +
      `(e.g. systemctl stop berth-agent), or give this one its own --state-dir. If no process with pid ${owner.pid} is running, ` +
      `remove ${path}.`,
  });
}
