/**
 * A seeded generator of malformed and hostile messages for both services, for fuzz.test.ts. The
 * same seed always gives the same cases in the same order (mulberry32), so a failure replays with
 * BERTH_FUZZ_SEED (and BERTH_FUZZ_ONLY=<case index> to send that case alone).
 *
 * Messages are written from the schema (gen/wire-schema.ts) by a raw encoder of its own, so any
 * value can be sent — uint64 up to 2^64−1, NaN doubles, invalid UTF-8 — not only what the
 * generated encoder can write; plausible ones (real names, sizes that fit) come from the generated
 * encoder, and every family below is applied to both:
 *   random-bytes       bytes with no structure
 *   schema-random      any request type, fields drawn at random (most are refused by validation)
 *   plausible          requests and agent messages that may be accepted (some create VMs, register hosts)
 *   bit-flip, byte-set, truncation, length-corruption, splice   mutations of valid frames
 *   boundary           0, 2^31, 2^32−1, 2^32, 2^53±1, 2^63−1, 2^64−1; NaN, ±Inf, −0, 1e308 doubles
 *   control-chars      NUL, newlines, ESC, DEL, bidi overrides in names and labels; invalid UTF-8
 *   huge-string        one string of 100 KiB up to the 4 MiB message cap, rarely just over it
 *   oversize-repeated  repeated fields far over their limits (4,097 domains, 101 specs, 5,000 hosts)
 *   out-of-order       Report / result / heartbeat before Hello, a second Hello
 *   unknown-result     results for commands never sent
 *   duplicate-host     Hellos of a small pool of host ids, on streams that overlap
 * and, on agent streams, a first frame that is any of these. Each frame carries the verdict of
 * checkWire (the oracle for what the controller must answer) and whether it is over the cap.
 */
import {
  AgentMessage,
  checkWire,
  ClusterServiceService,
  CreateGroupRequest,
  CreateScaleGroupRequest,
  CreateVmRequest,
  CreateVmsRequest,
  DeleteScaleGroupRequest,
  UpdateClusterConfigRequest,
  UpdateScaleGroupRequest,
  wireMessages,
  wireMethods,
  type WireFault,
  type WireField,
} from "@berth/api";
import { Limits, mulberry32 } from "@berth/core";

export type Family =
  | "random-bytes"
  | "schema-random"
  | "plausible"
  | "bit-flip"
  | "byte-set"
  | "truncation"
  | "length-corruption"
  | "splice"
  | "boundary"
  | "control-chars"
  | "huge-string"
  | "oversize-repeated"
  | "out-of-order"
  | "unknown-result"
  | "duplicate-host";

/** One message as sent: its bytes and what the oracle says of them. */
export interface Frame {
  family: Family;
  bytes: Buffer;
  /** checkWire's verdict: a frame with a fault must be refused naming it. */
  fault: WireFault | undefined;
  /** Larger than the 4 MiB receive limit: grpc-js refuses it (RESOURCE_EXHAUSTED) before any handler. */
  overCap: boolean;
}

export interface UnaryCase extends Frame {
  kind: "unary";
  index: number;
  /** The RPC name, e.g. `CreateVm`. */
  method: string;
  path: string;
  requestType: string;
  /** A server stream (WatchEvents): read its first answer, then cancel. */
  serverStream: boolean;
}

export interface StreamCase {
  kind: "stream";
  index: number;
  family: Family;
  /** What the agent stream sends, in order; the first decides whether it is welcomed. */
  frames: Frame[];
}

export type FuzzCase = UnaryCase | StreamCase;

// Forged identities (certificates that may not send what they send) are identities.test.ts's:
// it sends this generator's cases to a mutual-TLS controller. Here every case is plaintext.

