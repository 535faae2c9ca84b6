/**
 * Malformed protobuf on the wire (found by an outside client written from the .proto alone): a
 * uint64 above 2^53−1 made the generated decoder throw, which grpc-js answers INTERNAL ("Error
 * deserializing request") with no Reject on the agent stream; garbage such as `00ffff` decoded as
 * an empty message; a sub-message that overran its length was read on into the next field. Over
 * real gRPC, raw bytes: each is refused with INVALID_ARGUMENT naming the field (a Reject on the
 * agent stream), nothing is written, and the connection still answers.
 */
import { Client, Metadata, status, type ClientDuplexStream, type ServiceError } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { AgentMessage, ControllerMessage, RejectReason } from "@berth/api";
import { deadlineIn, ERROR_CODE_METADATA_KEY, grpcClientOptions } from "@berth/core";
import { MemoryStore } from "@berth/store";
import { ld, str, tag, vfield } from "../../api/src/wire.testkit.js";
import { credentialsFor, helloFor, startController, waitFor, type Cleanups } from "./controller.testkit.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const frame = (...parts: number[][]): Buffer => Buffer.from(parts.flat());
const raw = (b: Buffer): Buffer => b;

/** A raw client: any method, bytes in and out. */
function rawClient(address: string, role: "admin" | "host", name: string): Client {
  const client = new Client(address, credentialsFor(address, role, name), grpcClientOptions());
  cleanups.push(() => client.close());
  return client;
}

function unary(client: Client, method: string, bytes: Buffer): Promise<{ error: ServiceError | null; reply: Buffer | undefined }> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(`/berth.v1.ClusterService/${method}`, raw, raw, bytes, new Metadata(), { deadline: deadlineIn(10_000) }, (error, reply) =>
      resolve({ error: error ?? null, reply }),
    );
  });
}

/** Opens an agent stream, writes `frames` as they are and resolves with the controller's first answer. */
function agentStream(client: Client, frames: Buffer[]): { first: Promise<ControllerMessage>; received: ControllerMessage[]; status: Promise<status>; call: ClientDuplexStream<Buffer, ControllerMessage> } {
  const call = client.makeBidiStreamRequest("/berth.v1.AgentService/Connect", raw, (b: Buffer) => ControllerMessage.decode(b), new Metadata(), {});
  cleanups.push(() => call.cancel());
  call.on("error", () => undefined);
  const received: ControllerMessage[] = [];
  const first = new Promise<ControllerMessage>((resolve) => call.once("data", resolve));
  call.on("data", (m: ControllerMessage) => received.push(m));
  const ended = new Promise<status>((resolve) => call.on("status", (s) => resolve(s.code)));
  for (const f of frames) call.write(f);
  return { first, received, status: ended, call };
}

const rejectOf = (m: ControllerMessage | undefined): { reason: RejectReason; message: string } | undefined => (m?.msg?.$case === "reject" ? m.msg.value : undefined);

// Frames of the requests the outside client sent.
const createVm = (resources: number[]): Buffer => frame(ld(1, [...str(1, "web"), ...ld(2, resources)]));
const helloWith = (body: number[]): Buffer => frame(ld(1, [...str(1, "h1"), ...str(2, "boot-a"), ...body]));

