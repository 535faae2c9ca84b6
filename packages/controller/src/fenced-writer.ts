import { BerthError, ErrorCode } from "@berth/core";
import type { ClusterStore, Leadership, Txn, TxnResult } from "@berth/store";
import { NO_METRICS, storeOpOf, type Metrics } from "./metrics.js";

/**
 * Every write the leader makes goes through here: the transaction is fenced with the election key's
 * create revision, so a controller that has been deposed (and may not know it yet) cannot write.
 */
export class FencedWriter {
  constructor(
    private readonly store: ClusterStore,
    private readonly leadership: Leadership,
    private readonly onDeposed: (why: string) => void,
    /** Told each transaction's duration and whether its own compares failed (the store write edge). */
    private readonly metrics: Metrics = NO_METRICS,
  ) {}

  get epoch(): number {
    return this.leadership.epoch;
  }

  /**
   * Commits `txn` fenced. Resolves with `succeeded: false` when one of the caller's own compares
   * failed. Throws NOT_LEADER (and reports the controller deposed) when the fence failed.
   */
  async commit(txn: Txn): Promise<TxnResult> {
    const op = storeOpOf(txn.ops.map((o) => o.key));
    const started = process.hrtime.bigint();
    const seconds = (): number => Number(process.hrtime.bigint() - started) / 1e9;
    let result: TxnResult;
    try {
      result = await this.store.txn(this.leadership.fence(txn));
    } catch (e) {
      this.metrics.storeWrite(op, seconds(), false);
      throw e;
    }
    const took = seconds();
    if (result.succeeded) {
      this.metrics.storeWrite(op, took, false);
      return result;
    }
    const leader = await this.store.get(this.leadership.key);
    if (leader?.createRevision !== this.leadership.epoch) {
      this.metrics.storeWrite(op, took, false);
      this.onDeposed("the election key changed: another controller leads");
      throw new BerthError(ErrorCode.NotLeader, "this controller is no longer the leader; retry");
    }
    // The fence held: one of the caller's own compares failed.
    this.metrics.storeWrite(op, took, true);
    return result;
  }
}
