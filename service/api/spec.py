"""The OpenAPI document as the server answers: every 4xx and 5xx body is problem+json, and
every operation declares what the guard and the body parser may answer before it runs."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..problems import MEDIA_TYPE
from ..schemas import Problem
from .guard import READ, is_open

PROBLEM = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def answers(path: str, method: str, operation: dict) -> list[int]:
    """Statuses any operation may answer besides its own: 400 (a malformed Content-Length, a
    body that is not text), 431 (headers over their limit), 413 (a body over its limit),
    401/403 (keys); a write 503 (an object store that does not answer) and 507 (a full disk)."""
    codes = [400, 431]
    if "requestBody" in operation:
        codes.append(413)
    if not is_open(path):
        codes.append(401)
        if method.upper() not in READ:
            codes += [403, 503, 507]
    return codes


def _problems(operation: dict) -> None:
    for code, response in operation["responses"].items():
        if code[0] in "45":
            response["content"] = PROBLEM
            if response.get("description") in (None, "", "Validation Error"):
                response["description"] = HTTPStatus(int(code)).phrase


def build(app: FastAPI) -> dict:
    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for code in answers(path, method, operation):
                operation["responses"].setdefault(str(code), {})
            _problems(operation)
    return spec


def document(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
