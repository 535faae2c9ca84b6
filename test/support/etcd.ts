// A throwaway etcd for tests: its own temporary data directory and free loopback ports.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "vitest";

export interface RunningEtcd {
  /** Client URL, e.g. http://127.0.0.1:40123. */
  endpoint: string;
  dataDir: string;
  /** Kills etcd and removes its data directory. Idempotent. */
  stop(): Promise<void>;
}

export interface StartEtcdOptions {
  /** How long to wait for etcd to answer its health check. Default 20 s. */
  readyTimeoutMs?: number;
}

/** The etcd binary: $ETCD_BIN, else `etcd` on PATH. */
const etcdBinary = (): string => process.env.ETCD_BIN || "etcd";

/** Whether an etcd binary can be run here, and why not. */
export function etcdAvailable(): { ok: true } | { ok: false; reason: string } {
  const r = spawnSync(etcdBinary(), ["--version"], { encoding: "utf8", timeout: 10_000 });
  if (r.error) return { ok: false, reason: `cannot run '${etcdBinary()}' (${r.error.message}); install etcd (e.g. the etcd-server package) or set ETCD_BIN` };
  if (r.status !== 0) return { ok: false, reason: `'${etcdBinary()} --version' exited with ${r.status}: ${r.stderr.trim()}` };
  return { ok: true };
}

/**
 * `describe` for suites that need etcd. Without etcd the suite is skipped with a printed reason,
 * except in CI (process.env.CI set), where it fails with that reason.
 */
export function describeWithEtcd(name: string, body: () => void): void {
  const available = etcdAvailable();
  if (available.ok) {
    describe(name, body);
    return;
  }
  if (process.env.CI) {
    describe(name, () => {
      it("needs etcd", () => {
        throw new Error(`etcd is required in CI: ${available.reason}`);
      });
    });
    return;
  }
  console.warn(`skipping '${name}': ${available.reason}`);
  describe.skip(name, body);
}

/** Starts a single-member etcd on free loopback ports and waits until it is healthy. */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<RunningEtcd> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(options.readyTimeoutMs ?? 20_000);
    } catch (e) {
      lastError = e; // most likely a port taken between choosing it and etcd binding it
    }
  }
  throw lastError;
}

async function startOnce(readyTimeoutMs: number): Promise<RunningEtcd> {
  const [clientPort, peerPort] = await freePorts(2);
  const dataDir = await mkdtemp(join(tmpdir(), "berth-etcd-"));
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const child = spawn(
    etcdBinary(),
    [
      "--name=test",
      `--data-dir=${dataDir}`,
      `--listen-client-urls=${endpoint}`,
      `--advertise-client-urls=${endpoint}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=test=${peer}`,
      "--initial-cluster-state=new",
      "--logger=zap",
      "--log-level=error",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4_000)));
  const killOnExit = (): void => void child.kill("SIGKILL");
  process.once("exit", killOnExit);

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      process.removeListener("exit", killOnExit);
      await kill(child);
      await rm(dataDir, { recursive: true, force: true });
    })());

  try {
    await waitHealthy(endpoint, child, readyTimeoutMs, () => stderr);
  } catch (e) {
    await stop();
    throw e;
  }
  return { endpoint, dataDir, stop };
}

async function waitHealthy(endpoint: string, child: ChildProcess, timeoutMs: number, stderr: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`etcd exited (${child.exitCode ?? child.signalCode}) before becoming healthy:\n${stderr()}`);
    }
    try {
      const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1_000) });
      const body = (await res.json()) as { health?: string };
      if (res.ok && body.health === "true") return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`etcd at ${endpoint} was not healthy within ${timeoutMs} ms:\n${stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}

/** Ports the OS reports free on 127.0.0.1 (held open together so they differ). */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const srv = createServer();
          srv.once("error", reject);
          srv.listen(0, "127.0.0.1", () => resolve(srv));
        }),
    ),
  );
  const ports = servers.map((srv) => {
    const address = srv.address();
    if (!address || typeof address === "string") throw new Error("no port assigned");
    return address.port;
  });
  await Promise.all(servers.map((srv) => new Promise<void>((resolve) => srv.close(() => resolve()))));
  return ports;
}
