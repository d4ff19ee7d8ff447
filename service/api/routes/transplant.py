"""POST /transplant: validate a request, then queue it as a job (or, dry, only validate)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from hypernet.errors import InputError
from hypernet.methods import MethodOptions, get_method

from ... import refine
from ...models import JobKind
from ...schemas import DryRunOut, JobOut, Problem, TransplantIn
from ...services import Services
from ..deps import Authorized, ServicesDep
from ..submit import IdempotencyKey, enqueue

router = APIRouter(dependencies=[Authorized], tags=["jobs"])


def validate(services: Services, body: TransplantIn) -> None:
    """Everything that can be checked without running the job: an invalid request never
    becomes a job."""
    if body.method is not None:
        get_method(body.method)
        if body.method.startswith("hypernet") and body.hypernet is None:
            raise InputError(f"method {body.method!r} needs a hypernetwork (field 'hypernet')")
    MethodOptions.from_dict(body.options)
    if body.hypernet is not None:
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
    idempotency_key: IdempotencyKey = None,
) -> JobOut | JSONResponse:
    await run_in_threadpool(validate, services, body)
    if body.dry_run:
        return JSONResponse(DryRunOut(valid=True, request=body).model_dump(mode="json"))
    return await enqueue(services, response, job_request(body), JobKind.transplant,
                         idempotency_key)  # fmt: skip
