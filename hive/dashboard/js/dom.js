// Small DOM and formatting helpers: every value reaches the page as text, never as HTML.

/** An element: h("td", {class: "num"}, "12", child, …); attributes starting with "on" are listeners. */
export function h(tag, attrs = {}, ...children) {
  const node = tag === "svg" || tag === "polyline" || tag === "rect"
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace the children of `node` (keeps `node` itself, so focus and scroll stay). */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export const NA = "not available";

export function bytes(n) {
  if (n === null || n === undefined) return NA;
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function mb(n) { return n === null || n === undefined ? NA : bytes(n * 1e6); }

export function duration(s) {
  if (s === null || s === undefined) return NA;
  s = Math.max(0, Math.round(s));
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${sec}s`;
  return `${sec}s`;
}

export function pct(v) { return v === null || v === undefined ? NA : `${Number(v).toFixed(1)} %`; }

export function time(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString();
}

/** A bar: h("div.bar") with its filled part; `level` ok|warn|bad colours it. */
export function bar(fraction, label, level = "ok") {
  const f = Math.max(0, Math.min(1, Number(fraction) || 0));
  const filled = h("div", { class: "fill" });
  filled.style.width = `${(f * 100).toFixed(1)}%`; // CSSOM: allowed by the page's CSP
  return h("div", { class: `bar ${level}`, role: "progressbar", "aria-valuenow": Math.round(f * 100), "aria-valuemin": 0, "aria-valuemax": 100, title: label },
    filled, h("span", { class: "label" }, label));
}

/** A key/value table. */
export function facts(pairs) {
  return h("table", { class: "facts" }, h("tbody", {},
    pairs.filter(Boolean).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v ?? NA)))));
}

/** A table of conditions (type, status, reason, message). */
export function conditions(list) {
  if (!list || !list.length) return h("p", { class: "muted" }, "no conditions");
  return h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ["type", "status", "reason", "message", "since"].map((c) => h("th", {}, c)))),
    h("tbody", {}, list.map((c) => h("tr", { class: c.status === "True" ? "" : "muted" },
      h("td", {}, c.type), h("td", {}, c.status), h("td", {}, c.reason), h("td", {}, c.message || ""),
      h("td", {}, time(c.lastTransitionTime))))));
}

/** Who owns an object's record, in words: its file and line, git revision, api or queen. */
export function owner(obj) {
  const src = obj && obj.source;
  if (!src) return "nobody (found on disk, no record declares it)";
  const where = src.file ? `${src.file}${src.line ? `:${src.line}` : ""}` : "";
  return where ? `${src.name} (${where})` : src.name;
}

/** Whether the dashboard may change the object: only records the API declared, or none. */
export function editable(obj) {
  const src = obj && obj.source;
  return !src || src.name === "api";
}

/** An object's last events, newest first, from the page's ring. */
export function eventList(events, max = 15) {
  if (!events.length) return h("p", { class: "muted" }, "no events seen by this page");
  return h("ol", { class: "events" }, events.slice(-max).reverse().map((e) =>
    h("li", { class: `lvl-${e.level}` }, h("time", {}, time(e.time)), " ", h("code", {}, e.action), " ", e.message)));
}

/** A line graph of `values` (inline SVG), with its last and largest value. */
export function graph(label, values, unit) {
  const known = values.filter((v) => v !== null && v !== undefined);
  if (!known.length) return h("div", { class: "graph muted" }, `${label}: not available`);
  const max = Math.max(1e-9, ...known);
  const pts = values.map((v, i) => (v === null || v === undefined ? null
    : `${((i / Math.max(1, values.length - 1)) * 300).toFixed(1)},${(60 - (v / max) * 58).toFixed(1)}`)).filter(Boolean).join(" ");
  const fmt = (v) => `${Number(v).toFixed(1)}${unit}`;
  return h("div", { class: "graph" }, h("div", { class: "small" }, `${label}: ${fmt(known[known.length - 1])} (max ${fmt(max)})`),
    h("svg", { viewBox: "0 0 300 60", width: "300", height: "60", class: "spark" }, h("polyline", { points: pts, fill: "none", stroke: "currentColor" })));
}

