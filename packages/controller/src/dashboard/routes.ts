/**
 * The controller's web dashboard on its admin HTTP port: the page and its static files, a JSON
 * snapshot, a server-sent event stream of changes, the VM and scale group pages' data, and the admin actions.
 * Everything is read from this controller's cache (ClusterState, the agent sessions, EventLog) —
 * nothing here reads etcd but the leader's address. The actions call the same code as the gRPC
 * handlers (operator-actions.ts); only an admin's verified client certificate may use them.
 */
import { readFileSync } from "node:fs";
import type { ServerResponse } from "node:http";
import { fileURLToPath } from "node:url";
import { DrainDeadlineAction, type Host, type Resources, type ScaleGroup, type ScaleGroupInfo } from "@berth/api";
import { BerthError, ErrorCode, httpStatusOf, invalidArgument, notFound, validateName, type AdminRequest, type AdminRoute } from "@berth/core";
import type { ResolvedSchedulerOptions, HostSnapshot } from "@berth/scheduler";
import type { LeadingDeps } from "../agent-service.js";
import type { AgentSession } from "../agent-session.js";
import type { ClusterState, StateChange } from "../cluster-state.js";
import type { EventLog } from "../event-log.js";
import { hostView, type LiveHost } from "../host-view.js";
import { cordonHost, drainHost, migrateVm, uncordonHost } from "../operator-actions.js";
import { scaleGroupInfo } from "../scale-group-manager.js";
import { SCALE_GROUP_LABEL } from "../scale-groups.js";
import {
  FEED_LENGTH,
  byKey,
  eventRow,
  hostRow,
  migrationRow,
  scaleGroupDetail,
  scaleGroupRow,
  snapshotOf,
  vmDetail,
  vmRow,
  type DashboardChanges,
  type DashboardSnapshot,
  type HostInput,
  type HostRow,
  type LeaderStatus,
  type ScaleGroupDetail,
} from "./view.js";
import type { ClusterEvent } from "@berth/api";

/** What the dashboard reads. Followers serve it too (from their own cache); only the leader acts. */
export interface DashboardDeps {
  state: ClusterState;
  events: EventLog;
  /** The scheduler's view of a host and the cluster's options (hostView reads what is allocatable there from them). */
  placer: { snapshotOf(hostId: string): HostSnapshot | undefined; options(): ResolvedSchedulerOptions };
  /** What a host's live agent stream last said. */
  liveHost(hostId: string): LiveHost | undefined;
  /**
   * The agent sessions: their per-VM measured use gives a scale group's warm members and CPU now
   * (scaleGroupInfo, as ListScaleGroups reads them). Absent: no member reads as warm, and the
   * group's CPU as not measured.
   */
  sessions?: ReadonlyMap<string, AgentSession>;
  /** What this controller holds while it leads; undefined on a follower. */
  leading(): LeadingDeps | undefined;
  /** The leader's advertised address ("" when none is known). */
  leaderAddress(): Promise<string>;
  controllerId: string;
  log?: { info(o: object, m: string): void; warn(o: object, m: string): void };
  /** @default Date.now */
  now?: () => number;
  /** Overrides of the stream's timers, for tests. */
  stream?: Partial<StreamTiming>;
}

/** The stream's timers and bounds. */
export interface StreamTiming {
  /** Changes are sent at most this often (a burst becomes one message). @default 250 */
  flushMs: number;
  /** A comment line this often keeps proxies and the browser from timing the stream out. @default 15000 */
  heartbeatMs: number;
  /** How often the live figures (hosts' usage, hypervisor, drain; scale groups' warm members and CPU) are compared with what was sent. @default 2000 */
  refreshMs: number;
  /** A client with more than this many bytes unsent is cut off (its browser reconnects and takes a fresh snapshot). @default 8 MiB */
  maxBacklogBytes: number;
}

const DEFAULT_TIMING: StreamTiming = { flushMs: 250, heartbeatMs: 15_000, refreshMs: 2_000, maxBacklogBytes: 8 * 1024 * 1024 };

/** The header every action must carry: a cross-site form or image cannot set it (CSRF). */
export const ACTION_HEADER = "x-berth-action";

/** Where the page and its script and style live: beside the package's dist and src alike (two levels up from this module). */
const ASSETS_DIR = fileURLToPath(new URL("../../dashboard-assets/", import.meta.url));

