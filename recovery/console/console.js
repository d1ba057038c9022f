// Police console: live alerts (SSE over fetch, so the API key travels in a header), open cases,
// a case view and an SVG map of a bike's track, readers and H3 cells. No CDN, no tile server
// needed: tiles are drawn only if the service is configured with a tile URL.
"use strict";

const state = { key: "", reason: "", lastEventId: null, alerts: 0, readers: [], tileUrl: "",
                caseId: null, abort: null, refreshing: null };
const $ = (id) => document.getElementById(id);

function headers() { return { Authorization: "Bearer " + state.key }; }

async function api(path, params = {}, init = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) url.searchParams.set(k, v);
  const r = await fetch(url, { ...init, headers: { ...headers(), ...(init.headers || {}) } });
  const body = r.status === 204 ? null : await r.json();
  if (!r.ok) throw new Error(`${r.status}: ${body && body.error}`);
  return body;
}

function setStatus(text, live) { const s = $("status"); s.textContent = text; s.classList.toggle("live", !!live); }
const fmt = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19);

// ---- alerts -------------------------------------------------------------------------------
function showAlert(a, fresh) {
  const li = document.createElement("li");
  li.className = "alert" + (fresh ? " new" : "");
  li.dataset.caseId = a.case_id;
  li.textContent = `${fmt(a.first_ts)}  tag ${a.tag_id} at reader ${a.reader_id} (case ${a.case_id})`;
  li.onclick = () => openCase(a.case_id);
  $("alerts").prepend(li);
  state.alerts += 1;
  $("alert-count").textContent = state.alerts;
  // A first alert turns a case "spotted": refresh the list (at most once a second).
  if (fresh && !state.refreshing) {
    state.refreshing = setTimeout(() => { state.refreshing = null; loadCases().catch(() => {}); }, 1000);
  }
}

// Reads a text/event-stream body; on a drop, reconnects with Last-Event-ID so nothing is missed.
async function streamAlerts() {
  for (;;) {
    state.abort = new AbortController();
    try {
      const h = headers();
      if (state.lastEventId !== null) h["Last-Event-ID"] = String(state.lastEventId);
      const url = new URL("/v1/alerts/stream", location.origin);
      url.searchParams.set("reason", state.reason);
      const r = await fetch(url, { headers: h, signal: state.abort.signal });
      if (!r.ok) throw new Error("stream " + r.status);
      setStatus("live", true);
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          handleEvent(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
    } catch (e) {
      setStatus("reconnecting: " + e.message);
    }
    await new Promise((res) => setTimeout(res, 2000));
  }
}

function handleEvent(block) {
  let id = null, event = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("id:")) id = line.slice(3).trim();
    else if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (id !== null) state.lastEventId = Number(id);
  if (event === "alert" && data) showAlert(JSON.parse(data), true);
}

// ---- cases --------------------------------------------------------------------------------
async function loadCases() {
  const list = await api("/v1/thefts", { status: "open", reason: state.reason });
  const spotted = await api("/v1/thefts", { status: "spotted", reason: state.reason });
  const ul = $("cases");
  ul.replaceChildren();
  for (const c of spotted.concat(list)) {
    const li = document.createElement("li");
    li.className = "case";
    li.textContent = `${c.status.toUpperCase()}  ${c.case_id}  tag ${c.tag_id}  ${c.place}`;
    li.onclick = () => openCase(c.case_id);
    ul.append(li);
  }
}

async function openCase(caseId) {
  const c = await api(`/v1/thefts/${caseId}`);
  state.caseId = caseId;
  $("case-view").hidden = false;
  $("case-id").textContent = caseId;
  const dl = $("case-fields");
  dl.replaceChildren();
  for (const [k, v] of [["status", c.status], ["tag", c.tag_id], ["stolen at", fmt(c.stolen_at)],
                        ["place", c.place], ["description", c.description]]) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    dl.append(dt, dd);
  }
  $("case-history").replaceChildren(...c.history.map((h) => {
    const li = document.createElement("li");
    li.textContent = `${fmt(h.at_ms)} ${h.status} by ${h.actor} ${h.note}`;
    return li;
  }));
  const now = Date.now();
  const from = Math.max(c.stolen_at, now - 30 * 86400000);
  const t = await api(`/v1/bikes/${c.tag_id}/track`, { from, to: now + 600000, case_id: caseId });
  await drawTrack(t.sightings);
  $("track-info").textContent = `tag ${c.tag_id}: ${t.count} sightings`;
}

async function setCaseStatus(status) {
  if (!state.caseId) return;
  await api(`/v1/thefts/${state.caseId}`, {}, {
    method: "PATCH", body: JSON.stringify({ status }), headers: { "Content-Type": "application/json" },
  });
  await openCase(state.caseId);
  await loadCases();
}

