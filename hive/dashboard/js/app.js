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
/** Figures that change without an event (CPU %, memory, VRAM) are re-read this often, while the tab is visible. */
const RESAMPLE_MS = 10000;

const state = {
  health: null,
  status: null,
  models: [],
  workers: [],
  devices: null,
  runtimes: null,
  events: [],
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
  /** The events this page saw about `Kind/name`. */
  eventsOf(object) { return state.events.filter((e) => e.object === object); },
  show(tab) {
    state.tab = tab;
    for (const b of document.querySelectorAll("nav.tabs button")) b.setAttribute("aria-selected", String(b.dataset.tab === tab));
    for (const s of document.querySelectorAll("section.tab")) s.hidden = s.dataset.panel !== tab;
    if (tab === "workers" && !state.runtimes) refresh("runtimes");
    draw();
  },
};

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
  stream(`/v1/events?since=${since}`, {
    reconnect: true,
    onFrame({ data }) { try { onEvent(JSON.parse(data)); } catch { /* not JSON: ignored */ } },
    onState: setConn,
    onOpen() {
      // After a reconnect (hive restarted, or the network came back) everything is re-read.
      if (!first) refresh("status", "models", "workers", "devices", "runtimes");
      first = false;
      state.health === null && getJSON("/health").then((x) => { state.health = x; header(); }).catch(() => null);
    },
  });
  setInterval(() => {
    if (document.visibilityState === "visible" && state.conn === "live") refresh("status", "workers", "devices");
  }, RESAMPLE_MS);
}

start().catch((err) => {
  document.getElementById("tab-status").textContent = `The dashboard could not start: ${err.message}`;
});
