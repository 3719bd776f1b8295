"""The consent service: the one way to record a grant or a revocation.

Every caller goes through here: the CLI (``consent grant|revoke``, ``consent revoke --file``,
``contacts import``), the API (``POST /v1/consent``), the inbound webhook (STOP, natural-language
revocation, START), status callbacks with error 21610 and the send-time 21610 of the delivery
core.  Nothing else in the package appends to the ledger or suppresses a contact's rows
(tests/unit/test_consent_service.py checks it).

**Scope rule.**  A revocation covers one brand (``Scope(brand_id)``: every campaign of the
brand) or one campaign of one brand (``Scope(brand_id, campaign_id)``), never more than one
brand.  The rows it suppresses in its transaction are exactly the rows the ledger refuses from
then on: the contact's not-yet-handed rows in the campaigns of its scope.  What the contact sends
(STOP, a natural-language revocation, a STOP the carrier holds: 21610) is brand-wide for the
brand whose number or Messaging Service it reached (Twilio blocks the number or the whole
service, and several campaigns may share one); an operator or API revocation has the scope it
names.  See docs/compliance.md, "Consent: one service".

**Dedupe rule.**  The same event recorded twice is one ledger entry.  An event is identified by
its action, contact, scope, source and reference: the inbound MessageSid, the caller's
``evidence_ref`` (a form, ticket or file row id), an import row's evidence and time; a carrier
opt-out (21610) by the block itself (the contact's last grant in the brand: the block lasts until
the person opts in again), not by the message that met it.  An event without a reference (an
operator typing a revocation twice) is two requests and two entries.  Recording a known event
appends nothing, signals nothing and sends no producer webhook; a revocation still suppresses the
scope's rows (that is idempotent).

**Core.**  The service works in SQLAlchemy Core on ``dispatcher.tables`` (the ledger's writer
``consent_events``, the outbox's ``outbox_states.suppress_for_contact``), in the caller's
transaction: an ORM ``Session`` (the API, the webhooks, the workers) or a ``Connection`` (the CLI,
which starts without SQLModel, the ORM and the models: bench/cli_startup.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from dispatcher import consent_events
from dispatcher.clock import utcnow
from dispatcher.consent_events import Event
from dispatcher.errors import NotFoundError
from dispatcher.outbox_states import suppress_for_contact
from dispatcher.store import bulk_insert
from dispatcher.tables import as_id
from dispatcher.tables import brand as B
from dispatcher.tables import campaign as C
from dispatcher.tables import consent_event as CE
from dispatcher.tables import contact as CT

if TYPE_CHECKING:
    from sqlmodel import Session

    from dispatcher.delivery.ports import HaltSignal
    from dispatcher.models import Contact

#: the source of a STOP the carrier holds (Twilio error 21610)
CARRIER = "carrier"


@dataclass(frozen=True)
class Scope:
    """What an event covers: a whole brand, or one campaign of it."""

    brand_id: int
    campaign_id: int | None = None


@dataclass(frozen=True)
class BrandRef:
    id: int
    name: str


@dataclass(frozen=True)
class CampaignRef:
    id: int
    sid: str
    brand_id: int


@dataclass(frozen=True)
class Target:
    """A scope resolved from names, with the rows it names (for the caller's answer)."""

    brand: BrandRef
    campaign: CampaignRef | None

    @property
    def scope(self) -> Scope:
        return Scope(self.brand.id, self.campaign.id if self.campaign else None)


@dataclass(frozen=True)
class Evidence:
    text: str | None = None
    url: str | None = None
    ref: str | None = None  # what identifies the event (MessageSid, form, ticket): dedupe rule
    note: str | None = None


@dataclass
class Recorded:
    event: Event
    contact_id: int
    new: bool  # False: the ledger already held this event (dedupe rule), nothing was appended
    #: rows suppressed (revocations) per campaign SID: the caller counts them in its metrics
    suppressed: dict[str, int] = field(default_factory=dict)
    campaign_ids: list[int] = field(default_factory=list)  # campaigns a revocation covers


def connection(db: Session | Connection) -> Connection:
    """The caller's transaction as a Core connection: a Session's pending changes (a contact it
    just added) are flushed first, as the ORM's autoflush would before a query."""
    if isinstance(db, Connection):
        return db
    if db.autoflush and (db.new or db.dirty or db.deleted):
        db.flush()
    return db.connection()


def _find(conn: Connection, view: Any, name_col: Any, key: str | int, what: str) -> Any:
    """The row of ``view`` whose id (digits) or name/SID is ``key``: NotFoundError if none."""
    ident = as_id(key)
    cond = view.c.id == ident if ident is not None else name_col == key
    row = conn.execute(select(view).where(cond)).first() if ident != -1 else None
    if row is None:
        raise NotFoundError(what, key)
    return row


def target(db: Session | Connection, brand: str | int, campaign: str | int | None) -> Target:
    """The brand and (optionally) campaign named by an operator or API client.  The one check
    that the campaign belongs to the brand: NotFoundError otherwise (the API's 404)."""
    conn = connection(db)
    b = _find(conn, B, B.c.name, brand, "brand")
    c = _find(conn, C, C.c.sid, campaign, "campaign") if campaign is not None else None
    if c is not None and c.brand_id != b.id:
        raise NotFoundError("campaign", f"{campaign} of brand {b.name}")
    return Target(BrandRef(b.id, b.name), CampaignRef(c.id, c.sid, c.brand_id) if c else None)


def record(
    db: Session | Connection,
    action: str,
    who: Contact | int,
    scope: Scope,
    source: str,
    evidence: Evidence,
    *,
    actor: str,
    halts: HaltSignal,
    consent_type: str = "express",
    occurred_at: datetime | None = None,
) -> Recorded:
    """``record_grant`` or ``revoke_and_suppress`` by ``action`` (what a client or an operator
    asks for: the API, ``consent grant|revoke``)."""
    if action == "revoke":
        return revoke_and_suppress(
            db, who, scope, source, evidence, actor=actor, halts=halts, occurred_at=occurred_at
        )
    return record_grant(
        db,
        who,
        scope,
        source,
        evidence,
        actor=actor,
        consent_type=consent_type,
        occurred_at=occurred_at,
    )


def record_grant(
    db: Session | Connection,
    who: Contact | int,
    scope: Scope,
    source: str,
    evidence: Evidence,
    *,
    actor: str,
    consent_type: str = "express",
    occurred_at: datetime | None = None,
) -> Recorded:
    """A grant for ``who`` (a contact or its id) in ``scope``."""
    return _append(
        connection(db),
        "grant",
        who,
        scope,
        source,
        evidence,
        actor=actor,
        consent_type=consent_type,
        occurred_at=occurred_at,
    )


def revoke_and_suppress(
    db: Session | Connection,
    who: Contact | int,
    scope: Scope,
    source: str,
    evidence: Evidence,
    *,
    actor: str,
    halts: HaltSignal,
    now: datetime | None = None,
    occurred_at: datetime | None = None,
) -> Recorded:
    """A revocation for ``who`` (a contact or its id; callers holding a phone number upsert the
    contact first: a later import or launch finds it opted out) in ``scope``, in the caller's
    transaction: the ledger event (which signals ``halts`` before the commit, so a worker's halt
    check stops the rows it already claimed) and every not-yet-handed row of the contact in the
    scope's campaigns moved to ``suppressed`` (reason ``opted_out``)."""
    conn = connection(db)
    got = _append(
        conn,
        "revoke",
        who,
        scope,
        source,
        evidence,
        actor=actor,
        halts=halts,
        occurred_at=occurred_at,
    )
    got.campaign_ids = campaigns_of(conn, scope)
    by_id = suppress_for_contact(
        conn,
        got.contact_id,
        campaign_ids=got.campaign_ids,
        reason="opted_out",
        now=now or utcnow(),
    )
    if by_id:
        sids = dict(conn.execute(select(C.c.id, C.c.sid).where(C.c.id.in_(by_id))).all())
        got.suppressed = {sids[cid]: n for cid, n in by_id.items()}
    return got


def _append(
    conn: Connection,
    action: str,
    who: Contact | int,
    scope: Scope,
    source: str,
    evidence: Evidence,
    *,
    actor: str,
    consent_type: str = "express",
    occurred_at: datetime | None,
    halts: HaltSignal | None = None,
) -> Recorded:
    contact_id = _contact_id(conn, who)
    ev, new = consent_events.append_once(
        conn,
        contact_id=contact_id,
        brand_id=scope.brand_id,
        campaign_id=scope.campaign_id,
        action=action,
        source=source,
        actor=actor,
        consent_type=consent_type,
        evidence_text=evidence.text,
        evidence_url=evidence.url,
        evidence_ref=evidence.ref,
        note=evidence.note,
        occurred_at=occurred_at,
        dedupe=_key(conn, action, contact_id, scope, source, evidence.ref),
        halts=halts,
    )
    return Recorded(ev, contact_id, new)


def carrier_opt_out(
    db: Session | Connection,
    contact_id: int,
    brand_id: int,
    *,
    note: str,
    ref: str | None = None,
    actor: str,
    halts: HaltSignal,
    now: datetime,
) -> Recorded:
    """Twilio error 21610 (a send refused, or a status callback): the carrier holds a STOP we
    did not see.  A brand-wide revocation of source ``carrier``, once per block (dedupe rule)."""
    return revoke_and_suppress(
        db,
        contact_id,
        Scope(brand_id),
        CARRIER,
        Evidence(
            text="Twilio error 21610: the recipient is on the opt-out list (replied STOP) "
            "for this sender",
            ref=ref,
            note=note,
        ),
        actor=actor,
        halts=halts,
        now=now,
        occurred_at=now,
    )


def campaigns_of(db: Session | Connection, scope: Scope) -> list[int]:
    """The campaigns a scope covers."""
    if scope.campaign_id is not None:
        return [scope.campaign_id]
    q = select(C.c.id).where(C.c.brand_id == scope.brand_id).order_by(C.c.id)
    return list(connection(db).execute(q).scalars())


def import_grants(db: Session | Connection, rows: list[dict[str, Any]], *, scope: Scope) -> int:
    """Grants of an import file in one INSERT (``contacts import``): each row is a ledger row's
    values without its scope, plus the ``phone``; its identity is the phone, evidence and time
    (dedupe rule: a re-imported file adds nothing).  Returns how many were appended."""
    conn = connection(db)
    keyed: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = consent_events.dedupe_key(
            "import",
            r["phone"],
            scope.brand_id,
            scope.campaign_id,
            "grant",
            r["source"],
            r["evidence_text"],
            r["evidence_url"],
            r["occurred_at"].isoformat(),
            r["consent_type"],
        )
        keyed[key] = {k: v for k, v in r.items() if k != "phone"}
    known = set(
        conn.execute(select(CE.c.dedupe_key).where(CE.c.dedupe_key.in_(list(keyed)))).scalars()
    )
    fresh = [
        {**r, "brand_id": scope.brand_id, "campaign_id": scope.campaign_id, "dedupe_key": k}
        for k, r in keyed.items()
        if k not in known
    ]
    if fresh:
        bulk_insert(conn, CE, fresh)
    return len(fresh)


def _contact_id(conn: Connection, who: Contact | int) -> int:
    if not isinstance(who, int):
        assert who.id is not None
        return who.id
    if conn.execute(select(CT.c.id).where(CT.c.id == who)).scalar() is None:
        raise NotFoundError("contact", who)
    return who


def _key(
    conn: Connection, action: str, contact_id: int, scope: Scope, source: str, ref: str | None
) -> str | None:
    """The dedupe rule (module docstring): the event's identity, or None (always new)."""
    if source == CARRIER and action == "revoke":
        ref = f"block since grant {_last_grant(conn, contact_id, scope.brand_id)}"
    if ref is None:
        return None
    return consent_events.dedupe_key(
        action, contact_id, scope.brand_id, scope.campaign_id, source, ref
    )


def _last_grant(conn: Connection, contact_id: int, brand_id: int) -> int:
    q = select(CE.c.id).where(
        CE.c.contact_id == contact_id, CE.c.brand_id == brand_id, CE.c.action == "grant"
    )
    return conn.execute(q.order_by(CE.c.id.desc()).limit(1)).scalar() or 0
