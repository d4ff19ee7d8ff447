"""schemathesis against `tokengraft serve`: the live schema and openapi.yaml, on SQLite and
PostgreSQL, open (no key ever created) and closed (a write key). No server error and no
response the schema does not declare.

Each run is bounded by a number of cases per operation and phase (TOKENGRAFT_SCHEMA_FUZZ_EXAMPLES,
25: 1,489 cases open, 1,340 keyed, about 10 s a run on 2 cores) and a fixed seed, never by time:
the same cases run on every machine, however fast or busy. Hypothesis's `too_slow` health check
is off for the same reason (it times data generation).

Checks left out, and why: `positive_data_acceptance` (a request that fits the schema may still
name a model or tokenizer the server does not have: 422 is right); on the open server,
`ignored_auth`, `missing_required_header` and `negative_data_rejection` (without keys the
server is open by design, on loopback only, and a request without the Authorization header the
schema declares is not a bad request there; the keyed run keeps all three). `/readyz` is left
out: the server runs without a worker, so 503 is its answer.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_service_e2e import REPO, Server

from service import keys
from service.config import Settings
from service.services import Services

EXAMPLES = os.environ.get("TOKENGRAFT_SCHEMA_FUZZ_EXAMPLES", "20")
SEED = os.environ.get("TOKENGRAFT_SCHEMA_FUZZ_SEED", "20261128")
ST = str(Path(os.sys.executable).with_name("st"))


@pytest.fixture(params=["open", "keyed"])
def served(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Iterator:
    """The server without a worker, and the key to send (None: no key exists)."""
    key = None
    if request.param == "keyed":
        services = Services.build(settings)
        _, key = keys.create(services.sessions, "fuzz", "write")
        services.engine.dispose()
    server = Server(settings, tmp_path, worker=False)
    yield server, key
    server.stop()


def schemathesis(location: str, url: str, key: str | None, cwd: Path) -> tuple[int, str]:
    excluded = ["positive_data_acceptance"]
    command = [
        ST,
        "run",
        location,
        "--url",
        url,
        "--checks",
        "all",
        "--max-examples",
        EXAMPLES,
        "--seed",
        SEED,
        "--generation-database",
        "none",
        "--suppress-health-check",
        "too_slow",
        "--workers",
        "1",
        "--exclude-path",
        "/readyz",
        "--no-color",
    ]
    if key is None:
        excluded += ["ignored_auth", "missing_required_header", "negative_data_rejection"]
    else:
        command += ["--header", f"Authorization: Bearer {key}"]
    command += ["--exclude-checks", ",".join(excluded)]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("source", ["live", "openapi.yaml"])
def test_no_server_errors_and_nothing_off_the_schema(
    served: tuple[Server, str | None], source: str, tmp_path: Path
) -> None:
    server, key = served
    location = f"{server.url}/openapi.json" if source == "live" else str(REPO / "openapi.yaml")
    code, report = schemathesis(location, server.url, key, tmp_path)
    assert code == 0, report[-6000:]
    assert "Test cases:" in report and " generated" in report  # it did run cases
