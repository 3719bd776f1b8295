"""Appending to the consent ledger, in SQLAlchemy Core on ``dispatcher.tables``: the one place an
event is written.  Only the consent service (``dispatcher/consent.py``: its scope and dedupe
rules) calls ``append_once``; ``ledger.append`` wraps it for tests and seeding.  No SQLModel, ORM
or models here: ``dispatcher consent grant|revoke`` starts without them (bench/cli_startup.py).
``dispatcher.ledger`` has the rest (status, export, the ORM's append-only guard); migration
0002's triggers refuse UPDATE/DELETE from any path."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from dispatcher import hook_events
from dispatcher.clock import as_utc, utcnow
from dispatcher.errors import InputError
from dispatcher.tables import consent_event as CE

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dispatcher.delivery.ports import HaltSignal

ACTIONS = ("grant", "revoke")
SOURCES = (
    "web_form",
    "keyword",
    "import",
    "operator",
    "api",
    "carrier",
    "paper",
    "ivr",
    "email",
    "natural_language",
)
CONSENT_TYPES = ("implied", "express", "written")


@dataclass(frozen=True)
class Event:
    """One ledger entry as stored (times aware, in UTC)."""

    id: int
    contact_id: int
    brand_id: int
    campaign_id: int | None
    action: str
    consent_type: str
    source: str
    evidence_text: str | None
    evidence_url: str | None
    evidence_ref: str | None
    note: str | None
    actor: str
    occurred_at: datetime
    recorded_at: datetime
    dedupe_key: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dedupe_key(*parts: Any) -> str:
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()


def append_once(
    conn: Connection,
    *,
    contact_id: int,
    brand_id: int,
    action: str,
    source: str,
    actor: str,
    campaign_id: int | None = None,
    consent_type: str = "express",
    evidence_text: str | None = None,
    evidence_url: str | None = None,
    evidence_ref: str | None = None,
    note: str | None = None,
    occurred_at: datetime | None = None,
    dedupe: str | None = None,
    halts: HaltSignal | None = None,
) -> tuple[Event, bool]:
    """Append one event in the caller's transaction: (the event, appended now).  An event whose
    ``dedupe`` key the ledger already holds is not appended again: the one recorded is returned,
    with False, and nothing else happens (no halt signal, no producer webhook).  The key is
    unique in the database and the insert is ``ON CONFLICT DO NOTHING``, so two concurrent
    transactions recording the same event append it once.

    A revoke needs ``halts``: it signals the contact's halt key before the caller commits, so a
    worker stops every row of the contact it already claimed; and it writes the producers'
    ``contact.opted_out`` webhook events."""
    if action not in ACTIONS:
        raise InputError(f"consent action must be one of {', '.join(ACTIONS)}", field="action")
    if source not in SOURCES:
        raise InputError(f"consent source must be one of {', '.join(SOURCES)}", field="source")
    if consent_type not in CONSENT_TYPES:
        raise InputError(f"consent type must be one of {', '.join(CONSENT_TYPES)}", field="type")
    if action == "revoke" and halts is None:
        raise TypeError("a revoke must signal the workers' halt check: pass halts=")
    if action == "grant" and not (evidence_text or evidence_url or evidence_ref or note):
        raise InputError(
            "a consent grant needs evidence (text, URL, reference or note)", field="evidence"
        )
    now = utcnow()
    values: dict[str, Any] = {
        "contact_id": contact_id,
        "brand_id": brand_id,
        "campaign_id": campaign_id,
        "action": action,
        "consent_type": consent_type,
        "source": source,
        "evidence_text": evidence_text,
        "evidence_url": evidence_url,
        "evidence_ref": evidence_ref,
        "note": note,
        "actor": actor,
        "occurred_at": as_utc(occurred_at) if occurred_at else now,
        "recorded_at": now,
        "dedupe_key": dedupe,
    }
    if dedupe is None:
        new_id = conn.execute(insert(CE).values(values).returning(CE.c.id)).scalar_one()
    else:
        found = _by_key(conn, dedupe)
        if found is not None:
            return found, False
        new_id = conn.execute(_insert_once(conn, values)).scalar()
        if new_id is None:  # a concurrent transaction recorded it first
            return _by_key(conn, dedupe), False  # type: ignore[return-value]
    ev = Event(id=new_id, **values)
    if action == "revoke":
        assert halts is not None
        halts.signal(contacts=[contact_id])  # workers see it before their next send
        hook_events.opted_out(conn, ev.as_dict())  # producers' webhooks, in this transaction
    return ev, True


def _by_key(conn: Connection, key: str) -> Event | None:
    """The event of a dedupe key, with aware times (SQLite gives naive ones back)."""
    row = conn.execute(select(CE).where(CE.c.dedupe_key == key)).mappings().first()
    if row is None:
        return None
    values = dict(row)
    values["occurred_at"] = as_utc(values["occurred_at"])
    values["recorded_at"] = as_utc(values["recorded_at"])
    return Event(**values)


def _insert_once(conn: Connection, values: dict[str, Any]) -> Any:
    """``INSERT ... ON CONFLICT (dedupe_key) DO NOTHING RETURNING id`` in the connection's
    dialect (PostgreSQL and SQLite both have it)."""
    stmt: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(CE)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(CE)
    return (
        stmt.values(**values)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(CE.c.id)
    )
