/**
 * The controller in process, on the embedded store, with real gRPC and in-process agents on fake
 * hypervisors: what the agent stream and the operator API promise, short of separate processes
 * (test/e2e covers those, on real etcd).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import {
  ClusterServiceClient,
  DomainState,
  HostState,
  RejectReason,
  VmPhase,
  VmSpec,
} from "@berth/api";
import { deadlineIn, grpcClientOptions, LEADER_METADATA_KEY, Limits } from "@berth/core";
import { Agent, resolveAgentOptions } from "@berth/agent";
import { FakeDriver, readFakeHypervisorState } from "@berth/hypervisor";
import { MemoryStore } from "@berth/store";
import { credentialsFor, helloFor, rawAgent, silentLog, startController, tlsFilesFor, waitFor, type Cleanups } from "./controller.testkit.js";

const log = silentLog;
const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function api(address: string) {
  const client = new ClusterServiceClient(address, credentialsFor(address, "admin", "admin"), grpcClientOptions());
  cleanups.push(() => client.close());
  const opts = () => ({ deadline: deadlineIn(5_000) });
  const p = <T>(fn: (cb: (e: ServiceError | null, r: T) => void) => void): Promise<T> =>
    new Promise((resolve, reject) => fn((e, r) => (e ? reject(e) : resolve(r))));
  return {
    createVm: (name: string, vcpus = 1, memoryMib = 1024) =>
      p<{ vm?: { hostId: string; id: string } }>((cb) => client.createVm({ spec: VmSpec.fromPartial({ name, resources: { vcpus, memoryMib, diskGib: 1 } }), requestId: "" }, new Metadata(), opts(), cb)),
    getVm: (name: string) => p((cb) => client.getVm({ name }, new Metadata(), opts(), cb)),
    stopVm: (name: string, force = false) => p((cb) => client.stopVm({ name, force }, new Metadata(), opts(), cb)),
    startVm: (name: string) => p((cb) => client.startVm({ name }, new Metadata(), opts(), cb)),
    deleteVm: (name: string) => p((cb) => client.deleteVm({ name }, new Metadata(), opts(), cb)),
    listVms: (pageSize = 0, pageToken = "") =>
      p<{ vms: { spec?: { name: string } }[]; nextPageToken: string }>((cb) => client.listVms({ hostId: "", pageSize, pageToken }, new Metadata(), opts(), cb)),
    listHosts: () => p((cb) => client.listHosts({}, new Metadata(), opts(), cb)),
  };
}

/** An in-process agent on a fake hypervisor in a temp dir. */
async function startAgent(hostId: string, address: string, capacity = { vcpus: 4, memoryMib: 8192, diskGib: 100 }) {
  const stateDir = mkdtempSync(join(tmpdir(), `berth-${hostId}-`));
  const driver = new FakeDriver({ stateDir, capacity });
  const tls = await tlsFilesFor(address, "host", hostId);
  const agent = new Agent(resolveAgentOptions({ hostId, controllers: [address], ...(tls ? { tls } : {}), driver: "fake", stateDir, minBackoffMs: 50, maxBackoffMs: 200 }), driver, 0, log);
  const abort = new AbortController();
  const running = agent.run(abort.signal);
  cleanups.push(async () => {
    abort.abort();
    await running.catch(() => undefined);
    await driver.close();
    rmSync(stateDir, { recursive: true, force: true });
  });
  return { stateDir, driver };
}