/** The files served, and their types: nothing else under the folder is reachable. */
const ASSETS: Readonly<Record<string, string>> = {
  "index.html": "text/html; charset=utf-8",
  "app.js": "text/javascript; charset=utf-8",
  "app.css": "text/css; charset=utf-8",
};

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(text), "Cache-Control": "no-store" });
  res.end(text);
}

function sendError(res: ServerResponse, e: unknown, log: DashboardDeps["log"]): void {
  if (!(e instanceof BerthError)) throw e; // admin-http answers 500 and logs it
  const status = httpStatusOf(e);
  if (status >= 500 && e.code === ErrorCode.Internal) log?.warn({ err: e }, "dashboard action failed");
  sendJson(res, status, { error: e.message, code: e.code, ...(e.leader !== undefined ? { leader: e.leader } : {}) });
}

/** Loads an asset once (the package's files do not change while it runs). */
function assetReader(): (name: string) => Buffer {
  const cache = new Map<string, Buffer>();
  return (name) => {
    let body = cache.get(name);
    if (!body) {
      body = readFileSync(`${ASSETS_DIR}${name}`);
      cache.set(name, body);
    }
    return body;
  };
}

const ZERO: Resources = { vcpus: 0, memoryMib: 0, diskGib: 0 };

/** The view model's input for one host, from the cache and the live sessions (hostView: the host as ListHosts answers it, allocatable included). */
function hostInputOf(deps: DashboardDeps, host: Host): HostInput {
  const view = hostView(deps, host);
  return {
    host: view,
    allocatable: view.allocatable ?? ZERO,
    vms: deps.state.vmsOnHost(host.id),
    incoming: deps.state.incomingVms(host.id),
  };
}

const NO_SESSIONS: ReadonlyMap<string, AgentSession> = new Map();

/** A scale group as ListScaleGroups answers it: its record and live figures (the last member-create error is the leader's alone). */
function scaleGroupInfoOf(deps: DashboardDeps, group: ScaleGroup): ScaleGroupInfo {
  return scaleGroupInfo(deps.state, deps.sessions ?? NO_SESSIONS, group, (deps.now ?? Date.now)(), deps.leading()?.scaleGroups.lastError(group.name) ?? "");
}

async function leaderStatusOf(deps: DashboardDeps): Promise<LeaderStatus> {
  const leading = deps.leading() !== undefined;
  return { controllerId: deps.controllerId, leading, leaderAddress: await deps.leaderAddress().catch(() => "") };
}

/** The whole page's data now (synchronous but for the leader status, which the caller reads first). */
function snapshotNow(deps: DashboardDeps, leader: LeaderStatus): DashboardSnapshot {
  return snapshotOf({
    nowMs: (deps.now ?? Date.now)(),
    leader,
    hosts: deps.state.allHosts().map((h) => hostInputOf(deps, h)),
    vms: deps.state.allVms(),
    migrations: deps.state.allMigrations(),
    scaleGroups: deps.state.allScaleGroups().map((g) => scaleGroupInfoOf(deps, g)),
    events: deps.events.recent(),
  });
}

interface StreamClient {
  res: ServerResponse;
}

/**
 * One per set of routes: subscribes to the cache and the event log while any stream is open,
 * coalesces what changed into one message per {@link StreamTiming.flushMs}, computes it once and
 * writes it to every client. A client that falls {@link StreamTiming.maxBacklogBytes} behind is
 * cut off rather than buffered without bound (EventSource reconnects; it starts from a snapshot).
 */
class StreamHub {
  private readonly clients = new Set<StreamClient>();
  private readonly timing: StreamTiming;
  private readonly dirtyHosts = new Set<string>();
  private readonly dirtyVms = new Set<string>();
  private readonly dirtyMigrations = new Set<string>();
  private readonly dirtyScaleGroups = new Set<string>();
  private newEvents: ClusterEvent[] = [];
  /** What was last sent of each host row (JSON), so the live refresh sends only rows that changed. */
  private readonly sentHosts = new Map<string, string>();
  /** The same for scale group rows (their warm members and CPU come from the sessions and the clock, not records). */
  private readonly sentScaleGroups = new Map<string, string>();
  private lastLeading: boolean | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private timers: NodeJS.Timeout[] = [];
  private unsubscribe: (() => void)[] = [];

  constructor(private readonly deps: DashboardDeps) {
    this.timing = { ...DEFAULT_TIMING, ...deps.stream };
  }

