// The API client of the page: the token (this tab's sessionStorage only), JSON requests, the
// job API and a fetch()-based Server-Sent Events reader (EventSource cannot send headers).

const TOKEN_KEY = "hive-token";
let asking = null; // the open token prompt, shared by every request that got a 401

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function headers(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : { ...extra };
}

/** Show the token dialog (once for all waiting requests); resolves when a token is typed. */
export function askToken(why) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  document.getElementById("token-why").textContent = why;
  input.value = "";
  asking = new Promise((resolve) => {
    const submit = (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      form.removeEventListener("submit", submit);
      dialog.close();
      asking = null;
      resolve();
    };
    form.addEventListener("submit", submit);
  });
  if (!dialog.open) dialog.showModal();
  return asking;
}

const ASK = "The API answered 401: type the token hive was started with (--token / HIVE_TOKEN). It is kept in this tab only.";
const REFUSED = "That token was refused (401): type the token hive was started with.";

/** fetch() with the token; a 401 asks for the token and tries again. */
export async function call(path, init = {}) {
  let refused = false;
  for (;;) {
    const sent = token();
    const answer = await fetch(path, { ...init, headers: headers(init.headers) });
    if (answer.status !== 401) return answer;
    refused = refused || Boolean(sent);
    await askToken(refused ? REFUSED : ASK);
    refused = true;
  }
}

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || String(status);
    this.body = body;
  }
}

async function parse(answer) {
  const text = await answer.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { error: { message: text.slice(0, 500) } }; }
  if (!answer.ok) throw new ApiError(answer.status, body);
  return body;
}

export async function getJSON(path) { return parse(await call(path)); }

export async function send(method, path, body) {
  const init = { method };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers = { "Content-Type": "application/json" }; }
  return parse(await call(path, init));
}

/** POST /v1/jobs: the dashboard is just another client of the job API. */
export function postJob(operation, fields) { return send("POST", "/v1/jobs", { operation, ...fields }); }

/**
 * Read a Server-Sent Events stream with fetch(): `onFrame({id, event, data})` per frame. With
 * `reconnect`, a stream that ends or fails is opened again after a pause, sending the
 * last id as `Last-Event-ID`; `onState("live" | "reconnecting", why)` says which.
 * Returns a handle whose stop() ends it.
 */
export function stream(path, { onFrame, onState = () => {}, reconnect = false, onOpen = () => {} }) {
  const control = new AbortController();
  let lastId = null;
  let stopped = false;
  const run = async () => {
    let pause = 500;
    while (!stopped) {
      let why = "the stream ended";
      try {
        const extra = { Accept: "text/event-stream" };
        if (lastId !== null) extra["Last-Event-ID"] = lastId;
        const answer = await call(path, { headers: extra, signal: control.signal, cache: "no-store" });
        if (!answer.ok) {
          const err = await parse(answer).catch((e) => e);
          throw err instanceof Error ? err : new Error(`HTTP ${answer.status}`);
        }
        onState("live", "");
        await onOpen();
        pause = 500;
        const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        let frame = { id: null, event: "message", data: [] };
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let nl;
          while ((nl = buffer.search(/\r\n|\n|\r/)) >= 0) {
            const line = buffer.slice(0, nl);
            buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
            if (line === "") {
              if (frame.data.length) {
                // A frame without an id (hive's `event: sample`) does not move Last-Event-ID.
                if (frame.id !== null) lastId = frame.id;
                onFrame({ id: frame.id, event: frame.event, data: frame.data.join("\n") });
              }
              frame = { id: null, event: "message", data: [] };
            } else if (!line.startsWith(":")) {
              const colon = line.indexOf(":");
              const field = colon < 0 ? line : line.slice(0, colon);
              let val = colon < 0 ? "" : line.slice(colon + 1);
              if (val.startsWith(" ")) val = val.slice(1);
              if (field === "data") frame.data.push(val);
              else if (field === "id") frame.id = val;
              else if (field === "event") frame.event = val;
            }
          }
        }
      } catch (err) {
        if (stopped) return;
        why = err && err.message ? err.message : String(err);
      }
      if (!reconnect || stopped) { onState("ended", why); return; }
      onState("reconnecting", why);
      await new Promise((r) => setTimeout(r, pause));
      pause = Math.min(pause * 2, 5000);
    }
  };
  run();
  return { stop() { stopped = true; control.abort(); } };
}

/** Follow a job's stream: `onLine(line)` per JSON line; resolves with "DONE", "ERROR …" or "CANCELLED". */
export function followJob(sseUrl, onLine) {
  return new Promise((resolve) => {
    let ended = false;
    const handle = stream(sseUrl, {
      onFrame({ data }) {
        if (data.startsWith("[")) {
          ended = true;
          handle.stop();
          resolve(data.slice(1, data.indexOf("]")) + data.slice(data.indexOf("]") + 1));
          return;
        }
        try { onLine(JSON.parse(data)); } catch { onLine({ message: data }); }
      },
      onState(state, why) { if (state === "ended" && !ended) resolve(`ERROR ${why}`); },
    });
  });
}
