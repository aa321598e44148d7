// llm-router dashboard: follows the router's event stream (GET /stats/events) and draws
// each snapshot; polls the JSON endpoints once a second while the stream is unavailable.
// Plain DOM and SVG, no library, nothing from another host (see docs/dashboard.md).
"use strict";

const POLL_MS = 1000;
const SAMPLE_MS = 1000; // one point a second for the client-side sparklines
const STREAM_RETRY_MS = 10000; // while polling, how often to try the stream again
const STREAM_SILENCE_MS = 40000; // no byte for this long (the router beats every 15 s): dead
const HISTORY = 60; // points kept for the client-side sparklines (spend, cache, dedup)
const KEY_ITEM = "llm-router-key";
const THEME_ITEM = "llm-router-theme";
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  key: sessionStorage.getItem(KEY_ITEM),
  paused: false,
  timer: null, // the next poll
  mode: "connecting", // "stream" (live), "poll" (the stream failed) or "connecting"
  stream: null, // the open stream's AbortController
  retry: null, // the next attempt at the stream while polling
  lastStats: null,
  selectedRun: null,
  pinnedRun: false, // the user picked a run: stop following the newest
  lastDag: "",
  history: { spent: [], reference: [], hitRate: [], joined: [] },
  lastJoined: null,
};

class AuthError extends Error {}

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else if (name === "style") node.style.cssText = value; // CSSOM: allowed by the page's CSP
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- formatting -------------------------------------------------------------------------

function usd(x) {
  if (x === null || x === undefined) return "–";
  if (x === 0) return "$0";
  const sign = x < 0 ? "-$" : "$";
  const abs = Math.abs(x);
  if (abs >= 1000) return sign + abs.toLocaleString("en-US", { maximumFractionDigits: 0 });
  if (abs >= 1) return sign + abs.toFixed(2);
  if (abs >= 0.01) return sign + abs.toFixed(3);
  return sign + abs.toPrecision(2);
}

function ms(x) {
  if (x === null || x === undefined) return "–";
  if (x >= 10000) return (x / 1000).toFixed(1) + " s";
  if (x >= 1000) return (x / 1000).toFixed(2) + " s";
  if (x > 0 && x < 10) return x.toFixed(1) + " ms";
  return Math.round(x) + " ms";
}

function count(n) {
  return (n ?? 0).toLocaleString("en-US");
}

function plural(n, one, many) {
  return `${count(n)} ${n === 1 ? one : many}`;
}

function pct(part, whole) {
  return whole > 0 ? (100 * part / whole).toFixed(part === whole ? 0 : 1) + "%" : "–";
}

function clock(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

function ago(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return Math.round(seconds) + " s ago";
  if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
  return Math.round(seconds / 3600) + " h ago";
}

function duration(startIso, endIso) {
  if (!startIso) return "";
  const end = endIso ? Date.parse(endIso) : Date.now();
  return ms(Math.max(0, end - Date.parse(startIso)));
}

function setText(id, text) {
  const node = $(id);
  if (node.textContent !== text) node.textContent = text;
}

// ---- data -------------------------------------------------------------------------------

async function api(path) {
  const headers = { accept: "application/json" };
  if (state.key) headers.authorization = "Bearer " + state.key;
  const response = await fetch(path, { headers, cache: "no-store" });
  const body = await response.json().catch(() => null);
  if (response.status === 401) {
    throw new AuthError(body && body.error ? body.error.message : "that key is not accepted");
  }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.statusText;
    throw new Error(message || "HTTP " + response.status);
  }
  return body;
}

// A call whose failure shows in its own panel; a refused key stops the poll unless
// `refusedToo` (the runs need the admin key where /stats takes any accepted key).
async function settle(promise, refusedToo = false) {
  try {
    return { value: await promise };
  } catch (error) {
    if (error instanceof AuthError && !refusedToo) throw error;
    return { error };
  }
}

