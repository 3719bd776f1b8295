"""dispatcher.metrics: names, labels, repetition on fakeredis, multiprocess aggregation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.request
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from dispatcher import keys
from dispatcher.clock import FakeClock
from dispatcher.metrics import (
    DAILY_GAUGES,
    DAILY_TTL_S,
    MULTIPROC_ENV,
    Metrics,
    aggregate_registry,
    day_of,
    render_latest,
    start_exporter,
)
from dispatcher.templates import body_hash
from tests.metric_series import series_names

ROOT = Path(__file__).resolve().parents[2]
SENDER = "+15005550006"  # the business's own sending number (allowed as a label)
MG = "MG" + "a" * 32
CAMPAIGN = "QE" + "1" * 32


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))


@pytest.fixture
def metrics(redis: fakeredis.FakeRedis, clock: FakeClock) -> Metrics:
    return Metrics(CollectorRegistry(), redis=redis, clock=clock)


def scrape(m: Metrics) -> dict[str, list]:
    body, ctype = render_latest(m)
    assert ctype.startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.exposition_registry().get_sample_value(name, labels)


def exercise(m: Metrics) -> None:
    m.sent(CAMPAIGN, SENDER, 2, brand="BN1", body="Your contract expires soon", duration_s=0.2)
    m.delivered(CAMPAIGN, SENDER)
    m.undelivered(CAMPAIGN, SENDER, 30007)
    m.failed(CAMPAIGN, MG, "21610")
    m.suppressed(CAMPAIGN, "opted_out")
    m.deferred(CAMPAIGN, "quiet_hours")
    m.throttle_wait_seconds("sender", 0.0, True)
    m.throttle_wait_seconds("campaign", 12.5, False)
    m.opt_out(CAMPAIGN, "natural_language")
    m.opt_in(CAMPAIGN)
    m.help_request(CAMPAIGN)
    m.queue_depth("deliver", 42)
    m.oldest_due_age_seconds("deliver", 3.5)
    m.runs_observed(
        [
            {
                "id": 7,
                "campaign": CAMPAIGN,
                "state": "running",
                "total": 100,
                "by_state": {"queued": 90, "sent": 10},
                "started_at": datetime.fromtimestamp(1_700_000_000.0, UTC),
            }
        ]
    )
    m.worker_in_flight(3)
    m.brand_daily_cap("BN1", 2000)


# ------------------------------------------------------------------------------------ naming
def test_names_follow_prometheus_conventions(metrics: Metrics) -> None:
    exercise(metrics)
    fams = list(text_string_to_metric_families(render_latest(metrics)[0].decode()))
    assert fams
    forbidden = {"to", "phone", "recipient", "contact", "number", "to_phone", "body"}
    for fam in fams:
        assert fam.name.startswith(("dispatcher_", "process_")), fam.name  # process_*: standard
        for s in fam.samples:
            if fam.type == "counter" and not s.name.endswith("_created"):
                assert s.name.endswith("_total"), s.name
            assert not forbidden & set(s.labels), (s.name, s.labels)
    # base units: durations in seconds
    assert {"dispatcher_send_duration_seconds", "dispatcher_throttle_wait_seconds"} <= {
        f.name for f in fams
    }


def test_series_names_cover_every_exposed_series(metrics: Metrics) -> None:
    exercise(metrics)
    exposed = {
        s.name
        for f in text_string_to_metric_families(render_latest(metrics)[0].decode())
        for s in f.samples
    }
    assert exposed <= series_names()
    assert set(DAILY_GAUGES) <= exposed


def test_nothing_registered_globally() -> None:
    from prometheus_client import REGISTRY

    Metrics()
    assert not any(n.startswith("dispatcher_") for n in REGISTRY._names_to_collectors)


# ---------------------------------------------------------------------------------- counters
def test_outcome_counters_and_labels(metrics: Metrics) -> None:
    exercise(metrics)
    lab = {"campaign": CAMPAIGN, "sender": SENDER}
    assert value(metrics, "dispatcher_messages_sent_total", **lab) == 1
    assert value(metrics, "dispatcher_message_segments_sent_total", **lab) == 2
    assert value(metrics, "dispatcher_brand_segments_sent_total", brand="BN1") == 2
    out = "dispatcher_message_outcomes_total"
    assert value(metrics, out, **lab, status="delivered", error_code="none") == 1
    assert value(metrics, out, **lab, status="undelivered", error_code="30007") == 1
    assert (
        value(metrics, out, campaign=CAMPAIGN, sender=MG, status="failed", error_code="21610") == 1
    )
    sup = "dispatcher_messages_suppressed_total"
    assert value(metrics, sup, campaign=CAMPAIGN, reason="opted_out") == 1
    dfr = "dispatcher_messages_deferred_total"
    assert value(metrics, dfr, campaign=CAMPAIGN, reason="quiet_hours") == 1
    assert value(metrics, "dispatcher_send_duration_seconds_count") == 1
    assert value(metrics, "dispatcher_send_duration_seconds_sum") == pytest.approx(0.2)


def test_throttle_reservations_and_waits(metrics: Metrics) -> None:
    exercise(metrics)
    res = "dispatcher_throttle_reservations_total"
    assert value(metrics, res, bucket_kind="sender", result="allowed") == 1
    assert value(metrics, res, bucket_kind="campaign", result="refused") == 1
    wait = "dispatcher_throttle_wait_seconds"
    assert value(metrics, wait + "_sum", bucket_kind="campaign") == 12.5
    assert value(metrics, wait + "_bucket", bucket_kind="campaign", le="10.0") == 0
    assert value(metrics, wait + "_bucket", bucket_kind="campaign", le="30.0") == 1
    # an allowed reservation records no wait
    assert value(metrics, wait + "_count", bucket_kind="sender") is None


def test_consent_counters(metrics: Metrics) -> None:
    exercise(metrics)
    metrics.opt_out(CAMPAIGN)
    metrics.opt_out(CAMPAIGN, "carrier")
    o = "dispatcher_opt_outs_total"
    assert value(metrics, o, campaign=CAMPAIGN, kind="keyword") == 1
    assert value(metrics, o, campaign=CAMPAIGN, kind="natural_language") == 1
    assert value(metrics, o, campaign=CAMPAIGN, kind="carrier") == 1
    assert value(metrics, "dispatcher_opt_ins_total", campaign=CAMPAIGN) == 1
    assert value(metrics, "dispatcher_help_requests_total", campaign=CAMPAIGN) == 1


def test_unbounded_label_values_are_refused(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="opt-out kind"):
        metrics.opt_out(CAMPAIGN, "sms")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delivery status"):
        metrics.outcome(CAMPAIGN, SENDER, "queued")


def test_gauges(metrics: Metrics) -> None:
    exercise(metrics)
    assert value(metrics, "dispatcher_queue_depth", queue="deliver") == 42
    assert value(metrics, "dispatcher_queue_oldest_due_age_seconds", queue="deliver") == 3.5
    run7 = {"run": "7", "campaign": CAMPAIGN}
    assert value(metrics, "dispatcher_run_messages", state="queued", **run7) == 90
    assert value(metrics, "dispatcher_run_messages", state="failed", **run7) == 0
    assert value(metrics, "dispatcher_run_remaining_messages", **run7) == 90
    assert value(metrics, "dispatcher_run_start_time_seconds", **run7) == 1_700_000_000.0
    assert value(metrics, "dispatcher_brand_daily_cap_segments", brand="BN1") == 2000
    metrics.runs_observed([])  # the run ended: its series are gone
    assert value(metrics, "dispatcher_run_messages", state="queued", **run7) is None
    metrics.worker_in_flight(0)
    with metrics.in_flight():
        with metrics.in_flight():
            assert value(metrics, "dispatcher_worker_in_flight_messages") == 2
    assert value(metrics, "dispatcher_worker_in_flight_messages") == 0


# -------------------------------------------------------------------------------- repetition
def test_repetition_per_sender_per_day(metrics: Metrics, redis: fakeredis.FakeRedis) -> None:
    for i in range(10):
        body = "Your contract expires on 3/31" if i < 7 else f"Hello #{i}"
        metrics.sent(CAMPAIGN, SENDER, 1, body=body)
    metrics.sent(CAMPAIGN, MG, 1, body="other sender")
    sends = "dispatcher_sender_daily_sends"
    assert value(metrics, sends, sender=SENDER) == 10
    assert value(metrics, "dispatcher_sender_daily_distinct_bodies", sender=SENDER) == 4
    assert value(metrics, "dispatcher_sender_daily_repeat_ratio", sender=SENDER) == 0.6
    assert value(metrics, "dispatcher_sender_daily_max_identical_sends", sender=SENDER) == 7
    assert value(metrics, sends, sender=MG) == 1
    assert value(metrics, "dispatcher_sender_daily_repeat_ratio", sender=MG) == 0
    # only hashes are stored, never the body; keys expire
    day = "2026-03-02"
    counts = redis.hgetall(keys.repetition_counts_key(SENDER, day))
    assert counts[body_hash("Your contract expires on 3/31").encode()] == b"7"
    assert not any(b"contract" in k for k in redis.keys("*"))
    for k in (
        keys.repetition_key(SENDER, day),
        keys.repetition_counts_key(SENDER, day),
        keys.repetition_senders_key(day),
    ):
        assert 0 < redis.ttl(k) <= DAILY_TTL_S


def test_repetition_resets_the_next_utc_day(metrics: Metrics, clock: FakeClock) -> None:
    metrics.sent(CAMPAIGN, SENDER, body="same")
    metrics.sent(CAMPAIGN, SENDER, body="same")
    assert value(metrics, "dispatcher_sender_daily_sends", sender=SENDER) == 2
    clock.advance(timedelta(hours=12))  # 2026-03-03 00:00 UTC
    assert value(metrics, "dispatcher_sender_daily_sends", sender=SENDER) is None
    metrics.sent(CAMPAIGN, SENDER, body="same")
    assert value(metrics, "dispatcher_sender_daily_repeat_ratio", sender=SENDER) == 0


def test_repetition_structure_is_bounded(redis: fakeredis.FakeRedis, clock: FakeClock) -> None:
    m = Metrics(CollectorRegistry(), redis=redis, clock=clock, top_bodies_cap=5)
    for i in range(50):
        m.sent(CAMPAIGN, SENDER, body=f"body {i}")
    for _ in range(3):
        m.sent(CAMPAIGN, SENDER, body="body 2")  # tracked (among the first five)
        m.sent(CAMPAIGN, SENDER, body="body 40")  # untracked: counted by the HLL only
    assert redis.hlen(keys.repetition_counts_key(SENDER, "2026-03-02")) == 5 + 2
    assert value(m, "dispatcher_sender_daily_sends", sender=SENDER) == 56
    assert value(m, "dispatcher_sender_daily_distinct_bodies", sender=SENDER) == 50
    assert value(m, "dispatcher_sender_daily_max_identical_sends", sender=SENDER) == 4
    assert value(m, "dispatcher_sender_daily_repeat_ratio", sender=SENDER) == pytest.approx(6 / 56)


def test_body_hash_accepted_instead_of_body(metrics: Metrics) -> None:
    metrics.sent(CAMPAIGN, SENDER, body_hash="abc")
    metrics.sent(CAMPAIGN, SENDER, body_hash="abc")
    assert value(metrics, "dispatcher_sender_daily_max_identical_sends", sender=SENDER) == 2


def test_a_body_and_its_hash_count_as_the_same_body(metrics: Metrics) -> None:
    """One body hash in the package: the worker passes the outbox's hash, other callers the
    body; both land on the same repetition counter (they were a 16- and a 64-digit hash)."""
    metrics.sent(CAMPAIGN, SENDER, body="Your contract expires on 3/31")
    metrics.sent(CAMPAIGN, SENDER, body_hash=body_hash("Your contract expires on 3/31"))
    assert value(metrics, "dispatcher_sender_daily_distinct_bodies", sender=SENDER) == 1
    assert value(metrics, "dispatcher_sender_daily_max_identical_sends", sender=SENDER) == 2


def test_brand_daily_segments(metrics: Metrics, clock: FakeClock) -> None:
    metrics.sent(CAMPAIGN, SENDER, 3, brand="BN1")
    metrics.sent(CAMPAIGN, MG, 2, brand="BN1", body="x")
    metrics.sent(CAMPAIGN, MG, 1, brand="BN2")
    assert value(metrics, "dispatcher_brand_daily_segments", brand="BN1") == 5
    assert value(metrics, "dispatcher_brand_daily_segments", brand="BN2") == 1
    clock.advance(timedelta(days=1))
    assert value(metrics, "dispatcher_brand_daily_segments", brand="BN1") is None


def test_brand_daily_segments_follow_the_t_mobile_day(metrics: Metrics, clock: FakeClock) -> None:
    """The cap resets at midnight Pacific, not UTC: a send at 22:00 PST still counts at 23:59
    PST (07:59 UTC, another UTC day), and nothing counts from midnight PST on."""
    clock.advance(timedelta(hours=18))  # 2026-03-03 06:00 UTC = 2026-03-02 22:00 PST
    metrics.sent(CAMPAIGN, SENDER, 2, brand="BN1")
    clock.advance(timedelta(hours=1, minutes=59))  # 07:59 UTC: the UTC day changed at 00:00
    assert value(metrics, "dispatcher_brand_daily_segments", brand="BN1") == 2
    clock.advance(timedelta(minutes=1))  # 08:00 UTC = midnight PST: the cap's new day
    assert value(metrics, "dispatcher_brand_daily_segments", brand="BN1") is None


def test_daily_batch_writes_once_at_the_end_and_counts_the_same(
    metrics: Metrics, redis: fakeredis.FakeRedis
) -> None:
    with metrics.daily_batch():
        for i in range(5):
            metrics.sent(CAMPAIGN, SENDER, 2, brand="BN1", body="same" if i < 4 else "other")
        assert redis.keys("*") == []  # nothing yet: one round trip at the end
        sent = value(metrics, "dispatcher_messages_sent_total", campaign=CAMPAIGN, sender=SENDER)
        assert sent == 5
    assert value(metrics, "dispatcher_sender_daily_sends", sender=SENDER) == 5
    assert value(metrics, "dispatcher_sender_daily_max_identical_sends", sender=SENDER) == 4
    assert value(metrics, "dispatcher_brand_daily_segments", brand="BN1") == 10
    # outside a batch each send is written at once again
    metrics.sent(CAMPAIGN, SENDER, body="same")
    assert value(metrics, "dispatcher_sender_daily_sends", sender=SENDER) == 6


def _daily_state(r: fakeredis.FakeRedis) -> dict[bytes, object]:
    """Every key's content, read type by type (no DUMP), and whether it has a TTL."""
    hlls = {k for k in r.keys(keys.repetition_key("*", "*")) if b":senders:" not in k}
    out: dict[bytes, object] = {}
    for k in r.keys("*"):
        kind = r.type(k)
        if k in hlls:
            content: object = r.pfcount(k)
        elif kind == b"hash":
            content = r.hgetall(k)
        elif kind == b"set":
            content = r.smembers(k)
        else:
            content = r.get(k)
        out[k] = (content, r.ttl(k) > 0)
    return out


