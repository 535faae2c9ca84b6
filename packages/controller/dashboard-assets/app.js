// The Berth dashboard's browser side: draws what the controller's view model (src/dashboard/view.ts)
// computed, and keeps it current from /api/stream (server-sent events). No framework, no build step:
// the rows arrive sorted-ready (`key` compares naturally as a plain string), the VM filter text is
// precomputed (`search`), fractions are computed server-side — this file only makes elements.
// Elements are made with createElement/textContent (never innerHTML: labels and messages are
// arbitrary text), and sizes are set through element.style (the page's CSP forbids inline styles).

const DENSE_ABOVE = 200; // hosts: dense mode switches on by itself above this many
const VM_ROWS_SHOWN = 500; // rows of the VM list drawn at once (refine the filter for the rest)

const model = {
  leader: null,
  hosts: new Map(), // id → HostRow
  vms: new Map(), // name → VmRow
  migrations: new Map(), // vmName → MigrationRow
  events: [], // newest first
};
const who = { canAct: false, hint: "checking who you are…", role: null, name: null };
const ui = {
  dense: null, // null: automatic
  filter: "",
  route: { page: "topology", vm: "" },
  hostEls: new Map(),
  hostMode: "",
};
const dirty = { hosts: new Set(), hostSet: true, vms: true, migrations: true, events: true, vmPage: true, header: true };
let frame = 0;

// ── helpers ──────────────────────────────────────────────────────────────────────────────────
const $ = (id) => document.getElementById(id);

/** An element: h("div", {class: "x", title: "t", onclick: f}, child, "text", …). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const pct = (f) => `${(Math.max(0, Math.min(1, f)) * 100).toFixed(2)}%`;
// Sizes come formatted from the server (core's one size style); the page prints, never restates, them.
const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "—");
const byKey = (a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
const vmLink = (name) => h("a", { href: `#/vm/${encodeURIComponent(name)}` }, name);
const labelText = (labels) => Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(", ");

function toast(text, bad) {
  const el = $("toast");
  el.textContent = text;
  el.className = bad ? "toast toast-bad" : "toast";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.hidden = true), 6000);
}

function schedule() {
  if (!frame) frame = requestAnimationFrame(render);
}

// ── the stream ───────────────────────────────────────────────────────────────────────────────
function setConn(state, text) {
  const el = $("conn");
  el.dataset.state = state;
  el.className = `conn conn-${state}`;
  el.textContent = text;
}

function applySnapshot(s) {
  model.leader = s.leader;
  model.hosts = new Map(s.hosts.map((r) => [r.id, r]));
  model.vms = new Map(s.vms.map((r) => [r.name, r]));
  model.migrations = new Map(s.migrations.map((r) => [r.vmName, r]));
  model.events = s.events;
  Object.assign(dirty, { hostSet: true, vms: true, migrations: true, events: true, vmPage: true, header: true });
  schedule();
}

function applyChanges(c) {
  for (const r of c.hosts) {
    if (!model.hosts.has(r.id)) dirty.hostSet = true;
    model.hosts.set(r.id, r);
    dirty.hosts.add(r.id);
  }
  for (const id of c.hostsDeleted) if (model.hosts.delete(id)) dirty.hostSet = true;
  for (const r of c.vms) model.vms.set(r.name, r);
  for (const name of c.vmsDeleted) model.vms.delete(name);
  for (const r of c.migrations) model.migrations.set(r.vmName, r);
  for (const name of c.migrationsDeleted) model.migrations.delete(name);
  if (c.events.length) model.events = [...c.events, ...model.events].slice(0, 200);
  if (c.leader) model.leader = c.leader;
  const vmName = ui.route.vm;
  if (vmName && (c.vms.some((r) => r.name === vmName) || c.vmsDeleted.includes(vmName) || c.migrations.some((m) => m.vmName === vmName))) dirty.vmPage = true;
  dirty.vms ||= c.vms.length + c.vmsDeleted.length > 0;
  dirty.migrations ||= c.migrations.length + c.migrationsDeleted.length > 0;
  dirty.events ||= c.events.length > 0;
  dirty.header = true;
  schedule();
}

function connect() {
  const es = new EventSource("/api/stream");
  // Every (re)connection starts with a full snapshot, which replaces the page's whole model.
  es.addEventListener("snapshot", (e) => {
    applySnapshot(JSON.parse(e.data));
    setConn("live", "live");
  });
  es.addEventListener("changes", (e) => applyChanges(JSON.parse(e.data)));
  es.addEventListener("error", () => {
    if (es.readyState === EventSource.CLOSED) {
      // The server refused the stream (not a dropped connection): EventSource gives up; we do not.
      setConn("reconnecting", "reconnecting…");
      setTimeout(connect, 3000);
    } else setConn("reconnecting", "reconnecting…");
  });
}

// ── actions ──────────────────────────────────────────────────────────────────────────────────
async function loadWho() {
  try {
    const r = await fetch("/api/whoami", { cache: "no-store" });
    Object.assign(who, await r.json());
  } catch {
    Object.assign(who, { canAct: false, hint: "could not ask the controller who you are" });
  }
  dirty.header = true;
  dirty.hostSet = true;
  dirty.vmPage = true;
  schedule();
}

/** Why an action button is disabled ("" when it is not). */
function actionBlock() {
  if (!who.canAct) return who.hint;
  if (model.leader && !model.leader.leading) return `this controller is a follower: act on the leader's dashboard${model.leader.leaderAddress ? ` (${model.leader.leaderAddress})` : ""}`;
  return "";
}

