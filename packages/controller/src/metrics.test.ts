/**
 * The controller's metrics over a real ClusterState (MemoryStore): the scrape-time gauges read the
 * cache as it is (hosts, states, cordons, VM phases, allocation), the counters that follow the
 * cache's transitions count once and only while leading, and /healthz says 503 with a reason when
 * the store does not answer.
 */
import { afterEach, describe, expect, it } from "vitest";
import { DesiredState, Host, HostState, Migration, MigrationPhase, ScaleGroup, VmPhase, VmStatus, type Vm } from "@berth/api";
import { MemoryStore, type ClusterStore } from "@berth/store";
import { checkHealth } from "./admin-routes.js";
import { ClusterState } from "./cluster-state.js";
import { encodeHost, encodeMigration, encodeScaleGroup, encodeVm, Keys } from "./keys.js";
import { ControllerMetrics, storeOpOf } from "./metrics.js";
import { Placer } from "./placement.js";
import { initialMembers } from "./scale-groups.js";

const size = { vcpus: 2, memoryMib: 2048, diskGib: 10 };
const host = (id: string, over: Partial<Host> = {}): Host =>
  Host.fromPartial({ id, state: HostState.HOST_STATE_READY, capacity: { vcpus: 8, memoryMib: 16384, diskGib: 100 }, ...over });
const vm = (name: string, hostId: string, phase: VmPhase): Vm => ({
  id: `id-${name}`,
  spec: { name, resources: size, labels: {}, group: "", requiredHostLabels: {}, forbiddenHostLabels: {}, pinnedHosts: [], image: "", networks: [], volumes: [], onHostFailure: 0 },
  desiredState: DesiredState.DESIRED_STATE_RUNNING,
  hostId,
  generation: 1,
  status: VmStatus.fromPartial({ phase }),
  createdAtMs: 0,
  forceStop: false,
  requestId: "",
});

