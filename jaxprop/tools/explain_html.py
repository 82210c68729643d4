"""``jaxprop explain --html``: one self-contained page that walks through backpropagation.

:func:`render_html` embeds the view of a trace (:func:`jaxprop.tools.explain_view.view`, JSON)
in a page with inline SVG, CSS and JavaScript (no network access, no external fonts): the
network as the articles draw it, and a step control (Prev/Next, the arrow keys, and a slider
over the training steps beside a loss curve) that walks the forward pass unit by unit, the
loss, the backward pass unit by unit with the chain rule written out, and the update. The
page formats the numbers it is given (6 decimals) and computes none. A URL fragment such as
``#step=3&phase=5&example=1`` (1-based step and phase, 0-based example) opens that view; the
page keeps its fragment up to date.
"""

from __future__ import annotations

import html
import json

from jaxprop.tools.explain_view import table_view, view


def render_html(spec, result: dict) -> str:
    """The page for ``result`` (from ``explain(spec)``) as one HTML string: the network, or
    for a :class:`~jaxprop.tools.explain.TableSpec` a table of values per layer."""
    from jaxprop.tools.explain import TableSpec

    tables = isinstance(spec, TableSpec)
    v = table_view(spec, result) if tables else view(spec, result)
    data = json.dumps(v, separators=(",", ":")).replace("</", "<\\/")
    title = html.escape(v["description"] or "a worked example")
    template, js = (_TABLE_TEMPLATE, _TABLE_JS) if tables else (_TEMPLATE, _JS)
    js = _COMMON_JS + js + _STEPPER_JS  # the stepper's functions are hoisted
    return (template.replace("%TITLE%", title).replace("%CSS%", _CSS)
            .replace("%JS%", js).replace("%DATA%", data))


# the page around either drawing: title, step controls (%NAV%: more of them), the data, the script
_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>jaxprop explain: %TITLE%</title>
<style>%CSS%</style>
</head>
<body>
<header><h1>jaxprop explain</h1><p id="description">%TITLE%</p><p id="settings"></p></header>
<nav id="controls">
  <button id="prev" title="previous (←)">◀ Prev</button>
  <button id="next" title="next (→)">Next ▶</button>
  <span id="where"></span>
%NAV%</nav>
<div id="stepbar"><label for="slider">training step <b id="stepno"></b></label>
  <input id="slider" type="range" min="0" value="0"><span id="kept"></span></div>
"""
_TAIL = """<script type="application/json" id="data">%DATA%</script>
<script>%JS%</script>
</body>
</html>
"""

_TEMPLATE = _HEAD.replace("%NAV%", """  <span id="examples"></span>
""") + """<main>
  <section id="figure"><svg id="net" role="img" aria-label="the network"></svg></section>
  <aside>
    <div id="explain"></div>
    <svg id="curve" role="img" aria-label="the loss per step"></svg>
  </aside>
