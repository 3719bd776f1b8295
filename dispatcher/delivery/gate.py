"""evaluate(): every gate for one recipient, without I/O (render, compose, decide).  Used by the
delivery pipeline (dispatch.py) and by dry runs (runs.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from dispatcher import compliance
from dispatcher.errors import MessageTooLongError
from dispatcher.models import Brand, Campaign, Contact
from dispatcher.templates import MissingField, Template, contact_values

if TYPE_CHECKING:  # a type only: this module does no I/O
    from dispatcher.ledger import ConsentStatus

#: error codes that mark a number as unusable for SMS (compliance.md 7)
BAD_NUMBER_CODES = frozenset({21211, 21614, 30005, 30006})
#: outbox states of a message that reached (or may have reached) the carrier
HANDED = ("sending", "sent", "delivered", "undelivered", "unknown")


@dataclass(frozen=True)
class GateResult:
    kind: str  # send | defer | suppress | pause
    reason: str | None = None
    text: str | None = None
    decision: Any = None
    first_message: bool = False


def evaluate(
    tpl: Template,
    variables: dict[str, Any] | None,
    contact: Contact,
    brand: Brand,
    campaign: Campaign,
    consent: ConsentStatus,
    history: list[tuple],
    now: datetime,
    *,
    first_message_days: int = 30,
) -> GateResult:
    """Every gate for one recipient, without I/O: render, compose, decide.  ``history`` rows are
    (campaign_id, at, state, error_code) of this contact's recent outbox rows."""
    try:
        rendered = tpl.render(contact_values(contact.name, contact.attributes, variables))
    except MissingField:
        return GateResult("suppress", "template_variable_missing")
    cutoff = now - timedelta(days=first_message_days)
    first = not any(c == campaign.id and at >= cutoff and st in HANDED for c, at, st, _ in history)
    try:
        text = compliance.compose(
            rendered, brand_name=brand.name, opt_out_language=None, first_message=first
        )
    except MessageTooLongError:
        return GateResult("suppress", "message_too_long")
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
                "pause", reason + (f" ({d.detail})" if d.detail else ""), text, d, first
            )
        return GateResult("suppress", reason, text, d, first)
    if isinstance(d, compliance.Defer):
        return GateResult("defer", d.reason.value, text, d, first)
    return GateResult("send", None, text, d, first)
