"""On PostgreSQL a run launched (or resumed) to start now does not wait for the scheduler's next
tick: ``runs.launch`` NOTIFYs ``WAKE_CHANNEL`` in its transaction and the scheduler's listener
thread ticks at once.  The tick here is 30 s, so anything within a few seconds is the wake-up.

The scheduler runs in process on a throw-away PostgreSQL database; its leader lock is on
fakeredis (the wake-up does not involve Redis)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import fakeredis
import psycopg
import pytest
from sqlalchemy import select

from dispatcher import outbox, runs
from dispatcher.clock import SystemClock
from dispatcher.halts import NoHaltKeys
from tests.harness import TEMPLATE, launch, seed, wait_for
from tests.servers import conninfo
from workers.scheduler import Scheduler

pytestmark = pytest.mark.integration
TICK_S = 30.0
SOON_S = 5.0  # "at once": well under the tick


@contextmanager
def scheduler(db: Any) -> Iterator[tuple[Scheduler, list[int]]]:
    enqueued: list[int] = []
    lock = threading.Lock()

    def enqueue_many(ids: list[int]) -> None:
        with lock:
            enqueued.extend(ids)

    rt = SimpleNamespace(
        db=db,
        clock=SystemClock(),
        metrics=None,
        redis=fakeredis.FakeRedis(server=fakeredis.FakeServer()),
    )
    s = Scheduler(rt, enqueue_many, tick_s=TICK_S, reconcile_s=TICK_S, scheduler_id="wake-test")
    s.start()
    try:
        assert s.listener is not None
        wait_for(s.listener.listening.is_set, 10, "the wake listener")
        yield s, enqueued
    finally:
        s.stop()


def _state(db: Any, run_id: int) -> str:
    with db.session() as s:
        return runs.get_run(s, run_id).state


def _row_ids(db: Any, run_id: int) -> set[int]:
    with db.session() as s:
        return {
            r[0]
            for r in s.connection().execute(
                select(outbox.T.c.id).where(outbox.T.c.run_id == run_id)
            )
        }


def _listener_pids(db: Any) -> set[int]:
    with db.session() as s:
        return {
            r[0]
            for r in s.connection().exec_driver_sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                f"AND query = 'LISTEN {runs.WAKE_CHANNEL}' AND pid <> pg_backend_pid()"
            )
        }


def _fanned_out_and_released(db: Any, run_id: int, enqueued: list[int]) -> bool:
    if _state(db, run_id) != runs.RUNNING:
        return False
    rows = _row_ids(db, run_id)
    return bool(rows) and rows <= set(enqueued)


def test_a_run_launched_now_is_fanned_out_without_waiting_for_the_tick(pg_db, tmp_path):
    seeded = seed(pg_db, tmp_path, consented=5)
    with scheduler(pg_db) as (s, enqueued):
        t0 = time.monotonic()
        run_id = launch(pg_db, seeded, audience={"kind": "all"})  # rows made at fan-out
        wait_for(
            lambda: _fanned_out_and_released(pg_db, run_id, enqueued),
            SOON_S,
            f"run {run_id} fanned out and released by the wake-up",
        )
        assert time.monotonic() - t0 < TICK_S
        assert len(_row_ids(pg_db, run_id)) == 5 and sorted(enqueued) == enqueued
        assert s.listener is not None and s.listener.wakes >= 1


def test_a_resumed_run_is_released_again_at_once(pg_db, tmp_path):
    seeded = seed(pg_db, tmp_path, consented=3)
    with scheduler(pg_db) as (_s, enqueued):
        run_id = launch(pg_db, seeded)
        wait_for(
            lambda: _fanned_out_and_released(pg_db, run_id, enqueued),
            SOON_S,
            f"run {run_id} released",
        )
        now = datetime.now(UTC)
        with pg_db.session() as sess:
            runs.pause_run(sess, run_id, "test", now, halts=NoHaltKeys())  # no worker to halt
        with pg_db.session() as sess:  # un-parks the rows the queue carried
            runs.resume_run(sess, run_id, now)
        wait_for(lambda: len(enqueued) == 6, SOON_S, "the resumed run's rows released again")


def test_launch_notifies_on_commit_only_and_only_when_due(pg_db, tmp_path):
    seeded = seed(pg_db, tmp_path, consented=2)

    def req(send_at: datetime | None = None) -> runs.LaunchRequest:
        return runs.LaunchRequest(
            campaign=seeded.campaign_sid,
            template=TEMPLATE,
            audience={"kind": "all"},
            send_at=send_at,
            actor="test",
        )

    with (
        psycopg.connect(conninfo(pg_db.url), autocommit=True) as ln,
        psycopg.connect(conninfo(pg_db.url), autocommit=True) as other,
    ):
        ln.execute(f"LISTEN {runs.WAKE_CHANNEL}")
        with pg_db.session() as s:
            runs.launch(s, req(), now=datetime.now(UTC))
            s.flush()
            assert list(ln.notifies(timeout=0)) == []  # not before the commit
        (n,) = list(ln.notifies(timeout=SOON_S, stop_after=1))
        assert n.channel == runs.WAKE_CHANNEL
        with pg_db.session() as s:
            runs.launch(s, req(datetime.now(UTC) + timedelta(hours=1)), now=datetime.now(UTC))
        # notifications arrive in commit order: the marker first means the future run sent none
        other.execute(f"NOTIFY {runs.WAKE_CHANNEL}, 'marker'")
        (n,) = list(ln.notifies(timeout=SOON_S, stop_after=1))
        assert n.payload == "marker"
        with pg_db.session() as s:  # a launch that rolls back notifies nobody
            runs.launch(s, req(), now=datetime.now(UTC))
            s.rollback()
        other.execute(f"NOTIFY {runs.WAKE_CHANNEL}, 'marker2'")
        (n,) = list(ln.notifies(timeout=SOON_S, stop_after=1))
        assert n.payload == "marker2"


def test_a_lost_listener_connection_is_retried_and_wakes_again(pg_db, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="workers.scheduler")
    seeded = seed(pg_db, tmp_path, consented=3)
    with scheduler(pg_db) as (s, enqueued):
        (pid,) = _listener_pids(pg_db)
        with pg_db.session() as sess:
            sess.connection().exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        wait_for(
            lambda: (_listener_pids(pg_db) - {pid}) and s.listener.listening.is_set(),
            10,
            "the listener to reconnect",
        )
        lost = [r for r in caplog.records if r.getMessage().startswith("wake listener:")]
        assert lost and {r.levelno for r in lost} == {logging.INFO}
        run_id = launch(pg_db, seeded)
        wait_for(
            lambda: _fanned_out_and_released(pg_db, run_id, enqueued),
            SOON_S,
            f"run {run_id} fanned out after the reconnect",
        )
        assert s.errors == 0


def test_stop_is_prompt(pg_db):
    with scheduler(pg_db) as (s, _):
        listener = s.listener
        assert listener is not None
        thread = listener._thread
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 5
    assert thread is not None and not thread.is_alive() and s.listener is None
