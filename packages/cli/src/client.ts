import {
  connectivityState,
  credentials,
  Metadata,
  type CallOptions,
  type ClientReadableStream,
  type ServiceError,
} from "@grpc/grpc-js";
import {
  ClusterServiceClient,
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
  type DeleteVmRequest,
  type DeleteVmResponse,
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
} from "@berth/api";
import { BerthError, ErrorCode, ERROR_CODE_METADATA_KEY, deadlineIn, fromGrpcError, grpcClientOptions } from "@berth/core";

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
  /** The next address may be tried: the request was refused unprocessed or never sent. */
  tryNext: boolean;
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
 *   UNAVAILABLE (a follower, or a controller that lost its store), never after the request may
 *   have been processed;
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

  constructor(options: ControllerClientOptions) {
    if (options.endpoints.length === 0) throw new Error("ControllerClient needs at least one endpoint");
    this.endpoints = [...options.endpoints];
    this.timeoutMs = options.timeoutMs;
  }

  /** The address that answered last (or the first configured one). */
  get address(): string {
    return this.#preferred ?? (this.endpoints[0] as string);
  }

  createVm(request: CreateVmRequest, overrides?: CallOverrides): Promise<CreateVmResponse> {
    return this.#invoke<CreateVmResponse>((c, m, o, cb) => c.createVm(request, m, o, cb), overrides);
  }

  /** Creates all the VMs or none (one transaction). */
  createVms(request: CreateVmsRequest, overrides?: CallOverrides): Promise<CreateVmsResponse> {
    return this.#invoke<CreateVmsResponse>((c, m, o, cb) => c.createVms(request, m, o, cb), overrides);
  }

  /** A dry run of placing the VMs: nothing is written. */
  planPlacement(request: PlanPlacementRequest, overrides?: CallOverrides): Promise<PlanPlacementResponse> {
    return this.#invoke<PlanPlacementResponse>((c, m, o, cb) => c.planPlacement(request, m, o, cb), overrides);
  }

  getVm(request: GetVmRequest, overrides?: CallOverrides): Promise<GetVmResponse> {
    return this.#invoke<GetVmResponse>((c, m, o, cb) => c.getVm(request, m, o, cb), overrides);
  }

  listVms(request: ListVmsRequest, overrides?: CallOverrides): Promise<ListVmsResponse> {
    return this.#invoke<ListVmsResponse>((c, m, o, cb) => c.listVms(request, m, o, cb), overrides);
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

  listHosts(request: ListHostsRequest, overrides?: CallOverrides): Promise<ListHostsResponse> {
    return this.#invoke<ListHostsResponse>((c, m, o, cb) => c.listHosts(request, m, o, cb), overrides);
  }

  getHost(request: GetHostRequest, overrides?: CallOverrides): Promise<GetHostResponse> {
    return this.#invoke<GetHostResponse>((c, m, o, cb) => c.getHost(request, m, o, cb), overrides);
  }

  createGroup(request: CreateGroupRequest, overrides?: CallOverrides): Promise<CreateGroupResponse> {
    return this.#invoke<CreateGroupResponse>((c, m, o, cb) => c.createGroup(request, m, o, cb), overrides);
  }

  listGroups(request: ListGroupsRequest, overrides?: CallOverrides): Promise<ListGroupsResponse> {
    return this.#invoke<ListGroupsResponse>((c, m, o, cb) => c.listGroups(request, m, o, cb), overrides);
  }

  /** Refused (FAILED_PRECONDITION) while the group has members. */
  deleteGroup(request: DeleteGroupRequest, overrides?: CallOverrides): Promise<DeleteGroupResponse> {
    return this.#invoke<DeleteGroupResponse>((c, m, o, cb) => c.deleteGroup(request, m, o, cb), overrides);
  }

  getClusterConfig(request: GetClusterConfigRequest, overrides?: CallOverrides): Promise<GetClusterConfigResponse> {
    return this.#invoke<GetClusterConfigResponse>((c, m, o, cb) => c.getClusterConfig(request, m, o, cb), overrides);
  }

  /** Replaces the whole cluster config; the controller validates it. */
  updateClusterConfig(
    request: UpdateClusterConfigRequest,
    overrides?: CallOverrides,
  ): Promise<UpdateClusterConfigResponse> {
    return this.#invoke<UpdateClusterConfigResponse>((c, m, o, cb) => c.updateClusterConfig(request, m, o, cb), overrides);
  }

  /**
   * Opens `WatchEvents` on the address that answered last, ending at `deadline`. The stream is not
   * redirected to a leader: callers that need an answer pair it with polling (see `waitForVm`).
   */
  watchEvents(request: WatchEventsRequest, deadline: Date): ClientReadableStream<WatchEventsResponse> {
    return this.#client(this.address).watchEvents(request, new Metadata(), { deadline });
  }

  /** Closes every channel. Calls made afterwards fail. */
  close(): void {
    this.#closed = true;
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
  }

  #client(address: string): ClusterServiceClient {
    if (this.#closed) throw new Error("ControllerClient is closed");
    let client = this.#clients.get(address);
    if (!client) {
      client = new ClusterServiceClient(address, credentials.createInsecure(), grpcClientOptions());
      this.#clients.set(address, client);
    }
    return client;
  }

  async #invoke<T>(invoker: Invoker<T>, overrides: CallOverrides | undefined): Promise<T> {
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
        const response = await this.#attempt(address, invoker, overrides);
        this.#preferred = address;
        return response;
      } catch (e) {
        const failure = e as AttemptFailure;
        if (!failure.tryNext) throw failure.error;
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

  #attempt<T>(address: string, invoker: Invoker<T>, overrides: CallOverrides | undefined): Promise<T> {
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
        const tryNext =
          error.code === ErrorCode.NotLeader ||
          error.code === ErrorCode.Unavailable ||
          // The deadline passed before a connection existed: the request was never sent.
          (error.code === ErrorCode.DeadlineExceeded && !connected && !fromServer);
        let message = error.message;
        if (!fromServer && error.code === ErrorCode.DeadlineExceeded) {
          const seconds = Math.round((deadline.getTime() - started) / 100) / 10;
          message = `controller ${address}: no answer within ${seconds}s (see --timeout)`;
        } else if (!fromServer && error.code === ErrorCode.Unavailable) {
          message = `controller ${address}: cannot connect (${transportReason(error.message)})`;
        } else if (tryNext) {
          message = `controller ${address}: ${error.message}`;
        }
        reject({
          address,
          tryNext,
          error: new BerthError(error.code, message, {
            cause: err,
            reasons: error.reasons,
            ...(error.leader ? { leader: error.leader } : {}),
          }),
        } satisfies AttemptFailure);
      });
    });
  }
}

/** The error when no address gave an answer: every address with its reason. */
function unavailable(failures: readonly AttemptFailure[]): BerthError {
  const code = failures.some((f) => f.error.code === ErrorCode.DeadlineExceeded)
    ? ErrorCode.DeadlineExceeded
    : ErrorCode.Unavailable;
  const only = failures.length === 1 ? failures[0] : undefined;
  const message = only
    ? only.error.message
    : `no controller could answer:\n  ${failures.map((f) => f.error.message).join("\n  ")}`;
  return new BerthError(code, message, { cause: failures.at(-1)?.error });
}