// Everything the page draws, in the shape of one event of the stream.
function draw(snapshot) {
  drawBackends(snapshot.backends); // first: the tier mix names each model's tier from it
  drawStats(snapshot.stats);
  drawRouting(snapshot.routing);
  drawRecent(snapshot.recent, snapshot.health);
  drawHealth(snapshot.health);
  drawRuns(snapshot.runs, snapshot.run);
  const how = state.mode === "stream" ? "live" : "polling";
  setText("updated", how + " · " + new Date().toLocaleTimeString([], { hour12: false }));
  $("updated").dataset.mode = state.mode;
}

// ---- the event stream -------------------------------------------------------------------

// EventSource cannot send the Authorization header the key travels in (and a key in the URL
// would end up in logs and history), so the stream is read with fetch.
async function openStream() {
  closeStream();
  const controller = new AbortController();
  state.stream = controller;
  const headers = { accept: "text/event-stream" };
  if (state.key) headers.authorization = "Bearer " + state.key;
  const follow = state.pinnedRun && state.selectedRun
    ? "?run=" + encodeURIComponent(state.selectedRun) : "";
  let silence = null;
  const quiet = () => {
    clearTimeout(silence);
    silence = setTimeout(() => controller.abort(), STREAM_SILENCE_MS);
  };
  try {
    quiet();
    const response = await fetch("/stats/events" + follow,
      { headers, cache: "no-store", signal: controller.signal });
    if (response.status === 401) {
      const body = await response.json().catch(() => null);
      closeStream();
      askForKey(state.key && body && body.error ? body.error.message : "");
      return;
    }
    if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      quiet();
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        received(frame);
      }
    }
  } catch (error) {
    if (state.stream !== controller) return; // closed on purpose (pause, key, new run)
  } finally {
    clearTimeout(silence);
  }
  if (state.stream === controller) fallBack();
}

function received(frame) {
  let event = "message", data = "";
  for (const line of frame.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trimStart();
  }
  if (event !== "snapshot" || !data) return; // a heartbeat
  if (state.mode !== "stream") {
    state.mode = "stream";
    clearTimeout(state.timer); state.timer = null; // the stream replaces the poll
    clearTimeout(state.retry); state.retry = null;
  }
  draw(JSON.parse(data));
}

function closeStream() {
  const controller = state.stream;
  state.stream = null;
  if (controller) controller.abort();
}

// The stream failed or ended: poll meanwhile, and try the stream again now and then.
function fallBack() {
  state.stream = null;
  state.mode = "poll";
  if (state.paused) return;
  if (state.timer === null) poll();
  clearTimeout(state.retry);
  state.retry = setTimeout(() => { state.retry = null; if (!state.paused) openStream(); },
    STREAM_RETRY_MS);
}

// ---- polling (while the stream is unavailable) --------------------------------------------

async function poll() {
  state.timer = null;
  try {
    const [stats, recent, backends, health, runs, routing] = await Promise.all([
      api("/stats"), api("/stats/recent"), api("/v1/backends"), settle(api("/health")),
      settle(api("/stats/runs?limit=15"), true), settle(api("/v1/routing")),
    ]);
    const list = runs.value ?? { error: { message: runs.error.message } };
    const follow = pickRun(list.data || []);
    let run = null;
    if (follow) run = (await settle(api("/stats/runs/" + encodeURIComponent(follow)))).value;
    if (state.mode !== "poll") return; // the stream came back meanwhile
    draw({ stats, recent, backends, health: health.value ?? { status: "down" }, runs: list,
      run: run ?? null, routing: routing.value ?? null });
  } catch (error) {
    if (error instanceof AuthError) {
      askForKey(state.key ? error.message : "");
      return;
    }
    drawHealth({ status: "down" });
    setText("updated", "router not answering");
  }
  if (state.mode === "poll" && !state.paused) state.timer = setTimeout(poll, POLL_MS);
}

// The run whose DAG to show: the one picked, else the newest running one, else the newest.
function pickRun(data) {
  if (state.pinnedRun && data.some((r) => r.run_id === state.selectedRun)) {
    return state.selectedRun;
  }
  const follow = data.find((r) => r.status === "running") || data[0];
  return follow ? follow.run_id : null;
}

