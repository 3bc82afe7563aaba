// The models panel: the table (filter, sort), a model's detail (desired against observed,
// GGUF facts, download progress, checksum, conditions, owner, last events) and the
// download form; every change goes through the job API.

import { h, fill, bytes, bar, facts, conditions, owner, editable, eventList, duration, time, NA } from "./dom.js";
import { postJob, followJob, getJSON, call, ApiError } from "./api.js";

const SIZES = { "": "any size", small: "< 1 GB", medium: "1–10 GB", large: "> 10 GB" };

function meta(m) { return (m.observed && m.observed.metadata) || {}; }
function size(m) { return (m.observed && m.observed.file_size) || meta(m).size || 0; }
function phase(m) { return (m.status && m.status.phase) || meta(m).status || "Unknown"; }
function partial(m) { const d = m.observed && m.observed.download; return d ? d.bytes_on_disk : 0; }

function sizeClass(n) { return n < 1e9 ? "small" : n <= 1e10 ? "medium" : "large"; }

function sorted(items, ui) {
  const key = ui.sort || "name";
  const by = {
    name: (a, b) => a.name.localeCompare(b.name),
    size: (a, b) => size(b) - size(a),
    date: (a, b) => String(meta(b).added_at || "").localeCompare(String(meta(a).added_at || "")),
  }[key];
  return items.filter((m) =>
    (!ui.arch || meta(m).architecture === ui.arch) &&
    (!ui.status || phase(m) === ui.status) &&
    (!ui.size || sizeClass(size(m)) === ui.size)).sort(by);
}

