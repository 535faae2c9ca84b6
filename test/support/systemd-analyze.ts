// systemd-analyze for the deploy suites: run offline on unit files given by path (no running
// systemd needed; systemd ≥ 252 for `security --offline`).
import { spawnSync } from "node:child_process";

export interface AnalyzeRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function analyze(args: string[]): AnalyzeRun {
  const r = spawnSync("systemd-analyze", args, {
    encoding: "utf8",
    timeout: 20_000,
    env: { ...process.env, SYSTEMD_COLORS: "0", SYSTEMD_PAGER: "", LC_ALL: "C" },
  });
  return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? (r.error ? r.error.message : "") };
}

/** Why the systemd-analyze suites cannot run here, or undefined when they can. */
export function missingSystemdAnalyze(): string | undefined {
  const r = spawnSync("systemd-analyze", ["--version"], { encoding: "utf8", timeout: 10_000 });
  if (r.error) return "systemd-analyze is not installed (Debian: apt-get install systemd; no running systemd needed)";
  const version = Number(/^systemd (\d+)/m.exec(r.stdout)?.[1] ?? 0);
  if (version < 252) return `systemd-analyze ${version || "(unknown version)"} has no 'security --offline' (needs systemd ≥ 252)`;
  return undefined;
}

/**
 * What `systemd-analyze verify` said about the unit's own syntax (its drop-ins in NAME.d/ beside
 * it included): every stderr line but a missing ExecStart binary (the units run /usr/bin/env node
 * on /opt/berth/current, which a CI machine may lack). It exits 0 on unknown keys and unparsable
 * values ("..., ignoring"), so stderr is what counts.
 */
export function verifyComplaints(unitPath: string): string[] {
  const r = analyze(["verify", "--man=no", unitPath]);
  const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
  const complaints = lines.filter((l) => !/Command \S+ is not executable/.test(l));
  if (r.status !== 0 && complaints.length === 0 && lines.length === 0) complaints.push(`exit status ${r.status} with no message`);
  return complaints;
}