async function act(path, body, done) {
  try {
    const r = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Berth-Action": "1" },
      body: JSON.stringify(body ?? {}),
    });
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(answer.error ?? `HTTP ${r.status}`);
    toast(done);
  } catch (e) {
    toast(e.message, true);
  }
}

function actionButton(label, title, onclick) {
  const blocked = actionBlock();
  return h("button", { type: "button", class: "action", disabled: blocked !== "", title: blocked || title, onclick }, label);
}

function hostActions(row) {
  const id = row.id;
  const path = (a) => `/api/hosts/${encodeURIComponent(id)}/${a}`;
  const draining = row.drain?.phase === "DRAINING";
  const cordoned = row.badges.some((b) => b.label === "CORDONED");
  return h(
    "span",
    { class: "host-actions" },
    cordoned
      ? actionButton("Uncordon", `let new VMs onto ${id} again${draining ? " (ends the drain)" : ""}`, () => act(path("uncordon"), {}, `${id} uncordoned`))
      : actionButton("Cordon", `no new VMs on ${id}`, () => act(path("cordon"), {}, `${id} cordoned`)),
    draining ? null : actionButton("Drain", `cordon ${id} and live-migrate its running VMs away`, () => {
      if (confirm(`Drain ${id}? Its running VMs are live-migrated away.`)) void act(path("drain"), {}, `${id} draining`);
    }),
  );
}

// ── rendering ────────────────────────────────────────────────────────────────────────────────
function isDense() {
  return ui.dense ?? model.hosts.size > DENSE_ABOVE;
}

function badge(b) {
  return h("span", { class: `badge badge-${b.tone}`, title: b.title || null }, b.label);
}

function barEl(kind, bar) {
  const track = h("div", { class: `bar bar-${kind}${bar.over ? " bar-over" : ""}` });
  for (const s of bar.segments) {
    const seg = h("a", { class: s.incoming ? "seg seg-incoming" : "seg", href: `#/vm/${encodeURIComponent(s.vm)}`, title: `${s.vm}: ${s.amountText}${s.incoming ? " (migrating here)" : ""}`, dataset: { vm: s.vm } });
    seg.style.width = pct(s.fraction);
    track.append(seg);
  }
  if (bar.usedFraction !== null) {
    const used = h("div", { class: "used", title: `measured: ${bar.usedText}` });
    used.style.left = pct(bar.usedFraction);
    track.append(used);
  }
  const measured = bar.usedText === null ? "not measured" : `used ${bar.usedText}`;
  return h("div", { class: "bar-line" }, h("span", { class: "bar-name" }, kind === "cpu" ? "CPU" : "Mem"), track, h("span", { class: "bar-text", title: measured }, bar.label));
}

function hostRowEl(row) {
  const drain = row.drain && row.drain.phase === "DRAINING" ? h("span", { class: "muted" }, ` drain: ${row.drain.moved}/${row.drain.toMove} moved, ${row.drain.inFlight} in flight${row.drain.failed ? `, ${row.drain.failed} failed` : ""}`) : null;
  return h(
    "div",
    { class: `host host-${row.state.toLowerCase()}`, dataset: { id: row.id } },
    h("div", { class: "host-head" }, h("span", { class: "host-name" }, row.id), row.badges.map(badge), h("span", { class: "muted" }, `${row.vmCount} VM${row.vmCount === 1 ? "" : "s"}`), drain, hostActions(row)),
    barEl("cpu", row.cpu),
    barEl("memory", row.memory),
  );
}

