import type { sendUnaryData, ServerUnaryCall, ServerWritableStream } from "@grpc/grpc-js";
import {
  DesiredState,
  DomainState,
  EventType,
  malformedOf,
  VmPhase,
  VmSpec,
  VmStatus,
  type Domain,
  GroupPolicy,
  type ClusterServiceServer,
  type Group,
  type Host,
  type Vm,
  type WatchEventsRequest,
  type WatchEventsResponse,
} from "@berth/api";
import { alreadyExists, BerthError, ErrorCode, invalidArgument, Limits, notFound, toGrpcStatus, validateLabels, validateName, validateVmSpec } from "@berth/core";
import type { ClusterStore } from "@berth/store";
import type { Logger } from "pino";
import type { LeadingDeps } from "./agent-service.js";
import type { AgentSession } from "./agent-session.js";
import { isActiveMigration, type ClusterState, type StateChange } from "./cluster-state.js";
import type { EventLog } from "./event-log.js";
import { waitUpTo } from "./wait.js";
import { setDesiredState } from "./vm-writes.js";
import { resolveMigrationConfig } from "./migration-manager.js";
import { resolveRebalanceConfig } from "./rebalancer.js";
import type { FencedWriter } from "./fenced-writer.js";
import { decodeGroup, decodeVm, encodeConfig, encodeGroup, encodeVm, Keys } from "./keys.js";
import { placementPolicyOf, resolveClusterScheduler } from "./scheduler-config.js";
import { hostView as hostViewOf, type LiveHost } from "./host-view.js";
import { cordonHost, drainHost, leadingNow as leadingOf, migrateVm, requireHost, uncordonHost } from "./operator-actions.js";
import type { Placer } from "./placement.js";
import { createImage, deleteImage, getImage, listImages } from "./image-catalog.js";
import { scaleGroupInfo } from "./scale-group-manager.js";
import { listVolumes, volumeInfo } from "./volume-manager.js";
import type { ConsoleRelay } from "./console-relay.js";

export interface ClusterServiceDeps {
  /** The writer when this controller leads; undefined on a follower. */
  writer(): FencedWriter | undefined;
  leaderAddress(): Promise<string>;
  store: ClusterStore;
  state: ClusterState;
  placer: Placer;
  /** What the host's live stream last said, when it has one. */
  liveHost(hostId: string): LiveHost | undefined;
  /** What this controller holds while it leads; undefined on a follower. */
  leading(): LeadingDeps | undefined;
  sessions: ReadonlyMap<string, AgentSession>;
  /** The operator console sessions relayed over agent streams (shared with the agent service). */
  consoles: ConsoleRelay;
  /** The cluster events this controller has seen (WatchEvents with `events`). */
  events: EventLog;
  controllerId: string;
  log: Logger;
}

/** Events a slow WatchEvents client may fall behind by before its stream is ended. */
const MAX_WATCH_BACKLOG = 10_000;

/**
 * The operator API. Only the leader answers; a follower fails every call with NOT_LEADER
 * (UNAVAILABLE + the leader's address), so clients have one consistent view. Errors are BerthErrors
 * mapped to gRPC status in one place (`toGrpcStatus`); bad input changes nothing.
 */
