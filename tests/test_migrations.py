"""Migrating an empty database to head gives exactly the models' schema, on both backends; a
migration keeps the rows it finds."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table, create_engine, func, inspect, select

from service.migrate import alembic_config, upgrade
from service.models import Base


def test_head_matches_the_models(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)  # a second run is a no-op
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert diff == []
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def old_job(job_id: str, status: str, attempt: int = 0, fraction: float = 0.0, **columns) -> dict:
    """A jobs row as the first migrations wrote it, with any later columns given."""
    return {
        "id": job_id,
        "status": status,
        "version": 1,
        "request": {"model": "m"},
        "request_hash": "0" * 64,
        "attempt": attempt,
        "cancel_requested": False,
        "fraction": fraction,
        "created_at": datetime.now(UTC),
        **columns,
    }


def migrated(url: str, revision: str, rows: list[dict]) -> dict[str, dict]:
    """The jobs table by id after `rows` were written at `revision` and the database upgraded
    to head."""
    upgrade(url, revision)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(Table("jobs", MetaData(), autoload_with=conn).insert(), rows)
        upgrade(url)
        with engine.connect() as conn:
            jobs = Table("jobs", MetaData(), autoload_with=conn)
            return {row["id"]: dict(row) for row in conn.execute(select(jobs)).mappings()}
    finally:
        engine.dispose()


def round_trip(url: str, revision: str) -> list:
    """Down to `revision` and up again: the schema's difference from the models (empty)."""
    downgrade(url, revision)
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


def test_jobs_from_before_job_kinds_are_transplants(database_url: str) -> None:
    jobs = migrated(database_url, "0001", [old_job("old", "succeeded", 1, 1.0)])
    assert {k: v["kind"] for k, v in jobs.items()} == {"old": "transplant"}


def downgrade(url: str, revision: str) -> None:
    config = alembic_config(url)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, revision)
    finally:
        engine.dispose()


def test_file_sizes_over_2_gib_fit_and_rows_are_kept(database_url: str) -> None:
    upgrade(database_url, "0002")
    engine = create_engine(database_url)
    big = 3 * 2**30
    try:
        with engine.begin() as conn:
            jobs, artifacts, uploads = (
                Table(name, MetaData(), autoload_with=conn)
                for name in ("jobs", "artifacts", "uploads")
            )
            conn.execute(jobs.insert().values(old_job("j", "succeeded", 1, 1.0)))
            conn.execute(artifacts.insert().values(job_id="j", path="a", size=7, sha256="0"))
        upgrade(database_url)
        with engine.begin() as conn:
            artifacts, uploads = (
                Table(name, MetaData(), autoload_with=conn) for name in ("artifacts", "uploads")
            )
            conn.execute(artifacts.insert().values(job_id="j", path="b", size=big, sha256="0"))
            conn.execute(
                uploads.insert().values(
                    id="u",
                    kind="text",
                    filename="t",
                    size=big,
                    sha256="0",
                    created_at=datetime.now(UTC),
                )
            )
            rows = conn.execute(select(artifacts.c.path, artifacts.c.size).order_by("path"))
            assert rows.all() == [("a", 7), ("b", big)]
            assert conn.execute(select(uploads.c.size)).scalar() == big
            conn.execute(artifacts.delete().where(artifacts.c.size == big))
            conn.execute(uploads.delete())
        assert round_trip(database_url, "0002") == []
        with engine.connect() as conn:
            artifacts = Table("artifacts", MetaData(), autoload_with=conn)
            assert conn.execute(select(artifacts.c.path, artifacts.c.size)).all() == [("a", 7)]
    finally:
        engine.dispose()


def test_concurrent_migrations_are_safe(database_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(database_url)
        except BaseException as e:  # collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == set(Base.metadata.tables) | {
                "alembic_version"
            }
    finally:
        engine.dispose()


def test_unfinished_hypernet_jobs_claim_their_names_the_oldest_first(database_url: str) -> None:
    rows = [  # (id, kind, status, name): two unfinished jobs of one name, from before the claim
        ("a", "hypernet", "queued", "hn"),
        ("b", "hypernet", "running", "hn"),
        ("c", "hypernet", "failed", "hn"),
        ("d", "hypernet", "succeeded", "other"),
        ("e", "transplant", "queued", None),
    ]
    jobs = migrated(
        database_url,
        "0005",
        [
            old_job(
                job_id,
                status,
                kind=kind,
                request={"name": name} if name else {"model": "m"},
                created_at=datetime(2026, 1, 1, n, tzinfo=UTC),
            )
            for n, (job_id, kind, status, name) in enumerate(rows)
        ],
    )
    names = {job_id: row["hypernet_name"] for job_id, row in jobs.items()}
    assert names == {"a": "hn", "b": None, "c": "hn", "d": "other", "e": None}
    assert round_trip(database_url, "0005") == []
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            jobs_table = Table("jobs", MetaData(), autoload_with=conn)
            assert conn.execute(select(func.count()).select_from(jobs_table)).scalar() == 5
    finally:
        engine.dispose()


def test_jobs_from_before_put_off_jobs_were_never_put_off(database_url: str) -> None:
    row = migrated(database_url, "0006", [old_job("q", "queued", 2)])["q"]
    assert (row["attempt"], row["deferrals"], row["run_after"]) == (2, 0, None)
    assert round_trip(database_url, "0006") == []
