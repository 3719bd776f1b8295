"""One error hierarchy.  ``str(e)`` is the one line an operator reads.

Library errors are wrapped at the edge (``raise GatewayError(...) from e``); the CLI turns any
``DispatcherError`` into one ``error: ...`` line on stderr and exit code 1.
"""

from __future__ import annotations


class DispatcherError(Exception):
    """Root of every error the product raises on purpose."""


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
    """The carrier (Twilio or the sandbox) refused or failed a request.

    ``code`` is Twilio's error code when one was returned; ``outcome`` is the classification the
    pipeline reacts to (see dispatcher.gateway.outcomes).
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        status: int | None = None,
        outcome: str = "failed",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.outcome = outcome
