"""One error hierarchy.  ``str(e)`` is the one line an operator reads.

Library errors are wrapped at the edge (``raise GatewayError(...) from e``); the CLI turns any
``DispatcherError`` into one ``error: ...`` line on stderr and exit code 1.
"""

from __future__ import annotations

from typing import Any


class DispatcherError(Exception):
    """Root of every error the product raises on purpose. Raised by the HTTP client
    (dispatcher/client.py), it also carries the API's problem document and HTTP status."""

    problem: dict[str, Any] | None = None
    status: int | None = None


class ConfigError(DispatcherError):
    """Settings are missing or contradictory."""


class InputError(DispatcherError):
    """Operator or API input is malformed (file, phone number, JSON field, template)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidPhoneError(InputError):
    """A phone number that cannot be normalised to E.164."""


class UnknownTimeZoneError(InputError):
    """A time zone name the time zone database does not have."""


class NotFoundError(DispatcherError):
    """A brand, campaign, contact or run that does not exist."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"no {kind} {key!r}")
        self.kind = kind
        self.key = key


class ConflictError(DispatcherError):
    """The request contradicts stored state (duplicate name, idempotency key reuse, bad state)."""


class LedgerError(DispatcherError):
    """Attempt to change the append-only consent ledger."""


class StorageError(DispatcherError):
    """The database could not be reached or refused a statement."""


class ComplianceError(DispatcherError):
    """A message or registration breaks a rule that cannot be fixed automatically."""


class MessageTooLongError(ComplianceError):
    """Composed body exceeds Twilio's 1,600-character limit (error 21617)."""


class ThrottleError(DispatcherError):
    """The throttle backend failed (Redis down, script error)."""


class GatewayError(DispatcherError):
    """The carrier (Twilio or the sandbox) refused or failed a request, and sending it again will
    not help (credentials, sender configuration, an unknown error code): an operator must look.

    ``code`` is Twilio's error code when one was returned, ``status`` the HTTP status.  The
    subclasses say how the pipeline reacts (dispatcher.gateway.outcomes classifies each answer);
    list the ones a Dramatiq actor must never retry in its ``throws``.
    """

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class RetryableSendError(GatewayError):
    """The request was refused before the carrier accepted it (429, 5xx, connection refused): it
    certainly did not reach the recipient, so it may be sent again later."""


class RejectedSendError(GatewayError):
    """The carrier refuses this recipient or message for good (invalid number, opted out,
    blocked): never retry it."""


class AmbiguousSendError(GatewayError):
    """The request may have reached the carrier (read timeout, connection reset after it left):
    the message may exist.  Never resend blindly; ask the carrier (``find_sent``) first."""
