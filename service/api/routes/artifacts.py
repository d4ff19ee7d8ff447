"""A succeeded job's files: the manifest, each file (Range, If-Range, HEAD) with its sha256 as a
strong ETag, and the whole checkpoint as a tar streamed file by file (never built first).

A local file goes out as a FileResponse; a file in an object store is streamed through with
the same status codes and headers, or, with `storage_redirect` on, answered by a 307 to a
presigned URL of the store's, which serves Range itself.

A file is served only as it was recorded: a regular file inside the job's folder (no symlink
on the way) or an object of the recorded size, checked before the response starts, since a
body that breaks after its headers went out looks like a network fault to the client.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from ...models import Artifact, Job, JobKind, JobStatus
from ...problems import ProblemError
from ...schemas import FileOut, Manifest
from ...services import Services
from ...storage import Changed, LocalStorage
from ..deps import Authorized, ManifestsDep, ServicesDep
from ..views import Manifests, not_modified
from .jobs import NOT_FOUND, find

router = APIRouter(dependencies=[Authorized], tags=["artifacts"])
log = logging.getLogger("tokengraft.api")
RANGE = re.compile(r"(?i:bytes)=([0-9]*)-([0-9]*)")  # a range unit is case-insensitive
BLOCK = 512
PRESIGNED_SECONDS = 15 * 60  # a redirect's URL works this long: enough to start a download
Span = tuple[int, int]  # [start, end) of a file


def _succeeded(services: Services, job_id: str) -> Job:
    job = find(services, job_id)
    if job.kind == JobKind.hypernet:
        raise ProblemError(
            409,
            f"job {job_id} trains a hypernetwork into the store "
            f"({job.request.get('name')!r}, see GET /hypernets): it has no "
            "artifacts",
            "/problems/no-artifacts",
        )
    if job.status != JobStatus.succeeded or job.output_dir is None:
        raise ProblemError(
            409,
            f"job {job_id} is {job.status}: artifacts exist once it succeeds",
            "/problems/no-artifacts",
        )
    return job


def _files(services: Services, job_id: str) -> tuple[Job, list[Artifact]]:
    job = _succeeded(services, job_id)
    return job, services.queue.artifacts(job_id)


async def _recorded(
    services: Services, manifests: Manifests, job_id: str
) -> tuple[Job, list[Artifact]]:
    """`_files`, answered from what a recent request read (ranged downloads ask again and
    again for one job's files)."""
    kept = manifests.get(job_id)
    if kept is None:
        kept = await run_in_threadpool(_files, services, job_id)
        manifests.put(*kept)
    return kept


def _checked(services: Services, job: Job, f: Artifact) -> tuple[Path, os.stat_result] | None:
    """The file as recorded and its stat (None: it is in an object store, and there), or a
    problem before any byte is sent (and a warning: someone or something changed the store
    behind the service)."""
    assert job.output_dir is not None
    storage = services.storage
    try:
        if isinstance(storage, LocalStorage):  # the one place a local file matters
            return storage.local(job.id, job.output_dir, f.path, f.size)
        storage.check(job.id, job.output_dir, f.path, f.size)
        return None
    except Changed:
        log.warning(
            "job %s: file %r refused: its size is not the recorded %d bytes", job.id, f.path, f.size
        )
        raise ProblemError(
            409,
            f"file {f.path!r} of job {job.id} changed after it was recorded",
            "/problems/artifact-changed",
        ) from None
    except OSError as e:
        find(services, job.id)  # deleted meanwhile through another process: "no job", no warning
        log.warning(
            "job %s: file %r refused: not a regular file inside the job's folder (%s)",
            job.id,
            f.path,
            e,
        )
        raise ProblemError(
            404, f"file {f.path!r} of job {job.id} is not available", "/problems/not-found"
        ) from None


def _available(services: Services, job: Job, files: list[Artifact]) -> None:
    for f in files:
        _checked(services, job, f)


@router.get("/jobs/{job_id}/artifacts", response_model=Manifest, responses={409: {}, **NOT_FOUND})
@router.head("/jobs/{job_id}/artifacts", response_model=Manifest, responses={409: {}, **NOT_FOUND})
async def manifest(job_id: str, services: ServicesDep) -> Manifest:
    _, files = await run_in_threadpool(_files, services, job_id)
    return Manifest(files=[FileOut(path=f.path, size=f.size, sha256=f.sha256) for f in files])


def _position(digits: str, size: int) -> int:
    """A byte position, or `size` for any beyond the file (int() refuses over 4300 digits)."""
    digits = digits.lstrip("0") or "0"
    return size if len(digits) > len(str(size)) else min(int(digits), size)


def _order(digits: str) -> tuple[int, str]:
    """A decimal's sort key, whatever its length."""
    digits = digits.lstrip("0")
    return len(digits), digits


def _range(header: str, size: int) -> Span | None:
    """[start, end) of a single-range header; None to send the whole file (RFC 9110 lets a
    server ignore multi-range requests). Raises 416 when unsatisfiable."""
    match = RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first and last and _order(last) < _order(first):
        return None  # syntactically invalid: ignored
    if first:
        start = _position(first, size)
        end = min(_position(last, size) + 1, size) if last else size
    elif last:
        start, end = size - _position(last, size), size
    else:
        return None
    if start >= size or end <= start:
        raise ProblemError(
            416,
            f"range {header} is outside the file's {size} bytes",
            "/problems/range-not-satisfiable",
            {"Content-Range": f"bytes */{size}"},
        )
    return start, end


class _File(FileResponse):
    """A FileResponse with the recorded sha256 as its ETag (its own is of mtime and size) that
    sends the span `_range` chose (None: the whole file) as if the request's Range named it.
    Starlette's parser answers 400 where RFC 9110 wants 206 or 416 (a number longer than int()
    takes) or has a server ignore the header (an unknown unit, last < first, multi-range here)."""

    chunk_size = 1 << 20  # Starlette's 64 KiB took 16 threadpool reads per 1 MiB range

    def __init__(self, path: Path, info: os.stat_result, tag: str, span: Span | None) -> None:
        super().__init__(path, headers={"ETag": tag}, stat_result=info)
        self.span = span

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"range", b"if-range")]
        if self.span is not None:
            headers.append((b"range", b"bytes=%d-%d" % (self.span[0], self.span[1] - 1)))
        await super().__call__({**scope, "headers": headers}, receive, send)


