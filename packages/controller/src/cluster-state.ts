import type { ClusterConfig, Group, Host, Resources, Vm } from "@berth/api";
import { addResources, subtractResources, ZERO } from "@berth/core";
import { Informer, type ClusterStore, type KeyValue } from "@berth/store";
import { decodeConfig, decodeGroup, decodeHost, decodeVm, Keys } from "./keys.js";

/** A change seen in the cache. */
export type StateChange =
  | { kind: "vm"; type: "put" | "delete"; vm: Vm; previous: Vm | undefined; revision: number }
  | { kind: "host"; type: "put" | "delete"; host: Host; revision: number };

/**
 * The controller's watch-fed view of hosts and VMs (like a Kubernetes informer cache), with the
 * indexes placement and reconciliation need: VMs by id and by host, and each host's allocated
 * resources kept up to date incrementally.
 */
export class ClusterState {
  readonly vms: Informer<Vm>;
  readonly hosts: Informer<Host>;
  readonly groups: Informer<Group>;
  /** The one cluster config record (its prefix matches only that key). */
  readonly config: Informer<ClusterConfig>;
  /** host id → group name → members of the group placed there. */
  private readonly groupsByHost = new Map<string, Map<string, number>>();
  private readonly byId = new Map<string, Vm>();
  private readonly byKey = new Map<string, Vm>();
  private readonly vmsByHost = new Map<string, Map<string, Vm>>();
  private readonly allocatedByHost = new Map<string, Resources>();
  private readonly listeners = new Set<(change: StateChange) => void>();

  constructor(store: ClusterStore) {
    this.vms = new Informer(store, Keys.vms, (kv: KeyValue) => decodeVm(kv.value));
    this.hosts = new Informer(store, Keys.hosts, (kv: KeyValue) => decodeHost(kv.value));
    this.groups = new Informer(store, Keys.groups, (kv: KeyValue) => decodeGroup(kv.value));
    this.config = new Informer(store, Keys.config, (kv: KeyValue) => decodeConfig(kv.value));
    this.vms.subscribe((e) => {
      const previous = this.unindex(e.key);
      if (e.type === "put") this.index(e.key, e.value);
      const vm = e.type === "put" ? e.value : previous;
      if (vm) this.emit({ kind: "vm", type: e.type, vm, previous, revision: e.revision });
    });
    this.hosts.subscribe((e) => {
      const host = e.value ?? this.hosts.get(e.key);
      if (host) this.emit({ kind: "host", type: e.type, host, revision: e.revision });
    });
  }

  /** Lists and starts watching both kinds; resolves once the cache holds a consistent view. */
  async start(): Promise<void> {
    await Promise.all([this.vms.start(), this.hosts.start(), this.groups.start(), this.config.start()]);
  }

  async stop(): Promise<void> {
    await Promise.all([this.vms.stop(), this.hosts.stop(), this.groups.stop(), this.config.stop()]);
  }

  subscribe(listener: (change: StateChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  vm(name: string): Vm | undefined {
    return this.vms.get(Keys.vm(name));
  }

  vmKv(name: string): KeyValue | undefined {
    return this.vms.getKv(Keys.vm(name));
  }

  vmById(id: string): Vm | undefined {
    return this.byId.get(id);
  }

  host(id: string): Host | undefined {
    return this.hosts.get(Keys.host(id));
  }

  hostKv(id: string): KeyValue | undefined {
    return this.hosts.getKv(Keys.host(id));
  }

  allVms(): Vm[] {
    return [...this.byId.values()];
  }

  allHosts(): Host[] {
    return this.hosts.values();
  }

  vmsOnHost(hostId: string): Vm[] {
    return [...(this.vmsByHost.get(hostId)?.values() ?? [])];
  }

  /** Sum of the resources of every VM record placed on the host (deleting ones included). */
  allocated(hostId: string): Resources {
    return this.allocatedByHost.get(hostId) ?? { ...ZERO };
  }

  group(name: string): Group | undefined {
    return this.groups.get(Keys.group(name));
  }

  groupKv(name: string): KeyValue | undefined {
    return this.groups.getKv(Keys.group(name));
  }

  /** The cluster config, or undefined when none was ever set (defaults apply). */
  clusterConfig(): ClusterConfig | undefined {
    return this.config.get(Keys.config);
  }

  /** Members of each group on the host, from the VM records placed there. */
  groupMembersOn(hostId: string): Record<string, number> {
    return Object.fromEntries(this.groupsByHost.get(hostId) ?? []);
  }

  hostIdsWithVms(): string[] {
    return [...this.vmsByHost.keys()];
  }

  private index(key: string, vm: Vm): void {
    this.byKey.set(key, vm);
    this.byId.set(vm.id, vm);
    let onHost = this.vmsByHost.get(vm.hostId);
    if (!onHost) this.vmsByHost.set(vm.hostId, (onHost = new Map()));
    onHost.set(vm.id, vm);
    if (vm.spec?.resources) {
      this.allocatedByHost.set(vm.hostId, addResources(this.allocated(vm.hostId), vm.spec.resources));
    }
    this.countGroupMember(vm, +1);
  }

  private unindex(key: string): Vm | undefined {
    const vm = this.byKey.get(key);
    if (!vm) return undefined;
    this.byKey.delete(key);
    this.byId.delete(vm.id);
    const onHost = this.vmsByHost.get(vm.hostId);
    onHost?.delete(vm.id);
    if (onHost?.size === 0) this.vmsByHost.delete(vm.hostId);
    if (vm.spec?.resources) {
      this.allocatedByHost.set(vm.hostId, subtractResources(this.allocated(vm.hostId), vm.spec.resources));
    }
    this.countGroupMember(vm, -1);
    return vm;
  }

  private countGroupMember(vm: Vm, delta: number): void {
    const group = vm.spec?.group;
    if (!group) return;
    let groups = this.groupsByHost.get(vm.hostId);
    if (!groups) this.groupsByHost.set(vm.hostId, (groups = new Map()));
    const n = (groups.get(group) ?? 0) + delta;
    if (n > 0) groups.set(group, n);
    else groups.delete(group);
    if (groups.size === 0) this.groupsByHost.delete(vm.hostId);
  }

  private emit(change: StateChange): void {
    for (const l of this.listeners) l(change);
  }
}
