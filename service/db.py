"""Engine and sessions. SQLite gets WAL, a busy timeout and `BEGIN IMMEDIATE`, so that
concurrent writers (API threads, in-process worker, worker processes) wait instead of failing."""

from __future__ import annotations

import sqlite3
import time

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

READ_ONLY = "tokengraft_read_only"


def make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, record) -> None:  # noqa: ANN001 (DB-API types)
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # noqa: ANN001
        # A deferred transaction that reads and then writes can fail with "database is locked"
        # when another writer got in between; taking the write lock up front avoids that.
        # Read-only sessions (`make_read_sessions`) begin deferred: readers never queue on
        # the write lock, which WAL lets them share with one writer.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _switch_to_wal(cursor: sqlite3.Cursor, timeout: float = 30.0) -> None:
    """Set WAL mode, retrying: switching takes an exclusive lock without waiting on the busy
    timeout, so connections opening a new database at once can find it locked."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_read_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions for queries that only read: on SQLite they begin without the write lock."""
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
