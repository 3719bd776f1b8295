"""Fixtures of the distributed integration tests: real processes on loopback (tests/harness.py)
on DB 12 of the session's redis-server and a throw-away PostgreSQL database."""

from __future__ import annotations

import pytest

from tests.harness import deployment
from tests.servers import fresh_postgres_database, redis_url

REDIS_DB = 12


@pytest.fixture
def dist(tmp_path):
    """(stack, db): nothing started yet; ``stack.up(...)`` starts sandbox, webhooks, workers and
    scheduler.  Fails under CI=true (skips locally) when redis-server or PostgreSQL is absent."""
    url = redis_url(REDIS_DB)
    with fresh_postgres_database() as pg, deployment(url, pg, tmp_path / "logs") as pair:
        yield pair
