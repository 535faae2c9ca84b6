import { invalidArgument, parseHostPort, validateHostId, validateLabels, type TlsFiles } from "@berth/core";
import type { AllocationRatio, Resources } from "@berth/api";

/** How an agent is run. */
export interface AgentOptions {
  hostId: string;
  /** Controllers to try, host:port each; the agent follows NotLeader answers among them. */
  controllers: string[];
  /**
   * Mutual TLS to the controllers: the certificate must be a host certificate for `hostId` (the
   * controller takes the host id from it). Re-read when the files change. Absent: plaintext, which
   * berth-agent refuses unless `--insecure` is given.
   */
  tls?: TlsFiles;
  driver: DriverKind;
  /** Where the agent keeps its own state (and the fake driver its hypervisor state). */
  stateDir: string;
  /** Fake driver only: the capacity it offers. */
  capacity?: Partial<Resources>;
  /** Fake driver only: how fast its simulated live migrations copy memory (MiB/s; the fake's default 1024). */
  fakeMigrationBandwidthMibPerS?: number;
  /**
   * Fake driver only: the networks it offers VMs' NICs (`--network`/`--bridge`), each with a /16 of
   * its own for the addresses its DHCP hands out (`default` 10.122.0.0/16, as the fake's default).
   * @default one network, `default`
   */
  fakeNetworks?: { type: "network" | "bridge"; source: string }[];
  /** libvirt driver only: how to reach libvirt and where VMs' disks and NICs go. */
  libvirt?: AgentLibvirtOptions;
  labels?: Record<string, string>;
  /** This host's overrides of the cluster's allocation ratios (0 or absent: the cluster's). */
  allocationRatio?: AllocationRatio;
  /** This host's override of the cluster's reserve (absent: the cluster's). */
  reserved?: Resources;
  /**
   * Move this host to the cluster with this id (`--join-cluster`): Hello carries it with
   * `last_leader_epoch` 0, and a Welcome from that cluster is adopted (persisted) and resets the
   * leader epoch, as a fresh agent's would. A Welcome from any other cluster is refused. Once the
   * stored cluster id is this one the option changes nothing (a unit file that keeps the flag does
   * not reset the epoch at every start). Default: none (keep the stored cluster).
   */
  joinCluster?: string;
  /**
   * Reconnect backoff bounds; each wait is jittered ("equal jitter": half fixed, half random).
   * Defaults 250 ms and 5 s.
   */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /**
   * While the controllers answer NotLeader (an election in progress, or the named leader not
   * answering yet), reconnects are spaced at most this much, so the agent reaches a new leader
   * within about this long after it is elected. Applies for the first 30 s of such answers, then
   * the normal backoff. Default 500 ms (capped by `maxBackoffMs`).
   */
  electionRetryMs?: number;
  /**
   * After a DUPLICATE_HOST rejection (another live stream speaks for this host id), the agent waits
   * between half this and this (jittered) before trying again. At least `2 × maxBackoffMs`, so it is
   * always longer than a normal reconnect. Default: max(15 s, 2 × maxBackoffMs).
   */
  duplicateHostBackoffMs?: number;
  /**
   * Bound on connecting to one controller when the connection hangs (a refused or unresolvable
   * address fails at once, whatever this is). Default 5 s.
   */
  connectTimeoutMs?: number;
  /** Commands run at once across VMs. Default 16. */
  maxConcurrentCommands?: number;
  /**
   * HOST:PORT of the admin HTTP port (plain HTTP): `/healthz` (200 while connected to a leader and
   * the hypervisor answers, else 503 with a JSON reason) and `/metrics` (Prometheus). Port 0 lets
   * the OS choose. @default off: no admin port unless given
   */
  adminListen?: string;
}

/** The hypervisor drivers an agent can run. */
export const DRIVER_KINDS = ["fake", "libvirt"] as const;
export type DriverKind = (typeof DRIVER_KINDS)[number];

/** The libvirt driver's settings an operator gives the agent (the driver's own defaults apply to the rest). */
export interface AgentLibvirtOptions {
  /** Connection URI, e.g. qemu:///system. */
  uri?: string;
  /** Storage pool for VM disk volumes. */
  storagePool?: string;
  /**
   * The libvirt networks and host bridges this host offers VMs' NICs (`--network`, `--bridge`);
   * a VM gets a NIC only when its spec asks. Absent: every libvirt network, no bridge.
   */
  networks?: { type: "network" | "bridge"; source: string }[];
  /** kvm (hardware virtualization) or qemu (TCG emulation). */
  domainType?: "kvm" | "qemu";
  /**
   * A Linux watchdog device (e.g. /dev/watchdog from softdog) petted while the leader is heard: the
   * kernel resets the host when the agent stops petting. Absent: the driver powers off fence domains itself.
   */
  watchdogDevice?: string;
  /**
   * Where other hosts' libvirtd reach this one to migrate a domain here (e.g.
   * qemu+tls://host-3.lab/system); default the connection URI, which only works on one machine.
   */
  migrationUri?: string;
  /** The data channel of a migration into this host (e.g. tcp://10.0.0.3), when libvirt's default does not do. */
  migrationDataUri?: string;
}

