"""Halt signals (dispatcher/halts.py): what ``clear`` answers, and that revokes, pauses and
cancels set their keys themselves, before their transaction commits."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from sqlalchemy import event
from sqlmodel import select

from dispatcher import contacts, halts, keys, ledger, registry, runs
from dispatcher.halts import Halts
from dispatcher.models import ConsentEvent, Run

SEED = Path(__file__).parents[2] / "dispatcher" / "data" / "usa2p_seed004.json"
PHONE = "+14155551234"
IDS = {"contact_id": 1, "run_id": 2, "campaign_id": 3}
NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


@pytest.fixture(params=[False, True], ids=["bytes", "str"])
def redis(request) -> Any:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=request.param)


@pytest.fixture
def h(redis) -> Halts:
    return Halts(redis)


# ------------------------------------------------------------------------------ epoch / clear
def test_clear_when_nothing_was_signalled(h):
    e = h.epoch()
    assert e is not None and h.epoch() == e  # created once, then read back
    assert h.clear(e, **IDS)


@pytest.mark.parametrize(
    "kind,key", [("contacts", "contact_id"), ("runs", "run_id"), ("campaigns", "campaign_id")]
)
def test_a_signal_of_the_contact_run_or_campaign_is_not_clear(h, kind, key):
    e = h.epoch()
    h.signal(**{kind: [IDS[key] + 100]})  # someone else's
    assert h.clear(e, **IDS)
    h.signal(**{kind: [IDS[key]]})
    assert not h.clear(e, **IDS)
    assert h.epoch() == e  # signal leaves the epoch alone


def test_a_flush_or_a_changed_epoch_is_not_clear(h, redis):
    e = h.epoch()
    redis.flushdb()  # a restart without persistence looks the same
    assert not h.clear(e, **IDS)
    e2 = h.epoch()
    assert e2 is not None and e2 != e
    assert h.clear(e2, **IDS)
    redis.set(h.epoch_key, "someone-else")
    assert not h.clear(e2, **IDS)
    assert not h.clear(None, **IDS)


def test_keys_names_values_and_ttl(h, redis):
    e = h.epoch()
    h.signal(contacts=[7], runs=[8], campaigns=[9])
    names = [f"dispatcher:{{halt}}:{k}" for k in ("c:7", "r:8", "k:9")]
    assert [h.contact_key(7), h.run_key(8), h.campaign_key(9)] == names
    assert h.epoch_key == keys.halt_epoch_key() == "dispatcher:{halt}:epoch"
    assert [redis.get(n) for n in names] == [b"1" if isinstance(e[0], bytes) else "1"] * 3
    for n in names:
        assert 299_000 < redis.pttl(n) <= 300_000
    assert redis.ttl(h.epoch_key) == -1  # the epoch never expires
    assert h.max_age_s == 120.0
    assert Halts(redis, ttl_s=60).max_age_s == 24.0


def test_signal_of_nothing_sends_nothing():
    class NoRedis:
        def pipeline(self, **_: Any) -> Any:
            raise AssertionError("no round trip for nothing")

    Halts(NoRedis()).signal()


def test_one_round_trip_each():
    server = fakeredis.FakeServer()
    calls: list[str] = []

    class Counting(fakeredis.FakeRedis):
        def execute_command(self, *args: Any, **kw: Any) -> Any:
            calls.append(str(args[0]))
            return super().execute_command(*args, **kw)

        def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
            calls.append("pipeline")
            return super().pipeline(transaction, shard_hint)

    h = Halts(Counting(server=server))
    e = h.epoch()
    h.signal(contacts=[1, 2], runs=[3])
    assert calls == ["pipeline", "pipeline"]
    calls.clear()
    h.clear(e, **IDS)
    assert calls == ["MGET"]


# --------------------------------------------------------------------------- in transactions
def _seed(db: Any) -> dict[str, int]:
    with db.session() as s:
        b = registry.add_brand(s, name="Acme Corporation", tmobile_brand_tier="TOP")
        c, _ = registry.import_campaign(s, json.loads(SEED.read_text()), brand=b)
        contact, _ = contacts.upsert_contact(s, PHONE)
        run = Run(campaign_id=c.id, template="Hi", state=runs.RUNNING)
        s.add(run)
        s.flush()
        return {"brand": b.id, "campaign": c.id, "contact": contact.id, "run": run.id}


@pytest.fixture
def world(sqlite_db) -> dict[str, int]:
    return _seed(sqlite_db)


def _revoke(s: Any, w: dict[str, int], h: Any) -> None:
    ledger.append(
        s,
        contact_id=w["contact"],
        brand_id=w["brand"],
        action="revoke",
        source="keyword",
        actor="test",
        evidence_text="STOP",
        halts=h,
    )


def _revokes(s: Any) -> list[ConsentEvent]:
    return list(s.exec(select(ConsentEvent).where(ConsentEvent.action == "revoke")).all())


def _run_state(s: Any, w: dict[str, int]) -> str:
    return s.get(Run, w["run"]).state


#: name -> (do it in a session, signalling h; its key; what the committed transaction left)
HALTERS = {
    "revoke": (
        _revoke,
        lambda h, w: h.contact_key(w["contact"]),
        lambda s, w: len(_revokes(s)) == 1,
    ),
    "pause_run": (
        lambda s, w, h: runs.pause_run(s, w["run"], "operator", NOW, halts=h),
        lambda h, w: h.run_key(w["run"]),
        lambda s, w: _run_state(s, w) == runs.PAUSED,
    ),
    "cancel_run": (
        lambda s, w, h: runs.cancel_run(s, w["run"], NOW, halts=h),
        lambda h, w: h.run_key(w["run"]),
        lambda s, w: _run_state(s, w) == runs.CANCELLED,
    ),
    "pause_campaign_runs": (
        lambda s, w, h: runs.pause_campaign_runs(s, w["campaign"], "30034", NOW, halts=h),
        lambda h, w: h.campaign_key(w["campaign"]),
        lambda s, w: _run_state(s, w) == runs.PAUSED,
    ),
}


def _names(redis: Any, pattern: str = "dispatcher:{halt}:*") -> list[str]:
    return sorted(k.decode() if isinstance(k, bytes) else k for k in redis.keys(pattern))


@pytest.mark.parametrize("name", list(HALTERS))
def test_a_halt_sets_its_key_before_the_commit(sqlite_db, world, h, redis, name):
    do, key_of, committed = HALTERS[name]
    key = key_of(h, world)
    at_commit: list[bool] = []
    # the DBAPI COMMIT itself (engine event)
    event.listen(
        sqlite_db.engine, "commit", lambda _conn: at_commit.append(bool(redis.exists(key)))
    )
    e = h.epoch()
    with sqlite_db.session() as s:
        do(s, world, h)
        assert redis.exists(key)  # set by the call itself, in the open transaction
    assert at_commit == [True]
    assert not h.clear(
        e, contact_id=world["contact"], run_id=world["run"], campaign_id=world["campaign"]
    )
    with sqlite_db.session() as s:  # and it did commit
        assert committed(s, world)


def test_a_grant_or_a_plain_transaction_signals_nothing(sqlite_db, world, h, redis):
    e = h.epoch()
    with sqlite_db.session() as s:
        ledger.append(
            s,
            contact_id=world["contact"],
            brand_id=world["brand"],
            action="grant",
            source="web_form",
            actor="test",
            evidence_text="form",
            halts=h,
        )
        runs.fan_out(s, world["run"], NOW)  # not a halt either
    assert _names(redis) == [h.epoch_key]
    assert h.clear(
        e, contact_id=world["contact"], run_id=world["run"], campaign_id=world["campaign"]
    )


def test_a_revoke_cannot_forget_to_signal(sqlite_db, world):
    with pytest.raises(TypeError, match="halt"), sqlite_db.session() as s:
        ledger.append(
            s,
            contact_id=world["contact"],
            brand_id=world["brand"],
            action="revoke",
            source="keyword",
            actor="test",
            evidence_text="STOP",
        )
    with sqlite_db.session() as s:
        assert _revokes(s) == []


def test_a_pause_of_a_paused_run_signals_nothing_new(sqlite_db, world, h, redis):
    with sqlite_db.session() as s:
        assert runs.pause_run(s, world["run"], "operator", NOW, halts=h)
    redis.delete(h.run_key(world["run"]))
    with sqlite_db.session() as s:
        assert not runs.pause_run(s, world["run"], "operator", NOW, halts=h)
    assert _names(redis) == []


def test_a_rolled_back_halt_leaves_only_a_key(sqlite_db, world, h, redis):
    """The key was set, the transaction rolled back: nothing is recorded, and the key only makes
    the workers check this contact's rows in the database (where nothing stops them)."""
    with pytest.raises(RuntimeError), sqlite_db.session() as s:
        _revoke(s, world, h)
        raise RuntimeError("boom")
    assert _names(redis) == [h.contact_key(world["contact"])]
    with sqlite_db.session() as s:
        assert _revokes(s) == []


