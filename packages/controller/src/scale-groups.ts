/**
 * Scale groups, the pure part (the one definition of what a group's record means; no I/O, no
 * clock): how an operator's input is checked, what a member VM's spec is, which VMs a group's
 * record asks to make and to delete, and how a decision is folded into the record.
 * scale-group-manager.ts owns the I/O; autoscale.ts is the rule that decides sizes.
 */
import { DesiredState, VmPhase, type ScaleDecision, type ScaleGroup, type ScaleMember, type Vm, type VmSpec } from "@berth/api";
import { invalidArgument, validateName, validateVmSpec } from "@berth/core";
import { resolveScalePolicy } from "./autoscale.js";

/** The label every member VM carries, naming its group: how a group finds its VMs. */
export const SCALE_GROUP_LABEL = "berth.io/scale-group";

/** The most members a group may have (a placement group's own limit, too). */
export const MAX_SCALE_GROUP_SIZE = 1000;

/** A group's name leaves room for "-<index>" in its members' names (63 characters at most). */
export const MAX_SCALE_GROUP_NAME = 52;

/** Decisions kept on the record (the newest). */
export const MAX_KEPT_DECISIONS = 50;

/** A member's VM name. */
export const memberName = (group: string, index: number): string => `${group}-${index}`;

/**
 * Checks what CreateScaleGroup was given: a name (a DNS label of at most 52 characters), a template
 * that is a valid VM spec once named (no volumes: a volume attaches to one VM), 0 ≤ min ≤ max ≤
 * 1000 with max ≥ 1, and a policy (resolveScalePolicy's rules). Throws INVALID_ARGUMENT naming the
 * field (`group.template.resources.vcpus: ...`).
 */
export function validateScaleGroupInput(group: ScaleGroup | undefined, field = "group"): asserts group is ScaleGroup & { template: VmSpec } {
  if (!group) throw invalidArgument(field, "is required");
  validateName(group.name, `${field}.name`);
  if (group.name.length > MAX_SCALE_GROUP_NAME) {
    throw invalidArgument(`${field}.name`, `at most ${MAX_SCALE_GROUP_NAME} characters (members are named <name>-<index>; got ${group.name.length})`);
  }
  if (!group.template) throw invalidArgument(`${field}.template`, "is required: the members' VM spec");
  validateVmSpec({ ...group.template, name: memberName(group.name, 1) }, `${field}.template`);
  if (group.template.volumes.length > 0) throw invalidArgument(`${field}.template.volumes`, "not in a scale group: a volume attaches to one VM at a time");
  validateBounds(group.minSize, group.maxSize, field);
  resolveScalePolicy(group.policy, `${field}.policy`);
}

/** min ≤ max, 1 ≤ max ≤ 1000. Throws INVALID_ARGUMENT naming min_size or max_size. */
export function validateBounds(minSize: number, maxSize: number, field = "group"): void {
  if (!Number.isSafeInteger(maxSize) || maxSize < 1 || maxSize > MAX_SCALE_GROUP_SIZE) {
    throw invalidArgument(`${field}.max_size`, `must be a whole number from 1 to ${MAX_SCALE_GROUP_SIZE} (got ${maxSize})`);
  }
  if (!Number.isSafeInteger(minSize) || minSize < 0 || minSize > maxSize) {
    throw invalidArgument(`${field}.min_size`, `must be a whole number from 0 to max_size ${maxSize} (got ${minSize})`);
  }
}

/** The spec a member's VM is made with: the template, named, labelled with its group. */
export function memberSpec(group: ScaleGroup, member: ScaleMember): VmSpec {
  const t = group.template!;
  return {
    ...t,
    name: member.name,
    labels: { ...t.labels, [SCALE_GROUP_LABEL]: group.name },
    requiredHostLabels: { ...t.requiredHostLabels },
    forbiddenHostLabels: { ...t.forbiddenHostLabels },
    pinnedHosts: [...t.pinnedHosts],
    networks: [...t.networks],
    volumes: [],
    ...(t.cloudInit ? { cloudInit: { ...t.cloudInit, sshAuthorizedKeys: [...t.cloudInit.sshAuthorizedKeys] } } : {}),
  };
}

