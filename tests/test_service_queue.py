"""The job queue on SQLite and PostgreSQL: claiming, fencing, reaping, retries."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import insert, text, update

import service.queue
import service.worker
from hypernet.errors import InputError
from service.models import Chore, Job, JobStatus, Upload, utcnow
from service.queue import GIVEN_BACK, RETRYING, WAITING, Claim, Queue, oldest_queued
from service.services import Services
from service.worker import Worker

REQUEST = {"model": "tiny", "tokenizer": "sp", "method": "subword"}


def enqueue(queue: Queue, n: int = 1) -> list[str]:
    return [queue.enqueue(dict(REQUEST), f"hash{i}")[0].id for i in range(n)]


def test_claims_oldest_first_and_nothing_when_empty(services: Services) -> None:
    ids = enqueue(services.queue, 3)
    claims = [services.queue.claim("w") for _ in range(4)]
    assert [c.job_id for c in claims[:3]] == ids and claims[3] is None
    assert all(c.attempt == 1 for c in claims[:3])


def test_concurrent_claims_take_each_job_once(services: Services) -> None:
    ids = enqueue(services.queue, 24)
    taken: list[str] = []
    lock = threading.Lock()

    def claim_all(name: str) -> None:
        while (claim := services.queue.claim(name)) is not None:
            with lock:
                taken.append(claim.job_id)

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)


def test_a_presumed_dead_worker_is_fenced_off(services: Services) -> None:
    queue = services.queue
    (job_id,) = enqueue(queue)
    old = queue.claim("old")
    assert old is not None
    time.sleep(0.05)
    assert queue.reap(stale_seconds=0.01) == [job_id]
    new = queue.claim("new")
    assert new is not None and new.attempt == 2
    assert queue.heartbeat(old) == (False, False)
    assert not queue.progress(old, "write", 0.5, None)
    assert not queue.succeed(old, {"report": {}}, "attempt-1", [("x", 1, "0" * 64)])
    assert queue.fail(old, "internal", "boom", retry=True) is None
    assert queue.succeed(new, {"report": {"ok": True}}, "attempt-2", [("x", 1, "0" * 64)])
    job = queue.get(job_id)
    assert job.status == JobStatus.succeeded and job.result == {"report": {"ok": True}}
    assert [a.path for a in queue.artifacts(job_id)] == ["x"]


def test_reaper_fails_a_job_after_max_attempts(services: Services) -> None:
    queue = services.queue
    (job_id,) = enqueue(queue)
    for attempt in range(1, queue.max_attempts + 1):
        claim = queue.claim(f"w{attempt}")
        assert claim is not None and claim.attempt == attempt
        time.sleep(0.02)
        queue.reap(stale_seconds=0.01)
    job = queue.get(job_id)
    assert job.status == JobStatus.failed and job.error_type == "worker_lost"
    assert queue.claim("late") is None


def test_fresh_heartbeats_are_not_reaped(services: Services) -> None:
    enqueue(services.queue)
    claim = services.queue.claim("w")
    assert claim is not None
    assert services.queue.heartbeat(claim) == (True, False)
    assert services.queue.reap(stale_seconds=60) == []


def _worker(services: Services) -> Worker:
    return Worker(services.settings, services.queue, services.storage, services.catalog)


def _run(services: Services, worker: Worker) -> tuple[Claim, JobStatus | None]:
    claim = services.queue.claim(worker.id)
    assert claim is not None
    return claim, worker.run_job(claim)


@pytest.mark.parametrize(
    ("error", "expected"),
    [(InputError("bad tokenizer"), "invalid_input"), (MemoryError(), "out_of_memory")],
)
def test_bad_input_and_oom_are_not_retried(
    services: Services, monkeypatch: pytest.MonkeyPatch, error: Exception, expected: str
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(service.worker, "transplant", broken)
    (job_id,) = enqueue(services.queue)
    _, status = _run(services, _worker(services))
    job = services.queue.get(job_id)
    assert status == JobStatus.failed and job.error_type == expected and job.attempt == 1
    assert not (services.settings.jobs_dir / job_id / "attempt-1").exists()


def test_transient_errors_are_retried_up_to_max_attempts(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def flaky(*args: object, **kwargs: object) -> None:
        raise ConnectionError("storage went away")

    monkeypatch.setattr(service.worker, "transplant", flaky)
    (job_id,) = enqueue(services.queue)
    worker = _worker(services)
    statuses = [_run(services, worker)[1] for _ in range(services.queue.max_attempts)]
    assert statuses == [JobStatus.queued] * (services.queue.max_attempts - 1) + [JobStatus.failed]
    job = services.queue.get(job_id)
    assert job.error_type == "internal" and "storage went away" in job.error_detail
    states = [e.data["status"] for e in services.queue.events(job_id, 0) if e.kind == "state"]
    assert states == ["queued"] + ["running", "queued"] * 2 + ["running", "failed"]


def test_a_worker_shutting_down_gives_its_job_back(services: Services) -> None:
    (job_id,) = enqueue(services.queue)
    worker = _worker(services)
    worker.abandon.set()
    _, status = _run(services, worker)
    job = services.queue.get(job_id)
    assert status == JobStatus.queued and job.status == JobStatus.queued
    assert (job.attempt, job.stage, job.fraction) == (1, GIVEN_BACK, 0.0)  # not 0, nor stale
    assert "queued to run again" in job.message
    assert not (services.settings.jobs_dir / job_id).exists()  # nothing left behind
    again = services.queue.claim("w2")  # it goes on with that attempt: none is used up
    assert again is not None and again.attempt == 1
    assert services.queue.get(job_id).stage is None
    services.queue.release(again)
    time.sleep(0.02)
    services.queue.reap(stale_seconds=0.01)  # nothing running: nothing to reap
    lost = services.queue.claim("w3")
    assert lost is not None and lost.attempt == 1
    time.sleep(0.02)
    assert services.queue.reap(stale_seconds=0.01) == [job_id]
    assert services.queue.claim("w4").attempt == 2  # a lost worker's attempt counts


def test_worker_loop_runs_jobs_and_stops(services: Services) -> None:
    ids = enqueue(services.queue, 2)
    worker = _worker(services)
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(services.queue.get(i).status == JobStatus.succeeded for i in ids):
            break
        time.sleep(0.1)
    worker.stop.set()
    thread.join(timeout=30)
    assert [services.queue.get(i).status for i in ids] == [JobStatus.succeeded] * 2
    assert services.queue.live_workers(stale_seconds=60) == 0  # it said goodbye


def test_concurrent_submissions_with_one_idempotency_key_make_one_job(services: Services) -> None:
    from datetime import timedelta

    got: list[str] = []

    def submit() -> None:
        job, _ = services.queue.enqueue(dict(REQUEST), "same", "key-1", timedelta(hours=1))
        got.append(job.id)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and len(set(got)) == 1


def test_an_expired_idempotency_key_makes_a_new_job(services: Services) -> None:
    from datetime import timedelta

    first, created = services.queue.enqueue(dict(REQUEST), "a", "k", timedelta(seconds=-1))
    second, created_again = services.queue.enqueue(dict(REQUEST), "b", "k", timedelta(hours=1))
    assert created and created_again and first.id != second.id


def test_durations_are_summed_by_status(services: Services) -> None:
    ids = enqueue(services.queue, 3)
    start = utcnow()
    finished = [(ids[0], "succeeded", 2.5), (ids[1], "succeeded", 4.0), (ids[2], "failed", 1.25)]
    with services.queue.sessions.begin() as s:
        for job_id, status, seconds in finished:
            job = s.get(Job, job_id)
            job.status, job.started_at = status, start
            job.finished_at = start + timedelta(seconds=seconds)
    durations = services.queue.durations()
    assert set(durations) == {"succeeded", "failed"}
    assert durations["succeeded"] == (2, pytest.approx(6.5, abs=0.01))
    assert durations["failed"] == (1, pytest.approx(1.25, abs=0.01))


def test_the_claim_reads_queued_jobs_from_their_own_index(services: Services) -> None:
    """A long history of finished jobs is not walked: the plan takes ix_jobs_queued."""
    start = utcnow() - timedelta(days=30)
    history = [
        {
            "id": f"old{i}",
            "status": JobStatus.succeeded,
            "request": REQUEST,
            "request_hash": f"h{i}",
            "created_at": start + timedelta(seconds=i),
        }
        for i in range(3000)
    ]
    queued = enqueue(services.queue, 2)
    with services.sessions.begin() as s:
        s.execute(insert(Job), history)
    dialect = services.engine.dialect.name
    sql = str(oldest_queued().compile(services.engine, compile_kwargs={"literal_binds": True}))
    with services.engine.begin() as c:
        c.execute(text("ANALYZE jobs" if dialect == "postgresql" else "ANALYZE"))
        if dialect == "postgresql":
            plan = json.dumps(c.execute(text(f"EXPLAIN (FORMAT JSON) {sql}")).scalar_one())
        else:
            plan = " ".join(row[-1] for row in c.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
    assert "ix_jobs_queued" in plan, plan
    assert services.queue.claim("w").job_id == queued[0]


def test_one_worker_takes_each_turn_of_a_chore(services: Services) -> None:
    queue, every = services.queue, timedelta(minutes=1)
    taken: list[bool] = []
    threads = [
        threading.Thread(target=lambda: taken.append(queue.take_turn("retain", every)))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == [False] * 5 + [True]  # the first use makes the row: one taker
    assert not queue.take_turn("retain", every)
    assert queue.take_turn("other", every)  # chores are apart
    with services.sessions.begin() as s:
        s.execute(update(Chore).where(Chore.name == "retain").values(done_at=utcnow() - every))
    assert [queue.take_turn("retain", every) for _ in range(2)] == [True, False]


def test_the_sweep_asks_about_outputs_in_batches(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five jobs asked about two at a time: the answer is the same as in one query."""
    monkeypatch.setattr(service.queue, "SWEEP_BATCH", 2)
    queue = services.queue
    ids = enqueue(queue, 5)
    running = queue.claim("w")
    assert running is not None
    asked = [(i, "attempt-1") for i in ids] + [(i, "attempt-2") for i in ids] + [("x" * 32, "a")]
    assert queue.live_outputs(asked) == {(running.job_id, "attempt-1")}
    with services.sessions.begin() as s:
        s.add(Upload(id="c" * 32, kind="text", filename="t.txt", size=1, sha256="0" * 64))
    assert queue.known_uploads(["a" * 32, "b" * 32, "c" * 32]) == {"c" * 32}