/** The value of `name{labels}` in a scrape, undefined when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v) && Object.keys(got).length === Object.keys(labels).length) return Number(m[3]);
  }
  return undefined;
}

describe("ControllerMetrics", () => {
  const stops: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const s of stops.splice(0)) await s();
  });

  const setup = async () => {
    const store = new MemoryStore();
    const state = new ClusterState(store);
    await state.start();
    const metrics = new ControllerMetrics();
    let leading = true;
    const placer = new Placer(store, state, () => true, Date.now);
    metrics.bind({ state, placer, liveHost: () => undefined, agentStreams: () => 3, isLeader: () => leading });
    stops.push(() => metrics.close(), () => state.stop());
    const put = async (key: string, value: Uint8Array): Promise<void> => {
      const { revision } = await store.txn({ compare: [], ops: [{ type: "put", key, value }] });
      await Promise.all([state.vms.waitForRevision(revision), state.hosts.waitForRevision(revision), state.migrations.waitForRevision(revision), state.scaleGroups.waitForRevision(revision)]);
    };
    const del = async (key: string): Promise<void> => {
      const { revision } = await store.txn({ compare: [], ops: [{ type: "delete", key }] });
      await state.hosts.waitForRevision(revision);
    };
    return { state, metrics, put, del, setLeading: (v: boolean) => (leading = v) };
  };

  it("reads hosts, their state, cordon and allocation, and VMs by phase from the cache at each scrape; a host gone is gone", async () => {
    const { metrics, put, del } = await setup();
    await put(Keys.host("h-1"), encodeHost(host("h-1")));
    await put(Keys.host("h-2"), encodeHost(host("h-2", { state: HostState.HOST_STATE_DISCONNECTED, cordoned: true, usage: { vcpus: 1, memoryMib: 512, diskGib: 3 } })));
    await put(Keys.vm("a"), encodeVm(vm("a", "h-1", VmPhase.VM_PHASE_RUNNING)));
    await put(Keys.vm("b"), encodeVm(vm("b", "h-1", VmPhase.VM_PHASE_PENDING)));
    let text = await metrics.scrape();
    expect(sample(text, "berth_host_state", { host: "h-1", state: "READY" })).toBe(1);
    expect(sample(text, "berth_host_state", { host: "h-1", state: "SUSPECT" })).toBe(0);
    // DISCONNECTED (older versions' word) reads as SUSPECT, and is no label of its own.
    expect(sample(text, "berth_host_state", { host: "h-2", state: "SUSPECT" })).toBe(1);
    expect(sample(text, "berth_host_state", { host: "h-2", state: "DISCONNECTED" })).toBeUndefined();
    expect(sample(text, "berth_host_cordoned", { host: "h-1" })).toBe(0);
    expect(sample(text, "berth_host_cordoned", { host: "h-2" })).toBe(1);
    expect(sample(text, "berth_host_allocated_vcpus", { host: "h-1" })).toBe(4);
    expect(sample(text, "berth_host_allocated_memory_bytes", { host: "h-1" })).toBe(2 * 2048 * 1024 * 1024);
    expect(sample(text, "berth_host_allocated_disk_bytes", { host: "h-1" })).toBe(20 * 1024 ** 3);
    // Without a live stream the record's last usage stands (as ListHosts shows it); none, no sample.
    expect(sample(text, "berth_host_used_vcpus", { host: "h-2" })).toBe(1);
    expect(sample(text, "berth_host_used_vcpus", { host: "h-1" })).toBeUndefined();
    expect(sample(text, "berth_host_allocatable_vcpus", { host: "h-1" })).toBeGreaterThan(0);
    expect(sample(text, "berth_vms", { phase: "RUNNING" })).toBe(1);
    expect(sample(text, "berth_vms", { phase: "PENDING" })).toBe(1);
    expect(sample(text, "berth_vms", { phase: "FAILED" })).toBe(0);
    expect(sample(text, "berth_agent_streams")).toBe(3);
    expect(sample(text, "berth_leader")).toBe(1);

    // A scale group's size and bounds, and its decisions.
    await put(Keys.scaleGroup("web"), encodeScaleGroup(ScaleGroup.fromPartial({ name: "web", minSize: 2, maxSize: 6, members: initialMembers("web", 3, 0), decisionCount: 4 })));
    text = await metrics.scrape();
    expect(sample(text, "berth_scalegroup_members", { group: "web", what: "size" })).toBe(3);
    expect(sample(text, "berth_scalegroup_members", { group: "web", what: "min" })).toBe(2);
    expect(sample(text, "berth_scalegroup_members", { group: "web", what: "max" })).toBe(6);
    expect(sample(text, "berth_scalegroup_decisions", { group: "web" })).toBe(4);
    expect(storeOpOf([Keys.scaleGroup("web")])).toBe("scalegroup");

    await del(Keys.host("h-2"));
    text = await metrics.scrape();
    expect(sample(text, "berth_host_state", { host: "h-2", state: "SUSPECT" })).toBeUndefined();
    expect(sample(text, "berth_host_cordoned", { host: "h-2" })).toBeUndefined();
    expect(sample(text, "berth_host_allocatable_vcpus", { host: "h-2" })).toBeUndefined();
  });

  it("counts a fence and a finished migration once each, by result, and only while leading", async () => {
    const { metrics, put, setLeading } = await setup();
    await put(Keys.host("h-1"), encodeHost(host("h-1")));
    await put(Keys.host("h-1"), encodeHost(host("h-1", { state: HostState.HOST_STATE_FENCED })));
    // Rewritten while still FENCED (a field changes): not a second fence.
    await put(Keys.host("h-1"), encodeHost(host("h-1", { state: HostState.HOST_STATE_FENCED, cordoned: true })));
    const m = (phase: MigrationPhase, id = "m-1") => Migration.fromPartial({ id, vmId: "id-a", vmName: "a", sourceHost: "h-1", targetHost: "h-2", phase });
    await put(Keys.migration("a"), encodeMigration(m(MigrationPhase.MIGRATION_PHASE_MIGRATING)));
    let text = await metrics.scrape();
    expect(sample(text, "berth_migrations_in_flight", { phase: "MIGRATING" })).toBe(1);
    await put(Keys.migration("a"), encodeMigration(m(MigrationPhase.MIGRATION_PHASE_COMPLETED)));
    await put(Keys.migration("a"), encodeMigration(m(MigrationPhase.MIGRATION_PHASE_FAILED, "m-2")));
    text = await metrics.scrape();
    expect(sample(text, "berth_host_fences_total")).toBe(1);
    expect(sample(text, "berth_migrations_total", { result: "completed" })).toBe(1);
    expect(sample(text, "berth_migrations_total", { result: "failed" })).toBe(1);
    expect(sample(text, "berth_migrations_in_flight", { phase: "MIGRATING" })).toBe(0);
    // A follower sees the same transitions in its cache but does not count them (the leader does).
    setLeading(false);
    await put(Keys.host("h-3"), encodeHost(host("h-3", { state: HostState.HOST_STATE_FENCED })));
    text = await metrics.scrape();
    expect(sample(text, "berth_host_fences_total")).toBe(1);
    expect(sample(text, "berth_leader")).toBe(0);
  });

  it("events: attempts by result with their durations, agent command kinds in the proto's spelling, store writes by op", async () => {
    const { metrics } = await setup();
    metrics.scheduleAttempt("scheduled", 0.01);
    metrics.scheduleAttempt("unschedulable", 0.002);
    metrics.agentCommand("prepareMigration", true);
    metrics.agentCommand("create", false);
    metrics.storeWrite(storeOpOf([Keys.vm("a"), Keys.group("g")]), 0.003, false);
    metrics.storeWrite(storeOpOf([Keys.host("h-1")]), 0.003, true);
    const text = await metrics.scrape();
    expect(sample(text, "berth_scheduler_schedule_attempts_total", { result: "scheduled" })).toBe(1);
    expect(sample(text, "berth_scheduler_schedule_attempts_total", { result: "unschedulable" })).toBe(1);
    expect(sample(text, "berth_scheduler_schedule_attempts_total", { result: "error" })).toBe(0);
    expect(sample(text, "berth_scheduler_scheduling_attempt_duration_seconds_count", { result: "scheduled" })).toBe(1);
    expect(sample(text, "berth_agent_commands_total", { kind: "prepare_migration", result: "ok" })).toBe(1);
    expect(sample(text, "berth_agent_commands_total", { kind: "create", result: "error" })).toBe(1);
    expect(sample(text, "berth_store_write_duration_seconds_count", { op: "vm" })).toBe(1);
    expect(sample(text, "berth_store_write_duration_seconds_count", { op: "host" })).toBe(1);
    expect(sample(text, "berth_store_write_conflicts_total")).toBe(1);
    expect(storeOpOf([])).toBe("other");
    expect(storeOpOf(["/elsewhere/x"])).toBe("other");
    expect(storeOpOf([Keys.migration("a")])).toBe("migration");
  });

  it("two controllers in one process keep separate registries", async () => {
    const a = await setup();
    const b = await setup();
    a.metrics.scheduleAttempt("scheduled", 0.01);
    expect(sample(await a.metrics.scrape(), "berth_scheduler_schedule_attempts_total", { result: "scheduled" })).toBe(1);
    expect(sample(await b.metrics.scrape(), "berth_scheduler_schedule_attempts_total", { result: "scheduled" })).toBe(0);
  });
});

describe("checkHealth", () => {
  it("ok with the leader flag while the store answers; unavailable with a reason when it fails or hangs", async () => {
    const store = new MemoryStore();
    const state = new ClusterState(store);
    await state.start();
    try {
      expect(await checkHealth({ store, state, isLeader: () => false })).toEqual({ status: "ok", leader: false });
      expect(await checkHealth({ store, state, isLeader: () => true })).toEqual({ status: "ok", leader: true });
      const failing = { ...store, get: () => Promise.reject(new Error("connection refused")) } as unknown as ClusterStore;
      expect(await checkHealth({ store: failing, state, isLeader: () => true })).toEqual({ status: "unavailable", leader: true, reason: "the store is unreachable: connection refused" });
      const hanging = { ...store, get: () => new Promise(() => {}) } as unknown as ClusterStore;
      expect(await checkHealth({ store: hanging, state, isLeader: () => false })).toEqual({ status: "unavailable", leader: false, reason: "the store is unreachable: no answer within 2000 ms" });
    } finally {
      await state.stop();
    }
    // A cache that has not listed yet is not live, whatever the store says.
    const fresh = new ClusterState(store);
    const health = await checkHealth({ store, state: fresh, isLeader: () => false });
    expect(health.status).toBe("unavailable");
    expect((health as { reason: string }).reason).toMatch(/^the cache has not listed vms, hosts, groups, config, migrations/);
  });
});
