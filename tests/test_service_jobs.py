"""The job routes and artifact storage under hostile input: bad cursors, Last-Event-ID and Range
headers, If-None-Match forms, tampered artifact folders, deletion and shutdown mid-stream, files
over 2 GiB, and leftover folders. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete
from test_service_api import REQUEST, assert_problem, submit
from test_service_e2e import Server

from service.api.routes.artifacts import _range
from service.api.routes.events import MAX_EVENT_ID, _last_event_id
from service.config import Settings
from service.models import Artifact, Job, JobEvent, JobStatus
from service.problems import ProblemError
from service.services import Services
from service.worker import Worker

FILES = {"model.safetensors": b"weights" * 100, "sub/config.json": b'{"a": 1}'}


def succeeded(services: Services, files: dict[str, bytes]) -> tuple[str, Path]:
    """A job that succeeded with these files (written by hand, as a worker would)."""
    job, _ = services.queue.enqueue(REQUEST, "0" * 64)
    claim = services.queue.claim("test-worker")
    assert claim is not None and claim.job_id == job.id
    out = services.storage.workspace(job.id, claim.attempt)
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    assert services.queue.succeed(claim, {}, out.name, services.storage.manifest(job.id, out.name))
    return job.id, out


def cursor(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64encode(raw).decode()


BAD_CURSORS = [
    "%%%",
    "abc",  # bad padding
    "YWJj=====",
    cursor(b"\xff\xfe|abc"),  # not UTF-8
    cursor("2026-01-01T00:00:00+00:00"),  # no "|"
    cursor("2026-01-01T00:00:00+00:00|a|b"),
    cursor("2026-01-01T00:00:00|abc"),  # naive
    cursor("9999-12-31T23:59:59-05:00|abc"),  # beyond year 9999 in UTC
    cursor("0001-01-01T00:00:00+05:00|abc"),  # before year 1 in UTC
    cursor("2026-13-01T00:00:00+00:00|abc"),
    cursor("2026-01-01T00:00:00+00:00|ab\x00c"),  # PostgreSQL refuses NUL in text
    cursor("2026-01-01T00:00:00+00:00|" + "a" * 40),
    cursor("2026-01-01T00:00:00+00:00|"),
]


def test_every_bad_cursor_is_a_400(client: TestClient) -> None:
    submit(client)
    for bad in BAD_CURSORS:
        assert_problem(client.get("/jobs", params={"cursor": bad}), 400, "invalid cursor")
    far = client.get("/jobs", params={"cursor": cursor("9999-12-31T23:59:59+00:00|ff")})
    assert far.status_code == 200 and len(far.json()["jobs"]) == 1


def events(client: TestClient, job_id: str, last_event_id: str) -> list[str]:
    with client.stream(
        "GET", f"/jobs/{job_id}/events", headers={"Last-Event-ID": last_event_id}
    ) as stream:
        assert stream.status_code == 200
        return [line for line in stream.iter_lines() if line]


BAD_IDS = ["9" * 5000, "1" + "0" * 23, "2147483648", "-1", "1.5", "x", "1 2"]


def test_a_bad_last_event_id_is_a_400_before_the_stream(client: TestClient) -> None:
    job = submit(client)
    for bad in BAD_IDS:
        response = client.get(f"/jobs/{job['id']}/events", headers={"Last-Event-ID": bad})
        assert_problem(response, 400, "Last-Event-ID")


def test_headers_take_ascii_digits_only() -> None:
    """A raw 0xB2 byte reaches a handler as "²", which str.isdigit() accepts and int() refuses
    (the test client sends UTF-8, so this is checked here)."""
    with pytest.raises(ProblemError) as refused:
        _last_event_id("²")
    assert refused.value.status == 400
    assert _range("bytes=²-", 10) is None and _range("bytes=-²", 10) is None
    assert _range("bytes=2-³", 10) is None


def test_last_event_id_replays_what_came_after(client: TestClient, services: Services) -> None:
    job = submit(client)
    services.queue.cancel(job["id"])
    first, second = (e.id for e in services.queue.events(job["id"], 0))
    assert events(client, job["id"], "2147483647")[-2:] == [
        "event: end",
        'data: {"status": "canceled"}',
    ]
    replay = events(client, job["id"], f"00{first}")
    assert [ln for ln in replay if ln.startswith("id: ")] == [f"id: {second}"]


def test_ranges_with_huge_or_odd_numbers_never_fail(client: TestClient, services: Services) -> None:
    job_id, _ = succeeded(services, FILES)
    url, data = f"/jobs/{job_id}/artifacts/model.safetensors", FILES["model.safetensors"]
    beyond = client.get(url, headers={"Range": f"bytes={'9' * 5000}-"})
    assert_problem(beyond, 416)
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    for header in (f"bytes=0-{'9' * 5000}", f"bytes=-{'9' * 5000}", f"bytes=000-{'0' * 4999}9"):
        part = client.get(url, headers={"Range": header})
        assert part.status_code == 206 and part.content == data[: len(part.content)]
    assert client.get(url, headers={"Range": f"bytes=0-{'0' * 5000}"}).content == data[:1]
    for ignored in (f"bytes={'9' * 5000}-5", "bytes=5-2", "bytes=x-", "bytes=1-2,4-5", "items=0-1"):
        whole = client.get(url, headers={"Range": ignored})
        assert whole.status_code == 200 and whole.content == data, ignored
    upper = client.get(url, headers={"Range": "BYTES=2-3"})  # units are case-insensitive
    assert upper.status_code == 206 and upper.content == data[2:4]
    stale = client.get(url, headers={"Range": f"bytes={len(data)}-", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == data  # If-Range comes before 416


def test_if_none_match_star_and_weak_comparison(client: TestClient, services: Services) -> None:
    job = submit(client)
    tag = client.get(f"/jobs/{job['id']}").headers["etag"]
    strong = tag.removeprefix("W/")
    for header in ("*", strong, tag, f'"x", W/"y", {strong}', f'W/"a,b",{tag}'):
        response = client.get(f"/jobs/{job['id']}", headers={"If-None-Match": header})
        assert response.status_code == 304 and response.headers["etag"] == tag, header
    for header in ('"other"', strong[:-1], f'"{strong}"', "W/"):
        response = client.get(f"/jobs/{job['id']}", headers={"If-None-Match": header})
        assert response.status_code == 200, header
    services.queue.cancel(job["id"])  # so that the next job is the one claimed
    job_id, _ = succeeded(services, FILES)
    url = f"/jobs/{job_id}/artifacts/model.safetensors"
    sha = client.get(url).headers["etag"]
    for header in ("*", sha, f"W/{sha}", f'"x", W/{sha}'):
        assert client.get(url, headers={"If-None-Match": header}).status_code == 304, header
    assert client.get(url, headers={"If-None-Match": '"x"'}).status_code == 200


def tamper(out: Path, tmp_path: Path, how: str) -> None:
    """Replace a file or folder of the output with a symlink to a copy outside, or change it."""
    outside = tmp_path / "outside"
    outside.mkdir(parents=True)
    if how == "file":
        (outside / "m").write_bytes(FILES["model.safetensors"])  # the very same bytes
        (out / "model.safetensors").unlink()
        (out / "model.safetensors").symlink_to(outside / "m")
    elif how == "folder":
        (outside / "config.json").write_bytes(FILES["sub/config.json"])
        (out / "sub" / "config.json").unlink()
        (out / "sub").rmdir()
        (out / "sub").symlink_to(outside)
    elif how == "attempt":
        out.rename(outside / "attempt")
        out.symlink_to(outside / "attempt")
    elif how == "passwd":
        (out / "model.safetensors").unlink()
        (out / "model.safetensors").symlink_to("/etc/passwd")
    elif how == "fifo":
        (out / "model.safetensors").unlink()
        os.mkfifo(out / "model.safetensors")
    elif how == "missing":
        (out / "sub" / "config.json").unlink()


TAMPERED = {"file": "model.safetensors", "folder": "sub/config.json",
            "attempt": "model.safetensors", "passwd": "model.safetensors",
            "fifo": "model.safetensors", "missing": "sub/config.json"}  # fmt: skip


def test_only_regular_files_inside_the_job_s_folder_are_served(
    client: TestClient, services: Services, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for how, path in TAMPERED.items():
        job_id, out = succeeded(services, FILES)
        tamper(out, tmp_path / how, how)
        url = f"/jobs/{job_id}/artifacts/{path}"
        body = client.get(url)
        assert_problem(body, 404, "not available")
        assert str(tmp_path) not in body.text and "passwd" not in body.text
        head = client.head(url)
        assert head.status_code == 404 and not head.content, how
        assert_problem(client.get(f"/jobs/{job_id}/checkpoint.tar"), 404, "not available")
        assert client.get(f"/jobs/{job_id}/artifacts").status_code == 200
    assert caplog.text.count("refused") >= 3 * len(TAMPERED)


def test_a_file_whose_size_changed_is_a_409(client: TestClient, services: Services) -> None:
    job_id, out = succeeded(services, FILES)
    with open(out / "model.safetensors", "ab") as f:
        f.write(b"more")
    url = f"/jobs/{job_id}/artifacts/model.safetensors"
    assert_problem(client.get(url), 409, "changed")
    assert_problem(client.get(f"/jobs/{job_id}/checkpoint.tar"), 409, "changed")
    assert client.get(f"/jobs/{job_id}/artifacts/sub/config.json").content == b'{"a": 1}'


def purge(services: Services, job_id: str) -> None:
    """Remove a job and its rows behind the API's back, as a concurrent delete would."""
    with services.sessions.begin() as s:
        for table in (JobEvent, Artifact):
            s.execute(delete(table).where(table.job_id == job_id))
        s.execute(delete(Job).where(Job.id == job_id))