export function clusterService(deps: ClusterServiceDeps): ClusterServiceServer {
  const leader = async (): Promise<FencedWriter> => {
    const w = deps.writer();
    if (w) return w;
    const address = await deps.leaderAddress();
    throw new BerthError(ErrorCode.NotLeader, address ? `not the leader; the leader is ${address}` : "no leader is elected yet; retry shortly", { leader: address });
  };
  const unary =
    <Req, Res>(fn: (req: Req) => Promise<Res>) =>
    (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
      // Bytes that are not a well-formed request (see hardenService): refused before anything runs.
      const malformed = malformedOf(call.request);
      if (malformed) {
        callback(toGrpcStatus(invalidArgument(malformed.field, malformed.reason)), null);
        return;
      }
      fn(call.request).then(
        (res) => callback(null, res),
        (e: unknown) => {
          if (!(e instanceof BerthError) || e.code === ErrorCode.Internal) deps.log.error({ err: e }, "request failed");
          callback(toGrpcStatus(e), null);
        },
      );
    };
  const vmByName = (name: string, field = "name"): Vm => {
    validateName(name, field);
    const vm = deps.state.vm(name);
    if (!vm) throw notFound(`vm '${name}'`);
    return vm;
  };
  /** A host as operators see it (one definition, shared with the dashboard: host-view.ts). */
  const hostView = (host: Host): Host => hostViewOf(deps, host);
  const leadingNow = (): LeadingDeps => leadingOf(deps);
  const hostById = (id: string, field = "host_id"): Host => requireHost(deps.state, id, field);
  const change = (desired: DesiredState, forceStop = false) => async (req: { name: string }) => {
    const writer = await leader();
    return { vm: await setDesiredState(deps.store, writer, req.name, desired, forceStop) };
  };

  return {
    createVm: unary(async (req) => {
      const writer = await leader();
      if (!req.spec) throw invalidArgument("spec", "is required");
      const [vm] = await deps.placer.create([req.spec], writer, "spec", req.requestId);
      return { vm };
    }),
    createVms: unary(async (req) => {
      const writer = await leader();
      return { vms: await deps.placer.create(req.specs, writer, "specs", req.requestId) };
    }),
    planPlacement: unary(async (req) => {
      await leader();
      return deps.placer.plan(req.specs);
    }),
    createGroup: unary(async (req) => ({ group: await createGroup(deps, await leader(), req.name, req.policy) })),
    listGroups: unary(async () => {
      await leader();
      return { groups: deps.state.groups.values().sort((a, b) => (a.name < b.name ? -1 : 1)) };
    }),
    deleteGroup: unary(async (req) => {
      await deleteGroup(deps, await leader(), req.name);
      return {};
    }),
    getClusterConfig: unary(async () => {
      await leader();
      return { config: deps.state.clusterConfig() ?? { scheduler: undefined, defaultOnHostFailure: 0, rebalance: undefined, migration: undefined } };
    }),
    updateClusterConfig: unary(async (req) => {
      const writer = await leader();
      // The whole config, always: an absent one (or garbage that decodes as an empty message) must
      // not reset the cluster's settings.
      if (!req.config) throw invalidArgument("config", "is required: send the whole cluster config (read it with GetClusterConfig, change it, send it back)");
      const config = req.config;
      // INVALID_ARGUMENT naming the field; nothing written.
      resolveClusterScheduler(config);
      resolveMigrationConfig(config.migration, "config.migration");
      resolveRebalanceConfig(config.rebalance, "config.rebalance");
      const kv = await deps.store.get(Keys.config);
      const result = await writer.commit({
        compare: [kv ? { key: Keys.config, target: "modRevision", equals: kv.modRevision } : { key: Keys.config, target: "createRevision", equals: 0 }],
        ops: [{ type: "put", key: Keys.config, value: encodeConfig(config) }],
      });
      if (!result.succeeded) throw new BerthError(ErrorCode.Conflict, "the cluster config changed meanwhile; read it again and retry");
      await deps.state.config.waitForRevision(result.revision);
      return { config };
    }),
    getVm: unary(async (req) => {
      await leader();
      return { vm: vmByName(req.name) };
    }),
    listVms: unary(async (req) => {
      await leader();
      if (req.pageSize > Limits.maxPageSize) throw invalidArgument("page_size", `at most ${Limits.maxPageSize}`);
      // An unknown host is NOT_FOUND, not an empty list (a typo would look like an idle host).
      if (req.hostId) hostById(req.hostId);
      const pageSize = req.pageSize || Limits.defaultPageSize;
      // The token is the last name of the previous page: pages stay correct while VMs come and go.
      const after = req.pageToken;
      const vms = (req.hostId ? deps.state.vmsOnHost(req.hostId) : deps.state.allVms())
        .filter((vm) => (vm.spec?.name ?? "") > after)
        .sort((a, b) => ((a.spec?.name ?? "") < (b.spec?.name ?? "") ? -1 : 1));
      const page = vms.slice(0, pageSize);
      const more = vms.length > pageSize;
      return { vms: page, nextPageToken: more ? (page[page.length - 1]?.spec?.name ?? "") : "" };
    }),
    deleteVm: unary(change(DesiredState.DESIRED_STATE_DELETED)),
    startVm: unary(change(DesiredState.DESIRED_STATE_RUNNING)),
    stopVm: unary(async (req) => change(DesiredState.DESIRED_STATE_STOPPED, req.force)(req)),
    listHosts: unary(async () => {
      await leader();
      return { hosts: deps.state.allHosts().sort((a, b) => a.id.localeCompare(b.id)).map(hostView) };
    }),
    getHost: unary(async (req) => {
      await leader();
      validateName(req.id, "id");
      const host = deps.state.host(req.id);
      if (!host) throw notFound(`host '${req.id}'`);
      return { host: hostView(host) };
    }),
    retryVm: unary(async (req) => ({ vm: await retryVm(deps, await leader(), req.name) })),
    deleteOrphan: unary(async (req) => {
      await leader();
      await deleteOrphan(deps, req.hostId, req.vmId);
      return {};
    }),
    adoptOrphan: unary(async (req) => ({ vm: await adoptOrphan(deps, await leader(), req.hostId, req.vmId, req.name) })),
    confirmHostDown: unary(async (req) => {
      await leader();
      validateName(req.hostId, "host_id");
      const hosts = deps.leading()?.hosts;
      if (!hosts) throw new BerthError(ErrorCode.NotLeader, "this controller is no longer the leader; retry");
      return { host: hostView(await hosts.confirmDown(req.hostId)) };
    }),
    getCluster: unary(async () => {
      const writer = await leader();
      const identity = deps.leading()?.identity;
      return { cluster: identity?.cluster, leaderEpoch: identity?.epoch ?? writer.epoch, leaderId: deps.controllerId };
    }),
    migrateVm: unary(async (req) => {
      await leader();
      return { migration: await migrateVm(deps, { name: req.name, targetHost: req.targetHost, requestId: req.requestId, requestedBy: "operator" }) };
    }),
    listMigrations: unary(async (req) => {
      await leader();
      if (req.hostId) validateName(req.hostId, "host_id");
      const all = deps.state
        .allMigrations()
        .filter((m) => (!req.activeOnly || isActiveMigration(m)) && (!req.hostId || m.sourceHost === req.hostId || m.targetHost === req.hostId));
      const active = all.filter(isActiveMigration).sort((a, b) => a.createdAtMs - b.createdAtMs || (a.vmName < b.vmName ? -1 : 1));
      const ended = all.filter((m) => !isActiveMigration(m)).sort((a, b) => b.finishedAtMs - a.finishedAtMs || (a.vmName < b.vmName ? -1 : 1));
      return { migrations: [...active, ...ended] };
    }),
    getMigration: unary(async (req) => {
      await leader();
      return { migration: leadingNow().migrations.find(req.name) };
    }),
    abortMigration: unary(async (req) => {
      await leader();
      return { migration: await leadingNow().migrations.abort(req.name) };
    }),
    cordonHost: unary(async (req) => {
      await leader();
      return { host: hostView(await cordonHost(deps, req.hostId, req.reason)) };
    }),
    labelHost: unary(async (req) => {
      await leader();
      const host = hostById(req.hostId);
      validateLabels(req.set, "set");
      if (req.remove.length > Limits.maxLabels) throw invalidArgument("remove", `at most ${Limits.maxLabels} keys (got ${req.remove.length})`);
      req.remove.forEach((key, i) => validateLabels({ [key]: "" }, `remove[${i}]`));
      if (Object.keys(req.set).length === 0 && req.remove.length === 0) throw invalidArgument("set", "nothing to change: give KEY=VALUE to set or KEY- to remove");
      const operatorLabels = { ...host.operatorLabels };
      for (const key of req.remove) delete operatorLabels[key];
      validateLabels({ ...operatorLabels, ...req.set }, "set");
      return { host: hostView(await leadingNow().hosts.label(req.hostId, req.set, req.remove)) };
    }),
    deleteHost: unary(async (req) => {
      await leader();
      hostById(req.hostId);
      const vms = deps.state.allVms().filter((vm) => vm.hostId === req.hostId).map((vm) => vm.spec?.name ?? vm.id);
      const migrations = deps.state
        .allMigrations()
        .filter((m) => isActiveMigration(m) && (m.sourceHost === req.hostId || m.targetHost === req.hostId))
        .map((m) => m.vmName);
      const volumes = deps.state
        .allVolumes()
        .filter((v) => v.hostId === req.hostId)
        .map((v) => v.name);
      await leadingNow().hosts.remove(req.hostId, { vms, migrations, volumes });
      return {};
    }),
    uncordonHost: unary(async (req) => {
      await leader();
      return { host: hostView(await uncordonHost(deps, req.hostId)) };
    }),
    drainHost: unary(async (req) => {
      await leader();
      return { host: hostView(await drainHost(deps, { hostId: req.hostId, deadlineMs: req.deadlineMs, onDeadline: req.onDeadline, reason: req.reason })) };
    }),
    planRebalance: unary(async (req) => {
      await leader();
      return { plan: leadingNow().rebalancer.plan(req.goal, req.maxMoves, req.metric) };
    }),
    applyRebalance: unary(async (req) => {
      await leader();
      return await leadingNow().rebalancer.apply(req.goal, req.maxMoves, req.metric, req.plan);
    }),
    watchEvents: (call) => void watchEvents(deps, leader, call),
    // The image catalog (image-catalog.ts) and data volumes (volume-manager.ts).
    createImage: unary(async (req) => ({ image: await createImage(deps, await leader(), req.image, Date.now()) })),
    listImages: unary(async () => {
      await leader();
      return { images: listImages(deps) };
    }),
    getImage: unary(async (req) => {
      await leader();
      return { image: getImage(deps, req.name) };
    }),
    deleteImage: unary(async (req) => {
      await deleteImage(deps, await leader(), req.name);
      return {};
    }),
    createVolume: unary(async (req) => {
      await leader();
      return { volume: await leadingNow().volumes.create(req.volume) };
    }),
    listVolumes: unary(async (req) => {
      await leader();
      // An unknown host is NOT_FOUND, not an empty list (as ListVms).
      if (req.hostId) hostById(req.hostId);
      return { volumes: listVolumes(deps.state, deps.sessions, req.hostId) };
    }),
    getVolume: unary(async (req) => {
      await leader();
      validateName(req.name, "name");
      const volume = deps.state.volume(req.name);
      if (!volume) throw notFound(`volume '${req.name}'`);
      return { volume: volumeInfo(deps.state, deps.sessions, volume) };
    }),
    deleteVolume: unary(async (req) => {
      await leader();
      return { volume: await leadingNow().volumes.delete(req.name) };
    }),
    attachVolume: unary(async (req) => {
      await leader();
      return await leadingNow().volumes.attach(req.volume, req.vm);
    }),
    detachVolume: unary(async (req) => {
      await leader();
      return await leadingNow().volumes.detach(req.volume);
    }),
    // The operator's console stream, relayed over the host's agent stream (console-relay.ts).
    attachConsole: (call) => deps.consoles.attach(call, leader),
    // Scale groups and their autoscaler (scale-group-manager.ts).
    createScaleGroup: unary(async (req) => {
      await leader();
      return { group: await leadingNow().scaleGroups.create(req.group) };
    }),
    listScaleGroups: unary(async () => {
      await leader();
      const scaleGroups = leadingNow().scaleGroups;
      const groups = deps.state.allScaleGroups().sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      return { groups: groups.map((g) => scaleGroupInfo(deps.state, deps.sessions, g, Date.now(), scaleGroups.lastError(g.name))) };
    }),
    getScaleGroup: unary(async (req) => {
      await leader();
      validateName(req.name, "name");
      const group = deps.state.scaleGroup(req.name);
      if (!group) throw notFound(`scale group '${req.name}'`);
      return { group: scaleGroupInfo(deps.state, deps.sessions, group, Date.now(), leadingNow().scaleGroups.lastError(group.name)) };
    }),
    updateScaleGroup: unary(async (req) => {
      await leader();
      return { group: await leadingNow().scaleGroups.update(req) };
    }),
    deleteScaleGroup: unary(async (req) => {
      await leader();
      return { group: await leadingNow().scaleGroups.delete(req.name, req.deleteVms) };
    }),
  };
}

