"""POST /transplant: validate a request, then queue it as a job (or, dry, only validate)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from hypernet.errors import InputError
from hypernet.methods import MethodOptions, get_method

from ... import refine
from ...problems import ProblemError
from ...queue import Conflict
from ...schemas import DryRunOut, JobOut, Problem, TransplantIn
from ...services import Services
from ..deps import Authorized, ServicesDep
from ..views import job_out

router = APIRouter(dependencies=[Authorized], tags=["jobs"])

RETRY_AFTER = "2"


def validate(services: Services, body: TransplantIn) -> None:
    """Everything that can be checked without running the job: an invalid request never
    becomes a job."""
    get_method(body.method)
    MethodOptions.from_dict(body.options)
    if body.method.startswith("hypernet"):
        if body.hypernet is None:
            raise InputError(f"method {body.method!r} needs a hypernetwork (field 'hypernet')")
        services.catalog.hypernet(body.hypernet)
    services.catalog.model(body.model)
    services.catalog.tokenizer(body.tokenizer)
    if body.eval_text is not None:
        services.catalog.text(body.eval_text)
    if body.refine is not None:
        refine.check(services.catalog, body.refine.model_dump())


def job_request(body: TransplantIn) -> dict:
    """The request as the job stores it. A request without refine is stored as it was before
    refine existed, so its digest, and so its Idempotency-Key, stay what they were."""
    exclude = {"dry_run"} if body.refine is not None else {"dry_run", "refine"}
    return body.model_dump(exclude=exclude)


@router.post(
    "/transplant",
    status_code=202,
    response_model=JobOut,
    responses={
        200: {"model": DryRunOut, "description": "dry run: the request is valid"},
        422: {"model": Problem, "content": {"application/problem+json": {}}},
    },
)
async def submit(
    body: TransplantIn,
    services: ServicesDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=255,
            description="the same key and body return the same job; the same key with another "
            "body is refused (422). Keys are remembered for 24 hours "
            "(TOKENGRAFT_IDEMPOTENCY_HOURS).",
        ),
    ] = None,
) -> JobOut | JSONResponse:
    await run_in_threadpool(validate, services, body)
    if body.dry_run:
        return JSONResponse(DryRunOut(valid=True, request=body).model_dump(mode="json"))
    request = job_request(body)
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    hours = services.settings.idempotency_hours
    try:
        job, _ = await run_in_threadpool(
            services.queue.enqueue, request, digest, idempotency_key, timedelta(hours=hours)
        )
    except Conflict:
        raise ProblemError(
            422, "this Idempotency-Key was already used with a different request body",
            "/problems/idempotency-key-reused",
        ) from None  # fmt: skip
    response.headers["Location"] = f"/jobs/{job.id}"
    response.headers["Retry-After"] = RETRY_AFTER
    return job_out(job)
