"""Appending to the consent ledger in SQLAlchemy Core: the one place an event is written, for
every path (``ledger.append`` for the ORM callers: STOP, the API, a carrier error, imports;
``consent_file.record`` for ``dispatcher consent grant|revoke`` and ``revoke --file``, which
start without the models: bench/cli_startup.py).  ``dispatcher.ledger`` has the rest (status,
export, the ORM's append-only guard); migration 0002's triggers refuse UPDATE/DELETE."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from dispatcher import hook_events
from dispatcher.clock import as_utc, utcnow
from dispatcher.errors import InputError
from dispatcher.tables import consent_event as CE
from dispatcher.tables import contact as C

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


def append(
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
) -> dict[str, Any]:
    """Append one event in the caller's transaction; returns its columns (with ``id``).  A
    revoke needs ``halts``: it signals the contact's halt key before the caller commits, so a
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
    ev: dict[str, Any] = {
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
    ev["id"] = conn.execute(insert(CE).values(ev).returning(CE.c.id)).scalar_one()
    if action == "revoke":
        assert halts is not None
        halts.signal(contacts=[contact_id])  # workers see it before their next send
        hook_events.opted_out(conn, ev)  # producers' webhooks, in this transaction
    return ev


def ensure_contact(conn: Connection, e164: str) -> tuple[int, bool]:
    """The id of the contact with this (normalised) number, created with nothing else known if
    there is none: (id, created)."""
    found = conn.execute(select(C.c.id).where(C.c.phone == e164)).scalar()
    if found is not None:
        return found, False
    now = utcnow()
    new = conn.execute(
        insert(C)
        .values(phone=e164, attributes={}, created_at=now, updated_at=now)
        .returning(C.c.id)
    ).scalar_one()
    return new, True
