// The workers panel: the table (filter, sort), a worker's detail (desired against observed,
// resources, llama.cpp's performance, the log followed live, kill and restart) and the
// spawn form (job API `worker_spawn`).

import { h, fill, mb, pct, duration, facts, conditions, owner, editable, eventList, graph, NA } from "./dom.js";
import { postJob, followJob, getJSON, send, stream, ApiError } from "./api.js";

function obs(w) { return w.observed || {}; }
function phase(w) { return (w.status && w.status.phase) || obs(w).status || "Unknown"; }

const SORTS = {
  name: (a, b) => a.name.localeCompare(b.name),
  pid: (a, b) => (obs(a).pid || 0) - (obs(b).pid || 0),
  uptime: (a, b) => (obs(b).uptime_seconds || 0) - (obs(a).uptime_seconds || 0),
  cpu: (a, b) => (obs(b).cpu_percent || 0) - (obs(a).cpu_percent || 0),
  memory: (a, b) => (obs(b).memory_mb || 0) - (obs(a).memory_mb || 0),
};

function select(id, value, options, onchange) {
  return h("select", { id, onchange: (ev) => onchange(ev.target.value) },
    Object.entries(options).map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
}

function line(logId, text, cls = "") {
  const log = document.getElementById(logId);
  if (log) log.append(h("div", { class: cls }, text));
}

async function runJob(app, operation, fields, logId) {
  try {
    const job = await postJob(operation, fields);
    line(logId, `job ${job.job_id}`, "muted");
    const end = await followJob(job.sse_url, (l) => line(logId, l.message || l.human || JSON.stringify(l), `lvl-${l.level || "info"}`));
    line(logId, end === "DONE" ? "done" : end, end === "DONE" ? "ok" : "lvl-error");
  } catch (err) {
    line(logId, err instanceof ApiError ? `${err.code}: ${err.message}` : String(err), "lvl-error");
  } finally { app.refresh("status", "workers", "devices"); }
}

/** The log viewer of one worker: built once per selected worker, following the log live. */
function logViewer(ui, name) {
  if (ui.log && ui.log.name === name) return ui.log.node;
  if (ui.log) ui.log.handle.stop();
  const pre = h("pre", { class: "log", id: "worker-log" });
  const node = h("div", {}, h("h3", {}, "Log (following)"), pre);
  const handle = stream(`/v1/workers/${encodeURIComponent(name)}/logs?follow=1&tail=200`, {
    reconnect: true,
    onFrame({ data }) {
      let text = data;
      try { text = JSON.parse(data).line; } catch { /* plain text */ }
      const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(document.createTextNode(`${text}\n`));
      while (pre.childNodes.length > 2000) pre.firstChild.remove();
      if (stick) pre.scrollTop = pre.scrollHeight;
    },
    onState(state) { node.dataset.state = state; },
  });
  ui.log = { name, node, handle };
  return node;
}

/** The worker's resource use over the last 15 minutes (GET /v1/workers/{name}/history). */
function history(ui, name) {
  const box = h("div", { id: "worker-history", class: "graphs" }, "loading…");
  getJSON(`/v1/workers/${encodeURIComponent(name)}/history`).then((body) => {
    const samples = body.samples || [];
    if (!samples.length) { fill(box, h("span", { class: "muted" }, "no samples yet")); return; }
    const mbs = (b) => (b === null || b === undefined ? null : b / 1e6);
    fill(box,
      graph("CPU", samples.map((x) => x.cpu_percent), " %"),
      graph("memory", samples.map((x) => mbs(x.rss_bytes)), " MB"),
      graph("VRAM", samples.map((x) => mbs(x.vram_bytes)), " MB"),
      graph("tokens/s", samples.map((x) => x.tokens_per_second), ""),
      graph("busy slots", samples.map((x) => x.busy_slots), ""));
  }).catch((err) => fill(box, err.status === 404 && /: Not Found$/.test(err.message) ? "resource history is not available on this hive" : err.message));
  return box;
}

function detail(state, app, w) {
  const ui = state.ui.workers;
  const o = obs(w);
  const can = editable(w);
  const m = o.metrics || {};
  const stale = !ui.historyAt || Date.now() - ui.historyAt > 30000;
  if (ui.historyFor !== w.name || stale) { ui.historyFor = w.name; ui.historyAt = Date.now(); ui.history = history(ui, w.name); }
  return h("aside", { class: "detail", id: "worker-detail" },
    h("div", { class: "row" }, h("h2", {}, w.name), h("button", { onclick: () => { ui.selected = null; if (ui.log) { ui.log.handle.stop(); ui.log = null; } app.draw(); } }, "Close")),
    facts([["phase", phase(w)], ["message", w.status && w.status.message], ["owner", owner(w)], ["URL", o.url], ["health", o.health ? (o.health.healthy ? "healthy" : `unhealthy: ${o.health.error || ""}`) : NA]]),
    h("div", { class: "row" },
      h("button", { id: "worker-kill", class: "danger", disabled: !can || !o.pid, onclick: () => kill(app, w) }, "Kill"),
      h("button", { id: "worker-restart", disabled: !o.pid, onclick: () => restart(app, w) }, "Restart"),
      can ? null : h("span", { class: "muted" }, `Kill is read-only here: owned by ${owner(w)}; change it there`)),
    h("div", { id: "worker-job-log", class: "joblog" }),
    h("h3", {}, "Desired against observed"),
    h("div", { class: "two" },
      h("div", {}, h("h4", {}, "declared (spec)"), h("pre", {}, w.spec ? JSON.stringify(w.spec, null, 2) : "not declared by any record")),
      h("div", {}, h("h4", {}, "observed"), facts([["status", o.status], ["PID", o.pid], ["model", o.model], ["device", o.device], ["runtime", o.runtime],
        ["port", o.port], ["restarts", o.restarts], ["last exit", o.last_exit_text], ["started", o.started_at], ["adopted", o.adopted === undefined ? NA : String(o.adopted)]]))),
    h("h3", {}, "Resources (the last 15 minutes)"),
    facts([["CPU", pct(o.cpu_percent)], ["memory", mb(o.memory_mb)], ["VRAM", mb(o.vram_mb)], ["uptime", duration(o.uptime_seconds)]]),
    ui.history,
    h("h3", {}, "Performance (llama.cpp)"),
    o.metrics ? facts([["tokens/s", m.tokens_per_second ?? m.predicted_tokens_seconds], ["busy slots", m.busy_slots ?? m.requests_processing],
      ["tokens generated", m.tokens_generated ?? m.tokens_predicted_total], ["prompt tokens", m.prompt_tokens ?? m.prompt_tokens_total]])
      : h("p", { class: "muted" }, "not available (the runtime serves no metrics, or none read yet)"),
    h("h3", {}, "Conditions"), conditions(w.status && w.status.conditions),
    h("h3", {}, "Last events"), eventList(app.eventsOf(`Worker/${w.name}`)),
    logViewer(ui, w.name));
}

async function kill(app, w) {
  await runJob(app, "worker_kill", { name: w.name }, "worker-job-log");
}

async function restart(app, w) {
  try {
    await send("POST", `/v1/workers/${encodeURIComponent(w.name)}/restart`);
    line("worker-job-log", `restarting ${w.name}`);
  } catch (err) { line("worker-job-log", `${err.code}: ${err.message}`, "lvl-error"); }
  app.refresh("workers");
}

function spawnForm(state, app) {
  const ui = state.ui.workers;
  const model = h("select", { id: "spawn-model", name: "model", required: true });
  const runtime = h("select", { id: "spawn-runtime", name: "runtime" });
  const device = h("select", { id: "spawn-device", name: "device", required: true });
  const name = h("input", { id: "spawn-name", placeholder: "name (optional)" });
  const port = h("input", { id: "spawn-port", type: "number", min: 1, max: 65535, placeholder: "port (auto)" });
  const ctx = h("input", { id: "spawn-ctx", type: "number", min: 0, placeholder: "context length" });
  const batch = h("input", { id: "spawn-batch", type: "number", min: 1, placeholder: "batch size (parallel slots)" });
  const policy = h("select", { id: "spawn-restart", name: "restart_policy", title: "restart policy" },
    ["Always", "OnFailure", "Never"].map((p) => h("option", { value: p }, `restart: ${p}`)));
  const args = h("div", { class: "small muted", id: "spawn-args" });
  const form = h("form", { id: "spawn-form", class: "form", onsubmit: async (ev) => {
    ev.preventDefault();
    const dev = (state.devices && state.devices.items || []).find((d) => d.id === device.value);
    if (!dev) return;
    const fields = { model: model.value, worker: dev.device_type, device: dev.device_id };
    if (runtime.value) fields.runtime = runtime.value;
    if (name.value.trim()) fields.name = name.value.trim();
    if (port.value) fields.port = Number(port.value);
    if (policy.value !== "Always") fields.restart_policy = policy.value;
    const rt = ((state.runtimes && state.runtimes.items) || []).find((r) => r.id === runtime.value);
    const extra = {};
    if (ctx.value && rt && rt.args && rt.args.ctx_size) extra.ctx_size = Number(ctx.value);
    if (batch.value && rt && rt.args && rt.args.parallel) extra.parallel = Number(batch.value);
    if (Object.keys(extra).length) fields.args = extra;
    fill(document.getElementById("spawn-log"));
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    await runJob(app, "worker_spawn", fields, "spawn-log");
    submit.disabled = false;
  } },
  h("h3", {}, "Spawn a worker"),
  h("div", { class: "row" }, h("label", {}, "model ", model), h("label", {}, "device ", device), h("label", {}, "runtime ", runtime)),
  h("div", { class: "row" }, name, port, ctx, batch, policy, h("button", { type: "submit", id: "spawn-submit" }, "Spawn")),
  args, h("div", { id: "spawn-log", class: "joblog" }));
  ui.spawn = { form, model, runtime, device, args };
  return form;
}

/** Fill the spawn form's choices (keeping what is chosen), from the catalog, runtimes and devices. */
function spawnChoices(state) {
  const s = state.ui.workers.spawn;
  const keep = (sel, options) => {
    const value = sel.value || sel.dataset.want || "";
    fill(sel, options.map(([v, label, disabled]) => h("option", { value: v, disabled }, label)));
    if (options.some(([v]) => v === value)) sel.value = value;
  };
  keep(s.model, (state.models || []).filter((m) => (m.status && m.status.phase) === "Available").map((m) => [m.name, m.name]));
  const dev = (state.devices && state.devices.items) || [];
  if (state.ui.workers.wantDevice) { s.device.dataset.want = state.ui.workers.wantDevice; s.device.value = ""; state.ui.workers.wantDevice = null; }
  keep(s.device, dev.map((d) => [d.id, `${d.id} ${d.name}${d.available ? "" : " (unavailable)"}`]));
  const chosen = dev.find((d) => d.id === s.device.value);
  const rts = ((state.runtimes && state.runtimes.items) || []).filter((r) => !chosen || r.worker_type === chosen.device_type);
  keep(s.runtime, [["", "first of its type"], ...rts.map((r) => [r.id, `${r.id}${r.available ? "" : " (unavailable)"}`, !r.available])]);
  s.device.onchange = () => spawnChoices(state);
}

export function renderWorkers(root, state, app) {
  const ui = state.ui.workers;
  const items = state.workers || [];
  if (!ui.parts) {
    ui.parts = { form: spawnForm(state, app), filters: h("div", { class: "row filters" }), table: h("div", { class: "scroll" }), detail: h("div", {}) };
    fill(root, Object.values(ui.parts));
  }
  spawnChoices(state);
  const opts = (label, f) => { const o = { "": label }; for (const w of items) { const v = f(w); if (v) o[v] = v; } return o; };
  fill(ui.parts.filters,
    select("worker-filter-model", ui.model || "", opts("any model", (w) => obs(w).model || (w.spec && w.spec.model)), (v) => { ui.model = v; app.draw(); }),
    select("worker-filter-device", ui.device || "", opts("any device", (w) => obs(w).device || (w.spec && w.spec.device)), (v) => { ui.device = v; app.draw(); }),
    select("worker-filter-status", ui.status || "", opts("any status", phase), (v) => { ui.status = v; app.draw(); }),
    select("worker-sort", ui.sort || "name", { name: "sort by name", pid: "sort by PID", uptime: "sort by uptime", cpu: "sort by CPU", memory: "sort by memory" }, (v) => { ui.sort = v; app.draw(); }));
  const shown = items.filter((w) =>
    (!ui.model || (obs(w).model || (w.spec && w.spec.model)) === ui.model) &&
    (!ui.device || (obs(w).device || (w.spec && w.spec.device)) === ui.device) &&
    (!ui.status || phase(w) === ui.status)).sort(SORTS[ui.sort || "name"]);
  fill(ui.parts.table, h("table", { class: "grid", id: "workers" },
    h("thead", {}, h("tr", {}, ["name", "PID", "model", "device", "runtime", "status", "CPU", "memory", "VRAM", "uptime", "restarts"].map((c) => h("th", {}, c)))),
    h("tbody", {}, shown.map((w) => { const o = obs(w); return h("tr", { class: `clickable${w.name === ui.selected ? " selected" : ""}`, dataset: { name: w.name, phase: phase(w) }, onclick: () => { ui.selected = w.name; app.draw(); } },
      h("td", {}, w.name), h("td", { class: "num" }, o.pid ?? "—"), h("td", {}, o.model || (w.spec && w.spec.model) || "—"),
      h("td", {}, o.device || (w.spec && w.spec.device) || "—"), h("td", {}, o.runtime || (w.spec && w.spec.runtime) || "—"),
      h("td", { class: `phase phase-${phase(w)}` }, phase(w)), h("td", { class: "num" }, o.cpu_percent === undefined ? "—" : pct(o.cpu_percent)),
      h("td", { class: "num" }, o.memory_mb === undefined ? "—" : mb(o.memory_mb)), h("td", { class: "num" }, o.vram_mb === null || o.vram_mb === undefined ? "—" : mb(o.vram_mb)),
      h("td", { class: "num" }, o.uptime_seconds === undefined ? "—" : duration(o.uptime_seconds)), h("td", { class: "num" }, o.restarts ?? 0)); }))),
  shown.length ? null : h("p", { class: "muted" }, items.length ? "no worker matches the filters" : "no workers yet"));
  const selected = ui.selected ? items.find((w) => w.name === ui.selected) : null;
  if (!selected && ui.log) { ui.log.handle.stop(); ui.log = null; }
  fill(ui.parts.detail, selected ? detail(state, app, selected) : null);
  return root;
}

/** Open the spawn form with `deviceId` chosen (the devices panel's button). */
export function spawnOn(state, deviceId) { state.ui.workers.wantDevice = deviceId; }
