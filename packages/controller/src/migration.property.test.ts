import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DesiredState, DomainState, MigrationPhase, MigrationReason, VmPhase, VmStatus, type Domain, type Migration, type Vm } from "@berth/api";
import { stepMigration, type MigrationAction, type MigrationResult } from "./migration.js";

// The migration protocol against a model of two hosts, under random faults: results lost, hosts
// disconnected for a while, the leader replaced (every answer it held lost), operator aborts and
// desired-state changes at any moment. The model's hypervisors follow the driver contract: a
// migrate-out either moves the domain (it leaves the source, arrives at the target unlisted until
// finished) or fails leaving it running at the source; an abort on the target never discards an
// arrived domain. Invariants: never running on both hosts; once the faults stop, the migration
// ends; COMPLETED means the target runs it, FAILED means the source still does; never lost.

type Target = "none" | "prepared" | "arrived" | "running";
interface World {
  source: "running" | "gone";
  target: Target;
  sourceUp: boolean;
  targetUp: boolean;
}

const VM: Vm = {
  id: "11111111-1111-4111-8111-111111111111",
  spec: { name: "web", resources: { vcpus: 1, memoryMib: 1024, diskGib: 1 }, labels: {}, group: "", requiredHostLabels: {}, forbiddenHostLabels: {}, pinnedHosts: [], image: "", networks: [], volumes: [], onHostFailure: 0 },
  desiredState: DesiredState.DESIRED_STATE_RUNNING,
  hostId: "a",
  generation: 1,
  status: VmStatus.fromPartial({ phase: VmPhase.VM_PHASE_RUNNING }),
  createdAtMs: 0,
  forceStop: false,
  requestId: "",
};

const domain = (state: DomainState): Domain => ({ vmId: VM.id, name: "web", state, generation: 1, resources: VM.spec!.resources, fence: false, interfaces: [], volumeIds: [], imageId: "" });

/** One random event between two steps. */
type Fault = "none" | "lose-results" | "source-down" | "source-up" | "target-down" | "target-up" | "new-leader" | "abort" | "stop-vm" | "migrate-fails";
const faultArb = fc.constantFrom<Fault>("none", "none", "none", "lose-results", "source-down", "source-up", "target-down", "target-up", "new-leader", "abort", "stop-vm", "migrate-fails");