function remember(series, value) {
  series.push(value);
  if (series.length > HISTORY) series.shift();
}

// One point a second for the spend, cache and dedup sparklines, whatever the updates' pace.
function sample() {
  const stats = state.lastStats;
  if (stats === null || state.paused) return;
  const h = state.history;
  const spent = stats.total_spent_usd;
  const { hits, misses } = stats.cache;
  remember(h.spent, spent);
  remember(h.reference, spent + stats.total_saved_usd);
  remember(h.hitRate, hits + misses > 0 ? hits / (hits + misses) : 0);
  const joinedNow = state.lastJoined === null ? 0 : stats.dedup.joined - state.lastJoined;
  state.lastJoined = stats.dedup.joined;
  remember(h.joined, Math.max(0, joinedNow));
  spark($("spark-spend"), [
    { values: h.reference, cls: "line ref" }, { values: h.spent, cls: "line", area: true },
  ]);
  spark($("spark-cache"), [{ values: h.hitRate, cls: "line good", area: true, max: 1 }]);
  spark($("spark-dedup"), [{ values: h.joined, cls: "line", area: true }]);
}

// ---- cards ------------------------------------------------------------------------------

function drawStats(stats) {
  const spent = stats.total_spent_usd;
  const reference = spent + stats.total_saved_usd;
  setText("spent", usd(spent));
  setText("reference", usd(reference));
  setText("saved", usd(stats.total_saved_usd));
  setText("saved-pct", reference > 0 ? "(" + pct(stats.total_saved_usd, reference) + ")" : "");
  $("spend-meter").style.width = reference > 0 ? (100 * spent / reference).toFixed(1) + "%" : "0";

  const { hits, misses } = stats.cache;
  setText("hit-rate", pct(hits, hits + misses));
  setText("hits", plural(hits, "hit", "hits"));
  setText("misses", plural(misses, "miss", "misses"));
  setText("cache-saved", usd(stats.cache.saved_usd));
  setText("joined", count(stats.dedup.joined));
  setText("dedup-saved", usd(stats.dedup.saved_usd));
  state.failovers = stats.failovers;
  if (state.lastStats === null) { state.lastStats = stats; sample(); }
  state.lastStats = stats;

  drawTiers(stats);
}

function drawTiers(stats) {
  const tiers = Object.entries(stats.by_tier).sort((a, b) => Number(a[0]) - Number(b[0]));
  const total = tiers.reduce((sum, [, n]) => sum + n, 0);
  setText("tier-total", total ? count(total) + " upstream answers" : "no upstream answers yet");
  const stack = $("tier-stack");
  stack.replaceChildren(...tiers.map(([tier, n]) => el("span", {
    style: `width:${(100 * n / total).toFixed(2)}%;background:var(--t${Math.min(Number(tier), 5)})`,
    title: `tier ${tier}: ${count(n)}`,
  })));
  const models = Object.entries(stats.by_model).sort((a, b) => b[1] - a[1]);
  const tierOf = state.modelTiers || {};
  $("models").tBodies[0].replaceChildren(...models.map(([name, n]) => el("tr", {},
    el("td", {}, el("span", {
      class: "swatch", style: `background:var(--t${Math.min(tierOf[name] || 1, 5)})`,
    }), name),
    el("td", { class: "muted", text: tierOf[name] ? "tier " + tierOf[name] : "" }),
    el("td", { class: "num", text: count(n) }),
    el("td", { class: "num muted", text: pct(n, total) }),
  )));
}

