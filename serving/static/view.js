// taktline plant view: plain JS, no build step, no network beyond this server.
// Data comes from /ui/api/* with the API key as a bearer header (kept in sessionStorage);
// server-sent events are read with fetch, since EventSource cannot send headers.
"use strict";

const STATE_COLORS = { idle: "#d9d9d9", setup: "#f0b429", busy: "#2e8540", blocked: "#8e44ad", down: "#c0392b" };
const FAMILY_COLORS = ["#1f77b4", "#ff7f0e", "#17becf", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22"];
const POLICY_COLORS = ["#1f4e79", "#c0392b", "#2e8540", "#8e44ad"];
const KPIS = [["throughput", "throughput"], ["wip", "WIP"], ["total_tardiness", "tardiness"], ["profit", "profit"]];
const BAR_W = 92; // a station's buffer bar and machines, px of the SVG
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

const view = {
  key: sessionStorage.getItem("taktline.key") || "",
  info: null, mode: null,
  replay: { playing: false, next: 0, abort: null, latest: null, series: [], gantt: [], drawn: 0, received: 0, t0: 0, lag: 0 },
  live: { abort: null, count: 0, metrics: [] },
};
window.taktlineView = view; // read by the browser test and the notebook widget

function familyColor(i) { return i < 0 ? "#999" : FAMILY_COLORS[i % FAMILY_COLORS.length]; }
function fmt(x) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  const a = Math.abs(x);
  if (a >= 1e6) return (x / 1e6).toPrecision(3) + "M";
  if (a >= 1e3) return (x / 1e3).toPrecision(3) + "k";
  if (a === 0) return "0";
  return Number(x.toPrecision(3)).toString();
}
function el(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
function esc(x) { return String(x === undefined || x === null ? "" : x).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`); }
function headers() { return view.key ? { Authorization: "Bearer " + view.key } : {}; }

async function api(path) {
  const r = await fetch(path, { headers: headers() });
  if (r.status === 401 || r.status === 403) { askKey(r.status === 403 ? "that key was refused" : ""); throw new Error("auth"); }
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

// Server-sent events over fetch: calls onEvent(name, data) per event until aborted or ended.
async function sse(path, onEvent, abort) {
  const r = await fetch(path, { headers: headers(), signal: abort.signal });
  if (r.status === 401 || r.status === 403) { askKey("that key was refused"); return; }
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}
function quietly(promise) { return promise.catch((e) => { if (e.name !== "AbortError" && e.message !== "auth") status(String(e)); }); }
function status(text) { $("status").textContent = text; }

function askKey(message) {
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("key").focus();
}

async function start() {
  const auth = await (await fetch("/ui/api/auth")).json();
  if (auth.auth_required && !view.key) { askKey(""); return; }
  try { view.info = await api("/ui/api/info"); } catch (e) { if (e.message !== "auth") status(String(e)); return; }
  $("login").hidden = true;
  $("tab-replay").disabled = !view.info.replay;
  const wanted = new URLSearchParams(location.search).get("mode");
  show(wanted || (view.info.replay ? "replay" : "live"));
}

function show(mode) {
  view.mode = mode;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("on", b.dataset.mode === mode);
  for (const s of document.querySelectorAll("section.mode")) s.hidden = s.id !== mode;
  if (mode === "replay") setupReplay();
  if (mode === "live") startLive();
  if (mode === "compare") loadCompare();
}

// ---- the line diagram ---------------------------------------------------------------------
// One column per station: buffer bar with job chips over its machines; machines carry
// data-machine and data-state, the clock data-time (the browser test reads them).
function buildDiagram(svg, stations) {
  svg.innerHTML = "";
  const colW = BAR_W + 20, maxM = Math.max(...stations.map((s) => s.machines));
  const h = 92 + maxM * 26;
  svg.setAttribute("viewBox", `0 0 ${stations.length * colW + 10} ${h}`);
  const parts = { machines: {}, bars: [], chips: [], counts: [] };
  stations.forEach((s, i) => {
    const x = 8 + i * colW;
    el("text", { x: x + 4, y: 14, class: "station", "font-size": 12 }, svg).textContent = s.name;
    el("rect", { x: x + 4, y: 20, width: colW - 20, height: 12, fill: "#fff", stroke: "#889" }, svg);
    parts.bars.push(el("rect", { x: x + 4, y: 20, width: 0, height: 12, fill: "#3b6ea5" }, svg));
    parts.counts.push(el("text", { x: x + 4, y: 46, "font-size": 10, fill: "#66707c" }, svg));
    const chips = el("g", {}, svg); chips.setAttribute("transform", `translate(${x + 4},52)`);
    parts.chips.push(chips);
    if (i > 0) el("path", { d: `M${x - 10} 70 l8 0`, stroke: "#aab", "stroke-width": 2 }, svg);
    for (let k = 0; k < s.machines; k++) {
      const y = 80 + k * 26;
      const r = el("rect", { x: x + 4, y, width: colW - 20, height: 20, rx: 3, fill: STATE_COLORS.idle, class: "machine" }, svg);
      const label = el("text", { x: x + 8, y: y + 14, "font-size": 10, fill: "#fff" }, svg);
      parts.machines[`${s.name}.M${k + 1}`] = { rect: r, label, station: i };
    }
  });
  return parts;
}

function drawFrame(parts, frame, clock) {
  frame.stations.forEach((s, i) => {
    const cap = s.capacity === null ? Math.max(s.waiting, 10) : Math.max(s.capacity, 1);
    const bar = parts.bars[i];
    bar.setAttribute("width", String(BAR_W * Math.min(s.waiting / cap, 1)));
    parts.counts[i].textContent = `${s.waiting}/${s.capacity === null ? "∞" : s.capacity} waiting`;
    const g = parts.chips[i];
    while (g.childNodes.length > s.chips.length) g.removeChild(g.lastChild);
    s.chips.forEach((f, j) => {
      let c = g.childNodes[j];
      if (!c) c = el("circle", { r: 3.5 }, g);
      c.setAttribute("cx", String(4 + (j % 12) * 7.6));
      c.setAttribute("cy", String(4 + Math.floor(j / 12) * 8));
      c.setAttribute("fill", familyColor(f));
    });
    for (const m of s.machines) {
      const p = parts.machines[m.id];
      if (!p) continue;
      p.rect.setAttribute("fill", STATE_COLORS[m.state] || "#000");
      p.rect.dataset.machine = m.id;
      p.rect.dataset.state = m.state;
      p.rect.setAttribute("stroke", m.family >= 0 ? familyColor(m.family) : "none");
      p.rect.setAttribute("stroke-width", m.family >= 0 ? 3 : 0);
      p.label.textContent = `${m.id.split(".").pop()} ${m.state}${m.job ? " " + m.job : ""}`;
      p.label.setAttribute("fill", m.state === "idle" ? "#333" : "#fff");
    }
  });
  if (clock) {
    clock.dataset.time = String(frame.time);
    clock.textContent = `t = ${frame.time.toFixed(1)} · WIP ${frame.wip}`;
  }
}

// ---- small charts (canvas by hand) ---------------------------------------------------------
function lineChart(canvas, series, colors, xMax) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  let lo = Infinity, hi = -Infinity;
  for (const s of series) for (const [, y] of s) { if (isFinite(y)) { lo = Math.min(lo, y); hi = Math.max(hi, y); } }
  if (!isFinite(lo)) return;
  if (hi === lo) { hi += 1; lo -= lo === 0 ? 0 : 1; }
  ctx.fillStyle = "#66707c"; ctx.font = "10px sans-serif";
  ctx.fillText(fmt(hi), 2, 10); ctx.fillText(fmt(lo), 2, h - 2);
  series.forEach((s, i) => {
    ctx.strokeStyle = colors[i % colors.length]; ctx.lineWidth = 1.5; ctx.beginPath();
    s.forEach(([x, y], j) => {
      const px = 34 + (w - 38) * x / (xMax || 1), py = h - 4 - (h - 14) * (y - lo) / (hi - lo);
      if (j === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    });
    ctx.stroke();
  });
}

// ---- replay --------------------------------------------------------------------------------
function setupReplay() {
  const info = view.info.replay, r = view.replay;
  if (!info || r.panels) return;
  $("replay-info").textContent = `${info.line}, seed ${info.seed}, ${info.horizon} ${info.time_unit}, frame every ${fmt(info.frame_step)} ${info.time_unit}`;
  r.panels = info.policies.map((name, i) => {
    const panel = document.createElement("div");
    panel.className = "panel"; panel.dataset.policy = name;
    panel.innerHTML = `<h2><span style="color:${POLICY_COLORS[i % 4]}">■</span> ${name}<span class="clock" data-time="0">t = 0</span></h2>`;
    const svg = document.createElementNS(SVG, "svg"); panel.appendChild(svg);
    const gantt = document.createElement("canvas"); gantt.width = 640; gantt.height = 12 + 9 * info.stations.reduce((a, s) => a + s.machines, 0);
    gantt.className = "gantt"; panel.appendChild(gantt);
    $("panels").appendChild(panel);
    return { name, parts: buildDiagram(svg, info.stations), clock: panel.querySelector(".clock"), gantt, last: {} };
  });
  r.series = KPIS.map(() => info.policies.map(() => []));
  $("kpis").innerHTML = "";
  r.charts = KPIS.map(([, label]) => {
    const box = document.createElement("div"); box.className = "kpi";
    box.innerHTML = `<h3>${label}</h3>`;
    const c = document.createElement("canvas"); c.width = 260; c.height = 90; box.appendChild(c);
    $("kpis").appendChild(box); return c;
  });
  const legend = [...Object.entries(STATE_COLORS).map(([k, c]) => `<span><i style="background:${c}"></i>${k}</span>`),
    ...view.info.replay.families.map((f, i) => `<span><i style="background:${familyColor(i)};border-radius:50%"></i>family ${f}</span>`)];
  $("legend").innerHTML = legend.join("") + `<span>policies: ${info.policies.map((p, i) => `<b style="color:${POLICY_COLORS[i % 4]}">${p}</b>`).join(", ")}</span>`;
  requestAnimationFrame(paint);
  quietly(fetchFrame(0));
}

async function fetchFrame(index) {
  const data = await api(`/ui/api/replay/frames?index=${index}`);
  onFrames(data);
}

function onFrames(data) {
  const r = view.replay;
  r.latest = data; r.received += 1;
  r.next = data.index + 1;
  r.lag = data.lag_s || 0;
  const x = data.frames[0].time;
  data.frames.forEach((f, i) => {
    KPIS.forEach(([k], j) => { if (f.kpis) r.series[j][i].push([x, f.kpis[k]]); });
    growGantt(r.panels[i], f);
  });
}

// a Gantt that grows: each machine's row takes the colour of its state (busy: its family)
function growGantt(panel, frame) {
  const ctx = panel.gantt.getContext("2d"), info = view.info.replay;
  const w = panel.gantt.width, scale = (w - 4) / info.horizon;
  let row = 0;
  for (const s of frame.stations) for (const m of s.machines) {
    const prev = panel.last[m.id];
    if (prev && frame.time > prev.time) {
      ctx.fillStyle = prev.state === "busy" && prev.family >= 0 ? familyColor(prev.family) : STATE_COLORS[prev.state];
      ctx.fillRect(2 + prev.time * scale, 6 + row * 9, Math.max((frame.time - prev.time) * scale, 0.5), 8);
    }
    panel.last[m.id] = { time: frame.time, state: m.state, family: m.family };
    row += 1;
  }
}

function paint() {
  const r = view.replay;
  if (r.latest && r.drawn !== r.received) {
    r.latest.frames.forEach((f, i) => drawFrame(r.panels[i].parts, f, r.panels[i].clock));
    const xMax = view.info.replay.horizon;
    r.charts.forEach((c, j) => lineChart(c, r.series[j], POLICY_COLORS, xMax));
    r.drawn = r.received;
    r.paints = (r.paints || 0) + 1;
  }
  const secs = (performance.now() - r.t0) / 1000;
  if (r.playing && secs > 0.5) $("replay-rate").textContent = `${(r.paints / secs).toFixed(1)} frames/s drawn, lag ${r.lag.toFixed(2)} s`;
  requestAnimationFrame(paint);
}

function play() {
  const r = view.replay;
  if (r.playing) { pause(); return; }
  if (r.next >= view.info.replay.n_frames) return;
  r.playing = true; r.t0 = performance.now(); r.paints = 0; $("play").textContent = "pause";
  r.abort = new AbortController();
  const speed = $("speed").value;
  const run = r.abort;
  quietly(sse(`/ui/api/replay/stream?start=${r.next}&speed=${speed}`, (name, data) => {
    if (name === "frame") onFrames(data);
    if (name === "end") { r.playing = false; $("play").textContent = "play"; status("replay finished"); }
  }, run));
}

function pause() {
  const r = view.replay;
  r.playing = false; $("play").textContent = "play";
  if (r.abort) r.abort.abort();
}

// ---- live ----------------------------------------------------------------------------------
let liveParts = null;
function startLive() {
  const l = view.live;
  if (l.abort) return;
  l.abort = new AbortController();
  quietly(sse("/ui/api/live/stream", (name, data) => { if (name === "decisions") data.forEach(onDecision); }, l.abort));
  pollMetrics();
  l.timer = setInterval(pollMetrics, 2000);
}

function onDecision(d) {
  const l = view.live;
  l.count += 1;
  const tr = document.createElement("tr");
  tr.dataset.seq = d.seq;
  if (d.fallback) tr.className = "fallback";
  const dec = d.decision.kind === "release" ? `release ${d.decision.count}` : `${d.decision.job} → ${d.decision.machine || "M" + d.decision.machine}`;
  const cells = [d.seq, fmt(d.snapshot_time), d.policy, dec, d.served_by, d.fallback ? `yes: ${d.fallback_reason}` : "no", `${d.latency_ms.toFixed(2)} ms`];
  for (const c of cells) { const td = document.createElement("td"); td.textContent = String(c); tr.appendChild(td); }
  const body = document.querySelector("#decisions tbody");
  body.insertBefore(tr, body.firstChild);
  while (body.childNodes.length > 200) body.removeChild(body.lastChild);
  if (d.frame) {
    const svg = $("live-svg");
    const layout = d.frame.stations.map((s) => ({ name: s.name, machines: s.machines.length }));
    const sig = JSON.stringify(layout);
    if (!liveParts || liveParts.sig !== sig) { liveParts = buildDiagram(svg, layout); liveParts.sig = sig; }
    drawFrame(liveParts, d.frame, null);
  }
  status(`${l.count} decisions seen`);
}

async function pollMetrics() {
  if (view.mode !== "live") return;
  const m = await api("/ui/api/metrics").catch(() => null);
  if (!m) return;
  const l = view.live;
  l.metrics.push(m);
  if (l.metrics.length > 300) l.metrics.shift();
  const keys = [...new Set(l.metrics.flatMap((x) => [...Object.keys(x.decisions), ...Object.keys(x.fallbacks).map((k) => "fallback " + k)]))];
  const t0 = l.metrics[0].time;
  const series = keys.map((k) => l.metrics.map((x) => [x.time - t0, k.startsWith("fallback ") ? (x.fallbacks[k.slice(9)] || 0) : (x.decisions[k] || 0)]));
  lineChart($("live-metrics"), series, POLICY_COLORS.concat(FAMILY_COLORS), Math.max(m.time - t0, 1));
  const mean = m.requests ? (1000 * m.latency_s_sum / m.requests).toFixed(2) : "–";
  $("live-counters").innerHTML = keys.map((k, i) => `<span style="color:${POLICY_COLORS.concat(FAMILY_COLORS)[i]}">■</span> ${k}`).join(" &nbsp; ") +
    `<br>/decide requests ${m.requests} · mean latency ${mean} ms`;
}

// ---- compare -------------------------------------------------------------------------------
async function loadCompare() {
  const body = $("compare-body");
  let data;
  try { data = await api("/ui/api/compare"); } catch (e) { body.textContent = String(e); return; }
  if (!data.run) { body.innerHTML = `<p class="note" id="compare-none"></p>`; $("compare-none").textContent = data.message; return; }
  let html = `<h2>${data.run.kind} run ${esc(data.run.name || data.run.id)}</h2><p class="note">${new Date(data.run.start_time).toLocaleString()} · ${esc(data.tracking_uri)}</p>`;
  let chart = [];
  if (data.rows) { // a compare run: the verdict table
    const c = data.comparison || {};
    html += `<p>line <b>${esc(c.line)}</b>, ${esc(c.metric)} (${c.higher_is_better ? "higher" : "lower"} is better), ${(c.seeds || []).length} paired seeds; reference ${esc(c.reference)}; winner <b id="compare-winner">${esc(c.winner)}</b></p>`;
    html += `<table id="compare-table"><thead><tr><th>policy</th><th>kind</th><th>mean ± CI</th><th>Δ to ref ± CI</th><th>p (t)</th><th>verdict</th><th>latency p50</th></tr></thead><tbody>`;
    for (const r of data.rows) {
      const half = (r.ci_high - r.ci_low) / 2, dhalf = (r.diff_ci_high - r.diff_ci_low) / 2;
      html += `<tr class="v-${esc(r.verdict).replace(/ /g, "-")}"><td>${esc(r.policy)}</td><td>${esc(r.kind)}</td><td class="num">${fmt(r.mean)} ±${fmt(half)}</td>` +
        `<td class="num">${fmt(r.diff_mean)} ±${fmt(dhalf)}</td><td class="num">${fmt(r.p_ttest)}</td><td>${esc(r.verdict)}</td><td class="num">${fmt(r.latency_p50_ms)} ms</td></tr>`;
      chart.push([r.policy, r.mean, r.verdict]);
    }
    html += "</tbody></table>";
  } else { // an evaluate run: the eval.* metrics per policy
    const rows = {};
    for (const [k, v] of Object.entries(data.metrics)) {
      const parts = k.split("."); const policy = parts.slice(1, -1).join("."), metric = parts[parts.length - 1];
      (rows[policy] = rows[policy] || {})[metric] = v;
    }
    const metrics = [...new Set(Object.values(rows).flatMap((r) => Object.keys(r)))];
    html += `<table id="compare-table"><thead><tr><th>policy</th>${metrics.map((m) => `<th>${esc(m)}</th>`).join("")}</tr></thead><tbody>`;
    for (const [p, r] of Object.entries(rows)) html += `<tr><td>${esc(p)}</td>${metrics.map((m) => `<td class="num">${fmt(r[m])}</td>`).join("")}</tr>`;
    html += "</tbody></table>";
    const first = metrics.find((m) => m.endsWith("_mean")) || metrics[0];
    chart = Object.entries(rows).map(([p, r]) => [p, r[first] || 0, ""]);
  }
  html += `<canvas id="compare-chart" width="960" height="${20 + 24 * chart.length}"></canvas>`;
  if (data.table && data.table.columns) {
    html += `<h2>cases</h2><table><thead><tr>${data.table.columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead><tbody>` +
      data.table.data.slice(0, 200).map((row) => `<tr>${row.map((v) => `<td>${typeof v === "number" ? fmt(v) : esc(v)}</td>`).join("")}</tr>`).join("") + "</tbody></table>";
  }
  body.innerHTML = html;
  const c = $("compare-chart"), ctx = c.getContext("2d");
  const hi = Math.max(...chart.map((r) => Math.abs(r[1])), 1e-9);
  ctx.font = "11px sans-serif";
  chart.forEach(([p, v, verdict], i) => {
    const w = (c.width - 480) * Math.abs(v) / hi;
    ctx.fillStyle = verdict === "better" ? "#2e8540" : verdict === "worse" ? "#c0392b" : "#1f4e79";
    ctx.fillRect(230, 10 + i * 24, w, 18);
    ctx.fillStyle = "#1d2530"; ctx.fillText(String(p).slice(0, 36), 4, 23 + i * 24);
    ctx.fillText(`${fmt(v)} ${verdict}`, 234 + w, 23 + i * 24);
  });
}

// ---- wiring --------------------------------------------------------------------------------
$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  view.key = $("key").value.trim();
  sessionStorage.setItem("taktline.key", view.key);
  start();
});
for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => show(b.dataset.mode));
$("play").addEventListener("click", play);
$("speed").addEventListener("change", () => { if (view.replay.playing) { pause(); play(); } });
view.play = play; view.pause = pause;
start();
