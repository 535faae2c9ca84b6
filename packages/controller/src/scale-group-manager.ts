import { DesiredState, type ScaleGroup, type ScaleGroupInfo, type ScalePolicy, type UpdateScaleGroupRequest, type Vm } from "@berth/api";
import { alreadyExists, BerthError, ErrorCode, invalidArgument, isBerthError, notFound, validateName } from "@berth/core";
import type { ClusterStore, KeyValue } from "@berth/store";
import type { Logger } from "pino";
import type { AgentSession } from "./agent-session.js";
import { autoscaleStep, initialAutoscaleMemory, membersToRemove, resolveScalePolicy, resolveScalePolicyIfValid, type AutoscaleMemory, type MemberLoad, type ResolvedScalePolicy } from "./autoscale.js";
import type { ClusterState } from "./cluster-state.js";
import type { FencedWriter } from "./fenced-writer.js";
import { decodeScaleGroup, encodeScaleGroup, Keys } from "./keys.js";
import type { Placer } from "./placement.js";
import { applyDecision, initialMembers, isMemberOf, memberSpec, planMembers, runningMembers, validateBounds, validateScaleGroupInput } from "./scale-groups.js";
import { setDesiredState } from "./vm-writes.js";
import { waitUpTo } from "./wait.js";

/** What the scale-group manager reads and writes through. */
export interface ScaleGroupManagerDeps {
  store: ClusterStore;
  state: ClusterState;
  sessions: ReadonlyMap<string, AgentSession>;
  writer: FencedWriter;
  placer: Pick<Placer, "create">;
  log: Logger;
  now: () => number;
  /**
   * How often the manager looks at every group (its autoscaler runs at each group's own interval;
   * its members are made and removed at every look).
   * @default 1000
   */
  tickMs?: number;
}

/** Attempts of a guarded write whose record keeps changing underneath. */
const MAX_WRITE_ATTEMPTS = 8;
/** How long a write waits for its own change to reach the cache before answering. */
const CACHE_CATCH_UP_MS = 5_000;
/** A member that could not be made is tried again after this long (with up to half again of jitter), doubling to the cap. */
const CREATE_RETRY_MS = 2_000;
const CREATE_RETRY_CAP_MS = 60_000;

/** What the leader remembers of one group between looks. */
interface GroupMemory {
  autoscale: AutoscaleMemory;
  nextDecisionAt: number;
  /** Why the last create of a member failed, and when to try again. */
  createFailures: Map<string, { message: string; retryAt: number; delayMs: number }>;
}

/**
 * The one writer of scale-group records, and the leader's autoscaler: CreateScaleGroup,
 * UpdateScaleGroup and DeleteScaleGroup; every group's decision at its interval
 * (`autoscaleStep`, autoscale.ts) written with its inputs in the record; and each group's members
 * brought to what its record lists (`planMembers`): missing VMs created through the scheduler (the
 * VM's name is its member name and its request id, so a create replayed after a lost answer or by
 * a new leader returns the same VM, never a second one), VMs no longer listed deleted.
 *
 * Every write is guarded on the record's revision as read, and fenced: a decision made on a
 * lagging cache loses the compare and is made again on the next look, never twice.
 */
export class ScaleGroupManager {
  private readonly memory = new Map<string, GroupMemory>();
  private readonly creating = new Set<string>();
  private readonly timer: NodeJS.Timeout;
  private running = false;
  private stopped = false;

