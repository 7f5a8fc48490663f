// The explorer page: controls, drawing, and requests. No math of the optimizers here: every
// number is the server's (adamkit's NumPy reference); this file only draws what it returns.
"use strict";
const COLORS = {
  SGD: "#1f77b4", Momentum: "#2ca02c", RMSProp: "#ff7f0e", Adam: "#d62728",
  AdamW: "#9467bd", NAdam: "#8c564b", RAdam: "#e377c2", Adamax: "#17becf",
  AdEMAMix: "#bcbd22", ADOPT: "#393b79", Lion: "#111111", "Schedule-Free": "#e6550d",
  StableAdamW: "#637939", "Cautious Adam": "#843c39", Adafactor: "#7b4173",
};
// The variants' paths are dashed: fifteen colours alone are hard to tell apart on the contours.
const DASHED = new Set(["AdEMAMix", "ADOPT", "Lion", "Schedule-Free", "StableAdamW", "Cautious Adam", "Adafactor"]);
// What each panel shows (the server's labels name it in the inspected optimizer's symbols).
const SERIES = [
  ["m_hat", "first moment (direction and push)"],
  ["sqrt_v_hat", "second-moment scale (per coordinate)"],
  ["effective_lr", "effective learning rate"],
  ["update", "update (subtracted from x, y)"],
];
// The panels' two lines: coordinate x solid, coordinate y dashed (told apart without colour);
// a scalar series (one number a step, the same for both coordinates) is one line.
const COORDS = [["x", "#111", ""], ["y", "#777", "5 3"]];
const SCALAR = [["x = y", "#111", ""]];
const SVG = "http://www.w3.org/2000/svg";
const PANEL = { width: 330, height: 150, left: 50, right: 10, top: 16, bottom: 28 };
const $ = (id) => document.getElementById(id);
const state = {
  contour: null, contourImage: null, result: null, start: null, optimizers: [],
  inFlight: false, pending: false, requests: 0,
};
window.explorer = state; // for tests and the curious: the last answers the server gave

function fmt(v) {
  return v === null || v === undefined ? "–" : Number(v).toPrecision(6);
}

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function lrSlider(name, value, symbol) {
  const id = "lr_" + name;
  const log = Math.log10(value);
  return `<div class="slider"><label for="${id}" style="color:${COLORS[name]}">${symbol} ${name}</label>
    <input type="range" id="${id}" min="${(log - 2).toFixed(1)}" max="${(log + 2).toFixed(1)}"
      step="0.05" value="${log}"><span class="value" id="${id}-value"></span></div>`;
}

function query() {
  const q = new URLSearchParams();
  q.set("function", $("function").value);
  for (const name of state.optimizers) q.set("lr_" + name, (10 ** Number($("lr_" + name).value)).toPrecision(6));
  q.set("beta1", $("beta1").value);
  q.set("beta2", $("beta2").value);
  q.set("eps", (10 ** Number($("eps").value)).toPrecision(6));
  q.set("beta3", $("beta3").value);
  q.set("alpha", $("alpha").value);
  q.set("weight_decay", $("weight_decay").value);
  q.set("bias_correction", $("bias_correction").checked ? "1" : "0");
  q.set("steps", $("steps").value);
  q.set("show", state.optimizers.filter((n) => $("show_" + n).checked).join(","));
  q.set("inspect", $("inspect").value);
  if (state.start) { q.set("x", state.start[0]); q.set("y", state.start[1]); }
  return q;
}

function showValues() {
  for (const name of state.optimizers) $("lr_" + name + "-value").textContent = (10 ** Number($("lr_" + name).value)).toPrecision(3);
  $("beta1-value").textContent = $("beta1").value;
  $("beta2-value").textContent = $("beta2").value;
  $("eps-value").textContent = (10 ** Number($("eps").value)).toExponential(1);
  $("beta3-value").textContent = $("beta3").value;
  $("alpha-value").textContent = $("alpha").value;
  $("weight_decay-value").textContent = $("weight_decay").value;
  $("steps-value").textContent = $("steps").value;
  $("scrub-value").textContent = $("scrub").value;
}

