/**
 * The controller's web dashboard in a real browser: a real etcd, a controller process with
 * --admin-listen and three agent processes (mutual TLS from the test PKI), and Debian's Chromium
 * driven by playwright-core. The page shows the hosts (a bar segment per VM) and the VMs; a VM
 * created with the CLI appears without a reload; its page explains its placement; dense mode
 * draws one tile per host; the actions are disabled (plain HTTP is read-only) saying how to act;
 * a scale group made through the API gets a row in the Scale groups panel (none before), and a
 * change of its bounds (a SizeBounded decision) reaches the row, the event feed and the group's
 * page's history without a reload;
 * a controller restart shows "reconnecting" and the page comes back live on its own. No page
 * error and no console error (a CSP violation is one) along the way. Screenshots are saved to
 * test-artifacts/dashboard/.
 */
import { execFile, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, expect, it } from "vitest";
import { HostState, ScalePrediction } from "@berth/api";
import { etcdAvailable, startEtcd, type RunningEtcd } from "../support/etcd.js";
import { clusterClient, type ClusterClient } from "../support/grpc.js";
import { tlsEnv } from "../support/pki.js";
import { AGENT_BIN, CLI_BIN, CONTROLLER_BIN, freePort, Proc, waitFor } from "../support/processes.js";
import { describeRequiring } from "../support/requirements.js";

const execFileP = promisify(execFile);
const HOSTS = ["host-1", "host-2", "host-3"];
const ARTIFACTS = resolve("test-artifacts/dashboard");
/** The browser: Debian's chromium package (CHROMIUM_BIN to use another). */
const CHROMIUM = process.env.CHROMIUM_BIN ?? "chromium";

