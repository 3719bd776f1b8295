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
    body_digest,
    day_of,
    render_latest,
    start_exporter,
)
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
    m.run_progress(7, "queued", 90)
    m.run_started(7, 1_700_000_000.0)
    m.worker_in_flight(3)
    m.brand_daily_cap("BN1", 2000)


# ------------------------------------------------------------------------------------ naming
def test_names_follow_prometheus_conventions(metrics: Metrics) -> None:
    exercise(metrics)
    fams = list(text_string_to_metric_families(render_latest(metrics)[0].decode()))
    assert fams
    forbidden = {"to", "phone", "recipient", "contact", "number", "to_phone", "body"}
    for fam in fams:
        assert fam.name.startswith("dispatcher_"), fam.name
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
    assert value(metrics, "dispatcher_run_messages", run="7", state="queued") == 90
    assert value(metrics, "dispatcher_run_start_time_seconds", run="7") == 1_700_000_000.0
    assert value(metrics, "dispatcher_brand_daily_cap_segments", brand="BN1") == 2000
    metrics.run_started("8", datetime(2026, 1, 1, tzinfo=UTC))
    assert (
        value(metrics, "dispatcher_run_start_time_seconds", run="8")
        == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    )
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
    assert counts[body_digest("Your contract expires on 3/31").encode()] == b"7"
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


def test_brand_daily_segments(metrics: Metrics, clock: FakeClock) -> None:
    metrics.sent(CAMPAIGN, SENDER, 3, brand="BN1")
    metrics.sent(CAMPAIGN, MG, 2, brand="BN1", body="x")
    metrics.sent(CAMPAIGN, MG, 1, brand="BN2")
    assert value(metrics, "dispatcher_brand_daily_segments", brand="BN1") == 5
    assert value(metrics, "dispatcher_brand_daily_segments", brand="BN2") == 1
    clock.advance(timedelta(days=1))
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
                assert r.dbsize() == 5  # nothing of the batch yet
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
