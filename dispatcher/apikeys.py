"""API keys for the HTTP API: created once (the plaintext is shown once), stored hashed.

A token looks like ``dsk_<prefix>_<secret>``: ``prefix`` (10 characters) is stored in clear and
indexed so that a lookup is one row; ``secret`` carries 256 bits of randomness, so a plain SHA-256
of the whole token is a safe verifier (no password stretching needed for random secrets).  The
comparison uses :func:`hmac.compare_digest`.  A key carries scopes; every endpoint names the one it
needs.  Revoked keys stay in the table (their name is the actor of past writes in the audit trail).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from dispatcher.clock import as_utc, utcnow
from dispatcher.errors import ConflictError, DispatcherError, InputError, NotFoundError
from dispatcher.models import ApiKey

SCOPES = (
    "runs:read",
    "runs:write",
    "contacts:read",
    "contacts:write",
    "consent:read",
    "consent:write",
    "webhooks:read",
    "webhooks:write",
)
TOKEN_PREFIX = "dsk_"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,47}$")
_TOKEN = re.compile(r"^dsk_([a-z0-9]{10})_([A-Za-z0-9_-]{43})$")


class AuthenticationError(DispatcherError):
    """No API key, an unknown or a revoked one (HTTP 401)."""


class ScopeError(DispatcherError):
    """The key is valid but lacks the scope the operation needs (HTTP 403)."""

    def __init__(self, message: str, *, scope: str) -> None:
        super().__init__(message)
        self.scope = scope


def actor_of(key: ApiKey) -> str:
    """The audit-trail actor of writes made with ``key``."""
    return f"api:{key.name}"


def parse_scopes(text: str | Iterable[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = sorted({s.strip() for s in items if s and s.strip()})
    if not scopes:
        raise InputError("an API key needs at least one scope", field="scopes")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise InputError(
            f"unknown scope {unknown[0]!r} (one of {', '.join(SCOPES)})", field="scopes"
        )
    return scopes


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(
    session: Session, name: str, scopes: str | Iterable[str], *, now: datetime | None = None
) -> tuple[str, ApiKey]:
    """Create a key; returns (plaintext token shown once, stored row).  The caller commits."""
    name = (name or "").strip()
    if not _NAME.match(name):
        raise InputError(
            "key name must be 1..48 characters: a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit",
            field="name",
        )
    clean = parse_scopes(scopes)
    if session.exec(select(ApiKey).where(ApiKey.name == name)).first() is not None:
        raise ConflictError(f"API key {name!r} already exists (names are never reused)")
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    while True:
        prefix = "".join(secrets.choice(alphabet) for _ in range(10))
        if session.exec(select(ApiKey.id).where(ApiKey.prefix == prefix)).first() is None:
            break
    token = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        name=name, prefix=prefix, key_hash=_hash(token), scopes=clean, created_at=now or utcnow()
    )
    session.add(key)
    session.flush()
    return token, key


def verify(session: Session, token: str | None) -> ApiKey:
    """The active key for ``token``; AuthenticationError otherwise (one message for every case,
    so a caller cannot tell an unknown prefix from a wrong secret)."""
    m = _TOKEN.match(token or "")
    if m is None:
        raise AuthenticationError(
            "missing or malformed API key" if not token else "invalid API key"
        )
    digest = _hash(token or "")
    for key in session.exec(select(ApiKey).where(ApiKey.prefix == m.group(1))):
        if hmac.compare_digest(key.key_hash, digest):
            if key.revoked_at is not None:
                break
            return key
    raise AuthenticationError("invalid API key")


def require_scope(key: ApiKey, scope: str) -> None:
    if scope not in (key.scopes or []):
        raise ScopeError(f"API key {key.name!r} lacks the scope {scope!r}", scope=scope)


def get_key(session: Session, name: str) -> ApiKey:
    key = session.exec(select(ApiKey).where(ApiKey.name == name)).first()
    if key is None:
        raise NotFoundError("API key", name)
    return key


def revoke(session: Session, name: str, *, now: datetime | None = None) -> tuple[ApiKey, bool]:
    """Revoke a key (idempotent).  Returns (key, changed)."""
    key = get_key(session, name)
    if key.revoked_at is not None:
        return key, False
    key.revoked_at = now or utcnow()
    session.add(key)
    session.flush()
    return key, True


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.id))))


def key_dict(key: ApiKey) -> dict[str, Any]:
    return {
        "name": key.name,
        "prefix": f"{TOKEN_PREFIX}{key.prefix}",
        "scopes": key.scopes,
        "created_at": as_utc(key.created_at),
        "revoked_at": as_utc(key.revoked_at) if key.revoked_at else None,
        "active": key.revoked_at is None,
    }
