/**
 * Hostile UpdateClusterConfig calls (found by an outside client written from the .proto alone):
 * each is refused with INVALID_ARGUMENT naming the field, quotes at most a bounded prefix of what
 * it was sent, writes nothing, and leaves the connection usable for the next call.
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { ClusterConfig, type UpdateClusterConfigRequest } from "@berth/api";
import { MemoryStore } from "@berth/store";
import { operatorApi, startController, waitFor, type Cleanups } from "./controller.testkit.js";
import { Keys } from "./keys.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("UpdateClusterConfig refuses hostile input", () => {
  it("an absent config, NaN or unbounded numbers and a 100 KB preset: INVALID_ARGUMENT, nothing written, the connection still answers", async () => {
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store);
    await waitFor("leadership", () => controller.isLeader);
    const { client, call } = operatorApi(cleanups, address);
    const update = (req: UpdateClusterConfigRequest): Promise<ServiceError | null> =>
      call((m, o, cb) => client.updateClusterConfig(req, m, o, cb)).then(
        () => null,
        (e: ServiceError) => e,
      );

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
    const got = await call<{ config?: ClusterConfig }>((m, o, cb) => client.getClusterConfig({}, m, o, cb));
    expect(got.config?.scheduler?.preset).toBe("pack");
  });
});
