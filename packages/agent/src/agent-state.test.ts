import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AGENT_STATE_FILE, AgentStateFile, loadAgentState } from "./agent-state.js";

describe("agent state", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-state-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const onDisk = () => JSON.parse(readFileSync(join(dir, AGENT_STATE_FILE), "utf8")) as unknown;

  it("a missing file is a fresh agent; a file from before cluster ids has none", async () => {
    expect(await loadAgentState(dir)).toEqual({ lastLeaderEpoch: 0, clusterId: "" });
    writeFileSync(join(dir, AGENT_STATE_FILE), JSON.stringify({ lastLeaderEpoch: 18 }));
    expect(await loadAgentState(dir)).toEqual({ lastLeaderEpoch: 18, clusterId: "" });
  });

  it("writes updates one at a time, in order, each with the whole state", async () => {
    const file = new AgentStateFile(dir, { lastLeaderEpoch: 1, clusterId: "" });
    const writes = [file.update({ clusterId: "c1" }), ...Array.from({ length: 20 }, (_, i) => file.update({ lastLeaderEpoch: i + 2 }))];
    await Promise.all(writes);
    expect(onDisk()).toEqual({ clusterId: "c1", lastLeaderEpoch: 21 });
    expect(await loadAgentState(dir)).toEqual(file.state);
  });

  it("throws on a corrupt file, naming it", async () => {
    writeFileSync(join(dir, AGENT_STATE_FILE), "{");
    await expect(loadAgentState(dir)).rejects.toThrow(AGENT_STATE_FILE);
  });
});
