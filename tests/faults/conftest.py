"""Fixtures of the fault-injection tests (issue 10): real processes on loopback
(tests/harness.py) on DB 13 of the session's redis-server (or a redis-server of the test's own)
and a throw-away PostgreSQL database."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from tests.harness import deployment
from tests.procs import RedisServer, have_redis_server
from tests.servers import absent, fresh_postgres_database, redis_url

REDIS_DB = 13


@contextmanager
def distributed(tmp_path, redis_db: int = REDIS_DB):
    """(stack, db) on the session's redis-server (DB ``redis_db``) and a fresh PostgreSQL
    database; nothing started yet."""
    with (
        fresh_postgres_database() as pg,
        deployment(redis_url(redis_db), pg, tmp_path / "logs") as pair,
    ):
        yield pair


@pytest.fixture
def dist(tmp_path):
    """(stack, db) on the session's redis-server (DB 13); nothing started yet."""
    with distributed(tmp_path) as pair:
        yield pair


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of the test's own on an ephemeral port (so FLUSHALL and a restart touch
    no other test)."""
    if not have_redis_server():
        absent("redis-server not found on PATH")
    (tmp_path / "logs").mkdir(parents=True, exist_ok=True)
    srv = RedisServer(tmp_path / "logs").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def dist_own_redis(tmp_path, own_redis):
    """(stack, db, redis_server) with the stack on the test's own redis-server."""
    with (
        fresh_postgres_database() as pg,
        deployment(own_redis.url, pg, tmp_path / "logs") as (stack, db),
    ):
        yield stack, db, own_redis
