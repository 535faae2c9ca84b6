import {
  DesiredState,
  MigrationReason,
  RebalanceGoal,
  RebalanceMetric,
  VmPhase,
  type ApplyRebalanceResponse,
  type Migration,
  type RebalanceConfig,
  type RebalancePlan,
  type RebalanceMove,
  type SkippedMove,
} from "@berth/api";
import { BerthError, ErrorCode, invalidArgument, isBerthError } from "@berth/core";
import {
  checkMove,
  defaultMetric,
  planRebalance,
  withoutPlacement,
  withPlacement,
  type HostSnapshot,
  type RebalanceInput,
  type RebalancePlanResult,
  type RebalanceVm,
} from "@berth/scheduler";
import type { Logger } from "pino";
import type { AgentSession } from "./agent-session.js";
import { isActiveMigration, type ClusterState } from "./cluster-state.js";
import type { MigrationManager } from "./migration-manager.js";
import type { Placer } from "./placement.js";

/** Moves a plan holds when the request leaves it unset, and at most. */
const DEFAULT_MAX_MOVES = 20;
const MAX_MOVES = 1000;

/** Continuous rebalancing, resolved (see RebalanceConfig in the proto). */
export interface ResolvedRebalanceConfig {
  enabled: boolean;
  goal: "balance" | "consolidate";
  metric: RebalanceMetric;
  intervalMs: number;
  threshold: number;
  rounds: number;
  maxMovesPerPass: number;
  vmCooldownMs: number;
  hostCooldownMs: number;
}

/**
 * The cluster's RebalanceConfig with its defaults: off; balance; every 5 min; act above an
 * imbalance of 0.1 seen 3 looks in a row (Proxmox's hysteresis); 4 moves a pass; a VM moved is left
 * alone for an hour, a host touched for 10 min. Throws INVALID_ARGUMENT naming the field.
 */
export function resolveRebalanceConfig(config: RebalanceConfig | undefined, field = "rebalance"): ResolvedRebalanceConfig {
  const c = config ?? { enabled: false, goal: 0, intervalMs: 0, threshold: 0, rounds: 0, maxMovesPerPass: 0, vmCooldownMs: 0, hostCooldownMs: 0, metric: 0 };
  if (!Object.values(RebalanceMetric).includes(c.metric)) throw invalidArgument(`${field}.metric`, `must be USAGE or ALLOCATION (got ${String(c.metric)})`);
  if (!Object.values(RebalanceGoal).includes(c.goal)) throw invalidArgument(`${field}.goal`, `must be BALANCE or CONSOLIDATE (got ${String(c.goal)})`);
  if (c.intervalMs !== 0 && c.intervalMs < 1000) throw invalidArgument(`${field}.interval_ms`, `must be at least 1000 (got ${c.intervalMs})`);
  if (!Number.isFinite(c.threshold) || c.threshold < 0 || c.threshold > 1) throw invalidArgument(`${field}.threshold`, `must be a number from 0 to 1 (got ${c.threshold})`);
  if (c.rounds > 100) throw invalidArgument(`${field}.rounds`, `at most 100 (got ${c.rounds})`);
  if (c.maxMovesPerPass > MAX_MOVES) throw invalidArgument(`${field}.max_moves_per_pass`, `at most ${MAX_MOVES} (got ${c.maxMovesPerPass})`);
  return {
    enabled: c.enabled,
    goal: c.goal === RebalanceGoal.REBALANCE_GOAL_CONSOLIDATE ? "consolidate" : "balance",
    metric: c.metric,
    intervalMs: c.intervalMs || 300_000,
    threshold: c.threshold || 0.1,
    rounds: c.rounds || 3,
    maxMovesPerPass: c.maxMovesPerPass || 4,
    vmCooldownMs: c.vmCooldownMs || 3_600_000,
    hostCooldownMs: c.hostCooldownMs || 600_000,
  };
}

export interface RebalancerDeps {
  state: ClusterState;
  sessions: ReadonlyMap<string, AgentSession>;
  placer: Placer;
  migrations: MigrationManager;
  log: Logger;
  now: () => number;
}

const goalName = (goal: RebalanceGoal): "balance" | "consolidate" => (goal === RebalanceGoal.REBALANCE_GOAL_CONSOLIDATE ? "consolidate" : "balance");

/**
 * The controller's side of rebalancing: it builds the planner's input from the same snapshot
 * placement uses (plus the agents' measured use), asks the pure planner (`planRebalance` in the
 * scheduler) for moves, and applies them as migrations of reason REBALANCE, each re-checked
 * against the current state first. With `rebalance.enabled` in the cluster config it also plans
 * and applies on its own every interval, with hysteresis and cooldowns per VM and host.
 */
export class Rebalancer {
  private timer: NodeJS.Timeout | undefined;
  private intervalMs = 0;
  private roundsAbove = 0;
  private running = false;
  private stopped = false;

  constructor(private readonly deps: RebalancerDeps) {
    this.timer = setInterval(() => void this.tick(), 1000);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
  }