# (sender, body, brand, segments); "+1d" advances the clock a day (a batch spanning midnight)
_DAILY_SENDS: list[tuple[str, str | None, str | None, int] | str] = [
    (SENDER, "new1", "BN1", 2),
    (SENDER, "new2", "BN1", 1),
    (SENDER, "new1", "BN2", 3),
    (SENDER, "old1", None, 1),
    (SENDER, "new2", "BN1", 1),
    (SENDER, "new3", "", 1),
    (MG, "new2", "BN2", 4),
    (MG, "m1", "BN2", 1),
    (MG, "m2", None, 1),
    (MG, "m3", "BN1", 1),
    (MG, "m2", "BN1", 2),
    (MG, "m4", None, 1),
    (MG, "m4", None, 1),
    (SENDER, None, "BN1", 5),
    (SENDER, "new1", None, 1),
    (MG, "m3", "BN2", 1),
    "+1d",
    (SENDER, "new2", "BN1", 1),
    (SENDER, "new1", "BN1", 1),
    (SENDER, "new2", "BN3", 2),
    (MG, None, "BN3", 1),
]


@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_daily_batch_leaves_the_same_redis_state_as_one_by_one(seed: int | None) -> None:
    """The batch is written aggregated per body, sender and brand; the end state must be the
    one item-by-item writes give, the cap edge (bodies competing for the last field) included."""
    import random

    from dispatcher.metrics_daily import DailyRecorder

    sends = list(_DAILY_SENDS)
    if seed is not None:
        random.Random(seed).shuffle(sends)
    start = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
    states = []
    for batched in (True, False):
        r = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        clock = FakeClock(start)
        rec = DailyRecorder(r, clock, cap=3)
        rec.record(SENDER, "old1", "BN1", 1)  # one field left on SENDER's hash (cap 3)
        rec.record(SENDER, "old2", None, 1)
        with rec.batch() if batched else nullcontext():
            for send in sends:
                if send == "+1d":
                    clock.advance(timedelta(days=1))
                else:
                    rec.record(*send)
            if batched:
                assert r.dbsize() == 8  # nothing of the batch yet (5 daily keys, 3 hourly)
        states.append(_daily_state(r))
    assert states[0] == states[1]
    assert all(has_ttl for _, has_ttl in states[0].values())


