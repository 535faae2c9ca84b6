#!/usr/bin/env node
import { parseArgs } from "node:util";
import { pino } from "pino";
import { BerthError, messageForFlags, parseEtcdEndpoints, stopWhenParentGone } from "@berth/core";
import { EtcdStore, MemoryStore, type ClusterStore } from "@berth/store";
import { Controller } from "./controller.js";
import { resolveControllerOptions } from "./options.js";

const HELP = `berth-controller: Berth's control plane (leader election, placement, reconciliation).

Usage: berth-controller [--listen HOST:PORT] [--etcd URL[,URL...]] [options]

  --listen HOST:PORT      address to serve gRPC on (default 127.0.0.1:7400)
  --advertise HOST:PORT   address agents and the CLI are sent to when this controller leads
                          (default: the listen address)
  --etcd URLS             comma-separated etcd endpoints, e.g. http://10.0.0.5:2379. Without it the
                          controller runs on an embedded in-memory store: fine for a local cluster,
                          but its state is gone when the process ends.
  --id NAME               this controller's name in logs and in the election (default host-pid)
  --report-interval MS    how often agents report (default 2000)
  --leader-ttl MS         leader lease TTL; a dead leader is replaced after about this (default 10000)
  --log-level LEVEL       trace|debug|info|warn|error (default info, or LOG_LEVEL)
  -h, --help              this help

Exit status: 0 after SIGINT/SIGTERM, 1 when leadership is lost or the store fails (run it under a
supervisor that restarts it), 2 on bad arguments.
`;

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        listen: { type: "string", default: "127.0.0.1:7400" },
        advertise: { type: "string" },
        etcd: { type: "string" },
        id: { type: "string" },
        "report-interval": { type: "string" },
        "leader-ttl": { type: "string" },
        "log-level": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }).values;
  } catch (e) {
    process.stderr.write(`berth-controller: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const log = pino({ name: "berth-controller", level: args["log-level"] ?? process.env.LOG_LEVEL ?? "info" });
  let options;
  try {
    const num = (v: string | undefined, flag: string): number | undefined => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isFinite(n)) throw new BerthError("INVALID_ARGUMENT", `--${flag}: '${v}' is not a number`);
      return n;
    };
    options = resolveControllerOptions({
      listen: args.listen!,
      ...(args.advertise ? { advertise: args.advertise } : {}),
      etcdEndpoints: args.etcd !== undefined ? parseEtcdEndpoints(args.etcd, "--etcd") : [],
      ...(args.id ? { controllerId: args.id } : {}),
      ...(args["report-interval"] ? { reportIntervalMs: num(args["report-interval"], "report-interval")! } : {}),
      ...(args["leader-ttl"] ? { leaderTtlMs: num(args["leader-ttl"], "leader-ttl")! } : {}),
    });
  } catch (e) {
    const flags = { listen: "--listen", advertise: "--advertise", etcd: "--etcd", report_interval_ms: "--report-interval", leader_ttl_ms: "--leader-ttl" };
    process.stderr.write(`berth-controller: ${messageForFlags(e, flags)}\n`);
    return 2;
  }

  let store: ClusterStore;
  if (options.etcdEndpoints.length > 0) {
    store = new EtcdStore({ endpoints: options.etcdEndpoints });
    log.info({ endpoints: options.etcdEndpoints }, "using etcd");
  } else {
    store = new MemoryStore();
    log.warn("no --etcd given: using the embedded in-memory store (state is lost when this process ends)");
  }

  let controller: Controller;
  try {
    controller = await Controller.start(options, store, log);
  } catch (e) {
    log.fatal({ err: e }, "controller failed to start");
    await store.close().catch(() => undefined);
    return 1;
  }
  return await new Promise<number>((resolve) => {
    const shutdown = (code: number) => async (why: string) => {
      process.removeAllListeners("SIGINT");
      process.removeAllListeners("SIGTERM");
      log.info({ why }, "stopping");
      await controller.stop();
      await store.close().catch(() => undefined);
      resolve(code);
    };
    controller.onDeposed(shutdown(1));
    process.once("SIGINT", () => void shutdown(0)("SIGINT"));
    process.once("SIGTERM", () => void shutdown(0)("SIGTERM"));
    stopWhenParentGone(() => void shutdown(0)("supervisor gone"));
  });
}

main().then(
  (code) => {
    process.exitCode = code;
    // Give pino a tick to flush, then make sure nothing keeps the process alive.
    setTimeout(() => process.exit(code), 200).unref();
  },
  (e: unknown) => {
    process.stderr.write(`berth-controller: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
