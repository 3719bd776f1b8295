"""What the webhook app needs from the process around it (the composition root provides it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dispatcher.clock import Clock
from dispatcher.settings import Settings
from dispatcher.store import Database

if TYPE_CHECKING:
    from dispatcher.delivery.ports import HaltSignal
    from dispatcher.metrics import OptOutKind


class WebhookMetrics(Protocol):
    """What the webhooks record (``dispatcher.metrics.Metrics`` has these methods; called
    directly, so a renamed one fails mypy and the tests, not silently)."""

    def opt_out(self, campaign: str, kind: OptOutKind = "keyword") -> None: ...

    def opt_in(self, campaign: str) -> None: ...

    def help_request(self, campaign: str) -> None: ...

    def delivered(self, campaign: str, sender: str) -> None: ...

    def undelivered(self, campaign: str, sender: str, error_code: int | str | None) -> None: ...

    def failed(self, campaign: str, sender: str, error_code: int | str | None) -> None: ...

    def guard_event(self, campaign: str, kind: str) -> None: ...

    def guard_paused(self, campaign: str, reason: str) -> None: ...

    def suppressed(self, campaign: str, reason: str, n: int = 1) -> None: ...


class NoMetrics(WebhookMetrics):
    """A runtime without metrics: every call does nothing."""

    def opt_out(self, campaign: str, kind: OptOutKind = "keyword") -> None:
        pass

    def opt_in(self, campaign: str) -> None:
        pass

    def help_request(self, campaign: str) -> None:
        pass

    def delivered(self, campaign: str, sender: str) -> None:
        pass

    def undelivered(self, campaign: str, sender: str, error_code: int | str | None) -> None:
        pass

    def failed(self, campaign: str, sender: str, error_code: int | str | None) -> None:
        pass

    def guard_event(self, campaign: str, kind: str) -> None:
        pass

    def guard_paused(self, campaign: str, reason: str) -> None:
        pass

    def suppressed(self, campaign: str, reason: str, n: int = 1) -> None:
        pass


@runtime_checkable
class Runtime(Protocol):
    """Any object with these attributes.  Optional extras, looked up with ``getattr``:

    * ``render_metrics() -> (bytes, content_type)`` -- served at ``GET /metrics``.
    """

    @property
    def settings(self) -> Settings:  # auth_token, public_base_url, advanced_opt_out
        ...

    @property
    def db(self) -> Database: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def metrics(self) -> WebhookMetrics | None:  # dispatcher.metrics.Metrics or None
        ...

    @property
    def redis(self) -> Any | None:  # a redis client (checked by /healthz) or None (embedded)
        ...

    @property
    def halts(self) -> HaltSignal:  # what a STOP, pause or cancel signals before it commits
        ...