  /** Opens a stream on `res`: headers, the snapshot, then changes until either side closes. */
  async open(res: ServerResponse): Promise<void> {
    const leader = await leaderStatusOf(this.deps);
    if (res.destroyed) return;
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-store",
      Connection: "keep-alive",
      "X-Accel-Buffering": "no",
    });
    if (this.clients.size === 0) this.start();
    // What changed before this client joined goes to the others now, so everything after its
    // snapshot — and nothing before — reaches it as changes.
    this.flush();
    const client: StreamClient = { res };
    this.clients.add(client);
    this.lastLeading = leader.leading;
    const snapshot = snapshotNow(this.deps, leader);
    for (const h of snapshot.hosts) this.sentHosts.set(h.id, JSON.stringify(h));
    for (const g of snapshot.scaleGroups) this.sentScaleGroups.set(g.name, JSON.stringify(g));
    // retry: how long EventSource waits before reconnecting after the stream drops.
    this.write(client, `retry: 2000\nevent: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n`);
    const done = (): void => {
      if (!this.clients.delete(client)) return;
      if (this.clients.size === 0) this.stop();
    };
    // The response's close: the client went away, the server closed, or the backlog cut it off.
    res.on("close", done);
  }

  private start(): void {
    const { state, events } = this.deps;
    this.unsubscribe = [state.subscribe((c) => this.onChange(c)), events.subscribe((e) => this.onEvent(e))];
    this.timers = [
      setInterval(() => this.heartbeat(), this.timing.heartbeatMs),
      setInterval(() => this.refresh(), this.timing.refreshMs),
    ];
    for (const t of this.timers) t.unref();
  }

  private stop(): void {
    for (const u of this.unsubscribe) u();
    this.unsubscribe = [];
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.dirtyHosts.clear();
    this.dirtyVms.clear();
    this.dirtyMigrations.clear();
    this.dirtyScaleGroups.clear();
    this.newEvents = [];
    this.sentHosts.clear();
    this.sentScaleGroups.clear();
  }

  private onChange(c: StateChange): void {
    if (c.kind === "host") this.dirtyHosts.add(c.host.id);
    else if (c.kind === "vm") {
      this.dirtyVms.add(c.vm.spec?.name ?? c.vm.id);
      this.dirtyHosts.add(c.vm.hostId);
      if (c.previous) this.dirtyHosts.add(c.previous.hostId);
      // A member's phase is its group's running (and creating, removing) count.
      const group = c.vm.spec?.labels[SCALE_GROUP_LABEL] ?? c.previous?.spec?.labels[SCALE_GROUP_LABEL];
      if (group) this.dirtyScaleGroups.add(group);
    } else if (c.kind === "scalegroup") {
      this.dirtyScaleGroups.add(c.scaleGroup.name);
    } else if (c.kind === "volume") {
      // A bound volume counts in its host's disk.
      if (c.volume.hostId) this.dirtyHosts.add(c.volume.hostId);
      if (c.previous?.hostId) this.dirtyHosts.add(c.previous.hostId);
    } else if (c.kind === "migration") {
      this.dirtyMigrations.add(c.migration.vmName);
      // Its VM's phase, and both hosts' bars (a VM in flight counts on its target too).
      this.dirtyVms.add(c.migration.vmName);
      this.dirtyHosts.add(c.migration.sourceHost);
      if (c.migration.targetHost) this.dirtyHosts.add(c.migration.targetHost);
      if (c.previous?.targetHost) this.dirtyHosts.add(c.previous.targetHost);
    }
    this.schedule();
  }

  private onEvent(e: ClusterEvent): void {
    this.newEvents.push(e);
    // Bounded: a client shows at most the feed's length anyway.
    if (this.newEvents.length > FEED_LENGTH) this.newEvents = this.newEvents.slice(-FEED_LENGTH);
    this.schedule();
  }

  private schedule(): void {
    if (this.flushTimer || this.clients.size === 0) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      this.flush();
    }, this.timing.flushMs);
    this.flushTimer.unref();
  }

  /**
   * The live figures (usage, hypervisor, drain counts; a scale group's warm members and CPU) come
   * from agent sessions and the clock, not records: compare every host and scale group row with
   * what was sent.
   */
  private refresh(): void {
    let changed = false;
    for (const host of this.deps.state.allHosts()) {
      const json = JSON.stringify(hostRow(hostInputOf(this.deps, host)));
      if (this.sentHosts.get(host.id) !== json) {
        this.dirtyHosts.add(host.id);
        changed = true;
      }
    }
    for (const group of this.deps.state.allScaleGroups()) {
      const json = JSON.stringify(scaleGroupRow(scaleGroupInfoOf(this.deps, group)));
      if (this.sentScaleGroups.get(group.name) !== json) {
        this.dirtyScaleGroups.add(group.name);
        changed = true;
      }
    }
    const leading = this.deps.leading() !== undefined;
    if (leading !== this.lastLeading) {
      this.lastLeading = leading;
      void leaderStatusOf(this.deps).then((leader) => this.broadcast({ ...emptyChanges(), leader }));
    }
    if (changed) this.schedule();
  }

  private heartbeat(): void {
    for (const c of this.clients) this.write(c, `: keepalive ${(this.deps.now ?? Date.now)()}\n\n`);
  }

  /** Sends what changed since the last flush to every client (nothing when nothing did). */
  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.dirtyHosts.size + this.dirtyVms.size + this.dirtyMigrations.size + this.dirtyScaleGroups.size + this.newEvents.length === 0) return;
    const { state } = this.deps;
    const changes = emptyChanges();
    for (const id of this.dirtyHosts) {
      if (id === "") continue;
      const host = state.host(id);
      if (!host) {
        if (this.sentHosts.delete(id)) changes.hostsDeleted.push(id);
        continue;
      }
      const row = hostRow(hostInputOf(this.deps, host));
      this.sentHosts.set(id, JSON.stringify(row));
      changes.hosts.push(row);
    }
    for (const name of this.dirtyVms) {
      const vm = state.vm(name);
      if (vm) changes.vms.push(vmRow(vm));
      else changes.vmsDeleted.push(name);
    }
    for (const name of this.dirtyMigrations) {
      const m = state.migration(name);
      if (m) changes.migrations.push(migrationRow(m));
      else changes.migrationsDeleted.push(name);
    }
    for (const name of this.dirtyScaleGroups) {
      const group = state.scaleGroup(name);
      if (!group) {
        // A label naming a group that never existed (or one already told gone) sends nothing.
        if (this.sentScaleGroups.delete(name)) changes.scaleGroupsDeleted.push(name);
        continue;
      }
      const row = scaleGroupRow(scaleGroupInfoOf(this.deps, group));
      this.sentScaleGroups.set(name, JSON.stringify(row));
      changes.scaleGroups.push(row);
    }
    changes.events = this.newEvents.reverse().map(eventRow);
    byKey<HostRow>(changes.hosts);
    this.dirtyHosts.clear();
    this.dirtyVms.clear();
    this.dirtyMigrations.clear();
    this.dirtyScaleGroups.clear();
    this.newEvents = [];
    this.broadcast(changes);
  }

  private broadcast(changes: DashboardChanges): void {
    if (this.clients.size === 0) return;
    const message = `event: changes\ndata: ${JSON.stringify(changes)}\n\n`;
    for (const c of this.clients) this.write(c, message);
  }

  private write(client: StreamClient, text: string): void {
    const { res } = client;
    if (res.destroyed || res.writableEnded) return;
    res.write(text);
    if (res.writableLength > this.timing.maxBacklogBytes) {
      this.deps.log?.warn({ unsentBytes: res.writableLength }, "dashboard stream client fell too far behind; cut off (it reconnects from a snapshot)");
      this.clients.delete(client);
      if (this.clients.size === 0) this.stop();
      res.destroy();
    }
  }
}

