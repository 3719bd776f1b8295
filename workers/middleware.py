"""Dramatiq middleware: the worker in-flight gauge."""

from __future__ import annotations

import threading
from typing import Any

from dramatiq.middleware import Middleware


class InFlight(Middleware):
    """Counts messages being processed by this process and reports it to the metrics."""

    def __init__(self, metrics: Any) -> None:
        self._metrics = metrics  # a callable returning the Metrics (built lazily per process)
        self._n = 0
        self._lock = threading.Lock()

    def _report(self, delta: int) -> None:
        with self._lock:
            self._n += delta
            n = self._n
        try:
            self._metrics().worker_in_flight(n)
        except Exception:  # noqa: BLE001 - metrics never break a message
            pass

    def before_process_message(self, broker: Any, message: Any) -> None:
        self._report(+1)

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        self._report(-1)

    def after_skip_message(self, broker: Any, message: Any) -> None:
        self._report(-1)
