/**
 * The agent's Prometheus metrics and its admin routes (/healthz, /metrics on `--admin-listen`). To
 * add a metric, touch this file: events are counted through {@link AgentMetrics}, injected into
 * the Agent where they happen; the hypervisor's domains are read at scrape time.
 */
import { DomainState } from "@berth/api";
import type { AdminRoute } from "@berth/core";
import type { HypervisorDriver } from "@berth/hypervisor";
import { collectDefaultMetrics, Counter, exponentialBuckets, Gauge, Histogram, Registry } from "prom-client";

/** What the agent reports as it happens. Every method is cheap and never throws. */
export interface AgentMetrics {
  /** A command ran to its result in `seconds`. `kind` is its action (create, start, …). */
  commandExecuted(kind: string, ok: boolean, seconds: number): void;
  /** A Report went out on the stream. */
  reportSent(): void;
  /** The agent is about to connect again after a stream ended (or could not be opened). */
  reconnect(): void;
  /** A leader welcomed the agent (true), or that stream ended (false). */
  connected(isConnected: boolean): void;
}

/** Metrics that go nowhere: the default where none are injected. */
export const NO_AGENT_METRICS: AgentMetrics = {
  commandExecuted: () => {},
  reportSent: () => {},
  reconnect: () => {},
  connected: () => {},
};

/** How long a scrape or a health check waits for the hypervisor. */
export const HYPERVISOR_PROBE_TIMEOUT_MS = 2_000;

/** `p`, or a rejection after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** The oneof's case ("prepareMigration") as the proto names the field ("prepare_migration"). */
const snake = (kind: string): string => kind.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`) || "none";

const DOMAIN_STATES = Object.values(DomainState).filter((v): v is number => typeof v === "number" && v > 0);
const domainStateLabel = (s: number): string => (DomainState[s] ?? String(s)).replace(/^DOMAIN_STATE_/, "");

/**
 * One agent's metrics, in a Registry of its own (berth-sim runs many agents in one process), with
 * Node's standard `process_*` / `nodejs_*` metrics. All Berth names are `berth_agent_*`.
 */
export class AgentPrometheusMetrics implements AgentMetrics {
  readonly registry = new Registry();

  readonly #executed = new Counter({
    name: "berth_agent_commands_executed_total",
    help: "Commands this agent ran to a result, by kind (create, start, stop, delete, prepare_migration, migrate_out, finish_migration, abort_migration) and result (ok, error).",
    labelNames: ["kind", "result"] as const,
    registers: [this.registry],
  });
  readonly #duration = new Histogram({
    name: "berth_agent_command_duration_seconds",
    help: "How long commands took on this host, from receipt (after any wait for a free slot) to the result, by kind and result.",
    labelNames: ["kind", "result"] as const,
    buckets: exponentialBuckets(0.005, 2, 14),
    registers: [this.registry],
  });
  readonly #reports = new Counter({
    name: "berth_agent_reports_sent_total",
    help: "Reports (usage, inventory, hypervisor health) sent to the controller.",
    registers: [this.registry],
  });
  readonly #reconnects = new Counter({
    name: "berth_agent_reconnects_total",
    help: "Times the agent connected again after its stream ended or could not be opened (NOT_LEADER redirects included).",
    registers: [this.registry],
  });
  readonly #connected = new Gauge({
    name: "berth_agent_connected",
    help: "1 while a leader has welcomed this agent's stream, 0 otherwise.",
    registers: [this.registry],
  });

  /** `driver`: read at scrape time for berth_agent_domains. */
  constructor(driver: Pick<HypervisorDriver, "list">) {
    collectDefaultMetrics({ register: this.registry });
    // prom-client also exports these three gauges named *_total, which Prometheus reserves for
    // counters (promtool check metrics objects); the per-type gauges without the suffix stay.
    for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) this.registry.removeSingleMetric(name);
    this.#connected.set(0);
    new Gauge({
      name: "berth_agent_domains",
      help: "Domains on this host's hypervisor by state (SHUTOFF, RUNNING, PAUSED, CRASHED), read at scrape time; absent while the hypervisor does not answer.",
      labelNames: ["state"] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        let domains;
        try {
          domains = await within(driver.list(), HYPERVISOR_PROBE_TIMEOUT_MS, "the hypervisor");
        } catch {
          return;
        }
        const counts = new Map<string, number>(DOMAIN_STATES.map((s) => [domainStateLabel(s), 0]));
        for (const d of domains) counts.set(domainStateLabel(d.state), (counts.get(domainStateLabel(d.state)) ?? 0) + 1);
        for (const [state, n] of counts) this.set({ state }, n);
      },
    });
  }

  commandExecuted(kind: string, ok: boolean, seconds: number): void {
    const labels = { kind: snake(kind), result: ok ? "ok" : "error" };
    this.#executed.inc(labels);
    this.#duration.observe(labels, seconds);
  }

  reportSent(): void {
    this.#reports.inc();
  }

  reconnect(): void {
    this.#reconnects.inc();
  }

  connected(isConnected: boolean): void {
    this.#connected.set(isConnected ? 1 : 0);
  }
}

/** What the agent's /healthz reads. */
export interface AgentHealthDeps {
  /** The controller whose Welcome the agent obeys now (a leader), undefined when not connected. */
  connectedController(): string | undefined;
  driver: Pick<HypervisorDriver, "health">;
}

/** /healthz's answer. */
export type AgentHealth = { status: "ok"; controller: string } | { status: "unavailable"; reason: string; connected: boolean };

/** Healthy: connected to a leader and the hypervisor answers (within {@link HYPERVISOR_PROBE_TIMEOUT_MS}). */
export async function checkAgentHealth(deps: AgentHealthDeps): Promise<AgentHealth> {
  const controller = deps.connectedController();
  let hypervisor: { available: boolean; message: string };
  try {
    hypervisor = await within(deps.driver.health(), HYPERVISOR_PROBE_TIMEOUT_MS, "the hypervisor");
  } catch (e) {
    hypervisor = { available: false, message: (e as Error).message };
  }
  if (!hypervisor.available) return { status: "unavailable", reason: `the hypervisor is unavailable: ${hypervisor.message}`, connected: controller !== undefined };
  if (controller === undefined) return { status: "unavailable", reason: "not connected to a leader (connecting, or no controller leads)", connected: false };
  return { status: "ok", controller };
}

/**
 * The agent's admin routes: GET /healthz (200 `{"status":"ok","controller":…}`; 503
 * `{"status":"unavailable","reason":…,"connected":…}`) and GET /metrics.
 */
export function agentAdminRoutes(deps: AgentHealthDeps, registry: Registry): AdminRoute[] {
  return [
    {
      method: "GET",
      path: "/healthz",
      handle: async (_req, res) => {
        const health = await checkAgentHealth(deps);
        res.writeHead(health.status === "ok" ? 200 : 503, { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store" });
        res.end(`${JSON.stringify(health)}\n`);
      },
    },
    {
      method: "GET",
      path: "/metrics",
      handle: async (_req, res) => {
        const body = await registry.metrics();
        res.writeHead(200, { "Content-Type": registry.contentType, "Cache-Control": "no-store" });
        res.end(body);
      },
    },
  ];
}