function emptyChanges(): DashboardChanges {
  return { hosts: [], hostsDeleted: [], vms: [], vmsDeleted: [], migrations: [], migrationsDeleted: [], scaleGroups: [], scaleGroupsDeleted: [], events: [] };
}

/** Who the request is, and whether it may act. */
export interface WhoAmI {
  role: string | null;
  name: string | null;
  secure: boolean;
  canAct: boolean;
  /** Why not, and how to (empty when it can). */
  hint: string;
}

function whoAmI(req: AdminRequest): WhoAmI {
  const id = req.identity;
  const canAct = req.secure && id?.role === "admin";
  let hint = "";
  if (!req.secure) hint = "read-only: the admin port serves plain HTTP; serve it with --admin-tls and present an admin client certificate to act";
  else if (!id) hint = "read-only: no client certificate of the cluster's CA was presented; present an admin certificate (berth certs issue operator NAME --role admin) to act";
  else if (id.role !== "admin") hint = `read-only: a ${id.role} certificate may look, not act; present an admin certificate (berth certs issue operator NAME --role admin) to act`;
  return { role: id?.role ?? null, name: id?.name ?? null, secure: req.secure, canAct, hint };
}

/**
 * Refuses a request that may not act, before its body is read: without the action header or
 * from another origin (CSRF), or from anyone but an admin's verified certificate over HTTPS.
 */
