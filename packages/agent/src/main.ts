#!/usr/bin/env node
import { parseArgs } from "node:util";
import { pino, type Logger } from "pino";
import type { HypervisorDriver } from "@berth/hypervisor";
import { openDriver } from "./driver-factory.js";
import { Agent } from "./agent.js";
import { loadAgentState } from "./agent-state.js";
import { lockStateDir, StateDirLockedError, type StateDirLock } from "./state-lock.js";
import {
  BERTH_VERSION,
  BerthError,
  ErrorCode,
  invalidArgument,
  messageForFlags,
  parseCapacity,
  parseHostPortList,
  parseLabelAssignments,
  resolveTransport,
  silenceIpServernameWarning,
  stopWhenParentGone,
  TLS_FLAGS,
  TLS_HELP,
  startAdminServer,
  type AdminServer,
} from "@berth/core";
import { agentAdminRoutes, AgentPrometheusMetrics } from "./metrics.js";
import { resolveAgentOptions, type AgentLibvirtOptions, type DriverKind, type ResolvedAgentOptions } from "./options.js";

const HELP = `berth-agent: runs on every host; reports capacity and executes placement commands.

Usage: berth-agent --host-id ID --controller HOST:PORT[,HOST:PORT...] --state-dir DIR [options]

  --host-id ID            this host's name in the cluster (DNS label)
  --controller ADDRS      controllers to connect to (default: $BERTH_CONTROLLER); the agent
                          follows the leader among them
  --driver fake|libvirt   hypervisor driver (default fake: a simulated hypervisor kept in the
                          state dir; libvirt: real VMs through libvirtd)
  --state-dir DIR         where the agent (and the fake hypervisor) keep state across restarts;
                          one agent per directory (agent.lock in it names the one running)
  --join-cluster ID       move this host to the cluster with this id: the agent forgets the
                          cluster and leader epoch it kept, obeys only controllers of cluster ID,
                          and adopts it at the first Welcome; its existing domains are reported
                          and left alone by that cluster (orphans). Without it, an agent that
                          belongs to a cluster refuses controllers of any other
  --capacity SPEC         fake driver: what the host offers, e.g. vcpus=16,memory=64GiB,disk=1TiB
  --fake-migration-bandwidth MIB_S
                          fake driver: how fast simulated live migrations copy memory, in MiB/s
                          (default 1024: a 1 GiB VM moves in about a second)
  --libvirt-uri URI       libvirt driver: connection URI (default qemu:///system)
  --storage-pool NAME     libvirt driver: storage pool for VM disks (default "default")
  --network NAME          a libvirt network this host offers VMs' NICs (repeatable; a VM gets a NIC
                          only when its spec asks for that network). Fake driver: a simulated
                          network with a DHCP of its own (default: one network, "default")
  --bridge NAME           a host bridge this host offers VMs' NICs (repeatable; fake: simulated)
  --domain-type kvm|qemu  libvirt driver: kvm (default when /dev/kvm is usable) or qemu (TCG)
  --watchdog-device PATH  libvirt driver: a Linux watchdog device (e.g. /dev/watchdog, softdog in
                          a lab) petted while the leader is heard; the kernel resets the host if
                          the agent stops. Without it the agent powers off its restart-policy VMs
                          itself when no leader is heard for the fence timeout (see
                          deploy/libvirt-host.md for the residual risk of each)
  --migration-uri URI     libvirt driver: where other hosts' libvirtd reach this one to migrate
                          VMs here, e.g. qemu+tls://host-3.lab/system (default: --libvirt-uri,
                          which only works when both ends share a machine)
  --migration-data-uri URI
                          libvirt driver: the data channel of migrations into this host, e.g.
                          tcp://10.0.0.3 (default: libvirt's own choice)
  --label K=V             host label (repeatable)
  --cpu-ratio X           this host's CPU allocation ratio (default: the cluster's; e.g. 1.5)
  --memory-ratio X        this host's memory allocation ratio (default: the cluster's)
  --disk-ratio X          this host's disk allocation ratio (default: the cluster's)
  --reserve SPEC          what this host keeps for itself, e.g. memory=16GiB,vcpus=2
                          (default: the cluster's reserve)
${TLS_HELP}
                          The certificate must be a host certificate for --host-id
                          ('berth certs issue host ID'): the controller knows the host by it
  --admin-listen HOST:PORT
                          serve the admin HTTP port (plain HTTP): /healthz answers 200
                          {"status":"ok","controller":…} while a leader has welcomed this agent
                          and the hypervisor answers, else 503 with a JSON reason; /metrics is
                          Prometheus. Off unless given; port 0 picks one
  --log-level LEVEL       trace|debug|info|warn|error (default info, or LOG_LEVEL)
  -V, --version           print the version
  -h, --help              this help

With --driver libvirt the agent needs what virsh needs on that URI (for qemu:///system: root or
the libvirt group), and virsh on its PATH; see deploy/libvirt-host.md.

A controller of another cluster (REJECT_REASON_FOREIGN_CLUSTER) or one that finds this host id
already connected (DUPLICATE_HOST: another agent with the same --host-id?) is logged and retried
with backoff; the agent does not exit for it.

Exit status: 0 after SIGINT/SIGTERM, 1 when the controller rejects the Hello as invalid, the
hypervisor or the state cannot be opened, or another agent holds the state dir; 2 on bad arguments.
`;

