"""Dependencies for the routes: the shared services, and the bearer scheme the schema declares
(`guard.Guard` enforces it before a route runs, and before any body is read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from ..services import Services
from .views import Manifests, Polls

bearer = HTTPBearer(auto_error=False, description="an API key from `tokengraft keys create`")


async def get_services(request: Request) -> Services:
    """Async, so that FastAPI does not send it to the threadpool on every request."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_polls(request: Request) -> Polls:
    return request.app.state.polls


PollsDep = Annotated[Polls, Depends(get_polls)]


async def get_manifests(request: Request) -> Manifests:
    return request.app.state.manifests


ManifestsDep = Annotated[Manifests, Depends(get_manifests)]
Authorized = Depends(bearer)
