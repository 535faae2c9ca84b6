/**
 * The admin port and Prometheus metrics, end to end: a real etcd, a controller process and two
 * agent processes (mutual TLS from the test PKI), each with --admin-listen. A VM created through
 * the API and one that fits nowhere move the scheduler's counters, the host's allocation and the
 * VM phase gauge; the agents count the commands they ran; /healthz says ok; and `promtool check
 * metrics` (Prometheus' own linter) finds nothing to say about either daemon's output.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, expect, it } from "vitest";
import { HostState, VmPhase } from "@berth/api";
import { etcdAvailable, startEtcd, type RunningEtcd } from "../support/etcd.js";
import { clusterClient, type ClusterClient } from "../support/grpc.js";
import { AGENT_BIN, CONTROLLER_BIN, freePort, Proc, waitFor } from "../support/processes.js";
import { describeRequiring } from "../support/requirements.js";

const HOSTS = ["host-1", "host-2"];
const vmSize = { vcpus: 2, memoryMib: 2048, diskGib: 10 };
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

function missing(): string | undefined {
  const etcd = etcdAvailable();
  if (!etcd.ok) return etcd.reason;
  const promtool = spawnSync("promtool", ["--version"], { encoding: "utf8" });
  if (promtool.error || promtool.status !== 0) return "promtool is not installed (Debian/Ubuntu: apt-get install prometheus)";
  return undefined;
}

/** One sample of the text exposition: `name{labels} value`. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample named `name` whose labels include `labels`; undefined when none. */
function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

async function get(url: string): Promise<{ status: number; type: string | null; body: string }> {
  const r = await fetch(url);
  return { status: r.status, type: r.headers.get("content-type"), body: await r.text() };
}