def test_without_redis_the_daily_gauges_are_absent() -> None:
    m = Metrics(CollectorRegistry())
    m.sent(CAMPAIGN, SENDER, body="x", brand="BN1")
    fams = scrape(m)
    assert "dispatcher_messages_sent" in fams
    assert not set(DAILY_GAUGES) & set(fams)


def test_redis_outage_never_breaks_a_send_or_a_scrape(clock: FakeClock) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    m = Metrics(CollectorRegistry(), redis=fakeredis.FakeRedis(server=server), clock=clock)
    m.sent(CAMPAIGN, SENDER, body="x", brand="BN1")
    fams = scrape(m)
    assert fams["dispatcher_messages_sent"][0].value == 1
    assert fams["dispatcher_sender_daily_sends"] == []


def test_day_of_uses_utc() -> None:
    from zoneinfo import ZoneInfo

    late_ny = datetime(2026, 3, 2, 22, 0, tzinfo=ZoneInfo("America/New_York"))
    assert day_of(late_ny) == "2026-03-03"
    assert day_of(datetime(2026, 3, 2, 23, 59)) == "2026-03-02"


# ----------------------------------------------------------------------------- multiprocess
WRITER = textwrap.dedent(
    """
    import sys
    from dispatcher.metrics import Metrics
    m = Metrics()
    m.sent("CM1", "MG1", 2)
    m.throttle_wait_seconds("sender", 1.0, False)
    m.queue_depth("deliver", int(sys.argv[1]))
    m.worker_in_flight(1)
    """
)


