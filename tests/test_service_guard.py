"""The guard in front of every route: bounded headers before keys, keys before bodies, bodies
within their limits; and the server's own bound on a request's head."""

from __future__ import annotations

import asyncio
import json

import anyio
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_service_api import REQUEST, assert_problem
from uvicorn.server import ServerState

from service import keys
from service.api.protocol import SLACK, BoundedHead
from service.keys import Gate
from service.services import Services


def call(app: FastAPI, method: str, path: str, headers: dict, chunks: list[bytes]) -> tuple:
    """Send a request straight to the ASGI app; (status, body, how many body chunks it read)."""
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        read += 1
        more = read < len(chunks)
        return {"type": "http.request", "body": chunks[read - 1], "more_body": more}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "http_version": "1.1",
        "app": app,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    anyio.run(app, scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body), read


def test_no_body_is_read_before_the_key_is_checked(client: TestClient, services: Services) -> None:
    keys.create(services.sessions, "ci", "write")
    chunks = [b"x" * 65536] * 8
    status, body, read = call(client.app, "POST", "/tokenizers", {}, chunks)
    assert (status, body["status"], read) == (401, 401, 0)
    status, body, read = call(client.app, "POST", "/transplant", {}, [b"{not json"])
    assert (status, read) == (401, 0)  # malformed JSON is answered after authentication


def test_bodies_stop_at_their_limit(client: TestClient, services: Services) -> None:
    limit = services.settings.max_request_bytes
    declared = {"Content-Length": str(limit + 1), "Content-Type": "application/json"}
    status, body, read = call(client.app, "POST", "/transplant", declared, [b"{}"])
    assert (status, body["type"], read) == (413, "/problems/too-large", 0)
    chunked = {"Content-Type": "application/json"}  # no length: counted while it streams
    chunks = [b" " * 65536] * (limit // 65536 + 4)
    status, body, read = call(client.app, "POST", "/transplant", chunked, chunks)
    assert status == 413 and read == limit // 65536 + 1
    status, _, _ = call(client.app, "POST", "/transplant", {"Content-Length": "12a"}, [b""])
    assert status == 400


def test_revoking_every_key_keeps_the_server_closed(client: TestClient, services: Services) -> None:
    row, key = keys.create(services.sessions, "only", "write")
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/jobs", headers=auth).status_code == 200
    keys.revoke(services.sessions, row.id)
    assert_problem(client.get("/jobs", headers=auth), 401, "revoked")
    assert_problem(client.post("/transplant", json=REQUEST), 401, "required")
    assert client.get("/healthz").status_code == 200


def test_the_gate_remembers_for_its_ttl(services: Services) -> None:
    gate = Gate(services.sessions, ttl=3600)
    assert not gate.locked()
    row, key = keys.create(services.sessions, "ci", "read")
    assert not gate.locked() and gate.scope(key) == "read"  # both remembered
    keys.revoke(services.sessions, row.id)
    assert gate.scope(key) == "read"
    fresh = Gate(services.sessions, ttl=0)
    assert fresh.locked() and fresh.scope(key) is None


# --- headers are bounded before anything reads them -----------------------------------------------
def test_huge_headers_are_a_431_before_any_key_is_looked_up(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys.create(services.sessions, "ci", "write")
    gate = client.app.state.services.gate
    for name in ("fresh", "scope", "locked"):
        monkeypatch.setattr(gate, name, lambda *_: pytest.fail("a key was looked up"))
    limit = services.settings.max_header_bytes
    huge = {"Authorization": "Bearer " + "k" * limit}
    for method, path in [("POST", "/tokenizers"), ("GET", "/jobs"), ("GET", "/healthz")]:
        status, body, read = call(client.app, method, path, huge, [b"x" * 65536] * 4)
        assert (status, body["type"], read) == (431, "/problems/headers-too-large", 0)
        assert f"larger than {limit} bytes" in body["detail"]


class Transport(asyncio.Transport):
    """What a connection's protocol writes, and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written, self.closed = b"", False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 1)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        """What uvicorn does while the app has not read the body so far."""

    def resume_reading(self) -> None:
        """What uvicorn does once the app read the body."""

    def is_closing(self) -> bool:
        return self.closed


async def app(scope: dict, receive: object, send: object) -> None:
    """An ASGI app that is never run: the tests stop at the protocol."""


def connection(limit: int) -> tuple[BoundedHead, Transport]:
    """`tokengraft serve`'s HTTP protocol on a connection that nothing reads from the wire."""
    config = uvicorn.Config(app, log_level="warning")
    config.load()
    state, loop = ServerState(), asyncio.new_event_loop()
    protocol = BoundedHead(config=config, server_state=state, app_state={}, _loop=loop, limit=limit)
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


def done(protocol: BoundedHead) -> None:
    """The connection's loop closed, once a request's app task (which answers nothing) ran."""
    pending = asyncio.all_tasks(protocol.loop)
    if pending:
        protocol.loop.run_until_complete(asyncio.gather(*pending))
    protocol.loop.close()


def test_the_server_stops_reading_a_head_past_its_bound() -> None:
    """httptools would gather a header of any length (copying it on every read) before the
    app could refuse it."""
    limit, chunk = 1000, b"k" * 65536
    protocol, transport = connection(limit)
    protocol.data_received(b"GET /jobs HTTP/1.1\r\nAuthorization: Bearer ")
    fed = 0
    while not transport.closed and fed < 100:
        protocol.data_received(chunk)
        fed += 1
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    done(protocol)
    assert fed * len(chunk) <= limit + SLACK + 2 * len(chunk)
    body = json.loads(transport.written.partition(b"\r\n\r\n")[2])
    assert (body["status"], body["type"], body["instance"]) == (
        431,
        "/problems/headers-too-large",
        "/jobs",
    )


def test_a_large_read_after_a_small_head_is_not_counted_as_head() -> None:
    """One read holding a request's head and much of its body, as a fast client sends it."""
    protocol, transport = connection(1000)
    head = b"POST /texts HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n"
    protocol.data_received(head + b"a" * 200_000)
    protocol.data_received(b"a" * 100_000)
    assert not transport.closed and b"431" not in transport.written
    done(protocol)