function hostTileEl(row) {
  const worst = row.badges.find((b) => b.tone === "bad") ?? row.badges.find((b) => b.tone === "warn") ?? row.badges[0];
  const title = `${row.id} — ${row.state}${row.badges.length ? ` (${row.badges.map((b) => b.label).join(", ")})` : ""}\nCPU ${row.cpu.label}, memory ${row.memory.label}, ${row.vmCount} VMs`;
  return h("div", {
    class: `tile fill-${Math.round(row.fill * 10)}${worst ? ` tile-${worst.tone}` : ""}`,
    title,
    dataset: { id: row.id },
    onclick: () => {
      ui.filter = row.id;
      $("vm-filter").value = row.id;
      location.hash = "#/vms";
    },
  });
}

function renderHosts() {
  const dense = isDense();
  const mode = `${dense}:${who.canAct}:${model.leader?.leading}`;
  const container = $("hosts");
  const make = dense ? hostTileEl : hostRowEl;
  if (dirty.hostSet || mode !== ui.hostMode) {
    // Rebuilt whole, off-document, then swapped in at once: one layout for a thousand hosts.
    const rows = [...model.hosts.values()].sort(byKey);
    const fragment = document.createDocumentFragment();
    ui.hostEls = new Map();
    for (const r of rows) {
      const el = make(r);
      ui.hostEls.set(r.id, el);
      fragment.append(el);
    }
    container.className = dense ? "hosts hosts-dense" : "hosts";
    container.replaceChildren(fragment);
    if (rows.length === 0) container.append(h("p", { class: "muted" }, "No hosts have registered yet."));
    ui.hostMode = mode;
  } else {
    for (const id of dirty.hosts) {
      const old = ui.hostEls.get(id);
      const row = model.hosts.get(id);
      if (!old || !row) continue;
      const el = make(row);
      old.replaceWith(el);
      ui.hostEls.set(id, el);
    }
  }
  $("dense").checked = dense;
  $("dense-legend").hidden = !dense;
}

function renderVms() {
  const rows = [...model.vms.values()].sort(byKey);
  const words = ui.filter.toLowerCase().split(/\s+/).filter(Boolean);
  const matching = words.length ? rows.filter((r) => words.every((w) => r.search.includes(w))) : rows;
  const fragment = document.createDocumentFragment();
  for (const r of matching.slice(0, VM_ROWS_SHOWN)) {
    fragment.append(
      h(
        "tr",
        { dataset: { vm: r.name } },
        h("td", null, vmLink(r.name)),
        h("td", null, r.hostId),
        h("td", null, h("span", { class: `phase phase-${r.phase.toLowerCase()}`, title: r.message || null }, r.phase)),
        h("td", { class: "num" }, r.vcpus),
        h("td", { class: "num" }, r.memoryText),
        h("td", { class: "num" }, r.diskText),
        h("td", { class: "labels" }, labelText(r.labels)),
      ),
    );
  }
  $("vm-rows").replaceChildren(fragment);
  const more = matching.length > VM_ROWS_SHOWN ? ` (showing ${VM_ROWS_SHOWN}; refine the filter)` : "";
  $("vm-count").textContent = words.length ? `${matching.length} of ${rows.length} VMs${more}` : `${rows.length} VMs${more}`;
}

function progressEl(m) {
  const track = h("div", { class: "progress", title: m.progress === null ? "no figures yet" : `${Math.round(m.progress * 100)}%` });
  const fill = h("div", { class: "progress-fill" });
  fill.style.width = pct(m.progress ?? 0);
  track.append(fill);
  return track;
}

function migrationEl(m) {
  const figures = m.figuresText;
  return h(
    "div",
    { class: "migration", dataset: { vm: m.vmName } },
    h("div", null, vmLink(m.vmName), ` ${m.source} → ${m.target || "(choosing)"} `, h("span", { class: "muted" }, `${m.phase.toLowerCase()} · ${m.reason.toLowerCase()}`)),
    progressEl(m),
    figures ? h("div", { class: "muted small" }, figures) : null,
  );
}