/** Host ids the plausible Hellos use: few, so streams for one host overlap (duplicate-host). */
export const HOST_POOL = Array.from({ length: 24 }, (_, i) => `fz-h${i}`);
/** VM names the plausible creates use: at most this many VMs exist. */
export const VM_POOL = Array.from({ length: 160 }, (_, i) => `fz-vm-${i}`);
const GROUP_POOL = Array.from({ length: 8 }, (_, i) => `fz-g${i}`);
/** Scale group names the plausible calls use: few, and small (their members are VMs too). */
const SCALE_GROUP_POOL = ["fz-sa", "fz-sb"];
const LABEL_KEYS = ["zone", "rack", "tier", "app", "gpu", "ssd"];
const PRESETS = ["spread", "pack", "balanced"];

const TWO = (n: number): bigint => 2n ** BigInt(n);
/** Values at the edges of Berth's numbers and of the wire's. */
const BOUNDARY_INTS: bigint[] = [0n, 1n, TWO(31) - 1n, TWO(31), TWO(32) - 1n, TWO(32), TWO(53) - 1n, TWO(53), TWO(53) + 1n, TWO(63) - 1n, TWO(64) - 1n];
const BOUNDARY_DOUBLES = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0, 1e308, -1e308, 5e-324, -1, 2 ** 53 + 2];
/** Control characters and other things a name or a label must not smuggle in. */
const HOSTILE_CHARS = ["\u0000", "\n", "\r", "\t", "\u001b[31m", "\u007f", "\u202e", "\u200b", "\ufeff", "%s%n", "../", "\ud800"];

const CLUSTER_METHODS = Object.entries(ClusterServiceService).map(([, d]) => ({
  method: d.path.slice(d.path.lastIndexOf("/") + 1),
  path: d.path,
  requestType: wireMethods[d.path]!,
  serverStream: d.responseStream,
}));
const AGENT_PATH = "/berth.v1.AgentService/Connect";

// A raw protobuf writer: any value, any field order, invalid UTF-8 if asked.
class Writer {
  private parts: Uint8Array[] = [];
  private small: number[] = [];
  length = 0;
  private flush(): void {
    if (this.small.length > 0) {
      this.parts.push(Uint8Array.from(this.small));
      this.small = [];
    }
  }
  byte(b: number): this {
    this.small.push(b & 0xff);
    this.length++;
    return this;
  }
  varint(v: bigint | number): this {
    if (typeof v === "number" && v >= 0 && v <= 0x7fffffff) {
      // The common case, without BigInt.
      let x = Math.trunc(v);
      while (x >= 0x80) {
        this.byte((x & 0x7f) | 0x80);
        x >>>= 7;
      }
      return this.byte(x);
    }
    let n = BigInt.asUintN(64, typeof v === "bigint" ? v : BigInt(Math.trunc(v)));
    while (n >= 0x80n) {
      this.byte(Number(n & 0x7fn) | 0x80);
      n >>= 7n;
    }
    return this.byte(Number(n));
  }
  tag(no: number, wire: number): this {
    return this.varint((BigInt(no) << 3n) | BigInt(wire));
  }
  raw(b: Uint8Array): this {
    this.flush();
    this.parts.push(b);
    this.length += b.length;
    return this;
  }
  ld(no: number, b: Uint8Array): this {
    return this.tag(no, 2).varint(b.length).raw(b);
  }
  fixed64(v: number): this {
    const b = Buffer.alloc(8);
    b.writeDoubleLE(v);
    return this.raw(b);
  }
  finish(): Buffer {
    this.flush();
    return Buffer.concat(this.parts);
  }
}

/** How a schema-driven message is drawn. */
interface Mode {
  /** Chance that a field is present. */
  presence: number;
  /** Chance that a number is a boundary value. */
  boundary: number;
  /** Chance that a string is hostile (control characters, invalid UTF-8, long). */
  hostile: number;
  /** Names from the pools (more requests pass validation and reach deeper code). */
  plausible: boolean;
  /** Repeated fields far over their limits. */
  oversize: boolean;
}

export class FuzzGenerator {
  private readonly rand: () => number;
  private index = 0;
  /** How many more repeated fields of the message being drawn may go over their limits. */
  private oversizeLeft = 0;
  /** Valid frames made so far, for splices. */
  private readonly donors: Buffer[] = [];

  constructor(readonly seed: number) {
    this.rand = mulberry32(seed);
  }