function promtool(text: string): { status: number | null; output: string } {
  const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describeRequiring("end to end: the admin port's /metrics and /healthz (controller + 2 agents on real etcd)", missing(), () => {
  let etcd: RunningEtcd;
  let dir: string;
  let address: string;
  let controllerAdmin: string;
  const agentAdmin = new Map<string, string>();
  let controller: Proc;
  const agents = new Map<string, Proc>();
  let client: ClusterClient;

  const dumpLogs = (): void => {
    console.error([controller, ...agents.values()].filter(Boolean).map((p) => p.tail(30)).join("\n"));
  };
  const scrape = async (base: string): Promise<Sample[]> => {
    const r = await get(`${base}/metrics`);
    expect(r.status).toBe(200);
    return parse(r.body);
  };

  beforeAll(async () => {
    etcd = await startEtcd();
    dir = mkdtempSync(join(tmpdir(), "berth-metrics-"));
    address = `127.0.0.1:${await freePort()}`;
    controllerAdmin = `127.0.0.1:${await freePort()}`;
    controller = new Proc("controller", CONTROLLER_BIN, ["--listen", address, "--etcd", etcd.endpoint, "--report-interval", "300", "--admin-listen", controllerAdmin]);
    for (const h of HOSTS) {
      const admin = `127.0.0.1:${await freePort()}`;
      agentAdmin.set(h, `http://${admin}`);
      agents.set(
        h,
        new Proc(h, AGENT_BIN, ["--host-id", h, "--controller", address, "--driver", "fake", "--state-dir", join(dir, h), "--capacity", "vcpus=4,memory=8GiB,disk=100GiB", "--admin-listen", admin]),
      );
    }
    client = clusterClient(address);
    try {
      await waitFor("two ready hosts", async () => (await client.listHosts({})).hosts.filter((h) => h.state === HostState.HOST_STATE_READY).length === 2);
    } catch (e) {
      dumpLogs();
      throw e;
    }
  });

  afterAll(async () => {
    client?.close();
    await Promise.all([...agents.values()].map((a) => a.stop()));
    await controller?.stop();
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("the controller logs where its admin port is, and /healthz is ok on the leader and on both agents", async () => {
    expect(controller.lines(`admin HTTP on http://${controllerAdmin}/`)).toHaveLength(1);
    const health = await get(`http://${controllerAdmin}/healthz`);
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toEqual({ status: "ok", leader: true });
    for (const h of HOSTS) {
      const r = await waitFor(`${h} healthy`, async () => {
        const res = await get(`${agentAdmin.get(h)}/healthz`);
        return res.status === 200 ? res : undefined;
      });
      expect(JSON.parse(r.body)).toEqual({ status: "ok", controller: address });
    }
  });

  it("a created VM and an unschedulable one move the scheduler's counters, the host's allocation and the phase gauge", async () => {
    const before = await scrape(`http://${controllerAdmin}`);
    expect(valueOf(before, "berth_scheduler_schedule_attempts_total", { result: "scheduled" })).toBe(0);
    expect(valueOf(before, "berth_scheduler_schedule_attempts_total", { result: "unschedulable" })).toBe(0);
    expect(valueOf(before, "berth_vms", { phase: "RUNNING" })).toBe(0);
    expect(valueOf(before, "berth_leader")).toBe(1);
    expect(valueOf(before, "berth_agent_streams")).toBe(2);
    for (const h of HOSTS) {
      expect(valueOf(before, "berth_host_state", { host: h, state: "READY" })).toBe(1);
      expect(valueOf(before, "berth_host_state", { host: h, state: "SUSPECT" })).toBe(0);
      expect(valueOf(before, "berth_host_cordoned", { host: h })).toBe(0);
      expect(valueOf(before, "berth_host_allocated_vcpus", { host: h })).toBe(0);
      // 4 vCPUs at the cluster's default ratio and reserve, as ListHosts and the scheduler see them.
      expect(valueOf(before, "berth_host_allocatable_vcpus", { host: h })).toBeGreaterThan(0);
    }

    const { vm } = await client.createVm({ spec: { name: "web-1", resources: vmSize } });
    const host = vm!.hostId;
    expect(HOSTS).toContain(host);
    await waitFor("web-1 running", async () => (await client.getVm({ name: "web-1" })).vm?.status?.phase === VmPhase.VM_PHASE_RUNNING);
    const tooBig = await client.createVm({ spec: { name: "huge", resources: { vcpus: 64, memoryMib: 1024, diskGib: 1 } } }).then(
      () => undefined,
      (e: ServiceError) => e,
    );
    expect(tooBig?.code).toBe(status.RESOURCE_EXHAUSTED);

    // The agent reports the VM running a moment before the record says so: wait for the record.
    const after = await waitFor("the VM counted RUNNING", async () => {
      const s = await scrape(`http://${controllerAdmin}`);
      return valueOf(s, "berth_vms", { phase: "RUNNING" }) === 1 ? s : undefined;
    });
    expect(valueOf(after, "berth_scheduler_schedule_attempts_total", { result: "scheduled" })).toBe(1);
    expect(valueOf(after, "berth_scheduler_schedule_attempts_total", { result: "unschedulable" })).toBe(1);
    expect(valueOf(after, "berth_scheduler_schedule_attempts_total", { result: "error" })).toBe(0);
    expect(valueOf(after, "berth_scheduler_scheduling_attempt_duration_seconds_count", { result: "scheduled" })).toBe(1);
    expect(valueOf(after, "berth_scheduler_pending_vms")).toBe(0);
    expect(valueOf(after, "berth_host_allocated_vcpus", { host })).toBe(vmSize.vcpus);
    expect(valueOf(after, "berth_host_allocated_memory_bytes", { host })).toBe(vmSize.memoryMib * MIB);
    expect(valueOf(after, "berth_host_allocated_disk_bytes", { host })).toBe(vmSize.diskGib * GIB);
    const other = HOSTS.find((h) => h !== host)!;
    expect(valueOf(after, "berth_host_allocated_vcpus", { host: other })).toBe(0);
    // Allocatable is ListHosts' figure (ratio × physical − reserved), not restated here.
    const { hosts } = await client.listHosts({});
    expect(hosts.find((h) => h.id === host)?.allocated).toEqual(vmSize);
    // The agent's create (and start) came back ok.
    expect(valueOf(after, "berth_agent_commands_total", { kind: "create", result: "ok" })).toBeGreaterThanOrEqual(1);
    // Every write went through the fenced writer: the VM's create among them.
    expect(valueOf(after, "berth_store_write_duration_seconds_count", { op: "vm" })).toBeGreaterThanOrEqual(1);
    // Exported. Its count is not fixed here: a conflict is a guarded write that lost a race (a
    // report's status write against the reconciler's, on a loaded machine) and was retried, which
    // is the guard working; metrics.test.ts counts one made on purpose.
    expect(valueOf(after, "berth_store_write_conflicts_total")).toBeGreaterThanOrEqual(0);
    expect(valueOf(after, "berth_migrations_total", { result: "completed" })).toBe(0);
    expect(valueOf(after, "berth_host_fences_total")).toBe(0);
    // Node's standard metrics are there under their usual names.
    expect(valueOf(after, "process_cpu_seconds_total")).toBeGreaterThan(0);

    const agent = await scrape(agentAdmin.get(host)!);
    expect(valueOf(agent, "berth_agent_commands_executed_total", { kind: "create", result: "ok" })).toBeGreaterThanOrEqual(1);
    expect(valueOf(agent, "berth_agent_command_duration_seconds_count", { kind: "create", result: "ok" })).toBeGreaterThanOrEqual(1);
    expect(valueOf(agent, "berth_agent_domains", { state: "RUNNING" })).toBe(1);
    expect(valueOf(agent, "berth_agent_connected")).toBe(1);
    expect(valueOf(agent, "berth_agent_reports_sent_total")).toBeGreaterThan(0);
    const idle = await scrape(agentAdmin.get(other)!);
    expect(valueOf(idle, "berth_agent_domains", { state: "RUNNING" })).toBe(0);
    expect(valueOf(idle, "berth_agent_commands_executed_total", { kind: "create", result: "ok" })).toBeUndefined();
  });

  it("promtool check metrics finds no problem in the controller's or an agent's output", async () => {
    for (const base of [`http://${controllerAdmin}`, agentAdmin.get("host-1")!]) {
      const r = await get(`${base}/metrics`);
      expect(r.type).toMatch(/^text\/plain; version=0\.0\.4/);
      const lint = promtool(r.body);
      expect(lint.output, base).toBe("");
      expect(lint.status, base).toBe(0);
    }
    // And promtool does speak up about a bad exposition (the check can fail).
    expect(promtool("# TYPE x_seconds counter\nx_seconds 1\n").output).not.toBe("");
  });

  it("a second controller whose admin port is taken exits at once, naming --admin-listen's address", async () => {
    const second = new Proc("controller-2", CONTROLLER_BIN, ["--listen", `127.0.0.1:${await freePort()}`, "--etcd", etcd.endpoint, "--admin-listen", controllerAdmin]);
    expect(await second.exited).toBe(1);
    expect(second.lines(`cannot listen on ${controllerAdmin}: the address is in use`).length).toBeGreaterThan(0);
  });
});
