"""How an idle worker waits for the next job.

On PostgreSQL it LISTENs on a connection of its own, and `Queue` NOTIFYs in the transaction
that queues a job (a new one, a retry, one given back or reaped): the notification arrives at
commit, so a worker claims a new job within milliseconds instead of at its next poll. Polling
stays: every wait ends after `poll_seconds` anyway (a notification is lost while the listener
reconnects), and it is all there is on SQLite or with `notify` off.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import psycopg
from sqlalchemy.engine import make_url

from .queue import CHANNEL

log = logging.getLogger("tokengraft.worker")


class Wakeup(Protocol):
    def wait(self, seconds: float) -> None:
        """Return at a sign of a queued job, when the worker is told to stop, or after
        `seconds`."""

    def close(self) -> None: ...


class Sleep:
    """Polling: wait out the interval (or until stopped)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def wait(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def close(self) -> None:
        pass


def conninfo(database_url: str) -> str:
    """psycopg's connection string from the SQLAlchemy URL the service is configured with."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Listener:
    """LISTEN on a connection outside the pool (autocommit: a notification is read between
    transactions). A broken connection falls back to polling for that wait and is reopened at
    the next."""

    def __init__(self, database_url: str, stop: threading.Event) -> None:
        self.conninfo, self.stop = conninfo(database_url), stop
        self.connection: psycopg.Connection | None = None

    def _connected(self) -> psycopg.Connection:
        if self.connection is None or self.connection.closed:
            self.connection = psycopg.connect(self.conninfo, autocommit=True)
            self.connection.execute(f"LISTEN {CHANNEL}")
        return self.connection

    def wait(self, seconds: float) -> None:
        if self.stop.is_set():
            return
        try:
            for _ in self._connected().notifies(timeout=seconds, stop_after=1):
                pass
        except psycopg.Error as e:
            log.warning("listening for new jobs failed (%s); polling until it reconnects", e)
            self.close()
            self.stop.wait(seconds)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def for_database(database_url: str, notify: bool, stop: threading.Event) -> Wakeup:
    if notify and make_url(database_url).get_backend_name() == "postgresql":
        return Listener(database_url, stop)
    return Sleep(stop)
