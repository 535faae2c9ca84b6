import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { createServer } from "node:net";
import { dirname, resolve as resolvePath, join } from "node:path";
import { HostState, type Host } from "@berth/api";
import { DEFAULT_CONTROLLER_SANS, initPkiDirectory, issueToDirectory, PKI_FILES, TLS_ENV, type TlsFiles } from "@berth/core";
import type { Command } from "commander";
import { ControllerClient } from "../client.js";
import type { CliContext } from "../context.js";
import { CliError, ExitCode } from "../exit-codes.js";
import { hostStateName } from "../format.js";
import { createLineFormatter, problemOf } from "../log-lines.js";
import { parseCapacity, parseEtcdUrls, parseHostPort, parseInteger, parseSecondsMs } from "../parse.js";
import { Supervisor, type ChildExit, type ChildSpec } from "../supervisor.js";

/** Where `berth dev` keeps its state (the agents', and the embedded store's), under the working directory. */
export const DEFAULT_DEV_STATE_DIR = ".berth/dev";
/**
 * The state directory of a `berth dev --etcd` cluster. Another cluster than the embedded one (its
 * own cluster id): agents that remember one cluster are refused by the other's controller, so the
 * two never share agents' state.
 */
export const DEFAULT_DEV_ETCD_STATE_DIR = ".berth/dev-etcd";
/** The controller's default listen address. */
export const DEFAULT_DEV_LISTEN = "127.0.0.1:7400";
/** The controller's admin HTTP port (dashboard, /metrics, /healthz) under `berth dev`. */
export const DEFAULT_DEV_ADMIN_LISTEN = "127.0.0.1:7480";
/** Most agents one `berth dev` runs. */
export const MAX_DEV_AGENTS = 64;

/** `berth dev`'s flags as commander hands them over (strings). */
export interface DevFlags {
  agents?: string;
  etcd?: string;
  listen?: string;
  adminListen?: string;
  stateDir?: string;
  capacity?: string;
  readyTimeout?: string;
  insecure?: boolean;
}

/** `berth dev`'s flags, checked. */
export interface DevOptions {
  agents: number;
  /** etcd endpoints; empty for the controller's embedded store. */
  etcd: string[];
  /** What the controller listens on. */
  listen: string;
  /** Where agents and the CLI reach the controller (a wildcard listen address becomes loopback). */
  connect: string;
  /** The controller's admin HTTP port (`--admin-listen`): the dashboard, /metrics, /healthz. */
  adminListen: string;
  /** The dashboard's address for the banner (a wildcard admin address becomes loopback). */
  dashboardUrl: string;
  /** Absolute; each host gets a directory in it, and the embedded store `controller/`. */
  stateDir: string;
  /** The embedded store's file (`<stateDir>/controller/store.json`), so a restart keeps the cluster; none with etcd. */
  dataFile: string | undefined;
  /** `--capacity` as given (checked), passed to every agent. */
  capacity: string | undefined;
  /** How long to wait for the controller and every host to be up. */
  readyTimeoutMs: number;
  /**
   * The cluster's certificates (`<stateDir>/tls`, made on first use: a CA, the controller's, one
   * per host and an admin's for the CLI); undefined with `--insecure` (plaintext).
   */
  tlsDir: string | undefined;
}

/** Host id of the i-th agent (1-based): `host-1`. */
export const devHostId = (i: number): string => `host-${i}`;

