"""How the pipeline reacts to each outcome of a create-message call (pure, no I/O).

Five outcome classes; each failed one reaches the caller as its own exception
(``dispatcher.errors``: ``RejectedSendError``, ``RetryableSendError``, ``AmbiguousSendError``,
and ``GatewayError`` itself for ``failed``):

* ``sent``       -- Twilio returned a SID; nothing more to do here.
* ``rejected``   -- the code means "never retry to this number" (suppress contact or message).
* ``retryable``  -- the request was refused before Twilio accepted it; safe to send again later.
* ``ambiguous``  -- the request may have reached Twilio (read timeout, connection reset after
                    the request left): the message may exist; resolve with ``find_sent`` first.
* ``failed``     -- anything else (auth error, unknown code): no retry, alert an operator.

The table follows compliance.md section 7.  Twilio advises against logic keyed on error codes and
changes them, so the table is data: pass an overriding mapping to :func:`classify_code`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from dispatcher.errors import (
    AmbiguousSendError,
    GatewayError,
    RejectedSendError,
    RetryableSendError,
)


class Outcome(StrEnum):
    SENT = "sent"
    REJECTED = "rejected"
    RETRYABLE = "retryable"
    AMBIGUOUS = "ambiguous"
    FAILED = "failed"


SENT: Final = Outcome.SENT
REJECTED: Final = Outcome.REJECTED
RETRYABLE: Final = Outcome.RETRYABLE
AMBIGUOUS: Final = Outcome.AMBIGUOUS
FAILED: Final = Outcome.FAILED

#: the exception each failed outcome raises (``sent`` raises nothing)
ERRORS: Final[dict[Outcome, type[GatewayError]]] = {
    REJECTED: RejectedSendError,
    RETRYABLE: RetryableSendError,
    AMBIGUOUS: AmbiguousSendError,
    FAILED: GatewayError,
}


@dataclass(frozen=True, slots=True)
class SendResult:
    """The carrier's answer to an accepted create-message call (or a lookup: fetch, list).
    ``error_code`` is the message's ``ErrorCode`` (30007, 21610, ...), as a status callback
    carries it: whatever brought a status, its code comes with it
    (``dispatcher.provider_status``)."""

    sid: str
    status: str
    num_segments: int
    error_code: int | None = None


@dataclass(frozen=True, slots=True)
class CodeRule:
    outcome: Outcome
    meaning: str
    reaction: str


#: Twilio error code -> outcome and reaction (compliance.md section 7, plus the test-credential
#: codes of section 8).  Codes returned synchronously by CreateMessage and codes reported later in
#: status callbacks share one table: a 30xxx code in a callback is classified the same way.
CODE_RULES: Final[dict[int, CodeRule]] = {
    20003: CodeRule(FAILED, "authentication failed (HTTP 401)", "check credentials; alert"),
    20429: CodeRule(RETRYABLE, "too many concurrent requests (HTTP 429)", "retry with backoff"),
    21211: CodeRule(REJECTED, "invalid 'To' number", "suppress contact (bad data)"),
    21212: CodeRule(FAILED, "invalid 'From' number", "fix sender configuration"),
    21408: CodeRule(REJECTED, "no permission for the region of 'To'", "fail message; config alert"),
    21602: CodeRule(FAILED, "message body is required", "fix template"),
    21603: CodeRule(FAILED, "'From' or MessagingServiceSid required", "fix sender configuration"),
    21604: CodeRule(FAILED, "'To' is required", "bug: fix caller"),
    21606: CodeRule(FAILED, "'From' not owned / not SMS-capable", "fix sender configuration"),
    21610: CodeRule(REJECTED, "recipient replied STOP", "record opt-out; suppress until START"),
    21611: CodeRule(RETRYABLE, "'From' queue exceeds 10 h", "stop feeding the sender; backoff"),
    21612: CodeRule(REJECTED, "'To' not reachable from this 'From'", "fail; check number type"),
    21614: CodeRule(REJECTED, "'To' is not a valid mobile number", "suppress for SMS"),
    21617: CodeRule(REJECTED, "body exceeds 1,600 characters", "fix template"),
    30001: CodeRule(RETRYABLE, "queue overflow", "slow down; retry later"),
    30003: CodeRule(RETRYABLE, "unreachable handset", "retry later once"),
    30004: CodeRule(REJECTED, "message blocked by recipient", "suppress contact"),
    30005: CodeRule(REJECTED, "unknown handset", "suppress contact"),
    30006: CodeRule(REJECTED, "landline or unreachable carrier", "do not retry; suppress"),
    30007: CodeRule(REJECTED, "filtered by carrier", "no resend; feed reputation guard"),
    30008: CodeRule(RETRYABLE, "unknown delivery error", "limited retry"),
    30022: CodeRule(RETRYABLE, "10DLC rate limit exceeded", "slow down"),
    30034: CodeRule(FAILED, "sender not registered for 10DLC", "pause all sends from the sender"),
    30036: CodeRule(FAILED, "validity period expired", "re-send only if still relevant"),
    63017: CodeRule(RETRYABLE, "account above 2,000 MPS", "throttle"),
}


def classify_code(
    code: int | None,
    http_status: int | None = None,
    overrides: dict[int, Outcome] | None = None,
) -> Outcome:
    """Outcome of an error answer from Twilio (a ``TwilioRestException``).

    HTTP 429 and 5xx answers mean Twilio did not accept the request: ``retryable`` whatever the
    code.  A known code takes the table's outcome; an unknown code is ``failed`` (no retry).
    """
    if overrides and code in overrides:
        return overrides[code]
    if http_status == 429:
        return RETRYABLE
    if code is not None and code in CODE_RULES:
        return CODE_RULES[code].outcome
    if http_status is not None and http_status >= 500:
        return RETRYABLE
    return FAILED


def error(
    outcome: Outcome, message: str, *, code: int | None = None, status: int | None = None
) -> GatewayError:
    """The exception that carries a failed ``outcome`` to the caller."""
    if outcome is Outcome.SENT:
        raise ValueError("a sent message is not an error")
    return ERRORS[outcome](message, code=code, status=status)
