"""Load + gate: the first step of a batch.  ``Loader`` reads what the gate needs, one statement
each: the rows with their run's state and template and their contact's columns, their contacts'
consent (one query per campaign), their contacts' recent sends and bad-number errors; campaigns
and brands come from a per-process cache of ``campaign_cache_s``.  Core rows, not ORM objects:
building ORM objects cost ~10 % of a worker's CPU.

``evaluate`` is every rule for one recipient, without I/O (render, compose, decide); dry runs use
it too (``run_report.dry_run``).  A row that passed becomes a ``Ready``: what the hand-over (claim,
halt check, slot, send) needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Select, bindparam, or_, select
from sqlmodel import Session

from dispatcher import compliance, ledger, outbox
from dispatcher.clock import as_utc
from dispatcher.compliance import SuppressReason as Reason
from dispatcher.compliance.template_lint import split_composed
from dispatcher.delivery.config import DeliverConfig
from dispatcher.errors import MessageTooLongError
from dispatcher.models import Brand, Campaign, Contact, Run
from dispatcher.registry import CampaignCache
from dispatcher.templates import MissingField, Template, contact_values

if TYPE_CHECKING:
    from dispatcher.ledger import ConsentStatus
    from dispatcher.throttle.reservation import Reservation

#: error codes that mark a number as unusable for SMS (compliance.md 7)
BAD_NUMBER_CODES = frozenset({21211, 21614, 30005, 30006})
#: outbox states of a message that reached (or may have reached) the carrier
HANDED = ("sending", "sent", "delivered", "undelivered", "unknown")
#: one of a contact's recent outbox rows: (campaign_id, at, state, error_code)
History = tuple[int, datetime, str, int | None]


class Recipient(Protocol):
    """The contact's columns the gate reads (a ``Contact``, or a loaded batch row)."""

    @property
    def phone(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def attributes(self) -> dict[str, Any] | None: ...
    @property
    def time_zone(self) -> str | None: ...
    @property
    def state_code(self) -> str | None: ...


class Verdict(StrEnum):
    SEND = "send"
    DEFER = "defer"  # later: due again at ``decision.until``
    SUPPRESS = "suppress"  # never: this message is dropped
    PAUSE = "pause"  # a campaign-level refusal: the run is paused


@dataclass(frozen=True)
class GateResult:
    kind: Verdict
    reason: str | None = None
    text: str | None = None
    decision: compliance.Decision | None = None
    first_message: bool = False


# ------------------------------------------------------------------------------------ gate
def evaluate(
    tpl: Template,
    variables: dict[str, Any] | None,
    contact: Recipient,
    brand: Brand,
    campaign: Campaign,
    consent: ConsentStatus,
    history: list[History],
    now: datetime,
    *,
    first_message_days: int = 30,
) -> GateResult:
    """Every gate for one recipient, without I/O (pure: ``now`` is an argument), reasons in
    ``compliance.REASON_ORDER``: the campaign, consent and number (``compliance.refusal``), then
    render, compose and the rest of ``decide``.  ``history`` rows are (campaign_id, at, state,
    error_code) of this contact's recent outbox rows."""
    bad = next((str(code) for _, _, _, code in history if code in BAD_NUMBER_CODES), None)
    state = compliance.ContactState(
        consent_granted=consent.granted,
        opted_out=consent.opted_out,
        time_zone=contact.time_zone,
        state_code=contact.state_code,
        recent_sends=tuple(at for _, at, st, _ in history if st in HANDED),
        suppressed_reason=bad,
    )
    refused = compliance.refusal(contact.phone, state, campaign)
    if refused is not None:
        return _refused(refused, None, False)
    try:
        parts = tpl.render_parts(contact_values(contact.name, contact.attributes, variables))
    except MissingField:
        return GateResult(Verdict.SUPPRESS, Reason.TEMPLATE_VARIABLE_MISSING.value)
    cutoff = now - timedelta(days=first_message_days)
    first = not any(c == campaign.id and at >= cutoff and st in HANDED for c, at, st, _ in history)
    try:
        text = compliance.compose(
            "".join(parts), brand_name=brand.name, opt_out_language=None, first_message=first
        )
    except MessageTooLongError:
        return GateResult(Verdict.SUPPRESS, Reason.MESSAGE_TOO_LONG.value)
    msg = compliance.OutgoingMessage(
        to=contact.phone,
        body=text,
        first_message=first,
        brand_name=brand.name,
        parts=split_composed(parts, text) if len(parts) > 1 else None,
    )
    d = compliance.decide_message(msg, state, campaign, now=now)
    if isinstance(d, compliance.Suppress):
        return _refused(d, text, first)
    if isinstance(d, compliance.Defer):
        return GateResult(Verdict.DEFER, d.reason.value, text, d, first)
    return GateResult(Verdict.SEND, None, text, d, first)


def _refused(d: compliance.Suppress, text: str | None, first: bool) -> GateResult:
    """A refusal as the gate reports it: a campaign-level reason pauses the run."""
    reason = d.reason.value
    if d.reason in compliance.CAMPAIGN_LEVEL_REASONS:
        detail = f" ({d.detail})" if d.detail else ""
        return GateResult(Verdict.PAUSE, reason + detail, text, d, first)
    return GateResult(Verdict.SUPPRESS, reason, text, d, first)


# ------------------------------------------------------------------------------------ load
@dataclass(frozen=True, slots=True)
class Row:
    """An outbox row as a batch loads it (the columns of ``_LOAD``, in order); its contact's
    columns make it the gate's ``Recipient``."""

    id: int
    state: str
    run_id: int
    campaign_id: int
    contact_id: int
    to_phone: str
    variables: dict[str, Any] | None
    run_state: str
    template: str
    phone: str
    name: str | None
    attributes: dict[str, Any] | None
    time_zone: str | None
    state_code: str | None


class Loader:
    """Reads a batch for the gate, campaigns from the pipeline's one campaign cache."""

    def __init__(self, config: DeliverConfig, campaigns: CampaignCache) -> None:
        self.config = config
        self._campaigns = campaigns

    def rows(self, s: Session, ids: list[int]) -> dict[int, Row]:
        return {r.id: Row(*r) for r in s.connection().execute(_LOAD, {"ids": ids})}

    def campaign(self, s: Session, campaign_id: int) -> tuple[Campaign, Brand]:
        """Campaign and brand, from the process's campaign cache (``campaign_cache_s``)."""
        return self._campaigns.get(s, campaign_id)

    def consents(self, s: Session, live: list[Row]) -> dict[int, ledger.ConsentStatus]:
        """Consent of every live row's contact for its campaign (row id -> status): one query
        per campaign."""
        by_campaign: dict[int, list[Row]] = {}
        for row in live:
            by_campaign.setdefault(row.campaign_id, []).append(row)
        out: dict[int, ledger.ConsentStatus] = {}
        for campaign_id, rows in by_campaign.items():
            campaign, brand = self.campaign(s, campaign_id)
            assert brand.id is not None
            got = ledger.statuses(
                s, {r.contact_id for r in rows}, brand_id=brand.id, campaign_id=campaign.id
            )
            for r in rows:
                out[r.id] = got.get(r.contact_id, ledger.NO_CONSENT)
        return out

    def histories(
        self, s: Session, contact_ids: set[int], now: datetime
    ) -> dict[int, list[History]]:
        """These contacts' recent sends (caps, first message) and any bad-number error, in one
        statement: contact id -> [(campaign_id, at, state, error_code)]."""
        out: dict[int, list[History]] = {}
        if not contact_ids:
            return out
        since = now - timedelta(days=self.config.history_days)
        rows = s.connection().execute(_HISTORY, {"ids": list(contact_ids), "since": since})
        for who, c, sent, upd, st, code in rows:
            if sent is not None or code in BAD_NUMBER_CODES:
                out.setdefault(who, []).append((c, as_utc(sent or upd), st, code))
        return out


def _load_statement() -> Select[Any]:
    """A batch's rows with their run's state and template and their contact's columns."""
    t, r, c = outbox.T, Run.__table__, Contact.__table__  # type: ignore[attr-defined]
    return (
        select(
            t.c.id,
            t.c.state,
            t.c.run_id,
            t.c.campaign_id,
            t.c.contact_id,
            t.c.to_phone,
            t.c.variables,
            r.c.state.label("run_state"),
            r.c.template,
            c.c.phone,
            c.c.name,
            c.c.attributes,
            c.c.time_zone,
            c.c.state_code,
        )
        .join(r, r.c.id == t.c.run_id)
        .join(c, c.c.id == t.c.contact_id)
        .where(t.c.id.in_(bindparam("ids", expanding=True)))
    )


def _history_statement() -> Select[Any]:
    """Contacts' (``:ids``) sends since ``:since`` and their bad-number errors."""
    t = outbox.T
    return select(
        t.c.contact_id, t.c.campaign_id, t.c.sent_at, t.c.updated_at, t.c.state, t.c.error_code
    ).where(
        t.c.contact_id.in_(bindparam("ids", expanding=True)),
        or_(t.c.sent_at >= bindparam("since"), t.c.error_code.in_(BAD_NUMBER_CODES)),
    )


#: built once: SQLAlchemy reuses their compiled form
_LOAD = _load_statement()
_HISTORY = _history_statement()


# ----------------------------------------------------------------------------------- ready
@dataclass(frozen=True, slots=True)
class Ready:
    """A row that passed the gate: next, the hand-over (claim, halt check, slot, send)."""

    row_id: int
    run_id: int
    campaign_id: int
    brand_id: int
    contact_id: int
    to: str
    sender: str  # the campaign's Messaging Service SID, else its From number
    text: str
    segments: int | None  # the gate's count (a Messaging Service answers 0)
    campaign: Campaign
    brand: Brand
    booking: Reservation | None  # a slot booked earlier, carried by the queue message
    validity: int  # seconds the carrier may hold it (validity_period)
    digest: str  # the body's hash (the claim records it, the repetition metrics count it)
    #: when the recipient's quiet hours begin (the gate's ``Send.valid_until``): no slot is
    #: booked at or after it
    valid_until: datetime | None = None