function select(id, value, options, onchange) {
  return h("select", { id, onchange: (ev) => onchange(ev.target.value) },
    Object.entries(options).map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
}

function progressOf(state, m) {
  const p = state.progress.get(m.name);
  const d = m.observed && m.observed.download;
  if (!p && !d) return null;
  const done = p ? p.bytes_downloaded : d.bytes_on_disk;
  const total = p ? p.total_bytes : (d.total_bytes || null);
  const label = total ? `${bytes(done)} / ${bytes(total)} (${Math.floor((done / total) * 100)}%)` : bytes(done);
  return h("div", { class: "progress" }, bar(total ? done / total : 0, label),
    p ? h("div", { class: "small" }, `${bytes(p.speed_bytes_per_sec)}/s, ETA ${duration(p.eta_seconds)}`) : null);
}

function detail(state, app, m) {
  const md = meta(m);
  const can = editable(m);
  const ui = state.ui.models;
  const gguf = [["format", md.format], ["architecture", md.architecture], ["quantization", md.quantization],
    ["dominant type", md.dominant_type], ["parameters", md.parameter_count], ["context length", md.context_length],
    ["embedding length", md.embedding_length], ["blocks", md.block_count], ["heads", md.head_count], ["KV heads", md.head_count_kv],
    ["GGUF version", md.gguf_version], ["tensors", md.tensor_count], ["keys", md.kv_count]];
  const downloading = Boolean(state.progress.get(m.name) || (m.observed && m.observed.download));
  const actions = h("div", { class: "row" },
    downloading ? h("button", { id: "model-cancel", disabled: !can, onclick: () => cancel(app, m) }, "Cancel download") : null,
    h("button", { id: "model-delete", class: "danger", disabled: !can, onclick: () => remove(app, m) }, "Delete"),
    can ? null : h("span", { class: "muted" }, `read-only: owned by ${owner(m)}; change it there`));
  return h("aside", { class: "detail", id: "model-detail" },
    h("div", { class: "row" }, h("h2", {}, m.name), h("button", { onclick: () => { ui.selected = null; app.draw(); } }, "Close")),
    facts([["phase", phase(m)], ["message", m.status && m.status.message], ["owner", owner(m)],
      ["generation", m.generation ?? NA], ["observed generation", m.status && m.status.observedGeneration]]),
    actions,
    progressOf(state, m),
    h("h3", {}, "Desired against observed"),
    h("div", { class: "two" },
      h("div", {}, h("h4", {}, "declared (spec)"), h("pre", {}, m.spec ? JSON.stringify(m.spec, null, 2) : "not declared by any record")),
      h("div", {}, h("h4", {}, "observed"), facts([["on disk", m.observed ? bytes(size(m)) : "no"], ["partial", m.observed ? String(m.observed.partial) : NA],
        ["path", md.path], ["source", md.source], ["revision", md.revision], ["added", md.added_at], ["last used", md.last_accessed], ["error", md.error || m.observed?.metadata_error]]))),
    h("h3", {}, "Checksum"),
    facts([["SHA-256", md.sha256 || NA], ["verified", md.sha256 ? (md.verified ? "yes, matches the expected checksum" : "recorded, nothing to check it against") : NA]]),
    h("h3", {}, "GGUF"), facts(gguf),
    h("h3", {}, "Conditions"), conditions(m.status && m.status.conditions),
    h("h3", {}, "Last events"), eventList(app.eventsOf(`Model/${m.name}`)));
}

async function runJob(app, operation, fields, logId) {
  const log = document.getElementById(logId);
  const line = (text, cls = "") => { if (log) log.append(h("div", { class: cls }, text)); };
  try {
    const job = await postJob(operation, fields);
    line(`job ${job.job_id}`, "muted");
    const end = await followJob(job.sse_url, (l) => line(l.message || l.human || JSON.stringify(l), `lvl-${l.level || "info"}`));
    line(end === "DONE" ? "done" : end, end === "DONE" ? "ok" : "lvl-error");
    return { job, end };
  } catch (err) {
    line(err instanceof ApiError ? `${err.code}: ${err.message}` : String(err), "lvl-error");
    return null;
  } finally { app.refresh("status", "models"); }
}

async function cancel(app, m) {
  const job = app.state.jobs.get(m.name);
  if (job) {
    await call(`/v1/jobs/${encodeURIComponent(job)}`, { method: "DELETE" }).catch(() => null);
  }
  await runJob(app, "model_delete", { id: m.name }, "model-job-log");
}

async function remove(app, m) {
  if (!window.confirm(`Delete model ${m.name} and its files?`)) return;
  await runJob(app, "model_delete", { id: m.name }, "model-job-log");
  app.state.ui.models.selected = null;
}

function downloadForm(state, app) {
  const ui = state.ui.models;
  const files = h("div", { id: "hub-files", class: "small" });
  const input = h("input", { id: "download-model", name: "model", required: true, placeholder: "org/repo:Q4_K_M, hf://…, https://…, file:///path.gguf" });
  const name = h("input", { id: "download-name", name: "name", placeholder: "name (optional)" });
  const list = async () => {
    const repo = input.value.replace(/^hf:\/\//, "").split(/[:@]/)[0].split("/").slice(0, 2).join("/");
    fill(files, "listing…");
    try {
      const body = await getJSON(`/v1/hub/files?repo=${encodeURIComponent(repo)}`);
      const items = body.files || [];
      fill(files,
        items.length ? null : "no GGUF files in this repository",
        h("ul", { id: "hub-file-list" }, items.map((f) => h("li", {},
          h("a", { href: "#", dataset: { source: f.source }, onclick: (ev) => { ev.preventDefault(); input.value = f.source || `${repo}/${f.path}`; } }, f.path),
          ` ${f.quantization || ""} ${f.size ? bytes(f.size) : ""}${f.parts > 1 ? ` (${f.parts} parts)` : ""}`))),
        body.truncated ? h("div", { class: "muted" }, "(the list was cut short)") : null);
    } catch (err) {
      fill(files, err.status === 404 && /: Not Found$/.test(err.message)
        ? "listing the hub's files is not available on this hive" : `${err.code}: ${err.message}`);
    }
  };
  const form = h("form", { id: "download-form", class: "form", onsubmit: async (ev) => {
    ev.preventDefault();
    const fields = { model: input.value.trim() };
    if (name.value.trim()) fields.name = name.value.trim();
    const log = document.getElementById("model-job-log");
    fill(log);
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    await runJob(app, "model_download", fields, "model-job-log");
    submit.disabled = false;
  } },
  h("h3", {}, "Download a model"),
  h("div", { class: "row" }, input, name, h("button", { type: "button", onclick: list }, "List hub files"), h("button", { type: "submit" }, "Download")),
  files);
  return form;
}

export function renderModels(root, state, app) {
  const ui = state.ui.models;
  const items = state.models || [];
  const archs = { "": "any architecture" };
  for (const m of items) if (meta(m).architecture) archs[meta(m).architecture] = meta(m).architecture;
  const phases = { "": "any status" };
  for (const m of items) phases[phase(m)] = phase(m);
  const shown = sorted(items, ui);
  const selected = ui.selected ? items.find((m) => m.name === ui.selected) : null;
  if (!ui.parts) {
    // Built once: the form keeps what is typed in it while the table below is redrawn.
    ui.parts = { form: downloadForm(state, app), log: h("div", { id: "model-job-log", class: "joblog" }),
      filters: h("div", { class: "row filters" }), table: h("div", { class: "scroll" }), detail: h("div", {}) };
    fill(root, Object.values(ui.parts));
  }
  fill(ui.parts.filters,
      select("model-filter-arch", ui.arch || "", archs, (v) => { ui.arch = v; app.draw(); }),
      select("model-filter-size", ui.size || "", SIZES, (v) => { ui.size = v; app.draw(); }),
      select("model-filter-status", ui.status || "", phases, (v) => { ui.status = v; app.draw(); }),
      select("model-sort", ui.sort || "name", { name: "sort by name", size: "sort by size", date: "sort by date" }, (v) => { ui.sort = v; app.draw(); }));
  fill(ui.parts.table, h("table", { class: "grid", id: "models" },
      h("thead", {}, h("tr", {}, ["name", "size", "architecture", "quantization", "status", "source", "partial"].map((c) => h("th", {}, c)))),
      h("tbody", {}, shown.map((m) => h("tr", { class: `clickable${m.name === ui.selected ? " selected" : ""}`, dataset: { name: m.name, phase: phase(m) }, onclick: () => { ui.selected = m.name; app.draw(); } },
        h("td", {}, m.name), h("td", { class: "num" }, size(m) ? bytes(size(m)) : "—"), h("td", {}, meta(m).architecture || "—"),
        h("td", {}, meta(m).quantization || "—"), h("td", { class: `phase phase-${phase(m)}` }, phase(m)),
        h("td", { class: "small" }, owner(m)), h("td", { class: "num" }, partial(m) ? bytes(partial(m)) : "—"))))),
    shown.length ? null : h("p", { class: "muted" }, items.length ? "no model matches the filters" : "no models yet"));
  fill(ui.parts.detail, selected ? detail(state, app, selected) : null);
  return root;
}

export { time };
