import { describe, expect, it } from "vitest";
import { DesiredState, DomainState, Image, VmPhase, VmSpec, VmStatus, Volume, type Domain, type Vm } from "@berth/api";
import { nicMacAddress } from "@berth/core";
import { desiredAction, domainDevices, migratingStatus, observedStatus, planHostCommands, recordFailure, sameStatus, type DeviceCatalog, type HostPlan, type HostPlanContext } from "./reconcile.js";

const resources = { vcpus: 1, memoryMib: 512, diskGib: 1 };
function vm(id: string, desiredState: DesiredState, generation = 1, forceStop = false): Vm {
  return { id, spec: VmSpec.fromPartial({ name: `vm-${id}`, resources }), desiredState, hostId: "h1", generation, status: undefined, createdAtMs: 0, forceStop, requestId: "" };
}
function domain(vmId: string, state: DomainState, generation = 1): Domain {
  return { vmId, name: `vm-${vmId}`, state, generation, resources, fence: false, interfaces: [], volumeIds: [], imageId: "" };
}
const R = DesiredState.DESIRED_STATE_RUNNING;
const S = DesiredState.DESIRED_STATE_STOPPED;
const D = DesiredState.DESIRED_STATE_DELETED;

describe("desiredAction", () => {
  it("creates what is missing, started or not as desired", () => {
    expect(desiredAction(vm("a", R), undefined)).toMatchObject({ $case: "create", value: { start: true } });
    expect(desiredAction(vm("a", S), undefined)).toMatchObject({ $case: "create", value: { start: false } });
    expect(desiredAction(vm("a", D), undefined)).toBeUndefined();
  });
  it("leaves a domain alone when it is as desired at the current generation", () => {
    expect(desiredAction(vm("a", R, 3), domain("a", DomainState.DOMAIN_STATE_RUNNING, 3))).toBeUndefined();
    expect(desiredAction(vm("a", S, 2), domain("a", DomainState.DOMAIN_STATE_SHUTOFF, 2))).toBeUndefined();
    // Crashed is off: a stopped VM whose domain crashed needs nothing (libvirt keeps "crashed" until a start).
    expect(desiredAction(vm("a", S, 2), domain("a", DomainState.DOMAIN_STATE_CRASHED, 2))).toBeUndefined();
    expect(desiredAction(vm("a", S, 3), domain("a", DomainState.DOMAIN_STATE_CRASHED, 2))?.$case).toBe("stop");
  });
  it("moves the domain towards the desired state", () => {
    expect(desiredAction(vm("a", R), domain("a", DomainState.DOMAIN_STATE_SHUTOFF))?.$case).toBe("start");
    expect(desiredAction(vm("a", R), domain("a", DomainState.DOMAIN_STATE_CRASHED))?.$case).toBe("start");
    expect(desiredAction(vm("a", S, 1, true), domain("a", DomainState.DOMAIN_STATE_RUNNING))).toEqual({ $case: "stop", value: { force: true } });
    expect(desiredAction(vm("a", D), domain("a", DomainState.DOMAIN_STATE_RUNNING))?.$case).toBe("delete");
  });
  it("sends a no-op command so the host records a newer generation", () => {
    expect(desiredAction(vm("a", R, 3), domain("a", DomainState.DOMAIN_STATE_RUNNING, 2))?.$case).toBe("start");
  });
});

