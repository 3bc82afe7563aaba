// The dashboard's entry: the state the panels draw, read from the API and kept current by
// the event stream (/v1/events, read with fetch() so that it carries the token).

import { getJSON, stream } from "./api.js";
import { duration } from "./dom.js";
import { renderStatus } from "./status.js";
import { renderModels } from "./models.js";
import { renderWorkers } from "./workers.js";
import { renderDevices } from "./devices.js";

/** How many events the page keeps (recent activity, each object's last events). */
const RING = 500;

const state = {
  health: null,
  status: null,
  models: [],
  workers: [],
  devices: null,
  runtimes: null,
  events: [],
  recent: new Map(), // "Kind/name" -> that object's last events, read from /v1/events/recent
  progress: new Map(), // model name -> last download progress data
  jobs: new Map(), // model name -> job id of a download this page started
  tab: "status",
  ui: { models: {}, workers: {}, devices: {} },
  conn: "connecting",
};

const panels = {
  status: () => renderStatus(document.getElementById("tab-status"), state, app),
  models: () => renderModels(document.getElementById("tab-models"), state, app),
  workers: () => renderWorkers(document.getElementById("tab-workers"), state, app),
  devices: () => renderDevices(document.getElementById("tab-devices"), state, app),
};

function header() {
  const s = state.status;
  const set = (id, text) => { document.getElementById(id).textContent = text; };
  set("h-id", s ? s.hive_id : "…");
  set("h-addr", s ? `${s.hostname || s.ip_address}:${s.port}` : "");
  set("h-version", state.health ? `v${state.health.version}` : "");
  const st = document.getElementById("h-status");
  st.textContent = s ? s.status : "";
  st.dataset.state = s ? s.status : "";
  set("h-uptime", s ? `up ${duration(s.uptime_seconds)}` : "");
}

function draw() {
  header();
  panels[state.tab]();
}

const pending = new Set();
let timer = null;

const loaders = {
  status: async () => { state.status = await getJSON("/v1/status"); },
  models: async () => { state.models = (await getJSON("/v1/models")).items; },
  workers: async () => { state.workers = (await getJSON("/v1/workers")).items; },
  devices: async () => { state.devices = await getJSON("/v1/devices"); },
  runtimes: async () => { state.runtimes = await getJSON("/v1/runtimes"); },
};

/** Re-read some of the snapshots (coalesced: many events, one read each), then redraw. */
function refresh(...what) {
  what.forEach((w) => pending.add(w));
  if (timer) return;
  timer = setTimeout(async () => {
    timer = null;
    const now = [...pending];
    pending.clear();
    await Promise.all(now.map((w) => loaders[w]().catch((err) => { app.error = `${w}: ${err.message}`; })));
    draw();
  }, 150);
}

function onEvent(ev) {
  if (ev.action === "events_dropped") { refresh("status", "models", "workers", "devices"); return; }
  state.events.push(ev);
  if (state.events.length > RING) state.events.splice(0, state.events.length - RING);
  const kind = ev.object ? ev.object.split("/")[0] : null;
  const name = ev.object ? ev.object.slice(kind.length + 1) : null;
  if (kind === "Model" && ev.action === "model_download_progress") state.progress.set(name, { ...ev.data, time: ev.time });
  if (kind === "Model" && ["model_available", "model_download_failed", "model_download_cancelled", "model_deleted"].includes(ev.action)) state.progress.delete(name);
  if (kind === "Model") refresh("status", "models");
  else if (kind === "Worker") refresh("status", "workers", "devices");
  else refresh("status");
}

const app = {
  state,
  refresh,
  draw,
  error: null,
  /** The last events about `Kind/name`: those hive kept (read once) and those seen since. */
  eventsOf(object) {
    if (!state.recent.has(object)) {
      state.recent.set(object, []);
      getJSON(`/v1/events/recent?object=${encodeURIComponent(object)}&limit=20`)
        .then((body) => { state.recent.set(object, body.items || []); draw(); })
        .catch(() => null); // an older hive: the page's own ring alone
    }
    const byId = new Map();
    for (const e of [...state.recent.get(object), ...state.events]) if (e.object === object) byId.set(e.id, e);
    return [...byId.values()].sort((a, b) => a.id - b.id);
  },
  show(tab) {
    state.tab = tab;
    for (const b of document.querySelectorAll("nav.tabs button")) b.setAttribute("aria-selected", String(b.dataset.tab === tab));
    for (const s of document.querySelectorAll("section.tab")) s.hidden = s.dataset.panel !== tab;
    if (tab === "workers" && !state.runtimes) refresh("runtimes");
    draw();
  },
};