function renderMigrations() {
  const active = [...model.migrations.values()].filter((m) => m.active).sort(byKey);
  $("migration-count").textContent = active.length ? `(${active.length})` : "";
  const container = $("migrations");
  container.replaceChildren(...active.map(migrationEl));
  if (!active.length) container.append(h("p", { class: "muted" }, "None."));
}

function renderEvents() {
  const fragment = document.createDocumentFragment();
  for (const e of model.events) {
    fragment.append(
      h(
        "li",
        { class: e.warning ? "event event-warning" : "event" },
        h("span", { class: "event-time" }, time(e.timeMs)),
        h("span", { class: "event-reason" }, e.reason),
        h("span", { class: "event-object" }, e.objectKind === "vm" ? vmLink(e.objectName) : `${e.objectKind} ${e.objectName}`),
        h("span", { class: "event-message" }, e.message),
      ),
    );
  }
  $("events").replaceChildren(fragment);
  if (!model.events.length) $("events").append(h("li", { class: "muted" }, "No events since this controller started."));
}

function renderHeader() {
  const hosts = [...model.hosts.values()];
  const ready = hosts.filter((r) => r.state === "READY").length;
  $("summary").textContent = `${hosts.length} hosts (${ready} ready) · ${model.vms.size} VMs`;
  const l = model.leader;
  $("leader").textContent = l ? (l.leading ? `${l.controllerId} (leader)` : `${l.controllerId} (follower${l.leaderAddress ? `; leader ${l.leaderAddress}` : ""})`) : "";
  $("who").textContent = who.role ? `${who.name} (${who.role})` : "read-only";
  $("who").title = who.hint || "you may cordon, drain and migrate";
}

// ── the VM page ──────────────────────────────────────────────────────────────────────────────
let vmFetch = 0;

async function loadVmPage() {
  const name = ui.route.vm;
  const page = $("page-vm");
  const ticket = ++vmFetch;
  let detail;
  try {
    const r = await fetch(`/api/vms/${encodeURIComponent(name)}`, { cache: "no-store" });
    detail = r.ok ? await r.json() : { missing: (await r.json().catch(() => ({}))).error ?? `HTTP ${r.status}` };
  } catch (e) {
    detail = { missing: e.message };
  }
  if (ticket !== vmFetch || ui.route.vm !== name) return; // a newer request or another page
  // Holes (null) in the list are sections the VM has not got; replaceChildren would print them.
  page.replaceChildren(...vmPageEls(name, detail).flat().filter((el) => el !== null && el !== undefined));
}

const kv = (k, v) => [h("dt", null, k), h("dd", null, v)];

function placementEls(p) {
  if (!p) return [h("p", { class: "muted placement-none" }, "Placement explanation: not recorded (placed before placement records were kept).")];
  const rows = [
    h("tr", null, h("th", null, "Cause"), h("td", null, `${p.cause || "—"}${p.preset ? ` (preset ${p.preset})` : ""}`)),
    h("tr", null, h("th", null, "Decided"), h("td", null, p.decidedAtMs ? new Date(p.decidedAtMs).toLocaleString() : "—")),
    h("tr", null, h("th", null, "Hosts feasible / considered"), h("td", null, `${p.hostsFeasible} / ${p.hostsConsidered}`)),
    ...p.scores.map((s) => h("tr", { class: "score" }, h("th", null, `Weigher ${s.weigher}`), h("td", { class: "num" }, s.score.toFixed(3)))),
    h("tr", { class: "total" }, h("th", null, "Total"), h("td", { class: "num" }, p.total.toFixed(3))),
    h("tr", null, h("th", null, "Runner-up"), h("td", null, p.runnerUpHost ? `${p.runnerUpHost} (total ${p.runnerUpTotal.toFixed(3)})` : "none: the only host that fitted")),
    ...p.rejectedByFilter.map((r) => h("tr", { class: "rejected" }, h("th", null, `Rejected by ${r.filter}`), h("td", { class: "num" }, `${r.hosts} host${r.hosts === 1 ? "" : "s"}`))),
  ];
  return [
    h("table", { class: "placement" }, h("tbody", null, rows)),
    p.explained ? null : h("p", { class: "muted" }, "The fleet was too large to explain within the create path's budget: only the chosen host is recorded (berth plan explains any placement in full)."),
  ];
}

