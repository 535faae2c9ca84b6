#!/usr/bin/env node
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { pino } from "pino";
import {
  BERTH_VERSION,
  BerthError,
  invalidArgument,
  messageForFlags,
  parseEtcdEndpoints,
  resolveTransport,
  silenceIpServernameWarning,
  stopWhenParentGone,
  TLS_FLAGS,
  TLS_HELP,
} from "@berth/core";
import { EtcdStore, MemoryStore, openFileStore, type ClusterStore } from "@berth/store";
import { Controller } from "./controller.js";
import { resolveControllerOptions } from "./options.js";

const HELP = `berth-controller: Berth's control plane (leader election, placement, reconciliation).

Usage: berth-controller [--listen HOST:PORT] [--etcd URL[,URL...]] [options]

  --listen HOST:PORT      address to serve gRPC on (default 127.0.0.1:7400)
  --advertise HOST:PORT   address agents and the CLI are sent to when this controller leads
                          (default: the listen address)
  --etcd URLS             comma-separated etcd endpoints, e.g. http://10.0.0.5:2379. Without it the
                          controller runs on an embedded in-memory store: fine for a local cluster,
                          but its state is gone when the process ends (see --data-file).
  --data-file FILE        embedded store only: keep the store in FILE, so a restarted controller
                          keeps its cluster (berth dev uses this; the last moment's writes can be
                          lost in a crash: use etcd for anything real)
  --etcd-ca FILE          CA of etcd's server certificates, for https endpoints (default: $BERTH_ETCD_CA)
  --etcd-cert FILE        client certificate for etcd's client-cert auth (default: $BERTH_ETCD_CERT)
  --etcd-key FILE         its key (default: $BERTH_ETCD_KEY)
  --etcd-user NAME        etcd user (default: $BERTH_ETCD_USER); the password is read from
                          $BERTH_ETCD_PASSWORD or --etcd-password-file, never from the command line
  --etcd-password-file FILE
                          a file holding the etcd user's password (one line)
  --id NAME               this controller's name in logs and in the election (default host-pid)
  --report-interval MS    how often agents report (default 2000)
  --leader-ttl MS         leader lease TTL; a dead leader is replaced after about this (default 3000)
  --fence-timeout MS      the agents' watchdog: an agent that hears no leader this long powers off
                          its restart-policy VMs; a host silent this long + --fence-margin is
                          FENCED and those VMs are recreated elsewhere (default 8000; 0: never)
  --fence-margin MS       added to the fence timeout before a silent host counts as fenced (default 2000)
  --host-suspect-after MS a host not heard from this long is SUSPECT (default 1.25 report intervals)
  --max-creates-in-flight N
                          CreateVm/CreateVms calls placed at once; more are refused with
                          BUSY (retry) instead of queueing until the leader starves (default 200)
${TLS_HELP}
                          With TLS, agents are known by their host certificates and operators
                          by their roles (admin changes, viewer reads)
  --admin-listen HOST:PORT
                          serve the admin HTTP port: /healthz (200 {"status":"ok","leader":…}
                          while the cache is live and the store answers, else 503 with a
                          reason; a follower is healthy too), /metrics (Prometheus) and the web
                          dashboard at /. Off unless given; port 0 picks one
  --admin-tls             serve the admin port over HTTPS with this controller's TLS identity,
                          asking for a client certificate of the cluster's CA: an admin
                          certificate may then act in the dashboard. Plain HTTP is read-only
  --log-level LEVEL       trace|debug|info|warn|error (default info, or LOG_LEVEL)
  -V, --version           print the version
  -h, --help              this help

Exit status: 0 after SIGINT/SIGTERM, 1 when leadership is lost or the store fails (run it under a
supervisor that restarts it), 2 on bad arguments.
`;

/** The etcd client's credentials, as EtcdStore takes them. */
interface EtcdAccess {
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  auth?: { username: string; password: string };
}

/**
 * The etcd credentials from the flags and BERTH_ETCD_* variables. Files are read here so a bad
 * path fails the start, naming its flag; the password comes from BERTH_ETCD_PASSWORD or a file,
 * never from the command line (where every user of the machine can read it).
 */
