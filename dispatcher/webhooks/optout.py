"""Inbound messages: STOP / natural-language revocation / START / HELP / other (DB side, sync).

Everything for one inbound message happens in the caller's ONE transaction: the inbound log row
(unique ``message_sid``: a replay or a concurrent duplicate changes nothing), the consent event(s)
and the suppression of the contact's not-yet-sent outbox rows.  See docs/webhooks.md for the
choices (scope, unknown numbers, one confirmation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from dispatcher import consent, ledger, runs
from dispatcher.compliance import classify_keyword, detect_revocation
from dispatcher.contacts import upsert_contact
from dispatcher.guard_check import HANDED
from dispatcher.models import Brand, Campaign, Contact, InboundMessage, OutboxMessage, Run, pk
from dispatcher.phones import try_normalize
from dispatcher.webhooks import replies

if TYPE_CHECKING:
    from dispatcher.delivery.ports import HaltSignal

ACTOR = "twilio-webhook"
STOP, START, HELP, NL_REVOKE, OTHER = "STOP", "START", "HELP", "NL_REVOKE", "OTHER"
REPEAT = "_REPEAT"  # suffix: a revocation from a contact already opted out (no confirmation)
REVOCATIONS = (STOP, NL_REVOKE)
_PRECEDENCE = (STOP, START, HELP)

T = OutboxMessage.__table__  # type: ignore[attr-defined]
R = Run.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Inbound:
    message_sid: str
    from_: str
    to: str | None
    body: str
    messaging_service_sid: str | None = None
    opt_out_type: str | None = None  # Twilio Advanced Opt-Out: STOP | START | HELP


@dataclass
class InboundResult:
    classification: str
    reply: str | None = None
    replay: bool = False
    contact_id: int | None = None
    new_opt_out: bool = False
    campaign_sid: str | None = None  # metrics label
    run_ids: list[int] = field(default_factory=list)  # runs the guard should look at
    #: pending rows the revocation suppressed, per campaign SID (metrics)
    suppressed: dict[str, int] = field(default_factory=dict)

    @property
    def revocation(self) -> bool:
        return self.classification.removesuffix(REPEAT) in REVOCATIONS


# ------------------------------------------------------------------------------------- lookups
def find_campaigns(
    session: Session, messaging_service_sid: str | None, to: str | None
) -> list[Campaign]:
    """Campaigns reached by the message: by Messaging Service, else by the To number."""
    if messaging_service_sid:
        found = list(
            session.exec(
                select(Campaign)
                .where(Campaign.messaging_service_sid == messaging_service_sid)
                .order_by(col(Campaign.id))
            )
        )
        if found:
            return found
    if to:
        e164, _ = try_normalize(to)
        numbers = {to, e164} - {None}
        return list(
            session.exec(
                select(Campaign).where(col(Campaign.sender).in_(numbers)).order_by(col(Campaign.id))
            )
        )
    return []


def classify(msg: Inbound, campaigns: Sequence[Campaign]) -> str:
    oot = (msg.opt_out_type or "").strip().upper()
    if oot in _PRECEDENCE:
        return oot
    found = {classify_keyword(msg.body, c) for c in (campaigns or [None])} - {None}  # type: ignore[list-item]  # classify_keyword takes None (no campaign)
    for cls in _PRECEDENCE:
        if cls in found:
            return cls
    if detect_revocation(msg.body):
        return NL_REVOKE
    return OTHER


def _fallback_brands(session: Session, contact_id: int) -> list[int]:
    """Brands for a revocation sent to a number no campaign uses: the brands that ever queued a
    message to the contact, else every brand (a revocation is never dropped)."""
    ids = sorted(
        set(
            session.exec(
                select(Campaign.brand_id)
                .join(OutboxMessage, OutboxMessage.campaign_id == Campaign.id)  # type: ignore[arg-type]
                .where(OutboxMessage.contact_id == contact_id)
            ).all()
        )
    )
    return ids or list(session.exec(select(Brand.id).order_by(Brand.id)).all())  # type: ignore[arg-type]


def _last_texted(session: Session, contact_id: int, before: datetime) -> list[Campaign]:
    """Campaigns that texted the contact (a row sent at or before ``before``): those sending
    through a Messaging Service first (the From number of their sends is the service's choice and
    is recorded nowhere, so a reply to an unknown number may answer them), then those with a
    sender of their own; each group most recent first."""
    last: dict[int, datetime] = dict(  # sent_at IS NOT NULL
        session.exec(
            select(OutboxMessage.campaign_id, func.max(OutboxMessage.sent_at))
            .where(
                OutboxMessage.contact_id == contact_id,
                OutboxMessage.sent_at.is_not(None),  # type: ignore[union-attr]
                OutboxMessage.sent_at <= before,  # type: ignore[operator]
            )
            .group_by(OutboxMessage.campaign_id)  # type: ignore[arg-type]
        ).all()
    )
    if not last:
        return []
    found = session.exec(select(Campaign).where(col(Campaign.id).in_(last))).all()
    return sorted(found, key=lambda c: (bool(c.sender), -last[pk(c)].timestamp()))


def _known_brand(session: Session, contact_id: int | None) -> int | None:
    """The brand a reply comes from when no campaign texted the contact: the brand that last
    queued a message to it, else the only brand there is."""
    if contact_id is not None:
        bid = session.exec(
            select(Campaign.brand_id)
            .join(OutboxMessage, OutboxMessage.campaign_id == Campaign.id)  # type: ignore[arg-type]
            .where(OutboxMessage.contact_id == contact_id)
            .order_by(OutboxMessage.id.desc())  # type: ignore[union-attr]
        ).first()
        if bid is not None:
            return bid
    only = session.exec(select(Brand.id).limit(2)).all()
    return only[0] if len(only) == 1 else None


def reply_sender(
    session: Session, campaigns: Sequence[Campaign], contact_id: int | None, at: datetime
) -> tuple[Campaign | None, str | None]:
    """The campaign whose registered messages answer the reply, and its brand's name.

    Routed campaigns first; when To / MessagingServiceSid matched none, the campaign that last
    texted the contact (``_last_texted``, sends up to ``at``: a replay answers the same); else no
    campaign and the brand ``_known_brand`` finds (the default texts name it)."""
    first = campaigns[0] if campaigns else None
    if first is None and contact_id is not None:
        history = _last_texted(session, contact_id, at)
        first = history[0] if history else None
    brand_id = first.brand_id if first is not None else _known_brand(session, contact_id)
    brand = session.get(Brand, brand_id) if brand_id is not None else None
    return first, brand.name if brand is not None else None


def _active_runs_for(session: Session, contact_id: int, campaign_ids: list[int]) -> list[int]:
    if not campaign_ids:
        return []
    q = (
        sa_select(T.c.run_id)
        .distinct()
        .join(R, R.c.id == T.c.run_id)
        .where(
            T.c.contact_id == contact_id,
            T.c.campaign_id.in_(campaign_ids),
            T.c.state.in_(HANDED),
            R.c.state.in_(runs.ACTIVE),
        )
    )
    return sorted(r[0] for r in session.connection().execute(q))


# ------------------------------------------------------------------------------------- process
def process_inbound(
    session: Session, msg: Inbound, *, now: datetime, advanced_opt_out: bool, halts: HaltSignal
) -> InboundResult:
    campaigns = find_campaigns(session, msg.messaging_service_sid, msg.to)
    twilio_answers = advanced_opt_out or bool((msg.opt_out_type or "").strip())

    existing = session.exec(
        select(InboundMessage).where(InboundMessage.message_sid == msg.message_sid)
    ).first()
    if existing is not None:
        first, brand = reply_sender(session, campaigns, existing.contact_id, existing.received_at)
        return _replay(existing, first, brand, bool(campaigns), twilio_answers)

    kind = classify(msg, campaigns)
    e164, _ = try_normalize(msg.from_)
    contact: Contact | None = None
    if e164 is not None:
        contact = session.exec(select(Contact).where(Contact.phone == e164)).first()
        if contact is None and kind in (STOP, NL_REVOKE, START):
            contact, _ = upsert_contact(session, e164)
    row = InboundMessage(
        message_sid=msg.message_sid,
        from_phone=e164 or msg.from_[:16],
        to=msg.to,
        body=msg.body,
        classification=kind,
        contact_id=contact.id if contact else None,
        received_at=now,
    )
    session.add(row)
    session.flush()  # the unique message_sid makes a concurrent duplicate fail here
    # who answers: the routed campaign, else the one that texted the contact (reply text and
    # metrics label only: the revocation's scope and START's grants use the routed campaigns)
    first, brand = (
        reply_sender(session, campaigns, row.contact_id, now)
        if kind != OTHER
        else (campaigns[0] if campaigns else None, None)
    )
    result = InboundResult(
        kind, contact_id=row.contact_id, campaign_sid=first.sid if first else None
    )

    if kind in REVOCATIONS and contact is not None:
        brands = (
            [b for b in dict.fromkeys(c.brand_id for c in campaigns)]
            if campaigns
            else _fallback_brands(session, pk(contact))
        )
        newly, all_ids = _revoke(
            session, msg, kind, contact, brands, campaigns, now, halts, result.suppressed
        )
        result.new_opt_out = newly
        result.run_ids = _active_runs_for(session, pk(contact), all_ids)
        if not newly:
            result.classification = kind + REPEAT
        elif kind == NL_REVOKE or not twilio_answers:
            result.reply = replies.opt_out_reply(first, brand)
    elif kind == START and contact is not None and campaigns:
        for c in campaigns:
            assert c.id is not None
            consent.record_grant(
                session,
                contact,
                consent.Scope(c.brand_id, c.id),
                "keyword",
                consent.Evidence(
                    text=msg.body,
                    ref=msg.message_sid,
                    note=f"opt-in keyword to {msg.to or msg.messaging_service_sid}",
                ),
                actor=ACTOR,
                consent_type="express",
                occurred_at=now,
            )
        if not twilio_answers:
            result.reply = replies.opt_in_reply(first, brand)
    elif kind == HELP and not twilio_answers:
        result.reply = replies.help_reply(first, brand)  # never empty (replies.help_reply)

    if result.classification != kind:
        row.classification = result.classification
        session.add(row)
        session.flush()
    return result


def _revoke(
    session: Session,
    msg: Inbound,
    kind: str,
    contact: Contact,
    brands: list[int],
    campaigns: Sequence[Campaign],
    now: datetime,
    halts: HaltSignal,
    suppressed: dict[str, int],
) -> tuple[bool, list[int]]:
    """One brand-wide revocation per brand (``consent.revoke_and_suppress``: the event and the
    contact's pending rows in every campaign of the brand, added to ``suppressed`` per campaign
    SID).  Returns (newly opted out somewhere, campaign ids touched)."""
    assert contact.id is not None
    newly = not brands
    touched: list[int] = []
    source = "keyword" if kind == STOP else "natural_language"
    for brand_id in brands:
        matched = [c.id for c in campaigns if c.brand_id == brand_id] or [None]
        already = all(
            ledger.status(session, contact.id, brand_id=brand_id, campaign_id=cid).opted_out
            for cid in matched
        )
        newly = newly or not already
        got = consent.revoke_and_suppress(
            session,
            contact,
            consent.Scope(brand_id),
            source,
            consent.Evidence(
                text=msg.body,
                ref=msg.message_sid,
                note=(
                    f"{'keyword' if kind == STOP else 'natural-language'} revocation to "
                    f"{msg.to or '?'}"
                    + (f" via {msg.messaging_service_sid}" if msg.messaging_service_sid else "")
                    + ("" if campaigns else "; the number matched no campaign")
                    + ("; repeated (already opted out)" if already else "")
                ),
            ),
            actor=ACTOR,
            halts=halts,
            now=now,
            occurred_at=now,
        )
        touched.extend(got.campaign_ids)
        for sid, n in got.suppressed.items():
            suppressed[sid] = suppressed.get(sid, 0) + n
    return newly, touched


def _replay(
    row: InboundMessage,
    first: Campaign | None,
    brand: str | None,
    routed: bool,
    twilio_answers: bool,
) -> InboundResult:
    """An already processed MessageSid: change nothing, answer what the first request got."""
    kind = row.classification or OTHER
    result = InboundResult(
        kind, replay=True, contact_id=row.contact_id, campaign_sid=first.sid if first else None
    )
    if (
        kind in REVOCATIONS
        and row.contact_id is not None
        and (kind == NL_REVOKE or not twilio_answers)
    ):
        result.reply = replies.opt_out_reply(first, brand)
    elif kind == START and row.contact_id is not None and routed and not twilio_answers:
        result.reply = replies.opt_in_reply(first, brand)
    elif kind == HELP and not twilio_answers:
        result.reply = replies.help_reply(first, brand)
    return result
