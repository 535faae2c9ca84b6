/**
 * Load shedding on the create path: beyond `maxCreatesInFlight` a create is refused at once with
 * UNAVAILABLE and writes nothing, so an overloaded leader keeps its lease (an unbounded queue
 * starved it: docs/benchmarks.md, e2e-scale).
 */
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { AgentServiceClient, ClusterServiceClient, VmSpec, type Vm } from "@berth/api";
import { deadlineIn, ERROR_CODE_METADATA_KEY, ErrorCode, grpcClientOptions } from "@berth/core";
import { MemoryStore } from "@berth/store";
import { Controller } from "./controller.js";
import { resolveControllerOptions } from "./options.js";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("create admission", () => {
  it("refuses creates beyond maxCreatesInFlight with UNAVAILABLE, writing nothing for them", async () => {
    const options = resolveControllerOptions({ listen: "127.0.0.1:0", reportIntervalMs: 60_000, maxCreatesInFlight: 2 });
    const controller = await Controller.start(options, new MemoryStore(), pino({ level: "silent" }));
    cleanups.push(() => controller.stop());
    const address = `127.0.0.1:${controller.port}`;
    for (let deadline = Date.now() + 5_000; !controller.isLeader; ) {
      if (Date.now() > deadline) throw new Error("no leader");
      await new Promise((r) => setTimeout(r, 20));
    }
    const agents = new AgentServiceClient(address, credentials.createInsecure(), grpcClientOptions());
    cleanups.push(() => agents.close());
    const call = agents.connect();
    call.on("error", () => undefined);
    cleanups.push(() => call.cancel());
    const welcomed = new Promise((resolve) => call.once("data", resolve));
    call.write({ msg: { $case: "hello", value: { hostId: "h-1", bootId: "b", capacity: { vcpus: 64, memoryMib: 65536, diskGib: 1000 }, labels: {}, inventory: { domains: [] }, agentVersion: "t", driver: "fake", lastLeaderEpoch: 0, clusterId: "" } } });
    await welcomed;
    const client = new ClusterServiceClient(address, credentials.createInsecure(), grpcClientOptions());
    cleanups.push(() => client.close());
    const create = (name: string): Promise<Vm> =>
      new Promise((resolve, reject) =>
        client.createVm({ spec: VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 512, diskGib: 1 } }), requestId: "" }, new Metadata(), { deadline: deadlineIn(10_000) }, (e, r) => (e ? reject(e) : resolve(r!.vm!))),
      );
    const names = Array.from({ length: 40 }, (_, i) => `vm-${i}`);
    const results = await Promise.allSettled(names.map(create));
    const shed = results.flatMap((r, i) => (r.status === "rejected" ? [{ name: names[i]!, e: r.reason as ServiceError }] : []));
    expect(shed.length).toBeGreaterThan(0);
    expect(shed.length).toBeLessThan(names.length);
    for (const { e } of shed) {
      expect(e.code).toBe(status.UNAVAILABLE);
      expect(e.details).toMatch(/busy: 2 creates in flight \(at most 2\); nothing was written; retry with backoff/);
      expect(e.metadata.get(ERROR_CODE_METADATA_KEY)).toEqual([ErrorCode.Busy]);
    }
    expect(controller.placer.shedCreates).toBe(shed.length);
    // Nothing was written for a refused create; the others exist; a retry of a refused one succeeds.
    const listed = await new Promise<Vm[]>((resolve, reject) => client.listVms({ hostId: "", pageSize: 0, pageToken: "" }, new Metadata(), { deadline: deadlineIn(10_000) }, (e, r) => (e ? reject(e) : resolve(r!.vms))));
    expect(listed.map((v) => v.spec!.name).sort()).toEqual(names.filter((n) => !shed.some((s) => s.name === n)).sort());
    await expect(create(shed[0]!.name)).resolves.toMatchObject({ spec: { name: shed[0]!.name } });
    expect(() => resolveControllerOptions({ listen: "127.0.0.1:0", maxCreatesInFlight: 0 })).toThrow(/max_creates_in_flight: must be a number ≥ 1 \(got 0\)/);
  });
});
