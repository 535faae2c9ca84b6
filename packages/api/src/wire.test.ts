import fc from "fast-check";
import { describe, expect, it } from "vitest";
import * as api from "./index.js";
import { ld, str, tag, vfield } from "./wire.testkit.js";
import { AgentServiceService, ClusterServiceService, checkWire, hardenService, malformedOf, wireMessages, wireMethods, type WireField } from "./index.js";

const bytes = (...parts: number[][]): Uint8Array => Uint8Array.from(parts.flat());

const hardenedAgent = hardenService(AgentServiceService);
const hardenedCluster = hardenService(ClusterServiceService);
const deserializeAgent = (b: Uint8Array): unknown => hardenedAgent.connect.requestDeserialize(Buffer.from(b));

type Codec = { encode(m: unknown): { finish(): Uint8Array }; decode(b: Uint8Array): unknown; fromJSON(o: unknown): unknown };
const codecOf = (fullName: string): Codec => (api as unknown as Record<string, Codec>)[fullName.slice(fullName.lastIndexOf(".") + 1)]!;

describe("checkWire", () => {
  it("accepts what the generated encoder writes", () => {
    const hello = api.AgentMessage.encode({
      msg: { $case: "hello", value: api.Hello.fromPartial({ hostId: "h1", capacity: { vcpus: 8, memoryMib: 2 ** 53 - 1, diskGib: 100 }, labels: { zone: "eu-1", "ключ": "значение 😀" } }) },
    }).finish();
    expect(checkWire("berth.v1.AgentMessage", hello)).toBeUndefined();
    expect(checkWire("AgentMessage", hello)).toBeUndefined();
    expect(checkWire("AgentMessage", new Uint8Array())).toBeUndefined();
  });

  it("refuses garbage the generated decoder reads as an empty message", () => {
    // The generated decoder stops at tag 0 and answers {}.
    expect(api.AgentMessage.decode(Buffer.from("00ffff", "hex"))).toEqual({ msg: undefined });
    expect(checkWire("AgentMessage", Buffer.from("00ffff", "hex"))).toEqual({ field: "AgentMessage", reason: "field number 0 at byte 0 (field numbers are 1 to 2^29-1)" });
    // Tag 0 inside a sub-message names the sub-message.
    expect(checkWire("AgentMessage", bytes(ld(1, [0x00])))).toMatchObject({ field: "hello", reason: expect.stringMatching(/^field number 0 at byte 2/) });
    // A stray end-group, a start-group, wire types 6 and 7.
    expect(checkWire("AgentMessage", bytes(tag(1, 4)))).toMatchObject({ field: "AgentMessage", reason: expect.stringMatching(/group/) });
    expect(checkWire("AgentMessage", bytes(ld(1, tag(1, 3))))).toMatchObject({ field: "hello", reason: expect.stringMatching(/group/) });
    expect(checkWire("AgentMessage", bytes(tag(9, 6)))).toMatchObject({ reason: "unknown wire type 6 at byte 0" });
    expect(checkWire("AgentMessage", bytes(tag(9, 7)))).toMatchObject({ reason: "unknown wire type 7 at byte 0" });
    // Oversized tags: above 2^32-1, and longer than 5 bytes (a padded tag).
    expect(checkWire("AgentMessage", Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x1f]))).toMatchObject({ field: "AgentMessage", reason: "the tag at byte 0 is above 2^32-1" });
    expect(checkWire("AgentMessage", Uint8Array.from([0x8a, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00]))).toMatchObject({ reason: "the tag at byte 0 is above 2^32-1" });
    // A varint of 11 bytes, and one above 2^64-1 in 10.
    expect(checkWire("AgentMessage", bytes(tag(99, 0), Array(10).fill(0xff), [0x01]))).toMatchObject({ field: "#99", reason: expect.stringMatching(/longer than 10 bytes/) });
    expect(checkWire("AgentMessage", bytes(tag(99, 0), Array(9).fill(0xff), [0x02]))).toMatchObject({ field: "#99", reason: expect.stringMatching(/above 2\^64-1/) });
    // Cut off: a varint, a length, fixed-width values.
    expect(checkWire("AgentMessage", bytes(tag(99, 0), [0x80]))).toMatchObject({ field: "#99", reason: "the varint at byte 2 runs past the end of the message" });
    expect(checkWire("AgentMessage", bytes(tag(1, 2), [0x05, 0x00]))).toMatchObject({ field: "hello", reason: expect.stringMatching(/a length of 5 bytes at byte 1 runs past the end of the enclosing message \(1 bytes left\)/) });
    expect(checkWire("AgentMessage", bytes(tag(99, 1), [1, 2, 3]))).toMatchObject({ field: "#99", reason: expect.stringMatching(/8 bytes/) });
    expect(checkWire("AgentMessage", bytes(tag(99, 5), [1, 2, 3]))).toMatchObject({ field: "#99", reason: expect.stringMatching(/4 bytes/) });
  });

  it("refuses a field that straddles the end of its sub-message (a Hello whose capacity overruns into its labels)", () => {
    // capacity says 2 bytes: memory_mib's tag and the first byte of a varint that goes on into the
    // labels (an empty entry: its tag ends the varint, its length 0 reads as tag 0).
    const frame = bytes(ld(1, [...str(1, "h1"), ...tag(3, 2), 0x02, ...tag(2, 0), 0x80, ...ld(4, [])]));
    // The generated decoder reads on into the labels and takes the result.
    const lenient = api.AgentMessage.decode(frame);
    expect(lenient.msg).toMatchObject({ $case: "hello", value: { hostId: "h1", capacity: { memoryMib: 0x22 << 7 }, labels: {} } });
    expect(checkWire("AgentMessage", frame)).toEqual({ field: "hello.capacity.memory_mib", reason: "the varint at byte 9 runs past the end of the message" });
    expect(malformedOf(deserializeAgent(frame))).toEqual({ field: "hello.capacity.memory_mib", reason: "the varint at byte 9 runs past the end of the message" });
  });

  it("refuses 2^53 and 2^64-1 in every uint64 the outside client found, naming the field; 2^53-1 passes", () => {
    const resources = (no: number, v: bigint): number[] => vfield(no, v);
    const cases: [string, string, (v: bigint) => Uint8Array][] = [
      ["CreateVmRequest", "spec.resources.memory_mib", (v) => bytes(ld(1, [...str(1, "web"), ...ld(2, [...vfield(1, 1), ...resources(2, v)])]))],
      ["CreateVmRequest", "spec.resources.disk_gib", (v) => bytes(ld(1, [...str(1, "web"), ...ld(2, resources(3, v))]))],
      ["CreateVmsRequest", "specs[2].resources.memory_mib", (v) => bytes(ld(1, str(1, "a")), ld(1, str(1, "b")), ld(1, ld(2, resources(2, v))))],
      ["UpdateClusterConfigRequest", "config.scheduler.seed", (v) => bytes(ld(1, ld(1, [...str(1, "pack"), ...vfield(7, v)])))],
      ["AgentMessage", "hello.capacity.memory_mib", (v) => bytes(ld(1, [...str(1, "h1"), ...ld(3, resources(2, v))]))],
      ["AgentMessage", "hello.capacity.disk_gib", (v) => bytes(ld(1, [...str(1, "h1"), ...ld(3, resources(3, v))]))],
      ["AgentMessage", "hello.last_leader_epoch", (v) => bytes(ld(1, [...str(1, "h1"), ...vfield(8, v)]))],
      ["AgentMessage", "report.inventory.domains[1].resources.memory_mib", (v) => bytes(ld(2, ld(2, [...ld(1, str(1, "x")), ...ld(1, ld(5, resources(2, v)))])))],
    ];
    const methodOf: Record<string, string> = { CreateVmRequest: "createVm", CreateVmsRequest: "createVms", UpdateClusterConfigRequest: "updateClusterConfig" };
    for (const [type, field, make] of cases) {
      expect(checkWire(type, make(2n ** 53n - 1n)), field).toBeUndefined();
      for (const v of [2n ** 53n, 2n ** 64n - 1n]) {
        const frame = make(v);
        // The generated decoder throws (grpc-js would answer INTERNAL).
        expect(() => codecOf(type).decode(frame)).toThrow(/MAX_SAFE_INTEGER/);
        const fault = checkWire(type, frame);
        expect(fault, `${field} = ${v}`).toEqual({ field, reason: `${v} is above 2^53-1 (9007199254740991), the largest uint64 this API accepts` });
        const hardened = type === "AgentMessage" ? deserializeAgent(frame) : (hardenedCluster as unknown as Record<string, api.ClusterServiceService["createVm"]>)[methodOf[type]!]!.requestDeserialize(Buffer.from(frame));
        expect(malformedOf(hardened)).toEqual(fault);
      }
    }
  });

  it("bounds 32-bit and signed numbers", () => {
    // uint32 above 2^32-1 (the generated decoder truncates it to 0).
    expect(checkWire("Resources", bytes(vfield(1, 2n ** 32n)))).toMatchObject({ field: "vcpus", reason: expect.stringMatching(/^4294967296 is above 2\^32-1/) });
    expect(checkWire("Resources", bytes(vfield(1, 2n ** 32n - 1n)))).toBeUndefined();
    // An enum (int32): a negative value travels sign-extended and passes; one above 2^31-1 does not.
    expect(checkWire("Domain", bytes(vfield(3, -1)))).toBeUndefined();
    expect(checkWire("Domain", bytes(vfield(3, 2n ** 31n)))).toMatchObject({ field: "state", reason: expect.stringMatching(/int32 range/) });
    expect(checkWire("Domain", bytes(vfield(3, -(2n ** 31n) - 1n)))).toMatchObject({ field: "state" });
    // A bool takes any varint.
    expect(checkWire("Domain", bytes(vfield(6, 2n ** 63n)))).toBeUndefined();
  });

  it("refuses a known field sent with another wire type, allows unknown fields that are well formed", () => {
    expect(checkWire("Resources", bytes(str(1, "8")))).toMatchObject({ field: "vcpus", reason: "sent as length-delimited at byte 0, but its type travels as varint" });
    expect(checkWire("Hello", bytes(vfield(1, 5)))).toMatchObject({ field: "host_id", reason: "sent as varint at byte 0, but its type travels as length-delimited" });
    expect(checkWire("VmUsage", bytes(vfield(2, 5)))).toMatchObject({ field: "cpu_cores", reason: "sent as varint at byte 0, but its type travels as 64-bit" });
    // Unknown numbers of every wire type, a large one included.
    const unknown = bytes(vfield(50, 2n ** 64n - 1n), tag(51, 1), [1, 2, 3, 4, 5, 6, 7, 8], tag(52, 5), [1, 2, 3, 4], ld(2 ** 29 - 1, [0xff, 0xfe, 0x00]));
    expect(checkWire("Hello", unknown)).toBeUndefined();
    expect(api.Hello.decode(unknown)).toEqual(api.Hello.decode(new Uint8Array()));
  });

  it("refuses strings that are not UTF-8", () => {
    const host = (raw: number[]): Uint8Array => bytes(ld(1, ld(1, raw)));
    expect(checkWire("AgentMessage", host([...Buffer.from("héllo 😀 ✓")]))).toBeUndefined();
    // Anywhere in the string: the ASCII scan reads four bytes at a time.
    for (const prefix of ["", "a", "abc", "abcd", "abcdefg", "abcdefgh", "abcdefghijklmnopqrstuvwxyz0123", "abcdefghijklmnopqrstuvwxyz01234"]) {
      for (const bad of [[0xff], [0x80], [0xc0, 0xaf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0x68, 0xc3], [0xe2, 0x82], [0xf0, 0x9f, 0x98]]) {
        for (const suffix of ["", "xyz12345"]) {
          const raw = [...Buffer.from(prefix), ...bad, ...Buffer.from(suffix)];
          expect(checkWire("AgentMessage", host(raw)), Buffer.from(raw).toString("hex")).toEqual({ field: "hello.host_id", reason: "the string at byte 4 is not valid UTF-8" });
        }
      }
      expect(checkWire("AgentMessage", host([...Buffer.from(`${prefix}é${prefix}😀${prefix}`)]))).toBeUndefined();
    }
    // Map keys and values too (a map entry is a message), with the entry's index.
    const labels = bytes(ld(1, [...ld(4, [...str(1, "a"), ...str(2, "b")]), ...ld(4, [...str(1, "k"), ...ld(2, [0xc3, 0x28])])]));
    expect(checkWire("AgentMessage", labels)).toMatchObject({ field: "hello.labels[1].value" });
  });

  it("names repeated elements and unknown fields by position and number", () => {
    const domains = bytes(ld(2, ld(2, [...ld(1, str(1, "a")), ...ld(1, str(1, "b")), ...ld(1, [...str(1, "c"), ...tag(77, 2), 0x05])])));
    expect(checkWire("AgentMessage", domains)).toEqual({ field: "report.inventory.domains[2].#77", reason: "a length of 5 bytes at byte 1 runs past the end of the enclosing message (0 bytes left)".replace("byte 1", `byte ${domains.length - 1}`) });
  });

  it("bounds nesting depth", () => {
    // Berth has no recursive message; depth is bounded by the schema. An unknown field is never looked into.
    let nested: number[] = [];
    for (let i = 0; i < 200; i++) nested = ld(1, nested);
    expect(checkWire("AgentHeartbeat", bytes(ld(9, nested)))).toBeUndefined();
  });

  it("every method of both services has its request type in the schema", () => {
    for (const def of [ClusterServiceService, AgentServiceService]) {
      for (const m of Object.values(def)) expect(wireMessages[wireMethods[m.path]!], m.path).toBeDefined();
    }
    expect(() => checkWire("NoSuchMessage", new Uint8Array())).toThrow(/no message/);
  });
});

