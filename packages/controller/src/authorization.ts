import type { sendUnaryData, ServerUnaryCall, ServerWritableStream, UntypedServiceImplementation } from "@grpc/grpc-js";
import { ClusterServiceService, type ClusterServiceServer } from "@berth/api";
import { BerthError, ErrorCode, peerOf, toGrpcStatus, type PeerIdentity, type PeerOf, type PeerRole } from "@berth/core";
import type { Logger } from "pino";

/** What an operator call does: reads (and watches) the cluster, or changes it. */
export type Access = "read" | "change";

/**
 * Every ClusterService method and what it does, so which role it needs. One definition: a new RPC
 * does not compile until it is listed here. Plans are reads: they write nothing.
 */
export const CLUSTER_ACCESS: Readonly<Record<keyof typeof ClusterServiceService, Access>> = {
  createVm: "change",
  createVms: "change",
  planPlacement: "read",
  getVm: "read",
  listVms: "read",
  deleteVm: "change",
  startVm: "change",
  stopVm: "change",
  listHosts: "read",
  getHost: "read",
  createGroup: "change",
  listGroups: "read",
  deleteGroup: "change",
  getClusterConfig: "read",
  updateClusterConfig: "change",
  retryVm: "change",
  deleteOrphan: "change",
  adoptOrphan: "change",
  confirmHostDown: "change",
  getCluster: "read",
  migrateVm: "change",
  listMigrations: "read",
  getMigration: "read",
  abortMigration: "change",
  cordonHost: "change",
  labelHost: "change",
  deleteHost: "change",
  uncordonHost: "change",
  drainHost: "change",
  planRebalance: "read",
  applyRebalance: "change",
  watchEvents: "read",
  createImage: "change",
  listImages: "read",
  getImage: "read",
  deleteImage: "change",
  createVolume: "change",
  listVolumes: "read",
  getVolume: "read",
  deleteVolume: "change",
  attachVolume: "change",
  detachVolume: "change",
  // A console types into the guest: a change.
  attachConsole: "change",
  createScaleGroup: "change",
  listScaleGroups: "read",
  getScaleGroup: "read",
  updateScaleGroup: "change",
  deleteScaleGroup: "change",
};

/** The operator roles that may make a call of each access. */
const ROLES_FOR: Readonly<Record<Access, readonly PeerRole[]>> = {
  read: ["viewer", "admin"],
  change: ["admin"],
};

/** The gRPC method name as the proto spells it (`createVm` → `CreateVm`), for messages. */
const rpcName = (method: string): string => method.charAt(0).toUpperCase() + method.slice(1);

/**
 * May `peer` call ClusterService's `method`? Throws PERMISSION_DENIED naming the role needed (and
 * the one the certificate has); UNAUTHENTICATED comes from {@link peerOf} for a certificate that
 * names no role. Plaintext peers (`--insecure`) may do anything.
 */
export function authorizeOperator(method: keyof typeof ClusterServiceService, peer: PeerOf): void {
  if (!peer.secure) return;
  const access = CLUSTER_ACCESS[method];
  const allowed = ROLES_FOR[access];
  const { role, name } = peer.identity;
  if (allowed.includes(role)) return;
  if (role === "host" || role === "controller") {
    throw new BerthError(ErrorCode.PermissionDenied, `${rpcName(method)} is an operator call; '${name}' has a ${role} certificate (operators need role ${allowed.join(" or ")})`);
  }
  throw new BerthError(ErrorCode.PermissionDenied, `${rpcName(method)} needs role ${allowed.join(" or ")}; '${name}' has role ${role}`);
}

/**
 * The identity an agent stream runs as: under mTLS the host its certificate names, which is the only
 * host it may speak for (the kubelet's node-authorizer rule); undefined under plaintext, where the
 * Hello's host id is believed. Throws PERMISSION_DENIED for a certificate of another role.
 */
