import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server as NetServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DomainState, RejectReason, type Command } from "@berth/api";
import { FakeDriver, type HypervisorDriver, type WatchdogStatus } from "@berth/hypervisor";
import { Agent } from "./agent.js";
import { AGENT_STATE_FILE, loadAgentState, saveAgentState, type AgentState } from "./agent-state.js";
import { resolveAgentOptions, type AgentOptions } from "./options.js";
import { helloLog, memoryLogger, refusedAddress, StubController, until, wrapDriver } from "./stub-controller.testkit.js";

const resources = { vcpus: 1, memoryMib: 256, diskGib: 1 };
const vmId = "6f1c2a9e-0000-4000-8000-0000000000a1";
const createCommand = (leaderEpoch: number, fence = false): Command => ({
  commandId: "c1",
  vmId,
  generation: 1,
  migrationId: "", volumeId: "",
  leaderEpoch,
  action: { $case: "create", value: { name: "web-1", resources, start: true, fence } },
});

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  helloLog.length = 0;
});

async function stub(...args: Parameters<typeof StubController.start>): Promise<StubController> {
  const s = await StubController.start(...args);
  cleanups.push(() => s.kill());
  return s;
}

/** Starts an agent (fake driver in a temp state dir) on `controllers`; stopped after the test. */
async function startAgent(
  controllers: string[],
  options: Partial<AgentOptions> = {},
  setup: { state?: AgentState; override?: Parameters<typeof wrapDriver>[1] } = {},
) {
  const dir = mkdtempSync(join(tmpdir(), "berth-agent-"));
  if (setup.state) await saveAgentState(dir, setup.state);
  const fake = new FakeDriver({ stateDir: dir });
  const wrapped = wrapDriver(fake, setup.override);
  const { log, lines, messages } = memoryLogger();
  const agent = new Agent(
    resolveAgentOptions({ hostId: "host-1", controllers, driver: "fake", stateDir: dir, minBackoffMs: 20, maxBackoffMs: 100, electionRetryMs: 100, ...options }),
    wrapped.driver,
    await loadAgentState(dir),
    log,
  );
  const abort = new AbortController();
  const startedAt = Date.now();
  let outcome: "running" | "returned" | "threw" = "running";
  const done = agent.run(abort.signal).then(
    () => void (outcome = "returned"),
    () => void (outcome = "threw"),
  );
  cleanups.push(async () => {
    wrapped.setDelay(0);
    abort.abort();
    await done;
    await fake.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const stored = (): AgentState => JSON.parse(readFileSync(join(dir, AGENT_STATE_FILE), "utf8")) as AgentState;
  return { agent, dir, fake, ...wrapped, lines, messages, startedAt, stored, outcome: () => outcome };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("liveness apart from inventory (hole 6)", () => {
  it("keeps sending AgentHeartbeats on its own timer while every driver call takes 4 s, and stays on the leader", async () => {
    const leader = await stub("L", { kind: "leader", welcome: { leaderEpoch: 5, reportIntervalMs: 200 } });
    const a = await startAgent([leader.address]);
    await until("a first report", () => leader.last?.of("report").length);
    a.setDelay(4_000);
    const from = Date.now();
    await sleep(4_500);
    const session = leader.last!;
    const upstream = session.messages.filter((m) => m.at >= from).map((m) => m.at);
    const gaps = upstream.slice(1).map((t, i) => t - upstream[i]!);
    // Every 100 ms (report interval / 2), whatever the hypervisor does.
    expect(session.of("heartbeat").length).toBeGreaterThanOrEqual(30);
    expect(Math.max(...gaps, upstream[0]! - from)).toBeLessThan(400);
    expect(session.of("heartbeat").every((m) => m.msg.msg?.$case === "heartbeat" && m.msg.msg.value.leaderEpoch === 5)).toBe(true);
    // The stream was not dropped: a controller that owes no answer (no report sent) is not silent.
    expect(leader.sessions).toHaveLength(1);
    expect(session.ended).toBe(false);
  }, 15_000);
});

describe("following the leader (hole 10)", () => {
  it("connects next to the leader a NotLeader names", async () => {
    const b = await stub("B", { kind: "leader" });
    const c = await stub("C", { kind: "leader" });
    const a = await stub("A", { kind: "follower", leader: c.address });
    await startAgent([a.address, b.address, c.address]);
    await until("a Hello at C", () => c.sessions.length);
    expect(helloLog.map((h) => h.name).slice(0, 2)).toEqual(["A", "C"]);
    expect(b.sessions).toHaveLength(0);
  });

  it("moves its place in the list to the named leader: when that one fails it goes on, not back to it", async () => {
    const a = await stub("A", { kind: "hangup" }); // a leader that is failing
    const b = await stub("B", { kind: "follower", leader: a.address });
    await startAgent([a.address, b.address]);
    await until("8 Hellos", () => helloLog.length >= 8);
    const order = helloLog.slice(0, 8).map((h) => h.name);
    // Before: A, B, A (followed), A (index not moved: the one it just left), B, ...
    expect(order).toEqual(["A", "B", "A", "B", "A", "B", "A", "B"]);
  });

  it("a refused port costs milliseconds, not the 5 s connect bound", async () => {
    const dead = await refusedAddress();
    const leader = await stub("L", { kind: "leader" });
    const a = await startAgent([dead, leader.address], { connectTimeoutMs: 5_000 });
    await until("a Hello at L", () => leader.sessions.length, 6_000);
    const ms = leader.sessions[0]!.helloAt - a.startedAt;
    console.log(`refused port, then the leader: Hello after ${ms} ms`);
    expect(ms).toBeLessThan(1_000);
  });

  it("a connect that hangs is still bounded", async () => {
    // Accepts TCP and never speaks HTTP/2.
    const sockets: Socket[] = [];
    const silent: NetServer = createServer((s) => void sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
    cleanups.push(() => {
      for (const s of sockets) s.destroy();
      silent.close();
    });
    const leader = await stub("L", { kind: "leader" });
    const a = await startAgent([`127.0.0.1:${(silent.address() as { port: number }).port}`, leader.address], { connectTimeoutMs: 300 });
    await until("a Hello at L", () => leader.sessions.length, 8_000);
    const ms = leader.sessions[0]!.helloAt - a.startedAt;
    console.log(`hanging controller, then the leader: Hello after ${ms} ms`);
    expect(ms).toBeGreaterThanOrEqual(290);
  }, 10_000);

  it("reaches a new leader within 1 s of its election after the leader is killed (5 agents), without spinning meanwhile", async () => {
    const l = await stub("L", { kind: "leader", welcome: { leaderEpoch: 1, reportIntervalMs: 200 } });
    // Until elected, the follower names the dead leader (its lease has not expired yet).
    const f = await stub("F", { kind: "follower", leader: l.address });
    // The defaults: backoff 250 ms .. 5 s, election retries ≤ 500 ms.
    const agents = await Promise.all(
      Array.from({ length: 5 }, (_, i) => startAgent([l.address, f.address], { hostId: `host-${i}`, minBackoffMs: 250, maxBackoffMs: 5_000, electionRetryMs: 500 })),
    );
    await until("all connected to L", () => new Set(l.sessions.filter((s) => s.messages.length > 0).map((s) => s.hello.hostId)).size === 5);
    l.kill();
    await sleep(3_000);
    const duringElection = f.sessions.length;
    const electedAt = Date.now();
    f.behaviour = { kind: "leader", welcome: { leaderEpoch: 2, reportIntervalMs: 200 } };
    const firstAt = (hostId: string) => f.sessions.find((s) => s.helloAt >= electedAt && s.hello.hostId === hostId)?.helloAt;
    await until("every agent at the new leader", () => agents.every((_, i) => firstAt(`host-${i}`)), 8_000);
    const delays = agents.map((_, i) => firstAt(`host-${i}`)! - electedAt);
    console.log(`leader killed; follower elected 3 s later; agents on it after ${delays.join(", ")} ms; ${duringElection} NotLeader answers from F meanwhile (5 agents)`);
    expect(Math.max(...delays)).toBeLessThan(1_000);
    // One try at F per wait of 250..500 ms: ≤ 13 per agent in 3 s (a spinning agent makes thousands).
    expect(duringElection).toBeLessThanOrEqual(5 * 14);
  }, 20_000);

  it("answers NotLeader without an address (election in progress) by retrying quickly", async () => {
    const f = await stub("F", { kind: "follower", leader: "" });
    await startAgent([f.address], { minBackoffMs: 250, maxBackoffMs: 5_000, electionRetryMs: 500 });
    await sleep(2_500);
    // At most 500 ms apart (jittered from 250): at least 5 tries in 2.5 s, where 5 s backoff would give 3.
    expect(f.sessions.length).toBeGreaterThanOrEqual(5);
    const gaps = f.sessions.slice(1).map((s, i) => s.helloAt - f.sessions[i]!.helloAt);
    expect(Math.max(...gaps)).toBeLessThan(700);
  }, 10_000);
});

describe("a stalled agent (hole 9)", () => {
  it("does not take its own freeze for the controller's silence", async () => {
    const l = await stub("L", { kind: "leader", welcome: { reportIntervalMs: 200 } });
    const f = await stub("F", { kind: "follower", leader: l.address });
    const a = await startAgent([l.address, f.address]);
    await until("a few answered reports", () => (l.last?.of("report").length ?? 0) >= 3);
    // Freeze the whole process (agent and stubs) longer than the silence limit (3 × 200 + 1000 ms).
    const until_ = Date.now() + 2_500;
    while (Date.now() < until_) {
      // busy: no timer, no I/O
    }
    await sleep(1_500);
    // Still on the one stream to the healthy leader: not left, not suspected.
    expect(f.sessions).toHaveLength(0);
    expect(l.sessions).toHaveLength(1);
    expect(l.last!.ended).toBe(false);
    expect(a.lines.filter((x) => String(x.why ?? "").includes("silent"))).toEqual([]);
    expect(a.messages("stalled").length).toBeGreaterThan(0);
  }, 10_000);

  it("still leaves a controller that goes silent, and does not follow it back at once", async () => {
    const l = await stub("L", { kind: "leader", welcome: { reportIntervalMs: 200 }, answerReports: false });
    const f = await stub("F", { kind: "follower", leader: l.address });
    const a = await startAgent([l.address, f.address]);
    await until("left L for silence", () => a.lines.some((x) => String(x.why ?? "").includes("controller silent")), 4_000);
    // Reports every 200 ms, the limit 3 × 200 + 1000 ms from the first unanswered one.
    expect(Date.now() - l.sessions[0]!.helloAt).toBeLessThan(2_600);
    await until("asked F", () => f.sessions.length);
    await sleep(500);
    expect(l.sessions).toHaveLength(1);
    expect(a.lines.filter((x) => `${String(x.msg)} ${String(x.note ?? "")}`.includes("not following")).length).toBeGreaterThan(0);
  });
});

describe("cluster identity", () => {
  it("adopts the first Welcome's cluster id and saves it before running any command", async () => {
    const seenAtDefine: string[] = [];
    let dir = "";
    const l = await stub("L", {
      kind: "leader",
      welcome: { leaderEpoch: 3, clusterId: "cluster-a" },
      afterWelcome: (s) => s.send({ $case: "command", value: createCommand(3) }),
    });
    const a = await startAgent([l.address], {}, {
      override: {
        define: (async (...args: Parameters<HypervisorDriver["define"]>) => {
          seenAtDefine.push((JSON.parse(readFileSync(join(dir, AGENT_STATE_FILE), "utf8")) as AgentState).clusterId);
          return fakeOf().define(...args);
        }) as never,
      },
    });
    dir = a.dir;
    const fakeOf = () => a.fake;
    await until("the command result", () => l.last?.of("result").length);
    expect(l.sessions[0]!.hello.clusterId).toBe("");
    expect(seenAtDefine).toEqual(["cluster-a"]);
    expect(a.stored()).toEqual({ clusterId: "cluster-a", lastLeaderEpoch: 3 });
    expect(a.agent.clusterId).toBe("cluster-a");
    // The next Hello says it.
    l.last!.end();
    await until("a second Hello", () => l.sessions.length >= 2);
    expect(l.sessions[1]!.hello).toMatchObject({ clusterId: "cluster-a", lastLeaderEpoch: 3 });
  });

  it("refuses a controller of another cluster, runs none of its commands, and keeps trying", async () => {
    const l = await stub("L", {
      kind: "leader",
      welcome: { leaderEpoch: 9, clusterId: "cluster-b" },
      afterWelcome: (s) => s.send({ $case: "command", value: createCommand(9) }),
    });
    const a = await startAgent([l.address], {}, { state: { clusterId: "cluster-a", lastLeaderEpoch: 4 } });
    await until("3 Hellos", () => l.sessions.length >= 3);
    expect(l.sessions[0]!.hello).toMatchObject({ clusterId: "cluster-a", lastLeaderEpoch: 4 });
    expect(a.calls.filter((c) => c.method === "define")).toEqual([]);
    expect(l.sessions.every((s) => s.of("result").length === 0 && s.of("report").length === 0)).toBe(true);
    const refusal = a.messages("belongs to cluster 'cluster-a'");
    expect(refusal.length).toBeGreaterThan(0);
    expect(refusal[0]!.level).toBe(50); // error
    expect(String(refusal[0]!.msg)).toContain("--join-cluster cluster-b");
    expect(a.stored()).toEqual({ clusterId: "cluster-a", lastLeaderEpoch: 4 });
    expect(a.outcome()).toBe("running");
  });

  it("an agent.json from before cluster ids: Hello says no cluster and epoch 0; the Welcome's cluster and epoch replace the old epoch", async () => {
    const l = await stub("L", {
      kind: "leader",
      welcome: { leaderEpoch: 2, clusterId: "fresh-store" },
      afterWelcome: (s) => s.send({ $case: "command", value: createCommand(2) }),
    });
    const dir = mkdtempSync(join(tmpdir(), "berth-agent-legacy-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    // As the version before cluster ids wrote it.
    const { writeFileSync } = await import("node:fs");
    writeFileSync(join(dir, AGENT_STATE_FILE), JSON.stringify({ lastLeaderEpoch: 18 }));
    const legacy = await loadAgentState(dir);
    expect(legacy).toEqual({ lastLeaderEpoch: 18, clusterId: "" });
    const a = await startAgent([l.address], {}, { state: legacy });
    await until("the command result", () => l.last?.of("result").length);
    const result = l.last!.of("result")[0]!.msg.msg;
    // Before: refused ("command from leader epoch 2; this host follows epoch 18").
    expect(result?.$case === "result" && result.value).toMatchObject({ ok: true, vmId });
    expect(l.sessions[0]!.hello).toMatchObject({ clusterId: "", lastLeaderEpoch: 0 });
    expect(a.stored()).toEqual({ clusterId: "fresh-store", lastLeaderEpoch: 2 });
  });

  it("--join-cluster: says the new cluster with epoch 0, adopts it and resets the epoch; refuses the old cluster meanwhile", async () => {
    const old = await stub("OLD", { kind: "leader", welcome: { leaderEpoch: 20, clusterId: "cluster-a" } });
    const fresh = await stub("NEW", {
      kind: "leader",
      welcome: { leaderEpoch: 3, clusterId: "cluster-b" },
      afterWelcome: (s) => s.send({ $case: "command", value: createCommand(3) }),
    });
    const a = await startAgent([old.address, fresh.address], { joinCluster: "cluster-b" }, { state: { clusterId: "cluster-a", lastLeaderEpoch: 18 } });
    await until("the command result at the new cluster", () => fresh.last?.of("result").length);
    expect(old.sessions[0]!.hello).toMatchObject({ clusterId: "cluster-b", lastLeaderEpoch: 0 });
    expect(old.sessions[0]!.messages).toEqual([]);
    expect(a.messages("joining cluster 'cluster-b'").length).toBeGreaterThan(0);
    const result = fresh.last!.of("result")[0]!.msg.msg;
    expect(result?.$case === "result" && result.value.ok).toBe(true);
    expect(a.stored()).toEqual({ clusterId: "cluster-b", lastLeaderEpoch: 3 });
    // Joined: the next Hello is an ordinary member's (epoch kept), and the old cluster stays refused.
    fresh.last!.end();
    await until("a second Hello at the new cluster", () => fresh.sessions.length >= 2, 3_000);
    expect(fresh.sessions[1]!.hello).toMatchObject({ clusterId: "cluster-b", lastLeaderEpoch: 3 });
  });

  it("FOREIGN_CLUSTER: logs the controller's message at error level and retries with capped backoff, never exiting", async () => {
    const message = "host-1 belongs to cluster 'cluster-a'; this is cluster 'cluster-b'. To move it: berth-agent --join-cluster cluster-b";
    const l = await stub("L", { kind: "reject", reason: RejectReason.REJECT_REASON_FOREIGN_CLUSTER, message });
    const a = await startAgent([l.address], { minBackoffMs: 20, maxBackoffMs: 100 });
    await until("8 Hellos", () => l.sessions.length >= 8, 5_000);
    const gaps = l.sessions.slice(1).map((s, i) => s.helloAt - l.sessions[i]!.helloAt);
    expect(Math.max(...gaps)).toBeLessThan(250); // capped at max backoff (100 ms) plus a connect
    expect(Math.min(...gaps.slice(3))).toBeGreaterThanOrEqual(45); // backed off: at least half the cap
    const logged = a.lines.filter((l) => l.message === message);
    expect(logged.length).toBeGreaterThan(0);
    expect(logged[0]!.level).toBe(50);
    expect(a.outcome()).toBe("running");
  });
});

describe("duplicate host id", () => {
  it("backs off longer than a normal reconnect and says another agent may run with the same --host-id", async () => {
    const l = await stub("L", { kind: "reject", reason: RejectReason.REJECT_REASON_DUPLICATE_HOST, message: "host 'host-1' is already connected" });
    const a = await startAgent([l.address], { minBackoffMs: 20, maxBackoffMs: 100, duplicateHostBackoffMs: 600 });
    await until("3 Hellos", () => l.sessions.length >= 3, 5_000);
    const gaps = l.sessions.slice(1).map((s, i) => s.helloAt - l.sessions[i]!.helloAt);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(295); // ≥ half of 600 ms, where normal waits are ≤ 100 ms
    const warned = a.messages("same --host-id");
    expect(warned.length).toBeGreaterThan(0);
    expect(warned[0]!.level).toBe(40);
  });
});

describe("the host's watchdog (fencing)", () => {
  /** A watchdog kept in memory, as the drivers will keep theirs; records the calls. */
  function memoryWatchdog(initial: WatchdogStatus = { deadlineMs: 0, firedAtMs: 0 }) {
    const status = { ...initial };
    const pets: { at: number; deadline: number }[] = [];
    let clears = 0;
    const override = {
      setWatchdog: (async (deadline: number) => {
        pets.push({ at: Date.now(), deadline });
        status.deadlineMs = deadline;
        status.firedAtMs = 0;
      }) as never,
      clearWatchdog: (async () => {
        clears++;
        status.deadlineMs = 0;
      }) as never,
      watchdog: (async () => ({ ...status })) as never,
    };
    return { override, pets, clears: () => clears, status };
  }

  it("pets while the leader is heard, rate-limited, never letting the deadline come closer than 3/4 of the timeout", async () => {
    const w = memoryWatchdog();
    const l = await stub("L", { kind: "leader", welcome: { reportIntervalMs: 100, fenceTimeoutMs: 800 } });
    await startAgent([l.address], {}, { override: w.override });
    await until("a pet", () => w.pets.length);
    await sleep(2_000);
    // A deadline is the timeout counted from the hearing, which comes a little before the driver
    // call (the scheduling between them is the machine's, not the agent's): never beyond the
    // timeout from the call, and not a shorter timeout.
    for (const p of w.pets) {
      expect(p.deadline - p.at).toBeLessThanOrEqual(800);
      expect(p.deadline - p.at).toBeGreaterThan(800 - 100);
    }
    // So the hearings are the deadlines less 800 ms: at most every min(1 s, 800/4 = 200 ms), exactly
    // (the rate limit is on the hearing's clock)...
    const gaps = w.pets.slice(1).map((p, i) => p.deadline - w.pets[i]!.deadline);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(200);
    // ...and the deadline stays ≥ 600 ms ahead while heard (messages every 100 ms, plus scheduling).
    expect(Math.max(...gaps)).toBeLessThan(800 / 4 + 150);
    expect(w.pets.length).toBeGreaterThanOrEqual(6);
  });

  it("is never cleared when the stream ends or the agent stops; a Welcome with fence_timeout_ms 0 clears it", async () => {
    const w = memoryWatchdog();
    const l = await stub("L", { kind: "leader", welcome: { reportIntervalMs: 100, fenceTimeoutMs: 5_000 } });
    const a = await startAgent([l.address], {}, { override: w.override });
    await until("a pet", () => w.pets.length);
    l.last!.end();
    l.kill();
    await sleep(300);
    expect(w.clears()).toBe(0);
    expect(w.status.deadlineMs).toBeGreaterThan(Date.now());
    // The agent stops: still armed.
    await cleanups.pop()!();
    expect(w.clears()).toBe(0);
    expect(a.outcome()).toBe("returned");

    const l2 = await stub("L2", { kind: "leader", welcome: { reportIntervalMs: 100, fenceTimeoutMs: 0 } });
    await startAgent([l2.address], {}, { override: w.override });
    await until("cleared", () => w.clears() > 0);
    expect(w.status.deadlineMs).toBe(0);
  });

  it("logs at start, and before petting for a new leader, that the watchdog fired", async () => {
    const firedAt = Date.now() - 60_000;
    const w = memoryWatchdog({ deadlineMs: firedAt, firedAtMs: firedAt });
    const l = await stub("L", { kind: "leader", welcome: { reportIntervalMs: 100, fenceTimeoutMs: 2_000 } });
    const a = await startAgent([l.address], {}, { override: w.override });
    await until("a pet", () => w.pets.length);
    const fired = a.messages("watchdog fired");
    expect(fired).toHaveLength(1);
    expect(fired[0]).toMatchObject({ level: 50, firedAt: new Date(firedAt).toISOString() });
  });

  it("passes CreateDomain.fence on to the domain", async () => {
    const l = await stub("L", {
      kind: "leader",
      welcome: { leaderEpoch: 1 },
      afterWelcome: (s) => s.send({ $case: "command", value: createCommand(1, true) }),
    });
    const a = await startAgent([l.address]);
    await until("the command result", () => l.last?.of("result").length);
    expect((await a.fake.list()).map((d) => [d.vmId, d.fence])).toEqual([[vmId, true]]);
  });
});

describe("what a host reports of its images, networks and volumes", () => {
  it("Hello and every Report carry the networks and volumes; a NIC's address arriving resends the inventory", async () => {
    const withNic: Command = {
      ...createCommand(1),
      action: { $case: "create", value: { name: "web-1", resources, start: true, fence: false, devices: { image: undefined, nics: [{ network: "default", mac: "52:54:00:00:00:a1" }], cloudInit: undefined, volumes: [] } } },
    };
    const l = await stub("L", { kind: "leader", welcome: { leaderEpoch: 1, reportIntervalMs: 100 }, afterWelcome: (s) => s.send({ $case: "command", value: withNic }) });
    const a = await startAgent([l.address]);
    const hello = await until("a hello", () => l.last?.hello);
    expect(hello.networks.map((n) => n.name)).toEqual(["default"]);
    await a.fake.createVolume({ id: "6f1c2a9e-0000-4000-8000-0000000000c1", name: "data-1", sizeGib: 3 });
    const reports = () => (l.last?.of("report") ?? []).map((m) => (m.msg.msg?.$case === "report" ? m.msg.msg.value : undefined)).filter((r) => r !== undefined);
    const withVolume = await until("a report with the volume", () => reports().find((r) => r.volumes.length === 1));
    expect(withVolume.volumes[0]).toMatchObject({ sizeGib: 3, attachedVmId: "" });
    // The volume's pool space is in the host's used disk.
    expect(withVolume.usage?.diskGib).toBeGreaterThanOrEqual(3);
    // The fake's lease comes a second after the start: the inventory goes again with the address.
    const addressed = await until(
      "an inventory with the NIC's address",
      () => reports().find((r) => r.inventory?.domains[0]?.interfaces[0]?.ipAddresses.length === 1),
      10_000,
    );
    expect(addressed.inventory!.domains[0]!.interfaces[0]).toMatchObject({ network: "default", mac: "52:54:00:00:00:a1", addressSource: "fake" });
  });
});

describe("the host's watchdog on the fake driver", () => {
  it("keeps fenced domains running while the leader is heard, and powers them off once it is not (the agent still running)", async () => {
    const fencedId = "6f1c2a9e-0000-4000-8000-0000000000b1";
    const l = await stub("L", {
      kind: "leader",
      welcome: { leaderEpoch: 1, reportIntervalMs: 100, fenceTimeoutMs: 600 },
      afterWelcome: (s) => {
        s.send({ $case: "command", value: { ...createCommand(1, false), commandId: "plain" } });
        s.send({ $case: "command", value: { ...createCommand(1, true), commandId: "fenced", vmId: fencedId, action: { $case: "create", value: { name: "db-1", resources, start: true, fence: true } } } });
      },
    });
    const a = await startAgent([l.address]);
    await until("both results", () => (l.last?.of("result").length ?? 0) >= 2);
    await sleep(1_500); // longer than the fence timeout: the pets hold it off
    const running = async () => (await a.fake.list()).filter((d) => d.state === DomainState.DOMAIN_STATE_RUNNING).map((d) => d.vmId).sort();
    expect(await running()).toEqual([vmId, fencedId].sort());
    l.kill();
    await sleep(1_200);
    expect(await running()).toEqual([vmId]);
    expect((await a.fake.watchdog()).firedAtMs).toBeGreaterThan(0);
  }, 10_000);
});
