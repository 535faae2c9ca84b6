/**
 * Fault injection for the fake hypervisor: a plan of failures, latencies, crashes, guests that
 * ignore shutdown, unavailability windows, per-VM load and kills of the driver's own process at
 * named points of a migration, set through the driver's `faults` API or, from another process,
 * through the control file `<stateDir>/fake-faults.json`.
 *
 * The API and the control file are two layers; a fault of either applies. The file layer is
 * replaced whole each time the file changes (its mtime, size or inode), checked at every driver
 * operation and on a slow timer; `clear()` clears the API layer only.
 */
import { readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { BerthError, ErrorCode, invalidArgument } from "@berth/core";
import type { HypervisorHealth } from "./driver.js";
import type { FakeClock, FakeTimer } from "./fake-clock.js";
import { validateLoadProfile, type LoadProfile } from "./fake-load.js";

/** Name of the control file inside the state directory. */
export const FAKE_FAULTS_FILE = "fake-faults.json";

/**
 * Where the control file's kills that have struck are recorded (`<stateDir>/fake-kills-done.json`),
 * so that the process restarted on the same directory, reading the same control file, is not
 * killed again at the same point.
 */
export const FAKE_KILLS_DONE_FILE = "fake-kills-done.json";

/**
 * Points of a migration where a `kill` fault kills the driver's process (see {@link KillRule}):
 * - `migrateOut:transfer` — source, during the transfer, once `fraction` × the memory to copy has
 *   been sent (default 0.5): nothing is committed, the domain runs on at the source.
 * - `migrateOut:before-commit` — source, at the switchover, after the handoff is written into the
 *   destination's directory and before the source's state file commits it: the handoff is
 *   tentative, the domain runs on at the source (a restarted source rolls the switchover back).
 * - `migrateOut:after-switchover` — source, right after the commit landed, before the call
 *   resolves: the domain has left the source (the destination's `finishIncoming` takes it on).
 * - `finishIncoming:before` — destination, as `finishIncoming` starts, before it changes anything.
 * - `finishIncoming:after` — destination, once the arrived domain is written RUNNING, before the
 *   call resolves (and before the handoff file is removed).
 */
export const FAKE_KILL_POINTS = [
  "migrateOut:transfer",
  "migrateOut:before-commit",
  "migrateOut:after-switchover",
  "finishIncoming:before",
  "finishIncoming:after",
] as const;
export type FakeKillPoint = (typeof FAKE_KILL_POINTS)[number];

/** Default of {@link KillRule.fraction}. */
export const DEFAULT_KILL_FRACTION = 0.5;

/**
 * Every driver operation a fault can target (`health`, `subscribe` and `close` never fail). The
 * image and volume operations carry no vmId (a rule with one never matches them); `setVolumes` and
 * `openConsole` carry the domain's. A `define` or `prepareIncoming` with an image calls
 * `ensureImage`, so its faults strike there too.
 */
export const FAULT_OPS = [
  "hostFacts",
  "list",
  "define",
  "start",
  "stop",
  "destroy",
  "undefine",
  "deleteVolumes",
  "delete",
  "setGeneration",
  "stats",
  "prepareIncoming",
  "migrateOut",
  "finishIncoming",
  "abortMigration",
  "listImages",
  "ensureImage",
  "listNetworks",
  "listVolumes",
  "createVolume",
  "deleteVolume",
  "setVolumes",
  "openConsole",
] as const;
export type FaultOp = (typeof FAULT_OPS)[number];

/** Fail the next `count` calls of `op` (on `vmId` only, if given) with `code`. */
export interface FailNextRule {
  op: FaultOp;
  /** ≥ 1; default 1. */
  count?: number;
  /** A Berth error code; default HYPERVISOR_UNAVAILABLE. */
  code?: ErrorCode;
  vmId?: string;
  message?: string;
}

/** Delay every call of `op` (any op if absent; on `vmId` only, if given) by `ms`. The largest matching delay applies. */
export interface LatencyRule {
  op?: FaultOp;
  ms: number;
  vmId?: string;
}

/** Kill the domain's process: a running or paused domain whose incarnation started before `atMs` becomes CRASHED. */
export interface CrashOrder {
  vmId: string;
  /** Clock time of the order; makes a file's order apply once (not again after a restart). Default: when written. */
  atMs?: number;
}

/**
 * Kill the driver's process (it dies abruptly, as with SIGKILL: nothing more is written) when a
 * call reaches `point` (one of {@link FAKE_KILL_POINTS}), on `vmId` only if given. Strikes once.
 */
export interface KillRule {
  point: FakeKillPoint;
  vmId?: string;
  /**
   * `migrateOut:transfer` only: strike once this fraction of the memory to copy has been sent
   * (> 1: during a later pass). Must be > 0.
   * @default 0.5
   */
  fraction?: number;
}

/** A kill rule as validated. */
export interface NormalizedKill {
  point: FakeKillPoint;
  vmId?: string;
  /** `migrateOut:transfer` only (default applied); absent for the other points. */
  fraction?: number;
}

/** The hypervisor stops answering, until `untilMs` (clock time) or for `forMs`, or until cleared. */
export interface UnavailableWindow {
  message?: string;
  forMs?: number;
  untilMs?: number;
}

/** The control file's content (and what {@link writeFakeFaults} takes). Every field is optional. */
export interface FakeFaultSpec {
  failNext?: FailNextRule[];
  latency?: LatencyRule[];
  crash?: (string | CrashOrder)[];
  ignoreShutdown?: string[];
  /** `true` or a window: unavailable; absent or `false`: available. */
  unavailable?: UnavailableWindow | boolean;
  /** Simulated load: a default for every VM and overrides per vmId. */
  load?: { default?: Partial<LoadProfile>; vms?: Record<string, Partial<LoadProfile>> };
  /** Kills of the driver's process at migration points; each strikes once (also across restarts). */
  kill?: KillRule[];
}

/** A spec as validated: windows and crash orders pinned to clock times. */
export interface NormalizedFaultSpec {
  failNext: NormalizedFailNext[];
  latency: LatencyRule[];
  crash: Required<CrashOrder>[];
  ignoreShutdown: string[];
  unavailable: { message: string; untilMs: number | undefined } | undefined;
  load: { default: Partial<LoadProfile> | undefined; vms: Record<string, Partial<LoadProfile>> };
  kill: NormalizedKill[];
}

export interface NormalizedFailNext {
  op: FaultOp;
  count: number;
  code: ErrorCode;
  vmId?: string;
  message?: string;
}

const DEFAULT_UNAVAILABLE_MESSAGE = "fake hypervisor made unavailable by fault injection";

/**
 * Validates a spec, pinning relative times to `nowMs` (`forMs` → `untilMs`, crash orders without
 * `atMs` → `nowMs`). Throws INVALID_ARGUMENT naming the field (`faults.failNext[0].op: ...`).
 */
export function validateFakeFaultSpec(raw: unknown, nowMs: number, field = "faults"): NormalizedFaultSpec {
  const r = object(raw, field);
  known(r, field, ["failNext", "latency", "crash", "ignoreShutdown", "unavailable", "load", "kill"]);
  const out: NormalizedFaultSpec = {
    failNext: list(r["failNext"], `${field}.failNext`).map((x, i) => validateFailNext(x, `${field}.failNext[${i}]`)),
    latency: list(r["latency"], `${field}.latency`).map((x, i) => validateLatency(x, `${field}.latency[${i}]`)),
    crash: list(r["crash"], `${field}.crash`).map((x, i) => {
      const f = `${field}.crash[${i}]`;
      if (typeof x === "string") return { vmId: vmIdOf(x, f), atMs: nowMs };
      const o = object(x, f);
      known(o, f, ["vmId", "atMs"]);
      return { vmId: vmIdOf(o["vmId"], `${f}.vmId`), atMs: o["atMs"] === undefined ? nowMs : finite(o["atMs"], `${f}.atMs`) };
    }),
    ignoreShutdown: list(r["ignoreShutdown"], `${field}.ignoreShutdown`).map((x, i) => vmIdOf(x, `${field}.ignoreShutdown[${i}]`)),
    unavailable: undefined,
    load: { default: undefined, vms: {} },
    kill: list(r["kill"], `${field}.kill`).map((x, i) => validateKill(x, `${field}.kill[${i}]`)),
  };
  const u = r["unavailable"];
  if (u === true) out.unavailable = { message: DEFAULT_UNAVAILABLE_MESSAGE, untilMs: undefined };
  else if (u !== undefined && u !== false) out.unavailable = validateWindow(u, nowMs, `${field}.unavailable`);
  if (r["load"] !== undefined) {
    const l = object(r["load"], `${field}.load`);
    known(l, `${field}.load`, ["default", "vms"]);
    if (l["default"] !== undefined) out.load.default = validateLoadProfile(l["default"], `${field}.load.default`);
    if (l["vms"] !== undefined) {
      const vms = object(l["vms"], `${field}.load.vms`);
      for (const [vmId, p] of Object.entries(vms)) out.load.vms[vmId] = validateLoadProfile(p, `${field}.load.vms.${vmId}`);
    }
  }
  return out;
}

/** Path of the control file for a state directory. */
export function fakeFaultsFile(stateDir: string): string {
  return path.join(path.resolve(stateDir), FAKE_FAULTS_FILE);
}

/**
 * Writes the control file of the fake hypervisor in `stateDir` atomically (temp file, rename),
 * replacing the whole file layer of the driver that runs there: `writeFakeFaults(dir, {})` clears
 * it. Meant for another process (an end-to-end test, an operator of `berth dev`). Validates first
 * (INVALID_ARGUMENT naming the field); relative times are pinned to `options.now` (default now),
 * so a driver that reads the file late does not stretch an unavailability window or crash twice.
 */
export function writeFakeFaults(stateDir: string, spec: FakeFaultSpec, options: { now?: number } = {}): void {
  const n = validateFakeFaultSpec(spec, options.now ?? Date.now());
  const file: FakeFaultSpec = {};
  if (n.failNext.length > 0) file.failNext = n.failNext;
  if (n.latency.length > 0) file.latency = n.latency;
  if (n.crash.length > 0) file.crash = n.crash;
  if (n.ignoreShutdown.length > 0) file.ignoreShutdown = n.ignoreShutdown;
  if (n.unavailable) {
    file.unavailable = { message: n.unavailable.message, ...(n.unavailable.untilMs === undefined ? {} : { untilMs: n.unavailable.untilMs }) };
  }
  if (n.load.default || Object.keys(n.load.vms).length > 0) {
    file.load = { ...(n.load.default ? { default: n.load.default } : {}), vms: n.load.vms };
  }
  if (n.kill.length > 0) file.kill = n.kill;
  const target = fakeFaultsFile(stateDir);
  const temp = `${target}.${process.pid}.${++writeSeq}.tmp`;
  try {
    writeFileSync(temp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o644 });
    renameSync(temp, target);
  } catch (e) {
    try {
      unlinkSync(temp);
    } catch {
      // never written
    }
    throw e;
  }
}

