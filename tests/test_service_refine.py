"""Refine through the API, on SQLite and PostgreSQL: bad refine blocks are 422 problems and
never jobs; a refine job reports its steps and streams step and loss; a cancel mid-refine
leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny
from fastapi.testclient import TestClient
from test_service_api import REQUEST, assert_problem, cancel_while_running, run_next, submit

from service.config import Settings
from service.models import JobStatus
from service.services import Services
from service.worker import _Ticks


def upload_text(client: TestClient, text: bytes) -> str:
    response = client.post("/texts", files={"file": ("refine.txt", text)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
def long_text(client: TestClient, tmp_path: Path) -> str:
    """An uploaded text of a dozen or so refine windows (1200 characters each)."""
    return upload_text(client, tiny.corpus(tmp_path / "refine.txt").read_bytes())


def progress_of(client: TestClient, job_id: str) -> dict:
    return client.get(f"/jobs/{job_id}").json()["progress"]


def refine_request(**refine: object) -> dict:
    return {**REQUEST, "refine": refine}


def test_bad_refine_is_a_problem_and_never_a_job(
    client: TestClient, settings: Settings, long_text: str
) -> None:
    short = upload_text(client, b"Der Fuchs springt.\n" * 10)
    (settings.corpora_dir / "latin1.txt").write_bytes("Grüße ".encode("latin-1") * 400)
    cases = [
        ({"texts": []}, "texts"),
        ({"texts": ["f" * 32]}, "refine text 'ffffffffffffffffffffffffffffffff' not found"),
        ({"texts": [long_text, "no-such-corpus"]}, "not found"),
        ({"texts": ["../fox"]}, "not found"),
        ({"texts": [short]}, "shorter than one window"),
        ({"texts": ["fox"]}, "shorter than one window"),  # 1195 characters
        ({"texts": ["latin1"]}, "'latin1' is not UTF-8"),
        ({"texts": [long_text], "minutes": 0}, "minutes"),
        ({"texts": [long_text], "minutes": -1}, "minutes"),
        ({"texts": [long_text], "steps": 0}, "steps"),
        ({"texts": [long_text], "rows": "some"}, "rows"),
        ({"texts": [long_text], "lr": 1}, "lr"),
        ({"texts": [long_text] * 17}, "texts"),
    ]
    for refine, detail in cases:
        for dry in (False, True):
            response = client.post("/transplant", json={**refine_request(**refine), "dry_run": dry})
            assert_problem(response, 422, detail)
            assert str(settings.data_dir) not in response.text
            assert str(settings.corpora_dir) not in response.text
    assert client.get("/jobs").json()["jobs"] == []
    valid = client.post("/transplant", json={**refine_request(texts=[long_text]), "dry_run": True})
    assert valid.status_code == 200, valid.text


def test_refine_job_reports_steps_and_streams_losses(
    client: TestClient, services: Services, long_text: str
) -> None:
    plain = submit(client)
    assert "refine" not in plain["request"]  # stored, and hashed, as before refine existed
    client.post(f"/jobs/{plain['id']}/cancel")
    job = submit(client, refine_request(texts=[long_text], steps=3))
    assert job["request"]["refine"] == {
        "texts": [long_text],
        "minutes": None,
        "steps": 3,
        "rows": "new",
    }
    assert run_next(services) == JobStatus.succeeded
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done
    report = done["result"]["report"]
    refine = report["refine"]
    assert refine["steps"] == 3 and refine["texts"] == [long_text]
    assert refine["rows"] == "new" and refine["trained_rows"] > 0
    assert refine["eval"]["after"] == report["eval"]["after"]["bits_per_byte"]
    assert {"refine", "evaluate_zero_shot"} <= set(report["timings"])
    assert str(services.settings.data_dir) not in json.dumps(report)

    events = [e.data for e in services.queue.events(job["id"], 0) if e.kind == "progress"]
    ticks = [e for e in events if e.get("stage") == "refine" and "step" in e]
    assert ticks[0]["step"] == 1 and ticks[-1]["step"] == 3
    for tick in ticks:
        assert type(tick["step"]) is int and type(tick["loss"]) is float
        assert tick["message"] == f"step {tick['step']}, loss {tick['loss']}"
    stages = [e["stage"] for e in events]
    assert stages.index("predict") < stages.index("refine") < stages.index("write")
    assert "evaluate_zero_shot" in stages


def test_cancel_during_refine_leaves_nothing(
    client: TestClient, services: Services, settings: Settings
) -> None:
    tiny.corpus(settings.corpora_dir / "long.txt")
    job = submit(client, refine_request(texts=["long"], steps=100_000))

    def stepping() -> bool:  # until the loop reports a step
        progress = progress_of(client, job["id"])
        if not progress["message"]:
            return False
        assert progress["stage"] == "refine" and progress["message"].startswith("step ")
        assert progress["fraction"] < 1.0
        return True

    cancel_while_running(client, services, job["id"], stepping, "refine step", timeout=60)
    folder = settings.jobs_dir / job["id"]
    assert not folder.exists() or not any(folder.iterdir())
    assert_problem(client.get(f"/jobs/{job['id']}/artifacts"), 409)
    stages = [e.data.get("stage") for e in services.queue.events(job["id"], 0)]
    assert "write" not in stages


def test_throttle_keeps_each_stage_s_first_detailed_and_last_tick() -> None:
    ticks = _Ticks(every=3600)
    kept = [
        ticks.keep(stage, fraction, detail)
        for stage, fraction, detail in [
            ("predict", 0.0, None),
            ("predict", 0.5, None),
            ("predict", 1.0, None),
            ("refine", 0.0, None),
            ("refine", 0.1, {"step": 1, "loss": 0.5}),
            ("refine", 0.2, {"step": 2, "loss": 0.4}),
            ("refine", 1.0, {"step": 10, "loss": 0.1}),
            ("refine", 1.0, None),
            ("write", 0.0, None),
            ("write", 0.7, None),
        ]
    ]
    assert kept == [True, False, True, True, True, False, True, True, True, False]
