/**
 * The operator's host verbs in process (LabelHost, DeleteHost): a controller on a memory store,
 * scripted agents, the operator API over mutual TLS.
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { Host as HostMessage, VmSpec, type GetHostResponse, type Host, type LabelHostResponse, type ListHostsResponse, type ListVmsResponse, type CreateVmResponse } from "@berth/api";
import { MemoryStore } from "@berth/store";
import { helloFor, operatorApi, rawAgent, resultFor, startController, waitFor, type Cleanups } from "./controller.testkit.js";
import { encodeHost, Keys } from "./keys.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const spec = (name: string, over: Partial<VmSpec> = {}): VmSpec => VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 256, diskGib: 1 }, ...over });

/** A leading controller with the operator API as an admin. */
async function cluster(store = new MemoryStore()) {
  const { controller, address } = await startController(cleanups, store);
  await waitFor("leadership", () => controller.isLeader);
  const { client, call } = operatorApi(cleanups, address);
  const api = {
    label: (hostId: string, set: Record<string, string>, remove: string[] = []) =>
      call<LabelHostResponse>((m, o, cb) => client.labelHost({ hostId, set, remove }, m, o, cb)).then((r) => r.host as Host),
    host: (id: string) => call<GetHostResponse>((m, o, cb) => client.getHost({ id }, m, o, cb)).then((r) => r.host as Host),
    hosts: () => call<ListHostsResponse>((m, o, cb) => client.listHosts({}, m, o, cb)).then((r) => r.hosts),
    deleteHost: (hostId: string) => call((m, o, cb) => client.deleteHost({ hostId }, m, o, cb)),
    create: (s: VmSpec) => call<CreateVmResponse>((m, o, cb) => client.createVm({ spec: s, requestId: "" }, m, o, cb)).then((r) => r.vm!),
    deleteVm: (name: string) => call((m, o, cb) => client.deleteVm({ name }, m, o, cb)),
    vms: () => call<ListVmsResponse>((m, o, cb) => client.listVms({ hostId: "", pageSize: 0, pageToken: "" }, m, o, cb)).then((r) => r.vms),
  };
  return { controller, address, store, api };
}

/** An agent that carries out every command it is sent. */
const obedient = (address: string, hostId: string, labels: Record<string, string> = {}, bootId = "boot-a") =>
  rawAgent(cleanups, address, helloFor(hostId, bootId, { labels }), (c) => resultFor(c, { ok: true }));

const failure = (e: unknown): ServiceError => e as ServiceError;

/** An obedient agent for a host whose previous stream was just closed: retried while the controller still holds the old one. */
async function reconnect(address: string, hostId: string, labels: Record<string, string>, bootId: string) {
  return waitFor(`${hostId} welcomed again`, async () => {
    const agent = obedient(address, hostId, labels, bootId);
    if ((await agent.first).msg?.$case === "welcome") return agent;
    agent.close();
    return undefined;
  });
}