export function agentIdentity(peer: PeerOf): PeerIdentity | undefined {
  if (!peer.secure) return undefined;
  if (peer.identity.role !== "host") {
    throw new BerthError(ErrorCode.PermissionDenied, `AgentService is for hosts; '${peer.identity.name}' has a ${peer.identity.role} certificate (agents need a host certificate: 'berth certs issue host NAME')`);
  }
  return peer.identity;
}

const isViewer = (peer: PeerOf): boolean => peer.secure && peer.identity.role === "viewer";

/**
 * An answer for a viewer: every VM's cloud-init user-data replaced by a line saying it is
 * withheld (user-data may carry passwords and tokens: like Nova's, it is the VM owner's, so an
 * admin's). Everything else is as the admin sees it. Pure: the answer given is not changed.
 */
export function withholdUserData<T>(answer: T): T {
  return redact(answer) as T;
}

function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.some(carriesUserData) ? value.map(redact) : value;
  if (value === null || typeof value !== "object" || value instanceof Uint8Array || !carriesUserData(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) {
    out[key] =
      key === "cloudInit" && field !== null && typeof field === "object" && typeof (field as { userData?: unknown }).userData === "string" && (field as { userData: string }).userData !== ""
        ? { ...field, userData: `#berth: user-data withheld from viewers (${Buffer.byteLength((field as { userData: string }).userData)} bytes)\n` }
        : redact(field);
  }
  return out;
}

/** Whether a user-data text is anywhere inside (so that answers without one are passed on as they are). */
function carriesUserData(value: unknown): boolean {
  if (Array.isArray(value)) return value.some(carriesUserData);
  if (value === null || typeof value !== "object" || value instanceof Uint8Array) return false;
  for (const [key, field] of Object.entries(value)) {
    if (key === "cloudInit" && typeof (field as { userData?: unknown } | undefined)?.userData === "string" && (field as { userData: string }).userData !== "") return true;
    if (field !== null && typeof field === "object" && carriesUserData(field)) return true;
  }
  return false;
}

/**
 * The ClusterService with every call authorized before it runs: a refused call gets its status at
 * once and its handler never sees the request. A viewer's answers (and watch messages) withhold
 * VMs' user-data ({@link withholdUserData}).
 */
export function authorizedClusterService(impl: ClusterServiceServer, log: Logger): ClusterServiceServer {
  const out: UntypedServiceImplementation = {};
  for (const method of Object.keys(ClusterServiceService) as (keyof typeof ClusterServiceService)[]) {
    const handler = impl[method] as unknown as (...args: unknown[]) => void;
    const refuse = (e: unknown, call: { getPeer(): string }): ReturnType<typeof toGrpcStatus> => {
      log.warn({ method: rpcName(method), peer: call.getPeer(), why: e instanceof Error ? e.message : String(e) }, "refused an operator call");
      return toGrpcStatus(e);
    };
    if (ClusterServiceService[method].responseStream) {
      out[method] = (call: ServerWritableStream<unknown, unknown>) => {
        let peer: PeerOf;
        try {
          peer = peerOf(call.getAuthContext());
          authorizeOperator(method, peer);
        } catch (e) {
          const status = refuse(e, call);
          // Through 'error', which grpc-js answers with the status (destroy() would send none).
          call.emit("error", Object.assign(new Error(status.details), status));
          return;
        }
        if (isViewer(peer)) {
          const write = call.write.bind(call) as (message: unknown, ...rest: unknown[]) => boolean;
          call.write = ((message: unknown, ...rest: unknown[]) => write(withholdUserData(message), ...rest)) as typeof call.write;
        }
        handler(call);
      };
    } else {
      out[method] = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
        let peer: PeerOf;
        try {
          peer = peerOf(call.getAuthContext());
          authorizeOperator(method, peer);
        } catch (e) {
          callback(refuse(e, call), null);
          return;
        }
        const answer: sendUnaryData<unknown> = isViewer(peer) ? (error, value, ...rest) => callback(error, withholdUserData(value), ...rest) : callback;
        handler(call, answer);
      };
    }
  }
  return out as ClusterServiceServer;
}
