"""Re-seeding a brand's throttle from the outbox after Redis lost it (issue 21.3): no slot is
granted before the seed, the seed is written once with the epoch, and it holds what the
outbox says was handed to the carrier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from dispatcher import keys
from dispatcher.clock import FakeClock
from dispatcher.throttle import Bucket, RedisThrottle
from dispatcher.throttle.redis import SEED_RETRY_S
from dispatcher.throttle.seed import OutboxSeeder, SeedBucket
from tests.unit.pipeline.conftest import Harness, make_harness

T0 = 1_767_625_200.0
B = Bucket(keys.bucket_key(1, "campaign", "S"), 3, 1.0, grace_s=0.0)


class Seeder:
    """Says 3 sends went out 0.5 s before now in ``B``; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, brand: str, now: float, unsent: frozenset[int]) -> list[SeedBucket]:
        self.calls += 1
        at = round((now - 0.5) * 1000)
        return [SeedBucket(B.key, False, 1000, [(at, 1, f"s{i}") for i in range(3)])]


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_a_lost_throttle_is_seeded_before_its_first_slot(r: fakeredis.FakeRedis) -> None:
    clock, seeder = FakeClock(T0), Seeder()
    th = RedisThrottle(r, clock, seeder=seeder)
    res = th.reserve([B], max_wait_s=5)
    assert seeder.calls == 1
    assert res.allowed and res.slot_at == pytest.approx(T0 + 0.5)  # the seeded sends leave
    r.flushall()  # a loss: seeded again, from the outbox's record
    assert not th.reserve([B]).allowed and seeder.calls == 2
    # without a seeder the throttle starts empty after a loss: what this prevents
    assert RedisThrottle(fakeredis.FakeRedis(), clock).reserve([B]).allowed


def test_while_another_worker_seeds_nothing_is_granted(r: fakeredis.FakeRedis) -> None:
    clock, seeder = FakeClock(T0), Seeder()
    th = RedisThrottle(r, clock, seeder=seeder)
    r.set(keys.throttle_seed_lock_key(1), "someone else")
    res = th.reserve([B])
    assert not res.allowed and res.wait_s == SEED_RETRY_S and res.holds == ()
    assert [x.allowed for x in th.reserve_many([[B], [B]])] == [False, False]
    assert r.zcard(B.key) == 0 and seeder.calls == 0
    r.delete(keys.throttle_seed_lock_key(1))
    got = th.reserve_many([[B], [B]], max_wait_s=5)
    assert seeder.calls == 1 and [x.slot_at for x in got] == [T0 + 0.5, T0 + 0.5]


def test_the_seed_is_written_once_with_the_epoch(r: fakeredis.FakeRedis) -> None:
    clock, seeder = FakeClock(T0), Seeder()
    th = RedisThrottle(r, clock, seeder=seeder)
    assert th.seed("1")
    epoch = r.get(keys.throttle_epoch_key(1))
    assert th.seed("1")  # a second seeder for the same loss writes nothing
    assert r.get(keys.throttle_epoch_key(1)) == epoch and r.zcard(B.key) == 3
    assert r.get(keys.throttle_seed_lock_key(1)) is None  # the lock went with the seed


def test_the_scheduler_seeds_brands_without_an_epoch_before_releasing(
    r: fakeredis.FakeRedis,
) -> None:
    clock, seeder = FakeClock(T0), Seeder()
    th = RedisThrottle(r, clock, seeder=seeder)
    th.ensure_seeded({"1"})  # no epoch yet (fresh or flushed Redis): seeded now
    assert seeder.calls == 1 and r.exists(keys.throttle_epoch_key(1))
    th.ensure_seeded({"1"})  # seeded: nothing to do
    assert seeder.calls == 1
    assert th.reserve([B], max_wait_s=5).allowed and seeder.calls == 1  # no seed at reserve


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with make_harness(tmp_path) as h:
        yield h


def test_the_outbox_seeder_holds_the_sends_of_the_last_window(harness: Harness) -> None:
    """A real pipeline (fakeredis, virtual clock) sends a full window, Redis is flushed: the next
    row waits for the window to pass, as if nothing had been lost."""
    h = harness
    h.set_campaign(window_limit=2, window_seconds=60)
    h.contacts(3)
    rows = [r.id for r in h.rows(h.launch())]
    p = h.pipeline()
    out = p.deliver_many(rows[:2])
    assert [out[i] for i in rows[:2]] == ["sent", "sent"]
    h.clock.advance(10)
    h.rt.throttle_redis.flushall()
    got = OutboxSeeder(h.db, min_grace_s=1.0)(str(h.brand_id), h.clock.time(), frozenset())
    camp = next(b for b in got if ":campaign:" in b.key)
    assert len(camp.entries) == 2
    assert p.deliver(rows[2]) == "booked"  # not sent at once: the window is still full
    ((row_id, delay, _),) = h.queued
    assert row_id == rows[2] and delay >= 50


def test_rows_in_flight_count_at_the_seed_until_they_reserve(harness: Harness) -> None:
    """A claimed row may have reached the carrier: counted at the seed time, unless the seeding
    worker holds it unsent; its own reservation then replaces that entry."""
    from dispatcher import outbox

    h = harness
    h.set_campaign(window_limit=1, window_seconds=60)
    h.contacts(2)
    rows = [r.id for r in h.rows(h.launch())]
    with h.db.connect(autocommit=True) as conn:
        _, claimed = outbox.claim_many(
            conn, [outbox.ToClaim(i, "hi", "x", 1) for i in rows], h.clock.now()
        )
    assert claimed == set(rows)
    seeder = OutboxSeeder(h.db, min_grace_s=1.0)
    camp = lambda got: next(b for b in got if ":campaign:" in b.key)  # noqa: E731
    now = h.clock.time()
    assert [e[0] for e in camp(seeder(str(h.brand_id), now, frozenset())).entries] == [None] * 2
    assert len(camp(seeder(str(h.brand_id), now, frozenset(rows[:1]))).entries) == 1
    # another worker seeded with both counted: each row's reservation takes its own entry's place
    th = RedisThrottle(h.rt.throttle_redis, h.clock, seeder=lambda b, n, u: seeder(b, n, u))
    assert th.seed(str(h.brand_id))
    b = Bucket(keys.bucket_key(h.brand_id, "campaign", h.campaign_sid), 1, 60.0, grace_s=1.0)
    r = h.rt.throttle_redis
    assert r.zcard(b.key) == 2
    assert not th.reserve([b], row=rows[0]).allowed  # the other claimed row still counts
    assert r.zscore(b.key, f"s{rows[0]}:1") is None
    assert th.reserve([b], row=rows[1]).allowed  # and so did it: neither was sent
