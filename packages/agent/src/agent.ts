import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { connectivityState, type Client, type ClientDuplexStream } from "@grpc/grpc-js";
import {
  AgentServiceClient,
  DomainState,
  RejectReason,
  type AgentMessage,
  type Command,
  type ControllerMessage,
  type Domain,
  type Hello,
  type HostImage,
  type HostNetwork,
  type HostVolume,
  type Inventory,
  type Welcome,
} from "@berth/api";
import { addResources, BERTH_VERSION, channelCredentialsOf, grpcClientOptions, invalidArgument, Limits, ReloadingTlsIdentity, sleepUnlessAborted, ZERO } from "@berth/core";
import type { HypervisorDriver } from "@berth/hypervisor";
import type { Logger } from "pino";
import { AgentStateFile, type AgentState } from "./agent-state.js";
import { CommandExecutor, type MigrationProgressSink } from "./executor.js";
import type { ResolvedAgentOptions } from "./options.js";
import { NO_AGENT_METRICS, type AgentMetrics } from "./metrics.js";
import { ReconnectPlanner, type SessionEnd } from "./reconnect.js";
import { StreamWriter } from "./stream-writer.js";
import { ConsoleSessions } from "./console-sessions.js";
import { UsageMeter } from "./usage.js";
import { HostWatchdog } from "./watchdog.js";

/** What Hello.agent_version says. */
export const AGENT_VERSION = BERTH_VERSION;

/** How long to wait for the controller's answer to Hello once it is sent. */
const HELLO_ANSWER_TIMEOUT_MS = 5_000;
/** How long after a hypervisor event the agent reports (events in between share the report). */
const EVENT_REPORT_DELAY_MS = 50;
/**
 * A timer tick this much later than scheduled (or the tick period, if longer) means the agent
 * itself was stalled (SIGSTOP, a starved event loop, a suspended VM): the controller's silence over
 * that time is not the controller's fault.
 */
const MIN_STALL_MS = 500;

/** What the agent makes of a Welcome: obey it (adopting its cluster first, if so), or refuse it. */
type WelcomeVerdict =
  | { accept: true; adopt: boolean; warning?: string }
  | { accept: false; message: string };

/**
 * berth-agent's main loop: keep one stream open to the leading controller, say Hello with the full
 * inventory on every (re)connect (reconnect = full resync), report periodically, prove liveness on
 * its own timer (AgentHeartbeat), pet the host's watchdog while the leader is heard, and execute the
 * commands that arrive. Where to reconnect and when is {@link ReconnectPlanner}'s call.
 *
 * Cluster identity: the agent obeys controllers of one cluster. It adopts the cluster id of the
 * first Welcome that names one (persisting it, and resetting its leader epoch to that Welcome's,
 * before any command runs) and from then on refuses Welcomes of other clusters; `joinCluster` moves
 * it to another cluster the same way.
 */
export class Agent {
  readonly bootId = randomUUID();
  private readonly executor: CommandExecutor;
  private readonly state: AgentStateFile;
  private readonly watchdog: HostWatchdog;
  private readonly usage = new UsageMeter();
  private readonly storage: HostStorageReader;
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  private helloRead: Promise<Hello> | undefined;
  /** The host certificate, re-read when its files change; undefined when plaintext. */
  private readonly tls: ReloadingTlsIdentity | undefined;
  /** The controller whose Welcome is obeyed now (a leader); undefined between streams. */
  #connectedTo: string | undefined;

