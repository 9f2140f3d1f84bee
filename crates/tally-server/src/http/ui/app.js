// The dashboard at /ui: namespaces, counters with their counts, a counter's adds per minute
// over the last hour, and the server's request rate and rollup lag from /metrics. Everything
// comes from the server's own HTTP API; nothing is fetched from elsewhere. Text is always set
// with textContent, never parsed as HTML.
"use strict";

const REFRESH_MS = 2000;
const NAMESPACES_EVERY = 5; // refreshes
const PAGE = 50;
const SVG = "http://www.w3.org/2000/svg";

const state = {
  token: sessionStorage.getItem("tally-token") || "",
  namespace: null,
  counter: null,
  prefix: "",
  next: null,
  ticks: 0,
  lastMetrics: null,
};

const $ = (id) => document.getElementById(id);

function setStatus(text, bad) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("bad", Boolean(bad));
}

class NeedsToken extends Error {}

async function api(path, asText) {
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  const response = await fetch(path, { headers });
  if (response.status === 401) {
    $("token-form").hidden = false;
    throw new NeedsToken("this server needs a bearer token");
  }
  if (!response.ok) {
    let message = "HTTP " + response.status;
    try {
      const body = await response.json();
      message = body.error.code + ": " + body.error.message;
    } catch (_) { /* not the JSON error shape */ }
    throw new Error(message);
  }
  return asText ? response.text() : response.json();
}

function segment(name) {
  return encodeURIComponent(name);
}

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  state.namespace = params.get("ns");
  state.counter = params.get("counter");
}

function writeHash() {
  const params = new URLSearchParams();
  if (state.namespace) params.set("ns", state.namespace);
  if (state.counter) params.set("counter", state.counter);
  history.replaceState(null, "", "#" + params.toString());
}

function element(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

async function loadNamespaces() {
  const body = await api("/v1/namespaces");
  const list = $("namespaces");
  list.replaceChildren();
  const names = body.namespaces.map((n) => n.name);
  if (!state.namespace || !names.includes(state.namespace)) state.namespace = names[0] || null;
  for (const ns of body.namespaces) {
    const button = element("button", ns.name, { type: "button", class: "pick" });
    button.setAttribute("aria-current", String(ns.name === state.namespace));
    button.addEventListener("click", () => pickNamespace(ns.name));
    const item = element("li");
    item.append(button);
    list.append(item);
    if (ns.name === state.namespace) showSettings(ns);
  }
}

function showSettings(ns) {
  $("ns-name").textContent = ns.name;
  const dl = $("ns-settings");
  dl.replaceChildren();
  const config = ns.config || {};
  for (const key of ["counter_type", "accept_limit", "idempotency_window", "retention"]) {
    if (config[key] === undefined) continue;
    dl.append(element("dt", key.replace(/_/g, " ")), element("dd", String(config[key])));
  }
}

function pickNamespace(name) {
  state.namespace = name;
  state.counter = null;
  state.next = null;
  writeHash();
  refresh(true);
}

function pickCounter(name) {
  state.counter = name;
  writeHash();
  refresh(false);
}

async function loadCounters(append) {
  const tbody = $("counters").tBodies[0];
  if (!state.namespace) {
    tbody.replaceChildren();
    return;
  }
  const query = new URLSearchParams({ prefix: state.prefix, limit: String(PAGE) });
  if (append && state.next) query.set("page_token", state.next);
  const page = await api("/v1/namespaces/" + segment(state.namespace) + "/counters?" + query);
  if (!append) tbody.replaceChildren();
  for (const c of page.counters) {
    const row = element("tr", undefined, { "data-counter": c.counter_name });
    const name = element("td");
    const pick = element("button", c.counter_name, { type: "button", class: "pick" });
    pick.setAttribute("aria-current", String(c.counter_name === state.counter));
    pick.addEventListener("click", () => pickCounter(c.counter_name));
    name.append(pick);
    row.append(name, element("td", String(c.count), { class: "count", "data-count": String(c.count) }));
    tbody.append(row);
  }
  state.next = page.next_page_token || null;
  $("more").hidden = !state.next;
}

async function loadSeries() {
  const chart = $("chart");
  if (!state.namespace || !state.counter) {
    chart.replaceChildren();
    $("chart-total").textContent = "";
    return;
  }
  const path = "/v1/namespaces/" + segment(state.namespace) + "/counters/" + segment(state.counter);
  const [series, count] = await Promise.all([api(path + "/series?last=1h&step=1m"), api(path)]);
  $("chart-title").textContent = state.namespace + ":" + state.counter + " — count now " + count.count;
  $("chart-total").textContent = "Added in the last hour: " + series.total;
  chart.replaceChildren(drawBars(series.buckets, state.namespace + ":" + state.counter, series.total));
}

function drawBars(buckets, label, total) {
  const width = 720, height = 220, left = 44, bottom = 22, top = 10;
  const values = buckets.map((b) => b.added);
  const high = Math.max(0, ...values), low = Math.min(0, ...values);
  const span = high - low || 1;
  const y = (v) => top + (high - v) * (height - top - bottom) / span;
  const slot = (width - left - 4) / Math.max(1, buckets.length);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Adds per minute to " + label + " over the last hour: " + total + " in all, at most " + high + " in a minute");
  svg.setAttribute("data-buckets", String(buckets.length));
  let drawn = 0;
  buckets.forEach((b, i) => {
    if (b.added === 0) return;
    const rect = document.createElementNS(SVG, "rect");
    const [a, z] = [y(Math.max(0, b.added)), y(Math.min(0, b.added))];
    rect.setAttribute("x", String(left + i * slot + 1));
    rect.setAttribute("width", String(Math.max(1, slot - 2)));
    rect.setAttribute("y", String(a));
    rect.setAttribute("height", String(Math.max(1, z - a)));
    rect.setAttribute("class", b.folded ? "bar" : "bar open");
    const tip = document.createElementNS(SVG, "title");
    tip.textContent = b.start + ": " + b.added + (b.folded ? "" : " (not folded yet)");
    rect.append(tip);
    svg.append(rect);
    drawn += 1;
  });
  svg.setAttribute("data-bars", String(drawn));
  const axis = document.createElementNS(SVG, "line");
  for (const [k, v] of Object.entries({ x1: left, x2: width - 4, y1: y(0), y2: y(0), stroke: "#8c959f" })) axis.setAttribute(k, String(v));
  svg.append(axis);
  const text = (x, yy, s, anchor) => {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", String(x));
    t.setAttribute("y", String(yy));
    t.setAttribute("text-anchor", anchor);
    t.textContent = s;
    svg.append(t);
  };
  text(left - 6, y(high) + 4, String(high), "end");
  if (low < 0) text(left - 6, y(low) + 4, String(low), "end");
  text(left, height - 6, "−60 min", "start");
  text(width - 4, height - 6, "now", "end");
  return svg;
}

function metric(text, name) {
  let sum = 0, seen = false;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== " " && rest[0] !== "{") continue;
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (!Number.isNaN(value)) { sum += value; seen = true; }
  }
  return seen ? sum : null;
}

