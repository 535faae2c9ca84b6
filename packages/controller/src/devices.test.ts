/**
 * What makes a VM usable, in process (a controller on a memory store, scripted agents, the operator
 * API over mutual TLS): the image catalog, the devices a create carries (image, NICs with their
 * MACs, the cloud-init seed), placement by the hosts' networks, the addresses hosts report, and
 * what a host holds in its answers.
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import {
  DomainState,
  Image,
  VmPhase,
  VmSpec,
  type Command,
  type CreateImageResponse,
  type CreateVmResponse,
  type GetHostResponse,
  type GetImageResponse,
  type GetVmResponse,
  type Host,
  type ListImagesResponse,
  type NetworkInterface,
} from "@berth/api";
import { nicMacAddress } from "@berth/core";
import { MemoryStore } from "@berth/store";
import { helloFor, operatorApi, rawAgent, resultFor, startController, waitFor, type Cleanups } from "./controller.testkit.js";
import { Keys } from "./keys.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const spec = (name: string, over: Partial<VmSpec> = {}): VmSpec => VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 256, diskGib: 10 }, ...over });
const failure = (e: unknown): ServiceError => e as ServiceError;
const SOURCE = "https://images.example.com/debian-12-genericcloud-amd64.qcow2";

/** A leading controller with the operator API as an admin. */
async function cluster(store = new MemoryStore()) {
  const { controller, address } = await startController(cleanups, store);
  await waitFor("leadership", () => controller.isLeader);
  const { client, call } = operatorApi(cleanups, address);
  const api = {
    createImage: (image: Partial<Image>) => call<CreateImageResponse>((m, o, cb) => client.createImage({ image: Image.fromPartial(image) }, m, o, cb)).then((r) => r.image!),
    images: () => call<ListImagesResponse>((m, o, cb) => client.listImages({}, m, o, cb)).then((r) => r.images),
    image: (name: string) => call<GetImageResponse>((m, o, cb) => client.getImage({ name }, m, o, cb)).then((r) => r.image!),
    deleteImage: (name: string) => call((m, o, cb) => client.deleteImage({ name }, m, o, cb)),
    create: (s: VmSpec) => call<CreateVmResponse>((m, o, cb) => client.createVm({ spec: s, requestId: "" }, m, o, cb)).then((r) => r.vm!),
    vm: (name: string) => call<GetVmResponse>((m, o, cb) => client.getVm({ name }, m, o, cb)).then((r) => r.vm!),
    deleteVm: (name: string) => call((m, o, cb) => client.deleteVm({ name }, m, o, cb)),
    host: (id: string) => call<GetHostResponse>((m, o, cb) => client.getHost({ id }, m, o, cb)).then((r) => r.host as Host),
  };
  return { controller, address, store, api };
}

const creates = (commands: Command[]) => commands.flatMap((c) => (c.action?.$case === "create" ? [{ command: c, create: c.action.value }] : []));