/** Is the VM a member of the group (by its label)? */
export const isMemberOf = (vm: Vm, group: string): boolean => vm.spec?.labels[SCALE_GROUP_LABEL] === group;

/** What a group's record asks of its VMs now. */
export interface MemberPlan {
  /** Members listed whose VM does not exist: to create. */
  create: ScaleMember[];
  /** The group's VMs no longer listed (or all of them, the group being deleted) and not yet being deleted: to delete. */
  remove: Vm[];
  /** The group's VMs being deleted already. */
  removing: Vm[];
}

/**
 * Compares a group's record with the VMs that carry its label (`vms`: all of them, or at least
 * those) — level-triggered, so a lost step is found again on the next look. A listed member whose
 * name is taken by a VM of no group is neither created (the name is taken) nor removed (it is not
 * the group's); the manager reports it.
 */
export function planMembers(group: ScaleGroup, vms: readonly Vm[]): MemberPlan {
  const wanted = new Set(group.deleting ? [] : group.members.map((m) => m.name));
  const existing = new Set<string>();
  const remove: Vm[] = [];
  const removing: Vm[] = [];
  for (const vm of vms) {
    const name = vm.spec?.name ?? "";
    existing.add(name);
    if (!isMemberOf(vm, group.name)) continue;
    if (wanted.has(name)) continue;
    if (vm.desiredState === DesiredState.DESIRED_STATE_DELETED) removing.push(vm);
    else remove.push(vm);
  }
  const create = group.deleting ? [] : group.members.filter((m) => !existing.has(m.name));
  return { create, remove, removing };
}

/** Members of a group whose VM runs (not being deleted). */
export function runningMembers(group: ScaleGroup, vmOf: (name: string) => Vm | undefined): Vm[] {
  const out: Vm[] = [];
  for (const m of group.members) {
    const vm = vmOf(m.name);
    if (vm && isMemberOf(vm, group.name) && vm.status?.phase === VmPhase.VM_PHASE_RUNNING && vm.desiredState !== DesiredState.DESIRED_STATE_DELETED) out.push(vm);
  }
  return out;
}

/**
 * The record after a decision to go to `size`: members added with fresh indexes (names are never
 * reused, so a decision replayed cannot make a VM twice) or the named ones removed, the decision
 * kept (the newest {@link MAX_KEPT_DECISIONS}) under the next seq. `remove` must be members.
 */
export function applyDecision(
  group: ScaleGroup,
  decision: Omit<ScaleDecision, "seq" | "added" | "removed">,
  now: number,
  remove: readonly string[] = [],
): ScaleGroup {
  let members = group.members;
  let nextIndex = Math.max(1, group.nextIndex);
  const added: string[] = [];
  const removed = new Set(remove);
  if (decision.toSize > members.length) {
    const fresh: ScaleMember[] = [];
    while (members.length + fresh.length < decision.toSize) {
      fresh.push({ name: memberName(group.name, nextIndex), index: nextIndex, addedAtMs: now });
      added.push(memberName(group.name, nextIndex));
      nextIndex++;
    }
    members = [...members, ...fresh];
  } else if (removed.size > 0) {
    members = members.filter((m) => !removed.has(m.name));
  }
  const seq = group.decisionCount + 1;
  const kept: ScaleDecision = { ...decision, toSize: members.length, seq, decidedAtMs: now, added, removed: [...removed] };
  return {
    ...group,
    members,
    nextIndex,
    decisionCount: seq,
    decisions: [...group.decisions, kept].slice(-MAX_KEPT_DECISIONS),
    protectedMembers: group.protectedMembers.filter((p) => !removed.has(p)),
  };
}

/** The members a group starts with: `count` of them, indexes 1..count. */
export function initialMembers(name: string, count: number, now: number): ScaleMember[] {
  return Array.from({ length: count }, (_, i) => ({ name: memberName(name, i + 1), index: i + 1, addedAtMs: now }));
}
