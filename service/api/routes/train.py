"""POST /hypernets: validate a training request, then queue it as a job. A worker trains the
network and publishes it into the store under the name the request gave."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from ... import hypernets
from ...models import JobKind
from ...problems import ProblemError
from ...queue import NameTaken
from ...schemas import HypernetTrainIn, JobOut, Problem
from ...services import Services
from ..deps import Authorized, ServicesDep
from ..submit import IdempotencyKey, enqueue

router = APIRouter(dependencies=[Authorized], tags=["jobs"])
PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
TAKEN = "/problems/hypernet-exists"


def validate(services: Services, request: dict, idempotency_key: str | None) -> None:
    """The name is free (409 otherwise) and everything the Trainer checks at its start holds
    (422): an invalid request never becomes a job. A replayed Idempotency-Key skips the name
    check: its own job holds the name, and the replay gets that job."""
    if not (idempotency_key and services.queue.remembers(idempotency_key)):
        reason = hypernets.taken(services.catalog, services.queue, request["name"])
        if reason is not None:
            raise ProblemError(409, reason, TAKEN)
    hypernets.check(services.catalog, request, services.settings.max_train_memory_bytes)


@router.post(
    "/hypernets",
    status_code=202,
    response_model=JobOut,
    responses={409: PROBLEM, 422: PROBLEM},
)
async def train_hypernet(
    body: HypernetTrainIn,
    services: ServicesDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """The name is claimed as the job is queued: of concurrent requests for one name, one
    gets the job and the others 409."""
    request = body.model_dump(exclude_none=True)
    await run_in_threadpool(validate, services, request, idempotency_key)
    try:
        return await enqueue(services, response, request, JobKind.hypernet, idempotency_key)
    except NameTaken as e:
        raise ProblemError(409, hypernets.taken_by(str(e), request["name"]), TAKEN) from None
