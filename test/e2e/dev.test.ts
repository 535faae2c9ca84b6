/**
 * `berth dev` as a developer runs it: the real controller and agents on the embedded store. When
 * `berth dev` itself is SIGKILLed (no handler of its own can run), its daemons must not live on
 * holding the port and the state directory.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CLI_BIN, freePort, Proc, waitFor } from "../support/processes.js";

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
    const dev = new Proc("dev", CLI_BIN, ["dev", "--agents", "2", "--listen", `127.0.0.1:${port}`, "--state-dir", join(dir, "state")]);
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
});
