import {
  connectivityState,
  Metadata,
  status,
  type CallOptions,
  type ClientReadableStream,
  type ServiceError,
} from "@grpc/grpc-js";
import {
  ClusterServiceClient,
  type AbortMigrationRequest,
  type AbortMigrationResponse,
  type ApplyRebalanceRequest,
  type ApplyRebalanceResponse,
  type CordonHostRequest,
  type CordonHostResponse,
  type DrainHostRequest,
  type DrainHostResponse,
  type GetMigrationRequest,
  type GetMigrationResponse,
  type ListMigrationsRequest,
  type ListMigrationsResponse,
  type MigrateVmRequest,
  type MigrateVmResponse,
  type PlanRebalanceRequest,
  type PlanRebalanceResponse,
  type UncordonHostRequest,
  type UncordonHostResponse,
  type AdoptOrphanRequest,
  type AdoptOrphanResponse,
  type ConfirmHostDownRequest,
  type ConfirmHostDownResponse,
  type DeleteOrphanRequest,
  type DeleteOrphanResponse,
  type GetClusterRequest,
  type GetClusterResponse,
  type RetryVmRequest,
  type RetryVmResponse,
  type CreateGroupRequest,
  type CreateGroupResponse,
  type CreateVmRequest,
  type CreateVmResponse,
  type CreateVmsRequest,
  type CreateVmsResponse,
  type DeleteGroupRequest,
  type DeleteGroupResponse,
  type GetClusterConfigRequest,
  type GetClusterConfigResponse,
  type ListGroupsRequest,
  type ListGroupsResponse,
  type PlanPlacementRequest,
  type PlanPlacementResponse,
  type UpdateClusterConfigRequest,
  type UpdateClusterConfigResponse,
  type DeleteHostRequest,
  type DeleteHostResponse,
  type DeleteVmRequest,
  type DeleteVmResponse,
  type LabelHostRequest,
  type LabelHostResponse,
  type GetHostRequest,
  type GetHostResponse,
  type GetVmRequest,
  type GetVmResponse,
  type ListHostsRequest,
  type ListHostsResponse,
  type ListVmsRequest,
  type ListVmsResponse,
  type StartVmRequest,
  type StartVmResponse,
  type StopVmRequest,
  type StopVmResponse,
  type WatchEventsRequest,
  type WatchEventsResponse,
  type AttachVolumeRequest,
  type AttachVolumeResponse,
  type CreateImageRequest,
  type CreateImageResponse,
  type CreateVolumeRequest,
  type CreateVolumeResponse,
  type DeleteImageRequest,
  type DeleteImageResponse,
  type DeleteVolumeRequest,
  type DeleteVolumeResponse,
  type DetachVolumeRequest,
  type DetachVolumeResponse,
  type GetImageRequest,
  type GetImageResponse,
  type GetVolumeRequest,
  type GetVolumeResponse,
  type ListImagesRequest,
  type ListImagesResponse,
  type ListVolumesRequest,
  type ListVolumesResponse,
  type CreateScaleGroupRequest,
  type CreateScaleGroupResponse,
  type DeleteScaleGroupRequest,
  type DeleteScaleGroupResponse,
  type GetScaleGroupRequest,
  type GetScaleGroupResponse,
  type ListScaleGroupsRequest,
  type ListScaleGroupsResponse,
  type UpdateScaleGroupRequest,
  type UpdateScaleGroupResponse,
} from "@berth/api";
import { BerthError, channelCredentialsOf, ErrorCode, ERROR_CODE_METADATA_KEY, deadlineIn, fromGrpcError, grpcClientOptions, ReloadingTlsIdentity, type TlsFiles } from "@berth/core";

/** The controller address used when neither `--controller` nor the environment names one. */
export const DEFAULT_CONTROLLER = "127.0.0.1:7400";
/** The environment variable holding the controller address list. */
export const CONTROLLER_ENV = "BERTH_CONTROLLER";
/** Default per-call deadline. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/** How a {@link ControllerClient} reaches the cluster. */
export interface ControllerClientOptions {
  /** Controller addresses (`host:port`), tried in order. */
  endpoints: readonly string[];
  /** Deadline of each call attempt. */
  timeoutMs: number;
  /**
   * Mutual TLS: an operator certificate (admin or viewer) and the cluster's CA. Absent: plaintext,
   * which only a controller run with `--insecure` answers.
   */
  tls?: TlsFiles;
}

