"""Database rows as API bodies."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

from ..models import Artifact, Job, JobStatus, Upload
from ..schemas import JobError, JobOut, JobUrls, Progress, UploadOut


def job_out(job: Job) -> JobOut:
    base = f"/jobs/{job.id}"
    return JobOut(
        id=job.id,
        kind=job.kind,
        status=job.status,
        progress=Progress(stage=job.stage, fraction=job.fraction, message=job.message),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempt=job.attempt,
        cancel_requested=job.cancel_requested,
        error=JobError(type=job.error_type, detail=job.error_detail) if job.error_type else None,
        request=job.request,
        result=job.result,
        urls=JobUrls(
            self=base,
            events=f"{base}/events",
            artifacts=f"{base}/artifacts",
            checkpoint=f"{base}/checkpoint.tar",
        ),
    )


def etag(job: Job) -> str:
    """Weak: it names a version of the job's row, not a byte-exact body."""
    return f'W/"{job.id}-{job.version}"'


def page_etag(jobs: list[Job], more: bool) -> str:
    """Weak, from the versions of the jobs a page holds: any change to one of them, a new
    job, or one deleted changes it."""
    versions = ",".join(f"{j.id}-{j.version}" for j in jobs) + f",{more}"
    return f'W/"{hashlib.sha256(versions.encode()).hexdigest()[:32]}"'


def accepts_gzip(accept_encoding: str | None) -> bool:
    for item in (accept_encoding or "").lower().split(","):
        name, _, params = item.partition(";")
        if name.strip() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def compressed(body: bytes, accept_encoding: str | None) -> tuple[bytes, dict[str, str]]:
    """A page of jobs gzipped where the client takes it: succeeded jobs carry reports that
    repeat one another, so a board's page shrinks to about a tenth. Done here, not by
    GZipMiddleware, which would compress artifact downloads too (and break Range on them)."""
    if len(body) < 1024 or not accepts_gzip(accept_encoding):
        return body, {}
    return gzip.compress(body, compresslevel=5), {"Content-Encoding": "gzip"}


def not_modified(if_none_match: str | None, tag: str) -> bool:
    """RFC 9110 If-None-Match: `*` matches any current representation, and tags compare
    weakly (`W/"x"` matches `"x"`)."""
    if if_none_match is None:
        return False
    given = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in given or tag.removeprefix("W/") in given


@dataclass(frozen=True)
class Seen:
    """A job as a poll answers it: its tag, whether it is still moving, its JSON body."""

    at: float
    tag: str
    terminal: bool
    body: bytes


class Polls:
    """What `GET /jobs/{id}` answers, read from the database at most once per job every
    `seconds` and shared by every client polling that job: a dashboard's load on the
    database is bounded by the jobs it watches, not by how often or how many poll.

    A view older than `seconds` is still answered while one reader refreshes it in the
    background (no poll waits on the database, and pollers never stampede it); one older
    than twice that is read first. A poll sees a job at most `2 * seconds` old. Bounded, least
    recently used first out."""

    def __init__(self, seconds: float, size: int = 4096) -> None:
        self.seconds, self.size = seconds, size
        self.kept: OrderedDict[str, Seen] = OrderedDict()
        self.refreshing: set[str] = set()
        self.tasks: set[asyncio.Task] = set()  # refreshes under way, held until done

    def get(self, job_id: str) -> Seen | None:
        """The view to answer with, or None: read it first."""
        seen = self.kept.get(job_id)
        if seen is None or time.monotonic() - seen.at >= 2 * self.seconds:
            return None
        self.kept.move_to_end(job_id)
        return seen

    def due(self, job_id: str) -> bool:
        """Whether this poll should refresh the view (it is old, and nobody else is on it)."""
        seen = self.kept.get(job_id)
        if seen is None or job_id in self.refreshing:
            return False
        if time.monotonic() - seen.at < self.seconds:
            return False
        self.refreshing.add(job_id)
        return True

    def put(self, job: Job) -> Seen:
        body = job_out(job).model_dump_json().encode()
        seen = Seen(time.monotonic(), etag(job), JobStatus(job.status).terminal, body)
        self.kept[job.id] = seen
        if len(self.kept) > self.size:
            self.kept.popitem(last=False)
        return seen

    def forget(self, job_id: str) -> None:
        self.kept.pop(job_id, None)
        self.refreshing.discard(job_id)


class Manifests:
    """A succeeded job's row and files, kept `seconds` per API process: a ranged download
    asks for them on every request, and two database reads were the largest fixed cost of a
    1 MiB range (bench/load.py), while a recorded manifest never changes. A job deleted
    through this process is forgotten at once; through another, at the first request that
    finds its file gone (the files themselves are checked on every request). Bounded, least
    recently used first out."""

    def __init__(self, seconds: float, size: int = 1024) -> None:
        self.seconds, self.size = seconds, size
        self.kept: OrderedDict[str, tuple[float, Job, list[Artifact]]] = OrderedDict()

    def get(self, job_id: str) -> tuple[Job, list[Artifact]] | None:
        kept = self.kept.get(job_id)
        if kept is None or time.monotonic() - kept[0] >= self.seconds:
            return None
        self.kept.move_to_end(job_id)
        return kept[1], kept[2]

    def put(self, job: Job, files: list[Artifact]) -> None:
        self.kept[job.id] = (time.monotonic(), job, files)
        if len(self.kept) > self.size:
            self.kept.popitem(last=False)

    def forget(self, job_id: str) -> None:
        self.kept.pop(job_id, None)


def upload_out(row: Upload) -> UploadOut:
    return UploadOut(
        id=row.id,
        kind=row.kind,
        filename=row.filename,
        size=row.size,
        sha256=row.sha256,
        vocab_size=row.vocab_size,
        created_at=row.created_at,
    )
