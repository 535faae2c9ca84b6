/**
 * Who may call what, without a network: CLUSTER_ACCESS lists every ClusterService method, a viewer
 * may make every read and no change, an admin everything, a host or controller certificate no
 * operator call at all; refusals are PERMISSION_DENIED naming the role the call needs. (mtls.test.ts
 * proves the same over real gRPC.)
 */
import { EventEmitter } from "node:events";
import { status } from "@grpc/grpc-js";
import { describe, expect, it, vi } from "vitest";
import { ClusterServiceService, type ClusterServiceServer } from "@berth/api";
import { BerthError, ErrorCode, type PeerOf, type PeerRole } from "@berth/core";
import { agentIdentity, authorizedClusterService, authorizeOperator, CLUSTER_ACCESS } from "./authorization.js";
import { silentLog } from "./controller.testkit.js";

type Method = keyof typeof ClusterServiceService;
const METHODS = Object.keys(ClusterServiceService) as Method[];
const READS = METHODS.filter((m) => CLUSTER_ACCESS[m] === "read");
const CHANGES = METHODS.filter((m) => CLUSTER_ACCESS[m] === "change");
const rpc = (m: string): string => m.charAt(0).toUpperCase() + m.slice(1);

const peer = (role: PeerRole, name: string = role): PeerOf => ({ secure: true, identity: { role, name } });

/** The error `fn` throws (fails the test when it does not throw). */
function thrown(fn: () => unknown): BerthError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(BerthError);
    return e as BerthError;
  }
  throw new Error("expected a throw");
}

describe("CLUSTER_ACCESS", () => {
  it("lists every ClusterService method exactly, each as read or change", () => {
    expect(Object.keys(CLUSTER_ACCESS).sort()).toEqual([...METHODS].sort());
    for (const m of METHODS) expect(["read", "change"], m).toContain(CLUSTER_ACCESS[m]);
    // Both kinds exist (a table of all reads would make the viewer an admin).
    expect(READS.length).toBeGreaterThan(0);
    expect(CHANGES.length).toBeGreaterThan(0);
  });

  it("calls what writes a change and what only reads (or plans, or watches) a read", () => {
    for (const m of ["createVm", "createVms", "deleteVm", "startVm", "stopVm", "updateClusterConfig", "cordonHost", "uncordonHost", "drainHost", "migrateVm", "abortMigration", "applyRebalance", "deleteOrphan", "adoptOrphan", "confirmHostDown", "retryVm", "createGroup", "deleteGroup"] as const) {
      expect(CLUSTER_ACCESS[m], m).toBe("change");
    }
    for (const m of ["getVm", "listVms", "listHosts", "getHost", "listGroups", "getClusterConfig", "getCluster", "listMigrations", "getMigration", "watchEvents", "planPlacement", "planRebalance"] as const) {
      expect(CLUSTER_ACCESS[m], m).toBe("read");
    }
  });
});

describe("authorizeOperator", () => {
  it("a viewer may make every read and no change; a refusal names role admin and the viewer's role", () => {
    for (const m of READS) expect(() => authorizeOperator(m, peer("viewer", "vera")), m).not.toThrow();
    for (const m of CHANGES) {
      const e = thrown(() => authorizeOperator(m, peer("viewer", "vera")));
      expect(e.code, m).toBe(ErrorCode.PermissionDenied);
      expect(e.message).toBe(`${rpc(m)} needs role admin; 'vera' has role viewer`);
    }
  });

  it("an admin may call everything", () => {
    for (const m of METHODS) expect(() => authorizeOperator(m, peer("admin", "ada")), m).not.toThrow();
  });

  it("host and controller certificates may make no operator call, reads included; the message names the operator roles", () => {
    for (const role of ["host", "controller"] as const) {
      for (const m of METHODS) {
        const e = thrown(() => authorizeOperator(m, peer(role, `${role}-1`)));
        expect(e.code, `${role} ${m}`).toBe(ErrorCode.PermissionDenied);
        const needed = CLUSTER_ACCESS[m] === "read" ? "viewer or admin" : "admin";
        expect(e.message).toBe(`${rpc(m)} is an operator call; '${role}-1' has a ${role} certificate (operators need role ${needed})`);
      }
    }
  });

  it("plaintext (--insecure) peers are not checked", () => {
    for (const m of METHODS) expect(() => authorizeOperator(m, { secure: false })).not.toThrow();
  });
});

