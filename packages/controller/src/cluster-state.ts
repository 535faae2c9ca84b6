import { MigrationPhase, type ClusterConfig, type Group, type Host, type Image, type Migration, type Resources, type ScaleGroup, type Vm, type Volume } from "@berth/api";
import { addResources, subtractResources, ZERO } from "@berth/core";
import { Informer, type ClusterStore, type KeyValue } from "@berth/store";
import { SCALE_GROUP_LABEL } from "./scale-groups.js";
import { decodeConfig, decodeGroup, decodeHost, decodeImage, decodeMigration, decodeScaleGroup, decodeVm, decodeVolume, Keys } from "./keys.js";

/**
 * A migration in these phases holds the VM on its target as well as on its source: the target may
 * already have its volume or the domain itself, so placement must see the VM on both hosts.
 */
export function holdsTarget(m: Migration): boolean {
  return (
    m.targetHost !== "" &&
    (m.phase === MigrationPhase.MIGRATION_PHASE_PREPARING ||
      m.phase === MigrationPhase.MIGRATION_PHASE_MIGRATING ||
      m.phase === MigrationPhase.MIGRATION_PHASE_FINISHING ||
      m.phase === MigrationPhase.MIGRATION_PHASE_ABORTING)
  );
}

/** Not COMPLETED or FAILED (PENDING included). */
export function isActiveMigration(m: Migration): boolean {
  return m.phase !== MigrationPhase.MIGRATION_PHASE_COMPLETED && m.phase !== MigrationPhase.MIGRATION_PHASE_FAILED;
}

/** A change seen in the cache. */
export type StateChange =
  | { kind: "vm"; type: "put" | "delete"; vm: Vm; previous: Vm | undefined; revision: number }
  | { kind: "host"; type: "put" | "delete"; host: Host; previous: Host | undefined; revision: number }
  | { kind: "migration"; type: "put" | "delete"; migration: Migration; previous: Migration | undefined; revision: number }
  | { kind: "image"; type: "put" | "delete"; image: Image; previous: Image | undefined; revision: number }
  | { kind: "volume"; type: "put" | "delete"; volume: Volume; previous: Volume | undefined; revision: number }
  | { kind: "scalegroup"; type: "put" | "delete"; scaleGroup: ScaleGroup; previous: ScaleGroup | undefined; revision: number };

/**
 * The controller's watch-fed view of hosts and VMs (like a Kubernetes informer cache), with the
 * indexes placement and reconciliation need: VMs by id and by host, and each host's allocated
 * resources kept up to date incrementally; the image catalog; data volumes by host, by id and by
 * the VM they are attached to.
 */
export class ClusterState {
  readonly vms: Informer<Vm>;
  readonly hosts: Informer<Host>;
  readonly groups: Informer<Group>;
  /** The one cluster config record (its prefix matches only that key). */
  readonly config: Informer<ClusterConfig>;
  /** Migrations, keyed by VM name: in flight, or the last one finished. */
  readonly migrations: Informer<Migration>;
  /** The image catalog, keyed by image name. */
  readonly images: Informer<Image>;
  /** Data volumes, keyed by volume name. */
  readonly volumes: Informer<Volume>;
  /** Scale groups, keyed by name. */
  readonly scaleGroups: Informer<ScaleGroup>;
  private readonly volumeByKey = new Map<string, Volume>();
  private readonly volumeById = new Map<string, Volume>();
  /** host id → volume name → the volumes bound to the host (deleting ones included). */
  private readonly volumesByHost = new Map<string, Map<string, Volume>>();
  /** host id → GiB of the volumes bound to it. */
  private readonly volumeGibByHost = new Map<string, number>();
  /** VM name → volume name → the volumes whose record says they are attached to it. */
  private readonly volumesByVm = new Map<string, Map<string, Volume>>();
  /** Target host id → VM id → the migration holding the VM there (see `holdsTarget`). */
  private readonly incomingByHost = new Map<string, Map<string, Migration>>();
  /** VM id → its active migration (PENDING included). */
  private readonly activeByVm = new Map<string, Migration>();
  /** host id → group name → members of the group placed there. */
  private readonly groupsByHost = new Map<string, Map<string, number>>();
  /** scale group name → VM id → the VMs carrying its label (SCALE_GROUP_LABEL). */
  private readonly vmsByScaleGroup = new Map<string, Map<string, Vm>>();
  private readonly byId = new Map<string, Vm>();
  private readonly byKey = new Map<string, Vm>();
  private readonly vmsByHost = new Map<string, Map<string, Vm>>();
  private readonly allocatedByHost = new Map<string, Resources>();
  private readonly listeners = new Set<(change: StateChange) => void>();
  private readonly migrationByKey = new Map<string, Migration>();