  constructor(private readonly deps: ScaleGroupManagerDeps) {
    this.timer = setInterval(() => void this.tick(), deps.tickMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  // ---- operator verbs ---------------------------------------------------------------------------

  /**
   * Records a group (CreateScaleGroup) with min_size members, made at once. INVALID_ARGUMENT naming
   * the field; NOT_FOUND for a placement group that does not exist; ALREADY_EXISTS for a name in
   * use. Create-if-absent on the name.
   */
  async create(input: ScaleGroup | undefined): Promise<ScaleGroup> {
    validateScaleGroupInput(input, "group");
    const { state, writer, now } = this.deps;
    const placementGroup = input.template.group;
    if (placementGroup && !state.groups.get(Keys.group(placementGroup))) {
      throw notFound(`placement group '${placementGroup}' (group.template.group; berth group create ${placementGroup} --policy anti-affinity)`);
    }
    const t = now();
    const group: ScaleGroup = {
      name: input.name,
      template: { ...input.template, name: "" },
      minSize: input.minSize,
      maxSize: input.maxSize,
      policy: input.policy,
      members: initialMembers(input.name, input.minSize, t),
      nextIndex: input.minSize + 1,
      protectedMembers: [],
      createdAtMs: t,
      decisions: [],
      decisionCount: 0,
      generation: 1,
      deleting: false,
    };
    const key = Keys.scaleGroup(group.name);
    const result = await writer.commit({ compare: [{ key, target: "createRevision", equals: 0 }], ops: [{ type: "put", key, value: encodeScaleGroup(group) }] });
    if (!result.succeeded) throw alreadyExists(`scale group '${group.name}'`);
    await waitUpTo(state.scaleGroups.waitForRevision(result.revision), CACHE_CATCH_UP_MS);
    this.deps.log.info({ scaleGroup: group.name, minSize: group.minSize, maxSize: group.maxSize, targetCpu: group.policy?.targetCpu }, "scale group created");
    void this.tick();
    return group;
  }

  /**
   * Changes bounds, policy fields (each one set replaces the group's) and protection
   * (UpdateScaleGroup). A size outside the new bounds is brought to the bound at once, as a
   * SizeBounded decision (a scale-in by the group's order, protected members kept). NOT_FOUND;
   * INVALID_ARGUMENT naming the field; protect/unprotect must name members.
   */
  async update(req: UpdateScaleGroupRequest): Promise<ScaleGroup> {
    validateName(req.name, "name");
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      const kv = await this.read(req.name);
      const group = decodeScaleGroup(kv.value);
      if (group.deleting) throw new BerthError(ErrorCode.FailedPrecondition, `scale group '${req.name}' is being deleted`);
      const minSize = req.minSize ?? group.minSize;
      const maxSize = req.maxSize ?? group.maxSize;
      validateBounds(minSize, maxSize, "request");
      const policy = mergePolicy(group.policy, req.policy);
      const resolved = resolveScalePolicy(policy, "policy");
      const memberNames = new Set(group.members.map((m) => m.name));
      req.protect.forEach((n, i) => {
        if (!memberNames.has(n)) throw invalidArgument(`protect[${i}]`, `'${n.slice(0, 80)}' is not a member of scale group '${group.name}'`);
      });
      req.unprotect.forEach((n, i) => validateName(n, `unprotect[${i}]`));
      const unprotect = new Set(req.unprotect);
      const protectedMembers = [...new Set([...group.protectedMembers.filter((p) => !unprotect.has(p)), ...req.protect])];
      let next: ScaleGroup = { ...group, minSize, maxSize, policy, protectedMembers, generation: group.generation + 1 };
      const size = group.members.length;
      const bounded = Math.min(maxSize, Math.max(minSize, size));
      if (bounded !== size) {
        const remove = bounded < size ? membersToRemove(group.members, protectedMembers, resolved.scaleInOrder, size - bounded) : [];
        next = applyDecision(
          next,
          {
            decidedAtMs: 0,
            reason: "SizeBounded",
            fromSize: size,
            toSize: bounded,
            warmMembers: 0,
            warmingMembers: 0,
            cpuUtilization: 0,
            reactiveSize: 0,
            predictedSize: 0,
            predictedCores: 0,
            message: `the bounds are now ${minSize}..${maxSize}` + (bounded < size && remove.length < size - bounded ? ` (${size - bounded - remove.length} protected members kept)` : ""),
          },
          this.deps.now(),
          remove,
        );
      }
      const result = await this.deps.writer.commit({
        compare: [{ key: kv.key, target: "modRevision", equals: kv.modRevision }],
        ops: [{ type: "put", key: kv.key, value: encodeScaleGroup(next) }],
      });
      if (!result.succeeded) continue;
      await waitUpTo(this.deps.state.scaleGroups.waitForRevision(result.revision), CACHE_CATCH_UP_MS);
      this.memory.delete(group.name);
      this.deps.log.info({ scaleGroup: group.name, minSize, maxSize, size: next.members.length }, "scale group changed");
      void this.tick();
      return next;
    }
    throw new BerthError(ErrorCode.Conflict, `scale group '${req.name}' kept changing; retry`);
  }

  /**
   * Deletes a group (DeleteScaleGroup). With members and without `deleteVms`: FAILED_PRECONDITION
   * naming the way out. Without members the record goes at once; with `deleteVms` it is marked
   * deleting, its VMs are deleted, and the record goes with the last of them. Idempotent.
   */
  async delete(name: string, deleteVms: boolean): Promise<ScaleGroup> {
    validateName(name, "name");
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      const kv = await this.read(name);
      const group = decodeScaleGroup(kv.value);
      if (group.deleting) return group;
      const vms = this.vmsOf(group.name);
      if (vms.length > 0 && !deleteVms) {
        throw new BerthError(
          ErrorCode.FailedPrecondition,
          `scale group '${name}' has ${vms.length} VMs: delete them with it (berth scalegroup delete ${name} --delete-vms), or keep none first (berth scalegroup set ${name} --min 0 --max 1)`,
        );
      }
      const guard = { key: kv.key, target: "modRevision" as const, equals: kv.modRevision };
      const next: ScaleGroup = { ...group, deleting: true, generation: group.generation + 1 };
      const result = await this.deps.writer.commit(
        vms.length === 0 ? { compare: [guard], ops: [{ type: "delete", key: kv.key }] } : { compare: [guard], ops: [{ type: "put", key: kv.key, value: encodeScaleGroup(next) }] },
      );
      if (!result.succeeded) continue;
      await waitUpTo(this.deps.state.scaleGroups.waitForRevision(result.revision), CACHE_CATCH_UP_MS);
      this.deps.log.info({ scaleGroup: name, vms: vms.length }, vms.length === 0 ? "scale group deleted" : "scale group deleting with its VMs");
      void this.tick();
      return vms.length === 0 ? group : next;
    }
    throw new BerthError(ErrorCode.Conflict, `scale group '${name}' kept changing; retry`);
  }

