// One job: its state, stage progress and event log live from the SSE stream (replayed from
// the first event), then the quality report with charts, the artifacts, and for hypernetwork
// jobs the training curve.

import { auth, call, get, save, stream } from "./api.js";
import { bars, lines } from "./chart.js";
import { badge, bytes, h, span, terminal, uploadNames } from "./dom.js";

function facts(rows) {
  const items = rows.filter(([, value]) => value !== null && value !== undefined && value !== "");
  return h("dl", { class: "facts" }, items.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : null;
}

function took(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  return span((end - Date.parse(job.started_at)) / 1000);
}

function given(value) {
  return value !== null && value !== undefined && !(typeof value === "object" && !Object.keys(value).length);
}

function requestFacts(request, names) {
  const shown = Object.entries(request).filter(([k, v]) => k !== "dry_run" && given(v));
  const text = (v) => (typeof v === "object" ? JSON.stringify(v) : names.get(v) || v);
  return shown.map(([k, v]) => [k.replaceAll("_", " "), text(v)]);
}

const armed = new Set(); // jobs whose Delete was pressed once: a re-render keeps the question

// Cancel while it runs, delete once it ended (asked twice); only for keys that may write.
function actions(job, refresh) {
  if (auth.scope !== "write") return null;
  if (!terminal(job.status)) {
    const cancel = async () => (await call("POST", `/jobs/${job.id}/cancel`), refresh());
    return h("button", { class: "danger", onclick: cancel, disabled: job.cancel_requested }, "Cancel");
  }
  const remove = async () => {
    if (!armed.has(job.id)) return armed.add(job.id), refresh();
    await call("DELETE", `/jobs/${job.id}`);
    armed.delete(job.id);
    location.hash = "#/";
  };
  return h("button", { class: "danger", onclick: remove }, armed.has(job.id) ? "Delete: sure?" : "Delete");
}

function header(job, refresh, names) {
  const title = h("h1", {}, job.kind === "hypernet" ? "Hypernetwork training " : "Transplant ", h("span", { class: "mono" }, job.id));
  const meta = facts([
    ["status", badge(job.status)],
    ["stage", terminal(job.status) ? null : job.progress.message || job.progress.stage],
    ["created", when(job.created_at)],
    ["started", when(job.started_at)],
    ["finished", when(job.finished_at)],
    ["duration", took(job)],
    ["attempt", job.attempt > 1 ? job.attempt : null],
  ]);
  const error = job.error ? h("p", { class: "error" }, `${job.error.type}: ${job.error.detail || ""}`) : null;
  const parts = [h("div", { class: "bar" }, title, actions(job, refresh)), meta, error];
  return [...parts, h("h2", {}, "Request"), facts(requestFacts(job.request, names))].filter(Boolean);
}

// Each stage's bar: a stage is done once a later one started.
class Stages {
  constructor() {
    this.fractions = new Map();
  }

  tick(stage, fraction) {
    if (!this.fractions.has(stage)) for (const k of this.fractions.keys()) this.fractions.set(k, 1);
    this.fractions.set(stage, Math.max(fraction, this.fractions.get(stage) || 0));
  }

  done() {
    for (const k of this.fractions.keys()) this.fractions.set(k, 1);
  }

  render() {
    return [...this.fractions].map(([stage, f]) =>
      h("div", { class: "stage", "data-stage": stage }, h("span", {}, stage), h("progress", { max: 1, value: f }), h("small", {}, `${Math.round(f * 100)} %`)),
    );
  }
}

function evalCharts(ev, refine) {
  const bpb = [
    { label: "original model", value: ev.before.bits_per_byte, kind: "before" },
    { label: "transplanted", value: ev.after.bits_per_byte, kind: "after" },
  ];
  if (refine?.zero_shot) bpb.splice(1, 0, { label: "zero-shot", value: refine.zero_shot.before, kind: "zero" });
  return [
    bars("bits per byte (lower keeps more quality)", bpb),
    bars("tokens per byte", [
      { label: "original tokenizer", value: ev.before.tokens_per_byte, kind: "before" },
      { label: "new tokenizer", value: ev.after.tokens_per_byte, kind: "after" },
    ]),
    bars("eval tokens whose row was", [
      { label: "copied", value: 100 * ev.copied_share, kind: "before" },
      { label: "predicted", value: 100 * ev.predicted_share, kind: "after" },
    ], " %"),
  ];
}

const round = (x) => Number(x.toFixed(4));

function report(r, names) {
  const ev = r.eval;
  const timings = Object.entries(r.timings || {}).map(([label, value]) => ({ label, value }));
  const charts = [ev ? evalCharts(ev, r.refine) : null, timings.length ? bars("stage timings", timings, " s") : null];
  const summary = facts([
    ["method", r.method],
    ["why", r.method_choice],
    ["hypernetwork", r.hypernet],
    ["eval text", ev ? `${names.get(ev.text) || ev.text}: ${bytes(ev.bytes)} scored` : "none given: no quality figures"],
    ["bits per byte", ev ? `${round(ev.before.bits_per_byte)} → ${round(ev.after.bits_per_byte)} (× ${ev.ratio} the original)` : null],
    ["tokens per byte", ev ? `${round(ev.before.tokens_per_byte)} → ${round(ev.after.tokens_per_byte)}` : null],
    ["vocabulary", `${r.vocab.new_vocab_size} tokens: ${r.vocab.copied} copied, ${r.vocab.predicted} predicted`],
  ]);
  return [h("h2", {}, "Quality report"), summary, h("figure", { class: "charts", "data-chart": "report" }, charts)];
}

function artifactLink(job, file) {
  const url = `/jobs/${job.id}/artifacts/${file.path.split("/").map(encodeURIComponent).join("/")}`;
  const name = file.path.split("/").pop();
  const keyed = (event) => (event.preventDefault(), save(url, name));
  return h("a", { href: url, download: name, onclick: auth.required ? keyed : null }, file.path);
}

function artifacts(job, manifest) {
  const rows = manifest.files.map((f) =>
    h("tr", { "data-path": f.path }, h("td", {}, artifactLink(job, f)), h("td", { class: "num" }, bytes(f.size)), h("td", { class: "mono", title: f.sha256 }, f.sha256.slice(0, 16) + "…")),
  );
  const tar = artifactLink(job, { path: "checkpoint.tar" });
  tar.href = `/jobs/${job.id}/checkpoint.tar`;
  return [
    h("h2", {}, "Artifacts"),
    h("div", { class: "scroll" }, h("table", { class: "artifacts" }, h("thead", {}, h("tr", {}, h("th", {}, "file"), h("th", { class: "num" }, "size"), h("th", {}, "sha256"))), h("tbody", {}, rows))),
    h("p", {}, "All of it as one file: ", tar),
  ];
}

// The hypernetwork's training loss and held-out bits per byte, from the progress events.
class Curve {
  constructor() {
    this.loss = [];
    this.heldOut = new Map();
  }

  add(data) {
    if (data.stage !== "train" || data.step === undefined) return false;
    if (typeof data.loss === "number") this.loss.push([data.step, data.loss]);
    for (const [text, bpb] of Object.entries(data.held_out || {})) {
      if (!this.heldOut.has(text)) this.heldOut.set(text, []);
      this.heldOut.get(text).push([data.step, bpb]);
    }
    return true;
  }

  render() {
    const charts = [];
    if (this.loss.length > 1) charts.push(lines("training loss", [{ name: "loss", kind: "after", points: this.loss }], "step", "loss"));
    const series = [...this.heldOut].map(([name, points], n) => ({ name, kind: `series${n % 4}`, points, dots: true }));
    if (series.length) charts.push(lines("held-out bits per byte", series, "step", "bits/byte"));
    return charts.length ? [h("h2", {}, "Training curve"), h("figure", { class: "charts", "data-chart": "training" }, charts)] : [];
  }
}

function logRow(event) {
  const d = event.data;
  const text = event.event === "state" ? d.status + (d.reason ? ` (${d.reason})` : "") : d.message || "";
  const stage = d.stage ? `${d.stage} ${Math.round((d.fraction || 0) * 100)} %` : "";
  return h("tr", {}, h("td", { class: "num" }, event.id || "–"), h("td", {}, event.event), h("td", {}, stage), h("td", {}, text));
}

// fn, run once on the next frame however often it is asked for (a replay brings many events)
function coalesced(fn) {
  let asked = false;
  return () => {
    if (asked) return;
    asked = true;
    requestAnimationFrame(() => ((asked = false), fn()));
  };
}

export function jobPage(root, id) {
  const top = h("div");
  const stagesBox = h("section", { class: "stages" });
  const results = h("section");
  const curveBox = h("section");
  const log = h("tbody");
  const logHead = h("thead", {}, h("tr", {}, ["#", "event", "stage", "detail"].map((t) => h("th", {}, t))));
  root.replaceChildren(h("p", {}, h("a", { href: "#/" }, "← all jobs")), top, h("h2", {}, "Progress"), stagesBox, results, curveBox, h("h2", {}, "Events"), h("table", { class: "log" }, logHead, log));
  const stages = new Stages();
  const curve = new Curve();
  let job = null;
  let shown = false;
  let names = new Map();
  const failed = (error) => top.replaceChildren(h("p", { class: "error" }, error.message));
  const showResults = async () => {
    shown = true;
    const parts = job.kind === "transplant" ? report(job.result.report, names) : [h("h2", {}, "Result"), facts(Object.entries(job.result.hypernet || {}).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : v]))];
    const more = job.kind === "transplant" ? artifacts(job, await get(`/jobs/${id}/artifacts`)) : [];
    results.replaceChildren(...parts, ...more);
  };
  const render = () => {
    top.replaceChildren(...header(job, refresh, names));
    if (job.status === "succeeded") stages.done();
    stagesBox.replaceChildren(...stages.render());
    if (job.status === "succeeded" && job.result && !shown) showResults().catch(failed);
  };
  const later = coalesced(render);
  const drawCurve = coalesced(() => curveBox.replaceChildren(...curve.render()));
  // The stream orders the states, so the badge shows the newest it told at once (a job that runs
  // for a moment still shows "running"); GET /jobs/{id} fills the rest and may lag by a poll cache.
  let told = null;
  const settle = (j) => told && j.status !== told && setTimeout(refreshSoon, 300);
  const update = (j) => ((job = told ? { ...j, status: told } : j), render(), settle(j));
  const refresh = () => get(`/jobs/${id}`).then(update).catch(failed);
  const tell = (status) => ((told = status), job && ((job = { ...job, status }), render()), refreshSoon());
  const onEvent = (event) => {
    if (event.event === "end" && event.data.status === "deleted") return failed(new Error("This job was deleted."));
    if (event.id || event.event === "end") log.prepend(logRow(event));
    if (event.event === "progress" && event.data.stage) stages.tick(event.data.stage, event.data.fraction || 0);
    if (event.event === "progress" && curve.add(event.data)) drawCurve();
    if (event.event === "state" || event.event === "end") return tell(event.data.status);
    if (job) later();
  };
  const refreshSoon = coalesced(refresh);
  const named = Promise.all([get("/tokenizers"), get("/texts")]).then(([t, x]) => (names = uploadNames(t, x)));
  named.catch(() => {}).finally(refresh);
  return stream(`/jobs/${id}/events`, onEvent, failed);
}
