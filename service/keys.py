"""API keys: `tg_<id>_<secret>`, shown once at creation; only a sha256 of the key is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from .models import ApiKey, utcnow

SCOPES = ("write", "read")  # write: everything; read: GET and HEAD only (dashboards)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(sessions: sessionmaker[Session], name: str, scope: str) -> tuple[ApiKey, str]:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    key_id = secrets.token_hex(6)
    key = f"tg_{key_id}_{secrets.token_urlsafe(24)}"
    row = ApiKey(id=key_id, name=name, secret_sha256=_digest(key), scope=scope)
    with sessions.begin() as s:
        s.add(row)
    return row, key


def all_keys(sessions: sessionmaker[Session]) -> list[ApiKey]:
    with sessions() as s:
        return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke(sessions: sessionmaker[Session], key_id: str) -> bool:
    with sessions.begin() as s:
        row = s.get(ApiKey, key_id)
        if row is None:
            return False
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return True


def any_created(sessions: sessionmaker[Session]) -> bool:
    """Whether a key was ever created: from then on every request needs an active key, even
    once all are revoked (revoking the last key must not open the server)."""
    with sessions() as s:
        return bool(s.scalar(select(func.count()).select_from(ApiKey)))


def any_active(sessions: sessionmaker[Session]) -> bool:
    with sessions() as s:
        query = select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
        return bool(s.scalar(query))


def scope_of(sessions: sessionmaker[Session], key: str) -> str | None:
    """The scope of an active key, None for anything else (unknown, revoked, malformed)."""
    parts = key.split("_")
    if len(parts) < 3 or parts[0] != "tg":
        return None
    with sessions() as s:
        row = s.get(ApiKey, parts[1])
    if row is None or row.revoked_at is not None:
        return None
    return row.scope if hmac.compare_digest(row.secret_sha256, _digest(key)) else None


class Gate:
    """`any_created` and `scope_of`, remembered for `ttl` seconds: a dashboard's polls do not
    each pay two database reads, and a new or revoked key takes effect within `ttl` (plus one
    read: while one request reads again, the others keep the answer it replaces, so that
    requests never queue on the database together)."""

    def __init__(self, sessions: sessionmaker[Session], ttl: float = 1.0) -> None:
        self.sessions, self.ttl = sessions, ttl
        self._memo: dict[str, tuple[float, object]] = {}
        self._reading: set[str] = set()

    def fresh(self, key: str | None) -> bool:
        """Whether `locked` and `scope` (of `key`) would answer without the database."""
        names = ["", _digest(key)] if key else [""]
        return all(self._answer(n) is not None for n in names)

    def _answer(self, name: str) -> tuple[float, object] | None:
        hit = self._memo.get(name)
        if hit is None or (time.monotonic() - hit[0] >= self.ttl and name not in self._reading):
            return None
        return hit

    def locked(self) -> bool:
        return bool(self._cached("", lambda: any_created(self.sessions)))

    def scope(self, key: str) -> str | None:
        return self._cached(_digest(key), lambda: scope_of(self.sessions, key))  # type: ignore[return-value]

    def _cached(self, name: str, read):  # noqa: ANN001, ANN202 (any zero-argument reader)
        hit = self._answer(name)
        if hit is not None:
            return hit[1]
        if len(self._memo) > 10_000:  # a flood of made-up keys must not grow this without end
            self._memo.clear()
        self._reading.add(name)
        try:
            now, value = time.monotonic(), read()
        finally:
            self._reading.discard(name)
        self._memo[name] = (now, value)
        return value
