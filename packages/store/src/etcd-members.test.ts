import { describe, expect, it } from "vitest";
import { MemberSkippedError } from "./etcd-errors.js";
import { MemberGate, type MemberProbe } from "./etcd-members.js";

const refused = (): Error =>
  Object.assign(new Error("14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1"), { code: 14 });
const cancelled = (): Error => Object.assign(new Error("1 CANCELLED: Cancelled on client"), { code: 1 });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type Fn = (context: { signal: AbortSignal }) => unknown;
const run = (policy: { execute(fn: Fn): Promise<unknown> }, fn: Fn): Promise<unknown> => policy.execute(fn);

/** A probe that answers for the hosts in `up` and records what it was asked. */
function probeOf(up: Set<string>): MemberProbe & { asked: string[] } {
  const asked: string[] = [];
  const probe = async (host: string): Promise<void> => {
    asked.push(host);
    if (!up.has(host)) throw new Error(`${host} is down`);
  };
  return Object.assign(probe, { asked });
}

describe("MemberGate", () => {
  it("skips a member that refused a connection, and only that one, until a probe finds it back", async () => {
    const up = new Set<string>();
    const probe = probeOf(up);
    const gate = new MemberGate(probe, 100);
    const [a, b] = [gate.policy("a:1"), gate.policy("b:1")];
    await expect(run(a, () => Promise.reject(refused()))).rejects.toThrow(/ECONNREFUSED/);
    expect(gate.skipped()).toEqual(["a:1"]);
    await expect(run(a, () => "never")).rejects.toBeInstanceOf(MemberSkippedError);
    await expect(run(b, () => "b answers")).resolves.toBe("b answers");
    // First probe after 200–300 ms (a is still down), the next 400–600 ms later.
    await sleep(320);
    expect(probe.asked).toEqual(["a:1"]);
    expect(gate.skipped()).toEqual(["a:1"]);
    up.add("a:1");
    await sleep(620);
    expect(probe.asked).toEqual(["a:1", "a:1"]);
    expect(gate.skipped()).toEqual([]);
    await expect(run(a, () => "a answers")).resolves.toBe("a answers");
    gate.close();
  });

  it("sends calls to the member that failed longest ago when every member is down", async () => {
    const gate = new MemberGate(probeOf(new Set()), 100);
    const [a, b] = [gate.policy("a:1"), gate.policy("b:1")];
    await expect(run(a, () => Promise.reject(refused()))).rejects.toThrow();
    await sleep(5);
    await expect(run(b, () => Promise.reject(refused()))).rejects.toThrow();
    await expect(run(b, () => "b")).rejects.toBeInstanceOf(MemberSkippedError);
    await expect(run(a, () => "a tried")).resolves.toBe("a tried");
    // An answer brings the member back at once.
    expect(gate.skipped()).toEqual(["b:1"]);
    gate.close();
  });

  it("ignores calls this process cancelled, and does not count an opened stream as an answer", async () => {
    const gate = new MemberGate(probeOf(new Set()), 100);
    const [a, b] = [gate.policy("a:1"), gate.policy("b:1")];
    await expect(run(a, () => Promise.reject(cancelled()))).rejects.toThrow(/CANCELLED/);
    expect(gate.skipped()).toEqual([]);
    await expect(run(a, () => Promise.reject(refused()))).rejects.toThrow();
    await sleep(5);
    await expect(run(b, () => Promise.reject(refused()))).rejects.toThrow();
    // Both down: a (down longest) is tried; a stream that opens says nothing yet about a.
    const stream = { on: () => undefined };
    await expect(run(a, () => stream)).resolves.toBe(stream);
    expect(gate.skipped()).toEqual(["a:1", "b:1"]);
    gate.close();
  });
});
