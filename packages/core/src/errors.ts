import { Metadata, status, type ServiceError, type StatusObject } from "@grpc/grpc-js";

/**
 * Stable error codes. They cross the API (as gRPC status + the `berth-error-code` trailer) and are
 * what scripts should match on; messages are for people and may change.
 */
export const ErrorCode = {
  InvalidArgument: "INVALID_ARGUMENT",
  NotFound: "NOT_FOUND",
  AlreadyExists: "ALREADY_EXISTS",
  FailedPrecondition: "FAILED_PRECONDITION",
  ResourceExhausted: "RESOURCE_EXHAUSTED",
  /** A guarded write lost a race; the caller may retry after re-reading. */
  Conflict: "CONFLICT",
  /** This controller is not the leader (or no leader is known). */
  NotLeader: "NOT_LEADER",
  Unavailable: "UNAVAILABLE",
  /**
   * The controller refused the call before doing anything, to protect itself (too many creates
   * in flight): nothing was written, and the same call may be sent again after a backoff.
   */
  Busy: "BUSY",
  HypervisorUnavailable: "HYPERVISOR_UNAVAILABLE",
  DeadlineExceeded: "DEADLINE_EXCEEDED",
  /** The caller's certificate is valid but its role may not make this call (the message names the role needed). */
  PermissionDenied: "PERMISSION_DENIED",
  /** The caller presented no identity this server accepts (no client certificate, or not one of Berth's roles). */
  Unauthenticated: "UNAUTHENTICATED",
  Internal: "INTERNAL",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const grpcStatusOf: Record<ErrorCode, status> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  NOT_FOUND: status.NOT_FOUND,
  ALREADY_EXISTS: status.ALREADY_EXISTS,
  FAILED_PRECONDITION: status.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: status.RESOURCE_EXHAUSTED,
  CONFLICT: status.ABORTED,
  NOT_LEADER: status.UNAVAILABLE,
  UNAVAILABLE: status.UNAVAILABLE,
  BUSY: status.UNAVAILABLE,
  HYPERVISOR_UNAVAILABLE: status.UNAVAILABLE,
  DEADLINE_EXCEEDED: status.DEADLINE_EXCEEDED,
  PERMISSION_DENIED: status.PERMISSION_DENIED,
  UNAUTHENTICATED: status.UNAUTHENTICATED,
  INTERNAL: status.INTERNAL,
};

/** Metadata key of the stable Berth error code on a failed call. */
export const ERROR_CODE_METADATA_KEY = "berth-error-code";
/** Metadata key of the leader's address on a NOT_LEADER error. */
export const LEADER_METADATA_KEY = "berth-leader";

export interface BerthErrorOptions {
  /** The input field at fault, in proto field path form (`spec.resources.memory_mib`). */
  field?: string;
  /** One line per reason, e.g. why each host was rejected. */
  reasons?: readonly string[];
  /** For NOT_LEADER: the leader's address when known. */
  leader?: string;
  cause?: unknown;
}

/** The one error type that crosses package boundaries in Berth. */
export class BerthError extends Error {
  readonly code: ErrorCode;
  readonly field: string | undefined;
  readonly reasons: readonly string[];
  readonly leader: string | undefined;

  constructor(code: ErrorCode, message: string, options: BerthErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "BerthError";
    this.code = code;
    this.field = options.field;
    this.reasons = options.reasons ?? [];
    this.leader = options.leader;
  }
}

export function isBerthError(e: unknown, code?: ErrorCode): e is BerthError {
  return e instanceof BerthError && (code === undefined || e.code === code);
}

export const invalidArgument = (field: string, rule: string): BerthError =>
  new BerthError(ErrorCode.InvalidArgument, `${field}: ${rule}`, { field });
export const notFound = (what: string): BerthError =>
  new BerthError(ErrorCode.NotFound, `${what} not found`);
export const alreadyExists = (what: string): BerthError =>
  new BerthError(ErrorCode.AlreadyExists, `${what} already exists`);

/**
 * Maps any error to the gRPC status a server should answer with. Foreign errors become INTERNAL
 * with a generic message, so nothing internal (addresses, keys, secrets) leaks to callers.
 */
export function toGrpcStatus(e: unknown): Partial<StatusObject> {
  const metadata = new Metadata();
  if (!(e instanceof BerthError)) {
    metadata.set(ERROR_CODE_METADATA_KEY, ErrorCode.Internal);
    return { code: status.INTERNAL, details: "internal error (see the controller log)", metadata };
  }
  metadata.set(ERROR_CODE_METADATA_KEY, e.code);
  if (e.leader) metadata.set(LEADER_METADATA_KEY, e.leader);
  return { code: grpcStatusOf[e.code], details: detailsOf(e), metadata };
}