/** Per-call overrides. */
export interface CallOverrides {
  /** A deadline earlier than the client's own per-call one, e.g. the end of a `--wait`. */
  deadline?: Date;
}

type Callback<T> = (error: ServiceError | null, response: T) => void;
type Invoker<T> = (
  client: ClusterServiceClient,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: Callback<T>,
) => unknown;

/** One failed attempt against one address. */
interface AttemptFailure {
  address: string;
  error: BerthError;
  /** The next address may be tried: the request was refused unprocessed, never sent, or is safe to repeat. */
  tryNext: boolean;
  /** The request was (or may have been) delivered and no verdict came back: it may have been carried out. */
  unanswered: boolean;
}

/**
 * A call that failed after its request reached, or may have reached, a controller that gave no
 * verdict on it: the connection was cut, the deadline passed while the call was in flight, or the
 * controller lost its store mid-write. The request may have been carried out. Its `code` is
 * UNAVAILABLE or DEADLINE_EXCEEDED (verbs that do not care exit 5 as before), or that of the answer
 * of the next address when a call safe to repeat was sent on after it was cut off.
 */
export class NoAnswerError extends BerthError {
  constructor(code: ErrorCode, message: string, options: ConstructorParameters<typeof BerthError>[2] = {}) {
    super(code, message, options);
    this.name = "NoAnswerError";
  }
}

/** Whether `e` is a failed call whose request may nonetheless have been carried out. */
export const isUnanswered = (e: unknown): boolean => e instanceof NoAnswerError;

/** How one failed attempt is read: what to report, and what it says about the request. */
interface AttemptVerdict {
  code: ErrorCode;
  /** Replaces the error's message (already naming the address), when set. */
  message?: string;
  tryNext: boolean;
  unanswered: boolean;
}

/**
 * Reads a failed attempt. A Berth server always sends the `berth-error-code` trailer, so an error
 * without it comes from the transport (grpc-js), whose codes say nothing about capacity or
 * arguments: a reset stream is not INTERNAL, a reset with ENHANCE_YOUR_CALM is not "no room".
 * Whether the request was sent is read from what grpc-js reports: "No connection established"
 * and "Stream refused by server" mean it never reached a handler; a deadline's diagnostic names
 * `remote_addr=` once a stream was open.
 */
function readFailure(
  error: BerthError,
  err: ServiceError,
  fromServer: boolean,
  connected: boolean,
  repeatable: boolean,
): AttemptVerdict {
  const details = err.details ?? "";
  if (fromServer) {
    switch (error.code) {
      case ErrorCode.NotLeader:
        return { code: error.code, tryNext: true, unanswered: false };
      case ErrorCode.Unavailable:
        // A follower, or a controller whose store failed: the write's outcome is then unknown.
        return { code: error.code, tryNext: true, unanswered: true };
      case ErrorCode.Busy:
        // The leader shed the call before acting on it: nothing was written; the caller backs off.
        return { code: error.code, tryNext: false, unanswered: false };
      case ErrorCode.DeadlineExceeded:
        return { code: error.code, tryNext: false, unanswered: true };
      default:
        return { code: error.code, tryNext: false, unanswered: false };
    }
  }
  const cutOff = { code: ErrorCode.Unavailable, tryNext: repeatable, unanswered: true };
  switch (err.code) {
    case status.UNAVAILABLE:
      if (/^No connection established|Name resolution failed|^Stream refused by server/.test(details)) {
        return { code: ErrorCode.Unavailable, tryNext: true, unanswered: false };
      }
      return cutOff; // "Connection dropped", ECONNRESET, a proxy's 502/503...
    case status.DEADLINE_EXCEEDED: {
      const sent = details.includes("remote_addr=") || (connected && !details.includes("Waiting for LB pick"));
      return { code: ErrorCode.DeadlineExceeded, tryNext: !sent, unanswered: sent };
    }
    case status.CANCELLED:
      return cutOff; // this client cancels no unary call: the stream was reset under it
    case status.INTERNAL:
      return /RST_STREAM/.test(details) ? cutOff : { code: error.code, tryNext: false, unanswered: false };
    case status.RESOURCE_EXHAUSTED:
      return /Bandwidth exhausted/.test(details)
        ? cutOff
        : { code: ErrorCode.Internal, tryNext: false, unanswered: false };
    case status.UNIMPLEMENTED:
      return {
        code: ErrorCode.Internal,
        message: `the controller does not implement this call (${details}); is it an older version?`,
        tryNext: false,
        unanswered: false,
      };
    default:
      return { code: error.code, tryNext: false, unanswered: false };
  }
}