export interface ResolvedAgentOptions {
  hostId: string;
  controllers: string[];
  tls: TlsFiles | undefined;
  driver: DriverKind;
  stateDir: string;
  capacity: Partial<Resources> | undefined;
  fakeMigrationBandwidthMibPerS: number | undefined;
  fakeNetworks: { type: "network" | "bridge"; source: string }[] | undefined;
  libvirt: AgentLibvirtOptions | undefined;
  labels: Record<string, string>;
  allocationRatio: AllocationRatio | undefined;
  reserved: Resources | undefined;
  joinCluster: string | undefined;
  minBackoffMs: number;
  maxBackoffMs: number;
  electionRetryMs: number;
  duplicateHostBackoffMs: number;
  connectTimeoutMs: number;
  maxConcurrentCommands: number;
  adminListen: string | undefined;
}

/** Longest cluster id `joinCluster` takes. */
export const MAX_CLUSTER_ID_LENGTH = 128;

/**
 * Fills defaults (documented on {@link AgentOptions}) and validates. Throws INVALID_ARGUMENT naming
 * the option (snake_case, as `messageForFlags` maps them to flags).
 */
export function resolveAgentOptions(o: AgentOptions): ResolvedAgentOptions {
  validateHostId(o.hostId, "host_id");
  if (o.controllers.length === 0) throw invalidArgument("controller", "at least one controller address is required (host:port)");
  for (const c of o.controllers) parseHostPort(c, "controller");
  if (!(DRIVER_KINDS as readonly string[]).includes(o.driver)) {
    throw invalidArgument("driver", `unknown driver '${String(o.driver)}' (available: ${DRIVER_KINDS.join(", ")})`);
  }
  if (o.driver !== "fake" && o.capacity) throw invalidArgument("capacity", "only the fake driver takes a configured capacity; libvirt reports the host's own");
  if (o.driver !== "fake" && o.fakeMigrationBandwidthMibPerS !== undefined) throw invalidArgument("fake_migration_bandwidth", "only the fake driver simulates its migration bandwidth");
  if (o.fakeMigrationBandwidthMibPerS !== undefined && !(Number.isFinite(o.fakeMigrationBandwidthMibPerS) && o.fakeMigrationBandwidthMibPerS > 0)) {
    throw invalidArgument("fake_migration_bandwidth", `must be a number of MiB/s > 0 (got ${o.fakeMigrationBandwidthMibPerS})`);
  }
  if (o.driver !== "fake" && o.fakeNetworks) throw invalidArgument("fake_networks", "only the fake driver takes simulated networks");
  if (o.driver !== "libvirt" && o.libvirt) throw invalidArgument("libvirt", `libvirt settings given, but the driver is '${o.driver}'`);
  if (!o.stateDir) throw invalidArgument("state_dir", "is required");
  const labels = o.labels ?? {};
  validateLabels(labels, "labels");
  for (const [k, v] of Object.entries(o.allocationRatio ?? {})) {
    if (!Number.isFinite(v) || v < 0 || v > 100) throw invalidArgument(`${k}_ratio`, `must be a number from 0 to 100 (got ${v})`);
  }
  const minBackoffMs = o.minBackoffMs ?? 250;
  const maxBackoffMs = o.maxBackoffMs ?? 5_000;
  if (!(minBackoffMs > 0 && maxBackoffMs >= minBackoffMs)) {
    throw invalidArgument("backoff", "need 0 < min_backoff_ms ≤ max_backoff_ms");
  }
  const electionRetryMs = Math.min(o.electionRetryMs ?? 500, maxBackoffMs);
  if (!(electionRetryMs > 0)) throw invalidArgument("election_retry_ms", "must be > 0");
  const duplicateHostBackoffMs = o.duplicateHostBackoffMs ?? Math.max(15_000, 2 * maxBackoffMs);
  if (!(duplicateHostBackoffMs >= 2 * maxBackoffMs)) {
    throw invalidArgument("duplicate_host_backoff_ms", `must be at least 2 × max_backoff_ms (${2 * maxBackoffMs}), so that it waits longer than a normal reconnect`);
  }
  const connectTimeoutMs = o.connectTimeoutMs ?? 5_000;
  if (!(connectTimeoutMs > 0)) throw invalidArgument("connect_timeout_ms", "must be > 0");
  if (o.adminListen !== undefined) parseHostPort(o.adminListen, "admin_listen", { allowPortZero: true });
  const joinCluster = o.joinCluster === undefined || o.joinCluster === "" ? undefined : o.joinCluster;
  if (joinCluster !== undefined && (joinCluster.length > MAX_CLUSTER_ID_LENGTH || !/^[\x21-\x7e]+$/.test(joinCluster))) {
    throw invalidArgument("join_cluster", `must be 1-${MAX_CLUSTER_ID_LENGTH} printable characters without spaces`);
  }
  return {
    hostId: o.hostId,
    controllers: o.controllers,
    tls: o.tls,
    driver: o.driver,
    stateDir: o.stateDir,
    capacity: o.capacity,
    fakeMigrationBandwidthMibPerS: o.fakeMigrationBandwidthMibPerS,
    fakeNetworks: o.fakeNetworks,
    libvirt: o.libvirt,
    labels,
    allocationRatio: o.allocationRatio,
    reserved: o.reserved,
    joinCluster,
    minBackoffMs,
    maxBackoffMs,
    electionRetryMs,
    duplicateHostBackoffMs,
    connectTimeoutMs,
    maxConcurrentCommands: o.maxConcurrentCommands ?? 16,
    adminListen: o.adminListen,
  };
}
