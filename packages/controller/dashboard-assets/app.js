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
  scaleGroups: new Map(), // name → ScaleGroupRow
  events: [], // newest first
};
const who = { canAct: false, hint: "checking who you are…", role: null, name: null };
const ui = {
  dense: null, // null: automatic
  filter: "",
  route: { page: "topology", vm: "", scaleGroup: "" },
  hostEls: new Map(),
  hostMode: "",
};
const dirty = { hosts: new Set(), hostSet: true, vms: true, migrations: true, scaleGroups: true, events: true, vmPage: true, scaleGroupPage: true, header: true };
let frame = 0;

// ── helpers ──────────────────────────────────────────────────────────────────────────────────
const $ = (id) => document.getElementById(id);

/** An element: h("div", {class: "x", title: "t", onclick: f}, child, "text", …); children may be nested arrays (holes: null). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const pct = (f) => `${(Math.max(0, Math.min(1, f)) * 100).toFixed(2)}%`;
// Sizes come formatted from the server (core's one size style); the page prints, never restates, them.
const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "—");
/** The time of day for today, the date too for an older moment. */
const when = (ms) => (!ms ? "—" : new Date(ms).toDateString() === new Date().toDateString() ? time(ms) : new Date(ms).toLocaleString());
const byKey = (a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
const vmLink = (name) => h("a", { href: `#/vm/${encodeURIComponent(name)}` }, name);
const scaleGroupLink = (name, attrs) => h("a", { href: `#/scalegroup/${encodeURIComponent(name)}`, ...attrs }, name);
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
  model.scaleGroups = new Map(s.scaleGroups.map((r) => [r.name, r]));
  model.events = s.events;
  Object.assign(dirty, { hostSet: true, vms: true, migrations: true, scaleGroups: true, events: true, vmPage: true, scaleGroupPage: true, header: true });
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
  for (const r of c.scaleGroups) model.scaleGroups.set(r.name, r);
  for (const name of c.scaleGroupsDeleted) model.scaleGroups.delete(name);
  if (c.events.length) model.events = [...c.events, ...model.events].slice(0, 200);
  if (c.leader) model.leader = c.leader;
  const vmName = ui.route.vm;
  if (vmName && (c.vms.some((r) => r.name === vmName) || c.vmsDeleted.includes(vmName) || c.migrations.some((m) => m.vmName === vmName))) dirty.vmPage = true;
  // A group's page: its row changed (a decision, its figures), or one of its members' VMs did.
  const group = ui.route.scaleGroup;
  if (group && (c.scaleGroups.some((r) => r.name === group) || c.scaleGroupsDeleted.includes(group) || c.vms.some((r) => r.scaleGroup === group) || c.vmsDeleted.some((n) => n.startsWith(`${group}-`)))) dirty.scaleGroupPage = true;
  dirty.vms ||= c.vms.length + c.vmsDeleted.length > 0;
  dirty.migrations ||= c.migrations.length + c.migrationsDeleted.length > 0;
  dirty.scaleGroups ||= c.scaleGroups.length + c.scaleGroupsDeleted.length > 0;
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
        h("td", null, vmLink(r.name), r.scaleGroup ? [" ", scaleGroupLink(r.scaleGroup, { class: "sg-tag", title: `a member of scale group ${r.scaleGroup}` })] : null),
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

/** What an event is about: VMs and scale groups link to their pages. */
function eventObject(e) {
  if (e.objectKind === "vm") return vmLink(e.objectName);
  if (e.objectKind === "scalegroup") return ["scale group ", scaleGroupLink(e.objectName)];
  return `${e.objectKind} ${e.objectName}`;
}

// ── scale groups: the topology page's panel ─────────────────────────────────────────────────
/** A decision in one line: `SizeBounded 1 → 2 · 10:42:07`, its message below. */
function decisionEl(d) {
  if (!d) return h("span", { class: "muted" }, "none yet");
  return h(
    "div",
    { class: "decision" },
    h("span", { class: "decision-reason" }, d.reason), ` ${d.sizeText} `, h("span", { class: "muted" }, `· ${when(d.decidedAtMs)}`),
    h("div", { class: "muted small" }, d.message),
  );
}

function renderScaleGroups() {
  const rows = [...model.scaleGroups.values()].sort(byKey);
  // No panel at all without a group: the page is as it was before scale groups.
  $("scalegroups-panel").hidden = rows.length === 0;
  $("scalegroup-count").textContent = rows.length ? `(${rows.length})` : "";
  const fragment = document.createDocumentFragment();
  for (const r of rows) {
    fragment.append(
      h(
        "tr",
        { dataset: { scalegroup: r.name } },
        h(
          "td",
          null,
          scaleGroupLink(r.name),
          r.deleting ? [" ", h("span", { class: "badge badge-warn" }, "DELETING")] : null,
          r.lastError ? [" ", h("span", { class: "badge badge-bad", title: r.lastError }, "CREATE FAILING")] : null,
        ),
        h("td", { class: "num sg-size" }, r.size),
        h("td", { class: "num" }, r.boundsText),
        h("td", { class: "num" }, r.targetText),
        h("td", { class: "num sg-cpu", title: r.cpu === null ? "no warm member reports yet" : "the warm members' average" }, r.cpuText),
        h("td", { class: "num" }, `${r.running} / ${r.warm}`),
        h("td", { class: "sg-last" }, decisionEl(r.lastDecision)),
      ),
    );
  }
  $("scalegroup-rows").replaceChildren(fragment);
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
        h("span", { class: "event-object" }, eventObject(e)),
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
  const groups = model.scaleGroups.size;
  $("summary").textContent = `${hosts.length} hosts (${ready} ready) · ${model.vms.size} VMs${groups ? ` · ${groups} scale group${groups === 1 ? "" : "s"}` : ""}`;
  const l = model.leader;
  $("leader").textContent = l ? (l.leading ? `${l.controllerId} (leader)` : `${l.controllerId} (follower${l.leaderAddress ? `; leader ${l.leaderAddress}` : ""})`) : "";
  $("who").textContent = who.role ? `${who.name} (${who.role})` : "read-only";
  $("who").title = who.hint || "you may cordon, drain and migrate";
}

// ── the VM page ──────────────────────────────────────────────────────────────────────────────
const detailTickets = { vm: 0, scalegroup: 0 };

/**
 * Fetches a detail page's data (`kind` vm or scalegroup) and draws it with `draw(name, detail)`,
 * unless a newer fetch or another page came first. A missing one draws `{missing: why}`.
 */
async function loadDetailPage(kind, name, draw) {
  const page = $(`page-${kind}`);
  const ticket = ++detailTickets[kind];
  let detail;
  try {
    const r = await fetch(`/api/${kind === "vm" ? "vms" : "scalegroups"}/${encodeURIComponent(name)}`, { cache: "no-store" });
    detail = r.ok ? await r.json() : { missing: (await r.json().catch(() => ({}))).error ?? `HTTP ${r.status}` };
  } catch (e) {
    detail = { missing: e.message };
  }
  const current = kind === "vm" ? ui.route.vm : ui.route.scaleGroup;
  if (ticket !== detailTickets[kind] || current !== name) return; // a newer request or another page
  // Holes (null) in the list are sections the page has not got; replaceChildren would print them.
  page.replaceChildren(...draw(name, detail).flat(Infinity).filter((el) => el !== null && el !== undefined));
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
      v.scaleGroup ? kv("Scale group", scaleGroupLink(v.scaleGroup)) : [],
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

// ── the scale group page ─────────────────────────────────────────────────────────────────────
function scaleGroupPageEls(name, d) {
  const back = h("p", null, h("a", { href: "#/" }, "← Topology"));
  if (d.missing) return [back, h("h1", null, name), h("p", { class: "muted" }, d.missing)];
  const g = d.group;
  const p = d.policy;
  const cpu = `${g.cpuText}${g.cpu === null ? " (no warm member reports yet)" : " now (average of the warm members)"}; target ${g.targetText}`;
  const members = d.members.map((m) =>
    h(
      "tr",
      { dataset: { member: m.name } },
      h("td", null, m.phase === "NOT CREATED" ? m.name : vmLink(m.name), m.protected ? [" ", h("span", { class: "badge badge-info", title: "a scale-in never removes it" }, "PROTECTED")] : null),
      h("td", { class: "num" }, m.index),
      h("td", null, h("span", { class: `phase phase-${m.phase.toLowerCase().replace(/ /g, "-")}` }, m.phase)),
      h("td", null, m.hostId || "—"),
      h("td", null, when(m.addedAtMs)),
      // An end time, not a countdown: the page is redrawn on changes, not every second.
      h("td", null, m.warmedUp ? "done" : `until ${when(m.warmupEndsAtMs)}`),
    ),
  );
  const decisions = d.decisions.map((x) =>
    h(
      "tr",
      { dataset: { seq: x.seq } },
      h("td", { class: "num" }, x.seq),
      h("td", null, when(x.decidedAtMs)),
      h("td", { class: "decision-reason" }, x.reason),
      h("td", { class: "num" }, x.sizeText),
      h("td", { class: "num" }, x.cpuText),
      h("td", { class: "num", title: "warm / warming members" }, `${x.warmMembers} / ${x.warmingMembers}`),
      h("td", { class: "num", title: "the reactive rule's size before the limits" }, x.reactiveSize || "—"),
      h("td", { class: "num", title: "the learnt pattern's size (cores foreseen)" }, x.predictedText),
      h(
        "td",
        { class: "decision-message" },
        x.message,
        x.added.length ? h("div", { class: "muted small" }, `added ${x.added.join(", ")}`) : null,
        x.removed.length ? h("div", { class: "muted small" }, `removed ${x.removed.join(", ")}`) : null,
      ),
    ),
  );
  const shown = d.decisions.length;
  return [
    back,
    h("h1", null, name, g.deleting ? [" ", h("span", { class: "badge badge-warn" }, "DELETING")] : null),
    h(
      "dl",
      { class: "spec" },
      kv("Size", `${g.size} (min ${g.minSize}, max ${g.maxSize}); ${g.running} running, ${g.warm} warm, ${g.creating} being created, ${g.removing} being removed`),
      kv("CPU", cpu),
      kv("Template", d.templateText),
      kv("Placement group", g.placementGroup || "—"),
      p
        ? [
            kv("Tolerance", p.tolerance),
            kv("Scale-up step", p.scaleUpStep),
            kv("Scale-down window", p.scaleDownWindow),
            kv("Warm-up", p.warmup),
            kv("Interval", p.interval),
            kv("Scale-in order", p.scaleInOrder),
            kv("Prediction", p.prediction),
          ]
        : kv("Policy", "refused by the controller: the group does not scale"),
      g.lastError ? kv("Last error", `${g.lastError} (creating a member; retried)`) : [],
      kv("Created", d.createdAtMs ? new Date(d.createdAtMs).toLocaleString() : "—"),
    ),
    h("h2", null, `Members (${d.members.length})`),
    d.members.length
      ? h("table", { class: "vm-table sg-members" }, h("thead", null, h("tr", null, ["Name", "Index", "Phase", "Host", "Added", "Warm-up"].map((t) => h("th", null, t)))), h("tbody", null, members))
      : h("p", { class: "muted" }, "None."),
    h("h2", null, `Decisions (${shown === g.decisionCount ? shown : `latest ${shown} of ${g.decisionCount}`}, newest first)`),
    shown
      ? h(
          "table",
          { class: "vm-table sg-decisions" },
          h("thead", null, h("tr", null, ["#", "When", "Reason", "Size", "CPU", "Warm / warming", "Reactive", "Predicted", "Message"].map((t) => h("th", null, t)))),
          h("tbody", null, decisions),
        )
      : h("p", { class: "muted" }, "None yet."),
  ];
}

// ── routing and the render loop ──────────────────────────────────────────────────────────────
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  if (hash.startsWith("vm/")) ui.route = { page: "vm", vm: decodeURIComponent(hash.slice(3)), scaleGroup: "" };
  else if (hash.startsWith("scalegroup/")) ui.route = { page: "scalegroup", vm: "", scaleGroup: decodeURIComponent(hash.slice("scalegroup/".length)) };
  else if (hash === "vms") ui.route = { page: "vms", vm: "", scaleGroup: "" };
  else ui.route = { page: "topology", vm: "", scaleGroup: "" };
  for (const p of ["topology", "vms", "vm", "scalegroup"]) $(`page-${p}`).hidden = ui.route.page !== p;
  // A VM's page is under VMs, a scale group's under the topology (where its panel is).
  const nav = { vm: "vms", scalegroup: "topology" }[ui.route.page] ?? ui.route.page;
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
  if (ui.route.page === "vm") $("page-vm").replaceChildren(h("p", { class: "muted" }, "Loading…"));
  if (ui.route.page === "scalegroup") $("page-scalegroup").replaceChildren(h("p", { class: "muted" }, "Loading…"));
  Object.assign(dirty, { vmPage: true, scaleGroupPage: true, vms: true, scaleGroups: true, hostSet: true });
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
  if (page === "topology" && dirty.scaleGroups) {
    renderScaleGroups();
    dirty.scaleGroups = false;
  }
  if (page === "vm" && dirty.vmPage) {
    dirty.vmPage = false;
    void loadDetailPage("vm", ui.route.vm, vmPageEls);
  }
  if (page === "scalegroup" && dirty.scaleGroupPage) {
    dirty.scaleGroupPage = false;
    void loadDetailPage("scalegroup", ui.route.scaleGroup, scaleGroupPageEls);
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
