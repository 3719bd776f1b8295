"""The scheduler's leader lock (redis-py's Lock): one leader at a time, renewed while held,
taken over once it lapses, released only by its holder, False (never raised) without Redis.
On a real redis-server and on fakeredis (embedded mode)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis

from dispatcher import keys
from tests.procs import free_port
from workers.scheduler import LeaderLock

KEY = keys.scheduler_leader_key()


@pytest.fixture(params=["redis-server", "fakeredis"])
def r(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "fakeredis":
        client: Any = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    else:
        client = redis.Redis.from_url(request.getfixturevalue("clean_redis_url"))
    try:
        yield client
    finally:
        client.close()


def test_one_leader_named_in_redis(r: Any) -> None:
    a, b = LeaderLock(r, 10, name="host:1:a"), LeaderLock(r, 10, name="host:2:b")
    assert a.acquire() and not b.acquire()
    assert r.get(KEY) == b"host:1:a"
    assert a.acquire() and not b.acquire()  # still a's on the next job
    assert 9_000 < r.pttl(KEY) <= 10_000


def test_the_leader_renews_its_ttl(r: Any) -> None:
    a = LeaderLock(r, 10, name="a")
    assert a.acquire()
    r.pexpire(KEY, 50)  # about to lapse
    assert a.acquire()
    assert r.pttl(KEY) > 9_000


def test_a_lapsed_lock_is_taken_over_and_the_old_leader_stands_by(r: Any) -> None:
    a, b = LeaderLock(r, 10, name="a"), LeaderLock(r, 10, name="b")
    assert a.acquire()
    r.delete(KEY)  # the TTL ran out (the leader was stalled or cut off)
    assert b.acquire() and r.get(KEY) == b"b"
    assert not a.acquire()  # no longer its own: renewing must not steal it back
    assert r.get(KEY) == b"b"
    r.delete(KEY)
    assert a.acquire() and r.get(KEY) == b"a"  # free again: a may take it


def test_release_frees_only_its_own_lock(r: Any) -> None:
    a, b = LeaderLock(r, 10, name="a"), LeaderLock(r, 10, name="b")
    assert a.acquire()
    b.release()  # never held: nothing happens
    assert r.get(KEY) == b"a"
    a.release()
    assert r.get(KEY) is None
    assert b.acquire()
    a.release()  # no longer held by a: b keeps it
    assert r.get(KEY) == b"b"


def test_without_redis_nobody_leads_and_nothing_raises() -> None:
    down = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    lock = LeaderLock(down, 10, name="a")
    assert lock.acquire() is False
    lock.release()