/**
 * Sends a VM's command afresh: the generation is bumped (guarded read-modify-write), so a failure
 * recorded for the old one — permanent or in backoff — no longer applies and the host applies it
 * anew. The desired state is unchanged.
 */
async function retryVm(deps: ClusterServiceDeps, writer: FencedWriter, name: string): Promise<Vm> {
  validateName(name, "name");
  for (let attempt = 0; attempt < 8; attempt++) {
    const kv = await deps.store.get(Keys.vm(name));
    if (!kv) throw notFound(`vm '${name}'`);
    const vm = decodeVm(kv.value);
    const next: Vm = { ...vm, generation: vm.generation + 1 };
    const result = await writer.commit({
      compare: [{ key: kv.key, target: "modRevision", equals: kv.modRevision }],
      ops: [{ type: "put", key: kv.key, value: encodeVm(next) }],
    });
    if (result.succeeded) {
      deps.log.info({ vm: name, generation: next.generation }, "retry asked for by an operator");
      return next;
    }
  }
  throw new BerthError(ErrorCode.Conflict, `vm '${name}' kept changing; retry`);
}

/** The live session of a connected host and one of its orphan domains; typed errors otherwise. */
function orphanOn(deps: ClusterServiceDeps, hostId: string, vmId: string): { session: AgentSession; domain: Domain } {
  validateName(hostId, "host_id");
  if (!/^[0-9a-f-]{1,64}$/i.test(vmId)) throw invalidArgument("vm_id", `'${vmId.slice(0, 64)}' is not a VM id (a UUID)`);
  if (!deps.state.host(hostId)) throw notFound(`host '${hostId}'`);
  const session = deps.sessions.get(hostId);
  if (!session?.isLive) throw new BerthError(ErrorCode.FailedPrecondition, `host '${hostId}' is not connected: its domains cannot be changed now`);
  const domain = session.inventory.get(vmId);
  if (!domain) throw notFound(`domain ${vmId} on host '${hostId}'`);
  const owner = deps.state.vmById(vmId);
  if (owner) {
    throw new BerthError(ErrorCode.FailedPrecondition, `domain ${vmId} on host '${hostId}' is vm '${owner.spec?.name}', not an orphan (use 'berth vm delete ${owner.spec?.name}')`);
  }
  return { session, domain };
}