describe("the image catalog", () => {
  it("creates, lists and gets images with the hosts that hold them and the VMs that name them; refuses a taken name and bad input by field", async () => {
    const { address, api } = await cluster();
    const image = await api.createImage({ name: "debian-12", source: SOURCE, sha256: "ab".repeat(32) });
    expect(image).toMatchObject({ name: "debian-12", source: SOURCE, format: "qcow2", sha256: "ab".repeat(32) });
    expect(image.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(image.createdAtMs).toBeGreaterThan(0);
    await api.createImage({ name: "alpine", source: "/srv/images/alpine.raw", format: "raw" });

    const taken = failure(await api.createImage({ name: "debian-12", source: SOURCE }).catch((e: unknown) => e));
    expect(taken.code).toBe(status.ALREADY_EXISTS);
    const bad = failure(await api.createImage({ name: "x", source: "ftp://a/b" }).catch((e: unknown) => e));
    expect(bad.code).toBe(status.INVALID_ARGUMENT);
    expect(bad.details).toMatch(/^image\.source: /);

    // Two hosts say they hold it (with its sizes), one does not.
    const held = { imageId: image.id, sizeBytes: 300 << 20, virtualSizeBytes: 2 * 1024 ** 3 };
    for (const [id, images] of [["h2", [held]], ["h1", [held]], ["h3", []]] as const) {
      expect((await rawAgent(cleanups, address, helloFor(id, "boot-a", { images: [...images] })).first).msg?.$case).toBe("welcome");
    }
    await api.create(spec("web-1", { image: "debian-12" }));
    await api.create(spec("web-2", { image: "debian-12" }));

    const list = await api.images();
    expect(list.map((i) => i.image?.name)).toEqual(["alpine", "debian-12"]);
    expect(list[1]).toMatchObject({ hosts: ["h1", "h2"], vms: 2, sizeBytes: 300 << 20, virtualSizeBytes: 2 * 1024 ** 3 });
    expect(list[0]).toMatchObject({ hosts: [], vms: 0, sizeBytes: 0 });
    expect(await api.image("debian-12")).toEqual(list[1]);
    expect(failure(await api.image("nope").catch((e: unknown) => e)).code).toBe(status.NOT_FOUND);
  });

  it("refuses to delete an image while a VM names it (naming the VM), deletes it after", async () => {
    const { address, api, store } = await cluster();
    expect((await rawAgent(cleanups, address, helloFor("h1"), (c) => resultFor(c, { ok: true })).first).msg?.$case).toBe("welcome");
    await api.createImage({ name: "debian-12", source: SOURCE });
    await api.create(spec("web-1", { image: "debian-12" }));
    const used = failure(await api.deleteImage("debian-12").catch((e: unknown) => e));
    expect(used.code).toBe(status.FAILED_PRECONDITION);
    expect(used.details).toBe("image 'debian-12' is used by 1 VM(s) (web-1): delete them first");
    expect(await store.get(Keys.image("debian-12"))).toBeDefined();

    await api.deleteVm("web-1");
    await waitFor("web-1's record gone", async () => (await store.get(Keys.vm("web-1"))) === undefined);
    await api.deleteImage("debian-12");
    expect(await store.get(Keys.image("debian-12"))).toBeUndefined();
    expect(failure(await api.deleteImage("debian-12").catch((e: unknown) => e)).code).toBe(status.NOT_FOUND);
  });

  it("refuses a VM naming an image not in the catalog (NOT_FOUND naming spec.image) and writes nothing", async () => {
    const { address, api, store } = await cluster();
    expect((await rawAgent(cleanups, address, helloFor("h1")).first).msg?.$case).toBe("welcome");
    const unknown = failure(await api.create(spec("web-1", { image: "debian-13" })).catch((e: unknown) => e));
    expect(unknown.code).toBe(status.NOT_FOUND);
    expect(unknown.details).toMatch(/^spec\.image: image 'debian-13' not found/);
    expect(await store.get(Keys.vm("web-1"))).toBeUndefined();
  });
});

describe("the devices a create carries", () => {
  it("sends the image to fetch, one NIC per network with the VM's fixed MACs and the cloud-init seed", async () => {
    const { address, api } = await cluster();
    const agent = rawAgent(cleanups, address, helloFor("h1", "boot-a", { networks: [{ name: "default", kind: "network", active: true }, { name: "br0", kind: "bridge", active: true }] }), (c) => resultFor(c, { ok: true }));
    expect((await agent.first).msg?.$case).toBe("welcome");
    const image = await api.createImage({ name: "debian-12", source: SOURCE, sha256: "cd".repeat(32) });
    const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop";
    const userData = "#cloud-config\npackages: [nginx]\n";
    const vm = await api.create(spec("web-1", { image: "debian-12", networks: ["default", "br0"], cloudInit: { sshAuthorizedKeys: [key], userData } }));

    const [sent] = await waitFor("the create", () => creates(agent.commands()).length > 0 && creates(agent.commands()));
    expect(sent!.command.vmId).toBe(vm.id);
    expect(sent!.create.devices).toEqual({
      image: { id: image.id, name: "debian-12", source: SOURCE, format: "qcow2", sha256: "cd".repeat(32) },
      nics: [
        { network: "default", mac: nicMacAddress(vm.id, 0) },
        { network: "br0", mac: nicMacAddress(vm.id, 1) },
      ],
      cloudInit: { instanceId: vm.id, hostname: "web-1", sshAuthorizedKeys: [key], userData },
      volumes: [],
    });
    // A blank VM's create carries no image, no NICs and no seed.
    await api.create(spec("plain"));
    const plain = await waitFor("plain's create", () => creates(agent.commands()).find((c) => c.create.name === "plain"));
    expect(plain.create.devices).toEqual({ image: undefined, nics: [], cloudInit: undefined, volumes: [] });
  });

  it("fails a VM whose image left the catalog before its domain was made (NOT_FOUND, permanent), and makes no command", async () => {
    const { address, api, store } = await cluster();
    // A host that takes placements but holds creates back until the test lets them go.
    await api.createImage({ name: "debian-12", source: SOURCE });
    const agent = rawAgent(cleanups, address, helloFor("h1"));
    expect((await agent.first).msg?.$case).toBe("welcome");
    const vm = await api.create(spec("web-1", { image: "debian-12" }));
    // The catalog's record goes behind the controller's back (as a delete racing the create would).
    await waitFor("the create sent", () => creates(agent.commands()).length > 0);
    await store.txn({ compare: [], ops: [{ type: "delete", key: Keys.image("debian-12") }] });
    // The host lost the create (a new stream): the controller must make it again, and cannot.
    agent.close();
    const again = rawAgent(cleanups, address, helloFor("h1"), (c) => resultFor(c, { ok: true }));
    await waitFor("welcomed again", async () => (await again.first).msg?.$case === "welcome");
    const failed = await waitFor("web-1 failed", async () => {
      const v = await api.vm("web-1");
      return v.status?.phase === VmPhase.VM_PHASE_FAILED ? v : undefined;
    });
    expect(failed.status).toMatchObject({ errorCode: "NOT_FOUND", permanent: true });
    expect(failed.status?.message).toContain("image 'debian-12' is no longer in the catalog");
    expect(creates(again.commands()).filter((c) => c.command.vmId === vm.id)).toEqual([]);
  });
});

describe("placement by the hosts' networks", () => {
  it("places a VM only on a host offering every network of its NICs (active ones), and says why each other host cannot", async () => {
    const { address, api } = await cluster();
    const offers = {
      h1: [{ name: "default", kind: "network", active: true }],
      h2: [{ name: "default", kind: "network", active: true }, { name: "lab", kind: "network", active: false }],
      h3: [{ name: "lab", kind: "bridge", active: true }, { name: "default", kind: "network", active: true }],
    };
    for (const [id, networks] of Object.entries(offers)) expect((await rawAgent(cleanups, address, helloFor(id, "boot-a", { networks })).first).msg?.$case).toBe("welcome");
    expect((await api.create(spec("lab-1", { networks: ["default", "lab"] }))).hostId).toBe("h3");

    const none = failure(await api.create(spec("san-1", { networks: ["san"] })).catch((e: unknown) => e));
    expect(none.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(none.details).toContain('h1: networks: lacks network "san" (offers: default)');
    // A defined but stopped network is not offered.
    expect(none.details).toContain('h2: networks: lacks network "san" (offers: default)');
  });

  it("sees a host's networks change with its reports", async () => {
    const { address, api } = await cluster();
    const agent = rawAgent(cleanups, address, helloFor("h1", "boot-a", { networks: [{ name: "default", kind: "network", active: true }] }));
    expect((await agent.first).msg?.$case).toBe("welcome");
    expect(failure(await api.create(spec("lab-1", { networks: ["lab"] })).catch((e: unknown) => e)).code).toBe(status.RESOURCE_EXHAUSTED);
    agent.send({ $case: "report", value: { networks: [{ name: "default", kind: "network", active: true }, { name: "lab", kind: "bridge", active: true }] } });
    await waitFor("lab offered", async () => (await api.host("h1")).networks.some((n) => n.name === "lab"));
    expect((await api.create(spec("lab-1", { networks: ["lab"] }))).hostId).toBe("h1");
  });
});

describe("what hosts report", () => {
  it("keeps a VM's NIC addresses from its host's reports in its status, one write per change", async () => {
    const { address, api, store } = await cluster();
    const agent = rawAgent(cleanups, address, helloFor("h1", "boot-a", { networks: [{ name: "default", kind: "network", active: true }] }), (c) => resultFor(c, { ok: true }));
    const welcome = await agent.first;
    expect(welcome.msg?.$case).toBe("welcome");
    // Heard all along, as a real agent's heartbeats keep it: a host gone silent (SUSPECT) and back
    // would rewrite the VM's status twice, which is not what this test counts.
    const leaderEpoch = welcome.msg?.$case === "welcome" ? welcome.msg.value.leaderEpoch : 0;
    const heartbeats = setInterval(() => agent.send({ $case: "heartbeat", value: { leaderEpoch } }), 100);
    cleanups.push(() => clearInterval(heartbeats));
    const vm = await api.create(spec("web-1", { networks: ["default"] }));
    await waitFor("web-1 running", async () => (await api.vm("web-1")).status?.phase === VmPhase.VM_PHASE_RUNNING);
    const nic = (ipAddresses: string[]): NetworkInterface => ({ network: "default", mac: nicMacAddress(vm.id, 0), ipAddresses, addressSource: "lease" });
    const report = (interfaces: NetworkInterface[]) =>
      agent.send({ $case: "report", value: { inventory: { domains: [{ vmId: vm.id, name: "web-1", state: DomainState.DOMAIN_STATE_RUNNING, generation: vm.generation, resources: vm.spec!.resources, interfaces }] } } });

    report([nic(["192.168.122.17"])]);
    const seen = await waitFor("the address in the status", async () => {
      const v = await api.vm("web-1");
      return v.status?.interfaces[0]?.ipAddresses[0] === "192.168.122.17" ? v : undefined;
    });
    expect(seen.status?.interfaces).toEqual([nic(["192.168.122.17"])]);
    // Let any pass already under way land.
    await new Promise((r) => setTimeout(r, 500));
    const written = (await store.get(Keys.vm("web-1")))!.modRevision;
    // The same report again changes nothing: no write.
    report([nic(["192.168.122.17"])]);
    report([nic(["192.168.122.17"])]);
    await new Promise((r) => setTimeout(r, 300));
    expect((await store.get(Keys.vm("web-1")))!.modRevision).toBe(written);
    // A new address is one write.
    report([nic(["192.168.122.17", "fe80::5054:ff:fe00:1"])]);
    await waitFor("the second address", async () => (await api.vm("web-1")).status?.interfaces[0]?.ipAddresses.length === 2);
    await new Promise((r) => setTimeout(r, 300));
    expect((await store.get(Keys.vm("web-1")))!.modRevision).toBeGreaterThan(written);
  });

  it("answers a host with the images, networks and volumes its agent last reported", async () => {
    const { address, api } = await cluster();
    const images = [{ imageId: "img-1", sizeBytes: 5, virtualSizeBytes: 10 }];
    const networks = [{ name: "default", kind: "network", active: true }];
    const agent = rawAgent(cleanups, address, helloFor("h1", "boot-a", { images, networks }));
    expect((await agent.first).msg?.$case).toBe("welcome");
    expect(await api.host("h1")).toMatchObject({ images, networks, volumes: [] });
    const volumes = [{ volumeId: "vol-1", sizeGib: 3, attachedVmId: "" }];
    agent.send({ $case: "report", value: { images: [], networks, volumes } });
    const h = await waitFor("the report's holdings", async () => {
      const found = await api.host("h1");
      return found.volumes.length === 1 ? found : undefined;
    });
    // Each report replaces the last whole: the image is no longer held.
    expect(h).toMatchObject({ images: [], networks, volumes });
  });
});