let writeSeq = 0;

/** What the plan asks of its driver. */
export interface FaultPlanHooks {
  /** Kill the domain's process (if it runs, and, with `atMs`, if it started before then). */
  crash(vmId: string, atMs: number | undefined): Promise<void>;
  /** The effective load is about to change: account for the past under the old one. */
  beforeLoadChange(): void;
  /** Availability changed. */
  healthChanged(health: HypervisorHealth): void;
  /** The control file was refused (it is ignored; the previous file layer stays in force). */
  controlFileRefused?(message: string): void;
}

interface Layer {
  failNext: NormalizedFailNext[];
  latency: LatencyRule[];
  ignoreShutdown: Set<string>;
  unavailable: { message: string; untilMs: number | undefined } | undefined;
  /** The control file's only. */
  load: { default: Partial<LoadProfile> | undefined; vms: Map<string, Partial<LoadProfile>> };
  /** `key`: the control file's rules only, what records them in the kills-done file. */
  kill: { rule: NormalizedKill; key?: string }[];
}

function emptyLayer(): Layer {
  return { failNext: [], latency: [], ignoreShutdown: new Set(), unavailable: undefined, load: { default: undefined, vms: new Map() }, kill: [] };
}

/**
 * The faults in force on one fake driver (its `faults` property). The mutating methods are the
 * API layer; the control file is the other layer.
 */
