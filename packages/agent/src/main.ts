#!/usr/bin/env node
import { parseArgs } from "node:util";
import { pino } from "pino";
import type { HypervisorDriver } from "@berth/hypervisor";
import { openDriver } from "./driver-factory.js";
import { Agent } from "./agent.js";
import { loadAgentState } from "./agent-state.js";
import { invalidArgument, messageForFlags, parseCapacity, parseHostPortList, parseLabelAssignments, stopWhenParentGone } from "@berth/core";
import { resolveAgentOptions, type AgentLibvirtOptions, type DriverKind } from "./options.js";

const HELP = `berth-agent: runs on every host; reports capacity and executes placement commands.

Usage: berth-agent --host-id ID --controller HOST:PORT[,HOST:PORT...] --state-dir DIR [options]

  --host-id ID            this host's name in the cluster (DNS label)
  --controller ADDRS      controllers to connect to (default: $BERTH_CONTROLLER); the agent
                          follows the leader among them
  --driver fake|libvirt   hypervisor driver (default fake: a simulated hypervisor kept in the
                          state dir; libvirt: real VMs through libvirtd)
  --state-dir DIR         where the agent (and the fake hypervisor) keep state across restarts
  --capacity SPEC         fake driver: what the host offers, e.g. vcpus=16,memory=64GiB,disk=1TiB
  --libvirt-uri URI       libvirt driver: connection URI (default qemu:///system)
  --storage-pool NAME     libvirt driver: storage pool for VM disks (default "default")
  --network NAME          libvirt driver: attach a NIC on this libvirt network (repeatable)
  --bridge NAME           libvirt driver: attach a NIC on this host bridge (repeatable)
  --domain-type kvm|qemu  libvirt driver: kvm (default when /dev/kvm is usable) or qemu (TCG)
  --label K=V             host label (repeatable)
  --cpu-ratio X           this host's CPU allocation ratio (default: the cluster's; e.g. 1.5)
  --memory-ratio X        this host's memory allocation ratio (default: the cluster's)
  --disk-ratio X          this host's disk allocation ratio (default: the cluster's)
  --reserve SPEC          what this host keeps for itself, e.g. memory=16GiB,vcpus=2
                          (default: the cluster's reserve)
  --log-level LEVEL       trace|debug|info|warn|error (default info, or LOG_LEVEL)
  -h, --help              this help

With --driver libvirt the agent needs what virsh needs on that URI (for qemu:///system: root or
the libvirt group), and virsh on its PATH; see deploy/libvirt-host.md.

Exit status: 0 after SIGINT/SIGTERM, 1 when the controller rejects this agent for good or the
hypervisor cannot be opened, 2 on bad arguments.
`;

/** The libvirt flags given, as agent options (absent when none is given). */
function libvirtFlags(args: Record<string, string | string[] | boolean | undefined>): { libvirt?: AgentLibvirtOptions } {
  const uri = args["libvirt-uri"] as string | undefined;
  const storagePool = args["storage-pool"] as string | undefined;
  const domainType = args["domain-type"] as string | undefined;
  const networks = [
    ...((args.network as string[] | undefined) ?? []).map((source) => ({ type: "network" as const, source })),
    ...((args.bridge as string[] | undefined) ?? []).map((source) => ({ type: "bridge" as const, source })),
  ];
  if (uri === undefined && storagePool === undefined && domainType === undefined && networks.length === 0) return {};
  if (domainType !== undefined && domainType !== "kvm" && domainType !== "qemu") {
    throw invalidArgument("--domain-type", `'${domainType}' is not kvm or qemu`);
  }
  return {
    libvirt: {
      ...(uri !== undefined ? { uri } : {}),
      ...(storagePool !== undefined ? { storagePool } : {}),
      ...(networks.length > 0 ? { networks } : {}),
      ...(domainType !== undefined ? { domainType } : {}),
    },
  };
}

