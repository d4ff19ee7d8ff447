"""Job execution on SQLite and PostgreSQL: what is refused before a job exists, how a job
fails (once for bad input and a full disk, never with a server path), how fast a cancel takes
effect, readiness, validation that does no job's work, retention, and a store that does not
answer (the job put off, its waits doubling)."""

from __future__ import annotations

import errno
import json
import shutil
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import tiny
from fastapi.testclient import TestClient
from sqlalchemy import update
from test_service_api import REQUEST, assert_problem, run_next, submit, wait_for
from test_service_uploads import tar_of
from tokenizers import Tokenizer

import hypernet.write
import service.queue
from hypernet.errors import Cancelled
from hypernet.transplant import TransplantRequest, transplant
from service.catalog import redact
from service.cli import main
from service.config import Settings
from service.models import Job, JobStatus, utcnow
from service.models import Worker as WorkerRow
from service.services import Services
from service.storage import StoreUnavailable
from service.worker import NO_SPACE, STORE_DOWN, Worker, backoff

BAD_OPTIONS = [
    ("gaussian", {"seed": "x"}, "seed"),
    ("gaussian", {"seed": -1}, "seed"),
    ("subword-weighted", {"local_temperature": "hot"}, "local_temperature"),
    ("subword-weighted", {"local_temperature": 0}, "local_temperature"),
    ("knn", {"k": True}, "k"),
    ("knn", {"k": 2.5}, "k"),
    ("hybrid", {"weight": 1.5}, "weight"),
]


def job_of(client: TestClient, job_id: str) -> dict:
    return client.get(f"/jobs/{job_id}").json()


