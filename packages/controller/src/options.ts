import { hostname } from "node:os";
import { invalidArgument, parseEtcdEndpoints, parseHostPort, type TlsFiles } from "@berth/core";

/** How a controller is run. Every field but `listen` has a default. */
export interface ControllerOptions {
  /** host:port the gRPC server binds. */
  listen: string;
  /** host:port agents and operators are told to use when this controller leads (default: listen). */
  advertise?: string;
  /** etcd endpoints; none means the embedded in-memory store (state is lost when the process ends). */
  etcdEndpoints?: string[];
  /**
   * Mutual TLS for both services: agents are then known by their certificates (the host id comes
   * from the certificate, never from Hello) and operators by their role (admin changes, viewer
   * reads). The files are re-read when they change. Without it the server is plaintext and trusts
   * every caller: berth-controller refuses that unless `--insecure` is given.
   */
  tls?: TlsFiles;
  /** Name of this controller in logs and in the election value (default: hostname-pid). */
  controllerId?: string;
  /** How often agents send a Report. */
  reportIntervalMs?: number;
  /** A host whose stream has been silent this long is disconnected (default: 3 report intervals + 1 s). */
  hostSilenceTimeoutMs?: number;
  /** A command without a result is sent again after this long (commands are idempotent). */
  commandResendMs?: number;
  /** Full reconcile pass over every host, in case an event was missed. */
  resyncIntervalMs?: number;
  /** Leader lease TTL: a dead leader is replaced after about this long (failover with every agent back: 2.9–3.7 s measured). An etcd leader election (1–2 s without a leader) can cost the lease about 1 time in 20 at 3 s; 5 s never lost it in 20, at the price of slower failover. @default 3000 */
  leaderTtlMs?: number;
  /**
   * A host not heard from for this long is SUSPECT: no new VMs, its VMs' state UNKNOWN. Agents send
   * a heartbeat every report interval / 2. @default 1.25 report intervals (2.5 s)
   */
  hostSuspectAfterMs?: number;
  /** A host silent this long is DOWN. @default 2 × hostSuspectAfterMs */
  hostDownAfterMs?: number;
  /**
   * The agents' watchdog timeout (sent in Welcome): an agent that hears no leader this long powers
   * off its restart-policy VMs. 0 disables fencing and restarts elsewhere. @default 8000
   */
  fenceTimeoutMs?: number;
  /** Added to the fence timeout before a silent host counts as FENCED. @default 2000 */
  fenceMarginMs?: number;
  /** Fenced hosts whose VMs are restarted elsewhere per `failoverRateIntervalMs`. @default 4 */
  failoverHostsPerInterval?: number;
  /** @default 10000 */
  failoverRateIntervalMs?: number;
  /** Restarts halt while more than this fraction of hosts is not READY. @default 0.5 */
  failoverMaxUnreadyFraction?: number;
  /**
   * At most this many CreateVm / CreateVms calls are being placed and committed at once; one more
   * is refused at once with BUSY, gRPC UNAVAILABLE (retry with backoff), instead of queueing. An overloaded
   * leader that queues without bound starves its own lease keepalive and loses its leadership
   * (measured: 500 creates/s offered to a controller that commits about 350/s, docs/benchmarks.md
   * e2e-scale); shedding keeps it leading at its capacity. As the kube-apiserver's
   * --max-mutating-requests-inflight (default 200). @default 200
   */
  maxCreatesInFlight?: number;
  /**
   * HOST:PORT of the admin HTTP port: `/healthz`, `/metrics` (Prometheus) and the web dashboard at
   * `/`. Port 0 lets the OS choose (Controller.adminPort says which). @default off: no admin port
   * unless given
   */
  adminListen?: string;
  /**
   * Serve the admin port over HTTPS with the daemon's TLS identity (`tls`), asking browsers and
   * scrapers for a client certificate of the cluster's CA, so an admin certificate can authorise
   * the dashboard's actions; plain HTTP is read-only. Needs `tls` and `adminListen`. @default false
   */
  adminTls?: boolean;
}

