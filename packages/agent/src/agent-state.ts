import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** What the agent itself keeps across restarts (the hypervisor keeps the VMs). */
export interface AgentState {
  /**
   * The highest leader epoch obeyed: commands from older leaders are refused. Meaningful only
   * within `clusterId`: epochs of two clusters (two stores) are not comparable.
   */
  lastLeaderEpoch: number;
  /**
   * The cluster this agent belongs to, adopted from the first Welcome that named one; "" for an
   * agent that has never joined a cluster (fresh, or written by a version without cluster ids).
   */
  clusterId: string;
}

/** The state file's name in the state directory. */
export const AGENT_STATE_FILE = "agent.json";

/** Reads the agent's state; a missing file is a fresh agent. Throws on a corrupt file. */
export async function loadAgentState(stateDir: string): Promise<AgentState> {
  await mkdir(stateDir, { recursive: true });
  try {
    const parsed = JSON.parse(await readFile(join(stateDir, AGENT_STATE_FILE), "utf8")) as Partial<AgentState>;
    return {
      lastLeaderEpoch: Number(parsed.lastLeaderEpoch ?? 0) || 0,
      // A file from before cluster ids has none: such an agent joins the first cluster it hears.
      clusterId: typeof parsed.clusterId === "string" ? parsed.clusterId : "",
    };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { lastLeaderEpoch: 0, clusterId: "" };
    throw new Error(`${join(stateDir, AGENT_STATE_FILE)} is unreadable: ${(e as Error).message}`, { cause: e });
  }
}

/** Writes the state atomically (temp file + rename), so a crash never leaves half a file. */
export async function saveAgentState(stateDir: string, state: AgentState): Promise<void> {
  const path = join(stateDir, AGENT_STATE_FILE);
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify({ lastLeaderEpoch: state.lastLeaderEpoch, clusterId: state.clusterId }), { flush: true });
  await rename(tmp, path);
}

/**
 * The agent's state as one process keeps it: updates apply in memory at once and are written one
 * at a time, in order, each write holding the whole state (two concurrent writes through the same
 * temp file could otherwise leave an older state on disk, or fail).
 */
export class AgentStateFile {
  private current: AgentState;
  private writes: Promise<void> = Promise.resolve();

  constructor(
    private readonly stateDir: string,
    initial: AgentState,
  ) {
    this.current = { ...initial };
  }

  /** The state as last updated (possibly not yet on disk). */
  get state(): Readonly<AgentState> {
    return this.current;
  }

  /**
   * Merges `patch` into the state and writes it. Resolves once a state including the patch is on
   * disk (renamed into place); rejects when that write fails (the in-memory state keeps the patch,
   * and the next update writes it again).
   */
  update(patch: Partial<AgentState>): Promise<void> {
    this.current = { ...this.current, ...patch };
    const snapshot = { ...this.current };
    const write = this.writes.catch(() => undefined).then(() => saveAgentState(this.stateDir, snapshot));
    this.writes = write;
    return write;
  }
}