def upload_folder(client: TestClient, settings: Settings, config: dict) -> str:
    """The "sp" tokenizer uploaded as a folder whose tokenizer_config.json is `config`."""
    folder = tar_of(
        {
            "sp/tokenizer.json": (settings.tokenizers_dir / "sp" / "tokenizer.json").read_bytes(),
            "sp/tokenizer_config.json": json.dumps(config).encode(),
        }
    )
    response = client.post("/tokenizers", files={"file": ("sp.tar", folder)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def sp_config(settings: Settings, **changes: object) -> dict:
    config = json.loads((settings.tokenizers_dir / "sp" / "tokenizer_config.json").read_text())
    return config | changes


# --- 1. options are checked for type and range before a job exists ---------------------------
@pytest.mark.parametrize(("method", "options", "name"), BAD_OPTIONS)
def test_bad_option_values_are_422_and_never_jobs(
    client: TestClient, method: str, options: dict, name: str
) -> None:
    body = {**REQUEST, "method": method, "options": options}
    for dry in (False, True):
        response = client.post("/transplant", json={**body, "dry_run": dry})
        assert_problem(response, 422, f"option {name}=")
    assert client.get("/jobs").json()["jobs"] == []


def cli_transplant(tmp_path: Path, *more: str) -> list[str]:
    """`tokengraft transplant` of a tiny model to the "sp" tokenizer, both under `tmp_path`."""
    model = tiny.model_dir(tmp_path / "base", tiny.byte_level())
    tiny.sentencepiece().save_pretrained(tmp_path / "sp")
    return [
        "transplant",
        "--model",
        str(model),
        "--tokenizer",
        str(tmp_path / "sp"),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
        *more,
    ]


def test_the_cli_refuses_a_bad_option_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(cli_transplant(tmp_path, "--method", "gaussian", "--option", "seed=x")) == 2
    assert "seed='x'" in capsys.readouterr().err and not (tmp_path / "o").exists()


# --- 2, 3. malformed tokenizer files: refused at submission, or failed once ------------------
@pytest.mark.parametrize(
    "decoder",
    [[1, 2], {"zero": {"content": "<unk>"}}, {"0": {"special": True}}, {"0": "<unk>"}, "x"],
)
def test_a_malformed_added_tokens_decoder_is_refused_at_submission(
    client: TestClient, settings: Settings, decoder: object
) -> None:
    """In the tokenizer store (an upload is refused at once: test_service_uploads)."""
    folder = settings.tokenizers_dir / "malformed"
    folder.mkdir()
    shutil.copy(settings.tokenizers_dir / "sp" / "tokenizer.json", folder / "tokenizer.json")
    config = sp_config(settings, added_tokens_decoder=decoder)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    response = client.post("/transplant", json={**REQUEST, "tokenizer": "malformed"})
    assert_problem(response, 422, "added_tokens_decoder")
    assert client.get("/jobs").json()["jobs"] == []


def test_the_cli_refuses_a_malformed_tokenizer_config_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = cli_transplant(tmp_path, "--method", "subword")
    (tmp_path / "sp" / "tokenizer_config.json").write_text('{"added_tokens_decoder": [1]}')
    assert main(argv) == 2
    assert "added_tokens_decoder" in capsys.readouterr().err


def test_a_tokenizer_the_job_cannot_read_fails_once_as_invalid_input(
    client: TestClient, services: Services, settings: Settings
) -> None:
    # a shape validation does not look at; transformers raises a TypeError reading it
    upload = upload_folder(client, settings, sp_config(settings, model_input_names=5))
    job = submit(client, {**REQUEST, "tokenizer": upload})
    assert run_next(services) == JobStatus.failed
    done = job_of(client, job["id"])
    assert (done["attempt"], done["error"]["type"]) == (1, "invalid_input")
    assert "cannot be loaded" in done["error"]["detail"]


# --- 4. omp takes a donor --------------------------------------------------------------------
def test_omp_through_the_api_with_a_donor(
    client: TestClient, services: Services, settings: Settings
) -> None:
    tiny.model_dir(settings.models_dir / "donor", tiny.sentencepiece())  # speaks "sp"
    omp = {**REQUEST, "method": "omp"}
    assert_problem(client.post("/transplant", json=omp), 422, "needs a donor model")
    other = {**REQUEST, "donor": "donor"}
    assert_problem(client.post("/transplant", json=other), 422, "only used by method 'omp'")
    missing = {**omp, "donor": "no-such-donor"}
    assert_problem(client.post("/transplant", json=missing), 422, "not found")
    job = submit(client, {**omp, "donor": "donor"})
    assert run_next(services) == JobStatus.succeeded
    report = job_of(client, job["id"])["result"]["report"]
    assert report["method"] == "omp" and report["donor"] == "donor"
    assert report["vocab"]["mean_fallback"] < report["vocab"]["predicted"]
    assert str(settings.data_dir) not in json.dumps(report)


# --- 5. a cancel takes effect at the next read of its flag (0.5 s), not the next heartbeat ----
BEAT = 300.0  # seconds: a cancel seen within a tenth of this was not seen by a heartbeat


def slow_beats(services: Services) -> Worker:
    """A worker with a slow heartbeat: a cancel must not wait for the next beat."""
    settings = services.settings.model_copy(update={"heartbeat_seconds": BEAT})
    return Worker(settings, services.queue, services.storage, services.catalog)


def cancel_within(
    client: TestClient,
    services: Services,
    job_id: str,
    ready: Callable[[], object],
    seconds: float = BEAT / 10,
) -> None:
    """Run the job in a thread; once `ready()`, cancel it: it must end canceled within
    `seconds`, with nothing left in its folder."""
    worker = slow_beats(services)
    claim = services.queue.claim(worker.id)
    assert claim is not None and claim.job_id == job_id
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(status=worker.run_job(claim)))
    thread.start()
    try:
        wait_for(ready, thread, "ready job", timeout=60)
        assert client.post(f"/jobs/{job_id}/cancel").json()["cancel_requested"]
        asked = time.monotonic()
        thread.join(timeout=60)
        took = time.monotonic() - asked
    finally:
        services.queue.cancel(job_id)
        thread.join(timeout=60)
    assert outcome["status"] == JobStatus.canceled and took < seconds, took
    folder = services.settings.jobs_dir / job_id
    assert not folder.exists() or not any(folder.iterdir())


def test_cancel_mid_refine_takes_effect_at_once(
    client: TestClient, services: Services, settings: Settings
) -> None:
    tiny.corpus(settings.corpora_dir / "long.txt")
    job = submit(client, {**REQUEST, "refine": {"texts": ["long"], "steps": 100_000}})
    refining = lambda: job_of(client, job["id"])["progress"]["message"]  # noqa: E731
    cancel_within(client, services, job["id"], refining)


def test_cancel_mid_training_takes_effect_at_once(
    client: TestClient, services: Services, settings: Settings
) -> None:
    tiny.corpus(settings.corpora_dir / "long.txt", lines=60)
    body = {"name": "hn", "model": "tiny", "texts": ["long"], "steps": 100_000,
            "heldout_chars": 400, "vocab_min": 300, "vocab_max": 400, "batch": 2,
            "seq_len": 16, "width": 32, "layers": 1, "heads": 2, "max_pieces": 6}  # fmt: skip
    response = client.post("/hypernets", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    training = lambda: job_of(client, job_id)["progress"]["stage"] == "train"  # noqa: E731
    cancel_within(client, services, job_id, training)
    assert not (settings.hypernets_dir / "hn").exists()


def test_a_transplant_stops_mid_evaluation_when_cancelled(tmp_path: Path) -> None:
    model = tiny.model_dir(tmp_path / "base", tiny.byte_level())
    tiny.sentencepiece().save_pretrained(tmp_path / "sp")
    text = tmp_path / "eval.txt"
    text.write_text("\n".join(tiny.TEXT))
    seen: list[tuple[str, float]] = []
    flip = lambda: any(s == "evaluate" and 0 < f < 1 for s, f in seen)  # noqa: E731
    request = TransplantRequest(
        str(model), str(tmp_path / "sp"), tmp_path / "o", "subword", eval_text=text
    )
    with pytest.raises(Cancelled, match="evaluate"):
        transplant(request, lambda stage, f, *_: seen.append((stage, f)), flip)
    assert not (tmp_path / "o").exists()
    assert [s for s, _ in seen].count("evaluate") >= 2  # it stopped inside the stage


# --- 6. a full disk fails at once ------------------------------------------------------------
def test_a_full_disk_fails_once_as_no_space(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/srv/x/model.safetensors")

    monkeypatch.setattr(hypernet.write, "write_weights", full)
    job = submit(client)
    assert run_next(services) == JobStatus.failed
    done = job_of(client, job["id"])
    assert (done["attempt"], done["error"]) == (1, {"type": "no_space", "detail": NO_SPACE})
    assert not (services.settings.jobs_dir / job["id"] / "attempt-1").exists()


# --- 7. no server path reaches a client ------------------------------------------------------
def test_redact_cuts_absolute_paths_and_keeps_names() -> None:
    text = "tokenizer /srv/data/uploads/ab12/tokenizer.json: see 'org/model' at https://x.io/a/b"
    assert redact(text) == "tokenizer tokenizer.json: see 'org/model' at https://x.io/a/b"
    assert redact("in PosixPath('/a/b/hypernet.json')") == "in PosixPath('hypernet.json')"


def test_problems_hold_no_server_path(client: TestClient, settings: Settings) -> None:
    broken = settings.tokenizers_dir / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text('{"model": 1}')
    response = client.post("/transplant", json={**REQUEST, "tokenizer": "broken"})
    assert_problem(response, 422, "tokenizer.json")
    assert str(settings.data_dir) not in response.text


def test_job_errors_hold_no_server_path(
    client: TestClient, services: Services, settings: Settings
) -> None:
    broken = settings.hypernets_dir / "hn-broken"
    broken.mkdir(parents=True)
    (broken / "hypernet.json").write_text("{not json")
    job = submit(client, {**REQUEST, "method": "hypernet", "hypernet": "hn-broken"})
    assert run_next(services) == JobStatus.failed
    error = job_of(client, job["id"])["error"]
    assert error["type"] == "invalid_input" and "hypernet.json" in error["detail"]
    events = json.dumps([e.data for e in services.queue.events(job["id"], 0)])
    for place in (error["detail"], events):
        assert str(settings.hypernets_dir) not in place and str(settings.data_dir) not in place


# --- 8. readiness counts only workers that beat lately ---------------------------------------
def test_readiness_forgets_a_worker_three_beats_late(
    client: TestClient, services: Services, settings: Settings
) -> None:
    services.queue.register("w1", "host", 1, "cpu")
    assert client.get("/readyz").json()["live_workers"] == 1
    late = utcnow() - timedelta(seconds=3.5 * settings.heartbeat_seconds)
    assert late > utcnow() - timedelta(seconds=settings.stale_seconds)  # not stale yet
    with services.sessions.begin() as s:
        s.execute(update(WorkerRow).where(WorkerRow.id == "w1").values(heartbeat_at=late))
    assert_problem(client.get("/readyz"), 503, "no live worker")


# --- 9. validation converts nothing ----------------------------------------------------------
def test_validating_the_bundled_model_converts_nothing(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cold-cache"
    monkeypatch.setenv("TOKENGRAFT_CACHE", str(cache))
    body = {**REQUEST, "model": "smollm2-135m", "dry_run": True}
    assert client.post("/transplant", json=body).status_code == 200
    train = {"name": "hn", "model": "smollm2-135m", "texts": ["fox"], "steps": 1,
             "heldout_chars": 100}  # fmt: skip
    assert client.post("/hypernets", json=train).status_code == 202
    assert not (cache / "models" / "smollm2-135m").exists()


# --- 10. retention ---------------------------------------------------------------------------
def finished_job(services: Services, status: JobStatus, age_days: float, size: int = 0) -> str:
    """A job ended `age_days` ago in `status`; a succeeded one has one artifact of `size`."""
    queue, storage = services.queue, services.storage
    job_id = queue.enqueue(dict(REQUEST), f"hash-{time.monotonic_ns()}")[0].id
    claim = queue.claim("w")
    assert claim is not None and claim.job_id == job_id
    if status == JobStatus.succeeded:
        out = storage.workspace(job_id, 1)
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"x" * size)
        queue.succeed(claim, {}, out.name, storage.manifest(job_id, out.name))
    else:
        queue.fail(claim, "internal", "boom", retry=False)
    when = utcnow() - timedelta(days=age_days)
    with services.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == job_id).values(finished_at=when))
    return job_id


def kept(services: Services, ids: list[str]) -> list[bool]:
    return [services.queue.get(i) is not None for i in ids]


def with_settings(services: Services, **changes: object) -> Worker:
    settings = services.settings.model_copy(update=changes)
    return Worker(settings, services.queue, services.storage, services.catalog)


def test_retention_deletes_jobs_older_than_retention_days(services: Services) -> None:
    old_ok = finished_job(services, JobStatus.succeeded, 3, size=10)
    old_failed = finished_job(services, JobStatus.failed, 2)
    recent = finished_job(services, JobStatus.succeeded, 0.1, size=10)
    (running,) = [services.queue.enqueue(dict(REQUEST), "running")[0].id]
    services.queue.claim("w")
    with_settings(services, retention_days=1.0).retain()
    assert kept(services, [old_ok, old_failed, recent, running]) == [False, False, True, True]
    jobs = services.settings.jobs_dir
    assert not (jobs / old_ok).exists() and (jobs / recent / "attempt-1").is_dir()


def test_retention_deletes_the_oldest_succeeded_jobs_over_the_byte_quota(
    services: Services,
) -> None:
    ids = [finished_job(services, JobStatus.succeeded, age, size=100) for age in (3, 2, 1)]
    failed = finished_job(services, JobStatus.failed, 5)
    with_settings(services, max_artifact_bytes=250).retain()
    assert kept(services, [*ids, failed]) == [False, True, True, True]
    with_settings(services, max_artifact_bytes=100).retain()
    assert kept(services, ids) == [False, False, True]
    assert not (services.settings.jobs_dir / ids[1]).exists()


def test_the_worker_loop_applies_retention(services: Services) -> None:
    old = finished_job(services, JobStatus.succeeded, 2, size=10)
    worker = with_settings(services, retention_days=1.0)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: services.queue.get(old) is None, thread, "retention pass", timeout=30)
    finally:
        worker.stop.set()
        thread.join(timeout=30)
    assert not (services.settings.jobs_dir / old).exists()