def test_multiprocess_mode_aggregates_worker_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    mpdir = tmp_path / "prom"
    mpdir.mkdir()
    env = {**os.environ, MULTIPROC_ENV: str(mpdir), "PYTHONPATH": str(ROOT)}
    for depth in ("5", "9"):  # two worker processes, one after the other
        subprocess.run(
            [sys.executable, "-c", WRITER, depth], env=env, check=True, cwd=ROOT, timeout=60
        )
    assert len(list(mpdir.glob("*.db"))) >= 2

    # the webhook server's view: every process's files + the Redis daily gauges
    monkeypatch.setenv(MULTIPROC_ENV, str(mpdir))
    m = Metrics(CollectorRegistry(), redis=redis, clock=clock)
    m.sent("CM1", "MG1", body="hi")  # in-process (this test process is not a writer) + Redis
    agg = m.exposition_registry()
    assert agg is not m.registry
    lab = {"campaign": "CM1", "sender": "MG1"}
    assert agg.get_sample_value("dispatcher_messages_sent_total", lab) == 2
    assert agg.get_sample_value("dispatcher_message_segments_sent_total", lab) == 4
    assert agg.get_sample_value("dispatcher_queue_depth", {"queue": "deliver"}) == 9  # mostrecent
    assert agg.get_sample_value("dispatcher_worker_in_flight_messages") == 2  # livesum
    assert (
        agg.get_sample_value("dispatcher_throttle_wait_seconds_count", {"bucket_kind": "sender"})
        == 2
    )
    assert agg.get_sample_value("dispatcher_sender_daily_sends", {"sender": "MG1"}) == 1
    body, _ = render_latest(m)
    assert b"dispatcher_messages_sent_total" in body

    # a pure exporter (the workers' --fork-function) serves the directory over HTTP
    server, _thread = start_exporter(0, addr="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        assert 'dispatcher_messages_sent_total{campaign="CM1",sender="MG1"} 2.0' in text
    finally:
        server.shutdown()
        server.server_close()
    assert (
        aggregate_registry(str(mpdir)).get_sample_value("dispatcher_messages_sent_total", lab) == 2
    )


# ------------------------------------------------------------------ which limit binds (issue 20.1)
def _policy_buckets(tight: str) -> list:
    """The buckets of one message under the real policy (campaign window, sender MPS, T-Mobile
    daily cap, a recipient cap, the campaign's frequency cap), ``tight`` squeezed to 1."""
    from dataclasses import replace
    from types import SimpleNamespace

    from dispatcher.throttle.policy import buckets_for

    campaign = SimpleNamespace(
        sid=CAMPAIGN,
        window_limit=1000,
        window_seconds=300,
        messaging_service_sid=None,
        sender=SENDER,
        rate_limits=None,
        frequency_cap_count=100,
        frequency_cap_hours=24,
    )
    got = buckets_for(
        campaign,
        brand_id=7,
        brand_tier="TOP",
        sender=SENDER,
        recipient="+12125550100",
        segments=1,
        recipient_cap=(100, 3600.0),
        now=0.0,
    )
    assert {b.kind for b in got} == {
        "campaign",
        "sender_mps",
        "tmobile_daily",
        "recipient",
        "campaign_recipient",
    }
    return [replace(b, limit=1) if b.kind == tight else b for b in got]


@pytest.mark.parametrize("impl", ["redis", "memory"])
@pytest.mark.parametrize(
    "tight", ["campaign", "sender_mps", "tmobile_daily", "recipient", "campaign_recipient"]
)
def test_a_reservation_names_the_limit_that_binds(impl: str, tight: str) -> None:
    from dispatcher.delivery.fakes import MemoryThrottle
    from dispatcher.throttle import RedisThrottle

    clock = FakeClock(datetime(2026, 1, 5, 15, 0, tzinfo=UTC))
    th = RedisThrottle(fakeredis.FakeRedis(), clock) if impl == "redis" else MemoryThrottle(clock)
    buckets = _policy_buckets(tight)
    first = th.reserve(buckets, max_wait_s=3 * 86400)
    assert first.allowed and first.wait_s == 0 and first.bound is None
    second = th.reserve(buckets, max_wait_s=3 * 86400)
    assert second.allowed and second.wait_s > 0 and second.bound == tight
    refused = th.reserve(buckets, max_wait_s=0)
    assert not refused.allowed and refused.bound == tight
    # a booking carried in a queue message keeps it
    from dispatcher.throttle.reservation import Reservation

    assert Reservation.from_dict(second.to_dict()).bound == tight


def test_the_pipeline_counts_reservations_by_the_bucket_that_binds(tmp_path: Path) -> None:
    from dataclasses import replace

    from dispatcher.delivery.fakes import RecordingMetrics
    from tests.unit.pipeline.conftest import make_harness

    with make_harness(tmp_path) as h:
        h.set_campaign(window_limit=2, window_seconds=300)
        rec = RecordingMetrics()
        p = replace(h.pipeline(), metrics=rec)
        h.contacts(3)
        ids = [r.id for r in h.rows(h.launch())]
        p.deliver_many(ids)
        kinds = [(k, allowed) for k, _w, allowed in rec.named("throttle_wait_seconds")]
        assert kinds.count(("none", True)) == 2
        assert ("campaign", False) in kinds  # the third waits for the campaign's window
        assert "reservation" not in {k for k, _ in kinds}


# ------------------------------------------------- daily gauges from exactly one process (20.3)
def test_the_daily_gauges_are_served_by_the_leading_scheduler_alone(tmp_path: Path) -> None:
    """Webhooks and workers build their metrics through the runtime: they write the daily
    structures but serve none of them; the scheduler serves them while it leads."""
    from dispatcher.runtime import Runtime
    from dispatcher.settings import Settings
    from workers.scheduler import Scheduler

    server = fakeredis.FakeServer()
    clock = FakeClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))

    def runtime() -> Runtime:
        return Runtime(
            Settings(database_url=f"sqlite:///{tmp_path}/d.db"),
            clock=clock,
            redis=fakeredis.FakeRedis(server=server),
        )

    webhooks, worker, sched_rt = runtime(), runtime(), runtime()
    worker.metrics.sent(CAMPAIGN, SENDER, 1, brand="3", body="hello")
    webhooks.metrics.sent(CAMPAIGN, SENDER, 1, brand="3", body="hello")
    name = "dispatcher_sender_daily_sends"
    for rt in (webhooks, worker):
        assert "dispatcher_sender_daily_sends" not in rt.render_metrics()[0].decode()
    s = Scheduler(sched_rt, lambda ids: None, scheduler_id="t")
    reg = sched_rt.metrics.exposition_registry()
    assert reg.get_sample_value(name, {"sender": SENDER}) is None  # not leading (yet)
    s._leading = True
    assert reg.get_sample_value(name, {"sender": SENDER}) == 2
    assert reg.get_sample_value("dispatcher_brand_daily_segments", {"brand": "3"}) == 2