const earliest = (a: Date, b: Date | undefined): Date => (b !== undefined && b < a ? b : a);

/** Turns grpc-js' transport message into a short reason: `connect ECONNREFUSED 127.0.0.1:7400`. */
function transportReason(message: string): string {
  return message
    .replace(/^No connection established\. Last error: /, "")
    .replace(/^Error: /, "")
    .replace(/\.? Resolution note:.*$/s, "")
    .trim();
}

/**
 * The CLI's client of `ClusterService`. It owns one channel per controller address (made with
 * core's `grpcClientOptions`), gives every call a deadline, and finds the leader:
 *
 * - the addresses are tried in order, moving on only when an address is unreachable or answers
 *   UNAVAILABLE (a follower, or a controller that lost its store), and after a call cut off in
 *   flight only for calls that are safe to repeat (reads, and creates carrying a request id);
 * - a call that may have been carried out without an answer fails with a {@link NoAnswerError};
 * - a server that answers UNAVAILABLE with the `berth-leader` metadata names the leader, which is
 *   tried next, once per call;
 * - the address that last answered is tried first by later calls.
 */
export class ControllerClient {
  readonly endpoints: readonly string[];
  readonly timeoutMs: number;
  readonly #clients = new Map<string, ClusterServiceClient>();
  #preferred: string | undefined;
  #closed = false;
  readonly #tls: ReloadingTlsIdentity | undefined;

  /**
   * Throws INVALID_ARGUMENT naming `tls_ca`, `tls_cert` or `tls_key` when a TLS file cannot be
   * read or the three do not belong together.
   */
  constructor(options: ControllerClientOptions) {
    if (options.endpoints.length === 0) throw new Error("ControllerClient needs at least one endpoint");
    this.endpoints = [...options.endpoints];
    this.timeoutMs = options.timeoutMs;
    this.#tls = options.tls ? new ReloadingTlsIdentity(options.tls) : undefined;
  }

  /** The address that answered last (or the first configured one). */
  get address(): string {
    return this.#preferred ?? (this.endpoints[0] as string);
  }

  /** With a `requestId`, safe to repeat: the controller returns the VM that id made. */
  createVm(request: CreateVmRequest, overrides?: CallOverrides): Promise<CreateVmResponse> {
    return this.#invoke<CreateVmResponse>((c, m, o, cb) => c.createVm(request, m, o, cb), overrides, request.requestId !== "");
  }

  /** Creates all the VMs or none (one transaction); with a `requestId`, safe to repeat. */
  createVms(request: CreateVmsRequest, overrides?: CallOverrides): Promise<CreateVmsResponse> {
    return this.#invoke<CreateVmsResponse>((c, m, o, cb) => c.createVms(request, m, o, cb), overrides, request.requestId !== "");
  }

  /** A dry run of placing the VMs: nothing is written. */
  planPlacement(request: PlanPlacementRequest, overrides?: CallOverrides): Promise<PlanPlacementResponse> {
    return this.#invoke<PlanPlacementResponse>((c, m, o, cb) => c.planPlacement(request, m, o, cb), overrides, true);
  }

  getVm(request: GetVmRequest, overrides?: CallOverrides): Promise<GetVmResponse> {
    return this.#invoke<GetVmResponse>((c, m, o, cb) => c.getVm(request, m, o, cb), overrides, true);
  }