function drawRecent(recent, health) {
  const win = recent.window;
  setText("rps", win.per_sec >= 10 ? win.per_sec.toFixed(0) : win.per_sec.toFixed(2));
  setText("rps-sub", `${count(win.requests)} in the last ${win.seconds} s` +
    (win.errors ? ` · ${count(win.errors)} failed` : ""));
  setText("p50", ms(win.latency_ms.p50));
  setText("p90", ms(win.latency_ms.p90));
  setText("p99", ms(win.latency_ms.p99));
  spark($("spark-rps"), [{ values: recent.series.map((s) => s.requests), cls: "line", area: true }]);
  spark($("spark-latency"), [
    { values: recent.series.map((s) => s.p50_ms), cls: "line", bridge: true },
  ]);

  const rows = recent.requests.slice(0, 50).map((r) => {
    const served = r.cache === "HIT" ? ["hit", "cache"]
      : r.dedup === "FOLLOWER" ? ["joined", "joined"]
      : r.model ? ["miss", "upstream"] : null;
    return el("tr", {},
      el("td", { class: "mono", text: clock(r.at) }),
      el("td", {}, el("span", {
        class: "badge " + (r.status === "ok" ? "ok" : "error"), text: r.status,
      })),
      el("td", { text: r.model ?? "–" }),
      el("td", { text: r.tier ?? "–" }),
      el("td", {}, served ? el("span", { class: "badge " + served[0], text: served[1] }) : "",
        r.stream ? el("span", { class: "muted", text: " stream" }) : ""),
      el("td", { class: "num", text: ms(r.ms) }),
      el("td", { class: "num muted", text: `${count(r.input_tokens)} / ${count(r.output_tokens)}` }),
      el("td", { class: "num", text: usd(r.cost_usd) }),
    );
  });
  $("recent").tBodies[0].replaceChildren(...rows);
  $("recent-empty").hidden = rows.length > 0;
  const processes = recent.processes ?? 1;
  const scope = recent.scope === "shared"
    ? ` of ${plural(processes, "process", "processes")}`
    : health && health.redis ? " of this process alone (Redis is not answering)" : "";
  setText("recent-summary", rows.length ? `last ${rows.length}${scope}` : scope.trim());
}

function drawBackends(backends) {
  state.modelTiers = Object.fromEntries(backends.filter((b) => b.tier).map((b) => [b.name, b.tier]));
  const healthy = backends.filter((b) => b.status === "healthy").length;
  setText("backend-summary", `${healthy} of ${backends.length} healthy · ` +
    plural(state.failovers ?? 0, "failover", "failovers"));
  $("backends").tBodies[0].replaceChildren(...backends.map((b) => {
    const name = el("td", {}, el("div", { text: b.name }));
    if (b.detail) name.append(el("div", { class: "detail", text: b.detail }));
    return el("tr", { "data-backend": b.name },
      name,
      el("td", { text: b.tier ?? (b.kind || "") }),
      el("td", {}, el("span", { class: "badge " + b.status, text: b.status })),
      el("td", { class: "num", text: count(b.in_flight) }),
      el("td", { class: "num", text: b.latency_ms ? ms(b.latency_ms) : "–" }),
      el("td", { class: "num", text: count(b.total_requests) }),
    );
  }));
}

