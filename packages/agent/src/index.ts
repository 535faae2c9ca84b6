import { fileURLToPath } from "node:url";

/** Path of the berth-agent entry point, for tools that start it as a process. */
export const AGENT_MAIN = fileURLToPath(new URL("./main.js", import.meta.url));

export { Agent, AGENT_VERSION } from "./agent.js";
export { AGENT_STATE_FILE, loadAgentState, type AgentState } from "./agent-state.js";
export { CommandExecutor } from "./executor.js";
export { resolveAgentOptions, type AgentOptions, type ResolvedAgentOptions } from "./options.js";
export { lockStateDir, STATE_LOCK_FILE, StateDirLockedError, type StateDirLock } from "./state-lock.js";