  listVms(request: ListVmsRequest, overrides?: CallOverrides): Promise<ListVmsResponse> {
    return this.#invoke<ListVmsResponse>((c, m, o, cb) => c.listVms(request, m, o, cb), overrides, true);
  }

  deleteVm(request: DeleteVmRequest, overrides?: CallOverrides): Promise<DeleteVmResponse> {
    return this.#invoke<DeleteVmResponse>((c, m, o, cb) => c.deleteVm(request, m, o, cb), overrides);
  }

  startVm(request: StartVmRequest, overrides?: CallOverrides): Promise<StartVmResponse> {
    return this.#invoke<StartVmResponse>((c, m, o, cb) => c.startVm(request, m, o, cb), overrides);
  }

  stopVm(request: StopVmRequest, overrides?: CallOverrides): Promise<StopVmResponse> {
    return this.#invoke<StopVmResponse>((c, m, o, cb) => c.stopVm(request, m, o, cb), overrides);
  }

  /** Sends the VM's current command again now, clearing a permanent failure or a backoff. */
  retryVm(request: RetryVmRequest, overrides?: CallOverrides): Promise<RetryVmResponse> {
    return this.#invoke<RetryVmResponse>((c, m, o, cb) => c.retryVm(request, m, o, cb), overrides);
  }

  listHosts(request: ListHostsRequest, overrides?: CallOverrides): Promise<ListHostsResponse> {
    return this.#invoke<ListHostsResponse>((c, m, o, cb) => c.listHosts(request, m, o, cb), overrides, true);
  }

  getHost(request: GetHostRequest, overrides?: CallOverrides): Promise<GetHostResponse> {
    return this.#invoke<GetHostResponse>((c, m, o, cb) => c.getHost(request, m, o, cb), overrides, true);
  }

  /** Deletes a domain no VM record accounts for, with its volumes; answers once the host confirms. */
  deleteOrphan(request: DeleteOrphanRequest, overrides?: CallOverrides): Promise<DeleteOrphanResponse> {
    return this.#invoke<DeleteOrphanResponse>((c, m, o, cb) => c.deleteOrphan(request, m, o, cb), overrides);
  }

  /** Makes a VM record, under a new name, for an orphan domain where it is. */
  adoptOrphan(request: AdoptOrphanRequest, overrides?: CallOverrides): Promise<AdoptOrphanResponse> {
    return this.#invoke<AdoptOrphanResponse>((c, m, o, cb) => c.adoptOrphan(request, m, o, cb), overrides);
  }

  /** Declares a silent host down for good: fenced at once, its restart-policy VMs recreated elsewhere. */
  confirmHostDown(request: ConfirmHostDownRequest, overrides?: CallOverrides): Promise<ConfirmHostDownResponse> {
    return this.#invoke<ConfirmHostDownResponse>((c, m, o, cb) => c.confirmHostDown(request, m, o, cb), overrides);
  }

  /** The cluster's identity and who leads it. */
  getCluster(request: GetClusterRequest, overrides?: CallOverrides): Promise<GetClusterResponse> {
    return this.#invoke<GetClusterResponse>((c, m, o, cb) => c.getCluster(request, m, o, cb), overrides, true);
  }

  /** Starts a live migration (recorded PENDING, run as slots allow); with a `requestId`, safe to repeat. */
  migrateVm(request: MigrateVmRequest, overrides?: CallOverrides): Promise<MigrateVmResponse> {
    return this.#invoke<MigrateVmResponse>((c, m, o, cb) => c.migrateVm(request, m, o, cb), overrides, request.requestId !== "");
  }

  listMigrations(request: ListMigrationsRequest, overrides?: CallOverrides): Promise<ListMigrationsResponse> {
    return this.#invoke<ListMigrationsResponse>((c, m, o, cb) => c.listMigrations(request, m, o, cb), overrides, true);
  }

