import { invalidArgument, parseHostPort, validateHostId, validateLabels } from "@berth/core";
import type { AllocationRatio, Resources } from "@berth/api";

/** How an agent is run. */
export interface AgentOptions {
  hostId: string;
  /** Controllers to try, host:port each; the agent follows NotLeader answers among them. */
  controllers: string[];
  driver: DriverKind;
  /** Where the agent keeps its own state (and the fake driver its hypervisor state). */
  stateDir: string;
  /** Fake driver only: the capacity it offers. */
  capacity?: Partial<Resources>;
  /** libvirt driver only: how to reach libvirt and where VMs' disks and NICs go. */
  libvirt?: AgentLibvirtOptions;
  labels?: Record<string, string>;
  /** This host's overrides of the cluster's allocation ratios (0 or absent: the cluster's). */
  allocationRatio?: AllocationRatio;
  /** This host's override of the cluster's reserve (absent: the cluster's). */
  reserved?: Resources;
  /** Reconnect backoff bounds; each wait is jittered. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Commands run at once across VMs. */
  maxConcurrentCommands?: number;
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
  /** NICs: one per libvirt network or host bridge, in order. */
  networks?: { type: "network" | "bridge"; source: string }[];
  /** kvm (hardware virtualization) or qemu (TCG emulation). */
  domainType?: "kvm" | "qemu";
}

export interface ResolvedAgentOptions {
  hostId: string;
  controllers: string[];
  driver: DriverKind;
  stateDir: string;
  capacity: Partial<Resources> | undefined;
  libvirt: AgentLibvirtOptions | undefined;
  labels: Record<string, string>;
  allocationRatio: AllocationRatio | undefined;
  reserved: Resources | undefined;
  minBackoffMs: number;
  maxBackoffMs: number;
  maxConcurrentCommands: number;
}

/** Fills defaults and validates. Throws INVALID_ARGUMENT naming the option. */
export function resolveAgentOptions(o: AgentOptions): ResolvedAgentOptions {
  validateHostId(o.hostId, "host_id");
  if (o.controllers.length === 0) throw invalidArgument("controller", "at least one controller address is required (host:port)");
  for (const c of o.controllers) parseHostPort(c, "controller");
  if (!(DRIVER_KINDS as readonly string[]).includes(o.driver)) {
    throw invalidArgument("driver", `unknown driver '${String(o.driver)}' (available: ${DRIVER_KINDS.join(", ")})`);
  }
  if (o.driver !== "fake" && o.capacity) throw invalidArgument("capacity", "only the fake driver takes a configured capacity; libvirt reports the host's own");
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
  return {
    hostId: o.hostId,
    controllers: o.controllers,
    driver: o.driver,
    stateDir: o.stateDir,
    capacity: o.capacity,
    libvirt: o.libvirt,
    labels,
    allocationRatio: o.allocationRatio,
    reserved: o.reserved,
    minBackoffMs,
    maxBackoffMs,
    maxConcurrentCommands: o.maxConcurrentCommands ?? 16,
  };
}
