/**
 * The dashboard's view model: records in, what the page shows out — pure (no I/O, no clock but
 * the `nowMs` given), so the browser code only draws. Every row carries a `key` that sorts
 * naturally with a plain string comparison (`host-2` before `host-10`), so the browser keeps its
 * lists in order without a comparator of its own; VM rows carry `search`, the text the filter
 * matches. To show something new: add it to a row here (and its test), then draw it in app.js.
 */
import {
  DesiredState,
  DrainPhase,
  EventSeverity,
  HostState,
  MigrationPhase,
  MigrationReason,
  VmPhase,
  type ClusterEvent,
  type Host,
  type Migration,
  type PlacementRecord,
  type Resources,
  type ScaleDecision,
  type ScaleGroupInfo,
  type Vm,
} from "@berth/api";
import { formatBytes, formatExactDuration, formatGib, formatMib, formatPercent, formatResources, formatVcpus, normalHostState } from "@berth/core";
import { describeScaleUpStep, resolveScalePolicyIfValid, type ResolvedScalePolicy } from "../autoscale.js";
import { isMemberOf, SCALE_GROUP_LABEL } from "../scale-groups.js";

/** Digits a number is padded to in a {@link naturalKey} (names are at most 63 characters). */
const KEY_DIGITS = 16;

/**
 * A string whose plain (code unit) order is the natural order of `name`: case folded, each run of
 * digits compared by value (`vm-9` < `vm-10`); ties broken by the name itself, so distinct names
 * never share a key.
 */
export function naturalKey(name: string): string {
  const folded = name.toLowerCase().replace(/\d+/g, (run) => run.replace(/^0+(?=\d)/, "").padStart(KEY_DIGITS, "0"));
  return `${folded}\u0000${name}`;
}