def _streamed(services: Services, job: Job, f: Artifact, tag: str, span: Span | None) -> Response:
    """A file of an object store, read through: what `_File` would send for it."""
    assert job.output_dir is not None
    start, end = span or (0, f.size)
    headers = {"ETag": tag, "Accept-Ranges": "bytes", "Content-Length": str(end - start)}
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
    status = 206 if span is not None else 200
    media = mimetypes.guess_type(f.path)[0] or "application/octet-stream"
    body = services.storage.read(job.id, job.output_dir, f.path, start, end)
    return StreamingResponse(body, status, headers, media)


class _Head(Response):
    """A HEAD's answer: the headers a GET would get, with no body (and no read of one)."""

    def __init__(self, response: Response) -> None:
        super().__init__(status_code=response.status_code)
        self.raw_headers = response.raw_headers


def _redirect(services: Services, job: Job, f: Artifact, tag: str) -> Response | None:
    """A 307 to the store's presigned URL, where that is opted into and the store makes one."""
    if not services.settings.storage_redirect:
        return None
    assert job.output_dir is not None
    url = services.storage.presign(job.id, job.output_dir, f.path, PRESIGNED_SECONDS)
    if url is None:
        return None
    return Response(status_code=307, headers={"Location": url, "ETag": tag})


FILE_RESPONSES: dict = {
    200: {"content": {"application/octet-stream": {}}},
    206: {},
    304: {},
    307: {"description": "Redirect to a presigned URL of the object store (storage_redirect)"},
    409: {},
    416: {},
    503: {"description": "The object store does not answer (Retry-After)"},
    **NOT_FOUND,
}


@router.get("/jobs/{job_id}/artifacts/{path:path}", response_class=FileResponse,
            responses=FILE_RESPONSES, operation_id="get_artifact")  # fmt: skip
@router.head("/jobs/{job_id}/artifacts/{path:path}", response_class=FileResponse,
             responses=FILE_RESPONSES, operation_id="head_artifact")  # fmt: skip
async def artifact(
    request: Request,
    job_id: str,
    path: str,
    services: ServicesDep,
    manifests: ManifestsDep,
    range: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    job, files = await _recorded(services, manifests, job_id)
    entry = next((f for f in files if f.path == path), None)  # only manifest paths exist
    if entry is None:
        raise ProblemError(404, f"job {job_id} has no file {path!r}", "/problems/not-found")
    tag = f'"{entry.sha256}"'
    redirect = await run_in_threadpool(_redirect, services, job, entry, tag)
    try:
        local = None if redirect else await run_in_threadpool(_checked, services, job, entry)
    except ProblemError:
        manifests.forget(job_id)  # the next request reads the database again
        raise
    if not_modified(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag, "Accept-Ranges": "bytes"})
    if redirect is not None:
        return redirect
    span = None
    if range is not None and (if_range is None or if_range.strip() == tag):
        span = _range(range, entry.size)
    if local is not None:
        return _File(*local, tag, span)
    response = _streamed(services, job, entry, tag, span)
    return _Head(response) if request.method == "HEAD" else response


def _tar(job: Job, files: list[Artifact]) -> tuple[list[tuple[bytes, Artifact]], int]:
    """Each file's tar header and the archive's exact length, known before streaming."""
    headers, total = [], 2 * BLOCK  # the end-of-archive marker
    for f in files:
        info = tarfile.TarInfo(f"{job.id}/{f.path}")
        info.size, info.mode, info.mtime = f.size, 0o644, int(job.finished_at.timestamp())
        header = info.tobuf(format=tarfile.PAX_FORMAT)
        headers.append((header, f))
        total += len(header) + -(-f.size // BLOCK) * BLOCK
    return headers, total


def _tar_stream(
    services: Services, job: Job, headers: list[tuple[bytes, Artifact]]
) -> Iterator[bytes]:
    assert job.output_dir is not None
    for header, f in headers:
        yield header
        yield from services.storage.read(job.id, job.output_dir, f.path, 0, f.size)
        if f.size % BLOCK:
            yield b"\0" * (BLOCK - f.size % BLOCK)
    yield b"\0" * (2 * BLOCK)


@router.get(
    "/jobs/{job_id}/checkpoint.tar",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-tar": {}}},
        409: {},
        503: FILE_RESPONSES[503],
        **NOT_FOUND,
    },
)
async def checkpoint_tar(job_id: str, services: ServicesDep) -> StreamingResponse:
    job, files = await run_in_threadpool(_files, services, job_id)
    await run_in_threadpool(_available, services, job, files)
    headers, total = _tar(job, files)
    return StreamingResponse(
        _tar_stream(services, job, headers),
        media_type="application/x-tar",
        headers={
            "Content-Length": str(total),
            "Content-Disposition": f'attachment; filename="{job_id}.tar"',
        },
    )