function vmPageEls(name, d) {
  const back = h("p", null, h("a", { href: "#/vms" }, "← VMs"));
  if (d.missing) return [back, h("h1", null, name), h("p", { class: "muted" }, d.missing)];
  const v = d.vm;
  const migrate = actionButton("Migrate", "live-migrate to the host the scheduler picks (or the one typed)", () => {
    const target = prompt(`Migrate ${name} to which host? (empty: let the scheduler choose)`, "");
    if (target !== null) void act(`/api/vms/${encodeURIComponent(name)}/migrate`, { targetHost: target.trim() }, `${name}: migration requested`);
  });
  return [
    back,
    h("h1", null, name, " ", h("span", { class: `phase phase-${v.phase.toLowerCase()}` }, v.phase), " ", migrate),
    h(
      "dl",
      { class: "spec" },
      kv("Host", v.hostId || "—"),
      kv("Desired", v.desired),
      kv("Resources", v.resourcesText),
      kv("Group", v.group || "—"),
      kv("Labels", labelText(v.labels) || "—"),
      Object.keys(d.requiredHostLabels).length ? kv("Requires host labels", labelText(d.requiredHostLabels)) : [],
      Object.keys(d.forbiddenHostLabels).length ? kv("Forbids host labels", labelText(d.forbiddenHostLabels)) : [],
      d.pinnedHosts.length ? kv("Pinned to", d.pinnedHosts.join(", ")) : [],
      d.image ? kv("Image", d.image) : [],
      ...d.nics.map((n) =>
        kv(n.name, `${n.network}  ${n.mac || "—"}  ${n.addresses.length ? `${n.addresses.join(", ")} (${n.source})` : v.phase === "RUNNING" ? "waiting for an address" : "—"}`),
      ),
      d.volumes.length ? kv("Volumes", d.volumes.join(", ")) : [],
      kv("Status", d.statusMessage || "—"),
      d.errorCode ? kv("Error", d.errorCode) : [],
      kv("Generation", d.generation),
      kv("Created", d.createdAtMs ? new Date(d.createdAtMs).toLocaleString() : "—"),
      kv("Id", v.id),
    ),
    d.migration ? h("section", null, h("h2", null, "Migration"), migrationEl(d.migration)) : null,
    h("h2", null, "Why this host"),
    ...placementEls(d.placement),
  ];
}

// ── routing and the render loop ──────────────────────────────────────────────────────────────
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  if (hash.startsWith("vm/")) ui.route = { page: "vm", vm: decodeURIComponent(hash.slice(3)) };
  else if (hash === "vms") ui.route = { page: "vms", vm: "" };
  else ui.route = { page: "topology", vm: "" };
  for (const p of ["topology", "vms", "vm"]) $(`page-${p}`).hidden = ui.route.page !== p;
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === ui.route.page || (ui.route.page === "vm" && a.dataset.nav === "vms"));
  if (ui.route.page === "vm") $("page-vm").replaceChildren(h("p", { class: "muted" }, "Loading…"));
  Object.assign(dirty, { vmPage: true, vms: true, hostSet: true });
  schedule();
}

function render() {
  frame = 0;
  const page = ui.route.page;
  if (page === "topology" && (dirty.hostSet || dirty.hosts.size || ui.hostMode === "")) {
    renderHosts();
    dirty.hostSet = false;
    dirty.hosts.clear();
  }
  if (page === "vms" && dirty.vms) {
    renderVms();
    dirty.vms = false;
  }
  if (page === "vm" && dirty.vmPage) {
    dirty.vmPage = false;
    void loadVmPage();
  }
  if (dirty.migrations) renderMigrations();
  if (dirty.events) renderEvents();
  if (dirty.header) renderHeader();
  dirty.migrations = dirty.events = dirty.header = false;
}

function start() {
  const stored = localStorage.getItem("berth.dense");
  ui.dense = stored === null ? null : stored === "1";
  $("dense").addEventListener("change", (e) => {
    ui.dense = e.target.checked;
    localStorage.setItem("berth.dense", ui.dense ? "1" : "0");
    dirty.hostSet = true;
    schedule();
  });
  $("vm-filter").addEventListener("input", (e) => {
    ui.filter = e.target.value;
    dirty.vms = true;
    schedule();
  });
  window.addEventListener("hashchange", route);
  route();
  void loadWho();
  connect();
}

start();
