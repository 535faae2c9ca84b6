/**
 * A strict check of incoming protobuf bytes against the schema (gen/wire-schema.ts), before the
 * generated decoder sees them. The generated decoder is lenient where Berth must not be: it reads
 * tag 0, a stray end-group or an oversized tag as the end of the message (garbage decodes as `{}`),
 * reads a field that straddles the end of its sub-message on into the next field, and throws on a
 * uint64 above 2^53−1 (which grpc-js answers with INTERNAL, "Error deserializing request").
 *
 * `hardenService` wraps a generated grpc-js service definition so that a request that fails the
 * check (or makes the decoder throw anyway) is handed to the handler as a frozen marker instead:
 * `malformedOf(request)` gives the fault, which the handler answers with INVALID_ARGUMENT (or, on
 * the agent stream, a Reject). A deserializer must never throw: grpc-js answers INTERNAL when one
 * does, whatever it throws.
 *
 * What is refused: field number 0 or above 2^29−1, wire types 3/4 (groups, none in proto3) and 6/7,
 * varints longer than 10 bytes or above 2^64−1, a tag above 2^32−1, a length-delimited field or a
 * fixed32/64 that does not fit inside its enclosing message, a sub-message that does not end exactly
 * at its length, a known field sent with a wire type other than its declared type's (packed runs of
 * repeated numbers are allowed), uint64/int64/sint64/fixed64 values outside ±(2^53−1) (JavaScript's
 * safe integers, what the API's numbers are), uint32/int32/sint32/enum values outside 32 bits,
 * strings that are not UTF-8, and nesting deeper than 64 messages. Unknown field numbers are
 * allowed (forward compatibility) but must be well formed; their contents are not looked into.
 *
 * The check allocates nothing on success (agents send Reports of thousands of domains every few
 * seconds, creates run at thousands a second); a fault's path is worked out only once one is found.
 */
import type { MethodDefinition } from "@grpc/grpc-js";
import { wireMessages, wireMethods, type WireFieldType } from "./gen/wire-schema.js";

export { wireMessages, wireMethods, type WireField, type WireFieldType } from "./gen/wire-schema.js";

/** Why bytes were refused. */
export interface WireFault {
  /**
   * The proto path of the field at fault, e.g. `hello.capacity.memory_mib` or
   * `report.inventory.domains[12].vm_id` (a field unknown to the schema by number: `hello.#99`);
   * the message's type name (e.g. `AgentMessage`) when the fault is in the message itself.
   */
  readonly field: string;
  /** What is wrong, in one line; it never quotes more than a few bytes of the input. */
  readonly reason: string;
}

/** Messages nested deeper than this are refused (Berth's own go 6 deep). */
export const MAX_WIRE_DEPTH = 64;

// Kinds: how a known field's value is checked. Varint kinds differ in their bounds.
const K_UNKNOWN = 0;
const K_UINT64 = 1;
const K_INT64 = 2;
const K_SINT64 = 3;
const K_UINT32 = 4;
const K_INT32 = 5; // int32 and enums
const K_SINT32 = 6;
const K_BOOL = 7;
const K_FIXED32 = 8; // fixed32, sfixed32, float: any 4 bytes
const K_FIXED64 = 9; // double: any 8 bytes
const K_UFIXED64 = 10; // fixed64: bounded like uint64
const K_SFIXED64 = 11; // sfixed64: bounded like int64
const K_STRING = 12;
const K_BYTES = 13;
const K_MESSAGE = 14;

const KIND_OF: Record<WireFieldType, number> = {
  uint64: K_UINT64,
  int64: K_INT64,
  sint64: K_SINT64,
  uint32: K_UINT32,
  int32: K_INT32,
  enum: K_INT32,
  sint32: K_SINT32,
  bool: K_BOOL,
  fixed32: K_FIXED32,
  sfixed32: K_FIXED32,
  float: K_FIXED32,
  double: K_FIXED64,
  fixed64: K_UFIXED64,
  sfixed64: K_SFIXED64,
  string: K_STRING,
  bytes: K_BYTES,
  message: K_MESSAGE,
};

