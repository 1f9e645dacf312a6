// lbfast status page: fetches /status.json every few seconds and redraws the tables and
// SVG charts from it (no full reload). Data only ever goes into textContent, never HTML.
"use strict";

const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
let timer = null;
let busy = false;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c));
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function bytes(n) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return Math.round(s) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + Math.round(s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d" + Math.floor((s % 86400) / 3600) + "h";
}

function rate(r) { return r === null || r === undefined ? "–" : r.toFixed(1); }

function cell(field, value, cls) { return el("td", {"data-field": field, class: cls}, String(value)); }

function table(caption, headers, rows, cls) {
  const head = el("tr", {}, ...headers.map((h, i) => el("th", {class: i === 0 ? "name" : null}, h)));
  const t = el("table", {class: cls}, el("caption", {}, caption), el("thead", {}, head), el("tbody", {}, ...rows));
  return t;
}

function frontendRow(f) {
  const r = f.responses || {};
  const isHttp = f.protocol === "http" || f.protocol === "https";
  return el("tr", {"data-frontend": f.name, class: "state-up"},
    cell("name", f.name, "name"), cell("listen", f.listen, "text"), cell("protocol", f.protocol, "text"),
    cell("dataplane", f.dataplane, "text"), cell("backend", f.backend, "text"),
    cell("active", f.active), cell("peak", f.peak), cell("conn_rate", rate(f.conn_rate)),
    cell("req_rate", isHttp ? rate(f.req_rate) : "–"), cell("total", f.total),
    cell("requests", isHttp ? f.requests : "–"),
    cell("bytes_in", bytes(f.bytes_in)), cell("bytes_out", bytes(f.bytes_out)),
    ...["2xx", "3xx", "4xx", "5xx"].map(c => cell("r" + c, isHttp ? (r[c] || 0) : "–")),
    cell("errors", f.errors + f.bad_requests), cell("timeouts", f.timeouts), cell("refused", f.refused));
}

function serverRow(s) {
  const check = s.check === "none" ? "no check"
    : (s.last_ok === null ? "pending" : (s.last_ok ? "ok" : "failed") + ": " + s.last_reason
       + " (" + (s.last_check_ms !== null ? s.last_check_ms + " ms, " : "") + duration(s.last_check_ago_s) + " ago)");
  return el("tr", {"data-server": s.key, "data-state": s.state, class: "state-" + s.state},
    cell("name", s.label ? s.key + " (" + s.label + ")" : s.key, "name"),
    cell("state", s.state_label, "text"), cell("last_check", check, "text"),
    cell("since", duration(s.changed_ago_s)), cell("change_reason", s.change_reason, "text"),
    cell("weight", s.weight), cell("mode", s.mode, "text"), cell("active", s.active),
    cell("total", s.total), cell("bytes_in", bytes(s.bytes_in)), cell("bytes_out", bytes(s.bytes_out)),
    cell("failed", s.failed));
}

function backendTable(b) {
  const summary = el("tr", {class: "summary state-" + b.state, "data-backend": b.name},
    cell("name", "BACKEND", "name"), cell("state", b.state === "up" ? "UP" : "DOWN", "text"),
    cell("last_check", b.check + " check, " + b.serving + "/" + b.servers.length + " serving", "text"),
    cell("since", ""), cell("change_reason", b.algorithm + ", stickiness " + b.stickiness
      + ", retries " + b.retries, "text"),
    cell("weight", ""), cell("mode", ""), cell("active", b.active), cell("total", b.total),
    cell("bytes_in", bytes(b.bytes_in)), cell("bytes_out", bytes(b.bytes_out)), cell("failed", b.failed));
  return table("backend " + b.name + " (" + b.protocol + ")",
    ["server", "state", "last check", "since", "why / settings", "weight", "mode", "active",
     "total", "bytes in", "bytes out", "conn fail"], [...b.servers.map(serverRow), summary], "servers");
}

function lbSection(lb) {
  const title = lb.name + " — VIP " + lb.vip + " — HA " + lb.ha_role + " — data plane "
    + (lb.dataplanes.join(", ") || "none") + (lb.throttle ? " — throttle " + lb.throttle + "/s" : "");
  const frontends = table("frontends",
    ["frontend", "listen", "proto", "plane", "backend", "cur", "max", "conn/s", "req/s", "conns", "requests",
     "bytes in", "bytes out", "2xx", "3xx", "4xx", "5xx", "errors", "timeouts", "refused"],
    lb.frontends.map(frontendRow), "frontends");
  return el("section", {class: "lb", "data-lb": lb.name}, el("h2", {}, title), frontends,
    ...lb.backends.map(backendTable));
}