// The routing policy (GET /v1/routing, or the stream's cut of it): the thresholds in force,
// the feedback behind them, how much of what online learning taught applies, and the
// comparisons the router makes itself.
function drawRouting(routing) {
  const rows = [];
  const row = (name, value, detail = "") => rows.push(el("tr", { "data-row": name },
    el("td", { text: name }), el("td", { class: "num mono", text: value }),
    el("td", { class: "muted", text: detail })));
  if (!routing) {
    setText("routing-summary", "not available");
    $("routing").tBodies[0].replaceChildren();
    return;
  }
  const t = routing.thresholds || {}, conf = routing.configured || {};
  const moved = t.tier1_max !== conf.tier1_max || t.tier2_max !== conf.tier2_max;
  row("thresholds", `${t.tier1_max} / ${t.tier2_max}`,
    moved ? `configured ${conf.tier1_max} / ${conf.tier2_max}; moved by feedback`
      : "tier 1 up to the first score, tier 2 up to the second");
  const feedback = routing.feedback;
  if (feedback) {
    const tiers = Object.entries(feedback.by_tier || {})
      .map(([tier, f]) => `tier ${tier}: ${plural(f.reports, "report", "reports")}, ` +
        `mean quality ${f.mean_quality.toFixed(2)}`);
    row("feedback", count(feedback.total), tiers.join(" · ") || "no reports yet");
  }
  const learning = routing.learning;
  if (learning && learning.enabled) {
    const gate = (part) => part && part.gate !== undefined ? pct(part.gate, 1) : "–";
    const floor = learning.floor;
    row("online learning", `${gate(learning)} applied`,
      `${count(learning.reports)} reports, ${count(learning.compared)} comparisons` +
      (floor && floor.lead !== null && floor.lead !== undefined
        ? ` · lead ${floor.lead.toFixed(3)} ± ${floor.error.toFixed(3)}` : ""));
    if (learning.mix) row("length mix", `${gate(learning.mix)} applied`, "from comparisons");
    if (learning.regions) row("per-region levels", `${gate(learning.regions)} applied`, "");
  }
  const compare = routing.compare;
  if (compare) {
    row("comparisons", count(compare.reported),
      `${count(compare.sampled)} sampled, ${count(compare.running)} running, ` +
      `${count(compare.failed + compare.unreadable)} dropped, ` +
      `${count(compare.skipped_busy + compare.skipped_budget)} skipped · ` +
      `${usd(compare.spent_usd_last_hour)} in the last hour`);
  }
  setText("routing-summary", routing.router || "");
  $("routing").tBodies[0].replaceChildren(...rows);
}

function drawHealth(health) {
  const node = $("health");
  const status = health.status === "ok" ? "ok" : health.status === "degraded" ? "degraded" : "down";
  node.dataset.state = status;
  const why = Object.entries(health).filter(([k, v]) => k !== "status" && v && v.status !== "ok")
    .map(([k]) => k);
  setText("health-text", status === "ok" ? "healthy"
    : status === "degraded" ? "degraded: " + why.join(", ") : "unreachable");
}

// ---- sparklines -------------------------------------------------------------------------

function spark(target, lines) {
  const width = 200, height = 40, pad = 2;
  const all = lines.flatMap((l) => l.values).filter((v) => v !== null && v !== undefined);
  const max = Math.max(lines[0].max ?? 0, ...all, 1e-9);
  const paths = [];
  for (const line of lines) {
    const n = line.values.length;
    if (n < 2) continue;
    const x = (i) => (i / (n - 1)) * width;
    const y = (v) => height - pad - (v / max) * (height - 2 * pad);
    let d = "", open = false;
    line.values.forEach((v, i) => {
      if (v === null || v === undefined) { open = open && line.bridge; return; }
      d += (open ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1);
      open = true;
    });
    const points = line.values.filter((v) => v !== null && v !== undefined).length;
    if (points === 1) { // one second with traffic: a dot, not nothing
      const i = line.values.findIndex((v) => v !== null && v !== undefined);
      paths.push(svg("circle", { class: "dot-mark", cx: x(i), cy: y(line.values[i]), r: 2 }));
    }
    if (line.area && line.values.every((v) => v !== null && v !== undefined)) {
      paths.push(svg("path", { class: "area", d: d + `L${width} ${height}L0 ${height}Z` }));
    }
    paths.push(svg("path", { class: line.cls, d }));
  }
  target.replaceChildren(...paths);
}

// ---- workflow runs ----------------------------------------------------------------------

function drawRuns(runs, run) {
  const list = $("runs");
  if (runs.error) {
    list.replaceChildren();
    $("runs-empty").hidden = false;
    $("runs-empty").textContent = runs.error.message;
    drawRun(null);
    return;
  }
  const data = runs.data;
  $("runs-empty").hidden = data.length > 0;
  const running = data.filter((r) => r.status === "running").length;
  setText("runs-summary", running ? `${running} running` : data.length ? "none running" : "");
  if (state.pinnedRun && (!run || run.run_id !== state.selectedRun)) state.pinnedRun = false;
  state.selectedRun = run ? run.run_id : null;
  list.replaceChildren(...data.map((item) => runItem(item)));
  drawRun(run);
}