/** How long DeleteOrphan waits for the host to confirm. */
const ORPHAN_DELETE_TIMEOUT_MS = 60_000;

/**
 * Deletes an orphan domain (and its volumes) on a connected host, on the operator's word, and
 * answers once the host confirms. Nothing is recorded first: the domain has no record, and an
 * answer lost with the stream leaves the orphan listed or gone, as the next report shows.
 */
async function deleteOrphan(deps: ClusterServiceDeps, hostId: string, vmId: string): Promise<void> {
  const { session, domain } = orphanOn(deps, hostId, vmId);
  const identity = deps.leading()?.identity;
  if (!identity) throw new BerthError(ErrorCode.NotLeader, "this controller is no longer the leader; retry");
  const commandId = session.sendCommand({ vmId, generation: domain.generation, action: { $case: "delete", value: {} } }, identity.epoch, Date.now(), 0);
  if (!commandId) throw new BerthError(ErrorCode.Unavailable, `host '${hostId}' is not taking commands now (its stream is backed up); retry`);
  deps.log.warn({ hostId, vmId, name: domain.name }, "deleting an orphan domain on an operator's request");
  const result = await session.waitForResult(commandId, ORPHAN_DELETE_TIMEOUT_MS);
  if (!result) throw new BerthError(ErrorCode.Unavailable, `no answer from host '${hostId}': the orphan may or may not be deleted; list the host's orphans again`);
  if (!result.ok) throw new BerthError(ErrorCode.FailedPrecondition, `host '${hostId}' could not delete domain ${vmId}: ${result.errorCode}: ${result.errorMessage.slice(0, 512)}`);
  session.orphans = session.orphans.filter((d) => d.vmId !== vmId);
}