export class FaultPlan {
  /** Why the control file was last refused (it is then ignored, the previous file layer staying in force). */
  controlFileError: string | undefined;

  private api = emptyLayer();
  private file = emptyLayer();
  private fileKey = "absent";
  /** The control file; undefined for an in-memory driver, which has none (the API layer only). */
  private readonly file_: string | undefined;
  private readonly killsDoneFile: string;
  private lastHealth: HypervisorHealth = { available: true, message: "" };
  private windowTimers: FakeTimer[] = [];
  private pollTimer: FakeTimer | undefined;
  private stopped = false;

  /** @param stateDir where the control file is; undefined: none (an in-memory driver), nothing is read or polled. */
  constructor(
    stateDir: string | undefined,
    private readonly clock: FakeClock,
    private readonly hooks: FaultPlanHooks,
    private readonly pollMs: number,
  ) {
    this.file_ = stateDir === undefined ? undefined : fakeFaultsFile(stateDir);
    this.killsDoneFile = stateDir === undefined ? "" : path.join(path.resolve(stateDir), FAKE_KILLS_DONE_FILE);
  }

  // ---- the API layer ---------------------------------------------------------------------------

  /** The next `count` calls of `op` (on `vmId`, if given) fail with `code` (default HYPERVISOR_UNAVAILABLE). */
  failNext(rule: FailNextRule): void {
    this.api.failNext.push(validateFailNext(rule, "failNext"));
  }

