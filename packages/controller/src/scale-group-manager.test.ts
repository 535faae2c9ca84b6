/**
 * Scale groups in process: a controller on a memory store, scripted hosts that carry out creates
 * and deletes, the operator API over mutual TLS. Refusals write nothing; a group starts at its
 * min; `set` bounds the size at once (a SizeBounded decision, scale-in by the group's order, its
 * protected members kept); a new leader — over a record whose decision the old leader wrote but
 * did not act on — makes each missing member once, and makes nothing twice when it leads again.
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  DesiredState,
  ScaleGroup,
  Vm,
  VmPhase,
  VmSpec,
  ScaleInOrder,
  ScalePrediction,
  type Command,
  type CreateScaleGroupResponse,
  type DeleteScaleGroupResponse,
  type Domain,
  type GetScaleGroupResponse,
  type ListVmsResponse,
  type UpdateScaleGroupResponse,
  UpdateScaleGroupRequest,
} from "@berth/api";
import { campaign, MemoryStore } from "@berth/store";
import { ClusterState } from "./cluster-state.js";
import { FencedWriter } from "./fenced-writer.js";
import { NO_METRICS } from "./metrics.js";
import { ScaleGroupManager } from "./scale-group-manager.js";
import { helloFor, operatorApi, rawAgent, resultFor, silentLog, startController, waitFor, type Cleanups } from "./controller.testkit.js";
import { decodeScaleGroup, encodeScaleGroup, encodeVm, Keys } from "./keys.js";
import { applyDecision, initialMembers, memberSpec } from "./scale-groups.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const failure = (e: unknown): ServiceError => e as ServiceError;

const input = (over: Partial<ScaleGroup> = {}): ScaleGroup =>
  ScaleGroup.fromPartial({
    name: "web",
    template: { resources: { vcpus: 1, memoryMib: 256, diskGib: 1 } },
    minSize: 3,
    maxSize: 6,
    // The members report no CPU here: the autoscaler has nothing to act on, only the bounds do.
    policy: { targetCpu: 0.5, intervalMs: 1_000, prediction: ScalePrediction.SCALE_PREDICTION_OFF },
    ...over,
  });

/** Hosts that carry out what they are told; their domains survive the controller they talk to. */
const domainsOf = new Map<string, Map<string, Domain>>();
function host(address: string, hostId: string) {
  const domains = domainsOf.get(hostId) ?? new Map<string, Domain>();
  domainsOf.set(hostId, domains);
  const answer = (c: Command) => {
    const result = resultFor(c, { ok: true });
    if (result.domain) domains.set(c.vmId, result.domain);
    else domains.delete(c.vmId);
    return result;
  };
  const agent = rawAgent(cleanups, address, helloFor(hostId, "boot-a", { inventory: { domains: [...domains.values()] } }), answer);
  // Heard all along, as a real agent's heartbeats keep it.
  void agent.first.then((welcome) => {
    const leaderEpoch = welcome.msg?.$case === "welcome" ? welcome.msg.value.leaderEpoch : 0;
    const heartbeats = setInterval(() => agent.send({ $case: "heartbeat", value: { leaderEpoch } }), 100);
    cleanups.push(() => clearInterval(heartbeats));
  });
  return agent;
}

async function leader(store: MemoryStore, controllerId: string) {
  const { controller, address } = await startController(cleanups, store, { controllerId });
  await waitFor("leadership", () => controller.isLeader);
  for (const h of ["h1", "h2", "h3"]) expect((await host(address, h).first).msg?.$case).toBe("welcome");
  const { client, call } = operatorApi(cleanups, address);
  const api = {
    create: (g: ScaleGroup) => call<CreateScaleGroupResponse>((m, o, cb) => client.createScaleGroup({ group: g }, m, o, cb)).then((r) => r.group!),
    get: (name: string) => call<GetScaleGroupResponse>((m, o, cb) => client.getScaleGroup({ name }, m, o, cb)).then((r) => r.group!),
    update: (req: Partial<UpdateScaleGroupRequest>) => call<UpdateScaleGroupResponse>((m, o, cb) => client.updateScaleGroup(UpdateScaleGroupRequest.fromPartial(req), m, o, cb)).then((r) => r.group!),
    delete: (name: string, deleteVms: boolean) => call<DeleteScaleGroupResponse>((m, o, cb) => client.deleteScaleGroup({ name, deleteVms }, m, o, cb)).then((r) => r.group!),
    vmNames: () => call<ListVmsResponse>((m, o, cb) => client.listVms({ hostId: "", pageSize: 0, pageToken: "" }, m, o, cb)).then((r) => r.vms.map((v) => v.spec!.name).sort()),
  };
  return { controller, address, api };
}