function runItem(run) {
  const ops = Object.values(run.ops);
  const done = ops.filter((s) => s === "succeeded").length;
  const item = el("li", {
    role: "option", "data-run": run.run_id, "data-status": run.status, tabindex: "0",
    "aria-selected": String(run.run_id === state.selectedRun),
  },
  el("span", { class: "status-dot" }),
  el("span", { class: "name", text: run.workflow || "(submitted workflow)" }),
  el("span", { class: "badge " + run.status, text: run.status }),
  el("span", {
    class: "meta",
    text: `${run.run_id.slice(0, 12)}… · ${ago(run.created_at)} · ${usd(run.cost_usd)} · ` +
      `${done}/${ops.length} ops`,
  }),
  el("span", { class: "progress" }, ...ops.map((s) => el("span", { class: s }))));
  const pick = () => { state.selectedRun = run.run_id; state.pinnedRun = true; refreshNow(); };
  item.addEventListener("click", pick);
  item.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") pick(); });
  return item;
}

function drawRun(run) {
  $("dag-empty").hidden = run !== null;
  const target = $("dag");
  if (run === null) {
    target.replaceChildren();
    state.lastDag = "";
    setText("run-title", "Run");
    setText("run-meta", "");
    return;
  }
  setText("run-title", run.workflow || "(submitted workflow)");
  setText("run-meta", `${run.status} · ${usd(run.cost_usd)} · ` +
    `${duration(run.started_at || run.created_at, run.finished_at)}`);
  target.dataset.run = run.run_id;
  target.dataset.status = run.status;
  const key = JSON.stringify([run.run_id, run.ops, run.edges]);
  if (key === state.lastDag) return;
  state.lastDag = key;
  drawDag(target, run);
}

function layers(names, edges) {
  // Longest path from a start op: an op sits one column right of its latest input.
  const inputs = new Map(names.map((n) => [n, []]));
  for (const [up, down] of edges) inputs.get(down)?.push(up);
  const column = new Map();
  const visit = (name, seen = new Set()) => {
    if (column.has(name)) return column.get(name);
    if (seen.has(name)) return 0;
    seen.add(name);
    const c = Math.max(-1, ...inputs.get(name).map((u) => visit(u, seen))) + 1;
    column.set(name, c);
    return c;
  };
  names.forEach((n) => visit(n));
  return column;
}

function drawDag(target, run) {
  const names = Object.keys(run.ops);
  const edges = run.edges || [];
  const column = layers(names, edges);
  const W = 196, H = 70, GX = 64, GY = 18, PAD = 12;
  const rows = new Map();
  const place = new Map();
  for (const name of names) {
    const c = column.get(name);
    const r = rows.get(c) || 0;
    rows.set(c, r + 1);
    place.set(name, { c, r });
  }
  const tallest = Math.max(1, ...rows.values());
  const columns = Math.max(1, ...[...rows.keys()].map((c) => c + 1));
  const width = PAD * 2 + columns * W + (columns - 1) * GX;
  const height = PAD * 2 + tallest * H + (tallest - 1) * GY;
  const pos = (name) => {
    const { c, r } = place.get(name);
    const offset = ((tallest - rows.get(c)) * (H + GY)) / 2; // centre short columns
    return { x: PAD + c * (W + GX), y: PAD + offset + r * (H + GY) };
  };
  target.setAttribute("viewBox", `0 0 ${width} ${height}`);
  target.style.maxWidth = width + "px"; // scales down to fit the panel, never up
  const defs = svg("defs");
  const marker = svg("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7",
    markerHeight: "7", orient: "auto-start-reverse",
  });
  marker.append(svg("path", { d: "M0 0L10 5L0 10z" }));
  defs.append(marker);
  const parts = [defs];
  for (const [up, down] of edges) {
    if (!place.has(up) || !place.has(down)) continue;
    const a = pos(up), b = pos(down);
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x - 2, y2 = b.y + H / 2, mid = (x1 + x2) / 2;
    const done = run.ops[up].status === "succeeded";
    parts.push(svg("path", {
      class: "edge" + (done ? " done" : ""), "marker-end": "url(#arrow)",
      d: `M${x1} ${y1}C${mid} ${y1} ${mid} ${y2} ${x2} ${y2}`, "data-edge": `${up}->${down}`,
    }));
  }
  for (const name of names) {
    const op = run.ops[name];
    const { x, y } = pos(name);
    const g = svg("g", {
      class: "op", "data-op": name, "data-status": op.status, transform: `translate(${x} ${y})`,
    });
    g.append(svg("rect", { width: W, height: H, rx: 10 }));
    g.append(svg("text", { class: "title", x: 12, y: 22 }, clip(name, 17)));
    g.append(svg("text", { class: "state", x: W - 12, y: 22, "text-anchor": "end" }, op.status));
    const model = op.model ? `${clip(op.model, 14)} · tier ${op.tier}`
      : op.reason ? op.reason.replaceAll("_", " ")
      : { running: "calling…", pending: "waiting" }[op.status] || "–";
    g.append(svg("text", { class: "line1", x: 12, y: 42 }, model));
    const cost = op.cost_usd !== undefined ? usd(op.cost_usd) : "";
    const time = op.ms !== undefined ? ms(op.ms)
      : op.started_at ? duration(op.started_at, null) : "";
    const cache = op.cache && op.cache !== "MISS" ? " · " + op.cache.toLowerCase() : "";
    g.append(svg("text", { class: "line2", x: 12, y: 59 },
      [cost, time].filter(Boolean).join(" · ") + cache));
    const title = svg("title", {}, `${name}: ${op.status}` + (op.error ? `\n${op.error}` : ""));
    g.append(title);
    parts.push(g);
  }
  target.replaceChildren(...parts);
}