  /** Every matching call waits `ms` first (migrateOut: past its `timeoutMs`, it fails with DEADLINE_EXCEEDED). */
  addLatency(rule: LatencyRule): void {
    this.api.latency.push(validateLatency(rule, "latency"));
  }

  /** Kills the domain's process now: RUNNING or PAUSED → CRASHED, with a "crashed" event. Works while unavailable. */
  async crash(vmId: string): Promise<void> {
    await this.hooks.crash(vmIdOf(vmId, "vmId"), undefined);
  }

  /** The guest ignores graceful shutdown: a graceful stop waits its whole timeout, then powers off. */
  ignoreShutdown(vmId: string, ignore = true): void {
    if (ignore) this.api.ignoreShutdown.add(vmIdOf(vmId, "vmId"));
    else this.api.ignoreShutdown.delete(vmId);
  }

  /** Every operation rejects with HYPERVISOR_UNAVAILABLE, for `forMs` or until {@link makeAvailable}. Domains keep running. */
  makeUnavailable(window: { forMs?: number; message?: string } = {}): void {
    this.api.unavailable = validateWindow(window, this.clock.now(), "unavailable");
    this.armWindowTimers();
    this.refreshHealth();
  }

  /** Ends the API layer's unavailability (the control file's, if any, stays). */
  makeAvailable(): void {
    this.api.unavailable = undefined;
    this.armWindowTimers();
    this.refreshHealth();
  }

  /** The driver's process dies (the driver's `onKill`) when a call reaches `rule.point`; once. */
  killAt(rule: KillRule): void {
    this.api.kill.push({ rule: validateKill(rule, "kill") });
  }

  /** Clears the API layer: failures, latencies, ignored shutdowns, unavailability, kills. */
  clear(): void {
    this.api = emptyLayer();
    this.armWindowTimers();
    this.refreshHealth();
  }

  // ---- what the driver asks ----------------------------------------------------------------------

  /** Starts the slow poll of the control file, after reading it once. */
  start(): void {
    this.poll();
    if (this.file_ === undefined) return;
    const tick = (): void => {
      if (this.stopped) return;
      this.poll();
      this.pollTimer = this.clock.setTimer(tick, this.pollMs, { background: true });
    };
    this.pollTimer = this.clock.setTimer(tick, this.pollMs, { background: true });
  }