// A control moved: ask the server, at most one request at a time. Moves made while one is on
// its way are coalesced into one request for the settings as they are when it returns (a drag
// sends a few requests, each for where the slider is then, never a queue of stale ones).
function update() {
  showValues();
  if (state.inFlight) { state.pending = true; return; }
  send();
}

async function send() {
  state.inFlight = true;
  state.pending = false;
  state.requests += 1;
  const started = performance.now();
  try {
    const result = await getJSON("/api/run?" + query());
    state.result = result;
    $("error").textContent = "";
    $("scrub").max = Math.max(1, result.inspect.update.length);
    draw();
    const computed = result.computed.length ? "recomputed " + result.computed.join(", ") : "all from cache";
    $("status").textContent = `${Math.round(performance.now() - started)} ms (server ${Math.round(result.server_ms)} ms, ${computed})`;
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (error) {
    $("error").textContent = error.message;
  } finally {
    state.inFlight = false;
    if (state.pending) send();
  }
}

function toCanvas(c, x, y) {
  const [x0, x1] = c.x_range, [y0, y1] = c.y_range, canvas = $("contour");
  return [((x - x0) / (x1 - x0)) * canvas.width, (1 - (y - y0) / (y1 - y0)) * canvas.height];
}

function fromCanvas(c, px, py) {
  const [x0, x1] = c.x_range, [y0, y1] = c.y_range, canvas = $("contour");
  return [x0 + (px / canvas.width) * (x1 - x0), y0 + (1 - py / canvas.height) * (y1 - y0)];
}

// The function's grid, drawn once per function into an offscreen canvas (then copied).
function contourImage(c, width, height) {
  const image = document.createElement("canvas");
  image.width = width; image.height = height;
  const ctx = image.getContext("2d");
  const z = c.z, n = z.length, m = z[0].length;
  let lo = Infinity, hi = -Infinity;
  for (const row of z) for (const v of row) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const w = width / m, h = height / n;
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) {
    const t = (z[i][j] - lo) / (hi - lo || 1);
    const g = Math.round(255 - 150 * (1 - t)); // dark in the valleys
    ctx.fillStyle = `rgb(${g},${g},${g})`;
    ctx.fillRect(j * w, height - (i + 1) * h, w + 1, h + 1);
  }
  return image;
}

