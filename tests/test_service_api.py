"""The HTTP API in-process, on SQLite and PostgreSQL; jobs are run by calling the worker."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import tarfile
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from service import keys
from service.config import Settings
from service.models import JobStatus
from service.services import Services
from service.worker import Worker

PROBLEM = "application/problem+json"
REQUEST = {"model": "tiny", "tokenizer": "sp", "method": "subword", "eval_text": "fox"}


def run_next(services: Services) -> JobStatus | None:
    """Claim and run the oldest queued job in this process, as a worker would."""
    worker = Worker(services.settings, services.queue, services.storage, services.catalog)
    claim = services.queue.claim(worker.id)
    assert claim is not None, "no queued job"
    return worker.run_job(claim)


def start(services: Services, job_id: str) -> tuple[Worker, threading.Thread, dict]:
    """A worker running the job in a thread; `outcome["status"]` once it returns."""
    worker = Worker(services.settings, services.queue, services.storage, services.catalog)
    claim = services.queue.claim(worker.id)
    assert claim is not None and claim.job_id == job_id
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(status=worker.run_job(claim)))
    thread.start()
    return worker, thread, outcome


def wait_for(
    condition: Callable[[], object], thread: threading.Thread, what: str, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert thread.is_alive() and time.monotonic() < deadline, f"no {what}"
        time.sleep(0.01)


def cancel_while_running(
    client: TestClient,
    services: Services,
    job_id: str,
    ready: Callable[[], object],
    what: str,
    timeout: float = 120,
) -> None:
    """Start the job in a worker thread; once `ready()`, cancel it through the API while it
    runs; it must end canceled with no result (the thread is stopped whatever happens)."""
    _, thread, outcome = start(services, job_id)
    try:
        wait_for(ready, thread, what, timeout)
        flagged = client.post(f"/jobs/{job_id}/cancel").json()
        assert flagged["status"] == "running" and flagged["cancel_requested"]
    finally:
        services.queue.cancel(job_id)
        thread.join(timeout=60)
    assert outcome["status"] == JobStatus.canceled
    done = client.get(f"/jobs/{job_id}").json()
    assert done["status"] == "canceled" and done["result"] is None


def submit(client: TestClient, body: dict | None = None, **headers: str) -> dict:
    response = client.post("/transplant", json=body or REQUEST, headers=headers)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert int(response.headers["retry-after"]) > 0
    return job


def assert_ranges(client, url: str, whole) -> None:  # noqa: ANN001 (a TestClient, a Response)
    """The answers every store gives a file whose whole body is `whole`: a suffix range, a
    range past the end (416), and If-Range with a stale and with the current tag."""
    size, tag = len(whole.content), whole.headers["etag"]
    tail = client.get(url, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == whole.content[-5:]
    beyond = client.get(url, headers={"Range": f"bytes={size}-"})
    assert_problem(beyond, 416)
    assert beyond.headers["content-range"] == f"bytes */{size}"
    stale = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"deadbeef"'})
    assert stale.status_code == 200 and stale.content == whole.content
    fresh = client.get(url, headers={"Range": "bytes=0-9", "If-Range": tag})
    assert fresh.status_code == 206 and fresh.content == whole.content[:10]


def assert_problem(response, status: int, detail: str = "") -> None:  # noqa: ANN001
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"]
    assert detail in body["detail"]


def test_transplant_job_succeeds_with_report_and_files(
    client: TestClient, services: Services
) -> None:
    job = submit(client)
    assert job["status"] == "queued" and job["attempt"] == 0
    assert run_next(services) == JobStatus.succeeded
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["attempt"] == 1
    assert done["progress"]["fraction"] == 1.0
    report = done["result"]["report"]
    assert report["method"] == "subword" and report["vocab"]["new_vocab_size"] > 0
    assert report["eval"]["after"]["bits_per_byte"] > 0
    assert set(report["timings"]) >= {"resolve", "align", "predict", "write", "evaluate"}
    # the report names what the user named, never the server's paths
    assert (report["base_model"], report["tokenizer"], report["eval"]["text"]) == (
        "tiny",
        "sp",
        "fox",
    )
    card = client.get(f"/jobs/{job['id']}/artifacts/README.md").text
    assert str(services.settings.data_dir) not in json.dumps(report) + card
    files = client.get(f"/jobs/{job['id']}/artifacts").json()["files"]
    names = {f["path"] for f in files}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    for f in files:
        body = client.get(f"/jobs/{job['id']}/artifacts/{f['path']}").content
        assert len(body) == f["size"] and hashlib.sha256(body).hexdigest() == f["sha256"]
    kinds = [e.kind for e in services.queue.events(job["id"], 0)]
    assert kinds[0] == "state" and "progress" in kinds and kinds[-1] == "state"


def test_etag_gives_304_until_the_job_changes(client: TestClient, services: Services) -> None:
    job = submit(client)
    first = client.get(f"/jobs/{job['id']}")
    tag = first.headers["etag"]
    assert tag.startswith('W/"')
    again = client.get(f"/jobs/{job['id']}", headers={"If-None-Match": tag})
    assert again.status_code == 304 and not again.content
    run_next(services)
    changed = client.get(f"/jobs/{job['id']}", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag


def test_list_filters_by_status_and_pages_with_a_cursor(client: TestClient) -> None:
    ids = [submit(client)["id"] for _ in range(5)]
    client.post(f"/jobs/{ids[0]}/cancel")
    seen, cursor = [], None
    while True:
        page = client.get("/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        body = page.json()
        seen += [j["id"] for j in body["jobs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    canceled = client.get("/jobs", params={"status": "canceled"}).json()["jobs"]
    assert [j["id"] for j in canceled] == [ids[0]]
    assert_problem(client.get("/jobs", params={"status": "bogus"}), 422)
    assert_problem(client.get("/jobs", params={"cursor": "%%%"}), 400, "cursor")


def test_idempotency_key(client: TestClient) -> None:
    first = submit(client, **{"Idempotency-Key": "k1"})
    again = submit(client, **{"Idempotency-Key": "k1"})
    assert again["id"] == first["id"]
    other = client.post(
        "/transplant", json={**REQUEST, "method": "mean"}, headers={"Idempotency-Key": "k1"}
    )
    assert_problem(other, 422, "Idempotency-Key")
    assert submit(client, **{"Idempotency-Key": "k2"})["id"] != first["id"]
    assert len(client.get("/jobs").json()["jobs"]) == 2


def test_dry_run_validates_without_a_job(client: TestClient) -> None:
    response = client.post("/transplant", json={**REQUEST, "dry_run": True})
    assert response.status_code == 200 and response.json()["valid"] is True
    assert client.get("/jobs").json()["jobs"] == []


def test_cancel_queued_and_running(client: TestClient, services: Services) -> None:
    queued = submit(client)
    for _ in range(2):  # idempotent
        body = client.post(f"/jobs/{queued['id']}/cancel").json()
        assert body["status"] == "canceled"
    running = submit(client)
    worker = Worker(services.settings, services.queue, services.storage, services.catalog)
    claim = services.queue.claim(worker.id)
    assert claim is not None and claim.job_id == running["id"]
    flagged = client.post(f"/jobs/{running['id']}/cancel").json()
    assert flagged["status"] == "running" and flagged["cancel_requested"]
    worker.settings = services.settings.model_copy(update={"heartbeat_seconds": 0.01})
    assert worker.run_job(claim) == JobStatus.canceled
    assert client.get(f"/jobs/{running['id']}").json()["status"] == "canceled"
    assert not (services.settings.jobs_dir / running["id"]).exists() or not any(
        (services.settings.jobs_dir / running["id"]).iterdir()
    )
    assert_problem(client.get(f"/jobs/{running['id']}/artifacts"), 409)


def test_delete_removes_a_terminal_job_and_its_files(
    client: TestClient, services: Services
) -> None:
    job = submit(client)
    run_next(services)
    folder = services.settings.jobs_dir / job["id"]
    assert folder.is_dir()
    file = f"/jobs/{job['id']}/artifacts/tokenizer.json"
    assert client.get(file).status_code == 200  # its manifest is now kept by the API
    assert client.delete(f"/jobs/{job['id']}").status_code == 204
    assert not folder.exists()
    assert_problem(client.get(f"/jobs/{job['id']}"), 404)
    assert_problem(client.get(file), 404)
    queued = submit(client)
    assert_problem(client.delete(f"/jobs/{queued['id']}"), 409, "cancel it first")


def test_ranges_if_range_head_and_tar(client: TestClient, services: Services) -> None:
    job = submit(client)
    run_next(services)
    base = f"/jobs/{job['id']}/artifacts"
    entry = next(f for f in client.get(base).json()["files"] if f["path"] == "tokenizer.json")
    url, size = f"{base}/tokenizer.json", entry["size"]
    whole = client.get(url)
    assert whole.headers["etag"] == f'"{entry["sha256"]}"'
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == whole.content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{size}"
    assert_ranges(client, url, whole)
    head = client.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(size)
    assert not head.content
    head = client.head(url, headers={"Range": "bytes=10-19"})
    assert head.status_code == 206 and head.headers["content-range"] == f"bytes 10-19/{size}"
    assert head.headers["content-length"] == "10" and not head.content
    cached = client.get(url, headers={"If-None-Match": whole.headers["etag"], "Range": "bytes=0-9"})
    assert cached.status_code == 304 and cached.headers["etag"] == whole.headers["etag"]
    assert_problem(client.get(f"{base}/../../../etc/passwd"), 404)
    assert_problem(client.get(f"{base}/%2e%2e/%2e%2e/secret"), 404)
    tar = client.get(f"/jobs/{job['id']}/checkpoint.tar")
    assert tar.headers["content-length"] == str(len(tar.content))
    with tarfile.open(fileobj=io.BytesIO(tar.content)) as archive:
        got = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    assert got[f"{job['id']}/tokenizer.json"] == whole.content
    assert len(got) == len(client.get(base).json()["files"])


def test_ranged_downloads_read_the_manifest_once(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = submit(client)
    run_next(services)
    queue = client.app.state.services.queue
    reads: list[str] = []
    read = queue.artifacts
    monkeypatch.setattr(queue, "artifacts", lambda job_id: reads.append(job_id) or read(job_id))
    url = f"/jobs/{job['id']}/artifacts/tokenizer.json"
    parts = [client.get(url, headers={"Range": f"bytes={i * 10}-{i * 10 + 9}"}) for i in range(5)]
    assert [p.status_code for p in parts] == [206] * 5
    assert reads == [job["id"]]
    assert_problem(client.get(f"/jobs/{job['id']}/artifacts/nope"), 404)  # still the manifest's


def test_a_job_deleted_through_another_process_is_no_job_at_once(
    client: TestClient, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """Retention in a worker deletes the row and the files; this process still keeps the
    manifest: the file's absence is not a warning about a changed store, but "no job"."""
    job = submit(client)
    run_next(services)
    url = f"/jobs/{job['id']}/artifacts/tokenizer.json"
    assert client.get(url, headers={"Range": "bytes=0-9"}).status_code == 206  # kept now
    assert services.queue.delete(job["id"])
    services.storage.remove(job["id"])
    with caplog.at_level(logging.WARNING, logger="tokengraft.api"):
        assert_problem(client.get(url), 404, f"no job {job['id']}")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert_problem(client.get(f"/jobs/{job['id']}/artifacts/config.json"), 404, "no job")


