import { describe, expect, it } from "vitest";
import { LeaseLostError, StoreUnavailableError } from "./errors.js";
import { classifyEtcdFailure, MemberSkippedError } from "./etcd-errors.js";

/** A raw gRPC error as @grpc/grpc-js makes them (a plain Error with a numeric code). */
const grpc = (code: number, message: string): Error => Object.assign(new Error(message), { code, details: message });

describe("classifyEtcdFailure", () => {
  it("knows a call that never had a connection was not applied", () => {
    for (const e of [
      grpc(14, "14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:2379. Resolution note: "),
      grpc(14, "14 UNAVAILABLE: Channel closed before call started"),
      grpc(4, "4 DEADLINE_EXCEEDED: Deadline exceeded after 2.001s,name resolution: 0.001s,Waiting for LB pick"),
      grpc(2, "2 UNKNOWN: raft proposal dropped"),
      new MemberSkippedError("127.0.0.1:2379"),
    ]) {
      const f = classifyEtcdFailure(e, "committing");
      expect(f.error, e.message).toBeInstanceOf(StoreUnavailableError);
      expect({ transient: f.transient, notApplied: f.notApplied }, e.message).toEqual({ transient: true, notApplied: true });
    }
  });

  it("treats a call that reached a member and lost its answer as possibly applied", () => {
    for (const e of [
      grpc(14, "14 UNAVAILABLE: Connection dropped"),
      grpc(4, "4 DEADLINE_EXCEEDED: Deadline exceeded after 2.001s,name resolution: 0.001s,LB pick: 0.001s,remote_addr=127.0.0.1:2379"),
      grpc(14, "14 UNAVAILABLE: read ECONNRESET"),
      grpc(14, "14 UNAVAILABLE: etcdserver: request timed out"),
    ]) {
      const f = classifyEtcdFailure(e, "committing");
      expect(f.error, e.message).toBeInstanceOf(StoreUnavailableError);
      expect({ transient: f.transient, notApplied: f.notApplied, memberSuspect: f.memberSuspect }, e.message).toEqual({
        transient: true,
        notApplied: false,
        memberSuspect: true,
      });
    }
  });

  it("does not blame the member for a call this process cancelled", () => {
    const f = classifyEtcdFailure(grpc(1, "1 CANCELLED: Cancelled on client"), "watching");
    expect(f.memberSuspect).toBe(false);
  });

  it("maps a missing lease to LeaseLostError, final and without effect", () => {
    const f = classifyEtcdFailure(grpc(5, "5 NOT_FOUND: etcdserver: requested lease not found"), "committing", "42");
    expect(f.error).toBeInstanceOf(LeaseLostError);
    expect((f.error as LeaseLostError).leaseId).toBe("42");
    expect({ transient: f.transient, notApplied: f.notApplied, memberSuspect: f.memberSuspect }).toEqual({
      transient: false,
      notApplied: true,
      memberSuspect: false,
    });
  });

  it("does not retry a request etcd refuses as malformed", () => {
    const f = classifyEtcdFailure(grpc(3, "3 INVALID_ARGUMENT: etcdserver: too many operations in txn request"), "committing");
    expect(f.error.code).toBe("INVALID_ARGUMENT");
    expect(f.transient).toBe(false);
  });
});