describe("hardenService", () => {
  it("decodes well-formed requests as before, refuses malformed ones with a frozen marker, never throws", () => {
    const good = api.CreateVmRequest.encode({ spec: api.VmSpec.fromPartial({ name: "web", resources: { vcpus: 1, memoryMib: 512, diskGib: 1 } }), requestId: "r1" }).finish();
    const req = hardenedCluster.createVm.requestDeserialize(Buffer.from(good));
    expect(malformedOf(req)).toBeUndefined();
    expect(req).toEqual(api.CreateVmRequest.decode(good));
    const bad = hardenedCluster.createVm.requestDeserialize(Buffer.from("00ffff", "hex"));
    expect(malformedOf(bad)).toEqual({ field: "CreateVmRequest", reason: expect.stringMatching(/field number 0/) });
    expect(Object.isFrozen(bad)).toBe(true);
    expect(malformedOf(undefined)).toBeUndefined();
    expect(malformedOf(null)).toBeUndefined();
    // Paths, streaming flags and the other side are unchanged.
    expect(hardenedCluster.createVm.path).toBe(ClusterServiceService.createVm.path);
    expect(hardenedAgent.connect.requestStream).toBe(true);
    expect(hardenedCluster.createVm.responseSerialize).toBe(ClusterServiceService.createVm.responseSerialize);
    expect(Object.keys(hardenedCluster)).toEqual(Object.keys(ClusterServiceService));
  });

  it("turns a decoder's throw into a marker too", () => {
    const def = hardenService({ connect: { ...AgentServiceService.connect, requestDeserialize: (_: Buffer): api.AgentMessage => { throw new Error("boom\nsecond line"); } } });
    expect(malformedOf(def.connect.requestDeserialize(Buffer.alloc(0)))).toEqual({ field: "AgentMessage", reason: "could not be decoded: boom" });
  });
});

