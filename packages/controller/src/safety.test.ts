/**
 * The holes found from outside in issue 8, each pinned down: the controller never deletes what it
 * does not know, never resends a failing command in a hot loop, never applies a result that
 * answers no command, never lets a second agent take a live host over, never believes a new agent
 * before its predecessor is fenced, and keeps its hosts apart from another cluster's.
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { DomainState, HostFailurePolicy, HostState, RejectReason, VmPhase, VmSpec, type Command, type Domain, type Host, type Vm } from "@berth/api";
import { MemoryStore } from "@berth/store";
import { ERA_FACTOR } from "./cluster-identity.js";
import { helloFor, operatorApi, rawAgent, resultFor, startController, waitFor, type Cleanups } from "./controller.testkit.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const domain = (vmId: string, state = DomainState.DOMAIN_STATE_RUNNING): Domain => ({ vmId, name: `old-${vmId.slice(0, 4)}`, state, generation: 3, resources: { vcpus: 1, memoryMib: 512, diskGib: 1 }, fence: false, interfaces: [], volumeIds: [], imageId: "" });
const ID_A = "00000000-0000-4000-8000-00000000000a";
const ID_B = "00000000-0000-4000-8000-00000000000b";

async function cluster(over: Parameters<typeof startController>[2] = {}) {
  const { controller, address } = await startController(cleanups, new MemoryStore(), over);
  await waitFor("leadership", () => controller.isLeader);
  const { client, call } = operatorApi(cleanups, address);
  const ops = {
    create: (name: string, requestId = "", over: Partial<VmSpec> = {}) =>
      call<{ vm?: Vm }>((m, o, cb) => client.createVm({ spec: VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 512, diskGib: 1 }, ...over }), requestId }, m, o, cb)).then((r) => r.vm!),
    vm: (name: string) => call<{ vm?: Vm }>((m, o, cb) => client.getVm({ name }, m, o, cb)).then((r) => r.vm!),
    host: (id: string) => call<{ host?: Host }>((m, o, cb) => client.getHost({ id }, m, o, cb)).then((r) => r.host!),
    retry: (name: string) => call<{ vm?: Vm }>((m, o, cb) => client.retryVm({ name }, m, o, cb)).then((r) => r.vm!),
    deleteOrphan: (hostId: string, vmId: string) => call((m, o, cb) => client.deleteOrphan({ hostId, vmId }, m, o, cb)),
    adoptOrphan: (hostId: string, vmId: string, name: string) => call<{ vm?: Vm }>((m, o, cb) => client.adoptOrphan({ hostId, vmId, name }, m, o, cb)).then((r) => r.vm!),
    confirmDown: (hostId: string) => call<{ host?: Host }>((m, o, cb) => client.confirmHostDown({ hostId }, m, o, cb)).then((r) => r.host!),
    cluster: () => call<{ cluster?: { id: string; era: number }; leaderEpoch: number }>((m, o, cb) => client.getCluster({}, m, o, cb)),
  };
  return { controller, address, ops };
}

/** Keeps a raw agent alive the way a real one does: a heartbeat every 100 ms. */
function heartbeat(agent: ReturnType<typeof rawAgent>): () => void {
  const timer = setInterval(() => agent.send({ $case: "heartbeat", value: { leaderEpoch: 0 } }), 100);
  const stop = () => clearInterval(timer);
  cleanups.push(stop);
  return stop;
}

