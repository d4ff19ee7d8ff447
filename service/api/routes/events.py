"""GET /jobs/{id}/events: Server-Sent Events of progress and state changes.

Events are rows of `job_events`, so a client that reconnects with `Last-Event-ID` gets exactly
what it missed. The stream ends with an `end` event once the job is terminal.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ...models import JobStatus
from ...services import Services
from ..deps import Authorized, ServicesDep
from .jobs import NOT_FOUND, find

router = APIRouter(dependencies=[Authorized], tags=["jobs"])


async def _stream(services: Services, job_id: str, last: int) -> AsyncIterator[str]:
    settings = services.settings
    yield f"retry: {int(settings.poll_seconds * 1000)}\n\n"
    sent = time.monotonic()
    while True:
        job = await run_in_threadpool(find, services, job_id)  # read before the events: a
        events = await run_in_threadpool(services.queue.events, job_id, last)  # terminal
        for event in events:  # state is committed with its event, so none is missed
            last = event.id
            yield f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event.data)}\n\n"
            sent = time.monotonic()
        if JobStatus(job.status).terminal:
            yield f"event: end\ndata: {json.dumps({'status': job.status})}\n\n"
            return
        if time.monotonic() - sent >= settings.keepalive_seconds:
            yield ": ping\n\n"
            sent = time.monotonic()
        await asyncio.sleep(settings.poll_seconds)


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **NOT_FOUND},
)
async def job_events(
    job_id: str,
    services: ServicesDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    await run_in_threadpool(find, services, job_id)
    last = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return StreamingResponse(
        _stream(services, job_id, last),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
