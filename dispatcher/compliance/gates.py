"""``decide``: the one gate a worker calls before every send.  Pure: the time is an argument.

When more than one reason applies, the gate reports the first of ``REASON_ORDER`` (tested over
every pair of reasons in tests/unit/compliance/test_reason_order.py):

1. campaign status: only ``VERIFIED`` sends (seed 004; compliance.md §6) → Suppress
   ``campaign_in_progress`` (also ``PENDING``) / ``campaign_failed`` / ``campaign_suspended`` /
   ``campaign_status_unknown``;
2. campaign drift: proactive send on a conversational campaign (seed 000) → ``campaign_drift``
   (1 and 2 hold for every message of the campaign: the worker pauses the run instead);
3. consent, before anything about the number or the message (a recipient with no consent is
   reported ``no_consent`` whatever else is wrong): opted out → ``opted_out``; proactive without
   consent → ``no_consent`` (seed 000, seed 002; a reply inside a conversation the contact
   started carries its own consent, seed 002);
4. the number: unparsable → ``invalid_number``; carrier-side bad number → ``carrier_suppressed``;
5. the message: a template field missing → ``template_variable_missing`` and a body too long
   → ``message_too_long`` (both found by the caller, which renders and composes: see
   ``delivery.gate.evaluate``); lint errors on the composed body
   (``lint_message(..., first_message=...)``) → ``lint_error`` (``detail`` = the finding code);
6. proactive only: frequency caps (the campaign's ``frequency_cap_count`` per
   ``frequency_cap_hours``, and the state rule: FL/OK/MD ≤ 3 per 24 h, compliance.md §4) →
   Defer ``frequency_cap`` / ``state_frequency_cap``; quiet hours → Defer ``quiet_hours`` (or
   ``quiet_hours_unknown_zone``) until the window opens.  A cap deferral lands on an allowed time.

``refusal`` is steps 1-4 (what needs no message body), ``decide_message`` steps 5-6 once
``refusal`` passed; ``decide`` is both.  ``Send.valid_until`` is when quiet hours begin (bound
Twilio's ValidityPeriod with it); ``None`` when no quiet hours apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from dispatcher.compliance.lint import is_conversational, lint_body
from dispatcher.compliance.quiet_hours import (
    _next_allowed,
    _quiet,
    number_zones,
    policy_from_name,
    resolve,
    verdict,
)
from dispatcher.compliance.segments import segments
from dispatcher.compliance.template_lint import lint_parts
from dispatcher.errors import InputError, InvalidPhoneError


class SuppressReason(StrEnum):
    CAMPAIGN_IN_PROGRESS = "campaign_in_progress"
    CAMPAIGN_FAILED = "campaign_failed"
    CAMPAIGN_SUSPENDED = "campaign_suspended"
    CAMPAIGN_STATUS_UNKNOWN = "campaign_status_unknown"
    CAMPAIGN_DRIFT = "campaign_drift"
    LINT_ERROR = "lint_error"
    INVALID_NUMBER = "invalid_number"
    CARRIER_SUPPRESSED = "carrier_suppressed"
    OPTED_OUT = "opted_out"
    NO_CONSENT = "no_consent"
    TEMPLATE_VARIABLE_MISSING = "template_variable_missing"
    MESSAGE_TOO_LONG = "message_too_long"


#: The order reasons are reported in when more than one applies: the first wins.
REASON_ORDER: tuple[SuppressReason, ...] = (
    SuppressReason.CAMPAIGN_IN_PROGRESS,
    SuppressReason.CAMPAIGN_FAILED,
    SuppressReason.CAMPAIGN_SUSPENDED,
    SuppressReason.CAMPAIGN_STATUS_UNKNOWN,
    SuppressReason.CAMPAIGN_DRIFT,
    SuppressReason.OPTED_OUT,
    SuppressReason.NO_CONSENT,
    SuppressReason.INVALID_NUMBER,
    SuppressReason.CARRIER_SUPPRESSED,
    SuppressReason.TEMPLATE_VARIABLE_MISSING,
    SuppressReason.MESSAGE_TOO_LONG,
    SuppressReason.LINT_ERROR,
)


class DeferReason(StrEnum):
    QUIET_HOURS = "quiet_hours"
    QUIET_HOURS_UNKNOWN_ZONE = "quiet_hours_unknown_zone"
    FREQUENCY_CAP = "frequency_cap"
    STATE_FREQUENCY_CAP = "state_frequency_cap"


#: Reasons that hold for every message of the campaign: pause the run instead of suppressing rows.
CAMPAIGN_LEVEL_REASONS: frozenset[SuppressReason] = frozenset(
    {
        SuppressReason.CAMPAIGN_IN_PROGRESS,
        SuppressReason.CAMPAIGN_FAILED,
        SuppressReason.CAMPAIGN_SUSPENDED,
        SuppressReason.CAMPAIGN_STATUS_UNKNOWN,
        SuppressReason.CAMPAIGN_DRIFT,
    }
)

_STATUS: dict[str, SuppressReason | None] = {
    "VERIFIED": None,
    "IN_PROGRESS": SuppressReason.CAMPAIGN_IN_PROGRESS,
    "PENDING": SuppressReason.CAMPAIGN_IN_PROGRESS,
    "FAILED": SuppressReason.CAMPAIGN_FAILED,
    "SUSPENDED": SuppressReason.CAMPAIGN_SUSPENDED,
}


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    to: str  # E.164
    body: str  # already composed
    first_message: bool
    proactive: bool = True
    brand_name: str | None = None  # enables the brand-name check on first messages
    opt_out_language: str | None = None  # the campaign's own opt-out sentence, if any
    #: the body as its template built it: literal, value, ..., literal (``"".join`` is ``body``);
    #: the template's literal text is then linted once, only the values per message
    #: (compliance/template_lint.py)
    parts: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ContactState:
    consent_granted: bool  # a grant in scope with no later revoke
    opted_out: bool = False
    time_zone: str | None = None  # IANA override
    state_code: str | None = None  # US state, if known
    recent_sends: tuple[datetime, ...] = ()  # sends to this contact (any order), for caps
    suppressed_reason: str | None = None  # carrier-side bad number (21211, 21614, 30005, ...)


@dataclass(frozen=True, slots=True)
class Send:
    valid_until: datetime | None = None
    segments: int | None = None


@dataclass(frozen=True, slots=True)
class Defer:
    until: datetime
    reason: DeferReason
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Suppress:
    reason: SuppressReason
    detail: str | None = None


Decision = Send | Defer | Suppress


def _cap_until(
    sends: tuple[datetime, ...], now: datetime, limit: int, hours: int
) -> datetime | None:
    """Earliest time at which fewer than ``limit`` sends fall in the trailing ``hours`` window."""
    if len(sends) < limit:
        return None
    window = timedelta(hours=hours)
    cutoff = now - window
    if sum(1 for t in sends if t > cutoff) < limit:
        return None
    recent = sorted(t for t in sends if t > cutoff)
    if limit <= 0:
        return now + window
    return recent[len(recent) - limit] + window


def refusal(
    to: str, contact_state: ContactState, campaign: Any, *, proactive: bool = True
) -> Suppress | None:
    """The reasons that need no message body (campaign, consent, number), in ``REASON_ORDER``:
    the first that applies, else ``None``."""
    status = str(getattr(campaign, "campaign_status", None) or "").upper()
    reason = _STATUS.get(status, SuppressReason.CAMPAIGN_STATUS_UNKNOWN)
    if reason is not None:
        return Suppress(reason, status or None)
    usecase = str(getattr(campaign, "us_app_to_person_usecase", "") or "")
    if proactive and is_conversational(usecase):
        return Suppress(SuppressReason.CAMPAIGN_DRIFT, usecase)
    if contact_state.opted_out:
        return Suppress(SuppressReason.OPTED_OUT)
    if proactive and not contact_state.consent_granted:
        return Suppress(SuppressReason.NO_CONSENT)
    try:
        number_zones(to)
    except InvalidPhoneError:
        return Suppress(SuppressReason.INVALID_NUMBER)
    if contact_state.suppressed_reason:
        return Suppress(SuppressReason.CARRIER_SUPPRESSED, contact_state.suppressed_reason)
    return None


def decide(
    message: OutgoingMessage, contact_state: ContactState, campaign: Any, *, now: datetime
) -> Decision:
    """Send, Defer(until, reason) or Suppress(reason) for ``message`` at ``now`` (aware UTC)."""
    if now.tzinfo is None:
        raise InputError("now must be timezone-aware (UTC)", field="now")
    refused = refusal(message.to, contact_state, campaign, proactive=message.proactive)
    return refused or decide_message(message, contact_state, campaign, now=now)


def decide_message(
    message: OutgoingMessage, contact_state: ContactState, campaign: Any, *, now: datetime
) -> Decision:
    """What ``decide`` answers once ``refusal`` found nothing: lint errors on the body, then the
    caps and quiet hours of a proactive message."""
    if now.tzinfo is None:
        raise InputError("now must be timezone-aware (UTC)", field="now")
    usecase = str(getattr(campaign, "us_app_to_person_usecase", "") or "")
    proactive = message.proactive
    rules = (
        bool(getattr(campaign, "has_embedded_links", False)),
        bool(getattr(campaign, "has_embedded_phone", False)),
        bool(getattr(campaign, "age_gated", False)),
        usecase,
        message.brand_name,
        message.first_message,
        proactive,
        message.opt_out_language,
    )
    findings = (
        lint_body(message.body, *rules)
        if message.parts is None
        else lint_parts(message.parts, message.body, *rules)
    )
    for f in findings:
        if f.severity == "error":
            return Suppress(SuppressReason.LINT_ERROR, f.code)

    try:
        policy = policy_from_name(getattr(campaign, "quiet_hours_policy", None))
        resolved = resolve(message.to, policy, contact_state.time_zone, contact_state.state_code)
    except InvalidPhoneError:
        return Suppress(SuppressReason.INVALID_NUMBER)
    if not proactive:
        return Send(None, segments(message.body).count)

    defer_at: datetime | None = None
    defer_reason: DeferReason | None = None
    detail: str | None = None
    sends = contact_state.recent_sends
    if sends:
        cap_n = getattr(campaign, "frequency_cap_count", None)
        cap_h = getattr(campaign, "frequency_cap_hours", None)
        if cap_n is not None and cap_h:
            until = _cap_until(sends, now, int(cap_n), int(cap_h))
            if until is not None:
                defer_at, defer_reason = until, DeferReason.FREQUENCY_CAP
        if resolved.cap is not None:
            limit, hours, state = resolved.cap
            until = _cap_until(sends, now, limit, hours)
            if until is not None and (defer_at is None or until > defer_at):
                defer_at, defer_reason, detail = until, DeferReason.STATE_FREQUENCY_CAP, state
    if not policy.enabled:
        if defer_at is not None:
            return Defer(defer_at, defer_reason, detail)  # type: ignore[arg-type]
        return Send(None, segments(message.body).count)
    if defer_at is None:
        v = verdict(resolved, now)  # memoised per minute: the same for most recipients
        if not v.quiet:
            return Send(v.until, segments(message.body).count)
        if resolved.unknown_zone:
            return Defer(v.next, DeferReason.QUIET_HOURS_UNKNOWN_ZONE, resolved.state)  # type: ignore[arg-type]
        return Defer(v.next, DeferReason.QUIET_HOURS, resolved.state)  # type: ignore[arg-type]
    if _quiet(resolved.windows, defer_at):
        return Defer(_next_allowed(resolved, defer_at), defer_reason, detail)  # type: ignore[arg-type]
    return Defer(defer_at, defer_reason, detail)  # type: ignore[arg-type]