  config(): ResolvedRebalanceConfig {
    try {
      return resolveRebalanceConfig(this.deps.state.clusterConfig()?.rebalance);
    } catch {
      return resolveRebalanceConfig(undefined);
    }
  }

  /** The planner's view: every host as placement sees it, every VM with its measured use. */
  input(cooldown?: { vmMs: number; hostMs: number }): { input: RebalanceInput; frozenHosts: Set<string> } {
    const { state, placer, sessions } = this.deps;
    const now = this.deps.now();
    const frozenHosts = new Set<string>();
    const recentlyMoved = new Set<string>();
    if (cooldown) {
      for (const m of state.allMigrations()) {
        if (m.reason !== MigrationReason.MIGRATION_REASON_REBALANCE) continue;
        const at = m.finishedAtMs || m.createdAtMs;
        if (now - at < cooldown.vmMs) recentlyMoved.add(m.vmId);
        if (now - at < cooldown.hostMs) {
          frozenHosts.add(m.sourceHost);
          if (m.targetHost) frozenHosts.add(m.targetHost);
        }
      }
    }
    const hosts = placer.snapshot();
    const vms: RebalanceVm[] = [];
    for (const vm of state.allVms()) {
      if (!vm.spec?.resources || vm.hostId === "") continue;
      let request;
      try {
        request = placer.requestOf(vm.spec, "spec", "own");
      } catch {
        continue; // its group is gone: not the planner's to judge
      }
      // Its data volumes travel with it: the planner counts their disk on the target and their copy in the cost.
      const volumeGib = state.attachedVolumeGib(vm.spec.name);
      const usage = sessions.get(vm.hostId)?.vmUsage.get(vm.id);
      const migration = state.activeMigration(vm.id);
      const movable =
        vm.desiredState === DesiredState.DESIRED_STATE_RUNNING &&
        vm.status?.phase === VmPhase.VM_PHASE_RUNNING &&
        migration === undefined &&
        !recentlyMoved.has(vm.id) &&
        sessions.get(vm.hostId)?.isLive === true;
      vms.push({ id: vm.id, name: vm.spec.name, hostId: vm.hostId, request, movable, ...(usage ? { usage } : {}), ...(volumeGib > 0 ? { volumeGib } : {}) });
    }
    return { input: { hosts, vms }, frozenHosts };
  }

  /** A plan for now (writes nothing). INVALID_ARGUMENT for a bad goal, metric or move count. */
  plan(goal: RebalanceGoal, maxMoves: number, metric: RebalanceMetric = RebalanceMetric.REBALANCE_METRIC_UNSPECIFIED, cooldown?: { vmMs: number; hostMs: number }, threshold?: number): RebalancePlan {
    if (!Object.values(RebalanceGoal).includes(goal)) throw invalidArgument("goal", `must be BALANCE or CONSOLIDATE (got ${String(goal)})`);
    if (!Object.values(RebalanceMetric).includes(metric)) throw invalidArgument("metric", `must be USAGE or ALLOCATION (got ${String(metric)})`);
    if (!Number.isSafeInteger(maxMoves) || maxMoves < 0 || maxMoves > MAX_MOVES) throw invalidArgument("max_moves", `must be from 1 to ${MAX_MOVES} (0 for ${DEFAULT_MAX_MOVES}; got ${maxMoves})`);
    const { input, frozenHosts } = this.input(cooldown);
    const chosen = metric === RebalanceMetric.REBALANCE_METRIC_UNSPECIFIED ? defaultMetric(input.vms) : metric === RebalanceMetric.REBALANCE_METRIC_USAGE ? "usage" : "allocation";
    const result = planRebalance(input, this.deps.placer.options(), { goal: goalName(goal), metric: chosen, maxMoves: maxMoves || DEFAULT_MAX_MOVES, frozenHosts, ...(threshold !== undefined ? { threshold } : {}) });
    const plan = toWirePlan(result, goal, this.deps.state.vms.revision, this.deps.now());
    plan.metric = chosen === "usage" ? RebalanceMetric.REBALANCE_METRIC_USAGE : RebalanceMetric.REBALANCE_METRIC_ALLOCATION;
    return plan;
  }

