/**
 * Leader failover across processes: two controllers on one etcd, agents that know both. The
 * leader is frozen (SIGSTOP), not killed: the follower must take over once the lease expires,
 * agents must follow it, and when the old leader wakes it must find itself deposed and exit
 * without changing anything.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { HostState, VmPhase, type Vm } from "@berth/api";
import { readFakeHypervisorState } from "@berth/hypervisor";
import { describeWithEtcd, startEtcd, type RunningEtcd } from "../support/etcd.js";
import { clusterClient, type ClusterClient } from "../support/grpc.js";
import { AGENT_BIN, CONTROLLER_BIN, freePort, Proc, waitFor } from "../support/processes.js";

const HOSTS = ["host-1", "host-2"];
const small = { vcpus: 1, memoryMib: 256, diskGib: 1 };

describeWithEtcd("leader failover: two controllers, a frozen leader", () => {
  let etcd: RunningEtcd;
  let dir: string;
  const addresses: string[] = [];
  const controllers: Proc[] = [];
  const agents: Proc[] = [];
  const clients: ClusterClient[] = [];

  const startController = (i: number): Proc =>
    new Proc(`controller-${i}`, CONTROLLER_BIN, [
      "--listen", addresses[i]!, "--etcd", etcd.endpoint, "--id", `c${i}`,
      "--report-interval", "300", "--leader-ttl", "2000",
    ]);
  const vmsVia = async (client: ClusterClient): Promise<Vm[]> => (await client.listVms({ hostId: "", pageSize: 0, pageToken: "" })).vms;
  const dump = (): void => console.error([...controllers, ...agents].map((p) => p.tail(25)).join("\n"));

  beforeAll(async () => {
    etcd = await startEtcd();
    dir = mkdtempSync(join(tmpdir(), "berth-failover-"));
    addresses.push(`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`);
    controllers.push(startController(0));
    clients.push(clusterClient(addresses[0]!), clusterClient(addresses[1]!));
    await waitFor("controller 0 to lead", async () => (await clients[0]!.listHosts({})) !== undefined);
    controllers.push(startController(1));
    for (const h of HOSTS) {
      agents.push(
        new Proc(h, AGENT_BIN, ["--host-id", h, "--controller", addresses.join(","), "--driver", "fake", "--state-dir", join(dir, h), "--capacity", "vcpus=8,memory=8GiB,disk=100GiB"]),
      );
    }
    await waitFor("both hosts ready", async () => (await clients[0]!.listHosts({})).hosts.filter((h) => h.state === HostState.HOST_STATE_READY).length === 2);
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    for (const c of controllers) c.child.kill("SIGCONT");
    await Promise.all([...agents, ...controllers].map((p) => p.stop()));
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("the follower refuses operator calls and names the leader", async () => {
    type Refusal = { code: number; metadata?: { get(k: string): unknown[] } };
    // Wait for controller 1 to serve (until then the call fails to connect, without metadata).
    const err = await waitFor("controller 1 to answer", async () => {
      const e = (await clients[1]!.listHosts({}).catch((x: unknown) => x)) as Refusal;
      return e.metadata?.get("berth-leader").length ? e : undefined;
    });
    expect(err.code).toBe(14); // UNAVAILABLE
    expect(err.metadata?.get("berth-leader")).toEqual([addresses[0]]);
  });

  it("fails over to the follower when the leader freezes; the old leader exits deposed", async () => {
    for (let i = 0; i < 6; i++) await clients[0]!.createVm({ spec: { name: `vm-${i}`, resources: small, labels: {} } });
    const before = await waitFor("6 running VMs", async () => {
      const vms = await vmsVia(clients[0]!);
      return vms.length === 6 && vms.every((v) => v.status?.phase === VmPhase.VM_PHASE_RUNNING) ? vms : undefined;
    });
    const countsBefore = HOSTS.map((h) => readFakeHypervisorState(join(dir, h)).operations);

    controllers[0]!.child.kill("SIGSTOP");
    const frozenAt = Date.now();
    try {
      // The follower leads once the frozen leader's lease has expired, and the agents follow it.
      await waitFor("controller 1 to lead with both hosts back", async () => {
        const { hosts } = await clients[1]!.listHosts({});
        return hosts.length === 2 && hosts.every((h) => h.state === HostState.HOST_STATE_READY && h.lastSeenMs > frozenAt);
      }, 30_000);
    } catch (e) {
      dump();
      throw e;
    }
    const tookOverMs = Date.now() - frozenAt;
    expect(tookOverMs).toBeGreaterThanOrEqual(1_500); // not before the lease could expire
    // Agents leave the frozen leader on the missing heartbeat, not on gRPC keepalive (10 s + 5 s).
    expect(tookOverMs).toBeLessThan(12_000);
    const after = await vmsVia(clients[1]!);
    expect(after.map((v) => [v.id, v.hostId, v.generation])).toEqual(before.map((v) => [v.id, v.hostId, v.generation]));
    await clients[1]!.createVm({ spec: { name: "after-failover", resources: small, labels: {} } });
    await waitFor("the new VM running", async () => (await clients[1]!.getVm({ name: "after-failover" })).vm?.status?.phase === VmPhase.VM_PHASE_RUNNING);

    // The old leader wakes, finds its lease gone, and exits (status 1) to restart as a follower.
    const vmsBeforeWake = await vmsVia(clients[1]!);
    controllers[0]!.child.kill("SIGCONT");
    const wokeAt = Date.now();
    expect(await Promise.race([controllers[0]!.exited, new Promise((r) => setTimeout(() => r("still running"), 15_000))])).toBe(1);
    expect(controllers[0]!.lines("no longer the leader").length).toBeGreaterThan(0);
    console.log(`failover: follower led ${tookOverMs} ms after the freeze; old leader exited ${Date.now() - wokeAt} ms after waking`);
    // Nothing it held changed the cluster: same VMs, and no operation ran twice on any host.
    expect(await vmsVia(clients[1]!)).toEqual(vmsBeforeWake);
    HOSTS.forEach((h, i) => {
      const ops = readFakeHypervisorState(join(dir, h)).operations;
      for (const [vmId, c] of Object.entries(countsBefore[i]!)) expect(ops[vmId]).toEqual(c);
    });
  }, 90_000);
});
