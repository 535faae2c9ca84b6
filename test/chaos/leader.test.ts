/**
 * Leader faults mid-burst on real processes and a real etcd: the leader SIGKILLed, and frozen
 * (SIGSTOP) then woken. Creates go on through a client that retries with one request id; every
 * acknowledged VM must exist afterwards, none may run on two hosts, none may be placed twice.
 */
import { afterEach, expect, it } from "vitest";
import { HostState } from "@berth/api";
import { describeWithEtcd } from "../support/etcd.js";
import { waitFor } from "../support/processes.js";
import { ChaosCluster } from "./harness.js";

describeWithEtcd("chaos: leader", () => {
  let cluster: ChaosCluster | undefined;
  afterEach(async (context) => {
    if (context.task.result?.state === "fail" && cluster) console.error(cluster.dump());
    await cluster?.stop();
    cluster = undefined;
  });

  for (const signal of ["SIGKILL", "SIGSTOP"] as const) {
    it(`leader ${signal} mid-burst: every acknowledged create exists once, agents follow the new leader`, async () => {
      const c = (cluster = new ChaosCluster({ controllers: 2, agents: 3 }));
      await c.start();
      const first = await c.leaderIndex();
      const names = Array.from({ length: 24 }, (_, i) => `burst-${i}`);
      const burst = Promise.all(names.map((n, i) => new Promise((r) => setTimeout(r, i * 40)).then(() => c.createVm(n, {}, 40_000))));
      await new Promise((r) => setTimeout(r, 300));
      const hitAt = Date.now();
      c.controllers[first]!.child.kill(signal);
      const newLeader = await waitFor("a new leader", async () => {
        const i = await c.leaderIndex();
        return i !== first ? i : undefined;
      }, 20_000, 50);
      const electedMs = Date.now() - hitAt;
      await waitFor("every agent on the new leader", async () => {
        const hosts = await c.hosts();
        return hosts.length === 3 && hosts.every((h) => h.state === HostState.HOST_STATE_READY && h.lastSeenMs > hitAt);
      }, 20_000, 50);
      const agentsBackMs = Date.now() - hitAt;
      await burst;
      const vms = await c.waitAllRunning(names, 40_000);
      expect(new Set(vms.map((v) => v.id)).size).toBe(names.length);
      if (signal === "SIGSTOP") {
        const old = c.controllers[first]!;
        old.child.kill("SIGCONT");
        expect(await Promise.race([old.exited, new Promise((r) => setTimeout(() => r("still running"), 15_000))])).toBe(1);
      }
      await c.checkInvariants();
      console.log(`leader ${signal}: new leader (controller ${newLeader}) after ${electedMs} ms, every agent back after ${agentsBackMs} ms`);
    }, 120_000);
  }
});