describe("malformed protobuf is refused with INVALID_ARGUMENT naming the field, over real gRPC", () => {
  it("unary calls: uint64 above 2^53-1, garbage, bad tags, a straddling field, invalid UTF-8 — nothing written, the connection still answers", async () => {
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store);
    await waitFor("leadership", () => controller.isLeader);
    const client = rawClient(address, "admin", "admin");
    const revision = store.revision;

    const cases: [string, Buffer, string][] = [
      ["CreateVm", createVm([...vfield(1, 1), ...vfield(2, 2n ** 53n), ...vfield(3, 1)]), "spec.resources.memory_mib: 9007199254740992 is above 2^53-1 (9007199254740991), the largest uint64 this API accepts"],
      ["CreateVm", createVm([...vfield(1, 1), ...vfield(2, 1024), ...vfield(3, 2n ** 64n - 1n)]), "spec.resources.disk_gib: 18446744073709551615 is above 2^53-1 (9007199254740991), the largest uint64 this API accepts"],
      ["CreateVms", frame(ld(1, str(1, "a")), ld(1, [...str(1, "b"), ...ld(2, vfield(2, 2n ** 64n - 1n))])), "specs[1].resources.memory_mib: 18446744073709551615 is above 2^53-1 (9007199254740991), the largest uint64 this API accepts"],
      ["UpdateClusterConfig", frame(ld(1, ld(1, [...str(1, "pack"), ...vfield(7, 2n ** 53n)]))), "config.scheduler.seed: 9007199254740992 is above 2^53-1 (9007199254740991), the largest uint64 this API accepts"],
      ["CreateVm", Buffer.from("00ffff", "hex"), "CreateVmRequest: field number 0 at byte 0 (field numbers are 1 to 2^29-1)"],
      ["GetVm", frame(tag(1, 4)), "GetVmRequest: a group (end-group) at byte 0: proto3 has none"],
      ["ListVms", Buffer.from([0xff, 0xff, 0xff, 0xff, 0x1f]), "ListVmsRequest: the tag at byte 0 is above 2^32-1"],
      ["CreateVm", frame(ld(1, [...str(1, "web"), ...tag(2, 2), 0x02, ...tag(2, 0), 0x80, ...ld(3, [])])), "spec.resources.memory_mib: the varint at byte 10 runs past the end of the message"],
      ["GetVm", frame(ld(1, [0x77, 0xc3, 0x28])), "name: the string at byte 2 is not valid UTF-8"],
      ["ListVms", frame(vfield(2, 2n ** 32n)), "page_size: 4294967296 is above 2^32-1 (4294967295), the largest uint32"],
    ];
    for (const [method, bytes, details] of cases) {
      const { error } = await unary(client, method, bytes);
      expect(error?.code, `${method} ${details}`).toBe(status.INVALID_ARGUMENT);
      expect(error?.details).toBe(details);
      expect(error?.metadata.get(ERROR_CODE_METADATA_KEY)).toEqual(["INVALID_ARGUMENT"]);
    }
    // Nothing was written, and the same connection still answers a well-formed call.
    expect(store.revision).toBe(revision);
    const ok = await unary(client, "GetCluster", Buffer.alloc(0));
    expect(ok.error).toBeNull();
  });

  it("WatchEvents with a malformed request ends its stream with INVALID_ARGUMENT", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    const client = rawClient(address, "admin", "admin");
    const error = await new Promise<ServiceError>((resolve) => {
      const call = client.makeServerStreamRequest("/berth.v1.ClusterService/WatchEvents", raw, raw, frame(vfield(1, 2n), tag(2, 3)), new Metadata(), {});
      call.on("data", () => undefined);
      call.on("error", resolve);
    });
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toBe("WatchEventsRequest: a group (start-group) at byte 2: proto3 has none");
  });

  it("the agent stream: a malformed first message gets Reject INVALID_HELLO naming the field, a malformed later one Reject INVALID_MESSAGE", async () => {
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store);
    await waitFor("leadership", () => controller.isLeader);
    const client = rawClient(address, "host", "h1");
    const revision = store.revision;

    const firsts: [Buffer, string][] = [
      [helloWith(ld(3, [...vfield(1, 8), ...vfield(2, 2n ** 53n)])), "hello.capacity.memory_mib: 9007199254740992 is above 2^53-1 (9007199254740991), the largest uint64 this API accepts"],
      [helloWith(ld(3, vfield(3, 2n ** 64n - 1n))), "hello.capacity.disk_gib: 18446744073709551615 is above 2^53-1 (9007199254740991), the largest uint64 this API accepts"],
      [helloWith(vfield(8, 2n ** 64n - 1n)), "hello.last_leader_epoch: 18446744073709551615 is above 2^53-1 (9007199254740991), the largest uint64 this API accepts"],
      // capacity says 2 bytes; its memory_mib runs on into the labels.
      [helloWith([...tag(3, 2), 0x02, ...tag(2, 0), 0x80, ...ld(4, [])]), "hello.capacity.memory_mib: the varint at byte 17 runs past the end of the message"],
      [Buffer.from("00ffff", "hex"), "AgentMessage: field number 0 at byte 0 (field numbers are 1 to 2^29-1)"],
      [frame(ld(1, [...str(1, "h1"), 0x0c])), "hello: a group (end-group) at byte 6: proto3 has none"],
    ];
    for (const [bytes, message] of firsts) {
      const { first } = agentStream(client, [bytes]);
      expect(rejectOf(await first), message).toEqual({ reason: RejectReason.REJECT_REASON_INVALID_HELLO, message });
    }
    // No host was registered: nothing written.
    expect(store.revision).toBe(revision);

    // A good Hello, then a Report whose usage overflows: Reject INVALID_MESSAGE, and the stream ends.
    const hello = Buffer.from(AgentMessage.encode({ msg: { $case: "hello", value: helloFor("h1") } }).finish());
    const report = frame(ld(2, ld(1, [...vfield(1, 2), ...vfield(2, 2n ** 64n - 1n)])));
    const live = agentStream(client, [hello]);
    expect((await live.first).msg?.$case).toBe("welcome");
    live.call.write(report);
    const rejected = await waitFor("a Reject for the malformed Report", () => live.received.map(rejectOf).find((r) => r !== undefined));
    expect(rejected).toEqual({ reason: RejectReason.REJECT_REASON_INVALID_MESSAGE, message: "report.usage.memory_mib: 18446744073709551615 is above 2^53-1 (9007199254740991), the largest uint64 this API accepts" });
    // The controller ends the stream after the Reject.
    expect(await live.status).toBe(status.OK);
  });
});