/** The absolute path of the Chromium binary, or undefined when there is none to run. */
function chromiumPath(): string | undefined {
  if (CHROMIUM.includes("/")) return CHROMIUM;
  const r = spawnSync("sh", ["-c", `command -v ${CHROMIUM}`], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function missing(): string | undefined {
  const etcd = etcdAvailable();
  if (!etcd.ok) return etcd.reason;
  const path = chromiumPath();
  if (!path) return `no '${CHROMIUM}' to drive (Debian/Ubuntu: apt-get install chromium; or set CHROMIUM_BIN)`;
  const r = spawnSync(path, ["--headless", "--no-sandbox", "--version"], { encoding: "utf8", timeout: 30_000 });
  if (r.error || r.status !== 0) return `'${path} --version' failed: ${r.error?.message ?? r.stderr.trim()}`;
  return undefined;
}

describeRequiring("end to end: the web dashboard in Chromium (controller + 3 agents on real etcd)", missing(), () => {
  let etcd: RunningEtcd;
  let dir: string;
  let address: string;
  let adminListen: string;
  let controller: Proc;
  const agents: Proc[] = [];
  let client: ClusterClient;
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];
  const shots: string[] = [];

  const startController = (): Proc =>
    new Proc("controller", CONTROLLER_BIN, ["--listen", address, "--etcd", etcd.endpoint, "--report-interval", "300", "--leader-ttl", "3000", "--admin-listen", adminListen], { LOG_LEVEL: "info" });
  const dumpLogs = (): void => console.error([controller, ...agents].filter(Boolean).map((p) => p.tail(20)).join("\n"));
  const shot = async (name: string): Promise<void> => {
    const path = join(ARTIFACTS, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    shots.push(path);
  };
  /** `berth` as an operator runs it, with the test CA's admin certificate. */
  const berth = (...args: string[]): Promise<{ stdout: string; stderr: string }> =>
    execFileP(process.execPath, [CLI_BIN, "--controller", address, ...args], { env: { ...process.env, ...tlsEnv("admin", "admin") }, timeout: 30_000 });

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    etcd = await startEtcd();
    dir = mkdtempSync(join(tmpdir(), "berth-e2e-dashboard-"));
    address = `127.0.0.1:${await freePort()}`;
    adminListen = `127.0.0.1:${await freePort()}`;
    controller = startController();
    for (const h of HOSTS) {
      agents.push(new Proc(h, AGENT_BIN, ["--host-id", h, "--controller", address, "--driver", "fake", "--state-dir", join(dir, h), "--capacity", "vcpus=8,memory=16GiB,disk=200GiB"], { LOG_LEVEL: "info" }));
    }
    client = clusterClient(address);
    try {
      await waitFor("three ready hosts", async () => (await client.listHosts({})).hosts.filter((h) => h.state === HostState.HOST_STATE_READY).length === 3);
      for (const [name, vcpus, memoryMib] of [["web-1", 2, 4096], ["db-1", 4, 8192]] as const) {
        await client.createVm({ spec: { name, resources: { vcpus, memoryMib, diskGib: 20 }, labels: { app: name.split("-")[0]! } } });
      }
    } catch (e) {
      dumpLogs();
      throw e;
    }
    browser = await chromium.launch({ executablePath: chromiumPath()!, args: ["--no-sandbox"] });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console error: ${m.text()}`);
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    client?.close();
    await Promise.all(agents.map((a) => a.stop()));
    await controller?.stop();
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (shots.length) console.log(`dashboard screenshots:\n${shots.map((s) => `  ${s}`).join("\n")}`);
  });

  it("shows every host with a bar segment per VM, live, and the actions disabled saying how to act", async () => {
    await page.goto(`http://${adminListen}/`);
    await page.locator('#conn[data-state="live"]').waitFor({ timeout: 15_000 });
    for (const h of HOSTS) await page.locator(`.host[data-id="${h}"]`).waitFor();
    expect(await page.locator(".host").count()).toBe(3);
    // Each VM is a segment of its host's CPU and memory bars.
    for (const vm of ["web-1", "db-1"]) {
      await page.locator(`.bar-cpu .seg[data-vm="${vm}"]`).waitFor();
      expect(await page.locator(`.bar-memory .seg[data-vm="${vm}"]`).count()).toBe(1);
    }
    expect(await page.locator(`.bar-cpu .seg[data-vm="db-1"]`).getAttribute("title")).toBe("db-1: 4 vCPU");
    expect(await page.locator("#summary").textContent()).toContain("3 hosts (3 ready) · 2 VMs");
    // Plain HTTP: read-only, and the button says how to act.
    const cordon = page.locator('.host[data-id="host-1"] button', { hasText: "Cordon" });
    expect(await cordon.isDisabled()).toBe(true);
    expect(await cordon.getAttribute("title")).toMatch(/--admin-tls and present an admin client certificate/);
    await shot("topology");
  });

  it("lists the VMs, filters them, and shows a VM created with the CLI without a reload", async () => {
    await page.locator('a[data-nav="vms"]').click();
    await page.locator('tr[data-vm="web-1"]').waitFor();
    expect(await page.locator("#vm-rows tr").count()).toBe(2);
    await page.locator("#vm-filter").fill("app=db");
    await waitFor("the filter to leave db-1 alone", async () => (await page.locator("#vm-rows tr").count()) === 1);
    expect(await page.locator('tr[data-vm="db-1"]').count()).toBe(1);
    await page.locator("#vm-filter").fill("");

    // A mark on this document: still there afterwards means the page was never reloaded.
    await page.evaluate(() => ((globalThis as unknown as { berthMark: number }).berthMark = 42));
    await berth("vm", "create", "cli-vm-1", "--vcpus", "1", "--memory", "1GiB", "--disk", "5GiB", "--label", "made=cli");
    const row = page.locator('tr[data-vm="cli-vm-1"]');
    await row.waitFor({ timeout: 15_000 });
    await page.locator('tr[data-vm="cli-vm-1"] .phase', { hasText: "RUNNING" }).waitFor({ timeout: 15_000 });
    expect(await page.evaluate(() => (globalThis as unknown as { berthMark?: number }).berthMark)).toBe(42);
    expect(await row.locator("td").nth(1).textContent()).toMatch(/^host-[123]$/);
    expect(await page.locator("#vm-count").textContent()).toBe("3 VMs");
    // Its creation reached the event feed too.
    await page.locator(".event", { hasText: "cli-vm-1" }).first().waitFor();
    await shot("vms");
  });

  it("opens the VM's page with its placement explanation", async () => {
    await page.locator('tr[data-vm="cli-vm-1"] a').click();
    await page.locator("table.placement").waitFor({ timeout: 10_000 });
    expect(page.url()).toMatch(/#\/vm\/cli-vm-1$/);
    const text = (await page.locator("#page-vm").textContent()) ?? "";
    expect(text).toContain("cli-vm-1");
    expect(text).toMatch(/Hosts feasible \/ considered3 \/ 3/);
    expect(text).toContain("Total");
    expect(text).not.toMatch(/null|undefined|NaN/);
    expect(text).toMatch(/Runner-up\s*host-[123] \(total/);
    expect(await page.locator("table.placement tr.score").count()).toBeGreaterThan(0);
    expect(await page.locator("#page-vm h1 button", { hasText: "Migrate" }).isDisabled()).toBe(true);
    await shot("vm-page");
  });

  it("draws one tile per host in dense mode, with no per-VM elements", async () => {
    await page.locator('a[data-nav="topology"]').click();
    await page.locator('.bar-cpu .seg[data-vm="cli-vm-1"]').waitFor();
    await page.locator("#dense").check();
    await page.locator(".hosts-dense .tile").first().waitFor();
    expect(await page.locator(".hosts-dense .tile").count()).toBe(3);
    expect(await page.locator("#hosts .seg").count()).toBe(0);
    expect(await page.locator('.tile[data-id="host-2"]').getAttribute("title")).toMatch(/^host-2 — READY/);
    await shot("dense");
    await page.locator("#dense").uncheck();
    await page.locator(".host .bar").first().waitFor();
  });

  it("shows a scale group in its panel, and a change of its bounds live in the row, the feed and the group's history", async () => {
    await page.locator('a[data-nav="topology"]').click();
    await page.locator('.host[data-id="host-1"]').waitFor();
    // No group yet: no panel (the topology is as it was before scale groups).
    expect(await page.locator("#scalegroups-panel").isHidden()).toBe(true);
    await client.createScaleGroup({
      group: {
        name: "shop",
        template: { resources: { vcpus: 1, memoryMib: 512, diskGib: 5 } },
        minSize: 1,
        maxSize: 3,
        policy: { targetCpu: 0.5, intervalMs: 1000, prediction: ScalePrediction.SCALE_PREDICTION_OFF },
      },
    });
    const row = page.locator('tr[data-scalegroup="shop"]');
    await row.waitFor({ timeout: 10_000 });
    const cells = async (): Promise<string[]> => (await row.locator("td").allTextContents()).map((t) => t.trim());
    await waitFor("the group's row with its member running", async () => (await cells())[5] === "1 / 0");
    // Name, size, bounds, target; CPU not measured yet (its one member is warming up for 3 min).
    expect((await cells()).slice(0, 6)).toEqual(["shop", "1", "1..3", "50%", "—", "1 / 0"]);
    expect((await cells())[6]).toBe("none yet");
    // Its creation in the feed links to its page.
    await page.locator(".event", { hasText: "ScaleGroupCreated" }).locator('a[href="#/scalegroup/shop"]').waitFor();

    await row.locator("a").first().click();
    await page.locator('#page-scalegroup tr[data-member="shop-1"]').waitFor({ timeout: 10_000 });
    expect(page.url()).toMatch(/#\/scalegroup\/shop$/);
    expect(await page.locator("#page-scalegroup").textContent()).toContain("None yet.");

    await client.updateScaleGroup({ name: "shop", minSize: 2 });
    // The decision reaches the open page's history, with its inputs, without a reload (the mark stays).
    const decision = page.locator('#page-scalegroup tr[data-seq="1"]');
    await decision.waitFor({ timeout: 10_000 });
    expect((await decision.locator("td").allTextContents()).map((t) => t.trim())).toEqual([
      "1",
      expect.any(String),
      "SizeBounded",
      "1 → 2",
      "—",
      "0 / 0",
      "—",
      "—",
      "the bounds are now 2..3added shop-2",
    ]);
    await page.locator('#page-scalegroup tr[data-member="shop-2"] .phase', { hasText: "RUNNING" }).waitFor({ timeout: 15_000 });
    const text = (await page.locator("#page-scalegroup").textContent()) ?? "";
    expect(text).toContain("2 (min 2, max 3); 2 running");
    expect(text).not.toMatch(/null|undefined|NaN/);
    expect(await page.evaluate(() => (globalThis as unknown as { berthMark?: number }).berthMark)).toBe(42);
    // And to the feed, linking to the group.
    const fed = page.locator(".event", { hasText: "SizeBounded" });
    await fed.waitFor();
    expect(await fed.locator(".event-message").textContent()).toBe("1 → 2: the bounds are now 2..3");
    expect(await fed.locator('a[href="#/scalegroup/shop"]').count()).toBe(1);
    await shot("scalegroup-page");

    // Back on the topology the row has the new size and the decision.
    await page.locator('a[data-nav="topology"]').click();
    await waitFor("the row at size 2", async () => (await cells())[1] === "2");
    expect((await cells()).slice(1, 3)).toEqual(["2", "2..3"]);
    expect((await cells())[6]).toMatch(/^SizeBounded 1 → 2 · .+the bounds are now 2\.\.3$/);
    await shot("scalegroups");
    // A member in the VM list names its group, linking to its page.
    await page.locator('a[data-nav="vms"]').click();
    const tag = page.locator('tr[data-vm="shop-2"] a.sg-tag');
    expect(await tag.textContent()).toBe("shop");
    await tag.click();
    // The member's own page says whose member it is, linking back.
    await page.locator('#page-scalegroup tr[data-member="shop-2"] a').click();
    await page.locator("#page-vm table.placement").waitFor({ timeout: 10_000 });
    expect(await page.locator("#page-vm dl.spec").textContent()).toContain("Scale groupshop");
    expect(await page.locator('#page-vm dl.spec a[href="#/scalegroup/shop"]').count()).toBe(1);
    await page.locator('a[data-nav="topology"]').click();
  }, 30_000);

  it("says reconnecting while the controller restarts, then is live again with a fresh snapshot", async () => {
    await controller.stop();
    await page.locator('#conn[data-state="reconnecting"]').waitFor({ timeout: 15_000 });
    await shot("reconnecting");
    controller = startController();
    await page.locator('#conn[data-state="live"]').waitFor({ timeout: 30_000 });
    await page.locator('.host[data-id="host-3"]').waitFor();
    await page.locator('.bar-cpu .seg[data-vm="cli-vm-1"]').waitFor();
    expect(await page.evaluate(() => (globalThis as unknown as { berthMark?: number }).berthMark)).toBe(42);
    // A connection refused while the controller was away is the browser's own report, not the page's.
    expect(problems.filter((p) => !/ERR_CONNECTION_REFUSED|Failed to load resource/.test(p))).toEqual([]);
  }, 60_000);
});
