import { BerthError, ErrorCode } from "@berth/core";

/**
 * A watch asked for history that compaction has discarded. The watch has ended: re-list (which is
 * consistent at a revision) and watch again from that revision + 1.
 */
export class CompactedError extends BerthError {
  /** The store's compaction revision: the oldest revision a watch may still start from. */
  readonly compactRevision: number;

  constructor(compactRevision: number, options: { cause?: unknown } = {}) {
    super(
      ErrorCode.FailedPrecondition,
      `the store's history before revision ${compactRevision} has been compacted: re-list and watch again`,
      options,
    );
    this.name = "CompactedError";
    this.compactRevision = compactRevision;
  }
}

/** A lease has expired or been revoked: keys attached to it are gone (or about to be). */
export class LeaseLostError extends BerthError {
  /** The lease id, "" when not known. */
  readonly leaseId: string;

  constructor(leaseId: string, message = `lease ${leaseId} has expired or was revoked`, options: { cause?: unknown } = {}) {
    super(ErrorCode.FailedPrecondition, message, options);
    this.name = "LeaseLostError";
    this.leaseId = leaseId;
  }
}

/**
 * The store could not be reached or did not answer in time. For a write the outcome is unknown
 * unless the message says it was not applied (EtcdStore has by then already retried on other
 * members and settled lost replies it could): re-read before deciding what to do (every Berth write
 * is compare-guarded, so retrying the same transaction is safe; it fails its compare when the first
 * attempt did apply).
 */
export class StoreUnavailableError extends BerthError {
  /** True when the store has been closed by its owner: retrying is pointless. */
  readonly closed: boolean;

  constructor(message: string, options: { cause?: unknown; closed?: boolean } = {}) {
    super(ErrorCode.Unavailable, message, options.cause === undefined ? {} : { cause: options.cause });
    this.name = "StoreUnavailableError";
    this.closed = options.closed ?? false;
  }
}

/** The error every operation on a closed store fails with. */
export const storeClosed = (): StoreUnavailableError =>
  new StoreUnavailableError("the store is closed", { closed: true });