  /** Why the last create of a member of `group` failed, while it is being retried (for GetScaleGroup). */
  lastError(group: string): string {
    const failures = this.memory.get(group)?.createFailures;
    if (!failures || failures.size === 0) return "";
    const [name, f] = [...failures.entries()][0]!;
    return `${name}: ${f.message}`;
  }

  // ---- the loop ---------------------------------------------------------------------------------

  /** One look at every group: its members made and removed, and its autoscaler when due. */
  async tick(): Promise<void> {
    if (this.running || this.stopped) return;
    this.running = true;
    try {
      for (const group of this.deps.state.allScaleGroups()) {
        if (this.stopped) return;
        try {
          await this.lookAt(group.name);
        } catch (e) {
          if (isBerthError(e, ErrorCode.NotLeader)) return;
          this.deps.log.warn({ err: e, scaleGroup: group.name }, "scale group look failed; trying again on the next");
        }
      }
      for (const name of this.memory.keys()) if (!this.deps.state.scaleGroup(name)) this.memory.delete(name);
    } finally {
      this.running = false;
    }
  }

  private async lookAt(name: string): Promise<void> {
    const kv = this.deps.state.scaleGroups.getKv(Keys.scaleGroup(name));
    if (!kv) return;
    const group = decodeScaleGroup(kv.value);
    const now = this.deps.now();
    let policy: ResolvedScalePolicy;
    try {
      policy = resolveScalePolicy(group.policy);
    } catch (e) {
      this.deps.log.warn({ err: e, scaleGroup: name }, "scale group policy refused; not scaling it");
      return;
    }
    let mem = this.memory.get(name);
    if (!mem) {
      // A new leader (or a group just changed): hold the size for a whole window before any scale-in.
      mem = { autoscale: initialAutoscaleMemory(group.members.length, now, policy), nextDecisionAt: now + policy.intervalMs, createFailures: new Map() };
      this.memory.set(name, mem);
    }
    if (!group.deleting && now >= mem.nextDecisionAt) {
      mem.nextDecisionAt = now + policy.intervalMs;
      const decided = await this.decide(kv, group, policy, mem, now);
      if (decided) return; // its members are made on the next look, from the record as written
    }
    await this.converge(group, mem, now);
  }