function authorizeAction(req: AdminRequest): void {
  if (req.headers[ACTION_HEADER] !== "1") {
    throw new BerthError(ErrorCode.PermissionDenied, `an action must carry the header '${ACTION_HEADER}: 1' (cross-site requests cannot set it)`);
  }
  const origin = req.headers.origin;
  if (origin !== undefined) {
    const own = `${req.secure ? "https" : "http"}://${req.headers.host ?? ""}`;
    if (origin !== own) throw new BerthError(ErrorCode.PermissionDenied, `an action must come from this dashboard's own page (Origin ${origin.slice(0, 100)} is not ${own})`);
  }
  const who = whoAmI(req);
  if (!who.canAct) throw new BerthError(ErrorCode.PermissionDenied, `only an admin may act: ${who.hint.replace(/^read-only: /, "")}`);
}

/** The request's JSON object body ({} when empty); INVALID_ARGUMENT otherwise. */
async function jsonBody(req: AdminRequest): Promise<Record<string, unknown>> {
  const raw = (await req.body()).toString("utf8").trim();
  if (raw === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw invalidArgument("body", "is not JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalidArgument("body", "must be a JSON object");
  return value as Record<string, unknown>;
}

function stringField(body: Record<string, unknown>, field: string): string {
  const v = body[field];
  if (v === undefined || v === null) return "";
  if (typeof v !== "string") throw invalidArgument(field, "must be a string");
  return v;
}

const ON_DEADLINE: Record<string, DrainDeadlineAction> = {
  "": DrainDeadlineAction.DRAIN_DEADLINE_ACTION_LEAVE,
  LEAVE: DrainDeadlineAction.DRAIN_DEADLINE_ACTION_LEAVE,
  STOP: DrainDeadlineAction.DRAIN_DEADLINE_ACTION_STOP,
};

/** The one path segment after `prefix` (`/api/hosts/host-1/cordon` → ["host-1", "cordon"]). */
function segments(req: AdminRequest, prefix: string): string[] {
  return req.url.pathname.slice(prefix.length).split("/").map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
}

/**
 * The dashboard's routes, for the admin server (see the module comment):
 *
 * - `GET /` the page; `GET /assets/app.js|app.css` its script and style (CSP `default-src 'self'`).
 * - `GET /api/snapshot` {@link DashboardSnapshot}: hosts (allocatable, allocated by VM, measured, badges), VMs, migrations, scale groups (size, bounds, CPU, last decision), recent events, leader.
 * - `GET /api/stream` server-sent events: `snapshot` (a DashboardSnapshot) first, then `changes`
 *   ({@link DashboardChanges}) at most every 250 ms, a comment every 15 s; ends when the server closes.
 * - `GET /api/vms/NAME` the VM page's data (with its placement record); 404 for none.
 * - `GET /api/scalegroups/NAME` the scale group page's data ({@link ScaleGroupDetail}: members with
 *   warm-up and protection, decisions with their inputs, the policy); 404 for none.
 * - `GET /api/whoami` {@link WhoAmI}: the role the request's certificate names and whether it may act.
 * - `POST /api/hosts/NAME/cordon|uncordon|drain`, `POST /api/vms/NAME/migrate` with a JSON body
 *   (`reason`; drain: `deadlineMs`, `onDeadline` LEAVE|STOP; migrate: `targetHost`, `requestId`):
 *   403 without the `X-Berth-Action: 1` header, from another Origin, or without an admin's
 *   verified certificate over HTTPS; 503 naming the leader on a follower; the action's own errors
 *   as their HTTP analogues. Answers `{host: HostRow}` or `{migration: MigrationRow}`.
 */
export function dashboardRoutes(deps: DashboardDeps): AdminRoute[] {
  const asset = assetReader();
  const hub = new StreamHub(deps);
  const serveAsset = (res: ServerResponse, name: string): void => {
    const type = ASSETS[name];
    if (!type) throw notFound(`no such file: ${name}`);
    const body = asset(name);
    res.writeHead(200, { "Content-Type": type, "Content-Length": body.length, "Cache-Control": "no-cache" });
    res.end(body);
  };
  const act = async (req: AdminRequest, res: ServerResponse, fn: (body: Record<string, unknown>, by: string) => Promise<unknown>): Promise<void> => {
    try {
      authorizeAction(req);
      const body = await jsonBody(req);
      if (!deps.leading()) {
        const address = await deps.leaderAddress().catch(() => "");
        throw new BerthError(ErrorCode.NotLeader, address ? `this controller is not the leader; act on the leader's dashboard (${address})` : "no leader is elected yet; retry shortly", { leader: address });
      }
      sendJson(res, 200, await fn(body, req.identity!.name));
    } catch (e) {
      sendError(res, e, deps.log);
    }
  };
  const rowOf = (host: Host): HostRow => hostRow(hostInputOf(deps, host));
  return [
    { method: "GET", path: "/", handle: (_req, res) => serveAsset(res, "index.html") },
    { method: "GET", path: "/assets/*", handle: (req, res) => serveAsset(res, req.url.pathname.slice("/assets/".length)) },
    {
      method: "GET",
      path: "/api/snapshot",
      handle: async (_req, res) => sendJson(res, 200, snapshotNow(deps, await leaderStatusOf(deps))),
    },
    { method: "GET", path: "/api/stream", handle: (_req, res) => hub.open(res) },
    { method: "GET", path: "/api/whoami", handle: (req, res) => sendJson(res, 200, whoAmI(req)) },
    {
      method: "GET",
      path: "/api/vms/*",
      handle: (req, res) => {
        const [name = "", ...rest] = segments(req, "/api/vms/");
        if (rest.length > 0) throw notFound(`no such path: ${req.url.pathname}`);
        validateName(name, "name");
        const vm = deps.state.vm(name);
        if (!vm) throw notFound(`vm '${name}'`);
        sendJson(res, 200, vmDetail(vm, deps.state.migration(name)));
      },
    },
    {
      method: "GET",
      path: "/api/scalegroups/*",
      handle: (req, res) => {
        const [name = "", ...rest] = segments(req, "/api/scalegroups/");
        if (rest.length > 0) throw notFound(`no such path: ${req.url.pathname}`);
        validateName(name, "name");
        const group = deps.state.scaleGroup(name);
        if (!group) throw notFound(`scale group '${name}'`);
        sendJson(res, 200, scaleGroupDetail(scaleGroupInfoOf(deps, group), (n) => deps.state.vm(n), (deps.now ?? Date.now)()));
      },
    },
    {
      method: "POST",
      path: "/api/vms/*",
      handle: async (req, res) => {
        const [name = "", action, ...rest] = segments(req, "/api/vms/");
        if (action !== "migrate" || rest.length > 0) throw notFound(`no such action: ${req.url.pathname} (POST /api/vms/NAME/migrate)`);
        await act(req, res, async (body, by) => {
          const migration = await migrateVm(deps, { name, targetHost: stringField(body, "targetHost"), requestId: stringField(body, "requestId"), requestedBy: `${by} (dashboard)` });
          deps.log?.info({ vm: name, targetHost: migration.targetHost || undefined, by }, "migration requested on the dashboard");
          return { migration: migrationRow(migration) };
        });
      },
    },
    {
      method: "POST",
      path: "/api/hosts/*",
      handle: async (req, res) => {
        const [hostId = "", action = "", ...rest] = segments(req, "/api/hosts/");
        if (!["cordon", "uncordon", "drain"].includes(action) || rest.length > 0) {
          throw notFound(`no such action: ${req.url.pathname} (POST /api/hosts/NAME/cordon, uncordon or drain)`);
        }
        await act(req, res, async (body, by) => {
          let host: Host;
          if (action === "cordon") host = await cordonHost(deps, hostId, stringField(body, "reason") || `cordoned by ${by} on the dashboard`);
          else if (action === "uncordon") host = await uncordonHost(deps, hostId);
          else {
            const deadline = body.deadlineMs ?? 0;
            if (typeof deadline !== "number") throw invalidArgument("deadlineMs", "must be a number of milliseconds");
            const onDeadline = ON_DEADLINE[stringField(body, "onDeadline").toUpperCase()];
            if (onDeadline === undefined) throw invalidArgument("onDeadline", "must be LEAVE or STOP");
            host = await drainHost(deps, { hostId, deadlineMs: deadline, onDeadline, reason: stringField(body, "reason") || `drained by ${by} on the dashboard` });
          }
          deps.log?.info({ hostId, action, by }, "host action on the dashboard");
          return { host: rowOf(host) };
        });
      },
    },
  ];
}
