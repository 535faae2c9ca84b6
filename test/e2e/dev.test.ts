/**
 * `berth dev` as a developer runs it: the real controller and agents on the embedded store. When
 * `berth dev` itself is SIGKILLed (no handler of its own can run), its daemons must not live on
 * holding the port and the state directory.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { fakeRunningVmIds } from "@berth/hypervisor";
import { CLI_BIN, freePort, Proc, waitFor } from "../support/processes.js";

/** Runs the CLI against `address` with the admin certificate `berth dev` made in `state`; resolves with its exit status and output. */
function berth(address: string, state: string, ...args: string[]): { status: number | null; out: string; err: string } {
  const tls = { BERTH_TLS_CA: join(state, "tls", "ca.crt"), BERTH_TLS_CERT: join(state, "tls", "admin.crt"), BERTH_TLS_KEY: join(state, "tls", "admin.key") };
  const r = spawnSync(process.execPath, [CLI_BIN, ...args], { encoding: "utf8", env: { ...process.env, BERTH_CONTROLLER: address, ...tls }, timeout: 60_000 });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

/** The pids whose parent is `pid`, from /proc (Linux). */
function children(pid: number): number[] {
  const found: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      // stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses, so split after the last ")".
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) found.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("berth dev", () => {
  const dir = mkdtempSync(join(tmpdir(), "berth-e2e-dev-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("leaves no daemon running when it is SIGKILLed", { timeout: 60_000 }, async () => {
    const port = await freePort();
    const dev = new Proc("dev", CLI_BIN, ["dev", "--agents", "2", "--listen", `127.0.0.1:${port}`, "--admin-listen", `127.0.0.1:${await freePort()}`, "--state-dir", join(dir, "state")]);
    try {
      await waitFor("the banner", () => dev.lines(`export BERTH_CONTROLLER=127.0.0.1:${port}`).length > 0, 30_000);
      const daemons = children(dev.child.pid!);
      expect(daemons).toHaveLength(3); // the controller and two agents
      dev.child.kill("SIGKILL");
      await dev.exited;
      await waitFor("every daemon to stop", () => daemons.every((pid) => !alive(pid)), 15_000);
    } finally {
      await dev.stop("SIGKILL");
    }
  });

  it("keeps its cluster across a restart: VMs and their domains survive Ctrl-C and a new start (nothing deleted)", { timeout: 120_000 }, async () => {
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const state = join(dir, "restart");
    const admin = `127.0.0.1:${await freePort()}`;
    const start = (): Proc => new Proc("dev", CLI_BIN, ["dev", "--agents", "2", "--listen", address, "--admin-listen", admin, "--state-dir", state]);
    let dev = start();
    try {
      await waitFor("the banner", () => dev.lines(`export BERTH_CONTROLLER=${address}`).length > 0, 30_000);
      // The banner names the dashboard, and the controller's admin port answers there.
      expect(dev.lines(`dashboard: http://${admin}/`)).toHaveLength(1);
      const health = await fetch(`http://${admin}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toEqual({ status: "ok", leader: true });
      for (const name of ["keep-1", "keep-2"]) expect(berth(address, state, "vm", "create", name, "--vcpus", "1", "--memory", "256MiB", "--disk", "1GiB", "--wait").status).toBe(0);
      const running = (): string[] => ["host-1", "host-2"].flatMap((h) => fakeRunningVmIds(join(state, h)));
      const before = running();
      expect(before).toHaveLength(2);
      // Mutual TLS by default: the banner says which certificate the CLI uses; plaintext is refused.
      expect(dev.lines(`export BERTH_TLS_CA=${join(state, "tls", "ca.crt")}`).length).toBeGreaterThan(0);
      const ca = readFileSync(join(state, "tls", "ca.crt"), "utf8");
      const plain = spawnSync(process.execPath, [CLI_BIN, "--insecure", "--controller", address, "vm", "list"], { encoding: "utf8", timeout: 60_000 });
      expect(plain.status).toBe(5);
      expect(plain.stderr).toContain("if the controller serves TLS, give --tls-ca/--tls-cert/--tls-key instead");
      dev.child.kill("SIGINT");
      expect(await dev.exited).toBe(0);

      // A second `berth dev` on the same state dir while one runs is refused, naming the dir.
      dev = start();
      await waitFor("the banner again", () => dev.lines(`export BERTH_CONTROLLER=${address}`).length > 0, 30_000);
      const twin = new Proc("twin", CLI_BIN, ["dev", "--agents", "2", "--listen", `127.0.0.1:${await freePort()}`, "--admin-listen", `127.0.0.1:${await freePort()}`, "--state-dir", state]);
      expect(await Promise.race([twin.exited, new Promise((r) => setTimeout(() => r("still running"), 30_000))])).not.toBe(0);
      expect(twin.lines("is in use by another").length).toBeGreaterThan(0);
      await twin.stop("SIGKILL");

      // The restarted cluster kept its CA (certificates already handed out stay good).
      expect(readFileSync(join(state, "tls", "ca.crt"), "utf8")).toBe(ca);
      const list = berth(address, state, "vm", "list", "-o", "json");
      expect(list.status).toBe(0);
      expect(list.out).toContain("keep-1");
      expect(list.out).toContain("keep-2");
      await waitFor("both still running", () => running().length === 2, 20_000);
      expect(running().sort()).toEqual([...before].sort());
    } finally {
      await dev.stop("SIGINT");
    }
  });
});
