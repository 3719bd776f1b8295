"""Thin actors: every decision lives in dispatcher.delivery (the path of one message)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dramatiq

from dispatcher.errors import ConfigError
from workers.broker import QUEUE, broker  # noqa: F401 - sets the broker before the actors

if TYPE_CHECKING:
    from dispatcher.delivery.pipeline import Pipeline
    from dispatcher.delivery.ports import Booking
    from dispatcher.metrics import Metrics
    from dispatcher.runtime import Runtime

log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict[str, Any] = {}


def set_runtime(runtime: Runtime) -> None:
    """Embedded mode and tests hand in their Runtime; worker processes build their own."""
    with _lock:
        _state["runtime"] = runtime
        _state.pop("pipeline", None)


def runtime() -> Runtime:
    with _lock:
        rt: Runtime | None = _state.get("runtime")
        if rt is None:
            from dispatcher.logs import setup_logging
            from dispatcher.runtime import Runtime
            from dispatcher.settings import get_settings

            settings = get_settings()
            setup_logging(settings.log_level)
            rt = _state["runtime"] = Runtime(settings)
        return rt


def pipeline() -> Pipeline:
    p: Pipeline | None = _state.get("pipeline")
    if p is None:
        p = runtime().pipeline(enqueue)
        with _lock:
            _state["pipeline"] = p
    return p


def enqueue(rows: Sequence[tuple[int, Booking]], delay_s: float = 0.0) -> None:
    """Booked rows ride ONE ``deliver_batch`` message, due in ``delay_s`` (the port
    ``delivery.ports.Enqueue``)."""
    delay = int(delay_s * 1000) if delay_s > 0 else None
    ids = [row_id for row_id, _ in rows]
    deliver_batch.send_with_options(args=(ids, [b for _, b in rows]), delay=delay)


def enqueue_many(ids: list[int]) -> None:
    """Released rows ride ``deliver_batch`` messages of ``DISPATCHER_DELIVER_BATCH`` ids."""
    from dispatcher.settings import get_settings

    size = get_settings().deliver_batch
    for i in range(0, len(ids), size):
        chunk = ids[i : i + size]
        if len(chunk) == 1:
            deliver.send(chunk[0], None)
        else:
            deliver_batch.send(chunk)


def flush_carried() -> None:
    """The worker stops: its pipeline's held carried rows go on the queue (if it has one)."""
    p: Pipeline | None = _state.get("pipeline")
    if p is not None:
        p.close()


def _metrics() -> Metrics:
    return runtime().metrics


def _distributed(b: Any) -> bool:
    """A worker process of the ``dramatiq`` CLI on Redis (the embedded mode hands its runtime in
    and starts its workers itself)."""
    from dramatiq.brokers.redis import RedisBroker

    return isinstance(b, RedisBroker)


if not any(type(m).__name__ == "InFlight" for m in broker.middleware):
    from workers.middleware import FairPrefetch, FlushCarried, InFlight, Warmup

    broker.add_middleware(InFlight(_metrics))
    broker.add_middleware(Warmup(pipeline, _distributed))
    broker.add_middleware(FlushCarried(flush_carried))
    broker.add_middleware(FairPrefetch())


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=20,
    min_backoff=500,
    max_backoff=30_000,
    time_limit=180_000,
    throws=(ConfigError,),
)
def deliver(row_id: int, booking: Booking | None = None) -> None:
    outcome = pipeline().deliver(row_id, booking)
    log.debug("row %s: %s", row_id, outcome)


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=20,
    min_backoff=500,
    max_backoff=30_000,
    time_limit=600_000,
    throws=(ConfigError,),
)
def deliver_batch(row_ids: list[int], bookings: list[Booking | None] | None = None) -> None:
    """Several rows: released ones (no booking yet), or carried ones with their bookings, in
    slot order.  One load, gate and claim for the lot, then a halt check, throttle slot and
    send per row.  A retry redoes only the rows still queued."""
    ids = [int(i) for i in row_ids]
    held = {i: b for i, b in zip(ids, bookings or [], strict=False) if b}
    outcomes = pipeline().deliver_many(ids, held or None)
    log.debug("rows %s: %s", row_ids, outcomes)
