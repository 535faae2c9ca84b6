import { Server } from "@grpc/grpc-js";
import { AgentServiceService, ClusterServiceService, hardenService, HostFailurePolicy, HostState } from "@berth/api";
import { grpcServerOptions, invalidArgument, ReloadingTlsIdentity, serverCredentialsOf, startAdminServer, type AdminRoute, type AdminServer } from "@berth/core";
import { campaign, readLeader, type ClusterStore, type Leadership } from "@berth/store";
import type { Logger } from "pino";
import { ConsoleRelay } from "./console-relay.js";
import type { AgentSession } from "./agent-session.js";
import { authorizedClusterService } from "./authorization.js";
import { agentService, closeSilentSessions, type AgentServiceDeps, type LeadingDeps } from "./agent-service.js";
import { ClusterIdentity } from "./cluster-identity.js";
import { HostManager } from "./host-manager.js";
import { MigrationManager } from "./migration-manager.js";
import { Rebalancer } from "./rebalancer.js";
import { ClusterState } from "./cluster-state.js";
import { EventLog } from "./event-log.js";
import { clusterService } from "./cluster-service.js";
import { FencedWriter } from "./fenced-writer.js";
import { addReflection, ControllerHealth } from "./health.js";
import { healthRoutes } from "./admin-routes.js";
import { dashboardRoutes } from "./dashboard/routes.js";
import { ControllerMetrics, metricsRoute, NO_METRICS } from "./metrics.js";
import { logVmEvents } from "./lifecycle-log.js";
import { Keys } from "./keys.js";
import type { ResolvedControllerOptions } from "./options.js";
import { Placer } from "./placement.js";
import { Reconciler } from "./reconciler.js";
import { ScaleGroupManager } from "./scale-group-manager.js";
import { VolumeManager } from "./volume-manager.js";

interface Leading extends LeadingDeps {
  leadership: Leadership;
}

/** How often the host lifecycle judges every host (detection latency is at most this more). */
const HOST_TICK_MS = 250;

/** The value stored under the election key: who leads and where to reach it. */
interface LeaderRecord {
  id: string;
  address: string;
}

/**
 * berth-controller: serves the operator and agent APIs, campaigns for leadership and, while it
 * leads, places VMs and reconciles hosts. A controller that loses leadership does not try to carry
 * on: it reports `deposed` and the process exits, to be restarted as a follower (as
 * kube-controller-manager does), so no state from its term can leak into the next.
 */
export class Controller {
  private leading: Leading | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly campaignAbort = new AbortController();
  private stopping = false;
  private deposedHandlers: ((why: string) => void)[] = [];
  /** The admin HTTP port (--admin-listen), when one is served. */
  #admin: AdminServer | undefined;
  /** This controller's Prometheus metrics (its own registry). */
  #metrics: ControllerMetrics | undefined;

  private constructor(
    readonly options: ResolvedControllerOptions,
    private readonly store: ClusterStore,
    private readonly state: ClusterState,
    private readonly server: Server,
    /** The port the server is bound to (useful with port 0). */
    readonly port: number,
    private readonly log: Logger,
    private readonly sessions: Map<string, AgentSession>,
    /** Places and commits new VMs (read by tests and diagnostics). */
    readonly placer: Placer,
    /** The server's TLS identity, re-read when its files change; undefined when plaintext. */
    readonly tls: ReloadingTlsIdentity | undefined,
    /** What grpc.health.v1.Health answers: the process, and whether this one leads. */
    private readonly health: ControllerHealth,
    /** The cluster events this controller has seen (WatchEvents, the dashboard's feed). */
    readonly events: EventLog,
  ) {}