// Random valid messages of any type, as JSON with proto field names (what the generated fromJSON takes).
const isMapEntry = (parent: string, f: WireField): boolean =>
  f.repeated === true && f.message !== undefined && f.message.startsWith(`${parent}.`) && f.message.endsWith("Entry") && wireMessages[f.message]?.[1]?.name === "key";
const scalarArb = (f: WireField): fc.Arbitrary<unknown> => {
  switch (f.type) {
    case "uint64":
    case "fixed64":
      return fc.oneof(fc.constantFrom(0, 1, 2 ** 32, 2 ** 53 - 1), fc.maxSafeNat());
    case "int64":
    case "sint64":
    case "sfixed64":
      return fc.oneof(fc.constantFrom(0, -1, 2 ** 53 - 1, -(2 ** 53 - 1)), fc.maxSafeInteger());
    case "uint32":
    case "fixed32":
      return fc.oneof(fc.constantFrom(0, 2 ** 32 - 1), fc.nat({ max: 2 ** 32 - 1 }));
    case "int32":
    case "sint32":
    case "sfixed32":
      return fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 });
    case "enum":
      return fc.constantFrom(0, 1); // every enum of berth.v1 has these
    case "bool":
      return fc.boolean();
    case "double":
    case "float":
      return fc.double();
    case "string":
      return fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.constant(""));
    case "bytes":
      return fc.base64String();
    case "message":
      throw new Error("not a scalar");
  }
};
const arbCache = new Map<string, fc.Arbitrary<Record<string, unknown>>>();
function messageArb(fullName: string, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  const key = `${fullName}@${depth}`;
  const cached = arbCache.get(key);
  if (cached) return cached;
  const fields = Object.values(wireMessages[fullName]!);
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of fields) {
    let arb: fc.Arbitrary<unknown>;
    if (f.type === "message" && isMapEntry(fullName, f)) {
      const entry = wireMessages[f.message!]!;
      arb = fc.dictionary(fc.string({ maxLength: 8 }), scalarArb(entry[2]!), { maxKeys: 3 });
    } else if (f.type === "message") {
      if (depth > 6) continue;
      const sub = messageArb(f.message!, depth + 1);
      arb = f.repeated ? fc.array(sub, { maxLength: 3 }) : sub;
    } else {
      arb = f.repeated ? fc.array(scalarArb(f), { maxLength: 3 }) : scalarArb(f);
    }
    parts[f.name] = arb;
  }
  const arb = fc.record(parts, { requiredKeys: [] }) as fc.Arbitrary<Record<string, unknown>>;
  arbCache.set(key, arb);
  return arb;
}

