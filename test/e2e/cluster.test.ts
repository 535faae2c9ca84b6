/**
 * The whole loop, as an operator runs it: a real etcd, a controller process and three agent
 * processes on fake hypervisors. Placement, spread, deletion, an agent killed and restarted, a
 * controller restarted, and bad requests that must change nothing.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status, type ServiceError } from "@grpc/grpc-js";
import { Etcd3 } from "etcd3";
import { afterAll, beforeAll, expect, it } from "vitest";
import { HostState, VmPhase, type Vm } from "@berth/api";
import { readFakeHypervisorState } from "@berth/hypervisor";
import { describeWithEtcd, startEtcd, type RunningEtcd } from "../support/etcd.js";
import { clusterClient, type ClusterClient } from "../support/grpc.js";
import { AGENT_BIN, CONTROLLER_BIN, freePort, Proc, waitFor } from "../support/processes.js";

const HOSTS = ["host-1", "host-2", "host-3"];
const VM_COUNT = 30;
const small = { vcpus: 1, memoryMib: 512, diskGib: 5 };

describeWithEtcd("end to end: controller + 3 agents on real etcd", () => {
  let etcd: RunningEtcd;
  let dir: string;
  let address: string;
  let controller: Proc;
  const agents = new Map<string, Proc>();
  let client: ClusterClient;
  let etcdClient: Etcd3;

  const startController = (): Proc =>
    new Proc("controller", CONTROLLER_BIN, ["--listen", address, "--etcd", etcd.endpoint, "--report-interval", "300", "--leader-ttl", "3000"]);
  const startAgent = (hostId: string): Proc =>
    new Proc(hostId, AGENT_BIN, [
      "--host-id", hostId,
      "--controller", address,
      "--driver", "fake",
      "--state-dir", join(dir, hostId),
      "--capacity", "vcpus=16,memory=32GiB,disk=1TiB",
    ]);
  const stateDir = (hostId: string): string => join(dir, hostId);
  const allVms = async (): Promise<Vm[]> => (await client.listVms({ hostId: "", pageSize: 0, pageToken: "" })).vms;
  const allRunning = async (): Promise<Vm[] | undefined> => {
    const vms = await allVms();
    return vms.length === VM_COUNT && vms.every((v) => v.status?.phase === VmPhase.VM_PHASE_RUNNING) ? vms : undefined;
  };
  const etcdRevision = async (): Promise<number> => Number((await etcdClient.getAll().prefix("/berth/").exec()).header.revision);
  const dumpLogs = (): void => {
    console.error([controller, ...agents.values()].map((p) => p.tail(30)).join("\n"));
  };

  beforeAll(async () => {
    etcd = await startEtcd();
    etcdClient = new Etcd3({ hosts: etcd.endpoint });
    dir = mkdtempSync(join(tmpdir(), "berth-e2e-"));
    address = `127.0.0.1:${await freePort()}`;
    controller = startController();
    for (const h of HOSTS) agents.set(h, startAgent(h));
    client = clusterClient(address);
    try {
      await waitFor("three ready hosts", async () => {
        const { hosts } = await client.listHosts({});
        return hosts.filter((h) => h.state === HostState.HOST_STATE_READY).length === 3;
      });
    } catch (e) {
      dumpLogs();
      throw e;
    }
  });

  afterAll(async () => {
    client?.close();
    await Promise.all([...agents.values()].map((a) => a.stop()));
    await controller?.stop();
    etcdClient?.close();
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("places 30 VMs created through the API, spread over the three hosts, all running", async () => {
    const created = await Promise.all(
      Array.from({ length: VM_COUNT }, (_, i) => client.createVm({ spec: { name: `vm-${i + 1}`, resources: small, labels: {} } })),
    );
    expect(new Set(created.map((r) => r.vm?.id)).size).toBe(VM_COUNT);
    const vms = await waitFor("30 running VMs", allRunning, 30_000).catch((e: unknown) => {
      dumpLogs();
      throw e;
    });
    const perHost = new Map<string, number>();
    for (const vm of vms) perHost.set(vm.hostId, (perHost.get(vm.hostId) ?? 0) + 1);
    // Least-allocated spread over identical hosts places identical VMs evenly.
    expect([...perHost.entries()].sort()).toEqual(HOSTS.map((h) => [h, 10]));
    // Each hypervisor holds exactly the VMs placed on it, running.
    for (const h of HOSTS) {
      const domains = readFakeHypervisorState(stateDir(h)).domains;
      expect(domains.map((d) => d.vmId).sort()).toEqual(vms.filter((v) => v.hostId === h).map((v) => v.id).sort());
    }
  });

  it("refuses a VM too big for any host with RESOURCE_EXHAUSTED and reasons, writing nothing", async () => {
    const before = await etcdRevision();
    const err = (await client
      .createVm({ spec: { name: "huge", resources: { vcpus: 4, memoryMib: 512 * 1024, diskGib: 10 }, labels: {} } })
      .catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    for (const h of HOSTS) expect(err.details).toMatch(new RegExp(`${h}.*memory`));
    expect(await etcdRevision()).toBe(before);
    expect((await etcdClient.get("/berth/v1/vms/huge").exec()).kvs).toHaveLength(0);
  });

  it("refuses a malformed spec with INVALID_ARGUMENT naming the field, writing nothing", async () => {
    const before = await etcdRevision();
    const bad = [
      [{ name: "Bad_Name", resources: small, labels: {} }, "spec.name"],
      [{ name: "ok-name", resources: { ...small, memoryMib: 0 }, labels: {} }, "spec.resources.memory_mib"],
      [{ name: "ok-name", resources: undefined, labels: {} }, "spec.resources"],
    ] as const;
    for (const [spec, field] of bad) {
      const err = (await client.createVm({ spec }).catch((e: unknown) => e)) as ServiceError;
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.details.startsWith(`${field}:`)).toBe(true);
    }
    expect(await etcdRevision()).toBe(before);
  });

  it("keeps a SIGKILLed agent's VMs in place after restart, executing no command twice", async () => {
    const victim = "host-2";
    const vmsThere = (await allVms()).filter((v) => v.hostId === victim);
    expect(vmsThere.length).toBeGreaterThan(0);
    const before = readFakeHypervisorState(stateDir(victim));

    await agents.get(victim)!.stop("SIGKILL");
    await waitFor("host-2 no longer ready", async () => (await client.getHost({ id: victim })).host?.state !== HostState.HOST_STATE_READY);
    agents.set(victim, startAgent(victim));
    await waitFor("host-2 ready again with its VMs running", async () => {
      const host = (await client.getHost({ id: victim })).host;
      return host?.state === HostState.HOST_STATE_READY && (await allRunning()) !== undefined;
    });
    // The same VMs, on the same host, and every operation counter unchanged: nothing was redone.
    const after = readFakeHypervisorState(stateDir(victim));
    expect(after.domains.map((d) => d.vmId).sort()).toEqual(vmsThere.map((v) => v.id).sort());
    expect(after.operations).toEqual(before.operations);
    for (const v of vmsThere) expect(after.operations[v.id]).toMatchObject({ define: 1, start: 1 });
  });

  it("loses nothing when the controller restarts: VMs, hosts and placements come back from etcd", async () => {
    const before = (await allVms()).map((v) => [v.spec?.name, v.id, v.hostId, v.generation]);
    expect(await controller.stop("SIGTERM")).toBe(0);
    const restartedAt = Date.now();
    controller = startController();
    const vms = await waitFor("the new controller to serve all VMs running", allRunning, 30_000);
    expect(vms.map((v) => [v.spec?.name, v.id, v.hostId, v.generation])).toEqual(before);
    // Every agent has said Hello to the new controller (the records are rewritten on Hello).
    await waitFor("all agents reconnected", async () => {
      const { hosts } = await client.listHosts({});
      return hosts.length === 3 && hosts.every((h) => h.state === HostState.HOST_STATE_READY && h.lastSeenMs >= restartedAt);
    });
    // The new leader places and runs new VMs.
    await client.createVm({ spec: { name: "after-restart", resources: small, labels: {} } });
    await waitFor("the new VM running", async () => (await client.getVm({ name: "after-restart" })).vm?.status?.phase === VmPhase.VM_PHASE_RUNNING);
    await client.deleteVm({ name: "after-restart" });
    await waitFor("the new VM gone", async () => !(await allVms()).some((v) => v.spec?.name === "after-restart"));
    for (const h of HOSTS) {
      for (const counts of Object.values(readFakeHypervisorState(stateDir(h)).operations)) {
        expect(counts).toMatchObject({ define: 1, start: 1 });
      }
    }
  });

  it("deletes VMs from the fake hypervisors and then from the cluster", async () => {
    await Promise.all((await allVms()).map((v) => client.deleteVm({ name: v.spec!.name })));
    await waitFor("no VMs left", async () => (await allVms()).length === 0, 30_000);
    for (const h of HOSTS) expect(readFakeHypervisorState(stateDir(h)).domains).toEqual([]);
    expect((await etcdClient.getAll().prefix("/berth/v1/vms/").keys())).toEqual([]);
  });
});