/**
 * Makes a VM record for an orphan domain where it is: its resources become the spec, its power
 * state the desired one, its id the VM's id. Fenced create-if-absent on the name; the host's
 * capacity is not checked (the domain is already there and counts from now on).
 */
async function adoptOrphan(deps: ClusterServiceDeps, writer: FencedWriter, hostId: string, vmId: string, name: string): Promise<Vm> {
  validateName(name, "name");
  const { domain } = orphanOn(deps, hostId, vmId);
  const spec = VmSpec.fromPartial({ name, resources: domain.resources });
  validateVmSpec(spec, "spec");
  const running = domain.state === DomainState.DOMAIN_STATE_RUNNING || domain.state === DomainState.DOMAIN_STATE_PAUSED;
  const now = Date.now();
  const vm: Vm = {
    id: vmId,
    spec,
    desiredState: running ? DesiredState.DESIRED_STATE_RUNNING : DesiredState.DESIRED_STATE_STOPPED,
    hostId,
    generation: Math.max(1, domain.generation),
    status: VmStatus.fromPartial({ phase: VmPhase.VM_PHASE_PENDING, message: `adopted from an orphan domain on ${hostId}`, updatedAtMs: now }),
    createdAtMs: now,
    forceStop: false,
    requestId: "",
  };
  const hostKv = deps.state.hostKv(hostId)!;
  const result = await writer.commit({
    compare: [
      { key: Keys.vm(name), target: "createRevision", equals: 0 },
      { key: hostKv.key, target: "createRevision", equals: hostKv.createRevision },
    ],
    ops: [{ type: "put", key: Keys.vm(name), value: encodeVm(vm) }],
  });
  if (!result.succeeded) {
    if (await deps.store.get(Keys.vm(name))) throw alreadyExists(`vm '${name}'`);
    throw new BerthError(ErrorCode.Conflict, `host '${hostId}' changed meanwhile; retry`);
  }
  await waitUpTo(deps.state.vms.waitForRevision(result.revision), 5_000);
  deps.log.warn({ hostId, vmId, name }, "adopted an orphan domain on an operator's request");
  return vm;
}