function run(faults: Fault[]): { m: Migration; w: World; trace: string[] } {
  const w: World = { source: "running", target: "none", sourceUp: true, targetUp: true };
  let vm = VM;
  let m: Migration = {
    id: "m", vmId: VM.id, vmName: "web", sourceHost: "a", targetHost: "b", targetRequested: false,
    phase: MigrationPhase.MIGRATION_PHASE_PREPARING, reason: MigrationReason.MIGRATION_REASON_OPERATOR, requestedBy: "", vmGeneration: 1,
    targetDriver: "", targetUri: "", createdAtMs: 0, startedAtMs: 0, phaseSinceMs: 0, finishedAtMs: 0, deadlineAtMs: 1e12,
    progress: undefined, lowestRemainingBytes: 0, lowestRemainingAtMs: 0, message: "", errorCode: "", dataEstimateBytes: 0, abortRequested: false, requestId: "",
  };
  let results: { source: Partial<Record<MigrationAction, MigrationResult>>; target: Partial<Record<MigrationAction, MigrationResult>> } = { source: {}, target: {} };
  let failMigrate = false;
  const trace: string[] = [];
  const ok = (action: MigrationAction, extra: Partial<MigrationResult> = {}): MigrationResult => ({ action, ok: true, code: "", message: "", ...extra });
  const fail = (action: MigrationAction, code: string): MigrationResult => ({ action, ok: false, code, message: code });
  // The faults, then a calm tail long enough for any migration to end.
  const events: Fault[] = [...faults, "source-up", "target-up", ...Array<Fault>(40).fill("none")];
  for (let now = 1; now <= events.length; now++) {
    const f = events[now - 1]!;
    let lose = false;
    switch (f) {
      case "lose-results": lose = true; break;
      case "source-down": w.sourceUp = false; break;
      case "source-up": w.sourceUp = true; break;
      case "target-down": w.targetUp = false; break;
      case "target-up": w.targetUp = true; break;
      case "new-leader": results = { source: {}, target: {} }; break;
      case "abort": m = { ...m, abortRequested: true }; break;
      case "stop-vm": vm = { ...vm, desiredState: DesiredState.DESIRED_STATE_STOPPED, generation: 2 }; break;
      case "migrate-fails": failMigrate = true; break;
      default: break;
    }
    if (m.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED || m.phase === MigrationPhase.MIGRATION_PHASE_FAILED) break;
    const step = stepMigration(m, {
      nowMs: now,
      vm,
      source: { connected: w.sourceUp, fenced: false, domain: w.sourceUp && w.source === "running" ? domain(DomainState.DOMAIN_STATE_RUNNING) : undefined, awayMs: w.sourceUp ? 0 : 1 },
      target: { connected: w.targetUp, fenced: false, domain: w.targetUp && w.target === "running" ? domain(DomainState.DOMAIN_STATE_RUNNING) : undefined, awayMs: w.targetUp ? 0 : 1 },
      results,
      progressTimeoutMs: 1e12,
      targetAwayLimitMs: 1e12,
    });
    trace.push(`${now} ${f} ${MigrationPhase[m.phase]} ${JSON.stringify(w)} → ${step.complete ? "complete" : step.patch ? MigrationPhase[step.patch.phase!] : step.commands.map((c) => `${c.side}:${c.action.$case}`).join(",")}`);
    if (step.complete) {
      m = { ...m, phase: MigrationPhase.MIGRATION_PHASE_COMPLETED };
      break;
    }
    if (step.patch) {
      m = { ...m, ...step.patch };
      continue;
    }
    for (const c of step.commands) {
      const up = c.side === "source" ? w.sourceUp : w.targetUp;
      if (!up) continue;
      let r: MigrationResult;
      const a = c.action.$case as MigrationAction;
      if (c.side === "target" && a === "prepareMigration") {
        if (w.target === "none") w.target = "prepared";
        r = ok(a, { target: { driver: "fake", uri: "fake://b" } });
      } else if (c.side === "source" && a === "migrateOut") {
        if (w.source === "gone") r = ok(a);
        else if (failMigrate || w.target !== "prepared" || !w.targetUp) {
          failMigrate = false;
          r = fail(a, "FAILED_PRECONDITION");
        } else {
          w.source = "gone";
          w.target = "arrived";
          r = ok(a);
        }
      } else if (c.side === "target" && a === "finishMigration") {
        if (w.target === "arrived") w.target = "running";
        r = w.target === "running" ? ok(a) : fail(a, "NOT_FOUND");
      } else if (a === "abortMigration") {
        if (c.side === "target" && w.target === "prepared") w.target = "none";
        r = ok(a);
      } else {
        throw new Error(`unexpected command ${c.side}:${a}`);
      }
      if (w.source === "running" && w.target === "running") throw new Error(`on two hosts:\n${trace.join("\n")}`);
      if (!lose) results = { ...results, [c.side]: { ...results[c.side], [a]: r } };
    }
  }
  return { m, w, trace };
}

describe("the migration protocol under faults (model)", () => {
  it("never runs the VM on two hosts, always ends, and ends where the domain is", () => {
    fc.assert(
      fc.property(fc.array(faultArb, { maxLength: 30 }), (faults) => {
        const { m, w, trace } = run(faults);
        const story = trace.join("\n");
        expect(w.source === "running" && w.target === "running", story).toBe(false);
        expect([MigrationPhase.MIGRATION_PHASE_COMPLETED, MigrationPhase.MIGRATION_PHASE_FAILED], story).toContain(m.phase);
        if (m.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED) expect([w.source, w.target], story).toEqual(["gone", "running"]);
        else expect([w.source, w.target === "arrived" || w.target === "running"], story).toEqual(["running", false]);
      }),
      { numRuns: 2000 },
    );
  });

  it("with no faults, completes", () => {
    expect(run([]).m.phase).toBe(MigrationPhase.MIGRATION_PHASE_COMPLETED);
  });
});