  /**
   * Runs `saved` (or a fresh plan) as migrations. Each move is re-checked against the current
   * state with the earlier moves of the plan applied: its VM still on `from` and free to move, the
   * target still passing every filter; a move that fails the check is skipped with why.
   */
  async apply(goal: RebalanceGoal, maxMoves: number, metric: RebalanceMetric, saved: RebalancePlan | undefined, requestedBy = "rebalance"): Promise<ApplyRebalanceResponse> {
    const plan = saved ?? this.plan(goal, maxMoves, metric);
    if (plan.moves.length > MAX_MOVES) throw invalidArgument("plan.moves", `at most ${MAX_MOVES} moves (got ${plan.moves.length})`);
    const { state, placer, migrations, log } = this.deps;
    const options = placer.options();
    let hosts = new Map<string, HostSnapshot>(placer.snapshot().map((h) => [h.id, h]));
    const started: Migration[] = [];
    const skipped: SkippedMove[] = [];
    for (const move of plan.moves) {
      const vm = state.vm(move.vmName);
      const skip = (reason: string): void => void skipped.push({ move, reason });
      if (!vm || (move.vmId && vm.id !== move.vmId)) {
        skip("the VM no longer exists");
        continue;
      }
      if (vm.hostId !== move.fromHost) {
        skip(`the VM is on ${vm.hostId} now, not ${move.fromHost}`);
        continue;
      }
      const active = state.activeMigration(vm.id);
      if (active && isActiveMigration(active)) {
        skip("the VM is migrating already");
        continue;
      }
      let request;
      try {
        // As the migration's target will be checked: its volumes' disk too, no pin to their host.
        request = placer.requestOf(vm.spec!, "spec", "move");
      } catch (e) {
        skip(e instanceof Error ? e.message : String(e));
        continue;
      }
      const from = hosts.get(move.fromHost);
      const why = from ? checkMove([...hosts.values()], { from: move.fromHost, to: move.toHost }, request, options) : `host '${move.fromHost}' is gone`;
      if (why) {
        skip(why);
        continue;
      }
      try {
        const m = await migrations.request({ vmName: move.vmName, targetHost: move.toHost, reason: MigrationReason.MIGRATION_REASON_REBALANCE, requestedBy: `${requestedBy} (${goalName(plan.goal)})` });
        started.push(m);
        // The next moves see this one done (the snapshot as after the plan's earlier moves).
        hosts.set(move.fromHost, withoutPlacement(hosts.get(move.fromHost)!, request.resources, request.group?.name));
        hosts.set(move.toHost, withPlacement(hosts.get(move.toHost)!, request.resources, request.group?.name));
      } catch (e) {
        if (isBerthError(e, ErrorCode.NotLeader)) throw e;
        skip(e instanceof BerthError ? e.message : String(e));
      }
    }
    hosts = new Map();
    if (started.length > 0 || skipped.length > 0) log.info({ started: started.length, skipped: skipped.length, goal: goalName(plan.goal) }, "rebalance plan applied");
    return { plan, migrations: started, skipped };
  }

  /** The continuous mode: looks every interval; acts after `rounds` looks above the threshold. */
  private async tick(): Promise<void> {
    if (this.stopped || this.running) return;
    const config = this.config();
    if (!config.enabled) {
      this.roundsAbove = 0;
      this.intervalMs = 0;
      return;
    }
    const now = this.deps.now();
    if (this.intervalMs !== 0 && now < this.intervalMs) return;
    this.intervalMs = now + config.intervalMs;
    this.running = true;
    try {
      // Nothing new while the last pass's moves are still running: measure the result first.
      if (this.deps.state.allMigrations().some((m) => isActiveMigration(m) && m.reason === MigrationReason.MIGRATION_REASON_REBALANCE)) return;
      const goal = config.goal === "consolidate" ? RebalanceGoal.REBALANCE_GOAL_CONSOLIDATE : RebalanceGoal.REBALANCE_GOAL_BALANCE;
      // The threshold that triggers a pass is also where its plan stops.
      const plan = this.plan(goal, config.maxMovesPerPass, config.metric, { vmMs: config.vmCooldownMs, hostMs: config.hostCooldownMs }, config.threshold);
      const above = goal === RebalanceGoal.REBALANCE_GOAL_CONSOLIDATE ? plan.freedHosts.length > 0 : plan.imbalanceBefore > config.threshold;
      this.roundsAbove = above ? this.roundsAbove + 1 : 0;
      if (this.roundsAbove < config.rounds || plan.moves.length === 0) return;
      this.roundsAbove = 0;
      this.deps.log.info({ goal: config.goal, imbalance: plan.imbalanceBefore, predicted: plan.imbalanceAfter, moves: plan.moves.length }, "continuous rebalancing: applying a plan");
      await this.apply(goal, config.maxMovesPerPass, config.metric, plan, "continuous rebalancing");
    } catch (e) {
      if (!isBerthError(e, ErrorCode.NotLeader)) this.deps.log.warn({ err: e }, "continuous rebalancing pass failed");
    } finally {
      this.running = false;
    }
  }
}

function toWirePlan(r: RebalancePlanResult, goal: RebalanceGoal, revision: number, nowMs: number): RebalancePlan {
  const moves: RebalanceMove[] = r.moves.map((m) => ({
    vmName: m.vmName,
    vmId: m.vmId,
    fromHost: m.from,
    toHost: m.to,
    reason: m.reason,
    benefit: m.benefit,
    costGib: m.costGiB,
    imbalanceAfter: m.imbalanceAfter,
  }));
  return {
    goal: goal || RebalanceGoal.REBALANCE_GOAL_BALANCE,
    moves,
    imbalanceBefore: r.imbalanceBefore,
    imbalanceAfter: r.imbalanceAfter,
    freedHosts: r.freedHosts,
    movedGib: r.movedGiB,
    revision,
    computedAtMs: nowMs,
    note: r.note,
    metric: RebalanceMetric.REBALANCE_METRIC_UNSPECIFIED,
  };
}