/** Checks `berth dev`'s flags; relative paths are taken from `cwd`. Throws a usage error. */
export function parseDevOptions(flags: DevFlags, cwd: string): DevOptions {
  const agents = parseInteger(flags.agents ?? "3", "--agents", 1, MAX_DEV_AGENTS);
  const etcd = flags.etcd !== undefined ? parseEtcdUrls(flags.etcd, "--etcd") : [];
  const listen = (flags.listen ?? DEFAULT_DEV_LISTEN).trim();
  const { host, port } = parseHostPort(listen, "--listen");
  const wildcard = host === "0.0.0.0" || host === "[::]";
  const connect = wildcard ? `${host === "[::]" ? "[::1]" : "127.0.0.1"}:${port}` : listen;
  const adminListen = (flags.adminListen ?? DEFAULT_DEV_ADMIN_LISTEN).trim();
  const admin = parseHostPort(adminListen, "--admin-listen");
  const adminHost = admin.host === "0.0.0.0" ? "127.0.0.1" : admin.host === "[::]" ? "[::1]" : admin.host;
  const dashboardUrl = `http://${adminHost}:${admin.port}/`;
  const stateDir = resolvePath(cwd, flags.stateDir ?? (etcd.length > 0 ? DEFAULT_DEV_ETCD_STATE_DIR : DEFAULT_DEV_STATE_DIR));
  const dataFile = etcd.length > 0 ? undefined : join(stateDir, "controller", "store.json");
  const capacity = flags.capacity?.trim();
  if (capacity !== undefined) parseCapacity(capacity, "--capacity");
  const readyTimeoutMs = parseSecondsMs(flags.readyTimeout ?? "30", "--ready-timeout");
  const tlsDir = flags.insecure ? undefined : join(stateDir, "tls");
  return { agents, etcd, listen, connect, adminListen, dashboardUrl, stateDir, dataFile, capacity, readyTimeoutMs, tlsDir };
}

/** The operator certificate `berth dev` issues for the CLI. */
export const DEV_OPERATOR = "admin";

/** The TLS files of `name` in the dev cluster's directory (`controller`, a host id, or {@link DEV_OPERATOR}). */
export function devTlsFiles(tlsDir: string, name: string): TlsFiles {
  return { ca: join(tlsDir, PKI_FILES.caCert), cert: join(tlsDir, `${name}.crt`), key: join(tlsDir, `${name}.key`) };
}

/** `--tls-*` for a child, or `--insecure`. */
function transportArgs(options: DevOptions, name: string): string[] {
  if (options.tlsDir === undefined) return ["--insecure"];
  const f = devTlsFiles(options.tlsDir, name);
  return ["--tls-ca", f.ca, "--tls-cert", f.cert, "--tls-key", f.key];
}

/**
 * Makes what is missing of the dev cluster's certificates: the CA and the controller's (for the
 * address clients connect to and loopback) on first use, then a host certificate per agent and the
 * CLI's admin one. What exists is kept, so a restarted `berth dev` keeps its CA; a controller
 * certificate that does not name the connect address (`--listen` changed) is issued again.
 * Returns the names issued.
 */
export async function ensureDevPki(options: DevOptions): Promise<string[]> {
  const dir = options.tlsDir;
  if (dir === undefined) return [];
  const made: string[] = [];
  const host = parseHostPort(options.connect, "--listen").host.replace(/^\[|\]$/g, "");
  const sans = [...new Set([host, ...DEFAULT_CONTROLLER_SANS])];
  if (!existsSync(join(dir, PKI_FILES.caCert))) {
    await initPkiDirectory(dir, { sans });
    made.push("ca", "controller");
  } else {
    const names = new X509Certificate(readFileSync(join(dir, PKI_FILES.controllerCert))).subjectAltName ?? "";
    if (!names.split(", ").some((n) => n === `DNS:${host}` || n === `IP Address:${host}`)) {
      await issueToDirectory(dir, { role: "controller", name: "controller", sans, force: true });
      made.push("controller");
    }
  }
  const wanted: { role: "host" | "admin"; name: string }[] = [
    ...Array.from({ length: options.agents }, (_, i) => ({ role: "host" as const, name: devHostId(i + 1) })),
    { role: "admin", name: DEV_OPERATOR },
  ];
  for (const w of wanted) {
    if (existsSync(join(dir, `${w.name}.crt`)) && existsSync(join(dir, `${w.name}.key`))) continue;
    await issueToDirectory(dir, { role: w.role, name: w.name, force: true });
    made.push(w.name);
  }
  return made;
}

