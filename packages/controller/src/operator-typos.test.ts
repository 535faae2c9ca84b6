/**
 * An operator's typo is an error, not an empty answer (issue 12's small defects): a VM pinned to a
 * host the cluster has never heard of, and a VM list filtered by such a host.
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { VmSpec, type ListVmsResponse, type PlanPlacementResponse } from "@berth/api";
import { MemoryStore } from "@berth/store";
import { helloFor, operatorApi, rawAgent, startController, waitFor, type Cleanups } from "./controller.testkit.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const spec = (name: string, pin: string[]): VmSpec => VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 256, diskGib: 1 }, pinnedHosts: pin });

describe("operator typos", () => {
  it("a pin naming an unknown host is INVALID_ARGUMENT naming the entry, for create, gang create and plan; nothing is written", async () => {
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store);
    await waitFor("leadership", () => controller.isLeader);
    const agent = rawAgent(cleanups, address, helloFor("host-1"));
    expect((await agent.first).msg?.$case).toBe("welcome");
    const { client, call } = operatorApi(cleanups, address);
    const revision = store.revision;

    const one = await call((m, o, cb) => client.createVm({ spec: spec("web-1", ["host-1", "host-9"]), requestId: "" }, m, o, cb)).catch((e: ServiceError) => e);
    expect((one as ServiceError).code).toBe(status.INVALID_ARGUMENT);
    expect((one as ServiceError).details).toBe("spec.pinned_hosts[1]: no host 'host-9' in the cluster (berth host list shows them)");
    const gang = await call((m, o, cb) => client.createVms({ specs: [spec("a", []), spec("b", ["hots-1"])], requestId: "" }, m, o, cb)).catch((e: ServiceError) => e);
    expect((gang as ServiceError).details).toBe("specs[1].pinned_hosts[0]: no host 'hots-1' in the cluster (berth host list shows them)");
    const plan = await call<PlanPlacementResponse>((m, o, cb) => client.planPlacement({ specs: [spec("p", ["host-9"])] }, m, o, cb)).catch((e: ServiceError) => e);
    expect((plan as ServiceError).code).toBe(status.INVALID_ARGUMENT);
    expect(store.revision).toBe(revision);

    // A pin to a host that exists still places there.
    const ok = await call<{ vm?: { hostId: string } }>((m, o, cb) => client.createVm({ spec: spec("web-2", ["host-1"]), requestId: "" }, m, o, cb));
    expect(ok.vm?.hostId).toBe("host-1");
  });

  it("listing the VMs of an unknown host is NOT_FOUND, not an empty list", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    const agent = rawAgent(cleanups, address, helloFor("host-1"));
    expect((await agent.first).msg?.$case).toBe("welcome");
    const { client, call } = operatorApi(cleanups, address);
    const known = await call<ListVmsResponse>((m, o, cb) => client.listVms({ hostId: "host-1", pageSize: 0, pageToken: "" }, m, o, cb));
    expect(known.vms).toEqual([]);
    const nope = await call<ListVmsResponse>((m, o, cb) => client.listVms({ hostId: "nope", pageSize: 0, pageToken: "" }, m, o, cb)).catch((e: ServiceError) => e);
    expect((nope as ServiceError).code).toBe(status.NOT_FOUND);
    expect((nope as ServiceError).details).toMatch(/host 'nope'/);
  });
});
