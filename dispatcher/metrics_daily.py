"""The daily structures in Redis: repetition of identical content per sender and volume per
brand, today (UTC).  :class:`DailyRecorder` writes them for each send (any process);
:class:`RedisDailyCollector` turns them into gauges at scrape time.  Only hashes of bodies are
stored, never a body."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import NoScriptError

from dispatcher import keys, lua
from dispatcher.clock import Clock, SystemClock
from dispatcher.throttle.policy import TMOBILE_RESET_TZ

log = logging.getLogger(__name__)

#: Redis keys of the daily structures live this long (today + yesterday for late scrapes).
DAILY_TTL_S = 2 * 86400
#: Distinct bodies whose exact count is kept per sender per day (the HyperLogLog counts the rest).
TOP_BODIES_CAP = 1000

#: name -> help of the gauges :class:`RedisDailyCollector` yields at scrape time.
DAILY_GAUGES: dict[str, str] = {
    "dispatcher_sender_daily_sends": "Messages sent today (UTC) by the sender.",
    "dispatcher_sender_daily_distinct_bodies": (
        "Distinct message bodies sent today (UTC) by the sender (HyperLogLog estimate)."
    ),
    "dispatcher_sender_daily_repeat_ratio": (
        "Share of today's sends by the sender whose body was identical to an earlier one (0..1)."
    ),
    "dispatcher_sender_daily_max_identical_sends": (
        "Largest number of sends today of one identical body by the sender."
    ),
    "dispatcher_brand_daily_segments": (
        "Message segments sent today for the brand, the day as T-Mobile's daily cap counts it "
        "(it resets at midnight Pacific)."
    ),
    "dispatcher_sender_24h_sends": "Messages sent by the sender over the last 24 hours.",
    "dispatcher_sender_24h_distinct_bodies": (
        "Distinct message bodies sent by the sender over the last 24 hours (HyperLogLog)."
    ),
    "dispatcher_sender_24h_repeat_ratio": (
        "Share of the sender's sends over the last 24 hours whose body repeated an earlier one."
    ),
    "dispatcher_sender_24h_max_identical_sends": (
        "Largest number of sends of one identical body by the sender over the last 24 hours."
    ),
}
#: the rolling window: the last 24 hourly buckets (UTC), the current hour included
ROLLING_HOURS = 24


#: the zone T-Mobile's daily cap resets in (midnight Pacific)
_CAP_ZONE = ZoneInfo(TMOBILE_RESET_TZ)


def cap_day_of(at: datetime) -> str:
    """The day T-Mobile's daily cap counts ``at`` in, ``YYYY-MM-DD``; the brand's daily
    segments are kept per that day so the gauge and the cap's own bucket agree at every hour."""
    if at.utcoffset() is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(_CAP_ZONE).strftime("%Y-%m-%d")


def day_of(at: datetime) -> str:
    """The UTC day a daily structure belongs to, ``YYYY-MM-DD`` (naive = already UTC)."""
    if at.utcoffset() is not None:
        at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%d")


def hour_of(at: datetime) -> str:
    """The UTC hour a rolling-window bucket belongs to, ``YYYY-MM-DDTHH``."""
    if at.utcoffset() is not None:
        at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H")


def last_hours(now: datetime, n: int = ROLLING_HOURS) -> list[str]:
    return [hour_of(now - timedelta(hours=k)) for k in range(n)]