/**
 * A reading of the machine and its workers (`event: sample` on /v1/events?samples=true,
 * every 2 s): the figures that change without an event, put in place, no re-read.
 */
function onSample(sample) {
  const s = state.status;
  if (s && s.system) {
    const mbOf = (b) => (b === null || b === undefined ? null : Math.round(b / 1e6));
    Object.assign(s.system, {
      cpu_percent: sample.cpu_percent,
      memory_used_mb: mbOf(sample.memory_used_bytes) ?? s.system.memory_used_mb,
      memory_total_mb: mbOf(sample.memory_total_bytes) ?? s.system.memory_total_mb,
      disk_free_bytes: sample.disk_free_bytes ?? s.system.disk_free_bytes,
      disk_total_bytes: sample.disk_total_bytes ?? s.system.disk_total_bytes,
      load_average: sample.load_average || s.system.load_average,
    });
  }
  for (const w of state.workers) {
    const r = (sample.workers || {})[w.name];
    if (!r || !w.observed) continue;
    Object.assign(w.observed, {
      cpu_percent: r.cpu_percent,
      memory_mb: r.rss_bytes === null || r.rss_bytes === undefined ? w.observed.memory_mb : Math.round(r.rss_bytes / 1e6),
      vram_mb: r.vram_mb ?? w.observed.vram_mb,
      uptime_seconds: r.uptime_s ?? w.observed.uptime_seconds,
    });
    if (r.tokens_per_second != null || r.busy_slots != null) {
      w.observed.metrics = { ...(w.observed.metrics || {}), tokens_per_second: r.tokens_per_second, busy_slots: r.busy_slots };
    }
  }
  for (const g of sample.gpus || []) {
    const d = state.devices && state.devices.items.find((x) => x.device_type !== "cpu" && x.device_id === g.index);
    if (!d) continue;
    Object.assign(d, {
      vram_total_mb: Math.round(g.vram_total_bytes / 1048576),
      vram_available_mb: Math.round(g.vram_free_bytes / 1048576),
      temperature_celsius: g.temperature_celsius,
      utilization_percent: g.utilization_percent,
      power_usage_watts: g.power_watts,
    });
  }
  draw();
}

function setConn(conn, why) {
  state.conn = conn;
  const el = document.getElementById("conn");
  el.dataset.state = conn;
  el.textContent = conn === "live" ? "live" : `reconnecting…`;
  el.title = why || "";
}

async function start() {
  for (const b of document.querySelectorAll("nav.tabs button")) b.addEventListener("click", () => app.show(b.dataset.tab));
  state.health = await getJSON("/health").catch(() => null);
  await loaders.status();
  const since = Math.max(0, (state.status.last_event_id || 0) - 200);
  await Promise.all([loaders.models(), loaders.workers(), loaders.devices(), loaders.runtimes()].map((p) => p.catch(() => null)));
  draw();
  let first = true;
  stream(`/v1/events?since=${since}&samples=true`, {
    reconnect: true,
    onFrame({ event, data }) {
      let body;
      try { body = JSON.parse(data); } catch { return; /* not JSON: ignored */ }
      if (event === "sample") onSample(body);
      else onEvent(body);
    },
    onState: setConn,
    onOpen() {
      // After a reconnect (hive restarted, or the network came back) everything is re-read.
      if (!first) refresh("status", "models", "workers", "devices", "runtimes");
      first = false;
      state.health === null && getJSON("/health").then((x) => { state.health = x; header(); }).catch(() => null);
    },
  });
}

start().catch((err) => {
  document.getElementById("tab-status").textContent = `The dashboard could not start: ${err.message}`;
});