def test_bad_input_is_a_problem_and_never_a_job(client: TestClient, settings: Settings) -> None:
    (settings.corpora_dir / "umlaut.txt").write_text("über alles\n")
    (settings.corpora_dir / "blank.txt").write_text("")
    umlaut = {**REQUEST, "eval_text": "umlaut", "dry_run": True}
    assert_problem(client.post("/transplant", json=umlaut | {"eval_bytes": 1}), 422, "empty")
    assert client.post("/transplant", json=umlaut | {"eval_bytes": 2}).status_code == 200
    blank = {**REQUEST, "eval_text": "blank"}
    assert_problem(client.post("/transplant", json=blank), 422, "'blank' is empty")
    bad = client.post(
        "/transplant", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_problem(bad, 422)
    assert_problem(
        client.post("/transplant", json={**REQUEST, "model": "no-such-model"}), 422, "not found"
    )
    assert_problem(client.post("/transplant", json={**REQUEST, "model": "../../etc"}), 422)
    assert_problem(client.post("/transplant", json={**REQUEST, "model": "/root"}), 422)
    assert_problem(client.post("/transplant", json={**REQUEST, "method": "nope"}), 422, "nope")
    assert_problem(client.post("/transplant", json={**REQUEST, "options": {"kk": 1}}), 422)
    assert_problem(client.post("/transplant", json={**REQUEST, "eval_text": "../x"}), 422)
    assert_problem(client.post("/transplant", json={**REQUEST, "surprise": 1}), 422)
    assert_problem(client.post("/transplant", json={"model": "tiny"}), 422, "tokenizer")
    assert_problem(
        client.post("/transplant", json={**REQUEST, "method": "hypernet"}), 422, "hypernet"
    )
    assert client.get("/jobs").json()["jobs"] == []
    assert_problem(client.get("/jobs/nope"), 404)
    assert_problem(client.post("/jobs/nope/cancel"), 404)


def test_uploads_tokenizers_and_texts(client: TestClient, settings, tmp_path) -> None:  # noqa: ANN001
    tok = (settings.tokenizers_dir / "sp" / "tokenizer.json").read_bytes()
    up = client.post("/tokenizers", files={"file": ("tokenizer.json", tok)})
    assert up.status_code == 201, up.text
    tok_id = up.json()["id"]
    assert up.json()["vocab_size"] > 0
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        archive.add(settings.tokenizers_dir / "sp", arcname="sp")
    folder = client.post("/tokenizers", files={"file": ("sp.tar", buf.getvalue())})
    assert folder.status_code == 201, folder.text
    text = client.post("/texts", files={"file": ("eval.txt", b"Der Fuchs springt.\n" * 20)})
    assert text.status_code == 201
    listed = client.get("/tokenizers").json()
    assert {u["id"] for u in listed["uploads"]} == {tok_id, folder.json()["id"]}
    assert listed["store"] == [{"name": "sp", "source": "store"}]
    assert client.get("/texts").json()["corpora"] == ["fox"]
    body = {**REQUEST, "tokenizer": tok_id, "eval_text": text.json()["id"], "dry_run": True}
    assert client.post("/transplant", json=body).status_code == 200

    assert_problem(
        client.post("/tokenizers", files={"file": ("t.json", b'{"model": 1}')}),
        422,
        "tokenizer.json",
    )
    assert_problem(client.post("/tokenizers", files={"file": ("t.bin", b"\x00" * 600)}), 422)
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as archive:
        info = tarfile.TarInfo("../../tokenizer.json")
        info.size = len(tok)
        archive.addfile(info, io.BytesIO(tok))
    assert_problem(
        client.post("/tokenizers", files={"file": ("e.tar", evil.getvalue())}), 422, "outside"
    )
    assert_problem(client.post("/texts", files={"file": ("x.txt", b"\xff\xfe\x00")}), 422, "UTF-8")
    uploads = settings.uploads_dir
    assert sorted(p.name for p in uploads.iterdir()) == sorted(
        [tok_id, folder.json()["id"], text.json()["id"]]
    )


def test_upload_limits(settings, database_url) -> None:  # noqa: ANN001
    from service.api.main import create_app

    small = settings.model_copy(update={"max_upload_bytes": 1000, "max_vocab_size": 50})
    with TestClient(create_app(small)) as client:
        big = client.post("/tokenizers", files={"file": ("t.json", b"{" + b" " * 2000 + b"}")})
        assert_problem(big, 413)
        tok = (settings.tokenizers_dir / "sp" / "tokenizer.json").read_bytes()
        roomy = settings.model_copy(update={"max_vocab_size": 50})
    with TestClient(create_app(small)) as client:
        bomb = io.BytesIO()
        with tarfile.open(fileobj=bomb, mode="w:gz") as archive:
            info = tarfile.TarInfo("tokenizer.json")
            info.size = 50_000
            archive.addfile(info, io.BytesIO(b"{" + b" " * 49_998 + b"}"))
        assert len(bomb.getvalue()) < 1000
        assert_problem(
            client.post("/tokenizers", files={"file": ("b.tgz", bomb.getvalue())}), 413, "unpacks"
        )
    with TestClient(create_app(roomy)) as client:
        assert_problem(
            client.post("/tokenizers", files={"file": ("t.json", tok)}), 413, "vocabulary"
        )
    assert not settings.uploads_dir.exists() or not any(settings.uploads_dir.iterdir())


def test_api_keys(client: TestClient, services: Services) -> None:
    assert client.get("/jobs").status_code == 200  # no key exists: open (loopback only)
    _, write = keys.create(services.sessions, "ci", "write")
    read_row, read = keys.create(services.sessions, "dashboard", "read")
    assert_problem(client.get("/jobs"), 401, "required")
    assert_problem(client.get("/jobs", headers={"Authorization": "Bearer tg_x_y"}), 401)
    assert_problem(client.get("/jobs", headers={"Authorization": f"Bearer {write}x"}), 401)
    assert client.get("/jobs", headers={"Authorization": f"Bearer {read}"}).status_code == 200
    denied = client.post("/transplant", json=REQUEST, headers={"Authorization": f"Bearer {read}"})
    assert_problem(denied, 403, "read-only")
    ok = client.post("/transplant", json=REQUEST, headers={"Authorization": f"Bearer {write}"})
    assert ok.status_code == 202
    keys.revoke(services.sessions, read_row.id)
    assert_problem(client.get("/jobs", headers={"Authorization": f"Bearer {read}"}), 401)
    assert client.get("/healthz").status_code == 200  # probes need no key
    stored = {k.secret_sha256 for k in keys.all_keys(services.sessions)}
    assert write not in json.dumps(sorted(stored))


def test_catalog_health_and_metrics(client: TestClient, services: Services) -> None:
    models = client.get("/models").json()["models"]
    assert {"name": "tiny", "source": "store"} in models
    assert {"name": "smollm2-135m", "source": "bundled"} in models
    shipped = client.get("/hypernets").json()["hypernets"]  # an empty store: the shipped one
    assert [(h["name"], h["base_model"]) for h in shipped] == [("smollm2-135m", "smollm2-135m")]
    methods = {m["name"]: m for m in client.get("/methods").json()["methods"]}
    assert methods["hybrid"]["needs"] == ["embedder"] and methods["omp"]["needs"] == ["donor"]
    assert methods["hypernet"]["description"] == "The trained hypernetwork."
    assert client.get("/healthz").json() == {"status": "ok"}
    assert_problem(client.get("/readyz"), 503, "no live worker")
    services.queue.register("w1", "host", 1, "cpu")
    assert client.get("/readyz").json()["live_workers"] == 1
    submit(client)
    metrics = client.get("/metrics").text
    assert 'tokengraft_jobs{status="queued"} 1' in metrics
    assert "tokengraft_queue_depth 1" in metrics
    assert 'tokengraft_job_duration_seconds_count{status="succeeded"} 0' in metrics


@pytest.mark.parametrize("path", ["/jobs/x/events", "/jobs/x/artifacts", "/jobs/x/checkpoint.tar"])
def test_unknown_job_is_404_everywhere(client: TestClient, path: str) -> None:
    assert_problem(client.get(path), 404)


def test_events_ping_while_waiting_and_end_when_terminal(
    client: TestClient, services: Services
) -> None:
    job = submit(client)
    lines = []
    with client.stream("GET", f"/jobs/{job['id']}/events") as stream:
        for line in stream.iter_lines():
            lines.append(line)
            if line == ": ping" and not any("canceled" in seen for seen in lines):
                services.queue.cancel(job["id"])
    assert ": ping" in lines
    nonblank = [ln for ln in lines if ln]
    assert nonblank[-2:] == ["event: end", 'data: {"status": "canceled"}']
    assert [ln for ln in lines if ln.startswith("event: state")] == ["event: state"] * 2


def test_hypernet_jobs(client: TestClient, services: Services) -> None:
    import tiny

    settings = services.settings
    tiny.hypernet(settings.models_dir / "tiny", settings.hypernets_dir / "hn-tiny")
    listed = client.get("/hypernets").json()["hypernets"]
    # the store's own, then the one that ships for the bundled SmolLM2
    assert [h["name"] for h in listed] == ["hn-tiny", "smollm2-135m"]
    assert listed[0]["architecture"] and listed[1]["base_model"] == "smollm2-135m"
    job = submit(client, {**REQUEST, "method": "hypernet", "hypernet": "hn-tiny"})
    assert run_next(services) == JobStatus.succeeded
    report = client.get(f"/jobs/{job['id']}").json()["result"]["report"]
    assert report["method"] == "hypernet" and report["hypernet"] == "hn-tiny"
    default = submit(client, {k: v for k, v in REQUEST.items() if k != "method"})
    assert run_next(services) == JobStatus.succeeded
    report = client.get(f"/jobs/{default['id']}").json()["result"]["report"]
    assert (report["method"], report["hypernet"]) == ("hypernet+hybrid", "hn-tiny")
    assert "fingerprint matches" in report["method_choice"]
    missing = client.post("/transplant", json={**REQUEST, "method": "hypernet", "hypernet": "x"})
    assert_problem(missing, 422, "hypernetwork")


# --- a full disk -----------------------------------------------------------------------------
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_a_full_disk_answers_507_and_keeps_nothing(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    uploads = services.settings.uploads_dir
    write_bytes = Path.write_bytes

    def full(path: Path, data: bytes) -> int:
        write_bytes(path, data[: len(data) // 2])  # half of it made it to the disk
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(Path, "write_bytes", full)
    tokenizer = (services.settings.tokenizers_dir / "sp" / "tokenizer.json").read_bytes()
    for route, data in (("/texts", b"Der Fuchs.\n"), ("/tokenizers", tokenizer)):
        response = client.post(route, files={"file": ("f", data)})
        assert_problem(response, 507, "out of disk space")
        assert response.json()["type"] == "/problems/insufficient-storage"
        assert str(uploads) not in response.text
    assert list(uploads.iterdir()) == []  # no temp folder, no half-written file
    assert client.get("/texts").json()["uploads"] == []


def _database_full(dialect: str) -> OperationalError:
    """What SQLAlchemy raises when the database's disk is full, from the driver's own error."""
    if dialect == "sqlite":
        driver: Exception = sqlite3.OperationalError("database or disk is full")
        driver.sqlite_errorcode = sqlite3.SQLITE_FULL
    else:
        driver = psycopg.errors.DiskFull("could not extend file: No space left on device")
    error = OperationalError("INSERT INTO jobs ...", {}, driver)
    error.__cause__ = driver
    return error


def test_a_submit_into_a_full_database_answers_507(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = client.app.state.services.queue
    raised = [_database_full(services.engine.dialect.name)]

    def enqueue(*args: object) -> None:
        raise raised[0]

    monkeypatch.setattr(queue, "enqueue", enqueue)
    response = client.post("/transplant", json=REQUEST)
    assert_problem(response, 507, "out of disk space")
    assert "INSERT" not in response.text
    locked = sqlite3.OperationalError("database is locked")
    raised[0] = OperationalError("INSERT INTO jobs ...", {}, locked)
    with pytest.raises(OperationalError):  # any other database error is still a 500
        client.post("/transplant", json=REQUEST)
    assert client.get("/jobs").json()["jobs"] == []


def test_readiness_wants_free_space_in_the_data_dir(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, usage = services.settings.data_dir, shutil.disk_usage
    floor = services.settings.min_free_bytes

    def low(path: Path) -> object:
        free = floor - 1 if Path(path) == data else floor
        return types.SimpleNamespace(free=free, total=usage(path).total)

    services.queue.register("w1", "host", 1, "cpu")
    assert client.get("/readyz").status_code == 200
    monkeypatch.setattr(shutil, "disk_usage", low)
    services.queue.worker_beat("w1")
    response = client.get("/readyz")
    assert_problem(response, 503, f"{floor - 1} bytes free in the data dir")
    assert str(data) not in response.text


# --- HEAD and nosniff ----------------------------------------------------------------------------
def test_head_answers_wherever_get_does(client: TestClient) -> None:
    job = submit(client)
    url = f"/jobs/{job['id']}"
    got, head = client.get(url), client.head(url)
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "retry-after", "content-type", "content-length"):
        assert head.headers[name] == got.headers[name], name
    assert client.head(url, headers={"If-None-Match": got.headers["etag"]}).status_code == 304
    missing = client.head("/jobs/" + "0" * 32)
    assert missing.status_code == 404 and missing.content == b""
    lists = ["/jobs", "/tokenizers", "/texts", "/models", "/hypernets", "/methods", "/access"]
    for path in [*lists, f"{url}/artifacts"]:
        got, head = client.get(path), client.head(path)
        assert (head.status_code, head.content) == (got.status_code, b""), path
        assert head.headers["content-length"] == got.headers["content-length"], path


def test_every_response_says_nosniff(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_service_jobs import FILES, succeeded  # it imports this module

    job_id, _ = succeeded(services, FILES)
    answers = [
        client.get(f"/jobs/{job_id}"),  # JSON
        client.get(f"/jobs/{job_id}/artifacts/model.safetensors"),  # a download
        client.get(f"/jobs/{job_id}/checkpoint.tar"),
        client.get("/jobs/" + "0" * 32),  # a problem
        client.post("/transplant", json={}),  # a validation problem
        client.put("/jobs"),  # the router's 405
        client.get("/ui/"),  # the dashboard's files
    ]
    monkeypatch.setattr(client.app.state.services.queue, "page", lambda *_: 1 / 0)
    failing = TestClient(client.app, raise_server_exceptions=False)  # its lifespan is client's
    answers.append(failing.get("/jobs"))  # a 500, answered outside every middleware
    keys.create(services.sessions, "ci", "read")
    answers.append(client.get("/jobs"))  # the guard's 401
    statuses = [a.status_code for a in answers]
    assert statuses == [200, 200, 200, 404, 422, 405, 200, 500, 401]
    assert all(a.headers["x-content-type-options"] == "nosniff" for a in answers)
    assert all(len(a.headers.get_list("x-content-type-options")) == 1 for a in answers)