def test_a_job_put_off_waits_its_turn_and_keeps_its_attempts(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Put off (its store did not answer), a job is not claimed before its time, and however
    often that happens, its failures and lost workers still get max_attempts tries."""
    queue, now = services.queue, utcnow()
    monkeypatch.setattr(service.queue, "utcnow", lambda: now)
    (job_id,) = enqueue(queue)
    put_off = queue.max_attempts + 2
    for n in range(1, put_off + 1):
        claim = queue.claim("w")
        assert claim is not None and (claim.attempt, claim.deferrals) == (n, n - 1)
        wait = timedelta(seconds=5 * n)
        assert queue.defer(claim, "store_unavailable", "away", wait) == JobStatus.queued
        assert queue.get(job_id).run_after == now + wait
        now += wait - timedelta(seconds=1)
        assert queue.claim("w") is None  # not yet
        now += timedelta(seconds=1)
    claim = queue.claim("w")
    assert queue.fail(claim, "internal", "boom", retry=True) == JobStatus.queued  # 1 of 3 used
    assert queue.claim("w") is not None
    now += timedelta(seconds=10)
    assert queue.reap(stale_seconds=1) == [job_id]  # 2 of 3 used
    assert queue.get(job_id).status == JobStatus.queued
    claim = queue.claim("w")
    assert (claim.attempt, claim.deferrals) == (put_off + 3, put_off)
    assert queue.fail(claim, "internal", "boom", retry=True) == JobStatus.failed  # 3 of 3
    waits = [e.data.get("retry_in") for e in queue.events(job_id, 0) if e.kind == "state"]
    assert [w for w in waits if w is not None] == [5.0 * n for n in range(1, put_off + 1)]


def test_a_job_put_off_by_a_fenced_off_worker_stays_with_the_newer_attempt(
    services: Services,
) -> None:
    queue = services.queue
    (job_id,) = enqueue(queue)
    old = queue.claim("old")
    time.sleep(0.05)
    queue.reap(stale_seconds=0.01)
    new = queue.claim("new")
    assert queue.defer(old, "store_unavailable", "away", timedelta(seconds=5)) is None
    job = queue.get(job_id)
    assert (job.status, job.worker_id, job.deferrals, job.run_after) == (
        JobStatus.running,
        "new",
        0,
        None,
    )
    assert new is not None


def test_a_requeued_job_shows_why_and_not_its_last_attempts_stage(services: Services) -> None:
    """Retried, reaped or put off, a queued job shows that it waits to run again, at 0, never
    the stage and fraction its last attempt reached."""
    queue = services.queue
    (job_id,) = enqueue(queue)

    def requeue(how: str) -> Job:
        claim = queue.claim("w")
        assert claim is not None
        queue.progress(claim, "evaluate", 0.9, "scoring")
        if how == "fail":
            queue.fail(claim, "internal", "boom", retry=True)
        elif how == "defer":
            queue.defer(claim, "store_unavailable", "away", timedelta(0))
        else:
            time.sleep(0.05)
            assert queue.reap(stale_seconds=0.01) == [job_id]
        return queue.get(job_id)

    for how, stage, said in [
        ("fail", RETRYING, "attempt 1 failed (internal)"),
        ("defer", WAITING, "the store did not answer"),
        ("reap", RETRYING, "stopped beating"),
    ]:
        job = requeue(how)
        assert (job.status, job.stage, job.fraction) == (JobStatus.queued, stage, 0.0), how
        assert said in job.message, how
