"""Prometheus metrics on an explicit registry (nothing happens at import time).

One :class:`Metrics` per process; the pipeline, the webhooks and the scheduler call its small typed
methods.  Labels are bounded: ``campaign`` (campaign SID), ``sender`` (the business's own From
number or Messaging Service SID), ``brand``, reason / error codes, bucket kinds, run ids.  A
recipient's phone number is never a label.

Multi-process (see docs/metrics.md): when ``PROMETHEUS_MULTIPROC_DIR`` is set, prometheus-client
writes every process's values to files in that directory and :func:`render_latest` /
:func:`start_exporter` aggregate them with ``MultiProcessCollector``.  Otherwise the registry of the
``Metrics`` object is served as is (embedded mode).

Repetition (identical content per sender per day) and the daily volume per brand live in Redis, so
they are the same whichever process sends: :meth:`Metrics.sent` records them and
:class:`RedisDailyCollector` turns them into gauges at scrape time (both in metrics_daily.py).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from dispatcher.clock import Clock, SystemClock
from dispatcher.metrics_daily import (  # noqa: F401 - re-exported: the metrics' public names
    DAILY_GAUGES,
    DAILY_TTL_S,
    TOP_BODIES_CAP,
    DailyRecorder,
    RedisDailyCollector,
    body_digest,
    day_of,
)

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Port of the per-container exporter (workers' ``--fork-function``, the scheduler).
EXPORTER_PORT = 9108
OptOutKind = Literal["keyword", "natural_language", "carrier"]
OPT_OUT_KINDS: frozenset[str] = frozenset({"keyword", "natural_language", "carrier"})
DELIVERY_STATUSES: frozenset[str] = frozenset({"delivered", "undelivered", "failed"})

THROTTLE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400)
SEND_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def multiprocess_dir() -> str | None:
    """The prometheus-client multiprocess directory, or None in single-process mode."""
    return os.environ.get(MULTIPROC_ENV) or None


def _code(error_code: int | str | None) -> str:
    return "none" if error_code in (None, "") else str(error_code)


class Metrics:
    """Every metric of the product, on one registry.  Build one per process.

    ``redis`` (a redis-py or fakeredis client) enables the Redis-backed daily structures
    (repetition, brand daily volume); without it those are skipped.  ``daily_collector`` decides
    whether this process also *serves* them (True on the webhook server / embedded mode; workers
    only write).  Label values are passed as strings; ``run`` may be an int.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        redis: Any = None,
        clock: Clock | None = None,
        daily_collector: bool = True,
        top_bodies_cap: int = TOP_BODIES_CAP,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.redis = redis
        self.clock: Clock = clock or SystemClock()
        self.recorder = (
            DailyRecorder(redis, self.clock, top_bodies_cap) if redis is not None else None
        )
        self.daily = RedisDailyCollector(redis, self.clock) if redis is not None else None
        if self.daily is not None and daily_collector:
            self.registry.register(self.daily)
        self._serve_daily = daily_collector
        self._aggregate: CollectorRegistry | None = None
        self._agg_lock = threading.Lock()
        reg = self.registry
        camp_sender = ["campaign", "sender"]

        # -- outcomes
        self.sent_total = Counter(
            "dispatcher_messages_sent", "Messages accepted by Twilio.", camp_sender, registry=reg
        )
        self.segments_total = Counter(
            "dispatcher_message_segments_sent",
            "Message segments accepted by Twilio (carriers meter throughput in segments).",
            camp_sender,
            registry=reg,
        )
        self.brand_segments_total = Counter(
            "dispatcher_brand_segments_sent",
            "Message segments accepted by Twilio, per brand.",
            ["brand"],
            registry=reg,
        )
        self.outcomes_total = Counter(
            "dispatcher_message_outcomes",
            "Final delivery outcomes (status callbacks and send-time errors) by error code.",
            ["campaign", "sender", "status", "error_code"],
            registry=reg,
        )
        self.suppressed_total = Counter(
            "dispatcher_messages_suppressed",
            "Messages a compliance gate suppressed (never sent), by reason code.",
            ["campaign", "reason"],
            registry=reg,
        )
        self.deferred_total = Counter(
            "dispatcher_messages_deferred",
            "Times a message was deferred to later (quiet hours, frequency cap...), by reason.",
            ["campaign", "reason"],
            registry=reg,
        )
        self.send_duration = Histogram(
            "dispatcher_send_duration_seconds",
            "Time of one create-message call to Twilio.",
            registry=reg,
            buckets=SEND_DURATION_BUCKETS,
        )
        # -- throttle
        self.reservations_total = Counter(
            "dispatcher_throttle_reservations",
            "Throttle reservations per bucket kind, allowed or refused.",
            ["bucket_kind", "result"],
            registry=reg,
        )
        self.throttle_wait = Histogram(
            "dispatcher_throttle_wait_seconds",
            "Wait the throttle asked for when it refused a reservation.",
            ["bucket_kind"],
            registry=reg,
            buckets=THROTTLE_WAIT_BUCKETS,
        )
        # -- consent
        self.opt_outs_total = Counter(
            "dispatcher_opt_outs",
            "Opt-outs per campaign by kind (keyword, natural_language, carrier).",
            ["campaign", "kind"],
            registry=reg,
        )
        self.opt_ins_total = Counter(
            "dispatcher_opt_ins", "Opt-ins (START etc.) per campaign.", ["campaign"], registry=reg
        )
        self.help_total = Counter(
            "dispatcher_help_requests", "HELP requests per campaign.", ["campaign"], registry=reg
        )
        # -- state gauges (last value written wins across processes)
        self.queue_depth_g = Gauge(
            "dispatcher_queue_depth",
            "Messages waiting in the delivery queue (ready + delayed).",
            ["queue"],
            registry=reg,
            multiprocess_mode="mostrecent",
        )
        self.oldest_due_g = Gauge(
            "dispatcher_queue_oldest_due_age_seconds",
            "Age of the oldest outbox message that is due and not yet sent.",
            ["queue"],
            registry=reg,
            multiprocess_mode="mostrecent",
        )
        self.run_messages_g = Gauge(
            "dispatcher_run_messages",
            "Outbox messages of a run by state.",
            ["run", "state"],
            registry=reg,
            multiprocess_mode="mostrecent",
        )
        self.run_start_g = Gauge(
            "dispatcher_run_start_time_seconds",
            "Unix time at which the run started sending.",
            ["run"],
            registry=reg,
            multiprocess_mode="mostrecent",
        )
        self.in_flight_g = Gauge(
            "dispatcher_worker_in_flight_messages",
            "Deliveries being processed right now (sum over live worker processes).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.brand_cap_g = Gauge(
            "dispatcher_brand_daily_cap_segments",
            "T-Mobile daily cap of the brand, in segments.",
            ["brand"],
            registry=reg,
            multiprocess_mode="mostrecent",
        )

    # ------------------------------------------------------------------------------ outcomes
    def sent(
        self,
        campaign: str,
        sender: str,
        segments: int = 1,
        *,
        brand: str | None = None,
        body: str | None = None,
        body_hash: str | None = None,
        duration_s: float | None = None,
    ) -> None:
        """One message accepted by Twilio.  ``body`` (or its ``body_hash``) feeds the repetition
        structures; ``brand`` the brand's daily volume; ``duration_s`` the send latency."""
        self.sent_total.labels(campaign, sender).inc()
        self.segments_total.labels(campaign, sender).inc(segments)
        if brand is not None:
            self.brand_segments_total.labels(brand).inc(segments)
        if duration_s is not None:
            self.send_duration.observe(duration_s)
        if self.recorder is not None and (body is not None or body_hash is not None or brand):
            digest = (
                body_hash
                if body_hash is not None
                else (body_digest(body) if body is not None else None)
            )
            self.recorder.record(sender, digest, brand, segments)

    def delivered(self, campaign: str, sender: str) -> None:
        self.outcome(campaign, sender, "delivered", None)

    def undelivered(self, campaign: str, sender: str, error_code: int | str | None) -> None:
        self.outcome(campaign, sender, "undelivered", error_code)

    def failed(self, campaign: str, sender: str, error_code: int | str | None) -> None:
        self.outcome(campaign, sender, "failed", error_code)

    def outcome(
        self, campaign: str, sender: str, status: str, error_code: int | str | None = None
    ) -> None:
        if status not in DELIVERY_STATUSES:
            raise ValueError(f"unknown delivery status {status!r}")
        self.outcomes_total.labels(campaign, sender, status, _code(error_code)).inc()

    def suppressed(self, campaign: str, reason: str) -> None:
        self.suppressed_total.labels(campaign, reason).inc()

    def deferred(self, campaign: str, reason: str) -> None:
        self.deferred_total.labels(campaign, reason).inc()

    # ------------------------------------------------------------------------------ throttle
    def throttle_wait_seconds(self, bucket_kind: str, wait_s: float, allowed: bool) -> None:
        """One reservation outcome for one bucket kind; a refusal also records its wait."""
        self.reservations_total.labels(bucket_kind, "allowed" if allowed else "refused").inc()
        if not allowed:
            self.throttle_wait.labels(bucket_kind).observe(max(0.0, wait_s))

    # ------------------------------------------------------------------------------- consent
    def opt_out(self, campaign: str, kind: OptOutKind = "keyword") -> None:
        if kind not in OPT_OUT_KINDS:
            raise ValueError(f"unknown opt-out kind {kind!r}")
        self.opt_outs_total.labels(campaign, kind).inc()

    def opt_in(self, campaign: str) -> None:
        self.opt_ins_total.labels(campaign).inc()

    def help_request(self, campaign: str) -> None:
        self.help_total.labels(campaign).inc()

    # -------------------------------------------------------------------------------- gauges
    def queue_depth(self, queue: str, n: int) -> None:
        self.queue_depth_g.labels(queue).set(n)

    def oldest_due_age_seconds(self, queue: str, seconds: float) -> None:
        self.oldest_due_g.labels(queue).set(max(0.0, seconds))

    def run_progress(self, run: int | str, state: str, n: int) -> None:
        self.run_messages_g.labels(str(run), state).set(n)

    def run_started(self, run: int | str, started_at: datetime | float) -> None:
        ts = started_at.timestamp() if isinstance(started_at, datetime) else float(started_at)
        self.run_start_g.labels(str(run)).set(ts)

    def worker_in_flight(self, n: int) -> None:
        self.in_flight_g.set(n)

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count one delivery as in flight for the duration of the block."""
        self.in_flight_g.inc()
        try:
            yield
        finally:
            self.in_flight_g.dec()

    def brand_daily_cap(self, brand: str, cap_segments: int) -> None:
        self.brand_cap_g.labels(brand).set(cap_segments)

    # ----------------------------------------------------------------------------- exposition
    def exposition_registry(self) -> CollectorRegistry:
        """What this process serves: its own registry, or (multiprocess mode) the aggregate of
        every process's files plus the Redis daily gauges."""
        path = multiprocess_dir()
        if path is None:
            return self.registry
        with self._agg_lock:
            if self._aggregate is None:
                self._aggregate = aggregate_registry(path)
                if self.daily is not None and self._serve_daily:
                    self._aggregate.register(self.daily)
            return self._aggregate

    def daily_batch(self) -> AbstractContextManager[None]:
        """The daily Redis records of every send this thread records inside go to Redis in one
        round trip at the end (a worker's batch of rows); see :class:`DailyRecorder`."""
        return self.recorder.batch() if self.recorder is not None else nullcontext()


