"""The scheduler's wake-up on PostgreSQL NOTIFY, where it must do nothing: SQLite.  (On
PostgreSQL: tests/integration/test_scheduler_wake.py.)"""

from __future__ import annotations

import logging
import time

from sqlalchemy import event

from dispatcher import runs
from tests.procs import wait_for
from workers.scheduler import Scheduler, WakeListener


def _statements(engine):
    seen: list[str] = []
    event.listen(
        engine, "before_cursor_execute", lambda _c, _cur, statement, *_a: seen.append(statement)
    )
    return seen


def test_launch_and_resume_do_not_notify_on_sqlite(harness):
    harness.contacts(3)
    seen = _statements(harness.db.engine)
    run_id = harness.launch()  # due now: on PostgreSQL this would NOTIFY
    with harness.db.session() as s:
        runs.pause_run(s, run_id, "test", harness.clock.now(), halts=harness.rt.halts)
    with harness.db.session() as s:
        runs.resume_run(s, run_id, harness.clock.now())
    assert seen and not [q for q in seen if "NOTIFY" in q.upper()]


def test_the_scheduler_listens_only_on_postgresql(harness):
    s = Scheduler(
        harness.rt, harness.enqueue_many, tick_s=30, reconcile_s=30, scheduler_id="wake-unit"
    )
    s.start()
    try:
        assert s.listener is None
    finally:
        s.stop()


def test_an_unreachable_database_is_retried_quietly_and_stop_is_prompt(caplog):
    caplog.set_level(logging.INFO, logger="workers.scheduler")
    woken: list[int] = []
    # port 1 on loopback: connection refused at once
    listener = WakeListener(
        "postgresql://nobody@127.0.0.1:1/nothing",
        lambda: woken.append(1),
        poll_s=0.2,
        backoff_s=0.05,
        max_backoff_s=0.2,
    )
    listener.start()
    try:
        wait_for(
            lambda: sum("wake listener" in r.getMessage() for r in caplog.records) >= 2,
            10,
            "two failed connection attempts",
        )
    finally:
        thread = listener._thread
        t0 = time.monotonic()
        listener.stop()
    assert time.monotonic() - t0 < 2
    assert thread is not None and not thread.is_alive()
    assert not woken and not listener.listening.is_set()
    tries = [r for r in caplog.records if "wake listener" in r.getMessage()]
    assert {r.levelno for r in tries} == {logging.INFO}
