"""The consent ledger: append-only grant/revoke events; current consent is derived, never stored.

Two locks keep it append-only: the ORM refuses to flush an update or delete of a ConsentEvent
(LedgerError), and migration 0002 installs database triggers that refuse UPDATE/DELETE from any
other path.  A revoke with no campaign covers the whole brand; a later grant re-grants its scope.
Events are recorded through the consent service (``dispatcher/consent.py``: its scope and dedupe
rules), which writes them in Core (``dispatcher/consent_events.py``, without the models, for the
CLI's start-up); this module answers what consent a contact has and exports the trail.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, event, or_
from sqlmodel import Session, col, select

from dispatcher import consent_events
from dispatcher.clock import as_utc
from dispatcher.errors import LedgerError
from dispatcher.models import Brand, Campaign, ConsentEvent, Contact

#: re-exported: the writer (``consent_events``, in Core) owns them
ACTIONS, SOURCES = consent_events.ACTIONS, consent_events.SOURCES
CONSENT_TYPES, dedupe_key = consent_events.CONSENT_TYPES, consent_events.dedupe_key


@event.listens_for(ConsentEvent, "before_update", propagate=True)
def _no_update(*_: Any) -> None:
    raise LedgerError("the consent ledger is append-only: events cannot be changed")


@event.listens_for(ConsentEvent, "before_delete", propagate=True)
def _no_delete(*_: Any) -> None:
    raise LedgerError("the consent ledger is append-only: events cannot be deleted")


def append(session: Session, **fields: Any) -> ConsentEvent:
    """``consent_events.append_once`` in the session's transaction (tests and seeding use it;
    in the package only ``dispatcher.consent``, the one consent service, appends), the event
    returned as a model loaded in the session (so the ORM's append-only guard applies to it)."""
    if session.autoflush and (session.new or session.dirty or session.deleted):
        session.flush()
    ev, _ = consent_events.append_once(session.connection(), **fields)
    got = session.get(ConsentEvent, ev.id)
    assert got is not None
    return got


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
