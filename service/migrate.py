"""Bring a database to the current schema with Alembic (`tokengraft migrate`).

Safe to run from many processes at once: on PostgreSQL an advisory lock serializes them, and
on SQLite the migration runs in one `BEGIN IMMEDIATE` transaction.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from .db import make_engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
LOCK_ID = 0x746F6B67  # "tokg"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    config = alembic_config(url)
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()