/** A ratio flag: a positive number, or 0 when not given (the cluster's ratio applies). */
function parseRatio(text: string | undefined, flag: string): number {
  if (text === undefined) return 0;
  const n = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text.trim()) || !(n > 0) || n > 100) throw invalidArgument(flag, `'${text}' is not a ratio from 0 to 100 (example: 1.5)`);
  return n;
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        "host-id": { type: "string" },
        controller: { type: "string" },
        driver: { type: "string", default: "fake" },
        "state-dir": { type: "string" },
        capacity: { type: "string" },
        "libvirt-uri": { type: "string" },
        "storage-pool": { type: "string" },
        network: { type: "string", multiple: true },
        bridge: { type: "string", multiple: true },
        "domain-type": { type: "string" },
        label: { type: "string", multiple: true },
        "cpu-ratio": { type: "string" },
        "memory-ratio": { type: "string" },
        "disk-ratio": { type: "string" },
        reserve: { type: "string" },
        "log-level": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }).values;
  } catch (e) {
    process.stderr.write(`berth-agent: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  let options;
  try {
    const controllerFlag = args.controller === undefined && process.env.BERTH_CONTROLLER ? "BERTH_CONTROLLER" : "--controller";
    const controllers = parseHostPortList(args.controller ?? process.env.BERTH_CONTROLLER ?? "", controllerFlag);
    options = resolveAgentOptions({
      hostId: args["host-id"] ?? "",
      controllers,
      driver: args.driver as DriverKind,
      stateDir: args["state-dir"] ?? "",
      ...(args.capacity ? { capacity: parseCapacity(args.capacity, "--capacity") } : {}),
      ...libvirtFlags(args),
      labels: parseLabelAssignments(args.label ?? [], "--label"),
      ...(args["cpu-ratio"] || args["memory-ratio"] || args["disk-ratio"]
        ? {
            allocationRatio: {
              vcpus: parseRatio(args["cpu-ratio"], "--cpu-ratio"),
              memory: parseRatio(args["memory-ratio"], "--memory-ratio"),
              disk: parseRatio(args["disk-ratio"], "--disk-ratio"),
            },
          }
        : {}),
      ...(args.reserve ? { reserved: { vcpus: 0, memoryMib: 0, diskGib: 0, ...parseCapacity(args.reserve, "--reserve") } } : {}),
    });
  } catch (e) {
    const flags = {
      host_id: "--host-id",
      controller: "--controller",
      driver: "--driver",
      state_dir: "--state-dir",
      labels: "--label",
      capacity: "--capacity",
      libvirt: "--libvirt-uri/--storage-pool/--network/--bridge/--domain-type",
    };
    process.stderr.write(`berth-agent: ${messageForFlags(e, flags)}\n`);
    return 2;
  }
  const log = pino({ name: "berth-agent", level: args["log-level"] ?? process.env.LOG_LEVEL ?? "info" }).child({ hostId: options.hostId });

  let driver: HypervisorDriver;
  let state;
  try {
    driver = await openDriver(options, log);
    state = await loadAgentState(options.stateDir);
  } catch (e) {
    log.fatal({ err: e }, "cannot open the hypervisor or the agent state");
    process.stderr.write(`berth-agent: cannot open the hypervisor or the agent state: ${(e as Error).message}\n`);
    return 1;
  }
  const agent = new Agent(options, driver, state.lastLeaderEpoch, log);
  log.info({ bootId: agent.bootId, controllers: options.controllers, driver: driver.kind, domains: (await driver.list()).length }, "agent starting");
  const abort = new AbortController();
  const stop = (why: string): void => {
    log.info({ why }, "stopping");
    abort.abort();
  };
  process.once("SIGINT", () => stop("SIGINT"));
  process.once("SIGTERM", () => stop("SIGTERM"));
  stopWhenParentGone(() => stop("supervisor gone"));
  try {
    await agent.run(abort.signal);
    return 0;
  } catch (e) {
    log.fatal({ err: e }, "agent stopped");
    return 1;
  } finally {
    await driver.close();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
    setTimeout(() => process.exit(code), 200).unref();
  },
  (e: unknown) => {
    process.stderr.write(`berth-agent: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