  /** Stops the timers. */
  stop(): void {
    this.stopped = true;
    this.pollTimer?.cancel();
    for (const t of this.windowTimers) t.cancel();
    this.windowTimers = [];
  }

  /** Re-reads the control file if it changed (one stat otherwise) and re-evaluates availability. */
  poll(): void {
    this.checkFile();
    this.refreshHealth();
  }

  health(): HypervisorHealth {
    return { ...this.currentHealth() };
  }

  /** The delay to apply to a call. */
  latencyFor(op: FaultOp, vmId: string | undefined): number {
    let ms = 0;
    for (const rule of [...this.api.latency, ...this.file.latency]) {
      if ((rule.op === undefined || rule.op === op) && (rule.vmId === undefined || rule.vmId === vmId)) ms = Math.max(ms, rule.ms);
    }
    return ms;
  }

  /** Throws what the call must fail with (unavailability, then a pending failure, which it consumes). */
  check(op: FaultOp, vmId: string | undefined): void {
    const h = this.currentHealth();
    if (!h.available) throw new BerthError(ErrorCode.HypervisorUnavailable, h.message);
    for (const layer of [this.api, this.file]) {
      const i = layer.failNext.findIndex((r) => r.op === op && (r.vmId === undefined || r.vmId === vmId));
      if (i < 0) continue;
      const rule = layer.failNext[i]!;
      rule.count -= 1;
      if (rule.count <= 0) layer.failNext.splice(i, 1);
      throw new BerthError(rule.code, rule.message ?? `fake hypervisor: injected ${rule.code} on ${op}${vmId ? ` of ${vmId}` : ""}`);
    }
  }

  /** The first kill rule armed at `point` for `vmId`, without consuming it. */
  pendingKill(point: FakeKillPoint, vmId: string): NormalizedKill | undefined {
    return this.findKill(point, vmId)?.entry.rule;
  }

  /**
   * Consumes the first kill rule armed at `point` for `vmId`, and says whether there was one. A
   * control file's rule is first recorded, durably, in the kills-done file: the restarted process
   * reading the same control file must not die again at the same point.
   */
  takeKill(point: FakeKillPoint, vmId: string): boolean {
    const found = this.findKill(point, vmId);
    if (!found) return false;
    found.layer.kill.splice(found.layer.kill.indexOf(found.entry), 1);
    if (found.entry.key !== undefined) {
      const done = [...this.readKillsDone(), found.entry.key];
      const temp = `${this.killsDoneFile}.${process.pid}.${++writeSeq}.tmp`;
      // No fsync: what must survive is the kill of this process, and the kernel keeps the write.
      writeFileSync(temp, `${JSON.stringify(done)}\n`, { mode: 0o644 });
      renameSync(temp, this.killsDoneFile);
    }
    return true;
  }

  ignoresShutdown(vmId: string): boolean {
    return this.api.ignoreShutdown.has(vmId) || this.file.ignoreShutdown.has(vmId);
  }

  /** The control file's load for a VM: its per-VM entry over its default (either may be empty). */
  fileLoad(vmId: string): { default: Partial<LoadProfile> | undefined; vm: Partial<LoadProfile> | undefined } {
    return { default: this.file.load.default, vm: this.file.load.vms.get(vmId) };
  }

  // ---- internals -------------------------------------------------------------------------------

  private findKill(point: FakeKillPoint, vmId: string): { layer: Layer; entry: Layer["kill"][number] } | undefined {
    for (const layer of [this.api, this.file]) {
      const entry = layer.kill.find((k) => k.rule.point === point && (k.rule.vmId === undefined || k.rule.vmId === vmId));
      if (entry) return { layer, entry };
    }
    return undefined;
  }

  private readKillsDone(): string[] {
    try {
      const raw: unknown = JSON.parse(readFileSync(this.killsDoneFile, "utf8"));
      return Array.isArray(raw) ? raw.filter((k): k is string => typeof k === "string") : [];
    } catch {
      // Missing (no kill has struck) or unreadable: nothing recorded.
      return [];
    }
  }

