/**
 * Hostile UpdateClusterConfig calls (found by an outside client written from the .proto alone):
 * each is refused with INVALID_ARGUMENT naming the field, quotes at most a bounded prefix of what
 * it was sent, writes nothing, and leaves the connection usable for the next call.
 */
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ClusterConfig, ClusterServiceClient, UpdateClusterConfigRequest } from "@berth/api";
import { deadlineIn, grpcClientOptions } from "@berth/core";
import { MemoryStore } from "@berth/store";
import { Controller } from "./controller.js";
import { Keys } from "./keys.js";
import { resolveControllerOptions } from "./options.js";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("UpdateClusterConfig refuses hostile input", () => {
  it("an absent config, NaN or unbounded numbers and a 100 KB preset: INVALID_ARGUMENT, nothing written, the connection still answers", async () => {
    const store = new MemoryStore();
    const controller = await Controller.start(resolveControllerOptions({ listen: "127.0.0.1:0" }), store, pino({ level: "silent" }));
    cleanups.push(() => controller.stop());
    for (let deadline = Date.now() + 5_000; !controller.isLeader; ) {
      if (Date.now() > deadline) throw new Error("no leader");
      await new Promise((r) => setTimeout(r, 20));
    }
    const client = new ClusterServiceClient(`127.0.0.1:${controller.port}`, credentials.createInsecure(), grpcClientOptions());
    cleanups.push(() => client.close());
    const update = (req: UpdateClusterConfigRequest): Promise<ServiceError | null> =>
      new Promise((resolve) => client.updateClusterConfig(req, new Metadata(), { deadline: deadlineIn(5_000) }, (e) => resolve(e)));

    // A real config first: what the refusals below must leave alone.
    expect(await update({ config: ClusterConfig.fromPartial({ scheduler: { preset: "pack" } }) })).toBeNull();
    const before = await store.get(Keys.config);
    expect(before).toBeDefined();

    const cases: [UpdateClusterConfigRequest, RegExp][] = [
      [{ config: undefined }, /^config: is required: send the whole cluster config/],
      [{ config: ClusterConfig.fromPartial({ scheduler: { allocationRatio: { vcpus: Number.NaN, memory: 0, disk: 0 } } }) }, /^config\.scheduler\.allocation_ratio\.vcpus: must be a number from 1 to 100 \(got NaN\)$/],
      [{ config: ClusterConfig.fromPartial({ scheduler: { allocationRatio: { vcpus: 1e9, memory: 0, disk: 0 } } }) }, /allocation_ratio\.vcpus: must be a number from 1 to 100 \(got 1000000000\)/],
      [{ config: ClusterConfig.fromPartial({ scheduler: { reserved: { vcpus: 2 ** 32 - 1, memoryMib: 0, diskGib: 0 } } }) }, /reserved\.vcpus: must be a whole number from 0 to 1048576/],
      [{ config: ClusterConfig.fromPartial({ scheduler: { weights: { leastAllocated: 1e308 } } }) }, /weights\.leastAllocated: must be a number from 0 to 1000/],
      [{ config: ClusterConfig.fromPartial({ scheduler: { preset: "p".repeat(100_000) } }) }, /^config\.scheduler\.preset: unknown preset 'p{64}… \(100000 characters\)'/],
    ];
    for (const [req, message] of cases) {
      const e = await update(req);
      expect(e?.code, message.source).toBe(status.INVALID_ARGUMENT);
      expect(e?.details).toMatch(message);
      expect(e!.details.length).toBeLessThan(300);
    }
    // Nothing was written, and the same connection still answers.
    expect((await store.get(Keys.config))?.modRevision).toBe(before!.modRevision);
    const got = await new Promise<ClusterConfig | undefined>((resolve, reject) =>
      client.getClusterConfig({}, new Metadata(), { deadline: deadlineIn(5_000) }, (e, r) => (e ? reject(e) : resolve(r?.config))),
    );
    expect(got?.scheduler?.preset).toBe("pack");
  });
});
