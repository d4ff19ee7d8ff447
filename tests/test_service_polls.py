"""How polls are answered: one read of a job per interval shared by every poller, a cancel
seen at once, and a 405 that names every method of its path."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from test_service_embedded import wait_for

from service.api import views
from service.api.main import create_app
from service.config import Settings
from service.services import Services


class Clock:
    """The poll cache's clock, moved by the test: how old a view is never depends on how fast
    the machine ran the requests in between."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_poll_sees_a_job_at_most_two_intervals_old(
    settings: Settings, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(views, "time", clock)
    slow = settings.model_copy(update={"poll_cache_seconds": 1.0})
    job, _ = services.queue.enqueue({"model": "tiny", "tokenizer": "sp"}, "h")
    with TestClient(create_app(slow)) as client:
        first = client.get(f"/jobs/{job.id}")
        services.queue.claim("w1")  # the worker's process changes the row
        assert client.get(f"/jobs/{job.id}").json()["status"] == "queued"  # within the interval
        clock.now += 1.0  # one interval old: answered as it was, and refreshed behind
        assert client.get(f"/jobs/{job.id}").json()["status"] == "queued"
        polls = client.app.state.polls  # the refresh behind runs on the app's event loop
        wait_for(lambda: not (polls.tasks or polls.refreshing))
        moved = client.get(f"/jobs/{job.id}", headers={"If-None-Match": first.headers["ETag"]})
        assert moved.status_code == 200 and moved.json()["status"] == "running"
        assert moved.headers["ETag"] != first.headers["ETag"] and "Retry-After" in moved.headers
        services.queue.cancel(job.id)  # by another process: this one has not seen it
        assert not client.get(f"/jobs/{job.id}").json()["cancel_requested"]  # fresh: kept
        clock.now += 2.0  # two intervals old: read before answering
        assert client.get(f"/jobs/{job.id}").json()["cancel_requested"]
        canceled = client.post(f"/jobs/{job.id}/cancel").json()
        assert canceled["cancel_requested"] and client.get(f"/jobs/{job.id}").json() == canceled


def test_if_none_match_is_weak_and_takes_a_star(client: TestClient, services: Services) -> None:
    job, _ = services.queue.enqueue({"model": "tiny", "tokenizer": "sp"}, "h")
    tag = client.get(f"/jobs/{job.id}").headers["ETag"]
    assert tag.startswith('W/"')
    for given in (tag, tag.removeprefix("W/"), f'"other", {tag}', "*"):
        assert client.get(f"/jobs/{job.id}", headers={"If-None-Match": given}).status_code == 304
    assert client.get(f"/jobs/{job.id}", headers={"If-None-Match": '"x"'}).status_code == 200


def test_405_names_every_method_of_the_path(client: TestClient) -> None:
    response = client.put("/jobs/0123")
    assert response.status_code == 405 and response.headers["Allow"] == "DELETE, GET, HEAD"
    assert client.options("/jobs").headers["Allow"] == "GET, HEAD"