describe("agentIdentity", () => {
  it("is the host its certificate names; other roles are refused naming the certificate's role; plaintext has none", () => {
    expect(agentIdentity(peer("host", "host-1"))).toEqual({ role: "host", name: "host-1" });
    expect(agentIdentity({ secure: false })).toBeUndefined();
    for (const role of ["admin", "viewer", "controller"] as const) {
      const e = thrown(() => agentIdentity(peer(role, "someone")));
      expect(e.code).toBe(ErrorCode.PermissionDenied);
      expect(e.message).toContain(`'someone' has a ${role} certificate (agents need a host certificate`);
    }
  });
});

describe("authorizedClusterService", () => {
  /** A grpc-js AuthContext as a TLS call with this certificate subject has it. */
  const authOf = (subject: { CN?: string; O?: string } | undefined) => ({ transportSecurityType: "ssl", sslPeerCertificate: subject ? { subject } : undefined });

  function wrapped() {
    const impl: Record<string, ReturnType<typeof vi.fn>> = {};
    for (const m of METHODS) impl[m] = vi.fn();
    return { impl, service: authorizedClusterService(impl as unknown as ClusterServiceServer, silentLog) as unknown as Record<string, (...args: unknown[]) => void> };
  }
  const unaryCall = (auth: unknown) => ({ getAuthContext: () => auth, getPeer: () => "ipv4:127.0.0.1:1" });

  it("covers every method; a refused unary call is answered PERMISSION_DENIED naming the role and never reaches its handler", () => {
    const { impl, service } = wrapped();
    expect(Object.keys(service).sort()).toEqual([...METHODS].sort());
    const callback = vi.fn();
    service.createVm!(unaryCall(authOf({ CN: "vera", O: "berth:viewer" })), callback);
    expect(impl.createVm).not.toHaveBeenCalled();
    expect(callback).toHaveBeenCalledTimes(1);
    expect(callback.mock.calls[0]![0]).toMatchObject({ code: status.PERMISSION_DENIED, details: "CreateVm needs role admin; 'vera' has role viewer" });
    expect(callback.mock.calls[0]![1]).toBeNull();

    // Allowed: the handler gets the very call, and its answer reaches the callback.
    const call = unaryCall(authOf({ CN: "vera", O: "berth:viewer" }));
    service.getVm!(call, callback);
    expect(impl.getVm).toHaveBeenCalledTimes(1);
    expect(impl.getVm!.mock.calls[0]![0]).toBe(call);
    (impl.getVm!.mock.calls[0]![1] as (e: unknown, v: unknown) => void)(null, { vm: { id: "v" } });
    expect(callback).toHaveBeenCalledTimes(2);
    expect(callback.mock.calls[1]).toEqual([null, { vm: { id: "v" } }]);
  });

  it("withholds VMs' user-data from a viewer, in answers and in watch messages; an admin gets it", () => {
    const { impl, service } = wrapped();
    const vm = { id: "v", spec: { name: "web-1", cloudInit: { sshAuthorizedKeys: ["ssh-ed25519 AAAA k"], userData: "#cloud-config\npassword: hunter2\n" } } };
    const asViewer = vi.fn();
    service.listVms!(unaryCall(authOf({ CN: "vera", O: "berth:viewer" })), asViewer);
    (impl.listVms!.mock.calls[0]![1] as (e: unknown, v: unknown) => void)(null, { vms: [vm, { id: "w", spec: { name: "db-1" } }] });
    const seen = asViewer.mock.calls[0]![1] as { vms: typeof vm[] };
    expect(seen.vms[0]!.spec.cloudInit).toEqual({ sshAuthorizedKeys: ["ssh-ed25519 AAAA k"], userData: "#berth: user-data withheld from viewers (32 bytes)\n" });
    expect(JSON.stringify(seen)).not.toContain("hunter2");
    expect(seen.vms[1]).toEqual({ id: "w", spec: { name: "db-1" } });
    // The handler's own answer is not changed (it may be the cache's record).
    expect(vm.spec.cloudInit.userData).toContain("hunter2");

    const asAdmin = vi.fn();
    service.getVm!(unaryCall(authOf({ CN: "ada", O: "berth:admin" })), asAdmin);
    expect(impl.getVm!.mock.calls[0]![1]).toBe(asAdmin);

    const written: unknown[] = [];
    const stream = Object.assign(new EventEmitter(), { ...unaryCall(authOf({ CN: "vera", O: "berth:viewer" })), write: (m: unknown) => written.push(m) > 0 });
    service.watchEvents!(stream);
    (impl.watchEvents!.mock.calls[0]![0] as { write(m: unknown): boolean }).write({ vm: { type: 1, vm } });
    expect(JSON.stringify(written)).not.toContain("hunter2");
    expect(JSON.stringify(written)).toContain("withheld from viewers");

    // A scale group's template carries its members' user-data: withheld the same way.
    const asViewerToo = vi.fn();
    service.getScaleGroup!(unaryCall(authOf({ CN: "vera", O: "berth:viewer" })), asViewerToo);
    (impl.getScaleGroup!.mock.calls[0]![1] as (e: unknown, v: unknown) => void)(null, { group: { group: { name: "web", template: vm.spec }, running: 2 } });
    const group = asViewerToo.mock.calls[0]![1] as { group: { group: { template: typeof vm.spec }; running: number } };
    expect(group.group.group.template.cloudInit.userData).toBe("#berth: user-data withheld from viewers (32 bytes)\n");
    expect(group.group.running).toBe(2);
  });

  it("a certificate naming no Berth role is UNAUTHENTICATED; a plaintext call passes", () => {
    const { impl, service } = wrapped();
    const callback = vi.fn();
    service.listHosts!(unaryCall(authOf({ CN: "mallory", O: "acme:ops" })), callback);
    expect(impl.listHosts).not.toHaveBeenCalled();
    expect(callback.mock.calls[0]![0]).toMatchObject({ code: status.UNAUTHENTICATED });
    expect(callback.mock.calls[0]![0].details).toContain("names no Berth role");

    service.listHosts!(unaryCall({ transportSecurityType: "insecure" }), callback);
    expect(impl.listHosts).toHaveBeenCalledTimes(1);
  });

  it("a refused server stream (WatchEvents) ends with PERMISSION_DENIED and never reaches its handler", () => {
    const { impl, service } = wrapped();
    /** A server stream as grpc-js gives it: an emitter; whatever ends it with an error is recorded. */
    const stream = (auth: unknown) => {
      const errors: Error[] = [];
      const s = Object.assign(new EventEmitter(), unaryCall(auth), { destroy: vi.fn((e?: Error) => void (e && errors.push(e))), write: vi.fn(() => true), errors });
      s.on("error", (e: Error) => errors.push(e));
      return s;
    };
    const host = stream(authOf({ CN: "host-1", O: "berth:host" }));
    service.watchEvents!(host);
    expect(impl.watchEvents).not.toHaveBeenCalled();
    expect(host.errors).toHaveLength(1);
    expect(host.errors[0]).toMatchObject({ code: status.PERMISSION_DENIED, details: "WatchEvents is an operator call; 'host-1' has a host certificate (operators need role viewer or admin)" });

    const viewer = stream(authOf({ CN: "vera", O: "berth:viewer" }));
    service.watchEvents!(viewer);
    expect(impl.watchEvents).toHaveBeenCalledWith(viewer);
    expect(viewer.errors).toEqual([]);
  });
});
