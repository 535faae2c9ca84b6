/**
 * Load shedding on the create path: beyond `maxCreatesInFlight` a create is refused at once with
 * BUSY (gRPC UNAVAILABLE) and writes nothing, so an overloaded leader keeps its lease (an
 * unbounded queue starved it: docs/benchmarks.md, e2e-scale).
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { VmSpec, type Vm } from "@berth/api";
import { ERROR_CODE_METADATA_KEY, ErrorCode } from "@berth/core";
import { MemoryStore } from "@berth/store";
import { helloFor, operatorApi, rawAgent, startController, waitFor, type Cleanups } from "./controller.testkit.js";
import { resolveControllerOptions } from "./options.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("create admission", () => {
  it("refuses creates beyond maxCreatesInFlight with UNAVAILABLE, writing nothing for them", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore(), { reportIntervalMs: 60_000, maxCreatesInFlight: 2 });
    await waitFor("leadership", () => controller.isLeader);
    await rawAgent(cleanups, address, helloFor("h-1", "b", { capacity: { vcpus: 64, memoryMib: 65536, diskGib: 1000 } })).first;
    const { client, call } = operatorApi(cleanups, address);
    const create = (name: string): Promise<Vm> =>
      call<{ vm?: Vm }>((m, o, cb) => client.createVm({ spec: VmSpec.fromPartial({ name, resources: { vcpus: 1, memoryMib: 512, diskGib: 1 } }), requestId: "" }, m, o, cb)).then((r) => r.vm!);
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
    const listed = await call<{ vms: Vm[] }>((m, o, cb) => client.listVms({ hostId: "", pageSize: 0, pageToken: "" }, m, o, cb));
    expect(listed.vms.map((v) => v.spec!.name).sort()).toEqual(names.filter((n) => !shed.some((s) => s.name === n)).sort());
    await expect(create(shed[0]!.name)).resolves.toMatchObject({ spec: { name: shed[0]!.name } });
    expect(() => resolveControllerOptions({ listen: "127.0.0.1:0", maxCreatesInFlight: 0 })).toThrow(/max_creates_in_flight: must be a number ≥ 1 \(got 0\)/);
  });
});