def test_redis_down_the_halt_still_commits_and_an_error_is_logged(sqlite_db, world, caplog):
    server = fakeredis.FakeServer()
    h = Halts(fakeredis.FakeRedis(server=server))
    server.connected = False
    with caplog.at_level(logging.WARNING, logger="dispatcher.halts"), sqlite_db.session() as s:
        _revoke(s, world, h)
        runs.pause_run(s, world["run"], "operator", NOW, halts=h)
    with sqlite_db.session() as s:
        assert len(_revokes(s)) == 1 and _run_state(s, world) == runs.PAUSED
    first, second = [r for r in caplog.records if r.name == "dispatcher.halts"]
    assert {first.levelno, second.levelno} == {logging.ERROR}
    assert "committing anyway" in first.getMessage()
    assert f"contact ids {world['contact']}" in first.getMessage()
    assert f"run ids {world['run']}" in second.getMessage()
    assert PHONE not in caplog.text and PHONE[2:] not in caplog.text


# --------------------------------------------------------------------------------- runtime
def test_the_runtime_opens_its_database_without_redis_and_signals_the_shared_one(tmp_path):
    from dispatcher import store
    from dispatcher.runtime import Runtime
    from dispatcher.settings import Settings

    url = f"sqlite:///{tmp_path}/rt.db"
    try:
        lazy = Runtime(Settings(database_url=url))
        lazy.db  # noqa: B018 - opened (and upgraded)
        assert "redis" not in lazy.__dict__ and "halts" not in lazy.__dict__
        redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        rt = Runtime(Settings(database_url=url), redis=redis)
        assert rt.db is lazy.db
        w = _seed(rt.db)
        with rt.db.session() as s:
            runs.cancel_run(s, w["run"], NOW, halts=rt.halts)
        assert redis.exists(rt.halts.run_key(w["run"]))  # type: ignore[union-attr]
    finally:
        db = store._databases.pop(url, None)
        if db is not None:
            db.dispose()