async function createGroup(deps: ClusterServiceDeps, writer: FencedWriter, name: string, policy: GroupPolicy): Promise<Group> {
  validateName(name, "name");
  if (!placementPolicyOf(policy)) {
    throw invalidArgument("policy", "must be ANTI_AFFINITY, AFFINITY, SOFT_ANTI_AFFINITY or SOFT_AFFINITY");
  }
  const group: Group = { name, policy, members: [], createdAtMs: Date.now() };
  const result = await writer.commit({
    compare: [{ key: Keys.group(name), target: "createRevision", equals: 0 }],
    ops: [{ type: "put", key: Keys.group(name), value: encodeGroup(group) }],
  });
  if (!result.succeeded) throw alreadyExists(`group '${name}'`);
  await deps.state.groups.waitForRevision(result.revision);
  return group;
}

/** Deletes an empty group; FAILED_PRECONDITION while it has members (guarded on its revision). */
async function deleteGroup(deps: ClusterServiceDeps, writer: FencedWriter, name: string): Promise<void> {
  validateName(name, "name");
  const kv = await deps.store.get(Keys.group(name));
  if (!kv) throw notFound(`group '${name}'`);
  const group = decodeGroup(kv.value);
  if (group.members.length > 0) {
    const shown = group.members.slice(0, 5).join(", ") + (group.members.length > 5 ? ", …" : "");
    throw new BerthError(ErrorCode.FailedPrecondition, `group '${name}' has ${group.members.length} members (${shown}); delete them first`);
  }
  const result = await writer.commit({
    compare: [{ key: kv.key, target: "modRevision", equals: kv.modRevision }],
    ops: [{ type: "delete", key: kv.key }],
  });
  if (!result.succeeded) throw new BerthError(ErrorCode.Conflict, `group '${name}' changed meanwhile; retry`);
  await deps.state.groups.waitForRevision(result.revision);
}

