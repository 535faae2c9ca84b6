// The deployment files in deploy/: the systemd units stay hardened (`systemd-analyze security`
// rates each below 7.0, "MEDIUM" or better) and parse cleanly (`systemd-analyze verify`), and the
// env examples carry no secret and give the agent nothing of etcd's. Both tools work offline, on
// unit files given by path, with no systemd running (systemd ≥ 252 for `security --offline`).
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { describeRequiring } from "../support/requirements.js";
import { analyze, missingSystemdAnalyze, verifyComplaints } from "../support/systemd-analyze.js";

const DEPLOY = fileURLToPath(new URL("../../deploy/", import.meta.url));
const SYSTEMD = join(DEPLOY, "systemd");
const AGENT_UNIT = join(SYSTEMD, "berth-agent.service");
const CONTROLLER_UNIT = join(SYSTEMD, "berth-controller.service");
const WATCHDOG_DROPIN = join(SYSTEMD, "berth-agent-watchdog.conf");
const AGENT_ENV = join(DEPLOY, "agent.env.example");
const CONTROLLER_ENV = join(DEPLOY, "controller.env.example");

/** `systemd-analyze security` levels from best to worst; MEDIUM is the worst accepted. */
const ACCEPTED_LEVELS = ["SAFE", "OK", "MEDIUM"];
const MAX_EXPOSURE = 7.0;

/** The last "Overall exposure level for UNIT: N.N LEVEL" line of `systemd-analyze security`. */
function overallExposure(output: string): { unit: string; exposure: number; level: string } {
  const lines = [...output.matchAll(/Overall exposure level for (\S+): (\d+(?:\.\d+)?) ([A-Z]+)/g)];
  const last = lines.at(-1);
  if (!last) throw new Error(`no "Overall exposure level" line in:\n${output}`);
  return { unit: last[1]!, exposure: Number(last[2]), level: last[3]! };
}

function security(unitPath: string): { unit: string; exposure: number; level: string; output: string } {
  const r = analyze(["security", "--offline=true", "--no-pager", unitPath]);
  expect(r.status, `systemd-analyze security ${unitPath}: ${r.stderr}`).toBe(0);
  return { ...overallExposure(r.stdout), output: r.stdout };
}

const temps: string[] = [];
afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

/** A directory with the agent unit and the watchdog drop-in beside it, as installed (both tools read NAME.service.d/ next to a unit given by path). */
function agentWithWatchdogDropin(): string {
  const dir = mkdtempSync(join(tmpdir(), "berth-units-"));
  temps.push(dir);
  copyFileSync(AGENT_UNIT, join(dir, "berth-agent.service"));
  mkdirSync(join(dir, "berth-agent.service.d"));
  copyFileSync(WATCHDOG_DROPIN, join(dir, "berth-agent.service.d", "watchdog.conf"));
  return join(dir, "berth-agent.service");
}

/** The lines of a unit or env file that are not comments or blank. */
function settings(path: string): string[] {
  return readFileSync(path, "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#") && !l.startsWith(";"));
}

/** The values a unit assigns to a key, in order. */
function values(path: string, key: string): string[] {
  return settings(path)
    .filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1));
}

/** KEY=VALUE assignments of an env file (quotes removed). */
function envAssignments(path: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of settings(path)) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new Error(`${path}: not KEY=VALUE: ${line}`);
    out.set(m[1]!, m[2]!.replace(/^"(.*)"$/, "$1"));
  }
  return out;
}

describeRequiring("deploy: systemd-analyze security and verify (offline)", missingSystemdAnalyze(), () => {
  for (const [name, path] of [
    ["berth-agent.service", AGENT_UNIT],
    ["berth-controller.service", CONTROLLER_UNIT],
  ] as const) {
    it(`${name}: overall exposure below ${MAX_EXPOSURE} (MEDIUM or better)`, () => {
      const { unit, exposure, level } = security(path);
      console.log(`systemd-analyze security --offline=true ${name}: ${exposure} ${level}`);
      expect(unit).toBe(name);
      expect(exposure).toBeLessThan(MAX_EXPOSURE);
      expect(ACCEPTED_LEVELS).toContain(level);
    });

    it(`${name}: systemd-analyze verify finds no unknown key or bad value`, () => {
      expect(verifyComplaints(path)).toEqual([]);
    });
  }

  it("berth-agent.service with the watchdog drop-in: still below the threshold, and the drop-in is applied", () => {
    const unit = agentWithWatchdogDropin();
    const { exposure, level, output } = security(unit);
    console.log(`systemd-analyze security --offline=true berth-agent.service + watchdog.conf: ${exposure} ${level}`);
    expect(output).toMatch(/\/dev\/watchdog:w/);
    expect(exposure).toBeLessThan(MAX_EXPOSURE);
    expect(ACCEPTED_LEVELS).toContain(level);
    expect(verifyComplaints(unit)).toEqual([]);
  });

  it("verify does report a bad key (so the check above can fail)", () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-units-"));
    temps.push(dir);
    const bad = join(dir, "bad.service");
    writeFileSync(bad, "[Service]\nExecStart=/usr/bin/env true\nProtectSystem=stricter\nNoSuchDirective=1\n");
    const complaints = verifyComplaints(bad).join("\n");
    expect(complaints).toMatch(/NoSuchDirective/);
    expect(complaints).toMatch(/stricter/);
  });

  it("the parser finds the overall line of a real report", () => {
    expect(overallExposure("✗ UMask= ...\n\n→ Overall exposure level for x.service: 9.4 UNSAFE 😨\n")).toEqual({ unit: "x.service", exposure: 9.4, level: "UNSAFE" });
  });
});

