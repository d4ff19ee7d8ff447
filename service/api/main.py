"""The FastAPI application: `create_app(settings)`; with `worker=True` (the embedded default)
a worker process runs beside the API. `app_from_environment` is the factory each of several
API processes (`tokengraft serve --processes N`) imports."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import problems
from ..config import Settings
from ..embedded import WorkerProcess
from ..services import Services
from . import spec
from .guard import Guard
from .nosniff import Nosniff
from .routes import (
    access,
    artifacts,
    catalog,
    events,
    health,
    jobs,
    train,
    transplant,
    ui,
    uploads,
)
from .views import Manifests, Polls

DESCRIPTION = """Give a pretrained language model a new tokenizer, zero-shot.

Submit a transplant with `POST /transplant`, follow it with `GET /jobs/{id}` (ETag / 304) or
`GET /jobs/{id}/events` (Server-Sent Events), download the checkpoint from
`GET /jobs/{id}/artifacts/{path}` or `GET /jobs/{id}/checkpoint.tar`. `POST /hypernets` trains a
hypernetwork into the store (a job too, resumed from its checkpoint if a worker dies). Errors
are RFC 9457 `application/problem+json`. Once API keys exist, send `Authorization: Bearer <key>`.
The dashboard at `/ui/` is a client of this API.
"""


def create_app(settings: Settings | None = None, worker: bool = False) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.build(settings)
        app.state.services = services
        app.state.polls = Polls(settings.poll_cache_seconds)
        app.state.manifests = Manifests(settings.manifest_cache_seconds)
        app.state.parses = uploads.Parses(settings.upload_parses, settings.upload_wait_seconds)
        gc.freeze()  # what start-up built (torch, transformers) is never scanned again
        embedded = WorkerProcess(settings) if worker else None
        if embedded is not None:
            embedded.start()
        try:
            yield
        finally:
            if embedded is not None:
                embedded.stop()  # a running job goes back to the queue
            services.engine.dispose()

    app = FastAPI(title="tokengraft", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.add_middleware(Guard)
    app.add_middleware(Nosniff)  # outside the guard: its refusals carry the header too
    problems.install(app)
    spec.document(app)
    for module in (transplant, train, jobs, events, artifacts, uploads, catalog, access, health):
        app.include_router(module.router)
    ui.mount(app)
    logging.getLogger("tokengraft").setLevel(logging.INFO)
    return app


def app_from_environment() -> FastAPI:
    """The API alone, its settings read from the TOKENGRAFT_* environment: what uvicorn's
    worker processes build, since a child of its supervisor can only import an app by name."""
    return create_app(Settings(), worker=False)
