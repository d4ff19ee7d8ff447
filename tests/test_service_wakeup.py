"""Idle workers wake when a job is queued (PostgreSQL LISTEN/NOTIFY), and poll otherwise."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select, text
from test_service_api import REQUEST, wait_for

from service import wakeup
from service.config import Settings
from service.models import JobStatus
from service.queue import CHANNEL
from service.services import Services
from service.worker import Worker

POLL = 30.0  # seconds: far longer than any wait below, so only a notification ends one


def timed_wait(waiter: wakeup.Wakeup, seconds: float = POLL) -> tuple[threading.Thread, list]:
    took: list[float] = []

    def wait() -> None:
        start = time.monotonic()
        waiter.wait(seconds)
        took.append(time.monotonic() - start)

    thread = threading.Thread(target=wait)
    thread.start()
    return thread, took


@pytest.fixture
def pg_services(settings: Settings) -> Services:
    if not settings.url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    built = Services.build(settings)
    yield built
    built.engine.dispose()


def test_a_queued_job_ends_the_wait(pg_services: Services) -> None:
    listener = wakeup.for_database(pg_services.settings.url, True, threading.Event())
    assert isinstance(listener, wakeup.Listener)
    listener.wait(0.01)  # connected and listening before the job is queued
    thread, took = timed_wait(listener)
    pg_services.queue.enqueue(REQUEST, "h1")
    thread.join(10)
    assert took and took[0] < 5, took
    listener.close()


def test_a_rolled_back_job_wakes_nobody(pg_services: Services) -> None:
    listener = wakeup.Listener(pg_services.settings.url, threading.Event())
    listener.wait(0.01)
    with pg_services.sessions() as s:
        s.execute(select(func.pg_notify(CHANNEL, "x")))
        s.rollback()
    start = time.monotonic()
    listener.wait(0.5)
    assert time.monotonic() - start >= 0.45
    listener.close()


def test_a_broken_listener_falls_back_to_polling(pg_services: Services) -> None:
    url = pg_services.settings.url.replace("127.0.0.1:5432", "127.0.0.1:1")
    listener = wakeup.Listener(url, threading.Event())
    start = time.monotonic()
    listener.wait(0.3)  # no server there: it waits out the interval, raising nothing
    assert 0.25 <= time.monotonic() - start < 5


def test_sqlite_and_notify_off_poll() -> None:
    stop = threading.Event()
    assert isinstance(wakeup.for_database("sqlite:///x.db", True, stop), wakeup.Sleep)
    assert isinstance(wakeup.for_database("postgresql+psycopg://h/db", False, stop), wakeup.Sleep)
    sleeper = wakeup.Sleep(stop)
    thread, took = timed_wait(sleeper)
    stop.set()  # a stopping worker is not kept waiting
    thread.join(5)
    assert took and took[0] < 5


def listening(services: Services) -> bool:
    """Whether a connection to this database has LISTENed (its last statement): the worker's
    listener connects at its first wait, so a job queued before that would go unnoticed."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = :q"
    )
    with services.sessions() as s:
        return bool(s.scalar(query, {"q": f"LISTEN {CHANNEL}"}))


def test_an_idle_worker_claims_a_new_job_at_once(pg_services: Services) -> None:
    settings = pg_services.settings.model_copy(update={"poll_seconds": POLL})
    worker = Worker(settings, pg_services.queue, pg_services.storage, pg_services.catalog)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        # it found nothing and waits: a job queued before its LISTEN would go unnoticed
        wait_for(lambda: listening(pg_services), thread, "LISTEN", 60)
        job, _ = pg_services.queue.enqueue(REQUEST, "h2")
        deadline = time.monotonic() + 15  # far below POLL: only the notification explains it
        while pg_services.queue.get(job.id).status == JobStatus.queued:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        worker.stop.set()
        thread.join(POLL + 30)
