"""GET /access: what the caller's key may do, so that a client (the dashboard) shows only the
actions the server would accept."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ...keys import Gate
from ...schemas import AccessOut
from ..deps import Authorized, ServicesDep

router = APIRouter(dependencies=[Authorized], tags=["access"])


def _access(gate: Gate, authorization: str | None) -> AccessOut:
    """The guard let this request in: on an open server it may do anything, otherwise its
    key is active and its scope is known."""
    if not gate.locked():
        return AccessOut(keys_required=False, scope="write")
    key = (authorization or "").partition(" ")[2].strip()
    return AccessOut(keys_required=True, scope=gate.scope(key) or "read")


@router.get("/access", response_model=AccessOut)
@router.head("/access", response_model=AccessOut)
async def access(request: Request, services: ServicesDep) -> AccessOut:
    authorization = request.headers.get("authorization")
    return await run_in_threadpool(_access, services.gate, authorization)