  /** The next case. Pure in the seed: case i is always the same. */
  next(): FuzzCase {
    const index = this.index++;
    return this.chance(0.6) ? this.unary(index) : this.stream(index);
  }

  // ---- randomness ----
  private int(lo: number, hi: number): number {
    return lo + Math.floor(this.rand() * (hi - lo + 1));
  }
  private chance(p: number): boolean {
    return this.rand() < p;
  }
  private pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rand() * xs.length)]!;
  }
  private weighted<T>(choices: readonly [number, T][]): T {
    const total = choices.reduce((s, [w]) => s + w, 0);
    let r = this.rand() * total;
    for (const [w, v] of choices) {
      if ((r -= w) < 0) return v;
    }
    return choices[choices.length - 1]![1];
  }
  private bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.rand() * 256);
    return b;
  }
  private token(n = 8): string {
    let s = "";
    for (let i = 0; i < n; i++) s += "abcdefghijklmnopqrstuvwxyz0123456789"[this.int(0, 35)];
    return s;
  }
  private uuid(): string {
    const h = this.bytes(16).toString("hex");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20)}`;
  }

  // ---- strings ----
  /** A hostile string, as bytes (it may not be UTF-8). */
  private hostileString(): Uint8Array {
    return this.weighted<() => Uint8Array>([
      [4, () => Buffer.from(`${this.pick(VM_POOL)}${this.pick(HOSTILE_CHARS)}${this.token(3)}`)],
      [2, () => Buffer.from(this.pick(HOSTILE_CHARS).repeat(this.int(1, 20)))],
      [2, () => Buffer.from([0x66, 0x7a, ...this.pick([[0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0x80]])])],
      [1, () => Buffer.alloc(0)],
      [2, () => Buffer.from("x".repeat(this.int(64, 400)))],
      [1, () => Buffer.from("ünïcödé-名前-😀")],
    ])();
  }

  /** A string for a field of this name. */
  private stringFor(name: string, mode: Mode): Uint8Array {
    if (this.chance(mode.hostile)) return this.hostileString();
    if (mode.plausible || this.chance(0.3)) {
      if (/^(name|vm_name)$/.test(name)) return Buffer.from(this.pick(VM_POOL));
      if (/host|^id$|^(from|to)_host$/.test(name)) return Buffer.from(this.pick(HOST_POOL));
      if (name === "group") return Buffer.from(this.chance(0.5) ? "" : this.pick(GROUP_POOL));
      if (/(^|_)id$/.test(name)) return Buffer.from(this.uuid());
      if (name === "key") return Buffer.from(this.pick(LABEL_KEYS));
      if (name === "preset") return Buffer.from(this.pick(PRESETS));
    }
    return Buffer.from(this.chance(0.2) ? "" : this.token(this.int(1, 12)));
  }

  // ---- schema-driven messages ----
  private numberFor(f: WireField, name: string, mode: Mode): bigint | number {
    if (this.chance(mode.boundary)) {
      if (f.type === "double" || f.type === "float") return this.pick(BOUNDARY_DOUBLES);
      const v = this.pick(BOUNDARY_INTS);
      return f.type === "int32" || f.type === "int64" || f.type === "enum" ? (this.chance(0.3) ? -v : v) : v;
    }
    switch (f.type) {
      case "double":
      case "float":
        return this.rand() * 10;
      case "bool":
        return this.int(0, 1);
      case "enum":
        return this.int(0, 3);
      default:
        if (name === "vcpus") return this.int(1, 8);
        if (name === "memory_mib") return this.pick([512, 1024, 2048, 4096]);
        if (name === "disk_gib") return this.int(1, 40);
        if (/_ms$/.test(name)) return this.chance(0.5) ? 0 : this.int(1, 600_000);
        return this.int(0, 100);
    }
  }

  private message(typeName: string, mode: Mode, depth = 0): Buffer {
    if (depth === 0) this.oversizeLeft = mode.oversize ? 1 : 0;
    const w = new Writer();
    const fields = Object.entries(wireMessages[typeName]!);
    if (this.chance(0.1)) fields.reverse();
    for (const [key, f] of fields) {
      const no = Number(key);
      if (!this.chance(mode.presence)) continue;
      // One repeated field of the message (the first one drawn) goes far over its limit.
      const over = f.repeated === true && mode.oversize && this.oversizeLeft > 0 && this.chance(0.5);
      if (over) this.oversizeLeft--;
      const count = !f.repeated ? 1 : over ? this.pick([65, 101, 1001, 4097, 5000]) : this.int(0, 3);
      if (f.packed && count > 1 && this.chance(0.5)) {
        const run = new Writer();
        for (let i = 0; i < count; i++) this.value(run, 0, f, mode, depth, true);
        w.ld(no, run.finish());
        continue;
      }
      for (let i = 0; i < count; i++) this.value(w, no, f, mode, depth, false);
    }
    // A field this schema does not know, well formed (forward compatibility).
    if (this.chance(0.04)) {
      const no = this.int(100, 2 ** 29 - 1);
      this.weighted<() => void>([
        [1, () => w.tag(no, 0).varint(this.pick(BOUNDARY_INTS))],
        [1, () => w.tag(no, 1).fixed64(this.rand())],
        [1, () => w.tag(no, 5).raw(this.bytes(4))],
        [1, () => w.ld(no, this.bytes(this.int(0, 12)))],
      ])();
    }
    return w.finish();
  }

  /** One value of field `f` (number `no`), tagged unless inside a packed run. */
  private value(w: Writer, no: number, f: WireField, mode: Mode, depth: number, packedRun: boolean): void {
    switch (f.type) {
      case "string":
        w.ld(no, this.stringFor(f.name, mode));
        return;
      case "bytes":
        w.ld(no, this.bytes(this.int(0, 16)));
        return;
      case "message": {
        if (depth > 6) return;
        w.ld(no, this.message(f.message!, mode, depth + 1));
        return;
      }
      case "double":
        if (!packedRun) w.tag(no, 1);
        w.fixed64(this.numberFor(f, f.name, mode) as number);
        return;
      case "float":
      case "fixed32":
      case "sfixed32":
        if (!packedRun) w.tag(no, 5);
        w.raw(this.bytes(4));
        return;
      case "fixed64":
      case "sfixed64":
        if (!packedRun) w.tag(no, 1);
        w.raw(this.bytes(8));
        return;
      default: {
        if (!packedRun) w.tag(no, 0);
        w.varint(this.numberFor(f, f.name, mode));
      }
    }
  }

  // ---- mutations ----
  private mutate(frame: Buffer): { family: Family; bytes: Buffer } {
    if (frame.length === 0) return { family: "random-bytes", bytes: this.bytes(this.int(1, 16)) };
    const family = this.weighted<Family>([
      [3, "bit-flip"],
      [2, "byte-set"],
      [2, "truncation"],
      [3, "length-corruption"],
      [2, "splice"],
    ]);
    const b = Buffer.from(frame);
    switch (family) {
      case "bit-flip":
        for (let i = this.int(1, 3); i > 0; i--) {
          const at = this.int(0, b.length - 1);
          b[at] = b[at]! ^ (1 << this.int(0, 7));
        }
        return { family, bytes: b };
      case "byte-set":
        b[this.int(0, b.length - 1)] = this.pick([0x00, 0xff, 0x80, 0x7f, 0x08, 0x0c, 0x0b, 0x0f, this.int(0, 255)]);
        return { family, bytes: b };
      case "truncation":
        return { family, bytes: b.subarray(0, this.int(0, b.length - 1)) };
      case "length-corruption": {
        const lengths = lengthFields(b);
        if (lengths.length === 0) {
          b[0] = b[0]! ^ 0x40;
          return { family: "bit-flip", bytes: b };
        }
        const at = this.pick(lengths);
        const old = at.value;
        const value = this.pick([old + 1, old - 1, old + this.int(2, 64), 0, 0x7f, 0x80, 2 ** 31, 2 ** 32 - 1, 2 ** 53, Math.floor(this.rand() * 1e6)]);
        const v = new Writer().varint(BigInt(Math.max(0, value))).finish();
        return { family, bytes: Buffer.concat([b.subarray(0, at.pos), v, b.subarray(at.end)]) };
      }
      default: {
        const donor = this.donors.length > 0 ? this.pick(this.donors) : this.bytes(16);
        const cut = this.int(0, b.length);
        const bytes = this.weighted<() => Buffer>([
          [2, () => Buffer.concat([b.subarray(0, cut), donor.subarray(this.int(0, donor.length))])],
          [1, () => Buffer.concat([b.subarray(0, cut), this.bytes(this.int(1, 8)), b.subarray(cut)])],
          [1, () => Buffer.concat([b, b.subarray(this.int(0, b.length - 1))])],
        ])();
        return { family: "splice", bytes };
      }
    }
  }

  private remember(frame: Buffer): Buffer {
    if (frame.length < 4096) {
      if (this.donors.length < 256) this.donors.push(frame);
      else this.donors[this.int(0, 255)] = frame;
    }
    return frame;
  }

  private frame(family: Family, bytes: Buffer, type: string): Frame {
    const overCap = bytes.length > Limits.maxMessageBytes;
    return { family, bytes, fault: overCap ? undefined : checkWire(type, bytes), overCap };
  }

  /** A message of `type` with one string of 100 KiB up to the cap (rarely just over). */
  private huge(type: string): Buffer {
    const inner = this.message(type, { presence: 0.5, boundary: 0, hostile: 0, plausible: true, oversize: false });
    const size = this.chance(0.1) ? Limits.maxMessageBytes + this.int(1, 64) : this.int(100 * 1024, Limits.maxMessageBytes - 64);
    const fields = Object.entries(wireMessages[type]!).filter(([, f]) => f.type === "string");
    const no = fields.length > 0 ? Number(this.pick(fields)[0]) : 15;
    const w = new Writer().raw(inner);
    const headroom = Math.max(0, size - inner.length - 10);
    w.ld(no, Buffer.alloc(headroom, this.chance(0.5) ? 0x61 : 0x00));
    return w.finish();
  }

  // ---- operator calls ----
  private unary(index: number): UnaryCase {
    // The calls that write, or read what others wrote, more often than the rest.
    const favoured = this.chance(0.3) ? this.pick(["CreateVm", "CreateVms", "CreateGroup", "UpdateClusterConfig", "GetVm", "DeleteVm"]) : undefined;
    const m = favoured ? CLUSTER_METHODS.find((x) => x.method === favoured)! : this.pick(CLUSTER_METHODS);
    const type = m.requestType;
    const family = this.weighted<Family>([
      [10, "random-bytes"],
      [14, "schema-random"],
      [22, "plausible"],
      [32, "bit-flip"], // a mutation of a plausible or schema-random frame (the kind is decided there)
      [12, "boundary"],
      [5, "control-chars"],
      [3, "oversize-repeated"],
      [0.05, "huge-string"],
    ]);
    let bytes: Buffer;
    let actual: Family = family;
    switch (family) {
      case "random-bytes":
        bytes = this.bytes(this.chance(0.9) ? this.int(0, 48) : this.int(49, 2048));
        break;
      case "schema-random":
        bytes = this.remember(this.message(type, { presence: 0.5, boundary: 0.02, hostile: 0.02, plausible: false, oversize: false }));
        break;
      case "plausible":
        bytes = this.remember(this.plausibleRequest(m.method, type));
        break;
      case "boundary":
        bytes = this.message(type, { presence: 0.7, boundary: 0.35, hostile: 0, plausible: true, oversize: false });
        break;
      case "control-chars":
        bytes = this.message(type, { presence: 0.7, boundary: 0, hostile: 0.5, plausible: true, oversize: false });
        break;
      case "oversize-repeated":
        bytes = this.message(type, { presence: 0.8, boundary: 0, hostile: 0, plausible: true, oversize: true });
        break;
      case "huge-string":
        bytes = this.huge(type);
        break;
      default: {
        const base = this.chance(0.6) ? this.plausibleRequest(m.method, type) : this.message(type, { presence: 0.6, boundary: 0.02, hostile: 0.02, plausible: true, oversize: false });
        ({ family: actual, bytes } = this.mutate(base));
      }
    }
    return { kind: "unary", index, method: m.method, path: m.path, requestType: type, serverStream: m.serverStream, ...this.frame(actual, bytes, type) };
  }

  /** A request that may well be accepted: real names, sizes that fit. */
  private plausibleRequest(method: string, type: string): Buffer {
    const spec = (): object => ({
      name: this.pick(VM_POOL),
      resources: { vcpus: this.int(1, 4), memoryMib: this.pick([512, 1024, 2048]), diskGib: this.int(1, 20) },
      labels: this.chance(0.3) ? { [this.pick(LABEL_KEYS)]: this.token(4) } : {},
      group: this.chance(0.2) ? this.pick(GROUP_POOL) : "",
      requiredHostLabels: {},
      forbiddenHostLabels: {},
      pinnedHosts: this.chance(0.1) ? [this.pick(HOST_POOL)] : [],
      onHostFailure: this.int(0, 2),
    });
    switch (method) {
      case "CreateVm":
        return Buffer.from(CreateVmRequest.encode(CreateVmRequest.fromPartial({ spec: spec(), requestId: this.chance(0.3) ? this.token(12) : "" })).finish());
      case "CreateVms":
        return Buffer.from(CreateVmsRequest.encode(CreateVmsRequest.fromPartial({ specs: Array.from({ length: this.int(1, 3) }, spec) })).finish());
      case "CreateScaleGroup": {
        const minSize = this.int(0, 2);
        return Buffer.from(
          CreateScaleGroupRequest.encode(
            CreateScaleGroupRequest.fromPartial({
              group: { name: this.pick(SCALE_GROUP_POOL), template: { ...spec(), name: "" }, minSize, maxSize: minSize + this.int(0, 2), policy: { targetCpu: this.pick([0.3, 0.6, 0.9]), intervalMs: this.pick([0, 1000]) } },
            }),
          ).finish(),
        );
      }
      case "UpdateScaleGroup":
        return Buffer.from(
          UpdateScaleGroupRequest.encode(
            UpdateScaleGroupRequest.fromPartial({ name: this.pick(SCALE_GROUP_POOL), ...(this.chance(0.5) ? { minSize: this.int(0, 2) } : {}), ...(this.chance(0.5) ? { maxSize: this.int(1, 4) } : {}), protect: this.chance(0.3) ? [`${this.pick(SCALE_GROUP_POOL)}-${this.int(1, 4)}`] : [] }),
          ).finish(),
        );
      case "DeleteScaleGroup":
        return Buffer.from(DeleteScaleGroupRequest.encode({ name: this.pick(SCALE_GROUP_POOL), deleteVms: this.chance(0.5) }).finish());
      case "CreateGroup":
        return Buffer.from(CreateGroupRequest.encode({ name: this.pick(GROUP_POOL), policy: this.int(0, 3) }).finish());
      case "UpdateClusterConfig":
        return Buffer.from(
          UpdateClusterConfigRequest.encode(UpdateClusterConfigRequest.fromPartial({ config: { scheduler: { preset: this.pick(PRESETS), seed: this.int(0, 1000) }, defaultOnHostFailure: this.int(0, 2) } })).finish(),
        );
      default:
        return this.message(type, { presence: 0.8, boundary: 0, hostile: 0, plausible: true, oversize: false });
    }
  }

  // ---- agent streams ----
  private hello(hostId: string): object {
    return {
      hostId,
      bootId: this.uuid(),
      capacity: { vcpus: this.int(8, 64), memoryMib: this.pick([65536, 262144]), diskGib: this.int(500, 4000) },
      labels: this.chance(0.5) ? { zone: this.pick(["a", "b", "c"]) } : {},
      inventory: { domains: [] },
      agentVersion: "fuzz",
      driver: "fake",
      lastLeaderEpoch: 0,
      // Mostly none (a new agent); sometimes another cluster's, sometimes a long one.
      clusterId: this.weighted<() => string>([
        [90, () => ""],
        [7, () => this.uuid()],
        [3, () => "c".repeat(this.int(100, 3000))],
      ])(),
    };
  }

  private agentMessage(msg: object): Buffer {
    return Buffer.from(AgentMessage.encode(AgentMessage.fromPartial({ msg } as AgentMessage)).finish());
  }

  /** A message an agent may send after Welcome. */
  private laterMessage(): { family: Family; bytes: Buffer } {
    return this.weighted<() => { family: Family; bytes: Buffer }>([
      [10, () => ({ family: "plausible", bytes: this.agentMessage({ $case: "heartbeat", value: { leaderEpoch: this.int(0, 5) } }) })],
      [
        12,
        () => ({
          family: "plausible",
          bytes: this.agentMessage({
            $case: "report",
            value: {
              usage: { vcpus: this.int(0, 8), memoryMib: this.int(0, 8192), diskGib: this.int(0, 100) },
              hypervisor: { available: this.chance(0.9), message: "" },
              vmUsage: Array.from({ length: this.int(0, 3) }, () => ({ vmId: this.uuid(), cpuCores: this.rand() * 2, memoryUsedMib: this.int(0, 4096) })),
              inventory: this.chance(0.3) ? { domains: Array.from({ length: this.int(0, 3) }, () => ({ vmId: this.uuid(), name: this.pick(VM_POOL), state: this.int(0, 4), generation: this.int(0, 9), resources: { vcpus: 1, memoryMib: 512, diskGib: 1 } })) } : undefined,
            },
          }),
        }),
      ],
      [6, () => ({ family: "unknown-result", bytes: this.agentMessage({ $case: "result", value: { commandId: this.uuid(), vmId: this.uuid(), generation: this.int(0, 9), ok: this.chance(0.5), errorCode: this.pick(["", "INTERNAL", "NOPE"]) } }) })],
      [3, () => ({ family: "unknown-result", bytes: this.agentMessage({ $case: "migrationProgress", value: { vmId: this.uuid(), migrationId: this.uuid(), progress: { dataTotalBytes: this.int(0, 1e9) } } }) })],
      [3, () => ({ family: "out-of-order", bytes: this.agentMessage({ $case: "hello", value: this.hello(this.pick(HOST_POOL)) }) })],
      [10, () => this.mutate(this.remember(this.message("berth.v1.AgentMessage", { presence: 0.3, boundary: 0.02, hostile: 0.02, plausible: true, oversize: false })))],
      [4, () => ({ family: "random-bytes", bytes: this.bytes(this.int(0, 48)) })],
      [6, () => ({ family: "boundary", bytes: this.message("berth.v1.AgentMessage", { presence: 0.3, boundary: 0.4, hostile: 0, plausible: true, oversize: false }) })],
      [4, () => ({ family: "control-chars", bytes: this.message("berth.v1.AgentMessage", { presence: 0.3, boundary: 0, hostile: 0.6, plausible: true, oversize: false }) })],
      [0.3, () => ({ family: "oversize-repeated", bytes: this.oversizeReport() })],
      [0.02, () => ({ family: "huge-string", bytes: this.huge("berth.v1.AgentMessage") })],
    ])();
  }

  /** A Report over the domain limit (4,097 domains or VmUsage entries). */
  private oversizeReport(): Buffer {
    const n = Limits.maxDomainsPerHost + 1;
    const domains = this.chance(0.5);
    return this.agentMessage({
      $case: "report",
      value: domains
        ? { inventory: { domains: Array.from({ length: n }, (_, i) => ({ vmId: `d-${i}`, name: `d-${i}`, state: 2, generation: 1 })) }, vmUsage: [] }
        : { vmUsage: Array.from({ length: n }, (_, i) => ({ vmId: `d-${i}`, cpuCores: 0.5, memoryUsedMib: 1 })) },
    });
  }

  private stream(index: number): StreamCase {
    const type = "berth.v1.AgentMessage";
    const hostId = this.chance(0.9) ? this.pick(HOST_POOL) : `fz-u${index % 64}`;
    const first = this.weighted<() => { family: Family; bytes: Buffer }>([
      [55, () => ({ family: HOST_POOL.includes(hostId) ? "duplicate-host" : "plausible", bytes: this.remember(this.agentMessage({ $case: "hello", value: this.hello(hostId) })) })],
      [10, () => this.mutate(this.agentMessage({ $case: "hello", value: this.hello(hostId) }))],
      [8, () => ({ family: "out-of-order", bytes: this.laterMessage().bytes })],
      [5, () => ({ family: "random-bytes", bytes: this.bytes(this.int(0, 48)) })],
      [6, () => ({ family: "boundary", bytes: new Writer().ld(1, this.message("berth.v1.Hello", { presence: 0.8, boundary: 0.3, hostile: 0, plausible: true, oversize: false })).finish() })],
      [6, () => ({ family: "control-chars", bytes: new Writer().ld(1, this.message("berth.v1.Hello", { presence: 0.8, boundary: 0, hostile: 0.5, plausible: true, oversize: false })).finish() })],
      [5, () => ({ family: "schema-random", bytes: this.message(type, { presence: 0.4, boundary: 0.02, hostile: 0.02, plausible: false, oversize: false }) })],
      [0.3, () => ({ family: "oversize-repeated", bytes: new Writer().ld(1, this.message("berth.v1.Hello", { presence: 0.9, boundary: 0, hostile: 0, plausible: true, oversize: true })).finish() })],
      [0.05, () => ({ family: "huge-string", bytes: this.huge(type) })],
      // A Hello valid but for one string of its far over any limit (100 KiB up to the cap).
      [0.1, () => ({ family: "huge-string", bytes: this.agentMessage({ $case: "hello", value: { ...this.hello(hostId), [this.pick(["hostId", "bootId", "agentVersion", "driver", "clusterId"])]: "h".repeat(this.int(100 * 1024, Limits.maxMessageBytes - 1024)) } }) })],
    ])();
    const frames = [this.frame(first.family, first.bytes, type)];
    for (let i = this.weighted([[3, 0], [4, 2], [3, 5]] as [number, number][]); i > 0; i--) {
      const m = this.laterMessage();
      frames.push(this.frame(m.family, m.bytes, type));
    }
    return { kind: "stream", index, family: first.family, frames };
  }
}

/** Where the length varints of length-delimited fields are in `b` (top level and nested ones that parse). */
function lengthFields(b: Buffer, start = 0, end = b.length, depth = 0, out: { pos: number; end: number; value: number }[] = []): { pos: number; end: number; value: number }[] {
  let pos = start;
  const varint = (): number => {
    let v = 0;
    let shift = 0;
    for (;;) {
      if (pos >= end || shift > 49) return -1;
      const x = b[pos++]!;
      v += (x & 0x7f) * 2 ** shift;
      if (x < 0x80) return v;
      shift += 7;
    }
  };
  while (pos < end) {
    const tag = varint();
    if (tag <= 0) return out;
    const wire = tag % 8;
    if (wire === 0) {
      if (varint() < 0) return out;
    } else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const at = pos;
      const len = varint();
      if (len < 0 || pos + len > end) return out;
      out.push({ pos: at, end: pos, value: len });
      if (depth < 6) lengthFields(b, pos, pos + len, depth + 1, out);
      pos += len;
    } else return out;
  }
  return out;
}

/** A short description of a case, for a failure message (never the whole of a large frame). */
export function describeCase(c: FuzzCase, frame?: Frame): string {
  const hex = (b: Buffer): string => `${b.subarray(0, 48).toString("hex")}${b.length > 48 ? `… (${b.length} bytes)` : ""}`;
  if (c.kind === "unary") return `case #${c.index} ${c.method} [${c.family}] ${hex(c.bytes)}`;
  return `case #${c.index} agent stream [${c.frames.map((f) => f.family).join(", ")}]${frame ? ` at frame ${c.frames.indexOf(frame)} ${hex(frame.bytes)}` : ""}`;
}

export const AGENT_CONNECT_PATH = AGENT_PATH;
