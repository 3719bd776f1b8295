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

from dispatcher.compliance.compose import DEFAULT_OPT_OUT_LANGUAGE, compose
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
from dispatcher.compliance.segments import MAX_BODY_CHARS, Segments, non_gsm7_characters, segments

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
