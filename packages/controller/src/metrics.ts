/**
 * The controller's Prometheus metrics (served at the admin port's /metrics). To add a metric, touch
 * this file: events are counted through the {@link Metrics} interface, injected where they happen
 * (the Placer, the FencedWriter, the agent service; the scheduler stays pure), and state is read
 * from the controller's cache at scrape time (prom-client `collect()` callbacks), so no gauge keeps
 * a count of its own that could drift from the cache.
 *
 * Names follow kube-scheduler's and Nomad's (`berth_scheduler_schedule_attempts_total`), in
 * Prometheus base units (seconds, bytes). Per-host resources are one metric per unit —
 * `berth_host_allocatable_vcpus`, `…_memory_bytes`, `…_disk_bytes` — not one metric with a
 * `resource` label, because a metric has one unit (summing vCPUs with bytes means nothing).
 * Enum label values are the API's names without their prefix (`phase="RUNNING"`, `state="READY"`).
 */
import { HostState, MigrationPhase, VmPhase, type Host, type Migration, type Resources } from "@berth/api";
import { normalHostState, type AdminRoute } from "@berth/core";
import { collectDefaultMetrics, Counter, exponentialBuckets, Gauge, Histogram, Registry } from "prom-client";
import type { ClusterState, StateChange } from "./cluster-state.js";
import { hostView, type LiveHost } from "./host-view.js";
import { Keys } from "./keys.js";
import type { Placer } from "./placement.js";

/** How one scheduling attempt (one create call, a gang counting once) ended. */
export type ScheduleResult =
  /** Every VM was placed and committed. */
  | "scheduled"
  /** No host could take it (RESOURCE_EXHAUSTED). */
  | "unschedulable"
  /** Anything else after admission: a store failure, lost races past the retries, the leader lost. */
  | "error";

/** What the controller reports as it happens. Every method is cheap and never throws. */
export interface Metrics {
  /** A create's placement ended after `seconds`. */
  scheduleAttempt(result: ScheduleResult, seconds: number): void;
  /** An agent answered a command in flight (a dropped stale result is not counted). `kind` is the command's action: create, start, stop, … */
  agentCommand(kind: string, ok: boolean): void;
  /** A fenced store write took `seconds`; `conflicted`: one of its own compares failed (the caller re-reads and retries or gives up). */
  storeWrite(op: string, seconds: number, conflicted: boolean): void;
}

/** Metrics that go nowhere: the default where none are injected (unit tests). */
export const NO_METRICS: Metrics = {
  scheduleAttempt: () => {},
  agentCommand: () => {},
  storeWrite: () => {},
};

/** What the scrape-time gauges read. */
export interface MetricsSource {
  state: ClusterState;
  placer: Placer;
  /** The live figures of a host's connected agent (ListHosts' own), undefined without one. */
  liveHost(hostId: string): LiveHost | undefined;
  /** Agent streams this controller holds now. */
  agentStreams(): number;
  isLeader(): boolean;
}

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

/** `HOST_STATE_READY` → `READY`: an enum value's name without its prefix. */
function enumLabel(names: Record<string, string | number>, value: number, prefix: string): string {
  const name = names[value];
  return typeof name === "string" ? name.slice(prefix.length) : String(value);
}

/** The label values of an enum: every named value but UNSPECIFIED (and the names `skip` gives). */
function enumLabels(names: Record<string, string | number>, prefix: string, skip: readonly number[] = []): string[] {
  return Object.values(names)
    .filter((v): v is number => typeof v === "number" && v > 0 && !skip.includes(v))
    .map((v) => enumLabel(names, v, prefix));
}

const HOST_STATES = enumLabels(HostState, "HOST_STATE_", [HostState.HOST_STATE_DISCONNECTED]);
const VM_PHASES = enumLabels(VmPhase, "VM_PHASE_");
const ACTIVE_MIGRATION_PHASES = enumLabels(MigrationPhase, "MIGRATION_PHASE_", [MigrationPhase.MIGRATION_PHASE_COMPLETED, MigrationPhase.MIGRATION_PHASE_FAILED]);

const isFinished = (m: Migration | undefined): boolean =>
  m !== undefined && (m.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED || m.phase === MigrationPhase.MIGRATION_PHASE_FAILED);
