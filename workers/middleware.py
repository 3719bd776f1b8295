"""Dramatiq middleware: the worker in-flight gauge, the warm-up at process boot, the flush of
held carried rows at shutdown, and a prefetch of one message per worker thread."""

from __future__ import annotations

import logging
import threading
from typing import Any

import dramatiq.worker
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

    def after_process_message(
        self,
        broker: Any,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
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
            log.warning("worker warm-up failed; the first message will try again", exc_info=True)


class FlushCarried(Middleware):
    """A worker that stops puts the carried rows its pipeline holds on the queue
    (``dispatcher.delivery.carry``): another worker sends them at their slots.  ``flush`` does
    nothing where no pipeline was built."""

    def __init__(self, flush: Any) -> None:
        self._flush = flush

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        try:
            self._flush()
        except Exception:  # noqa: BLE001 - the reconciler releases them after lost_after_s
            log.warning("could not put the held carried rows on the queue", exc_info=True)


class FairPrefetch(Middleware):
    """A worker process takes no more messages from the queue than it has threads.

    Dramatiq prefetches twice its threads.  A released message carries a batch of up to 20 rows
    (``DISPATCHER_DELIVER_BATCH``), so one process could hold 8 batches waiting behind its busy
    threads while another process (or host) sat idle at the end of a run.  Measured on the
    bench (2 processes x 8 threads, 2 000 rows): 372-444 msg/s at the default, 465-504 at one
    message per thread.  ``dramatiq_queue_prefetch`` in the environment still wins (Dramatiq
    reads it when it is imported; 0 means its own default, as for Dramatiq)."""

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        if not dramatiq.worker.QUEUE_PREFETCH:
            worker.queue_prefetch = worker.worker_threads
