"""Everything a running service holds, built once from Settings and shared by the API, the
in-process worker and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .catalog import Catalog
from .config import Settings
from .db import make_engine, make_read_sessions, make_sessions
from .keys import Gate
from .queue import Queue
from .storage import Storage, open_storage


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    queue: Queue
    storage: Storage
    catalog: Catalog
    gate: Gate

    @classmethod
    def build(cls, settings: Settings) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        storage = open_storage(settings)  # first: a bad --storage fails before any connection
        engine = make_engine(settings.url)
        sessions, reads = make_sessions(engine), make_read_sessions(engine)
        return cls(
            settings,
            engine,
            sessions,
            Queue(sessions, settings.max_attempts, reads),
            storage,
            Catalog(settings, storage),
            Gate(reads, settings.key_cache_seconds),
        )