  constructor(store: ClusterStore) {
    this.vms = new Informer(store, Keys.vms, (kv: KeyValue) => decodeVm(kv.value));
    this.hosts = new Informer(store, Keys.hosts, (kv: KeyValue) => decodeHost(kv.value));
    this.groups = new Informer(store, Keys.groups, (kv: KeyValue) => decodeGroup(kv.value));
    this.config = new Informer(store, Keys.config, (kv: KeyValue) => decodeConfig(kv.value));
    this.migrations = new Informer(store, Keys.migrations, (kv: KeyValue) => decodeMigration(kv.value));
    this.images = new Informer(store, Keys.images, (kv: KeyValue) => decodeImage(kv.value));
    this.volumes = new Informer(store, Keys.volumes, (kv: KeyValue) => decodeVolume(kv.value));
    this.scaleGroups = new Informer(store, Keys.scaleGroups, (kv: KeyValue) => decodeScaleGroup(kv.value));
    this.scaleGroups.subscribe((e) => {
      const previous = e.type === "put" ? e.previous : e.value;
      const scaleGroup = e.value;
      if (scaleGroup) this.emit({ kind: "scalegroup", type: e.type, scaleGroup, previous, revision: e.revision });
    });
    this.images.subscribe((e) => {
      const previous = e.type === "put" ? e.previous : e.value;
      const image = e.value;
      if (image) this.emit({ kind: "image", type: e.type, image, previous, revision: e.revision });
    });
    this.volumes.subscribe((e) => {
      const previous = this.unindexVolume(e.key);
      if (e.type === "put") this.indexVolume(e.key, e.value);
      const volume = e.type === "put" ? e.value : previous;
      if (volume) this.emit({ kind: "volume", type: e.type, volume, previous, revision: e.revision });
    });
    this.migrations.subscribe((e) => {
      const previous = this.migrationByKey.get(e.key);
      if (previous) this.unindexMigration(previous);
      this.migrationByKey.delete(e.key);
      if (e.type === "put") {
        this.migrationByKey.set(e.key, e.value);
        this.indexMigration(e.value);
      }
      const migration = e.type === "put" ? e.value : previous;
      if (migration) this.emit({ kind: "migration", type: e.type, migration, previous, revision: e.revision });
    });
    this.vms.subscribe((e) => {
      const previous = this.unindex(e.key);
      if (e.type === "put") this.index(e.key, e.value);
      const vm = e.type === "put" ? e.value : previous;
      if (vm) this.emit({ kind: "vm", type: e.type, vm, previous, revision: e.revision });
    });
    this.hosts.subscribe((e) => {
      const previous = e.type === "put" ? e.previous : e.value;
      const host = e.value ?? this.hosts.get(e.key);
      if (host) this.emit({ kind: "host", type: e.type, host, previous, revision: e.revision });
    });
  }

  /** Lists and starts watching both kinds; resolves once the cache holds a consistent view. */
  async start(): Promise<void> {
    await Promise.all([this.vms.start(), this.hosts.start(), this.groups.start(), this.config.start(), this.migrations.start(), this.images.start(), this.volumes.start(), this.scaleGroups.start()]);
  }