def aggregate_registry(path: str | None = None) -> CollectorRegistry:
    """A registry that sums the files of every process in the multiprocess directory."""
    from prometheus_client import multiprocess

    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg, path=path or multiprocess_dir())
    return reg


def render_latest(metrics: Metrics | None = None) -> tuple[bytes, str]:
    """Body and content type for a ``/metrics`` response.

    ``metrics`` None serves only the multiprocess directory (an exporter that writes nothing).
    """
    if metrics is None:
        registry = aggregate_registry()
    else:
        registry = metrics.exposition_registry()
    return generate_latest(registry), CONTENT_TYPE_LATEST


def start_exporter(
    port: int = EXPORTER_PORT, metrics: Metrics | None = None, addr: str = "0.0.0.0"
) -> tuple[Any, threading.Thread]:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; returns (server, thread).

    Port 0 picks a free port: read it from ``server.server_port``.
    """
    from prometheus_client import start_http_server

    registry = metrics.exposition_registry() if metrics is not None else aggregate_registry()
    server, thread = start_http_server(port, addr=addr, registry=registry)
    log.info("metrics exporter listening on %s:%s", addr, server.server_port)
    return server, thread


def worker_exporter() -> None:
    """Dramatiq ``--fork-function``: serve the worker processes' multiprocess files forever.

    ``dramatiq workers.actors --processes 2 --fork-function dispatcher.metrics:worker_exporter``
    """
    if multiprocess_dir() is None:
        # Returning would end the fork; dramatiq then stops the whole worker pool.
        log.warning("%s is not set: the worker exporter has nothing to serve", MULTIPROC_ENV)
        threading.Event().wait()
        return
    _server, thread = start_exporter(EXPORTER_PORT)
    thread.join()
