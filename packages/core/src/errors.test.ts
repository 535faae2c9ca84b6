import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { BerthError, ErrorCode, ERROR_CODE_METADATA_KEY, fromGrpcError, invalidArgument, LEADER_METADATA_KEY, messageForFlags, toGrpcStatus } from "./errors.js";

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
