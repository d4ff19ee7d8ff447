// Start a transplant: the choices come from the catalog (GET /models, /tokenizers, /texts,
// /methods); "Check" sends the request as a dry run and shows the API's errors field by field.

import { get, post, upload } from "./api.js";
import { bytes, h } from "./dom.js";

function choices(id, entries) {
  return h("datalist", { id }, entries.map(([value, label]) => h("option", { value }, label)));
}

function field(name, label, input, help = "") {
  return h(
    "div",
    { class: "field", "data-field": name },
    h("label", { for: `f-${name}` }, label),
    input,
    help ? h("small", { class: "muted" }, help) : null,
    h("small", { class: "error" }),
  );
}

const text = (name, attrs = {}) => h("input", { id: `f-${name}`, name, autocomplete: "off", ...attrs });

// "k=v" lines as the options object: numbers and true/false as such, the rest as text.
export function parseOptions(lines) {
  const options = {};
  for (const line of lines.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`option "${line}" is not key=value`);
    const raw = line.slice(at + 1).trim();
    const number = raw !== "" && !Number.isNaN(Number(raw));
    options[line.slice(0, at).trim()] = raw === "true" ? true : raw === "false" ? false : number ? Number(raw) : raw;
  }
  return options;
}

function uploader(kind, accept, target, onDone) {
  const input = h("input", { type: "file", accept, "data-upload": kind });
  input.addEventListener("change", async () => {
    const file = input.files[0];
    if (!file) return;
    const note = target.parentElement.querySelector(".error");
    try {
      const row = await upload(kind, file);
      target.value = row.id;
      note.textContent = "";
      onDone(row);
    } catch (error) {
      note.textContent = error.message;
    }
  });
  return input;
}

function request(form) {
  const value = (name) => form.elements[name].value.trim();
  const body = { model: value("model"), tokenizer: value("tokenizer") };
  for (const name of ["method", "eval_text", "hypernet", "donor"]) if (value(name)) body[name] = value(name);
  if (value("eval_bytes")) body.eval_bytes = Number(value("eval_bytes"));
  body.options = parseOptions(form.elements.options.value);
  return body;
}

function clearErrors(form) {
  form.querySelectorAll(".error").forEach((e) => (e.textContent = ""));
  form.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
}

// Each validation error next to its field; what names no field goes above the buttons.
function showErrors(form, error) {
  const general = form.querySelector(".outcome");
  const fields = error.fields || [];
  let placed = 0;
  for (const e of fields) {
    const name = e.loc?.[0] === "body" ? e.loc[1] : null;
    const box = name && form.querySelector(`[data-field="${name}"]`);
    if (!box) continue;
    box.classList.add("invalid");
    box.querySelector(".error").textContent = e.type === "string_too_short" ? "required" : e.msg;
    placed += 1;
  }
  general.className = "outcome error";
  general.textContent = placed === fields.length && placed ? "Please fix the fields marked." : error.message;
}

async function submit(form, dryRun) {
  clearErrors(form);
  const outcome = form.querySelector(".outcome");
  outcome.className = "outcome muted";
  outcome.textContent = dryRun ? "Checking…" : "Submitting…";
  try {
    const body = { ...request(form), dry_run: dryRun };
    const answer = await post("/transplant", body);
    if (!dryRun) return (location.hash = `#/jobs/${answer.id}`);
    outcome.className = "outcome ok";
    outcome.textContent = "Valid: the server would accept this transplant.";
  } catch (error) {
    showErrors(form, error);
  }
}

function describe(methods, select) {
  const help = select.parentElement.querySelector("small.muted");
  const chosen = methods.find((m) => m.name === select.value);
  help.textContent = chosen ? chosen.description + (chosen.needs.length ? ` Needs: ${chosen.needs.join(", ")}.` : "") : "hypernet+hybrid where a hypernetwork was trained for the model, else hybrid";
}

export async function newJob(root) {
  root.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  const [models, tokenizers, texts, methods] = await Promise.all(["/models", "/tokenizers", "/texts", "/methods"].map(get));
  const model = text("model", { list: "models", required: true, placeholder: "smollm2-135m" });
  const tokenizer = text("tokenizer", { list: "tokenizers", required: true, placeholder: "an uploaded id, a store name or a hub id" });
  const evalText = text("eval_text", { list: "texts", placeholder: "a corpus name or an uploaded text id" });
  const tokList = choices("tokenizers", [...tokenizers.uploads.map((u) => [u.id, `${u.filename}, ${u.vocab_size} tokens`]), ...tokenizers.store.map((t) => [t.name, t.source])]);
  const textList = choices("texts", [...texts.corpora.map((c) => [c, "corpus"]), ...texts.uploads.map((u) => [u.id, `${u.filename}, ${bytes(u.size)}`])]);
  const method = h("select", { id: "f-method", name: "method" }, h("option", { value: "" }, "default"), methods.methods.map((m) => h("option", { value: m.name }, m.name)));
  method.addEventListener("change", () => describe(methods.methods, method));
  const addTokenizer = (row) => tokList.prepend(h("option", { value: row.id }, `${row.filename}, ${row.vocab_size} tokens`));
  const addText = (row) => textList.prepend(h("option", { value: row.id }, row.filename));
  const form = h(
    "form",
    { class: "new", novalidate: true },
    field("model", "Base model", model),
    choices("models", models.models.map((m) => [m.name, m.source])),
    field("tokenizer", "Target tokenizer", tokenizer, "or upload a tokenizer.json: "),
    tokList,
    field("method", "Method", method, " "),
    field("options", "Options", h("textarea", { id: "f-options", name: "options", rows: 3, placeholder: "k=8\ntemperature=0.1" }), "one key=value per line"),
    field("eval_text", "Eval text", evalText, "or upload a text file: "),
    textList,
    field("eval_bytes", "Eval bytes", text("eval_bytes", { type: "number", min: 1, placeholder: "all of it" })),
    field("hypernet", "Hypernetwork", text("hypernet", { placeholder: "for hypernet methods: a store name" })),
    field("donor", "Donor model", text("donor", { placeholder: "for omp: a model that already speaks the new tokenizer" })),
    h("p", { class: "outcome" }),
    h("div", { class: "buttons" }, h("button", { type: "button", "data-action": "check", onclick: () => submit(form, true) }, "Check"), h("button", { type: "submit", class: "primary" }, "Start transplant")),
  );
  form.querySelector('[data-field="tokenizer"] small.muted').append(uploader("tokenizers", ".json,application/json", tokenizer, addTokenizer));
  form.querySelector('[data-field="eval_text"] small.muted').append(uploader("texts", ".txt,text/plain", evalText, addText));
  describe(methods.methods, method);
  form.addEventListener("submit", (event) => (event.preventDefault(), submit(form, false)));
  root.replaceChildren(h("h1", {}, "New transplant"), form);
}