/** Compares two names in natural order (see {@link naturalKey}). */
export function naturalCompare(a: string, b: string): number {
  const ka = naturalKey(a);
  const kb = naturalKey(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** Sorts rows by their `key`, in place, and returns them. */
export function byKey<T extends { key: string }>(rows: T[]): T[] {
  return rows.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** An enum value's name without its prefix (`VM_PHASE_RUNNING` → `RUNNING`); `UNKNOWN(n)` for a value the build does not know. */
function enumName(e: Record<number, string>, value: number, prefix: string): string {
  const name = e[value];
  return name === undefined ? `UNKNOWN(${value})` : name.startsWith(prefix) ? name.slice(prefix.length) : name;
}

export type BadgeTone = "warn" | "bad" | "info";

/** A label on a host row. */
export interface Badge {
  label: "CORDONED" | "DRAINING" | "DRAINED" | "DRAIN INCOMPLETE" | "SUSPECT" | "DOWN" | "FENCED" | "HYPERVISOR DOWN" | "NOT REGISTERED";
  tone: BadgeTone;
  /** The why, for a tooltip (cordon reason, hypervisor message...); "" when there is none. */
  title: string;
}

/** One VM's part of a host's allocation bar. */
export interface Segment {
  vm: string;
  /** vCPUs or MiB reserved. */
  amount: number;
  /** The amount as people read it: `2 vCPU`, `4 GiB` (core's one size style). */
  amountText: string;
  /** amount / allocatable (0 when nothing is allocatable). */
  fraction: number;
  /** Migrating here (it still counts on its source too). */
  incoming: boolean;
}

/** One resource of a host: allocated (by VM) and measured, as fractions of allocatable. */
export interface Bar {
  allocatable: number;
  allocated: number;
  /** What the agent last measured; null when it never reported. */
  used: number | null;
  /** allocated / allocatable, not clamped (over 1 when over-committed); 0 when nothing is allocatable. */
  allocatedFraction: number;
  /** used / allocatable clamped to [0, 1]; null when unmeasured. */
  usedFraction: number | null;
  /** Largest first, so the bar reads as a stack of its big tenants. */
  segments: Segment[];
  /** More is allocated than allocatable. */
  over: boolean;
  /** "3 / 8 vCPU", "4 GiB / 15 GiB" (core's one size style). */
  label: string;
  /** The measured use as people read it; null when not measured. */
  usedText: string | null;
}

/** A host as one row (or one dense tile) of the topology. */
export interface HostRow {
  id: string;
  key: string;
  /** READY, SUSPECT, DOWN, FENCED, UNSPECIFIED... */
  state: string;
  badges: Badge[];
  cpu: Bar;
  memory: Bar;
  /** The fuller of the two allocation fractions, clamped to [0, 1]: a dense tile's colour. */
  fill: number;
  vmCount: number;
  labels: Record<string, string>;
  cordonReason: string;
  lastSeenMs: number;
  drain: { phase: string; toMove: number; moved: number; inFlight: number; failed: number; message: string } | null;
}

/** A VM as one row of the VM list. */
export interface VmRow {
  name: string;
  key: string;
  id: string;
  hostId: string;
  phase: string;
  desired: string;
  vcpus: number;
  memoryMib: number;
  diskGib: number;
  /** `2 vCPU, 4 GiB memory, 20 GiB disk` (core's one size style), and memory and disk alone. */
  resourcesText: string;
  memoryText: string;
  diskText: string;
  labels: Record<string, string>;
  group: string;
  /** The scale group the VM is a member of (its `berth.io/scale-group` label); "" for none. */
  scaleGroup: string;
  message: string;
  /** What the list's text filter matches: name, host, phase, group, scale group and every label (k=v), lower case. */
  search: string;
}

/** A migration, with its progress as a fraction when the figures allow one. */
export interface MigrationRow {
  vmName: string;
  key: string;
  id: string;
  source: string;
  target: string;
  phase: string;
  reason: string;
  /** Not COMPLETED or FAILED. */
  active: boolean;
  /** In [0, 1]; null before any figure is known. */
  progress: number | null;
  processedBytes: number;
  totalBytes: number;
  remainingBytes: number;
  /** `1.2 GiB / 4 GiB, 2.8 GiB left` as far as known; "" before the hypervisor said anything. */
  figuresText: string;
  createdAtMs: number;
  finishedAtMs: number;
  message: string;
}

/** A cluster event for the feed. */
export interface EventRow {
  timeMs: number;
  warning: boolean;
  reason: string;
  objectKind: string;
  objectName: string;
  hostId: string;
  message: string;
  revision: number;
}

/** Which controller answers, and whether it leads (a follower's page says where the leader is). */
export interface LeaderStatus {
  controllerId: string;
  leading: boolean;
  /** The leader's advertised address; "" when none is known. */
  leaderAddress: string;
}

/** The whole page's data, as /api/snapshot and the stream's first message carry it. */
export interface DashboardSnapshot {
  generatedAtMs: number;
  leader: LeaderStatus;
  hosts: HostRow[];
  vms: VmRow[];
  migrations: MigrationRow[];
  /** By natural key; empty when the cluster has none (the page then shows no scale group panel). */
  scaleGroups: ScaleGroupRow[];
  /** Newest first, at most {@link FEED_LENGTH}. */
  events: EventRow[];
}

/** How many events the feed shows. */
export const FEED_LENGTH = 200;

/** What a host row is made from: the host as operators see it (hostView), and what the scheduler may place there. */
export interface HostInput {
  host: Host;
  allocatable: Resources;
  /** VM records placed on the host. */
  vms: readonly Vm[];
  /** VMs migrating to the host (their records still name the source). */
  incoming: readonly Vm[];
}

function fraction(part: number, whole: number): number {
  return whole > 0 ? part / whole : 0;
}

function bar(allocatable: number, allocated: number, used: number | null, segments: Segment[], format: (n: number) => string, label = `${format(allocated)} / ${format(allocatable)}`): Bar {
  segments.sort((a, b) => b.amount - a.amount || naturalCompare(a.vm, b.vm));
  return {
    allocatable,
    allocated,
    used,
    allocatedFraction: fraction(allocated, allocatable),
    usedFraction: used === null ? null : Math.min(1, Math.max(0, fraction(used, allocatable))),
    segments,
    over: allocated > allocatable,
    label,
    usedText: used === null ? null : format(used),
  };
}


/** The badges of a host, most severe first. */
export function badgesOf(host: Host): Badge[] {
  const badges: Badge[] = [];
  const state = normalHostState(host.state);
  if (state === HostState.HOST_STATE_FENCED) badges.push({ label: "FENCED", tone: "bad", title: host.confirmedDown ? "confirmed down by an operator" : "" });
  else if (state === HostState.HOST_STATE_DOWN) badges.push({ label: "DOWN", tone: "bad", title: "" });
  else if (state === HostState.HOST_STATE_SUSPECT) badges.push({ label: "SUSPECT", tone: "warn", title: "its agent's stream is gone" });
  else if (state === HostState.HOST_STATE_UNSPECIFIED) badges.push({ label: "NOT REGISTERED", tone: "info", title: "" });
  if (host.hypervisor && !host.hypervisor.available) badges.push({ label: "HYPERVISOR DOWN", tone: "bad", title: host.hypervisor.message });
  const drain = host.drain?.phase;
  if (drain === DrainPhase.DRAIN_PHASE_DRAINING) badges.push({ label: "DRAINING", tone: "warn", title: host.drain?.message ?? "" });
  else if (drain === DrainPhase.DRAIN_PHASE_DRAINED) badges.push({ label: "DRAINED", tone: "info", title: host.drain?.message ?? "" });
  else if (drain === DrainPhase.DRAIN_PHASE_INCOMPLETE) badges.push({ label: "DRAIN INCOMPLETE", tone: "warn", title: host.drain?.message ?? "" });
  if (host.cordoned) badges.push({ label: "CORDONED", tone: "info", title: host.cordonReason });
  return badges;
}

/** A host's row: bars of allocated (one segment per VM) and measured CPU and memory, badges, drain figures. */
export function hostRow(input: HostInput): HostRow {
  const { host, allocatable } = input;
  const allocated = host.allocated ?? { vcpus: 0, memoryMib: 0, diskGib: 0 };
  const cpuSegments: Segment[] = [];
  const memSegments: Segment[] = [];
  const add = (vm: Vm, incoming: boolean): void => {
    const r = vm.spec?.resources;
    if (!r) return;
    const name = vm.spec?.name ?? vm.id;
    cpuSegments.push({ vm: name, amount: r.vcpus, amountText: formatVcpus(r.vcpus), fraction: fraction(r.vcpus, allocatable.vcpus), incoming });
    memSegments.push({ vm: name, amount: r.memoryMib, amountText: formatMib(r.memoryMib), fraction: fraction(r.memoryMib, allocatable.memoryMib), incoming });
  };
  for (const vm of input.vms) add(vm, false);
  for (const vm of input.incoming) add(vm, true);
  const cpu = bar(allocatable.vcpus, allocated.vcpus, host.usage ? host.usage.vcpus : null, cpuSegments, formatVcpus, `${allocated.vcpus} / ${formatVcpus(allocatable.vcpus)}`);
  const memory = bar(allocatable.memoryMib, allocated.memoryMib, host.usage ? host.usage.memoryMib : null, memSegments, formatMib);
  const d = host.drain;
  return {
    id: host.id,
    key: naturalKey(host.id),
    state: enumName(HostState, normalHostState(host.state), "HOST_STATE_"),
    badges: badgesOf(host),
    cpu,
    memory,
    fill: Math.min(1, Math.max(cpu.allocatedFraction, memory.allocatedFraction)),
    vmCount: input.vms.length,
    labels: { ...host.labels },
    cordonReason: host.cordonReason,
    lastSeenMs: host.lastSeenMs,
    drain: d && d.phase !== DrainPhase.DRAIN_PHASE_UNSPECIFIED
      ? { phase: enumName(DrainPhase, d.phase, "DRAIN_PHASE_"), toMove: d.toMove, moved: d.moved, inFlight: d.inFlight, failed: d.failed, message: d.message }
      : null,
  };
}

/** A VM's row of the list. */
export function vmRow(vm: Vm): VmRow {
  const name = vm.spec?.name ?? vm.id;
  const r = vm.spec?.resources ?? { vcpus: 0, memoryMib: 0, diskGib: 0 };
  const phase = enumName(VmPhase, vm.status?.phase ?? VmPhase.VM_PHASE_UNSPECIFIED, "VM_PHASE_");
  const labels = { ...(vm.spec?.labels ?? {}) };
  const group = vm.spec?.group ?? "";
  const scaleGroup = labels[SCALE_GROUP_LABEL] ?? "";
  const search = [name, vm.hostId, phase, group, scaleGroup, ...Object.entries(labels).map(([k, v]) => `${k}=${v}`)].join(" ").toLowerCase();
  return {
    name,
    key: naturalKey(name),
    id: vm.id,
    hostId: vm.hostId,
    phase,
    desired: enumName(DesiredState, vm.desiredState, "DESIRED_STATE_"),
    vcpus: r.vcpus,
    memoryMib: r.memoryMib,
    diskGib: r.diskGib,
    resourcesText: formatResources(r),
    memoryText: formatMib(r.memoryMib),
    diskText: formatGib(r.diskGib),
    labels,
    group,
    scaleGroup,
    message: vm.status?.message ?? "",
    search,
  };
}

/** Whether a VM row matches the list's filter: every whitespace-separated word is in its `search` text (case folded). */
export function vmMatches(row: Pick<VmRow, "search">, filter: string): boolean {
  const words = filter.toLowerCase().split(/\s+/).filter(Boolean);
  return words.every((w) => row.search.includes(w));
}

/**
 * How far a migration is, in [0, 1]: processed / total once the hypervisor gave a total, else
 * 1 − remaining / the controller's estimate; null before either is known. COMPLETED is 1.
 */
export function migrationProgress(m: Migration): number | null {
  if (m.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED) return 1;
  const p = m.progress;
  if (p && p.dataTotalBytes > 0) return Math.min(1, Math.max(0, p.dataProcessedBytes / p.dataTotalBytes));
  if (p && m.dataEstimateBytes > 0 && (p.dataRemainingBytes > 0 || p.dataProcessedBytes > 0)) return Math.min(1, Math.max(0, 1 - p.dataRemainingBytes / m.dataEstimateBytes));
  return null;
}

/** `processed / total, remaining left`, as far as the hypervisor told them. */
function migrationFigures(processed: number, total: number, remaining: number): string {
  const left = remaining ? `${formatBytes(remaining)} left` : "";
  if (total) return `${formatBytes(processed)} / ${formatBytes(total)}${left ? `, ${left}` : ""}`;
  return left;
}

/** A migration's row. */
export function migrationRow(m: Migration): MigrationRow {
  return {
    vmName: m.vmName,
    key: naturalKey(m.vmName),
    id: m.id,
    source: m.sourceHost,
    target: m.targetHost,
    phase: enumName(MigrationPhase, m.phase, "MIGRATION_PHASE_"),
    reason: enumName(MigrationReason, m.reason, "MIGRATION_REASON_"),
    active: m.phase !== MigrationPhase.MIGRATION_PHASE_COMPLETED && m.phase !== MigrationPhase.MIGRATION_PHASE_FAILED,
    progress: migrationProgress(m),
    processedBytes: m.progress?.dataProcessedBytes ?? 0,
    totalBytes: m.progress?.dataTotalBytes ?? 0,
    remainingBytes: m.progress?.dataRemainingBytes ?? 0,
    figuresText: migrationFigures(m.progress?.dataProcessedBytes ?? 0, m.progress?.dataTotalBytes ?? 0, m.progress?.dataRemainingBytes ?? 0),
    createdAtMs: m.createdAtMs,
    finishedAtMs: m.finishedAtMs,
    message: m.message,
  };
}

/** An event's line in the feed. */
export function eventRow(e: ClusterEvent): EventRow {
  return {
    timeMs: e.timeMs,
    warning: e.severity === EventSeverity.EVENT_SEVERITY_WARNING,
    reason: e.reason,
    objectKind: e.objectKind,
    objectName: e.objectName,
    hostId: e.hostId,
    message: e.message,
    revision: e.revision,
  };
}

/** The newest {@link FEED_LENGTH} of `events` (given oldest first), newest first. */
export function feedOf(events: readonly ClusterEvent[]): EventRow[] {
  return events.slice(-FEED_LENGTH).reverse().map(eventRow);
}

/** The placement explanation as the VM page's table shows it. */
export interface PlacementView {
  decidedAtMs: number;
  cause: string;
  preset: string;
  hostsConsidered: number;
  hostsFeasible: number;
  /** Each weigher's score of the chosen host, by weigher name. */
  scores: { weigher: string; score: number }[];
  total: number;
  runnerUpHost: string;
  runnerUpTotal: number;
  /** Most rejections first. */
  rejectedByFilter: { filter: string; hosts: number }[];
  explained: boolean;
}

/** The VM page: its row, spec, status and the placement explanation (null: not recorded). */
export interface VmDetail {
  vm: VmRow;
  generation: number;
  createdAtMs: number;
  statusMessage: string;
  errorCode: string;
  requiredHostLabels: Record<string, string>;
  forbiddenHostLabels: Record<string, string>;
  pinnedHosts: string[];
  /** The base image's name; empty for a blank disk. */
  image: string;
  /** One per NIC, in order: the network, the MAC and the addresses its host reported. */
  nics: { name: string; network: string; mac: string; addresses: string[]; source: string }[];
  /** Data volumes attached (names), in order. */
  volumes: string[];
  placement: PlacementView | null;
  migration: MigrationRow | null;
}

/** A placement record for the VM page; null when the VM has none (placed before records were kept). */
export function placementView(p: PlacementRecord | undefined): PlacementView | null {
  if (!p) return null;
  return {
    decidedAtMs: p.decidedAtMs,
    cause: p.cause,
    preset: p.preset,
    hostsConsidered: p.hostsConsidered,
    hostsFeasible: p.hostsFeasible,
    scores: Object.entries(p.scores)
      .map(([weigher, score]) => ({ weigher, score }))
      .sort((a, b) => naturalCompare(a.weigher, b.weigher)),
    total: p.total,
    runnerUpHost: p.runnerUpHost,
    runnerUpTotal: p.runnerUpTotal,
    rejectedByFilter: Object.entries(p.rejectedByFilter)
      .map(([filter, hosts]) => ({ filter, hosts }))
      .sort((a, b) => b.hosts - a.hosts || naturalCompare(a.filter, b.filter)),
    explained: p.explained,
  };
}

/** The VM page's data. */
export function vmDetail(vm: Vm, migration: Migration | undefined): VmDetail {
  return {
    vm: vmRow(vm),
    generation: vm.generation,
    createdAtMs: vm.createdAtMs,
    statusMessage: vm.status?.message ?? "",
    errorCode: vm.status?.errorCode ?? "",
    requiredHostLabels: { ...(vm.spec?.requiredHostLabels ?? {}) },
    forbiddenHostLabels: { ...(vm.spec?.forbiddenHostLabels ?? {}) },
    pinnedHosts: [...(vm.spec?.pinnedHosts ?? [])],
    image: vm.spec?.image ?? "",
    // The spec's networks, with what the host reported of each NIC (matched by place).
    nics: (vm.spec?.networks ?? []).map((network, i) => {
      const reported = vm.status?.interfaces[i];
      return { name: `eth${i}`, network, mac: reported?.mac ?? "", addresses: [...(reported?.ipAddresses ?? [])], source: reported?.addressSource ?? "" };
    }),
    volumes: [...(vm.spec?.volumes ?? [])],
    placement: placementView(vm.placement),
    migration: migration && migration.vmId === vm.id ? migrationRow(migration) : null,
  };
}

/** A fraction as a percentage (core's one rule): `60%`, `72.5%`. */
export const percentText = formatPercent;

/** A policy's duration, exactly (core's one rule): `45s`, `3m`, `1m30s`, `1h`, `1h5m`. */
export const durationText = formatExactDuration;

/** One decision that changed a scale group's size, with what it was decided on (the group page's history). */
export interface ScaleDecisionRow {
  /** The decision's key in its group: 1, 2, ... */
  seq: number;
  decidedAtMs: number;
  /** ScaledOut, ScaledIn or SizeBounded. */
  reason: string;
  fromSize: number;
  toSize: number;
  /** `2 → 4` */
  sizeText: string;
  /** Members whose CPU counted, and those warming up. */
  warmMembers: number;
  warmingMembers: number;
  /** The warm members' average CPU it saw, in [0, 1]; null when none was warm (nothing measured: a bound change, say). */
  cpu: number | null;
  /** {@link percentText} of `cpu`; `—` when null. */
  cpuText: string;
  /** The reactive rule's size before the limits; 0 when the rule did not decide (SizeBounded). */
  reactiveSize: number;
  /** The learnt pattern's size (0: no prediction) and the CPU cores it foresaw. */
  predictedSize: number;
  predictedCores: number;
  /** `5 (3.2 cores)`; `—` without a prediction. */
  predictedText: string;
  message: string;
  /** The members it added and removed. */
  added: string[];
  removed: string[];
}

/** A scale group as one row of the topology page's Scale groups panel. */
export interface ScaleGroupRow {
  name: string;
  key: string;
  /** Members the record lists: what the group wants to exist. */
  size: number;
  minSize: number;
  maxSize: number;
  /** `1..3` */
  boundsText: string;
  /** The average CPU to hold, in (0, 1], and as {@link percentText}. */
  targetCpu: number;
  targetText: string;
  /** The warm members' average CPU now; null when no warm member reports (nothing measured). */
  cpu: number | null;
  /** {@link percentText} of `cpu`; `—` when null. */
  cpuText: string;
  /** Members whose VM runs; members past their warm-up that report (their CPU counts). */
  running: number;
  warm: number;
  /** Members listed whose VM does not exist yet; VMs of the group no longer listed (being deleted). */
  creating: number;
  removing: number;
  /** The newest decision kept; null before the first. */
  lastDecision: ScaleDecisionRow | null;
  /** Decisions made in all (the record keeps the newest 50). */
  decisionCount: number;
  /** The placement group every member joins; "" for none. */
  placementGroup: string;
  /** Being deleted with its VMs. */
  deleting: boolean;
  /** Why the last create of a member failed, while it is retried ("" when none failed, or on a follower). */
  lastError: string;
}

/** A member of a scale group on its page. */
export interface ScaleMemberRow {
  name: string;
  key: string;
  index: number;
  /** When the decision that added it was made: the start of its warm-up. */
  addedAtMs: number;
  /** When its warm-up ends (its CPU counts from then): addedAtMs + the policy's warm-up. */
  warmupEndsAtMs: number;
  /** Past its warm-up at the view's time. */
  warmedUp: boolean;
  /** A scale-in never removes it. */
  protected: boolean;
  /** Its VM's phase (RUNNING, PENDING...), `NOT CREATED` while the VM does not exist yet. */
  phase: string;
  /** Its VM's host; "" when it has none. */
  hostId: string;
}

/** A scale group's page: its row, policy (defaults applied), template, members and decisions. */
export interface ScaleGroupDetail {
  group: ScaleGroupRow;
  /** The policy as the autoscaler applies it, each figure as people read it; null when the record's policy is refused (the group does not scale). */
  policy: {
    tolerance: string;
    scaleDownWindow: string;
    scaleUpStep: string;
    warmup: string;
    interval: string;
    scaleInOrder: string;
    prediction: string;
  } | null;
  /** The members' size: `1 vCPU, 1 GiB memory, 5 GiB disk`. */
  templateText: string;
  createdAtMs: number;
  /** Oldest first, as the record lists them (a scale-in takes them by the group's order). */
  members: ScaleMemberRow[];
  /** Newest first (the newest 50 the record keeps). */
  decisions: ScaleDecisionRow[];
}

/** A decision's row. */
export function scaleDecisionRow(d: ScaleDecision): ScaleDecisionRow {
  const cpu = d.warmMembers > 0 ? d.cpuUtilization : null;
  return {
    seq: d.seq,
    decidedAtMs: d.decidedAtMs,
    reason: d.reason,
    fromSize: d.fromSize,
    toSize: d.toSize,
    sizeText: `${d.fromSize} → ${d.toSize}`,
    warmMembers: d.warmMembers,
    warmingMembers: d.warmingMembers,
    cpu,
    cpuText: cpu === null ? "—" : percentText(cpu),
    reactiveSize: d.reactiveSize,
    predictedSize: d.predictedSize,
    predictedCores: d.predictedCores,
    predictedText: d.predictedSize > 0 ? `${d.predictedSize} (${Math.round(d.predictedCores * 10) / 10} cores)` : "—",
    message: d.message,
    added: [...d.added],
    removed: [...d.removed],
  };
}

/** A group's row of the panel, from what ListScaleGroups answers of it (its record and live figures). */
export function scaleGroupRow(info: ScaleGroupInfo): ScaleGroupRow {
  const g = info.group;
  const name = g?.name ?? "";
  const target = g?.policy?.targetCpu ?? 0;
  const cpu = info.warm > 0 ? info.cpuUtilization : null;
  const last = g?.decisions[g.decisions.length - 1];
  return {
    name,
    key: naturalKey(name),
    size: g?.members.length ?? 0,
    minSize: g?.minSize ?? 0,
    maxSize: g?.maxSize ?? 0,
    boundsText: `${g?.minSize ?? 0}..${g?.maxSize ?? 0}`,
    targetCpu: target,
    targetText: target > 0 ? percentText(target) : "—",
    cpu,
    cpuText: cpu === null ? "—" : percentText(cpu),
    running: info.running,
    warm: info.warm,
    creating: info.creating,
    removing: info.removing,
    lastDecision: last ? scaleDecisionRow(last) : null,
    decisionCount: g?.decisionCount ?? 0,
    placementGroup: g?.template?.group ?? "",
    deleting: g?.deleting ?? false,
    lastError: info.lastError,
  };
}

/** The policy's figures as people read them. */
function policyView(p: ResolvedScalePolicy | undefined): ScaleGroupDetail["policy"] {
  if (!p) return null;
  return {
    tolerance: `±${percentText(p.tolerance)} of the target`,
    scaleDownWindow: durationText(p.scaleDownWindowMs),
    scaleUpStep: describeScaleUpStep(p),
    warmup: durationText(p.warmupMs),
    interval: durationText(p.intervalMs),
    scaleInOrder: p.scaleInOrder,
    prediction: p.prediction ? "on" : "off",
  };
}

/**
 * A group's page at `nowMs`: `vmOf` finds a member's VM by name (the cache's VM of that name;
 * one of another owner is not the member's, so the member reads as not created).
 */
export function scaleGroupDetail(info: ScaleGroupInfo, vmOf: (name: string) => Vm | undefined, nowMs: number): ScaleGroupDetail {
  const g = info.group;
  const name = g?.name ?? "";
  // A refused policy reads as none: the manager does not scale the group, so no member counts as
  // warming up.
  const resolved = resolveScalePolicyIfValid(g?.policy);
  const warmupMs = resolved?.warmupMs ?? 0;
  const protectedSet = new Set(g?.protectedMembers ?? []);
  const members = (g?.members ?? []).map((m): ScaleMemberRow => {
    const vm = vmOf(m.name);
    const own = vm !== undefined && isMemberOf(vm, name);
    const warmupEndsAtMs = m.addedAtMs + warmupMs;
    return {
      name: m.name,
      key: naturalKey(m.name),
      index: m.index,
      addedAtMs: m.addedAtMs,
      warmupEndsAtMs,
      warmedUp: nowMs >= warmupEndsAtMs,
      protected: protectedSet.has(m.name),
      phase: own ? enumName(VmPhase, vm.status?.phase ?? VmPhase.VM_PHASE_UNSPECIFIED, "VM_PHASE_") : "NOT CREATED",
      hostId: own ? vm.hostId : "",
    };
  });
  return {
    group: scaleGroupRow(info),
    policy: policyView(resolved),
    templateText: g?.template?.resources ? formatResources(g.template.resources) : "—",
    createdAtMs: g?.createdAtMs ?? 0,
    members,
    decisions: (g?.decisions ?? []).map(scaleDecisionRow).reverse(),
  };
}

/** Everything the page shows, sorted (hosts, VMs and migrations by natural key; events newest first). */
export function snapshotOf(input: {
  nowMs: number;
  leader: LeaderStatus;
  hosts: readonly HostInput[];
  vms: readonly Vm[];
  migrations: readonly Migration[];
  /** Each group with its live figures (scale-group-manager's scaleGroupInfo, as ListScaleGroups answers). */
  scaleGroups: readonly ScaleGroupInfo[];
  events: readonly ClusterEvent[];
}): DashboardSnapshot {
  return {
    generatedAtMs: input.nowMs,
    leader: input.leader,
    hosts: byKey(input.hosts.map(hostRow)),
    vms: byKey(input.vms.map(vmRow)),
    migrations: byKey(input.migrations.map(migrationRow)),
    scaleGroups: byKey(input.scaleGroups.map(scaleGroupRow)),
    events: feedOf(input.events),
  };
}

/**
 * The stream's incremental message: rows to put (replace by id/name) and ids to delete, and the
 * new events (newest first). A client applies it to its copy of the snapshot.
 */
export interface DashboardChanges {
  hosts: HostRow[];
  hostsDeleted: string[];
  vms: VmRow[];
  vmsDeleted: string[];
  migrations: MigrationRow[];
  migrationsDeleted: string[];
  /** Scale group rows to put (by name), and names of groups gone. */
  scaleGroups: ScaleGroupRow[];
  scaleGroupsDeleted: string[];
  events: EventRow[];
  /** Set when the leadership this controller reports changed. */
  leader?: LeaderStatus;
}