describe("controller", () => {
  it("welcomes a host, and rejects a second live stream for the same host id with a reason", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    const first = await rawAgent(cleanups, address, helloFor("h1")).first;
    expect(first.msg?.$case).toBe("welcome");
    // Keep the first stream live by reporting.
    const second = await rawAgent(cleanups, address, helloFor("h1", "boot-b")).first;
    expect(second.msg).toMatchObject({ $case: "reject", value: { reason: RejectReason.REJECT_REASON_DUPLICATE_HOST } });
    expect((second.msg?.value as { message: string }).message).toContain("already connected");
  });

  it("rejects an invalid Hello naming the field, and records nothing", async () => {
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store);
    await waitFor("leadership", () => controller.isLeader);
    const answer = await rawAgent(cleanups, address, { ...helloFor("h1"), capacity: { vcpus: 0, memoryMib: 1, diskGib: 0 } }).first;
    expect(answer.msg).toMatchObject({ $case: "reject", value: { reason: RejectReason.REJECT_REASON_INVALID_HELLO } });
    expect((answer.msg?.value as { message: string }).message).toMatch(/^hello\.capacity\.vcpus:/);
    expect((await store.list("/berth/v1/hosts/")).items).toEqual([]);
  });

  it("places within a host's own reserve and ratios, and rejects a reserve larger than the host", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    // 16 GiB host keeping 12 GiB for itself: 4 GiB allocatable, whatever the cluster's reserve.
    const welcome = await rawAgent(cleanups, address, { ...helloFor("h1"), reserved: { vcpus: 0, memoryMib: 12 * 1024, diskGib: 0 }, allocationRatio: { vcpus: 1, memory: 0, disk: 0 } }).first;
    expect(welcome.msg?.$case).toBe("welcome");
    const client = api(address);
    const err = (await client.createVm("big", 1, 6 * 1024).catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(err.details).toContain("memory_mib: needs 6144 MiB, 4096 MiB free of 4096 allocatable");
    // CPU ratio 1 on 8 cores: a 9-vCPU VM does not fit (the cluster's ratio 4 would allow it).
    const cpu = (await client.createVm("wide", 9, 512).catch((e: unknown) => e)) as ServiceError;
    expect(cpu.details).toContain("vcpus: needs 9");
    expect((await client.createVm("fits", 1, 4 * 1024)).vm?.hostId).toBe("h1");

    const bad = await rawAgent(cleanups, address, { ...helloFor("h2"), reserved: { vcpus: 0, memoryMib: 32 * 1024, diskGib: 0 } }).first;
    expect(bad.msg).toMatchObject({ $case: "reject", value: { reason: RejectReason.REJECT_REASON_INVALID_HELLO } });
    expect((bad.msg?.value as { message: string }).message).toMatch(/^hello\.reserved\.memory_mib:/);
  });

  it("keeps new VMs off a host whose hypervisor is down, shows why, and uses it again once it is back", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    const h1 = await startAgent("h1", address);
    await startAgent("h2", address);
    const client = api(address);
    const hostsView = async () => (await client.listHosts()) as { hosts: { id: string; hypervisor?: { available: boolean; message: string }; facts?: { hypervisorVersion: string } }[] };
    await waitFor("two hosts", async () => (await hostsView()).hosts.length === 2);
    expect((await hostsView()).hosts.every((h) => h.facts?.hypervisorVersion)).toBe(true);

    // A long reason (libvirt's can be) is cut to the bound, not a reason to drop the report.
    h1.driver.faults.makeUnavailable({ message: `libvirtd is down: ${"x".repeat(1000)}` });
    const down = await waitFor("h1's hypervisor reported down", async () =>
      (await hostsView()).hosts.find((h) => h.id === "h1" && h.hypervisor?.available === false),
    );
    expect(down.hypervisor?.message).toMatch(/^libvirtd is down: x+$/);
    expect(down.hypervisor?.message.length).toBe(Limits.maxFactLength);
    // Spread would alternate between two equal hosts; with h1's hypervisor down all go to h2.
    for (const name of ["a", "b", "c"]) expect((await client.createVm(name, 1, 512)).vm?.hostId).toBe("h2");

    h1.driver.faults.makeAvailable();
    await waitFor("h1's hypervisor reported back", async () => (await hostsView()).hosts.find((h) => h.id === "h1" && h.hypervisor?.available === true));
    expect((await client.createVm("d", 1, 512)).vm?.hostId).toBe("h1");
  });

  it("shows what a host's VMs use, from the hypervisor's counters (the fake's simulated load)", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    const { driver } = await startAgent("h1", address, { vcpus: 16, memoryMib: 65536, diskGib: 1000 });
    const client = api(address);
    await waitFor("the host", async () => ((await client.listHosts()) as { hosts: unknown[] }).hosts.length === 1);
    const vm = (await client.createVm("busy", 4, 8192)).vm!;
    await waitFor("the domain running", async () => (await driver.list()).some((d) => d.vmId === vm.id && d.state === DomainState.DOMAIN_STATE_RUNNING));
    // Three of its four vCPUs busy, a quarter of its memory in use.
    driver.setLoad(vm.id, { cpu: { kind: "constant", fraction: 0.75 }, memory: { kind: "constant", fraction: 0.25 } });
    const usage = await waitFor("usage from the counters", async () => {
      const { hosts } = (await client.listHosts()) as { hosts: { usage?: { vcpus: number; memoryMib: number } }[] };
      const u = hosts[0]?.usage;
      return u && u.memoryMib === 2048 && u.vcpus === 3 ? u : undefined;
    });
    // Not what the VM was given (4 vCPUs, 8 GiB): what it uses.
    expect(usage).toMatchObject({ vcpus: 3, memoryMib: 2048 });
  });

  it("never shows a VM going back from RUNNING because a report read the hypervisor before the command's result", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    const { driver } = await startAgent("h1", address);
    const client = api(address);
    await waitFor("the host", async () => ((await client.listHosts()) as { hosts: unknown[] }).hosts.length === 1);
    // A slow start (libvirt's takes ~600 ms) and slow reads after the inventory snapshot (libvirt's
    // counters take ~60 ms), exaggerated: a report's snapshot, taken while the domain is still starting, would
    // reach the controller after the command's result.
    driver.faults.addLatency({ op: "start", ms: 300 });
    driver.faults.addLatency({ op: "stats", ms: 400 });
    const phases: VmPhase[] = [];
    for (const name of ["a", "b", "c"]) {
      await client.createVm(name, 1, 512);
      const phase = async () => ((await client.getVm(name)) as { vm: { status: { phase: VmPhase } } }).vm.status.phase;
      await waitFor(`${name} running`, async () => (await phase()) === VmPhase.VM_PHASE_RUNNING);
      for (const end = Date.now() + 600; Date.now() < end; ) phases.push(await phase());
    }
    expect(phases.filter((p) => p !== VmPhase.VM_PHASE_RUNNING)).toEqual([]);
  });

  it("a follower sends agents and operators to the leader", async () => {
    const store = new MemoryStore();
    const leader = await startController(cleanups, store, { controllerId: "leader" });
    await waitFor("leadership", () => leader.controller.isLeader);
    const follower = await startController(cleanups, store, { controllerId: "follower" });
    expect(follower.controller.isLeader).toBe(false);
    const answer = await rawAgent(cleanups, follower.address, helloFor("h1")).first;
    expect(answer.msg).toEqual({ $case: "notLeader", value: { leaderAddress: leader.address } });
    const err = (await api(follower.address).listVms().catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe(status.UNAVAILABLE);
    expect(err.metadata.get(LEADER_METADATA_KEY)).toEqual([leader.address]);
  });

  it("never overfills a host under concurrent creates", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    // Two hosts with room for 3 VMs of 2 GiB each (8 GiB - 1 GiB reserved = 7 GiB allocatable).
    await startAgent("h1", address);
    await startAgent("h2", address);
    const client = api(address);
    await waitFor("two hosts", async () => ((await client.listHosts()) as { hosts: unknown[] }).hosts.length === 2);
    const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => client.createVm(`vm-${i}`, 1, 2048)));
    const placed = results.filter((r) => r.status === "fulfilled");
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(placed).toHaveLength(6);
    for (const r of refused) expect((r.reason as ServiceError).code).toBe(status.RESOURCE_EXHAUSTED);
    const perHost = new Map<string, number>();
    for (const r of placed) {
      const host = (r as PromiseFulfilledResult<{ vm?: { hostId: string } }>).value.vm!.hostId;
      perHost.set(host, (perHost.get(host) ?? 0) + 1);
    }
    expect([...perHost.values()]).toEqual([3, 3]);
  });

  it("lists VMs in pages, in name order, and refuses an oversized page", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    await startAgent("h1", address, { vcpus: 64, memoryMib: 65536, diskGib: 1000 });
    const client = api(address);
    await waitFor("host", async () => ((await client.listHosts()) as { hosts: unknown[] }).hosts.length === 1);
    const names = ["e", "a", "g", "c", "b", "f", "d"].map((n) => `vm-${n}`);
    for (const n of names) await client.createVm(n);
    const seen: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await client.listVms(3, token);
      expect(page.vms.length).toBeLessThanOrEqual(3);
      seen.push(...page.vms.map((v) => v.spec!.name));
      token = page.nextPageToken;
      pages++;
    } while (token);
    expect(pages).toBe(3);
    expect(seen).toEqual([...names].sort());
    const err = (await client.listVms(5001).catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/^page_size: at most 5000/);
  });

  it("drives a VM through stop, start (force too) and delete on its host", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    const { stateDir } = await startAgent("h1", address);
    const client = api(address);
    await waitFor("host", async () => ((await client.listHosts()) as { hosts: { state: HostState }[] }).hosts[0]?.state === HostState.HOST_STATE_READY);
    await client.createVm("web-1");
    const phase = async () => ((await client.getVm("web-1")) as { vm: { status: { phase: VmPhase } } }).vm.status.phase;
    const domainState = () => readFakeHypervisorState(stateDir).domains[0]?.state;
    await waitFor("running", async () => (await phase()) === VmPhase.VM_PHASE_RUNNING);
    expect(domainState()).toBe(DomainState.DOMAIN_STATE_RUNNING);
    // The host's answer carries what is allocated on it and the live usage its agent reports.
    const hostNow = async () => ((await client.listHosts()) as { hosts: { allocated?: object; usage?: object; lastSeenMs: number }[] }).hosts[0]!;
    expect((await hostNow()).allocated).toEqual({ vcpus: 1, memoryMib: 1024, diskGib: 1 });
    // The fake's default load: a quarter of its one vCPU (rounded up to 1), half its memory.
    await waitFor("usage reported", async () => JSON.stringify((await hostNow()).usage) === JSON.stringify({ vcpus: 1, memoryMib: 512, diskGib: 1 }));
    expect(Date.now() - (await hostNow()).lastSeenMs).toBeLessThan(2_000);

    await client.stopVm("web-1", true);
    await waitFor("stopped", async () => (await phase()) === VmPhase.VM_PHASE_STOPPED);
    expect(domainState()).toBe(DomainState.DOMAIN_STATE_SHUTOFF);
    // Asking again changes nothing (no new generation).
    const gen = ((await client.getVm("web-1")) as { vm: { generation: number } }).vm.generation;
    await client.stopVm("web-1", true);
    expect(((await client.getVm("web-1")) as { vm: { generation: number } }).vm.generation).toBe(gen);

    await client.startVm("web-1");
    await waitFor("running again", async () => (await phase()) === VmPhase.VM_PHASE_RUNNING);
    await client.deleteVm("web-1");
    await waitFor("gone", async () => ((await client.listVms()) as { vms: unknown[] }).vms.length === 0);
    expect(readFakeHypervisorState(stateDir).domains).toEqual([]);
    const err = (await client.getVm("web-1").catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe(status.NOT_FOUND);
  });
});
