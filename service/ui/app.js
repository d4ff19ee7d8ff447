// The dashboard's entry: asks GET /access what this tab's key may do (asking for a key where
// the server wants one), then routes #/ (board), #/jobs/<id> and #/new.

import { auth, get, useKey } from "./api.js";
import { board } from "./board.js";
import { h } from "./dom.js";
import { newJob } from "./form.js";
import { jobPage } from "./job.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
let leave = () => {};

function keyForm(message) {
  const input = h("input", { type: "password", name: "key", autocomplete: "off", placeholder: "tg_…", required: true });
  const form = h("form", { class: "key" }, h("h1", {}, "API key"), h("p", {}, message), input, h("button", { class: "primary" }, "Use this key"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    useKey(input.value.trim());
    start();
  });
  return form;
}

function navigation() {
  const signOut = () => (useKey(null), start());
  nav.replaceChildren(
    h("a", { href: "#/" }, "Jobs"),
    auth.scope === "write" ? h("a", { href: "#/new", "data-action": "new" }, "New transplant") : null,
    auth.required ? h("span", { class: "muted", "data-scope": auth.scope }, auth.scope === "write" ? "key: read and write" : "key: read only") : null,
    auth.required ? h("button", { class: "link", onclick: signOut }, "forget key") : null,
  );
}

function route() {
  leave();
  leave = () => {};
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const job = path.match(/^\/jobs\/([A-Za-z0-9]+)$/);
  if (job) leave = jobPage(view, job[1]);
  else if (path === "/new" && auth.scope === "write") newJob(view).catch((e) => view.replaceChildren(h("p", { class: "error" }, e.message)));
  else leave = board(view, new URLSearchParams(query));
}

async function start() {
  try {
    Object.assign(auth, { required: false, scope: "read" }, await accessOf());
  } catch (error) {
    nav.replaceChildren();
    const message = auth.key ? `That key was refused (${error.message}). Enter another.` : "This server needs an API key. It stays in this tab only.";
    return view.replaceChildren(keyForm(message));
  }
  navigation();
  route();
}

async function accessOf() {
  const access = await get("/access");
  return { required: access.keys_required, scope: access.scope };
}

window.addEventListener("hashchange", route);
window.addEventListener("tokengraft:unauthorized", () => auth.required && start());
start();