class RedisDailyCollector(Collector):
    """Scrape-time gauges from Redis: repetition per sender and volume per brand, today (UTC).

    They describe the whole deployment (every process writes the same keys), so exactly one
    process may serve them or every ``sum`` counts them twice: ``when`` says whether this one
    does now (the leading scheduler; see ``Metrics.serve_daily``)."""

    def __init__(
        self, redis: Any, clock: Clock | None = None, when: Callable[[], bool] | None = None
    ) -> None:
        self._redis = redis
        self._clock = clock or SystemClock()
        self.when = when

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(n, h, labels=self._labels(n)) for n, h in DAILY_GAUGES.items()]

    @staticmethod
    def _labels(name: str) -> list[str]:
        return ["brand"] if name.startswith("dispatcher_brand_") else ["sender"]

    def collect(self) -> Iterable[Metric]:
        fams = {n: GaugeMetricFamily(n, h, labels=self._labels(n)) for n, h in DAILY_GAUGES.items()}
        if self.when is not None and not self.when():
            return []
        try:
            now = self._clock.now()
            self._fill(fams, day_of(now), cap_day_of(now))
        except Exception:  # noqa: BLE001 - a scrape must never fail because Redis is away
            log.warning("daily metrics unavailable (Redis error)", exc_info=True)
        return list(fams.values())

    def _fill(self, fams: dict[str, GaugeMetricFamily], day: str, cap_day: str) -> None:
        r = self._redis
        senders = sorted(_s(x) for x in r.smembers(keys.repetition_senders_key(day)))
        brands = sorted(_s(x) for x in r.smembers(keys.brand_daily_index_key(cap_day)))
        pipe = r.pipeline(transaction=False)
        for sender in senders:
            pipe.pfcount(keys.repetition_key(sender, day))
            pipe.hmget(keys.repetition_counts_key(sender, day), ["~total", "~max"])
        for brand in brands:
            pipe.get(keys.brand_daily_segments_key(brand, cap_day))
        out = pipe.execute()
        for i, sender in enumerate(senders):
            distinct = int(out[2 * i] or 0)
            total_raw, max_raw = out[2 * i + 1]
            total = int(total_raw or 0)
            distinct = min(distinct, total)
            repeat = (total - distinct) / total if total else 0.0
            fams["dispatcher_sender_daily_sends"].add_metric([sender], total)
            fams["dispatcher_sender_daily_distinct_bodies"].add_metric([sender], distinct)
            fams["dispatcher_sender_daily_repeat_ratio"].add_metric([sender], repeat)
            fams["dispatcher_sender_daily_max_identical_sends"].add_metric(
                [sender], int(max_raw or 0)
            )
        base = 2 * len(senders)
        for j, brand in enumerate(brands):
            fams["dispatcher_brand_daily_segments"].add_metric([brand], int(out[base + j] or 0))
        self._fill_rolling(fams, last_hours(self._clock.now()))

    def _fill_rolling(self, fams: dict[str, GaugeMetricFamily], hours: list[str]) -> None:
        """The last 24 hourly buckets per sender: distinct = PFCOUNT over their union, sends =
        the sum of their totals, max identical = the largest per-body sum (bodies past an
        hour's cap are not in its hash: a lower bound then)."""
        r = self._redis
        senders = sorted(_s(x) for x in r.sunion([keys.repetition_senders_key(h) for h in hours]))
        pipe = r.pipeline(transaction=False)
        for sender in senders:
            pipe.pfcount(*[keys.repetition_key(sender, h) for h in hours])
            for h in hours:
                pipe.hgetall(keys.repetition_counts_key(sender, h))
        out = pipe.execute()
        step = 1 + len(hours)
        for i, sender in enumerate(senders):
            distinct = int(out[i * step] or 0)
            total, per_body = 0, Counter[str]()
            for counts in out[i * step + 1 : (i + 1) * step]:
                for field, n in counts.items():
                    f = _s(field)
                    if f == "~total":
                        total += int(n)
                    elif not f.startswith("~"):
                        per_body[f] += int(n)
            distinct = min(distinct, total)
            fams["dispatcher_sender_24h_sends"].add_metric([sender], total)
            fams["dispatcher_sender_24h_distinct_bodies"].add_metric([sender], distinct)
            fams["dispatcher_sender_24h_repeat_ratio"].add_metric(
                [sender], (total - distinct) / total if total else 0.0
            )
            fams["dispatcher_sender_24h_max_identical_sends"].add_metric(
                [sender], max(per_body.values(), default=0)
            )


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


#: One send as buffered by :class:`DailyRecorder`: (day, hour, sender, body digest, brand,
#: segments).
#: (UTC day, UTC hour, sender, body digest, brand, segments, T-Mobile cap day)
_Item = tuple[str, str, str, str | None, str | None, int, str]


