// The job board: one page of GET /jobs (newest first), polled with If-None-Match so an
// unchanged board costs a 304; filters by status; cursor pagination.

import { get, poll } from "./api.js";
import { ago, badge, h, span, terminal, uploadNames } from "./dom.js";

const STATUSES = ["", "queued", "running", "succeeded", "failed", "canceled"];

function link(params) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString();
  return `#/${query ? `?${query}` : ""}`;
}

function method(job) {
  if (job.kind === "hypernet") return "hypernet training";
  return job.request.method || job.result?.report?.method || "default";
}

function duration(job, now) {
  if (!job.started_at) return "";
  const end = job.finished_at ? Date.parse(job.finished_at) : now;
  return span((end - Date.parse(job.started_at)) / 1000);
}

function progress(job) {
  if (job.status !== "running") return null;
  const { stage, fraction } = job.progress;
  const bar = h("progress", { max: 1, value: fraction });
  return h("div", { class: "mini" }, bar, h("small", {}, stage || ""));
}

function row(job, names, now) {
  const tokenizer = job.request.tokenizer || "";
  return h(
    "tr",
    { "data-job-id": job.id, "data-status": job.status },
    h("td", {}, h("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id.slice(0, 12))),
    h("td", {}, badge(job.status, job.error?.detail), progress(job)),
    h("td", {}, method(job)),
    h("td", {}, job.request.model || ""),
    h("td", { title: tokenizer }, names.get(tokenizer) || tokenizer || job.request.name || ""),
    h("td", { title: job.created_at, class: "nowrap" }, ago(job.created_at, now)),
    h("td", { class: "nowrap" }, duration(job, now)),
  );
}

const HEAD = ["job", "status", "method", "base model", "tokenizer", "age", "duration"];

export function board(root, params) {
  const status = params.get("status") || "";
  const cursor = params.get("cursor") || "";
  const query = new URLSearchParams({ limit: "50" });
  if (status) query.set("status", status);
  if (cursor) query.set("cursor", cursor);
  let names = new Map();
  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: 7, class: "muted" }, "Loading…")));
  const pager = h("nav", { class: "pager" });
  const filters = STATUSES.map((s) =>
    h("a", { href: link({ status: s }), class: s === status ? "on" : "" }, s || "all"),
  );
  root.replaceChildren(
    h("div", { class: "bar" }, h("h1", {}, "Jobs"), h("nav", { class: "filters" }, filters)),
    h("div", { class: "scroll" }, h("table", { class: "jobs" }, h("thead", {}, h("tr", {}, HEAD.map((t) => h("th", {}, t)))), body)),
    pager,
  );
  let page = null;
  const render = () => {
    const now = Date.now();
    const rows = page.jobs.map((job) => row(job, names, now));
    const empty = h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No jobs."));
    body.replaceChildren(...(rows.length ? rows : [empty]));
    const newest = cursor ? h("a", { href: link({ status }) }, "← newest") : null;
    const older = page.next_cursor
      ? h("a", { href: link({ status, cursor: page.next_cursor }) }, "older →")
      : null;
    pager.replaceChildren(...[newest, older].filter(Boolean));
    if (!performance.getEntriesByName("board-rendered").length) performance.mark("board-rendered");
  };
  const failed = (error) => body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "error" }, error.message)));
  const stop = poll(`/jobs?${query}`, (data) => ((page = data), render()), failed);
  // uploaded tokenizers are listed by their file names rather than their ids
  Promise.all([get("/tokenizers"), get("/texts")])
    .then(([tokenizers, texts]) => (names = uploadNames(tokenizers, texts)))
    .then(() => page && render())
    .catch(() => {});
  const clock = setInterval(() => page && page.jobs.some((j) => !terminal(j.status)) && render(), 5000);
  return () => (stop(), clearInterval(clock));
}
