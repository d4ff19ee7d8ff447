"""Liveness, readiness (database and at least one live worker) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from ...models import JobStatus
from ...problems import ProblemError
from ...schemas import Health, Ready
from ...services import Services
from ..deps import Authorized, ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


def _ready(services: Services) -> Ready:
    try:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return Ready(status="not ready", database=False, live_workers=0)
    workers = services.queue.live_workers(services.settings.live_seconds)
    return Ready(status="ready" if workers else "not ready", database=True, live_workers=workers)


@router.get("/readyz", response_model=Ready, responses={503: {}})
async def readyz(services: ServicesDep) -> Ready:
    ready = await run_in_threadpool(_ready, services)
    if ready.status != "ready":
        why = "database unreachable" if not ready.database else "no live worker"
        raise ProblemError(503, why, "/problems/not-ready")
    return ready


def _metrics(services: Services) -> str:
    counts = services.queue.counts()
    lines = [
        "# HELP tokengraft_jobs Jobs by status.",
        "# TYPE tokengraft_jobs gauge",
        *(f'tokengraft_jobs{{status="{s.value}"}} {counts.get(s.value, 0)}' for s in JobStatus),
        "# HELP tokengraft_queue_depth Jobs waiting for a worker.",
        "# TYPE tokengraft_queue_depth gauge",
        f"tokengraft_queue_depth {counts.get(JobStatus.queued.value, 0)}",
        "# HELP tokengraft_live_workers Workers whose heartbeat is fresh.",
        "# TYPE tokengraft_live_workers gauge",
        f"tokengraft_live_workers {services.queue.live_workers(services.settings.live_seconds)}",
        "# HELP tokengraft_job_duration_seconds Start to finish of finished jobs.",
        "# TYPE tokengraft_job_duration_seconds summary",
    ]
    durations = services.queue.durations()
    for status in (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled):
        count, total = durations.get(status.value, (0, 0.0))
        lines.append(f'tokengraft_job_duration_seconds_sum{{status="{status}"}} {total:.3f}')
        lines.append(f'tokengraft_job_duration_seconds_count{{status="{status}"}} {count}')
    return "\n".join(lines) + "\n"


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    dependencies=[Authorized],
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(services: ServicesDep) -> PlainTextResponse:
    body = await run_in_threadpool(_metrics, services)
    return PlainTextResponse(body, media_type="text/plain; version=0.0.4")
