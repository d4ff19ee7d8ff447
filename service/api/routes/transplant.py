"""POST /transplant: validate a request, then queue it as a job (or, dry, only validate)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from hypernet.errors import InputError
from hypernet.methods import MethodOptions, get_method
from hypernet.sources import check_tokenizer_config
from hypernet.texts import has_eval_text

from ... import refine
from ...models import JobKind
from ...schemas import DryRunOut, JobOut, Problem, TransplantIn
from ...services import Services
from ..deps import Authorized, ServicesDep
from ..submit import IdempotencyKey, enqueue

router = APIRouter(dependencies=[Authorized], tags=["jobs"])


def validate(services: Services, body: TransplantIn) -> None:
    """Everything that can be checked without running the job: an invalid request never
    becomes a job. Nothing here converts or loads a model: that is the job's work."""
    _check_method(body)
    MethodOptions.from_dict(body.options)
    catalog = services.catalog
    if body.hypernet is not None:
        catalog.hypernet(body.hypernet)
    catalog.model(body.model)
    if body.donor is not None:
        catalog.model(body.donor)
    check_tokenizer_config(Path(catalog.tokenizer(body.tokenizer)))
    if body.eval_text is not None:
        _check_eval_text(catalog.text(body.eval_text), body.eval_text, body.eval_bytes)
    if body.refine is not None:
        refine.check(catalog, body.refine.model_dump())


def _check_eval_text(path: Path, name: str, eval_bytes: int | None) -> None:
    """The job would have text to evaluate on: not an empty file, nor a cut that keeps no
    whole character (`eval_bytes` 1 of a text that starts with "ü"). Reads a few bytes."""
    if not has_eval_text(path, eval_bytes):
        cut = f" cut to {eval_bytes} bytes" if eval_bytes is not None else ""
        raise InputError(f"eval text {name!r}{cut} is empty")


def _check_method(body: TransplantIn) -> None:
    """The method exists and has what it needs; the server's own choice (no method named:
    a hypernetwork method or hybrid) takes no donor."""
    spec = get_method(body.method or "hybrid")
    spec.check(hypernet=body.hypernet is not None, donor=body.donor is not None)


def job_request(body: TransplantIn) -> dict:
    """The request as the job stores it. Fields added since the first version (refine,
    donor) are left out when unset, so that a request's digest, and so its Idempotency-Key,
    stay what they were."""
    unset = {k for k in ("refine", "donor") if getattr(body, k) is None}
    return body.model_dump(exclude={"dry_run", *unset})


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
    return await enqueue(services, response, job_request(body), JobKind.transplant, idempotency_key)