describe("LabelHost", () => {
  it("sets and removes operator labels; labels are the agent's with the operator's over them", async () => {
    const { address, api } = await cluster();
    expect((await obedient(address, "h1", { zone: "a", rack: "r0" }).first).msg?.$case).toBe("welcome");

    const set = await api.label("h1", { rack: "r1", ssd: "true" });
    expect(set.operatorLabels).toEqual({ rack: "r1", ssd: "true" });
    expect(set.agentLabels).toEqual({ zone: "a", rack: "r0" });
    expect(set.labels).toEqual({ zone: "a", rack: "r1", ssd: "true" });

    // Removing the operator's rack shows the agent's again.
    const removed = await api.label("h1", {}, ["rack"]);
    expect(removed.operatorLabels).toEqual({ ssd: "true" });
    expect(removed.labels).toEqual({ zone: "a", rack: "r0", ssd: "true" });
    expect((await api.host("h1")).labels).toEqual(removed.labels);
  });

  it("keeps operator labels when the agent reconnects with other labels", async () => {
    const { address, api } = await cluster();
    const first = obedient(address, "h1", { zone: "a" });
    expect((await first.first).msg?.$case).toBe("welcome");
    await api.label("h1", { rack: "r1" });
    first.close();
    // The agent restarts with another --label.
    await reconnect(address, "h1", { zone: "b" }, "boot-b");
    const h = await waitFor("the new agent labels", async () => {
      const found = await api.host("h1");
      return found.agentLabels["zone"] === "b" ? found : undefined;
    });
    expect(h.operatorLabels).toEqual({ rack: "r1" });
    expect(h.labels).toEqual({ zone: "b", rack: "r1" });
  });

  it("steers placement: a VM requiring an operator label lands on the host that has it", async () => {
    const { address, api } = await cluster();
    for (const id of ["h1", "h2", "h3"]) expect((await obedient(address, id, { ssd: "false" }).first).msg?.$case).toBe("welcome");
    const none = failure(await api.create(spec("db-0", { requiredHostLabels: { ssd: "true" } })).catch((e: unknown) => e));
    expect(none.code).toBe(status.RESOURCE_EXHAUSTED);
    // The operator's value wins over the agent's ssd=false.
    await api.label("h2", { ssd: "true" });
    for (const name of ["db-1", "db-2", "db-3"]) {
      expect((await api.create(spec(name, { requiredHostLabels: { ssd: "true" } }))).hostId).toBe("h2");
    }
    expect((await api.create(spec("web-1", { forbiddenHostLabels: { ssd: "true" } }))).hostId).not.toBe("h2");
  });

  it("refuses to remove a label only the agent sets (FAILED_PRECONDITION), a bad key (INVALID_ARGUMENT naming set), an unknown host (NOT_FOUND)", async () => {
    const { address, api } = await cluster();
    expect((await obedient(address, "h1", { zone: "a" }).first).msg?.$case).toBe("welcome");
    const agentOnly = failure(await api.label("h1", {}, ["zone"]).catch((e: unknown) => e));
    expect(agentOnly.code).toBe(status.FAILED_PRECONDITION);
    expect(agentOnly.details).toContain("label 'zone' is set by its agent");
    const bad = failure(await api.label("h1", { "Bad Key": "1" }).catch((e: unknown) => e));
    expect(bad.code).toBe(status.INVALID_ARGUMENT);
    expect(bad.details).toMatch(/^set\[Bad Key\]: /);
    const nothing = failure(await api.label("h1", {}).catch((e: unknown) => e));
    expect(nothing.code).toBe(status.INVALID_ARGUMENT);
    expect(nothing.details).toMatch(/^set: nothing to change/);
    const unknown = failure(await api.label("h9", { a: "b" }).catch((e: unknown) => e));
    expect(unknown.code).toBe(status.NOT_FOUND);
    // None of them changed a label.
    expect((await api.host("h1")).operatorLabels).toEqual({});
    expect((await api.host("h1")).labels).toEqual({ zone: "a" });
  });

  it("is refused to a viewer, as is DeleteHost", async () => {
    const { address, api } = await cluster();
    expect((await obedient(address, "h1").first).msg?.$case).toBe("welcome");
    const { client, call } = operatorApi(cleanups, address, { role: "viewer", name: "alice" });
    const label = failure(await call((m, o, cb) => client.labelHost({ hostId: "h1", set: { a: "b" }, remove: [] }, m, o, cb)).catch((e: unknown) => e));
    expect(label.code).toBe(status.PERMISSION_DENIED);
    const del = failure(await call((m, o, cb) => client.deleteHost({ hostId: "h1" }, m, o, cb)).catch((e: unknown) => e));
    expect(del.code).toBe(status.PERMISSION_DENIED);
    expect((await api.host("h1")).operatorLabels).toEqual({});
  });
});

