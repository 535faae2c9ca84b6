import { describe, expect, it } from "vitest";
import { DesiredState, DomainState, VmPhase, VmSpec, VmStatus, type Domain, type Vm } from "@berth/api";
import { desiredAction, observedStatus, planHostCommands, sameStatus } from "./reconcile.js";

const resources = { vcpus: 1, memoryMib: 512, diskGib: 1 };
function vm(id: string, desiredState: DesiredState, generation = 1, forceStop = false): Vm {
  return { id, spec: VmSpec.fromPartial({ name: `vm-${id}`, resources }), desiredState, hostId: "h1", generation, status: undefined, createdAtMs: 0, forceStop, requestId: "" };
}
function domain(vmId: string, state: DomainState, generation = 1): Domain {
  return { vmId, name: `vm-${vmId}`, state, generation, resources, fence: false };
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

describe("planHostCommands", () => {
  it("plans one command per VM out of sync and deletes orphans", () => {
    const vms = [vm("a", R), vm("b", R), vm("c", S)];
    const inventory = new Map([
      ["a", domain("a", DomainState.DOMAIN_STATE_RUNNING)],
      ["c", domain("c", DomainState.DOMAIN_STATE_RUNNING)],
      ["zz", domain("zz", DomainState.DOMAIN_STATE_RUNNING, 4)],
    ]);
    const planned = planHostCommands(vms, inventory).map((p) => `${p.vmId}:${p.action.$case}:${p.generation}`);
    expect(planned.sort()).toEqual(["b:create:1", "c:stop:1", "zz:delete:4"]);
  });
  it("plans nothing for a host in sync", () => {
    expect(planHostCommands([vm("a", R)], new Map([["a", domain("a", DomainState.DOMAIN_STATE_RUNNING)]]))).toEqual([]);
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
    const s = observedStatus(vm("a", R, 2), true, undefined, { generation: 2, code: "HYPERVISOR_UNAVAILABLE", message: "down" }, 5);
    expect(s).toMatchObject({ phase: VmPhase.VM_PHASE_FAILED, message: "HYPERVISOR_UNAVAILABLE: down" });
    // A failure of an older generation no longer counts.
    expect(observedStatus(vm("a", R, 3), true, undefined, { generation: 2, code: "X", message: "y" }, 5).phase).toBe(VmPhase.VM_PHASE_PENDING);
  });
  it("compares statuses without the timestamp", () => {
    const a = observedStatus(vm("a", R), true, undefined, undefined, 1);
    expect(sameStatus(a, { ...a, updatedAtMs: 99 })).toBe(true);
    expect(sameStatus(a, { ...a, phase: VmPhase.VM_PHASE_RUNNING })).toBe(false);
    expect(sameStatus(undefined, a)).toBe(false);
  });
});
