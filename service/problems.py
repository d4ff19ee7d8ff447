"""RFC 9457 problem+json for every error the API returns, validation errors included; an object
store that does not answer is a 503 with Retry-After, a full disk (or database) a 507."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from hypernet.errors import InputError

from .catalog import redact
from .storage import StoreUnavailable, out_of_space

MEDIA_TYPE = "application/problem+json"
STORE_RETRY_AFTER = "30"  # seconds: a store that is away is usually back within a minute
STORE_DOWN = "the object store does not answer; try again later"
NO_SPACE = "the server is out of disk space and kept nothing of this request; try again later"
log = logging.getLogger("tokengraft.api")


class ProblemError(HTTPException):
    """An HTTPException, so that FastAPI passes it on unchanged when it is raised while a body
    is read (it turns any other exception there into a bare 400)."""

    def __init__(
        self, status: int, detail: str, type_: str = "about:blank", headers: dict | None = None
    ) -> None:
        super().__init__(status, detail, headers)
        self.status, self.type = status, type_

    def response(self, instance: str) -> JSONResponse:
        return problem(instance, self.status, self.detail, self.type, self.headers)


def problem(
    instance: str,
    status: int,
    detail: str | None,
    type_: str = "about:blank",
    headers: dict | None = None,
    errors: list[dict] | None = None,
) -> JSONResponse:
    body: dict = {
        "type": type_,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors is not None:
        body["errors"] = errors
    headers = {**(headers or {}), "X-Content-Type-Options": "nosniff"}  # a 500 skips middleware
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def allowed(request: Request) -> str:
    """Every method the path takes: the router names only those of the first route whose path
    matched, and a path served by several routes (GET and DELETE /jobs/{id}) has more."""
    return ", ".join(sorted(_methods(request.app.router.routes, request.scope)))


def _methods(routes: list, scope: dict) -> set[str]:
    found: set[str] = set()
    for route in routes:
        if hasattr(route, "original_router"):  # an included router: its own routes
            found |= _methods(route.original_router.routes, scope)
        elif route.matches(scope)[0] != Match.NONE:
            found |= getattr(route, "methods", None) or set()
    return found


def install(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return exc.response(request.url.path)

    @app.exception_handler(InputError)
    async def _input(request: Request, exc: InputError) -> JSONResponse:
        return problem(request.url.path, 422, redact(str(exc)), "/problems/invalid-input")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:
            headers = {"Allow": allowed(request)}
        return problem(request.url.path, exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem(request.url.path, 422, detail, "/problems/validation", errors=errors)

    @app.exception_handler(StoreUnavailable)
    async def _store(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("%s: %s", request.url.path, exc)
        headers = {"Retry-After": STORE_RETRY_AFTER}
        return problem(request.url.path, 503, STORE_DOWN, "/problems/store-unavailable", headers)

    async def _space(request: Request, exc: Exception) -> JSONResponse:
        """A full disk or quota, the database's included, is a 507; any other error goes on to
        `_internal` as if this handler were not there."""
        if not out_of_space(exc):
            raise exc
        log.error("out of disk space on %s: %s", request.url.path, exc)
        return problem(request.url.path, 507, NO_SPACE, "/problems/insufficient-storage")

    app.add_exception_handler(OSError, _space)
    app.add_exception_handler(OperationalError, _space)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem(request.url.path, 500, "internal error; the server log has the details")
