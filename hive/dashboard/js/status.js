// The status panel: the machine, counts, the Queen link, each source and recent activity.

import { h, fill, bar, facts, mb, bytes, pct, time, graph, NA, conditions } from "./dom.js";
import { getJSON } from "./api.js";

function card(title, ...body) { return h("div", { class: "card" }, h("h3", {}, title), ...body); }

function sourceRow(src) {
  const ready = (src.conditions || []).find((c) => c.type === "Ready");
  const git = src.git || null;
  const revision = git ? (git.revision || git.commit || git.sha || git.ref || JSON.stringify(git)) : "—";
  const errors = src.errors || [];
  return h("tr", { class: ready && ready.status === "True" ? "" : "bad", dataset: { source: src.name } },
    h("td", {}, src.name, h("div", { class: "muted small" }, src.kind, " ", src.location || "")),
    h("td", {}, String(revision).slice(0, 40)),
    h("td", {}, ready ? `${ready.status === "True" ? "Ready" : "Not ready"} (${ready.reason})` : NA,
      ready && ready.status !== "True" && ready.message ? h("div", { class: "small" }, ready.message) : null),
    h("td", {}, src.synced ? "synced" : "not synced", h("div", { class: "muted small" }, time(src.last_sync_time)), ` ${src.records} record(s)`),
    h("td", {}, errors.length
      ? h("ul", { class: "errors" }, errors.map((e) => h("li", { class: "source-error" },
        h("code", {}, `${e.file || ""}${e.line ? `:${e.line}` : ""}`), e.field ? ` ${e.field}: ` : " ", e.message)))
      : "none"));
}

/** The machine over the last 15 minutes (GET /v1/history), re-read at most every 30 s. */
function hostHistory(state, app) {
  const cache = state.hostHistory || (state.hostHistory = { at: 0, node: h("div", { id: "host-history", class: "graphs" }, "loading…") });
  if (Date.now() - cache.at > 30000) {
    cache.at = Date.now();
    getJSON("/v1/history").then((body) => {
      const samples = body.samples || [];
      if (!samples.length) { fill(cache.node, h("span", { class: "muted" }, "no samples yet")); return; }
      const gb = (b) => (b === null || b === undefined ? null : b / 1e9);
      fill(cache.node,
        graph("CPU", samples.map((x) => x.cpu_percent), " %"),
        graph("memory", samples.map((x) => gb(x.memory_used_bytes)), " GB"),
        graph("load", samples.map((x) => x.load_1m), ""),
        graph("GPU VRAM", samples.map((x) => gb(x.gpu_vram_used_bytes)), " GB"),
        graph("GPU utilisation", samples.map((x) => x.gpu_utilization_percent), " %"));
    }).catch((err) => fill(cache.node, err.status === 404 ? "the machine's history is not available on this hive" : err.message));
  }
  return cache.node;
}

export function renderStatus(root, state, app) {
  const s = state.status;
  if (!s) return fill(root, h("p", {}, "loading…"));
  const sys = s.system || {};
  const memUsed = sys.memory_total_mb ? sys.memory_used_mb / sys.memory_total_mb : 0;
  const diskUsed = sys.disk_total_bytes ? 1 - sys.disk_free_bytes / sys.disk_total_bytes : 0;
  const lvl = (f) => (f > 0.9 ? "bad" : f > 0.7 ? "warn" : "ok");
  const q = s.queen || {};
  const push = q.push || {};
  const models = Object.values((s.objects || {}).Model || {}).reduce((a, b) => a + b, 0);
  fill(root,
    h("div", { class: "cards" },
      card("Machine",
        h("div", { class: "metric" }, "CPU ", bar((sys.cpu_percent || 0) / 100, pct(sys.cpu_percent), lvl((sys.cpu_percent || 0) / 100))),
        h("div", { class: "metric" }, "RAM ", bar(memUsed, `${mb(sys.memory_used_mb)} / ${mb(sys.memory_total_mb)}`, lvl(memUsed))),
        h("div", { class: "metric" }, "Disk ", bar(diskUsed, `${bytes(sys.disk_total_bytes - sys.disk_free_bytes)} / ${bytes(sys.disk_total_bytes)}`, lvl(diskUsed))),
        h("div", { class: "muted small" }, `${sys.cpu_cores ?? s.cpu_cores} cores, load ${(sys.load_average || []).join(" ")}`)),
      card("Workers", h("div", { class: "big", id: "workers-count" }, `${s.workers_running} / ${s.workers_total}`), h("div", { class: "muted" }, "running / total"),
        h("div", { class: "small" }, `${s.workers_starting} starting, ${s.workers_stopping} stopping`)),
      card("Models", h("div", { class: "big", id: "models-count" }, String(models)),
        h("div", { class: "muted" }, `${s.models_available} available, ${s.models_downloading} downloading`),
        h("div", { class: "small" }, Object.entries((s.objects || {}).Model || {}).map(([p, n]) => `${p} ${n}`).join(", "))),
      card("Queen",
        facts([
          ["URL", q.url || "no Queen discovered"],
          ["protocol", q.url ? (q.discovered_via || "configured") : NA],
          ["heartbeats", `${push.state || NA} (${push.successes || 0} sent, ${push.failures || 0} failed)`],
          ["last beat", push.last_success ? time(push.last_success) : "never"],
          ["last failure", push.last_failure ? `${time(push.last_failure)}: ${push.last_failure_reason || ""}` : "none"],
        ]))),
    h("h2", {}, "The last 15 minutes"),
    hostHistory(state, app),
    h("h2", {}, "Sources"),
    h("div", { class: "scroll" }, h("table", { class: "grid", id: "sources" },
      h("thead", {}, h("tr", {}, ["source", "revision", "READY", "sync", "errors"].map((c) => h("th", {}, c)))),
      h("tbody", {}, (s.sources || []).map(sourceRow)))),
    h("h2", {}, "Recent activity"),
    h("ol", { class: "events", id: "activity" }, state.events.slice(-40).reverse().map((e) =>
      h("li", { class: `lvl-${e.level}` }, h("time", {}, time(e.time)), " ", e.object ? h("b", {}, e.object) : "hive", " ",
        h("code", {}, e.action), " ", e.message))),
  );
  return root;
}

export { conditions };