describe("deploy: the units' hardening choices that keep node and virsh working", () => {
  for (const path of [AGENT_UNIT, CONTROLLER_UNIT]) {
    const name = path.split("/").at(-1)!;
    it(`${name}: no MemoryDenyWriteExecute (V8's JIT needs pages made executable)`, () => {
      expect(values(path, "MemoryDenyWriteExecute").filter((v) => !/^(no|false|0|off)$/i.test(v))).toEqual([]);
    });
    it(`${name}: a system call filter fails calls with EPERM instead of killing the process`, () => {
      // Debian 12's @system-service lacks pkey_alloc (node calls it at start) and ~@resources
      // takes set_mempolicy (libnuma in virsh calls it): both fall back on EPERM, but die of SIGSYS.
      expect(values(path, "SystemCallFilter").length).toBeGreaterThan(0);
      expect(values(path, "SystemCallErrorNumber")).toEqual(["EPERM"]);
    });
  }

  it("berth-controller.service: no capabilities", () => {
    expect(values(CONTROLLER_UNIT, "CapabilityBoundingSet")).toEqual([""]);
  });

  it("berth-agent.service: CAP_DAC_OVERRIDE alone (to open QEMU's console ptys), none ambient, and the ptys allowed", () => {
    expect(values(AGENT_UNIT, "CapabilityBoundingSet")).toEqual(["CAP_DAC_OVERRIDE"]);
    expect(values(AGENT_UNIT, "AmbientCapabilities")).toEqual([""]);
    expect(values(AGENT_UNIT, "DeviceAllow")).toEqual(["char-pts rw"]);
  });

  it("berth-agent.service: not ProcSubset=pid (the state-dir lock reads /proc/sys/kernel/random/boot_id)", () => {
    expect(values(AGENT_UNIT, "ProcSubset")).toEqual([]);
  });
});

describe("deploy: credentials in the env examples and units", () => {
  const SECRET_NAME = /PASSWORD|PASSWD|SECRET|TOKEN/i;
  const files = [AGENT_ENV, CONTROLLER_ENV, AGENT_UNIT, CONTROLLER_UNIT, WATCHDOG_DROPIN];

  it("no secret is written inline: no password/secret/token variable (not even commented out), no PEM, no --etcd-password VALUE", () => {
    for (const path of files) {
      const text = readFileSync(path, "utf8");
      for (const line of text.split("\n")) {
        const assignment = /^[#;\s]*(?:Environment=)?\s*"?([A-Za-z_][A-Za-z0-9_]*)=/.exec(line);
        if (assignment) expect(assignment[1], `${path}: ${line}`).not.toMatch(SECRET_NAME);
        expect(line, path).not.toMatch(/--etcd-password(?!-file)\b/);
      }
      // A password file given in a setting is the unit's credential copy, not a file on disk.
      for (const line of settings(path)) {
        expect(line, path).not.toMatch(/--etcd-password-file[= ](?!\$\{CREDENTIALS_DIRECTORY\}\/|%d\/)/);
      }
      expect(text, path).not.toMatch(/-----BEGIN/);
    }
  });

  it("the env examples name TLS files under /etc/berth/tls/, and no --insecure", () => {
    for (const path of [AGENT_ENV, CONTROLLER_ENV]) {
      const env = envAssignments(path);
      for (const key of ["BERTH_TLS_CA", "BERTH_TLS_CERT", "BERTH_TLS_KEY"]) {
        expect(env.get(key), `${path}: ${key}`).toMatch(/^\/etc\/berth\/tls\/[a-z0-9.-]+\.(crt|key)$/);
      }
      for (const [key, value] of env) expect(`${key}=${value}`, path).not.toMatch(/--insecure/);
      // Any *_KEY setting is a path to a key file, never key material.
      for (const [key, value] of env) if (/_KEY$/.test(key)) expect(value, `${path}: ${key}`).toMatch(/^\//);
    }
  });

  it("the agent's unit, drop-in and env carry no etcd setting", () => {
    for (const path of [AGENT_UNIT, WATCHDOG_DROPIN, AGENT_ENV]) {
      for (const line of settings(path)) expect(line, path).not.toMatch(/etcd/i);
    }
    expect(values(AGENT_UNIT, "LoadCredential")).toEqual([]);
  });

  it("the controller gets etcd's CA, client certificate, key and password as systemd credentials, over https", () => {
    const creds = values(CONTROLLER_UNIT, "LoadCredential").map((v) => v.split(":")[0]);
    expect(creds.sort()).toEqual(["etcd-ca.crt", "etcd-client.crt", "etcd-client.key", "etcd-password"]);
    const environment = values(CONTROLLER_UNIT, "Environment").join(" ");
    expect(environment).toContain("BERTH_ETCD_CA=%d/etcd-ca.crt");
    expect(environment).toContain("BERTH_ETCD_CERT=%d/etcd-client.crt");
    expect(environment).toContain("BERTH_ETCD_KEY=%d/etcd-client.key");
    expect(values(CONTROLLER_UNIT, "ExecStart").join(" ")).toContain("--etcd-password-file ${CREDENTIALS_DIRECTORY}/etcd-password");
    const env = envAssignments(CONTROLLER_ENV);
    for (const url of env.get("BERTH_ETCD")!.split(",")) expect(url).toMatch(/^https:\/\//);
    expect(env.get("BERTH_ETCD_USER")).toMatch(/^[a-z][a-z0-9-]*$/);
  });
});