  /**
   * @param initial the state loaded from the state dir (`loadAgentState`); a number is the leader
   *   epoch alone, for callers from before cluster ids (no cluster yet).
   */
  constructor(
    private readonly options: ResolvedAgentOptions,
    private readonly driver: HypervisorDriver,
    initial: AgentState | number,
    private readonly log: Logger,
    /** Told of commands run, reports sent, reconnects and the connection (the admin port's /metrics). */
    private readonly metrics: AgentMetrics = NO_AGENT_METRICS,
  ) {
    // Checked before anything else: a certificate for another host would be refused by every controller.
    this.tls = options.tls
      ? new ReloadingTlsIdentity(options.tls, {
          reloaded: (c) => log.info({ subject: c.subject, serial: c.serial, notAfter: c.notAfter }, "reloaded the TLS certificate; the next connection uses it"),
          rejected: (why) => log.warn({ why }, "the TLS files changed but do not check out; still using the previous ones"),
        })
      : undefined;
    const named = this.tls?.identity;
    if (this.tls && (named?.role !== "host" || named.name !== options.hostId)) {
      this.tls.close();
      throw invalidArgument(
        "tls_cert",
        `${options.tls!.cert} is ${named ? `a ${named.role} certificate for '${named.name}'` : "not a Berth certificate"}, not host '${options.hostId}''s: issue one with 'berth certs issue host ${options.hostId}'`,
      );
    }
    this.storage = new HostStorageReader(driver, log);
    const state: AgentState = typeof initial === "number" ? { lastLeaderEpoch: initial, clusterId: "" } : initial;
    this.state = new AgentStateFile(options.stateDir, state);
    this.executor = new CommandExecutor(driver, state.lastLeaderEpoch, (epoch) => {
      this.state.update({ lastLeaderEpoch: epoch }).catch((e: unknown) => log.error({ err: e }, "could not save the leader epoch"));
    });
    this.watchdog = new HostWatchdog(driver, log);
    if (options.joinCluster !== undefined && options.joinCluster === state.clusterId) {
      log.info({ clusterId: state.clusterId }, "already a member of the cluster --join-cluster names; the flag can be dropped");
    }
  }

  /** The cluster this agent belongs to ("" until it has joined one). */
  get clusterId(): string {
    return this.state.state.clusterId;
  }

  /** The controller (a leader) whose Welcome this agent obeys now; undefined while not connected. */
  get connectedController(): string | undefined {
    return this.#connectedTo;
  }

  /** The highest leader epoch obeyed (within {@link clusterId}). */
  get leaderEpoch(): number {
    return this.executor.leaderEpoch;
  }

  /** The cluster being joined (`--join-cluster`), while the stored one is another. */
  private get joining(): string | undefined {
    const j = this.options.joinCluster;
    return j !== undefined && j !== this.state.state.clusterId ? j : undefined;
  }

  /**
   * Runs until `signal` aborts. Never throws for connection trouble or refusals (it retries with
   * backoff, a foreign cluster included); throws only when a controller finds the Hello invalid,
   * which retrying cannot mend. Leaves the host's watchdog as it is when it returns.
   */
  async run(signal: AbortSignal): Promise<void> {
    await this.watchdog.inspect();
    const planner = new ReconnectPlanner(this.options.controllers, this.options);
    while (!signal.aborted) {
      const target = planner.current;
      const end = await this.session(target, signal).catch((e: unknown): SessionEnd => ({ kind: "ended", why: (e as Error).message, welcomed: false, lastedMs: 0 }));
      if (signal.aborted) break;
      switch (end.kind) {
        case "rejected":
          if (end.reason === RejectReason.REJECT_REASON_INVALID_HELLO) {
            this.log.error({ controller: target, message: end.message }, "controller rejected this agent's Hello");
            throw new Error(`controller rejected the agent: ${end.message}`);
          }
          if (end.reason === RejectReason.REJECT_REASON_DUPLICATE_HOST) {
            this.log.warn(
              { controller: target, message: end.message },
              `controller refused this agent: another agent may be running with the same --host-id '${this.options.hostId}' (on this or another machine); backing off longer than usual`,
            );
          } else if (!end.byAgent) {
            // FOREIGN_CLUSTER: the controller's message says how to move the host; STALE_EPOCH and
            // anything else likewise name what is wrong. Retried with backoff, never fatal.
            this.log.error({ controller: target, reason: RejectReason[end.reason] ?? end.reason, message: end.message }, "controller rejected this agent");
          }
          break;
        case "ended":
          this.log[end.welcomed ? "warn" : "info"]({ controller: target, why: end.why }, "stream to controller ended");
          break;
        case "unreachable":
          this.log.info({ controller: target, why: end.why }, "controller unreachable");
          break;
        case "hypervisor":
          this.log.warn({ why: end.why }, "cannot say Hello: the hypervisor is unreadable");
          break;
        case "not-leader":
          break;
      }
      const plan = planner.next(end);
      this.metrics.reconnect();
      this.log[end.kind === "not-leader" ? "info" : "debug"]({ from: target, to: plan.target, waitMs: Math.round(plan.waitMs), note: plan.note }, "reconnecting");
      if (plan.waitMs > 0) await sleepUnlessAborted(plan.waitMs, signal);
    }
  }

