import { DesiredState, HostFailurePolicy, HostState, type Host, type Vm } from "@berth/api";

/** Limits on restarting VMs elsewhere, so a network fault cannot turn into a stampede. */
export interface FailoverLimits {
  /** Fenced hosts whose VMs may be restarted elsewhere per `rateIntervalMs`. */
  hostsPerInterval: number;
  rateIntervalMs: number;
  /**
   * Restarts halt when more than this fraction of the hosts are not READY at once: that is more
   * likely the controller's own network than the hosts (Kubernetes stops evicting above 55 % of a
   * zone). Hosts an operator confirmed down are restarted anyway.
   */
  maxUnreadyFraction: number;
  /**
   * After such a mass failure ends, restarts stay held this long: the hosts coming back from it
   * return one by one, and the first ones back must not make the others look like single failures.
   */
  settleAfterMassFailureMs: number;
}

/** Why a RESTART VM with data volumes is not recreated elsewhere (its data is on the fenced host). */
export const NOT_RELOCATED_WITH_VOLUMES = "has data volumes on the fenced host";

/** What `planFailover` decided for one pass. */
export interface FailoverPlan {
  /** VMs to place again, elsewhere, host by host in the order the hosts were fenced. */
  restarts: { hostId: string; vms: Vm[] }[];
  /**
   * RESTART VMs of fenced hosts that stay there all the same: their data volumes are on that host
   * (see {@link NOT_RELOCATED_WITH_VOLUMES}); they run again when it comes back.
   */
  kept: { hostId: string; vms: Vm[] }[];
  /** Why nothing (or less than everything) is restarted now; undefined when nothing holds back. */
  held: string | undefined;
  /** More than `maxUnreadyFraction` of the hosts are not READY now. */
  massFailure: boolean;
}

/** The on_host_failure that applies to a VM: its own, else the cluster's default, else KEEP. */
export function failurePolicyOf(vm: Vm, clusterDefault: HostFailurePolicy): HostFailurePolicy {
  const own = vm.spec?.onHostFailure ?? HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED;
  if (own !== HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED) return own;
  return clusterDefault === HostFailurePolicy.HOST_FAILURE_POLICY_RESTART ? clusterDefault : HostFailurePolicy.HOST_FAILURE_POLICY_KEEP;
}

/**
 * Which VMs to restart elsewhere now. Pure. A VM is restarted only from a FENCED host (its copy is
 * known to be off), only with the RESTART policy, never once it is being deleted, and never with
 * data volumes (their data is on the fenced host: such VMs are listed as `kept`). Hosts are
 * taken oldest fence first: those whose restarts began in the rate window (`rate.started`) and up
 * to `rate.budget` new ones; none while more than `maxUnreadyFraction` of the hosts are not READY,
 * nor for `settleAfterMassFailureMs` after that ends, except those an operator confirmed down.
 */
export function planFailover(
  hosts: readonly Host[],
  vmsOnHost: (hostId: string) => readonly Vm[],
  clusterDefault: HostFailurePolicy,
  rate: { started: ReadonlySet<string>; budget: number },
  limits: FailoverLimits,
  /** Now, and when a mass failure was last seen (0: never). */
  clock: { nowMs: number; lastMassFailureMs: number } = { nowMs: 0, lastMassFailureMs: 0 },
): FailoverPlan {
  const kept: FailoverPlan["kept"] = [];
  const fenced = hosts
    .filter((h) => h.state === HostState.HOST_STATE_FENCED)
    .map((h) => {
      const wanted = vmsOnHost(h.id).filter((vm) => restartable(vm, clusterDefault));
      const withVolumes = wanted.filter((vm) => (vm.spec?.volumes.length ?? 0) > 0);
      if (withVolumes.length > 0) kept.push({ hostId: h.id, vms: withVolumes });
      return { host: h, vms: wanted.filter((vm) => (vm.spec?.volumes.length ?? 0) === 0) };
    })
    .filter((f) => f.vms.length > 0)
    .sort((a, b) => a.host.stateSinceMs - b.host.stateSinceMs || a.host.id.localeCompare(b.host.id));
  const unready = hosts.filter((h) => h.state !== HostState.HOST_STATE_READY).length;
  const massFailure = unready > hosts.length * limits.maxUnreadyFraction;
  if (fenced.length === 0) return { restarts: [], kept, held: undefined, massFailure };
  const settling = !massFailure && clock.lastMassFailureMs > 0 && clock.nowMs - clock.lastMassFailureMs < limits.settleAfterMassFailureMs;
  const eligible = massFailure || settling ? fenced.filter((f) => f.host.confirmedDown) : fenced;
  // Hosts whose restarts already began go on; new ones take from the rate limit's budget.
  let budget = Math.max(0, rate.budget);
  const taken = eligible.filter((f) => {
    if (rate.started.has(f.host.id)) return true;
    if (budget === 0) return false;
    budget--;
    return true;
  });
  let held: string | undefined;
  if (massFailure && eligible.length < fenced.length) {
    held = `${unready} of ${hosts.length} hosts are not ready: more likely the controller's own network than the hosts, so no VM is restarted elsewhere (confirm hosts down one by one with 'berth host confirm-down HOST')`;
  } else if (settling && eligible.length < fenced.length) {
    held = `hosts are coming back from a mass failure: restarts wait ${limits.settleAfterMassFailureMs} ms after it ended, so the hosts still on their way back are not taken for single failures`;
  } else if (taken.length < eligible.length) {
    held = `rate limit: ${limits.hostsPerInterval} fenced hosts per ${limits.rateIntervalMs} ms; ${eligible.length - taken.length} wait`;
  }
  return { restarts: taken.map((f) => ({ hostId: f.host.id, vms: f.vms })), kept, held, massFailure };
}

function restartable(vm: Vm, clusterDefault: HostFailurePolicy): boolean {
  return vm.desiredState !== DesiredState.DESIRED_STATE_DELETED && failurePolicyOf(vm, clusterDefault) === HostFailurePolicy.HOST_FAILURE_POLICY_RESTART;
}