describe("the devices a command carries", () => {
  const image = Image.fromPartial({ id: "img-1", name: "debian-12", source: "https://example.com/d.qcow2", format: "", sha256: "ab".repeat(32) });
  const volumes = { "data-1": Volume.fromPartial({ id: "vol-1", name: "data-1", sizeGib: 5, hostId: "h1" }), "data-2": Volume.fromPartial({ id: "vol-2", name: "data-2", sizeGib: 7, hostId: "h1" }) };
  const catalog: DeviceCatalog = { image: (n) => (n === image.name ? image : undefined), volume: (n) => volumes[n as keyof typeof volumes] };
  const withDevices = (over: Partial<VmSpec>, desiredState = R, generation = 1): Vm => {
    const v = vm("0f1e2d3c-0000-4000-8000-000000000001", desiredState, generation);
    return { ...v, spec: { ...v.spec!, ...over } };
  };

  it("a create carries the catalog's image, one NIC per network with the VM's fixed MACs, the seed and the volumes", () => {
    const v = withDevices({ image: "debian-12", networks: ["default", "br0", "default"], cloudInit: { sshAuthorizedKeys: ["ssh-ed25519 AAAA me"], userData: "" }, volumes: ["data-2", "data-1"] });
    const action = desiredAction(v, undefined, false, catalog);
    expect(action?.$case).toBe("create");
    const devices = action?.$case === "create" ? action.value.devices : undefined;
    expect(devices).toEqual({
      image: { id: "img-1", name: "debian-12", source: "https://example.com/d.qcow2", format: "qcow2", sha256: "ab".repeat(32) },
      nics: [
        { network: "default", mac: nicMacAddress(v.id, 0) },
        { network: "br0", mac: nicMacAddress(v.id, 1) },
        { network: "default", mac: nicMacAddress(v.id, 2) },
      ],
      cloudInit: { instanceId: v.id, hostname: v.spec!.name, sshAuthorizedKeys: ["ssh-ed25519 AAAA me"], userData: "" },
      volumes: [{ id: "vol-2", name: "data-2", sizeGib: 7 }, { id: "vol-1", name: "data-1", sizeGib: 5 }],
    });
    // Three NICs, three different MACs, the same ones every time (a recreated domain keeps its leases).
    expect(new Set(devices!.nics.map((n) => n.mac)).size).toBe(3);
    expect(domainDevices(v, catalog)).toEqual(devices);
  });

  it("a VM without image, NICs, seed or volumes gets a blank disk and nothing else", () => {
    expect(desiredAction(vm("a", S), undefined)).toMatchObject({ $case: "create", value: { start: false, devices: { image: undefined, nics: [], cloudInit: undefined, volumes: [] } } });
  });

  it("refuses (NOT_FOUND) a create whose image left the catalog, or whose volume is gone; planHostCommands lists it as a refusal, once, not a command", () => {
    const v = withDevices({ image: "gone" });
    expect(desiredAction(v, undefined, false, catalog)).toEqual({ $case: "refused", value: { code: "NOT_FOUND", message: expect.stringContaining("image 'gone' is no longer in the catalog") } });
    expect(desiredAction(withDevices({ volumes: ["data-9"] }), undefined, false, catalog)).toMatchObject({ $case: "refused", value: { code: "NOT_FOUND", message: expect.stringContaining("volume 'data-9' no longer exists") } });
    const plan = planHostCommands([v], new Map(), { failures: new Map(), nowMs: 1, placedElsewhere: () => false, catalog });
    expect(plan.commands).toEqual([]);
    expect(plan.refusals).toEqual([{ vmId: v.id, generation: 1, code: "NOT_FOUND", message: expect.stringContaining("no longer in the catalog") }]);
    // Recorded as the VM's failure, NOT_FOUND is permanent: the next pass plans nothing for it.
    const failure = recordFailure(undefined, plan.refusals[0]!, 1, () => 0.5);
    expect(failure.permanent).toBe(true);
    const again = planHostCommands([v], new Map(), { failures: new Map([[v.id, failure]]), nowMs: 2, placedElsewhere: () => false, catalog });
    expect(again).toMatchObject({ commands: [], refusals: [] });
    // A domain that exists needs no image: its start is no refusal.
    expect(desiredAction(v, domain(v.id, DomainState.DOMAIN_STATE_SHUTOFF), false, catalog)?.$case).toBe("start");
  });

  it("gives an existing domain the VM's volumes, in order, before anything else (setVolumes), whatever its power state", () => {
    const v = withDevices({ volumes: ["data-1", "data-2"] }, R, 4);
    const running = (ids: string[], generation = 4): Domain => ({ ...domain(v.id, DomainState.DOMAIN_STATE_RUNNING, generation), volumeIds: ids });
    expect(desiredAction(v, running([]), false, catalog)).toEqual({ $case: "setVolumes", value: { volumes: [{ id: "vol-1", name: "data-1", sizeGib: 5 }, { id: "vol-2", name: "data-2", sizeGib: 7 }] } });
    expect(desiredAction(v, running(["vol-2", "vol-1"]), false, catalog)?.$case).toBe("setVolumes");
    expect(desiredAction(v, running(["vol-1", "vol-2"]), false, catalog)).toBeUndefined();
    const stopped = { ...running(["vol-1"], 3), state: DomainState.DOMAIN_STATE_SHUTOFF };
    expect(desiredAction(v, stopped, false, catalog)?.$case).toBe("setVolumes");
    // Detached (the spec lists none): the domain is given none.
    const detached = withDevices({ volumes: [] }, R, 5);
    expect(desiredAction(detached, running(["vol-1"], 4), false, catalog)).toEqual({ $case: "setVolumes", value: { volumes: [] } });
    // A VM being deleted is deleted, its volumes detached by the host's delete.
    expect(desiredAction(withDevices({ volumes: ["data-1"] }, D), running([]), false, catalog)?.$case).toBe("delete");
  });
});

