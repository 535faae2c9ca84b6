/**
 * Fuzzes one in-process controller on a MemoryStore with BERTH_FUZZ_COUNT (default 100,000)
 * malformed and hostile messages from generator.ts: unary calls for ClusterService, many short
 * agent streams for AgentService, over real gRPC with raw bytes. It asserts that:
 *   - the controller never crashes or hangs: every call and stream answers within its deadline,
 *     and the controller still leads and answers at the end;
 *   - every refusal is a typed status (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
 *     FAILED_PRECONDITION, RESOURCE_EXHAUSTED, PERMISSION_DENIED, UNAUTHENTICATED, ABORTED, or
 *     UNAVAILABLE for a shed create, each with its berth-error-code), never INTERNAL, UNKNOWN or a
 *     deadline; a frame checkWire refuses is answered INVALID_ARGUMENT naming its field (a Reject
 *     INVALID_HELLO / INVALID_MESSAGE on the agent stream); a frame over the 4 MiB cap RESOURCE_EXHAUSTED;
 *   - every refused agent stream got a Reject, and no malformed Hello is ever welcomed;
 *   - the store changes only for accepted messages: a run of malformed messages first leaves the
 *     revision where it was, and every key written during the run belongs to a VM, group, host or
 *     config that an accepted call or a welcomed stream made (accepted writes against revision delta).
 * The seed is printed; replay with BERTH_FUZZ_SEED=<seed> (and BERTH_FUZZ_COUNT, or BERTH_FUZZ_ONLY=<case,...>).
 */
import { randomInt } from "node:crypto";
import { Client, credentials, Metadata, status, type ServiceError, type StatusObject } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { AgentMessage, ClusterServiceService, ControllerMessage, RejectReason } from "@berth/api";
import { deadlineIn, ERROR_CODE_METADATA_KEY, grpcClientOptions, Limits, MAX_DETAIL_REASON_BYTES, MAX_STATUS_MESSAGE_CHARS } from "@berth/core";
import { MemoryStore } from "@berth/store";
import { startController, waitFor, type Cleanups } from "../../packages/controller/src/controller.testkit.js";
import { AGENT_CONNECT_PATH, describeCase, FuzzGenerator, type Frame, type FuzzCase, type StreamCase, type UnaryCase } from "./generator.js";

const SEED = process.env.BERTH_FUZZ_SEED ? Number(process.env.BERTH_FUZZ_SEED) : randomInt(2 ** 31);
const COUNT = Number(process.env.BERTH_FUZZ_COUNT ?? 100_000);
const ONLY = process.env.BERTH_FUZZ_ONLY ? new Set(process.env.BERTH_FUZZ_ONLY.split(",").map(Number)) : undefined;
/** Malformed messages sent first, alone: the revision must not move at all. */
const MALFORMED_FIRST = Math.min(2_000, Math.ceil(COUNT / 20));
/** Calls and streams in flight at once. */
const CONCURRENCY = 64;
const DEADLINE_MS = 20_000;
/** How long a well-formed WatchEvents is read before the client cancels it. */
const WATCH_READ_MS = 200;

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const raw = (b: Buffer): Buffer => b;
const decodeAnswer = (b: Buffer): ControllerMessage => ControllerMessage.decode(b);
const lowerFirst = (s: string): string => s.charAt(0).toLowerCase() + s.slice(1);

/** Statuses a refusal may have (with a berth-error-code). */
const TYPED = new Set([
  status.INVALID_ARGUMENT,
  status.NOT_FOUND,
  status.ALREADY_EXISTS,
  status.FAILED_PRECONDITION,
  status.RESOURCE_EXHAUSTED,
  status.PERMISSION_DENIED,
  status.UNAUTHENTICATED,
  status.ABORTED,
]);
/** Longest Reject message: its longest legitimate ones (DUPLICATE_HOST, FOREIGN_CLUSTER) are about 400 characters. */
const MAX_REJECT_MESSAGE = 1024;
/** Longest status message the controller may answer (message cap plus the reasons' cap, and slack for the join). */
const MAX_DETAILS = MAX_STATUS_MESSAGE_CHARS + MAX_DETAIL_REASON_BYTES + 256;

