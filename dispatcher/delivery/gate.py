"""Gate: every rule for one recipient, without I/O (render, compose, decide), and what a row
that passed carries to the hand-over (``Ready``).  Used by the pipeline and by dry runs
(``run_report.dry_run``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from dispatcher import compliance
from dispatcher.errors import MessageTooLongError
from dispatcher.models import Brand, Campaign
from dispatcher.templates import MissingField, Template, contact_values

if TYPE_CHECKING:  # types only: this module does no I/O
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
    """Every gate for one recipient, without I/O: render, compose, decide.  ``history`` rows are
    (campaign_id, at, state, error_code) of this contact's recent outbox rows."""
    try:
        rendered = tpl.render(contact_values(contact.name, contact.attributes, variables))
    except MissingField:
        return GateResult(Verdict.SUPPRESS, "template_variable_missing")
    cutoff = now - timedelta(days=first_message_days)
    first = not any(c == campaign.id and at >= cutoff and st in HANDED for c, at, st, _ in history)
    try:
        text = compliance.compose(
            rendered, brand_name=brand.name, opt_out_language=None, first_message=first
        )
    except MessageTooLongError:
        return GateResult(Verdict.SUPPRESS, "message_too_long")
    bad = next((str(code) for _, _, _, code in history if code in BAD_NUMBER_CODES), None)
    state = compliance.ContactState(
        consent_granted=consent.granted,
        opted_out=consent.opted_out,
        time_zone=contact.time_zone,
        state_code=contact.state_code,
        recent_sends=tuple(at for _, at, st, _ in history if st in HANDED),
        suppressed_reason=bad,
    )
    msg = compliance.OutgoingMessage(
        to=contact.phone, body=text, first_message=first, brand_name=brand.name
    )
    d = compliance.decide(msg, state, campaign, now=now)
    if isinstance(d, compliance.Suppress):
        reason = d.reason.value
        if d.reason in compliance.CAMPAIGN_LEVEL_REASONS:
            return GateResult(
                Verdict.PAUSE, reason + (f" ({d.detail})" if d.detail else ""), text, d, first
            )
        return GateResult(Verdict.SUPPRESS, reason, text, d, first)
    if isinstance(d, compliance.Defer):
        return GateResult(Verdict.DEFER, d.reason.value, text, d, first)
    return GateResult(Verdict.SEND, None, text, d, first)


@dataclass(frozen=True, slots=True)
class Ready:
    """A row that passed the gate: next, the hand-over (claim, halt check, slot, send)."""

    row_id: int
    run_id: int
    campaign_id: int
    brand_id: int
    contact_id: int
    to: str
    text: str
    segments: int | None  # the gate's count (a Messaging Service answers 0)
    campaign: Campaign
    brand: Brand
    booking: Reservation | None  # a slot booked earlier, carried by the queue message
    validity: int  # seconds the carrier may hold it (validity_period)
    digest: str  # the body's hash (the claim records it, the repetition metrics count it)

    @property
    def sender(self) -> str:
        """The campaign's Messaging Service SID, else its From number."""
        return self.campaign.messaging_service_sid or self.campaign.sender or ""
