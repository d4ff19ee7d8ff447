"""Jobs: list, read (with ETag / 304), cancel, delete."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.concurrency import run_in_threadpool

from ...models import Job, JobKind, JobStatus
from ...problems import ProblemError
from ...schemas import JobOut, JobPage, Problem
from ...services import Services
from ..deps import Authorized, ServicesDep
from ..views import etag, job_out

router = APIRouter(dependencies=[Authorized], tags=["jobs"])
NOT_FOUND = {404: {"model": Problem, "content": {"application/problem+json": {}}}}


def _cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode()


def _after(cursor: str) -> tuple[datetime, str]:
    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), job_id
    except ValueError:
        raise ProblemError(400, "invalid cursor", "/problems/invalid-cursor") from None


def find(services: Services, job_id: str) -> Job:
    job = services.queue.get(job_id)
    if job is None:
        raise ProblemError(404, f"no job {job_id}", "/problems/not-found")
    return job


@router.get("/jobs", response_model=JobPage)
async def list_jobs(
    services: ServicesDep,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobPage:
    after = _after(cursor) if cursor else None
    jobs = await run_in_threadpool(services.queue.page, status, after, limit + 1, kind)
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return JobPage(jobs=[job_out(j) for j in jobs], next_cursor=_cursor(jobs[-1]) if more else None)


@router.get("/jobs/{job_id}", response_model=JobOut, responses={304: {}, **NOT_FOUND})
async def get_job(
    job_id: str,
    services: ServicesDep,
    response: Response,
    if_none_match: Annotated[str | None, Header()] = None,
) -> JobOut | Response:
    job = await run_in_threadpool(find, services, job_id)
    tag = etag(job)
    if if_none_match is not None and tag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": tag})
    response.headers["ETag"] = tag
    if not JobStatus(job.status).terminal:
        response.headers["Retry-After"] = "2"
    return job_out(job)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=NOT_FOUND)
async def cancel_job(job_id: str, services: ServicesDep) -> JobOut:
    job = await run_in_threadpool(services.queue.cancel, job_id)
    if job is None:
        raise ProblemError(404, f"no job {job_id}", "/problems/not-found")
    return job_out(job)


@router.delete("/jobs/{job_id}", status_code=204, responses={409: {"model": Problem}, **NOT_FOUND})
async def delete_job(job_id: str, services: ServicesDep) -> Response:
    job = await run_in_threadpool(find, services, job_id)
    if not JobStatus(job.status).terminal:
        raise ProblemError(409, f"job {job_id} is {job.status}: cancel it first",
                           "/problems/job-not-terminal")  # fmt: skip
    if await run_in_threadpool(services.queue.delete, job_id):
        await run_in_threadpool(services.storage.remove, job_id)
    return Response(status_code=204)
