import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** What the agent itself keeps across restarts (the hypervisor keeps the VMs). */
export interface AgentState {
  /** The highest leader epoch obeyed: commands from older leaders are refused. */
  lastLeaderEpoch: number;
}

const FILE = "agent.json";

/** Reads the agent's state; a missing file is a fresh agent. Throws on a corrupt file. */
export async function loadAgentState(stateDir: string): Promise<AgentState> {
  await mkdir(stateDir, { recursive: true });
  try {
    const parsed = JSON.parse(await readFile(join(stateDir, FILE), "utf8")) as Partial<AgentState>;
    return { lastLeaderEpoch: Number(parsed.lastLeaderEpoch ?? 0) || 0 };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { lastLeaderEpoch: 0 };
    throw new Error(`${join(stateDir, FILE)} is unreadable: ${(e as Error).message}`, { cause: e });
  }
}

/** Writes the state atomically (temp file + rename), so a crash never leaves half a file. */
export async function saveAgentState(stateDir: string, state: AgentState): Promise<void> {
  const path = join(stateDir, FILE);
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(state), { flush: true });
  await rename(tmp, path);
}