  /** By the VM's name or the migration's id. */
  getMigration(request: GetMigrationRequest, overrides?: CallOverrides): Promise<GetMigrationResponse> {
    return this.#invoke<GetMigrationResponse>((c, m, o, cb) => c.getMigration(request, m, o, cb), overrides, true);
  }

  /** A pending migration fails at once; one in flight is rolled back unless its domain has left the source. */
  abortMigration(request: AbortMigrationRequest, overrides?: CallOverrides): Promise<AbortMigrationResponse> {
    return this.#invoke<AbortMigrationResponse>((c, m, o, cb) => c.abortMigration(request, m, o, cb), overrides);
  }

  cordonHost(request: CordonHostRequest, overrides?: CallOverrides): Promise<CordonHostResponse> {
    return this.#invoke<CordonHostResponse>((c, m, o, cb) => c.cordonHost(request, m, o, cb), overrides);
  }

  /** Also cancels a drain in progress. */
  uncordonHost(request: UncordonHostRequest, overrides?: CallOverrides): Promise<UncordonHostResponse> {
    return this.#invoke<UncordonHostResponse>((c, m, o, cb) => c.uncordonHost(request, m, o, cb), overrides);
  }

  /** Cordons the host and migrates its running VMs away. */
  drainHost(request: DrainHostRequest, overrides?: CallOverrides): Promise<DrainHostResponse> {
    return this.#invoke<DrainHostResponse>((c, m, o, cb) => c.drainHost(request, m, o, cb), overrides);
  }

  /** The moves the rebalancer would make now: nothing is written. */
  planRebalance(request: PlanRebalanceRequest, overrides?: CallOverrides): Promise<PlanRebalanceResponse> {
    return this.#invoke<PlanRebalanceResponse>((c, m, o, cb) => c.planRebalance(request, m, o, cb), overrides, true);
  }

  /** Starts a plan's moves as migrations (each re-checked first). */
  applyRebalance(request: ApplyRebalanceRequest, overrides?: CallOverrides): Promise<ApplyRebalanceResponse> {
    return this.#invoke<ApplyRebalanceResponse>((c, m, o, cb) => c.applyRebalance(request, m, o, cb), overrides);
  }

  createGroup(request: CreateGroupRequest, overrides?: CallOverrides): Promise<CreateGroupResponse> {
    return this.#invoke<CreateGroupResponse>((c, m, o, cb) => c.createGroup(request, m, o, cb), overrides);
  }

  listGroups(request: ListGroupsRequest, overrides?: CallOverrides): Promise<ListGroupsResponse> {
    return this.#invoke<ListGroupsResponse>((c, m, o, cb) => c.listGroups(request, m, o, cb), overrides, true);
  }

  /** Refused (FAILED_PRECONDITION) while the group has members. */
  deleteGroup(request: DeleteGroupRequest, overrides?: CallOverrides): Promise<DeleteGroupResponse> {
    return this.#invoke<DeleteGroupResponse>((c, m, o, cb) => c.deleteGroup(request, m, o, cb), overrides);
  }

  getClusterConfig(request: GetClusterConfigRequest, overrides?: CallOverrides): Promise<GetClusterConfigResponse> {
    return this.#invoke<GetClusterConfigResponse>((c, m, o, cb) => c.getClusterConfig(request, m, o, cb), overrides, true);
  }

  /** Replaces the whole cluster config; the controller validates it. */
  updateClusterConfig(
    request: UpdateClusterConfigRequest,
    overrides?: CallOverrides,
  ): Promise<UpdateClusterConfigResponse> {
    return this.#invoke<UpdateClusterConfigResponse>((c, m, o, cb) => c.updateClusterConfig(request, m, o, cb), overrides);
  }

  /** Sets and removes operator labels of a host; answers with the host. */
  labelHost(request: LabelHostRequest, overrides?: CallOverrides): Promise<LabelHostResponse> {
    return this.#invoke<LabelHostResponse>((c, m, o, cb) => c.labelHost(request, m, o, cb), overrides);
  }

