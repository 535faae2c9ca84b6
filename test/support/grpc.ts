import { credentials, Metadata, type CallOptions, type ServiceError } from "@grpc/grpc-js";
import {
  AbortMigrationRequest,
  ApplyRebalanceRequest,
  ClusterServiceClient,
  CordonHostRequest,
  CreateGroupRequest,
  CreateScaleGroupRequest,
  CreateVmRequest,
  DeleteScaleGroupRequest,
  GetScaleGroupRequest,
  ListScaleGroupsRequest,
  UpdateScaleGroupRequest,
  DrainHostRequest,
  GetMigrationRequest,
  ListMigrationsRequest,
  MigrateVmRequest,
  PlanRebalanceRequest,
  UncordonHostRequest,
  UpdateClusterConfigRequest,
  DeleteVmRequest,
  GetHostRequest,
  GetVmRequest,
  ListHostsRequest,
  ListVmsRequest,
  StartVmRequest,
  StopVmRequest,
  type DeepPartial,
  type MessageFns,
} from "@berth/api";
import { readFileSync } from "node:fs";
import { deadlineIn, grpcClientOptions, type PeerRole } from "@berth/core";
import { tlsFiles } from "./pki.js";

/** Client credentials: a certificate of the run's test CA (an admin's unless told), or plaintext. */
export function testCredentials(as: { role: PeerRole; name: string } | "insecure" = { role: "admin", name: "admin" }) {
  if (as === "insecure") return credentials.createInsecure();
  const f = tlsFiles(as.role, as.name);
  return credentials.createSsl(readFileSync(f.ca), readFileSync(f.key), readFileSync(f.cert));
}

type Unary<Req, Res> = (req: Req, metadata: Metadata, options: Partial<CallOptions>, cb: (e: ServiceError | null, res: Res) => void) => unknown;

/**
 * A promise-returning ClusterService client for tests: requests may be partial (unset fields take
 * their proto defaults) and every call has a deadline.
 */
export function clusterClient(address: string, as: { role: PeerRole; name: string } | "insecure" = { role: "admin", name: "admin" }) {
  const client = new ClusterServiceClient(address, testCredentials(as), grpcClientOptions());
  const call =
    <Req, Res>(type: MessageFns<Req>, method: Unary<Req, Res>) =>
    (req: DeepPartial<Req>): Promise<Res> =>
      new Promise((resolve, reject) =>
        method.call(client, type.fromPartial(req), new Metadata(), { deadline: deadlineIn(10_000) }, (e, res) => (e ? reject(e) : resolve(res))),
      );
  return {
    raw: client,
    createVm: call(CreateVmRequest, client.createVm),
    getVm: call(GetVmRequest, client.getVm),
    listVms: call(ListVmsRequest, client.listVms),
    deleteVm: call(DeleteVmRequest, client.deleteVm),
    startVm: call(StartVmRequest, client.startVm),
    stopVm: call(StopVmRequest, client.stopVm),
    listHosts: call(ListHostsRequest, client.listHosts),
    getHost: call(GetHostRequest, client.getHost),
    migrateVm: call(MigrateVmRequest, client.migrateVm),
    getMigration: call(GetMigrationRequest, client.getMigration),
    listMigrations: call(ListMigrationsRequest, client.listMigrations),
    abortMigration: call(AbortMigrationRequest, client.abortMigration),
    cordonHost: call(CordonHostRequest, client.cordonHost),
    uncordonHost: call(UncordonHostRequest, client.uncordonHost),
    drainHost: call(DrainHostRequest, client.drainHost),
    planRebalance: call(PlanRebalanceRequest, client.planRebalance),
    applyRebalance: call(ApplyRebalanceRequest, client.applyRebalance),
    updateClusterConfig: call(UpdateClusterConfigRequest, client.updateClusterConfig),
    createGroup: call(CreateGroupRequest, client.createGroup),
    createScaleGroup: call(CreateScaleGroupRequest, client.createScaleGroup),
    listScaleGroups: call(ListScaleGroupsRequest, client.listScaleGroups),
    getScaleGroup: call(GetScaleGroupRequest, client.getScaleGroup),
    updateScaleGroup: call(UpdateScaleGroupRequest, client.updateScaleGroup),
    deleteScaleGroup: call(DeleteScaleGroupRequest, client.deleteScaleGroup),
    close: () => client.close(),
  };
}
export type ClusterClient = ReturnType<typeof clusterClient>;
