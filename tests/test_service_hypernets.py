"""POST /hypernets on SQLite and PostgreSQL: bad requests are problems and never jobs; a
training job streams steps, losses and every held-out evaluation, publishes its network into
the store (where POST /transplant finds it) and leaves no work folder; a cancel leaves nothing;
a job given back, or whose worker process is killed, resumes from its checkpoint."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tiny
from fastapi.testclient import TestClient
from test_service_api import (
    REQUEST,
    assert_problem,
    cancel_while_running,
    run_next,
    start,
    submit,
    wait_for,
)
from test_service_e2e import Server, tokengraft

from hypernet.network.training import latest_checkpoint
from service import worker as worker_module
from service.config import Settings
from service.hypernets import WORK
from service.models import JobStatus
from service.queue import GIVEN_BACK
from service.services import Services
from service.worker import Worker

# A tiny recipe for the tiny model: a few milliseconds a step on a CPU core.
TRAIN = {
    "name": "hn-long", "model": "tiny", "texts": ["long"], "steps": 4, "heldout_chars": 400,
    "vocab_min": 300, "vocab_max": 400, "batch": 2, "seq_len": 16, "width": 32, "layers": 1,
    "heads": 2, "max_pieces": 6, "eval_every": 2, "checkpoint_every": 2,
}  # fmt: skip


@pytest.fixture
def corpus(settings: Settings) -> str:
    """A corpus "long" of about 2900 characters: 400 held out, the rest trained on."""
    tiny.corpus(settings.corpora_dir / "long.txt", lines=60)
    return "long"


def train(client: TestClient, **changes: object) -> dict:
    body = {k: v for k, v in (TRAIN | changes).items() if v is not None}
    response = client.post("/hypernets", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/jobs/{response.json()['id']}"
    return response.json()


def events(services: Services, job_id: str, claim: int | None = None) -> list[dict]:
    """The job's progress events: all, or those of its n-th claim (a job given back keeps its
    attempt number, so claims are counted)."""
    found, current = [], 0
    for e in services.queue.events(job_id, 0):
        if e.kind == "state" and e.data["status"] == "running":
            current += 1
        elif e.kind == "progress" and claim in (None, current):
            found.append(e.data)
    return found


def steps(progress: list[dict]) -> list[int]:
    return [e["step"] for e in progress if "step" in e and "held_out" not in e]


def leftovers(settings: Settings, job_id: str) -> list[str]:
    """What a finished job left behind: its job folder, half-published networks."""
    folder = settings.jobs_dir / job_id
    incoming = settings.hypernets_dir / ".incoming"
    return [str(p) for root in (folder, incoming) if root.is_dir() for p in root.iterdir()]


def test_bad_requests_are_problems_and_never_jobs(
    client: TestClient, settings: Settings, corpus: str
) -> None:
    settings.max_train_memory_bytes = 8 * 2**30  # the workers' memory, whatever this host has
    short = client.post("/texts", files={"file": ("short.txt", b"Der Fuchs.\n" * 50)})
    (settings.corpora_dir / "latin1.txt").write_bytes("Grüße ".encode("latin-1") * 400)
    cases = [
        ({"model": "nope"}, "model 'nope' not found"),
        ({"texts": []}, "texts"),
        ({"texts": ["nope"]}, "training text 'nope' not found"),
        ({"texts": ["../long"]}, "not found"),
        ({"texts": [corpus, corpus]}, "named once"),
        ({"texts": [short.json()["id"]]}, "too short: 550 characters"),
        ({"texts": ["fox"], "heldout_chars": 600}, "needs at least 1200"),
        ({"texts": ["latin1"]}, "'latin1' is not UTF-8"),
        ({"steps": None}, "a budget is needed"),
        ({"minutes": 0}, "minutes"),
        ({"minutes": 24 * 60 + 1}, "minutes"),
        ({"steps": 0}, "steps"),
        ({"lr": -1}, "lr"),
        ({"batch": 0}, "batch"),
        ({"vocab_min": 500}, "vocab_min 500 is above vocab_max 400"),
        ({"width": 30, "heads": 4}, "multiple of heads"),
        ({"lm_weight": 0, "rec_weight": 0}, "lm_weight or rec_weight"),
        ({"corpus_weights": {"other": 2.0}}, "no corpus named so"),
        ({"corpus_seq_len": {corpus: 0}}, "must be positive"),
        ({"corpus_seq_len": {corpus: 10**9}}, f"seq_len for {corpus!r} is 1000000000, above"),
        ({"seq_len": 8192, "batch": 512}, "4194304 tokens a step, above 16384"),
        ({"width": 4096, "layers": 24, "heads": 64}, "GiB with AdamW's state, over the 8.0 GiB"),
        ({"name": "../etc"}, "name"),
        ({"name": "a..b"}, "'..'"),
        ({"dim": 64}, "dim"),  # set from the base model, not an option
        ({"negatives": 64}, "negatives"),
    ]
    for changes, detail in cases:
        body = {k: v for k, v in (TRAIN | changes).items() if v is not None}
        response = client.post("/hypernets", json=body)
        assert_problem(response, 422, detail)
        for server_path in (settings.data_dir, settings.corpora_dir, settings.hypernets_dir):
            assert str(server_path) not in response.text
    assert client.get("/jobs").json()["jobs"] == []


def test_a_taken_name_is_a_conflict(client: TestClient, settings: Settings, corpus: str) -> None:
    tiny.hypernet(settings.models_dir / "tiny", settings.hypernets_dir / "hn-taken")
    assert_problem(
        client.post("/hypernets", json=TRAIN | {"name": "hn-taken"}), 409, "exists already"
    )
    (settings.hypernets_dir / "hn-broken").mkdir()  # not a network, but it holds the name
    assert_problem(client.post("/hypernets", json=TRAIN | {"name": "hn-broken"}), 409)
    key = {"Idempotency-Key": "train-1"}
    first = client.post("/hypernets", json=TRAIN, headers=key)
    assert first.status_code == 202
    assert_problem(client.post("/hypernets", json=TRAIN), 409, "already training")
    replay = client.post("/hypernets", json=TRAIN, headers=key)  # the same job, not a 409
    assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]
    other = client.post("/hypernets", json=TRAIN | {"steps": 5}, headers=key)
    assert_problem(other, 422, "Idempotency-Key")
    assert len(client.get("/jobs").json()["jobs"]) == 1


def test_of_concurrent_requests_for_one_name_one_gets_the_job(
    client: TestClient, services: Services, corpus: str
) -> None:
    n = 20
    ready = threading.Barrier(n)

    def post(_: int):  # noqa: ANN202 (an httpx.Response)
        ready.wait()
        return client.post("/hypernets", json=TRAIN)

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(post, range(n)))
    assert sorted(a.status_code for a in answers) == [202] + [409] * (n - 1)
    (winner,) = [a.json()["id"] for a in answers if a.status_code == 202]
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, f"job {winner} is already training")
    assert [j["id"] for j in client.get("/jobs").json()["jobs"]] == [winner]
    # a job that ends without a network frees the name: canceled (queued) or failed (running)
    assert client.post(f"/jobs/{winner}/cancel").json()["status"] == "canceled"
    second = train(client)["id"]
    claim = services.queue.claim("w")
    assert claim is not None and claim.job_id == second
    assert_problem(client.post("/hypernets", json=TRAIN), 409, f"job {second} is already")
    assert services.queue.fail(claim, "internal", "lost", retry=False) == JobStatus.failed
    assert train(client)["id"] not in (winner, second)


def test_training_job_publishes_a_network_transplant_can_use(
    client: TestClient, services: Services, settings: Settings, corpus: str
) -> None:
    job = train(client)
    assert job["kind"] == "hypernet" and job["status"] == "queued"
    assert job["request"] == TRAIN
    assert run_next(services) == JobStatus.succeeded
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["attempt"] == 1, done
    result = done["result"]["hypernet"]
    assert (result["name"], result["base_model"], result["steps"]) == ("hn-long", "tiny", 4)
    assert set(result["held_out"]) == {"step", corpus} and result["resumed_from"] is None
    kinds = {
        k: [j["id"] for j in client.get("/jobs", params={"kind": k}).json()["jobs"]]
        for k in ("hypernet", "transplant")
    }
    assert kinds == {"hypernet": [job["id"]], "transplant": []}

    progress = events(services, job["id"])
    stages = [e["stage"] for e in progress]
    assert stages[0] == "prepare" and stages[-1] == "publish" and "train" in stages
    held_out = [e for e in progress if "held_out" in e]
    assert [e["step"] for e in held_out] == [0, 2, 4]  # every evaluation, none throttled away
    assert all(set(e["held_out"]) == {corpus} for e in held_out)
    score = held_out[1]["held_out"][corpus]
    assert held_out[1]["message"] == f"step 2, held_out ({corpus} {score})"
    ticks = [e for e in progress if "lm" in e]
    assert ticks[0]["step"] == 1 and ticks[-1]["step"] == 4 and ticks[-1]["fraction"] == 1.0
    assert all(type(e[k]) is float for e in ticks for k in ("lm", "aux", "rec"))
    assert ticks[0]["message"].startswith("step 1, lm ")

    network = settings.hypernets_dir / "hn-long"
    assert sorted(p.name for p in network.iterdir()) == [
        "hypernet.json",
        "hypernet.safetensors",
        "origin.json",
    ]
    saved = (network / "hypernet.json").read_text()
    assert str(settings.data_dir) not in saved and str(settings.corpora_dir) not in saved
    assert leftovers(settings, job["id"]) == []
    listed = {h["name"]: h for h in client.get("/hypernets").json()["hypernets"]}
    assert listed["hn-long"]["steps"] == 4 and listed["hn-long"]["base_model"] == "tiny"
    assert_problem(client.get(f"/jobs/{job['id']}/artifacts"), 409, "GET /hypernets")
    assert_problem(client.post("/hypernets", json=TRAIN), 409, "exists already")

    used = submit(client, {**REQUEST, "method": "hypernet", "hypernet": "hn-long"})
    assert run_next(services) == JobStatus.succeeded
    report = client.get(f"/jobs/{used['id']}").json()["result"]["report"]
    assert report["method"] == "hypernet" and report["hypernet"] == "hn-long"


def test_cancel_mid_training_leaves_nothing(
    client: TestClient, services: Services, settings: Settings, corpus: str
) -> None:
    job = train(client, steps=100_000)
    ready = lambda: steps(events(services, job["id"]))  # noqa: E731
    cancel_while_running(client, services, job["id"], ready, "training step")
    assert leftovers(settings, job["id"]) == []
    assert not (settings.hypernets_dir / "hn-long").exists()
    assert "publish" not in [e.get("stage") for e in events(services, job["id"])]


def test_a_job_given_back_resumes_from_its_checkpoint(
    client: TestClient, services: Services, settings: Settings, corpus: str
) -> None:
    # a time budget, so that the run cannot end before it is given back, however fast it is
    job = train(client, steps=None, minutes=0.04, eval_every=100_000)
    loop = settings.jobs_dir / job["id"] / WORK / "checkpoint" / "loop.json"
    worker, thread, outcome = start(services, job["id"])
    try:
        wait_for(loop.is_file, thread, "checkpoint")
    finally:
        worker.abandon.set()  # as a second SIGTERM does
        thread.join(timeout=60)
    assert outcome["status"] == JobStatus.queued
    shown = client.get(f"/jobs/{job['id']}").json()  # the attempt it made, and why it waits
    assert (shown["status"], shown["attempt"], shown["progress"]["stage"]) == (
        "queued",
        1,
        GIVEN_BACK,
    )
    saved = json.loads(loop.read_text())["step"]  # the folder is kept for the next attempt
    assert saved >= 2
    assert run_next(services) == JobStatus.succeeded
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["attempt"] == 1  # a job given back does not use up an attempt
    assert done["result"]["hypernet"]["resumed_from"] == saved
    second = events(services, job["id"], claim=2)
    assert second[1]["resumed_from"] == saved  # after "prepare"
    assert steps(second)[0] == saved + 1 and 0 not in steps(second)
    assert leftovers(settings, job["id"]) == []


def test_the_sweep_removes_the_work_folder_of_a_job_over_whose_worker_died(
    client: TestClient,
    services: Services,
    settings: Settings,
    corpus: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue, claims, folders = services.queue, {}, {}
    for name in ("canceled", "failed", "running", "given-back"):
        train(client, name=name)
        claims[name] = queue.claim(f"worker-{name}")
        folders[name] = services.storage.scratch(claims[name].job_id, WORK)
        (folders[name] / "checkpoint").mkdir()  # what the worker had trained
    canceled = claims["canceled"].job_id
    assert client.post(f"/jobs/{canceled}/cancel").json()["cancel_requested"]
    queue.fail(claims["failed"], "internal", "boom", retry=False)
    queue.release(claims["given-back"])
    time.sleep(0.05)
    queue.heartbeat(claims["running"])  # this one's worker is alive
    assert queue.reap(stale_seconds=0.04) == [canceled]  # that one's stopped beating
    assert queue.get(canceled).status == JobStatus.canceled
    monkeypatch.setattr(worker_module, "SWEEP_GRACE", 0)
    Worker(settings, queue, services.storage, services.catalog).retain()
    kept = {name for name, folder in folders.items() if folder.exists()}
    assert kept == {"running", "given-back"}  # what their next attempt resumes from
    assert not (settings.jobs_dir / canceled).exists()


def test_a_name_taken_while_training_fails_the_job_and_keeps_the_other(
    client: TestClient, services: Services, settings: Settings, corpus: str
) -> None:
    job = train(client, steps=1)
    other = tiny.hypernet(settings.models_dir / "tiny", settings.hypernets_dir / "hn-long")
    before = (other / "hypernet.json").read_bytes()
    assert run_next(services) == JobStatus.failed
    error = client.get(f"/jobs/{job['id']}").json()["error"]
    assert error["type"] == "invalid_input" and "appeared in the store" in error["detail"]
    assert (other / "hypernet.json").read_bytes() == before
    assert not (other / "origin.json").exists()
    assert leftovers(settings, job["id"]) == []


def test_a_killed_worker_s_training_resumes_from_its_checkpoint(
    settings: Settings, tmp_path: Path, corpus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENGRAFT_HYPERNETS_DIR", str(settings.hypernets_dir))
    api = Server(settings, tmp_path, worker=False)
    services = Services.build(settings)
    try:
        body = TRAIN | {"steps": None, "minutes": 0.08, "eval_every": 100_000}
        body = {k: v for k, v in body.items() if v is not None}
        job_id = api.http.post("/hypernets", json=body).json()["id"]
        work = settings.jobs_dir / job_id / WORK
        first = tokengraft("worker", settings=settings, log=tmp_path / "worker1.log")
        deadline = time.monotonic() + 120
        while not (work / "checkpoint" / "loop.json").is_file():
            assert time.monotonic() < deadline, (tmp_path / "worker1.log").read_text()
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)  # mid-training: no chance to clean up
        first.wait()
        saved = json.loads((latest_checkpoint(work) / "loop.json").read_text())["step"]
        assert saved >= 2
        second = tokengraft("worker", settings=settings, log=tmp_path / "worker2.log")
        try:
            job = api.wait(job_id, timeout=240)
            assert job["status"] == "succeeded" and job["attempt"] == 2, job
            assert job["result"]["hypernet"]["resumed_from"] == saved
            retried = events(services, job_id, claim=2)
            assert retried[1]["resumed_from"] == saved  # after "prepare"
            assert steps(retried)[0] == saved + 1  # resumed, not from step 1
            assert not any(e.get("step") == 0 for e in retried)  # no step-0 evaluation again
            assert leftovers(settings, job_id) == []
            listed = [h["name"] for h in api.http.get("/hypernets").json()["hypernets"]]
            assert "hn-long" in listed
            transplant = {**REQUEST, "method": "hypernet", "hypernet": "hn-long"}
            used = api.http.post("/transplant", json=transplant).json()["id"]
            assert api.wait(used, timeout=240)["status"] == "succeeded"
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)
    finally:
        services.engine.dispose()
        api.stop()
