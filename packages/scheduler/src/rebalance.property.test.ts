import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { checkMove, imbalanceOf, moveRequestOf, planRebalance, withoutPlacement, withPlacement, type HostSnapshot } from "./index.js";
import { admissible } from "./scheduler.testkit.js";
import { applyMoves, freeOnHostsLeft, rebalanceScenarioArb } from "./rebalance.testkit.js";

const RUNS = 120;

describe("rebalance planner properties (random clusters with labels, groups, pins, overrides, presets)", () => {
  it("the random scenarios are not vacuous: plans of both goals move VMs, grouped, pinned, networked and volume-carrying ones among them", () => {
    let balanceMoves = 0;
    let consolidateMoves = 0;
    let grouped = 0;
    let pinned = 0;
    let networked = 0;
    let withVolumes = 0;
    for (const { options, input, rebalance } of fc.sample(rebalanceScenarioArb, { numRuns: 150, seed: 7 })) {
      const b = planRebalance(input, options, { ...rebalance, goal: "balance" });
      const c = planRebalance(input, options, { ...rebalance, goal: "consolidate" });
      balanceMoves += b.moves.length;
      consolidateMoves += c.moves.length;
      for (const m of [...b.moves, ...c.moves]) {
        const vm = input.vms.find((v) => v.id === m.vmId)!;
        if (vm.request.group) grouped++;
        if (vm.request.pinnedHosts?.length) pinned++;
        if (vm.request.networks?.length) networked++;
        if (vm.volumeGib) withVolumes++;
      }
    }
    expect(balanceMoves).toBeGreaterThan(25);
    expect(consolidateMoves).toBeGreaterThan(25);
    expect(grouped).toBeGreaterThan(10);
    expect(pinned).toBeGreaterThan(0);
    expect(networked).toBeGreaterThan(0);
    expect(withVolumes).toBeGreaterThan(0);
  });

  it("every move, applied in order, passes the scheduler's filters (and an independent statement of them), within the budgets", () => {
    fc.assert(
      fc.property(rebalanceScenarioArb, ({ options, input, rebalance }) => {
        const plan = planRebalance(input, options, rebalance);
        const hosts = new Map(input.hosts.map((h) => [h.id, h]));
        const original = new Map(input.vms.map((v) => [v.id, v]));
        const where = new Map(input.vms.map((v) => [v.id, v.hostId]));
        const moved = new Set<string>();
        const perHost = new Map<string, number>();
        expect(plan.moves.length).toBeLessThanOrEqual(rebalance.maxMoves);
        for (const mv of plan.moves) {
          const vm = original.get(mv.vmId)!;
          expect(vm).toBeDefined();
          expect(vm.movable).toBe(true);
          expect(moved.has(mv.vmId)).toBe(false); // at most once per plan …
          expect(mv.to).not.toBe(vm.hostId); // … so never back to where it came from
          expect(mv.from).toBe(where.get(mv.vmId));
          expect(mv.to).not.toBe(mv.from);
          // Its memory, its own disk when that is local, and its volumes always (they travel).
          const q = vm.request.resources;
          expect(mv.costGiB).toBeCloseTo(q.memoryMib / 1024 + (vm.copiesDisk ? q.diskGib : 0) + (vm.volumeGib ?? 0), 9);
          for (const id of [mv.from, mv.to]) {
            const h = hosts.get(id)!;
            expect(h.ready && !h.cordoned).toBe(true);
            expect(rebalance.frozenHosts?.has(id) ?? false).toBe(false);
            perHost.set(id, (perHost.get(id) ?? 0) + 1);
          }
          const current = [...hosts.values()];
          // The move carries the VM's volumes: no pin to their host, their size in the disk.
          const request = moveRequestOf(vm);
          expect(checkMove(current, mv, request, options)).toBeUndefined();
          const g = vm.request.group?.name;
          const without = current.map((h) => (h.id === mv.from ? withoutPlacement(h, request.resources, g) : h));
          expect(admissible(hosts.get(mv.to)!, request, options, without)).toBe(true);
          hosts.set(mv.from, withoutPlacement(hosts.get(mv.from)!, request.resources, g));
          hosts.set(mv.to, withPlacement(hosts.get(mv.to)!, request.resources, g));
          where.set(mv.vmId, mv.to);
          moved.add(mv.vmId);
        }
        for (const n of perHost.values()) expect(n).toBeLessThanOrEqual(rebalance.maxMovesPerHost ?? 8);
        const after = applyMoves(input, plan.moves);
        expect(plan.imbalanceAfter).toBeCloseTo(imbalanceOf(after, options, plan.metric), 9);
        expect(plan.imbalanceBefore).toBeCloseTo(imbalanceOf(input, options, plan.metric), 12);
        if (plan.moves.length > 0) expect(plan.moves.at(-1)!.imbalanceAfter).toBeCloseTo(plan.imbalanceAfter, 9);
        expect(plan.movedGiB).toBeCloseTo(plan.moves.reduce((a, m) => a + m.costGiB, 0), 9);
      }),
      { numRuns: RUNS },
    );
  });

  it("balance: each move lowers the imbalance by at least the cost gate; the plan never raises it", () => {
    fc.assert(
      fc.property(rebalanceScenarioArb, ({ options, input, rebalance }) => {
        const plan = planRebalance(input, options, { ...rebalance, goal: "balance" });
        let prev = plan.imbalanceBefore;
        for (const mv of plan.moves) {
          expect(mv.benefit).toBeGreaterThan(0);
          expect(mv.benefit).toBeGreaterThanOrEqual((rebalance.minBenefitPerGiB ?? 0) * mv.costGiB - 1e-12);
          expect(mv.imbalanceAfter).toBeCloseTo(prev - mv.benefit, 9);
          prev = mv.imbalanceAfter;
        }
        expect(plan.imbalanceAfter).toBeLessThanOrEqual(plan.imbalanceBefore + 1e-9);
        if (plan.moves.length === 0) expect(plan.imbalanceAfter).toBe(plan.imbalanceBefore);
      }),
      { numRuns: RUNS },
    );
  });

  it("stable: planning again on the applied snapshot moves none of the VMs the plan moved (no ping-pong)", () => {
    fc.assert(
      fc.property(rebalanceScenarioArb, ({ options, input, rebalance }) => {
        const plan = planRebalance(input, options, rebalance);
        const moved = new Set(plan.moves.map((m) => m.vmId));
        const left = new Map(plan.moves.map((m) => [m.vmId, m.from]));
        const again = planRebalance(applyMoves(input, plan.moves), options, rebalance);
        const freed = new Set(plan.freedHosts);
        if (rebalance.goal === "balance" || !plan.budgetBound) {
          for (const mv of again.moves) expect(moved.has(mv.vmId)).toBe(false);
        }
        if (rebalance.goal === "consolidate") {
          // Cut by a budget, the next plan may move a VM again, but only to empty one more host:
          // never back where it was, never onto a host this plan emptied.
          for (const mv of again.moves) {
            expect(freed.has(mv.to)).toBe(false);
            expect(mv.to).not.toBe(left.get(mv.vmId));
          }
          if (!plan.budgetBound) expect(again.moves).toEqual([]);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("consolidate: all or nothing per host, onto hosts holding VMs, keeping the free capacity asked for", () => {
    fc.assert(
      fc.property(rebalanceScenarioArb, ({ options, input, rebalance }) => {
        const plan = planRebalance(input, options, { ...rebalance, goal: "consolidate" });
        const freed = new Set(plan.freedHosts);
        const hosts = new Map<string, HostSnapshot>(input.hosts.map((h) => [h.id, h]));
        for (const mv of plan.moves) {
          expect(freed.has(mv.from)).toBe(true); // only hosts it empties are sources
          expect(freed.has(mv.to)).toBe(false);
          expect(hosts.get(mv.to)!.vmCount).toBeGreaterThan(0); // never onto an empty host
          const vm = input.vms.find((v) => v.id === mv.vmId)!;
          const resources = moveRequestOf(vm).resources;
          hosts.set(mv.from, withoutPlacement(hosts.get(mv.from)!, resources, vm.request.group?.name));
          hosts.set(mv.to, withPlacement(hosts.get(mv.to)!, resources, vm.request.group?.name));
        }
        for (const id of freed) {
          expect(hosts.get(id)!.vmCount).toBe(0);
          expect(input.vms.filter((v) => v.hostId === id).every((v) => plan.moves.some((m) => m.vmId === v.id))).toBe(true);
        }
        if (freed.size > 0) {
          const { free, total } = freeOnHostsLeft([...hosts.values()], options);
          free.forEach((f, r) => expect(f).toBeGreaterThanOrEqual((rebalance.minFreeFraction ?? 0.1) * total[r]! - 1e-9));
        }
      }),
      { numRuns: RUNS },
    );
  });
});