  /**
   * Loads the cluster state, starts serving (as a follower) and campaigns in the background.
   * Throws when the listen address cannot be bound or the store cannot be read.
   */
  static async start(options: ResolvedControllerOptions, store: ClusterStore, log: Logger): Promise<Controller> {
    const now = (): number => Date.now();
    // Read before anything else starts: bad TLS files fail the start, naming the file.
    const tls = options.tls
      ? new ReloadingTlsIdentity(options.tls, {
          reloaded: (c) => log.info({ subject: c.subject, serial: c.serial, notAfter: c.notAfter }, "reloaded the TLS certificate; new connections use it"),
          rejected: (why) => log.warn({ why }, "the TLS files changed but do not check out; still using the previous ones"),
        })
      : undefined;
    if (tls) log.info({ subject: tls.certificate.subject, notAfter: tls.certificate.notAfter }, "serving mutual TLS: agents are known by their certificates, operators by their roles");
    else log.warn("serving PLAINTEXT (--insecure): anyone who reaches the port may act as any host or operator; use --tls-ca/--tls-cert/--tls-key on a network");
    const state = new ClusterState(store);
    await state.start();
    // After the first list: records that exist already make no events.
    const events = new EventLog(state, now);
    const server = new Server(grpcServerOptions());
    let controller: Controller | undefined;
    const sessions = new Map<string, AgentSession>();
    const metrics = new ControllerMetrics();
    /** A host's figures from its live agent stream (ListHosts and the metrics read the same). */
    const liveHost = (id: string) => {
      const s = sessions.get(id);
      return s?.isLive ? { usage: s.usage, lastHeardMs: s.lastHeardMs, hypervisor: s.hypervisor, orphans: s.orphans, holdings: s.holdings } : undefined;
    };
    const leaderAddress = async (): Promise<string> => {
      try {
        const leader = await readLeader(store, Keys.leader);
        return leader ? (JSON.parse(String(leader.value)) as LeaderRecord).address : "";
      } catch {
        return "";
      }
    };
    // One relay: the cluster service opens operators' sessions, the agent service feeds them.
    const consoles = new ConsoleRelay({ state, sessions, leading: () => controller?.leading, log });
    const agentDeps: AgentServiceDeps = {
      consoles,
      leading: () => controller?.leading,
      leaderAddress,
      state,
      sessions,
      reportIntervalMs: options.reportIntervalMs,
      hostSilenceTimeoutMs: options.hostSilenceTimeoutMs,
      controllerId: options.controllerId,
      log,
      now,
      onPlacementChange: (hostId) => placer.hostChanged(hostId),
      metrics,
    };
    const placer = new Placer(
      store,
      state,
      (id) => sessions.get(id)?.acceptsPlacements === true && state.host(id)?.state === HostState.HOST_STATE_READY,
      now,
      () => controller?.leading?.hosts.reconnecting() ?? { waiting: false, missing: 0 },
      options.maxCreatesInFlight,
      metrics,
      // What a host offers VMs, from its live agent's reports (its session tells the Placer when it changes).
      (id) => {
        const s = sessions.get(id);
        return s?.isLive ? { networks: s.activeNetworks, images: s.imageIds } : undefined;
      },
    );
    // Hardened: a request's bytes are checked before decoding, and a malformed one reaches the
    // handler as a marker (answered INVALID_ARGUMENT / Reject) instead of grpc-js's INTERNAL.
    server.addService(hardenService(AgentServiceService), agentService(agentDeps));
    server.addService(
      hardenService(ClusterServiceService),
      authorizedClusterService(clusterService({
        writer: () => controller?.leading?.writer,
        leading: () => controller?.leading,
        sessions,
        consoles,
        controllerId: options.controllerId,
        leaderAddress,
        store,
        state,
        placer,
        events,
        liveHost,
        log,
      }), log),
    );
    // Health and reflection are not wrapped by authorizedClusterService: any peer the TLS layer
    // lets in (a certificate of the cluster's CA, whatever its role) or any peer under --insecure
    // may ask; they tell nothing a viewer could not already learn.
    const health = new ControllerHealth();
    health.addToServer(server);
    addReflection(server);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(options.listen, serverCredentialsOf(tls), (err, p) => (err ? reject(err) : resolve(p))),
    ).catch((e: unknown) => {
      tls?.close();
      throw e;
    });
    // With port 0 the kernel chose the port: advertise that one.
    const advertise = options.advertise.replace(/:0$/, `:${port}`);
    controller = new Controller({ ...options, advertise }, store, state, server, port, log, sessions, placer, tls, health, events);
    controller.#metrics = metrics;
    metrics.bind({ state, placer, liveHost, agentStreams: () => sessions.size, isLeader: () => controller?.isLeader ?? false });