const requestTypes = [...new Set(Object.values(wireMethods))].sort();
const hardenedByType = new Map<string, (b: Buffer) => unknown>();
for (const def of [hardenedCluster, hardenedAgent] as Record<string, api.AgentServiceService["connect"]>[]) {
  for (const m of Object.values(def)) hardenedByType.set(wireMethods[m.path]!, m.requestDeserialize as (b: Buffer) => unknown);
}
/** A request type and valid bytes of it, from the generated encoder. */
const frameArb = fc.constantFrom(...requestTypes).chain((type) =>
  messageArb(type).map((json) => ({ type, bytes: codecOf(type).encode(codecOf(type).fromJSON(json)).finish() })),
);

describe("checkWire against the generated code (property)", () => {
  it("every message the generated encoder writes passes, and the hardened deserializer decodes it as the generated one does", () => {
    fc.assert(
      fc.property(frameArb, ({ type, bytes: b }) => {
        expect(checkWire(type, b)).toBeUndefined();
        expect(hardenedByType.get(type)!(Buffer.from(b))).toEqual(codecOf(type).decode(b));
      }),
      { numRuns: 2_000 },
    );
  });

  it("a single changed byte, or a truncation, never makes a hardened deserializer throw; what passes decodes as the generated one does", () => {
    fc.assert(
      fc.property(frameArb, fc.nat(), fc.nat({ max: 255 }), fc.boolean(), ({ type, bytes: b }, at, value, truncate) => {
        if (b.length === 0) return;
        const mutated = truncate ? b.subarray(0, at % b.length) : Uint8Array.from(b, (x, i) => (i === at % b.length ? value : x));
        const out = hardenedByType.get(type)!(Buffer.from(mutated));
        const fault = malformedOf(out);
        if (fault) {
          // checkWire itself refuses whatever the generated decoder would throw on.
          expect(fault.reason).not.toMatch(/^could not be decoded/);
          expect(fault.field.length).toBeLessThan(200);
          expect(fault.reason.length).toBeLessThan(300);
        } else {
          expect(out).toEqual(codecOf(type).decode(mutated));
        }
      }),
      { numRuns: 5_000 },
    );
  });

  it("random bytes never make a hardened deserializer throw", () => {
    fc.assert(
      fc.property(fc.constantFrom(...requestTypes), fc.uint8Array({ maxLength: 64 }), (type, b) => {
        const out = hardenedByType.get(type)!(Buffer.from(b));
        const fault = malformedOf(out);
        if (fault) expect(fault.reason).not.toMatch(/^could not be decoded/);
        else expect(out).toEqual(codecOf(type).decode(b));
      }),
      { numRuns: 5_000 },
    );
  });
});
