"""Each delivery port's fake answers as its real adapter does (one contract over both), and every
adapter and fake implements every method of its port with the port's signature."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import keys
from dispatcher.clock import FakeClock
from dispatcher.delivery import ports
from dispatcher.delivery.fakes import FakeGateway, MemoryHalts, MemoryThrottle, RecordingMetrics
from dispatcher.errors import InputError
from dispatcher.gateway.client import TwilioGateway, body_hash
from dispatcher.halts import Halts, NoHaltKeys
from dispatcher.metrics import Metrics
from dispatcher.throttle.policy import DAY_S, Bucket
from dispatcher.throttle.redis import RedisThrottle
from dispatcher.throttle.reservation import Reservation
from dispatcher.webhooks.protocol import NoMetrics, WebhookMetrics
from tests.unit.gateway import conftest as gateway_env
from tests.unit.gateway.conftest import FROM, Env

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC).timestamp()

#: port -> the classes that must implement it
IMPLEMENTATIONS: dict[type, list[type]] = {
    ports.Throttle: [RedisThrottle, MemoryThrottle],
    ports.Gateway: [TwilioGateway, FakeGateway],
    ports.HaltKeys: [Halts, MemoryHalts, NoHaltKeys],
    ports.HaltSignal: [Halts, MemoryHalts],
    ports.Metrics: [Metrics, RecordingMetrics],
    WebhookMetrics: [Metrics, NoMetrics],  # the webhooks' own port, the same rule
}


def _members(port: type) -> list[str]:
    return [n for n in vars(port) if not n.startswith("_")]


def _shape(fn: Any) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """A signature after ``self``: its positional parameters in order (name, default) and its
    keyword-only ones (name -> default)."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    kw = inspect.Parameter.KEYWORD_ONLY
    return (
        [(p.name, p.default) for p in params if p.kind != kw],
        {p.name: p.default for p in params if p.kind == kw},
    )


@pytest.mark.parametrize(
    ("port", "impl"), [(p, i) for p, impls in IMPLEMENTATIONS.items() for i in impls]
)
def test_every_adapter_and_fake_implements_its_port(port: type, impl: type) -> None:
    for name in _members(port):
        assert hasattr(impl, name), f"{impl.__name__} has no {name} ({port.__name__})"
        want = getattr(port, name)
        if callable(want):
            (pos, kw), (want_pos, want_kw) = _shape(getattr(impl, name)), _shape(want)
            where = f"{impl.__name__}.{name}"
            # the adapter may take more parameters, with defaults; the port's are there, alike
            assert pos[: len(want_pos)] == want_pos, where
            assert {k: kw.get(k, "missing") for k in want_kw} == want_kw, where
            extra = [d for _, d in pos[len(want_pos) :]] + [
                d for k, d in kw.items() if k not in want_kw
            ]
            assert inspect.Parameter.empty not in extra, where


def test_the_fakes_subclass_their_ports() -> None:
    assert ports.Throttle in MemoryThrottle.__mro__
    assert ports.Gateway in FakeGateway.__mro__
    assert {ports.HaltKeys, ports.HaltSignal} <= set(MemoryHalts.__mro__)
    assert ports.Metrics in RecordingMetrics.__mro__


# ---------------------------------------------------------------------------------- throttle
def _buckets() -> list[Bucket]:
    sliding = [
        Bucket(keys.bucket_key(1, "campaign", "c"), 3, 10.0, grace_s=0.5, kind="campaign"),
        Bucket(keys.bucket_key(1, "sender_mps", "s"), 5, 2.0, cost=2, kind="sender_mps"),
        Bucket(keys.bucket_key(1, "recipient", "r"), 1, 30.0, kind="recipient"),
    ]
    daily = Bucket(
        keys.bucket_key(1, "tmobile_daily", "t"),
        4,
        DAY_S,
        cost=2,
        kind="tmobile_daily",
        calendar_tz="America/Los_Angeles",
    )
    return [*sliding, daily]


def _view(r: Reservation) -> tuple[Any, ...]:
    return (r.allowed, r.wait_s, r.slot_at, r.send_by, r.grace_s, r.now, len(r.holds))