export interface ResolvedControllerOptions {
  listen: string;
  tls: TlsFiles | undefined;
  advertise: string;
  etcdEndpoints: string[];
  controllerId: string;
  reportIntervalMs: number;
  hostSilenceTimeoutMs: number;
  commandResendMs: number;
  resyncIntervalMs: number;
  leaderTtlMs: number;
  hostSuspectAfterMs: number;
  hostDownAfterMs: number;
  fenceTimeoutMs: number;
  fenceMarginMs: number;
  failoverHostsPerInterval: number;
  failoverRateIntervalMs: number;
  failoverMaxUnreadyFraction: number;
  maxCreatesInFlight: number;
  adminListen: string | undefined;
  adminTls: boolean;
}

function positive(value: number, field: string, min: number): number {
  if (!Number.isFinite(value) || value < min) throw invalidArgument(field, `must be a number ≥ ${min} (got ${value})`);
  return value;
}

/** Fills defaults and validates. Throws INVALID_ARGUMENT naming the option. */
export function resolveControllerOptions(o: ControllerOptions): ResolvedControllerOptions {
  parseHostPort(o.listen, "listen", { allowPortZero: true });
  const advertise = o.advertise ?? o.listen;
  parseHostPort(advertise, "advertise", { allowPortZero: true });
  const etcdEndpoints = o.etcdEndpoints ?? [];
  if (etcdEndpoints.length > 0) parseEtcdEndpoints(etcdEndpoints.join(","), "etcd");
  const reportIntervalMs = positive(o.reportIntervalMs ?? 2_000, "report_interval_ms", 100);
  // Heartbeats come every half interval: SUSPECT needs at least two of them missed.
  const hostSuspectAfterMs = positive(o.hostSuspectAfterMs ?? Math.round(reportIntervalMs * 1.25), "host_suspect_after_ms", reportIntervalMs);
  const hostDownAfterMs = positive(o.hostDownAfterMs ?? hostSuspectAfterMs * 2, "host_down_after_ms", hostSuspectAfterMs);
  const fenceTimeoutMs = o.fenceTimeoutMs ?? Math.max(8_000, reportIntervalMs * 4);
  if (fenceTimeoutMs !== 0) positive(fenceTimeoutMs, "fence_timeout_ms", reportIntervalMs * 2);
  if (o.adminListen !== undefined) parseHostPort(o.adminListen, "admin_listen", { allowPortZero: true });
  if (o.adminTls && o.adminListen === undefined) throw invalidArgument("admin_tls", "needs an admin port to serve (--admin-listen HOST:PORT)");
  if (o.adminTls && !o.tls) throw invalidArgument("admin_tls", "serves HTTPS with the controller's TLS identity, but it runs without TLS (--insecure)");
  const fraction = o.failoverMaxUnreadyFraction ?? 0.5;
  if (!(fraction > 0 && fraction <= 1)) throw invalidArgument("failover_max_unready_fraction", `must be in (0, 1] (got ${fraction})`);
  return {
    listen: o.listen,
    tls: o.tls,
    advertise,
    etcdEndpoints,
    controllerId: o.controllerId ?? `${hostname()}-${process.pid}`,
    reportIntervalMs,
    hostSilenceTimeoutMs: positive(o.hostSilenceTimeoutMs ?? reportIntervalMs * 3 + 1_000, "host_silence_timeout_ms", reportIntervalMs),
    commandResendMs: positive(o.commandResendMs ?? 15_000, "command_resend_ms", 100),
    resyncIntervalMs: positive(o.resyncIntervalMs ?? 10_000, "resync_interval_ms", 100),
    leaderTtlMs: positive(o.leaderTtlMs ?? 3_000, "leader_ttl_ms", 2_000),
    hostSuspectAfterMs,
    hostDownAfterMs,
    fenceTimeoutMs,
    fenceMarginMs: positive(o.fenceMarginMs ?? 2_000, "fence_margin_ms", 0),
    failoverHostsPerInterval: positive(o.failoverHostsPerInterval ?? 4, "failover_hosts_per_interval", 1),
    failoverRateIntervalMs: positive(o.failoverRateIntervalMs ?? 10_000, "failover_rate_interval_ms", 100),
    failoverMaxUnreadyFraction: fraction,
    maxCreatesInFlight: Math.floor(positive(o.maxCreatesInFlight ?? 200, "max_creates_in_flight", 1)),
    adminListen: o.adminListen,
    adminTls: o.adminTls ?? false,
  };
}
