// cairn dashboard: reads the admin API of whichever member answers, follows
// /v1/watch (replicated changes) and /v1/telemetry (pose, world, node load),
// and fails over to another member when the one it reads from dies.
"use strict";

const POLL_MS = 1000;          // status of every known member
const REFRESH_MS = 5000;       // full re-read, in case a change event was missed
const REQUEST_TIMEOUT_MS = 2500;
const TRAIL_MAX = 600;         // pose trail points kept (a minute at 10 Hz)
const EVENTS_MAX = 200;
const BACKFILL_ENTRIES = 1000; // log entries replayed into "Recent events" when the page opens
const STATES = ["Pending", "Assigned", "Running", "Succeeded", "Failed", "Cancelled"];
const TERMINAL = new Set(["Succeeded", "Failed", "Cancelled"]);

const S = {
  servedBy: location.host,     // the node whose page this is
  current: location.host,      // the node we read from
  endpoints: [location.host],  // API addresses of every member we know
  apiOf: {},                   // node id -> API address
  reach: {},                   // API address -> {ok, status, at}
  status: null,                // /v1/status of the current node
  leaderStatus: null,          // /v1/status of the leader (it knows the lag)
  leader: null, term: null, leaderChanges: 0,
  nodes: [], tasks: [], mission: null, sensors: null, params: null, policies: null,
  stats: {},                   // node id -> {payload, at}
  pose: null, trail: [], world: null, lastFence: null, lastCollisions: null,
  events: [],
  lastIndex: null,             // highest log index seen on /v1/watch (resume point)
  backfill: true,              // the first watch replays recent history
  token: null,
  streams: null,               // AbortController of the open streams
  switching: false,
  assignees: {},               // task id -> node id, to spot reassignments
};

// ---------------------------------------------------------------------------
// helpers

const $ = (sel) => document.querySelector(sel);
const num = (v, d = 1) => (typeof v === "number" && isFinite(v) ? v.toFixed(d) : "—");
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
const base = (ep) => `${location.protocol}//${ep}`;
const kebab = (mode) => String(mode || "").replace(/([a-z])([A-Z])/g, "$1-$2").toLowerCase();

// Everything on this page is built with DOM calls: text goes in with
// textContent, attributes with setAttribute, never through an HTML or SVG
// parser. Node names, addresses, task kinds, reasons and telemetry are data
// from clients, agents and any node (telemetry is forwarded between nodes),
// and data must never become markup. The map's namespace is read from the
// page (no URL literal in this file).
const SVG_NS = document.getElementById("map").namespaceURI;
// A finite number or null: what the map draws with (anything else is not drawn).
const fin = (v) => (typeof v === "number" && isFinite(v) ? v : null);
// A class-name fragment from data: lowercase letters, digits and dashes only.
const cls = (v) => String(v ?? "").toLowerCase().replace(/[^a-z0-9-]/g, "");

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text != null) e.textContent = String(text);
  return e;
}

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text != null) e.textContent = String(text);
  return e;
}

function pill(kind, text) {
  return el("span", `pill ${cls(kind)}`, text);
}

// A table row of cells; each cell is text or a node.
function row(cells, data) {
  const tr = document.createElement("tr");
  for (const [k, v] of Object.entries(data || {})) tr.dataset[k] = String(v);
  for (const c of cells) {
    const td = tr.appendChild(document.createElement("td"));
    if (c instanceof Node) td.appendChild(c); else td.textContent = String(c ?? "");
  }
  return tr;
}

function emptyRow(colspan, text) {
  const tr = document.createElement("tr");
  const td = tr.appendChild(el("td", null, text));
  td.colSpan = colspan;
  return tr;
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (S.token) h.Authorization = `Bearer ${S.token}`;
  return h;
}

async function get(ep, path) {
  const r = await fetch(base(ep) + path, { headers: headers(), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS), cache: "no-store" });
  if (r.status === 401) showBanner("This cluster requires the API token for reads: press \"token\" and give it.", true);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// `at`: when it happened (a replayed change's leader timestamp), else now.
function event(text, kind, at) {
  const e = { at: at ?? Date.now(), text, kind: kind || "" };
  const i = S.events.findIndex((x) => x.at <= e.at);
  S.events.splice(i < 0 ? S.events.length : i, 0, e);
  S.events.length = Math.min(S.events.length, EVENTS_MAX);
  renderEvents();
}

function nodeName(ep) {
  const id = Object.keys(S.apiOf).find((k) => S.apiOf[k] === ep);
  return id ? `node ${id} (${ep})` : ep;
}

// ---------------------------------------------------------------------------
// connection: poll every member, fail over when the current one dies

