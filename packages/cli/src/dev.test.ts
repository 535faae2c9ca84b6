import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { devBanner, devChildren, notReadyReport, parseDevOptions, runDev, type DevOptions } from "./commands/dev.js";
import { CliContext } from "./context.js";
import { ExitCode } from "./exit-codes.js";
import { createLineFormatter, problemOf } from "./log-lines.js";
import { run } from "./program.js";
import { Supervisor, type ChildExit } from "./supervisor.js";
import { closedPort, recordingIo } from "./stub-server.testkit.js";
import { Host, HostState } from "@berth/api";

const entry = { controller: "/opt/berth/controller/main.js", agent: "/opt/berth/agent/main.js" };

describe("parseDevOptions", () => {
  it("has defaults: 3 agents, embedded store, 127.0.0.1:7400, .berth/dev under cwd", () => {
    expect(parseDevOptions({}, "/home/me/proj")).toEqual({
      agents: 3,
      etcd: [],
      listen: "127.0.0.1:7400",
      connect: "127.0.0.1:7400",
      adminListen: "127.0.0.1:7480",
      dashboardUrl: "http://127.0.0.1:7480/",
      stateDir: "/home/me/proj/.berth/dev",
      dataFile: "/home/me/proj/.berth/dev/controller/store.json",
      capacity: undefined,
      readyTimeoutMs: 30_000,
      tlsDir: "/home/me/proj/.berth/dev/tls",
    } satisfies DevOptions);
    expect(parseDevOptions({ insecure: true }, "/p").tlsDir).toBeUndefined();
  });

  it("takes every flag; a wildcard listen address is reached over loopback", () => {
    const o = parseDevOptions(
      {
        agents: "5",
        etcd: "http://10.0.0.1:2379,http://10.0.0.2:2379",
        listen: "0.0.0.0:7401",
        stateDir: "/var/tmp/b",
        capacity: "vcpus=8,memory=16GiB",
        readyTimeout: "5",
      },
      "/x",
    );
    expect(o).toMatchObject({ agents: 5, listen: "0.0.0.0:7401", connect: "127.0.0.1:7401", stateDir: "/var/tmp/b", readyTimeoutMs: 5000 });
    expect(o.etcd).toEqual(["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
    expect(o.capacity).toBe("vcpus=8,memory=16GiB");
  });

  it("with --etcd the state dir defaults to .berth/dev-etcd and there is no data file", () => {
    const o = parseDevOptions({ etcd: "http://127.0.0.1:2379" }, "/home/me/proj");
    expect(o.stateDir).toBe("/home/me/proj/.berth/dev-etcd");
    expect(o.dataFile).toBeUndefined();
    // An explicit --state-dir wins either way.
    expect(parseDevOptions({ etcd: "http://127.0.0.1:2379", stateDir: "s" }, "/p").stateDir).toBe("/p/s");
    expect(parseDevOptions({ stateDir: "s" }, "/p").dataFile).toBe("/p/s/controller/store.json");
  });

  it.each([
    [{ agents: "0" }, "--agents: must be from 1 to 64 (got 0)"],
    [{ agents: "x" }, "--agents: 'x' is not a whole number"],
    [{ listen: "7400" }, "--listen: '7400' is not HOST:PORT"],
    [{ adminListen: "localhost" }, "--admin-listen: 'localhost' is not HOST:PORT"],
    [{ etcd: "127.0.0.1:2379" }, "--etcd: '127.0.0.1:2379' is not a URL (example: http://127.0.0.1:2379)"],
    [{ etcd: "etcd:2379" }, "--etcd: 'etcd:2379' must be an http:// or https:// URL"],
    [{ capacity: "vcpus=lots" }, "--capacity vcpus: 'lots' is not a whole number"],
    [{ readyTimeout: "0" }, "--ready-timeout: must be more than 0 seconds"],
  ])("rejects %j", (flags, message) => {
    expect(() => parseDevOptions(flags, "/x")).toThrow(message);
  });

  it("berth dev with a bad flag exits 2 before starting anything", async () => {
    const io = recordingIo();
    expect(await run(["dev", "--agents", "100"], io)).toBe(ExitCode.Usage);
    expect(io.err).toBe("error: --agents: must be from 1 to 64 (got 100)\n");
    expect(io.out).toBe("");
  });
});

describe("devChildren", () => {
  const tls = (name: string) => ["--tls-ca", "/proj/.berth/dev/tls/ca.crt", "--tls-cert", `/proj/.berth/dev/tls/${name}.crt`, "--tls-key", `/proj/.berth/dev/tls/${name}.key`];
  it("runs the controller, then one agent per host, with this Node", () => {
    const o = parseDevOptions({ agents: "2", capacity: "vcpus=16,memory=64GiB,disk=1TiB" }, "/proj");
    expect(devChildren(o, entry, "/usr/bin/node")).toEqual([
      {
        name: "controller",
        command: "/usr/bin/node",
        args: [entry.controller, "--listen", "127.0.0.1:7400", "--data-file", "/proj/.berth/dev/controller/store.json", "--admin-listen", "127.0.0.1:7480", ...tls("controller")],
      },
      {
        name: "host-1",
        command: "/usr/bin/node",
        args: [entry.agent, "--host-id", "host-1", "--controller", "127.0.0.1:7400", "--driver", "fake", "--state-dir", "/proj/.berth/dev/host-1", "--capacity", "vcpus=16,memory=64GiB,disk=1TiB", ...tls("host-1")],
      },
      {
        name: "host-2",
        command: "/usr/bin/node",
        args: [entry.agent, "--host-id", "host-2", "--controller", "127.0.0.1:7400", "--driver", "fake", "--state-dir", "/proj/.berth/dev/host-2", "--capacity", "vcpus=16,memory=64GiB,disk=1TiB", ...tls("host-2")],
      },
    ]);
  });

  it("passes --etcd, and --advertise for a wildcard listen address", () => {
    const o = parseDevOptions({ agents: "1", etcd: "http://e1:2379,http://e2:2379", listen: "0.0.0.0:7400" }, "/proj");
    const [controller, agent] = devChildren(o, entry, "/usr/bin/node");
    expect(controller?.args.slice(0, 7)).toEqual([entry.controller, "--listen", "0.0.0.0:7400", "--advertise", "127.0.0.1:7400", "--etcd", "http://e1:2379,http://e2:2379"]);
    expect(agent?.args).not.toContain("--capacity");
    expect(agent?.args.slice(3, 5)).toEqual(["--controller", "127.0.0.1:7400"]);
  });

  it("the banner says how to use the cluster, and where the store is kept", () => {
    const text = devBanner(parseDevOptions({ agents: "2", listen: "127.0.0.1:7401" }, "/proj"));
    expect(text).toContain("export BERTH_CONTROLLER=127.0.0.1:7401\n");
    expect(text).toContain("export BERTH_TLS_CA=/proj/.berth/dev/tls/ca.crt BERTH_TLS_CERT=/proj/.berth/dev/tls/admin.crt BERTH_TLS_KEY=/proj/.berth/dev/tls/admin.key\n");
    const insecure = devBanner(parseDevOptions({ agents: "1", insecure: true }, "/proj"));
    expect(insecure).toContain("--insecure");
    expect(devChildren(parseDevOptions({ agents: "1", insecure: true }, "/proj"), entry, "/n").every((c) => c.args.at(-1) === "--insecure")).toBe(true);
    expect(text).toContain("npx berth vm create web-1 --vcpus 2 --memory 4GiB --disk 20GiB --wait\n");
    expect(text).toContain("hosts host-1, host-2");
    expect(text).toContain("with the embedded store, kept in /proj/.berth/dev/controller/store.json;");
    expect(text).toContain("State: /proj/.berth/dev (remove it to start a fresh cluster)");
    // The controller's admin port serves the dashboard: 127.0.0.1:7480 unless --admin-listen says otherwise.
    expect(text).toContain("\ndashboard: http://127.0.0.1:7480/ ");
    const admin = parseDevOptions({ adminListen: "0.0.0.0:9000" }, "/proj");
    expect(devBanner(admin)).toContain("\ndashboard: http://127.0.0.1:9000/ ");
    expect(devChildren(admin, entry, "/n")[0]?.args).toContain("0.0.0.0:9000");
    const etcd = devBanner(parseDevOptions({ etcd: "http://e:2379" }, "/proj"));
    expect(etcd).toContain("with etcd at http://e:2379;");
    expect(etcd).toContain("State: /proj/.berth/dev-etcd");
  });
});

describe("createLineFormatter", () => {
  const format = createLineFormatter(["controller", "host-1"], { colorize: false });

  it("prettifies pino lines, labelled by process", () => {
    const line = JSON.stringify({ level: 40, time: 0, pid: 1, hostname: "h", msg: "host late", hostId: "host-1" });
    const out = format("controller", line, "stdout");
    expect(out).toMatch(/^controller \| \[[\d:.]+\] WARN: host late \{"hostId":"host-1"\}\n$/);
    expect(out).not.toContain("hostname");
  });

  it("shows other lines as they came, padded to the widest name", () => {
    expect(format("host-1", "not json {", "stdout")).toBe("host-1     | not json {\n");
    expect(format("host-1", "{broken", "stdout")).toBe("host-1     | {broken\n");
    expect(format("host-1", "Error: boom", "stderr")).toBe("host-1     | Error: boom\n");
  });
});

describe("why a host is not READY", () => {
  it("problemOf: pino warnings and errors, and plain stderr lines, as one line", () => {
    const rejected = JSON.stringify({
      level: 50,
      time: 1,
      pid: 2,
      hostname: "h",
      controller: "127.0.0.1:7400",
      reason: "REJECT_REASON_DUPLICATE_HOST",
      err: { message: "boom", stack: "..." },
      msg: "controller rejected this agent",
    });
    expect(problemOf(rejected, "stdout")).toEqual({
      text: "controller rejected this agent (controller: 127.0.0.1:7400, reason: REJECT_REASON_DUPLICATE_HOST, err: boom)",
      from: "log",
      level: 50,
    });
    expect(problemOf(JSON.stringify({ level: 30, msg: "connected" }), "stdout")).toBeUndefined();
    expect(problemOf("berth-agent: --controller: bad", "stderr")).toEqual({ text: "berth-agent: --controller: bad", from: "stderr", level: 0 });
    expect(problemOf("    at main (file.js:1:1)", "stderr")).toBeUndefined();
    expect(problemOf("Node.js v20.19.0", "stderr")).toBeUndefined();
    expect(problemOf("plain stdout", "stdout")).toBeUndefined();
  });

  it("notReadyReport names each host not READY with its agent's last problem, and how to start afresh", () => {
    const hosts = [Host.fromPartial({ id: "host-1", state: HostState.HOST_STATE_READY }), Host.fromPartial({ id: "host-2", state: HostState.HOST_STATE_SUSPECT })];
    const problems = new Map([["host-3", "controller rejected this agent (reason: REJECT_REASON_FOREIGN_CLUSTER)"]]);
    expect(notReadyReport(["host-1", "host-2", "host-3"], hosts, problems, "/p/.berth/dev")).toBe(
      "  host-2: SUSPECT\n" +
        "  host-3: not registered; its agent said: controller rejected this agent (reason: REJECT_REASON_FOREIGN_CLUSTER)\n" +
        "  (agents keep the id of the cluster they joined in /p/.berth/dev; remove that directory to start a fresh cluster)",
    );
    const duplicate = new Map([["host-1", "controller refused this agent: another agent may be running with the same --host-id 'host-1'"]]);
    expect(notReadyReport(["host-1"], [], duplicate, "/p")).toContain("is another berth dev, or an agent it left behind, running?");
    expect(notReadyReport(["host-1"], hosts, new Map(), "/p")).toBe("");
  });
});

const pidAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("Supervisor", () => {
  it("reports lines and an unexpected exit; stop() SIGTERMs, then SIGKILLs the stubborn", async () => {
    const lines: string[] = [];
    const exits: ChildExit[] = [];
    const sup = new Supervisor({ onLine: (n, l, s) => lines.push(`${n}/${s}: ${l}`), onExit: (e) => exits.push(e), stopGraceMs: 300 });
    const node = process.execPath;
    sup.start({ name: "quitter", command: node, args: ["-e", "console.log('bye'); process.exit(3)"] });
    sup.start({ name: "polite", command: node, args: ["-e", "console.log('up'); setInterval(() => {}, 1000); process.on('SIGTERM', () => process.exit(0))"] });
    sup.start({ name: "stubborn", command: node, args: ["-e", "console.log('up'); setInterval(() => {}, 1000); process.on('SIGTERM', () => {})"] });
    await expect.poll(() => exits.map((e) => e.name)).toEqual(["quitter"]);
    await expect.poll(() => lines.filter((l) => l.endsWith(": up")).length).toBe(2);
    expect(exits[0]).toEqual({ name: "quitter", code: 3, signal: null, expected: false });
    expect(lines).toContain("quitter/stdout: bye");
    expect(sup.running.sort()).toEqual(["polite", "stubborn"]);
    const started = Date.now();
    await sup.stop();
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(sup.running).toEqual([]);
    const byName = Object.fromEntries(exits.map((e) => [e.name, e]));
    expect(byName["polite"]).toEqual({ name: "polite", code: 0, signal: null, expected: true });
    expect(byName["stubborn"]).toEqual({ name: "stubborn", code: null, signal: "SIGKILL", expected: true });
  });
});

describe("runDev", () => {
  const testdata = fileURLToPath(new URL("./testdata/", import.meta.url));
  const fakes = { controller: join(testdata, "fake-controller.mjs"), agent: join(testdata, "fake-agent.mjs") };
  let dir = "";
  // Whatever a failing test left running is stopped before the next one.
  let running: { abort: AbortController; done: Promise<unknown> } | undefined;
  afterEach(async () => {
    if (running) {
      running.abort.abort();
      await running.done.catch(() => {});
      running = undefined;
    }
    delete process.env["BERTH_TEST_PID_DIR"];
    delete process.env["BERTH_TEST_STUBBORN"];
    delete process.env["BERTH_TEST_NO_HOSTS"];
    delete process.env["BERTH_TEST_REJECT"];
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("starts the controller and agents, prints the banner when ready, stops everything when told", async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-dev-"));
    process.env["BERTH_TEST_PID_DIR"] = dir;
    const port = await closedPort();
    const io = recordingIo();
    const options = parseDevOptions({ insecure: true, agents: "2", listen: `127.0.0.1:${port}`, adminListen: `127.0.0.1:${await closedPort()}`, stateDir: "state", readyTimeout: "20" }, dir);
    const abort = new AbortController();
    const done = runDev(new CliContext(io), options, { entry: fakes, signal: abort.signal, handleSignals: false, stopGraceMs: 2000 });
    running = { abort, done };
    await expect.poll(() => io.out, { timeout: 15_000 }).toContain(`export BERTH_CONTROLLER=127.0.0.1:${port}`);
    await expect.poll(() => io.out, { timeout: 5000 }).toMatch(/^host-2 +\| \[[\d:.]+\] INFO: agent connected \{"hostId":"host-2"\}$/m);
    expect(io.out).toMatch(/^controller \| \[[\d:.]+\] INFO: controller serving/m);
    // stderr is another pipe: its line may come after the other process's stdout.
    await expect.poll(() => io.out, { timeout: 5000 }).toContain("host-1     | plain stderr line\n");
    const pids = await Promise.all(
      [join(dir, "controller.pid"), join(dir, "state/host-1/agent.pid"), join(dir, "state/host-2/agent.pid")].map(async (f) =>
        Number(await readFile(f, "utf8")),
      ),
    );
    expect(pids.every(pidAlive)).toBe(true);
    abort.abort();
    expect(await done).toBe(ExitCode.Ok);
    expect(pids.some(pidAlive)).toBe(false);
    expect(io.err).toContain("berth dev: stopped\n");
  }, 30_000);

  it("stops everything with exit code 1 when the controller dies", async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-dev-"));
    process.env["BERTH_TEST_PID_DIR"] = dir;
    process.env["BERTH_TEST_STUBBORN"] = "1"; // the agents ignore SIGTERM: SIGKILL after the grace
    const port = await closedPort();
    const io = recordingIo();
    const options = parseDevOptions({ insecure: true, agents: "1", listen: `127.0.0.1:${port}`, adminListen: `127.0.0.1:${await closedPort()}`, stateDir: "state" }, dir);
    const abort = new AbortController();
    const done = runDev(new CliContext(io), options, { entry: fakes, signal: abort.signal, handleSignals: false, stopGraceMs: 300 });
    running = { abort, done };
    await expect.poll(() => io.out, { timeout: 15_000 }).toContain("export BERTH_CONTROLLER=");
    await expect.poll(() => io.out, { timeout: 5000 }).toContain("agent connected");
    const agentPid = Number(await readFile(join(dir, "state/host-1/agent.pid"), "utf8"));
    process.kill(Number(await readFile(join(dir, "controller.pid"), "utf8")), "SIGKILL");
    expect(await done).toBe(ExitCode.Error);
    expect(io.err).toContain("berth dev: controller exited unexpectedly (signal SIGKILL); stopping everything\n");
    expect(pidAlive(agentPid)).toBe(false);
  }, 30_000);

  it("passes the controller --data-file under the state dir, and creates its directory", async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-dev-"));
    process.env["BERTH_TEST_PID_DIR"] = dir;
    const port = await closedPort();
    const io = recordingIo();
    const options = parseDevOptions({ insecure: true, agents: "1", listen: `127.0.0.1:${port}`, adminListen: `127.0.0.1:${await closedPort()}`, stateDir: "state" }, dir);
    const abort = new AbortController();
    const done = runDev(new CliContext(io), options, { entry: fakes, signal: abort.signal, handleSignals: false, stopGraceMs: 2000 });
    running = { abort, done };
    await expect.poll(() => io.out, { timeout: 15_000 }).toContain("export BERTH_CONTROLLER=");
    const args = JSON.parse(await readFile(join(dir, "controller.args"), "utf8")) as string[];
    expect(args.slice(args.indexOf("--data-file"), args.indexOf("--data-file") + 2)).toEqual(["--data-file", join(dir, "state/controller/store.json")]);
    expect((await stat(join(dir, "state/controller"))).isDirectory()).toBe(true);
    expect(io.out).toContain(`kept in ${join(dir, "state/controller/store.json")}`);
    abort.abort();
    expect(await done).toBe(ExitCode.Ok);
  }, 30_000);

  it("a readiness failure names the hosts not READY and why their agents were refused", async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-dev-"));
    process.env["BERTH_TEST_PID_DIR"] = dir;
    process.env["BERTH_TEST_NO_HOSTS"] = "1"; // the controller never lists the hosts
    process.env["BERTH_TEST_REJECT"] = "1"; // and the agents log why
    const port = await closedPort();
    const io = recordingIo();
    const options = parseDevOptions({ insecure: true, agents: "2", listen: `127.0.0.1:${port}`, adminListen: `127.0.0.1:${await closedPort()}`, stateDir: "state", readyTimeout: "3" }, dir);
    const abort = new AbortController();
    const done = runDev(new CliContext(io), options, { entry: fakes, signal: abort.signal, handleSignals: false, stopGraceMs: 2000 });
    running = { abort, done };
    expect(await done).toBe(ExitCode.Unavailable);
    expect(io.err).toContain("berth dev: not every host was READY within 3s; stopping\n");
    for (const h of ["host-1", "host-2"]) {
      expect(io.err).toContain(
        `  ${h}: not registered; its agent said: controller rejected this agent (controller: 127.0.0.1:${port}, reason: REJECT_REASON_FOREIGN_CLUSTER, message: this agent belongs to cluster 1111; this is cluster 2222)\n`,
      );
    }
    expect(io.err).toContain(`remove that directory to start a fresh cluster`);
    expect(io.out).not.toContain("export BERTH_CONTROLLER=");
  }, 30_000);

  it("refuses a listen address already in use", async () => {
    const io = recordingIo();
    const { createServer } = await import("node:net");
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const address = server.address();
    const port = typeof address === "object" && address ? address.port : 0;
    try {
      const options = parseDevOptions({ insecure: true, agents: "1", listen: `127.0.0.1:${port}`, adminListen: `127.0.0.1:${await closedPort()}` }, tmpdir());
      await expect(runDev(new CliContext(io), options, { entry: fakes, handleSignals: false })).rejects.toThrow(
        `--listen: 127.0.0.1:${port} is already in use`,
      );
    } finally {
      server.close();
    }
  });

  it("refuses an admin address already in use, naming --admin-listen, before starting anything", async () => {
    const io = recordingIo();
    const { createServer } = await import("node:net");
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const address = server.address();
    const port = typeof address === "object" && address ? address.port : 0;
    try {
      const options = parseDevOptions({ insecure: true, agents: "1", listen: `127.0.0.1:${await closedPort()}`, adminListen: `127.0.0.1:${port}` }, tmpdir());
      await expect(runDev(new CliContext(io), options, { entry: fakes, handleSignals: false })).rejects.toThrow(
        `--admin-listen: 127.0.0.1:${port} is already in use (is another berth dev running? give --admin-listen HOST:PORT)`,
      );
      expect(io.out).toBe("");
    } finally {
      server.close();
    }
  });
});