describe("safety", () => {
  it("a controller on an empty store deletes no domain: they are listed as orphans, to delete or adopt on request", async () => {
    const { address, ops } = await cluster();
    const agent = rawAgent(cleanups, address, helloFor("h1", "boot-a", { inventory: { domains: [domain(ID_A), domain(ID_B, DomainState.DOMAIN_STATE_SHUTOFF)] } }), (c) => resultFor(c, { ok: true }));
    expect((await agent.first).msg?.$case).toBe("welcome");
    heartbeat(agent);
    agent.send({ $case: "report", value: { usage: undefined, inventory: undefined, hypervisor: { available: true, message: "" } } });
    const orphans = await waitFor("orphans listed", async () => ((await ops.host("h1")).orphans.length === 2 ? (await ops.host("h1")).orphans : undefined));
    expect(orphans.map((o) => o.vmId).sort()).toEqual([ID_A, ID_B]);
    await sleep(600);
    expect(agent.commands()).toEqual([]);

    await ops.deleteOrphan("h1", ID_A);
    expect(agent.commands()).toHaveLength(1);
    expect(agent.commands()[0]).toMatchObject({ vmId: ID_A, action: { $case: "delete" } });
    const adopted = await ops.adoptOrphan("h1", ID_B, "kept");
    expect(adopted).toMatchObject({ id: ID_B, hostId: "h1", spec: { name: "kept", resources: { vcpus: 1, memoryMib: 512 } } });
    const refused = (await ops.deleteOrphan("h1", ID_B).catch((e: unknown) => e)) as ServiceError;
    expect(refused.code).toBe(status.FAILED_PRECONDITION);
    expect(refused.details).toContain("is vm 'kept', not an orphan");
  });

  it("a failing command is retried with backoff, not in a hot loop; a permanent failure waits for `vm retry`", async () => {
    const { address, ops } = await cluster();
    let failWith = "HYPERVISOR_UNAVAILABLE";
    const agent = rawAgent(cleanups, address, helloFor("h1"), (c) => resultFor(c, { ok: false, code: failWith, message: "no" }));
    await agent.first;
    heartbeat(agent);
    await ops.create("web");
    await sleep(3_500);
    const attempts = agent.commands().length;
    // 1 s doubling, equal jitter: attempts at 0, 0.5–1, 1.5–3, 3.5–7 s. Before the fix: thousands.
    expect(attempts).toBeGreaterThanOrEqual(2);
    expect(attempts).toBeLessThanOrEqual(4);
    const status1 = (await ops.vm("web")).status!;
    expect(status1).toMatchObject({ phase: VmPhase.VM_PHASE_FAILED, errorCode: "HYPERVISOR_UNAVAILABLE", permanent: false });
    expect(status1.attempts).toBe(attempts);
    expect(status1.nextAttemptAtMs).toBeGreaterThan(Date.now() - 100);

    failWith = "INVALID_ARGUMENT";
    await ops.create("bad");
    await waitFor("bad failed", async () => (await ops.vm("bad")).status?.permanent === true);
    const badId = (await ops.vm("bad")).id;
    await sleep(1_500);
    expect(agent.commands().filter((c) => c.vmId === badId)).toHaveLength(1);
    expect((await ops.vm("bad")).status).toMatchObject({ phase: VmPhase.VM_PHASE_FAILED, permanent: true, attempts: 1, nextAttemptAtMs: 0 });

    failWith = "";
    const retried = await ops.retry("bad");
    expect(retried.generation).toBe(2);
    await waitFor("the retry sent", () => agent.commands().filter((c) => c.vmId === badId).length === 2);
  });

  it("a result that answers no command in flight changes nothing (replays, unknown ids, strays with domains)", async () => {
    const { address, ops } = await cluster();
    const creates: Command[] = [];
    const agent = rawAgent(cleanups, address, helloFor("h1"), (c) => {
      creates.push(c);
      return resultFor(c, { ok: true });
    });
    await agent.first;
    heartbeat(agent);
    const vm = await ops.create("web");
    await waitFor("running", async () => (await ops.vm("web")).status?.phase === VmPhase.VM_PHASE_RUNNING);
    const first = creates[0]!;
    // A replay of the create's result, failed this time; an unknown command id; strays with domains.
    agent.send({ $case: "result", value: { ...resultFor(first, { ok: false, code: "INTERNAL" }) } });
    agent.send({ $case: "result", value: { commandId: "nope-1", vmId: vm.id, generation: vm.generation, ok: false, errorCode: "INTERNAL", errorMessage: "forged", domain: undefined } });
    for (let i = 0; i < 50; i++) {
      const vmId = `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`;
      agent.send({ $case: "result", value: { commandId: `stray-${i}`, vmId, generation: 1, ok: true, errorCode: "", errorMessage: "", domain: domain(vmId) } });
    }
    agent.send({ $case: "report", value: { usage: undefined, inventory: undefined, hypervisor: { available: true, message: "" } } });
    await sleep(500);
    expect((await ops.vm("web")).status).toMatchObject({ phase: VmPhase.VM_PHASE_RUNNING, message: "" });
    expect((await ops.host("h1")).orphans).toEqual([]);
  });

  it("a second agent for a connected host is refused even while the first is briefly silent", async () => {
    const { address } = await cluster();
    const first = rawAgent(cleanups, address, helloFor("h1", "boot-a"));
    expect((await first.first).msg?.$case).toBe("welcome");
    // Silent for 3 report intervals (more than the 2 after which a session used to be replaced).
    await sleep(600);
    const second = rawAgent(cleanups, address, helloFor("h1", "boot-b"));
    expect((await second.first).msg).toMatchObject({ $case: "reject", value: { reason: RejectReason.REJECT_REASON_DUPLICATE_HOST } });
  });

  it("a new agent for a host is believed only once its predecessor is fenced: missing VMs are not started twice", async () => {
    const { address, ops } = await cluster({ fenceTimeoutMs: 1_000, fenceMarginMs: 500 });
    const first = rawAgent(cleanups, address, helloFor("h1", "boot-a"), (c) => resultFor(c, { ok: true }));
    await first.first;
    const stop = heartbeat(first);
    const vm = await ops.create("web");
    await waitFor("running", async () => (await ops.vm("web")).status?.phase === VmPhase.VM_PHASE_RUNNING);
    stop();
    first.close();
    const lostAt = Date.now();
    // Another process, another hypervisor: it reports no domain at all.
    const second = rawAgent(cleanups, address, helloFor("h1", "boot-b"), (c) => resultFor(c, { ok: true }));
    expect((await second.first).msg?.$case).toBe("welcome");
    heartbeat(second);
    await sleep(800);
    expect(second.commands().filter((c) => c.vmId === vm.id)).toEqual([]);
    const create = await waitFor("the create after the fence point", () => second.commands().find((c) => c.vmId === vm.id), 5_000);
    expect(create.action?.$case).toBe("create");
    expect(Date.now() - lostAt).toBeGreaterThanOrEqual(1_400);
  });

  it("refuses an agent of another cluster saying how to move it; epochs compare only within one cluster", async () => {
    const { address, ops } = await cluster();
    const { cluster: info, leaderEpoch } = await ops.cluster();
    expect(info?.id).toMatch(/^[0-9a-f-]{36}$/);
    const foreign = rawAgent(cleanups, address, helloFor("h1", "boot-a", { clusterId: "11111111-2222-4333-8444-555555555555", lastLeaderEpoch: 3 }));
    const reject = (await foreign.first).msg;
    expect(reject).toMatchObject({ $case: "reject", value: { reason: RejectReason.REJECT_REASON_FOREIGN_CLUSTER } });
    expect((reject?.value as { message: string }).message).toContain(`--join-cluster ${info!.id}`);
    // An agent that never joined a cluster, holding an epoch from elsewhere, is welcomed (was: STALE_EPOCH forever).
    const legacy = rawAgent(cleanups, address, helloFor("h2", "boot-a", { lastLeaderEpoch: leaderEpoch + 1000 }));
    expect((await legacy.first).msg).toMatchObject({ $case: "welcome", value: { clusterId: info!.id } });
    // An epoch of a later era than this leader's: a newer leader exists somewhere; this one is stale.
    const stale = rawAgent(cleanups, address, helloFor("h3", "boot-a", { clusterId: info!.id, lastLeaderEpoch: ERA_FACTOR + 5 }));
    expect((await stale.first).msg).toMatchObject({ $case: "reject", value: { reason: RejectReason.REJECT_REASON_STALE_EPOCH } });
  });

  it("after a restore from an older snapshot (an agent obeyed an epoch the store never reached) a new era begins and the agent comes back", async () => {
    const { address, ops } = await cluster();
    const { cluster: info, leaderEpoch } = await ops.cluster();
    expect(info?.era).toBe(0);
    const restored = rawAgent(cleanups, address, helloFor("h1", "boot-a", { clusterId: info!.id, lastLeaderEpoch: leaderEpoch + 100_000 }));
    const welcome = (await restored.first).msg;
    expect(welcome?.$case).toBe("welcome");
    expect((welcome?.value as { leaderEpoch: number }).leaderEpoch).toBeGreaterThan(leaderEpoch + 100_000);
    const after = await ops.cluster();
    expect(after.cluster).toMatchObject({ id: info!.id, era: 1 });
    expect(after.leaderEpoch).toBe(ERA_FACTOR + leaderEpoch);
  });

  it("heartbeats alone keep a host ready and are answered (a slow hypervisor delays reports, not liveness)", async () => {
    const { address, ops } = await cluster();
    const agent = rawAgent(cleanups, address, helloFor("h1"));
    await agent.first;
    heartbeat(agent);
    // Longer than the silence timeout (3 intervals + 1 s) with no Report at all.
    await sleep(2_500);
    expect((await ops.host("h1")).state).toBe(HostState.HOST_STATE_READY);
    expect(agent.received.filter((m) => m.msg?.$case === "heartbeat").length).toBeGreaterThanOrEqual(15);
  });

  it("creates are idempotent for a retry of the same request id", async () => {
    const { address, ops } = await cluster();
    await rawAgent(cleanups, address, helloFor("h1")).first;
    const a = await ops.create("web", "req-1");
    const again = await ops.create("web", "req-1");
    expect(again.id).toBe(a.id);
    const other = (await ops.create("web", "req-2").catch((e: unknown) => e)) as ServiceError;
    expect(other.code).toBe(status.ALREADY_EXISTS);
    const bad = (await ops.create("x", "no spaces").catch((e: unknown) => e)) as ServiceError;
    expect(bad.code).toBe(status.INVALID_ARGUMENT);
    expect(bad.details).toMatch(/^request_id:/);
  });
});

