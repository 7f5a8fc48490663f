// The explorer page: controls, drawing, and requests. No math of the optimizers here: every
// number is the server's (adamkit's NumPy reference); this file only draws what it returns.
"use strict";
const COLORS = { SGD: "#1f77b4", Momentum: "#2ca02c", RMSProp: "#ff7f0e", Adam: "#d62728" };
const SERIES = [
  ["m_hat", "m̂ (direction and push)"],
  ["sqrt_v_hat", "√v̂ (per-coordinate scale)"],
  ["effective_lr", "effective lr α/(√v̂+ε)"],
  ["update", "update per coordinate"],
];
const $ = (id) => document.getElementById(id);
const state = { contour: null, result: null, start: null, request: 0, optimizers: [] };
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

function lrSlider(name, value) {
  const id = "lr_" + name;
  const log = Math.log10(value);
  return `<label for="${id}">α ${name} (log) <span class="value" id="${id}-value"></span></label>
    <input type="range" id="${id}" min="${(log - 2).toFixed(1)}" max="${(log + 2).toFixed(1)}"
      step="0.05" value="${log}">`;
}

function query() {
  const q = new URLSearchParams();
  q.set("function", $("function").value);
  for (const name of state.optimizers) q.set("lr_" + name, (10 ** Number($("lr_" + name).value)).toPrecision(6));
  q.set("beta1", $("beta1").value);
  q.set("beta2", $("beta2").value);
  q.set("eps", (10 ** Number($("eps").value)).toPrecision(6));
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
  $("steps-value").textContent = $("steps").value;
  $("scrub-value").textContent = $("scrub").value;
}

async function update() {
  showValues();
  const id = ++state.request;
  const started = performance.now();
  try {
    const result = await getJSON("/api/run?" + query());
    if (id !== state.request) return; // a newer setting is on its way
    state.result = result;
    $("error").textContent = "";
    $("scrub").max = Math.max(1, result.inspect.update.length);
    draw();
    $("status").textContent = `computed and drawn in ${Math.round(performance.now() - started)} ms`;
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (error) {
    $("error").textContent = error.message;
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

function drawContour(ctx, c) {
  const z = c.z, n = z.length, m = z[0].length;
  let lo = Infinity, hi = -Infinity;
  for (const row of z) for (const v of row) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const w = ctx.canvas.width / m, h = ctx.canvas.height / n;
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) {
    const t = (z[i][j] - lo) / (hi - lo || 1);
    const g = Math.round(255 - 150 * (1 - t)); // dark in the valleys
    ctx.fillStyle = `rgb(${g},${g},${g})`;
    ctx.fillRect(j * w, ctx.canvas.height - (i + 1) * h, w + 1, h + 1);
  }
  for (const [mx, my] of c.minima) {
    const [px, py] = toCanvas(c, mx, my);
    ctx.fillStyle = "gold"; ctx.beginPath(); ctx.arc(px, py, 6, 0, 2 * Math.PI); ctx.fill();
  }
}

function draw() {
  const c = state.contour, r = state.result;
  if (!c || !r) return;
  const ctx = $("contour").getContext("2d");
  drawContour(ctx, c);
  const scrub = Number($("scrub").value);
  for (const [name, path] of Object.entries(r.paths)) {
    ctx.strokeStyle = COLORS[name]; ctx.lineWidth = name === "Adam" ? 1.5 : 2.5;
    ctx.beginPath();
    path.points.forEach(([x, y], k) => {
      const [px, py] = toCanvas(c, x, y);
      if (k === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    });
    ctx.stroke();
    const at = path.points[Math.min(scrub, path.points.length - 1)];
    const [px, py] = toCanvas(c, at[0], at[1]);
    ctx.fillStyle = COLORS[name]; ctx.beginPath(); ctx.arc(px, py, 4, 0, 2 * Math.PI); ctx.fill();
  }
  const [sx, sy] = toCanvas(c, r.start[0], r.start[1]);
  ctx.fillStyle = "black"; ctx.fillRect(sx - 4, sy - 4, 8, 8);
  ctx.fillStyle = "#222"; ctx.font = "12px system-ui";
  ctx.fillText(`${c.function}: ${c.formula}; start (${r.start[0].toFixed(2)}, ${r.start[1].toFixed(2)}) — click or drag to move it`, 8, 16);
  drawPanels(scrub);
}

function drawPanels(scrub) {
  const ins = state.result.inspect;
  const panels = $("panels");
  if (!panels.children.length) {
    panels.innerHTML = SERIES.map(([key, title]) => `<div class="panel"><div>${title}</div>
      <canvas id="panel-${key}" width="330" height="150"></canvas></div>`).join("");
  }
  for (const [key] of SERIES) {
    const data = ins[key];
    const canvas = $("panel-" + key), ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const at = data[scrub - 1];
    $(key + "-x").textContent = at ? fmt(at[0]) : "–";
    $(key + "-y").textContent = at ? fmt(at[1]) : "–";
    if (!data.length || data[0] === null) { ctx.fillText(`${ins.name} has no ${key}`, 10, 20); continue; }
    // symmetric log scale: sign shows, small and large values both visible
    const sl = (v) => Math.sign(v) * Math.log10(1 + Math.abs(v) / 1e-6);
    let lo = Infinity, hi = -Infinity;
    for (const p of data) for (const v of p) if (v !== null) { lo = Math.min(lo, sl(v)); hi = Math.max(hi, sl(v)); }
    const X = (k) => (k / Math.max(1, data.length - 1)) * (canvas.width - 10) + 5;
    const Y = (v) => canvas.height - 5 - ((sl(v) - lo) / (hi - lo || 1)) * (canvas.height - 10);
    [[0, ins.name === "Adam" ? COLORS.Adam : "#333"], [1, "#9467bd"]].forEach(([coord, color]) => {
      ctx.strokeStyle = color; ctx.beginPath();
      data.forEach((p, k) => { if (p[coord] === null) return; k ? ctx.lineTo(X(k), Y(p[coord])) : ctx.moveTo(X(k), Y(p[coord])); });
      ctx.stroke();
    });
    ctx.strokeStyle = "#888"; ctx.beginPath(); ctx.moveTo(X(scrub - 1), 0); ctx.lineTo(X(scrub - 1), canvas.height); ctx.stroke();
  }
}

async function loadFunction() {
  state.contour = await getJSON("/api/contour?function=" + $("function").value);
  state.start = null;
  $("lrs").innerHTML = state.optimizers.map((n) => lrSlider(n, state.contour.lrs[n])).join("");
  for (const n of state.optimizers) $("lr_" + n).addEventListener("input", update);
  await update();
}

async function main() {
  const meta = await getJSON("/api/functions");
  state.optimizers = meta.optimizers;
  $("function").innerHTML = meta.functions.map((f) => `<option>${f}</option>`).join("");
  $("inspect").innerHTML = meta.optimizers.map((n) => `<option ${n === "Adam" ? "selected" : ""}>${n}</option>`).join("");
  $("show").innerHTML = meta.optimizers.map((n) => `<label style="color:${COLORS[n]}"><input type="checkbox" id="show_${n}" checked> ${n}</label>`).join("");
  for (const id of ["beta1", "beta2", "eps", "bias_correction", "steps", "inspect", ...meta.optimizers.map((n) => "show_" + n)]) $(id).addEventListener("input", update);
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