/** Calls that write when they succeed. */
const WRITES = new Set(["CreateVm", "CreateVms", "DeleteVm", "StartVm", "StopVm", "CreateGroup", "DeleteGroup", "UpdateClusterConfig", "RetryVm", "DeleteOrphan", "AdoptOrphan", "ConfirmHostDown", "MigrateVm", "AbortMigration", "CordonHost", "UncordonHost", "DrainHost", "ApplyRebalance", "CreateImage", "DeleteImage", "CreateVolume", "DeleteVolume", "AttachVolume", "DetachVolume", "CreateScaleGroup", "UpdateScaleGroup", "DeleteScaleGroup"]);
/** Calls whose `group` answer is a scale group (not a placement group). */
const SCALE_GROUP_WRITES = new Set(["CreateScaleGroup", "UpdateScaleGroup", "DeleteScaleGroup"]);

class Tally {
  messages = 0;
  unary = 0;
  streams = 0;
  welcomed = 0;
  rejects = new Map<string, number>();
  codes = new Map<string, number>();
  acceptedWrites = 0;
  /** Frames sent that checkWire refuses (each must be refused naming its field). */
  malformed = 0;
  maxLatencyMs = 0;
  failures: string[] = [];
  /** What accepted messages made: the keys the store may change. */
  vms = new Set<string>();
  groups = new Set<string>();
  images = new Set<string>();
  volumes = new Set<string>();
  /** Scale groups made or changed: their records, and their members' VMs (<name>-<index>). */
  scaleGroups = new Set<string>();
  hosts = new Set<string>();
  config = false;
  fail(c: FuzzCase, why: string, frame?: Frame): void {
    if (this.failures.length < 25) this.failures.push(`${describeCase(c, frame)}: ${why}`);
    else if (this.failures.length === 25) this.failures.push("… (more failures left out)");
  }
  count(map: Map<string, number>, key: string): void {
    map.set(key, (map.get(key) ?? 0) + 1);
  }
}

/** The checks every non-OK status must pass. */
function checkRefusal(t: Tally, c: FuzzCase, s: Partial<StatusObject> & { code: status }, frame: Frame): void {
  const code = s.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
  const details = s.details ?? "";
  if (frame.overCap) {
    if (s.code !== status.RESOURCE_EXHAUSTED) t.fail(c, `a frame over the cap answered ${status[s.code]} (${details.slice(0, 200)}), not RESOURCE_EXHAUSTED`, frame);
    return;
  }
  if (frame.fault) {
    const want = `${frame.fault.field}: ${frame.fault.reason}`;
    if (s.code !== status.INVALID_ARGUMENT || details !== want) t.fail(c, `answered ${status[s.code]} '${details.slice(0, 200)}', not INVALID_ARGUMENT '${want}'`, frame);
    return;
  }
  const typed = TYPED.has(s.code) || (s.code === status.UNAVAILABLE && code === "BUSY");
  if (!typed || typeof code !== "string") t.fail(c, `answered ${status[s.code]} (berth-error-code ${String(code)}): '${details.slice(0, 300)}'`, frame);
  if (details.length > MAX_DETAILS) t.fail(c, `a status message of ${details.length} characters`, frame);
}

async function runUnary(client: Client, t: Tally, c: UnaryCase): Promise<void> {
  t.unary++;
  t.messages++;
  if (c.fault) t.malformed++;
  const started = Date.now();
  const outcome = await new Promise<{ s: Partial<StatusObject> & { code: status }; reply?: Buffer }>((resolve) => {
    if (c.serverStream) {
      const call = client.makeServerStreamRequest(c.path, raw, raw, c.bytes, new Metadata(), { deadline: deadlineIn(DEADLINE_MS) });
      let cancelled = false;
      const cancel = (): void => {
        cancelled = true;
        call.cancel();
      };
      // A well-formed watch never ends by itself: read its first answer (or a while), then cancel.
      // A malformed one must end by itself, with INVALID_ARGUMENT, within the deadline.
      const timer = c.fault || c.overCap ? undefined : setTimeout(cancel, WATCH_READ_MS);
      call.on("data", cancel);
      call.on("error", () => undefined);
      call.on("status", (s: StatusObject) => {
        clearTimeout(timer);
        resolve({ s: cancelled && s.code === status.CANCELLED ? { code: status.OK } : s });
      });
      return;
    }
    client.makeUnaryRequest(c.path, raw, raw, c.bytes, new Metadata(), { deadline: deadlineIn(DEADLINE_MS) }, (e: ServiceError | null, reply?: Buffer) =>
      resolve(e ? { s: e } : { s: { code: status.OK }, reply }),
    );
  });
  t.maxLatencyMs = Math.max(t.maxLatencyMs, Date.now() - started);
  t.count(t.codes, status[outcome.s.code]!);
  if (outcome.s.code !== status.OK) {
    checkRefusal(t, c, outcome.s, c);
    return;
  }
  if (c.fault || c.overCap) {
    t.fail(c, `accepted, but checkWire says ${c.overCap ? "it is over the cap" : `${c.fault!.field}: ${c.fault!.reason}`}`);
    return;
  }
  if (!WRITES.has(c.method)) return;
  t.acceptedWrites++;
  const def = (ClusterServiceService as unknown as Record<string, { requestDeserialize(b: Buffer): unknown; responseDeserialize(b: Buffer): unknown }>)[lowerFirst(c.method)]!;
  const reply = outcome.reply
    ? (def.responseDeserialize(outcome.reply) as { vm?: { spec?: { name: string } }; vms?: { spec?: { name: string } }[]; group?: { name: string }; image?: { name: string }; volume?: { name: string } })
    : {};
  for (const vm of [reply.vm, ...(reply.vms ?? [])]) if (vm?.spec) t.vms.add(vm.spec.name);
  if (reply.group) (SCALE_GROUP_WRITES.has(c.method) ? t.scaleGroups : t.groups).add(reply.group.name);
  if (reply.image) t.images.add(reply.image.name);
  if (reply.volume) t.volumes.add(reply.volume.name);
  if (c.method === "DeleteGroup") t.groups.add((def.requestDeserialize(c.bytes) as { name: string }).name);
  if (c.method === "DeleteImage") t.images.add((def.requestDeserialize(c.bytes) as { name: string }).name);
  if (c.method === "DeleteVolume") t.volumes.add((def.requestDeserialize(c.bytes) as { name: string }).name);
  if (c.method === "UpdateClusterConfig") t.config = true;
}