/** Paths of the entry scripts `berth dev` runs. */
export interface EntryPoints {
  controller: string;
  agent: string;
}

/**
 * The command lines of the processes `berth dev` starts: the controller first, then one agent per
 * host, all run by `execPath` (this Node).
 */
export function devChildren(options: DevOptions, entry: EntryPoints, execPath: string = process.execPath): ChildSpec[] {
  const controller: ChildSpec = {
    name: "controller",
    command: execPath,
    args: [
      entry.controller,
      "--listen",
      options.listen,
      // A wildcard listen address is no address to send agents and the CLI to.
      ...(options.connect !== options.listen ? ["--advertise", options.connect] : []),
      ...(options.etcd.length > 0 ? ["--etcd", options.etcd.join(",")] : []),
      ...(options.dataFile !== undefined ? ["--data-file", options.dataFile] : []),
      "--admin-listen",
      options.adminListen,
      ...transportArgs(options, "controller"),
    ],
  };
  const agents = Array.from({ length: options.agents }, (_, i): ChildSpec => {
    const id = devHostId(i + 1);
    return {
      name: id,
      command: execPath,
      args: [
        entry.agent,
        "--host-id",
        id,
        "--controller",
        options.connect,
        "--driver",
        "fake",
        "--state-dir",
        join(options.stateDir, id),
        ...(options.capacity !== undefined ? ["--capacity", options.capacity] : []),
        ...transportArgs(options, id),
      ],
    };
  });
  return [controller, ...agents];
}

/** What to print once the cluster is up. */
export function devBanner(options: DevOptions): string {
  const hosts = Array.from({ length: options.agents }, (_, i) => devHostId(i + 1));
  const store =
    options.etcd.length > 0
      ? `etcd at ${options.etcd.join(",")}`
      : `the embedded store, kept in ${options.dataFile ?? "memory"}`;
  return [
    "",
    `berth dev: controller on ${options.connect} with ${store}; hosts ${hosts.join(", ")} (fake driver)`,
    `State: ${options.stateDir} (remove it to start a fresh cluster)`,
    `dashboard: ${options.dashboardUrl} (also /metrics for Prometheus, /healthz)`,
    "",
    "Use it from another terminal:",
    `  export BERTH_CONTROLLER=${options.connect}`,
    ...(options.tlsDir !== undefined
      ? (() => {
          const f = devTlsFiles(options.tlsDir, DEV_OPERATOR);
          return [`  export ${TLS_ENV.ca}=${f.ca} ${TLS_ENV.cert}=${f.cert} ${TLS_ENV.key}=${f.key}`];
        })()
      : ["  # plaintext (--insecure): add --insecure to every berth command"]),
    "  npx berth host list",
    "  npx berth vm create web-1 --vcpus 2 --memory 4GiB --disk 20GiB --wait",
    "  npx berth vm list",
    "",
    "Ctrl-C stops everything.",
    "",
  ].join("\n");
}

