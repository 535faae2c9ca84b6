/**
 * Data volumes in process (a controller on a memory store, scripted agents, the operator API over
 * mutual TLS): create bound and unbound, the host's volume commands, attach (binding, the VM's
 * generation, set_volumes), refusals, delete waiting for the host, and the disk they take.
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import {
  DomainState,
  VmSpec,
  Volume,
  type AttachVolumeResponse,
  type Command,
  type CommandResult,
  type CreateVmResponse,
  type CreateVolumeResponse,
  type DeleteVolumeResponse,
  type DetachVolumeResponse,
  type Domain,
  type GetHostResponse,
  type GetVmResponse,
  type GetVolumeResponse,
  type Host,
  type HostVolume,
  type ListVolumesResponse,
} from "@berth/api";
import { MemoryStore } from "@berth/store";
import { helloFor, operatorApi, rawAgent, resultFor, startController, waitFor, type Cleanups } from "./controller.testkit.js";
import { decodeVolume, Keys } from "./keys.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const spec = (name: string, over: Partial<VmSpec> = {}, diskGib = 10): VmSpec => VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 256, diskGib }, ...over });
const failure = (e: unknown): ServiceError => e as ServiceError;

/** A leading controller with the operator API as an admin. */
async function cluster(store = new MemoryStore()) {
  const { controller, address } = await startController(cleanups, store);
  await waitFor("leadership", () => controller.isLeader);
  const { client, call } = operatorApi(cleanups, address);
  const api = {
    createVolume: (v: Partial<Volume>) => call<CreateVolumeResponse>((m, o, cb) => client.createVolume({ volume: Volume.fromPartial(v) }, m, o, cb)).then((r) => r.volume!),
    volume: (name: string) => call<GetVolumeResponse>((m, o, cb) => client.getVolume({ name }, m, o, cb)).then((r) => r.volume!),
    volumes: (hostId = "") => call<ListVolumesResponse>((m, o, cb) => client.listVolumes({ hostId }, m, o, cb)).then((r) => r.volumes),
    deleteVolume: (name: string) => call<DeleteVolumeResponse>((m, o, cb) => client.deleteVolume({ name }, m, o, cb)).then((r) => r.volume!),
    attach: (volume: string, vm: string) => call<AttachVolumeResponse>((m, o, cb) => client.attachVolume({ volume, vm }, m, o, cb)),
    detach: (volume: string) => call<DetachVolumeResponse>((m, o, cb) => client.detachVolume({ volume }, m, o, cb)),
    create: (s: VmSpec) => call<CreateVmResponse>((m, o, cb) => client.createVm({ spec: s, requestId: "" }, m, o, cb)).then((r) => r.vm!),
    vm: (name: string) => call<GetVmResponse>((m, o, cb) => client.getVm({ name }, m, o, cb)).then((r) => r.vm!),
    deleteVm: (name: string) => call((m, o, cb) => client.deleteVm({ name }, m, o, cb)),
    host: (id: string) => call<GetHostResponse>((m, o, cb) => client.getHost({ id }, m, o, cb)).then((r) => r.host as Host),
  };
  return { controller, address, store, api };
}

/**
 * A scripted host that carries out what it is told as a fake agent would: domains with the
 * volumes set_volumes gives them, a pool that create_volume and delete_volume change, and a report
 * of it all when asked.
 */
function host(address: string, hostId: string, capacity = { vcpus: 8, memoryMib: 16384, diskGib: 100 }, answers = { deleteVolume: true }) {
  const domains = new Map<string, Domain>();
  const pool = new Map<string, HostVolume>();
  const answer = (c: Command): CommandResult | undefined => {
    const action = c.action;
    // A host that removes the volume but whose answer is lost: only its report tells.
    if (action?.$case === "deleteVolume" && !answers.deleteVolume) {
      pool.delete(c.volumeId);
      return undefined;
    }
    if (action?.$case === "createVolume") pool.set(c.volumeId, { volumeId: c.volumeId, sizeGib: action.value.sizeGib, attachedVmId: "" });
    if (action?.$case === "deleteVolume") pool.delete(c.volumeId);
    if (c.volumeId) return resultFor(c, { ok: true });
    const prior = domains.get(c.vmId);
    let volumeIds = prior?.volumeIds ?? [];
    if (action?.$case === "create") volumeIds = action.value.devices?.volumes.map((v) => v.id) ?? [];
    if (action?.$case === "setVolumes") volumeIds = action.value.volumes.map((v) => v.id);
    for (const [id, v] of pool) if (v.attachedVmId === c.vmId && !volumeIds.includes(id)) pool.set(id, { ...v, attachedVmId: "" });
    for (const id of volumeIds) pool.set(id, { volumeId: id, sizeGib: pool.get(id)?.sizeGib ?? 1, attachedVmId: c.vmId });
    const result = resultFor(c, { ok: true, domain: { volumeIds, ...(prior && action?.$case === "setVolumes" ? { state: prior.state, name: prior.name, resources: prior.resources } : {}) } });
    if (result.domain) domains.set(c.vmId, result.domain);
    else {
      domains.delete(c.vmId);
      for (const [id, v] of pool) if (v.attachedVmId === c.vmId) pool.set(id, { ...v, attachedVmId: "" });
    }
    return result;
  };
  const agent = rawAgent(cleanups, address, helloFor(hostId, "boot-a", { capacity }), answer);
  return {
    agent,
    pool,
    domains,
    /** Sends the host's inventory and pool as they are now. */
    report: () => agent.send({ $case: "report", value: { inventory: { domains: [...domains.values()] }, volumes: [...pool.values()] } }),
    commandsFor: (volumeId: string) => agent.commands().filter((c) => c.volumeId === volumeId),
  };
}