def test_postgresql_without_a_shared_redis_refuses_a_halt_not_the_runtime():
    """Workers on that database check keys this process cannot reach: a halt must not commit
    unseen by them.  Building the runtime and its halts is fine; signalling is refused."""
    from dispatcher.errors import ConfigError
    from dispatcher.runtime import Runtime
    from dispatcher.settings import Settings

    rt = Runtime(Settings(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none"))
    h = rt.halts
    with pytest.raises(ConfigError, match="DISPATCHER_REDIS_URL"):
        h.signal(runs=[1])
    h.signal()  # nothing to signal: nothing refused


def _cli_revoke() -> None:
    from typer.testing import CliRunner

    from dispatcher.cli.app import app

    def cli(*args: str) -> Any:
        r = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)

    cli("brand", "add", "Acme Corporation", "--tier", "top")
    ev = cli("consent", "revoke", PHONE, "--brand", "Acme Corporation", "--note", "by phone")
    assert ev["action"] == "revoke"


def test_a_cli_revoke_signals_through_the_shared_redis(cli_env, monkeypatch):
    """With DISPATCHER_REDIS_URL (the workers' Redis) the CLI's revoke sets the contact's key
    through the Runtime's halts client."""
    from dispatcher.settings import get_settings

    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    made: list[str] = []

    def client(url: str, _count: Any, **_kw: Any) -> Any:
        made.append(url)
        return redis

    monkeypatch.setattr(halts, "client", client)
    monkeypatch.setenv("DISPATCHER_REDIS_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    _cli_revoke()
    assert made == ["redis://127.0.0.1:1/0"]
    assert _names(redis) == ["dispatcher:{halt}:c:1"]


def test_an_embedded_cli_revoke_signals_nobody(cli_env):
    """Embedded (no Redis URL): the process's own fakeredis is read by no other process and
    the embedded workers check every row in the database, so nothing is signalled (and the
    command does not pay for a Redis client)."""
    from dispatcher.cli.common import database
    from dispatcher.runtime import Runtime, embedded_redis
    from dispatcher.settings import get_settings

    redis = embedded_redis()
    for k in redis.scan_iter("dispatcher:{halt}:*"):
        redis.delete(k)
    _cli_revoke()
    assert _names(redis) == []
    rt = Runtime(get_settings())
    assert rt.db is database() and not rt.shared_redis  # so pipeline(halts=None)
    rt.halts.signal(contacts=[1])
    assert "redis" not in rt.__dict__ and _names(redis) == []