function learnMembers(status) {
  for (const m of status.members || []) {
    const api = m.member && m.member.api_addr;
    if (!api) continue;
    S.apiOf[m.id] = api;
    if (!S.endpoints.includes(api)) S.endpoints.push(api);
  }
}

async function pollOne(ep) {
  try {
    const st = await get(ep, "/v1/status");
    S.reach[ep] = { ok: true, status: st, at: Date.now() };
    learnMembers(st);
    return st;
  } catch (e) {
    const was = S.reach[ep];
    S.reach[ep] = { ok: false, status: was && was.status, at: Date.now(), error: String(e.message || e) };
    return null;
  }
}

async function poll() {
  const results = await Promise.all(S.endpoints.map((ep) => pollOne(ep)));
  const cur = S.reach[S.current];
  if (!cur || !cur.ok) {
    await failover();
  } else {
    S.status = cur.status;
  }
  // The leader, as the reachable members agree on it.
  const seen = results.filter(Boolean);
  const leaders = seen.map((s) => s.leader).filter((l) => l != null);
  const leader = leaders.length ? mostCommon(leaders) : null;
  const term = Math.max(0, ...seen.map((s) => s.term || 0));
  if (leader != null && leader !== S.leader) {
    if (S.leader != null) {
      S.leaderChanges += 1;
      event(`leader changed: node ${S.leader} → node ${leader} (term ${term})`, "leader");
    } else {
      event(`leader is node ${leader} (term ${term})`, "leader");
    }
    S.leader = leader;
  }
  S.term = term || S.term;
  const leaderApi = S.leader != null ? S.apiOf[S.leader] : null;
  const lr = leaderApi && S.reach[leaderApi];
  S.leaderStatus = lr && lr.ok ? lr.status : null;
  renderConn();
  renderCluster();
}

function mostCommon(xs) {
  const n = {};
  let best = xs[0];
  for (const x of xs) { n[x] = (n[x] || 0) + 1; if (n[x] > n[best]) best = x; }
  return best;
}

async function failover() {
  if (S.switching) return;
  S.switching = true;
  const dead = S.current;
  try {
    const order = S.endpoints.filter((ep) => ep !== dead);
    for (const ep of order) {
      const st = S.reach[ep] && S.reach[ep].ok ? S.reach[ep].status : await pollOne(ep);
      if (st) {
        S.current = ep;
        S.status = st;
        const servedDead = dead === S.servedBy;
        event(`${nodeName(dead)} is unreachable; reading from ${nodeName(ep)}`, "bad");
        showBanner(servedDead
          ? `The node that served this page, ${nodeName(dead)}, is not answering. The page keeps running and now reads from ${nodeName(ep)}.`
          : `${nodeName(dead)} is not answering; now reading from ${nodeName(ep)}.`, true);
        openStreams();
        refreshAll();
        return;
      }
    }
    showBanner(`No member answers (tried ${S.endpoints.join(", ")}). Retrying…`, true);
  } finally {
    S.switching = false;
  }
}

function showBanner(text, bad) {
  const b = $("#banner");
  b.textContent = text;
  b.className = bad ? "banner bad" : "banner";
  b.hidden = !text;
}

// ---------------------------------------------------------------------------
// SSE over fetch (EventSource cannot send the Authorization header)