  private async session(address: string, signal: AbortSignal): Promise<SessionEnd> {
    const client = new AgentServiceClient(address, channelCredentialsOf(this.tls), {
      ...grpcClientOptions(),
      // A channel of its own: grpc-js shares subchannels between channels by default, and a shared
      // one still backing off from an earlier failure would fail a fresh connect at once.
      "grpc.use_local_subchannel_pool": 1,
    });
    // Read the hypervisor while the connection is made; a read still running for an earlier try
    // is reused, so that fast retries do not pile reads up on a slow hypervisor.
    const hello = (this.helloRead ??= this.hello().finally(() => (this.helloRead = undefined)));
    hello.catch(() => undefined);
    try {
      const reached = await connect(client, this.options.connectTimeoutMs, signal);
      if (reached !== undefined) return { kind: "unreachable", why: `cannot reach ${address}: ${reached}` };
      let message: Hello;
      try {
        message = await hello;
      } catch (e) {
        return { kind: "hypervisor", why: (e as Error).message };
      }
      return await this.stream(client.connect(), address, message, signal);
    } finally {
      client.close();
    }
  }

  /** What to make of a Welcome, given the stored cluster id and `joinCluster`. */
  private judgeWelcome(welcome: Welcome): WelcomeVerdict {
    const stored = this.state.state.clusterId;
    const theirs = welcome.clusterId;
    const joining = this.joining;
    if (joining !== undefined) {
      if (theirs === joining) return { accept: true, adopt: true };
      return {
        accept: false,
        message: theirs
          ? `this agent is joining cluster '${joining}' (--join-cluster) but the controller belongs to cluster '${theirs}': check --controller`
          : `this agent is joining cluster '${joining}' (--join-cluster) but the controller does not say its cluster (an older controller?): check --controller`,
      };
    }
    if (theirs === "") {
      // A controller from before cluster ids: nothing to check or adopt; epochs guard as before.
      return stored ? { accept: true, adopt: false, warning: `the controller does not say its cluster; this agent belongs to '${stored}' and cannot check` } : { accept: true, adopt: false };
    }
    if (stored === "") return { accept: true, adopt: true };
    if (stored === theirs) return { accept: true, adopt: false };
    return {
      accept: false,
      message:
        `this agent belongs to cluster '${stored}' but the controller belongs to cluster '${theirs}'; refusing it. ` +
        `Check --controller; to move this host to cluster '${theirs}' on purpose, restart the agent with --join-cluster ${theirs}`,
    };
  }

  /** Adopts the Welcome's cluster and epoch, durably, before any of its commands runs. */
  private async adopt(welcome: Welcome): Promise<void> {
    const before = { clusterId: this.state.state.clusterId, epoch: this.executor.leaderEpoch };
    await this.state.update({ clusterId: welcome.clusterId, lastLeaderEpoch: welcome.leaderEpoch });
    this.executor.resetEpoch(welcome.leaderEpoch);
    this.log.info(
      { clusterId: welcome.clusterId, previousClusterId: before.clusterId || undefined, epoch: welcome.leaderEpoch, previousEpoch: before.epoch },
      before.clusterId ? "moved to another cluster (--join-cluster); its leader's epoch replaces the old cluster's" : "joined the cluster; its leader's epoch replaces any epoch kept from before",
    );
  }