  async stop(): Promise<void> {
    await Promise.all([this.vms.stop(), this.hosts.stop(), this.groups.stop(), this.config.stop(), this.migrations.stop(), this.images.stop(), this.volumes.stop(), this.scaleGroups.stop()]);
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

  /** How many VM records name the host (deleting ones included): vmsOnHost(hostId).length without the copy. */
  vmCountOn(hostId: string): number {
    return this.vmsByHost.get(hostId)?.size ?? 0;
  }

  /** How many VMs are migrating to the host: incomingVms(hostId).length without the copy. */
  incomingCount(hostId: string): number {
    const incoming = this.incomingByHost.get(hostId);
    if (!incoming) return 0;
    let n = 0;
    for (const vmId of incoming.keys()) if (this.byId.has(vmId)) n++;
    return n;
  }

  /**
   * What is allocated on the host — the one definition that snapshots, ListHosts and the metrics
   * read: the resources of every VM record placed there (deleting ones included), the disk of every
   * data volume bound to it (attached or not, deleting ones included: the data is there until the
   * host removes it), and the VMs migrating to it with their volumes (a VM in flight counts on both
   * hosts: the target receives its disk and volumes while the source still has them).
   */
  allocated(hostId: string): Resources {
    let total = this.placedOn(hostId);
    const volumeGib = this.volumeGibByHost.get(hostId) ?? 0;
    if (volumeGib > 0) total = { ...total, diskGib: total.diskGib + volumeGib };
    for (const vm of this.incomingVms(hostId)) {
      if (vm.spec?.resources) total = addResources(total, vm.spec.resources);
      const travelling = this.attachedVolumeGib(vm.spec?.name ?? "", hostId);
      if (travelling > 0) total = { ...total, diskGib: total.diskGib + travelling };
    }
    return total;
  }

  /** GiB of the volumes attached to the VM (by name), leaving out those already bound to `exceptHost`. */
  attachedVolumeGib(vmName: string, exceptHost = ""): number {
    let gib = 0;
    for (const v of this.volumesByVm.get(vmName)?.values() ?? []) if (v.hostId !== exceptHost || exceptHost === "") gib += v.sizeGib;
    return gib;
  }

  image(name: string): Image | undefined {
    return this.images.get(Keys.image(name));
  }

  imageKv(name: string): KeyValue | undefined {
    return this.images.getKv(Keys.image(name));
  }

  scaleGroup(name: string): ScaleGroup | undefined {
    return this.scaleGroups.get(Keys.scaleGroup(name));
  }

  /** The VMs labelled as members of the scale group (being deleted ones included), from an index. */
  vmsOfScaleGroup(name: string): Vm[] {
    return [...(this.vmsByScaleGroup.get(name)?.values() ?? [])];
  }

  allScaleGroups(): ScaleGroup[] {
    return this.scaleGroups.values();
  }

  allImages(): Image[] {
    return this.images.values();
  }

  volume(name: string): Volume | undefined {
    return this.volumes.get(Keys.volume(name));
  }

  volumeKv(name: string): KeyValue | undefined {
    return this.volumes.getKv(Keys.volume(name));
  }

  volumeWithId(id: string): Volume | undefined {
    return this.volumeById.get(id);
  }

  allVolumes(): Volume[] {
    return this.volumes.values();
  }

  /** The volumes bound to the host (attached or not, deleting ones included). */
  volumesOnHost(hostId: string): Volume[] {
    return [...(this.volumesByHost.get(hostId)?.values() ?? [])];
  }

  /** The volumes whose records say they are attached to the VM (by name). */
  volumesOfVm(vmName: string): Volume[] {
    return [...(this.volumesByVm.get(vmName)?.values() ?? [])];
  }

  hostIdsWithVolumes(): string[] {
    return [...this.volumesByHost.keys()];
  }

  /** Sum of the resources of the VM records placed on the host, without arrivals in flight. */
  private placedOn(hostId: string): Resources {
    return this.allocatedByHost.get(hostId) ?? { ...ZERO };
  }

  /** The VMs migrating to the host (their records still name the source). */
  incomingVms(hostId: string): Vm[] {
    const incoming = this.incomingByHost.get(hostId);
    if (!incoming) return [];
    const vms: Vm[] = [];
    for (const vmId of incoming.keys()) {
      const vm = this.byId.get(vmId);
      if (vm) vms.push(vm);
    }
    return vms;
  }

  /** The VM's migration if one is active (PENDING included); undefined otherwise. */
  activeMigration(vmId: string): Migration | undefined {
    return this.activeByVm.get(vmId);
  }

  /**
   * True while a migration holds the VM (its target may have the domain): from PREPARING until
   * it ends, and after it COMPLETED until this cache has the VM's record as that same transaction
   * left it. (Migrations and VMs come through separate watches: for a moment the migration may be
   * seen done while the VM is still seen on its source — taking the arrived domain for a
   * superseded copy then would delete the only one.)
   */
  migrationHolds(vmId: string): boolean {
    const active = this.activeByVm.get(vmId);
    if (active) return holdsTarget(active);
    const name = this.byId.get(vmId)?.spec?.name;
    if (!name) return false;
    const m = this.migration(name);
    if (!m || m.vmId !== vmId || m.phase !== MigrationPhase.MIGRATION_PHASE_COMPLETED) return false;
    const mkv = this.migrationKv(name);
    const vkv = this.vmKv(name);
    return mkv !== undefined && vkv !== undefined && vkv.modRevision < mkv.modRevision;
  }

  migration(vmName: string): Migration | undefined {
    return this.migrations.get(Keys.migration(vmName));
  }

  migrationKv(vmName: string): KeyValue | undefined {
    return this.migrations.getKv(Keys.migration(vmName));
  }

  allMigrations(): Migration[] {
    return this.migrations.values();
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

  /** Members of each group on the host, from the VM records placed there and the VMs migrating to it. */
  groupMembersOn(hostId: string): Record<string, number> {
    const members: Record<string, number> = Object.fromEntries(this.groupsByHost.get(hostId) ?? []);
    for (const vm of this.incomingVms(hostId)) {
      const g = vm.spec?.group;
      if (g) members[g] = (members[g] ?? 0) + 1;
    }
    return members;
  }

  hostIdsWithVms(): string[] {
    return [...this.vmsByHost.keys()];
  }

  private indexMigration(m: Migration): void {
    if (isActiveMigration(m)) this.activeByVm.set(m.vmId, m);
    if (!holdsTarget(m)) return;
    let onHost = this.incomingByHost.get(m.targetHost);
    if (!onHost) this.incomingByHost.set(m.targetHost, (onHost = new Map()));
    onHost.set(m.vmId, m);
  }

  private unindexMigration(m: Migration): void {
    if (this.activeByVm.get(m.vmId)?.id === m.id) this.activeByVm.delete(m.vmId);
    const onHost = this.incomingByHost.get(m.targetHost);
    if (onHost?.get(m.vmId)?.id === m.id) onHost.delete(m.vmId);
    if (onHost?.size === 0) this.incomingByHost.delete(m.targetHost);
  }

  private index(key: string, vm: Vm): void {
    this.byKey.set(key, vm);
    this.byId.set(vm.id, vm);
    let onHost = this.vmsByHost.get(vm.hostId);
    if (!onHost) this.vmsByHost.set(vm.hostId, (onHost = new Map()));
    onHost.set(vm.id, vm);
    if (vm.spec?.resources) {
      this.allocatedByHost.set(vm.hostId, addResources(this.placedOn(vm.hostId), vm.spec.resources));
    }
    this.countGroupMember(vm, +1);
    const scaleGroup = vm.spec?.labels[SCALE_GROUP_LABEL];
    if (scaleGroup) {
      let members = this.vmsByScaleGroup.get(scaleGroup);
      if (!members) this.vmsByScaleGroup.set(scaleGroup, (members = new Map()));
      members.set(vm.id, vm);
    }
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
      this.allocatedByHost.set(vm.hostId, subtractResources(this.placedOn(vm.hostId), vm.spec.resources));
    }
    this.countGroupMember(vm, -1);
    const scaleGroup = vm.spec?.labels[SCALE_GROUP_LABEL];
    const members = scaleGroup ? this.vmsByScaleGroup.get(scaleGroup) : undefined;
    members?.delete(vm.id);
    if (members?.size === 0) this.vmsByScaleGroup.delete(scaleGroup!);
    return vm;
  }

  private indexVolume(key: string, v: Volume): void {
    this.volumeByKey.set(key, v);
    this.volumeById.set(v.id, v);
    if (v.hostId !== "") {
      let onHost = this.volumesByHost.get(v.hostId);
      if (!onHost) this.volumesByHost.set(v.hostId, (onHost = new Map()));
      onHost.set(v.name, v);
      this.volumeGibByHost.set(v.hostId, (this.volumeGibByHost.get(v.hostId) ?? 0) + v.sizeGib);
    }
    if (v.attachedTo !== "") {
      let ofVm = this.volumesByVm.get(v.attachedTo);
      if (!ofVm) this.volumesByVm.set(v.attachedTo, (ofVm = new Map()));
      ofVm.set(v.name, v);
    }
  }

  private unindexVolume(key: string): Volume | undefined {
    const v = this.volumeByKey.get(key);
    if (!v) return undefined;
    this.volumeByKey.delete(key);
    if (this.volumeById.get(v.id) === v) this.volumeById.delete(v.id);
    const onHost = this.volumesByHost.get(v.hostId);
    if (onHost?.delete(v.name)) {
      const gib = (this.volumeGibByHost.get(v.hostId) ?? 0) - v.sizeGib;
      if (gib > 0) this.volumeGibByHost.set(v.hostId, gib);
      else this.volumeGibByHost.delete(v.hostId);
    }
    if (onHost?.size === 0) this.volumesByHost.delete(v.hostId);
    const ofVm = this.volumesByVm.get(v.attachedTo);
    ofVm?.delete(v.name);
    if (ofVm?.size === 0) this.volumesByVm.delete(v.attachedTo);
    return v;
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