# -------------------------------------------------------- counters exist at 0 (issue 20.4)
def test_primed_counters_read_zero_before_their_first_event(metrics: Metrics) -> None:
    import inspect

    from dispatcher.metrics import BUCKET_KINDS, CampaignLabels
    from dispatcher.throttle import policy

    # every kind the counter is primed with is one the policy builds buckets of
    src = inspect.getsource(policy)
    assert all(f'"{k}"' in src for k in set(BUCKET_KINDS) - {"none"})
    assert value(metrics, "dispatcher_messages_suppressed_total", campaign=CAMPAIGN,
                 reason="lint_error") is None  # fmt: skip
    metrics.prime([CampaignLabels(CAMPAIGN, SENDER, "3")])
    zero = {
        "dispatcher_messages_suppressed_total": {"campaign": CAMPAIGN, "reason": "lint_error"},
        "dispatcher_messages_deferred_total": {"campaign": CAMPAIGN, "reason": "throttle"},
        "dispatcher_opt_outs_total": {"campaign": CAMPAIGN, "kind": "carrier"},
        "dispatcher_help_requests_total": {"campaign": CAMPAIGN},
        "dispatcher_messages_sent_total": {"campaign": CAMPAIGN, "sender": SENDER},
        "dispatcher_brand_segments_sent_total": {"brand": "3"},
        "dispatcher_message_outcomes_total": {
            "campaign": CAMPAIGN, "sender": SENDER, "status": "undelivered", "error_code": "30007"
        },
        "dispatcher_throttle_reservations_total": {"bucket_kind": "tmobile_daily",
                                                   "result": "refused"},
    }  # fmt: skip
    for name, labels in zero.items():
        assert value(metrics, name, **labels) == 0, name
    metrics.suppressed(CAMPAIGN, "lint_error")
    assert value(metrics, "dispatcher_messages_suppressed_total", campaign=CAMPAIGN,
                 reason="lint_error") == 1  # fmt: skip


