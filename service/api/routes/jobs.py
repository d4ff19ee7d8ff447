"""Jobs: list, read (with ETag / 304; HEAD too), cancel, delete."""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.concurrency import run_in_threadpool

from ...models import Job, JobKind, JobStatus
from ...problems import ProblemError
from ...schemas import JobOut, JobPage, Problem
from ...services import Services
from ...storage import StoreUnavailable
from ..deps import Authorized, ManifestsDep, PollsDep, ServicesDep
from ..views import Polls, Seen, compressed, job_out, not_modified, page_etag

log = logging.getLogger("tokengraft.api")
router = APIRouter(dependencies=[Authorized], tags=["jobs"])
NOT_FOUND = {404: {"model": Problem, "content": {"application/problem+json": {}}}}
PAGE = {"response_model": JobPage, "responses": {304: {}}}
ONE = {"response_model": JobOut, "responses": {304: {}, **NOT_FOUND}}


def _cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode()


def _after(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor names; anything this server could not have written is a
    400 (a naive or out-of-range time, an id that is not a job id's shape)."""
    try:
        raw = base64.b64decode(cursor.encode(), altchars=b"-_", validate=True)
        created, job_id = raw.decode().split("|")
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or not (job_id.isascii() and job_id.isalnum()) or len(job_id) > 32:
            raise ValueError(cursor)
        return when.astimezone(UTC), job_id
    except (ValueError, OverflowError):
        raise ProblemError(400, "invalid cursor", "/problems/invalid-cursor") from None


def find(services: Services, job_id: str) -> Job:
    job = services.queue.get(job_id)
    if job is None:
        raise ProblemError(404, f"no job {job_id}", "/problems/not-found")
    return job


@router.get("/jobs", **PAGE)
@router.head("/jobs", **PAGE)
async def list_jobs(
    services: ServicesDep,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    if_none_match: Annotated[str | None, Header()] = None,
    accept_encoding: Annotated[str | None, Header()] = None,
) -> Response:
    """Newest first. Poll a page with `If-None-Match`: 304 while none of its jobs changed
    and none arrived, so a dashboard that watches it costs one query and no body."""
    after = _after(cursor) if cursor else None
    jobs = await run_in_threadpool(services.queue.page, status, after, limit + 1, kind)
    more = len(jobs) > limit
    jobs = jobs[:limit]
    tag = page_etag(jobs, more)
    headers = {"ETag": tag, "Retry-After": "2", "Vary": "Accept-Encoding"}
    if not_modified(if_none_match, tag):  # before the body: a watched page is mostly unchanged
        return Response(status_code=304, headers=headers)
    page = JobPage(jobs=[job_out(j) for j in jobs], next_cursor=_cursor(jobs[-1]) if more else None)
    body, encoding = compressed(page.model_dump_json().encode(), accept_encoding)
    return Response(body, media_type="application/json", headers=headers | encoding)


def _seen(services: Services, polls: Polls, job_id: str) -> Seen:
    return polls.put(find(services, job_id))


async def _refresh(services: Services, polls: Polls, job_id: str) -> None:
    try:
        await run_in_threadpool(_seen, services, polls, job_id)
    except ProblemError:  # deleted meanwhile: the next poll reads it and answers 404
        polls.forget(job_id)
    finally:
        polls.refreshing.discard(job_id)


@router.get("/jobs/{job_id}", **ONE)
@router.head("/jobs/{job_id}", **ONE)
async def get_job(
    job_id: str,
    services: ServicesDep,
    polls: PollsDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """A job. Poll it with `If-None-Match` (304 while it is unchanged); the answer may be up to
    twice `poll_cache_seconds` (0.25 s) old, however many clients poll."""
    seen = polls.get(job_id) or await run_in_threadpool(_seen, services, polls, job_id)
    if polls.due(job_id):  # in a task of its own: this client's next request need not wait
        polls.tasks.add(task := asyncio.create_task(_refresh(services, polls, job_id)))
        task.add_done_callback(polls.tasks.discard)
    headers = {"ETag": seen.tag, **({} if seen.terminal else {"Retry-After": "2"})}
    if not_modified(if_none_match, seen.tag):
        return Response(status_code=304, headers=headers)
    return Response(seen.body, media_type="application/json", headers=headers)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=NOT_FOUND)
async def cancel_job(job_id: str, services: ServicesDep, polls: PollsDep) -> JobOut:
    job = await run_in_threadpool(services.queue.cancel, job_id)
    if job is None:
        raise ProblemError(404, f"no job {job_id}", "/problems/not-found")
    polls.put(job)  # a poll right after sees the request
    return job_out(job)


def _remove_files(services: Services, job_id: str) -> None:
    """The deleted job's files; while the store is away they stay, and the sweep removes them
    once it is back (no row names them any more): the job is gone either way."""
    try:
        services.storage.remove(job_id)
    except StoreUnavailable:
        log.warning("job %s deleted; the store did not answer, the sweep removes its files", job_id)


@router.delete("/jobs/{job_id}", status_code=204, responses={409: {"model": Problem}, **NOT_FOUND})
async def delete_job(
    job_id: str, services: ServicesDep, polls: PollsDep, manifests: ManifestsDep
) -> Response:
    job = await run_in_threadpool(find, services, job_id)
    if not JobStatus(job.status).terminal:
        raise ProblemError(
            409, f"job {job_id} is {job.status}: cancel it first", "/problems/job-not-terminal"
        )
    if await run_in_threadpool(services.queue.delete, job_id):
        await run_in_threadpool(_remove_files, services, job_id)
    polls.forget(job_id)
    manifests.forget(job_id)
    return Response(status_code=204)