/** The networks a fake host offers (`--network`, `--bridge`), as agent options (absent when none is given). */
function fakeNetworkFlags(args: Record<string, string | string[] | boolean | undefined>): { fakeNetworks?: { type: "network" | "bridge"; source: string }[] } {
  const networks = [
    ...((args.network as string[] | undefined) ?? []).map((source) => ({ type: "network" as const, source })),
    ...((args.bridge as string[] | undefined) ?? []).map((source) => ({ type: "bridge" as const, source })),
  ];
  return networks.length > 0 ? { fakeNetworks: networks } : {};
}

/** The libvirt flags given, as agent options (absent when none is given). */
function libvirtFlags(args: Record<string, string | string[] | boolean | undefined>): { libvirt?: AgentLibvirtOptions } {
  const uri = args["libvirt-uri"] as string | undefined;
  const storagePool = args["storage-pool"] as string | undefined;
  const domainType = args["domain-type"] as string | undefined;
  const watchdogDevice = args["watchdog-device"] as string | undefined;
  const migrationUri = args["migration-uri"] as string | undefined;
  const migrationDataUri = args["migration-data-uri"] as string | undefined;
  const networks = [
    ...((args.network as string[] | undefined) ?? []).map((source) => ({ type: "network" as const, source })),
    ...((args.bridge as string[] | undefined) ?? []).map((source) => ({ type: "bridge" as const, source })),
  ];
  if (uri === undefined && storagePool === undefined && domainType === undefined && networks.length === 0 && watchdogDevice === undefined && migrationUri === undefined && migrationDataUri === undefined) return {};
  if (domainType !== undefined && domainType !== "kvm" && domainType !== "qemu") {
    throw invalidArgument("--domain-type", `'${domainType}' is not kvm or qemu`);
  }
  return {
    libvirt: {
      ...(uri !== undefined ? { uri } : {}),
      ...(storagePool !== undefined ? { storagePool } : {}),
      ...(networks.length > 0 ? { networks } : {}),
      ...(domainType !== undefined ? { domainType } : {}),
      ...(watchdogDevice !== undefined ? { watchdogDevice } : {}),
      ...(migrationUri !== undefined ? { migrationUri } : {}),
      ...(migrationDataUri !== undefined ? { migrationDataUri } : {}),
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
        "join-cluster": { type: "string" },
        capacity: { type: "string" },
        "fake-migration-bandwidth": { type: "string" },
        "libvirt-uri": { type: "string" },
        "storage-pool": { type: "string" },
        network: { type: "string", multiple: true },
        bridge: { type: "string", multiple: true },
        "domain-type": { type: "string" },
        "watchdog-device": { type: "string" },
        "migration-uri": { type: "string" },
        "migration-data-uri": { type: "string" },
        label: { type: "string", multiple: true },
        "cpu-ratio": { type: "string" },
        "memory-ratio": { type: "string" },
        "disk-ratio": { type: "string" },
        reserve: { type: "string" },
        "tls-ca": { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        insecure: { type: "boolean" },
        "admin-listen": { type: "string" },
        "log-level": { type: "string" },
        version: { type: "boolean", short: "V" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }).values;
  } catch (e) {
    process.stderr.write(`berth-agent: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (args.version) {
    process.stdout.write(`berth-agent ${BERTH_VERSION}\n`);
    return 0;
  }
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  let options;
  try {
    const controllerFlag = args.controller === undefined && process.env.BERTH_CONTROLLER ? "BERTH_CONTROLLER" : "--controller";
    const controllers = parseHostPortList(args.controller ?? process.env.BERTH_CONTROLLER ?? "", controllerFlag);
    const transport = resolveTransport({ tlsCa: args["tls-ca"], tlsCert: args["tls-cert"], tlsKey: args["tls-key"], insecure: args.insecure }, process.env);
    options = resolveAgentOptions({
      hostId: args["host-id"] ?? "",
      controllers,
      ...("tls" in transport ? { tls: transport.tls } : {}),
      driver: args.driver as DriverKind,
      stateDir: args["state-dir"] ?? "",
      ...(args["join-cluster"] !== undefined ? { joinCluster: args["join-cluster"] } : {}),
      ...(args.capacity ? { capacity: parseCapacity(args.capacity, "--capacity") } : {}),
      ...(args["fake-migration-bandwidth"] !== undefined ? { fakeMigrationBandwidthMibPerS: Number(args["fake-migration-bandwidth"]) } : {}),
      // --network/--bridge name what the host offers: libvirt's own networks and bridges, or the fake's simulated ones.
      ...(args.driver === "fake" ? fakeNetworkFlags(args) : libvirtFlags(args)),
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
      ...(args["admin-listen"] !== undefined ? { adminListen: args["admin-listen"] } : {}),
      ...(args.reserve ? { reserved: { vcpus: 0, memoryMib: 0, diskGib: 0, ...parseCapacity(args.reserve, "--reserve") } } : {}),
    });
  } catch (e) {
    const flags = {
      host_id: "--host-id",
      controller: "--controller",
      driver: "--driver",
      state_dir: "--state-dir",
      join_cluster: "--join-cluster",
      admin_listen: "--admin-listen",
      labels: "--label",
      capacity: "--capacity",
      fake_migration_bandwidth: "--fake-migration-bandwidth",
      fake_networks: "--network/--bridge",
      libvirt: "--libvirt-uri/--storage-pool/--network/--bridge/--domain-type/--watchdog-device/--migration-uri/--migration-data-uri",
      ...TLS_FLAGS,
    };
    process.stderr.write(`berth-agent: ${messageForFlags(e, flags)}\n`);
    return 2;
  }
  const log = pino({ name: "berth-agent", level: args["log-level"] ?? process.env.LOG_LEVEL ?? "info" }).child({ hostId: options.hostId });

  // One agent per state dir, taken before anything in it is opened (the fake hypervisor lives there).
  let lock: StateDirLock;
  try {
    lock = await lockStateDir(options.stateDir, options.hostId);
  } catch (e) {
    const message = e instanceof StateDirLockedError ? e.message : `cannot lock the state directory ${options.stateDir}: ${(e as Error).message}`;
    log.fatal({ stateDir: options.stateDir }, message);
    process.stderr.write(`berth-agent: ${message}\n`);
    return 1;
  }
  process.once("exit", () => lock.releaseSync());
  try {
    return await runAgent(options, log);
  } finally {
    await lock.release();
  }
}

async function runAgent(options: ResolvedAgentOptions, log: Logger): Promise<number> {
  let driver: HypervisorDriver;
  let state;
  try {
    driver = await openDriver(options, log);
  } catch (e) {
    log.fatal({ err: e }, "cannot open the hypervisor");
    process.stderr.write(`berth-agent: cannot open the hypervisor: ${(e as Error).message}\n`);
    return 1;
  }
  try {
    state = await loadAgentState(options.stateDir);
  } catch (e) {
    await driver.close();
    log.fatal({ err: e }, "cannot read the agent state");
    process.stderr.write(`berth-agent: cannot read the agent state: ${(e as Error).message}\n`);
    return 1;
  }
  if (!options.tls) log.warn("connecting in PLAINTEXT (--insecure): any controller address answering is believed, and the stream is readable on the network");
  let agent: Agent;
  const metrics = new AgentPrometheusMetrics(driver);
  try {
    agent = new Agent(options, driver, state, log, metrics);
  } catch (e) {
    // Bad TLS files: named, with what to do.
    await driver.close();
    if (!(e instanceof BerthError && e.code === ErrorCode.InvalidArgument)) throw e;
    process.stderr.write(`berth-agent: ${messageForFlags(e, TLS_FLAGS)}\n`);
    return 2;
  }
  log.info(
    {
      bootId: agent.bootId,
      controllers: options.controllers,
      driver: driver.kind,
      domains: (await driver.list().catch(() => [])).length,
      clusterId: state.clusterId || undefined,
      leaderEpoch: state.lastLeaderEpoch,
      joinCluster: options.joinCluster,
    },
    "agent starting",
  );
  let admin: AdminServer | undefined;
  if (options.adminListen !== undefined) {
    const a = agent;
    try {
      admin = await startAdminServer({ listen: options.adminListen, routes: agentAdminRoutes({ connectedController: () => a.connectedController, driver }, metrics.registry), log });
    } catch (e) {
      await driver.close();
      process.stderr.write(`berth-agent: --admin-listen: cannot listen on ${options.adminListen}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}\n`);
      return 1;
    }
    log.info({ adminListen: options.adminListen, port: admin.port }, `admin HTTP on ${admin.url}/ (/healthz, /metrics)`);
  }
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
    await admin?.close();
    await driver.close();
  }
}

silenceIpServernameWarning();
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