/** Fails unless `listen` (given as `flag`) is free, so readiness is never confused with another process' server. */
async function assertPortFree(listen: string, flag = "--listen"): Promise<void> {
  const { host, port } = parseHostPort(listen, flag);
  const bare = host.startsWith("[") ? host.slice(1, -1) : host;
  await new Promise<void>((resolve, reject) => {
    const server = createServer();
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(
        new CliError(
          e.code === "EADDRINUSE"
            ? `${flag}: ${listen} is already in use (is another berth dev running? give ${flag} HOST:PORT)`
            : `${flag}: cannot listen on ${listen}: ${e.message}`,
          ExitCode.Error,
        ),
      ),
    );
    server.listen({ host: bare, port, exclusive: true }, () => server.close(() => resolve()));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `ListHosts` until `ready(hosts)` or the deadline, or until `abandoned()` says to give up.
 * Returns whether it became ready, and the hosts last listed (none if the controller never answered).
 */
async function waitUntil(
  client: ControllerClient,
  ready: (hosts: Host[]) => boolean,
  deadline: number,
  abandoned: () => boolean,
): Promise<{ ready: boolean; hosts: Host[] | undefined }> {
  let last: Host[] | undefined;
  while (!abandoned() && Date.now() < deadline) {
    try {
      const { hosts } = await client.listHosts({}, { deadline: new Date(deadline) });
      last = hosts;
      if (ready(hosts)) return { ready: true, hosts };
    } catch {
      // Not up yet.
    }
    await sleep(250);
  }
  return { ready: false, hosts: last };
}

/**
 * Why the cluster is not up, host by host: each host not READY with its state as the controller
 * lists it, and the last warning or error its agent logged, e.g. the controller's refusal of it
 * (another cluster's agent state, a duplicate host id). The logs scrolled past; this is the line
 * that says why.
 */
export function notReadyReport(
  ids: readonly string[],
  hosts: readonly Host[] | undefined,
  problems: ReadonlyMap<string, string>,
  stateDir: string,
): string {
  const byId = new Map((hosts ?? []).map((h) => [h.id, h]));
  const lines: string[] = [];
  for (const id of ids) {
    const host = byId.get(id);
    if (host?.state === HostState.HOST_STATE_READY) continue;
    const state = host ? hostStateName(host.state) : "not registered";
    const problem = problems.get(id);
    lines.push(`  ${id}: ${state}${problem ? `; its agent said: ${problem}` : ""}`);
  }
  const hints: string[] = [];
  const text = lines.join("\n");
  if (/FOREIGN_CLUSTER|another cluster/i.test(text)) {
    hints.push(`  (agents keep the id of the cluster they joined in ${stateDir}; remove that directory to start a fresh cluster)`);
  }
  if (/DUPLICATE_HOST|same --host-id/i.test(text)) {
    hints.push("  (another agent with that host id is connected: is another berth dev, or an agent it left behind, running?)");
  }
  return [text, ...hints].filter((l) => l !== "").join("\n");
}

/** What `runDev` may be given besides the options (tests and embedding). */
export interface DevRuntime {
  /** The entry scripts; default: the controller's and agent's packages. */
  entry?: EntryPoints;
  /** Stops the cluster (exit code 0) when aborted. */
  signal?: AbortSignal;
  /** Stop on SIGINT, SIGTERM and SIGHUP (default true). */
  handleSignals?: boolean;
  /** How long children get between SIGTERM and SIGKILL (default 5 s). */
  stopGraceMs?: number;
}

/**
 * Runs a whole local cluster until Ctrl-C / SIGTERM / SIGHUP: the controller, then the agents once
 * the controller answers; prints how to use it once every host is READY. Children's pino lines are
 * shown pretty, labelled by process.
 *
 * A host's agent that dies is reported and the rest keep running (that is how a host failure
 * looks); if the controller dies, everything is stopped and the exit code is 1. If the cluster is
 * not up within the ready timeout, everything is stopped and the exit code is 5. A signal stops
 * everything and exits 0; a second Ctrl-C kills at once.
 */
export async function runDev(ctx: CliContext, options: DevOptions, runtime: DevRuntime = {}): Promise<ExitCode> {
  const { io } = ctx;
  await assertPortFree(options.listen);
  await assertPortFree(options.adminListen, "--admin-listen");
  const children = devChildren(options, runtime.entry ?? (await defaultEntryPoints()));
  await mkdir(options.stateDir, { recursive: true });
  const issued = await ensureDevPki(options);
  if (issued.length > 0) io.stderr(`berth dev: made TLS certificates in ${options.tlsDir}: ${issued.join(", ")}\n`);
  for (const c of children.slice(1)) await mkdir(join(options.stateDir, c.name), { recursive: true });
  if (options.dataFile !== undefined) await mkdir(dirname(options.dataFile), { recursive: true });

  const say = (text: string): void => io.stderr(`berth dev: ${text}\n`);
  const format = createLineFormatter(
    children.map((c) => c.name),
    { colorize: io.colorize },
  );

  let exitCode: ExitCode = ExitCode.Ok;
  let stopRequested: (() => void) | undefined;
  const stopSignal = new Promise<void>((resolve) => (stopRequested = resolve));
  let stopped = false;
  const requestStop = (code: ExitCode, why: string): void => {
    if (stopped) return;
    stopped = true;
    exitCode = code;
    say(why);
    stopRequested?.();
  };

  // The worst, then latest, problem of each process, for a readiness failure to say why. What a
  // daemon logged on purpose (a refusal by the controller) outranks stray stderr (a Node warning),
  // which is kept only for a process that logged nothing (e.g. one that failed on its arguments);
  // an error outranks a later warning.
  const problems = new Map<string, string>();
  const worst = new Map<string, number>();
  const supervisor = new Supervisor({
    onLine: (name, line, source) => {
      const problem = problemOf(line, source);
      if (problem && problem.level >= (worst.get(name) ?? 0)) {
        worst.set(name, problem.level);
        problems.set(name, problem.text);
      }
      io.stdout(format(name, line, source));
    },
    onExit: (exit: ChildExit) => {
      if (exit.expected) return;
      const how = exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
      if (exit.name === "controller") {
        requestStop(ExitCode.Error, `controller exited unexpectedly (${how}); stopping everything`);
      } else {
        say(`${exit.name} exited unexpectedly (${how}); the others keep running`);
      }
    },
    ...(runtime.stopGraceMs !== undefined ? { stopGraceMs: runtime.stopGraceMs } : {}),
  });

  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopped) {
      say(`${signal} again: killing everything now`);
      supervisor.killAll();
      return;
    }
    requestStop(ExitCode.Ok, `${signal}: stopping (again to kill at once)`);
  };
  const onAbort = (): void => requestStop(ExitCode.Ok, "stopping");
  const onExit = (): void => supervisor.killAll();
  const signals: NodeJS.Signals[] = runtime.handleSignals === false ? [] : ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of signals) process.on(s, onSignal);
  process.on("exit", onExit);
  if (runtime.signal?.aborted) onAbort();
  runtime.signal?.addEventListener("abort", onAbort, { once: true });

  const client = new ControllerClient({
    endpoints: [options.connect],
    timeoutMs: 2000,
    ...(options.tlsDir !== undefined ? { tls: devTlsFiles(options.tlsDir, DEV_OPERATOR) } : {}),
  });
  try {
    const deadline = Date.now() + options.readyTimeoutMs;
    const [controller, ...agents] = children;
    if (controller && !stopped) supervisor.start(controller);
    const up = await waitUntil(client, () => true, deadline, () => stopped);
    if (up.ready) {
      for (const a of agents) supervisor.start(a);
      const ids = new Set(agents.map((a) => a.name));
      const ready = await waitUntil(
        client,
        (hosts) => hosts.filter((h) => ids.has(h.id) && h.state === HostState.HOST_STATE_READY).length === ids.size,
        deadline,
        () => stopped,
      );
      if (ready.ready) io.stdout(devBanner(options));
      else if (!stopped) {
        const report = notReadyReport([...ids], ready.hosts, problems, options.stateDir);
        requestStop(
          ExitCode.Unavailable,
          `not every host was READY within ${options.readyTimeoutMs / 1000}s; stopping${report ? `\n${report}` : ""}`,
        );
      }
    } else if (!stopped) {
      const problem = problems.get("controller");
      requestStop(
        ExitCode.Unavailable,
        `the controller did not answer on ${options.connect} within ${options.readyTimeoutMs / 1000}s; stopping` +
          (problem ? `\n  controller: its last problem: ${problem}` : ""),
      );
    }
    await stopSignal;
  } finally {
    client.close();
    await supervisor.stop();
    for (const s of signals) process.off(s, onSignal);
    process.off("exit", onExit);
    runtime.signal?.removeEventListener("abort", onAbort);
  }
  say("stopped");
  return exitCode;
}