/** The wire type each kind travels as (packed runs aside). */
const WIRE_OF_KIND = [-1, 0, 0, 0, 0, 0, 0, 0, 5, 1, 1, 1, 2, 2, 2];
const WIRE_NAMES = ["varint", "64-bit", "length-delimited", "start-group", "end-group", "32-bit", "wire type 6", "wire type 7"];

/** One message type, laid out for the check: per field number, its kind, name and sub-message. */
interface Compiled {
  readonly fullName: string;
  readonly shortName: string;
  /** Per field number: its kind (K_UNKNOWN for a number the schema does not have). */
  readonly kinds: Uint8Array;
  /** Per field number: 1 when repeated, 2 when repeated and packable. */
  readonly repeated: Uint8Array;
  readonly names: string[];
  readonly subs: (Compiled | undefined)[];
}

const compiled = new Map<string, Compiled>();

function compile(fullName: string): Compiled {
  const done = compiled.get(fullName);
  if (done) return done;
  const fields = wireMessages[fullName];
  if (!fields) throw new Error(`wire: no message ${fullName} in the schema`);
  const numbers = Object.keys(fields).map(Number);
  const size = numbers.length === 0 ? 1 : Math.max(...numbers) + 1;
  const c: Compiled = {
    fullName,
    shortName: fullName.slice(fullName.lastIndexOf(".") + 1),
    kinds: new Uint8Array(size),
    repeated: new Uint8Array(size),
    names: new Array<string>(size).fill(""),
    subs: new Array<Compiled | undefined>(size).fill(undefined),
  };
  // Registered before its fields are compiled, so a recursive message refers to itself.
  compiled.set(fullName, c);
  for (const n of numbers) {
    const f = fields[n]!;
    c.kinds[n] = KIND_OF[f.type];
    c.repeated[n] = f.repeated ? (f.packed ? 2 : 1) : 0;
    c.names[n] = f.name;
    if (f.type === "message") c.subs[n] = compile(f.message!);
  }
  return c;
}

/** The compiled form of a message type, by full name (`berth.v1.Hello`) or short name (`Hello`). */
function compiledOf(typeName: string): Compiled {
  return compile(typeName.includes(".") ? typeName : `berth.v1.${typeName}`);
}

// The state of one check. Module-level so that success allocates nothing; checks never interleave
// (they are synchronous).
/** The last varint read, as two 32-bit halves. */
let vLo = 0;
let vHi = 0;
/** A fault found: its reason, and where (filled in as the check unwinds, innermost field first). */
let faultReason = "";
/**
 * Per field on the path to the fault, innermost first, four entries: the message, the field
 * number, where the message's bytes start and where the field's tag starts.
 */
const faultTrail: (Compiled | number)[] = [];

/** A fault in message `m` itself (e.g. a bad tag): the path ends at the field holding `m`. */
const fail = (reason: string): false => {
  faultReason = reason;
  faultTrail.length = 0;
  return false;
};

/** A fault in field `no` of message `m` (whose bytes start at `start`; the field's tag at `tagPos`). */
const failField = (m: Compiled, no: number, start: number, tagPos: number, reason: string): false => {
  fail(reason);
  faultTrail.push(m, no, start, tagPos);
  return false;
};

/**
 * Reads a varint at `pos` that must end before `end`; sets vLo/vHi and returns the position after
 * it, or -1 when it runs past `end`, -2 when it is longer than 10 bytes or above 2^64−1.
 */
