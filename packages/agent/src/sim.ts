import { setMaxListeners } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Resources } from "@berth/api";
import { FakeDriver } from "@berth/hypervisor";
import type { Logger } from "pino";
import { Agent } from "./agent.js";
import { loadAgentState } from "./agent-state.js";
import { resolveAgentOptions } from "./options.js";

/** How a simulation of many hosts in one process is run (berth-sim). */
export interface SimulationOptions {
  /** How many hollow hosts. */
  hosts: number;
  /** Controllers, host:port each (as the agent's `controllers`). */
  controllers: string[];
  /** Host ids are this prefix and a zero-padded number from 1: sim-0001 … sim-1000. Default "sim-". */
  hostPrefix?: string;
  /** What each host offers (missing fields: the fake driver's defaults). */
  capacity?: Partial<Resources>;
  /**
   * The hosts' first connects are spread evenly over this long (each jittered within its slot), so
   * that a thousand Hellos do not land at once. Default 5 ms per host, at most 10 s.
   */
  startSpreadMs?: number;
  /**
   * Where each host's agent state goes (`<stateRoot>/<host-id>/agent.json`: the cluster id and the
   * leader epoch, as berth-agent keeps them). Default: a temporary directory, removed at the end.
   * The hypervisors themselves keep no file (the fake driver's in-memory mode).
   */
  stateRoot?: string;
  /**
   * Mutual TLS: a directory laid out as `berth certs` writes it, `ca.crt` and `<host-id>.crt` /
   * `<host-id>.key` for every host (each hollow host presents its own certificate, as a real agent
   * does). Absent: plaintext, for a controller run with `--insecure`.
   */
  tlsDir?: string;
}

/** One hollow host: the real {@link Agent} over an in-memory {@link FakeDriver}. */
export interface SimulatedHost {
  readonly hostId: string;
  readonly driver: FakeDriver;
  readonly agent: Agent;
}

/** Default of {@link SimulationOptions.startSpreadMs} for `hosts` hosts. */
export function defaultStartSpreadMs(hosts: number): number {
  return Math.min(10_000, hosts * 5);
}

/** The host ids a simulation of `hosts` hosts uses. */
export function simulatedHostIds(hosts: number, prefix = "sim-"): string[] {
  const width = Math.max(4, String(hosts).length);
  return Array.from({ length: hosts }, (_, i) => `${prefix}${String(i + 1).padStart(width, "0")}`);
}

/**
 * N hollow agents in one process: each the real {@link Agent} (its own gRPC channel and stream to
 * the controller, Hello, Reports, heartbeats, commands) over its own in-memory fake hypervisor
 * (`FakeDriver` with `persist: false`: the fake's semantics, no state file, no control file).
 *
 * Timers: each agent keeps its own liveness tick and report interval (the controller's, from its
 * Welcome); Node keeps timers of one duration in one list, so a thousand agents cost a thousand
 * list entries, not a thousand OS timers. Their phases are spread by the staggered start.
 *
 * Throws INVALID_ARGUMENT (from `resolveAgentOptions`, naming the option) before anything starts.
 */
export class Simulation {
  private readonly abort = new AbortController();
  private runs: Promise<void>[] = [];
  private startTimers: NodeJS.Timeout[] = [];
  private firstError: Error | undefined;
  private readonly failed: Promise<Error>;
  private fail!: (e: Error) => void;

  private constructor(
    readonly hosts: readonly SimulatedHost[],
    private readonly spreadMs: number,
    private readonly stateRoot: string,
    private readonly ownsStateRoot: boolean,
    private readonly log: Logger,
  ) {
    this.failed = new Promise((resolve) => (this.fail = resolve));
    // Every agent (and each of its sessions and waits) listens on the one signal.
    setMaxListeners(0, this.abort.signal);
  }

  /** Builds the hosts (nothing connects yet); the state root is created (see {@link SimulationOptions.stateRoot}). */
  static async create(options: SimulationOptions, log: Logger): Promise<Simulation> {
    if (!(Number.isSafeInteger(options.hosts) && options.hosts >= 1)) throw new Error(`hosts must be a whole number ≥ 1 (got ${options.hosts})`);
    const spreadMs = options.startSpreadMs ?? defaultStartSpreadMs(options.hosts);
    if (!(Number.isFinite(spreadMs) && spreadMs >= 0)) throw new Error(`start spread must be a number of ms ≥ 0 (got ${spreadMs})`);
    const ids = simulatedHostIds(options.hosts, options.hostPrefix ?? "sim-");
    const owns = options.stateRoot === undefined;
    const root = options.stateRoot ?? (await mkdtemp(join(tmpdir(), "berth-sim-")));
    try {
      // Validated before anything starts (INVALID_ARGUMENT names the option).
      const tls = (hostId: string) => (options.tlsDir === undefined ? {} : { tls: { ca: join(options.tlsDir, "ca.crt"), cert: join(options.tlsDir, `${hostId}.crt`), key: join(options.tlsDir, `${hostId}.key`) } });
      const agentOptions = ids.map((hostId) => resolveAgentOptions({ hostId, controllers: options.controllers, ...tls(hostId), driver: "fake", stateDir: join(root, hostId) }));
      const hosts = await Promise.all(
        agentOptions.map(async (o): Promise<SimulatedHost> => {
          // Each agent's own state, as berth-agent loads it (fresh in a fresh root).
          const state = await loadAgentState(o.stateDir);
          // In memory, named after the agent's own dir: unique to this simulation.
          const driver = new FakeDriver({ stateDir: o.stateDir, persist: false, ...(options.capacity ? { capacity: options.capacity } : {}) });
          return { hostId: o.hostId, driver, agent: new Agent(o, driver, state, log.child({ hostId: o.hostId })) };
        }),
      );
      return new Simulation(hosts, spreadMs, root, owns, log);
    } catch (e) {
      if (owns) await rm(root, { recursive: true, force: true });
      throw e;
    }
  }

  /**
   * Starts the agents, staggered over the start spread. Resolves at once; {@link failure} resolves
   * if an agent stops on its own (a controller finding its Hello invalid), which ends nothing else.
   */
  start(): void {
    const n = this.hosts.length;
    const slot = n > 0 ? this.spreadMs / n : 0;
    this.hosts.forEach((h, i) => {
      // Evenly spaced, each jittered within its slot: a steady trickle of Hellos, never a burst.
      const delay = Math.round(i * slot + Math.random() * slot);
      const t = setTimeout(() => {
        if (this.abort.signal.aborted) return;
        this.runs.push(
          h.agent.run(this.abort.signal).catch((e: unknown) => {
            const err = e instanceof Error ? e : new Error(String(e));
            this.log.error({ hostId: h.hostId, err }, "a simulated agent stopped");
            if (!this.firstError) {
              this.firstError = err;
              this.fail(err);
            }
          }),
        );
      }, delay);
      this.startTimers.push(t);
    });
    this.log.info({ hosts: n, startSpreadMs: this.spreadMs, stateRoot: this.stateRoot }, "simulated hosts starting");
  }

  /** Resolves with the error of the first agent that stopped on its own. */
  get failure(): Promise<Error> {
    return this.failed;
  }

  /** Stops every agent (each ends its stream), closes the drivers, removes a temporary state root. */
  async stop(timeoutMs = 5_000): Promise<void> {
    for (const t of this.startTimers) clearTimeout(t);
    this.startTimers = [];
    this.abort.abort();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.runs), new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
    await Promise.all(this.hosts.map((h) => h.driver.close()));
    if (this.ownsStateRoot) await rm(this.stateRoot, { recursive: true, force: true });
  }
}