def test_a_job_deleted_mid_stream_ends_it(client: TestClient, services: Services) -> None:
    job = submit(client)
    lines = []
    with client.stream("GET", f"/jobs/{job['id']}/events") as stream:
        for line in stream.iter_lines():
            lines.append(line)
            if line.startswith("event: state"):
                purge(services, job["id"])
    nonblank = [ln for ln in lines if ln]
    assert nonblank[-2:] == ["event: end", 'data: {"status": "deleted"}']


def test_sigterm_ends_open_streams_and_the_server_exits(settings: Settings, tmp_path: Path) -> None:
    server = Server(settings, tmp_path, worker=False)
    try:
        job_id = server.http.post("/transplant", json=REQUEST).json()["id"]
        lines: list[str] = []
        with server.http.stream("GET", f"/jobs/{job_id}/events") as stream:
            for line in stream.iter_lines():
                lines.append(line)
                if line.startswith("event: state"):
                    server.process.send_signal(signal.SIGTERM)
                    signaled = time.monotonic()
                elif lines.count("event: state") and time.monotonic() - signaled > 10:
                    break  # pings would keep it open for good
        server.process.wait(timeout=10)
        took = time.monotonic() - signaled
    finally:
        server.stop()
    nonblank = [ln for ln in lines if ln]
    end = json.dumps({"status": "queued", "reason": "server shutting down"})
    assert nonblank[-2:] == ["event: end", f"data: {end}"], server.log.read_text()
    assert took < 10
    print(f"server exited {took:.1f} s after SIGTERM with a stream open")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/healthz", timeout=2)


