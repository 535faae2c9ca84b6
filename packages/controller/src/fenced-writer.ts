import { BerthError, ErrorCode } from "@berth/core";
import type { ClusterStore, Leadership, Txn, TxnResult } from "@berth/store";

/**
 * Every write the leader makes goes through here: the transaction is fenced with the election key's
 * create revision, so a controller that has been deposed (and may not know it yet) cannot write.
 */
export class FencedWriter {
  constructor(
    private readonly store: ClusterStore,
    private readonly leadership: Leadership,
    private readonly onDeposed: (why: string) => void,
  ) {}

  get epoch(): number {
    return this.leadership.epoch;
  }

  /**
   * Commits `txn` fenced. Resolves with `succeeded: false` when one of the caller's own compares
   * failed. Throws NOT_LEADER (and reports the controller deposed) when the fence failed.
   */
  async commit(txn: Txn): Promise<TxnResult> {
    const result = await this.store.txn(this.leadership.fence(txn));
    if (result.succeeded) return result;
    const leader = await this.store.get(this.leadership.key);
    if (leader?.createRevision !== this.leadership.epoch) {
      this.onDeposed("the election key changed: another controller leads");
      throw new BerthError(ErrorCode.NotLeader, "this controller is no longer the leader; retry");
    }
    return result;
  }
}