describe("planHostCommands", () => {
  const context = (over: Partial<HostPlanContext> = {}): HostPlanContext => ({ failures: new Map(), nowMs: 1_000, placedElsewhere: () => false, ...over });
  const summary = (plan: HostPlan) => plan.commands.map((p) => `${p.vmId}:${p.action.$case}:${p.generation}`).sort();

  it("plans one command per VM out of sync and leaves unknown domains alone as orphans", () => {
    const vms = [vm("a", R), vm("b", R), vm("c", S)];
    const inventory = new Map([
      ["a", domain("a", DomainState.DOMAIN_STATE_RUNNING)],
      ["c", domain("c", DomainState.DOMAIN_STATE_RUNNING)],
      ["zz", domain("zz", DomainState.DOMAIN_STATE_RUNNING, 4)],
    ]);
    const plan = planHostCommands(vms, inventory, context());
    expect(summary(plan)).toEqual(["b:create:1", "c:stop:1"]);
    expect(plan.orphans.map((d) => d.vmId)).toEqual(["zz"]);
  });
  it("deletes nothing at all when the store knows no VM (an empty or foreign store)", () => {
    const inventory = new Map(["a", "b", "c"].map((id) => [id, domain(id, DomainState.DOMAIN_STATE_RUNNING)]));
    const plan = planHostCommands([], inventory, context());
    expect(plan.commands).toEqual([]);
    expect(plan.orphans).toHaveLength(3);
  });
  it("removes a copy superseded by the VM's record on another host", () => {
    const inventory = new Map([["moved", domain("moved", DomainState.DOMAIN_STATE_SHUTOFF, 3)]]);
    const plan = planHostCommands([], inventory, context({ placedElsewhere: (id) => id === "moved" }));
    expect(summary(plan)).toEqual(["moved:delete:3"]);
    expect(plan.orphans).toEqual([]);
  });
  it("leaves a VM in flight to its migration: not recreated on its source, its arriving domain neither an orphan nor a superseded copy", () => {
    const inFlight = (id: string): boolean => id === "m";
    // The source: the domain has left; the record still names this host.
    const source = planHostCommands([vm("m", R)], new Map(), context({ inFlight }));
    expect(source).toEqual({ commands: [], refusals: [], orphans: [], nextRetryAtMs: undefined });
    // The target: the domain is here, the record places it elsewhere.
    const target = planHostCommands([], new Map([["m", domain("m", DomainState.DOMAIN_STATE_RUNNING)]]), context({ inFlight, placedElsewhere: () => true }));
    expect(target).toEqual({ commands: [], refusals: [], orphans: [], nextRetryAtMs: undefined });
  });
  it("keeps a domain that a failed migration may have left as the only copy: an orphan, never deleted", () => {
    const inventory = new Map([["m", domain("m", DomainState.DOMAIN_STATE_RUNNING)]]);
    const plan = planHostCommands([], inventory, context({ placedElsewhere: () => true, mayBeOnlyCopy: (id) => id === "m" }));
    expect(plan.commands).toEqual([]);
    expect(plan.orphans.map((d) => d.vmId)).toEqual(["m"]);
  });
  it("plans nothing for a host in sync", () => {
    expect(planHostCommands([vm("a", R)], new Map([["a", domain("a", DomainState.DOMAIN_STATE_RUNNING)]]), context())).toEqual({ commands: [], refusals: [], orphans: [], nextRetryAtMs: undefined });
  });
  it("holds a failed command until its backoff runs out, and a permanent one until the generation changes", () => {
    const retryable = recordFailure(undefined, { generation: 1, code: "HYPERVISOR_UNAVAILABLE", message: "busy" }, 1_000, () => 0.5);
    expect(retryable).toMatchObject({ attempts: 1, nextAttemptAtMs: 1_750, permanent: false });
    const failures = new Map([["b", retryable]]);
    const early = planHostCommands([vm("b", R)], new Map(), context({ failures, nowMs: 1_500 }));
    expect(early.commands).toEqual([]);
    expect(early.nextRetryAtMs).toBe(1_750);
    expect(summary(planHostCommands([vm("b", R)], new Map(), context({ failures, nowMs: 1_750 })))).toEqual(["b:create:1"]);

    const permanent = recordFailure(undefined, { generation: 1, code: "INVALID_ARGUMENT", message: "bad" }, 1_000, () => 0.5);
    expect(permanent.permanent).toBe(true);
    const held = planHostCommands([vm("b", R)], new Map(), context({ failures: new Map([["b", permanent]]), nowMs: 10 ** 9 }));
    expect(held.commands).toEqual([]);
    // `berth vm retry` (or any change of the desired state) bumps the generation: it applies afresh.
    expect(summary(planHostCommands([vm("b", R, 2)], new Map(), context({ failures: new Map([["b", permanent]]) })))).toEqual(["b:create:2"]);
  });
  it("counts attempts within a generation and starts again for a newer one", () => {
    let f = recordFailure(undefined, { generation: 1, code: "UNAVAILABLE", message: "" }, 0, () => 1);
    f = recordFailure(f, { generation: 1, code: "UNAVAILABLE", message: "" }, 0, () => 1);
    f = recordFailure(f, { generation: 1, code: "UNAVAILABLE", message: "" }, 0, () => 1);
    expect(f).toMatchObject({ attempts: 3, nextAttemptAtMs: 4_000 });
    expect(recordFailure(f, { generation: 2, code: "UNAVAILABLE", message: "" }, 0, () => 1)).toMatchObject({ attempts: 1, nextAttemptAtMs: 1_000 });
  });
  it("holds creates (only) while told to, and marks restart-policy domains for the watchdog", () => {
    const vms = [vm("a", R), vm("b", S)];
    const inventory = new Map([["b", domain("b", DomainState.DOMAIN_STATE_RUNNING)]]);
    expect(summary(planHostCommands(vms, inventory, context({ holdCreates: true })))).toEqual(["b:stop:1"]);
    const plan = planHostCommands(vms, inventory, context({ fence: (v) => v.id === "a" }));
    expect(plan.commands.find((c) => c.vmId === "a")?.action).toMatchObject({ $case: "create", value: { fence: true } });
  });
});

