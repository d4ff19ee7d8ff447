"""Dependencies for the routes: the shared services and API-key authorization."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .. import keys
from ..problems import ProblemError
from ..services import Services

bearer = HTTPBearer(auto_error=False, description="an API key from `tokengraft keys create`")


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def authorize(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Open while no key exists (the server then only listens on loopback); once keys exist,
    every request needs one, and read-only keys may only GET and HEAD."""
    if not keys.any_active(services.sessions):
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ProblemError(401, "an API key is required: Authorization: Bearer <key>",
                           "/problems/unauthorized", challenge)  # fmt: skip
    scope = keys.scope_of(services.sessions, credentials.credentials)
    if scope is None:
        raise ProblemError(401, "invalid or revoked API key", "/problems/unauthorized", challenge)
    if request.method not in ("GET", "HEAD") and scope != "write":
        raise ProblemError(403, "this API key is read-only", "/problems/forbidden")


Authorized = Depends(authorize)
