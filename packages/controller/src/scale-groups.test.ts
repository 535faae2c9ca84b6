import { DesiredState, ScaleGroup, Vm, VmPhase, VmSpec } from "@berth/api";
import { isBerthError } from "@berth/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { applyDecision, initialMembers, memberSpec, planMembers, SCALE_GROUP_LABEL, validateScaleGroupInput } from "./scale-groups.js";

const template = VmSpec.fromPartial({ resources: { vcpus: 2, memoryMib: 1024, diskGib: 5 }, labels: { app: "web" }, group: "spread" });
const group = (over: Partial<ScaleGroup> = {}): ScaleGroup =>
  ScaleGroup.fromPartial({ name: "web", template, minSize: 1, maxSize: 5, policy: { targetCpu: 0.6 }, members: initialMembers("web", 2, 1000), nextIndex: 3, ...over });
const vmOf = (name: string, owner = "web", desired = DesiredState.DESIRED_STATE_RUNNING): Vm =>
  Vm.fromPartial({ id: `id-${name}`, spec: { ...template, name, labels: owner ? { [SCALE_GROUP_LABEL]: owner } : {} }, desiredState: desired, status: { phase: VmPhase.VM_PHASE_RUNNING } });
const decision = (fromSize: number, toSize: number) => ({ decidedAtMs: 0, reason: toSize > fromSize ? "ScaledOut" : "ScaledIn", fromSize, toSize, warmMembers: 0, warmingMembers: 0, cpuUtilization: 0, reactiveSize: toSize, predictedSize: 0, predictedCores: 0, message: "" });

describe("scale groups: the pure rules of a group's record", () => {
  it("refuses bad input naming the field", () => {
    const refused = (g: ScaleGroup): string => {
      try {
        validateScaleGroupInput(g);
      } catch (e) {
        if (isBerthError(e)) return e.message;
        throw e;
      }
      return "accepted";
    };
    expect(refused(group())).toBe("accepted");
    expect(refused(group({ name: "x".repeat(53) }))).toMatch(/^group\.name: at most 52 characters/);
    expect(refused(group({ template: undefined }))).toMatch(/^group\.template: is required/);
    expect(refused(group({ template: { ...template, resources: { vcpus: 0, memoryMib: 1024, diskGib: 1 } } }))).toMatch(/^group\.template\.resources\.vcpus/);
    expect(refused(group({ template: { ...template, volumes: ["data"] } }))).toMatch(/^group\.template\.volumes/);
    expect(refused(group({ minSize: 6 }))).toMatch(/^group\.min_size: must be a whole number from 0 to max_size 5/);
    expect(refused(group({ maxSize: 0, minSize: 0 }))).toMatch(/^group\.max_size/);
    expect(refused(group({ maxSize: 1001 }))).toMatch(/^group\.max_size/);
    expect(refused(group({ policy: { targetCpu: 0 } as ScaleGroup["policy"] }))).toMatch(/^group\.policy\.target_cpu/);
  });

  it("a member's spec is the template, named and labelled with its group, its placement group kept", () => {
    const spec = memberSpec(group(), { name: "web-7", index: 7, addedAtMs: 0 });
    expect(spec.name).toBe("web-7");
    expect(spec.labels).toEqual({ app: "web", [SCALE_GROUP_LABEL]: "web" });
    expect(spec.group).toBe("spread");
    expect(template.labels).toEqual({ app: "web" });
  });

  it("plans the missing members' creates and the unlisted VMs' deletes, leaving other owners' VMs alone", () => {
    const g = group({ members: initialMembers("web", 3, 0), nextIndex: 4 });
    const plan = planMembers(g, [vmOf("web-1"), vmOf("web-3", ""), vmOf("web-9"), vmOf("web-8", "web", DesiredState.DESIRED_STATE_DELETED), vmOf("db-1", "db")]);
    // web-2 is missing; web-3's name is taken by a VM of no group (neither made nor removed).
    expect(plan.create.map((m) => m.name)).toEqual(["web-2"]);
    expect(plan.remove.map((v) => v.spec?.name)).toEqual(["web-9"]);
    expect(plan.removing.map((v) => v.spec?.name)).toEqual(["web-8"]);
    // Being deleted: every VM of the group goes, none is made.
    const deleting = planMembers({ ...g, deleting: true }, [vmOf("web-1")]);
    expect(deleting.create).toEqual([]);
    expect(deleting.remove.map((v) => v.spec?.name)).toEqual(["web-1"]);
  });

  it("a scale-out names fresh members, never reusing an index; a scale-in removes the named ones", () => {
    const out = applyDecision(group(), decision(2, 4), 5000);
    expect(out.members.map((m) => m.name)).toEqual(["web-1", "web-2", "web-3", "web-4"]);
    expect(out.nextIndex).toBe(5);
    expect(out.decisionCount).toBe(1);
    expect(out.decisions[0]).toMatchObject({ seq: 1, decidedAtMs: 5000, added: ["web-3", "web-4"], removed: [], toSize: 4 });
    const back = applyDecision({ ...out, protectedMembers: ["web-1", "web-2"] }, decision(4, 3), 6000, ["web-2"]);
    expect(back.members.map((m) => m.name)).toEqual(["web-1", "web-3", "web-4"]);
    expect(back.protectedMembers).toEqual(["web-1"]);
    const again = applyDecision(back, decision(3, 4), 7000);
    expect(again.members.map((m) => m.name)).toEqual(["web-1", "web-3", "web-4", "web-5"]);
  });

  it("property: names stay unique across any sequence of decisions, and the record keeps at most 50", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 12 }), { maxLength: 80 }), (sizes) => {
        let g = group();
        const ever = new Set(g.members.map((m) => m.name));
        for (const size of sizes) {
          const from = g.members.length;
          if (size === from) continue;
          const remove = size < from ? g.members.slice(0, from - size).map((m) => m.name) : [];
          const before = new Set(g.members.map((m) => m.name));
          g = applyDecision(g, decision(from, size), 0, remove);
          expect(g.members).toHaveLength(size);
          for (const m of g.members) {
            if (!before.has(m.name)) {
              expect(ever.has(m.name)).toBe(false);
              ever.add(m.name);
            }
          }
          expect(new Set(g.members.map((m) => m.name)).size).toBe(g.members.length);
        }
        expect(g.decisions.length).toBeLessThanOrEqual(50);
      }),
    );
  });
});
