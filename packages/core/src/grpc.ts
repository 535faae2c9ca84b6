import type { ChannelOptions } from "@grpc/grpc-js";
import { Limits } from "./limits.js";

/**
 * gRPC options every Berth client and server uses. grpc-js has keepalive off by default, so a
 * half-open connection would never be noticed; message sizes are bounded on both directions.
 */
export interface GrpcTuning {
  /** Ping interval on an idle connection. */
  keepaliveTimeMs: number;
  /** How long a ping may go unanswered before the connection is closed. */
  keepaliveTimeoutMs: number;
  /** Upper bound of the reconnect backoff (grpc-js grows it to 120 s by default). */
  maxReconnectBackoffMs: number;
}

export const DEFAULT_GRPC_TUNING: GrpcTuning = {
  keepaliveTimeMs: 10_000,
  keepaliveTimeoutMs: 5_000,
  maxReconnectBackoffMs: 5_000,
};

/** Channel options for a Berth gRPC client (the agent, the CLI). */
export function grpcClientOptions(tuning: GrpcTuning = DEFAULT_GRPC_TUNING): ChannelOptions {
  return {
    "grpc.keepalive_time_ms": tuning.keepaliveTimeMs,
    "grpc.keepalive_timeout_ms": tuning.keepaliveTimeoutMs,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.max_receive_message_length": Limits.maxMessageBytes,
    "grpc.max_send_message_length": Limits.maxMessageBytes,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": tuning.maxReconnectBackoffMs,
  };
}

/** Server options for the controller: answers client pings, pings idle clients itself. */
export function grpcServerOptions(tuning: GrpcTuning = DEFAULT_GRPC_TUNING): ChannelOptions {
  return {
    "grpc.keepalive_time_ms": tuning.keepaliveTimeMs,
    "grpc.keepalive_timeout_ms": tuning.keepaliveTimeoutMs,
    "grpc.keepalive_permit_without_calls": 1,
    // Clients ping every keepaliveTimeMs: allow that, and not much faster.
    "grpc.http2.min_ping_interval_without_data_ms": Math.floor(tuning.keepaliveTimeMs / 2),
    "grpc.max_receive_message_length": Limits.maxMessageBytes,
    "grpc.max_send_message_length": Limits.maxMessageBytes,
  };
}

/** A deadline `ms` from now, for the `deadline` call option. */
export const deadlineIn = (ms: number): Date => new Date(Date.now() + ms);