function draw() {
  const c = state.contour, r = state.result;
  if (!c || !r || r.function !== c.function) return; // a new function's answer is on its way
  const canvas = $("contour"), ctx = canvas.getContext("2d");
  if (!state.contourImage) state.contourImage = contourImage(c, canvas.width, canvas.height);
  ctx.drawImage(state.contourImage, 0, 0);
  for (const [mx, my] of c.minima) {
    const [px, py] = toCanvas(c, mx, my);
    ctx.fillStyle = "gold"; ctx.strokeStyle = "#6b5800"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.arc(px, py, 6, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
  }
  const scrub = Number($("scrub").value);
  const inspected = r.inspect.name;
  const names = Object.keys(r.paths).sort((a, b) => (a === inspected) - (b === inspected));
  for (const name of names) { // the inspected optimizer last, on top
    const path = r.paths[name];
    ctx.strokeStyle = COLORS[name]; ctx.lineWidth = name === inspected ? 3 : 2;
    ctx.setLineDash(DASHED.has(name) ? [7, 4] : []);
    ctx.beginPath();
    path.points.forEach(([x, y], k) => {
      const [px, py] = toCanvas(c, x, y);
      if (k === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    });
    ctx.stroke();
    ctx.setLineDash([]);
    const at = path.points[Math.min(scrub, path.points.length - 1)];
    const [px, py] = toCanvas(c, at[0], at[1]);
    ctx.fillStyle = COLORS[name]; ctx.beginPath(); ctx.arc(px, py, 4.5, 0, 2 * Math.PI); ctx.fill();
  }
  const [sx, sy] = toCanvas(c, r.start[0], r.start[1]);
  ctx.fillStyle = "black"; ctx.fillRect(sx - 4, sy - 4, 8, 8);
  ctx.fillStyle = "rgba(255,255,255,0.85)"; ctx.fillRect(0, 0, canvas.width, 22);
  ctx.fillStyle = "#222"; ctx.font = "12px system-ui";
  ctx.fillText(`${c.function}: ${c.formula}; start ■ (${r.start[0].toFixed(2)}, ${r.start[1].toFixed(2)}) — click or drag to move it; ● minimum`, 6, 15);
  drawLegend(ctx, c, r.paths, canvas);
  drawPanels(scrub);
}

// A path that is not the optimizer's parameter says what it is (Schedule-Free's: its y).
function pathName(name, path) {
  return path.point ? `${name} (${path.point})` : name;
}

// The legend: in two columns past eight paths, in the corner that hides the fewest path points
// and no minimum (top right when that ties).
function drawLegend(ctx, c, paths, canvas) {
  const names = Object.keys(paths);
  if (!names.length) return;
  ctx.font = "12px system-ui";
  const texts = names.map((n) => pathName(n, paths[n]));
  const columns = names.length > 8 ? 2 : 1, rows = Math.ceil(names.length / columns);
  const rowH = 16, colW = 40 + Math.max(...texts.map((t) => ctx.measureText(t).width));
  const boxW = columns * colW, boxH = rows * rowH + 6;
  const corners = [[canvas.width - boxW - 6, 28], [6, 28],
    [canvas.width - boxW - 6, canvas.height - boxH - 6], [6, canvas.height - boxH - 6]];
  const hidden = ([x0, y0]) => {
    const inside = ([x, y]) => { const [px, py] = toCanvas(c, x, y); return px >= x0 && px <= x0 + boxW && py >= y0 && py <= y0 + boxH; };
    let n = 1000 * c.minima.filter(inside).length;
    for (const name of names) n += paths[name].points.filter(inside).length;
    return n;
  };
  const counts = corners.map(hidden);
  const [x0, y0] = corners[counts.indexOf(Math.min(...counts))];
  ctx.fillStyle = "rgba(255,255,255,0.88)"; ctx.strokeStyle = "#999"; ctx.lineWidth = 1;
  ctx.fillRect(x0, y0, boxW, boxH); ctx.strokeRect(x0, y0, boxW, boxH);
  names.forEach((name, k) => {
    const x = x0 + Math.floor(k / rows) * colW, y = y0 + 12 + (k % rows) * rowH;
    ctx.strokeStyle = COLORS[name]; ctx.lineWidth = 3;
    ctx.setLineDash(DASHED.has(name) ? [7, 4] : []);
    ctx.beginPath(); ctx.moveTo(x + 6, y - 4); ctx.lineTo(x + 30, y - 4); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = "#222"; ctx.fillText(texts[k], x + 36, y);
  });
}

// --- the panels: SVG, so that their axes, ticks, zero line and legend are elements ----------

function svg(tag, attrs, parent, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function tickLabel(v) {
  if (v === 0) return "0";
  const a = Math.abs(v), d = Math.round(Math.log10(a));
  const text = d >= -2 && d <= 3 ? String(Number(a.toPrecision(1))) : `1e${d}`;
  return (v < 0 ? "−" : "") + text;
}

function niceStep(range, count) {
  const raw = range / count, p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) || raw;
}

// Symmetric log scale: linear within ±c, logarithmic beyond, so that signs show and values
// of many magnitudes (m̂ in the hundreds, updates of 1e-4) both read. c is four decades below
// the largest magnitude. A scalar series (one number a step) is drawn as one line.
function drawPanel(key, role, rows, symbol, scrub, name, scalar) {
  const holder = $("panel-" + key);
  holder.replaceChildren();
  const { width: W, height: H, left: L, right: R, top: T, bottom: B } = PANEL;
  const root = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, "data-series": key }, holder);
  if (!symbol || !rows.some((p) => p !== null)) { // a step may lack it (ADOPT's first), not all
    root.dataset.empty = "1";
    svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, root, `${name} keeps no ${role.split(" (")[0]}`);
    return;
  }
  const data = scalar ? rows.map((v) => (v === null ? null : [v])) : rows;
  const coords = scalar ? SCALAR : COORDS;
  root.dataset.label = symbol;
  const lines = scalar ? "one line, the same for x and y" : "x solid and y dashed";
  svg("title", {}, root, `${symbol} of ${name} per step, ${lines}, on a symmetric log scale: linear near 0, logarithmic beyond`);
  let top = 0;
  for (const p of data) if (p) for (const v of p) if (v !== null && Math.abs(v) > top) top = Math.abs(v);
  const c = top > 0 ? top * 1e-4 : 1;
  const sl = (v) => Math.sign(v) * Math.log10(1 + Math.abs(v) / c);
  let lo = 0, hi = 0; // the range always holds 0: the zero line is the baseline
  for (const p of data) if (p) for (const v of p) if (v !== null) { lo = Math.min(lo, sl(v)); hi = Math.max(hi, sl(v)); }
  if (hi - lo < 1e-12) { lo -= 1; hi += 1; }
  const n = data.length;
  const X = (k) => L + (k / Math.max(1, n - 1)) * (W - L - R); // k: 0-based step index
  const Y = (v) => H - B - ((sl(v) - lo) / (hi - lo)) * (H - B - T);
  // y ticks: 0 and ±powers of ten inside the range, at least 13 px apart, largest first
  const axes = svg("g", { class: "axes" }, root);
  const yTicks = svg("g", { class: "ticks y-ticks" }, axes);
  const candidates = [0];
  for (let d = Math.floor(Math.log10(c)); d <= Math.ceil(Math.log10(top || 1)); d++) candidates.push(10 ** d, -(10 ** d));
  const kept = [];
  for (const v of candidates.filter((v) => sl(v) >= lo - 1e-9 && sl(v) <= hi + 1e-9).sort((a, b) => (a === 0 ? -1 : b === 0 ? 1 : Math.abs(b) - Math.abs(a)))) {
    if (kept.every((u) => Math.abs(Y(u) - Y(v)) >= 13)) kept.push(v);
  }
  for (const v of kept) {
    const g = svg("g", { class: "tick", "data-value": v }, yTicks);
    svg("line", { x1: L - 4, x2: L, y1: Y(v), y2: Y(v), stroke: "#666" }, g);
    svg("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: "#eee" }, g);
    svg("text", { x: L - 6, y: Y(v) + 3.5, "text-anchor": "end" }, g, tickLabel(v));
  }
  // x ticks: steps 1..n at round numbers
  const xTicks = svg("g", { class: "ticks x-ticks" }, axes);
  const every = niceStep(Math.max(1, n - 1), 5);
  for (let s = 1; s <= n; s = s === 1 && every > 1 ? every : s + every) {
    const g = svg("g", { class: "tick", "data-value": s }, xTicks);
    svg("line", { x1: X(s - 1), x2: X(s - 1), y1: H - B, y2: H - B + 4, stroke: "#666" }, g);
    svg("text", { x: X(s - 1), y: H - B + 14, "text-anchor": "middle" }, g, String(s));
  }
  svg("line", { class: "axis y-axis", x1: L, x2: L, y1: T, y2: H - B, stroke: "#444" }, axes);
  svg("line", { class: "axis x-axis", x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#444" }, axes);
  svg("line", { class: "zero", x1: L, x2: W - R, y1: Y(0), y2: Y(0), stroke: "#999", "stroke-dasharray": "2 2" }, axes);
  svg("text", { class: "axis-label x-label", x: W - R, y: H - 3, "text-anchor": "end" }, axes, "step");
  svg("text", { class: "axis-label y-label", x: 4, y: T - 5 }, axes, `${symbol}  (symlog)`);
  // the lines, broken where a value is missing (a diverged step)
  for (const [coord, color, dash] of coords) {
    const i = coord === "y" ? 1 : 0;
    let d = "", pen = false;
    data.forEach((p, k) => {
      const v = p ? p[i] : null;
      if (v === null) { pen = false; return; }
      d += `${pen ? "L" : "M"}${X(k).toFixed(1)},${Y(v).toFixed(1)}`;
      pen = true;
    });
    svg("path", { class: "series", "data-coord": coord, d, fill: "none", stroke: color, "stroke-width": 1.5, "stroke-dasharray": dash }, root);
  }
  svg("line", { class: "scrub", x1: X(scrub - 1), x2: X(scrub - 1), y1: T, y2: H - B, stroke: COLORS[name] || "#888" }, root);
  // legend: which line is which coordinate
  const legend = svg("g", { class: "legend" }, root);
  coords.forEach(([coord, color, dash], k) => {
    const x = W - R - 78 + k * 40;
    const entry = svg("g", { class: "legend-entry", "data-coord": coord }, legend);
    svg("line", { x1: x, x2: x + 18, y1: T - 8, y2: T - 8, stroke: color, "stroke-width": 1.5, "stroke-dasharray": dash }, entry);
    svg("text", { x: x + 21, y: T - 4.5 }, entry, coord);
  });
}

// The inspected optimizer's panels: the four every optimizer has, then its own extra series
// (rebuilt when another optimizer with other extras is inspected), each with its table row.
function drawPanels(scrub) {
  const ins = state.result.inspect;
  const panels = $("panels");
  const holder = (key) => `<div class="panel"><div class="panel-title" id="title-${key}"></div>
      <div id="panel-${key}"></div></div>`;
  if (!panels.children.length) panels.innerHTML = SERIES.map(([key]) => holder(key)).join("");
  const extras = ins.extras || [];
  const extraKeys = extras.map((e) => e.key).join(",");
  if (state.extraKeys !== extraKeys) {
    state.extraKeys = extraKeys;
    for (const node of [...panels.querySelectorAll(".panel.extra")]) node.remove();
    panels.insertAdjacentHTML("beforeend", extras.map((e) => holder(e.key).replace('"panel"', '"panel extra"')).join(""));
    $("extra-rows").innerHTML = extras.map((e) => e.scalar
      ? `<tr><td id="label-${e.key}"></td><td id="${e.key}-x" colspan="2"></td></tr>`
      : `<tr><td id="label-${e.key}"></td><td id="${e.key}-x"></td><td id="${e.key}-y"></td></tr>`).join("");
  }
  const all = [
    ...SERIES.map(([key, role]) => ({ key, role: (ins.roles || {})[key] || role, label: ins.labels[key], data: ins[key], scalar: false })),
    ...extras,
  ];
  for (const { key, role, label, data, scalar } of all) {
    $("title-" + key).innerHTML = label
      ? `${role}: <span class="symbol">${label}</span> of ${ins.name}`
      : `${role}: none in ${ins.name}`;
    $("label-" + key).textContent = label || "–";
    const at = data[scrub - 1];
    if (scalar) {
      $(key + "-x").textContent = fmt(at);
    } else {
      $(key + "-x").textContent = at ? fmt(at[0]) : "–";
      $(key + "-y").textContent = at ? fmt(at[1]) : "–";
    }
    drawPanel(key, role, data, label, scrub, ins.name, scalar);
  }
}

async function loadFunction() {
  state.contour = await getJSON("/api/contour?function=" + $("function").value);
  state.contourImage = null;
  state.start = null;
  $("lrs").innerHTML = state.optimizers.map((n) => lrSlider(n, state.contour.lrs[n], state.contour.lr_symbols[n])).join("");
  for (const n of state.optimizers) $("lr_" + n).addEventListener("input", update);
  update();
}

async function main() {
  const meta = await getJSON("/api/functions");
  state.optimizers = meta.optimizers;
  $("function").innerHTML = meta.functions.map((f) => `<option>${f}</option>`).join("");
  $("inspect").innerHTML = meta.optimizers.map((n) => `<option ${n === "Adam" ? "selected" : ""}>${n}</option>`).join("");
  $("show").innerHTML = meta.optimizers.map((n) => `<label style="color:${COLORS[n]}"><input type="checkbox" id="show_${n}" checked> ${n}</label>`).join("");
  for (const id of ["beta1", "beta2", "eps", "beta3", "alpha", "weight_decay", "bias_correction", "steps", "inspect", ...meta.optimizers.map((n) => "show_" + n)]) $(id).addEventListener("input", update);
  $("scrub").addEventListener("input", () => { showValues(); draw(); });
  $("function").addEventListener("change", loadFunction);
  let dragging = false;
  const move = (event) => {
    const rect = $("contour").getBoundingClientRect();
    state.start = fromCanvas(state.contour, event.clientX - rect.left, event.clientY - rect.top);
    update();
  };
  $("contour").addEventListener("mousedown", (e) => { dragging = true; move(e); });
  $("contour").addEventListener("mousemove", (e) => { if (dragging) move(e); });
  window.addEventListener("mouseup", () => { dragging = false; });
  await loadFunction();
}

main().catch((error) => { $("error").textContent = error.message; });
