"""GET /jobs/{id}/events: Server-Sent Events of progress and state changes.

Events are rows of `job_events`, so a client that reconnects with `Last-Event-ID` gets exactly
what it missed. The stream ends with an `end` event once the job is terminal, once it is
deleted (status "deleted"), and when the server shuts down (its current status and a reason:
the client reconnects elsewhere with `Last-Event-ID`). uvicorn waits for open connections
before it exits, so an open stream must learn of the shutdown itself: sse-starlette hooks
uvicorn's signal handling and sets the stream's shutdown event.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse

from ...models import Job, JobEvent, JobStatus
from ...problems import ProblemError
from ...services import Services
from ..deps import Authorized, ServicesDep
from .jobs import NOT_FOUND, find

router = APIRouter(dependencies=[Authorized], tags=["jobs"])
MAX_EVENT_ID = 2**31 - 1  # job_events.id is an INTEGER column
DIGITS = len(str(MAX_EVENT_ID))
# What the schema declares; the route checks it itself, so that anything else is its 400.
LAST_EVENT_ID = Header(
    description="the id of the last event received: ASCII digits (else 400)",
    json_schema_extra={"pattern": f"^[0-9]{{1,{DIGITS}}}$", "maxLength": DIGITS},
)
SHUTDOWN_GRACE = 5.0  # seconds a stream has to send its last event once the server stops


def _frame(event: JobEvent) -> bytes:
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event.data)}\n\n".encode()


def _end(status: str, **more: str) -> bytes:
    return f"event: end\ndata: {json.dumps({'status': status, **more})}\n\n".encode()


def _final(job: Job, shutdown: anyio.Event) -> bytes | None:
    """The `end` event once the stream is over: the job is terminal, or the server stops."""
    if JobStatus(job.status).terminal:
        return _end(job.status)
    if shutdown.is_set():
        return _end(job.status, reason="server shutting down")
    return None


async def _stream(
    services: Services, job_id: str, last: int, shutdown: anyio.Event
) -> AsyncIterator[bytes]:
    settings = services.settings
    yield f"retry: {int(settings.poll_seconds * 1000)}\n\n".encode()
    sent = time.monotonic()
    while True:
        # The job is read before its events: a terminal state is committed with its event,
        # so none is missed.
        job = await run_in_threadpool(services.queue.get, job_id)
        if job is None:
            yield _end("deleted")
            return
        for event in await run_in_threadpool(services.queue.events, job_id, last):
            last = event.id
            yield _frame(event)
            sent = time.monotonic()
        if (final := _final(job, shutdown)) is not None:
            yield final
            return
        if time.monotonic() - sent >= settings.keepalive_seconds:
            yield b": ping\n\n"
            sent = time.monotonic()
        with anyio.move_on_after(settings.poll_seconds):
            await shutdown.wait()


def _last_event_id(header: str | None) -> int:
    """The id a reconnecting client saw last (0: none). Only ASCII digits within the column's
    range can be an id this server sent: anything else is refused before the stream starts
    (int() would take "²", and the database would fail on an id out of its range)."""
    digits = (header or "").strip().lstrip("0") or "0"
    fits = digits.isascii() and digits.isdigit() and len(digits) <= DIGITS
    if not fits or int(digits) > MAX_EVENT_ID:
        raise ProblemError(
            400,
            "Last-Event-ID must be the id of an event of this stream",
            "/problems/invalid-last-event-id",
        )
    return int(digits)


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **NOT_FOUND},
)
async def job_events(
    job_id: str,
    services: ServicesDep,
    last_event_id: Annotated[str | None, LAST_EVENT_ID] = None,
) -> EventSourceResponse:
    last = _last_event_id(last_event_id)
    await run_in_threadpool(find, services, job_id)
    shutdown = anyio.Event()
    return EventSourceResponse(
        _stream(services, job_id, last, shutdown),
        headers={"Cache-Control": "no-cache"},
        ping=0,  # the stream sends its own keepalive comments
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE,
    )
