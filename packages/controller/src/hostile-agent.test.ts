/**
 * Hostile messages on the agent stream (found by an outside client written from the .proto alone):
 * each is refused with a Reject that names the field — never a silent end or a silent ignore. (A
 * Report is checked whole before any of it is applied: core's validateReport.)
 */
import { afterEach, describe, expect, it } from "vitest";
import { AgentServiceClient, RejectReason, type ControllerMessage } from "@berth/api";
import { deadlineIn, grpcClientOptions } from "@berth/core";
import { MemoryStore } from "@berth/store";
import { credentialsFor, helloFor, rawAgent, startController, waitFor, type Cleanups } from "./controller.testkit.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const rejectOf = (received: ControllerMessage[]): { reason: RejectReason; message: string } | undefined => {
  const m = received.find((x) => x.msg?.$case === "reject")?.msg;
  return m?.$case === "reject" ? m.value : undefined;
};

describe("the agent stream refuses hostile messages with a reason", () => {
  it("a second Hello, a Report over the domain limit, usage out of bounds: Reject INVALID_MESSAGE naming the field", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);

    const twice = rawAgent(cleanups, address, helloFor("h1"));
    expect((await twice.first).msg?.$case).toBe("welcome");
    twice.send({ $case: "hello", value: helloFor("h1") });
    const r1 = await waitFor("a Reject for the second Hello", () => rejectOf(twice.received));
    expect(r1).toEqual({ reason: RejectReason.REJECT_REASON_INVALID_MESSAGE, message: "hello: a second Hello on a live stream: open a new stream to say Hello again" });

    const big = rawAgent(cleanups, address, helloFor("h2"));
    expect((await big.first).msg?.$case).toBe("welcome");
    const domains = Array.from({ length: 4_097 }, (_, i) => ({ vmId: `vm-${i}`, name: `vm-${i}`, state: 2, generation: 1 }));
    big.send({ $case: "report", value: { usage: { vcpus: 3, memoryMib: 1024, diskGib: 1 }, inventory: { domains }, vmUsage: [] } });
    const r2 = await waitFor("a Reject for the oversized Report", () => rejectOf(big.received));
    expect(r2).toEqual({ reason: RejectReason.REJECT_REASON_INVALID_MESSAGE, message: "report.inventory.domains: at most 4096 domains (got 4097)" });

    const usage = rawAgent(cleanups, address, helloFor("h3"));
    expect((await usage.first).msg?.$case).toBe("welcome");
    usage.send({ $case: "report", value: { usage: { vcpus: 2 ** 32 - 1, memoryMib: 0, diskGib: 0 }, vmUsage: [] } });
    const r3 = await waitFor("a Reject for usage out of bounds", () => rejectOf(usage.received));
    expect(r3?.reason).toBe(RejectReason.REJECT_REASON_INVALID_MESSAGE);
    expect(r3?.message).toMatch(/^report\.usage\.vcpus: must be a whole number from 0 to 1048576 vCPUs/);

  });

  it("a label value with a NUL: the Hello is refused naming the label", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    const answer = await rawAgent(cleanups, address, { ...helloFor("h1"), labels: { zone: "eu\u0000-1" } }).first;
    expect(answer.msg).toMatchObject({ $case: "reject", value: { reason: RejectReason.REJECT_REASON_INVALID_HELLO } });
    expect((answer.msg?.value as { message: string }).message).toBe("hello.labels[zone]: value must not contain control characters (NUL, newlines, ...)");
  });
});

describe("the agent stream ends what it refuses (found by test/fuzz)", () => {
  it("a megabyte cluster id is refused naming the field, quoting a bounded prefix", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    const agent = rawAgent(cleanups, address, helloFor("h1", "boot-a", { clusterId: "c".repeat(1 << 20) }));
    const first = await agent.first;
    expect(first.msg?.$case).toBe("reject");
    const r = rejectOf(agent.received)!;
    expect(r.reason).toBe(RejectReason.REJECT_REASON_INVALID_HELLO);
    expect(r.message).toMatch(/^hello\.cluster_id: must be at most 128 printable characters without spaces \(got c{64}… \(1048576 characters\)\)$/);
  });

  it("a stream half-closed before its Hello is ended by the controller, not left open until the client's deadline", async () => {
    const { controller, address } = await startController(cleanups, new MemoryStore());
    await waitFor("leadership", () => controller.isLeader);
    const client = new AgentServiceClient(address, credentialsFor(address, "host", "h1"), grpcClientOptions());
    cleanups.push(() => client.close());
    const call = client.connect({ deadline: deadlineIn(20_000) });
    call.on("data", () => undefined);
    call.on("error", () => undefined);
    const ended = new Promise<number>((resolve) => call.on("status", (s: { code: number }) => resolve(s.code)));
    call.end();
    // Left open, it would end at the client's deadline: DEADLINE_EXCEEDED, not OK.
    expect(await ended).toBe(0);
  });
});
