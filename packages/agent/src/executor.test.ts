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

  const volumeId = "6f1c2a9e-0000-4000-8000-0000000000a1";
  const volumeCommand = (generation: number, action: Command["action"], leaderEpoch = 7): Command => ({
    commandId: `v${generation}`,
    vmId: "",
    volumeId,
    generation,
    leaderEpoch,
    migrationId: "",
    action,
  });

  it("passes a create's devices to the driver: NICs with their MACs, the seed, the volumes", async () => {
    const devices = {
      image: undefined,
      nics: [{ network: "default", mac: "52:54:00:aa:bb:01" }],
      cloudInit: { instanceId: vmId, hostname: "web-1", sshAuthorizedKeys: ["ssh-ed25519 AAAA test"], userData: "" },
      volumes: [{ id: volumeId, name: "data-1", sizeGib: 2 }],
    };
    const result = await executor.execute(command(1, { $case: "create", value: { name: "web-1", resources, start: true, fence: false, devices } }));
    expect(result.ok).toBe(true);
    expect(result.domain?.interfaces.map((i) => [i.network, i.mac])).toEqual([["default", "52:54:00:aa:bb:01"]]);
    expect(result.domain?.volumeIds).toEqual([volumeId]);
    expect((await driver.listVolumes()).map((v) => [v.volumeId, v.sizeGib, v.attachedVmId])).toEqual([[volumeId, 2, vmId]]);
  });

  it("set_volumes attaches and detaches, keeping a detached volume's data", async () => {
    await executor.execute(create(1));
    const attached = await executor.execute(command(2, { $case: "setVolumes", value: { volumes: [{ id: volumeId, name: "data-1", sizeGib: 1 }] } }));
    expect(attached).toMatchObject({ ok: true, generation: 2 });
    expect(attached.domain?.volumeIds).toEqual([volumeId]);
    const detached = await executor.execute(command(3, { $case: "setVolumes", value: { volumes: [] } }));
    expect(detached.domain?.volumeIds).toEqual([]);
    expect(detached.domain?.generation).toBe(3);
    expect((await driver.listVolumes()).map((v) => [v.volumeId, v.attachedVmId])).toEqual([[volumeId, ""]]);
  });

  it("runs volume commands by volume id, idempotently, under the epoch rule", async () => {
    const made = await executor.execute(volumeCommand(1, { $case: "createVolume", value: { sizeGib: 3 } }));
    expect(made).toMatchObject({ ok: true, vmId: "", volumeId, generation: 1 });
    expect((await executor.execute(volumeCommand(1, { $case: "createVolume", value: { sizeGib: 3 } }))).ok).toBe(true);
    expect((await driver.listVolumes()).map((v) => v.sizeGib)).toEqual([3]);
    const stale = await executor.execute(volumeCommand(2, { $case: "deleteVolume", value: {} }, 6));
    expect(stale).toMatchObject({ ok: false, errorCode: "FAILED_PRECONDITION" });
    expect(await driver.listVolumes()).toHaveLength(1);
    expect((await executor.execute(volumeCommand(2, { $case: "deleteVolume", value: {} }))).ok).toBe(true);
    expect((await executor.execute(volumeCommand(2, { $case: "deleteVolume", value: {} }))).ok).toBe(true);
    expect(await driver.listVolumes()).toEqual([]);
  });

  it("refuses a volume action without a volume id, and a VM action with one only", async () => {
    const noVolume = await executor.execute(command(1, { $case: "deleteVolume", value: {} }));
    expect(noVolume).toMatchObject({ ok: false, errorCode: "INVALID_ARGUMENT" });
    expect(noVolume.errorMessage).toMatch(/^command\.volume_id is required/);
    const vmActionOnVolume = await executor.execute(volumeCommand(1, { $case: "start", value: {} }));
    expect(vmActionOnVolume).toMatchObject({ ok: false, errorCode: "INVALID_ARGUMENT" });
  });
});
