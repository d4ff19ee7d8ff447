"""A validated request queued as a job: its digest, the Idempotency-Key, Location and
Retry-After, the same for every kind of job."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Annotated

from fastapi import Header, Response
from fastapi.concurrency import run_in_threadpool

from ..models import JobKind
from ..problems import ProblemError
from ..queue import Conflict
from ..schemas import JobOut
from ..services import Services
from .views import job_out

RETRY_AFTER = "2"

IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=255,
        description="the same key and body return the same job; the same key with another "
        "body is refused (422). Keys are remembered for 24 hours "
        "(TOKENGRAFT_IDEMPOTENCY_HOURS).",
    ),
]


def digest(request: dict, kind: JobKind) -> str:
    """A transplant request hashes as it always has (its keys stay valid); other kinds hash
    with their kind, so that one key never names two kinds of job."""
    body = request if kind == JobKind.transplant else {"kind": kind.value, "request": request}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


async def enqueue(
    services: Services,
    response: Response,
    request: dict,
    kind: JobKind,
    idempotency_key: str | None,
) -> JobOut:
    hours = services.settings.idempotency_hours
    try:
        job, _ = await run_in_threadpool(
            services.queue.enqueue,
            request,
            digest(request, kind),
            idempotency_key,
            timedelta(hours=hours),
            kind,
        )
    except Conflict:
        raise ProblemError(
            422,
            "this Idempotency-Key was already used with a different request body",
            "/problems/idempotency-key-reused",
        ) from None
    response.headers["Location"] = f"/jobs/{job.id}"
    response.headers["Retry-After"] = RETRY_AFTER
    return job_out(job)
