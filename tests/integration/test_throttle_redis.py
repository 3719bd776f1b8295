"""Throttle on real Redis (the session's redis-server): the unit cases again, multi-process
hammering, script reload."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from dispatcher import keys
from dispatcher.throttle import Bucket, RedisThrottle
from tests.throttle_sim import window_violations
from tests.unit.throttle.test_reserve import *  # noqa: F403  (same cases on real Redis)
from tests.unit.throttle.test_reserve import T0

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_client(clean_redis_url: str) -> Iterator[redis.Redis]:  # overrides the fakeredis one
    r = redis.Redis.from_url(clean_redis_url)
    yield r
    r.close()


HAMMER = [(5, 0.2), (3, 0.15)]  # (limit, period) of the shared buckets


def _buckets() -> list[Bucket]:
    return [Bucket(keys.bucket_key(9, "ham", str(i)), lim, per, grace_s=0.0)
            for i, (lim, per) in enumerate(HAMMER)]  # fmt: skip


def _hammer(url: str, n: int, out: mp.Queue) -> None:  # runs in a child process
    r = redis.Redis.from_url(url)
    th = RedisThrottle(r)  # Redis TIME: one clock for every process
    got: list[tuple[float, int]] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        # at least n calls and at least 1 s of hammering: on a fast machine n calls end before
        # the buckets have turned over often enough to show that the limit was used
        mine = []
        j, until = 0, time.monotonic() + 1.0
        while j < n or time.monotonic() < until:
            res = th.reserve(_buckets(), max_wait_s=0.5 if (j + k) % 2 else 0.0)
            if res.allowed:
                mine.append((res.slot_at, 1))
            j += 1
        with lock:
            got.extend(mine)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put(got)


def test_two_processes_eight_threads_never_over(clean_redis_url: str) -> None:
    url = clean_redis_url
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    ps = [ctx.Process(target=_hammer, args=(url, 150, q)) for _ in range(2)]
    for p in ps:
        p.start()
    allowed: list[tuple[float, int]] = []
    for _ in ps:
        allowed.extend(q.get(timeout=100))
    for p in ps:
        p.join(timeout=30)
        assert p.exitcode == 0
    times = [t for t, _ in allowed]
    assert len(times) > 20
    for lim, per in HAMMER:
        assert window_violations(times, per, lim) == 0
    # and the limit was actually used: some window is full
    assert any(window_violations(times, per, lim - 1) for lim, per in HAMMER)


def test_script_flush_between_calls(redis_client: redis.Redis) -> None:
    th = RedisThrottle(redis_client)
    b = Bucket(keys.bucket_key(3, "sf", "x"), 2, 60.0)
    for i in range(3):
        redis_client.script_flush()
        assert th.reserve([b], now=T0).allowed is (i < 2)