</main>
<section id="tables"></section>
<footer>delta = ∂L/∂z, as jaxprop computes it<span id="signnote">; textbooks that write
δ = (t − y)·f′(z) for sse_half use the opposite sign (shown as “textbook δ”) and update
w += η·δ·a</span>. Update: w ← w − η·∂L/∂w. Weights: blue positive, red negative, thickness by
size.</footer>
""" + _TAIL

_CSS = """
:root { --ink:#1f2937; --mute:#6b7280; --pos:#2563eb; --neg:#dc2626; --hi:#f59e0b;
  --fwd:#0f766e; --bwd:#7c3aed; --bg:#ffffff; --panel:#f8fafc; }
* { box-sizing: border-box; }
body { margin: 0; padding: 16px 24px; color: var(--ink); background: var(--bg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
h1 { font-size: 20px; margin: 0; }
header p { margin: 2px 0; color: var(--mute); }
.num, td, th, #explain .eq { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
nav, #stepbar { display: flex; gap: 10px; align-items: center; margin: 10px 0 4px; flex-wrap: wrap; }
button { font: inherit; padding: 4px 12px; border: 1px solid #cbd5e1; border-radius: 6px;
  background: #fff; cursor: pointer; }
button:hover { background: #f1f5f9; } button.on { background: var(--ink); color: #fff; }
#where { font-weight: 600; }
#slider { width: 320px; }
main { display: flex; gap: 18px; align-items: flex-start; flex-wrap: wrap; }
#figure { flex: 0 0 auto; background: var(--panel); border-radius: 10px; padding: 6px; }
aside { flex: 1 1 340px; min-width: 320px; }
#explain { background: var(--panel); border-radius: 10px; padding: 10px 14px; }
#explain h2 { font-size: 16px; margin: 0 0 6px; }
#explain .eq { font-size: 13.5px; margin: 4px 0; white-space: pre-wrap; }
#explain .fwd { color: var(--fwd); } #explain .bwd { color: var(--bwd); }
#curve { margin-top: 10px; }
svg text { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
#tables { display: flex; gap: 18px; flex-wrap: wrap; margin-top: 14px; align-items: flex-start; }
table { border-collapse: collapse; font-size: 12.5px; }
caption { text-align: left; font-weight: 600; padding: 2px 0; font-family: system-ui, sans-serif; }
th, td { padding: 2px 8px; text-align: right; border-bottom: 1px solid #e5e7eb; }
th { color: var(--mute); font-weight: 500; }
.layer { display: flex; flex-direction: column; gap: 10px; }
tr.focus td { background: #fef3c7; }
footer { color: var(--mute); font-size: 13px; margin-top: 14px; max-width: 1100px; }
"""

# both pages start alike: the data and two formatters
_COMMON_JS = r"""
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const f6 = v => v.toFixed(6);
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
"""

# both pages step alike: phases within a training step, the slider over the steps, the buttons,
# the arrow keys and the URL fragment (each page defines S, PHASES, draw and readHash)
_STEPPER_JS = r"""
function readStepHash() {  // #step=N&phase=P: the kept step nearest N
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.has("step")) {
    const want = Math.max(1, parseInt(h.get("step"), 10) || 1) - 1;
    let best = 0;
    D.steps.forEach((st, i) => { if (Math.abs(st.step - want) < Math.abs(D.steps[best].step - want)) best = i; });
    S.si = best;
  }
  if (h.has("phase")) S.p = Math.min(PHASES.length, Math.max(1, parseInt(h.get("phase"), 10) || 1)) - 1;
  return h;
}
function move(d) {
  let p = S.p + d;
  if (p >= PHASES.length && S.si < D.steps.length - 1) { S.si++; p = 0; }
  else if (p < 0 && S.si > 0) { S.si--; p = PHASES.length - 1; }
  S.p = Math.min(PHASES.length - 1, Math.max(0, p)); draw();
}
function setupStepper() {
  const slider = document.getElementById("slider");
  if (D.steps.length > 1) {
    slider.max = D.steps.length - 1;
    slider.addEventListener("input", () => { S.si = +slider.value; draw(); });
    if (D.steps.length < D.n_steps) document.getElementById("kept").textContent =
      `(${D.steps.length} of the ${D.n_steps} steps kept, evenly spaced)`;
  } else document.getElementById("stepbar").style.display = "none";
  document.getElementById("prev").addEventListener("click", () => move(-1));
  document.getElementById("next").addEventListener("click", () => move(1));
  document.addEventListener("keydown", ev => {
    if (ev.target === slider) return;
    if (ev.key === "ArrowRight") { move(1); ev.preventDefault(); }
    if (ev.key === "ArrowLeft") { move(-1); ev.preventDefault(); }
  });
  window.addEventListener("hashchange", () => { readHash(); draw(); });
}
"""

_JS = r"""
const L = D.widths.length - 1;             // number of Dense layers
const fm = v => v < 0 ? `(${f6(v)})` : f6(v);   // a factor of a product
const nameOf = (k, j) => D.names[k][j];    // k = 0 inputs, k = l + 1 layer l's units
const coupled = r => Array.isArray(r.dadz[0][0]);   // dadz the Jacobian (softmax), not f′(z)
if (!D.article_sign) document.getElementById("signnote").remove();

// the walk through one training step
const PHASES = [{kind: "start"}];
for (let l = 0; l < L; l++) for (let j = 0; j < D.widths[l + 1]; j++) PHASES.push({kind: "fwd", l, j});
PHASES.push({kind: "loss"});
for (let l = L - 1; l >= 0; l--) for (let j = 0; j < D.widths[l + 1]; j++) PHASES.push({kind: "bwd", l, j});
PHASES.push({kind: "update"});

const S = {si: 0, p: 0, e: 0};
let wmax = 1e-12;
for (const st of D.steps) for (const r of st.layers) for (const M of [r.W_before, r.W_after])
  for (const row of M) for (const w of row) wmax = Math.max(wmax, Math.abs(w));

function readHash() {
  const h = readStepHash();
  if (h.has("example")) S.e = Math.min(D.input.length - 1, Math.max(0, parseInt(h.get("example"), 10) || 0));
}
function writeHash() {
  const h = `#step=${D.steps[S.si].step + 1}&phase=${S.p + 1}&example=${S.e}`;
  if (location.hash !== h) history.replaceState(null, "", h);
}

// how far the walk has come: forward values shown up to the focus, backward from the end
function order(ph) { return PHASES.indexOf(ph); }
function fwdDone(l, j) { const i = PHASES.findIndex(q => q.kind === "fwd" && q.l === l && q.j === j); return S.p >= i; }
function bwdDone(l, j) { const i = PHASES.findIndex(q => q.kind === "bwd" && q.l === l && q.j === j); return S.p >= i; }

// ---- geometry --------------------------------------------------------------------------
const R = 25, COLW = 245, ROWH = 150, TOP = 46, LEFT = 70;
const maxW = Math.max(...D.widths);
const H = TOP + maxW * ROWH + 10, W = LEFT + L * COLW + 170;
function pos(k, j) {
  const n = D.widths[k];
  return [LEFT + k * COLW, TOP + (maxW - n) * ROWH / 2 + j * ROWH + R + 8];
}
function wstyle(w) {
  const t = Math.abs(w) / wmax;
  return `stroke:${w >= 0 ? "var(--pos)" : "var(--neg)"};stroke-width:${(1 + 7 * t).toFixed(2)};stroke-opacity:${(0.35 + 0.5 * t).toFixed(2)}`;
}
function label(x, y, text, cls, anchor) {
  const wch = 7.3 * text.length + 8;
  const x0 = anchor === "end" ? x - wch : anchor === "middle" ? x - wch / 2 : x;
  return `<rect x="${x0}" y="${y - 12}" width="${wch}" height="17" rx="4" class="lb ${cls}"/>` +
    `<text x="${x0 + 4}" y="${y + 1}" class="${cls}">${esc(text)}</text>`;
}

function drawNet() {
  const st = D.steps[S.si], ph = PHASES[S.p], e = S.e;
  const upd = ph.kind === "update";
  let edges = "", nodes = "", labels = "";
  for (let l = 0; l < L; l++) {
    const r = st.layers[l], M = upd ? r.W_after : r.W_before;
    for (let i = 0; i < D.widths[l]; i++) for (let j = 0; j < D.widths[l + 1]; j++) {
      const [x1, y1] = pos(l, i), [x2, y2] = pos(l + 1, j);
      const focus = (ph.kind === "fwd" || ph.kind === "bwd") && ph.l === l && ph.j === j;
      // in a backward step the edges that carry the next layer's deltas back to the focus
      const back = ph.kind === "bwd" && ph.l === l - 1 && ph.j === i;
      edges += `<line x1="${x1 + R}" y1="${y1}" x2="${x2 - R}" y2="${y2}" style="${wstyle(M[i][j])}" class="${focus ? "fe" : back ? "be" : ""}"/>`;
      // every edge labelled in a small layer; in a crowded one only the edges in focus
      const crowded = D.widths[l] * D.widths[l + 1] > 6;
      const t = focus ? 0.36 : 0.30 + 0.12 * (j % 3) / Math.max(1, D.widths[l + 1] - 1);
      const lx = x1 + R + (x2 - x1 - 2 * R) * t, ly = y1 + (y2 - y1) * t;
      let txt = crowded ? "" : "w " + f6(M[i][j]), cls = "ew";
      if (focus && ph.kind === "fwd") { txt = "w·a " + f6(r.terms[e][i][j]); cls = "ew fx"; }
      if (focus && ph.kind === "bwd") { txt = "∂L/∂w " + f6(r.dW[i][j]); cls = "ew bx"; }
      if (upd && !crowded) { txt = f6(r.W_before[i][j]) + "→" + f6(r.W_after[i][j]); cls = "ew ux"; }
      if (txt) labels += label(lx, ly + 4, txt, cls, "middle");
    }
  }
  for (let k = 0; k <= L; k++) for (let j = 0; j < D.widths[k]; j++) {
    const [x, y] = pos(k, j);
    let cls = "node", lines = [];
    if (k === 0) lines.push(["x = " + f6(D.input[e][j]), "in"]);
    else {
      const l = k - 1, r = st.layers[l];
      const focus = (ph.kind === "fwd" || ph.kind === "bwd") && ph.l === l && ph.j === j;
      if (focus) cls += ph.kind === "fwd" ? " ffocus" : " bfocus";
      if (fwdDone(l, j)) { lines.push(["z = " + f6(r.z[e][j]), "fv"]); lines.push(["a = " + f6(r.a[e][j]), "fv"]); }
      if (k === L && S.p >= order(PHASES.find(q => q.kind === "loss"))) lines.push(["t = " + f6(D.target[e][j]), "in"]);
      if (bwdDone(l, j)) { lines.push(["∂L/∂a = " + f6(r.da[e][j]), "bv"]); lines.push(["δ = " + f6(r.delta[e][j]), "bv"]); }
      if (upd && D.update_biases) lines.push(["b " + f6(r.b_before[j]) + "→" + f6(r.b_after[j]), "ux"]);
    }
    nodes += `<circle cx="${x}" cy="${y}" r="${R}" class="${cls}"/>` +
      `<text x="${x}" y="${y + 5}" text-anchor="middle" class="nm">${esc(nameOf(k, j))}</text>`;
    lines.forEach(([s, c], n) => { labels += label(x, y + R + 17 + n * 18, s, c, "middle"); });
  }
  const heads = ["inputs"].concat(D.activations.map((a, l) => `layers[${l}] ${a}`));
  const cols = heads.map((h, k) => `<text x="${LEFT + k * COLW}" y="20" text-anchor="middle" class="hd">${esc(h)}</text>`).join("");
  let lossbox = "";
  if (S.p >= order(PHASES.find(q => q.kind === "loss"))) {
    const [x, y] = pos(L, 0);
    lossbox = label(x + R + 22, y - R - 10, "L = " + f6(st.loss), "lossv", "start");
  }
  const svg = document.getElementById("net");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("width", W); svg.setAttribute("height", H);
  svg.innerHTML = `<style>
    .node{fill:#fff;stroke:#334155;stroke-width:2}.ffocus{fill:#ccfbf1;stroke:var(--fwd);stroke-width:4}
    .bfocus{fill:#ede9fe;stroke:var(--bwd);stroke-width:4}.nm{font-size:15px;font-weight:700;fill:#0f172a}
    .hd{font-size:13px;fill:var(--mute);font-family:system-ui,sans-serif}
    .lb{fill:#fff;fill-opacity:.9;stroke:#e2e8f0}text.ew{font-size:11.5px;fill:#475569}
    text.fx{fill:var(--fwd);font-weight:700}text.bx{fill:var(--bwd);font-weight:700}text.ux{fill:#b45309}
    text.fv{font-size:12px;fill:var(--fwd)}text.bv{font-size:12px;fill:var(--bwd)}text.in{font-size:12px;fill:#0f172a}
    text.lossv{font-size:13px;font-weight:700;fill:#b91c1c}line.fe{stroke:var(--hi)!important;stroke-opacity:1!important}line.be{stroke:var(--bwd)!important;stroke-opacity:.9!important;stroke-dasharray:8 4}
    text{font-size:12px}</style>` + cols + edges + nodes + labels + lossbox;
}

// ---- the explanation of the phase ------------------------------------------------------
function prevA(l, e) { return l === 0 ? D.input[e] : D.steps[S.si].layers[l - 1].a[e]; }
function eq(s, cls) { return `<div class="eq ${cls || ""}">${esc(s)}</div>`; }
function drawExplain() {
  const st = D.steps[S.si], ph = PHASES[S.p], e = S.e, el = document.getElementById("explain");
  const batch = D.input.length, ex = batch > 1 ? ` (example ${e})` : "";
  let h = "";
  if (ph.kind === "start") {
    h = `<h2>Step ${st.step + 1}: the network before the step</h2>` +
      eq(`inputs${ex}: ` + D.input[e].map(f6).join(", ")) + eq("targets: " + D.target[e].map(f6).join(", ")) +
      eq(`loss ${D.loss}, learning rate η = ${D.learning_rate}, biases ${D.update_biases ? "updated" : "fixed"}`) +
      eq("Next ▶ runs the forward pass one unit at a time.");
  } else if (ph.kind === "fwd") {
    const r = st.layers[ph.l], j = ph.j, n = nameOf(ph.l + 1, j), a = prevA(ph.l, e);
    const terms = a.map((x, i) => `${fm(r.W_before[i][j])}·${fm(x)}`).join(" + ");
    h = `<h2 class="fwd">Forward: unit ${esc(n)}${esc(ex)}</h2>` +
      eq(`z_${n} = Σᵢ wᵢ·aᵢ + b`, "fwd") + eq(`     = ${terms} + ${fm(r.b_before[j])}`) +
      eq(`     = ${f6(r.z[e][j])}`, "fwd") +
      eq(`a_${n} = ${D.activations[ph.l]}(z_${n}) = ${f6(r.a[e][j])}`, "fwd") +
      eq("on the edges: each term w·a of the sum");
  } else if (ph.kind === "loss") {
    const r = st.layers[L - 1];
    h = `<h2>Loss</h2>` + eq(`L = ${D.loss}(y, t) = ${f6(st.loss)}` + (batch > 1 ? ` over ${batch} examples` : "")) +
      D.names[L].map((n, j) => eq(`${n}: y = ${f6(r.a[e][j])}, t = ${f6(D.target[e][j])}, ∂L/∂${n} = ${f6(r.da[e][j])}`)).join("") +
      eq("Next ▶ runs the backward pass from the outputs.");
  } else if (ph.kind === "bwd") {
    const r = st.layers[ph.l], j = ph.j, n = nameOf(ph.l + 1, j), a = prevA(ph.l, e);
    h = `<h2 class="bwd">Backward: unit ${esc(n)}${esc(ex)}</h2>`;
    if (ph.l === L - 1) h += eq(`∂L/∂a_${n} = ${f6(r.da[e][j])}   (the loss gradient)`, "bwd");
    else {
      const nx = st.layers[ph.l + 1];
      const parts = nx.delta[e].map((d, k) => `${fm(nx.W_before[j][k])}·${fm(d)}`).join(" + ");
      h += eq(`∂L/∂a_${n} = Σₖ w_${n}ₖ·δₖ = ${parts}`, "bwd") + eq(`        = ${f6(r.da[e][j])}`, "bwd") +
        eq("(the dashed edges carry the deltas back)");
    }
    const act = D.activations[ph.l];
    if (coupled(r)) {   // each a depends on every z of the layer: the Jacobian's column j
      const parts = r.da[e].map((d, k) => `${fm(d)}·${fm(r.dadz[e][k][j])}`).join(" + ");
      h += eq(`δ_${n} = ∂L/∂z_${n} = Σₖ ∂L/∂aₖ · ∂aₖ/∂z_${n}   (${act} couples the units)`, "bwd") +
        eq(`     = ${parts}`) + eq(`     = ${f6(r.delta[e][j])}`, "bwd");
    } else {
      h += eq(`δ_${n} = ∂L/∂z = ∂L/∂a · ${act}′(z)`, "bwd") +
        eq(`     = ${fm(r.da[e][j])} · ${act}′(${f6(r.z[e][j])})`) +
        eq(`     = ${fm(r.da[e][j])} · ${fm(r.dadz[e][j])} = ${f6(r.delta[e][j])}`, "bwd");
    }
    if (D.article_sign) h += eq(`textbook δ_${n} = −∂L/∂z = ${f6(-r.delta[e][j])}`);
    const names = D.names[ph.l];
    h += names.map((m, i) => eq(`∂L/∂w_${m}→${n} = ` + (batch > 1 ? `Σₑ a_${m}·δ_${n} over ${batch} examples = ` :
      `a_${m}·δ_${n} = ${fm(a[i])}·${fm(r.delta[e][j])} = `) + f6(r.dW[i][j]))).join("") +
      eq(`∂L/∂b_${n} = ${batch > 1 ? "Σₑ δ = " : "δ = "}${f6(r.db[j])}`);
  } else {
    h = `<h2>Update: w ← w − η·∂L/∂w, η = ${D.learning_rate}</h2>`;
    st.layers.forEach((r, l) => r.W_before.forEach((row, i) => row.forEach((w, j) => {
      h += eq(`w_${nameOf(l, i)}→${nameOf(l + 1, j)}: ${f6(w)} − ${D.learning_rate}·${fm(r.dW[i][j])} = ${f6(r.W_after[i][j])}`);
    })));
    h += eq(D.update_biases ? "biases updated the same way" : "biases fixed (their gradients not applied)") +
      eq(`loss ${f6(st.loss)} → ${f6(st.loss_after)}`);
  }
  el.innerHTML = h;
}

// ---- the tables of the step (every number of the text tables) -------------------------
function drawTables() {
  const st = D.steps[S.si], ph = PHASES[S.p], e = S.e;
  let h = "";
  st.layers.forEach((r, l) => {
    h += `<div class="layer"><table><caption>layers[${l}] ${esc(D.activations[l])}, step ${st.step + 1}${D.input.length > 1 ? ", example " + e : ""}</caption>` +
      "<tr><th>unit</th><th>z</th><th>a</th><th>∂L/∂a</th>" + (coupled(r) ? "" : "<th>∂a/∂z</th>") +
      "<th>δ = ∂L/∂z</th>" + (D.article_sign ? "<th>textbook δ</th>" : "") + "</tr>";
    r.z[e].forEach((_, j) => {
      const f = (ph.kind === "fwd" || ph.kind === "bwd") && ph.l === l && ph.j === j;
      h += `<tr class="${f ? "focus" : ""}"><td>${esc(nameOf(l + 1, j))}</td><td>${f6(r.z[e][j])}</td><td>${f6(r.a[e][j])}</td>` +
        `<td>${f6(r.da[e][j])}</td>` + (coupled(r) ? "" : `<td>${f6(r.dadz[e][j])}</td>`) +
        `<td>${f6(r.delta[e][j])}</td>` + (D.article_sign ? `<td>${f6(-r.delta[e][j])}</td>` : "") + "</tr>";
    });
    h += "</table><table><caption>parameters</caption><tr><th>param</th><th>before</th><th>∂L/∂p</th><th>after</th></tr>";
    r.W_before.forEach((row, i) => row.forEach((w, j) => {
      h += `<tr><td>w ${esc(nameOf(l, i))}→${esc(nameOf(l + 1, j))}</td><td>${f6(w)}</td><td>${f6(r.dW[i][j])}</td><td>${f6(r.W_after[i][j])}</td></tr>`;
    }));
    r.b_before.forEach((b, j) => {
      h += `<tr><td>b ${esc(nameOf(l + 1, j))}${D.update_biases ? "" : " (fixed)"}</td><td>${f6(b)}</td><td>${f6(r.db[j])}</td><td>${f6(r.b_after[j])}</td></tr>`;
    });
    h += "</table></div>";
  });
  document.getElementById("tables").innerHTML = h;
}

// ---- the loss curve --------------------------------------------------------------------
function drawCurve() {
  const svg = document.getElementById("curve"), n = D.n_steps;
  if (n < 2) { svg.style.display = "none"; return; }
  const w = 420, h = 170, l = 62, b = 26, t = 12;
  const ys = D.losses.concat([D.final_loss]), pos = ys.filter(v => v > 0);
  const logy = pos.length === ys.length && Math.max(...ys) / Math.min(...ys) > 50;
  const tr = v => logy ? Math.log10(v) : v;
  const lo = Math.min(...ys.map(tr)), hi = Math.max(...ys.map(tr)), span = hi - lo || 1;
  const X = i => l + (w - l - 8) * i / n, Y = v => t + (h - t - b) * (1 - (tr(v) - lo) / span);
  const stride = Math.max(1, Math.floor(ys.length / 800));
  let pts = [];
  for (let i = 0; i < ys.length; i += stride) pts.push(`${X(i).toFixed(1)},${Y(ys[i]).toFixed(1)}`);
  pts.push(`${X(n).toFixed(1)},${Y(ys[n]).toFixed(1)}`);
  const s = D.steps[S.si].step;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`); svg.setAttribute("width", w); svg.setAttribute("height", h);
  const top = logy ? Math.max(...ys) : Math.max(...ys), bot = Math.min(...ys);
  svg.innerHTML = `<rect x="${l}" y="${t}" width="${w - l - 8}" height="${h - t - b}" fill="#f8fafc" stroke="#e2e8f0"/>` +
    `<polyline points="${pts.join(" ")}" fill="none" stroke="#b91c1c" stroke-width="2"/>` +
    `<line x1="${X(s)}" x2="${X(s)}" y1="${t}" y2="${h - b}" stroke="var(--hi)" stroke-width="2"/>` +
    `<circle cx="${X(s)}" cy="${Y(ys[s])}" r="4.5" fill="var(--hi)"/>` +
    `<text x="${l - 4}" y="${t + 10}" text-anchor="end" font-size="11">${top.toPrecision(3)}</text>` +
    `<text x="${l - 4}" y="${h - b}" text-anchor="end" font-size="11">${bot.toPrecision(3)}</text>` +
    `<text x="${l}" y="${h - 8}" font-size="11">step 1</text>` +
    `<text x="${w - 8}" y="${h - 8}" text-anchor="end" font-size="11">${n}</text>` +
    `<text x="${(l + w) / 2}" y="${h - 8}" text-anchor="middle" font-size="11">loss${logy ? " (log scale)" : ""}</text>`;
}

// ---- controls ----------------------------------------------------------------------------
function phaseName(ph) {
  if (ph.kind === "start") return "the network";
  if (ph.kind === "fwd") return "forward " + nameOf(ph.l + 1, ph.j);
  if (ph.kind === "bwd") return "backward " + nameOf(ph.l + 1, ph.j);
  return ph.kind === "loss" ? "the loss" : "the update";
}
function draw() {
  const st = D.steps[S.si];
  document.getElementById("settings").textContent =
    `network ${D.widths.join(" → ")} · ${D.activations.join(", ")} · loss ${D.loss} · η = ${D.learning_rate} · ${D.n_steps} step(s)`;
  document.getElementById("where").textContent =
    `step ${st.step + 1}/${D.n_steps} · ${S.p + 1}/${PHASES.length}: ${phaseName(PHASES[S.p])}`;
  document.getElementById("stepno").textContent = `${st.step + 1} of ${D.n_steps}`;
  document.getElementById("slider").value = S.si;
  document.querySelectorAll("#examples button").forEach((b, i) => b.classList.toggle("on", i === S.e));
  drawNet(); drawExplain(); drawTables(); drawCurve(); writeHash();
}
function setup() {
  setupStepper();
  if (D.input.length > 1) {
    const box = document.getElementById("examples");
    box.innerHTML = "example: " + D.input.map((_, i) => `<button data-e="${i}">${i}</button>`).join(" ");
    box.querySelectorAll("button").forEach(b => b.addEventListener("click", () => { S.e = +b.dataset.e; draw(); }));
  }
  readHash(); draw();
}
setup();
"""

# ---- a model that is not Dense + activation: a table of values per layer ------------------

_TABLE_TEMPLATE = _HEAD.replace("%NAV%", "") + """<main>
  <section id="explain"></section>
  <aside><svg id="curve" role="img" aria-label="the loss per step"></svg></aside>
</main>
<section id="tables"></section>
<footer>Each layer's output for every example and ∂L/∂output, the gradient its backward pass
receives (the next layer's backward, or the loss gradient for the last); its parameters before
the step, ∂L/∂p and after: p ← p − η·∂L/∂p.</footer>
""" + _TAIL

_TABLE_JS = r"""
const NL = D.steps[0].layers.length, B = D.input.length;
const PHASES = [{kind: "start"}];
for (let l = 0; l < NL; l++) PHASES.push({kind: "fwd", l});
PHASES.push({kind: "loss"});
for (let l = NL - 1; l >= 0; l--) PHASES.push({kind: "bwd", l});
PHASES.push({kind: "update"});
const S = {si: 0, p: 0};

const readHash = readStepHash;
function writeHash() {
  const h = `#step=${D.steps[S.si].step + 1}&phase=${S.p + 1}`;
  if (location.hash !== h) history.replaceState(null, "", h);
}
function phaseName(ph) {
  if (ph.kind === "fwd") return `forward layers[${ph.l}] ${D.steps[0].layers[ph.l].layer}`;
  if (ph.kind === "bwd") return `backward layers[${ph.l}] ${D.steps[0].layers[ph.l].layer}`;
  return {start: "the model", loss: "the loss", update: "the update"}[ph.kind];
}
function eq(s) { return `<div class="eq">${esc(s)}</div>`; }
function drawExplain() {
  const st = D.steps[S.si], ph = PHASES[S.p];
  let h = "";
  if (ph.kind === "start") h = `<h2>Step ${st.step + 1}: the model before the step</h2>` +
    eq(`${D.model} on inputs of shape (${D.in_shape.join(", ")}), ${B} example(s)`) +
    eq(`loss ${D.loss}, learning rate η = ${D.learning_rate}`) +
    eq("Next ▶ runs the forward pass one layer at a time; the tables hold every value.");
  else if (ph.kind === "fwd") {
    const r = st.layers[ph.l];
    h = `<h2 class="fwd">Forward: layers[${ph.l}] ${esc(r.layer)}</h2>` +
      eq(`output = ${r.layer}(${ph.l ? "layers[" + (ph.l - 1) + "] output" : "input"}), shape (${r.shape.join(", ")}) per example`) +
      eq(`example 0: ${r.output[0].slice(0, 6).map(f6).join(", ")}${r.output[0].length > 6 ? ", …" : ""}`);
  } else if (ph.kind === "loss") {
    const r = st.layers[NL - 1];
    h = "<h2>Loss</h2>" + eq(`L = ${D.loss}(y, t) = ${f6(st.loss)}${B > 1 ? ` over ${B} examples` : ""}`) +
      eq(`∂L/∂y, example 0: ${r.doutput[0].slice(0, 6).map(f6).join(", ")}`) +
      eq("Next ▶ runs the backward pass from the last layer.");
  } else if (ph.kind === "bwd") {
    const r = st.layers[ph.l];
    h = `<h2 class="bwd">Backward: layers[${ph.l}] ${esc(r.layer)}</h2>` +
      eq(`∂L/∂output arrives from ${ph.l === NL - 1 ? "the loss" : "layers[" + (ph.l + 1) + "]'s backward"}`) +
      eq(`example 0: ${r.doutput[0].slice(0, 6).map(f6).join(", ")}${r.doutput[0].length > 6 ? ", …" : ""}`) +
      (r.params.length ? eq(`its backward gives ∂L/∂p for ${r.params.length} parameter(s), e.g. ∂L/∂${r.params[0][0]} = ${f6(r.params[0][2])}`) :
        eq("no parameters: its backward only passes ∂L/∂input on"));
  } else {
    h = `<h2>Update: p ← p − η·∂L/∂p, η = ${D.learning_rate}</h2>`;
    st.layers.forEach((r, l) => r.params.forEach(([n, b, g, a]) => {
      h += eq(`layers[${l}] ${n}: ${f6(b)} − ${D.learning_rate}·${f6(g)} = ${f6(a)}`);
    }));
    h += eq(`loss ${f6(st.loss)} → ${f6(st.loss_after)}`);
  }
  document.getElementById("explain").innerHTML = h;
}
function drawTables() {
  const st = D.steps[S.si], ph = PHASES[S.p];
  let h = `<div class="layer"><table><caption>input and target</caption><tr><th>index</th>` +
    D.input.map((_, e) => `<th>x e${e}</th>`).join("") + "</tr>" +
    D.input_index.map((ix, n) => `<tr><td>${ix}</td>` + D.input.map(x => `<td>${f6(x[n])}</td>`).join("") + "</tr>").join("") +
    "</table><table><tr><th>index</th>" + D.target.map((_, e) => `<th>t e${e}</th>`).join("") + "</tr>" +
    D.target_index.map((ix, n) => `<tr><td>${ix}</td>` + D.target.map(t => `<td>${f6(t[n])}</td>`).join("") + "</tr>").join("") +
    "</table></div>";
  st.layers.forEach((r, l) => {
    const f = (ph.kind === "fwd" || ph.kind === "bwd") && ph.l === l;
    h += `<div class="layer"><table class="${f ? "focus" : ""}"><caption>layers[${l}] ${esc(r.layer)}, step ${st.step + 1}</caption><tr><th>index</th>` +
      r.output.map((_, e) => `<th>out e${e}</th><th>∂L/∂out e${e}</th>`).join("") + "</tr>";
    r.index.forEach((ix, n) => {
      h += `<tr class="${f ? "focus" : ""}"><td>${ix}</td>` + r.output.map((o, e) => `<td>${f6(o[n])}</td><td>${f6(r.doutput[e][n])}</td>`).join("") + "</tr>";
    });
    h += "</table>";
    if (r.params.length) {
      h += "<table><caption>parameters</caption><tr><th>param</th><th>before</th><th>∂L/∂p</th><th>after</th></tr>" +
        r.params.map(([n, b, g, a]) => `<tr><td>${esc(n)}</td><td>${f6(b)}</td><td>${f6(g)}</td><td>${f6(a)}</td></tr>`).join("") + "</table>";
    }
    h += "</div>";
  });
  document.getElementById("tables").innerHTML = h;
}
function drawCurve() {
  const svg = document.getElementById("curve"), n = D.n_steps;
  if (n < 2) { svg.style.display = "none"; return; }
  const w = 420, h = 170, l = 62, b = 26, t = 12;
  const ys = D.losses.concat([D.final_loss]);
  const lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
  const X = i => l + (w - l - 8) * i / n, Y = v => t + (h - t - b) * (1 - (v - lo) / span);
  const stride = Math.max(1, Math.floor(ys.length / 800)), pts = [];
  for (let i = 0; i < ys.length; i += stride) pts.push(`${X(i).toFixed(1)},${Y(ys[i]).toFixed(1)}`);
  pts.push(`${X(n).toFixed(1)},${Y(ys[n]).toFixed(1)}`);
  const s = D.steps[S.si].step;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`); svg.setAttribute("width", w); svg.setAttribute("height", h);
  svg.innerHTML = `<rect x="${l}" y="${t}" width="${w - l - 8}" height="${h - t - b}" fill="#f8fafc" stroke="#e2e8f0"/>` +
    `<polyline points="${pts.join(" ")}" fill="none" stroke="#b91c1c" stroke-width="2"/>` +
    `<circle cx="${X(s)}" cy="${Y(ys[s])}" r="4.5" fill="var(--hi)"/>` +
    `<text x="${l - 4}" y="${t + 10}" text-anchor="end" font-size="11">${hi.toPrecision(3)}</text>` +
    `<text x="${l - 4}" y="${h - b}" text-anchor="end" font-size="11">${lo.toPrecision(3)}</text>` +
    `<text x="${(l + w) / 2}" y="${h - 8}" text-anchor="middle" font-size="11">loss per step</text>`;
}
function draw() {
  const st = D.steps[S.si];
  document.getElementById("settings").textContent =
    `model ${D.model} · input (${D.in_shape.join(", ")}) · loss ${D.loss} · η = ${D.learning_rate} · ${D.n_steps} step(s)`;
  document.getElementById("where").textContent =
    `step ${st.step + 1}/${D.n_steps} · ${S.p + 1}/${PHASES.length}: ${phaseName(PHASES[S.p])}`;
  document.getElementById("stepno").textContent =
    `${st.step + 1} of ${D.n_steps} · loss ${f6(st.loss)} → ${f6(st.loss_after)}`;
  document.getElementById("slider").value = S.si;
  drawExplain(); drawTables(); drawCurve(); writeHash();
}
setupStepper(); readHash(); draw();
"""
