"""What the webhook app needs from the process around it (the composition root provides it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dispatcher.clock import Clock
from dispatcher.settings import Settings
from dispatcher.store import Database

if TYPE_CHECKING:
    from dispatcher.delivery.ports import HaltSignal


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
    def metrics(self) -> Any | None:  # dispatcher.metrics.Metrics or None
        ...

    @property
    def redis(self) -> Any | None:  # a redis client (checked by /healthz) or None (embedded)
        ...

    @property
    def halts(self) -> HaltSignal:  # what a STOP, pause or cancel signals before it commits
        ...