describe("scale groups (in process)", () => {
  it("refuses bad input naming the field, an unknown placement group and a taken name, writing nothing", async () => {
    domainsOf.clear();
    const store = new MemoryStore();
    const { api } = await leader(store, "c1");
    const bad = failure(await api.create(input({ minSize: 7 })).catch((e: unknown) => e));
    expect(bad.code).toBe(status.INVALID_ARGUMENT);
    expect(bad.details).toMatch(/^group\.min_size: /);
    const policy = failure(await api.create(input({ policy: { ...input().policy!, targetCpu: 1.5 } })).catch((e: unknown) => e));
    expect(policy.code).toBe(status.INVALID_ARGUMENT);
    expect(policy.details).toMatch(/^group\.policy\.target_cpu: /);
    const noGroup = failure(await api.create(input({ template: { ...input().template!, group: "nope" } })).catch((e: unknown) => e));
    expect(noGroup.code).toBe(status.NOT_FOUND);
    expect(noGroup.details).toMatch(/placement group 'nope'/);
    expect(await store.get(Keys.scaleGroup("web"))).toBeUndefined();
    await api.create(input());
    expect(failure(await api.create(input()).catch((e: unknown) => e)).code).toBe(status.ALREADY_EXISTS);
    const unknown = failure(await api.update({ name: "web", protect: ["db-1"] }).catch((e: unknown) => e));
    expect(unknown.code).toBe(status.INVALID_ARGUMENT);
    expect(unknown.details).toMatch(/^protect\[0\]: 'db-1' is not a member/);
  });

  it("starts at its min; set bounds the size at once, scaling in by its order and keeping protected members", async () => {
    domainsOf.clear();
    const { api } = await leader(new MemoryStore(), "c1");
    await api.create(input({ minSize: 4, policy: { ...input().policy!, scaleInOrder: ScaleInOrder.SCALE_IN_ORDER_OLDEST_FIRST } }));
    await waitFor("four members made", async () => (await api.vmNames()).length === 4);
    expect(await api.vmNames()).toEqual(["web-1", "web-2", "web-3", "web-4"]);
    const bounded = await api.update({ name: "web", minSize: 1, maxSize: 2, protect: ["web-1"] });
    expect(bounded.members.map((m) => m.name)).toEqual(["web-1", "web-4"]);
    expect(bounded.decisions.at(-1)).toMatchObject({ reason: "SizeBounded", fromSize: 4, toSize: 2, removed: ["web-2", "web-3"] });
    expect(bounded.protectedMembers).toEqual(["web-1"]);
    await waitFor("the two removed", async () => (await api.vmNames()).join() === "web-1,web-4");
    const grown = await api.update({ name: "web", minSize: 3, maxSize: 3 });
    expect(grown.members.map((m) => m.name)).toEqual(["web-1", "web-4", "web-5"]);
    await waitFor("web-5 made", async () => (await api.vmNames()).join() === "web-1,web-4,web-5");
    const refused = failure(await api.delete("web", false).catch((e: unknown) => e));
    expect(refused.code).toBe(status.FAILED_PRECONDITION);
    expect(refused.details).toMatch(/has 3 VMs: delete them with it \(berth scalegroup delete web --delete-vms\)/);
    expect((await api.delete("web", true)).deleting).toBe(true);
    await waitFor("group and VMs gone", async () => (await api.vmNames()).length === 0 && !(await api.get("web").catch(() => undefined)));
  });

  it("a new leader makes the members a decision listed once, and nothing twice when it leads again", async () => {
    domainsOf.clear();
    const store = new MemoryStore();
    const first = await leader(store, "c1");
    await first.api.create(input());
    await waitFor("three members made", async () => (await first.api.vmNames()).length === 3);
    await first.controller.stop();
    // The old leader's last act: a scale-out to 5 written to the record, its VMs never made.
    const kv = (await store.get(Keys.scaleGroup("web")))!;
    const decided = applyDecision(
      decodeScaleGroup(kv.value),
      { decidedAtMs: 0, reason: "ScaledOut", fromSize: 3, toSize: 5, warmMembers: 3, warmingMembers: 0, cpuUtilization: 0.8, reactiveSize: 5, predictedSize: 0, predictedCores: 0, message: "test" },
      Date.now(),
    );
    await store.txn({ compare: [], ops: [{ type: "put", key: Keys.scaleGroup("web"), value: encodeScaleGroup(decided) }] });
    const second = await leader(store, "c2");
    await waitFor("five members", async () => (await second.api.vmNames()).length === 5).catch(async (e) => {
      console.error(JSON.stringify(await second.api.get("web")), await second.api.vmNames());
      throw e;
    });
    expect(await second.api.vmNames()).toEqual(["web-1", "web-2", "web-3", "web-4", "web-5"]);
    // Several intervals later (no CPU reported: nothing to act on) nothing more was made or decided.
    await new Promise((r) => setTimeout(r, 2_500));
    expect(await second.api.vmNames()).toEqual(["web-1", "web-2", "web-3", "web-4", "web-5"]);
    await second.controller.stop();
    const third = await leader(store, "c3");
    await new Promise((r) => setTimeout(r, 2_500));
    expect(await third.api.vmNames()).toEqual(["web-1", "web-2", "web-3", "web-4", "web-5"]);
    const g = (await third.api.get("web")).group!;
    expect(g.decisionCount).toBe(1);
    expect(g.nextIndex).toBe(6);
    const ids = [...domainsOf.values()].flatMap((d) => [...d.keys()]);
    expect(new Set(ids).size).toBe(5);
  });
});

