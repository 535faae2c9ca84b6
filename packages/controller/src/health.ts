// The standard gRPC health service (grpc.health.v1.Health) and server reflection on the
// controller's port, both from grpc/grpc-node's own packages, so grpc_health_probe, grpcurl and
// load balancers speak to berth-controller as to any gRPC server.
import type { Server } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, protoPath as healthProtoPath, type ServingStatus } from "grpc-health-check";
import { loadBerthPackageDefinition } from "@berth/api";

/** The service names the health service answers for ("" is the process as a whole). */
export const HEALTH_SERVICES = {
  overall: "",
  cluster: "berth.v1.ClusterService",
  agent: "berth.v1.AgentService",
} as const;

/**
 * What the controller's health service says, by role:
 * - `""`: SERVING while the process serves (a follower too: it answers, with a redirect), NOT_SERVING
 *   once it stops;
 * - `berth.v1.ClusterService`, `berth.v1.AgentService`: SERVING only on the leader (a follower
 *   sends agents and operators on to the leader), so a probe or a load balancer in front
 *   of several controllers can tell which one leads.
 * Any other name is NOT_FOUND on Check and SERVICE_UNKNOWN on Watch (the protocol's rule).
 */
export class ControllerHealth {
  private readonly health = new HealthImplementation({
    [HEALTH_SERVICES.overall]: "NOT_SERVING",
    [HEALTH_SERVICES.cluster]: "NOT_SERVING",
    [HEALTH_SERVICES.agent]: "NOT_SERVING",
  });

  /** Adds grpc.health.v1.Health to `server` (before it is bound). */
  addToServer(server: Server): void {
    this.health.addToServer(server);
  }

  /** The server is bound and answering calls (as a follower until {@link leading}). */
  serving(): void {
    this.health.setStatus(HEALTH_SERVICES.overall, "SERVING");
  }

  /** Leadership was gained (true) or lost (false): the Berth services' status follows it. */
  leading(isLeader: boolean): void {
    const status: ServingStatus = isLeader ? "SERVING" : "NOT_SERVING";
    this.health.setStatus(HEALTH_SERVICES.cluster, status);
    this.health.setStatus(HEALTH_SERVICES.agent, status);
  }

  /** The process is shutting down: everything NOT_SERVING, so watchers drain it before it goes. */
  stopping(): void {
    this.leading(false);
    this.health.setStatus(HEALTH_SERVICES.overall, "NOT_SERVING");
  }
}

/**
 * Adds gRPC server reflection (grpc.reflection.v1 and v1alpha) to `server`, describing every
 * berth.v1 service and message (from @berth/api's built-in descriptor set, so no .proto file need
 * be found at run time) and grpc.health.v1.Health (from grpc-health-check's shipped proto).
 */
export function addReflection(server: Server): void {
  const definitions = { ...loadSync(healthProtoPath), ...loadBerthPackageDefinition() };
  new ReflectionService(definitions).addToServer(server);
}
