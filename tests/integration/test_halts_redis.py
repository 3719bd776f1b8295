"""Halt signals on real Redis (the session's redis-server): the unit cases again, plus TTLs kept
by the server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from dispatcher.halts import Halts
from tests.unit.test_halts import (  # noqa: F401  (same cases on real Redis)
    h,
    test_a_flush_or_a_changed_epoch_is_not_clear,
    test_a_grant_or_a_plain_transaction_signals_nothing,
    test_a_halt_sets_its_key_before_the_commit,
    test_a_pause_of_a_paused_run_signals_nothing_new,
    test_a_rolled_back_halt_leaves_only_a_key,
    test_a_signal_of_the_contact_run_or_campaign_is_not_clear,
    test_clear_when_nothing_was_signalled,
    test_keys_names_values_and_ttl,
    world,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=[False, True], ids=["bytes", "str"])
def redis(request, clean_redis_url: str) -> Iterator[redis_lib.Redis]:  # overrides fakeredis
    r = redis_lib.Redis.from_url(clean_redis_url, decode_responses=request.param)
    yield r
    r.close()


def test_an_unreachable_redis_raises_to_the_worker_who_falls_back():
    """``clear`` and ``epoch`` do not swallow errors: the worker treats one as 'check the DB'."""
    down = Halts(
        redis_lib.Redis(
            host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
        )
    )
    with pytest.raises(redis_lib.ConnectionError):
        down.epoch()
    with pytest.raises(redis_lib.ConnectionError):
        down.clear("x", contact_id=1, run_id=2, campaign_id=3)


def test_a_pause_on_postgresql_without_a_shared_redis_is_refused(pg_db):
    """An operator's CLI without DISPATCHER_REDIS_URL would signal its own in-process fakeredis,
    which no worker sees: the pause is refused with the fix, and nothing is committed."""
    import json
    from pathlib import Path

    from dispatcher import registry, runs
    from dispatcher.errors import ConfigError
    from dispatcher.models import Run
    from dispatcher.runtime import Runtime
    from dispatcher.settings import Settings

    seed = Path(__file__).parents[2] / "dispatcher" / "data" / "usa2p_seed004.json"
    with pg_db.session() as s:
        brand = registry.add_brand(s, name="Acme Corporation", tmobile_brand_tier="TOP")
        campaign, _ = registry.import_campaign(s, json.loads(seed.read_text()), brand=brand)
        run = Run(campaign_id=campaign.id, template="Hi", state="running")
        s.add(run)
        s.flush()
        run_id = run.id
    rt = Runtime(Settings(database_url=pg_db.url))
    with pytest.raises(ConfigError, match="DISPATCHER_REDIS_URL"), rt.db.session() as s:
        runs.pause_run(s, run_id, "operator", rt.clock.now(), halts=rt.halts)
    with pg_db.session() as s:
        assert s.get(Run, run_id).state == "running"


def test_a_reconnect_since_the_epoch_was_read_is_not_clear(clean_redis_url: str) -> None:
    """A Redis that restarted from a snapshot brings the same epoch back without the newest
    keys: every client connection reconnects, and that alone makes the check fall back."""
    from dispatcher.halts import Reconnects, client

    count = Reconnects()
    r = client(clean_redis_url, count)
    halts = Halts(r, reconnects=count)
    try:
        e = halts.epoch()
        assert halts.clear(e, contact_id=1, run_id=2, campaign_id=3)
        r.connection_pool.disconnect()  # what a restart does to every connection
        assert not halts.clear(e, contact_id=1, run_id=2, campaign_id=3)
        assert halts.clear(halts.epoch(), contact_id=1, run_id=2, campaign_id=3)  # the next batch
    finally:
        r.close()
