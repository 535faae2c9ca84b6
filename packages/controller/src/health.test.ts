/**
 * grpc.health.v1.Health and server reflection on the controller's port, asked with plain grpc-js
 * clients built from the protocols' own .proto files (what grpc_health_probe and grpcurl speak):
 * the leader's Berth services are SERVING, a follower's NOT_SERVING until it leads; reflection
 * names and describes berth.v1.ClusterService. Under mutual TLS any role may ask.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { loadPackageDefinition, Metadata, status, type Client, type ClientDuplexStream, type ClientReadableStream, type ServiceClientConstructor, type ServiceError } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { afterEach, describe, expect, it } from "vitest";
import { deadlineIn, grpcClientOptions, type PeerRole } from "@berth/core";
import { MemoryStore } from "@berth/store";
import { credentialsFor, startController, waitFor, type Cleanups } from "./controller.testkit.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The reflection protocol's own .proto, as @grpc/reflection ships it. */
const reflectionProto = join(dirname(createRequire(import.meta.url).resolve("@grpc/reflection/package.json")), "build/proto/grpc/reflection/v1/reflection.proto");
const LOAD = { keepCase: true, enums: String, defaults: true, oneofs: true } as const;
const healthPackage = loadPackageDefinition(loadSync(healthProtoPath, LOAD)) as unknown as { grpc: { health: { v1: { Health: ServiceClientConstructor } } } };
const reflectionPackage = loadPackageDefinition(loadSync(reflectionProto, LOAD)) as unknown as { grpc: { reflection: { v1: { ServerReflection: ServiceClientConstructor } } } };

type Role = { role: PeerRole; name: string };
const ADMIN: Role = { role: "admin", name: "admin" };

interface HealthClient extends Client {
  check(req: { service: string }, md: Metadata, o: { deadline: Date }, cb: (e: ServiceError | null, r: { status: string }) => void): void;
  watch(req: { service: string }): ClientReadableStream<{ status: string }>;
}
interface ReflectionClient extends Client {
  serverReflectionInfo(): ClientDuplexStream<Record<string, unknown>, ReflectionResponse>;
}
interface ReflectionResponse {
  message_response: string;
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_code: number; error_message: string };
}

function healthClient(address: string, as: Role = ADMIN): HealthClient {
  const client = new healthPackage.grpc.health.v1.Health(address, credentialsFor(address, as.role, as.name), grpcClientOptions()) as unknown as HealthClient;
  cleanups.push(() => client.close());
  return client;
}

/** Check's answer for `service`: the status, or the error's gRPC code. */
function check(client: HealthClient, service: string): Promise<string | { code: status }> {
  return new Promise((resolve) =>
    client.check({ service }, new Metadata(), { deadline: deadlineIn(5_000) }, (e, r) => resolve(e ? { code: e.code } : r.status)),
  );
}

/** Asks reflection one question on a fresh stream and returns the one answer. */
function reflect(address: string, request: Record<string, unknown>, as: Role = ADMIN): Promise<ReflectionResponse> {
  const client = new reflectionPackage.grpc.reflection.v1.ServerReflection(address, credentialsFor(address, as.role, as.name), grpcClientOptions()) as unknown as ReflectionClient;
  cleanups.push(() => client.close());
  const call = client.serverReflectionInfo();
  return new Promise((resolve, reject) => {
    call.once("data", (r: ReflectionResponse) => {
      resolve(r);
      call.end();
    });
    call.once("error", reject);
    call.write({ host: "", ...request });
  });
}