def test_a_process_primes_every_campaign_of_the_database(tmp_path: Path) -> None:
    """The runtime's metrics prime the database's campaigns at once and re-read them when
    scraped (at most every PRIME_EVERY_S): a campaign imported later reads 0 too."""
    from dispatcher.metrics import PRIME_EVERY_S
    from tests.unit.pipeline.conftest import make_harness

    with make_harness(tmp_path) as h:
        m = h.rt.metrics  # built before the harness seeded its campaign
        h.clock.advance(PRIME_EVERY_S)
        scrape(m)
        labels = {"campaign": h.campaign_sid, "reason": "no_consent"}
        assert value(m, "dispatcher_messages_suppressed_total", **labels) == 0
        assert value(m, "dispatcher_brand_segments_sent_total", brand=str(h.brand_id)) == 0
        with h.db.session() as s:
            from dispatcher.models import Campaign

            c = s.get(Campaign, h.campaign_id)
            other = Campaign(**{**c.model_dump(), "id": None, "sid": "QE" + "9" * 32})
            s.add(other)
        h.clock.advance(PRIME_EVERY_S)
        scrape(m)
        assert value(m, "dispatcher_opt_outs_total", campaign="QE" + "9" * 32, kind="keyword") == 0


# ------------------------------------------------- brand id, queue name, exporter port (20.5)
def test_brand_is_the_id_queue_is_the_settings_and_names_ride_brand_info(tmp_path: Path) -> None:
    from dataclasses import replace

    from dispatcher.delivery.fakes import RecordingMetrics
    from dispatcher.release_loop import ReleaseLoop
    from tests.unit.pipeline.conftest import BRAND, make_harness

    with make_harness(tmp_path) as h:
        rec = RecordingMetrics()
        p = replace(h.pipeline(), metrics=rec)
        h.contacts(1)
        p.deliver_many([r.id for r in h.rows(h.launch())])
        assert [kw["brand"] for n, _a, kw in rec.calls if n == "sent"] == [str(h.brand_id)]
        m = Metrics(CollectorRegistry(), clock=h.clock, queue_name="bulk")
        ReleaseLoop(h.db, h.clock, lambda ids: None, metrics=m).observe()
        assert value(m, "dispatcher_queue_depth", queue="bulk") is not None
        assert value(m, "dispatcher_queue_depth", queue="deliver") is None
        assert value(m, "dispatcher_brand_daily_cap_segments", brand=str(h.brand_id)) == 200_000
        info = {"brand": str(h.brand_id), "name": BRAND}
        assert m.registry.get_sample_value("dispatcher_brand_info", info) == 1
    from dispatcher.runtime import Runtime
    from dispatcher.settings import Settings

    rt = Runtime(Settings(database_url="sqlite://", queue_name="bulk"))
    assert rt.metrics.queue_name == "bulk"


