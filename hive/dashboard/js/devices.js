// The devices panel: a card per device with real numbers (or "not available"), coloured
// green (available), yellow (in use) or red (unavailable), and a button to spawn on it.

import { h, fill, bar, mb, pct, NA } from "./dom.js";
import { spawnOn } from "./workers.js";

export function renderDevices(root, state, app) {
  const body = state.devices;
  if (!body) return fill(root, h("p", {}, "loading…"));
  const cards = body.items.map((d) => {
    const level = !d.available ? "bad" : d.in_use ? "warn" : "ok";
    const used = d.vram_total_mb !== null && d.vram_available_mb !== null ? d.vram_total_mb - d.vram_available_mb : null;
    return h("div", { class: `card device ${level}`, dataset: { device: d.id } },
      h("h3", {}, d.id, " ", h("span", { class: "muted" }, d.device_type)),
      h("div", {}, d.name, d.vendor ? ` (${d.vendor})` : ""),
      h("div", { class: "metric" }, d.device_type === "cpu" ? "RAM " : "VRAM ",
        used === null ? NA : bar(used / (d.vram_total_mb || 1), `${mb(used)} / ${mb(d.vram_total_mb)}`, level === "bad" ? "bad" : used / (d.vram_total_mb || 1) > 0.9 ? "warn" : "ok")),
      h("table", { class: "facts" }, h("tbody", {},
        h("tr", {}, h("th", {}, "state"), h("td", {}, !d.available ? "unavailable" : d.in_use ? "in use" : "available")),
        h("tr", {}, h("th", {}, "temperature"), h("td", {}, d.temperature_celsius === null ? NA : `${d.temperature_celsius} °C`)),
        h("tr", {}, h("th", {}, "utilisation"), h("td", {}, pct(d.utilization_percent))),
        h("tr", {}, h("th", {}, "power"), h("td", {}, d.power_usage_watts === null ? NA : `${d.power_usage_watts} W`)),
        h("tr", {}, h("th", {}, "workers"), h("td", {}, d.workers.length ? d.workers.join(", ") : "none")))),
      h("button", { class: "spawn-here", disabled: !d.available, onclick: () => { spawnOn(state, d.id); app.show("workers"); document.getElementById("spawn-form")?.scrollIntoView(); } }, "Spawn a worker here"));
  });
  return fill(root,
    body.gpu_error ? h("p", { class: "lvl-error" }, `GPUs: ${body.gpu_error}`) : null,
    h("div", { class: "cards" }, cards));
}