  private stream(call: ClientDuplexStream<AgentMessage, ControllerMessage>, address: string, hello: Hello, signal: AbortSignal): Promise<SessionEnd> {
    const startedAt = Date.now();
    const writer = new StreamWriter(call);
    // Console sessions live on this stream only: a reconnect starts with none (console-sessions.ts).
    const consoles = new ConsoleSessions(this.driver, writer, this.log);
    let reportTimer: NodeJS.Timeout | undefined;
    let tickTimer: NodeJS.Timeout | undefined;
    /** Set by a Welcome: resolves true once it is obeyed (its cluster adopted), false if not. Commands wait on it. */
    let accepted: Promise<boolean> | undefined;
    let welcomed = false;
    let lastInventory = inventorySignature(hello.inventory?.domains ?? []);

    return new Promise<SessionEnd>((resolve) => {
      let settled = false;
      const finish = (end: SessionEnd): void => {
        if (settled) return;
        settled = true;
        clearTimeout(answerTimer);
        clearInterval(reportTimer);
        clearInterval(tickTimer);
        clearTimeout(eventReport);
        unsubscribe();
        if (welcomed) {
          this.#connectedTo = undefined;
          this.metrics.connected(false);
        }
        signal.removeEventListener("abort", onAbort);
        consoles.closeAll();
        writer.close();
        call.cancel();
        resolve(end);
      };
      const ended = (why: string, silent = false): void =>
        finish({ kind: "ended", why, welcomed, lastedMs: Date.now() - startedAt, ...(silent ? { silent } : {}) });
      const onAbort = (): void => ended("agent stopping");
      signal.addEventListener("abort", onAbort);
      let answerTimer: NodeJS.Timeout | undefined;

      // A stream can end by error, end, or close; all mean "gone" and cleanup is idempotent.
      call.on("error", (e) => ended(e.message));
      call.on("end", () => ended("controller ended the stream"));
      call.on("close", () => ended("stream closed"));

      // Silence: the controller answers every Report with a Heartbeat, so a controller that owes an
      // answer for long is dead or frozen behind a live connection (keepalive alone would notice
      // much later). Counted from the first Report still unanswered, not from the last message: a
      // slow hypervisor delays Reports, and a controller with nothing to answer is not silent.
      // Monotonic clock: a wall-clock step is neither silence nor a stall.
      let lastHeard = performance.now();
      let unansweredSince: number | undefined;
      let silenceLimitMs = Infinity;
      let resultsSent = 0;
      const sendReport = (report: AgentMessage): void => {
        if (settled) return;
        unansweredSince ??= performance.now();
        writer.write(report);
        this.watchdog.reportSent();
        this.metrics.reportSent();
      };
      // One report at a time (periodic and event-driven ones would otherwise cross, an older read
      // arriving after a newer one); a report asked for meanwhile runs once the current one ends.
      let reporting = false;
      let reportAgain = false;
      const reportOnce = (): void => {
        if (reporting) {
          reportAgain = true;
          return;
        }
        reporting = true;
        void report()
          .catch((e: unknown) => this.log.warn({ err: e }, "could not read the hypervisor for a report"))
          .finally(() => {
            reporting = false;
            if (reportAgain && !settled) {
              reportAgain = false;
              reportOnce();
            }
          });
      };
      const report = async (): Promise<void> => {
        let seen = resultsSent;
        // The inventory read is the health check too; the probe is asked only when it fails, for
        // why. An unreadable hypervisor is reported as such, never as an empty inventory: the
        // controller would take that for domains that vanished.
        let domains: Domain[] | undefined;
        let listError: unknown;
        try {
          domains = await this.driver.list();
        } catch (e) {
          listError = e;
        }
        if (!domains) {
          const health = await this.driver.health();
          const message = health.available ? `the hypervisor answers but its domains cannot be listed: ${listError instanceof Error ? listError.message : String(listError)}` : health.message;
          sendReport({ msg: { $case: "report", value: { usage: undefined, inventory: undefined, hypervisor: { available: false, message: message.slice(0, Limits.maxFactLength) }, vmUsage: [], ...this.storage.lastRead() } } });
          return;
        }
        const hypervisor = { available: true, message: "" };
        // Usage from the hypervisor's counters; without them, what the running domains were given.
        const stats = await this.driver.statsAll().catch(() => undefined);
        // A command result sent while we read may be newer than what we read, and an inventory
        // arriving after it would set the controller back (a VM just started shown stopped until
        // the next report): read again, and if results keep coming, send no inventory this time.
        for (let attempt = 0; resultsSent !== seen && attempt < 2 && domains; attempt++) {
          seen = resultsSent;
          domains = await this.driver.list().catch(() => undefined);
        }
        if (settled) return;
        if (!domains || resultsSent !== seen) {
          sendReport({ msg: { $case: "report", value: { usage: undefined, inventory: undefined, hypervisor, vmUsage: [], ...this.storage.lastRead() } } });
          return;
        }
        const storage = await this.storage.read();
        if (settled) return;
        const domainUsage = stats ? this.usage.observe(domains, stats, Date.now()) : usageOf(domains);
        // Data volumes take pool space whether attached or not (a VM's own disk counts while it runs).
        const usage = { ...domainUsage, diskGib: domainUsage.diskGib + storage.volumes.reduce((sum, v) => sum + v.sizeGib, 0) };
        const vmUsage = stats ? this.usage.perVm() : [];
        const signature = inventorySignature(domains);
        const inventory: Inventory | undefined = signature === lastInventory ? undefined : { domains };
        lastInventory = signature;
        sendReport({ msg: { $case: "report", value: { usage, inventory, hypervisor, vmUsage, ...storage } } });
      };
      // Reports are periodic, and also prompt after the hypervisor's own events (a crash, a
      // libvirtd restart), coalesced so that a burst of events costs one report.
      let eventReport: NodeJS.Timeout | undefined;
      const reportSoon = (): void => {
        if (!welcomed || eventReport || settled) return;
        eventReport = setTimeout(() => {
          eventReport = undefined;
          reportOnce();
        }, EVENT_REPORT_DELAY_MS);
      };
      const unsubscribe = this.driver.subscribe((event) => {
        if (event.type === "health") {
          this.log[event.health.available ? "info" : "warn"]({ available: event.health.available, message: event.health.message || undefined }, "hypervisor availability changed");
        } else {
          this.log.debug({ vmId: event.vmId, kind: event.kind }, "domain event");
        }
        reportSoon();
      });

      /** Starts what a Welcome that is obeyed starts: liveness ticks, reports, the watchdog. */
      const begin = (welcome: Welcome): void => {
        welcomed = true;
        this.#connectedTo = address;
        this.metrics.connected(true);
        const interval = Math.max(100, welcome.reportIntervalMs || 2_000);
        silenceLimitMs = interval * 3 + 1_000;
        const tickMs = Math.max(100, Math.floor(interval / 2));
        const stallMs = Math.max(MIN_STALL_MS, tickMs);
        const heartbeat: AgentMessage = { msg: { $case: "heartbeat", value: { leaderEpoch: welcome.leaderEpoch } } };
        this.watchdog.configure(welcome.fenceTimeoutMs);
        this.log.info(
          { controller: address, epoch: welcome.leaderEpoch, controllerId: welcome.controllerId, clusterId: welcome.clusterId || undefined, fenceTimeoutMs: welcome.fenceTimeoutMs || undefined },
          "connected",
        );
        // The liveness tick: an AgentHeartbeat that never waits on the hypervisor (the controller
        // counts a host silent from its last message of any kind), the check of the controller's
        // silence, and the check of the agent's own.
        let lastTick = performance.now();
        tickTimer = setInterval(() => {
          const now = performance.now();
          const lateMs = now - lastTick - tickMs;
          lastTick = now;
          if (lateMs > stallMs) {
            // Frozen ourselves (SIGSTOP, starved loop): whatever the controller did meanwhile could
            // not reach us, so its silence starts now; it is not left, nor suspected, for it.
            this.log.warn({ controller: address, stalledMs: Math.round(lateMs) }, "the agent was stalled (stopped or starved); not counting that time as the controller's silence");
            lastHeard = now;
            if (unansweredSince !== undefined) unansweredSince = now;
            this.watchdog.stalled();
          } else if (unansweredSince !== undefined && now - unansweredSince > silenceLimitMs) {
            ended(`controller silent for ${Math.round(now - lastHeard)} ms (a report unanswered for ${Math.round(now - unansweredSince)} ms)`, true);
            return;
          }
          writer.write(heartbeat);
        }, tickMs);
        // Checked on the tick, not in the report: a report stuck on a slow hypervisor must not keep
        // the agent on a dead controller, nor delay its heartbeats.
        reportTimer = setInterval(reportOnce, interval);
      };

      call.on("data", (message: ControllerMessage) => {
        lastHeard = performance.now();
        unansweredSince = undefined;
        const msg = message.msg;
        if (!msg) return;
        // Only a Heartbeat pets the watchdog: it answers one of our own messages, so it proves the
        // leader heard us no earlier than it was sent, and the controller's fence rule (last heard
        // + timeout + margin) then holds. A command proves less: it may leave a leader that has not
        // heard us for a while.
        if (welcomed && msg.$case === "heartbeat") this.watchdog.heard();
        switch (msg.$case) {
          case "welcome": {
            if (accepted) return; // one Welcome per stream
            clearTimeout(answerTimer);
            const welcome = msg.value;
            const verdict = this.judgeWelcome(welcome);
            if (!verdict.accept) {
              this.log.error({ controller: address, clusterId: this.clusterId || undefined, controllerClusterId: welcome.clusterId, joinCluster: this.options.joinCluster }, verdict.message);
              accepted = Promise.resolve(false);
              finish({ kind: "rejected", reason: RejectReason.REJECT_REASON_FOREIGN_CLUSTER, message: verdict.message, byAgent: true });
              return;
            }
            if (verdict.warning) this.log.warn({ controller: address }, verdict.warning);
            accepted = (async () => {
              if (verdict.adopt) await this.adopt(welcome);
              else this.executor.observeEpoch(welcome.leaderEpoch);
              if (settled) return false;
              begin(welcome);
              return true;
            })().catch((e: unknown) => {
              this.log.error({ err: e, clusterId: welcome.clusterId }, "could not save the cluster id; obeying no controller until it is saved");
              ended(`cannot save the agent state: ${(e as Error).message}`);
              return false;
            });
            break;
          }
          case "notLeader":
            finish({ kind: "not-leader", leader: msg.value.leaderAddress });
            break;
          case "reject":
            finish({ kind: "rejected", reason: msg.value.reason, message: msg.value.message });
            break;
          case "heartbeat":
            break;
          case "console":
            // Only for the leader whose Welcome is obeyed, as commands; not queued behind them.
            if (welcomed) consoles.handle(msg.value);
            break;
          case "command": {
            // Commands wait for their Welcome to be obeyed (its cluster id saved); they stay in
            // arrival order, all waiting on the same promise.
            if (!accepted) return;
            const command = msg.value;
            void accepted.then((ok) => {
              if (!ok || settled) return;
              // A migration's progress goes out on this stream while its command runs.
              const progress: MigrationProgressSink = (vmId, migrationId, p) => {
                if (settled) return;
                writer.write({ msg: { $case: "migrationProgress", value: { vmId, migrationId, progress: { ...p, updatedAtMs: Date.now() } } } });
              };
              // An abort is not queued behind the commands it may be there to cancel.
              const run = command.action?.$case === "abortMigration" ? this.handleCommand(command, progress) : this.limit(() => this.handleCommand(command, progress));
              void run.then((result) => {
                if (settled) return;
                resultsSent++;
                writer.write({ msg: { $case: "result", value: result } });
              });
            });
            break;
          }
        }
      });

      writer.write({ msg: { $case: "hello", value: hello } });
      answerTimer = setTimeout(() => ended("no answer to Hello"), HELLO_ANSWER_TIMEOUT_MS);
    });
  }

