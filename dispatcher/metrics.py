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
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from dispatcher import templates
from dispatcher.clock import Clock, SystemClock
from dispatcher.metrics_daily import (  # noqa: F401 - re-exported: the metrics' public names
    DAILY_GAUGES,
    DAILY_TTL_S,
    TOP_BODIES_CAP,
    DailyRecorder,
    RedisDailyCollector,
    day_of,
)
from dispatcher.metrics_http import HTTP_BUCKETS
from dispatcher.metrics_runs import (
    GUARD_SIGNALS,
    ProcessInfo,
    RunGauges,
    StateGauges,
    guard_signals,
)

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Default port of the per-container exporter (workers' ``--fork-function``, the scheduler);
#: ``DISPATCHER_METRICS_PORT`` / ``--metrics-port`` choose another.
EXPORTER_PORT = 9108
OptOutKind = Literal["keyword", "natural_language", "carrier"]
OPT_OUT_KINDS: frozenset[str] = frozenset({"keyword", "natural_language", "carrier"})
DELIVERY_STATUSES: frozenset[str] = frozenset({"delivered", "undelivered", "failed"})
#: the Twilio error codes the reputation panels and alerts watch (compliance.md §10): their
#: series exist at 0 for every campaign, so the first one is seen by ``increase()``
WATCHED_ERROR_CODES = ("30003", "30005", "30006", "30007", "21610")
#: the throttle limits a reservation can name (``Reservation.bound``), ``none`` = not held back
BUCKET_KINDS = (
    "none", "campaign", "sender_mps", "tmobile_daily", "recipient", "campaign_recipient",
)  # fmt: skip
#: how often a process re-reads the campaigns whose counters it primes
PRIME_EVERY_S = 30.0


def suppress_reasons() -> tuple[str, ...]:
    """Every reason a gate suppresses for (``dispatcher_messages_suppressed_total{reason}``)."""
    from dispatcher.compliance.gates import SuppressReason

    return (*(r.value for r in SuppressReason), "template_variable_missing")


def defer_reasons() -> tuple[str, ...]:
    """Every reason a message is deferred for (``dispatcher_messages_deferred_total{reason}``)."""
    from dispatcher.compliance.gates import DeferReason

    return (*(r.value for r in DeferReason), "throttle", "retry", "resend_after_lookup")


@dataclass(frozen=True, slots=True)
class CampaignLabels:
    """The label values of one campaign: its SID, its sender (Messaging Service SID, else From
    number: what the pipeline labels sends with) and its brand's id."""

    campaign: str
    sender: str
    brand: str


def known_campaigns(db: Any) -> list[CampaignLabels]:
    """Every campaign of the database, as label values (what :meth:`Metrics.prime` takes)."""
    from sqlalchemy import select

    from dispatcher.models import Campaign

    t = Campaign.__table__  # type: ignore[attr-defined]
    with db.session() as s:
        rows = s.connection().execute(
            select(t.c.sid, t.c.messaging_service_sid, t.c.sender, t.c.brand_id)
        )
        return [CampaignLabels(sid, ms or snd or "", str(b)) for sid, ms, snd, b in rows]


class _Primer(Collector):
    """Primes the counters of the campaigns ``source`` lists, at most every ``every_s``, when its
    registry is collected (a scrape); yields no metric.  Registered before the counters' own
    collector, a new campaign's zeros are in the scrape that first sees it."""

    def __init__(
        self, metrics: Metrics, source: Callable[[], Iterable[CampaignLabels]], every_s: float
    ) -> None:
        self.metrics, self.source, self.every_s = metrics, source, every_s
        self._last: float | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        now = self.metrics.clock.time()
        with self._lock:
            if self._last is not None and now - self._last < self.every_s:
                return []
            try:
                self.metrics.prime(self.source())
            except Exception:  # noqa: BLE001 - a scrape never fails for want of the database
                log.warning("could not read the campaigns to prime their counters", exc_info=True)
                return []  # tried again at the next scrape
            self._last = now
        return []


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
    whether this process also *serves* them (the runtime says False; the scheduler then serves
    them while it leads, :meth:`serve_daily`; every process writes).  Label values are strings.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        redis: Any = None,
        clock: Clock | None = None,
        daily_collector: bool = True,
        top_bodies_cap: int = TOP_BODIES_CAP,
        queue_name: str = "deliver",
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        #: the delivery queue (``DISPATCHER_QUEUE_NAME``): the ``queue`` label of the queue gauges
        self.queue_name = queue_name
        self.redis = redis
        self.clock: Clock = clock or SystemClock()
        self.recorder = (
            DailyRecorder(redis, self.clock, top_bodies_cap) if redis is not None else None
        )
        self.daily = (
            RedisDailyCollector(redis, self.clock, when=lambda: daily_collector)
            if redis is not None
            else None
        )
        self.runs = RunGauges(self.clock)
        self.registry.register(self.runs)
        self.state = StateGauges(self.clock)
        self.registry.register(self.state)
        self.process = ProcessInfo()
        self.registry.register(self.process)
        if self.daily is not None:
            self.registry.register(self.daily)
        self._aggregate: CollectorRegistry | None = None
        self._agg_lock = threading.Lock()
        self._define_families()

        for kind in BUCKET_KINDS:  # every series at 0 from the start (issue 20.4)
            for result in ("allowed", "refused"):
                self.reservations_total.labels(kind, result)
            self.throttle_wait.labels(kind)
        self._primed: set[CampaignLabels] = set()
        self._primer: _Primer | None = None

    def _define_families(self) -> None:
        """Every counter, histogram and gauge family, in ``self.registry``."""
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
        self.guard_events_total = Counter(
            "dispatcher_guard_events",
            "Reputation guard decisions (pause) and operators' answers (resume, acknowledge).",
            ["campaign", "kind"],
            registry=reg,
        )
        self.suppressed_total = Counter(
            "dispatcher_messages_suppressed",
            "Messages suppressed (never sent), by reason code: a compliance gate's, or opted_out "
            "when a revocation (STOP, 21610) suppressed the contact's pending messages.",
            ["campaign", "reason"],
            registry=reg,
        )
        self.deferred_total = Counter(
            "dispatcher_messages_deferred",
            "Times a message was deferred to later, by reason: a gate's (quiet hours, frequency "
            "cap...), throttle (refused, or booked for a later slot), retry (the carrier refused "
            "for now), resend_after_lookup.",
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
        # -- HTTP (webhooks + API; dispatcher/metrics_http.py)
        self.http_duration = Histogram(
            "dispatcher_http_request_duration_seconds",
            "HTTP requests of the webhook server and API by route template, method and status "
            "(_count = requests).",
            ["handler", "method", "status"],
            registry=reg,
            buckets=HTTP_BUCKETS,
        )
        # -- reputation guard
        self.guard_pauses_total = Counter(
            "dispatcher_guard_pauses",
            "Runs the reputation guard paused, by campaign and the first signal its reason names "
            "(repetition, filtering, opt_out, failure; other).",
            ["campaign", "signal"],
            registry=reg,
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
        self.in_flight_g = Gauge(
            "dispatcher_worker_in_flight_messages",
            "Deliveries being processed right now (sum over live worker processes).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.brand_info_g = Gauge(
            "dispatcher_brand_info",
            "1 per brand: its id (the brand label everywhere) and its name.",
            ["brand", "name"],
            registry=reg,
            multiprocess_mode="mostrecent",
        )
        self.brand_cap_g = Gauge(
            "dispatcher_brand_daily_cap_segments",
            "T-Mobile daily cap of the brand, in segments.",
            ["brand"],
            registry=reg,
            multiprocess_mode="mostrecent",
        )

    # -------------------------------------------------------------------------- label priming
    def prime(self, campaigns: Iterable[CampaignLabels]) -> None:
        """Create every counter series of these campaigns at 0 for the label values known in
        advance (gate reasons, opt-out kinds, watched error codes), so a healthy system reads 0
        rather than "No data" and the first event of a series is seen by ``increase()``."""
        for c in campaigns:
            if c in self._primed:
                continue
            camp, sender = c.campaign, c.sender
            self.sent_total.labels(camp, sender)
            self.segments_total.labels(camp, sender)
            if c.brand:
                self.brand_segments_total.labels(c.brand)
            self.outcomes_total.labels(camp, sender, "delivered", "none")
            for status in ("undelivered", "failed"):
                for code in WATCHED_ERROR_CODES:
                    self.outcomes_total.labels(camp, sender, status, code)
            for reason in suppress_reasons():
                self.suppressed_total.labels(camp, reason)
            for reason in defer_reasons():
                self.deferred_total.labels(camp, reason)
            for kind in sorted(OPT_OUT_KINDS):
                self.opt_outs_total.labels(camp, kind)
            self.opt_ins_total.labels(camp)
            self.help_total.labels(camp)
            for signal in GUARD_SIGNALS:
                self.guard_pauses_total.labels(camp, signal)
            self._primed.add(c)

    def prime_from(
        self, source: Callable[[], Iterable[CampaignLabels]], every_s: float = PRIME_EVERY_S
    ) -> None:
        """Prime the campaigns ``source`` returns (``known_campaigns``) now and, at most every
        ``every_s``, when this process's metrics are scraped (new campaigns)."""
        self._primer = _Primer(self, source, every_s)
        self.registry.register(self._primer)
        self._primer.collect()

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
                else (templates.body_hash(body) if body is not None else None)
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

    def suppressed(self, campaign: str, reason: str, n: int = 1) -> None:
        """``n`` messages of ``campaign`` suppressed (a revocation suppresses every pending
        message of the contact at once)."""
        self.suppressed_total.labels(campaign, reason).inc(n)

    def guard_event(self, campaign: str, kind: str) -> None:
        """A reputation guard decision (``pause``) or an operator's answer (``resume``,
        ``acknowledge``: the guard judges only sends after it)."""
        self.guard_events_total.labels(campaign, kind).inc()

    def deferred(self, campaign: str, reason: str) -> None:
        self.deferred_total.labels(campaign, reason).inc()

    # ------------------------------------------------------------------------------ throttle
    def throttle_wait_seconds(self, bucket_kind: str, wait_s: float, allowed: bool) -> None:
        """One reservation outcome for one bucket kind; a refusal also records its wait."""
        self.reservations_total.labels(bucket_kind, "allowed" if allowed else "refused").inc()
        if not allowed:
            self.throttle_wait.labels(bucket_kind).observe(max(0.0, wait_s))

    # ---------------------------------------------------------------------------------- HTTP
    def http_request(self, handler: str, method: str, status: int, seconds: float) -> None:
        self.http_duration.labels(handler, method, str(status)).observe(max(0.0, seconds))

    def http_request_labels(self, handler: str, method: str, status: int) -> None:
        self.http_duration.labels(handler, method, str(status))

    # --------------------------------------------------------------------------------- guard
    def guard_paused(self, campaign: str, reason: str) -> None:
        """The guard paused a run of ``campaign``; ``reason`` is its verdict's reason.  One count
        per pause (the sum is the number of pauses), labelled with the first signal the reason
        names (30007 also counts as a delivery failure: the first is the cause to look at)."""
        signals = guard_signals(reason)
        self.guard_pauses_total.labels(campaign, signals[0] if signals else "other").inc()

    def campaigns_observed(self, campaigns: Iterable[Mapping[str, Any]]) -> None:
        """Every campaign's state as observed now (``campaign``, ``brand``, ``sender``,
        ``status``, ``thresholds``: the guard's, overrides applied): served as they are."""
        got = list(campaigns)
        self.state.set_campaigns(got)
        # the observer's counters too, at once (a campaign created since the last prime)
        self.prime(
            CampaignLabels(str(c["campaign"]), str(c["sender"]), str(c["brand"])) for c in got
        )

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

    def runs_observed(self, progress: Iterable[Mapping[str, Any]]) -> None:
        """The run gauges are exactly these runs' figures from now on (``run_report.progress``
        documents, as ``dispatcher run show --json`` prints them): a run left out has no series
        any more, a state with no rows reads 0."""
        self.runs.set(progress)

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

    def brand_info(self, brand: str, name: str) -> None:
        self.brand_info_g.labels(brand, name).set(1)

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
                self._aggregate = aggregate_registry(path, first=self._primer)
                if self.daily is not None:
                    self._aggregate.register(self.daily)
                self._aggregate.register(self.runs)
                self._aggregate.register(self.state)
                self._aggregate.register(ProcessInfo(multiprocess_dir=path))
            return self._aggregate

    def serve_daily(self, when: Callable[[], bool]) -> None:
        """Serve the Redis daily gauges while ``when()`` (the scheduler: while it leads).  They
        describe the whole deployment, so one process serves them (issue 20.3); the runtime
        builds every process's metrics without them."""
        if self.daily is not None:
            self.daily.when = when

    def daily_batch(self) -> AbstractContextManager[None]:
        """The daily Redis records of every send this thread records inside go to Redis in one
        round trip at the end (a worker's batch of rows); see :class:`DailyRecorder`."""
        return self.recorder.batch() if self.recorder is not None else nullcontext()


def aggregate_registry(
    path: str | None = None, first: Collector | None = None
) -> CollectorRegistry:
    """A registry that sums the files of every process in the multiprocess directory
    (``first``: a collector run before the files are read, the counters' primer)."""
    from prometheus_client import multiprocess

    reg = CollectorRegistry()
    if first is not None:
        reg.register(first)
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


def start_worker_exporter(settings: Any = None) -> tuple[Any, threading.Thread]:
    """The worker exporter: the sum of the worker processes' multiprocess files on
    ``DISPATCHER_METRICS_PORT`` (default 9108), its own metrics priming every campaign's counters
    (so the sum has every series at 0 before a worker process writes it)."""
    from dispatcher.runtime import Runtime
    from dispatcher.settings import get_settings

    s = settings or get_settings()
    rt = Runtime(s)
    return start_exporter(s.metrics_port, rt.metrics)


def worker_exporter() -> None:
    """Dramatiq ``--fork-function``: serve the worker processes' multiprocess files forever.

    ``dramatiq workers.actors --processes 2 --fork-function dispatcher.metrics:worker_exporter``
    (``dispatcher worker`` sets this up).
    """
    if multiprocess_dir() is None:
        # Returning would end the fork; dramatiq then stops the whole worker pool.
        log.warning("%s is not set: the worker exporter has nothing to serve", MULTIPROC_ENV)
        threading.Event().wait()
        return
    _server, thread = start_worker_exporter()
    thread.join()