describe("observedStatus", () => {
  it("is UNKNOWN while the host is away and keeps the last domain state", () => {
    const v = { ...vm("a", R), status: VmStatus.fromPartial({ phase: VmPhase.VM_PHASE_RUNNING, domainState: DomainState.DOMAIN_STATE_RUNNING, observedGeneration: 1, updatedAtMs: 1 }) };
    expect(observedStatus(v, false, undefined, undefined, 5)).toMatchObject({ phase: VmPhase.VM_PHASE_UNKNOWN, domainState: DomainState.DOMAIN_STATE_RUNNING });
  });
  it("is PENDING until the host applied the latest generation, then follows the domain", () => {
    expect(observedStatus(vm("a", R), true, undefined, undefined, 5).phase).toBe(VmPhase.VM_PHASE_PENDING);
    expect(observedStatus(vm("a", S, 2), true, domain("a", DomainState.DOMAIN_STATE_RUNNING, 1), undefined, 5).phase).toBe(VmPhase.VM_PHASE_PENDING);
    expect(observedStatus(vm("a", R), true, domain("a", DomainState.DOMAIN_STATE_RUNNING), undefined, 5).phase).toBe(VmPhase.VM_PHASE_RUNNING);
    expect(observedStatus(vm("a", S, 2), true, domain("a", DomainState.DOMAIN_STATE_SHUTOFF, 2), undefined, 5).phase).toBe(VmPhase.VM_PHASE_STOPPED);
  });
  it("is FAILED with the host's message when the current generation failed", () => {
    const s = observedStatus(vm("a", R, 2), true, undefined, { generation: 2, code: "HYPERVISOR_UNAVAILABLE", message: "down", attempts: 2, nextAttemptAtMs: 2_005, permanent: false }, 5);
    expect(s).toMatchObject({ phase: VmPhase.VM_PHASE_FAILED, message: "HYPERVISOR_UNAVAILABLE: down", attempts: 2, errorCode: "HYPERVISOR_UNAVAILABLE", nextAttemptAtMs: 2_005, permanent: false });
    // A failure of an older generation no longer counts.
    expect(observedStatus(vm("a", R, 3), true, undefined, { generation: 2, code: "X", message: "y", attempts: 1, nextAttemptAtMs: 0, permanent: false }, 5).phase).toBe(VmPhase.VM_PHASE_PENDING);
  });
  it("compares statuses without the timestamp", () => {
    const a = observedStatus(vm("a", R), true, undefined, undefined, 1);
    expect(sameStatus(a, { ...a, updatedAtMs: 99 })).toBe(true);
    expect(sameStatus(a, { ...a, phase: VmPhase.VM_PHASE_RUNNING })).toBe(false);
    expect(sameStatus(undefined, a)).toBe(false);
    // A NIC's address learnt is a change worth writing (vm show prints it).
    const nic = { network: "default", mac: "52:54:00:00:00:01", ipAddresses: [], addressSource: "" };
    const b = { ...a, interfaces: [nic] };
    expect(sameStatus(a, b)).toBe(false);
    expect(sameStatus(b, { ...b, interfaces: [{ ...nic, ipAddresses: ["10.0.0.2"], addressSource: "lease" }] })).toBe(false);
    expect(sameStatus(b, { ...b, interfaces: [{ ...nic }] })).toBe(true);
  });
});

describe("migratingStatus", () => {
  it("says where the VM goes and how far, keeping what was observed", () => {
    const vm = { id: "v", status: { phase: VmPhase.VM_PHASE_RUNNING, domainState: DomainState.DOMAIN_STATE_RUNNING, observedGeneration: 4, message: "", updatedAtMs: 1, attempts: 2, errorCode: "X", nextAttemptAtMs: 9, permanent: false } } as unknown as Vm;
    const status = migratingStatus(vm, undefined, { targetHost: "h2", phase: "migrating" }, 50);
    expect(status).toEqual({ phase: VmPhase.VM_PHASE_MIGRATING, domainState: DomainState.DOMAIN_STATE_RUNNING, observedGeneration: 4, message: "migrating to h2 (migrating)", updatedAtMs: 50, attempts: 0, errorCode: "", nextAttemptAtMs: 0, permanent: false, interfaces: [] });
    expect(migratingStatus(vm, undefined, undefined, 50).message).toBe("migrated");
  });
});
