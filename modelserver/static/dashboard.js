// The streamml dashboard: plain SVG and vanilla JavaScript, served by the model server itself.
// No charting library, no npm, no CDN: the server image stays lean and the page works offline
// (nothing but this server is ever contacted). Data is written with textContent and SVG
// attributes only (never innerHTML), so a model name or spec cannot inject markup.
//
// The DOM contract (stable ids and data attributes the browser tests rely on) is listed in
// /work/notes/h-dash-contract.md; add to it, never rename.
"use strict";

const BASE = document.querySelector('meta[name="streamml-base"]').content;
const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 2000;
const MAX_EVENTS = 50;
const MAX_PAIRS = 300;
const CURVE_W = 320;
const CURVE_H = 180;
const PAD = 28;

const state = {
  models: new Map(), // name -> overview row from /api/dashboard/models
  history: new Map(), // name -> array of points
  live: new Map(), // name -> latest metrics from the stream
  pairs: [], // [predicted, actual, model]
  metric: null,
  refreshes: 0,
};

function el(tag, attrs = {}, text = null) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function fmt(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(3);
  return value.toPrecision(4);
}

async function getJSON(path) {
  const response = await fetch(BASE + path, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) {
    window.location.assign(BASE + "/dashboard/login");
    throw new Error("not logged in");
  }
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function setStatus(kind, text) {
  const status = document.getElementById("status");
  status.dataset.state = kind;
  status.textContent = text;
}

// -- the models table ---------------------------------------------------------------------

function modelRow(name) {
  const body = document.querySelector("#models tbody");
  let row = body.querySelector(`tr[data-model="${CSS.escape(name)}"]`);
  if (row) return row;
  row = el("tr", { "data-model": name });
  row.append(el("td", { "data-field": "name" }, name));
  for (const field of ["flavor", "samples", "predictions", "metrics", "points", "spec"]) {
    row.append(el("td", { "data-field": field }));
  }
  body.append(row);
  return row;
}

function renderMetrics(cell, metrics) {
  cell.replaceChildren();
  for (const [key, value] of Object.entries(metrics || {})) {
    const span = el("span", { class: "metric", "data-metric": key, "data-value": value ?? "" });
    span.textContent = `${key} ${fmt(value)}`;
    cell.append(span);
  }
}

function renderModels(overview) {
  const seen = new Set();
  for (const model of overview.models) {
    seen.add(model.name);
    state.models.set(model.name, model);
    const row = modelRow(model.name);
    row.querySelector('[data-field="flavor"]').textContent = model.flavor;
    row.querySelector('[data-field="samples"]').textContent = model.samples;
    row.querySelector('[data-field="predictions"]').textContent = model.predictions;
    row.querySelector('[data-field="points"]').textContent = model.points;
    row.querySelector('[data-field="spec"]').textContent = model.spec
      ? JSON.stringify(model.spec.pipeline || model.spec)
      : model.origin || "";
    renderMetrics(row.querySelector('[data-field="metrics"]'), model.metrics);
  }
  for (const row of document.querySelectorAll("#models tbody tr[data-model]")) {
    if (!seen.has(row.dataset.model)) {
      row.remove();
      state.models.delete(row.dataset.model);
      state.history.delete(row.dataset.model);
      const figure = document.querySelector(`figure[data-model="${CSS.escape(row.dataset.model)}"]`);
      if (figure) figure.remove();
    }
  }
  const quarantined = document.getElementById("quarantined");
  quarantined.hidden = overview.quarantined.length === 0;
  quarantined.textContent = overview.quarantined
    .map((q) => `quarantined: ${q.name} (${q.kind}): ${q.reason}`)
    .join("; ");
}

// -- learning curves ----------------------------------------------------------------------

function metricNames() {
  const names = new Set();
  for (const model of state.models.values()) {
    for (const key of Object.keys(model.metrics || {})) names.add(key);
  }
  return [...names];
}

function chooseMetric() {
  const select = document.getElementById("curve-metric");
  const names = metricNames();
  const have = [...select.options].map((o) => o.value);
  if (names.join() !== have.join()) {
    select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  }
  if (!state.metric || !names.includes(state.metric)) {
    state.metric = ["RMSE", "Accuracy"].find((n) => names.includes(n)) || names[0] || null;
  }
  if (state.metric) select.value = state.metric;
}

function scale(values, lo, hi) {
  let min = Math.min(...values);
  let max = Math.max(...values);
  if (!isFinite(min) || !isFinite(max)) return () => (lo + hi) / 2;
  if (min === max) {
    min -= 1;
    max += 1;
  }
  return (v) => lo + ((v - min) / (max - min)) * (hi - lo);
}

function drawCurve(name) {
  const curves = document.getElementById("curves");
  let figure = curves.querySelector(`figure[data-model="${CSS.escape(name)}"]`);
  if (!figure) {
    figure = el("figure", { "data-model": name });
    figure.append(el("figcaption", {}, name));
    figure.append(
      el("svg:svg", {
        "data-curve": name,
        viewBox: `0 0 ${CURVE_W} ${CURVE_H}`,
        width: CURVE_W,
        height: CURVE_H,
        role: "img",
      }),
    );
    curves.append(figure);
  }
  const svg = figure.querySelector("svg");
  const metric = state.metric;
  const points = state.history.get(name) || [];
  svg.dataset.metric = metric || "";
  svg.dataset.points = points.length;
  svg.replaceChildren();
  const drawn = points.filter((p) => typeof p[metric] === "number");
  const live = state.live.get(name);
  const x = scale(points.map((p) => p.samples).concat(live ? [live.samples] : []), PAD, CURVE_W - 8);
  const values = drawn.map((p) => p[metric]).concat(live && typeof live.metrics[metric] === "number" ? [live.metrics[metric]] : []);
  const y = scale(values, CURVE_H - PAD, 8);
  if (values.length) {
    svg.append(el("svg:text", { x: 2, y: 12 }, fmt(Math.max(...values))));
    svg.append(el("svg:text", { x: 2, y: CURVE_H - PAD }, fmt(Math.min(...values))));
  }
  svg.append(el("svg:text", { x: PAD, y: CURVE_H - 8 }, `samples → (${metric || "no metric"})`));
  svg.append(el("svg:polyline", { points: drawn.map((p) => `${x(p.samples)},${y(p[metric])}`).join(" ") }));
  // one circle per history point, drawn or not (a point without this metric is hidden)
  for (const p of points) {
    const has = typeof p[metric] === "number";
    const circle = el("svg:circle", {
      "data-point": "",
      "data-seq": p.seq,
      "data-samples": p.samples,
      "data-value": has ? p[metric] : "",
      cx: x(p.samples),
      cy: has ? y(p[metric]) : CURVE_H - PAD,
      r: 2,
    });
    if (!has) circle.setAttribute("visibility", "hidden");
    svg.append(circle);
  }
  if (live && typeof live.metrics[metric] === "number") {
    svg.append(el("svg:circle", { "data-live": "", cx: x(live.samples), cy: y(live.metrics[metric]), r: 3 }));
  }
}

async function refreshHistory(name) {
  const points = state.history.get(name) || [];
  const since = points.length ? points[points.length - 1].seq : 0;
  const reply = await getJSON(`/api/history/${encodeURIComponent(name)}?since=${since}`);
  let merged = points.concat(reply.points);
  if (reply.last_seq < since) merged = reply.points; // a new model under this name
  if (merged.length > reply.max_points) merged = merged.slice(merged.length - reply.max_points);
  state.history.set(name, merged);
}

// -- predicted against actual -------------------------------------------------------------

function drawPairs(svg, pairs, attribute) {
  svg.replaceChildren();
  const size = 320;
  const all = pairs.flatMap(([p, a]) => [p, a]);
  if (!all.length) return;
  const s = scale(all, PAD, size - 8);
  const t = scale(all, size - PAD, 8);
  const lo = Math.min(...all);
  const hi = Math.max(...all);
  svg.append(el("svg:line", { class: "diagonal", x1: s(lo), y1: t(lo), x2: s(hi), y2: t(hi) }));
  svg.append(el("svg:text", { x: PAD, y: size - 8 }, "actual →"));
  svg.append(el("svg:text", { x: 2, y: 12 }, "↑ predicted"));
  for (const [predicted, actual, model] of pairs) {
    svg.append(
      el("svg:circle", {
        [attribute]: "",
        "data-model": model,
        "data-predicted": predicted,
        "data-actual": actual,
        cx: s(actual),
        cy: t(predicted),
        r: 2.5,
      }),
    );
  }
}

// -- sweeps -------------------------------------------------------------------------------

function sweepSection(name) {
  const sweeps = document.getElementById("sweeps");
  let section = sweeps.querySelector(`section[data-sweep="${CSS.escape(name)}"]`);
  if (section) return section;
  section = el("section", { "data-sweep": name });
  section.append(el("h3", {}, name));
  const facts = el("p", { class: "facts" });
  for (const field of ["phase", "progress", "succeeded", "failed", "running", "pending", "best-model", "held-out-r2"]) {
    facts.append(el("span", { class: "metric" }, field + " "), el("b", { "data-field": field }), " ");
  }
  section.append(facts);
  const table = el("table", { "data-evaluation": name });
  table.append(el("thead"), el("tbody"));
  table.tHead.append(el("tr"));
  for (const h of ["Model", "N", "MAE", "RMSE", "R2"]) table.tHead.rows[0].append(el("th", {}, h));
  section.append(table);
  section.append(el("svg:svg", { "data-heldout": name, viewBox: "0 0 320 320", width: 320, height: 320 }));
  sweeps.append(section);
  return section;
}

function renderSweeps(reply) {
  document.getElementById("no-sweeps").hidden = reply.sweeps.length > 0;
  const names = new Set();
  for (const stored of reply.sweeps) {
    names.add(stored.name);
    const s = stored.summary;
    const section = sweepSection(stored.name);
    const total = s.trials + s.test_trials;
    const done = s.succeeded;
    const values = {
      phase: s.phase,
      progress: `${Math.min(done, total)}/${total}`,
      succeeded: s.succeeded,
      failed: s.failed,
      running: s.running,
      pending: s.pending,
      "best-model": s.best_model || "–",
      "held-out-r2": fmt(s.held_out_r2),
    };
    for (const [field, value] of Object.entries(values)) {
      section.querySelector(`[data-field="${field}"]`).textContent = value;
    }
    section.dataset.phase = s.phase;
    const body = section.querySelector("table tbody");
    body.replaceChildren();
    for (const e of s.evaluation) {
      const row = el("tr", { "data-model": e.model });
      row.append(el("td", {}, e.model), el("td", {}, e.n), el("td", {}, fmt(e.mae)), el("td", {}, fmt(e.rmse)), el("td", {}, fmt(e.r2)));
      body.append(row);
    }
    const pairs = [];
    for (const run of s.held_out) {
      for (const [model, predicted] of Object.entries(run.predictions)) pairs.push([predicted, run.target, model]);
    }
    drawPairs(section.querySelector("svg"), pairs, "data-heldout-pair");
  }
  for (const section of document.querySelectorAll("#sweeps section[data-sweep]")) {
    if (!names.has(section.dataset.sweep)) section.remove();
  }
}

// -- the live streams ---------------------------------------------------------------------

// One coalesced stream (modelserver/feed.py): the server sends at most 2 batches a second
// however fast it learns, each with the learns per model since the previous one, their newest
// metrics, the newest events and predicted-against-actual pairs. (Fed from the raw per-learn
// streams, the page cost the server a metrics read and two frames per learn, and the browser,
// on the same cores, a parse of each.)
function applyBatch(batch) {
  for (const [name, { learned, metrics }] of Object.entries(batch.models)) {
    const model = state.models.get(name);
    if (!model) continue;
    model.samples += learned;
    const cell = document.querySelector(`tr[data-model="${CSS.escape(name)}"] [data-field="samples"]`);
    if (cell) cell.textContent = model.samples;
    showMetrics(name, metrics);
  }
  for (const pair of batch.pairs) state.pairs.push(pair);
  if (state.pairs.length > MAX_PAIRS) state.pairs.splice(0, state.pairs.length - MAX_PAIRS);
  for (const event of batch.events.slice(-MAX_EVENTS)) listEvent(event.kind, event);
}

function listEvent(kind, data) {
  const list = document.getElementById("events");
  const truth = data.ground_truth === undefined ? "" : ` actual ${fmt(data.ground_truth)}`;
  const item = el("li", { "data-event": kind, "data-model": data.model });
  item.textContent = `${new Date().toLocaleTimeString()} ${kind} ${data.model}: predicted ${fmt(data.prediction)}${truth}`;
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function showMetrics(name, values) {
  const model = state.models.get(name);
  if (!model) return;
  model.metrics = values;
  state.live.set(name, { samples: model.samples, metrics: values });
  scheduleDraw(name);
  const row = document.querySelector(`tr[data-model="${CSS.escape(name)}"]`);
  if (row) renderMetrics(row.querySelector('[data-field="metrics"]'), values);
}

const toDraw = new Set();
function scheduleDraw(name) {
  // a live point moves the curve's scale, and a redraw rebuilds every point of it: at most every
  // 2 s from the stream, as the refresh does (the counts and metric cells follow each batch)
  if (!toDraw.size) {
    setTimeout(() => {
      for (const n of toDraw) if (state.models.has(n)) drawCurve(n);
      toDraw.clear();
    }, REFRESH_MS);
  }
  toDraw.add(name);
}

function connectStreams() {
  const source = new EventSource(BASE + "/api/stream/dashboard/");
  source.onopen = () => setStatus("live", "live");
  source.onerror = () => setStatus("error", "stream interrupted: reconnecting");
  source.addEventListener("batch", (message) => applyBatch(JSON.parse(message.data)));
}

// -- the refresh loop ---------------------------------------------------------------------

async function refresh() {
  try {
    const overview = await getJSON("/api/dashboard/models");
    renderModels(overview);
    chooseMetric();
    for (const name of state.models.keys()) {
      await refreshHistory(name);
      state.live.delete(name); // the history has caught up with what the stream showed
      drawCurve(name);
    }
    drawPairs(document.getElementById("predicted-vs-actual"), state.pairs, "data-pair");
    renderSweeps(await getJSON("/api/sweeps"));
    state.refreshes += 1;
    document.body.dataset.refreshes = state.refreshes;
    document.body.dataset.ready = "true";
  } catch (error) {
    setStatus("error", String(error.message || error));
  }
}

document.getElementById("curve-metric").addEventListener("change", (event) => {
  state.metric = event.target.value;
  for (const name of state.models.keys()) drawCurve(name);
});

connectStreams();
refresh();
setInterval(refresh, REFRESH_MS);