  private currentHealth(): HypervisorHealth {
    const now = this.clock.now();
    for (const w of [this.api.unavailable, this.file.unavailable]) {
      if (w && (w.untilMs === undefined || now < w.untilMs)) return { available: false, message: w.message };
    }
    return { available: true, message: "" };
  }

  private refreshHealth(): void {
    const h = this.currentHealth();
    if (h.available === this.lastHealth.available && h.message === this.lastHealth.message) return;
    this.lastHealth = h;
    this.hooks.healthChanged({ ...h });
  }

  /** A timer at the end of each window, so availability returns on time. */
  private armWindowTimers(): void {
    for (const t of this.windowTimers) t.cancel();
    this.windowTimers = [];
    if (this.stopped) return;
    const now = this.clock.now();
    for (const w of [this.api.unavailable, this.file.unavailable]) {
      if (w?.untilMs !== undefined && w.untilMs > now) {
        this.windowTimers.push(this.clock.setTimer(() => this.poll(), w.untilMs - now, { background: true }));
      }
    }
  }

  private checkFile(): void {
    if (this.file_ === undefined) return;
    let key: string;
    let mtimeMs = 0;
    try {
      const st = statSync(this.file_);
      key = `${st.ino}:${st.mtimeMs}:${st.size}`;
      mtimeMs = st.mtimeMs;
    } catch {
      key = "absent";
    }
    if (key === this.fileKey) return;
    this.fileKey = key;
    let spec: NormalizedFaultSpec | undefined;
    if (key !== "absent") {
      try {
        spec = validateFakeFaultSpec(JSON.parse(readFileSync(this.file_, "utf8")), Math.round(mtimeMs), "fake-faults.json");
      } catch (e) {
        this.controlFileError = e instanceof Error ? e.message : String(e);
        this.hooks.controlFileRefused?.(this.controlFileError);
        return;
      }
    }
    this.controlFileError = undefined;
    this.hooks.beforeLoadChange();
    this.file = emptyLayer();
    if (spec) {
      this.file.failNext = spec.failNext;
      this.file.latency = spec.latency;
      this.file.ignoreShutdown = new Set(spec.ignoreShutdown);
      this.file.unavailable = spec.unavailable;
      this.file.load = { default: spec.load.default, vms: new Map(Object.entries(spec.load.vms)) };
      for (const c of spec.crash) void this.hooks.crash(c.vmId, c.atMs).catch(() => undefined);
      // A rule is known by the file's identity and its place in it: one that has struck (before a
      // restart) stays done while the file is unchanged; a rewritten file arms its rules afresh.
      const done = new Set(this.readKillsDone());
      this.file.kill = spec.kill.map((rule, i) => ({ rule, key: `${key}#${i}` })).filter((k) => !done.has(k.key));
    }
    this.armWindowTimers();
  }
}

// ---- validation --------------------------------------------------------------------------------

function validateFailNext(raw: unknown, field: string): NormalizedFailNext {
  const r = object(raw, field);
  known(r, field, ["op", "count", "code", "vmId", "message"]);
  const count = r["count"] === undefined ? 1 : r["count"];
  if (typeof count !== "number" || !Number.isSafeInteger(count) || count < 1) {
    throw invalidArgument(`${field}.count`, `must be a whole number ≥ 1 (got ${String(count)})`);
  }
  const code = r["code"] === undefined ? ErrorCode.HypervisorUnavailable : r["code"];
  if (!(Object.values(ErrorCode) as unknown[]).includes(code)) {
    throw invalidArgument(`${field}.code`, `must be a Berth error code, e.g. HYPERVISOR_UNAVAILABLE (got ${JSON.stringify(code)})`);
  }
  const out: NormalizedFailNext = { op: opOf(r["op"], `${field}.op`), count, code: code as ErrorCode };
  if (r["vmId"] !== undefined) out.vmId = vmIdOf(r["vmId"], `${field}.vmId`);
  if (r["message"] !== undefined) {
    if (typeof r["message"] !== "string") throw invalidArgument(`${field}.message`, "must be a string");
    out.message = r["message"];
  }
  return out;
}

