import {
  DesiredState,
  DomainState,
  VmPhase,
  type Command,
  type Domain,
  type Vm,
  type VmStatus,
} from "@berth/api";

/** What a command asks of a domain, without the envelope (ids, generation, epoch). */
export type DomainAction = NonNullable<Command["action"]>;

/** One command the reconciler wants sent to a host. */
export interface PlannedCommand {
  vmId: string;
  generation: number;
  action: DomainAction;
}

/** The last failed command of a VM, as reported by its host. */
export interface CommandFailure {
  generation: number;
  code: string;
  message: string;
}

/**
 * The action that moves `domain` towards what `vm` wants, or undefined when they agree. Pure.
 * A domain that is in the right state but has not recorded the VM's latest generation still gets
 * the (no-op) command, so the host records the generation and the controller can observe it.
 */
export function desiredAction(vm: Vm, domain: Domain | undefined): DomainAction | undefined {
  const spec = vm.spec;
  if (!spec?.resources) return undefined;
  const current = domain !== undefined && domain.generation >= vm.generation;
  switch (vm.desiredState) {
    case DesiredState.DESIRED_STATE_DELETED:
      return domain ? { $case: "delete", value: {} } : undefined;
    case DesiredState.DESIRED_STATE_RUNNING:
      if (!domain) return { $case: "create", value: { name: spec.name, resources: spec.resources, start: true, fence: false } };
      if (domain.state === DomainState.DOMAIN_STATE_RUNNING && current) return undefined;
      return { $case: "start", value: {} };
    case DesiredState.DESIRED_STATE_STOPPED:
      if (!domain) return { $case: "create", value: { name: spec.name, resources: spec.resources, start: false, fence: false } };
      // A crashed domain is off too: libvirt keeps "shut off (crashed)" until the next start, so
      // asking it to stop would never change what the host reports.
      if ((domain.state === DomainState.DOMAIN_STATE_SHUTOFF || domain.state === DomainState.DOMAIN_STATE_CRASHED) && current) return undefined;
      return { $case: "stop", value: { force: vm.forceStop } };
    default:
      return undefined;
  }
}

/**
 * Commands for one host: each VM placed there moved towards its desired state, and every domain
 * the host has that no VM placed there accounts for (an orphan, e.g. a VM deleted while its host
 * was away) removed. Only call with a synced cache: an incomplete VM list would make orphans of
 * real VMs. Pure.
 */
export function planHostCommands(vmsOnHost: readonly Vm[], inventory: ReadonlyMap<string, Domain>): PlannedCommand[] {
  const planned: PlannedCommand[] = [];
  const wanted = new Set<string>();
  for (const vm of vmsOnHost) {
    wanted.add(vm.id);
    const action = desiredAction(vm, inventory.get(vm.id));
    if (action) planned.push({ vmId: vm.id, generation: vm.generation, action });
  }
  for (const domain of inventory.values()) {
    if (!wanted.has(domain.vmId)) {
      planned.push({ vmId: domain.vmId, generation: domain.generation, action: { $case: "delete", value: {} } });
    }
  }
  return planned;
}

/**
 * The status the controller should record for `vm`, from what its host reports. Pure: the caller
 * supplies the time, and compares with `sameStatus` to avoid writing what has not changed.
 */
export function observedStatus(
  vm: Vm,
  hostConnected: boolean,
  domain: Domain | undefined,
  failure: CommandFailure | undefined,
  nowMs: number,
): VmStatus {
  const previous = vm.status;
  const base = {
    domainState: domain?.state ?? DomainState.DOMAIN_STATE_UNSPECIFIED,
    observedGeneration: domain?.generation ?? previous?.observedGeneration ?? 0,
    updatedAtMs: nowMs,
    attempts: 0,
    errorCode: "",
    nextAttemptAtMs: 0,
    permanent: false,
  };
  if (!hostConnected) {
    // Nothing is known until the host is back; keep the last observation for the operator.
    return { ...base, domainState: previous?.domainState ?? base.domainState, phase: VmPhase.VM_PHASE_UNKNOWN, message: "host not connected" };
  }
  if (failure && failure.generation >= vm.generation) {
    return { ...base, phase: VmPhase.VM_PHASE_FAILED, message: `${failure.code}: ${failure.message}` };
  }
  if (vm.desiredState === DesiredState.DESIRED_STATE_DELETED) {
    return { ...base, phase: VmPhase.VM_PHASE_DELETING, message: "" };
  }
  if (!domain) return { ...base, phase: VmPhase.VM_PHASE_PENDING, message: "" };
  const phase =
    domain.state === DomainState.DOMAIN_STATE_RUNNING
      ? VmPhase.VM_PHASE_RUNNING
      : domain.state === DomainState.DOMAIN_STATE_CRASHED
        ? VmPhase.VM_PHASE_FAILED
        : VmPhase.VM_PHASE_STOPPED;
  // Until the host has applied the latest generation the VM is on its way, not there.
  const settled = domain.generation >= vm.generation;
  return {
    ...base,
    phase: settled ? phase : VmPhase.VM_PHASE_PENDING,
    message: domain.state === DomainState.DOMAIN_STATE_CRASHED ? "domain crashed" : "",
  };
}

/** True when two statuses say the same thing (the timestamp aside). */
export function sameStatus(a: VmStatus | undefined, b: VmStatus): boolean {
  return (
    a !== undefined &&
    a.phase === b.phase &&
    a.domainState === b.domainState &&
    a.observedGeneration === b.observedGeneration &&
    a.message === b.message
  );
}