    // ── Admin HTTP routes: every route of the admin port (--admin-listen), in this one place. ──
    const adminRoutes: AdminRoute[] = [
      ...healthRoutes({ store, state, isLeader: () => controller?.isLeader ?? false }),
      metricsRoute(metrics.registry),
      ...dashboardRoutes({ state, events, placer, liveHost, sessions, leading: () => controller?.leading, leaderAddress, controllerId: options.controllerId, log }),
    ];
    if (options.adminListen !== undefined) {
      try {
        controller.#admin = await startAdminServer({
          listen: options.adminListen,
          routes: adminRoutes,
          ...(options.adminTls && tls ? { tls } : {}),
          log,
        });
      } catch (e) {
        await controller.stop();
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EADDRINUSE" || code === "EACCES" || code === "EADDRNOTAVAIL") {
          throw invalidArgument("admin_listen", `cannot listen on ${options.adminListen}: ${code === "EADDRINUSE" ? "the address is in use" : code}`);
        }
        throw e;
      }
      const admin = controller.#admin;
      log.info({ adminListen: options.adminListen, port: admin.port, https: options.adminTls }, `admin HTTP on ${admin.url}/ (/healthz, /metrics${options.adminTls ? "; an admin client certificate may act" : "; read-only"})`);
    }
    health.serving();
    controller.timers.push(setInterval(() => closeSilentSessions(agentDeps), Math.max(500, options.reportIntervalMs / 2)));
    log.info({ listen: options.listen, port, controllerId: options.controllerId }, "controller serving; campaigning for leadership");
    void controller.campaign();
    return controller;
  }

  /** Called once when this controller stops leading (the process should exit). */
  onDeposed(handler: (why: string) => void): void {
    this.deposedHandlers.push(handler);
  }

  /** The admin HTTP port's bound port (useful with port 0); undefined when none is served. */
  get adminPort(): number | undefined {
    return this.#admin?.port;
  }

  /** This controller's Prometheus registry (what /metrics serves). */
  get metricsRegistry(): ControllerMetrics["registry"] | undefined {
    return this.#metrics?.registry;
  }

  get isLeader(): boolean {
    return this.leading !== undefined;
  }

  private async campaign(): Promise<void> {
    let leadership: Leadership;
    try {
      const value = JSON.stringify({ id: this.options.controllerId, address: this.options.advertise } satisfies LeaderRecord);
      leadership = await campaign(this.store, {
        key: Keys.leader,
        value,
        ttlMs: this.options.leaderTtlMs,
        signal: this.campaignAbort.signal,
      });
    } catch (e) {
      if (!this.stopping) this.deposed(`campaign failed: ${(e as Error).message}`);
      return;
    }
    if (this.stopping) {
      await leadership.resign().catch(() => undefined);
      return;
    }
    const writer = new FencedWriter(this.store, leadership, (why) => this.deposed(why), this.#metrics ?? NO_METRICS);
    let identity: ClusterIdentity;
    try {
      identity = await ClusterIdentity.load(this.store, writer, () => Date.now(), this.log);
    } catch (e) {
      if (!this.stopping) this.deposed(`could not read the cluster identity: ${(e as Error).message}`);
      return;
    }
    const volumes = new VolumeManager({
      store: this.store,
      state: this.state,
      sessions: this.sessions,
      writer,
      placer: this.placer,
      commandEpoch: () => identity.epoch,
      commandResendMs: this.options.commandResendMs,
      log: this.log,
      now: () => Date.now(),
    });
    const reconciler = new Reconciler({
      state: this.state,
      sessions: this.sessions,
      writer,
      commandResendMs: this.options.commandResendMs,
      log: this.log,
      now: () => Date.now(),
      defaultPolicy: () => this.state.clusterConfig()?.defaultOnHostFailure ?? HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED,
      commandEpoch: () => identity.epoch,
      volumes,
    });
    const o = this.options;
    const hosts = new HostManager({
      state: this.state,
      sessions: this.sessions,
      writer,
      placer: this.placer,
      timers: {
        suspectAfterMs: o.hostSuspectAfterMs,
        downAfterMs: o.hostDownAfterMs,
        // Without a watchdog nothing is ever known to be off: hosts are never fenced by time.
        fenceTimeoutMs: o.fenceTimeoutMs > 0 ? o.fenceTimeoutMs : Number.MAX_SAFE_INTEGER / 4,
        fenceMarginMs: o.fenceMarginMs,
      },
      limits: {
        hostsPerInterval: o.failoverHostsPerInterval,
        rateIntervalMs: o.failoverRateIntervalMs,
        maxUnreadyFraction: o.failoverMaxUnreadyFraction,
        // Hosts back from a mass failure reconnect within moments; the down timeout is ample.
        settleAfterMassFailureMs: o.hostDownAfterMs,
      },
      tickMs: HOST_TICK_MS,
      electedAtMs: Date.now(),
      defaultPolicy: () => this.state.clusterConfig()?.defaultOnHostFailure ?? HostFailurePolicy.HOST_FAILURE_POLICY_UNSPECIFIED,
      onHostChanged: (id) => reconciler.markDirty(id),
      log: this.log,
      now: () => Date.now(),
    });
    const migrations = new MigrationManager({
      store: this.store,
      state: this.state,
      sessions: this.sessions,
      writer,
      placer: this.placer,
      hosts,
      commandEpoch: () => identity.epoch,
      commandResendMs: o.commandResendMs,
      tickMs: HOST_TICK_MS,
      log: this.log,
      now: () => Date.now(),
    });
    const rebalancer = new Rebalancer({ state: this.state, sessions: this.sessions, placer: this.placer, migrations, log: this.log, now: () => Date.now() });
    const scaleGroups = new ScaleGroupManager({ store: this.store, state: this.state, sessions: this.sessions, writer, placer: this.placer, log: this.log, now: () => Date.now() });
    this.leading = { leadership, writer, reconciler, hosts, migrations, rebalancer, volumes, scaleGroups, identity, fenceTimeoutMs: o.fenceTimeoutMs };
    this.log.info({ epoch: identity.epoch, clusterId: identity.id, era: identity.cluster.era || undefined }, "elected leader");
    this.health.leading(true);
    // The leader alone writes the VM events to its log (followers keep the same events): one line
    // per step for the cluster.
    logVmEvents(this.events, this.log);
    void leadership.lost.then((e) => this.deposed(`leadership lost: ${e.message}`));

    this.state.subscribe((c) => {
      migrations.poke();
      if (c.kind === "host") {
        reconciler.markDirty(c.host.id);
        return;
      }
      if (c.kind === "migration") {
        reconciler.markDirty(c.migration.sourceHost);
        reconciler.markDirty(c.migration.targetHost);
        return;
      }
      if (c.kind === "volume") {
        // Its host's volume commands (create, delete) and the record's removal are planned there.
        reconciler.markDirty(c.volume.hostId);
        if (c.previous) reconciler.markDirty(c.previous.hostId);
        return;
      }
      if (c.kind === "image" || c.kind === "scalegroup") return;
      reconciler.markDirty(c.vm.hostId);
      if (c.previous && c.previous.hostId !== c.vm.hostId) reconciler.markDirty(c.previous.hostId);
    });
    this.timers.push(setInterval(() => reconciler.markAll(), this.options.resyncIntervalMs));
    reconciler.markAll();
  }

  private deposed(why: string): void {
    if (this.stopping) return;
    this.log.error({ why }, "no longer the leader");
    this.health.leading(false);
    const handlers = this.deposedHandlers;
    this.deposedHandlers = [];
    for (const h of handlers) h(why);
  }

  /**
   * Stops serving, closes agent streams and resigns leadership so a successor can take over at
   * once. Idempotent. Does not close the store (the caller owns it).
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.health.stopping();
    // The admin port goes first: its /healthz must not say ok for a controller on its way out
    // (and its event streams end).
    await this.#admin?.close();
    this.#metrics?.close();
    this.campaignAbort.abort();
    for (const t of this.timers) clearTimeout(t);
    const leading = this.leading;
    this.leading = undefined;
    leading?.rebalancer.stop();
    leading?.scaleGroups.stop();
    await leading?.migrations.stop();
    await leading?.hosts.stop();
    await leading?.reconciler.stop();
    for (const s of this.sessions.values()) s.close();
    this.sessions.clear();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, 2_000);
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    await leading?.leadership.resign().catch((e: unknown) => this.log.warn({ err: e }, "resign failed"));
    this.events.stop();
    await this.state.stop();
    this.tls?.close();
  }
}