describe("DeleteHost", () => {
  it("is refused while the agent is connected and while a VM names the host; works once both are gone", async () => {
    const { address, api } = await cluster();
    let agent = obedient(address, "h1");
    expect((await agent.first).msg?.$case).toBe("welcome");
    expect((await obedient(address, "h2").first).msg?.$case).toBe("welcome");
    const vm = await api.create(spec("web-1", { pinnedHosts: ["h1"] }));
    expect(vm.hostId).toBe("h1");

    const connected = failure(await api.deleteHost("h1").catch((e: unknown) => e));
    expect(connected.code).toBe(status.FAILED_PRECONDITION);
    expect(connected.details).toContain("host 'h1' is connected");

    agent.close();
    const held = await waitFor("the refusal to name the VM, not the stream", async () => {
      const e = failure(await api.deleteHost("h1").then(() => undefined, (err: unknown) => err));
      return e && !e.details.includes("is connected") ? e : undefined;
    });
    expect(held.code).toBe(status.FAILED_PRECONDITION);
    expect(held.details).toContain("still has 1 VM record(s) (web-1)");

    // The VM goes (its host confirms the delete), then the agent for good.
    agent = await reconnect(address, "h1", {}, "boot-b");
    await api.deleteVm("web-1");
    await waitFor("web-1 gone", async () => (await api.vms()).length === 0);
    agent.close();
    await waitFor("h1 deleted", async () => (await api.deleteHost("h1").then(() => true, () => false)) || undefined);
    expect((await api.hosts()).map((h) => h.id)).toEqual(["h2"]);
    expect(failure(await api.host("h1").catch((e: unknown) => e)).code).toBe(status.NOT_FOUND);
    expect(failure(await api.deleteHost("h1").catch((e: unknown) => e)).code).toBe(status.NOT_FOUND);
  });

  it("is refused while a data volume is bound to the host; confirmed down, the volume's delete forgets it at once and the host can go", async () => {
    const { address, api } = await cluster();
    const { client, call } = operatorApi(cleanups, address);
    const agent = obedient(address, "h1");
    expect((await agent.first).msg?.$case).toBe("welcome");
    await call((m, o, cb) => client.createVolume({ volume: { id: "", name: "data-1", sizeGib: 1, hostId: "h1", attachedTo: "", createdAtMs: 0, deleting: false, generation: 0 } }, m, o, cb));
    agent.close();
    const held = await waitFor("the refusal to name the volume", async () => {
      const e = failure(await api.deleteHost("h1").then(() => undefined, (err: unknown) => err));
      return e && !e.details.includes("is connected") ? e : undefined;
    });
    expect(held.code).toBe(status.FAILED_PRECONDITION);
    expect(held.details).toContain("still holds 1 data volume(s) (data-1)");
    expect(held.details).toContain("berth host confirm-down h1");

    await call((m, o, cb) => client.confirmHostDown({ hostId: "h1" }, m, o, cb));
    await call((m, o, cb) => client.deleteVolume({ name: "data-1" }, m, o, cb));
    const gone = failure(await call((m, o, cb) => client.getVolume({ name: "data-1" }, m, o, cb)).catch((e: unknown) => e));
    expect(gone.code).toBe(status.NOT_FOUND);
    await waitFor("h1 deleted", async () => (await api.deleteHost("h1").then(() => true, () => false)) || undefined);
  });

  it("operator verbs racing a delete of their host answer NOT_FOUND, never INTERNAL (found by the fuzz suite)", async () => {
    const { address, store, api } = await cluster();
    const { client, call } = operatorApi(cleanups, address);
    const answer = (p: Promise<unknown>): Promise<string> => p.then(() => "OK", (e: ServiceError) => status[e.code]);
    for (let round = 0; round < 20; round++) {
      // A retired host's record, no agent connected: deletable at once.
      const id = `gone-${round}`;
      await store.txn({ compare: [], ops: [{ type: "put", key: Keys.host(id), value: encodeHost(HostMessage.fromPartial({ id, capacity: { vcpus: 4, memoryMib: 4096, diskGib: 40 } })) }] });
      await waitFor(`${id} in the cache`, () => api.host(id).then(() => true, () => false));
      const answers = await Promise.all([
        answer(api.deleteHost(id)),
        answer(call((m, o, cb) => client.drainHost({ hostId: id, deadlineMs: 0, onDeadline: 0, reason: "race" }, m, o, cb))),
        answer(call((m, o, cb) => client.cordonHost({ hostId: id, reason: "race" }, m, o, cb))),
        answer(call((m, o, cb) => client.uncordonHost({ hostId: id }, m, o, cb))),
        answer(call((m, o, cb) => client.confirmHostDown({ hostId: id }, m, o, cb))),
        answer(api.label(id, { race: "yes" })),
      ]);
      for (const a of answers) expect(["OK", "NOT_FOUND", "ABORTED"], `round ${round}: ${answers.join(",")}`).toContain(a);
      // A delete that lost its race to a verb's write answered ABORTED ("changed while it was being
      // deleted; retry"): retried, as its message says, it goes.
      if (answers[0] === "ABORTED") await api.deleteHost(id);
    }
    expect((await api.hosts()).filter((h) => h.id.startsWith("gone-"))).toEqual([]);
  });
});
