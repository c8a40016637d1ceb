// radixgen's cache dashboard: polls /dashboard/state and /cache_tree once a second and draws
// them with plain DOM and SVG (no library). The API key, when the server needs one, is asked
// once and kept in this closure only: never in storage, cookies or the URL.
// Text from the server (snippets, with --dashboard-show-text) only ever goes in as textContent.
"use strict";
(() => {
  const POLL_MS = 1000;
  const HISTORY = 120; // samples kept for the charts (two minutes at one a second)
  const SVG_NS = "http://www.w3.org/2000/svg";
  const COLUMN = 170; // tree: pixels per level
  const ROW = 22; // tree: pixels per leaf row
  const NODE_H = 14;

  let apiKey = null;
  let polling = false;
  const folded = new Set(); // ids of tree nodes the user folded
  const history = []; // {t, prompt, cached, generated, prefill, evicted}

  const $ = (id) => document.getElementById(id);

  class AuthNeeded extends Error {}

  async function getJSON(path) {
    const headers = apiKey ? { Authorization: "Bearer " + apiKey } : {};
    const response = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
    if (response.status === 401) throw new AuthNeeded("API key needed");
    if (!response.ok) throw new Error(path.split("?")[0] + ": HTTP " + response.status);
    return response.json();
  }

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text;
    status.className = "status " + (kind || "");
  }

  // --- formatting ----------------------------------------------------------------------------

  function fmtInt(n) {
    if (n === null || n === undefined) return "–";
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return String(Math.round(n));
  }
  const fmtPct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %");
  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 1) return "just now";
    if (seconds < 90) return seconds.toFixed(1) + " s ago";
    if (seconds < 5400) return (seconds / 60).toFixed(1) + " min ago";
    return (seconds / 3600).toFixed(1) + " h ago";
  }

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    if (parent) parent.appendChild(el);
    return el;
  }

  // --- cards, KV bars, charts -----------------------------------------------------------------

  function rate(key) {
    if (history.length < 2) return null;
    const a = history[history.length - 2];
    const b = history[history.length - 1];
    const dt = (b.t - a.t) / 1000;
    return dt > 0 ? (b[key] - a[key]) / dt : null;
  }

  function intervalHitRate(a, b) {
    const prompt = b.prompt - a.prompt;
    return prompt > 0 ? (b.cached - a.cached) / prompt : null;
  }

  function renderStats(state) {
    const s = state.stats;
    $("model").textContent = state.model + (state.text ? " · text snippets on" : "");
    history.push({
      t: Date.now(),
      prompt: s.prompt_tokens,
      cached: s.cached_tokens,
      generated: s.generated_tokens,
      prefill: s.prefill_tokens,
      evicted: s.evicted_tokens,
      hit: s.cache_hit_rate,
    });
    if (history.length > HISTORY) history.shift();
    const hit = $("hit-rate");
    hit.textContent = fmtPct(s.cache_hit_rate);
    hit.dataset.value = String(s.cache_hit_rate);
    const n = history.length;
    const recentHit = n >= 2 ? intervalHitRate(history[n - 2], history[n - 1]) : null;
    $("hit-rate-recent").textContent = recentHit === null ? "no prompts" : fmtPct(recentHit);
    $("running").textContent = s.running_requests;
    $("waiting").textContent = s.waiting_requests;
    $("finished").textContent = fmtInt(s.finished_requests);
    $("tokens-per-s").textContent = fmtInt(rate("generated"));
    $("prefill-per-s").textContent = fmtInt(rate("prefill"));
    $("evicted").textContent = fmtInt(s.evicted_tokens);
    $("evicted-recent").textContent = fmtInt(rate("evicted"));
    renderKV(s);
    renderCharts();
    renderRecent(state.recent_requests);
    renderSettings(state.settings);
  }

  function renderKV(s) {
    const total = s.kv_total;
    const running = Math.max(total - s.kv_free - s.kv_evictable - s.kv_protected, 0);
    const parts = { protected: s.kv_protected, running, evictable: s.kv_evictable, free: s.kv_free };
    $("kv-total").textContent = fmtInt(total) + " token slots";
    for (const [name, tokens] of Object.entries(parts)) {
      const seg = $("kv-" + name);
      seg.style.width = total ? ((100 * tokens) / total).toFixed(3) + "%" : "0";
      seg.dataset.tokens = String(tokens);
      seg.title = name + ": " + tokens + " tokens";
      $("kv-" + name + "-n").textContent =
        fmtInt(tokens) + (total ? " (" + ((100 * tokens) / total).toFixed(1) + " %)" : "");
    }
  }

  function lineChart(el, series, maxValue) {
    el.replaceChildren();
    const W = 360, H = 120;
    for (const f of [0.25, 0.5, 0.75]) svg("line", { class: "grid", x1: 0, x2: W, y1: H * f, y2: H * f }, el);
    const slots = Math.max(history.length, 30); // the first half minute fills from the left
    let max = maxValue;
    if (max === undefined) {
      max = 1;
      for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
    }
    svg("text", { class: "axis", x: 3, y: 10 }, el).textContent = maxValue === 1 ? "100 %" : fmtInt(max);
    for (const s of series) {
      let d = "";
      s.values.forEach((v, i) => {
        if (v === null) return;
        const x = (W * i) / (slots - 1);
        const y = H - (H * Math.min(v, max)) / max;
        d += (d ? " L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      });
      if (d) svg("path", { class: s.cls, d }, el);
    }
  }

  function renderCharts() {
    const cumulative = history.map((h) => h.hit);
    const perSecond = history.map((h, i) => (i ? intervalHitRate(history[i - 1], h) : null));
    lineChart($("chart-hit"), [{ cls: "s1", values: cumulative }, { cls: "s2", values: perSecond }], 1);
    const perS = (key) =>
      history.map((h, i) => (i ? (h[key] - history[i - 1][key]) / Math.max((h.t - history[i - 1].t) / 1000, 1e-3) : null));
    lineChart($("chart-tps"), [{ cls: "s1", values: perS("generated") }, { cls: "s2", values: perS("prefill") }]);
    lineChart($("chart-evict"), [{ cls: "s3", values: perS("evicted") }]);
  }

  function renderRecent(items) {
    const body = $("recent").tBodies[0];
    body.replaceChildren();
    for (const r of items.slice(-15).reverse()) {
      const tr = document.createElement("tr");
      const hit = r.prompt_tokens ? r.cached_tokens / r.prompt_tokens : 0;
      const cells = [
        r.seq,
        r.outcome,
        r.prompt_tokens,
        r.cached_tokens,
        null, // the hit bar
        r.ttft === null ? "–" : (1000 * r.ttft).toFixed(0) + " ms",
        r.completion_tokens,
      ];
      for (const value of cells) {
        const td = document.createElement("td");
        if (value === null) {
          const bar = document.createElement("span");
          bar.className = "hitbar";
          bar.style.width = (40 * hit).toFixed(1) + "px";
          td.append(bar, fmtPct(hit));
        } else {
          td.textContent = String(value);
        }
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  function renderSettings(settings) {
    const dl = $("settings");
    dl.replaceChildren();
    for (const [name, value] of Object.entries(settings)) {
      const dt = document.createElement("dt");
      dt.textContent = name.replaceAll("_", " ");
      const dd = document.createElement("dd");
      dd.textContent = value === null ? "–" : String(value);
      dl.append(dt, dd);
    }
  }

  // --- the tree -------------------------------------------------------------------------------

  function recencyColour(idle) {
    // hot orange when just used, through yellow and teal, to grey after ten minutes (log scale)
    const x = Math.min(Math.log10(1 + (idle || 0)) / Math.log10(601), 1);
    const stops = [[18, 85, 55], [45, 75, 55], [170, 45, 50], [215, 15, 72]];
    const pos = x * (stops.length - 1);
    const i = Math.min(Math.floor(pos), stops.length - 2);
    const f = pos - i;
    const mix = (k) => stops[i][k] + f * (stops[i + 1][k] - stops[i][k]);
    return "hsl(" + mix(0).toFixed(0) + "," + mix(1).toFixed(0) + "%," + mix(2).toFixed(0) + "%)";
  }

  function nodeWidth(tokens) {
    return Math.min(12 + 14 * Math.log2(1 + tokens), COLUMN - 40);
  }

  // Lay out the visible tree: leaves (and summaries) take successive rows; a parent sits
  // beside the middle of its children.
  function layout(root) {
    const items = [];
    let row = 0;
    function place(node, depth, parentItem) {
      const item = { node, depth, parent: parentItem, kind: depth === 0 ? "root" : "node" };
      items.push(item);
      const open = !folded.has(node.id);
      const kids = [];
      if (open) {
        for (const child of node.children) kids.push(place(child, depth + 1, item));
        if (node.hidden) {
          const summary = { node: node.hidden, depth: depth + 1, parent: item, kind: "summary", y: row++ };
          items.push(summary);
          kids.push(summary);
        }
      }
      item.y = kids.length ? (kids[0].y + kids[kids.length - 1].y) / 2 : row++;
      return item;
    }
    place(root, 0, null);
    return { items, rows: row };
  }

  function showTooltip(event, lines) {
    const tip = $("tooltip");
    tip.textContent = lines.join("\n");
    tip.hidden = false;
    tip.style.left = Math.min(event.clientX + 14, window.innerWidth - 300) + "px";
    tip.style.top = event.clientY + 14 + "px";
  }

  function nodeLines(n) {
    const lines = [
      "node " + n.id,
      n.tokens + " tokens (positions " + (n.prefix_tokens - n.tokens) + "–" + n.prefix_tokens + ")",
      "subtree: " + n.subtree_tokens + " tokens in " + n.subtree_nodes + " nodes",
      "hits: " + n.hits + " · locked by " + n.locks + " running request" + (n.locks === 1 ? "" : "s"),
      "last use: " + fmtAge(n.idle_s),
    ];
    if (n.text !== undefined) lines.push("text: " + n.text);
    if (n.children.length || n.hidden) lines.push(folded.has(n.id) ? "(folded: click to open)" : "(click to fold)");
    return lines;
  }

  function renderTree(doc) {
    $("tree-info").textContent =
      "· " + fmtInt(doc.nodes) + " nodes, " + fmtInt(doc.tokens) + " tokens; showing " +
      doc.shown_nodes + " · snapshot " + doc.snapshot_ms.toFixed(2) + " ms, view " +
      doc.build_ms.toFixed(1) + " ms";
    const { items, rows } = layout(doc.root);
    const maxDepth = items.reduce((m, it) => Math.max(m, it.depth), 0);
    const el = $("tree");
    el.replaceChildren();
    el.setAttribute("width", String((maxDepth + 1) * COLUMN + 160));
    el.setAttribute("height", String(Math.max(rows, 1) * ROW + 20));
    const links = svg("g", {}, el);
    const nodes = svg("g", {}, el);
    const xOf = (it) => 20 + it.depth * COLUMN;
    const yOf = (it) => 10 + it.y * ROW + ROW / 2;
    for (const it of items) {
      const x = xOf(it), y = yOf(it);
      if (it.parent) {
        const px = xOf(it.parent) + (it.parent.kind === "root" ? 6 : nodeWidth(it.parent.node.tokens));
        const py = yOf(it.parent);
        const mx = (px + x) / 2;
        svg("path", { class: "link", d: `M${px} ${py} C${mx} ${py} ${mx} ${y} ${x} ${y}` }, links);
      }
      if (it.kind === "root") {
        const g = svg("g", { class: "root", "data-id": "root" }, nodes);
        svg("circle", { cx: x, cy: y, r: 6 }, g);
        svg("text", { x: x - 14, y: y - 10 }, g).textContent = "root";
        continue;
      }
      if (it.kind === "summary") {
        const s = it.node;
        const g = svg("g", { class: "summary", "data-nodes": s.nodes, "data-tokens": s.tokens }, nodes);
        svg("rect", { x, y: y - NODE_H / 2, width: 24, height: NODE_H, rx: 3 }, g);
        svg("text", { x: x + 30, y: y + 4 }, g).textContent =
          "+" + fmtInt(s.nodes) + " nodes, " + fmtInt(s.tokens) + " tokens";
        g.addEventListener("mousemove", (e) =>
          showTooltip(e, [
            fmtInt(s.nodes) + " smaller nodes folded into one summary",
            s.tokens + " tokens, " + s.locked_tokens + " of them locked",
            "newest use: " + fmtAge(s.idle_s),
            "(raise max nodes or depth, or lower min tokens, to see them)",
          ]));
        g.addEventListener("mouseleave", () => ($("tooltip").hidden = true));
        continue;
      }
      const n = it.node;
      const isFolded = folded.has(n.id) && (n.children.length || n.hidden);
      const g = svg("g", {
        class: "node" + (n.locks > 0 ? " locked" : "") + (isFolded ? " folded" : ""),
        "data-id": n.id,
        "data-parent": it.parent.node.id || "root",
        "data-tokens": n.tokens,
        "data-prefix-tokens": n.prefix_tokens,
        "data-children": n.children.length,
        "data-hidden-nodes": n.hidden ? n.hidden.nodes : 0,
        "data-locks": n.locks,
        "data-hits": n.hits,
      }, nodes);
      const w = nodeWidth(n.tokens);
      svg("rect", { x, y: y - NODE_H / 2, width: w, height: NODE_H, rx: 3, fill: recencyColour(n.idle_s) }, g);
      let label = fmtInt(n.tokens) + (isFolded ? " ▸" : "");
      svg("text", { x: x + w + 4, y: y + 4 }, g).textContent = label;
      if (n.text !== undefined) {
        const snippet = n.text.length > 22 ? n.text.slice(0, 21) + "…" : n.text;
        svg("text", { class: "snippet", x: x + w + 4 + 7 * label.length, y: y + 4 }, g).textContent = snippet;
      }
      g.addEventListener("mousemove", (e) => showTooltip(e, nodeLines(n)));
      g.addEventListener("mouseleave", () => ($("tooltip").hidden = true));
      g.addEventListener("click", () => {
        if (!n.children.length && !n.hidden) return;
        if (folded.has(n.id)) folded.delete(n.id);
        else folded.add(n.id);
        renderTree(doc);
      });
    }
  }

  // --- polling --------------------------------------------------------------------------------

  function treeQuery() {
    const params = new URLSearchParams();
    for (const [name, id] of [["depth", "opt-depth"], ["max_nodes", "opt-max-nodes"], ["min_tokens", "opt-min-tokens"]]) {
      const value = $(id).value.trim();
      if (value !== "") params.set(name, value);
    }
    return params.toString();
  }

  async function tick() {
    try {
      const [state, tree] = await Promise.all([
        getJSON("/dashboard/state"),
        getJSON("/cache_tree?" + treeQuery()),
      ]);
      renderStats(state);
      renderTree(tree);
      setStatus("live · " + new Date().toLocaleTimeString(), "live");
    } catch (err) {
      if (err instanceof AuthNeeded) {
        polling = false;
        askForKey(apiKey !== null);
        return;
      }
      setStatus(String(err.message || err), "error");
    }
    setTimeout(tick, POLL_MS);
  }

  function askForKey(wrongKey) {
    setStatus(wrongKey ? "that key was refused" : "API key needed", "error");
    $("key-form").hidden = false;
    $("api-key").focus();
  }

  function start() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      apiKey = $("api-key").value.trim() || null;
      $("api-key").value = "";
      $("key-form").hidden = true;
      if (!polling) {
        polling = true;
        tick();
      }
    });
    polling = true;
    tick();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