# --- a tokenizer the Rust library panics on ------------------------------------------------------
PANICS = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}}


def test_a_panicking_store_tokenizer_is_a_422(client: TestClient, settings: Settings) -> None:
    """A merge whose result is not in the vocabulary panics the tokenizers library."""
    (settings.tokenizers_dir / "panics.json").write_text(json.dumps(PANICS))
    body = {**REQUEST, "tokenizer": "panics", "dry_run": True}
    assert_problem(client.post("/transplant", json=body), 422, "not a valid tokenizer.json")


def panic() -> BaseException:
    """The exception the tokenizers library raises when it panics (pyo3's PanicException)."""
    try:
        Tokenizer.from_str(json.dumps(PANICS))
    except BaseException as e:  # noqa: BLE001 (the panic is what is wanted)
        return e
    raise AssertionError("the tokenizers library no longer panics on this")


def test_a_panic_inside_a_job_fails_it_once(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    raised = panic()
    assert not isinstance(raised, Exception)

    def panics(*args: object) -> None:
        raise raised

    monkeypatch.setattr("service.worker.transplant", panics)
    job_id = submit(client)["id"]
    assert run_next(services) == JobStatus.failed
    job = job_of(client, job_id)
    assert (job["error"]["type"], job["attempt"]) == ("invalid_input", 1), job["error"]


# --- 9. a store that does not answer puts the job off ----------------------------------------
def test_backoff_doubles_to_its_cap_and_ends_at_its_total() -> None:
    settings, waits, deferrals = Settings(), [], 0
    while (wait := backoff(settings, deferrals)) is not None:
        waits.append(wait)
        deferrals += 1
    assert waits == [5, 10, 20, 40, 80, 120, 120, 120, 120]
    assert sum(waits[:-1]) < settings.store_retry_total_seconds <= sum(waits)


def _store_away(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The storage's workspace raising StoreUnavailable while the flag it returns holds True."""
    away, workspace = [True], services.storage.workspace

    def maybe(job_id: str, attempt: int) -> Path:
        if away[0]:
            raise StoreUnavailable("the object store did not answer: http://10.0.0.9:8333/b")
        return workspace(job_id, attempt)

    monkeypatch.setattr(services.storage, "workspace", maybe)
    return away


def test_a_store_that_does_not_answer_puts_the_job_off_with_growing_waits(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    monkeypatch.setattr(service.queue, "utcnow", lambda: now)
    away = _store_away(services, monkeypatch)
    job = submit(client)
    waits = []
    for _ in range(services.settings.max_attempts + 2):
        assert run_next(services) == JobStatus.queued
        row = services.queue.get(job["id"])
        waits.append((row.run_after - now).total_seconds())
        now = row.run_after
    assert waits == [5, 10, 20, 40, 80]
    put_off = job_of(client, job["id"])
    assert put_off["status"] == "queued" and put_off["attempt"] == 5
    assert put_off["error"] == {"type": "store_unavailable", "detail": STORE_DOWN}
    away[0] = False
    assert run_next(services) == JobStatus.succeeded


def test_a_store_away_past_the_total_fails_the_job(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    monkeypatch.setattr(service.queue, "utcnow", lambda: now)
    _store_away(services, monkeypatch)
    short = services.settings.model_copy(update={"store_retry_total_seconds": 4})
    monkeypatch.setattr(services, "settings", short)
    job = submit(client)
    assert run_next(services) == JobStatus.queued  # put off for 5 s
    now = services.queue.get(job["id"]).run_after
    assert run_next(services) == JobStatus.failed  # 5 s waited: past the total, attempts left
    done = job_of(client, job["id"])
    assert done["error"] == {"type": "store_unavailable", "detail": STORE_DOWN}
    assert "10.0.0.9" not in json.dumps([e.data for e in services.queue.events(job["id"], 0)])