  /** The autoscaler's step for one group; true when a new record was written. */
  private async decide(kv: KeyValue, group: ScaleGroup, policy: ResolvedScalePolicy, mem: GroupMemory, now: number): Promise<boolean> {
    const members: MemberLoad[] = group.members.map((m) => {
      const vm = this.deps.state.vm(m.name);
      return { name: m.name, addedAtMs: m.addedAtMs, vcpus: vm?.spec?.resources?.vcpus ?? group.template?.resources?.vcpus ?? 1, cpuCores: this.cpuOf(vm, group.name) };
    });
    const outcome = autoscaleStep({ now, size: group.members.length, minSize: group.minSize, maxSize: group.maxSize, members, policy, memory: mem.autoscale, forecast: group.forecast });
    if (!outcome.decision && !outcome.forecastChanged) {
      mem.autoscale = outcome.memory;
      return false;
    }
    let next: ScaleGroup = outcome.forecastChanged && outcome.forecast ? { ...group, forecast: outcome.forecast } : group;
    if (outcome.decision) {
      const size = group.members.length;
      const remove = outcome.size < size ? membersToRemove(group.members, group.protectedMembers, policy.scaleInOrder, size - outcome.size) : [];
      // Every member that could go is protected: the size stays (a forecast learnt is still written).
      if (outcome.size < size && remove.length === 0) {
        if (!outcome.forecastChanged) return false;
      } else {
        next = applyDecision(next, outcome.decision, now, remove);
      }
    }
    const result = await this.deps.writer.commit({
      compare: [{ key: kv.key, target: "modRevision", equals: kv.modRevision }],
      ops: [{ type: "put", key: kv.key, value: encodeScaleGroup(next) }],
    });
    if (!result.succeeded) {
      // The cache lagged the record (or an operator changed it): decide again from the new one,
      // with the memory as it was before this step (its size was not applied).
      mem.nextDecisionAt = now;
      return false;
    }
    mem.autoscale = outcome.memory;
    const d = next.decisions[next.decisions.length - 1];
    if (next.decisionCount !== group.decisionCount && d) {
      this.deps.log.info({ scaleGroup: group.name, seq: d.seq, reason: d.reason, from: d.fromSize, to: d.toSize, cpu: d.cpuUtilization, added: d.added, removed: d.removed }, `scale group ${d.reason}: ${d.message}`);
    }
    await waitUpTo(this.deps.state.scaleGroups.waitForRevision(result.revision), CACHE_CATCH_UP_MS);
    return true;
  }

  /** Makes the members the record lists and deletes the VMs it no longer lists; drops a deleting group's record once its VMs are gone. */
  private async converge(group: ScaleGroup, mem: GroupMemory, now: number): Promise<void> {
    const vms = this.vmsOf(group.name);
    // With the VMs of other owners that hold a member's name: planMembers neither creates nor removes those.
    const squatters = group.members.map((m) => this.deps.state.vm(m.name)).filter((v): v is Vm => v !== undefined && !isMemberOf(v, group.name));
    const plan = planMembers(group, [...vms, ...squatters]);
    for (const vm of plan.remove) {
      const name = vm.spec?.name ?? "";
      await setDesiredState(this.deps.store, this.deps.writer, name, DesiredState.DESIRED_STATE_DELETED, false).catch((e: unknown) => {
        if (!isBerthError(e, ErrorCode.NotFound) && !isBerthError(e, ErrorCode.FailedPrecondition)) throw e;
      });
      this.deps.log.info({ scaleGroup: group.name, vm: name }, "scale group member deleted");
    }
    for (const member of plan.create) {
      if (this.creating.has(member.name)) continue;
      const failure = mem.createFailures.get(member.name);
      if (failure && now < failure.retryAt) continue;
      const taken = this.deps.state.vm(member.name);
      if (taken && !isMemberOf(taken, group.name)) {
        this.noteCreateFailure(mem, group.name, member.name, `the name is taken by a VM of no scale group`, now);
        continue;
      }
      this.creating.add(member.name);
      void this.deps.placer
        .create([memberSpec(group, member)], this.deps.writer, "spec", member.name)
        .then(
          () => {
            mem.createFailures.delete(member.name);
            this.deps.log.info({ scaleGroup: group.name, vm: member.name }, "scale group member created");
          },
          (e: unknown) => this.noteCreateFailure(mem, group.name, member.name, e instanceof Error ? e.message.split("\n")[0]!.slice(0, 300) : String(e), this.deps.now()),
        )
        .finally(() => this.creating.delete(member.name));
    }
    // A create still in flight may yet make a member: the record stays until it has ended (and
    // its VM, if made, is deleted on a later look).
    if (group.deleting && vms.length === 0 && !group.members.some((m) => this.creating.has(m.name))) {
      const kv = this.deps.state.scaleGroups.getKv(Keys.scaleGroup(group.name));
      if (!kv) return;
      const result = await this.deps.writer.commit({ compare: [{ key: kv.key, target: "modRevision", equals: kv.modRevision }], ops: [{ type: "delete", key: kv.key }] });
      if (result.succeeded) this.deps.log.info({ scaleGroup: group.name }, "scale group deleted, its VMs gone");
    }
  }