async function watchEvents(
  deps: ClusterServiceDeps,
  leader: () => Promise<FencedWriter>,
  call: ServerWritableStream<WatchEventsRequest, WatchEventsResponse>,
): Promise<void> {
  call.on("error", () => undefined);
  const malformed = malformedOf(call.request);
  if (malformed) {
    failStream(call, invalidArgument(malformed.field, malformed.reason));
    return;
  }
  // Cluster events alone are this controller's own (every controller, followers too, derives and
  // keeps them): any controller answers them. Records are the leader's to tell.
  const eventsOnly = call.request.events && !call.request.vms && !call.request.hosts && !call.request.migrations;
  try {
    if (!eventsOnly) await leader();
  } catch (e) {
    failStream(call, e);
    return;
  }
  const r = call.request;
  const wantAll = !r.vms && !r.hosts && !r.migrations && !r.events;
  const wantVms = wantAll || r.vms;
  const wantHosts = wantAll || r.hosts;
  const wantMigrations = wantAll || r.migrations;
  const wantEvents = wantAll || r.events;
  const backlog: WatchEventsResponse[] = [];
  let blocked = false;
  let done = false;
  const send = (event: WatchEventsResponse): void => {
    if (done) return;
    if (blocked) {
      if (backlog.length >= MAX_WATCH_BACKLOG) {
        finish();
        failStream(call, new BerthError(ErrorCode.ResourceExhausted, `watch client fell more than ${MAX_WATCH_BACKLOG} events behind; watch again`));
        return;
      }
      backlog.push(event);
      return;
    }
    blocked = !call.write(event);
  };
  call.on("drain", () => {
    blocked = false;
    while (!blocked && backlog.length > 0 && !done) blocked = !call.write(backlog.shift()!);
  });
  const onChange = (c: StateChange): void => {
    if (c.kind === "vm" && wantVms) {
      send({ type: c.type === "put" ? EventType.EVENT_TYPE_PUT : EventType.EVENT_TYPE_DELETED, revision: c.revision, object: { $case: "vm", value: c.vm } });
    } else if (c.kind === "host" && wantHosts) {
      // As ListHosts answers (allocatable, allocated, live usage), so a watch shows what a list does.
      send({ type: c.type === "put" ? EventType.EVENT_TYPE_PUT : EventType.EVENT_TYPE_DELETED, revision: c.revision, object: { $case: "host", value: c.type === "put" ? hostViewOf(deps, c.host) : c.host } });
    } else if (c.kind === "migration" && wantMigrations) {
      send({ type: c.type === "put" ? EventType.EVENT_TYPE_PUT : EventType.EVENT_TYPE_DELETED, revision: c.revision, object: { $case: "migration", value: c.migration } });
    }
  };
  const unsubscribe = deps.state.subscribe(onChange);
  const unsubscribeEvents = wantEvents ? deps.events.subscribe((e) => send({ type: EventType.EVENT_TYPE_PUT, revision: e.revision, object: { $case: "event", value: e } })) : () => undefined;
  const finish = (): void => {
    done = true;
    unsubscribe();
    unsubscribeEvents();
  };
  call.on("cancelled", finish);
  call.on("close", finish);
  const revision = Math.max(deps.state.vms.revision, deps.state.hosts.revision);
  if (wantHosts) for (const host of deps.state.allHosts()) send({ type: EventType.EVENT_TYPE_EXISTING, revision, object: { $case: "host", value: hostViewOf(deps, host) } });
  if (wantVms) for (const vm of deps.state.allVms()) send({ type: EventType.EVENT_TYPE_EXISTING, revision, object: { $case: "vm", value: vm } });
  if (wantMigrations) for (const m of deps.state.allMigrations()) send({ type: EventType.EVENT_TYPE_EXISTING, revision, object: { $case: "migration", value: m } });
  if (wantEvents) for (const e of deps.events.recent()) send({ type: EventType.EVENT_TYPE_EXISTING, revision: e.revision, object: { $case: "event", value: e } });
  send({ type: EventType.EVENT_TYPE_SYNCED, revision, object: undefined });
}

/** Ends a server stream with the status a BerthError maps to. */
/**
 * Ends a server stream with the status of `e`. Through the stream's 'error' event, which grpc-js
 * turns into the call's status: `destroy(error)` would drop the stream without sending any status,
 * and the client would wait until its deadline.
 */
function failStream(call: ServerWritableStream<WatchEventsRequest, WatchEventsResponse>, e: unknown): void {
  const status = toGrpcStatus(e);
  call.emit("error", Object.assign(new Error(status.details), status));
}