async function runStream(client: Client, t: Tally, c: StreamCase): Promise<void> {
  t.streams++;
  const started = Date.now();
  const call = client.makeBidiStreamRequest(AGENT_CONNECT_PATH, raw, decodeAnswer, new Metadata(), { deadline: deadlineIn(DEADLINE_MS) });
  const received: ControllerMessage[] = [];
  let firstAnswer: (() => void) | undefined;
  const answered = new Promise<void>((resolve) => (firstAnswer = resolve));
  call.on("data", (m: ControllerMessage) => {
    received.push(m);
    firstAnswer?.();
  });
  call.on("error", () => undefined);
  const ended = new Promise<StatusObject>((resolve) =>
    call.on("status", (s: StatusObject) => {
      firstAnswer?.();
      resolve(s);
    }),
  );
  const first = c.frames[0]!;
  call.write(first.bytes);
  t.messages++;
  await answered;
  const answer = received[0]?.msg;
  let sent = 1;
  if (answer?.$case === "welcome") {
    // An agent says more only once welcomed (an answer first, as a real one does).
    for (const f of c.frames.slice(1)) {
      call.write(f.bytes);
      sent++;
    }
    t.messages += sent - 1;
  }
  t.malformed += c.frames.slice(0, sent).filter((f) => f.fault).length;
  call.end();
  const s = await ended;
  t.maxLatencyMs = Math.max(t.maxLatencyMs, Date.now() - started);
  const framesSent = c.frames.slice(0, sent);
  const reject = received.find((m) => m.msg?.$case === "reject")?.msg;
  if (reject?.$case === "reject") t.count(t.rejects, RejectReason[reject.value.reason] ?? String(reject.value.reason));
  // The stream's own status: OK, or RESOURCE_EXHAUSTED for a frame over the cap.
  if (s.code !== status.OK) {
    const capped = framesSent.find((f) => f.overCap);
    if (!(s.code === status.RESOURCE_EXHAUSTED && capped)) t.fail(c, `the stream ended ${status[s.code]}: '${s.details.slice(0, 200)}'`);
    if (first.overCap) return;
  }
  if (first.overCap) {
    t.fail(c, "a first frame over the cap was not refused RESOURCE_EXHAUSTED", first);
    return;
  }
  if (answer?.$case === "welcome") {
    t.welcomed++;
    if (first.fault) t.fail(c, `welcomed a malformed Hello (${first.fault.field}: ${first.fault.reason})`, first);
    const hello = AgentMessage.decode(first.bytes).msg;
    if (hello?.$case === "hello") t.hosts.add(hello.value.hostId);
    // A later frame checkWire refuses (and nothing over the cap before it) must end the stream with a Reject.
    const bad = framesSent.slice(1).find((f) => f.fault || f.overCap);
    if (bad?.fault && !framesSent.slice(1, framesSent.indexOf(bad)).some((f) => f.overCap)) {
      if (reject?.$case !== "reject" || reject.value.reason !== RejectReason.REJECT_REASON_INVALID_MESSAGE) {
        t.fail(c, `a malformed later frame (${bad.fault.field}: ${bad.fault.reason}) got no Reject INVALID_MESSAGE (got ${JSON.stringify(reject?.value ?? null).slice(0, 200)})`, bad);
      }
    }
    if (reject?.$case === "reject" && reject.value.reason !== RejectReason.REJECT_REASON_INVALID_MESSAGE) t.fail(c, `a welcomed stream got Reject ${RejectReason[reject.value.reason]}`);
    return;
  }
  // Not welcomed: refused, so a Reject must say why.
  if (reject?.$case !== "reject" || received[0]?.msg?.$case !== "reject") {
    t.fail(c, `the stream was not welcomed and got no Reject first (got ${JSON.stringify(received.map((m) => m.msg?.$case))}, status ${status[s.code]})`, first);
    return;
  }
  if (first.fault) {
    const want = `${first.fault.field}: ${first.fault.reason}`;
    if (reject.value.reason !== RejectReason.REJECT_REASON_INVALID_HELLO || reject.value.message !== want) {
      t.fail(c, `a malformed first frame got Reject ${RejectReason[reject.value.reason]} '${reject.value.message.slice(0, 200)}', not INVALID_HELLO '${want}'`, first);
    }
  }
  if (reject.value.message.length > MAX_REJECT_MESSAGE) t.fail(c, `a Reject message of ${reject.value.message.length} characters`);
}