async function loadServer() {
  const text = await api("/metrics", true);
  const now = performance.now();
  const sample = {
    at: now,
    requests: metric(text, "tally_requests_total") || 0,
    lagSum: metric(text, "tally_rollup_lag_seconds_sum") || 0,
    lagCount: metric(text, "tally_rollup_lag_seconds_count") || 0,
    folded: metric(text, "tally_rollup_events_folded_total") || 0,
  };
  const prev = state.lastMetrics;
  state.lastMetrics = sample;
  const rows = [["requests served", String(sample.requests)]];
  if (prev && now > prev.at) {
    const seconds = (now - prev.at) / 1000;
    rows.push(["requests per second", ((sample.requests - prev.requests) / seconds).toFixed(1)]);
    rows.push(["events folded per second", ((sample.folded - prev.folded) / seconds).toFixed(1)]);
    const rollups = sample.lagCount - prev.lagCount;
    rows.push(["rollup lag (mean, last refresh)", rollups > 0 ? ((sample.lagSum - prev.lagSum) / rollups).toFixed(2) + " s" : "no rollups"]);
  }
  const unfolded = metric(text, "tally_local_tail_events");
  if (unfolded !== null) rows.push(["events not folded yet", String(unfolded)]);
  const dl = $("server");
  dl.replaceChildren();
  for (const [k, v] of rows) dl.append(element("dt", k), element("dd", v));
}

async function refresh(all) {
  try {
    if (all || state.ticks % NAMESPACES_EVERY === 0) await loadNamespaces();
    await loadCounters(false);
    await Promise.all([loadSeries(), loadServer()]);
    setStatus("Live, refreshed " + new Date().toLocaleTimeString());
  } catch (e) {
    setStatus(e.message, true);
  }
  state.ticks += 1;
}

function start() {
  readHash();
  $("prefix").addEventListener("input", (e) => { state.prefix = e.target.value; state.next = null; loadCounters(false).catch((err) => setStatus(err.message, true)); });
  $("more").addEventListener("click", () => loadCounters(true).catch((err) => setStatus(err.message, true)));
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value;
    sessionStorage.setItem("tally-token", state.token);
    $("token-form").hidden = true;
    refresh(true);
  });
  window.addEventListener("hashchange", () => { readHash(); refresh(true); });
  refresh(true);
  setInterval(() => refresh(false), REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