function readVarint(buf: Uint8Array, pos: number, end: number): number {
  if (pos >= end) return -1;
  let b = buf[pos++]!;
  if (b < 0x80) {
    vLo = b;
    vHi = 0;
    return pos;
  }
  let lo = b & 0x7f;
  for (let shift = 7; shift < 28; shift += 7) {
    if (pos >= end) return -1;
    b = buf[pos++]!;
    lo |= (b & 0x7f) << shift;
    if (b < 0x80) {
      vLo = lo >>> 0;
      vHi = 0;
      return pos;
    }
  }
  // The 5th byte: 4 bits of the low half, 3 of the high one.
  if (pos >= end) return -1;
  b = buf[pos++]!;
  lo |= (b & 0x0f) << 28;
  let hi = (b & 0x7f) >>> 4;
  if (b >= 0x80) {
    for (let shift = 3; shift < 31; shift += 7) {
      if (pos >= end) return -1;
      b = buf[pos++]!;
      hi |= (b & 0x7f) << shift;
      if (b < 0x80) break;
    }
    if (b >= 0x80) {
      // The 10th byte: one bit left (bit 63).
      if (pos >= end) return -1;
      b = buf[pos++]!;
      if (b > 1) return -2;
      hi |= b << 31;
    }
  }
  vLo = lo >>> 0;
  vHi = hi >>> 0;
  return pos;
}

/** The last varint as a BigInt (only ever for a fault's message). */
const varintValue = (): bigint => (BigInt(vHi) << 32n) | BigInt(vLo);

/** The uint64 in vLo/vHi is at most 2^53−1. */
const safeUnsigned = (): boolean => vHi < 0x200000;

/** The int64 (two's complement) in vLo/vHi is within ±(2^53−1). */
function safeSigned(): boolean {
  if (vHi < 0x80000000) return vHi < 0x200000;
  // Negative: its magnitude is the two's complement negation.
  const nlo = (~vLo + 1) >>> 0;
  const nhi = (~vHi + (nlo === 0 ? 1 : 0)) >>> 0;
  return nhi < 0x200000;
}

/** The varint in vLo/vHi is a valid value of `kind`; else a reason. */
function varintFault(kind: number): string | undefined {
  switch (kind) {
    case K_UINT64:
      return safeUnsigned() ? undefined : `${varintValue()} is above 2^53-1 (9007199254740991), the largest uint64 this API accepts`;
    case K_INT64:
      return safeSigned() ? undefined : `${BigInt.asIntN(64, varintValue())} is outside ±(2^53-1), the int64 range this API accepts`;
    case K_SINT64: {
      const n = varintValue();
      const v = (n >> 1n) ^ -(n & 1n);
      return v <= 9007199254740991n && v >= -9007199254740991n ? undefined : `${v} is outside ±(2^53-1), the sint64 range this API accepts`;
    }
    case K_UINT32:
    case K_SINT32:
      return vHi === 0 ? undefined : `${varintValue()} is above 2^32-1 (4294967295), the largest ${kind === K_UINT32 ? "uint32" : "sint32 encoding"}`;
    case K_INT32:
      // A non-negative int32 travels as itself; a negative one sign-extended to 64 bits.
      return (vHi === 0 && vLo <= 0x7fffffff) || (vHi === 0xffffffff && vLo >= 0x80000000)
        ? undefined
        : `${BigInt.asIntN(64, varintValue())} is outside the int32 range (-2^31 to 2^31-1)`;
    default:
      return undefined; // bool: any varint
  }
}

