"""The consent ledger: append-only grant/revoke events; current consent is derived, never stored.

Two locks keep it append-only: the ORM refuses to flush an update or delete of a ConsentEvent
(LedgerError), and migration 0002 installs database triggers that refuse UPDATE/DELETE from any
other path.  A revoke with no campaign covers the whole brand; a later grant re-grants its scope.
Events are recorded through the consent service (``dispatcher/consent.py``: its scope and dedupe
rules); this module stores them and answers what consent a contact has.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, event, or_
from sqlmodel import Session, col, select

from dispatcher import hook_events
from dispatcher.clock import as_utc, utcnow
from dispatcher.errors import InputError, LedgerError
from dispatcher.models import Brand, Campaign, ConsentEvent, Contact

if TYPE_CHECKING:
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


@event.listens_for(ConsentEvent, "before_update", propagate=True)
def _no_update(*_: Any) -> None:
    raise LedgerError("the consent ledger is append-only: events cannot be changed")


@event.listens_for(ConsentEvent, "before_delete", propagate=True)
def _no_delete(*_: Any) -> None:
    raise LedgerError("the consent ledger is append-only: events cannot be deleted")


def dedupe_key(*parts: Any) -> str:
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()


def append(session: Session, **fields: Any) -> ConsentEvent:
    """``append_once(session, **fields)``, the event only (tests and seeding use it; in the
    package only ``dispatcher.consent``, the one consent service, appends)."""
    return append_once(session, **fields)[0]


def append_once(
    session: Session,
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
) -> tuple[ConsentEvent, bool]:
    """Append one event: (the event, appended now).  An event whose ``dedupe`` key the ledger
    already holds is not appended again: the one recorded is returned, with False, and nothing
    else happens (no halt signal, no producer webhook).  The key is unique in the database and
    the insert is ``ON CONFLICT DO NOTHING``, so two concurrent transactions recording the same
    event append it once.

    A revoke needs ``halts``: it signals the contact's halt key before the caller commits, so a
    worker stops every row of the contact it already claimed."""
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
        ev = ConsentEvent(**values)
        session.add(ev)
        session.flush()
    else:
        found = _by_key(session, dedupe)
        if found is not None:
            return found, False
        new_id = session.connection().execute(_insert_once(session, values)).scalar()
        if new_id is None:  # a concurrent transaction recorded it first
            return _by_key(session, dedupe), False  # type: ignore[return-value]
        ev = ConsentEvent(id=new_id, **values)  # what was inserted (not in the session)
    if halts is not None and action == "revoke":  # workers see it before their next send
        halts.signal(contacts=[contact_id])
    if action == "revoke":
        # producers' webhooks, in this transaction
        hook_events.opted_out(session.connection(), ev.model_dump())
    return ev, True


def _by_key(session: Session, key: str) -> ConsentEvent | None:
    """The event of a dedupe key, as a copy outside the session with aware times (SQLite gives
    naive ones back; an event is never changed, so nothing is lost)."""
    if session.autoflush and session.new:
        session.flush()
    ev = session.exec(select(ConsentEvent).where(ConsentEvent.dedupe_key == key)).first()
    if ev is None:
        return None
    values = ev.model_dump()
    values["occurred_at"], values["recorded_at"] = as_utc(ev.occurred_at), as_utc(ev.recorded_at)
    return ConsentEvent(**values)


def _insert_once(session: Session, values: dict[str, Any]) -> Any:
    """``INSERT ... ON CONFLICT (dedupe_key) DO NOTHING RETURNING id`` in the session's dialect
    (PostgreSQL and SQLite both have it)."""
    table = ConsentEvent.__table__  # type: ignore[attr-defined]
    from sqlalchemy.dialects import postgresql, sqlite

    pg = session.connection().dialect.name == "postgresql"
    return (
        (postgresql.insert(table) if pg else sqlite.insert(table))
        .values(**values)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(table.c.id)
    )


@dataclass(frozen=True)
class ConsentStatus:
    granted: bool  # latest event in scope is a grant
    opted_out: bool  # latest event in scope is a revoke
    granted_at: datetime | None
    revoked_at: datetime | None


NO_CONSENT = ConsentStatus(False, False, None, None)


def _scope(campaign: bool) -> Any:
    """Events of the brand (``:brand_id``) that cover the campaign (``:campaign_id``): its own
    and the brand-wide ones; without a campaign, the brand-wide ones only."""
    cond = col(ConsentEvent.brand_id) == bindparam("brand_id")
    if not campaign:
        return and_(cond, col(ConsentEvent.campaign_id).is_(None))
    return and_(
        cond,
        or_(
            col(ConsentEvent.campaign_id).is_(None),
            col(ConsentEvent.campaign_id) == bindparam("campaign_id"),
        ),
    )


def _statuses_stmt(campaign: bool) -> Any:
    """The events of ``:ids`` in scope, oldest first per contact.  Built once per shape with bind
    parameters (an expanding one for the ids) so its compiled form is cached and reused."""
    return (
        select(ConsentEvent.contact_id, ConsentEvent.action, ConsentEvent.occurred_at)
        .where(
            _scope(campaign),
            col(ConsentEvent.contact_id).in_(bindparam("ids", expanding=True)),
        )
        .order_by(col(ConsentEvent.contact_id), col(ConsentEvent.occurred_at), col(ConsentEvent.id))
    )


#: campaign given? -> the statuses query of that scope shape.
_STATUSES_STMTS = {False: _statuses_stmt(False), True: _statuses_stmt(True)}


def statuses(
    session: Session, contact_ids: Iterable[int], *, brand_id: int, campaign_id: int | None
) -> dict[int, ConsentStatus]:
    """Consent of many contacts at once (one query per call; callers batch the ids).

    A worker calls this once per batch, so the plain column select runs through Core (no ORM
    execution overhead).  Core does not autoflush, so pending ORM changes are flushed first as
    Session.exec would, and events appended earlier in the same session are seen."""
    ids = list(contact_ids)
    if not ids:
        return {}
    if session.autoflush and (session.new or session.dirty or session.deleted):
        session.flush()
    params: dict[str, Any] = {"ids": ids, "brand_id": brand_id}
    if campaign_id is not None:
        params["campaign_id"] = campaign_id
    rows = session.connection().execute(_STATUSES_STMTS[campaign_id is not None], params).all()
    last: dict[int, tuple[str, datetime]] = {}
    grants: dict[int, datetime] = {}
    revokes: dict[int, datetime] = {}
    for cid, action, at in rows:
        last[cid] = (action, at)
        (grants if action == "grant" else revokes)[cid] = as_utc(at)
    return {
        cid: ConsentStatus(a == "grant", a == "revoke", grants.get(cid), revokes.get(cid))
        for cid, (a, _) in last.items()
    }


def status(
    session: Session, contact_id: int, *, brand_id: int, campaign_id: int | None
) -> ConsentStatus:
    return statuses(session, [contact_id], brand_id=brand_id, campaign_id=campaign_id).get(
        contact_id, NO_CONSENT
    )


EXPORT_COLUMNS = (
    "id",
    "recorded_at",
    "occurred_at",
    "phone",
    "brand",
    "campaign_sid",
    "action",
    "consent_type",
    "source",
    "evidence_text",
    "evidence_url",
    "evidence_ref",
    "note",
    "actor",
)


def export_rows(session: Session, *, phone: str | None = None) -> Iterator[dict[str, Any]]:
    """Every event with its evidence, oldest first, streamed in pages."""
    q = (
        select(ConsentEvent, Contact.phone, Brand.name, Campaign.sid)
        .join(Contact, col(Contact.id) == ConsentEvent.contact_id)
        .join(Brand, col(Brand.id) == ConsentEvent.brand_id)
        .outerjoin(Campaign, col(Campaign.id) == ConsentEvent.campaign_id)
        .order_by(col(ConsentEvent.id))
    )
    if phone is not None:
        q = q.where(Contact.phone == phone)
    for ev, ph, brand, csid in session.exec(q.execution_options(yield_per=2000)):
        yield {
            "id": ev.id,
            "recorded_at": as_utc(ev.recorded_at).isoformat(),
            "occurred_at": as_utc(ev.occurred_at).isoformat(),
            "phone": ph,
            "brand": brand,
            "campaign_sid": csid,
            "action": ev.action,
            "consent_type": ev.consent_type,
            "source": ev.source,
            "evidence_text": ev.evidence_text,
            "evidence_url": ev.evidence_url,
            "evidence_ref": ev.evidence_ref,
            "note": ev.note,
            "actor": ev.actor,
        }