describe("failover", () => {
  it("a create while hosts reconnect to a new leader waits for them, and answers UNAVAILABLE (never no room) if they stay away", async () => {
    const store = new MemoryStore();
    const create = (address: string, name: string) => {
      const { client, call } = operatorApi(cleanups, address);
      return call<{ vm?: Vm }>((m, o, cb) => client.createVm({ spec: VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 512, diskGib: 1 } }), requestId: "" }, m, o, cb));
    };
    const first = await startController(cleanups, store, { controllerId: "first", reportIntervalMs: 1_000 });
    await waitFor("first leads", () => first.controller.isLeader);
    const h1 = rawAgent(cleanups, first.address, helloFor("h1"), (c) => resultFor(c, { ok: true }));
    expect((await h1.first).msg?.$case).toBe("welcome");

    // The leader changes; a create comes before the host is back, and gets it once it is.
    const second = await startController(cleanups, store, { controllerId: "second", reportIntervalMs: 1_000 });
    await first.controller.stop();
    await waitFor("second leads", () => second.controller.isLeader);
    const waiting = create(second.address, "early");
    await sleep(300);
    const back = rawAgent(cleanups, second.address, helloFor("h1"), (c) => resultFor(c, { ok: true }));
    expect((await back.first).msg?.$case).toBe("welcome");
    expect((await waiting).vm?.hostId).toBe("h1");

    // The leader changes again, and this time the host stays away.
    const third = await startController(cleanups, store, { controllerId: "third", reportIntervalMs: 1_000 });
    await second.controller.stop();
    back.close();
    await waitFor("third leads", () => third.controller.isLeader);
    const startedAt = Date.now();
    const away = (await create(third.address, "late").catch((e: unknown) => e)) as ServiceError;
    expect(away.code).toBe(status.UNAVAILABLE);
    expect(away.details).toMatch(/1 host\(s\) that were ready before the leader change have not reconnected to the new leader; retry/);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(1_000);
  });
});

