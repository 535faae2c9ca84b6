import { BerthError, ErrorCode } from "@berth/core";
import { castGrpcError, ClientClosedError, EtcdLeaseInvalidError, isRecoverableError } from "etcd3";
import { LeaseLostError, StoreUnavailableError, storeClosed } from "./errors.js";

/**
 * Maps an error thrown by the etcd3 client (or a raw gRPC stream error) to Berth's errors. This is
 * the one place etcd3's error types are looked at; nothing else in Berth sees them.
 *
 * - lease not found → LeaseLostError
 * - network, deadline, circuit breaker, server overload or NOSPACE → StoreUnavailableError
 * - a request etcd refuses as malformed → BerthError(INVALID_ARGUMENT)
 * - anything else → BerthError(INTERNAL), the original kept as `cause`
 */
export function mapEtcdError(error: unknown, doing: string, leaseId = ""): BerthError {
  if (error instanceof BerthError) return error;
  const e = error instanceof Error ? castGrpcError(error) : new Error(String(error));
  const message = e.message;
  if (e instanceof EtcdLeaseInvalidError || message.includes("requested lease not found")) {
    return new LeaseLostError(leaseId, leaseId ? undefined : "the lease has expired or was revoked", { cause: e });
  }
  if (e instanceof ClientClosedError) return storeClosed();
  if (message.includes("database space exceeded")) {
    return new StoreUnavailableError(
      `etcd is out of space (NOSPACE alarm) while ${doing}: compact, defragment and disarm the alarm`,
      { cause: e },
    );
  }
  if (
    message.includes("too many operations in txn") ||
    message.includes("duplicate key given in txn") ||
    message.includes("request is too large")
  ) {
    return new BerthError(ErrorCode.InvalidArgument, `etcd refused the request while ${doing}: ${message}`, { cause: e });
  }
  if (isRecoverableError(e) || e.name === "BrokenCircuitError" || e.name === "TaskCancelledError" || isConnectionError(message)) {
    return new StoreUnavailableError(`etcd did not answer while ${doing}: ${message}`, { cause: e });
  }
  return new BerthError(ErrorCode.Internal, `etcd failed while ${doing}: ${message}`, { cause: e });
}

const isConnectionError = (message: string): boolean =>
  /ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|No connection established|no leader|leader changed|request timed out/i.test(message);

/** etcd's reply to compacting at or below the current compaction revision (a no-op for Berth). */
export const isAlreadyCompacted = (e: unknown): boolean =>
  e instanceof Error && e.message.includes("required revision has been compacted");

/** etcd's reply to compacting at a revision it has not reached. */
export const isFutureRevision = (e: unknown): boolean =>
  e instanceof Error && e.message.includes("required revision is a future revision");
