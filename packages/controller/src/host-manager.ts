import { HostState, type Hello, type Host, type HostFailurePolicy } from "@berth/api";
import { backoffDelayMs, BerthError, ErrorCode, hostLabelsOf, isBerthError, notFound } from "@berth/core";
import type { Logger } from "pino";
import type { AgentSession } from "./agent-session.js";
import type { ClusterState } from "./cluster-state.js";
import { NOT_RELOCATED_WITH_VOLUMES, planFailover, type FailoverLimits } from "./failover.js";
import type { FencedWriter } from "./fenced-writer.js";
import { hostStateName, lifecycleChanged, nextHostState, normalState, type HostLiveness, type HostTimers } from "./host-lifecycle.js";
import { encodeHost, Keys } from "./keys.js";
import type { Placer } from "./placement.js";

export interface HostManagerDeps {
  state: ClusterState;
  sessions: ReadonlyMap<string, AgentSession>;
  writer: FencedWriter;
  placer: Placer;
  timers: HostTimers;
  limits: FailoverLimits;
  /** How often host states are evaluated. */
  tickMs: number;
  /** When this controller became the leader (Unix ms). */
  electedAtMs: number;
  /** The cluster's default on_host_failure. */
  defaultPolicy(): HostFailurePolicy;
  /** A host's state changed: its VMs' statuses need a look. */
  onHostChanged(hostId: string): void;
  log: Logger;
  now: () => number;
  random?: () => number;
}

/** Attempts a guarded host write makes when its record keeps changing underneath. */
const MAX_WRITE_ATTEMPTS = 5;

/** The agent's labels of a host record; records written before agent_labels existed hold them in `labels`. */
function agentLabelsOf(host: Host): Record<string, string> {
  if (Object.keys(host.agentLabels).length > 0 || Object.keys(host.operatorLabels).length > 0) return host.agentLabels;
  return host.labels;
}

/**
 * The host lifecycle's I/O, and the one writer of host records: registration at Hello (operator
 * fields such as `cordoned` survive), the state machine of `nextHostState` evaluated every
 * `tickMs` (READY → SUSPECT → DOWN → FENCED), `confirm-down`, and restarting the VMs of fenced
 * hosts elsewhere (`planFailover`, through the Placer, rate-limited and halted on mass failure).
 */
export class HostManager {
  /** When each host's agent was last heard, kept after its stream ends. */
  private readonly lastHeard = new Map<string, number>();
  /** Fenced hosts whose restarts began, with when: the rate limit's window. */
  private readonly restartsStarted = new Map<string, number>();
  /** VMs whose relocation failed (no room, a race), with when to try again. */
  private readonly relocationBackoff = new Map<string, { attempts: number; nextMs: number }>();
  /** RESTART VMs kept on their fenced host by their data volumes, already warned of (by VM id → host). */
  private readonly keptWarned = new Map<string, string>();
  private readonly timer: NodeJS.Timeout;
  private lastTickMs: number;
  /** Silence is measured from no earlier than this (the election, or the end of our own stall). */
  private baselineMs: number;
  private ticking: Promise<void> | undefined;
  private lastHeld: string | undefined;
  /** When more than the allowed fraction of hosts was last seen not READY (0: never). */
  private lastMassFailureMs = 0;
  private stopped = false;

  /** Hosts recorded READY when this controller was elected: they are expected back soon. */
  private readonly readyAtElection: ReadonlySet<string>;

  constructor(private readonly deps: HostManagerDeps) {
    this.baselineMs = deps.electedAtMs;
    this.readyAtElection = new Set(deps.state.allHosts().filter((h) => h.state === HostState.HOST_STATE_READY).map((h) => h.id));
    this.lastTickMs = deps.now();
    this.timer = setInterval(() => void this.tick(), deps.tickMs);
    this.timer.unref();
  }

  stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    return this.ticking ?? Promise.resolve();
  }

  /**
   * Hosts READY under the previous leader that have not reconnected (`missing`), and whether this
   * leader still waits for them (`waiting`: the first moments of its term, until the down timeout):
   * "no room" then means "not back yet".
   */
  reconnecting(): { waiting: boolean; missing: number } {
    let missing = 0;
    for (const id of this.readyAtElection) if (!this.deps.sessions.get(id)?.isLive) missing++;
    return { waiting: missing > 0 && this.deps.now() < this.deps.electedAtMs + this.deps.timers.downAfterMs, missing };
  }

  /** What the controller knows of the host's agent now (see `HostLiveness`). */
  liveness(hostId: string): HostLiveness {
    const session = this.deps.sessions.get(hostId);
    const known = session?.isLive ? session.lastHeardMs : (this.lastHeard.get(hostId) ?? this.deps.state.host(hostId)?.lastSeenMs ?? 0);
    return { connected: session?.isLive === true, lastHeardMs: Math.max(known, this.baselineMs) };
  }

  /**
   * Until when a new agent for the host (another boot id than the record's) must not have missing
   * domains created: its predecessor may still run them until its watchdog has fired. 0 when no
   * hold applies (same boot, first registration, or the predecessor is fenced already).
   */
  holdCreatesUntilMs(hostId: string, bootId: string): number {
    const host = this.deps.state.host(hostId);
    if (!host || host.bootId === bootId || host.bootId === "") return 0;
    if (host.state === HostState.HOST_STATE_FENCED) return 0;
    const { fenceTimeoutMs, fenceMarginMs } = this.deps.timers;
    const previous = Math.max(this.lastHeard.get(hostId) ?? host.lastSeenMs, this.baselineMs);
    const until = previous + fenceTimeoutMs + fenceMarginMs;
    return until > this.deps.now() ? until : 0;
  }

  /** A stream ended: remember when the host was last heard, and judge it at once. */
  sessionEnded(session: AgentSession): void {
    this.lastHeard.set(session.hostId, Math.max(this.lastHeard.get(session.hostId) ?? 0, session.lastHeardMs));
    void this.tick();
  }

  /**
   * Creates or refreshes the host record from the agent's Hello: READY, its capacity, labels and
   * facts; what operators set (cordon) is kept; a confirmed-down mark is cleared (the host is back).
   */
  async register(hello: Hello): Promise<void> {
    const now = this.deps.now();
    this.lastHeard.set(hello.hostId, now);
    this.restartsStarted.delete(hello.hostId);
    await this.update(hello.hostId, (prior) => ({
      id: hello.hostId,
      labels: hostLabelsOf(hello.labels, prior?.operatorLabels ?? {}),
      agentLabels: hello.labels,
      // Operator-set: a reconnect keeps them.
      operatorLabels: prior?.operatorLabels ?? {},
      capacity: hello.capacity,
      state: HostState.HOST_STATE_READY,
      cordoned: prior?.cordoned ?? false,
      bootId: hello.bootId,
      agentVersion: hello.agentVersion.slice(0, 64),
      lastSeenMs: now,
      usage: prior?.usage,
      driver: hello.driver.slice(0, 32),
      allocationRatio: hello.allocationRatio,
      reserved: hello.reserved,
      facts: hello.facts,
      hypervisor: hello.hypervisor,
      orphans: [],
      images: [],
      networks: [],
      volumes: [],
      stateSinceMs: prior && normalState(prior.state) === HostState.HOST_STATE_READY && prior.stateSinceMs > 0 ? prior.stateSinceMs : now,
      fenceDeadlineMs: 0,
      confirmedDown: false,
      // Operator-set: a reconnect keeps them.
      cordonReason: prior?.cordonReason ?? "",
      drain: prior?.drain,
    }));
  }

  /**
   * Cordons the host (no new VMs; its VMs stay), recording why. Operator-set: kept across agent
   * reconnects. Idempotent (a new reason replaces the old). NOT_FOUND for an unknown host.
   */
  async cordon(hostId: string, reason: string): Promise<Host> {
    const host = await this.updateExisting(hostId, (prior) => ({ ...prior, cordoned: true, cordonReason: reason }));
    this.deps.log.info({ hostId, reason }, "host cordoned");
    return host;
  }

  /** Uncordons the host and ends its drain (the caller fails the drain's pending migrations). Idempotent. */
  async uncordon(hostId: string): Promise<Host> {
    const host = await this.updateExisting(hostId, (prior) => ({ ...prior, cordoned: false, cordonReason: "", drain: undefined }));
    this.deps.log.info({ hostId }, "host uncordoned");
    return host;
  }

  /** Records a drain's state on the host (through the one host writer). Nothing when the host is gone. */
  async setDrain(hostId: string, drain: Host["drain"], cordonReason?: string): Promise<Host | undefined> {
    return this.update(hostId, (prior) =>
      prior ? { ...prior, drain, ...(cordonReason !== undefined ? { cordoned: true, cordonReason } : {}) } : undefined,
    );
  }

  /**
   * Sets and removes operator labels (`berth host label`); the record's `labels` becomes the
   * agent's with the operator's over them ({@link hostLabelsOf}). Kept across reconnects.
   * NOT_FOUND for an unknown host; FAILED_PRECONDITION for removing a key only the agent sets
   * (change the agent's --label instead). The caller validates keys and values.
   */
  async label(hostId: string, set: Readonly<Record<string, string>>, remove: readonly string[]): Promise<Host> {
    const current = this.deps.state.host(hostId);
    if (!current) throw notFound(`host '${hostId}'`);
    for (const key of remove) {
      if (!(key in current.operatorLabels) && key in agentLabelsOf(current) && !(key in set)) {
        throw new BerthError(ErrorCode.FailedPrecondition, `host '${hostId}': label '${key}' is set by its agent (berth-agent --label), not by an operator: change it there`);
      }
    }
    const host = await this.updateExisting(hostId, (prior) => {
      const operatorLabels = { ...prior.operatorLabels };
      for (const key of remove) delete operatorLabels[key];
      Object.assign(operatorLabels, set);
      return { ...prior, operatorLabels, labels: hostLabelsOf(agentLabelsOf(prior), operatorLabels) };
    });
    this.deps.log.info({ hostId, set, remove }, "host labels changed");
    return host;
  }

  /**
   * Forgets a retired host's record. Refused (FAILED_PRECONDITION, naming what holds it) while its
   * agent is connected, while any VM record names it, or while a migration in flight involves it:
   * nothing that still runs or is owed is dropped on the operator's word. Guarded on the record's
   * revision and fenced. NOT_FOUND for an unknown host.
   */
  async remove(hostId: string, holders: { vms: readonly string[]; migrations: readonly string[]; volumes?: readonly string[] }): Promise<void> {
    const kv = this.deps.state.hostKv(hostId);
    if (!kv || !this.deps.state.host(hostId)) throw notFound(`host '${hostId}'`);
    if (this.deps.sessions.get(hostId)?.isLive) {
      throw new BerthError(ErrorCode.FailedPrecondition, `host '${hostId}' is connected: stop its agent first (a host that connects again is registered anew)`);
    }
    const name = (names: readonly string[]): string => names.slice(0, 5).join(", ") + (names.length > 5 ? ` and ${names.length - 5} more` : "");
    if (holders.vms.length > 0) {
      throw new BerthError(ErrorCode.FailedPrecondition, `host '${hostId}' still has ${holders.vms.length} VM record(s) (${name(holders.vms)}): drain it (berth host drain ${hostId} --wait) or delete them first`);
    }
    if (holders.migrations.length > 0) {
      throw new BerthError(ErrorCode.FailedPrecondition, `host '${hostId}' is part of migration(s) in flight (${name(holders.migrations)}): wait for them or abort them`);
    }
    const volumes = holders.volumes ?? [];
    if (volumes.length > 0) {
      // Their data is in this host's pool: forgetting the host would leave the records pointing nowhere.
      throw new BerthError(
        ErrorCode.FailedPrecondition,
        `host '${hostId}' still holds ${volumes.length} data volume(s) (${name(volumes)}): delete them (berth volume delete NAME); for a host gone for good, confirm it down first (berth host confirm-down ${hostId}) and the deletes forget them at once`,
      );
    }
    const key = Keys.host(hostId);
    const result = await this.deps.writer.commit({ compare: [{ key, target: "modRevision", equals: kv.modRevision }], ops: [{ type: "delete", key }] });
    await this.deps.state.hosts.waitForRevision(result.revision);
    if (!result.succeeded) throw new BerthError(ErrorCode.Conflict, `host '${hostId}' changed while it was being deleted; retry`);
    this.lastHeard.delete(hostId);
    this.restartsStarted.delete(hostId);
    this.deps.log.warn({ hostId }, "host record deleted by an operator");
  }

  /**
   * An operator's word that a silent host is down for good (as Kubernetes' out-of-service taint):
   * it counts as fenced at once, so its restart-policy VMs are recreated elsewhere. Refused
   * (FAILED_PRECONDITION) while the host's agent is connected.
   */
  async confirmDown(hostId: string): Promise<Host> {
    if (!this.deps.state.host(hostId)) throw notFound(`host '${hostId}'`);
    if (this.deps.sessions.get(hostId)?.isLive) {
      throw new BerthError(ErrorCode.FailedPrecondition, `host '${hostId}' is connected: only a host that is silent and known to be powered off can be confirmed down`);
    }
    const host = await this.updateExisting(hostId, (prior) => ({ ...prior, confirmedDown: true }));
    this.deps.log.warn({ hostId }, "host confirmed down by an operator");
    await this.tick();
    return this.deps.state.host(hostId) ?? host;
  }

  /**
   * {@link update} of a host that must exist: NOT_FOUND when there is no record, or when it was
   * deleted meanwhile (`berth host delete`; nothing is written then).
   */
  private async updateExisting(hostId: string, mutate: (prior: Host) => Host): Promise<Host> {
    const host = await this.update(hostId, (prior) => (prior ? mutate(prior) : undefined));
    if (!host) throw notFound(`host '${hostId}'`);
    return host;
  }

  /**
   * Reads, changes and writes one host record, guarded on its revision and fenced; retried when
   * the record changed meanwhile. `mutate` returns undefined to write nothing. Every host write of
   * the controller goes through here.
   */
  async update(hostId: string, mutate: (prior: Host | undefined) => Host | undefined): Promise<Host | undefined> {
    const key = Keys.host(hostId);
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      const kv = this.deps.state.hostKv(hostId);
      const next = mutate(this.deps.state.host(hostId));
      if (!next) return undefined;
      const result = await this.deps.writer.commit({
        compare: kv ? [{ key, target: "modRevision", equals: kv.modRevision }] : [{ key, target: "createRevision", equals: 0 }],
        ops: [{ type: "put", key, value: encodeHost(next) }],
      });
      await this.deps.state.hosts.waitForRevision(result.revision);
      if (result.succeeded) return next;
    }
    throw new BerthError(ErrorCode.Conflict, `host '${hostId}' record kept changing; retry`);
  }

  /** One pass: every host's state, then restarts. Passes never overlap. */
  tick(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.ticking ??= this.pass().finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  private async pass(): Promise<void> {
    const { state, timers, log } = this.deps;
    const now = this.deps.now();
    // A controller that was frozen or starved (its timers late) must not take its own silence for
    // the hosts': measure from now, which only delays fencing.
    if (now - this.lastTickMs > this.deps.tickMs * 4 + 1_000) {
      log.warn({ stalledMs: now - this.lastTickMs }, "this controller stalled; host silence is measured from now");
      this.baselineMs = Math.max(this.baselineMs, now);
    }
    this.lastTickMs = now;
    for (const host of state.allHosts()) {
      const live = this.liveness(host.id);
      const next = nextHostState(host, live, now, timers);
      if (!lifecycleChanged(host, next)) continue;
      try {
        const written = await this.update(host.id, (prior) => (prior ? { ...prior, ...nextHostState(prior, live, now, timers), lastSeenMs: live.lastHeardMs } : undefined));
        if (written && written.state !== host.state) {
          const level = written.state === HostState.HOST_STATE_READY ? "info" : "warn";
          log[level]({ hostId: host.id, from: hostStateName(host.state), to: hostStateName(written.state), silentMs: now - live.lastHeardMs, fenceDeadlineMs: written.fenceDeadlineMs || undefined }, "host state changed");
        }
        this.deps.onHostChanged(host.id);
      } catch (e) {
        if (!isBerthError(e, ErrorCode.NotLeader)) log.warn({ err: e, hostId: host.id }, "could not record the host's state");
        return;
      }
    }
    await this.restartFencedVms(now);
  }

  private async restartFencedVms(now: number): Promise<void> {
    const { state, limits, log } = this.deps;
    for (const [hostId, at] of this.restartsStarted) if (now - at >= limits.rateIntervalMs) this.restartsStarted.delete(hostId);
    const plan = planFailover(
      state.allHosts(),
      // A VM in flight is the migration's to settle: restarting it elsewhere could make two copies.
      (id) => state.vmsOnHost(id).filter((vm) => !state.migrationHolds(vm.id)),
      this.deps.defaultPolicy(),
      { started: new Set(this.restartsStarted.keys()), budget: limits.hostsPerInterval - this.restartsStarted.size },
      limits,
      { nowMs: now, lastMassFailureMs: this.lastMassFailureMs },
    );
    if (plan.massFailure) this.lastMassFailureMs = now;
    const kept = new Map<string, string>();
    for (const { hostId, vms } of plan.kept) {
      for (const vm of vms) {
        kept.set(vm.id, hostId);
        if (this.keptWarned.get(vm.id) === hostId) continue;
        log.warn({ vm: vm.spec?.name, vmId: vm.id, host: hostId, volumes: vm.spec?.volumes, reason: NOT_RELOCATED_WITH_VOLUMES }, `not restarting a VM elsewhere: it ${NOT_RELOCATED_WITH_VOLUMES}`);
      }
    }
    // Warned once per fence: a host back and fenced again warns again.
    this.keptWarned.clear();
    for (const [id, hostId] of kept) this.keptWarned.set(id, hostId);
    if (plan.held !== this.lastHeld) {
      if (plan.held) log.warn({ why: plan.held }, "restarts of VMs elsewhere are held back");
      this.lastHeld = plan.held;
    }
    for (const { hostId, vms } of plan.restarts) {
      if (!this.restartsStarted.has(hostId)) this.restartsStarted.set(hostId, now);
      await Promise.all(
        vms.map(async (vm) => {
          const backoff = this.relocationBackoff.get(vm.id);
          if (backoff && now < backoff.nextMs) return;
          try {
            const moved = await this.deps.placer.relocate(vm, this.deps.writer, `host '${hostId}' was fenced`);
            this.relocationBackoff.delete(vm.id);
            log.warn(
              { vm: vm.spec?.name, vmId: vm.id, host: moved.hostId, generation: moved.generation, from: hostId, score: moved.placement?.explained ? moved.placement.total : undefined, runnerUp: moved.placement?.runnerUpHost || undefined },
              "restarted a VM elsewhere: its host was fenced",
            );
          } catch (e) {
            if (isBerthError(e, ErrorCode.NotLeader)) return;
            const attempts = (backoff?.attempts ?? 0) + 1;
            this.relocationBackoff.set(vm.id, { attempts, nextMs: now + backoffDelayMs(attempts, this.deps.random ?? Math.random) });
            log.warn({ vm: vm.spec?.name, from: hostId, attempts, err: e instanceof BerthError ? e.message : e }, "could not restart a VM elsewhere; will retry");
          }
        }),
      );
    }
  }
}
