/**
 * berth-sim end to end: a real etcd, a controller process and one berth-sim process holding 20
 * hollow hosts (real agents, in-memory fake hypervisors). Every host READY, 40 VMs placed and
 * RUNNING across them, and a SIGTERM that ends the process cleanly and leaves the hosts SUSPECT.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { HostState, VmPhase, type Vm } from "@berth/api";
import { describeWithEtcd, startEtcd, type RunningEtcd } from "../support/etcd.js";
import { clusterClient, type ClusterClient } from "../support/grpc.js";
import { CONTROLLER_BIN, freePort, Proc, SIM_BIN, waitFor } from "../support/processes.js";

const HOSTS = 20;
const VM_COUNT = 40;
const small = { vcpus: 1, memoryMib: 512, diskGib: 5 };

describeWithEtcd("end to end: controller + berth-sim with 20 hollow hosts on real etcd", () => {
  let etcd: RunningEtcd;
  let address: string;
  let controller: Proc;
  let sim: Proc;
  let client: ClusterClient;

  const dumpLogs = (): void => {
    console.error([controller, sim].filter(Boolean).map((p) => p.tail(30)).join("\n"));
  };
  const allVms = async (): Promise<Vm[]> => (await client.listVms({ hostId: "", pageSize: 0, pageToken: "" })).vms;

  beforeAll(async () => {
    etcd = await startEtcd();
    address = `127.0.0.1:${await freePort()}`;
    controller = new Proc("controller", CONTROLLER_BIN, ["--listen", address, "--etcd", etcd.endpoint, "--report-interval", "500", "--leader-ttl", "3000", "--insecure"], { LOG_LEVEL: "info" });
    sim = new Proc("sim", SIM_BIN, ["--hosts", String(HOSTS), "--controller", address, "--capacity", "vcpus=8,memory=16GiB,disk=500GiB", "--start-spread", "1000", "--insecure"], {
      LOG_LEVEL: "info",
    });
    // Plaintext: a certificate per hollow host is what --tls-dir takes; this suite is about scale.
    client = clusterClient(address, "insecure");
  });

  afterAll(async () => {
    client?.close();
    await sim?.stop("SIGKILL");
    await controller?.stop();
    await etcd?.stop();
  });

  it("brings all 20 hosts READY, named by the prefix", async () => {
    const hosts = await waitFor(
      "20 ready hosts",
      async () => {
        const { hosts } = await client.listHosts({});
        return hosts.filter((h) => h.state === HostState.HOST_STATE_READY).length === HOSTS ? hosts : undefined;
      },
      15_000,
    ).catch((e: unknown) => {
      dumpLogs();
      throw e;
    });
    expect(hosts.map((h) => h.id).sort()).toEqual(Array.from({ length: HOSTS }, (_, i) => `sim-${String(i + 1).padStart(4, "0")}`));
    for (const h of hosts) expect(h.capacity).toMatchObject({ vcpus: 8, memoryMib: 16384, diskGib: 500 });
  });

  it("runs 40 VMs created through the API, spread over the hollow hosts", async () => {
    const created = await Promise.all(
      Array.from({ length: VM_COUNT }, (_, i) => client.createVm({ spec: { name: `vm-${i + 1}`, resources: small, labels: {} } })),
    );
    expect(new Set(created.map((r) => r.vm?.id)).size).toBe(VM_COUNT);
    const vms = await waitFor(
      "40 running VMs",
      async () => {
        const vms = await allVms();
        return vms.length === VM_COUNT && vms.every((v) => v.status?.phase === VmPhase.VM_PHASE_RUNNING) ? vms : undefined;
      },
      15_000,
    ).catch((e: unknown) => {
      dumpLogs();
      throw e;
    });
    const perHost = new Map<string, number>();
    for (const vm of vms) perHost.set(vm.hostId, (perHost.get(vm.hostId) ?? 0) + 1);
    // Least-allocated spread over 20 identical hosts: two each.
    expect(perHost.size).toBe(HOSTS);
    expect(Math.max(...perHost.values())).toBe(2);
  });

  it("exits 0 on SIGTERM, and the controller then sees every host SUSPECT", async () => {
    expect(sim.running).toBe(true);
    const code = await sim.stop("SIGTERM", 10_000);
    expect(code).toBe(0);
    await waitFor(
      "every host suspect",
      async () => {
        const { hosts } = await client.listHosts({});
        return hosts.length === HOSTS && hosts.every((h) => h.state === HostState.HOST_STATE_SUSPECT);
      },
      10_000,
    ).catch((e: unknown) => {
      dumpLogs();
      throw e;
    });
  });
});