/**
 * Cases with a frame over this many bytes are sent after the others, two at a time on a connection
 * of their own: among 64 calls in flight on one event loop, a 3 MiB frame took over 20 s to arrive
 * (47 ms alone; 1.5 s beside 64 small calls) — past its deadline and an agent stream's 10 s Hello
 * timeout, which says nothing about how the controller answers it.
 */
const LARGE_FRAME = 64 * 1024;
const isLarge = (c: FuzzCase): boolean => (c.kind === "unary" ? c.bytes.length : Math.max(...c.frames.map((f) => f.bytes.length))) > LARGE_FRAME;

async function run(client: Client, t: Tally, cases: () => FuzzCase | undefined, concurrency = CONCURRENCY): Promise<void> {
  // What each worker is sending, for the progress line (a hang names its case).
  const current: ({ c: FuzzCase; since: number } | undefined)[] = [];
  const progress = setInterval(() => {
    const oldest = current.filter((x) => x !== undefined).sort((a, b) => a.since - b.since)[0];
    console.log(`fuzz: ${t.messages} messages so far${oldest ? `; oldest in flight ${Date.now() - oldest.since} ms: ${describeCase(oldest.c)}` : ""}`);
  }, 15_000);
  const worker = async (w: number): Promise<void> => {
    for (let c = cases(); c; c = cases()) {
      current[w] = { c, since: Date.now() };
      if (c.kind === "unary") await runUnary(client, t, c);
      else await runStream(client, t, c);
      current[w] = undefined;
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  } finally {
    clearInterval(progress);
  }
}

describe("fuzzing the controller with malformed and hostile messages", () => {
  it(`${COUNT} messages: typed refusals only, a Reject for every refused stream, no write but for accepted messages`, async () => {
    console.log(`fuzz: seed ${SEED}, ${COUNT} messages (replay: BERTH_FUZZ_SEED=${SEED} BERTH_FUZZ_COUNT=${COUNT})`);
    const store = new MemoryStore();
    const { controller, address } = await startController(cleanups, store, { tls: undefined, reportIntervalMs: 1_000 });
    await waitFor("leadership", () => controller.isLeader);
    // The client sends what it is given: up to twice the server's cap, so the cap is the server's.
    const options = { ...grpcClientOptions(), "grpc.max_send_message_length": 2 * Limits.maxMessageBytes, "grpc.use_local_subchannel_pool": 1 };
    const client = new Client(address, credentials.createInsecure(), options);
    const large = new Client(address, credentials.createInsecure(), options);
    cleanups.push(() => {
      client.close();
      large.close();
    });
    const started = Date.now();

    // 1. Malformed messages only: not one write.
    const warm = new Tally();
    const malformed = new FuzzGenerator(SEED ^ 0x5eed);
    const revisionBefore = store.revision;
    let left = MALFORMED_FIRST;
    await run(client, warm, () => {
      for (;;) {
        if (left <= 0) return undefined;
        const c = malformed.next();
        const bad = c.kind === "unary" ? c.fault !== undefined : c.frames[0]!.fault !== undefined;
        if (!bad) continue;
        left--;
        return c.kind === "unary" ? c : { ...c, frames: [c.frames[0]!] };
      }
    });
    expect(warm.failures, warm.failures.join("\n")).toEqual([]);
    expect(warm.welcomed + warm.acceptedWrites).toBe(0);
    expect(store.revision, "malformed messages moved the store's revision").toBe(revisionBefore);

    // 2. Everything: watch every key the run changes.
    const t = new Tally();
    const changed: { key: string; revision: number }[] = [];
    const from = store.revision;
    const watch = store.watch("/", from + 1, {
      onEvents: (events) => {
        for (const e of events) changed.push({ key: e.kv.key, revision: e.kv.modRevision });
      },
      onError: (e) => t.failures.push(`the store watch failed: ${e.message}`),
    });
    const gen = new FuzzGenerator(SEED);
    const later: FuzzCase[] = [];
    // Messages the large cases will send at most (a stream sends more than its first frame only once welcomed).
    let laterMessages = 0;
    await run(client, t, () => {
      for (;;) {
        if (t.messages + laterMessages >= COUNT && !ONLY) return undefined;
        const c = gen.next();
        if (ONLY) {
          if (c.index > Math.max(...ONLY)) return undefined;
          if (!ONLY.has(c.index)) continue;
        }
        if (!isLarge(c)) return c;
        later.push(c);
        laterMessages += c.kind === "unary" ? 1 : c.frames.length;
      }
    });
    const largeCases = later.length;
    const largeStarted = Date.now();
    await run(large, t, () => later.shift(), 2);
    const largeSeconds = (Date.now() - largeStarted) / 1000;
    const seconds = (Date.now() - started) / 1000;
    const total = warm.messages + t.messages;

    // Still alive, still leading, still answering.
    expect(controller.isLeader).toBe(true);
    const alive = await new Promise<ServiceError | null>((resolve) =>
      client.makeUnaryRequest("/berth.v1.ClusterService/GetCluster", raw, raw, Buffer.alloc(0), new Metadata(), { deadline: deadlineIn(DEADLINE_MS) }, (e) => resolve(e)),
    );
    expect(alive).toBeNull();
    // Let writes that accepted messages started (disconnects, status updates) land, then attribute every change.
    await new Promise((r) => setTimeout(r, 500));
    await watch.close();
    const owner = (key: string): boolean => {
      const [, kind, name] = /^\/berth\/v1\/([a-z]+)\/?(.*)$/.exec(key) ?? [];
      if (kind === "hosts") return t.hosts.has(name!);
      if (kind === "vms" || kind === "migrations") return t.vms.has(name!) || [...t.scaleGroups].some((g) => new RegExp(`^${g}-[0-9]+$`).test(name!));
      if (kind === "scalegroups") return t.scaleGroups.has(name!);
      if (kind === "groups") return t.groups.has(name!);
      if (kind === "images") return t.images.has(name!);
      if (kind === "volumes") return t.volumes.has(name!);
      if (kind === "config") return t.config;
      return kind === "leader";
    };
    const stray = changed.filter((c) => !owner(c.key));
    const delta = store.revision - from;

    console.log(
      `fuzz: ${total} messages in ${seconds.toFixed(1)} s (${Math.round(total / seconds)} messages/s): ` +
        `${warm.messages} malformed first, then ${t.malformed} more malformed among ${t.unary} unary calls and ${t.streams} agent streams (${t.welcomed} welcomed; ` +
        `${largeCases} cases with frames over ${LARGE_FRAME / 1024} KiB last, in ${largeSeconds.toFixed(1)} s); ` +
        `statuses ${JSON.stringify(Object.fromEntries(t.codes))}; rejects ${JSON.stringify(Object.fromEntries(t.rejects))}; ` +
        `${t.acceptedWrites} accepted writing calls + ${t.welcomed} welcomed streams vs a revision delta of ${delta} (${changed.length} keys changed, ` +
        `${t.vms.size} VMs, ${t.groups.size} groups, ${t.scaleGroups.size} scale groups, ${t.hosts.size} hosts, config ${t.config}); slowest answer ${t.maxLatencyMs} ms; seed ${SEED}`,
    );
    expect(t.failures, `seed ${SEED}:\n${t.failures.join("\n")}`).toEqual([]);
    expect(stray.slice(0, 10), `keys written that no accepted message made (seed ${SEED})`).toEqual([]);
    if (t.acceptedWrites + t.welcomed === 0) expect(delta).toBe(0);
    expect(changed.length).toBeGreaterThanOrEqual(delta > 0 ? 1 : 0);
  }, 175_000);
});
