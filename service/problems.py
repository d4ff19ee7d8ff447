"""RFC 9457 problem+json for every error the API returns, validation errors included."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from hypernet.errors import InputError

from .catalog import redact

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("tokengraft.api")


class ProblemError(HTTPException):
    """An HTTPException, so that FastAPI passes it on unchanged when it is raised while a body
    is read (it turns any other exception there into a bare 400)."""

    def __init__(
        self, status: int, detail: str, type_: str = "about:blank", headers: dict | None = None
    ) -> None:
        super().__init__(status, detail, headers)
        self.status, self.type = status, type_


def problem(
    request: Request,
    status: int,
    detail: str | None,
    type_: str = "about:blank",
    headers: dict | None = None,
    errors: list[dict] | None = None,
) -> JSONResponse:
    return problem_at(request.url.path, status, detail, type_, headers, errors)


def problem_at(
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
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem(request, exc.status, exc.detail, exc.type, exc.headers)

    @app.exception_handler(InputError)
    async def _input(request: Request, exc: InputError) -> JSONResponse:
        return problem(request, 422, redact(str(exc)), "/problems/invalid-input")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return problem(request, exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem(request, 422, detail, "/problems/validation", errors=errors)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem(request, 500, "internal error; the server log has the details")


def document(app: FastAPI) -> None:
    """Make the schema say what the handlers above do: every 4xx and 5xx response is a
    problem+json body (FastAPI would document its own 422 shape otherwise)."""
    from fastapi.openapi.utils import get_openapi

    from .schemas import Problem

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            schemas["Problem"] = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            ref = {"$ref": "#/components/schemas/Problem"}
            for operations in spec["paths"].values():
                for operation in operations.values():
                    for code, response in operation["responses"].items():
                        if code[0] in "45":
                            response["content"] = {MEDIA_TYPE: {"schema": ref}}
                            if response.get("description") in (None, "", "Validation Error"):
                                response["description"] = HTTPStatus(int(code)).phrase
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