describe("CreateVolume", () => {
  it("records a volume unbound or bound to a host; the host makes a bound one in its pool; the phase follows its report", async () => {
    const { address, api } = await cluster();
    const h1 = host(address, "h1");
    expect((await h1.agent.first).msg?.$case).toBe("welcome");

    const loose = await api.createVolume({ name: "scratch", sizeGib: 5 });
    expect(loose).toMatchObject({ name: "scratch", sizeGib: 5, hostId: "", attachedTo: "", deleting: false, generation: 1 });
    expect(loose.id).toMatch(/^[0-9a-f-]{36}$/);
    expect((await api.volume("scratch")).phase).toBe("unbound");

    const data = await api.createVolume({ name: "data-1", sizeGib: 20, hostId: "h1" });
    const made = await waitFor("create_volume sent", () => h1.commandsFor(data.id).find((c) => c.action?.$case === "createVolume"));
    expect(made).toMatchObject({ vmId: "", volumeId: data.id, generation: 1, action: { $case: "createVolume", value: { sizeGib: 20 } } });
    // The pool has it once the host's result is in; its report says so whole.
    h1.report();
    await waitFor("available", async () => (await api.volume("data-1")).phase === "available");
    expect((await api.volumes("h1")).map((v) => v.volume?.name)).toEqual(["data-1"]);
    expect((await api.volumes()).map((v) => v.volume?.name)).toEqual(["data-1", "scratch"]);
    // Counted in the host's disk from the moment it is bound.
    expect((await api.host("h1")).allocated?.diskGib).toBe(20);
  });

  it("refuses an unknown host (NOT_FOUND), a volume its host has no room for (RESOURCE_EXHAUSTED with the figures), a taken name and bad input, writing nothing", async () => {
    const { address, api, store } = await cluster();
    expect((await host(address, "h1").agent.first).msg?.$case).toBe("welcome");
    await api.create(spec("web-1", {}, 30));
    expect(failure(await api.createVolume({ name: "d", sizeGib: 1, hostId: "h9" }).catch((e: unknown) => e)).code).toBe(status.NOT_FOUND);
    const full = failure(await api.createVolume({ name: "big", sizeGib: 71, hostId: "h1" }).catch((e: unknown) => e));
    expect(full.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(full.details).toBe("host 'h1' has no room for volume 'big': 71 GiB asked, 70 GiB free (30 of 100 GiB allocatable allocated to VMs and volumes)");
    await api.createVolume({ name: "fits", sizeGib: 70, hostId: "h1" });
    expect(failure(await api.createVolume({ name: "fits", sizeGib: 1 }).catch((e: unknown) => e)).code).toBe(status.ALREADY_EXISTS);
    const bad = failure(await api.createVolume({ name: "zero", sizeGib: 0 }).catch((e: unknown) => e));
    expect(bad.code).toBe(status.INVALID_ARGUMENT);
    expect(bad.details).toMatch(/^volume\.size_gib: /);
    for (const name of ["d", "big", "zero"]) expect(await store.get(Keys.volume(name))).toBeUndefined();
  });
});

describe("AttachVolume and DetachVolume", () => {
  it("binds an unbound volume to the VM's host, bumps the VM's generation and has the host set the domain's volumes; detach is the reverse", async () => {
    const { address, api } = await cluster();
    const h1 = host(address, "h1");
    expect((await h1.agent.first).msg?.$case).toBe("welcome");
    const vm = await api.create(spec("db-1"));
    await waitFor("db-1's domain", () => h1.domains.has(vm.id));
    const volume = await api.createVolume({ name: "db-data", sizeGib: 8 });

    const attached = await api.attach("db-data", "db-1");
    expect(attached.volume).toMatchObject({ hostId: "h1", attachedTo: "db-1", generation: 2 });
    expect(attached.vm).toMatchObject({ generation: vm.generation + 1, spec: { volumes: ["db-data"] } });
    const set = await waitFor("set_volumes", () => h1.agent.commands().find((c) => c.action?.$case === "setVolumes"));
    expect(set).toMatchObject({ vmId: vm.id, generation: vm.generation + 1, action: { value: { volumes: [{ id: volume.id, name: "db-data", sizeGib: 8 }] } } });
    // The attached volume is the attach's to make: no create_volume for it.
    expect(h1.commandsFor(volume.id)).toEqual([]);
    h1.report();
    await waitFor("attached", async () => (await api.volume("db-data")).phase === "attached");
    expect((await api.host("h1")).allocated?.diskGib).toBe(10 + 8);
    // Again: nothing to do.
    expect((await api.attach("db-data", "db-1")).vm?.generation).toBe(vm.generation + 1);

    const detached = await api.detach("db-data");
    expect(detached.volume).toMatchObject({ hostId: "h1", attachedTo: "", generation: 3 });
    expect(detached.vm).toMatchObject({ generation: vm.generation + 2, spec: { volumes: [] } });
    await waitFor("set_volumes with none", () => h1.agent.commands().some((c) => c.action?.$case === "setVolumes" && c.action.value.volumes.length === 0 && c.generation === vm.generation + 2));
    h1.report();
    await waitFor("available", async () => (await api.volume("db-data")).phase === "available");
    // Detached, the volume stays on its host, and counts there.
    expect((await api.host("h1")).allocated?.diskGib).toBe(18);
    expect((await api.detach("db-data")).vm).toBeUndefined();
  });

  it("refuses a volume on another host than the VM's, naming both and the way out; refuses an unknown VM or volume", async () => {
    const { address, api } = await cluster();
    for (const id of ["h1", "h2"]) expect((await host(address, id).agent.first).msg?.$case).toBe("welcome");
    const vm = await api.create(spec("web-1", { pinnedHosts: ["h1"] }));
    await api.createVolume({ name: "data-2", sizeGib: 1, hostId: "h2" });
    const elsewhere = failure(await api.attach("data-2", "web-1").catch((e: unknown) => e));
    expect(elsewhere.code).toBe(status.FAILED_PRECONDITION);
    expect(elsewhere.details).toBe(
      "volume 'data-2' is on host 'h2' but vm 'web-1' runs on host 'h1': a volume's data stays on its host; move the VM there first (berth vm migrate web-1 --to h2), then attach",
    );
    expect((await api.vm("web-1")).generation).toBe(vm.generation);
    expect(failure(await api.attach("data-9", "web-1").catch((e: unknown) => e)).code).toBe(status.NOT_FOUND);
    expect(failure(await api.attach("data-2", "web-9").catch((e: unknown) => e)).code).toBe(status.NOT_FOUND);
  });

  it("refuses to bind a volume the VM's host has no room for", async () => {
    const { address, api } = await cluster();
    expect((await host(address, "h1").agent.first).msg?.$case).toBe("welcome");
    await api.create(spec("web-1", {}, 60));
    await api.createVolume({ name: "big", sizeGib: 41 });
    const full = failure(await api.attach("big", "web-1").catch((e: unknown) => e));
    expect(full.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(full.details).toContain("41 GiB asked, 40 GiB free");
    expect((await api.volume("big")).volume).toMatchObject({ hostId: "", attachedTo: "" });
  });
});

describe("DeleteVolume", () => {
  it("is refused while attached; a bound one is removed by its host first, then its record goes; an unbound one at once", async () => {
    const { address, api, store } = await cluster();
    const h1 = host(address, "h1", undefined, { deleteVolume: false });
    expect((await h1.agent.first).msg?.$case).toBe("welcome");
    const volume = await api.createVolume({ name: "data-1", sizeGib: 4, hostId: "h1" });
    await waitFor("in the pool", () => h1.pool.has(volume.id));
    await api.create(spec("web-1"));
    await api.attach("data-1", "web-1");
    const attached = failure(await api.deleteVolume("data-1").catch((e: unknown) => e));
    expect(attached.code).toBe(status.FAILED_PRECONDITION);
    expect(attached.details).toBe("volume 'data-1' is attached to vm 'web-1': detach it first (berth volume detach data-1)");

    await api.detach("data-1");
    const marked = await api.deleteVolume("data-1");
    expect(marked).toMatchObject({ deleting: true, generation: 4 });
    expect((await api.volume("data-1")).phase).toBe("deleting");
    // The host is told once its domain no longer has it; the record waits for the host's word
    // (its answer, lost here, or its report).
    const del = await waitFor("delete_volume", () => h1.commandsFor(volume.id).find((c) => c.action?.$case === "deleteVolume"));
    expect(del.generation).toBe(4);
    await new Promise((r) => setTimeout(r, 300));
    expect(await store.get(Keys.volume("data-1"))).toBeDefined();
    expect((await api.host("h1")).allocated?.diskGib).toBe(10 + 4);
    h1.report();
    await waitFor("the record gone", async () => (await store.get(Keys.volume("data-1"))) === undefined);
    expect(failure(await api.volume("data-1").catch((e: unknown) => e)).code).toBe(status.NOT_FOUND);
    expect((await api.host("h1")).allocated?.diskGib).toBe(10);

    await api.createVolume({ name: "loose", sizeGib: 1 });
    expect(await api.deleteVolume("loose")).toMatchObject({ name: "loose", deleting: false });
    expect(await store.get(Keys.volume("loose"))).toBeUndefined();
  });
});

describe("VMs created with volumes", () => {
  it("places a VM on its bound volumes' host, binds its unbound ones to the chosen host in the create, and releases them when it is deleted", async () => {
    const { address, api, store } = await cluster();
    const hosts = ["h1", "h2", "h3"].map((id) => host(address, id));
    for (const h of hosts) expect((await h.agent.first).msg?.$case).toBe("welcome");
    await api.createVolume({ name: "on-h2", sizeGib: 3, hostId: "h2" });
    const loose = await api.createVolume({ name: "loose", sizeGib: 6 });
    for (let i = 0; i < 3; i++) {
      // Each of these is pinned to h2 by the bound volume, whatever spread says.
      await api.createVolume({ name: `more-${i}`, sizeGib: 1, hostId: "h2" });
      expect((await api.create(spec(`pinned-${i}`, { volumes: [`more-${i}`] }))).hostId).toBe("h2");
    }
    const vm = await api.create(spec("db-1", { volumes: ["on-h2", "loose"] }));
    expect(vm.hostId).toBe("h2");
    const stored = decodeVolume((await store.get(Keys.volume("loose")))!.value);
    expect(stored).toMatchObject({ hostId: "h2", attachedTo: "db-1", generation: 2 });
    const create = await waitFor("db-1's create", () => hosts[1]!.agent.commands().find((c) => c.vmId === vm.id && c.action?.$case === "create"));
    expect(create.action?.$case === "create" && create.action.value.devices?.volumes.map((v) => v.name)).toEqual(["on-h2", "loose"]);
    expect(create.action?.$case === "create" && create.action.value.devices?.volumes[1]?.id).toBe(loose.id);
    // A volume attached to one VM cannot be another's.
    const taken = failure(await api.create(spec("db-2", { volumes: ["loose"] })).catch((e: unknown) => e));
    expect(taken.code).toBe(status.FAILED_PRECONDITION);
    expect(taken.details).toBe("spec.volumes[0]: volume 'loose' is attached to vm 'db-1' (detach it first: berth volume detach loose)");
    expect(failure(await api.create(spec("db-3", { volumes: ["nope"] })).catch((e: unknown) => e)).code).toBe(status.NOT_FOUND);

    await api.deleteVm("db-1");
    await waitFor("db-1's record gone", async () => (await store.get(Keys.vm("db-1"))) === undefined);
    expect(decodeVolume((await store.get(Keys.volume("loose")))!.value)).toMatchObject({ hostId: "h2", attachedTo: "", generation: 3 });
    expect(decodeVolume((await store.get(Keys.volume("on-h2")))!.value)).toMatchObject({ hostId: "h2", attachedTo: "" });
  });

  it("counts bound volumes in their host's disk: a VM that would not fit beside them is refused", async () => {
    const { address, api } = await cluster();
    expect((await host(address, "h1").agent.first).msg?.$case).toBe("welcome");
    await api.createVolume({ name: "archive", sizeGib: 80, hostId: "h1" });
    const refused = failure(await api.create(spec("web-1", {}, 30)).catch((e: unknown) => e));
    expect(refused.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(refused.details).toMatch(/h1: capacity: .*disk/);
    expect((await api.create(spec("web-2", {}, 20))).hostId).toBe("h1");
    // An unbound volume a new VM names binds with it, and must fit beside it.
    await api.createVolume({ name: "more", sizeGib: 1 });
    expect(failure(await api.create(spec("web-3", { volumes: ["more"] }, 0)).catch((e: unknown) => e)).code).toBe(status.RESOURCE_EXHAUSTED);
  });
});

describe("a migration of a VM with volumes", () => {
  it("asks the target for room for the VM and its volumes, carries them in the prepare, and moves their records with the VM's at the commit", async () => {
    const { address, api, store } = await cluster();
    const running = DomainState.DOMAIN_STATE_RUNNING;
    // The source runs what it is told and answers migrate_out with the domain gone; the target prepares and finishes.
    const source = rawAgent(cleanups, address, helloFor("h1"), (c) =>
      c.action?.$case === "migrateOut" ? { ...resultFor(c, { ok: true }), domain: undefined } : resultFor(c, { ok: true, domain: { volumeIds: c.action?.$case === "create" ? (c.action.value.devices?.volumes.map((v) => v.id) ?? []) : [] } }),
    );
    expect((await source.first).msg?.$case).toBe("welcome");
    await api.createVolume({ name: "db-data", sizeGib: 50 });
    const vm = await api.create(spec("db-1", { volumes: ["db-data"] }));
    expect(vm.hostId).toBe("h1");
    await waitFor("db-1 running", async () => (await api.vm("db-1")).status?.phase === 2 /* RUNNING */);
    // A small target: 60 GiB of disk cannot take the VM's 10 and its volume's 50 beside 1 GiB of its own.
    const small = rawAgent(cleanups, address, helloFor("h2", "boot-a", { capacity: { vcpus: 8, memoryMib: 16384, diskGib: 60 } }));
    expect((await small.first).msg?.$case).toBe("welcome");
    await api.createVolume({ name: "h2-own", sizeGib: 1, hostId: "h2" });
    const { client, call } = operatorApi(cleanups, address);
    const migrate = (to: string) => call((m, o, cb) => client.migrateVm({ name: "db-1", targetHost: to, requestId: "" }, m, o, cb));
    const noRoom = failure(await migrate("h2").catch((e: unknown) => e));
    expect(noRoom.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(noRoom.details).toContain("host 'h2' cannot take vm 'db-1'");

    const target = rawAgent(cleanups, address, helloFor("h3"), (c) => {
      if (c.action?.$case === "prepareMigration") return { ...resultFor(c, { ok: true }), domain: undefined, migrationTarget: { driver: "fake", uri: "fake:///h3" } };
      if (c.action?.$case === "finishMigration") return resultFor(c, { ok: true, domain: { state: running, name: "db-1", volumeIds: [vm.spec!.volumes[0]!] } });
      return resultFor(c, { ok: true });
    });
    expect((await target.first).msg?.$case).toBe("welcome");
    const volume = decodeVolume((await store.get(Keys.volume("db-data")))!.value);
    expect(volume).toMatchObject({ hostId: "h1", attachedTo: "db-1" });
    await migrate("h3");
    const prepare = await waitFor("prepare_migration", () => target.commands().find((c) => c.action?.$case === "prepareMigration"));
    expect(prepare.action?.$case === "prepareMigration" && prepare.action.value.devices?.volumes).toEqual([{ id: volume.id, name: "db-data", sizeGib: 50 }]);
    const moved = await waitFor("db-1 on h3", async () => {
      const v = await api.vm("db-1");
      return v.hostId === "h3" ? v : undefined;
    });
    const after = decodeVolume((await store.get(Keys.volume("db-data")))!.value);
    expect(after).toMatchObject({ hostId: "h3", attachedTo: "db-1", generation: volume.generation + 1 });
    expect(moved.spec?.volumes).toEqual(["db-data"]);
    expect((await api.host("h1")).allocated?.diskGib).toBe(0);
    expect((await api.host("h3")).allocated?.diskGib).toBe(60);
  });
});

describe("a host's domain state", () => {
  it("never has its volume ids mistaken for a domain: a VM's running status survives volume commands", async () => {
    const { address, api } = await cluster();
    const h1 = host(address, "h1");
    expect((await h1.agent.first).msg?.$case).toBe("welcome");
    const vm = await api.create(spec("web-1"));
    await waitFor("running", async () => (await api.vm("web-1")).status?.domainState === DomainState.DOMAIN_STATE_RUNNING);
    const v = await api.createVolume({ name: "data-1", sizeGib: 1, hostId: "h1" });
    await waitFor("made", () => h1.pool.has(v.id));
    h1.report();
    await waitFor("available", async () => (await api.volume("data-1")).phase === "available");
    expect((await api.vm("web-1")).status?.domainState).toBe(DomainState.DOMAIN_STATE_RUNNING);
    expect(vm.hostId).toBe("h1");
  });
});
