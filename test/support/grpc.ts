import { credentials, Metadata, type CallOptions, type ServiceError } from "@grpc/grpc-js";
import { ClusterServiceClient } from "@berth/api";
import { deadlineIn, grpcClientOptions } from "@berth/core";

type Unary<Req, Res> = (req: Req, metadata: Metadata, options: Partial<CallOptions>, cb: (e: ServiceError | null, res: Res) => void) => unknown;

/** A promise-returning ClusterService client for tests (every call has a deadline). */
export function clusterClient(address: string) {
  const client = new ClusterServiceClient(address, credentials.createInsecure(), grpcClientOptions());
  const call =
    <Req, Res>(method: Unary<Req, Res>) =>
    (req: Req): Promise<Res> =>
      new Promise((resolve, reject) => method.call(client, req, new Metadata(), { deadline: deadlineIn(10_000) }, (e, res) => (e ? reject(e) : resolve(res))));
  return {
    raw: client,
    createVm: call(client.createVm),
    getVm: call(client.getVm),
    listVms: call(client.listVms),
    deleteVm: call(client.deleteVm),
    startVm: call(client.startVm),
    stopVm: call(client.stopVm),
    listHosts: call(client.listHosts),
    getHost: call(client.getHost),
    close: () => client.close(),
  };
}
export type ClusterClient = ReturnType<typeof clusterClient>;
