"""Compliance core: pure functions deciding whether, when and with what words a message may go out.

No I/O, no clock reads: every time is an argument.  See docs/compliance.md for every rule and its
source.  Public API (stable):

* ``classify_keyword(text, campaign=None)`` -> "STOP" | "START" | "HELP" | None
* ``detect_revocation(text)`` -> bool
* ``segments(text)`` -> Segments(encoding, count, characters)
* ``compose(body, *, brand_name, opt_out_language, first_message)`` -> str
* ``lint_message(body, campaign, ...)`` / ``lint_campaign(registration)`` -> list[Finding]
* ``is_quiet_hours(phone, at_utc, policy)`` / ``next_allowed_time(phone, at_utc, policy)``
* ``decide(message, contact_state, campaign, *, now)`` -> Send | Defer | Suppress
  (= ``refusal(to, contact_state, campaign)`` then ``decide_message``; order: ``REASON_ORDER``)
"""

import importlib
from typing import TYPE_CHECKING, Any

# ``compose`` and ``segments`` are both a module and the function it exports: they are bound here,
# as before, or the first ``import dispatcher.compliance.segments`` would leave the module
# object where callers expect the function (both are small; the schedule needs them anyway).
from dispatcher.compliance.compose import DEFAULT_OPT_OUT_LANGUAGE, compose
from dispatcher.compliance.segments import MAX_BODY_CHARS, Segments, non_gsm7_characters, segments

if TYPE_CHECKING:
    from dispatcher.compliance.content import has_opt_out_language
    from dispatcher.compliance.findings import ERROR, WARNING, Finding, findings_to_dict, has_errors
    from dispatcher.compliance.gates import (
        CAMPAIGN_LEVEL_REASONS,
        REASON_ORDER,
        ContactState,
        Decision,
        Defer,
        DeferReason,
        OutgoingMessage,
        Send,
        Suppress,
        SuppressReason,
        decide,
        decide_message,
        refusal,
    )
    from dispatcher.compliance.keywords import (
        HELP_KEYWORDS,
        OPT_IN_KEYWORDS,
        OPT_OUT_KEYWORDS,
        classify_keyword,
        normalize_keyword,
    )
    from dispatcher.compliance.lint import lint_message
    from dispatcher.compliance.quiet_hours import (
        QuietHoursPolicy,
        StateRule,
        allowed_until,
        is_quiet_hours,
        next_allowed_time,
        policy_from_name,
    )
    from dispatcher.compliance.registration import lint_campaign
    from dispatcher.compliance.revocation import detect_revocation

#: Where each public name lives.  The package imports its modules on first use (PEP 562), so a
#: caller that needs one piece -- ``dispatcher.schedule`` needs only ``quiet_hours`` -- does not pay
#: for gates, content, template lint and registration (``run show``: ~9 % of its start-up).
_HOME: dict[str, str] = {
    "has_opt_out_language": "content",
    "ERROR": "findings",
    "WARNING": "findings",
    "Finding": "findings",
    "findings_to_dict": "findings",
    "has_errors": "findings",
    "CAMPAIGN_LEVEL_REASONS": "gates",
    "REASON_ORDER": "gates",
    "ContactState": "gates",
    "Decision": "gates",
    "Defer": "gates",
    "DeferReason": "gates",
    "OutgoingMessage": "gates",
    "Send": "gates",
    "Suppress": "gates",
    "SuppressReason": "gates",
    "decide": "gates",
    "decide_message": "gates",
    "refusal": "gates",
    "HELP_KEYWORDS": "keywords",
    "OPT_IN_KEYWORDS": "keywords",
    "OPT_OUT_KEYWORDS": "keywords",
    "classify_keyword": "keywords",
    "normalize_keyword": "keywords",
    "lint_message": "lint",
    "QuietHoursPolicy": "quiet_hours",
    "StateRule": "quiet_hours",
    "allowed_until": "quiet_hours",
    "is_quiet_hours": "quiet_hours",
    "next_allowed_time": "quiet_hours",
    "policy_from_name": "quiet_hours",
    "lint_campaign": "registration",
    "detect_revocation": "revocation",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CAMPAIGN_LEVEL_REASONS",
    "REASON_ORDER",
    "DEFAULT_OPT_OUT_LANGUAGE",
    "ERROR",
    "HELP_KEYWORDS",
    "MAX_BODY_CHARS",
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "WARNING",
    "ContactState",
    "Decision",
    "Defer",
    "DeferReason",
    "Finding",
    "OutgoingMessage",
    "QuietHoursPolicy",
    "Segments",
    "Send",
    "StateRule",
    "Suppress",
    "SuppressReason",
    "allowed_until",
    "classify_keyword",
    "compose",
    "decide",
    "decide_message",
    "detect_revocation",
    "findings_to_dict",
    "has_errors",
    "has_opt_out_language",
    "is_quiet_hours",
    "lint_campaign",
    "lint_message",
    "next_allowed_time",
    "non_gsm7_characters",
    "normalize_keyword",
    "policy_from_name",
    "refusal",
    "segments",
]
