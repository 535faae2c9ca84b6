// Test helpers (not exported from the package): a tiny protobuf writer for hand-made, and hostile,
// frames: whatever bytes a test needs, including ones the generated encoder would never write.

/** A varint of `v` (two's complement for negatives, as protobuf writes int64). */
export const varint = (v: bigint | number): number[] => {
  let n = BigInt.asUintN(64, BigInt(v));
  const out: number[] = [];
  while (n >= 0x80n) {
    out.push(Number(n & 0x7fn) | 0x80);
    n >>= 7n;
  }
  out.push(Number(n));
  return out;
};
/** A field's tag: its number and wire type. */
export const tag = (no: number, wire: number): number[] => varint((BigInt(no) << 3n) | BigInt(wire));
/** A varint field. */
export const vfield = (no: number, v: bigint | number): number[] => [...tag(no, 0), ...varint(v)];
/** A length-delimited field holding `body`. */
export const ld = (no: number, body: number[]): number[] => [...tag(no, 2), ...varint(body.length), ...body];
/** A string field. */
export const str = (no: number, s: string): number[] => ld(no, [...Buffer.from(s)]);