  /** Forgets a retired host; refused (FAILED_PRECONDITION) while its agent is connected or anything names it. */
  deleteHost(request: DeleteHostRequest, overrides?: CallOverrides): Promise<DeleteHostResponse> {
    return this.#invoke<DeleteHostResponse>((c, m, o, cb) => c.deleteHost(request, m, o, cb), overrides);
  }

  /** Adds an image to the catalog (nothing is fetched until a VM needs it on a host). */
  createImage(request: CreateImageRequest, overrides?: CallOverrides): Promise<CreateImageResponse> {
    return this.#invoke<CreateImageResponse>((c, m, o, cb) => c.createImage(request, m, o, cb), overrides);
  }

  /** The catalog, each image with the hosts that hold it. */
  listImages(request: ListImagesRequest, overrides?: CallOverrides): Promise<ListImagesResponse> {
    return this.#invoke<ListImagesResponse>((c, m, o, cb) => c.listImages(request, m, o, cb), overrides, true);
  }

  getImage(request: GetImageRequest, overrides?: CallOverrides): Promise<GetImageResponse> {
    return this.#invoke<GetImageResponse>((c, m, o, cb) => c.getImage(request, m, o, cb), overrides, true);
  }

  /** Refused (FAILED_PRECONDITION) while a VM record names the image. */
  deleteImage(request: DeleteImageRequest, overrides?: CallOverrides): Promise<DeleteImageResponse> {
    return this.#invoke<DeleteImageResponse>((c, m, o, cb) => c.deleteImage(request, m, o, cb), overrides);
  }

  /** Records a data volume, bound to `host_id` if given, else to its first VM's host. */
  createVolume(request: CreateVolumeRequest, overrides?: CallOverrides): Promise<CreateVolumeResponse> {
    return this.#invoke<CreateVolumeResponse>((c, m, o, cb) => c.createVolume(request, m, o, cb), overrides);
  }

  listVolumes(request: ListVolumesRequest, overrides?: CallOverrides): Promise<ListVolumesResponse> {
    return this.#invoke<ListVolumesResponse>((c, m, o, cb) => c.listVolumes(request, m, o, cb), overrides, true);
  }

  getVolume(request: GetVolumeRequest, overrides?: CallOverrides): Promise<GetVolumeResponse> {
    return this.#invoke<GetVolumeResponse>((c, m, o, cb) => c.getVolume(request, m, o, cb), overrides, true);
  }

  /** Deletes a detached volume and its data; refused (FAILED_PRECONDITION) while attached. */
  deleteVolume(request: DeleteVolumeRequest, overrides?: CallOverrides): Promise<DeleteVolumeResponse> {
    return this.#invoke<DeleteVolumeResponse>((c, m, o, cb) => c.deleteVolume(request, m, o, cb), overrides);
  }

  /** Attaches a volume to a VM (binding an unbound one to the VM's host); bumps the VM's generation. */
  attachVolume(request: AttachVolumeRequest, overrides?: CallOverrides): Promise<AttachVolumeResponse> {
    return this.#invoke<AttachVolumeResponse>((c, m, o, cb) => c.attachVolume(request, m, o, cb), overrides);
  }

  /** Detaches a volume from its VM; the volume and its data stay. */
  detachVolume(request: DetachVolumeRequest, overrides?: CallOverrides): Promise<DetachVolumeResponse> {
    return this.#invoke<DetachVolumeResponse>((c, m, o, cb) => c.detachVolume(request, m, o, cb), overrides);
  }

  /** Records a scale group; the leader's autoscaler starts it at `min_size`. */
  createScaleGroup(request: CreateScaleGroupRequest, overrides?: CallOverrides): Promise<CreateScaleGroupResponse> {
    return this.#invoke<CreateScaleGroupResponse>((c, m, o, cb) => c.createScaleGroup(request, m, o, cb), overrides);
  }

  listScaleGroups(request: ListScaleGroupsRequest, overrides?: CallOverrides): Promise<ListScaleGroupsResponse> {
    return this.#invoke<ListScaleGroupsResponse>((c, m, o, cb) => c.listScaleGroups(request, m, o, cb), overrides, true);
  }

