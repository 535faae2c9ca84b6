import { Metadata, Server, ServerCredentials, credentials, makeGenericClientConstructor, status, type handleUnaryCall, type ServiceError } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { BerthError, ErrorCode, ERROR_CODE_METADATA_KEY, fromGrpcError, invalidArgument, LEADER_METADATA_KEY, MAX_DETAIL_REASON_BYTES, MAX_STATUS_MESSAGE_CHARS, messageForFlags, quote, toGrpcStatus } from "./errors.js";

/** What a client receives for a status the server sent. */
function received(s: ReturnType<typeof toGrpcStatus>): ServiceError {
  return Object.assign(new Error(`${s.code} ${s.details}`), { code: s.code!, details: s.details!, metadata: s.metadata! });
}

describe("gRPC status mapping", () => {
  it.each([
    [ErrorCode.InvalidArgument, status.INVALID_ARGUMENT],
    [ErrorCode.NotFound, status.NOT_FOUND],
    [ErrorCode.AlreadyExists, status.ALREADY_EXISTS],
    [ErrorCode.FailedPrecondition, status.FAILED_PRECONDITION],
    [ErrorCode.ResourceExhausted, status.RESOURCE_EXHAUSTED],
    [ErrorCode.Conflict, status.ABORTED],
    [ErrorCode.NotLeader, status.UNAVAILABLE],
    [ErrorCode.HypervisorUnavailable, status.UNAVAILABLE],
    [ErrorCode.DeadlineExceeded, status.DEADLINE_EXCEEDED],
  ])("%s travels as gRPC %s and comes back as itself", (code, grpc) => {
    const s = toGrpcStatus(new BerthError(code, "boom"));
    expect(s.code).toBe(grpc);
    expect(fromGrpcError(received(s)).code).toBe(code);
  });

  it("puts reasons on their own lines and keeps the field-first message", () => {
    const s = toGrpcStatus(new BerthError(ErrorCode.ResourceExhausted, "no host fits", { reasons: ["h1: memory", "h2: vcpus"] }));
    expect(s.details).toBe("no host fits:\n  h1: memory\n  h2: vcpus");
    expect(toGrpcStatus(invalidArgument("spec.name", "is required")).details).toBe("spec.name: is required");
  });

  it("bounds the reasons it inlines, saying how many were left out, so a 10,000-host answer still arrives", async () => {
    const reasons = Array.from({ length: 10_000 }, (_, i) => `host-${String(i).padStart(5, "0")}: capacity: memory_mib: needs 4096 MiB, 2048 MiB free of 65536 allocatable`);
    const e = new BerthError(ErrorCode.ResourceExhausted, "no host can take 'x'", { reasons });
    const s = toGrpcStatus(e);
    expect(Buffer.byteLength(s.details!)).toBeLessThan(MAX_DETAIL_REASON_BYTES + 200);
    const shown = s.details!.split("\n  ").length - 2; // the message line and the "… and N more" line
    expect(s.details).toMatch(new RegExp(`… and ${10_000 - shown} more \\(berth plan shows every host's verdict\\)$`));
    expect(s.details!.startsWith("no host can take 'x':\n  host-00000: capacity")).toBe(true);
    // Over a real connection: the status arrives (unbounded, the trailer was too big and the
    // connection was dropped instead).
    const server = new Server();
    const service = { fail: { path: "/t.T/Fail", requestStream: false, responseStream: false, requestSerialize: (x: Buffer) => x, requestDeserialize: (x: Buffer) => x, responseSerialize: (x: Buffer) => x, responseDeserialize: (x: Buffer) => x } };
    const fail: handleUnaryCall<Buffer, Buffer> = (_call, cb) => cb(toGrpcStatus(e));
    server.addService(service, { fail });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    const Client = makeGenericClientConstructor(service, "T");
    const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure()) as unknown as { fail(req: Buffer, cb: (err: ServiceError | null) => void): void; close(): void };
    try {
      const err = await new Promise<ServiceError | null>((resolve) => client.fail(Buffer.alloc(0), resolve));
      expect(err?.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(fromGrpcError(err).code).toBe(ErrorCode.ResourceExhausted);
      expect(err?.details).toContain("more (berth plan shows every host's verdict)");
    } finally {
      client.close();
      server.forceShutdown();
    }
  });

  it("quotes at most a bounded prefix of a value, and cuts an over-long message", () => {
    expect(quote("spread")).toBe("spread");
    expect(quote("x".repeat(100_000))).toBe(`${"x".repeat(64)}… (100000 characters)`);
    expect(quote(Number.NaN)).toBe("NaN");
    const s = toGrpcStatus(invalidArgument("config.scheduler.preset", `unknown '${"p".repeat(100_000)}'`));
    expect(s.details!.length).toBeLessThan(MAX_STATUS_MESSAGE_CHARS + 20);
    expect(s.details!.endsWith("… (message cut)")).toBe(true);
  });

  it("carries the leader's address for NOT_LEADER", () => {
    const s = toGrpcStatus(new BerthError(ErrorCode.NotLeader, "not the leader", { leader: "10.0.0.2:7400" }));
    expect(s.metadata?.get(LEADER_METADATA_KEY)).toEqual(["10.0.0.2:7400"]);
    expect(fromGrpcError(received(s)).leader).toBe("10.0.0.2:7400");
  });

  it("hides foreign errors behind a generic INTERNAL", () => {
    const s = toGrpcStatus(new Error("etcd at 10.1.2.3:2379 said password=hunter2"));
    expect(s.code).toBe(status.INTERNAL);
    expect(s.details).not.toContain("hunter2");
    expect(s.metadata?.get(ERROR_CODE_METADATA_KEY)).toEqual([ErrorCode.Internal]);
  });

  it("maps a status without Berth's trailer by its gRPC code", () => {
    const e = Object.assign(new Error("x"), { code: status.NOT_FOUND, details: "gone", metadata: new Metadata() });
    expect(fromGrpcError(e)).toMatchObject({ code: ErrorCode.NotFound, message: "gone" });
    expect(fromGrpcError("weird").code).toBe(ErrorCode.Internal);
  });
});

describe("messageForFlags", () => {
  it("renames the field to the flag the operator typed", () => {
    expect(messageForFlags(invalidArgument("host_id", "'X' must be ..."), { host_id: "--host-id" })).toBe("--host-id: 'X' must be ...");
    expect(messageForFlags(invalidArgument("labels[-x]", "key must be ..."), { labels: "--label" })).toBe("--label[-x]: key must be ...");
    expect(messageForFlags(invalidArgument("other", "rule"), { host_id: "--host-id" })).toBe("other: rule");
    expect(messageForFlags(new Error("plain"), {})).toBe("plain");
  });
});