async function sse(path, signal, onEvent) {
  const r = await fetch(base(S.current) + path, { headers: headers({ Accept: "text/event-stream" }), signal, cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${path}: stream ended`);
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      try { onEvent(name, JSON.parse(data.join("\n"))); } catch (e) { console.warn("bad event", e); }
    }
  }
}

function openStreams() {
  if (S.streams) S.streams.abort();
  const ctrl = new AbortController();
  S.streams = ctrl;
  const run = async (path, handler) => {
    while (!ctrl.signal.aborted) {
      try {
        await sse(path(), ctrl.signal, handler);
      } catch (e) {
        if (ctrl.signal.aborted) return;
        // History compacted into a snapshot: watch from now on.
        if (String(e.message || e).includes("HTTP 410")) { S.backfill = false; S.lastIndex = null; }
        poll();
        await new Promise((res) => setTimeout(res, 1000));
      }
    }
  };
  run(watchPath, onChange);
  run(() => "/v1/telemetry?topic=rover.pose&topic=sim.world&topic=node.stats", onTelemetry);
}

// Resume where the last stream stopped (no gap, no duplicate, on any
// node); the first stream replays the last BACKFILL_ENTRIES log entries so
// "Recent events" does not start at page load.
function watchPath() {
  if (S.lastIndex != null) return `/v1/watch?from=${S.lastIndex + 1}`;
  const applied = S.status && S.status.applied_index;
  if (S.backfill && applied) return `/v1/watch?from=${Math.max(1, applied - BACKFILL_ENTRIES)}`;
  return "/v1/watch";
}

// ---------------------------------------------------------------------------
// replicated state

let refreshTimer = null;
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refreshAll(); }, 250);
}

async function refreshAll() {
  const ep = S.current;
  const q = "consistency=stale";
  const [nodes, tasks, mission, sensors, params, policies] = await Promise.all([
    get(ep, `/v1/nodes?${q}`).catch(() => null),
    get(ep, `/v1/tasks?${q}`).catch(() => null),
    get(ep, `/v1/mission?${q}`).catch(() => null),
    get(ep, `/v1/sensors?${q}`).catch(() => null),
    get(ep, `/v1/params?${q}`).catch(() => null),
    get(ep, `/v1/policies?${q}`).catch(() => null),
  ]);
  if (nodes) S.nodes = nodes;
  if (params) S.params = params;
  if (policies) S.policies = Array.isArray(policies) ? policies : Object.values(policies);
  if (tasks) { noticeReassignments(tasks); S.tasks = tasks; }
  if (mission) S.mission = mission;
  if (sensors) S.sensors = sensors;
  renderAll();
}

function noticeReassignments(tasks) {
  for (const t of tasks) {
    const now = t.lease ? t.lease.node_id : null;
    const was = S.assignees[t.id];
    if (was != null && now != null && was !== now) {
      event(`task ${t.id} (${t.spec.kind}) moved from node ${was} to node ${now}`, "warn");
    }
    if (now != null) S.assignees[t.id] = now;
  }
}

function onChange(name, ch) {
  if (name !== "change") return;
  if (typeof ch.index === "number") S.lastIndex = Math.max(S.lastIndex ?? 0, ch.index);
  const cmd = ch.command || {};
  // A replayed change (history) has no response; it happened at the
  // leader's timestamp, and is shown at that time.
  const replayed = ch.response == null;
  const at = replayed && typeof ch.timestamp_ms === "number" ? ch.timestamp_ms : undefined;
  const ev = (text, kind) => event(text, kind, at);
  const ok = ch.response && ch.response.Ok;
  if (ch.response && ch.response.Err) return refreshSoon(); // refused: nothing changed
  const [verb] = Object.keys(cmd);
  const body = cmd[verb] || {};
  if (verb === "ReassignTask") ev(`task ${body.task_id} reassigned to node ${body.node_id}`, "warn");
  else if (verb === "AssignTask" && ok && ok.TaskAssigned) ev(`task ${body.task_id} assigned to node ${body.node_id} (epoch ${ok.TaskAssigned.epoch})`);
  else if (verb === "AssignTask" && replayed) ev(`task ${body.task_id} assigned to node ${body.node_id}`);
  else if (verb === "SetLiveness") ev(`node ${body.node_id} is ${String(body.liveness).toLowerCase()}`, body.liveness === "Up" ? "" : "bad");
  else if (verb === "ReportSensorHealth") {
    const eff = ok && ok.HealthChanged && ok.HealthChanged.effective;
    ev(`sensor ${body.sensor}: ${body.health}${eff ? ` → mode ${kebab(eff.mode)}, speed ×${eff.speed_factor}` : ""}`, body.health === "Ok" ? "" : "warn");
  } else if (verb === "CancelTask") ev(`task ${body.task_id} cancel requested`);
  else if (verb === "FinishTask") ev(`task ${body.task_id} finished: ${JSON.stringify(body.outcome)}`);
  else if (verb === "ReplacePlan") ev(`plan "${body.name}" loaded (${(body.goals || []).length} goals)`);
  else if (verb === "AbortPlan") ev(`plan aborted: ${body.reason}`, "bad");
  else if (verb === "SetParam") ev(`parameter ${body.name} set to ${paramText(body.value)}`);
  else if (verb === "SetPolicy") ev(`policy: ${body.sensor} ${body.health} → ${kebab(body.mode)} ×${body.speed_factor}`);
  refreshSoon();
}

// ---------------------------------------------------------------------------
// telemetry

function onTelemetry(name, m) {
  if (name === "dropped") return;
  if (name !== "telemetry") return;
  const p = m.payload || {};
  if (m.topic === "rover.pose") {
    S.pose = Object.assign({ node_id: m.node_id, at: Date.now() }, p);
    const last = S.trail[S.trail.length - 1];
    const ok = fin(p.x_m) != null && fin(p.y_m) != null;
    if (ok && (!last || Math.hypot(last[0] - p.x_m, last[1] - p.y_m) > 0.01)) S.trail.push([p.x_m, p.y_m]);
    if (S.trail.length > TRAIL_MAX) S.trail.splice(0, S.trail.length - TRAIL_MAX);
    renderMap(); renderMode();
  } else if (m.topic === "sim.world") {
    const f = p.fence || {};
    if (S.lastFence != null && f.rejected > S.lastFence) {
      const n = f.rejected - S.lastFence;
      event(`${n} stale drive command${n > 1 ? "s" : ""} rejected by the fence (epoch now ${f.current})`, "bad");
    }
    if (S.lastCollisions != null && p.collisions > S.lastCollisions) event(`collision! (${p.collisions} so far)`, "bad");
    if (S.world && !S.world.estop && p.estop) event("e-stop engaged", "bad");
    S.lastFence = f.rejected;
    S.lastCollisions = p.collisions;
    S.world = p;
    renderMap();
  } else if (m.topic === "node.stats") {
    S.stats[m.node_id] = { payload: p, at: Date.now() };
    renderNodes();
  }
}

// ---------------------------------------------------------------------------
// rendering

function renderConn() {
  const c = $("#conn");
  const ok = S.reach[S.current] && S.reach[S.current].ok;
  const servedOk = S.reach[S.servedBy] && S.reach[S.servedBy].ok;
  c.dataset.current = S.current;
  if (!ok) { c.dataset.state = "down"; c.textContent = `no connection (${S.current})`; return; }
  if (S.current !== S.servedBy) {
    c.dataset.state = "failover";
    c.textContent = `reading from ${nodeName(S.current)}${servedOk ? "" : ` — ${nodeName(S.servedBy)} is down`}`;
  } else {
    c.dataset.state = "ok";
    c.textContent = `connected to ${nodeName(S.current)}`;
  }
  if (S.current !== S.servedBy && servedOk && !$("#banner").hidden && $("#banner").textContent.includes("served this page")) {
    showBanner(`${nodeName(S.servedBy)}, which served this page, answers again; still reading from ${nodeName(S.current)}.`, false);
  }
}

function renderCluster() {
  const st = S.status;
  const l = $("#leader");
  l.dataset.leader = S.leader ?? "";
  l.textContent = S.leader != null ? `node ${S.leader}` : "none (election?)";
  $("#term").textContent = S.term ?? "—";
  $("#indexes").textContent = st ? `${st.committed_index ?? "—"} / ${st.applied_index ?? "—"}` : "—";
  $("#leader-changes").textContent = S.leaderChanges;
  // How many more voters may fail with writes still committing: the
  // leader's own judgement (`fault_tolerance` of its /v1/status).
  const ls = S.leaderStatus;
  const ft = $("#fault-tolerance");
  const voters = ((ls && ls.members) || []).filter((m) => m.voter).length;
  if (ls && typeof ls.fault_tolerance === "number") {
    ft.dataset.tolerance = String(ls.fault_tolerance);
    ft.replaceChildren(ls.fault_tolerance > 0
      ? pill("ok", `can lose ${ls.fault_tolerance} of ${voters} voters`)
      : pill(ls.quorum ? "warn" : "bad", ls.quorum ? `no margin: one more voter down stops writes (${voters} voters)` : "no quorum: writes stop"));
  } else {
    ft.dataset.tolerance = "";
    ft.textContent = S.leader != null ? "—" : "no leader";
  }
  const lag = {};
  for (const m of (S.leaderStatus && S.leaderStatus.members) || []) lag[m.id] = m.lag;
  const rows = ((st && st.members) || []).map((m) => {
    const api = m.member.api_addr;
    const r = S.reach[api];
    const reachable = r ? (r.ok ? "yes" : "no") : "—";
    const role = r && r.ok && r.status ? r.status.role : (r ? "down" : "—");
    return row([
      `${m.id}${m.voter ? "" : " (learner)"}${api === S.current ? " ◂" : ""}`,
      api,
      pill(role, role),
      lag[m.id] != null ? lag[m.id] : "—",
      pill(reachable === "yes" ? "ok" : "bad", reachable),
    ], { node: m.id, role });
  });
  $("#members-table tbody").replaceChildren(...rows);
}

// "1 h 02 min", "3 min 05 s", "42 s".
function duration(s) {
  if (typeof s !== "number" || !isFinite(s) || s < 0) return "—";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  const two = (v) => String(v).padStart(2, "0");
  return h ? `${h} h ${two(m)} min` : m ? `${m} min ${two(sec)} s` : `${sec} s`;
}

function draining(id) {
  const p = (S.params || []).find((x) => x.name === `cluster.drain.node.${id}`);
  return !!(p && p.value && p.value.Bool === true);
}

function renderNodes() {
  const rows = (S.nodes || []).map((n) => {
    const s = S.stats[n.id];
    const p = (s && s.payload) || {};
    const ageS = s ? (Date.now() - s.at) / 1000 : null;
    const age = s ? `${Math.round(ageS)} s` : "—";
    const load = n.load && n.budget ? `${n.load.cpu_millicores}/${n.budget.cpu_millicores} mCPU · ${n.load.memory_mib}/${n.budget.memory_mib} MiB` : "—";
    const live = el("span");
    live.appendChild(pill(n.liveness, n.liveness));
    if (draining(n.id)) live.appendChild(pill("warn", "draining"));
    const version = typeof p.version === "string" ? p.version : "—";
    return row([
      n.id,
      live,
      (n.capabilities || []).join(", ") || "—",
      load,
      p.cpu_percent != null ? num(p.cpu_percent) + " %" : "—",
      p.process_cpu_percent != null ? num(p.process_cpu_percent) + " %" : "—",
      num(p.load1, 2),
      p.temperature_c != null ? num(p.temperature_c) + " °C" : "n/a",
      p.rss_mib != null ? num(p.rss_mib) + " MiB" : "—",
      version,
      typeof p.uptime_s === "number" ? duration(p.uptime_s + ageS) : "—",
      age,
    ], { node: n.id, draining: draining(n.id) });
  });
  $("#nodes-table tbody").replaceChildren(...(rows.length ? rows : [emptyRow(12, "no node registered yet")]));
}

// A parameter value as the operator types it: {"Float": 1.5} → "1.5".
function paramText(v) {
  if (v == null || typeof v !== "object") return String(v ?? "—");
  const [k] = Object.keys(v);
  return k === undefined ? "—" : String(v[k]);
}

function kindText(kind) {
  if (typeof kind === "string") return kind.toLowerCase();
  const [k] = Object.keys(kind || {});
  const b = (kind || {})[k] || {};
  if (k === "Int" || k === "Float") return `${k.toLowerCase()} ${b.min} … ${b.max}`;
  if (k === "Str" || k === "String") return `string${b.max_len != null ? ` ≤ ${b.max_len} bytes` : ""}`;
  if (k === "Enum") return `one of ${(b.choices || b.values || []).join(", ")}`;
  return String(k ?? "—").toLowerCase();
}

// Parse what the operator typed into the parameter's kind, or throw.
function paramValue(kind, text) {
  const k = typeof kind === "string" ? kind : Object.keys(kind || {})[0];
  const s = text.trim();
  if (k === "Bool") {
    if (s === "true" || s === "false") return { Bool: s === "true" };
    throw new Error("type true or false");
  }
  if (k === "Int") {
    if (!/^-?\d+$/.test(s)) throw new Error("type a whole number");
    return { Int: Number(s) };
  }
  if (k === "Float") {
    const f = Number(s);
    if (s === "" || !isFinite(f)) throw new Error("type a number");
    return { Float: f };
  }
  return { [k]: s };
}

async function editParam(name) {
  const p = (S.params || []).find((x) => x.name === name);
  if (!p) return;
  if (!S.token) { showBanner("Changing a parameter needs the API token: press \"token\" and give it.", true); return; }
  const text = prompt(`${name} (${kindText(p.kind)}): new value`, paramText(p.value));
  if (text === null) return;
  let value;
  try { value = paramValue(p.kind, text); } catch (e) { showBanner(`${name}: ${e.message}`, true); return; }
  try {
    const r = await fetch(base(S.current) + `/v1/params/${encodeURIComponent(name)}`, {
      method: "PUT", headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ value }), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS * 2),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) showBanner(`${name} not changed: ${body.message || body.error || `HTTP ${r.status}`}`, true);
    else showBanner("", false);
  } catch (e) {
    showBanner(`${name}: ${e.message || e} (the change may or may not have been applied; the table shows what the cluster holds)`, true);
  }
  refreshAll();
}

function renderParams() {
  const prow = (S.params || []).map((p) => {
    const b = el("button", null, "edit");
    b.type = "button";
    b.dataset.param = p.name;
    b.title = S.token ? "change it (a replicated write)" : "needs the API token";
    const name = el("span", null, p.name);
    if (p.description) name.title = p.description;
    return row([name, paramText(p.value), kindText(p.kind), b], { param: p.name });
  });
  $("#params-table tbody").replaceChildren(...(prow.length ? prow : [emptyRow(4, "no parameters")]));
  const qrow = (S.policies || []).map((q) =>
    row([q.sensor, pill(q.health, q.health), kebab(q.mode), `×${q.speed_factor}`], { sensor: q.sensor, health: q.health }));
  $("#policies-table tbody").replaceChildren(...(qrow.length ? qrow : [emptyRow(4, "no degradation policy: a failed sensor changes nothing")]));
}

function renderMode() {
  const eff = (S.sensors && S.sensors.effective) || (S.mission && S.mission.effective);
  const m = $("#mode");
  if (eff) {
    m.dataset.mode = eff.mode;
    m.textContent = kebab(eff.mode);
    $("#speed-limit").textContent = `${num(eff.max_speed_mps, 2)} m/s (×${eff.speed_factor})`;
    const causes = eff.causes || [];
    const parts = [];
    causes.forEach((c, i) => {
      parts.push(document.createTextNode(i === 0 ? "because " : ", "));
      parts.push(pill(c.health, `${c.sensor}: ${c.health}`));
      parts.push(document.createTextNode(` → ${kebab(c.mode)}`));
    });
    $("#causes").replaceChildren(...(parts.length ? parts : [document.createTextNode("no degradation in force")]));
  }
  const p = S.pose;
  $("#speed").textContent = p ? `${num(p.speed_mps, 2)} m/s, reported mode ${p.mode} (node ${p.node_id})` : "no rover.pose yet";
  $("#pose-task").textContent = p && p.task_id != null ? `task ${p.task_id}` : "—";
  const sensors = (S.sensors && S.sensors.sensors) || {};
  // Which policy a sensor's health triggers; a sensor that is not Ok with
  // no policy for its health changes nothing, and the page says so.
  const policyFor = (name, health) => (S.policies || []).find((q) => q.sensor === name && q.health === health);
  const srows = Object.keys(sensors).sort().map((k) => {
    const h = sensors[k].health;
    const q = policyFor(k, h);
    const policy = h === "Ok" ? "—"
      : q ? `${kebab(q.mode)} ×${q.speed_factor}`
      : pill("warn", "no policy covers this failure");
    return row([k, pill(h, h), clock(sensors[k].reported_at_ms), policy], { sensor: k });
  });
  $("#sensors-table tbody").replaceChildren(...(srows.length ? srows : [emptyRow(4, "no sensor reports")]));
}

function taskCard(t, s) {
  const card = el("div", "task");
  card.dataset.task = String(t.id);
  const top = card.appendChild(el("div", "top"));
  top.appendChild(el("b", null, `#${t.id} ${t.spec.kind}`));
  if (!TERMINAL.has(t.state)) {
    const b = top.appendChild(el("button", null, t.cancel_requested ? "cancelling…" : "cancel"));
    b.type = "button";
    b.dataset.cancel = String(t.id);
  }
  const lease = t.lease ? `node ${t.lease.node_id} · epoch ${t.lease.epoch}` : "unassigned";
  card.appendChild(el("div", "meta", lease + (t.attempts ? ` · ${t.attempts} failed` : "")));
  if (s === "Running" || t.progress_percent) {
    const p = card.appendChild(el("progress"));
    p.max = 100;
    p.value = Number(t.progress_percent) || 0;
    card.appendChild(document.createTextNode(` ${t.progress_percent} %`));
  }
  // Why it waits (no node can take it) or why it failed.
  if (t.unplaceable) card.appendChild(el("div", "meta why", `unplaceable: ${t.unplaceable}`));
  if (t.last_error) card.appendChild(el("div", "meta why", `${s === "Failed" ? "failed" : "last error"}: ${t.last_error}`));
  return card;
}

function renderTasks() {
  const by = {};
  for (const s of STATES) by[s] = [];
  for (const t of S.tasks || []) (by[t.state] || (by[t.state] = [])).push(t);
  const cols = STATES.map((s) => {
    const col = el("div", "col");
    col.dataset.state = s;
    col.appendChild(el("h3", null, `${s} (${by[s].length})`));
    for (const t of by[s].slice(-30).reverse()) col.appendChild(taskCard(t, s));
    return col;
  });
  $("#tasks").replaceChildren(...cols);
}

async function cancelTask(id) {
  if (!S.token) {
    const t = prompt(`Cancelling task ${id} needs the API write token:`);
    if (!t) return;
    S.token = t.trim();
  }
  try {
    const r = await fetch(base(S.current) + `/v1/tasks/${encodeURIComponent(id)}/cancel`, { method: "POST", headers: headers(), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS * 2) });
    const body = await r.json().catch(() => ({}));
    if (r.status === 401) { S.token = null; event(`cancel of task ${id} refused: wrong or missing token`, "bad"); return; }
    if (!r.ok) { event(`cancel of task ${id} failed: ${body.message || r.status}`, "bad"); return; }
    event(`asked to cancel task ${id}`);
    refreshSoon();
  } catch (e) {
    event(`cancel of task ${id} failed: ${e.message || e}`, "bad");
  }
}

// A goal's point, or null; only finite coordinates are drawn.
function goalPoint(g) {
  const k = g.kind || {};
  const v = k.Waypoint || k.PickUp || k.Deliver || k.ScienceSample;
  const pt = (q) => (Array.isArray(q) && fin(q[0]) != null && fin(q[1]) != null ? [q[0], q[1]] : null);
  if (v && v.pose && v.pose.position) return pt(v.pose.position);
  if (k.SearchArea && Array.isArray(k.SearchArea.boundary) && k.SearchArea.boundary.length) {
    const b = k.SearchArea.boundary.map(pt).filter(Boolean);
    if (!b.length) return null;
    return [b.reduce((a, p) => a + p[0], 0) / b.length, b.reduce((a, p) => a + p[1], 0) / b.length];
  }
  return null;
}

// Finite [x, y] points of a boundary.
function boundary(area) {
  return (Array.isArray(area.boundary) ? area.boundary : [])
    .filter((q) => Array.isArray(q) && fin(q[0]) != null && fin(q[1]) != null);
}

// A pose {x_m, y_m, heading_rad} with finite numbers, or null.
function finPose(p) {
  if (!p || fin(p.x_m) == null || fin(p.y_m) == null) return null;
  return { x_m: p.x_m, y_m: p.y_m, heading_rad: fin(p.heading_rad) ?? 0 };
}

// Obstacles with finite numbers (the node checks sim.world's schema at
// publish; the page does not rely on it).
function finObstacles(w) {
  return (w && Array.isArray(w.obstacles) ? w.obstacles : [])
    .filter((o) => o && fin(o.x_m) != null && fin(o.y_m) != null && fin(o.radius_m) != null && o.radius_m >= 0);
}

function renderMap() {
  const svg = $("#map");
  const plan = S.mission && S.mission.plan;
  const goals = (plan && Array.isArray(plan.goals) && plan.goals) || [];
  const pts = [];
  for (const g of goals) {
    const p = goalPoint(g); if (p) pts.push(p);
    const area = g.kind && g.kind.SearchArea;
    if (area) for (const q of boundary(area)) pts.push(q);
  }
  for (const p of S.trail) pts.push(p);
  const w = S.world;
  const truth = finPose(w && w.pose);
  const obstacles = finObstacles(w);
  if (truth) pts.push([truth.x_m, truth.y_m]);
  for (const o of obstacles) { pts.push([o.x_m - o.radius_m, o.y_m - o.radius_m]); pts.push([o.x_m + o.radius_m, o.y_m + o.radius_m]); }
  let [x0, y0, x1, y1] = pts.length ? [Infinity, Infinity, -Infinity, -Infinity] : [-5, -5, 5, 5];
  for (const [x, y] of pts) { x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y); }
  const pad = Math.max(1, 0.1 * Math.max(x1 - x0, y1 - y0));
  x0 -= pad; y0 -= pad; x1 += pad; y1 += pad;
  const W = x1 - x0, H = y1 - y0;
  svg.setAttribute("viewBox", `${x0} ${-y1} ${W} ${H}`); // y up: draw at -y
  const u = Math.max(W, H) / 100; // one "pixel-ish" unit
  const out = [];
  const step = Math.pow(10, Math.floor(Math.log10(Math.max(W, H) / 4)));
  // Bounded: a grid line every `step`, about 4 to 40 of them each way.
  for (let gx = Math.ceil(x0 / step) * step, n = 0; gx <= x1 && n < 100; gx += step, n++) out.push(svgEl("line", { x1: gx, y1: -y1, x2: gx, y2: -y0, stroke: "#eceef1", "stroke-width": u * 0.3 }));
  for (let gy = Math.ceil(y0 / step) * step, n = 0; gy <= y1 && n < 100; gy += step, n++) out.push(svgEl("line", { x1: x0, y1: -gy, x2: x1, y2: -gy, stroke: "#eceef1", "stroke-width": u * 0.3 }));
  out.push(svgEl("text", { x: x0 + u, y: -y0 - u, "font-size": u * 2.4, fill: "#9aa1ab" }, `grid ${step} m`));
  const points = (ps) => ps.map(([x, y]) => `${x},${-y}`).join(" ");
  const path = goals.map(goalPoint).filter(Boolean);
  if (path.length > 1) out.push(svgEl("polyline", { points: points(path), fill: "none", stroke: "#c7cdd6", "stroke-width": u * 0.5, "stroke-dasharray": u * 1.5 }));
  for (const o of obstacles) out.push(svgEl("circle", { cx: o.x_m, cy: -o.y_m, r: o.radius_m, fill: "#fca5a5", stroke: "#dc2626", "stroke-width": u * 0.3 }));
  goals.forEach((g, i) => {
    const area = g.kind && g.kind.SearchArea;
    if (area) out.push(svgEl("polygon", { points: points(boundary(area)), fill: "#ede9fe", stroke: "#7c3aed", "stroke-width": u * 0.3 }));
    const p = goalPoint(g); if (!p) return;
    const st = g.status;
    const fill = st === "Reached" ? "#1f9d55" : st === "Skipped" ? "#cbd5e1" : "#fff";
    const stroke = st === "Pending" ? "#d97706" : fill;
    const tol = fin(g.tolerance && g.tolerance.position_m) || u;
    out.push(svgEl("circle", { cx: p[0], cy: -p[1], r: tol, fill: "none", stroke, "stroke-width": u * 0.2, "stroke-dasharray": u }));
    const dot = svgEl("circle", { class: "goal", cx: p[0], cy: -p[1], r: u * 1.4, fill, stroke, "stroke-width": u * 0.5 });
    dot.dataset.status = String(st ?? "");
    out.push(dot);
    out.push(svgEl("text", { x: p[0] + u * 2, y: -p[1] - u * 1.5, "font-size": u * 2.6, fill: "#374151" }, `${i + 1}·${Object.keys(g.kind || {})[0] || ""}`));
  });
  if (S.trail.length > 1) out.push(svgEl("polyline", { id: "trail", points: points(S.trail), fill: "none", stroke: "#2563eb", "stroke-width": u * 0.6, "stroke-linejoin": "round" }));
  const tri = (pose, color, filled, id) => {
    const s = u * 2.2, x = pose.x_m, y = pose.y_m, h = pose.heading_rad;
    const p = [[s, 0], [-s * 0.6, s * 0.55], [-s * 0.6, -s * 0.55]].map(([a, b]) => [x + a * Math.cos(h) - b * Math.sin(h), -(y + a * Math.sin(h) + b * Math.cos(h))]);
    return svgEl("polygon", { id, points: p.map((q) => q.join(",")).join(" "), fill: filled ? color : "none", stroke: color, "stroke-width": u * 0.5 });
  };
  if (truth) out.push(tri(truth, "#7c3aed", false, "truth"));
  const est = finPose(S.pose);
  if (est) out.push(tri(est, "#2563eb", true, "rover"));
  svg.replaceChildren(...out);
  const status = plan && (typeof plan.status === "string" ? plan.status : Object.keys(plan.status || {})[0]);
  $("#plan-name").textContent = plan && plan.name ? `${plan.name} · v${plan.version} · ${status}` : "no plan";
  const f = (w && w.fence) || {};
  $("#world-info").textContent = w ? `fence epoch ${num(f.current, 0)}: ${num(f.accepted, 0)} accepted, ${num(f.rejected, 0)} rejected · collisions ${num(w.collisions, 0)}${w.estop === true ? " · E-STOP" : ""}` : "";
}