async function defaultEntryPoints(): Promise<EntryPoints> {
  // Loaded on demand: the operator verbs never pay for loading the controller and agent packages.
  const [{ CONTROLLER_MAIN }, { AGENT_MAIN }] = await Promise.all([import("@berth/controller"), import("@berth/agent")]);
  return { controller: CONTROLLER_MAIN, agent: AGENT_MAIN };
}

/** Adds `berth dev`. */
export function registerDevCommand(program: Command, ctx: CliContext): void {
  program
    .command("dev")
    .description("Run a whole local cluster: one controller and N agents with the fake driver")
    .option("--agents <n>", `how many agents (hosts), 1-${MAX_DEV_AGENTS} (default: 3)`)
    .option("--etcd <urls>", "etcd URLs, comma-separated (default: the controller's embedded store, kept in the state dir)")
    .option("--listen <host:port>", `the controller's address (default: ${DEFAULT_DEV_LISTEN})`)
    .option("--admin-listen <host:port>", `the controller's admin HTTP port: the web dashboard, /metrics, /healthz (default: ${DEFAULT_DEV_ADMIN_LISTEN})`)
    .option(
      "--state-dir <dir>",
      `where the agents and the embedded store keep their state (default: ${DEFAULT_DEV_STATE_DIR}; with --etcd ${DEFAULT_DEV_ETCD_STATE_DIR})`,
    )
    .option("--capacity <spec>", "every host's capacity, e.g. vcpus=16,memory=64GiB,disk=1TiB (default: the agent's)")
    .option("--ready-timeout <seconds>", "how long to wait for the controller and every host to be up (default: 30)")
    .addHelpText(
      "after",
      `
Starts the controller, then one agent per host (host-1 ... host-N), as separate processes, and
shows their logs, labelled by process. Once every host is READY it prints how to point the CLI at
the cluster. Ctrl-C (or SIGTERM) stops everything: SIGTERM to each process, up to 5 s, then
SIGKILL; exit code 0. An agent that dies is reported and the rest keep running; if the controller
dies, everything is stopped (exit code 1). Not up within --ready-timeout: stopped, exit code 5,
naming each host that is not READY and the last warning or error its agent logged (e.g. the
controller refused it: it belongs to another cluster, or its host id is taken).

Mutual TLS by default: on first use it makes a CA and certificates in <state-dir>/tls (the
controller's, one per host, and an admin's for the CLI: the banner says which BERTH_TLS_* to
export). The global --insecure (berth --insecure dev) runs everything plaintext.

State: the agents' directories (host-1/ ...) and, with the embedded store, controller/store.json,
so stopping and starting again keeps the cluster (its id, VMs, groups, config). With --etcd the
default is ${DEFAULT_DEV_ETCD_STATE_DIR}: another cluster, whose agents must not share the embedded
one's state. Remove the directory to start afresh.

Examples:
  berth dev --agents 3
  berth dev --agents 5 --capacity vcpus=32,memory=128GiB,disk=2TiB
  berth dev --agents 3 --etcd http://127.0.0.1:2379 --listen 127.0.0.1:7401`,
    )
    .action(async (flags: DevFlags, command: Command) => {
      // --insecure is the global flag (berth dev --insecure and berth --insecure dev alike).
      const insecure = command.optsWithGlobals<{ insecure?: boolean }>().insecure === true;
      const options = parseDevOptions({ ...flags, insecure }, ctx.io.cwd);
      ctx.exitCode = await runDev(ctx, options);
    });
}