// ---- map ----------------------------------------------------------------------------------
const W = 800, H = 560, PAD = 30;
const merc = (lat, lon) => {
  const s = Math.sin((lat * Math.PI) / 180);
  return [(lon + 180) / 360, 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)];
};

function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

async function drawTrack(points) {
  const map = $("map");
  map.replaceChildren();
  const cells = [...new Set(points.map((p) => p.h3_r9))].slice(0, 500);
  const bounds = cells.length ? await api("/v1/cells", { ids: cells.join(",") }) : [];
  const all = points.map((p) => [p.lat, p.lon]);
  for (const b of bounds) all.push(...b.boundary);
  if (!all.length) for (const r of state.readers) if (r.lat !== null) all.push([r.lat, r.lon]);
  if (!all.length) { map.dataset.trackPoints = "0"; return; }
  const xy = all.map(([a, o]) => merc(a, o));
  const x0 = Math.min(...xy.map((p) => p[0])), x1 = Math.max(...xy.map((p) => p[0]));
  const y0 = Math.min(...xy.map((p) => p[1])), y1 = Math.max(...xy.map((p) => p[1]));
  const scale = Math.min((W - 2 * PAD) / Math.max(x1 - x0, 1e-9), (H - 2 * PAD) / Math.max(y1 - y0, 1e-9));
  const ox = (W - scale * (x1 - x0)) / 2, oy = (H - scale * (y1 - y0)) / 2;
  const proj = (lat, lon) => { const [x, y] = merc(lat, lon); return [ox + (x - x0) * scale, oy + (y - y0) * scale]; };
  if (state.tileUrl) drawTiles(map, x0, y0, scale, ox, oy);
  for (const b of bounds) {
    const pts = b.boundary.map(([a, o]) => proj(a, o).join(",")).join(" ");
    map.append(svg("polygon", { class: "cell", points: pts, "data-cell": b.cell }));
  }
  for (const r of state.readers) {
    if (r.lat === null) continue;
    const [x, y] = proj(r.lat, r.lon);
    if (x < 0 || y < 0 || x > W || y > H) continue;
    map.append(svg("circle", { class: "reader", cx: x, cy: y, r: 3 }));
  }
  if (points.length) {
    const line = points.map((p) => proj(p.lat, p.lon).join(",")).join(" ");
    map.append(svg("polyline", { class: "track", points: line }));
    points.forEach((p, i) => {
      const [x, y] = proj(p.lat, p.lon);
      const c = svg("circle", { class: i === points.length - 1 ? "point last" : "point", cx: x, cy: y, r: 5 });
      const title = svg("title", {});
      title.textContent = `reader ${p.reader_id} ${fmt(p.first_ts)}`;
      c.append(title);
      map.append(c);
    });
  }
  map.dataset.trackPoints = String(points.length);
}

// Web-Mercator tiles ({z}/{x}/{y}) under the drawing, only when a tile URL is configured.
function drawTiles(map, x0, y0, scale, ox, oy) {
  const z = Math.max(0, Math.min(19, Math.floor(Math.log2(scale / 256))));
  const n = 2 ** z, size = scale / n;
  const tx0 = Math.floor((x0 - ox / scale) * n), ty0 = Math.floor((y0 - oy / scale) * n);
  for (let tx = tx0; tx < tx0 + Math.ceil(W / size) + 1; tx++) {
    for (let ty = ty0; ty < ty0 + Math.ceil(H / size) + 1; ty++) {
      if (tx < 0 || ty < 0 || tx >= n || ty >= n) continue;
      const href = state.tileUrl.replace("{z}", z).replace("{x}", tx).replace("{y}", ty);
      map.append(svg("image", { href, x: ox + (tx / n - x0) * scale, y: oy + (ty / n - y0) * scale,
                                width: size, height: size }));
    }
  }
}

// ---- start --------------------------------------------------------------------------------
async function connect(ev) {
  if (ev) ev.preventDefault();
  state.key = $("key").value.trim();
  state.reason = $("reason").value.trim();
  sessionStorage.setItem("tt-key", state.key);
  sessionStorage.setItem("tt-reason", state.reason);
  try {
    state.tileUrl = (await (await fetch("/console/config.json")).json()).tile_url || "";
    state.readers = await api("/v1/readers");
    const recent = await api("/v1/alerts", { reason: state.reason, limit: 50 });
    for (const a of recent.alerts) { showAlert(a, false); state.lastEventId = a.event_id; }
    if (state.lastEventId === null) state.lastEventId = -1;
    await loadCases();
    streamAlerts();
  } catch (e) {
    setStatus("error: " + e.message);
  }
}

$("login").addEventListener("submit", connect);
$("refresh-cases").onclick = () => loadCases();
for (const b of document.querySelectorAll("#case-actions button")) b.onclick = () => setCaseStatus(b.dataset.status);
$("key").value = sessionStorage.getItem("tt-key") || "";
$("reason").value = sessionStorage.getItem("tt-reason") || "";