function renderEvents() {
  $("#events").replaceChildren(...S.events.map((e) => {
    const li = el("li", cls(e.kind));
    li.appendChild(el("span", "t", clock(e.at)));
    li.appendChild(document.createTextNode(e.text));
    return li;
  }));
}

function renderAll() {
  renderCluster(); renderNodes(); renderMode(); renderTasks(); renderMap(); renderParams();
}

// ---------------------------------------------------------------------------

document.addEventListener("click", (e) => {
  const b = e.target.closest("[data-cancel]");
  if (b) cancelTask(b.dataset.cancel);
  const p = e.target.closest("[data-param]");
  if (p && p.tagName === "BUTTON") editParam(p.dataset.param);
});
$("#token-btn").addEventListener("click", () => {
  const t = prompt("API token (kept in this tab only; empty to forget it):", "");
  if (t === null) return;
  S.token = t.trim() || null;
  openStreams();
  refreshAll();
});

(async function main() {
  await poll();
  openStreams();
  await refreshAll();
  let polling = false; // a black-holed member makes a poll last up to the timeout
  setInterval(async () => {
    if (polling) return;
    polling = true;
    try { await poll(); } finally { polling = false; }
  }, POLL_MS);
  setInterval(refreshAll, REFRESH_MS);
  setInterval(renderNodes, 2000); // stats age
})();
