"""Authorization and body limits, decided from the request line and headers before any route
runs: headers past their limit are a 431 before any key is looked up, a client without a valid
key cannot make the server read a byte of its body, and no body is read past its limit
(`Content-Length` first, then while it streams in).

Open while no API key was ever created (the server then only listens on loopback); from the
first key on, every request but the probes, the API's own description and the dashboard's
static files needs an active key, and read-only keys may only GET and HEAD.
"""

from __future__ import annotations

from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from ..keys import Gate
from ..problems import ProblemError

OPEN = frozenset(
    {"/", "/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
PAGE = "/ui"  # the dashboard's files hold no data: the page asks for a key, then calls the API
READ = frozenset({"GET", "HEAD"})
CHALLENGE = {"WWW-Authenticate": "Bearer"}
MULTIPART_SLACK = 64 * 1024  # form boundaries and part headers around an uploaded file


def is_open(path: str) -> bool:
    return path in OPEN or path == PAGE or path.startswith(PAGE + "/")


def body_limit(settings: Settings, method: str, path: str) -> int:
    """Uploads may be as large as their kind allows; any other body is a small JSON request."""
    if method == "POST" and path == "/tokenizers":
        return settings.max_upload_bytes + MULTIPART_SLACK
    if method == "POST" and path == "/texts":
        return settings.max_text_bytes + MULTIPART_SLACK
    return settings.max_request_bytes


def refusal(gate: Gate, method: str, authorization: str | None) -> ProblemError | None:
    """Why this request may not go on, or None."""
    if not gate.locked():
        return None
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return ProblemError(
            401,
            "an API key is required: Authorization: Bearer <key>",
            "/problems/unauthorized",
            CHALLENGE,
        )
    scope = gate.scope(key.strip())
    if scope is None:
        return ProblemError(401, "invalid or revoked API key", "/problems/unauthorized", CHALLENGE)
    if method not in READ and scope != "write":
        return ProblemError(403, "this API key is read-only", "/problems/forbidden")
    return None


async def _refusal(gate: Gate, method: str, authorization: str) -> ProblemError | None:
    """`refusal`, in the threadpool only when it must read the database."""
    key = authorization.partition(" ")[2].strip() or None
    if gate.fresh(key):
        return refusal(gate, method, authorization)
    return await run_in_threadpool(refusal, gate, method, authorization)


def headers_too_large(limit: int) -> ProblemError:
    detail = f"request headers larger than {limit} bytes"
    return ProblemError(431, detail, "/problems/headers-too-large")


def oversized_headers(headers: list[tuple[bytes, bytes]], limit: int) -> ProblemError | None:
    """A 431 for headers larger than `limit`: checked first, so that no key of megabytes is
    decoded or hashed."""
    if sum(len(name) + len(value) for name, value in headers) <= limit:
        return None
    return headers_too_large(limit)


def too_large(limit: int) -> ProblemError:
    return ProblemError(413, f"request body larger than {limit} bytes", "/problems/too-large")


def declared_length(headers: dict[bytes, bytes], limit: int) -> ProblemError | None:
    value = headers.get(b"content-length")
    if value is None:
        return None
    if not value.isdigit() or len(value) > 20:
        return ProblemError(400, "invalid Content-Length", "/problems/bad-request")
    return too_large(limit) if int(value) > limit else None


def capped(receive: Receive, limit: int) -> Receive:
    """`receive` that refuses the body once more than `limit` bytes came in (a chunked body,
    or one longer than it said)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise too_large(limit)
        return message

    return wrapped


class Guard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        method, path = scope["method"], scope["path"]
        refused = oversized_headers(scope["headers"], services.settings.max_header_bytes)
        headers = dict(scope["headers"])
        limit = body_limit(services.settings, method, path)
        if refused is None and not is_open(path):
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            refused = await _refusal(services.gate, method, authorization)
        refused = refused or declared_length(headers, limit)
        if refused is not None:
            await refused.response(path)(scope, receive, send)
            return
        await self.app(scope, capped(receive, limit), send)