function etcdAccessOf(args: Record<string, string | boolean | undefined>, env: NodeJS.ProcessEnv): EtcdAccess {
  const pick = (flag: string, name: string): string | undefined => {
    const v = (args[flag] as string | undefined) ?? env[name];
    return v === undefined || v === "" ? undefined : v;
  };
  const read = (path: string, field: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (e) {
      throw invalidArgument(field, `cannot read '${path}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  const ca = pick("etcd-ca", "BERTH_ETCD_CA");
  const cert = pick("etcd-cert", "BERTH_ETCD_CERT");
  const key = pick("etcd-key", "BERTH_ETCD_KEY");
  const user = pick("etcd-user", "BERTH_ETCD_USER");
  const out: EtcdAccess = {};
  if ((cert === undefined) !== (key === undefined)) throw invalidArgument(cert === undefined ? "etcd_cert" : "etcd_key", "--etcd-cert and --etcd-key go together");
  if (cert !== undefined && ca === undefined) throw invalidArgument("etcd_ca", "is required with --etcd-cert (the CA etcd's server certificate is checked against)");
  if (ca !== undefined) {
    out.tls = { ca: read(ca, "etcd_ca"), ...(cert !== undefined ? { cert: read(cert, "etcd_cert"), key: read(key!, "etcd_key") } : {}) };
  }
  const passwordFile = args["etcd-password-file"] as string | undefined;
  if (user !== undefined) {
    const password = passwordFile !== undefined ? read(passwordFile, "etcd_password").toString("utf8").replace(/\r?\n$/, "") : env.BERTH_ETCD_PASSWORD;
    if (!password) throw invalidArgument("etcd_password", "--etcd-user needs a password: set BERTH_ETCD_PASSWORD or give --etcd-password-file FILE");
    out.auth = { username: user, password };
  } else if (passwordFile !== undefined || env.BERTH_ETCD_PASSWORD) {
    throw invalidArgument("etcd_user", "an etcd password was given but no --etcd-user (or BERTH_ETCD_USER)");
  }
  return out;
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        listen: { type: "string", default: "127.0.0.1:7400" },
        advertise: { type: "string" },
        etcd: { type: "string" },
        "etcd-ca": { type: "string" },
        "etcd-cert": { type: "string" },
        "etcd-key": { type: "string" },
        "etcd-user": { type: "string" },
        "etcd-password-file": { type: "string" },
        "tls-ca": { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        insecure: { type: "boolean" },
        id: { type: "string" },
        "report-interval": { type: "string" },
        "leader-ttl": { type: "string" },
        "data-file": { type: "string" },
        "fence-timeout": { type: "string" },
        "fence-margin": { type: "string" },
        "host-suspect-after": { type: "string" },
        "max-creates-in-flight": { type: "string" },
        "admin-listen": { type: "string" },
        "admin-tls": { type: "boolean" },
        "log-level": { type: "string" },
        version: { type: "boolean", short: "V" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }).values;
  } catch (e) {
    process.stderr.write(`berth-controller: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (args.version) {
    process.stdout.write(`berth-controller ${BERTH_VERSION}\n`);
    return 0;
  }
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const log = pino({ name: "berth-controller", level: args["log-level"] ?? process.env.LOG_LEVEL ?? "info" });
  let options;
  let etcdAccess: EtcdAccess = {};
  try {
    const num = (v: string | undefined, flag: string): number | undefined => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isFinite(n)) throw new BerthError("INVALID_ARGUMENT", `--${flag}: '${v}' is not a number`);
      return n;
    };
    const transport = resolveTransport({ tlsCa: args["tls-ca"], tlsCert: args["tls-cert"], tlsKey: args["tls-key"], insecure: args.insecure }, process.env);
    options = resolveControllerOptions({
      listen: args.listen!,
      ...("tls" in transport ? { tls: transport.tls } : {}),
      ...(args.advertise ? { advertise: args.advertise } : {}),
      etcdEndpoints: args.etcd !== undefined ? parseEtcdEndpoints(args.etcd, "--etcd") : [],
      ...(args.id ? { controllerId: args.id } : {}),
      ...(args["report-interval"] ? { reportIntervalMs: num(args["report-interval"], "report-interval")! } : {}),
      ...(args["leader-ttl"] ? { leaderTtlMs: num(args["leader-ttl"], "leader-ttl")! } : {}),
      ...(args["fence-timeout"] !== undefined ? { fenceTimeoutMs: num(args["fence-timeout"], "fence-timeout")! } : {}),
      ...(args["fence-margin"] !== undefined ? { fenceMarginMs: num(args["fence-margin"], "fence-margin")! } : {}),
      ...(args["host-suspect-after"] !== undefined ? { hostSuspectAfterMs: num(args["host-suspect-after"], "host-suspect-after")! } : {}),
      ...(args["max-creates-in-flight"] !== undefined ? { maxCreatesInFlight: num(args["max-creates-in-flight"], "max-creates-in-flight")! } : {}),
      ...(args["admin-listen"] !== undefined ? { adminListen: args["admin-listen"] } : {}),
      ...(args["admin-tls"] ? { adminTls: true } : {}),
    });
    if (args["data-file"] !== undefined && args.etcd !== undefined) {
      throw new BerthError("INVALID_ARGUMENT", "--data-file: only for the embedded store; with --etcd the state is in etcd");
    }
    etcdAccess = etcdAccessOf(args, process.env);
    if (args.etcd === undefined && (etcdAccess.tls || etcdAccess.auth)) throw invalidArgument("etcd", "etcd credentials were given (--etcd-ca/--etcd-cert/--etcd-key/--etcd-user or BERTH_ETCD_*) but no --etcd endpoints");
  } catch (e) {
    const flags = {
      listen: "--listen",
      advertise: "--advertise",
      etcd: "--etcd",
      report_interval_ms: "--report-interval",
      leader_ttl_ms: "--leader-ttl",
      fence_timeout_ms: "--fence-timeout",
      fence_margin_ms: "--fence-margin",
      host_suspect_after_ms: "--host-suspect-after",
      max_creates_in_flight: "--max-creates-in-flight",
      admin_listen: "--admin-listen",
      admin_tls: "--admin-tls",
      etcd_ca: "--etcd-ca",
      etcd_cert: "--etcd-cert",
      etcd_key: "--etcd-key",
      etcd_user: "--etcd-user",
      etcd_password: "--etcd-password-file",
      ...TLS_FLAGS,
    };
    process.stderr.write(`berth-controller: ${messageForFlags(e, flags)}\n`);
    return 2;
  }

  let store: ClusterStore;
  let flushStore: () => Promise<void> = async () => undefined;
  if (options.etcdEndpoints.length > 0) {
    store = new EtcdStore({ endpoints: options.etcdEndpoints, ...etcdAccess });
    // What kind of credentials, never their contents.
    log.info({ endpoints: options.etcdEndpoints, clientCertificate: etcdAccess.tls?.cert !== undefined, user: etcdAccess.auth?.username }, "using etcd");
  } else if (args["data-file"] !== undefined) {
    try {
      const file = await openFileStore(args["data-file"]);
      store = file.store;
      flushStore = file.flush;
    } catch (e) {
      process.stderr.write(`berth-controller: --data-file: ${(e as Error).message}\n`);
      return 2;
    }
    log.info({ dataFile: args["data-file"] }, "using the embedded store, kept in a file");
  } else {
    store = new MemoryStore();
    log.warn("no --etcd given: using the embedded in-memory store (state is lost when this process ends)");
  }

  let controller: Controller;
  try {
    controller = await Controller.start(options, store, log);
  } catch (e) {
    log.fatal({ err: e }, "controller failed to start");
    await flushStore();
    await store.close().catch(() => undefined);
    return 1;
  }
  return await new Promise<number>((resolve) => {
    const shutdown = (code: number) => async (why: string) => {
      process.removeAllListeners("SIGINT");
      process.removeAllListeners("SIGTERM");
      log.info({ why }, "stopping");
      await controller.stop();
      await flushStore();
      await store.close().catch(() => undefined);
      resolve(code);
    };
    controller.onDeposed(shutdown(1));
    process.once("SIGINT", () => void shutdown(0)("SIGINT"));
    process.once("SIGTERM", () => void shutdown(0)("SIGTERM"));
    stopWhenParentGone(() => void shutdown(0)("supervisor gone"));
  });
}

silenceIpServernameWarning();
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