  getScaleGroup(request: GetScaleGroupRequest, overrides?: CallOverrides): Promise<GetScaleGroupResponse> {
    return this.#invoke<GetScaleGroupResponse>((c, m, o, cb) => c.getScaleGroup(request, m, o, cb), overrides, true);
  }

  /** Changes only what the request sets: bounds, policy fields, protected members. */
  updateScaleGroup(request: UpdateScaleGroupRequest, overrides?: CallOverrides): Promise<UpdateScaleGroupResponse> {
    return this.#invoke<UpdateScaleGroupResponse>((c, m, o, cb) => c.updateScaleGroup(request, m, o, cb), overrides);
  }

  /** Refused (FAILED_PRECONDITION) while the group has members, unless `delete_vms`. */
  deleteScaleGroup(request: DeleteScaleGroupRequest, overrides?: CallOverrides): Promise<DeleteScaleGroupResponse> {
    return this.#invoke<DeleteScaleGroupResponse>((c, m, o, cb) => c.deleteScaleGroup(request, m, o, cb), overrides);
  }

  /**
   * Opens `WatchEvents` on `address` (by default the one that answered last), ending at `deadline`
   * (none: until cancelled). The stream is not redirected to a leader: callers that need an answer
   * pair it with polling (see `waitForVm`) or reopen it where its NOT_LEADER error points (see
   * `followWatch`).
   */
  watchEvents(request: WatchEventsRequest, deadline?: Date, address = this.address): ClientReadableStream<WatchEventsResponse> {
    return this.#client(address).watchEvents(request, new Metadata(), { deadline: deadline ?? Infinity });
  }

