import type { Domain, Host, HypervisorStatus, Resources } from "@berth/api";
import { allocatable, type HostSnapshot, type ResolvedSchedulerOptions } from "@berth/scheduler";
import type { LeadingDeps } from "./agent-service.js";
import type { HostHoldings } from "./agent-session.js";
import type { ClusterState } from "./cluster-state.js";

/** What a host's live agent stream last said (not stored: the record has what was last written). */
export interface LiveHost {
  usage: Resources | undefined;
  lastHeardMs: number;
  hypervisor: HypervisorStatus | undefined;
  orphans: readonly Domain[];
  /** The images, networks and data volumes the agent last reported. */
  holdings: HostHoldings;
}

/** What {@link hostView} reads. */
export interface HostViewDeps {
  state: ClusterState;
  liveHost(hostId: string): LiveHost | undefined;
  /** What this controller holds while it leads; undefined on a follower (no live drain figures then). */
  leading(): LeadingDeps | undefined;
  /** The scheduler's view of a host and the cluster's options: what is allocatable there. */
  placer: { snapshotOf(hostId: string): HostSnapshot | undefined; options(): ResolvedSchedulerOptions };
}

/**
 * A host as operators see it (ListHosts, GetHost, the dashboard): the record, plus what is
 * allocatable there (the scheduler's own rule), what the cache says is allocated there (VMs and
 * bound volumes: ClusterState.allocated) and the live stream's usage, hypervisor, orphans, images,
 * networks, volumes and last-heard time;
 * the drain's live figures while this controller leads. The record's own values stand in for a
 * host with no live stream.
 */
export function hostView(deps: HostViewDeps, host: Host): Host {
  const live = deps.liveHost(host.id);
  const snapshot = deps.placer.snapshotOf(host.id);
  return {
    ...host,
    allocated: deps.state.allocated(host.id),
    allocatable: snapshot ? allocatable(snapshot, deps.placer.options()) : undefined,
    usage: live?.usage ?? host.usage,
    lastSeenMs: live?.lastHeardMs ?? host.lastSeenMs,
    hypervisor: live?.hypervisor ?? host.hypervisor,
    orphans: (live?.orphans ?? []).map((d) => ({ vmId: d.vmId, name: d.name, state: d.state, resources: d.resources })),
    // Live only (not stored): a host without a stream shows none.
    images: [...(live?.holdings.images ?? [])],
    networks: [...(live?.holdings.networks ?? [])],
    volumes: [...(live?.holdings.volumes ?? [])],
    drain: deps.leading()?.migrations.drainFigures(host) ?? host.drain,
  };
}