_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("reserve"),
            st.sets(st.integers(0, 3), min_size=1),
            st.sampled_from([0.0, 5.0, 60.0, 2 * DAY_S]),
        ),
        st.tuples(st.just("advance"), st.sampled_from([0.001, 0.4, 3.0, 11.0, 3600.0, 40_000.0])),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(st.just("status"), st.integers(0, 50)),
        st.tuples(st.just("flush")),
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops)
def test_memory_throttle_answers_as_the_lua_script(ops: list[tuple[Any, ...]]) -> None:
    """Random reservations, releases, status checks, time and restarts: the fake and the real
    script (on fakeredis, one clock) give the same answers."""
    clock = FakeClock(T0 + 7 * 3600)  # 23:00 in Los Angeles: the day ends within the run
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    real, fake = RedisThrottle(redis, clock), MemoryThrottle(clock)
    buckets = _buckets()
    booked: list[tuple[Reservation, Reservation]] = []
    for op in ops:
        if op[0] == "reserve":
            bs = [buckets[i] for i in sorted(op[1])]
            a, b = real.reserve(bs, max_wait_s=op[2]), fake.reserve(bs, max_wait_s=op[2])
            assert _view(a) == _view(b)
            booked.append((a, b))
        elif op[0] == "advance":
            clock.advance(op[1])
        elif op[0] == "flush":
            redis.flushall()
            fake.flush()
        elif booked:
            a, b = booked[op[1] % len(booked)]
            if op[0] == "release":
                assert real.release(a) == fake.release(b)
            else:
                assert real.send_status(a) == fake.send_status(b)


def test_memory_throttle_reserve_many_is_reserve_in_order() -> None:
    clock = FakeClock(T0)
    th = MemoryThrottle(clock)
    b = _buckets()[0]
    got = th.reserve_many([[b]] * 4, max_wait_s=60)
    assert [r.wait_s for r in got] == [0, 0, 0, 10.5]
    with pytest.raises(InputError):
        th.reserve([])


# ------------------------------------------------------------------------------------- halts
@pytest.fixture(params=["redis", "memory"])
def halts(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "redis":
        redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        h = Halts(redis)
        yield h, redis.flushall
    else:
        m = MemoryHalts(FakeClock(T0))
        yield m, m.flush


IDS = {"contact_id": 1, "run_id": 2, "campaign_id": 3}


def test_halt_keys_contract(halts: tuple[Any, Any]) -> None:
    h, flush = halts
    assert h.max_age_s == 120.0
    e = h.epoch()
    assert e is not None and h.epoch() == e and h.clear(e, **IDS)
    h.signal(contacts=[101], runs=[102], campaigns=[103])  # someone else's
    assert h.clear(e, **IDS)
    for kind, key in (("contacts", "contact_id"), ("runs", "run_id"), ("campaigns", "campaign_id")):
        e = h.epoch()
        h.signal(**{kind: [IDS[key]]})
        assert not h.clear(e, **IDS)
        flush()
    e = h.epoch()
    flush()  # a restart without persistence: the epoch read before it no longer holds
    assert not h.clear(e, **IDS)
    assert h.clear(h.epoch(), **IDS)


def test_memory_halt_keys_expire_on_the_clock() -> None:
    clock = FakeClock(T0)
    h = MemoryHalts(clock, ttl_s=60)
    h.signal(runs=[2])
    e = h.epoch()
    assert not h.clear(e, **IDS) and h.signalled()["runs"] == {2}
    clock.advance(60)
    assert h.clear(e, **IDS) and h.signalled()["runs"] == set()


def test_no_halt_keys_sends_every_row_to_the_database() -> None:
    n = NoHaltKeys()
    assert n.epoch() is None and not n.clear((object(), 0), **IDS)


# ----------------------------------------------------------------------------------- gateway
env = gateway_env.env  # the official client against the in-process sandbox carrier


@pytest.fixture(params=["sandbox", "fake"])
def gateway(request: pytest.FixtureRequest, env: Env) -> Any:
    if request.param == "sandbox":
        return env.gateway, env.clock
    return FakeGateway(env.clock), env.clock


def test_gateway_contract(gateway: tuple[Any, FakeClock]) -> None:
    gw, clock = gateway
    since = clock.now() - timedelta(seconds=1)
    body = "Acme: your contract renews soon. Reply STOP to opt out."
    r = gw.send("+14155550100", body, from_=FROM, validity_period=600)
    assert r.sid.startswith("SM") and r.status == "queued" and r.num_segments == 1
    found = gw.find_sent("+14155550100", FROM, since, body_hash(body))
    assert found is not None and found.sid == r.sid
    assert gw.find_sent("+14155550100", FROM, since, body_hash("another body")) is None
    assert gw.find_sent("+14155550199", FROM, since, body_hash(body)) is None
    assert gw.fetch(r.sid).sid == r.sid
    with pytest.raises(InputError):
        gw.send("+14155550100", body)


def test_fake_gateway_fails_as_told() -> None:
    from dispatcher.errors import AmbiguousSendError, RetryableSendError

    clock = FakeClock(T0)
    gw = FakeGateway(clock)
    gw.fail_next(RetryableSendError("429", code=20429, status=429))
    gw.fail_next(AmbiguousSendError("read timeout"), reached=True)
    with pytest.raises(RetryableSendError):
        gw.send("+14155550100", "a", from_=FROM)
    assert gw.messages == []
    with pytest.raises(AmbiguousSendError):
        gw.send("+14155550100", "b", from_=FROM)
    assert [m.body for m in gw.messages] == ["b"]  # it reached the carrier
    assert gw.send("+14155550100", "c", from_=FROM).sid == gw.messages[-1].sid