const isFenced = (h: Host | undefined): boolean => h !== undefined && h.state === HostState.HOST_STATE_FENCED;

/**
 * One controller's metrics, in a Registry of its own (never prom-client's global one: tests run
 * several controllers in one process), with Node's standard `process_*` / `nodejs_*` metrics.
 */
export class ControllerMetrics implements Metrics {
  readonly registry = new Registry();
  #source: MetricsSource | undefined;
  #unsubscribe: (() => void) | undefined;

  readonly #attempts = new Counter({
    name: "berth_scheduler_schedule_attempts_total",
    help: "Scheduling attempts of create calls (a gang counts once), by result: scheduled (placed and committed), unschedulable (no host fits: RESOURCE_EXHAUSTED), error (any other failure after admission). Requests refused before placement (invalid, already exists, busy) are not attempts.",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  readonly #attemptSeconds = new Histogram({
    name: "berth_scheduler_scheduling_attempt_duration_seconds",
    help: "How long a scheduling attempt took, from admission to the committed write (or the refusal), by result.",
    labelNames: ["result"] as const,
    buckets: exponentialBuckets(0.001, 2, 15),
    registers: [this.registry],
  });
  readonly #agentCommands = new Counter({
    name: "berth_agent_commands_total",
    help: "Command results received from agents for the commands in flight, by command kind (create, start, stop, delete, prepare_migration, migrate_out, finish_migration, abort_migration) and result (ok, error).",
    labelNames: ["kind", "result"] as const,
    registers: [this.registry],
  });
  readonly #storeWriteSeconds = new Histogram({
    name: "berth_store_write_duration_seconds",
    help: "How long the leader's fenced store transactions took, by op: the kind of record the transaction writes first (vm, host, group, migration, config, cluster, scalegroup, other).",
    labelNames: ["op"] as const,
    buckets: exponentialBuckets(0.001, 2, 15),
    registers: [this.registry],
  });
  readonly #storeConflicts = new Counter({
    name: "berth_store_write_conflicts_total",
    help: "Fenced store transactions whose own compares failed (the record changed since it was read), so nothing was written.",
    registers: [this.registry],
  });
  readonly #migrations = new Counter({
    name: "berth_migrations_total",
    help: "Live migrations this controller saw end while it led, by result (completed, failed).",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  readonly #fences = new Counter({
    name: "berth_host_fences_total",
    help: "Hosts this controller saw become FENCED while it led (silent past their watchdog, or confirmed down by an operator).",
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    // prom-client also exports these three gauges named *_total, which Prometheus reserves for
    // counters (promtool check metrics objects); the per-type gauges without the suffix stay.
    for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) this.registry.removeSingleMetric(name);
    for (const result of ["scheduled", "unschedulable", "error"] as const) {
      // Every result shows from the first scrape (0), so rate() works before the first failure.
      this.#attempts.inc({ result }, 0);
    }
    for (const result of ["completed", "failed"]) this.#migrations.inc({ result }, 0);
    this.#defineScrapeGauges();
  }

  scheduleAttempt(result: ScheduleResult, seconds: number): void {
    this.#attempts.inc({ result });
    this.#attemptSeconds.observe({ result }, seconds);
  }

  agentCommand(kind: string, ok: boolean): void {
    // The oneof's case ("prepareMigration") as the proto names the field ("prepare_migration").
    this.#agentCommands.inc({ kind: kind.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`) || "none", result: ok ? "ok" : "error" });
  }

  storeWrite(op: string, seconds: number, conflicted: boolean): void {
    this.#storeWriteSeconds.observe({ op }, seconds);
    if (conflicted) this.#storeConflicts.inc();
  }

  /**
   * Reads the scrape-time gauges from `source` from now on, and counts the migrations that end and
   * the hosts that are fenced, as the cache sees them, while this controller leads.
   */
  bind(source: MetricsSource): void {
    this.#unsubscribe?.();
    this.#source = source;
    this.#unsubscribe = source.state.subscribe((c: StateChange) => {
      if (!source.isLeader() || c.type !== "put") return;
      if (c.kind === "migration" && isFinished(c.migration) && !(isFinished(c.previous) && c.previous?.id === c.migration.id)) {
        this.#migrations.inc({ result: c.migration.phase === MigrationPhase.MIGRATION_PHASE_COMPLETED ? "completed" : "failed" });
      } else if (c.kind === "host" && isFenced(c.host) && !isFenced(c.previous)) {
        this.#fences.inc();
      }
    });
  }

  /** Stops watching the cache. */
  close(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
  }

  /** The Prometheus text exposition of every metric. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  #defineScrapeGauges(): void {
    const registers = [this.registry];
    const src = (): MetricsSource | undefined => this.#source;
    // Filled by one pass over the hosts (fillResources, below) for all nine.
    const hostGauge = (name: string, help: string) => new Gauge({ name, help, labelNames: ["host"] as const, registers, collect: () => fillResources() });
    const allocatableGauges = {
      vcpus: hostGauge("berth_host_allocatable_vcpus", "vCPUs the scheduler may place on the host: allocation ratio × physical − reserved (the host's overrides over the cluster's)."),
      memory: hostGauge("berth_host_allocatable_memory_bytes", "Memory the scheduler may place on the host, in bytes: allocation ratio × physical − reserved."),
      disk: hostGauge("berth_host_allocatable_disk_bytes", "Disk the scheduler may place on the host, in bytes: allocation ratio × physical − reserved."),
    };
    const allocatedGauges = {
      vcpus: hostGauge("berth_host_allocated_vcpus", "vCPUs the VMs placed on the host ask for (migrations arriving included), as ListHosts' allocated."),
      memory: hostGauge("berth_host_allocated_memory_bytes", "Memory the VMs placed on the host ask for, in bytes (migrations arriving included)."),
      disk: hostGauge("berth_host_allocated_disk_bytes", "Disk the VMs placed on the host ask for, in bytes (migrations arriving included)."),
    };
    const usedGauges = {
      vcpus: hostGauge("berth_host_used_vcpus", "vCPUs in use on the host as its agent last reported (ListHosts' usage); absent for a host that never reported."),
      memory: hostGauge("berth_host_used_memory_bytes", "Memory in use on the host as its agent last reported, in bytes."),
      disk: hostGauge("berth_host_used_disk_bytes", "Disk in use on the host as its agent last reported, in bytes."),
    };
    const setResources = (g: typeof allocatableGauges, host: string, r: Resources): void => {
      g.vcpus.set({ host }, r.vcpus);
      g.memory.set({ host }, r.memoryMib * MIB);
      g.disk.set({ host }, r.diskGib * GIB);
    };
    const resetAll = (): void => {
      for (const g of [allocatableGauges, allocatedGauges, usedGauges]) for (const m of Object.values(g)) m.reset();
    };
    // One pass over the hosts fills the nine resource gauges. A scrape collects every metric in
    // one synchronous turn (prom-client calls each collect() before its first await): the first
    // gauge collected does the pass, the rest of that turn find it done. Were that ever not so,
    // the cost is a second pass, never a stale value.
    let filled = false;
    const fillResources = (): void => {
      if (filled) return;
      filled = true;
      queueMicrotask(() => (filled = false));
      resetAll();
      const s = src();
      if (!s) return;
      for (const host of s.state.allHosts()) {
        // ListHosts' own view of the host (no drain figures: they are not needed here).
        const view = hostView({ state: s.state, liveHost: s.liveHost, leading: () => undefined, placer: s.placer }, host);
        if (view.allocatable) setResources(allocatableGauges, host.id, view.allocatable);
        if (view.allocated) setResources(allocatedGauges, host.id, view.allocated);
        if (view.usage) setResources(usedGauges, host.id, view.usage);
      }
    };

    new Gauge({
      name: "berth_host_state",
      help: "1 for the host's current state (READY, SUSPECT, DOWN, FENCED), 0 for the others.",
      labelNames: ["host", "state"] as const,
      registers,
      collect() {
        this.reset();
        for (const host of src()?.state.allHosts() ?? []) {
          const current = enumLabel(HostState, normalHostState(host.state), "HOST_STATE_");
          for (const state of HOST_STATES) this.set({ host: host.id, state }, state === current ? 1 : 0);
          if (!HOST_STATES.includes(current)) this.set({ host: host.id, state: current }, 1);
        }
      },
    });
    new Gauge({
      name: "berth_host_cordoned",
      help: "1 while the host is cordoned (no new VMs), 0 otherwise.",
      labelNames: ["host"] as const,
      registers,
      collect() {
        this.reset();
        for (const host of src()?.state.allHosts() ?? []) this.set({ host: host.id }, host.cordoned ? 1 : 0);
      },
    });
    new Gauge({
      name: "berth_vms",
      help: "VM records in the cluster by their observed phase (PENDING: placed, not yet reported by its host).",
      labelNames: ["phase"] as const,
      registers,
      collect() {
        this.reset();
        const counts = new Map<string, number>(VM_PHASES.map((p) => [p, 0]));
        for (const vm of src()?.state.allVms() ?? []) {
          const phase = enumLabel(VmPhase, vm.status?.phase ?? VmPhase.VM_PHASE_UNSPECIFIED, "VM_PHASE_");
          counts.set(phase, (counts.get(phase) ?? 0) + 1);
        }
        for (const [phase, n] of counts) this.set({ phase }, n);
      },
    });
    new Gauge({
      name: "berth_scheduler_pending_vms",
      help: "VMs in create calls admitted and being placed and committed right now (not yet written, not yet refused). VMs written and waiting for their host to start them are berth_vms{phase=\"PENDING\"}.",
      registers,
      collect() {
        this.set(src()?.placer.pendingVms ?? 0);
      },
    });
    new Gauge({
      name: "berth_migrations_in_flight",
      help: "Live migrations not yet COMPLETED or FAILED, by phase (PENDING waits for a slot).",
      labelNames: ["phase"] as const,
      registers,
      collect() {
        this.reset();
        const counts = new Map<string, number>(ACTIVE_MIGRATION_PHASES.map((p) => [p, 0]));
        for (const m of src()?.state.allMigrations() ?? []) {
          if (isFinished(m)) continue;
          const phase = enumLabel(MigrationPhase, m.phase, "MIGRATION_PHASE_");
          counts.set(phase, (counts.get(phase) ?? 0) + 1);
        }
        for (const [phase, n] of counts) this.set({ phase }, n);
      },
    });
    new Gauge({
      name: "berth_scalegroup_members",
      help: "Members a scale group's record lists now (its decided size), and its bounds, by group and what (size, min, max).",
      labelNames: ["group", "what"] as const,
      registers,
      collect() {
        this.reset();
        for (const g of src()?.state.allScaleGroups() ?? []) {
          this.set({ group: g.name, what: "size" }, g.members.length);
          this.set({ group: g.name, what: "min" }, g.minSize);
          this.set({ group: g.name, what: "max" }, g.maxSize);
        }
      },
    });
    new Gauge({
      name: "berth_scalegroup_decisions",
      help: "Decisions a scale group's autoscaler (and set) made that changed its size, since the group was made (its decision count).",
      labelNames: ["group"] as const,
      registers,
      collect() {
        this.reset();
        for (const g of src()?.state.allScaleGroups() ?? []) this.set({ group: g.name }, g.decisionCount);
      },
    });
    new Gauge({
      name: "berth_agent_streams",
      help: "Agent streams (connected hosts' sessions) this controller holds now; 0 on a follower, which sends agents to the leader.",
      registers,
      collect() {
        this.set(src()?.agentStreams() ?? 0);
      },
    });
    new Gauge({
      name: "berth_leader",
      help: "1 while this controller is the leader, 0 otherwise.",
      registers,
      collect() {
        this.set(src()?.isLeader() ? 1 : 0);
      },
    });
  }
}

/** GET /metrics: the registry's text exposition (Prometheus' format 0.0.4). */
export function metricsRoute(registry: Registry): AdminRoute {
  return {
    method: "GET",
    path: "/metrics",
    handle: async (_req, res) => {
      const body = await registry.metrics();
      res.writeHead(200, { "Content-Type": registry.contentType, "Cache-Control": "no-store" });
      res.end(body);
    },
  };
}

/** The kind of record a transaction writes first, from its key (`/berth/v1/vms/web-1` → `vm`); `other` for none. */
export function storeOpOf(keys: readonly string[]): string {
  const key = keys[0];
  if (key === undefined || !key.startsWith(Keys.root)) return "other";
  const kind = key.slice(Keys.root.length).split("/")[0] ?? "";
  const known: Record<string, string> = { vms: "vm", hosts: "host", groups: "group", migrations: "migration", config: "config", cluster: "cluster", leader: "leader", scalegroups: "scalegroup" };
  return known[kind] ?? "other";
}
