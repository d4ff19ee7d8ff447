"""The guard in front of every route: keys before bodies, bodies within their limits."""

from __future__ import annotations

import json

import anyio
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_service_api import REQUEST, assert_problem

from service import keys
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
