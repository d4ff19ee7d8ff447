"""Liveness, readiness (database and at least one live worker) and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
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


class JobsCollector:
    """The queue as Prometheus reads it, from the database at every scrape: every API process
    reports the same numbers, whichever answered."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        queue, counts = self.services.queue, self.services.queue.counts()
        jobs = GaugeMetricFamily("tokengraft_jobs", "Jobs by status.", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs
        depth = counts.get(JobStatus.queued.value, 0)
        yield GaugeMetricFamily("tokengraft_queue_depth", "Jobs waiting for a worker.", depth)
        live = queue.live_workers(self.services.settings.live_seconds)
        yield GaugeMetricFamily(
            "tokengraft_live_workers", "Workers whose heartbeat is fresh.", live
        )
        yield self._durations(queue.durations())

    def _durations(self, durations: dict[str, tuple[int, float]]) -> Metric:
        summary = SummaryMetricFamily(
            "tokengraft_job_duration_seconds",
            "Start to finish of finished jobs.",
            labels=["status"],
        )
        for status in (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled):
            count, total = durations.get(status.value, (0, 0.0))
            summary.add_metric([status.value], count_value=count, sum_value=total)
        return summary


def _metrics(services: Services) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(services))
    return generate_latest(registry)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    dependencies=[Authorized],
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(services: ServicesDep) -> PlainTextResponse:
    body = await run_in_threadpool(_metrics, services)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)