describe("health", () => {
  it("says the leader serves the Berth services and a follower does not; the process serves on both", async () => {
    const store = new MemoryStore();
    const leader = await startController(cleanups, store, { controllerId: "leader" });
    await waitFor("leadership", () => leader.controller.isLeader);
    const follower = await startController(cleanups, store, { controllerId: "follower" });
    const onLeader = healthClient(leader.address);
    const onFollower = healthClient(follower.address);
    expect(await check(onLeader, "")).toBe("SERVING");
    expect(await check(onLeader, "berth.v1.ClusterService")).toBe("SERVING");
    expect(await check(onLeader, "berth.v1.AgentService")).toBe("SERVING");
    expect(await check(onFollower, "")).toBe("SERVING");
    expect(await check(onFollower, "berth.v1.ClusterService")).toBe("NOT_SERVING");
    expect(await check(onFollower, "berth.v1.AgentService")).toBe("NOT_SERVING");
    expect(await check(onLeader, "berth.v1.NoSuchService")).toEqual({ code: status.NOT_FOUND });
  });

  it("Watch on a follower turns SERVING when the leader stops and it takes over", async () => {
    const store = new MemoryStore();
    const leader = await startController(cleanups, store, { controllerId: "leader" });
    await waitFor("leadership", () => leader.controller.isLeader);
    const follower = await startController(cleanups, store, { controllerId: "follower" });
    const call = healthClient(follower.address).watch({ service: "berth.v1.ClusterService" });
    cleanups.push(() => call.cancel());
    call.on("error", () => undefined);
    const seen: string[] = [];
    call.on("data", (r: { status: string }) => seen.push(r.status));
    await waitFor("the follower's first answer", () => seen.length > 0);
    expect(seen).toEqual(["NOT_SERVING"]);
    await leader.controller.stop();
    await waitFor("the follower to lead", () => follower.controller.isLeader);
    await waitFor("SERVING on the watch", () => seen.includes("SERVING"));
    expect(seen).toEqual(["NOT_SERVING", "SERVING"]);
  });

  it("Watch of an unknown service says SERVICE_UNKNOWN (the protocol's rule), not an error", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    const call = healthClient(address).watch({ service: "berth.v1.NoSuchService" });
    cleanups.push(() => call.cancel());
    call.on("error", () => undefined);
    const first = await new Promise<{ status: string }>((resolve) => call.once("data", resolve));
    expect(first.status).toBe("SERVICE_UNKNOWN");
  });

  it("answers any role under mutual TLS (viewer, host) and anyone under --insecure", async () => {
    const secure = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => secure.controller.isLeader);
    expect(await check(healthClient(secure.address, { role: "viewer", name: "ops" }), "berth.v1.ClusterService")).toBe("SERVING");
    expect(await check(healthClient(secure.address, { role: "host", name: "h1" }), "")).toBe("SERVING");
    const names = await reflect(secure.address, { list_services: "" }, { role: "host", name: "h1" });
    expect(names.list_services_response?.service.map((s) => s.name)).toContain("berth.v1.ClusterService");
    const plain = await startController(cleanups, new MemoryStore(), { tls: undefined });
    await waitFor("leadership", () => plain.controller.isLeader);
    expect(await check(healthClient(plain.address), "berth.v1.AgentService")).toBe("SERVING");
  });
});

describe("reflection", () => {
  it("lists the Berth services and the health service", async () => {
    const { address } = await startController(cleanups, new MemoryStore());
    const r = await reflect(address, { list_services: "" });
    const names = r.list_services_response?.service.map((s) => s.name) ?? [];
    expect(names).toEqual(expect.arrayContaining(["berth.v1.ClusterService", "berth.v1.AgentService", "grpc.health.v1.Health"]));
  });

  it("file_containing_symbol berth.v1.ClusterService gives a file that declares it with its methods, and its dependencies resolve", async () => {
    const { address } = await startController(cleanups, new MemoryStore());
    const r = await reflect(address, { file_containing_symbol: "berth.v1.ClusterService" });
    expect(r.error_response).toBeUndefined();
    const files = (r.file_descriptor_response?.file_descriptor_proto ?? []).map((b) => fromBinary(FileDescriptorProtoSchema, b));
    const declaring = files.find((f) => f.service.some((s) => s.name === "ClusterService"));
    expect(declaring?.package).toBe("berth.v1");
    const methods = declaring!.service.find((s) => s.name === "ClusterService")!.method.map((m) => m.name);
    expect(methods).toEqual(expect.arrayContaining(["CreateVm", "ListVms", "WatchEvents"]));
    // grpcurl needs every file the declaring one imports: reflection sends them along.
    const sent = new Set(files.map((f) => f.name));
    for (const dep of declaring!.dependency) expect(sent).toContain(dep);
    const createVm = declaring!.service.find((s) => s.name === "ClusterService")!.method.find((m) => m.name === "CreateVm")!;
    expect(createVm.inputType).toBe(".berth.v1.CreateVmRequest");
  });

  it("an unknown symbol is NOT_FOUND in the reflection answer", async () => {
    const { address } = await startController(cleanups, new MemoryStore());
    const r = await reflect(address, { file_containing_symbol: "berth.v1.NoSuchThing" });
    expect(r.error_response?.error_code).toBe(status.NOT_FOUND);
  });
});
