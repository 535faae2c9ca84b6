import { BerthError, ErrorCode } from "@berth/core";
import { MAX_TXN_OPS, type Txn } from "./types.js";

const invalid = (field: string, message: string): BerthError =>
  new BerthError(ErrorCode.InvalidArgument, `invalid transaction: ${message}`, { field });

/**
 * Checks the rules etcd enforces on a transaction, so both stores refuse the same transactions with
 * the same message before anything is sent: at most `MAX_TXN_OPS` compares and ops, non-empty keys,
 * distinct keys among the ops. Pure; throws `BerthError(INVALID_ARGUMENT)`.
 */
export function validateTxn(txn: Txn): void {
  if (txn.compare.length > MAX_TXN_OPS) {
    throw invalid("compare", `${txn.compare.length} compares, at most ${MAX_TXN_OPS} are allowed`);
  }
  if (txn.ops.length > MAX_TXN_OPS) {
    throw invalid("ops", `${txn.ops.length} operations, at most ${MAX_TXN_OPS} are allowed`);
  }
  for (const c of txn.compare) {
    if (c.key === "") throw invalid("compare.key", "a compare has an empty key");
    if (!Number.isSafeInteger(c.equals) || c.equals < 0) {
      throw invalid("compare.equals", `compare on '${c.key}' expects ${c.equals}, not a non-negative integer`);
    }
  }
  const seen = new Set<string>();
  for (const op of txn.ops) {
    if (op.key === "") throw invalid("ops.key", "an operation has an empty key");
    if (seen.has(op.key)) throw invalid("ops.key", `key '${op.key}' is written more than once`);
    seen.add(op.key);
  }
}

/**
 * Orders keys as etcd does, by their UTF-8 bytes, which is code point order. UTF-16 code unit order
 * differs only where a surrogate (a code point above U+FFFF) meets U+E000..U+FFFF: shift those two
 * ranges so that surrogates sort last.
 */
export function compareKeys(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codeUnitRank(x) - codeUnitRank(y);
  }
  return a.length - b.length;
}

const codeUnitRank = (u: number): number => (u >= 0xe000 ? u - 0x800 : u >= 0xd800 ? u + 0x2000 : u);

/** The exclusive end of etcd's key range for every key starting with `prefix` ("\0" = no end). */
export function prefixRangeEnd(prefix: Uint8Array): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}