function validateKill(raw: unknown, field: string): NormalizedKill {
  const r = object(raw, field);
  known(r, field, ["point", "vmId", "fraction"]);
  const point = r["point"];
  if (!(FAKE_KILL_POINTS as readonly unknown[]).includes(point)) {
    throw invalidArgument(`${field}.point`, `must be a kill point (${FAKE_KILL_POINTS.join(", ")}; got ${JSON.stringify(point)})`);
  }
  const fraction = r["fraction"] === undefined ? DEFAULT_KILL_FRACTION : finite(r["fraction"], `${field}.fraction`);
  if (!(fraction > 0)) throw invalidArgument(`${field}.fraction`, `must be > 0 (got ${fraction})`);
  if (r["fraction"] !== undefined && point !== "migrateOut:transfer") {
    throw invalidArgument(`${field}.fraction`, `applies to migrateOut:transfer only (point is ${String(point)})`);
  }
  const out: NormalizedKill = { point: point as FakeKillPoint, ...(point === "migrateOut:transfer" ? { fraction } : {}) };
  if (r["vmId"] !== undefined) out.vmId = vmIdOf(r["vmId"], `${field}.vmId`);
  return out;
}

function validateLatency(raw: unknown, field: string): LatencyRule {
  const r = object(raw, field);
  known(r, field, ["op", "ms", "vmId"]);
  const ms = r["ms"];
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) throw invalidArgument(`${field}.ms`, `must be a number ≥ 0 (got ${String(ms)})`);
  const out: LatencyRule = { ms };
  if (r["op"] !== undefined) out.op = opOf(r["op"], `${field}.op`);
  if (r["vmId"] !== undefined) out.vmId = vmIdOf(r["vmId"], `${field}.vmId`);
  return out;
}

function validateWindow(raw: unknown, nowMs: number, field: string): { message: string; untilMs: number | undefined } {
  const r = object(raw, field);
  known(r, field, ["message", "forMs", "untilMs"]);
  const message = r["message"] === undefined ? DEFAULT_UNAVAILABLE_MESSAGE : r["message"];
  if (typeof message !== "string" || message === "") throw invalidArgument(`${field}.message`, "must be a non-empty string");
  if (r["forMs"] !== undefined && r["untilMs"] !== undefined) throw invalidArgument(`${field}.forMs`, "give forMs or untilMs, not both");
  let untilMs: number | undefined;
  if (r["forMs"] !== undefined) {
    const forMs = finite(r["forMs"], `${field}.forMs`);
    if (forMs < 0) throw invalidArgument(`${field}.forMs`, `must be ≥ 0 (got ${forMs})`);
    untilMs = nowMs + forMs;
  } else if (r["untilMs"] !== undefined) {
    untilMs = finite(r["untilMs"], `${field}.untilMs`);
  }
  return { message, untilMs };
}

function object(raw: unknown, field: string): Record<string, unknown> {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw invalidArgument(field, "must be an object");
  return raw as Record<string, unknown>;
}

function list(raw: unknown, field: string): unknown[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) throw invalidArgument(field, "must be a list");
  return raw;
}

function known(r: Record<string, unknown>, field: string, keys: readonly string[]): void {
  for (const k of Object.keys(r)) {
    if (!keys.includes(k)) throw invalidArgument(`${field}.${k}`, `unknown field (known: ${keys.join(", ")})`);
  }
}

function finite(v: unknown, field: string): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw invalidArgument(field, `must be a finite number (got ${String(v)})`);
  return v;
}

function opOf(v: unknown, field: string): FaultOp {
  if (!(FAULT_OPS as readonly unknown[]).includes(v)) {
    throw invalidArgument(field, `must be a driver operation (${FAULT_OPS.join(", ")}; got ${JSON.stringify(v)})`);
  }
  return v as FaultOp;
}

function vmIdOf(v: unknown, field: string): string {
  if (typeof v !== "string" || v === "") throw invalidArgument(field, "must be a vmId (a non-empty string)");
  return v;
}
