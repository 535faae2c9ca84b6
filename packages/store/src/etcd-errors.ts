import { BerthError, ErrorCode } from "@berth/core";
import { castGrpcError, ClientClosedError, EtcdLeaseInvalidError, GRPCCancelledError, isRecoverableError } from "etcd3";
import { LeaseLostError, StoreUnavailableError, storeClosed } from "./errors.js";

/**
 * Thrown by EtcdStore's member gate (etcd-members.ts) instead of sending a call to a member that
 * recently failed, so that etcd3 tries the next member. The call was not sent.
 */
export class MemberSkippedError extends Error {
  constructor(readonly host: string) {
    super(`etcd member ${host} is skipped: it failed recently`);
    this.name = "MemberSkippedError";
  }
}

/** What a failed etcd call means for whoever made it. */
export interface EtcdFailure {
  /** The error to report (a BerthError: StoreUnavailableError, LeaseLostError, …). */
  error: BerthError;
  /**
   * Another attempt may succeed: the failure is about reaching etcd or etcd being briefly unable
   * to serve (no leader, overload), not about the request.
   */
  transient: boolean;
  /**
   * The request certainly had no effect: it never left this process (no connection to the
   * member, the call waited for one until its deadline, or the member was skipped), or etcd refused
   * it before proposing it to raft. A write that failed this way may be sent again as it is.
   */
  notApplied: boolean;
  /** Evidence against the member that was tried (unreachable, frozen, without a leader): route around it. */
  memberSuspect: boolean;
}

/**
 * Classifies an error thrown by the etcd3 client (or a raw gRPC stream error). This is the one
 * place etcd3's and gRPC's errors are looked at; nothing else in Berth sees them.
 *
 * - lease not found → LeaseLostError
 * - network, deadline, circuit breaker, no leader, server overload or NOSPACE → StoreUnavailableError
 * - a request etcd refuses as malformed → BerthError(INVALID_ARGUMENT)
 * - anything else → BerthError(INTERNAL), the original kept as `cause`
 *
 * "Not sent" is recognised from gRPC's own wording, which says when a call never got a
 * connection: "No connection established" (the channel is in TRANSIENT_FAILURE), "connect
 * ECONNREFUSED", "Channel closed before call started", or a deadline that expired while "Waiting
 * for LB pick" / "waiting for name resolution". Everything else (a connection dropped, a deadline
 * with a remote address, "request timed out") may have been applied.
 */
export function classifyEtcdFailure(error: unknown, doing: string, leaseId = ""): EtcdFailure {
  const final = (e: BerthError, notApplied = false): EtcdFailure => ({ error: e, transient: false, notApplied, memberSuspect: false });
  if (error instanceof MemberSkippedError) {
    const e = new StoreUnavailableError(`no etcd member could be tried while ${doing}: ${error.message}`, { cause: error });
    return { error: e, transient: true, notApplied: true, memberSuspect: false };
  }
  if (error instanceof BerthError) return { ...final(error), transient: error instanceof StoreUnavailableError && !error.closed };
  const e = error instanceof Error ? castGrpcError(error) : new Error(String(error));
  const message = e.message;
  if (e instanceof EtcdLeaseInvalidError || message.includes("requested lease not found")) {
    // etcd checks leases when applying: a transaction naming a missing lease changes nothing.
    return final(new LeaseLostError(leaseId, leaseId ? undefined : "the lease has expired or was revoked", { cause: e }), true);
  }
  if (e instanceof ClientClosedError) return final(storeClosed());
  if (message.includes("database space exceeded")) {
    return final(
      new StoreUnavailableError(`etcd is out of space (NOSPACE alarm) while ${doing}: compact, defragment and disarm the alarm`, {
        cause: e,
      }),
      true,
    );
  }
  if (
    message.includes("too many operations in txn") ||
    message.includes("duplicate key given in txn") ||
    message.includes("request is too large")
  ) {
    return final(new BerthError(ErrorCode.InvalidArgument, `etcd refused the request while ${doing}: ${message}`, { cause: e }), true);
  }
  if (isRecoverableError(e) || e.name === "BrokenCircuitError" || e.name === "TaskCancelledError" || isConnectionError(message)) {
    const unavailable = new StoreUnavailableError(`etcd did not answer while ${doing}: ${message}`, { cause: e });
    // A cancelled call is one this process cancelled (a stream it closed): nothing to say about the member.
    const cancelled = e instanceof GRPCCancelledError;
    const notApplied = isNotSent(message) || isRefusedBeforeProposal(message);
    return { error: unavailable, transient: true, notApplied, memberSuspect: !cancelled };
  }
  return final(new BerthError(ErrorCode.Internal, `etcd failed while ${doing}: ${message}`, { cause: e }));
}

/** The Berth error for an error thrown by the etcd3 client (see `classifyEtcdFailure`). */
export function mapEtcdError(error: unknown, doing: string, leaseId = ""): BerthError {
  return classifyEtcdFailure(error, doing, leaseId).error;
}

const CONNECTION_ERROR = new RegExp(
  [
    "ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|No connection established|Connection dropped|Channel closed before call started",
    "no leader|leader changed|request timed out|raft proposal dropped|too many requests",
  ].join("|"),
  "i",
);
const isConnectionError = (message: string): boolean => CONNECTION_ERROR.test(message);

/** gRPC's words for a call that never had a connection to a member (see `classifyEtcdFailure`). */
const NOT_SENT = new RegExp(
  [
    "No connection established|connect ECONNREFUSED|Channel closed before call started",
    "Waiting for LB pick|waiting for name resolution|waiting for metadata filters",
  ].join("|"),
);
const isNotSent = (message: string): boolean => NOT_SENT.test(message);

/**
 * etcd's answers to a request it turned away before proposing it: no leader to forward it to
 * (raft drops the proposal), or too far behind on applying (ErrTooManyRequests).
 */
const isRefusedBeforeProposal = (message: string): boolean =>
  /raft proposal dropped|etcdserver: no leader|etcdserver: too many requests/.test(message);

/** etcd's reply to compacting at or below the current compaction revision (a no-op for Berth). */
export const isAlreadyCompacted = (e: unknown): boolean =>
  e instanceof Error && e.message.includes("required revision has been compacted");

/** etcd's reply to compacting at a revision it has not reached. */
export const isFutureRevision = (e: unknown): boolean =>
  e instanceof Error && e.message.includes("required revision is a future revision");
