import { invalidArgument, parseSizeGib, parseSizeMib, validateHostId, validateLabels, type ResourceName } from "@berth/core";
import type { Resources } from "@berth/api";

/** How an agent is run. */
export interface AgentOptions {
  hostId: string;
  /** Controllers to try, host:port each; the agent follows NotLeader answers among them. */
  controllers: string[];
  driver: "fake";
  /** Where the agent keeps its own state (and the fake driver its hypervisor state). */
  stateDir: string;
  /** Fake driver only: the capacity it offers. */
  capacity?: Partial<Resources>;
  labels?: Record<string, string>;
  /** Reconnect backoff bounds; each wait is jittered. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Commands run at once across VMs. */
  maxConcurrentCommands?: number;
}

export interface ResolvedAgentOptions {
  hostId: string;
  controllers: string[];
  driver: "fake";
  stateDir: string;
  capacity: Partial<Resources> | undefined;
  labels: Record<string, string>;
  minBackoffMs: number;
  maxBackoffMs: number;
  maxConcurrentCommands: number;
}

const HOST_PORT = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

/** Fills defaults and validates. Throws INVALID_ARGUMENT naming the option. */
export function resolveAgentOptions(o: AgentOptions): ResolvedAgentOptions {
  validateHostId(o.hostId, "host_id");
  if (o.controllers.length === 0) throw invalidArgument("controller", "at least one controller address is required (host:port)");
  for (const c of o.controllers) {
    if (!HOST_PORT.test(c)) throw invalidArgument("controller", `'${c}' is not host:port (example: 127.0.0.1:7400)`);
  }
  if (o.driver !== "fake") throw invalidArgument("driver", `unknown driver '${String(o.driver)}' (available: fake)`);
  if (!o.stateDir) throw invalidArgument("state_dir", "is required");
  const labels = o.labels ?? {};
  validateLabels(labels, "labels");
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
    labels,
    minBackoffMs,
    maxBackoffMs,
    maxConcurrentCommands: o.maxConcurrentCommands ?? 16,
  };
}

/** Parses `vcpus=16,memory=64GiB,disk=1TiB` (any subset). Throws INVALID_ARGUMENT naming `field`. */
export function parseCapacity(text: string, field = "capacity"): Partial<Resources> {
  const out: Partial<Record<ResourceName, number>> = {};
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const [k, v] = part.split("=", 2).map((s) => s.trim());
    if (!k || !v) throw invalidArgument(field, `'${part}' is not key=value (keys: vcpus, memory, disk)`);
    if (k === "vcpus") {
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < 1) throw invalidArgument(`${field}.vcpus`, `'${v}' is not a positive whole number`);
      out.vcpus = n;
    } else if (k === "memory") out.memoryMib = parseSizeMib(v, `${field}.memory`);
    else if (k === "disk") out.diskGib = parseSizeGib(v, `${field}.disk`);
    else throw invalidArgument(field, `unknown key '${k}' (keys: vcpus, memory, disk)`);
  }
  return out;
}

/** Parses `k=v` label flags. */
export function parseLabels(items: readonly string[], field = "label"): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const item of items) {
    const i = item.indexOf("=");
    if (i <= 0) throw invalidArgument(field, `'${item}' is not key=value`);
    labels[item.slice(0, i)] = item.slice(i + 1);
  }
  return labels;
}