describe("host failure", () => {
  it("walks a silent host to FENCED, restarts its restart-policy VMs elsewhere, keeps the others, and cleans up when it returns", async () => {
    const { address, ops } = await cluster({ fenceTimeoutMs: 1_000, fenceMarginMs: 500 });
    const h1 = rawAgent(cleanups, address, helloFor("h1", "boot-a"), (c) => resultFor(c, { ok: true }));
    await h1.first;
    const stopH1 = heartbeat(h1);
    const restart = await ops.create("db", "", { onHostFailure: HostFailurePolicy.HOST_FAILURE_POLICY_RESTART, pinnedHosts: [] });
    const keep = await ops.create("cache", "", { onHostFailure: HostFailurePolicy.HOST_FAILURE_POLICY_KEEP });
    expect([restart.hostId, keep.hostId]).toEqual(["h1", "h1"]);
    await waitFor("both running", async () => (await ops.vm("db")).status?.phase === VmPhase.VM_PHASE_RUNNING && (await ops.vm("cache")).status?.phase === VmPhase.VM_PHASE_RUNNING);
    const createDb = h1.commands().find((c) => c.vmId === restart.id && c.action?.$case === "create");
    expect(createDb?.action).toMatchObject({ value: { fence: true } });
    expect(h1.commands().find((c) => c.vmId === keep.id)?.action).toMatchObject({ value: { fence: false } });

    const h2 = rawAgent(cleanups, address, helloFor("h2", "boot-x"), (c) => resultFor(c, { ok: true }));
    await h2.first;
    heartbeat(h2);
    const h3 = rawAgent(cleanups, address, helloFor("h3", "boot-y"), (c) => resultFor(c, { ok: true }));
    await h3.first;
    heartbeat(h3);

    stopH1(); // frozen: the stream stays open, nothing more is heard
    const frozenAt = Date.now();
    await waitFor("SUSPECT", async () => (await ops.host("h1")).state === HostState.HOST_STATE_SUSPECT, 3_000);
    const suspectAfter = Date.now() - frozenAt;
    const fenced = await waitFor("FENCED", async () => {
      const h = await ops.host("h1");
      return h.state === HostState.HOST_STATE_FENCED ? h : undefined;
    }, 5_000);
    expect(Date.now() - frozenAt).toBeGreaterThanOrEqual(1_450);
    expect(fenced.fenceDeadlineMs).toBeGreaterThan(0);
    expect(suspectAfter).toBeLessThan(1_000);
    const moved = await waitFor("db restarted elsewhere", async () => {
      const vm = await ops.vm("db");
      return vm.hostId !== "h1" && vm.status?.phase === VmPhase.VM_PHASE_RUNNING ? vm : undefined;
    }, 5_000);
    expect(moved.id).toBe(restart.id);
    expect(moved.generation).toBeGreaterThan(restart.generation);
    expect((await ops.vm("cache")).hostId).toBe("h1");
    expect((await ops.vm("cache")).status?.phase).toBe(VmPhase.VM_PHASE_UNKNOWN);

    // The old host returns (the same agent process, on a new stream): its superseded copy goes.
    h1.close();
    const inventory = [
      { ...domain(restart.id, DomainState.DOMAIN_STATE_SHUTOFF), generation: restart.generation },
      { ...domain(keep.id), generation: keep.generation },
    ];
    const back = rawAgent(cleanups, address, helloFor("h1", "boot-a", { inventory: { domains: inventory } }), (c) => resultFor(c, { ok: true }));
    expect((await back.first).msg?.$case).toBe("welcome");
    heartbeat(back);
    const removal = await waitFor("the superseded copy removed", () => back.commands().find((c) => c.vmId === restart.id), 3_000);
    expect(removal.action?.$case).toBe("delete");
    await waitFor("cache running again", async () => (await ops.vm("cache")).status?.phase === VmPhase.VM_PHASE_RUNNING);
    expect(back.commands().filter((c) => c.vmId === keep.id)).toEqual([]);
    expect((await ops.host("h1")).state).toBe(HostState.HOST_STATE_READY);
  });

  it("confirm-down fences a silent host at once and is refused for a connected one", async () => {
    const { address, ops } = await cluster({ fenceTimeoutMs: 60_000 });
    const h1 = rawAgent(cleanups, address, helloFor("h1"));
    await h1.first;
    const stop = heartbeat(h1);
    const refused = (await ops.confirmDown("h1").catch((e: unknown) => e)) as ServiceError;
    expect(refused.code).toBe(status.FAILED_PRECONDITION);
    stop();
    h1.close();
    await waitFor("SUSPECT", async () => (await ops.host("h1")).state === HostState.HOST_STATE_SUSPECT);
    const host = await ops.confirmDown("h1");
    expect(host).toMatchObject({ state: HostState.HOST_STATE_FENCED, confirmedDown: true });
  });
});
