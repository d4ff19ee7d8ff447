// Elements built from data, never from markup: every string the API sends goes in as text.

const SVG = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG, tag), attrs, children);
}

export function ago(iso, now = Date.now()) {
  return span((now - Date.parse(iso)) / 1000);
}

export function span(seconds) {
  if (!Number.isFinite(seconds)) return "";
  const t = Math.max(0, seconds);
  if (t < 60) return `${t.toFixed(t < 10 ? 1 : 0)} s`;
  if (t < 3600) return `${Math.floor(t / 60)} min ${Math.floor(t % 60)} s`;
  if (t < 86400) return `${Math.floor(t / 3600)} h ${Math.floor((t % 3600) / 60)} min`;
  return `${Math.floor(t / 86400)} d ${Math.floor((t % 86400) / 3600)} h`;
}

export function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) (n /= 1000), i++;
  return `${i ? n.toFixed(n < 10 ? 2 : 1) : n} ${units[i]}`;
}

export function terminal(status) {
  return status === "succeeded" || status === "failed" || status === "canceled";
}

export function badge(status, why = null) {
  return h("span", { class: `badge ${status}`, "data-status": status, title: why }, status);
}

// Upload ids as people know them: "tokenizer.json, 8000 tokens (ea63f8c9)".
export function uploadNames(tokenizers, texts) {
  const names = new Map();
  for (const u of tokenizers.uploads) names.set(u.id, `${u.filename}, ${u.vocab_size} tokens (${u.id.slice(0, 8)})`);
  for (const u of texts.uploads) names.set(u.id, `${u.filename}, ${bytes(u.size)} (${u.id.slice(0, 8)})`);
  return names;
}