  private async hello(): Promise<Hello> {
    const [facts, domains] = await Promise.all([this.driver.hostFacts(), this.driver.list()]);
    return {
      hostId: this.options.hostId,
      bootId: this.bootId,
      capacity: facts.capacity,
      labels: this.options.labels,
      inventory: { domains },
      agentVersion: AGENT_VERSION,
      driver: facts.driver,
      // An epoch is compared only within one cluster: an agent of no cluster yet (or joining
      // another) has none that means anything to this controller. Its own epoch still guards
      // commands until a Welcome with a cluster id replaces it.
      lastLeaderEpoch: this.joining !== undefined || this.clusterId === "" ? 0 : this.executor.leaderEpoch,
      allocationRatio: this.options.allocationRatio,
      reserved: this.options.reserved,
      facts: {
        cpuModel: facts.cpuModel.slice(0, Limits.maxFactLength),
        hypervisorVersion: facts.hypervisorVersion.slice(0, Limits.maxFactLength),
        numaCells: facts.numaCells.slice(0, Limits.maxNumaCells),
      },
      hypervisor: { available: true, message: "" },
      clusterId: this.joining ?? this.clusterId,
      ...(await this.storage.read()),
    };
  }

  private async handleCommand(command: Command, onProgress?: MigrationProgressSink) {
    const started = performance.now();
    const result = await this.executor.execute(command, onProgress);
    this.metrics.commandExecuted(command.action?.$case ?? "", result.ok, (performance.now() - started) / 1000);
    const log = result.ok ? this.log.debug.bind(this.log) : this.log.warn.bind(this.log);
    log({ vmId: command.vmId, generation: command.generation, epoch: command.leaderEpoch, action: command.action?.$case, ok: result.ok, error: result.errorMessage || undefined }, "command applied");
    return result;
  }