/** A DataView of the buffer being checked (made at its first long string). */
const NO_VIEW = new DataView(new ArrayBuffer(0));
let viewBuf: Uint8Array | undefined;
let view: DataView = NO_VIEW;
function viewOf(buf: Uint8Array): DataView {
  if (buf !== viewBuf) {
    viewBuf = buf;
    view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  return view;
}

/** The bytes [pos, end) are UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF). */
function isUtf8(buf: Uint8Array, pos: number, end: number): boolean {
  let i = pos;
  // ASCII four bytes at a time (past a short string's worth: a DataView costs more than that), then byte by byte.
  if (end - pos >= 24) {
    const view = viewOf(buf);
    for (const last = end - 4; i <= last && (view.getUint32(i, true) & 0x80808080) === 0; ) i += 4;
  }
  while (i < end && buf[i]! < 0x80) i++;
  while (i < end) {
    const b = buf[i]!;
    if (b < 0x80) {
      i++;
    } else if (b < 0xc2) {
      return false; // a continuation byte, or an overlong 2-byte form
    } else if (b < 0xe0) {
      if (i + 1 >= end || (buf[i + 1]! & 0xc0) !== 0x80) return false;
      i += 2;
    } else if (b < 0xf0) {
      if (i + 2 >= end) return false;
      const b1 = buf[i + 1]!;
      if ((b1 & 0xc0) !== 0x80 || (buf[i + 2]! & 0xc0) !== 0x80) return false;
      if ((b === 0xe0 && b1 < 0xa0) || (b === 0xed && b1 >= 0xa0)) return false; // overlong; surrogate
      i += 3;
    } else if (b < 0xf5) {
      if (i + 3 >= end) return false;
      const b1 = buf[i + 1]!;
      if ((b1 & 0xc0) !== 0x80 || (buf[i + 2]! & 0xc0) !== 0x80 || (buf[i + 3]! & 0xc0) !== 0x80) return false;
      if ((b === 0xf0 && b1 < 0x90) || (b === 0xf4 && b1 >= 0x90)) return false; // overlong; above U+10FFFF
      i += 4;
    } else {
      return false;
    }
  }
  return true;
}

/**
 * Checks the message `m` in buf[pos, end) at nesting `depth`; true when it is well formed. On a
 * fault, records it (faultReason, faultTrail) and returns false.
 */
function checkMessage(m: Compiled, buf: Uint8Array, pos: number, end: number, depth: number): boolean {
  if (depth >= MAX_WIRE_DEPTH) return fail(`messages nested deeper than ${MAX_WIRE_DEPTH}`);
  const start = pos;
  const kinds = m.kinds;
  const known = kinds.length;
  while (pos < end) {
    const tagPos = pos;
    // Tags of fields 1 to 15 are one byte: read those inline.
    let tag = buf[pos]!;
    if (tag < 0x80) {
      pos++;
    } else {
      pos = readVarint(buf, pos, end);
      if (pos < 0) return fail(`the tag at byte ${tagPos} runs past the end of the message`);
      if (vHi !== 0 || pos - tagPos > 5) return fail(`the tag at byte ${tagPos} is above 2^32-1`);
      tag = vLo;
    }
    const wire = tag & 7;
    const no = tag >>> 3;
    if (no === 0) return fail(`field number 0 at byte ${tagPos} (field numbers are 1 to 2^29-1)`);
    if (wire === 3 || wire === 4) return fail(`a group (${WIRE_NAMES[wire]}) at byte ${tagPos}: proto3 has none`);
    if (wire > 5) return fail(`unknown wire type ${wire} at byte ${tagPos}`);
    const kind = no < known ? kinds[no]! : K_UNKNOWN;
    if (kind !== K_UNKNOWN && wire !== WIRE_OF_KIND[kind] && !(wire === 2 && m.repeated[no] === 2)) {
      return failField(m, no, start, tagPos, `sent as ${WIRE_NAMES[wire]} at byte ${tagPos}, but its type travels as ${WIRE_NAMES[WIRE_OF_KIND[kind]!]}`);
    }
    if (wire === 0) {
      if (pos < end && buf[pos]! < 0x80) {
        // A one-byte value: in bounds for every kind.
        pos++;
        continue;
      }
      const at = pos;
      pos = readVarint(buf, pos, end);
      if (pos === -1) return failField(m, no, start, tagPos, `the varint at byte ${at} runs past the end of the message`);
      if (pos === -2) return failField(m, no, start, tagPos, `the varint at byte ${at} is longer than 10 bytes or above 2^64-1`);
      if (kind !== K_UNKNOWN && kind !== K_BOOL && (vHi !== 0 || kind === K_INT32)) {
        const why = varintFault(kind);
        if (why !== undefined) return failField(m, no, start, tagPos, why);
      }
    } else if (wire === 2) {
      const at = pos;
      let len: number;
      if (pos < end && buf[pos]! < 0x80) {
        len = buf[pos++]!;
      } else {
        pos = readVarint(buf, pos, end);
        if (pos === -1) return failField(m, no, start, tagPos, `the length at byte ${at} runs past the end of the message`);
        if (pos === -2 || vHi !== 0) return failField(m, no, start, tagPos, `a length of more than 2^32-1 bytes at byte ${at}`);
        len = vLo;
      }
      if (len > end - pos) {
        return failField(m, no, start, tagPos, `a length of ${len} bytes at byte ${at} runs past the end of the enclosing message (${end - pos} bytes left)`);
      }
      const fieldEnd = pos + len;
      if (kind === K_STRING) {
        if (!isUtf8(buf, pos, fieldEnd)) return failField(m, no, start, tagPos, `the string at byte ${pos} is not valid UTF-8`);
      } else if (kind === K_MESSAGE) {
        if (!checkMessage(m.subs[no]!, buf, pos, fieldEnd, depth + 1)) {
          faultTrail.push(m, no, start, tagPos);
          return false;
        }
      } else if (kind !== K_BYTES && kind !== K_UNKNOWN) {
        // A packed run of numbers.
        const why = packedFault(kind, buf, pos, fieldEnd);
        if (why !== undefined) return failField(m, no, start, tagPos, why);
      }
      pos = fieldEnd;
    } else if (wire === 1) {
      if (end - pos < 8) return failField(m, no, start, tagPos, `the 8 bytes at byte ${pos} run past the end of the message (${end - pos} left)`);
      if (kind === K_UFIXED64 || kind === K_SFIXED64) {
        const why = fixed64Fault(kind, buf, pos);
        if (why !== undefined) return failField(m, no, start, tagPos, why);
      }
      pos += 8;
    } else {
      if (end - pos < 4) return failField(m, no, start, tagPos, `the 4 bytes at byte ${pos} run past the end of the message (${end - pos} left)`);
      pos += 4;
    }
  }
  return true;
}

/** A fixed64/sfixed64 at buf[pos] within ±(2^53−1); else a reason. */
function fixed64Fault(kind: number, buf: Uint8Array, pos: number): string | undefined {
  vLo = (buf[pos]! | (buf[pos + 1]! << 8) | (buf[pos + 2]! << 16) | (buf[pos + 3]! << 24)) >>> 0;
  vHi = (buf[pos + 4]! | (buf[pos + 5]! << 8) | (buf[pos + 6]! << 16) | (buf[pos + 7]! << 24)) >>> 0;
  return varintFault(kind === K_UFIXED64 ? K_UINT64 : K_INT64);
}

/** A packed run of `kind` in buf[pos, end): whole elements, each in bounds; else a reason. */
function packedFault(kind: number, buf: Uint8Array, pos: number, end: number): string | undefined {
  const wire = WIRE_OF_KIND[kind];
  if (wire === 5 || wire === 1) {
    const size = wire === 5 ? 4 : 8;
    if ((end - pos) % size !== 0) return `a packed run of ${end - pos} bytes at byte ${pos} is not a whole number of ${size}-byte values`;
    if (kind === K_UFIXED64 || kind === K_SFIXED64) {
      for (let i = 0; pos < end; pos += 8, i++) {
        const why = fixed64Fault(kind, buf, pos);
        if (why !== undefined) return `element ${i}: ${why}`;
      }
    }
    return undefined;
  }
  for (let i = 0; pos < end; i++) {
    const at = pos;
    pos = readVarint(buf, pos, end);
    if (pos < 0) return `element ${i} of the packed run (the varint at byte ${at}) is cut off or longer than 10 bytes`;
    const why = varintFault(kind);
    if (why !== undefined) return `element ${i}: ${why}`;
  }
  return undefined;
}

/** Skips one well-formed field at `pos` (already checked); returns the position after it. */
function skipChecked(buf: Uint8Array, pos: number, end: number): number {
  pos = readVarint(buf, pos, end);
  switch (vLo & 7) {
    case 0:
      return readVarint(buf, pos, end);
    case 1:
      return pos + 8;
    case 5:
      return pos + 4;
    default:
      pos = readVarint(buf, pos, end);
      return pos + vLo;
  }
}

/** How many times field `no` occurs in buf[start, before) (a well-formed stretch). */
function occurrences(buf: Uint8Array, no: number, start: number, before: number): number {
  let count = 0;
  let pos = start;
  while (pos < before) {
    readVarint(buf, pos, before);
    if (vLo >>> 3 === no) count++;
    pos = skipChecked(buf, pos, before);
  }
  return count;
}

/** The fault recorded by the last failed check, with its path worked out from the trail. */
function faultFound(root: Compiled, buf: Uint8Array): WireFault {
  let path = "";
  for (let i = faultTrail.length - 4; i >= 0; i -= 4) {
    const m = faultTrail[i] as Compiled;
    const no = faultTrail[i + 1] as number;
    const known = no < m.kinds.length && m.kinds[no] !== K_UNKNOWN;
    path += `${path === "" ? "" : "."}${known ? m.names[no]! : `#${no}`}`;
    // An element of a repeated message field: which one (a packed run names the field).
    if (known && m.repeated[no] !== 0 && m.kinds[no] === K_MESSAGE) {
      path += `[${occurrences(buf, no, faultTrail[i + 2] as number, faultTrail[i + 3] as number)}]`;
    }
  }
  faultTrail.length = 0;
  return { field: path === "" ? root.shortName : path, reason: faultReason };
}

function check(m: Compiled, bytes: Uint8Array): WireFault | undefined {
  const ok = checkMessage(m, bytes, 0, bytes.length, 0);
  // Keep no reference to the request once checked.
  viewBuf = undefined;
  view = NO_VIEW;
  return ok ? undefined : faultFound(m, bytes);
}

/**
 * Checks `bytes` as a message of type `typeName` (`berth.v1.Hello` or `Hello`): undefined when they
 * are well formed, else the fault. Throws only for a type the schema does not have.
 */
export function checkWire(typeName: string, bytes: Uint8Array): WireFault | undefined {
  return check(compiledOf(typeName), bytes);
}

/** The property a marker keeps its fault under. */
const MALFORMED = Symbol("berth.malformed");

/** A request that was refused before decoding: what a hardened deserializer returns for it. */
function marker(fault: WireFault): unknown {
  return Object.freeze({ [MALFORMED]: Object.freeze(fault) });
}

/**
 * The fault of a request a hardened deserializer refused, or undefined for a decoded message.
 * Every handler behind `hardenService` asks this first.
 */
export function malformedOf(message: unknown): WireFault | undefined {
  return typeof message === "object" && message !== null ? (message as { [MALFORMED]?: WireFault })[MALFORMED] : undefined;
}

/** The first line of a thrown value, bounded. */
function brief(e: unknown): string {
  const s = (e instanceof Error ? e.message : String(e)).split("\n")[0]!;
  return s.length <= 120 ? s : `${s.slice(0, 120)}…`;
}

/**
 * A copy of a generated grpc-js service definition (e.g. ClusterServiceService) whose request
 * deserializers check the bytes first (checkWire) and never throw: a request that fails the check,
 * or that the generated decoder throws on, becomes a frozen marker that `malformedOf` recognises.
 * Responses and the client side are untouched.
 */
export function hardenService<T extends Record<string, MethodDefinition<any, any>>>(definition: T): T {
  const out: Record<string, MethodDefinition<any, any>> = {};
  for (const [key, method] of Object.entries(definition)) {
    const typeName = wireMethods[method.path];
    if (!typeName) throw new Error(`wire: no request type for ${method.path} in the schema`);
    const type = compiledOf(typeName);
    const decode = method.requestDeserialize;
    out[key] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        const fault = check(type, bytes);
        if (fault) return marker(fault);
        try {
          return decode(bytes);
        } catch (e) {
          return marker({ field: type.shortName, reason: `could not be decoded: ${brief(e)}` });
        }
      },
    };
  }
  return out as T;
}
