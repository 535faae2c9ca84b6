// deploy/install.sh, run from this checkout into scratch roots (--root): the release it copies
// runs through the wrappers it puts on PATH, from outside the checkout; the units it installs are
// deploy/systemd's with its prefix, and pass `systemd-analyze verify`; a second run keeps the
// operator's files; an upgrade is a new release and a symlink switch, --rollback goes back; bad
// flags are refused before anything is written. The build exists: `npm test` builds first.
//
// Every run here passes --root: without it the script installs onto this machine for real.
import { spawnSync } from "node:child_process";
import { appendFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { describeRequiring } from "../support/requirements.js";
import { missingSystemdAnalyze, verifyComplaints } from "../support/systemd-analyze.js";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const INSTALL = join(REPO, "deploy", "install.sh");
const SYSTEMD = join(REPO, "deploy", "systemd");
const VERSION = (JSON.parse(readFileSync(join(REPO, "packages", "core", "package.json"), "utf8")) as { version: string }).version;
/** VERSION-COMMIT, VERSION-COMMIT-dirty.HASH (uncommitted changes) or VERSION-HASH (no git). */
const RELEASE_NAME = new RegExp(`^${VERSION.replace(/\./g, "\\.")}-[0-9a-f]{7,}(-dirty\\.[0-9a-f]{8})?$`);

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

const temps: string[] = [];
afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});
function scratch(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

function install(args: string[]): Run {
  if (!args.includes("--root")) throw new Error("install.sh runs only with --root here: without it, it installs onto this machine");
  const started = Date.now();
  const r = spawnSync("bash", [INSTALL, ...args], { encoding: "utf8", timeout: 60_000, env: { ...process.env, LC_ALL: "C" } });
  return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? String(r.error ?? ""), ms: Date.now() - started };
}

/** Runs an installed command through its wrapper, from a directory outside the checkout. */
function command(root: string, binDir: string, name: string, args: string[]): Run {
  const started = Date.now();
  const r = spawnSync(join(root, binDir, name), args, { encoding: "utf8", timeout: 30_000, cwd: root, env: { ...process.env, LOG_LEVEL: "warn" } });
  return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? String(r.error ?? ""), ms: Date.now() - started };
}

function ok(r: Run, what: string): void {
  expect(r.status, `${what} exited ${r.status}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`).toBe(0);
}

function mode(path: string): string {
  return (statSync(path).mode & 0o777).toString(8).padStart(4, "0");
}

function releases(root: string, prefix = "opt/berth"): string[] {
  return readdirSync(join(root, prefix, "releases")).filter((n) => !n.startsWith(".")).sort();
}

/** The .js entry point of a unit's ExecStart (the first argument ending in .js). */
function execStartEntry(unitPath: string): string {
  const line = readFileSync(unitPath, "utf8").split("\n").find((l) => l.startsWith("ExecStart="));
  const entry = line?.split(/\s+/).find((w) => w.endsWith(".js"));
  if (!entry) throw new Error(`${unitPath}: no ExecStart with a .js entry`);
  return entry;
}

