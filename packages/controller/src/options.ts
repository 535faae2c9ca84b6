import { hostname } from "node:os";
import { invalidArgument, parseEtcdEndpoints, parseHostPort } from "@berth/core";

/** How a controller is run. Every field but `listen` has a default. */
export interface ControllerOptions {
  /** host:port the gRPC server binds. */
  listen: string;
  /** host:port agents and operators are told to use when this controller leads (default: listen). */
  advertise?: string;
  /** etcd endpoints; none means the embedded in-memory store (state is lost when the process ends). */
  etcdEndpoints?: string[];
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
  /** Leader lease TTL: a dead leader is replaced after about this long. */
  leaderTtlMs?: number;
}

export interface ResolvedControllerOptions {
  listen: string;
  advertise: string;
  etcdEndpoints: string[];
  controllerId: string;
  reportIntervalMs: number;
  hostSilenceTimeoutMs: number;
  commandResendMs: number;
  resyncIntervalMs: number;
  leaderTtlMs: number;
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
  return {
    listen: o.listen,
    advertise,
    etcdEndpoints,
    controllerId: o.controllerId ?? `${hostname()}-${process.pid}`,
    reportIntervalMs,
    hostSilenceTimeoutMs: positive(o.hostSilenceTimeoutMs ?? reportIntervalMs * 3 + 1_000, "host_silence_timeout_ms", reportIntervalMs),
    commandResendMs: positive(o.commandResendMs ?? 15_000, "command_resend_ms", 100),
    resyncIntervalMs: positive(o.resyncIntervalMs ?? 10_000, "resync_interval_ms", 100),
    leaderTtlMs: positive(o.leaderTtlMs ?? 10_000, "leader_ttl_ms", 2_000),
  };
}