  private noteCreateFailure(mem: GroupMemory, group: string, member: string, message: string, now: number): void {
    const before = mem.createFailures.get(member);
    const delayMs = Math.min(CREATE_RETRY_CAP_MS, before ? before.delayMs * 2 : CREATE_RETRY_MS);
    mem.createFailures.set(member, { message, retryAt: now + delayMs * (1 + Math.random() / 2), delayMs });
    if (before?.message !== message) this.deps.log.warn({ scaleGroup: group, vm: member, retryInMs: delayMs }, `scale group member not created: ${message}`);
  }

  /** A member's measured CPU cores: only while its VM runs and its host is heard (undefined otherwise). */
  private cpuOf(vm: Vm | undefined, group: string): number | undefined {
    if (!vm || !isMemberOf(vm, group) || vm.desiredState === DesiredState.DESIRED_STATE_DELETED) return undefined;
    const session = this.deps.sessions.get(vm.hostId);
    if (!session?.isLive) return undefined;
    return session.vmUsage.get(vm.id)?.cpuCores;
  }

  /** The VMs carrying the group's label. */
  private vmsOf(group: string): Vm[] {
    return this.deps.state.vmsOfScaleGroup(group);
  }

  private async read(name: string): Promise<KeyValue> {
    const kv = await this.deps.store.get(Keys.scaleGroup(name));
    if (!kv) throw notFound(`scale group '${name}'`);
    return kv;
  }
}

/** Policy fields set in `change` (not 0, not unspecified) replace those of `base`. */
export function mergePolicy(base: ScalePolicy | undefined, change: ScalePolicy | undefined): ScalePolicy | undefined {
  if (!change) return base;
  const out: ScalePolicy = { ...(base ?? emptyPolicy()) };
  for (const [k, v] of Object.entries(change) as [keyof ScalePolicy, number][]) if (v) (out as unknown as Record<string, number>)[k] = v;
  return out;
}

const emptyPolicy = (): ScalePolicy => ({
  targetCpu: 0,
  tolerance: 0,
  scaleDownWindowMs: 0,
  scaleUpMaxPercent: 0,
  scaleUpMaxVms: 0,
  scaleUpPeriodMs: 0,
  warmupMs: 0,
  intervalMs: 0,
  scaleInOrder: 0,
  prediction: 0,
});

/** A group as operators see it (pure over the cache and the sessions): its record and what it is now. */
export function scaleGroupInfo(state: ClusterState, sessions: ReadonlyMap<string, AgentSession>, group: ScaleGroup, now: number, lastError = ""): ScaleGroupInfo {
  const policy = resolveScalePolicyIfValid(group.policy);
  const running = runningMembers(group, (n) => state.vm(n));
  let cores = 0;
  let vcpus = 0;
  let warm = 0;
  const addedAt = new Map(group.members.map((m) => [m.name, m.addedAtMs]));
  for (const vm of running) {
    if (policy && now - (addedAt.get(vm.spec?.name ?? "") ?? now) < policy.warmupMs) continue;
    const usage = sessions.get(vm.hostId)?.vmUsage.get(vm.id);
    if (!usage) continue;
    warm++;
    cores += usage.cpuCores;
    vcpus += vm.spec?.resources?.vcpus ?? 0;
  }
  const plan = planMembers(group, state.vmsOfScaleGroup(group.name));
  return { group, running: running.length, warm, cpuUtilization: vcpus > 0 ? Math.min(1, cores / vcpus) : 0, creating: plan.create.length, removing: plan.remove.length + plan.removing.length, lastError };
}