  /** Bounds the commands running at once. */
  private async limit<T>(fn: () => Promise<T>): Promise<T> {
    while (this.running >= this.options.maxConcurrentCommands) await new Promise<void>((r) => this.waiting.push(r));
    this.running++;
    try {
      return await fn();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }
}

/**
 * What makes an inventory worth sending again: a domain's id, state and generation, and what the
 * operator reads off it — its NICs' addresses (a DHCP lease arriving after boot) and its volumes.
 */
function inventorySignature(domains: readonly Domain[]): string {
  return domains
    .map((d) => {
      const nics = d.interfaces.map((i) => `${i.mac}=${i.ipAddresses.join("+")}`).join(";");
      return `${d.vmId}:${d.state}:${d.generation}:${d.volumeIds.join("+")}:${nics}`;
    })
    .sort()
    .join(",");
}

/** What the running domains were given: the usage to report when the hypervisor gives no counters. */
function usageOf(domains: readonly Domain[]) {
  return domains
    .filter((d) => d.state === DomainState.DOMAIN_STATE_RUNNING && d.resources)
    .reduce((sum, d) => addResources(sum, d.resources!), { ...ZERO });
}

/**
 * Connects the client's channel: resolves undefined once READY, or why not. An address that cannot
 * be reached now (refused, unresolvable: TRANSIENT_FAILURE) fails at once; only a connection that
 * hangs (grpc-js has no handshake timeout) waits out `timeoutMs`.
 */
function connect(client: Client, timeoutMs: number, signal: AbortSignal): Promise<string | undefined> {
  const channel = client.getChannel();
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve) => {
    let done = false;
    const end = (why: string | undefined): void => {
      if (done) return;
      done = true;
      signal.removeEventListener("abort", onAbort);
      resolve(why);
    };
    const onAbort = (): void => end("agent stopping");
    signal.addEventListener("abort", onAbort);
    const check = (): void => {
      if (done) return;
      const state = channel.getConnectivityState(true);
      if (state === connectivityState.READY) return end(undefined);
      if (state === connectivityState.TRANSIENT_FAILURE) return end("connection failed (refused or unresolvable)");
      if (state === connectivityState.SHUTDOWN) return end("channel shut down");
      if (Date.now() >= deadline) return end(`no connection within ${timeoutMs} ms`);
      channel.watchConnectivityState(state, deadline, (e) => (e ? end(`no connection within ${timeoutMs} ms`) : check()));
    };
    check();
  });
}