def test_the_worker_exporter_listens_on_the_configured_port(tmp_path: Path) -> None:
    from dispatcher.metrics import start_worker_exporter
    from dispatcher.settings import Settings
    from tests.procs import free_port

    port = free_port()
    server, _thread = start_worker_exporter(
        Settings(database_url=f"sqlite:///{tmp_path}/x.db", metrics_port=port)
    )
    try:
        assert server.server_port == port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b"dispatcher_throttle_reservations_total" in r.read()
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------- distributed mode without Docker has metrics (20.8)
def test_distributed_worker_and_scheduler_serve_their_metrics(
    tmp_path: Path, clean_redis_url: str
) -> None:
    """README's distributed mode: `dispatcher worker --metrics-port` (a dramatiq pool with its
    multiprocess directory and forked exporter) and `dispatcher scheduler --metrics-port`."""
    from tests.procs import Proc, free_port, wait_for

    wport, sport = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != MULTIPROC_ENV},
        "DISPATCHER_DATABASE_URL": f"sqlite:///{tmp_path}/d.db",
        "DISPATCHER_REDIS_URL": clean_redis_url,
    }
    subprocess.run(
        [str(Path(sys.executable).parent / "dispatcher"), "db", "upgrade"],
        env=env,
        check=True,
        cwd=ROOT,
    )
    dispatcher = [str(Path(sys.executable).parent / "dispatcher")]
    worker = Proc(
        "worker",
        [*dispatcher, "worker", "--processes", "1", "--threads", "1", "--metrics-port",
         str(wport), "--metrics-dir", str(tmp_path / "mp")],
        env, tmp_path,
    )  # fmt: skip
    sched = Proc(
        "scheduler", [*dispatcher, "scheduler", "--metrics-port", str(sport)], env, tmp_path
    )

    def scraped(port: int, name: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return name in r.read().decode()
        except OSError:
            return False

    try:
        wait_for(lambda: scraped(wport, "dispatcher_throttle_reservations_total"), 60, "worker")
        wait_for(lambda: scraped(sport, "dispatcher_queue_depth{"), 60, "scheduler")
        assert list((tmp_path / "mp").glob("*.db"))  # the worker processes write there
    except AssertionError:
        raise AssertionError(worker.tail() + sched.tail()) from None
    finally:
        worker.stop()
        sched.stop()


# ----------------------------------------------------- HTTP, process, build, guard (20.6)
def test_http_requests_are_counted_by_route_template_status_and_timed(sqlite_db) -> None:
    from tests.unit.webhooks.conftest import build_world, make_client, post

    build_world(sqlite_db)
    clock = FakeClock()
    m = Metrics(CollectorRegistry(), clock=clock)
    client = make_client(sqlite_db, clock, metrics=m)
    count = "dispatcher_http_request_duration_seconds_count"
    status_route = {"handler": "/twilio/status", "method": "POST"}
    assert value(m, count, status="200", **status_route) == 0  # primed: a rate reads 0
    assert client.get("/healthz").status_code == 200
    assert post(client, "/twilio/status", {"MessageSid": "SM1"}, token="wrong").status_code == 403
    assert client.get("/no/such/path").status_code == 404
    assert value(m, count, handler="/healthz", method="GET", status="200") == 1
    assert value(m, count, status="403", **status_route) == 1  # a signature failure
    assert value(m, count, handler="unmatched", method="GET", status="404") == 1
    assert value(m, "dispatcher_http_request_duration_seconds_sum", handler="/healthz",
                 method="GET", status="200") > 0  # fmt: skip


def test_every_process_serves_process_metrics_and_build_info(
    metrics: Metrics, tmp_path: Path
) -> None:
    from dispatcher.metrics_runs import ProcessInfo

    fams = scrape(metrics)
    assert "process_cpu_seconds" in fams and "process_resident_memory_bytes" in fams
    (info,) = fams["dispatcher_build_info"]
    assert info.value == 1 and info.labels["version"] and info.labels["python"]
    # multiprocess: each live process writing to the directory, by pid
    (tmp_path / f"counter_{os.getpid()}.db").write_bytes(b"")
    (tmp_path / "counter_999999999.db").write_bytes(b"")  # gone
    reg = CollectorRegistry()
    reg.register(ProcessInfo(multiprocess_dir=str(tmp_path)))
    assert reg.get_sample_value("process_cpu_seconds_total", {"pid": str(os.getpid())}) > 0
    assert reg.get_sample_value("process_cpu_seconds_total", {"pid": "999999999"}) is None


def test_guard_pauses_are_counted_by_the_signals_the_guard_names(metrics: Metrics) -> None:
    from dispatcher.guard import RunFigures, Thresholds, evaluate
    from dispatcher.metrics_runs import GUARD_SIGNALS, guard_signals

    t = Thresholds(identical_bodies_per_day=10)
    cases = {
        "filtering": RunFigures(sends=100, filtered=5),
        "opt_out": RunFigures(sends=100, opt_outs=20),
        "failure": RunFigures(sends=100, failures=30),
        "repetition": RunFigures(sends=100, identical_bodies=50),
    }
    assert set(cases) == set(GUARD_SIGNALS)
    for signal, fig in cases.items():
        v = evaluate(fig, t)
        assert v.pause and v.reason and guard_signals(v.reason) == [signal], (signal, v.reason)
    both = evaluate(RunFigures(sends=100, filtered=5, failures=30), t)
    assert both.reason is not None
    metrics.guard_paused(CAMPAIGN, both.reason)
    name = "dispatcher_guard_pauses_total"
    assert guard_signals(both.reason) == ["filtering", "failure"]
    # one count per pause (sum = pauses), under the first signal named
    assert value(metrics, name, campaign=CAMPAIGN, signal="filtering") == 1
    assert not value(metrics, name, campaign=CAMPAIGN, signal="failure")


def test_a_guard_pause_through_the_webhooks_is_counted(sqlite_db) -> None:
    from dispatcher.models import Run
    from dispatcher.webhooks.context import Context, WebhookOptions
    from tests.unit.webhooks.conftest import FakeRuntime, build_world

    w = build_world(sqlite_db)
    clock = FakeClock()
    m = Metrics(CollectorRegistry(), clock=clock)
    from dispatcher.settings import Settings

    rt = FakeRuntime(Settings(database_url=sqlite_db.url), sqlite_db, clock, m, None)
    ctx = Context(rt, WebhookOptions())
    from dispatcher import outbox
    from dispatcher.models import Contact, OutboxMessage

    with sqlite_db.session() as s:
        for i in range(60):
            c = Contact(phone=f"+1415666{i:04d}")
            s.add(c)
            s.flush()
            s.add(OutboxMessage(run_id=w.run.id, campaign_id=w.campaign.id, contact_id=c.id,
                                to_phone=c.phone, body="Hi", state=outbox.UNDELIVERED,
                                error_code=30007 if i < 10 else None))  # fmt: skip
    ctx.guard_now([w.run.id])
    with sqlite_db.session() as s:
        assert s.get(Run, w.run.id).state == "paused"
    assert value(m, "dispatcher_guard_pauses_total", campaign=w.campaign.sid,
                 signal="filtering") == 1  # fmt: skip
    ctx.close()


def test_campaign_status_and_guard_thresholds_come_from_the_database(tmp_path: Path) -> None:
    from dispatcher.guard import DEFAULT_THRESHOLDS
    from dispatcher.release_loop import ReleaseLoop
    from tests.unit.pipeline.conftest import SENDER as H_SENDER
    from tests.unit.pipeline.conftest import make_harness

    with make_harness(tmp_path) as h:
        m = Metrics(CollectorRegistry(), clock=h.clock)
        loop = ReleaseLoop(h.db, h.clock, lambda ids: None, metrics=m)
        loop.observe()
        sid = h.campaign_sid
        info = {"campaign": sid, "brand": str(h.brand_id), "sender": H_SENDER}
        assert value(m, "dispatcher_campaign_info", status="VERIFIED", **info) == 1
        # the observer primes the campaigns it sees (no wait for the next scrape-time prime)
        pauses = "dispatcher_guard_pauses_total"
        assert value(m, pauses, campaign=sid, signal="filtering") == 0
        ratio = "dispatcher_guard_threshold_ratio"
        assert (
            value(m, ratio, campaign=sid, signal="filtering") == DEFAULT_THRESHOLDS.filtering_rate
        )
        with h.db.session() as s:
            from dispatcher.models import Campaign

            c = s.get(Campaign, h.campaign_id)
            window = c.window_limit / c.window_seconds
        limit = "dispatcher_campaign_rate_limit_per_second"
        assert value(m, limit, campaign=sid, limit="campaign_window") == window
        assert value(m, limit, campaign=sid, limit="sender_mps") > 0
        h.set_campaign(guard={"filtering_rate": 5}, campaign_status="SUSPENDED")
        loop.observe()
        assert value(m, ratio, campaign=sid, signal="filtering") == 0.05
        assert value(m, "dispatcher_campaign_info", status="SUSPENDED", **info) == 1
        assert value(m, "dispatcher_campaign_info", status="VERIFIED", **info) is None


# ------------------------------------------------------ rolling 24 h repetition (issue 20.7)
def test_repetition_over_a_rolling_24_hours_crosses_midnight(redis: fakeredis.FakeRedis) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 23, 30, tzinfo=UTC))
    m = Metrics(CollectorRegistry(), redis=redis, clock=clock)
    m.sent(CAMPAIGN, SENDER, body="Your contract expires soon")
    m.sent(CAMPAIGN, SENDER, body="Something else")
    clock.advance(timedelta(hours=1))  # 00:30 the next day: "today" starts again
    with m.daily_batch():
        m.sent(CAMPAIGN, SENDER, body="Your contract expires soon")
        m.sent(CAMPAIGN, SENDER, body="Your contract expires soon")
    assert value(m, "dispatcher_sender_daily_sends", sender=SENDER) == 2
    assert value(m, "dispatcher_sender_24h_sends", sender=SENDER) == 4
    assert value(m, "dispatcher_sender_24h_distinct_bodies", sender=SENDER) == 2
    assert value(m, "dispatcher_sender_24h_max_identical_sends", sender=SENDER) == 3
    assert value(m, "dispatcher_sender_24h_repeat_ratio", sender=SENDER) == 0.5
    clock.advance(timedelta(hours=23))  # 23:30: the first two sends left the window
    assert value(m, "dispatcher_sender_24h_sends", sender=SENDER) == 2
    assert value(m, "dispatcher_sender_24h_max_identical_sends", sender=SENDER) == 2
    clock.advance(timedelta(hours=1))
    assert value(m, "dispatcher_sender_24h_sends", sender=SENDER) is None


def test_promtool_check_metrics_is_clean(metrics: Metrics) -> None:
    """Every family (primed counters, HTTP, run/campaign gauges, daily gauges) passes
    `promtool check metrics` (its naming and help lint)."""
    import shutil

    from dispatcher.metrics import CampaignLabels

    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (bash .ci/prometheus.sh installs it)")
    exercise(metrics)
    metrics.prime([CampaignLabels(CAMPAIGN, SENDER, "3")])
    metrics.http_request("/twilio/status", "POST", 200, 0.01)
    metrics.guard_paused(CAMPAIGN, "reputation guard: 30007 filtering 5.0% >= 2.0%")
    body, _ = render_latest(metrics)
    out = subprocess.run([tool, "check", "metrics"], input=body, capture_output=True)
    assert out.returncode == 0, (out.stdout + out.stderr).decode()