function clip(text, n) {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

// ---- key, theme, pause ------------------------------------------------------------------

function askForKey(message) {
  const dialog = $("login");
  $("login-error").textContent = message || "";
  if (!dialog.open) dialog.showModal();
  $("key").focus();
}

function connect(event) {
  event.preventDefault();
  state.key = $("key").value.trim() || null;
  if (state.key) sessionStorage.setItem(KEY_ITEM, state.key);
  else sessionStorage.removeItem(KEY_ITEM);
  $("key").value = "";
  $("login").close();
  refreshNow();
}

// Show the current choice (a key given, a run picked) now: a new stream, or a poll.
function refreshNow() {
  clearTimeout(state.timer);
  state.timer = null;
  if (state.paused) return;
  if (state.mode === "poll") poll();
  else openStream();
}

function pause(paused) {
  state.paused = paused;
  document.body.classList.toggle("paused", paused);
  $("pause").textContent = paused ? "Resume" : "Pause";
  if (paused) {
    closeStream();
    clearTimeout(state.timer); state.timer = null;
    clearTimeout(state.retry); state.retry = null;
    setText("updated", "paused");
  } else {
    state.mode = "connecting";
    openStream();
  }
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  $("theme").textContent = theme === "dark" ? "Light" : "Dark";
}

function start() {
  const stored = localStorage.getItem(THEME_ITEM);
  const prefersLight = window.matchMedia("(prefers-color-scheme: light)").matches;
  applyTheme(stored || (prefersLight ? "light" : "dark"));
  $("theme").addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    localStorage.setItem(THEME_ITEM, next);
    applyTheme(next);
  });
  $("pause").addEventListener("click", () => pause(!state.paused));
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_ITEM);
    state.key = null;
    closeStream();
    askForKey("");
  });
  setInterval(sample, SAMPLE_MS);
  window.addEventListener("pagehide", closeStream); // no stream left open by a closed page
  $("login-form").addEventListener("submit", connect);
  $("login").addEventListener("cancel", (e) => e.preventDefault());
  if (state.key === null && document.body.dataset.needsKey !== "false") {
    // Ask once, before any call that would be refused.
    api("/health").then(drawHealth, () => drawHealth({ status: "down" }));
    askForKey("");
  } else {
    openStream();
  }
}

document.addEventListener("DOMContentLoaded", start);
