import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DomainState, type Command } from "@berth/api";
import { FakeDriver, readFakeHypervisorState } from "@berth/hypervisor";
import { CommandExecutor } from "./executor.js";

const resources = { vcpus: 2, memoryMib: 2048, diskGib: 10 };
const vmId = "6f1c2a9e-0000-4000-8000-000000000001";

function command(generation: number, action: Command["action"], leaderEpoch = 7, commandId = `c${generation}`): Command {
  return { commandId, vmId, generation, leaderEpoch, migrationId: "", volumeId: "", action };
}
const create = (generation: number, start = true): Command =>
  command(generation, { $case: "create", value: { name: "web-1", resources, start, fence: false } });

describe("CommandExecutor", () => {
  let dir: string;
  let driver: FakeDriver;
  let epochs: number[];
  let executor: CommandExecutor;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-exec-"));
    driver = new FakeDriver({ stateDir: dir });
    epochs = [];
    executor = new CommandExecutor(driver, 0, (e) => epochs.push(e));
  });
  afterEach(async () => {
    await driver.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const counts = () => readFakeHypervisorState(dir).operations[vmId];

  it("creates and starts a domain and records the generation", async () => {
    const result = await executor.execute(create(1));
    expect(result).toMatchObject({ ok: true, vmId, generation: 1 });
    expect(result.domain).toMatchObject({ state: DomainState.DOMAIN_STATE_RUNNING, generation: 1 });
    expect(epochs).toEqual([7]);
  });

  it("does nothing the second time a command is resent", async () => {
    await executor.execute(create(1));
    const before = { ...counts() };
    const again = await executor.execute(create(1, true));
    expect(again.ok).toBe(true);
    await driver.close();
    expect(counts()).toEqual(before);
    expect(before).toMatchObject({ define: 1, start: 1 });
  });

  it("refuses a command older than the generation the domain records", async () => {
    await executor.execute(create(1));
    await executor.execute(command(2, { $case: "stop", value: { force: false } }));
    const stale = await executor.execute(create(1));
    expect(stale).toMatchObject({ ok: false, errorCode: "CONFLICT" });
    expect(stale.domain?.state).toBe(DomainState.DOMAIN_STATE_SHUTOFF);
  });

  it("refuses commands from a leader older than one already obeyed", async () => {
    await executor.execute(create(1));
    const stale = await executor.execute(command(2, { $case: "stop", value: { force: false } }, 6));
    expect(stale).toMatchObject({ ok: false, errorCode: "FAILED_PRECONDITION" });
    expect((await driver.list())[0]?.state).toBe(DomainState.DOMAIN_STATE_RUNNING);
  });

  it("runs commands for one VM in arrival order", async () => {
    const results = await Promise.all([
      executor.execute(create(1)),
      executor.execute(command(2, { $case: "stop", value: { force: true } })),
      executor.execute(command(3, { $case: "start", value: {} })),
      executor.execute(command(4, { $case: "delete", value: {} })),
    ]);
    expect(results.map((r) => r.ok)).toEqual([true, true, true, true]);
    expect(await driver.list()).toEqual([]);
  });

  it("reports NOT_FOUND for start of an unknown VM and deletes idempotently", async () => {
    expect(await executor.execute(command(1, { $case: "start", value: {} }))).toMatchObject({ ok: false, errorCode: "NOT_FOUND" });
    expect(await executor.execute(command(1, { $case: "delete", value: {} }))).toMatchObject({ ok: true });
  });

  it("resetEpoch lowers the epoch (a host entering another cluster) without reporting it; observeEpoch never does", async () => {
    executor.observeEpoch(18);
    executor.observeEpoch(2);
    expect(executor.leaderEpoch).toBe(18);
    executor.resetEpoch(2);
    expect(executor.leaderEpoch).toBe(2);
    expect(epochs).toEqual([18]);
    expect(await executor.execute(command(1, create(1).action, 2))).toMatchObject({ ok: true });
  });

  it("defines a CreateDomain with fence as a fenced domain", async () => {
    const result = await executor.execute(command(1, { $case: "create", value: { name: "db-1", resources, start: false, fence: true } }));
    expect(result.domain).toMatchObject({ fence: true });
    expect((await driver.list())[0]).toMatchObject({ vmId, fence: true });
  });
});
