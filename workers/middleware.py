"""Dramatiq middleware: the worker in-flight gauge and the warm-up at process boot."""

from __future__ import annotations

import logging
import threading
from typing import Any

from dramatiq.middleware import Middleware

log = logging.getLogger(__name__)


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


class Warmup(Middleware):
    """Builds the process's pipeline when a worker process boots (imports, clients, throttle
    script), so its first message is not the one that pays for it.  Only where ``enabled``
    (the ``dramatiq`` CLI's worker processes); a failure is logged and the first message
    builds it again (and reports the error)."""

    def __init__(self, build: Any, enabled: Any) -> None:
        self._build = build  # callable: builds (and caches) the pipeline
        self._enabled = enabled  # callable: whether this broker's workers should warm up

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        if not self._enabled(broker):
            return
        try:
            self._build()
        except Exception:  # noqa: BLE001 - the first message retries and reports it
            log.warning("worker warm-up failed; the first message will try again",
                        exc_info=True)
