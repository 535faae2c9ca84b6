/**
 * Host faults on real processes and a real etcd, each scenario ending with the invariants: no VM
 * on two hosts at any sampled instant (every fake state file, every 100 ms, watchdog applied), no
 * acknowledged VM lost, no command applied from an older epoch after a newer one.
 */
import { afterEach, expect, it } from "vitest";
import { HostFailurePolicy, HostState, VmPhase } from "@berth/api";
import { fakeRunningVmIds, readFakeHypervisorState } from "@berth/hypervisor";
import { describeWithEtcd } from "../support/etcd.js";
import { waitFor } from "../support/processes.js";
import { CHAOS_TIMERS, ChaosCluster } from "./harness.js";

const RESTART = { onHostFailure: HostFailurePolicy.HOST_FAILURE_POLICY_RESTART };
const KEEP = { onHostFailure: HostFailurePolicy.HOST_FAILURE_POLICY_KEEP };

describeWithEtcd("chaos: hosts", () => {
  let cluster: ChaosCluster | undefined;
  const up = async (agents = 3): Promise<ChaosCluster> => {
    cluster = new ChaosCluster({ agents });
    await cluster.start();
    return cluster;
  };
  afterEach(async (context) => {
    if (context.task.result?.state === "fail" && cluster) console.error(cluster.dump());
    await cluster?.stop();
    cluster = undefined;
  });

  it("agent frozen past the fence: restart-policy VMs run elsewhere, the old copies are fenced, and it reconciles on return", async () => {
    const c = await up(3);
    const names = Array.from({ length: 6 }, (_, i) => `db-${i}`);
    for (const n of names) await c.createVm(n, RESTART);
    for (const n of ["cache-0", "cache-1", "cache-2"]) await c.createVm(n, KEEP);
    const before = await c.waitAllRunning([...names, "cache-0", "cache-1", "cache-2"]);
    const onHost1 = before.filter((v) => v.hostId === "host-1");
    const moving = onHost1.filter((v) => v.spec?.name.startsWith("db-"));
    expect(moving.length).toBeGreaterThan(0);

    c.agents.get("host-1")!.child.kill("SIGSTOP");
    const frozenAt = Date.now();
    await waitFor("host-1 SUSPECT", async () => (await c.hosts()).find((h) => h.id === "host-1")?.state !== HostState.HOST_STATE_READY, 10_000, 50);
    const detectedMs = Date.now() - frozenAt;
    await waitFor("host-1's restart-policy VMs running elsewhere", async () => {
      const vms = await c.vms();
      return moving.every((m) => {
        const now = vms.find((v) => v.id === m.id);
        return now && now.hostId !== "host-1" && now.status?.phase === VmPhase.VM_PHASE_RUNNING;
      });
    }, 20_000, 100);
    const recoveredMs = Date.now() - frozenAt;
    // Never before the fence point: the frozen host's watchdog must have powered them off.
    expect(recoveredMs).toBeGreaterThanOrEqual(CHAOS_TIMERS.fenceTimeoutMs);
    const frozenView = fakeRunningVmIds(c.stateDirs.get("host-1")!);
    for (const m of moving) expect(frozenView).not.toContain(m.id);
    // KEEP VMs wait for their host.
    const kept = (await c.vms()).filter((v) => v.spec?.name.startsWith("cache-") && before.find((b) => b.id === v.id)?.hostId === "host-1");
    for (const k of kept) expect(k.hostId).toBe("host-1");

    c.agents.get("host-1")!.child.kill("SIGCONT");
    await c.waitReady(3);
    await waitFor("superseded copies removed from host-1", () => {
      const ids = readFakeHypervisorState(c.stateDirs.get("host-1")!).domains.map((d) => d.vmId);
      return moving.every((m) => !ids.includes(m.id));
    }, 15_000);
    await c.waitAllRunning([...names, "cache-0", "cache-1", "cache-2"]);
    await c.checkInvariants();
    console.log(`host frozen: SUSPECT after ${detectedMs} ms, restart-policy VMs running elsewhere after ${recoveredMs} ms (fence ${CHAOS_TIMERS.fenceTimeoutMs} + margin ${CHAOS_TIMERS.fenceMarginMs} ms); ${c.sampler.samples} samples`);
  }, 90_000);

  it("a second agent with a live host's id is refused and runs nothing, through a freeze of the real one", async () => {
    const c = await up(2);
    const names = Array.from({ length: 6 }, (_, i) => `web-${i}`);
    for (const n of names) await c.createVm(n, KEEP);
    const before = await c.waitAllRunning(names);
    const impostor = c.startAgent("host-2", "host-2-impostor");
    await waitFor("the impostor refused", () => impostor.lines("DUPLICATE_HOST").length > 0 || impostor.lines("already connected").length > 0, 10_000);
    c.agents.get("host-2")!.child.kill("SIGSTOP");
    await new Promise((r) => setTimeout(r, 3_000));
    c.agents.get("host-2")!.child.kill("SIGCONT");
    await new Promise((r) => setTimeout(r, 2_000));
    expect(fakeRunningVmIds(c.stateDirs.get("host-2-impostor")!)).toEqual([]);
    const after = await c.waitAllRunning(names);
    expect(after.map((v) => v.hostId)).toEqual(before.map((v) => v.hostId));
    await impostor.stop();
    await c.checkInvariants();
  }, 60_000);

  it("most agents frozen at once: nothing is restarted elsewhere or deleted, and all comes back", async () => {
    const c = await up(4);
    const names = Array.from({ length: 8 }, (_, i) => `app-${i}`);
    for (const n of names) await c.createVm(n, RESTART);
    const before = await c.waitAllRunning(names);
    const frozen = ["host-1", "host-2", "host-3"];
    for (const h of frozen) c.agents.get(h)!.child.kill("SIGSTOP");
    await new Promise((r) => setTimeout(r, CHAOS_TIMERS.fenceTimeoutMs + CHAOS_TIMERS.fenceMarginMs + 3_000));
    const during = await c.vms();
    expect(during.map((v) => v.hostId)).toEqual(before.map((v) => v.hostId));
    const held = c.controllers[0]!.lines("held back");
    expect(held.length).toBeGreaterThan(0);
    // They come back one by one: the first back must not make the others look like single failures.
    for (const h of frozen) {
      c.agents.get(h)!.child.kill("SIGCONT");
      await new Promise((r) => setTimeout(r, 700));
    }
    await c.waitReady(4);
    const after = await c.waitAllRunning(names, 30_000);
    expect(after.map((v) => v.hostId)).toEqual(before.map((v) => v.hostId));
    await c.checkInvariants();
  }, 90_000);

  it("agent killed with running VMs and restarted: nothing re-created; a VM deleted meanwhile goes once the host is back", async () => {
    const c = await up(2);
    const names = ["a-1", "a-2", "a-3", "a-4"];
    for (const n of names) await c.createVm(n, KEEP);
    const before = await c.waitAllRunning(names);
    const victim = before.find((v) => v.hostId === "host-1")!;
    const opsBefore = readFakeHypervisorState(c.stateDirs.get("host-1")!).operations;
    await c.agents.get("host-1")!.stop("SIGKILL");
    await waitFor("host-1 not ready", async () => (await c.hosts()).find((h) => h.id === "host-1")?.state !== HostState.HOST_STATE_READY, 10_000);
    const client = c.clientOf(await c.leaderIndex());
    await client.deleteVm({ name: victim.spec!.name });
    client.close();
    c.startAgent("host-1");
    await c.waitReady(2);
    await waitFor("the deleted VM gone", async () => !(await c.vms()).some((v) => v.id === victim.id), 15_000);
    c.acknowledged.delete(victim.spec!.name);
    const rest = names.filter((n) => n !== victim.spec!.name);
    await c.waitAllRunning(rest);
    const opsAfter = readFakeHypervisorState(c.stateDirs.get("host-1")!).operations;
    for (const v of before.filter((x) => x.hostId === "host-1" && x.id !== victim.id)) expect(opsAfter[v.id]).toEqual(opsBefore[v.id]);
    await c.checkInvariants();
  }, 60_000);

  it("agent restarted during an in-flight create: the VM ends running once", async () => {
    const c = await up(1);
    // A slow start, so the restart lands while the create is in flight.
    const { writeFileSync } = await import("node:fs");
    const { join } = await import("node:path");
    writeFileSync(join(c.stateDirs.get("host-1")!, "fake-faults.json"), JSON.stringify({ latency: [{ op: "start", ms: 1500 }] }));
    await c.createVm("slow", KEEP);
    await new Promise((r) => setTimeout(r, 300));
    await c.agents.get("host-1")!.stop("SIGKILL");
    writeFileSync(join(c.stateDirs.get("host-1")!, "fake-faults.json"), "{}");
    c.startAgent("host-1");
    const [vm] = await c.waitAllRunning(["slow"], 30_000);
    const ops = readFakeHypervisorState(c.stateDirs.get("host-1")!).operations[vm!.id];
    expect(ops?.define ?? 0).toBe(1);
    await c.checkInvariants();
  }, 60_000);
});