class DailyRecorder:
    """Writes each send into the daily structures; inside :meth:`batch` a thread's records are
    written together, in one Redis round trip, when the batch ends."""

    def __init__(self, redis: Any, clock: Clock, cap: int = TOP_BODIES_CAP) -> None:
        self._redis = redis
        self.clock = clock
        self.cap = cap
        self._record_body: Any = lua.register(redis, "record_body")
        self._local = threading.local()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """The Redis daily structures (repetition, brand volume) of every send recorded by this
        thread inside go to Redis in one round trip at the end (a worker's batch of rows)."""
        buf: list[_Item] = []
        self._local.items = buf
        try:
            yield
        finally:
            self._local.items = None
            self._write(buf)

    def record(self, sender: str, digest: str | None, brand: str | None, segments: int) -> None:
        now = self.clock.now()
        item = (day_of(now), hour_of(now), sender, digest, brand, segments, cap_day_of(now))
        buf = getattr(self._local, "items", None)
        if buf is not None:
            buf.append(item)
        else:
            self._write([item])

    def _bodies(self, pipe: Any, bodies: dict[tuple[str, str, str], int]) -> None:
        for (day, sender, digest), n in bodies.items():
            self._record_body(
                keys=[keys.repetition_key(sender, day), keys.repetition_counts_key(sender, day)],
                args=[digest, self.cap, DAILY_TTL_S, n],
                client=pipe,
            )

    def _write(self, items: list[_Item]) -> None:
        if not items:
            return
        try:
            bodies, senders, brands = _aggregate(items)
            pipe = self._redis.pipeline(transaction=False)
            self._bodies(pipe, bodies)
            for day, sender in senders:
                idx = keys.repetition_senders_key(day)
                pipe.sadd(idx, sender)
                pipe.expire(idx, DAILY_TTL_S)
            for (day, brand), segments in brands.items():
                bkey = keys.brand_daily_segments_key(brand, day)
                pipe.incrby(bkey, segments)
                pipe.expire(bkey, DAILY_TTL_S)
                bidx = keys.brand_daily_index_key(day)
                pipe.sadd(bidx, brand)
                pipe.expire(bidx, DAILY_TTL_S)
            out = pipe.execute(raise_on_error=False)
            # the body scripts come first; a Redis Cluster pipeline does not load scripts first
            # (redis-py's plain Pipeline does): a NOSCRIPT call recorded nothing, so load the
            # script and record those bodies again
            missed = {
                k: n
                for (k, n), r in zip(bodies.items(), out, strict=False)
                if isinstance(r, NoScriptError)
            }
            if missed:
                self._redis.script_load(lua.source("record_body"))
                pipe = self._redis.pipeline(transaction=False)
                self._bodies(pipe, missed)
                pipe.execute()
        except Exception:  # noqa: BLE001 - metrics must never stop a send
            log.warning("could not record daily send metrics (Redis error)", exc_info=True)


def _aggregate(
    items: list[_Item],
) -> tuple[dict[tuple[str, str, str], int], set[tuple[str, str]], dict[tuple[str, str], int]]:
    """A batch folded into one write per structure: sends per (period, sender, body), the
    (period, sender) pairs of the senders index (period: the day, and the hour of the rolling
    window) and segments per (T-Mobile cap day, brand).

    The Redis end state is the one item-by-item writes give: PFADD, SADD and EXPIRE are
    idempotent and the counters are sums, so only the cap of the counts hash depends on order.
    Whether a body gets a field is decided at its first send of the batch (a field is never
    removed, so a tracked body stays tracked and an untracked one stays out), and the groups keep
    first-seen order (dict insertion order), so bodies competing for the last free fields are
    decided in the same order as one by one."""
    bodies: dict[tuple[str, str, str], int] = {}
    senders: set[tuple[str, str]] = set()
    brands: dict[tuple[str, str], int] = {}
    for day, hour, sender, digest, brand, segments, cap_day in items:
        if digest is not None:
            for period in (day, hour):  # today's structures and the rolling window's hour
                body = (period, sender, digest)
                bodies[body] = bodies.get(body, 0) + 1
                senders.add((period, sender))
        if brand:
            key = (cap_day, brand)
            brands[key] = brands.get(key, 0) + segments
    return bodies, senders, brands