describe("a lagging cache", () => {
  it("a decision made on a record the cache has not caught up with loses its compare: nothing a newer write did is undone", async () => {
    const store = new MemoryStore();
    const state = new ClusterState(store);
    await state.start();
    const leadership = await campaign(store, { key: Keys.leader, value: "test", ttlMs: 10_000 });
    const writer = new FencedWriter(store, leadership, () => undefined, NO_METRICS);
    cleanups.push(() => leadership.resign(), () => state.stop());
    const now = 1_000_000_000;
    // Two members, long past their warm-up, both at 95 % of their 2 vCPUs: the rule asks for 4.
    const group = ScaleGroup.fromPartial({
      ...input({ minSize: 2, maxSize: 4, template: VmSpec.fromPartial({ resources: { vcpus: 2, memoryMib: 256, diskGib: 1 } }) }),
      members: initialMembers("web", 2, now - 3_600_000),
      nextIndex: 3,
      generation: 1,
    });
    const put = async (key: string, value: Uint8Array): Promise<void> => {
      const { revision } = await store.txn({ compare: [], ops: [{ type: "put", key, value }] });
      await Promise.all([state.vms.waitForRevision(revision), state.scaleGroups.waitForRevision(revision)]);
    };
    await put(Keys.scaleGroup("web"), encodeScaleGroup(group));
    for (const name of ["web-1", "web-2"]) {
      const vm = Vm.fromPartial({ id: `id-${name}`, spec: memberSpec(group, group.members.find((m) => m.name === name)!), hostId: "h1", desiredState: DesiredState.DESIRED_STATE_RUNNING, status: { phase: VmPhase.VM_PHASE_RUNNING } });
      await put(Keys.vm(name), encodeVm(vm));
    }
    const sessions = new Map([["h1", { isLive: true, vmUsage: new Map([["id-web-1", { cpuCores: 1.9, memoryMib: 0 }], ["id-web-2", { cpuCores: 1.9, memoryMib: 0 }]]) }]]);
    // The cache as it was before any decision, for as long as the test runs (its watch lags).
    const staleKv = state.scaleGroups.getKv(Keys.scaleGroup("web"))!;
    const lagging = new Proxy(state, {
      get(target, prop, receiver) {
        if (prop === "scaleGroups") return { getKv: () => staleKv, waitForRevision: () => Promise.resolve() };
        if (prop === "allScaleGroups") return () => [decodeScaleGroup(staleKv.value)];
        const value = Reflect.get(target, prop, receiver) as unknown;
        return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const create = vi.fn(async () => []);
    let t = now;
    // Two managers (two looks, or a leader and its successor) on the same stale view.
    const managers = [0, 1].map(
      () => new ScaleGroupManager({ store, state: lagging, sessions: sessions as never, writer, placer: { create }, log: silentLog, now: () => t, tickMs: 3_600_000 }),
    );
    for (const m of managers) cleanups.push(() => m.stop());
    // Each one's first look only starts its clock; the next, an interval later, decides.
    for (const m of managers) await m.tick();
    t += 1_000;
    await managers[0]!.tick();
    const first = decodeScaleGroup((await store.get(Keys.scaleGroup("web")))!.value);
    expect(first.decisions.map((d) => [d.reason, d.fromSize, d.toSize])).toEqual([["ScaledOut", 2, 4]]);
    expect(first.members.map((m) => m.name)).toEqual(["web-1", "web-2", "web-3", "web-4"]);
    // Meanwhile an operator lowers the max to 3 (web-1 goes), as `set` writes it.
    const bounded = applyDecision({ ...first, maxSize: 3 }, { ...first.decisions[0]!, reason: "SizeBounded", fromSize: 4, toSize: 3, message: "the bounds are now 2..3" }, t, ["web-1"]);
    await store.txn({ compare: [], ops: [{ type: "put", key: Keys.scaleGroup("web"), value: encodeScaleGroup(bounded) }] });
    // The second look, still on the view from before both: its decision (2 → 4 again) would undo
    // the operator's change and bring web-1 back; it loses its compare instead, and so on every
    // look while the cache lags.
    await managers[1]!.tick();
    t += 1_000;
    for (const m of managers) await m.tick();
    const stored = decodeScaleGroup((await store.get(Keys.scaleGroup("web")))!.value);
    expect(stored.decisions.map((d) => [d.reason, d.fromSize, d.toSize])).toEqual([
      ["ScaledOut", 2, 4],
      ["SizeBounded", 4, 3],
    ]);
    expect(stored.maxSize).toBe(3);
    expect(stored.members.map((m) => m.name)).toEqual(["web-2", "web-3", "web-4"]);
    expect(stored.nextIndex).toBe(5);
  });
});
