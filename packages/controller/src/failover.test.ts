import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DesiredState, Host, HostFailurePolicy, HostState, Vm, VmSpec } from "@berth/api";
import { failurePolicyOf, planFailover, type FailoverLimits } from "./failover.js";

const limits: FailoverLimits = { hostsPerInterval: 2, rateIntervalMs: 10_000, maxUnreadyFraction: 0.5, settleAfterMassFailureMs: 5_000 };
const R = HostFailurePolicy.HOST_FAILURE_POLICY_RESTART;
const K = HostFailurePolicy.HOST_FAILURE_POLICY_KEEP;
const U = HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED;
const host = (id: string, state: HostState, over: Partial<Host> = {}) => Host.fromPartial({ id, state, ...over });
const vm = (name: string, hostId: string, policy = R, desiredState = DesiredState.DESIRED_STATE_RUNNING) =>
  Vm.fromPartial({ id: name, hostId, desiredState, spec: VmSpec.fromPartial({ name, onHostFailure: policy }) });

describe("failurePolicyOf", () => {
  it("takes the VM's own, else the cluster's, else KEEP", () => {
    expect(failurePolicyOf(vm("a", "h", K), R)).toBe(K);
    expect(failurePolicyOf(vm("a", "h", U), R)).toBe(R);
    expect(failurePolicyOf(vm("a", "h", U), U)).toBe(K);
  });
});

describe("planFailover", () => {
  it("restarts restart-policy VMs of fenced hosts only, never KEEP ones nor those being deleted", () => {
    const hosts = [host("h1", HostState.HOST_STATE_FENCED), host("h2", HostState.HOST_STATE_DOWN), ...["h3", "h4", "h5"].map((h) => host(h, HostState.HOST_STATE_READY))];
    const vms: Record<string, Vm[]> = {
      h1: [vm("a", "h1"), vm("b", "h1", K), vm("c", "h1", R, DesiredState.DESIRED_STATE_DELETED), vm("d", "h1", U)],
      h2: [vm("e", "h2")],
    };
    const plan = planFailover(hosts, (id) => vms[id] ?? [], U, { started: new Set(), budget: 2 }, limits);
    expect(plan.restarts).toEqual([{ hostId: "h1", vms: [vms.h1![0]] }]);
    expect(planFailover(hosts, (id) => vms[id] ?? [], R, { started: new Set(), budget: 2 }, limits).restarts[0]!.vms.map((v) => v.id)).toEqual(["a", "d"]);
  });
  it("keeps a RESTART VM with data volumes on its fenced host (its data is there), saying so", () => {
    const hosts = [host("h1", HostState.HOST_STATE_FENCED), ...["h2", "h3", "h4"].map((h) => host(h, HostState.HOST_STATE_READY))];
    const withData = Vm.fromPartial({ ...vm("db", "h1"), spec: VmSpec.fromPartial({ name: "db", onHostFailure: R, volumes: ["db-data"] }) });
    const plan = planFailover(hosts, (id) => (id === "h1" ? [vm("web", "h1"), withData, vm("cache", "h1", K)] : []), U, { started: new Set(), budget: 2 }, limits);
    expect(plan.restarts).toEqual([{ hostId: "h1", vms: [expect.objectContaining({ id: "web" })] }]);
    expect(plan.kept).toEqual([{ hostId: "h1", vms: [withData] }]);
    // Alone on its host: nothing is restarted, the VM is still told of.
    const alone = planFailover(hosts, (id) => (id === "h1" ? [withData] : []), U, { started: new Set(), budget: 2 }, limits);
    expect(alone).toMatchObject({ restarts: [], kept: [{ hostId: "h1", vms: [withData] }], held: undefined });
  });
  it("halts when more than half the hosts look down, except for hosts confirmed down", () => {
    const hosts = [host("h1", HostState.HOST_STATE_FENCED), host("h2", HostState.HOST_STATE_FENCED, { confirmedDown: true }), host("h3", HostState.HOST_STATE_SUSPECT), host("h4", HostState.HOST_STATE_READY)];
    const plan = planFailover(hosts, (id) => [vm(`vm-${id}`, id)], U, { started: new Set(), budget: 4 }, limits);
    expect(plan.restarts.map((r) => r.hostId)).toEqual(["h2"]);
    expect(plan.held).toMatch(/3 of 4 hosts are not ready/);
  });
  it("stays held while hosts come back from a mass failure, so the last ones back are not restarted elsewhere", () => {
    // 2 of 4 not ready: no longer a mass failure, but one ended 1 s ago.
    const hosts = [host("h1", HostState.HOST_STATE_READY), host("h2", HostState.HOST_STATE_FENCED), host("h3", HostState.HOST_STATE_FENCED), host("h4", HostState.HOST_STATE_READY)];
    const vmsOf = (id: string) => [vm(`vm-${id}`, id)];
    const settling = planFailover(hosts, vmsOf, U, { started: new Set(), budget: 4 }, limits, { nowMs: 11_000, lastMassFailureMs: 10_000 });
    expect(settling.restarts).toEqual([]);
    expect(settling.held).toMatch(/coming back from a mass failure/);
    const later = planFailover(hosts, vmsOf, U, { started: new Set(), budget: 4 }, limits, { nowMs: 15_000, lastMassFailureMs: 10_000 });
    expect(later.restarts.map((r) => r.hostId)).toEqual(["h2", "h3"]);
  });
  it("property: only fenced hosts, only RESTART VMs, never more new hosts than the budget", () => {
    const states = [HostState.HOST_STATE_READY, HostState.HOST_STATE_SUSPECT, HostState.HOST_STATE_DOWN, HostState.HOST_STATE_FENCED];
    fc.assert(
      fc.property(
        fc.array(fc.record({ state: fc.constantFrom(...states), confirmed: fc.boolean(), since: fc.nat(1000), policies: fc.array(fc.constantFrom(R, K, U), { maxLength: 4 }) }), { minLength: 1, maxLength: 12 }),
        fc.nat(4),
        fc.constantFrom(R, K, U),
        (specs, budget, clusterDefault) => {
          const hosts = specs.map((s, i) => host(`h${i}`, s.state, { confirmedDown: s.confirmed, stateSinceMs: s.since }));
          const vmsOf = (id: string) => specs[Number(id.slice(1))]!.policies.map((p, j) => vm(`${id}-${j}`, id, p));
          const plan = planFailover(hosts, vmsOf, clusterDefault, { started: new Set(), budget }, limits);
          expect(plan.restarts.length).toBeLessThanOrEqual(budget);
          const unready = hosts.filter((h) => h.state !== HostState.HOST_STATE_READY).length;
          for (const r of plan.restarts) {
            const h = hosts.find((x) => x.id === r.hostId)!;
            expect(h.state).toBe(HostState.HOST_STATE_FENCED);
            if (unready > hosts.length / 2) expect(h.confirmedDown).toBe(true);
            for (const v of r.vms) expect(failurePolicyOf(v, clusterDefault)).toBe(R);
          }
        },
      ),
    );
  });
});
