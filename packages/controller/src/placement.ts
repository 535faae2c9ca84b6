import { randomUUID } from "node:crypto";
import { DesiredState, DomainState, VmPhase, type Resources, type Vm, type VmSpec } from "@berth/api";
import { addResources, alreadyExists, BerthError, ErrorCode, validateVmSpec } from "@berth/core";
import { placeVm, unplacedError, type HostSnapshot, type ResolvedSchedulerOptions } from "@berth/scheduler";
import type { ClusterStore } from "@berth/store";
import type { ClusterState } from "./cluster-state.js";
import type { FencedWriter } from "./fenced-writer.js";
import { encodeVm, Keys } from "./keys.js";
import { waitUpTo } from "./wait.js";

/** How long a reservation waits for its own write to reach the cache before it is released. */
const CACHE_CATCH_UP_MS = 5_000;

interface Reservation {
  hostId: string;
  resources: Resources;
}

/**
 * Places new VMs and commits them. Between the scheduler's decision and the moment the committed
 * record reaches the cache, the VM's resources are held as a reservation, so concurrent requests
 * see each other and cannot overfill a host; the commit itself is create-if-absent on the VM key
 * (names are unique) and guards the host record it was placed on.
 */
export class Placer {
  private readonly reservations = new Map<string, Reservation>();

  constructor(
    private readonly store: ClusterStore,
    private readonly state: ClusterState,
    private readonly options: ResolvedSchedulerOptions,
    private readonly isHostLive: (hostId: string) => boolean,
    private readonly now: () => number,
  ) {}

  /** The scheduler's view: live, registered hosts with what is placed or reserved on them. */
  snapshot(): HostSnapshot[] {
    const reservedByHost = new Map<string, Resources>();
    for (const [name, r] of this.reservations) {
      if (this.state.vm(name)) continue; // already counted from the cache
      const prior = reservedByHost.get(r.hostId);
      reservedByHost.set(r.hostId, prior ? addResources(prior, r.resources) : r.resources);
    }
    return this.state.allHosts().map((host) => {
      const reserved = reservedByHost.get(host.id);
      const allocated = this.state.allocated(host.id);
      return {
        id: host.id,
        capacity: host.capacity ?? { vcpus: 0, memoryMib: 0, diskGib: 0 },
        allocated: reserved ? addResources(allocated, reserved) : allocated,
        vmCount: this.state.vmsOnHost(host.id).length,
        ready: this.isHostLive(host.id),
        cordoned: host.cordoned,
        labels: host.labels,
      };
    });
  }

  /**
   * Validates, places and commits a new VM (desired: running). Throws INVALID_ARGUMENT (bad spec,
   * nothing written), ALREADY_EXISTS, RESOURCE_EXHAUSTED with one reason per host, CONFLICT when
   * the placement raced a change of its host (retry), NOT_LEADER.
   */
  async create(spec: VmSpec | undefined, writer: FencedWriter): Promise<Vm> {
    validateVmSpec(spec);
    const name = spec.name;
    if (this.state.vm(name) || this.reservations.has(name)) throw alreadyExists(`vm '${name}'`);

    const request = { name, resources: spec.resources };
    const decision = placeVm(this.snapshot(), request, this.options);
    if (!decision.placed) throw unplacedError(request, decision);
    const hostKv = this.state.hostKv(decision.hostId);
    if (!hostKv) throw new BerthError(ErrorCode.Conflict, `host '${decision.hostId}' vanished during placement; retry`);

    this.reservations.set(name, { hostId: decision.hostId, resources: spec.resources });
    try {
      const vm: Vm = {
        id: randomUUID(),
        spec: { name, resources: { ...spec.resources }, labels: { ...spec.labels } },
        desiredState: DesiredState.DESIRED_STATE_RUNNING,
        hostId: decision.hostId,
        generation: 1,
        status: { phase: VmPhase.VM_PHASE_PENDING, domainState: DomainState.DOMAIN_STATE_UNSPECIFIED, observedGeneration: 0, message: "", updatedAtMs: this.now() },
        createdAtMs: this.now(),
        forceStop: false,
      };
      const result = await writer.commit({
        compare: [
          { key: Keys.vm(name), target: "createRevision", equals: 0 },
          { key: Keys.host(decision.hostId), target: "createRevision", equals: hostKv.createRevision },
        ],
        ops: [{ type: "put", key: Keys.vm(name), value: encodeVm(vm) }],
      });
      if (!result.succeeded) {
        if (await this.store.get(Keys.vm(name))) throw alreadyExists(`vm '${name}'`);
        throw new BerthError(ErrorCode.Conflict, `host '${decision.hostId}' changed during placement of '${name}'; retry`);
      }
      // Hold the reservation until the cache has the record, so no request sees the host emptier.
      await waitUpTo(this.state.vms.waitForRevision(result.revision), CACHE_CATCH_UP_MS);
      return vm;
    } finally {
      this.reservations.delete(name);
    }
  }
}
