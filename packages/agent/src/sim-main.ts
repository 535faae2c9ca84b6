#!/usr/bin/env node
import { parseArgs } from "node:util";
import { pino } from "pino";
import {
  BERTH_VERSION,
  messageForFlags,
  parseCapacity,
  parseHostPortList,
  silenceIpServernameWarning,
  stopWhenParentGone,
} from "@berth/core";
import { defaultStartSpreadMs, Simulation } from "./sim.js";

const HELP = `berth-sim: many hollow hosts in one process, for testing a controller at scale.

Usage: berth-sim --hosts N --controller HOST:PORT[,HOST:PORT...] [options]

Each host is a real berth-agent (the same Agent: its own gRPC connection and stream to the
leader, Hello, Reports, heartbeats, commands) over its own fake hypervisor kept in memory (the
fake driver's semantics, no state file, no fault control file). The controller sees N hosts.

  --hosts N               how many hosts (e.g. 1000)
  --controller ADDRS      controllers to connect to (default: $BERTH_CONTROLLER); the hosts follow
                          the leader among them
  --host-prefix P         host ids are P and a zero-padded number from 1 (default "sim-":
                          sim-0001, sim-0002, ...)
  --capacity SPEC         what each host offers, e.g. vcpus=16,memory=64GiB,disk=1TiB (default: the
                          fake driver's, vcpus=16,memory=64GiB,disk=1TiB)
  --start-spread MS       the hosts' first connects are spread evenly (jittered) over this long, so
                          that N Hellos do not land at once (default 5 ms per host, at most 10000)
  --state-dir DIR         where each host's agent state (cluster id, leader epoch) goes, as
                          DIR/<host-id>/agent.json (default: a temporary directory, removed at exit)
  --tls-dir DIR           mutual TLS: DIR/ca.crt and DIR/<host-id>.crt, .key for every host, as
                          'berth certs issue host <host-id> --dir DIR' writes them
  --insecure              plaintext, for a controller run with --insecure (one of the two is required)
  --log-level LEVEL       trace|debug|info|warn|error (default info, or LOG_LEVEL); with many hosts,
                          warn keeps the log to what goes wrong
  -V, --version           print the version
  -h, --help              this help

The report interval is the controller's, as for berth-agent: berth-controller --report-interval
MS, sent to every agent in its Welcome (each host then heartbeats every interval / 2).

Example, a thousand hosts reporting every second:
  berth-controller --etcd http://127.0.0.1:2379 --report-interval 1000 &
  berth-sim --hosts 1000 --controller 127.0.0.1:7400 --log-level warn

Exit status: 0 after SIGINT/SIGTERM (every stream ended; the hosts then go SUSPECT at the
controller), 1 when a controller rejects the hosts' Hello as invalid, 2 on bad arguments.
`;

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        hosts: { type: "string" },
        controller: { type: "string" },
        "host-prefix": { type: "string", default: "sim-" },
        capacity: { type: "string" },
        "start-spread": { type: "string" },
        "state-dir": { type: "string" },
        "tls-dir": { type: "string" },
        insecure: { type: "boolean" },
        "log-level": { type: "string" },
        version: { type: "boolean", short: "V" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }).values;
  } catch (e) {
    process.stderr.write(`berth-sim: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (args.version) {
    process.stdout.write(`berth-sim ${BERTH_VERSION}\n`);
    return 0;
  }
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const log = pino({ name: "berth-sim", level: args["log-level"] ?? process.env.LOG_LEVEL ?? "info" });
  let sim: Simulation;
  try {
    const hosts = Number(args.hosts);
    if (args.hosts === undefined || !Number.isSafeInteger(hosts) || hosts < 1) throw new Error(`--hosts: '${args.hosts ?? ""}' is not a whole number ≥ 1`);
    const spread = args["start-spread"] === undefined ? defaultStartSpreadMs(hosts) : Number(args["start-spread"]);
    if (!(Number.isFinite(spread) && spread >= 0)) throw new Error(`--start-spread: '${args["start-spread"]}' is not a number of ms ≥ 0`);
    if ((args["tls-dir"] === undefined) === (args.insecure !== true)) throw new Error("--tls-dir DIR (one host certificate per hollow host) or --insecure (plaintext) is required, and only one of them");
    const controllerFlag = args.controller === undefined && process.env.BERTH_CONTROLLER ? "BERTH_CONTROLLER" : "--controller";
    const controllers = parseHostPortList(args.controller ?? process.env.BERTH_CONTROLLER ?? "", controllerFlag);
    sim = await Simulation.create(
      {
        hosts,
        controllers,
        hostPrefix: args["host-prefix"],
        startSpreadMs: spread,
        ...(args.capacity ? { capacity: parseCapacity(args.capacity, "--capacity") } : {}),
        ...(args["state-dir"] ? { stateRoot: args["state-dir"] } : {}),
        ...(args["tls-dir"] ? { tlsDir: args["tls-dir"] } : {}),
      },
      log,
    );
  } catch (e) {
    const flags = { host_id: "--host-prefix", controller: "--controller", state_dir: "--state-dir", capacity: "--capacity", fake_driver: "--capacity" };
    process.stderr.write(`berth-sim: ${messageForFlags(e, flags)}\n`);
    return 2;
  }

  sim.start();
  const stopped = new Promise<string>((resolve) => {
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("SIGTERM", () => resolve("SIGTERM"));
    stopWhenParentGone(() => resolve("supervisor gone"));
  });
  const outcome = await Promise.race([stopped.then((why) => ({ why, code: 0 })), sim.failure.then((e) => ({ why: e.message, code: 1 }))]);
  log.info({ why: outcome.why, hosts: sim.hosts.length }, "stopping");
  await sim.stop();
  return outcome.code;
}

silenceIpServernameWarning();
main().then(
  (code) => {
    process.exitCode = code;
    setTimeout(() => process.exit(code), 200).unref();
  },
  (e: unknown) => {
    process.stderr.write(`berth-sim: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
