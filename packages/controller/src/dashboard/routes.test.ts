/**
 * The dashboard's routes on a real controller (in process, embedded store, in-process agents on
 * fake hypervisors) and its real admin port: the page and its files, the snapshot, the event
 * stream delivering a change live and ending when the controller stops, the VM page's data, and
 * the admin actions — refused without the CSRF header, from another origin, over plain HTTP and
 * to anyone but an admin's certificate; done for an admin over HTTPS; sent to the leader by a
 * follower.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { VmSpec } from "@berth/api";
import { Agent, resolveAgentOptions } from "@berth/agent";
import { FakeDriver } from "@berth/hypervisor";
import { MemoryStore } from "@berth/store";
import { TestPki } from "../../../core/src/pki.testkit.js";
import { operatorApi, silentLog, startController, tlsFilesFor, waitFor, type Cleanups } from "../controller.testkit.js";
import type { Controller } from "../controller.js";
import type { DashboardChanges, DashboardSnapshot, HostRow, VmDetail } from "./view.js";
import type { WhoAmI } from "./routes.js";

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface ClientCert {
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

interface Reply {
  status: number;
  headers: IncomingMessage["headers"];
  body: string;
}

/** One request over a fresh connection (HTTPS when the URL says so, with `tls` as the client's). */
function send(base: string, path: string, o: { method?: string; body?: string; headers?: Record<string, string>; tls?: ClientCert } = {}): Promise<Reply> {
  const url = new URL(path, base);
  const request = url.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(url, { method: o.method ?? "GET", headers: o.headers, agent: false, ...(o.tls ?? {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(o.body);
  });
}

const json = <T>(r: Reply): T => JSON.parse(r.body) as T;
const post = (base: string, path: string, o: { body?: object; headers?: Record<string, string>; tls?: ClientCert } = {}): Promise<Reply> =>
  send(base, path, { method: "POST", body: JSON.stringify(o.body ?? {}), headers: { "Content-Type": "application/json", ...o.headers }, ...(o.tls ? { tls: o.tls } : {}) });
const ACT = { "X-Berth-Action": "1" };

/** An in-process agent on a fake hypervisor (VMs it is told to create run). */
async function startAgent(hostId: string, address: string): Promise<void> {
  const stateDir = mkdtempSync(join(tmpdir(), `berth-dash-${hostId}-`));
  const driver = new FakeDriver({ stateDir, capacity: { vcpus: 4, memoryMib: 8192, diskGib: 100 } });
  const tls = await tlsFilesFor(address, "host", hostId);
  const agent = new Agent(resolveAgentOptions({ hostId, controllers: [address], ...(tls ? { tls } : {}), driver: "fake", stateDir, minBackoffMs: 50, maxBackoffMs: 200 }), driver, 0, silentLog);
  const abort = new AbortController();
  const running = agent.run(abort.signal);
  cleanups.push(async () => {
    abort.abort();
    await running.catch(() => undefined);
    // Retried: a fake hypervisor may still be finishing a migration's write as the agent stops.
    rmSync(stateDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  });
}

/** A leading controller with an admin port and two READY hosts. */
async function cluster(over: { adminTls?: boolean; store?: MemoryStore } = {}): Promise<{ controller: Controller; address: string; base: string; store: MemoryStore }> {
  const store = over.store ?? new MemoryStore();
  const { controller, address } = await startController(cleanups, store, { adminListen: "127.0.0.1:0", ...(over.adminTls ? { adminTls: true } : {}) });
  await waitFor("leadership", () => controller.isLeader);
  await startAgent("h1", address);
  await startAgent("h2", address);
  const base = `${over.adminTls ? "https" : "http"}://127.0.0.1:${controller.adminPort}`;
  return { controller, address, base, store };
}

async function createVm(address: string, name: string, vcpus = 1, memoryMib = 1024): Promise<void> {
  const { client, call } = operatorApi(cleanups, address);
  await call((m, o, cb) => client.createVm({ spec: VmSpec.fromPartial({ name, resources: { vcpus, memoryMib, diskGib: 1 } }), requestId: "" }, m, o, cb));
}

/** A server-sent event stream's messages as they come, and how it ended. */
function openStream(base: string, tls?: ClientCert): { messages: { event: string; data: unknown }[]; comments: string[]; ended: Promise<void>; close(): void; status: Promise<number> } {
  const url = new URL("/api/stream", base);
  const request = url.protocol === "https:" ? httpsRequest : httpRequest;
  const messages: { event: string; data: unknown }[] = [];
  const comments: string[] = [];
  let ended!: () => void;
  const endedP = new Promise<void>((r) => (ended = r));
  let gotStatus!: (s: number) => void;
  const status = new Promise<number>((r) => (gotStatus = r));
  const req = request(url, { agent: false, ...(tls ?? {}) }, (res) => {
    gotStatus(res.statusCode ?? 0);
    let buffer = "";
    res.setEncoding("utf8");
    res.on("data", (chunk: string) => {
      buffer += chunk;
      let at: number;
      while ((at = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        let event = "message";
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) comments.push(line);
          else if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        if (data.length) messages.push({ event, data: JSON.parse(data.join("\n")) });
      }
    });
    res.on("close", ended);
    res.on("error", ended);
  });
  req.on("error", () => ended());
  req.end();
  cleanups.push(() => {
    req.destroy();
  });
  return { messages, comments, ended: endedP, close: () => req.destroy(), status };
}

describe("the dashboard over plain HTTP (read-only)", () => {
  it("serves the page, its files and a snapshot of hosts (bars by VM) and VMs from the cache", async () => {
    const { base, address } = await cluster();
    const page = await send(base, "/");
    expect(page.status).toBe(200);
    expect(page.headers["content-type"]).toMatch(/^text\/html/);
    expect(page.body).toContain('src="/assets/app.js"');
    const js = await send(base, "/assets/app.js");
    expect(js.status).toBe(200);
    expect(js.headers["content-type"]).toMatch(/^text\/javascript/);
    expect(js.body).toContain("EventSource");
    expect((await send(base, "/assets/app.css")).headers["content-type"]).toMatch(/^text\/css/);
    // Only the named files: nothing else of the folder or the disk.
    expect((await send(base, "/assets/nope.js")).status).toBe(404);
    expect((await send(base, "/assets/..%2Fpackage.json")).status).toBe(404);

    await waitFor("two hosts in the snapshot", async () => json<DashboardSnapshot>(await send(base, "/api/snapshot")).hosts.length === 2);
    await createVm(address, "web-1", 2, 2048);
    const snap = await waitFor("web-1 running in the snapshot", async () => {
      const s = json<DashboardSnapshot>(await send(base, "/api/snapshot"));
      return s.vms.find((v) => v.name === "web-1")?.phase === "RUNNING" ? s : undefined;
    });
    expect(snap.leader).toMatchObject({ controllerId: "c1", leading: true });
    expect(snap.hosts.map((h) => h.id)).toEqual(["h1", "h2"]);
    const vm = snap.vms.find((v) => v.name === "web-1")!;
    expect(vm).toMatchObject({ vcpus: 2, memoryMib: 2048 });
    const on = snap.hosts.find((h) => h.id === vm.hostId)!;
    expect(on.cpu.allocatable).toBeGreaterThan(0);
    expect(on.cpu.allocated).toBe(2);
    expect(on.cpu.segments).toEqual([{ vm: "web-1", amount: 2, amountText: "2 vCPU", fraction: 2 / on.cpu.allocatable, incoming: false }]);
    expect(on.memory.segments.map((s) => [s.vm, s.amount])).toEqual([["web-1", 2048]]);
    expect(on.vmCount).toBe(1);
    const other = snap.hosts.find((h) => h.id !== vm.hostId)!;
    expect(other.cpu.segments).toEqual([]);
    expect(other.badges).toEqual([]);
  });

  it("streams a snapshot, then a created VM as a change, without asking again; ends when the controller stops", async () => {
    const { base, address, controller } = await cluster();
    await waitFor("two hosts", async () => json<DashboardSnapshot>(await send(base, "/api/snapshot")).hosts.length === 2);
    const stream = openStream(base);
    expect(await stream.status).toBe(200);
    const first = await waitFor("the first message", () => stream.messages[0]);
    expect(first.event).toBe("snapshot");
    expect((first.data as DashboardSnapshot).hosts.map((h) => h.id)).toEqual(["h1", "h2"]);
    expect((first.data as DashboardSnapshot).vms).toEqual([]);

    await createVm(address, "live-1");
    const changes = (): DashboardChanges[] => stream.messages.filter((m) => m.event === "changes").map((m) => m.data as DashboardChanges);
    await waitFor("live-1 in a change", () => changes().some((c) => c.vms.some((v) => v.name === "live-1")));
    const hostWithIt = await waitFor("a host row with live-1's segment", () =>
      changes()
        .flatMap((c) => c.hosts)
        .find((h: HostRow) => h.cpu.segments.some((s) => s.vm === "live-1")),
    );
    expect(["h1", "h2"]).toContain(hostWithIt.id);
    await waitFor("live-1 running, streamed", () => changes().some((c) => c.vms.some((v) => v.name === "live-1" && v.phase === "RUNNING")));
    // The events of the create reach the feed too.
    await waitFor("an event naming live-1", () => changes().some((c) => c.events.some((e) => e.objectName === "live-1")));

    await controller.stop();
    await stream.ended;
  });

  it("answers the VM page's data with its placement record, 404 for no such VM", async () => {
    const { base, address } = await cluster();
    await waitFor("two hosts", async () => json<DashboardSnapshot>(await send(base, "/api/snapshot")).hosts.length === 2);
    await createVm(address, "db-1");
    const detail = await waitFor("db-1's page", async () => {
      const r = await send(base, "/api/vms/db-1");
      return r.status === 200 ? json<VmDetail>(r) : undefined;
    });
    expect(detail.vm.name).toBe("db-1");
    expect(["h1", "h2"]).toContain(detail.vm.hostId);
    expect(detail.placement).not.toBeNull();
    expect(detail.placement).toMatchObject({ cause: "create", hostsConsidered: 2 });
    const notFound = await send(base, "/api/vms/nope");
    expect(notFound.status).toBe(404);
    expect(json<{ error: string }>(notFound).error).toMatch(/vm 'nope' not found/);
    expect((await send(base, "/api/vms/Bad_Name")).status).toBe(400);
  });

  it("refuses every action: without the header (CSRF), and over plain HTTP even with it, saying how to act", async () => {
    const { base, controller } = await cluster();
    await waitFor("two hosts", async () => json<DashboardSnapshot>(await send(base, "/api/snapshot")).hosts.length === 2);
    const who = json<WhoAmI>(await send(base, "/api/whoami"));
    expect(who).toMatchObject({ role: null, secure: false, canAct: false });
    expect(who.hint).toMatch(/--admin-tls/);

    const noHeader = await post(base, "/api/hosts/h1/cordon");
    expect(noHeader.status).toBe(403);
    expect(json<{ error: string }>(noHeader).error).toMatch(/x-berth-action/i);
    const plain = await post(base, "/api/hosts/h1/cordon", { headers: ACT });
    expect(plain.status).toBe(403);
    expect(json<{ error: string }>(plain).error).toMatch(/--admin-tls.*admin client certificate/);
    for (const path of ["/api/hosts/h1/drain", "/api/hosts/h1/uncordon", "/api/vms/x/migrate"]) expect((await post(base, path, { headers: ACT })).status).toBe(403);
    expect((await send(base, "/api/hosts/h1/cordon")).status).toBe(405);
    // Nothing changed.
    expect(controller.placer.snapshotOf("h1")?.cordoned).toBe(false);
  });
});

describe("the dashboard over HTTPS (--admin-tls)", () => {
  const certs = async (role: "admin" | "viewer"): Promise<ClientCert> => (await TestPki.shared()).pem(role, role);
  const caOnly = async (): Promise<ClientCert> => ({ ca: (await certs("admin")).ca });

  it("lets an admin certificate cordon, uncordon, drain and migrate through the operator code; nobody else", async () => {
    const { base, address, controller } = await cluster({ adminTls: true });
    const admin = await certs("admin");
    const viewer = await certs("viewer");
    await waitFor("two hosts", async () => json<DashboardSnapshot>(await send(base, "/api/snapshot", { tls: admin })).hosts.length === 2);

    expect(json<WhoAmI>(await send(base, "/api/whoami", { tls: admin }))).toMatchObject({ role: "admin", name: "admin", secure: true, canAct: true, hint: "" });
    const asViewer = json<WhoAmI>(await send(base, "/api/whoami", { tls: viewer }));
    expect(asViewer).toMatchObject({ role: "viewer", canAct: false });
    expect(asViewer.hint).toMatch(/viewer certificate may look, not act/);
    expect(json<WhoAmI>(await send(base, "/api/whoami", { tls: await caOnly() }))).toMatchObject({ role: null, canAct: false });

    // Refused: a viewer, no certificate, an admin without the header, an admin from another origin.
    expect((await post(base, "/api/hosts/h1/cordon", { headers: ACT, tls: viewer })).status).toBe(403);
    expect((await post(base, "/api/hosts/h1/cordon", { headers: ACT, tls: await caOnly() })).status).toBe(403);
    expect((await post(base, "/api/hosts/h1/cordon", { tls: admin })).status).toBe(403);
    const crossSite = await post(base, "/api/hosts/h1/cordon", { headers: { ...ACT, Origin: "https://evil.example" }, tls: admin });
    expect(crossSite.status).toBe(403);
    expect(json<{ error: string }>(crossSite).error).toMatch(/own page/);
    expect(controller.placer.snapshotOf("h1")?.cordoned).toBe(false);

    // Done, with the page's own origin.
    const origin = base;
    const cordoned = await post(base, "/api/hosts/h1/cordon", { headers: { ...ACT, Origin: origin }, body: { reason: "disk swap" }, tls: admin });
    expect(cordoned.status).toBe(200);
    expect(json<{ host: HostRow }>(cordoned).host).toMatchObject({ id: "h1", cordonReason: "disk swap" });
    expect(json<{ host: HostRow }>(cordoned).host.badges.map((b) => b.label)).toContain("CORDONED");
    await waitFor("h1 cordoned in the cache", () => controller.placer.snapshotOf("h1")?.cordoned === true);
    // The operator code's own rules apply (one definition): the reason's bound.
    const long = await post(base, "/api/hosts/h1/cordon", { headers: ACT, body: { reason: "x".repeat(300) }, tls: admin });
    expect(long.status).toBe(400);
    expect(json<{ error: string }>(long).error).toMatch(/^reason: at most 256 characters/);
    expect((await post(base, "/api/hosts/nope/cordon", { headers: ACT, tls: admin })).status).toBe(404);
    expect((await post(base, "/api/hosts/h1/reboot", { headers: ACT, tls: admin })).status).toBe(404);
    expect((await send(base, "/api/hosts/h1/cordon", { method: "POST", body: "{", headers: ACT, tls: admin })).status).toBe(400);

    const uncordoned = await post(base, "/api/hosts/h1/uncordon", { headers: ACT, tls: admin });
    expect(uncordoned.status).toBe(200);
    await waitFor("h1 uncordoned", () => controller.placer.snapshotOf("h1")?.cordoned === false);

    const badDrain = await post(base, "/api/hosts/h2/drain", { headers: ACT, body: { onDeadline: "EXPLODE" }, tls: admin });
    expect(badDrain.status).toBe(400);
    const drained = await post(base, "/api/hosts/h2/drain", { headers: ACT, body: { reason: "kernel update" }, tls: admin });
    expect(drained.status).toBe(200);
    expect(json<{ host: HostRow }>(drained).host.badges.map((b) => b.label)).toEqual(expect.arrayContaining(["CORDONED"]));
    await waitFor("h2 cordoned by its drain", () => controller.placer.snapshotOf("h2")?.cordoned === true);
    await post(base, "/api/hosts/h2/uncordon", { headers: ACT, tls: admin });
    await waitFor("h2 uncordoned", () => controller.placer.snapshotOf("h2")?.cordoned === false);

    // Migrate: refused with the migration code's reason for a VM that is not running, then requested.
    await createVm(address, "mover");
    const vm = await waitFor("mover running", async () => {
      const r = await send(base, "/api/vms/mover", { tls: admin });
      const d = r.status === 200 ? json<VmDetail>(r) : undefined;
      return d?.vm.phase === "RUNNING" ? d : undefined;
    });
    expect((await post(base, "/api/vms/nope/migrate", { headers: ACT, tls: admin })).status).toBe(404);
    const target = vm.vm.hostId === "h1" ? "h2" : "h1";
    const migrated = await post(base, "/api/vms/mover/migrate", { headers: ACT, body: { targetHost: target }, tls: admin });
    expect(migrated.status).toBe(200);
    expect(json<{ migration: { vmName: string; target: string; source: string } }>(migrated).migration).toMatchObject({ vmName: "mover", source: vm.vm.hostId, target });
    const again = await post(base, "/api/vms/mover/migrate", { headers: ACT, tls: admin });
    expect([409, 200]).toContain(again.status); // already migrating (409) unless it finished already
    // Left to finish (the fake hypervisors' migration ends), as the VM page shows it.
    const done = await waitFor("mover's migration to end", async () => {
      const d = json<VmDetail>(await send(base, "/api/vms/mover", { tls: admin }));
      return d.migration && !d.migration.active ? d : undefined;
    }, 20_000);
    expect(done.migration).toMatchObject({ phase: "COMPLETED", progress: 1 });
    expect(done.vm.hostId).toBe(target);
  });

  it("on a follower: reads its own cache, and sends actions to the leader (503 naming it)", async () => {
    const { store, base: leaderBase } = await cluster({ adminTls: true });
    const admin = await certs("admin");
    const { controller: follower } = await startController(cleanups, store, { controllerId: "c2", adminListen: "127.0.0.1:0", adminTls: true });
    const base = `https://127.0.0.1:${follower.adminPort}`;
    const snap = await waitFor("the follower's snapshot with both hosts", async () => {
      const s = json<DashboardSnapshot>(await send(base, "/api/snapshot", { tls: admin }));
      return s.hosts.length === 2 ? s : undefined;
    });
    expect(snap.leader).toMatchObject({ controllerId: "c2", leading: false });
    expect(snap.leader.leaderAddress).toMatch(/^127\.0\.0\.1:\d+$/);
    const refused = await post(base, "/api/hosts/h1/cordon", { headers: ACT, tls: admin });
    expect(refused.status).toBe(503);
    expect(json<{ error: string; code: string; leader: string }>(refused)).toMatchObject({ code: "NOT_LEADER", leader: snap.leader.leaderAddress });
    expect(leaderBase).not.toBe(base);
  });
});