describe("deploy/install.sh --root: every role from this checkout", () => {
  let root: string;
  let first: Run;
  const args = () => ["--root", root, "--role", "controller,agent", "--role", "cli", "--watchdog"];

  beforeAll(() => {
    root = scratch("berth-install-");
    first = install(args());
    console.log(`install.sh --root (all roles): ${first.ms} ms`);
  });

  it("installs a release, points current at it, and says what it did, step by step", () => {
    ok(first, "install.sh");
    const current = readlinkSync(join(root, "opt/berth/current"));
    expect(current).toMatch(/^releases\//); // relative: it resolves the same under --root and on the host
    const name = current.slice("releases/".length);
    expect(name).toMatch(RELEASE_NAME);
    expect(readFileSync(join(root, "opt/berth/current/RELEASE"), "utf8")).toContain(`name=${name}\nversion=${VERSION}\n`);
    expect(existsSync(join(root, "opt/berth/previous"))).toBe(false);
    expect(first.stdout).toMatch(/^==> checking Node\.js/m);
    expect(first.stdout).toMatch(/^==> switching \/opt\/berth\/current to releases\//m);
    expect(first.stdout).toMatch(/^==> role controller$/m);
    expect(first.stdout).toMatch(/^==> role agent$/m);
    // Under --root what needs the host is printed, not run.
    expect(first.stdout).toMatch(/would run: useradd --system .* berth/);
    expect(first.stdout).toContain("would run: systemctl enable berth-controller.service");
    expect(first.stdout).toContain("would run: systemctl enable berth-agent.service");
    expect(first.stdout).not.toMatch(/would run: systemctl (start|restart)/);
    expect(first.stdout).toMatch(/^Next steps/m);
    expect(first.stdout).toContain("systemctl start berth-controller berth-agent");
  });

  it("copies only the production node_modules, and nothing in the release points outside it", () => {
    const rel = realpathSync(join(root, "opt/berth/current"));
    for (const dep of ["@grpc/grpc-js", "etcd3", "pino", "commander", "@peculiar/x509"]) {
      expect(existsSync(join(rel, "node_modules", dep, "package.json")), dep).toBe(true);
    }
    for (const dev of ["vitest", "typescript", "fast-check", "@bufbuild/buf", "ts-proto", ".bin"]) {
      expect(existsSync(join(rel, "node_modules", dev)), dev).toBe(false);
    }
    expect(realpathSync(join(rel, "node_modules/@berth/cli"))).toBe(join(rel, "packages/cli"));
    expect(existsSync(join(rel, "packages/core/dist/.tsbuildinfo"))).toBe(false);
    const links = spawnSync("find", [rel, "-type", "l"], { encoding: "utf8" }).stdout.split("\n").filter(Boolean);
    expect(links.length).toBeGreaterThanOrEqual(8);
    for (const link of links) {
      expect(readlinkSync(link), link).not.toMatch(/^\//);
      expect(realpathSync(link).startsWith(`${rel}/`), `${link} -> ${realpathSync(link)}`).toBe(true);
    }
  });

  it("berth, berth-controller and berth-agent run through the wrappers in /usr/local/bin, outside the checkout", () => {
    const version = command(root, "usr/local/bin", "berth", ["--version"]);
    ok(version, "berth --version");
    expect(version.stdout.trim()).toBe(`berth ${VERSION}`);
    const controller = command(root, "usr/local/bin", "berth-controller", ["--help"]);
    ok(controller, "berth-controller --help");
    expect(controller.stdout).toContain("--listen HOST:PORT");
    const agent = command(root, "usr/local/bin", "berth-agent", ["--help"]);
    ok(agent, "berth-agent --help");
    expect(agent.stdout).toContain("--host-id ID");
    // A verb that loads the production dependencies (x509, crypto), not only the argument parser.
    const pki = join(root, "pki");
    ok(command(root, "usr/local/bin", "berth", ["certs", "init", "--dir", pki, "--san", "localhost,127.0.0.1"]), "berth certs init");
    expect(existsSync(join(pki, "ca.crt"))).toBe(true);
    // The wrappers name no scratch path: they find the release relative to themselves.
    for (const name of ["berth", "berth-controller", "berth-agent"]) {
      const wrapper = join(root, "usr/local/bin", name);
      expect(mode(wrapper)).toBe("0755");
      expect(readFileSync(wrapper, "utf8")).not.toContain(root);
    }
  });

  it("installs deploy/systemd's units as they are (the default prefix), their entry points in the release", () => {
    const units = join(root, "etc/systemd/system");
    for (const unit of ["berth-controller.service", "berth-agent.service"]) {
      expect(readFileSync(join(units, unit), "utf8"), unit).toBe(readFileSync(join(SYSTEMD, unit), "utf8"));
      const entry = execStartEntry(join(units, unit));
      expect(entry, unit).toMatch(/^\/opt\/berth\/current\/packages\/(controller|agent)\/dist\/main\.js$/);
      expect(existsSync(join(root, entry)), `${unit}: ${entry} under the root`).toBe(true);
      expect(mode(join(units, unit))).toBe("0644");
    }
    expect(readFileSync(join(units, "berth-agent.service.d/watchdog.conf"), "utf8")).toBe(readFileSync(join(SYSTEMD, "berth-agent-watchdog.conf"), "utf8"));
  });

  it("makes /etc/berth: the env files from the examples (0600), tls 0750 (group berth: the controller's), etcd 0700", () => {
    for (const role of ["controller", "agent"]) {
      const env = join(root, `etc/berth/${role}.env`);
      expect(readFileSync(env, "utf8")).toBe(readFileSync(join(REPO, `deploy/${role}.env.example`), "utf8"));
      expect(mode(env)).toBe("0600");
    }
    expect(mode(join(root, "etc/berth/tls"))).toBe("0750");
    expect(first.stdout).toContain("would run: chown root:berth /etc/berth/tls");
    expect(mode(join(root, "etc/berth/etcd"))).toBe("0700");
  });

  describeRequiring("deploy/install.sh: systemd-analyze verify on the installed units", missingSystemdAnalyze(), () => {
    it("the controller's unit, and the agent's with its watchdog drop-in, verify cleanly where they were installed", () => {
      const units = join(root, "etc/systemd/system");
      expect(verifyComplaints(join(units, "berth-controller.service"))).toEqual([]);
      expect(verifyComplaints(join(units, "berth-agent.service"))).toEqual([]);
    });
  });

  it("a second run keeps what the operator edited and changes nothing else", () => {
    const controllerEnv = join(root, "etc/berth/controller.env");
    const agentEnv = join(root, "etc/berth/agent.env");
    appendFileSync(controllerEnv, "BERTH_LISTEN=10.0.0.11:7400\n");
    appendFileSync(agentEnv, "BERTH_HOST_ID=hv-07\n");
    const before = { controller: readFileSync(controllerEnv, "utf8"), agent: readFileSync(agentEnv, "utf8") };
    const current = readlinkSync(join(root, "opt/berth/current"));
    const again = install(args());
    console.log(`install.sh --root, second run: ${again.ms} ms`);
    ok(again, "install.sh (second run)");
    expect(readFileSync(controllerEnv, "utf8")).toBe(before.controller);
    expect(readFileSync(agentEnv, "utf8")).toBe(before.agent);
    expect(again.stdout).toContain("kept /etc/berth/controller.env");
    expect(again.stdout).toContain("kept /etc/berth/agent.env");
    expect(readlinkSync(join(root, "opt/berth/current"))).toBe(current);
    expect(releases(root)).toEqual([current.slice("releases/".length)]);
    expect(existsSync(join(root, "opt/berth/previous"))).toBe(false);
    expect(again.stdout).toMatch(/release \S+ is already installed in \/opt\/berth\/releases: reused/);
    expect(again.stdout).not.toContain("copying the runtime");
    expect(again.stdout).toContain("/etc/systemd/system/berth-controller.service unchanged");
    expect(again.stdout).toContain("/usr/local/bin/berth unchanged");
    expect(existsSync(join(root, "etc/berth/replaced"))).toBe(false);
  });

  it("an upgrade is a new release and a switch of current; --keep removes the oldest; --rollback goes back", () => {
    const original = readlinkSync(join(root, "opt/berth/current"));
    // An older release beside it (hard links within the scratch root: no copy), older by a day.
    const old = join(root, "opt/berth/releases/lab-old");
    expect(spawnSync("cp", ["-al", join(root, "opt/berth", original), old]).status).toBe(0);
    const dayAgo = new Date(Date.now() - 86_400_000);
    utimesSync(old, dayAgo, dayAgo);

    const next = install(["--root", root, "--release", "lab-next", "--keep", "2", "--role", "controller,agent", "--now"]);
    console.log(`install.sh --root --release lab-next: ${next.ms} ms`);
    ok(next, "install.sh --release lab-next --keep 2");
    expect(readlinkSync(join(root, "opt/berth/current"))).toBe("releases/lab-next");
    expect(readlinkSync(join(root, "opt/berth/previous"))).toBe(original);
    // Two kept: current (lab-next) and previous (the original); lab-old goes.
    expect(next.stdout).toContain("removed the old release lab-old");
    // --now restarts the units onto the new release (printed under --root).
    expect(next.stdout).toContain("would run: systemctl restart berth-controller.service");
    expect(next.stdout).toContain("would run: systemctl restart berth-agent.service");
    expect(releases(root)).toEqual([original.slice("releases/".length), "lab-next"].sort());
    expect(readFileSync(join(root, "opt/berth/current/RELEASE"), "utf8")).toMatch(/^name=lab-next$/m);
    ok(command(root, "usr/local/bin", "berth", ["--version"]), "berth --version on lab-next");
    expect(readFileSync(join(root, "etc/berth/agent.env"), "utf8")).toContain("BERTH_HOST_ID=hv-07\n");

    const back = install(["--root", root, "--rollback"]);
    ok(back, "install.sh --rollback");
    expect(readlinkSync(join(root, "opt/berth/current"))).toBe(original);
    expect(readlinkSync(join(root, "opt/berth/previous"))).toBe("releases/lab-next");
    expect(back.stdout).toContain("Restart to run it: systemctl restart berth-controller.service berth-agent.service");
    expect(command(root, "usr/local/bin", "berth", ["--version"]).stdout.trim()).toBe(`berth ${VERSION}`);

    // Rolling back again returns to lab-next: the two swap.
    ok(install(["--root", root, "--rollback"]), "install.sh --rollback (again)");
    expect(readlinkSync(join(root, "opt/berth/current"))).toBe("releases/lab-next");
    expect(readlinkSync(join(root, "opt/berth/previous"))).toBe(original);
  });
});

describe("deploy/install.sh --root: another prefix, bin and unit directory", () => {
  it("the unit's ExecStart and the wrappers follow --prefix and --bin-dir; the rest of the unit is deploy/systemd's", () => {
    const root = scratch("berth-install-prefix-");
    const r = install(["--root", root, "--prefix", "/srv/berth/", "--bin-dir", "/usr/bin", "--unit-dir", "/usr/lib/systemd/system", "--role", "agent", "--no-enable"]);
    ok(r, "install.sh --prefix /srv/berth");
    expect(r.stdout).not.toContain("would run: systemctl enable");
    const unit = join(root, "usr/lib/systemd/system/berth-agent.service");
    const entry = execStartEntry(unit);
    expect(entry).toBe("/srv/berth/current/packages/agent/dist/main.js");
    expect(existsSync(join(root, entry))).toBe(true);
    expect(readFileSync(unit, "utf8").replaceAll("/srv/berth/current/", "/opt/berth/current/")).toBe(readFileSync(join(SYSTEMD, "berth-agent.service"), "utf8"));
    const version = command(root, "usr/bin", "berth-agent", ["--version"]);
    ok(version, "berth-agent --version");
    expect(version.stdout.trim()).toBe(`berth-agent ${VERSION}`);
    expect(mode(join(root, "etc/berth/tls"))).toBe("0700"); // no controller here: root only
    // The whole root moved elsewhere still runs: the wrapper finds the release relative to itself.
    const moved = `${root}-moved`;
    renameSync(root, moved);
    temps.push(moved);
    expect(command(moved, "usr/bin", "berth", ["--version"]).stdout.trim()).toBe(`berth ${VERSION}`);
  });
});

describe("deploy/install.sh: refusals", () => {
  it("--help prints the usage and exits 0", () => {
    const root = scratch("berth-install-help-");
    const r = install(["--root", root, "--help"]);
    ok(r, "install.sh --help");
    expect(r.stdout).toMatch(/^Usage: deploy\/install\.sh/);
    for (const flag of ["--role", "--prefix", "--bin-dir", "--unit-dir", "--root", "--no-enable", "--now", "--rollback"]) expect(r.stdout).toContain(flag);
    expect(readdirSync(root)).toEqual([]);
  });

  for (const [bad, message] of [
    [["--bogus"], /unknown option: --bogus/],
    [["--role", "database"], /unknown role: 'database'/],
    [["--role"], /--role needs a value/],
    [["--prefix", "opt/berth"], /--prefix must be an absolute path/],
    [["--now=yes"], /--now takes no value/],
    [["--rollback", "--role", "agent"], /--rollback takes none of --role/],
    [["controller"], /unexpected argument: 'controller'/],
  ] as const) {
    it(`${bad.join(" ")}: exit 2 with a message, nothing written`, () => {
      const root = scratch("berth-install-bad-");
      const r = install(["--root", root, ...bad]);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toContain("(see --help)");
      expect(readdirSync(root)).toEqual([]);
    });
  }

  it("a berth in the bin directory that is not its wrapper (npm's unrelated 'berth' package) is left alone: exit 1, no release copied", () => {
    const root = scratch("berth-install-foreign-");
    mkdirSync(join(root, "usr/local/bin"), { recursive: true });
    symlinkSync("../lib/node_modules/berth/cli.js", join(root, "usr/local/bin/berth"));
    const r = install(["--root", root, "--role", "cli"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/\/usr\/local\/bin\/berth exists and is not Berth's wrapper/);
    expect(lstatSync(join(root, "usr/local/bin/berth")).isSymbolicLink()).toBe(true);
    expect(existsSync(join(root, "opt/berth/releases"))).toBe(false);
  });

  it("--rollback with no previous release: exit 1, saying so", () => {
    const root = scratch("berth-install-norollback-");
    const r = install(["--root", root, "--rollback"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/no release is installed in \/opt\/berth/);
  });
});