// -- charts --------------------------------------------------------------------------------
function rateChart(name, times, values, unit) {
  const w = 260, h = 70, pad = 4;
  const box = svg("svg", {class: "chart rate-chart", width: w, height: h, viewBox: `0 0 ${w} ${h}`});
  box.append(svg("line", {class: "axis", x1: 0, y1: h - pad, x2: w, y2: h - pad}));
  const known = values.filter(v => v !== null);
  const top = Math.max(1, ...known);
  const t0 = times[0], span = Math.max(1, times[times.length - 1] - t0);
  let run = [];
  const flush = () => {
    if (run.length > 1) {
      const line = run.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ");
      box.append(svg("polygon", {class: "area", points: `${run[0][0]},${h - pad} ${line} ${run[run.length - 1][0]},${h - pad}`}));
      box.append(svg("polyline", {class: "rate", points: line}));
    }
    run = [];
  };
  values.forEach((v, i) => {
    if (v === null) { flush(); return; }
    run.push([pad + (w - 2 * pad) * (times[i] - t0) / span, h - pad - (h - 2 * pad - 12) * v / top]);
  });
  flush();
  const label = svg("text", {x: pad, y: 11});
  label.textContent = "max " + top.toFixed(1) + " " + unit + ", now " + rate(known[known.length - 1]);
  box.append(label);
  return el("figure", {"data-chart": name}, box, el("figcaption", {}, name + " (" + unit + ")"));
}

function healthChart(backend, keys, times, states) {
  const w = 260, row = 12, h = Math.max(row, keys.length * row);
  const box = svg("svg", {class: "chart health-chart", width: w, height: h, viewBox: `0 0 ${w} ${h}`});
  const n = times.length, t0 = times[0], span = Math.max(1, times[n - 1] - t0);
  const x = t => w * (t - t0) / span;
  const step = n > 1 ? span / (n - 1) : span;          // the newest sample gets an average slot
  const scale = span / (span + step);
  keys.forEach((key, r) => {
    states[key].forEach((state, i) => {
      if (!state) return;
      const end = i + 1 < n ? times[i + 1] : times[i] + step;
      box.append(svg("rect", {class: "state-" + state, x: (x(times[i]) * scale).toFixed(1), y: r * row + 1,
                              width: Math.max(1, (x(end) - x(times[i])) * scale).toFixed(1), height: row - 2}));
    });
  });
  return el("figure", {"data-chart": "health " + backend}, box,
    el("figcaption", {}, backend + ", top to bottom: " + keys.map(k => k.split("/").slice(1).join("/")).join(", ")));
}

function drawCharts(doc) {
  const hist = doc.history;
  const rates = document.getElementById("rate-charts");
  const health = document.getElementById("health-charts");
  const rateFigures = [], healthFigures = [];
  for (const lb of doc.lbs) {
    for (const f of lb.frontends) {
      const series = hist.frontends[String(f.id)];
      if (!series) continue;
      const http = f.protocol === "http" || f.protocol === "https";
      rateFigures.push(rateChart(lb.name + "/" + f.name, hist.t, http ? series.req_rate : series.conn_rate,
                                 http ? "req/s" : "conn/s"));
    }
    for (const b of lb.backends) {
      const keys = b.servers.map(s => b.id + "/" + s.key).filter(k => hist.servers[k]);
      if (keys.length) healthFigures.push(healthChart(lb.name + "/" + b.name, keys, hist.t, hist.servers));
    }
  }
  rates.replaceChildren(...rateFigures);
  health.replaceChildren(...healthFigures);
}

// -- page ------------------------------------------------------------------------------------
function render(doc) {
  const d = doc.daemon;
  document.getElementById("daemon").textContent = "pid " + d.pid + ", up " + duration(d.uptime_s)
    + ", data plane " + d.dataplane + " (" + d.dataplane_reason + "), HA " + d.ha.mode + "/" + d.ha.role
    + ", reloads " + d.reloads + " ok / " + d.reload_failures + " rejected"
    + (d.last_error ? ", last error: " + d.last_error : "");
  document.getElementById("legend").replaceChildren(
    ...Object.entries(doc.states).map(([state, meaning]) => el("span", {class: "state-" + state, title: meaning},
                                                               meaning.split(":")[0])));
  document.getElementById("lbs").replaceChildren(...doc.lbs.map(lbSection));
  drawCharts(doc);
  document.getElementById("updated").textContent = "updated " + new Date(doc.generated_at * 1000).toLocaleTimeString()
    + " (built in " + d.build_ms + " ms)";
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
}

async function refresh() {
  if (busy) return;
  busy = true;
  timer = null;
  try {
    const response = await fetch("/status.json", {cache: "no-store", credentials: "same-origin"});
    if (response.status === 401) { window.location.reload(); return; }   // session ended: log in again
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "refresh failed: " + e.message;
  } finally {
    busy = false;
  }
  if (!document.hidden) timer = setTimeout(refresh, REFRESH_MS);
}

// Nobody looking, nothing asked: a hidden tab stops refreshing.
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && timer === null) refresh();
});
refresh();