/** The host's images, networks and data volumes, as Hello and every Report carry them. */
interface HostStorage {
  images: HostImage[];
  networks: HostNetwork[];
  volumes: HostVolume[];
}

/**
 * Reads the host's images, networks and volumes for a report. Each list replaces the controller's
 * view whole, so a list that cannot be read now is sent as last read, never as empty: an empty
 * volume list would tell the controller a volume being deleted is gone while it is still there.
 */
export class HostStorageReader {
  private last: HostStorage = { images: [], networks: [], volumes: [] };

  constructor(
    private readonly driver: HypervisorDriver,
    private readonly log: Logger,
  ) {}

  async read(): Promise<HostStorage> {
    const [images, networks, volumes] = await Promise.all([
      this.driver.listImages().catch((e: unknown) => this.stale("images", e, this.last.images)),
      this.driver.listNetworks().catch((e: unknown) => this.stale("networks", e, this.last.networks)),
      this.driver.listVolumes().catch((e: unknown) => this.stale("volumes", e, this.last.volumes)),
    ]);
    this.last = {
      images: images.slice(0, Limits.maxHostImages),
      networks: networks.slice(0, Limits.maxHostNetworks),
      volumes: volumes.slice(0, Limits.maxHostVolumes),
    };
    return this.last;
  }

  /** What the last `read` found (empty lists before the first), for a report that reads nothing. */
  lastRead(): HostStorage {
    return this.last;
  }

  private stale<T>(what: string, e: unknown, last: T): T {
    this.log.warn({ err: e }, `could not list the host's ${what}; reporting them as last read`);
    return last;
  }
}