/**
 * A value an error message quotes, at most `max` characters of it: `String(value)` when short,
 * else its first `max` characters, `…` and its length. Messages must never echo unbounded input:
 * a 100 KB echo in a status trailer wedged the connection it travelled on.
 */
export function quote(value: unknown, max = 64): string {
  const s = String(value);
  return s.length <= max ? s : `${s.slice(0, max)}… (${s.length} characters)`;
}

/**
 * At most this many characters of a status's message (the reasons below come on top): a message
 * that quoted unbounded input would otherwise travel whole in the `grpc-message` trailer.
 */
export const MAX_STATUS_MESSAGE_CHARS = 2048;

/**
 * At most this many bytes of reasons go into a status's details. The details travel in the
 * `grpc-message` trailer, an HTTP/2 header: one reason per host of a fleet of thousands (about 80
 * bytes each) is larger than a peer accepts in its headers, and the connection is dropped instead
 * of the error arriving (found at 10,000 hosts). `berth plan` answers every host's verdict in a
 * message instead.
 */
export const MAX_DETAIL_REASON_BYTES = 16 * 1024;

/** The message, then one reason a line, as many as fit MAX_DETAIL_REASON_BYTES, then how many were left out. */
function detailsOf(e: BerthError): string {
  const message = e.message.length <= MAX_STATUS_MESSAGE_CHARS ? e.message : `${e.message.slice(0, MAX_STATUS_MESSAGE_CHARS)}… (message cut)`;
  if (e.reasons.length === 0) return message;
  const lines: string[] = [];
  let bytes = 0;
  for (const r of e.reasons) {
    const size = Buffer.byteLength(r) + 3;
    if (bytes + size > MAX_DETAIL_REASON_BYTES) break;
    lines.push(r);
    bytes += size;
  }
  const left = e.reasons.length - lines.length;
  if (left > 0) lines.push(`… and ${left} more (berth plan shows every host's verdict)`);
  return `${message}:\n  ${lines.join("\n  ")}`;
}

const codeOfGrpcStatus = new Map<status, ErrorCode>([
  [status.INVALID_ARGUMENT, ErrorCode.InvalidArgument],
  [status.NOT_FOUND, ErrorCode.NotFound],
  [status.ALREADY_EXISTS, ErrorCode.AlreadyExists],
  [status.FAILED_PRECONDITION, ErrorCode.FailedPrecondition],
  [status.RESOURCE_EXHAUSTED, ErrorCode.ResourceExhausted],
  [status.ABORTED, ErrorCode.Conflict],
  [status.UNAVAILABLE, ErrorCode.Unavailable],
  [status.DEADLINE_EXCEEDED, ErrorCode.DeadlineExceeded],
  [status.PERMISSION_DENIED, ErrorCode.PermissionDenied],
  [status.UNAUTHENTICATED, ErrorCode.Unauthenticated],
]);

function isServiceError(e: unknown): e is ServiceError {
  return e instanceof Error && typeof (e as Partial<ServiceError>).code === "number";
}

/** Maps an error returned by a gRPC call back to a BerthError (client side of toGrpcStatus). */
export function fromGrpcError(e: unknown): BerthError {
  if (e instanceof BerthError) return e;
  if (!isServiceError(e)) return new BerthError(ErrorCode.Internal, String(e), { cause: e });
  const declared = e.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
  const code =
    typeof declared === "string" && Object.values(ErrorCode).includes(declared as ErrorCode)
      ? (declared as ErrorCode)
      : (codeOfGrpcStatus.get(e.code) ?? ErrorCode.Internal);
  const leader = e.metadata?.get(LEADER_METADATA_KEY)[0];
  return new BerthError(code, e.details || e.message, {
    cause: e,
    ...(typeof leader === "string" ? { leader } : {}),
  });
}

/**
 * The message of `e` with its field renamed for the person who typed it: an option resolver names
 * `host_id`, the command line calls it `--host-id`.
 */
export function messageForFlags(e: unknown, flagOfField: Readonly<Record<string, string>>): string {
  if (!(e instanceof Error)) return String(e);
  if (!(e instanceof BerthError) || !e.field) return e.message;
  const root = e.field.split(/[.[]/)[0]!;
  const flag = flagOfField[root];
  return flag && e.message.startsWith(root) ? flag + e.message.slice(root.length) : e.message;
}
