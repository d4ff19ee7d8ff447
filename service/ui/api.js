// The page's client of the HTTP API: the same calls, key and conditional requests a script
// would make. Polls wait as long as the server's Retry-After asks, back off (with jitter) while
// the server fails, and pause while the tab is hidden.

const KEY = "tokengraft.key";

export const auth = { key: sessionStorage.getItem(KEY), required: false, scope: "read" };

export function useKey(key) {
  auth.key = key || null;
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export class Problem extends Error {
  constructor(status, body, retryAfter = null) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.retryAfter = retryAfter;
  }

  get fields() {
    return this.body.errors || [];
  }
}

function headers(more = {}) {
  return auth.key ? { ...more, Authorization: `Bearer ${auth.key}` } : { ...more };
}

function retryAfter(response) {
  const seconds = Number(response.headers.get("Retry-After"));
  return Number.isFinite(seconds) && seconds > 0 ? seconds : null;
}

async function problem(response) {
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) window.dispatchEvent(new Event("tokengraft:unauthorized"));
  return new Problem(response.status, body || {}, retryAfter(response));
}

export async function call(method, path, { json, form, etag } = {}) {
  const init = { method, headers: headers() };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  }
  if (form) init.body = form;
  if (etag) init.headers["If-None-Match"] = etag;
  const response = await fetch(path, init);
  if (!response.ok && response.status !== 304) throw await problem(response);
  const answer = { status: response.status, etag: response.headers.get("ETag"), data: null };
  answer.retryAfter = retryAfter(response);
  if (response.status !== 304 && response.status !== 204) answer.data = await response.json();
  return answer;
}

export const get = async (path) => (await call("GET", path)).data;
export const post = async (path, json) => (await call("POST", path, { json })).data;

export function upload(kind, file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return call("POST", `/${kind}`, { form }).then((a) => a.data);
}

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
const jitter = (ms) => ms * (0.5 + Math.random() / 2);
const backoff = (failures) => jitter(Math.min(30000, 1000 * 2 ** failures));

function visible() {
  if (!document.hidden) return Promise.resolve();
  return new Promise((done) => document.addEventListener("visibilitychange", done, { once: true }));
}

// Calls onData with each new answer of GET path (304s cost no body); returns stop().
export function poll(path, onData, onError = () => {}) {
  let etag = null;
  let stopped = false;
  let failures = 0;
  (async () => {
    while (!stopped) {
      let wait;
      try {
        const answer = await call("GET", path, { etag });
        failures = 0;
        if (answer.status !== 304 && !stopped) (etag = answer.etag), onData(answer.data);
        wait = (answer.retryAfter || 2) * 1000;
      } catch (error) {
        onError(error);
        if (error.status >= 400 && error.status < 500 && error.status !== 429) return;
        wait = error.retryAfter ? error.retryAfter * 1000 : backoff(++failures);
      }
      await sleep(wait);
      await visible();
    }
  })();
  return () => (stopped = true);
}

// One SSE event from its lines; null for a comment-only block.
function parseEvent(lines, state) {
  const event = { event: "message" };
  let data = null;
  for (const line of lines) {
    if (line.startsWith(":")) continue;
    const at = line.indexOf(":");
    const field = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    if (field === "data") data = data === null ? value : `${data}\n${value}`;
    else if (field === "retry" && /^\d+$/.test(value)) state.retry = Number(value);
    else if (field === "id") state.last = event.id = value;
    else if (field === "event") event.event = value;
  }
  if (data === null) return null;
  event.data = JSON.parse(data);
  return event;
}

// Reads one connection; true once the stream's `end` event came, unless it only said that the
// server stops (then the caller reconnects, as it does after a dropped connection).
async function readStream(body, onEvent, state) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    const blocks = buffer.split(/\r?\n\r?\n/);
    buffer = blocks.pop();
    for (const block of blocks) {
      const event = parseEvent(block.split(/\r?\n/), state);
      if (event) onEvent(event);
      if (event && event.event === "end" && !event.data.reason) return true;
    }
  }
}

// Server-Sent Events over fetch (EventSource cannot send an Authorization header): reconnects
// with Last-Event-ID after the server's `retry`, backing off while it fails. Returns stop().
export function stream(path, onEvent, onError = () => {}) {
  const abort = new AbortController();
  const state = { last: null, retry: 1000 };
  (async () => {
    for (let failures = 0; !abort.signal.aborted; ) {
      try {
        const more = state.last ? { "Last-Event-ID": state.last } : {};
        const init = { headers: headers({ Accept: "text/event-stream", ...more }) };
        const response = await fetch(path, { ...init, signal: abort.signal });
        if (!response.ok) throw await problem(response);
        failures = 0;
        if (await readStream(response.body, onEvent, state)) return;
      } catch (error) {
        if (abort.signal.aborted) return;
        onError(error);
        if (error.status >= 400 && error.status < 500 && error.status !== 429) return;
        failures += 1;
      }
      await sleep(failures ? Math.max(state.retry, backoff(failures)) : state.retry);
    }
  })();
  return () => abort.abort();
}

// A download the browser saves: a plain link where no key is needed, else fetched with the
// key (a link cannot carry the Authorization header) and handed over as a blob.
export async function save(url, name) {
  const response = await fetch(url, { headers: headers() });
  if (!response.ok) throw await problem(response);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}
