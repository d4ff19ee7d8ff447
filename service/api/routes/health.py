"""Liveness, readiness (database, at least one live worker, a store that answers and free
disk space) and Prometheus metrics."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

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
from ...storage import LocalStorage
from ..deps import Authorized, ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


def _ready(services: Services) -> tuple[Ready, str | None]:
    """The readiness and why it is not ready (None: it is)."""
    try:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return Ready(status="not ready", database=False, live_workers=0), "database unreachable"
    workers = services.queue.live_workers(services.settings.live_seconds)
    why = _storage(services) if workers else "no live worker"
    return Ready(status="not ready" if why else "ready", database=True, live_workers=workers), why


def _storage(services: Services) -> str | None:
    """Why nothing could be kept now: an object store that does not answer, or a disk with
    less than `min_free_bytes` free (named, never by its path)."""
    if not services.storage.reachable():
        return "object store unreachable"
    floor = services.settings.min_free_bytes
    for name, folder in _folders(services).items():
        free = shutil.disk_usage(_existing(folder)).free
        if free < floor:
            return f"{free} bytes free in the {name}, under min_free_bytes ({floor})"
    return None


def _folders(services: Services) -> dict[str, Path]:
    """Where the service writes: the data dir, and a file store's folder wherever it is."""
    folders = {"data dir": services.settings.data_dir}
    if isinstance(services.storage, LocalStorage):
        folders["storage folder"] = services.storage.root
    return folders


def _existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (a store's folder is made by its first job)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@router.get("/readyz", response_model=Ready, responses={503: {}})
async def readyz(services: ServicesDep) -> Ready:
    ready, why = await run_in_threadpool(_ready, services)
    if why is not None:
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
