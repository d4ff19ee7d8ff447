"""Shared pytest fixtures. Add new shared fixtures below, one per block, each with a docstring."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiny
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from service.api.main import create_app
from service.config import Settings
from service.migrate import upgrade
from service.services import Services

REPO = Path(__file__).resolve().parent.parent


# --- real-model cache ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def repo_cache() -> Iterator[Path]:
    """TOKENGRAFT_CACHE under the repo's git-ignored .cache/, so the real SmolLM2 checkpoint is
    converted from the bundled GGUF once and reused by later test runs."""
    root = REPO / ".cache" / "tokengraft"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOKENGRAFT_CACHE", str(root))
        yield root


# --- databases -------------------------------------------------------------------------------
PG_ADMIN = os.environ.get(
    "TOKENGRAFT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend: a SQLite file, or a fresh PostgreSQL database
    (created on the server at 127.0.0.1:5432 or $TOKENGRAFT_TEST_PG, dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tokengraft.db'}"
        return
    name = f"tg_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as e:
        pytest.fail(f"PostgreSQL at {PG_ADMIN} is needed: {str(e).splitlines()[0]}")
    try:
        yield make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- service ---------------------------------------------------------------------------------
@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Service settings on a migrated database with short timings, a model store holding a
    tiny Llama named "tiny", a tokenizer store holding a SentencePiece tokenizer "sp", and a
    corpora folder with an eval text "fox"."""
    data = tmp_path / "data"
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    (corpora / "fox.txt").write_text("\n".join(tiny.TEXT))
    s = Settings(
        data_dir=data,
        database_url=database_url,
        corpora_dir=corpora,
        hypernets_dir=tmp_path / "hypernets",
        heartbeat_seconds=0.2,
        stale_seconds=2.0,
        poll_seconds=0.1,
        keepalive_seconds=0.5,
        key_cache_seconds=0.0,
        poll_cache_seconds=0.0,
    )
    tiny.model_dir(s.models_dir / "tiny", tiny.byte_level())
    tiny.sentencepiece().save_pretrained(s.tokenizers_dir / "sp")
    upgrade(s.url)
    return s


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """The service's objects on `settings`, disposed afterwards."""
    built = Services.build(settings)
    yield built
    built.engine.dispose()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The API in-process (no worker: tests run jobs with `run_next`)."""
    with TestClient(create_app(settings)) as c:
        yield c
