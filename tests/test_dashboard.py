"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against
`tokengraft serve` (API only) and a `tokengraft worker` process on a temp data dir.

The page sends a strict Content-Security-Policy, which these tests keep on: every wait is a
locator's (Playwright's string predicates would need `eval`), and a page that logs an error
(a CSP violation among them) fails the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tiny
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from test_service_e2e import Server, sse, tokengraft
from test_service_hypernets import TRAIN

from service import keys
from service.config import Settings
from service.services import Services

CHROMIUM = os.environ.get("TOKENGRAFT_CHROMIUM") or shutil.which("chromium")
ANSWERED_4XX = "Failed to load resource: the server responded with a status of 4"
LONG = 120_000  # ms: a worker's start (torch) and a tiny transplant, on a busy machine
# ms: every other wait, where Playwright's default is 5 s: the board and the job page learn of
# a change at their next poll (Retry-After: 2 s), which a busy machine can push past 5 s
WAIT = 20_000

# Records every status the job page's badge shows, so a test can tell that the page went
# through each state by itself (no reload), not only where it ended.
WATCH_BADGE = """() => {
  window.marker = "no reload";
  window.seen = [];
  const record = (badge) => {
    const status = badge && badge.dataset.status;
    if (status && window.seen.at(-1) !== status) window.seen.push(status);
  };
  // every badge the page rendered, even two renders between one observer callback
  const rendered = (mutations) => {
    for (const added of mutations.flatMap((m) => [...m.addedNodes])) {
      if (added.nodeType !== Node.ELEMENT_NODE) continue;
      const selector = "dl.facts .badge";
      record(added.matches(selector) ? added : added.querySelector(selector));
    }
  };
  const view = document.getElementById("view");
  new MutationObserver(rendered).observe(view, {subtree: true, childList: true});
  record(document.querySelector("dl.facts .badge"));
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.fail(
            "no Chromium: install.sh installs Debian's chromium (or set TOKENGRAFT_CHROMIUM)"
        )
    expect.set_options(timeout=WAIT)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


class Tab:
    """A page in a fresh context (its own sessionStorage) that keeps what the page logged."""

    def __init__(self, browser: Browser, server: Server) -> None:
        self.context = browser.new_context(accept_downloads=True)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(server.url + "/")

    def _console(self, message: ConsoleMessage) -> None:
        """Errors the page logged; a 4xx answer is one the page shows (a refused key, a
        dry run's errors), which Chromium logs too."""
        if message.type == "error" and not message.text.startswith(ANSWERED_4XX):
            self.errors.append(message.text)

    def download(self, link_text: str) -> bytes:
        with self.page.expect_download() as pending:
            table = self.page.locator("table.artifacts")
            table.get_by_role("link", name=link_text, exact=True).click()
        return Path(pending.value.path()).read_bytes()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def api(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """`tokengraft serve` without a worker; hypernetworks (its and the workers') are published
    into the test's store, not the user's."""
    monkeypatch.setenv("TOKENGRAFT_HYPERNETS_DIR", str(settings.hypernets_dir))
    server = Server(settings, tmp_path, worker=False)
    yield server
    server.stop()


class Worker:
    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.process = tokengraft("worker", settings=settings, log=tmp / "worker.log")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[callable]:
    started: list[Worker] = []
    yield lambda: started.append(Worker(settings, tmp_path)) or started[-1]
    for w in started:
        if w.process.poll() is None:
            w.stop()


def fill_form(page: Page, settings: Settings) -> None:
    page.get_by_role("link", name="New transplant").click()
    page.fill("#f-model", "tiny")
    tokenizer = settings.tokenizers_dir / "sp" / "tokenizer.json"
    page.set_input_files("[data-upload=tokenizers]", str(tokenizer))
    expect(page.locator("#f-tokenizer")).not_to_have_value("")
    page.select_option("#f-method", "subword")
    page.fill("#f-eval_text", "fox")


def check_errors_inline(page: Page) -> None:
    """A dry run's problem+json, field by field; then the valid request passes the check."""
    page.fill("#f-eval_bytes", "0")
    page.click("[data-action=check]")
    field = page.locator("[data-field=eval_bytes]")
    expect(field).to_have_class("field invalid")
    expect(field.locator(".error")).to_contain_text("greater than or equal to 1")
    page.fill("#f-eval_bytes", "")
    page.select_option("#f-method", "omp")
    page.click("[data-action=check]")
    expect(page.locator(".outcome")).to_contain_text("needs a donor model")
    page.select_option("#f-method", "subword")
    page.click("[data-action=check]")
    expect(page.locator(".outcome.ok")).to_contain_text("Valid")


def submit_job(http: httpx.Client, settings: Settings) -> str:
    body = {"model": "tiny", "tokenizer": "sp", "method": "subword"}
    response = http.post("/transplant", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_submit_watch_download_cancel(
    api: Server, worker: callable, settings: Settings, browser: Browser
) -> None:
    tab = Tab(browser, api)
    page = tab.page
    expect(page.locator("table.jobs")).to_contain_text("No jobs.")
    fill_form(page, settings)
    check_errors_inline(page)
    page.click("button[type=submit]")
    page.wait_for_url("**/#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("dl.facts .badge")).to_have_attribute("data-status", "queued")
    page.evaluate(WATCH_BADGE)

    running = worker()
    expect(page.locator("dl.facts .badge")).to_have_attribute(
        "data-status", "succeeded", timeout=LONG
    )
    assert page.evaluate("window.seen") == ["queued", "running", "succeeded"]
    assert page.evaluate("window.marker") == "no reload"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1

    chart = page.locator("[data-chart=report]")
    expect(chart.locator("svg")).to_have_count(4)  # bits/byte, tokens/byte, shares, timings
    expect(chart).to_contain_text("bits per byte")
    expect(page.locator(".stage progress")).not_to_have_count(0)
    manifest = api.http.get(f"/jobs/{job_id}/artifacts").json()["files"]
    links = page.locator("table.artifacts tbody a")
    expect(links).to_have_text([f["path"] for f in manifest])
    weights = next(f for f in manifest if f["path"] == "model.safetensors")
    assert hashlib.sha256(tab.download("model.safetensors")).hexdigest() == weights["sha256"]
    running.stop()

    # a second job, queued with no worker: the board shows it without a reload, then cancel it
    page.get_by_role("link", name="Jobs", exact=True).click()
    second = submit_job(api.http, settings)
    row = page.locator(f"tr[data-job-id='{second}']")
    expect(row).to_have_attribute("data-status", "queued")
    expect(page.locator(f"tr[data-job-id='{job_id}']")).to_have_attribute(
        "data-status", "succeeded"
    )
    row.get_by_role("link").click()
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("dl.facts .badge")).to_have_attribute("data-status", "canceled")
    assert api.http.get(f"/jobs/{second}").json()["status"] == "canceled"
    delete = page.get_by_role("button", name="Delete")
    delete.click()
    page.get_by_role("button", name="Delete: sure?").click()
    page.wait_for_url("**/#/")
    expect(page.locator(f"tr[data-job-id='{second}']")).to_have_count(0)
    assert api.http.get(f"/jobs/{second}").status_code == 404
    assert tab.errors == []
    tab.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_job_page_follows_its_job_across_a_restart_of_the_server(
    api: Server, worker: callable, settings: Settings, browser: Browser, tmp_path: Path
) -> None:
    """A server that stops ends each event stream with `end` (reason: shutting down); the page
    reconnects to the server that takes its place rather than ending its watch."""
    job_id = submit_job(api.http, settings)
    tab = Tab(browser, api)
    page = tab.page
    page.locator(f"tr[data-job-id='{job_id}'] a").click()
    badge = page.locator("dl.facts .badge")
    expect(badge).to_have_attribute("data-status", "queued")
    page.evaluate("window.marker = 'no reload'")
    api.stop()
    (tmp_path / "again").mkdir()
    again = Server(settings, tmp_path / "again", worker=False, port=api.port)
    try:
        worker()
        expect(badge).to_have_attribute("data-status", "succeeded", timeout=LONG)
        assert page.evaluate("window.marker") == "no reload"
        expect(page.locator("table.artifacts")).to_be_visible()
    finally:
        again.stop()
    refused = [e for e in tab.errors if "ERR_CONNECTION_REFUSED" not in e]
    assert refused == []  # only the page's retries while no server listened
    tab.close()


def test_a_read_only_key_sees_everything_and_no_buttons(
    api: Server, worker: callable, settings: Settings, browser: Browser
) -> None:
    services = Services.build(settings)
    _, write = keys.create(services.sessions, "ci", "write")
    _, read = keys.create(services.sessions, "dashboard", "read")
    services.engine.dispose()
    api.http.headers["Authorization"] = f"Bearer {write}"
    queued = submit_job(api.http, settings)

    tab = Tab(browser, api)
    page = tab.page
    page.fill("form.key input", "tg_not_a_key")
    page.click("form.key button")
    expect(page.locator("form.key")).to_contain_text("That key was refused")
    page.fill("form.key input", read)
    page.click("form.key button")
    expect(page.locator(f"tr[data-job-id='{queued}']")).to_have_attribute("data-status", "queued")
    expect(page.locator("[data-scope]")).to_have_text("key: read only")
    expect(page.get_by_role("link", name="New transplant")).to_have_count(0)

    page.locator(f"tr[data-job-id='{queued}'] a").click()
    expect(page.locator("dl.facts .badge")).to_have_attribute("data-status", "queued")
    expect(page.locator("main button")).to_have_count(0)  # no cancel

    worker()
    expect(page.locator("dl.facts .badge")).to_have_attribute(
        "data-status", "succeeded", timeout=LONG
    )
    expect(page.locator("table.artifacts")).to_be_visible()
    expect(page.locator("main button")).to_have_count(0)  # no delete
    manifest = api.http.get(f"/jobs/{queued}/artifacts").json()["files"]
    config = next(f for f in manifest if f["path"] == "config.json")
    # with a key, a download is fetched with the Authorization header, then saved
    assert hashlib.sha256(tab.download("config.json")).hexdigest() == config["sha256"]
    page.goto(api.url + "/ui/#/new")  # the form is not there for this key: the board is
    expect(page.locator("table.jobs")).to_be_visible()
    expect(page.locator("form.new")).to_have_count(0)
    assert tab.errors == []
    tab.close()


def test_the_page_ships_with_the_package() -> None:
    """Every file index.html and the modules name is in service/ui, so nothing loads from
    elsewhere (the CSP would refuse it anyway)."""
    ui = Path(__file__).resolve().parent.parent / "service" / "ui"
    html = (ui / "index.html").read_text()
    for name in (
        "app.js",
        "api.js",
        "dom.js",
        "board.js",
        "job.js",
        "chart.js",
        "form.js",
        "style.css",
    ):
        assert f'"{name}"' in html and (ui / name).is_file(), name
    for script in ui.glob("*.js"):
        for line in script.read_text().splitlines():
            if line.startswith("import "):
                assert (ui / line.rsplit('"./', 1)[1].rstrip('";')).is_file(), line
    assert "http" not in html.replace("http-equiv", "")


def test_a_hypernetwork_job_shows_its_training_curve(
    api: Server, worker: callable, settings: Settings, browser: Browser
) -> None:
    tiny.corpus(settings.corpora_dir / "long.txt", lines=60)
    response = api.http.post("/hypernets", json=TRAIN | {"steps": 8})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    tab = Tab(browser, api)
    tab.page.goto(f"{api.url}/ui/#/jobs/{job_id}")
    worker()
    badge = tab.page.locator("dl.facts .badge")
    expect(badge).to_have_attribute("data-status", "succeeded", timeout=LONG)
    curve = tab.page.locator("[data-chart=training]")
    expect(curve).to_contain_text("held-out bits per byte")
    heldout = [e for e in sse_events(api, job_id) if "held_out" in e]
    assert len(heldout) >= 2  # evaluated at steps 0, 2, 4, 6, 8: a line, not a point
    expect(curve.locator("svg").last.locator("circle")).to_have_count(len(heldout))
    expect(tab.page.locator("table.artifacts")).to_have_count(0)  # it went to the store
    expect(tab.page.locator("main")).to_contain_text("hn-long")
    assert tab.errors == []
    tab.close()


def sse_events(server: Server, job_id: str) -> list[dict]:
    """The data of the job's progress events, as the page read them."""
    return [
        json.loads(e["data"])
        for e in sse(server.http, f"/jobs/{job_id}/events")
        if e.get("event") == "progress"
    ]