def test_artifacts_over_2_gib(client: TestClient, services: Services) -> None:
    size, tail = 3 * 2**30, b"the end of a big file"
    job, _ = services.queue.enqueue(REQUEST, "0" * 64)
    claim = services.queue.claim("test-worker")
    assert claim is not None
    out = services.storage.workspace(job.id, claim.attempt)
    out.mkdir()
    with open(out / "big.bin", "wb") as f:  # sparse: costs no disk
        f.truncate(size - len(tail))
        f.seek(size - len(tail))
        f.write(tail)
    rows = [("big.bin", size, "0" * 64)]  # hashing 3 GiB of zeros is not the point here
    assert services.queue.succeed(claim, {}, out.name, rows)
    manifest = client.get(f"/jobs/{job.id}/artifacts").json()["files"]
    assert manifest == [{"path": "big.bin", "size": size, "sha256": "0" * 64}]
    start = 3_221_225_000  # 472 bytes before the end
    part = client.get(f"/jobs/{job.id}/artifacts/big.bin", headers={"Range": f"bytes={start}-"})
    assert part.status_code == 206 and part.headers["content-range"] == (
        f"bytes {start}-{size - 1}/{size}"
    )
    assert part.content == b"\0" * (size - start - len(tail)) + tail
    assert client.head(f"/jobs/{job.id}/artifacts/big.bin").headers["content-length"] == str(size)


def test_failed_jobs_leave_no_folder(services: Services) -> None:
    jobs = services.settings.jobs_dir
    worker = Worker(services.settings, services.queue, services.storage, services.catalog)
    failing, _ = services.queue.enqueue({**REQUEST, "model": "missing"}, "1" * 64)
    claim = services.queue.claim(worker.id)
    assert claim is not None and claim.job_id == failing.id
    assert worker.run_job(claim) == JobStatus.failed
    assert not (jobs / failing.id).exists()
    job_id, out = succeeded(services, FILES)
    services.storage.remove(job_id, out.name)
    assert not (jobs / job_id).exists()
    services.storage.remove(job_id, out.name)  # again: nothing left to remove
    kept = services.storage.workspace("keep", 1)
    services.storage.scratch("keep", "work")
    services.storage.remove("keep", kept.name)
    assert [p.name for p in (jobs / "keep").iterdir()] == ["work"]  # other outputs stay


def test_the_schema_says_last_event_id_is_digits(client: TestClient) -> None:
    """Declared only: the route checks it itself, and anything else stays its 400."""
    route = client.get("/openapi.json").json()["paths"]["/jobs/{job_id}/events"]["get"]
    schema = next(p["schema"] for p in route["parameters"] if p["name"] == "last-event-id")
    assert (schema["pattern"], schema["maxLength"]) == ("^[0-9]{1,10}$", 10)
    assert re.fullmatch(schema["pattern"], str(MAX_EVENT_ID))