  /**
   * Resolves once the channel to `address` is connected; rejects as soon as a connection attempt
   * fails (as a unary call would: nobody listens, a TLS handshake refused) or `deadline` passes.
   */
  whenReady(address: string, deadline: Date): Promise<void> {
    const channel = this.#client(address).getChannel();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const state = channel.getConnectivityState(true);
        if (state === connectivityState.READY) return resolve();
        if (state === connectivityState.TRANSIENT_FAILURE || state === connectivityState.SHUTDOWN) {
          return reject(new Error(`cannot connect${this.#tlsHint("Failed to connect")}`));
        }
        channel.watchConnectivityState(state, deadline, (e) => (e ? reject(new Error("not connected by the deadline (see --timeout)")) : check()));
      };
      check();
    });
  }

  /**
   * Drops the channel to `address` (the next call makes a new one). After a failed connect, so
   * that a watch's next attempt connects at once instead of after grpc-js's own backoff (up to
   * two minutes), which would stack on the watch's.
   */
  forget(address: string): void {
    this.#clients.get(address)?.close();
    this.#clients.delete(address);
  }

  /** Closes every channel. Calls made afterwards fail. */
  close(): void {
    this.#closed = true;
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
    this.#tls?.close();
  }

  #client(address: string): ClusterServiceClient {
    if (this.#closed) throw new Error("ControllerClient is closed");
    let client = this.#clients.get(address);
    if (!client) {
      client = new ClusterServiceClient(address, channelCredentialsOf(this.#tls), grpcClientOptions());
      this.#clients.set(address, client);
    }
    return client;
  }

  /** What a failed connect may mean about TLS, said after the transport's own reason. */
  #tlsHint(message: string): string {
    if (this.#tls && /certificate|self.signed|unable to verify|CERT_|altname|handshake|alert/i.test(message)) {
      return "; the TLS handshake failed: is --tls-ca the CA that signed the controller's certificate, does that certificate name this address, and is yours signed by the same CA and still valid?";
    }
    if (!this.#tls && /Failed to connect|socket disconnected|ECONNRESET/i.test(message)) {
      return "; plaintext (--insecure): if the controller serves TLS, give --tls-ca/--tls-cert/--tls-key instead";
    }
    return "";
  }

  /** `repeatable`: the call may be sent again after it was cut off in flight (a read, an idempotent create). */
  async #invoke<T>(invoker: Invoker<T>, overrides: CallOverrides | undefined, repeatable = false): Promise<T> {
    const queue = this.#preferred
      ? [this.#preferred, ...this.endpoints.filter((e) => e !== this.#preferred)]
      : [...this.endpoints];
    const tried = new Set<string>();
    const failures: AttemptFailure[] = [];
    let followedLeader = false;
    for (let address = queue.shift(); address !== undefined; address = queue.shift()) {
      if (tried.has(address)) continue;
      tried.add(address);
      try {
        const response = await this.#attempt(address, invoker, overrides, repeatable);
        this.#preferred = address;
        return response;
      } catch (e) {
        const failure = e as AttemptFailure;
        if (!failure.tryNext) {
          // An earlier address may have got the request too (a cut-off call sent on): say so.
          if (failures.some((f) => f.unanswered) && !isUnanswered(failure.error)) throw asUnanswered(failure.error);
          throw failure.error;
        }
        failures.push(failure);
        const leader = failure.error.leader;
        if (leader && !followedLeader && !tried.has(leader)) {
          followedLeader = true;
          queue.unshift(leader);
        }
      }
    }
    throw unavailable(failures);
  }

  #attempt<T>(address: string, invoker: Invoker<T>, overrides: CallOverrides | undefined, repeatable: boolean): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const client = this.#client(address);
      const started = Date.now();
      const deadline = earliest(deadlineIn(this.timeoutMs), overrides?.deadline);
      invoker(client, new Metadata(), { deadline }, (err, response) => {
        if (!err) {
          resolve(response);
          return;
        }
        const error = fromGrpcError(err);
        const fromServer = (err.metadata?.get(ERROR_CODE_METADATA_KEY).length ?? 0) > 0;
        const connected = client.getChannel().getConnectivityState(false) === connectivityState.READY;
        const verdict = readFailure(error, err, fromServer, connected, repeatable);
        let message = error.message;
        if (verdict.message !== undefined) {
          message = `controller ${address}: ${verdict.message}`;
        } else if (!fromServer && verdict.code === ErrorCode.DeadlineExceeded) {
          const seconds = Math.round((deadline.getTime() - started) / 100) / 10;
          message = `controller ${address}: no answer within ${seconds}s (see --timeout)`;
        } else if (!fromServer && verdict.unanswered) {
          message = `controller ${address}: the call was cut off before an answer (${error.message})`;
        } else if (!fromServer && verdict.code === ErrorCode.Unavailable) {
          message = `controller ${address}: cannot connect (${transportReason(error.message)})${this.#tlsHint(error.message)}`;
        } else if (verdict.tryNext || verdict.unanswered) {
          message = `controller ${address}: ${error.message}`;
        }
        const Kind = verdict.unanswered ? NoAnswerError : BerthError;
        reject({
          address,
          tryNext: verdict.tryNext,
          unanswered: verdict.unanswered,
          error: new Kind(verdict.code, message, {
            cause: err,
            reasons: error.reasons,
            ...(error.leader ? { leader: error.leader } : {}),
          }),
        } satisfies AttemptFailure);
      });
    });
  }
}

/**
 * The error when no address gave an answer: every address with its reason; a
 * {@link NoAnswerError} when any of them may have carried the request out.
 */
function unavailable(failures: readonly AttemptFailure[]): BerthError {
  const code = failures.some((f) => f.error.code === ErrorCode.DeadlineExceeded)
    ? ErrorCode.DeadlineExceeded
    : ErrorCode.Unavailable;
  const only = failures.length === 1 ? failures[0] : undefined;
  const message = only
    ? only.error.message
    : `no controller could answer:\n  ${failures.map((f) => f.error.message).join("\n  ")}`;
  const Kind = failures.some((f) => f.unanswered) ? NoAnswerError : BerthError;
  return new Kind(code, message, { cause: failures.at(-1)?.error });
}

/** `error` as a {@link NoAnswerError}: an earlier attempt of the same call got no verdict. */
function asUnanswered(error: BerthError): NoAnswerError {
  return new NoAnswerError(error.code, error.message, {
    cause: error,
    reasons: error.reasons,
    ...(error.field ? { field: error.field } : {}),
    ...(error.leader ? { leader: error.leader } : {}),
  });
}
