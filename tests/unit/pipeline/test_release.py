"""``ReleaseLoop.release``: one ``UPDATE ... WHERE id IN (SELECT ... ORDER BY due_at, id LIMIT
:room [FOR UPDATE SKIP LOCKED]) RETURNING id`` per running run, on SQLite and PostgreSQL: rows
go in due order, at most ``room`` per run and per tick, committed before they are enqueued
(sorted), and a row another transaction holds is skipped, never waited for."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from dispatcher import outbox, runs
from dispatcher.clock import FakeClock
from dispatcher.release_loop import ReleaseConfig, ReleaseLoop
from tests.harness import TEMPLATE, seed

T = outbox.T
#: due offsets (s) of a run's rows in id order: due order is not id order, the last is not due
OFFSETS = (-10, -50, -30, -20, -40, 60)


class Recorder:
    def __init__(self, db: Any) -> None:
        self.db = db
        self.calls: list[list[int]] = []

    def __call__(self, ids: list[int]) -> None:
        with self.db.session() as s:  # committed before the enqueue: another session sees it
            carried = {
                r[0]
                for r in s.connection().execute(
                    select(T.c.id).where(T.c.id.in_(ids), T.c.enqueued_at.is_not(None))
                )
            }
        assert carried == set(ids)
        self.calls.append(ids)


def _run(db: Any, tmp_path: Any, clock: FakeClock, npa: str = "646") -> list[int]:
    """A running run of len(OFFSETS) rows due at ``OFFSETS``; its row ids in due order."""
    seeded = seed(db, tmp_path / npa, consented=len(OFFSETS), npa=npa)
    req = runs.LaunchRequest(
        campaign=seeded.campaign_sid,
        template=TEMPLATE,
        audience={"kind": "list"},
        actor="test",
        recipients=[{"phone": p} for p in seeded.consented],
    )
    now = clock.now()
    with db.session() as s:
        run_id = runs.launch(s, req, now=now)[0].id
    with db.session() as s:
        runs.fan_out(s, run_id, now)
        ids = [
            r[0]
            for r in s.connection().execute(
                select(T.c.id).where(T.c.run_id == run_id).order_by(T.c.id)
            )
        ]
        for row_id, off in zip(ids, OFFSETS, strict=True):
            s.connection().execute(
                update(T).where(T.c.id == row_id).values(due_at=now + timedelta(seconds=off))
            )
    return [i for _, i in sorted(zip(OFFSETS, ids, strict=True))]


def _release_loop(db: Any, clock: FakeClock, **cfg: Any) -> tuple[ReleaseLoop, Recorder]:
    rec = Recorder(db)
    return ReleaseLoop(db, clock, rec, config=ReleaseConfig(**cfg)), rec


def test_rows_are_released_in_due_order_at_most_room_per_tick(any_db, tmp_path):
    clock = FakeClock()
    order = _run(any_db, tmp_path, clock)
    hk, rec = _release_loop(any_db, clock, release_batch=2)
    assert hk.release() == 2
    assert hk.release() == 2
    assert hk.release() == 1
    assert hk.release() == 0  # the last row is not due yet
    assert rec.calls == [sorted(order[0:2]), sorted(order[2:4]), [order[4]]]
    clock.advance(61)
    assert hk.release() == 1
    assert rec.calls[-1] == [order[5]]


def test_a_run_carries_at_most_max_carried(any_db, tmp_path):
    clock = FakeClock()
    order = _run(any_db, tmp_path, clock)
    hk, rec = _release_loop(any_db, clock, max_carried_per_run=3)
    assert hk.release() == 3
    assert hk.release() == 0  # three ride already
    with any_db.session() as s:  # one is sent: room for one more
        s.connection().execute(update(T).where(T.c.id == order[0]).values(state=outbox.SENT))
    assert hk.release() == 1
    assert rec.calls == [sorted(order[:3]), [order[3]]]


def test_the_batch_is_shared_by_the_running_runs(any_db, tmp_path):
    clock = FakeClock()
    first = _run(any_db, tmp_path, clock, npa="646")
    second = _run(any_db, tmp_path, clock, npa="212")
    hk, rec = _release_loop(any_db, clock, release_batch=7)
    assert hk.release() == 7
    (ids,) = rec.calls
    assert ids == sorted(ids)
    got_first = [i for i in first if i in ids]
    got_second = [i for i in second if i in ids]
    # each run gave a prefix of its due rows (5 due each), 7 in all
    assert {len(got_first), len(got_second)} == {5, 2}
    assert got_first == first[: len(got_first)] and got_second == second[: len(got_second)]


@pytest.mark.integration
def test_a_row_locked_by_another_transaction_is_skipped_not_waited_for(pg_db, tmp_path):
    clock = FakeClock()
    order = _run(pg_db, tmp_path, clock)
    hk, rec = _release_loop(pg_db, clock, release_batch=2)
    other = pg_db.engine.connect()  # e.g. a second scheduler in the middle of its release
    try:
        other.execute(select(T.c.id).where(T.c.id == order[0]).with_for_update())
        result: list[int] = []
        t = threading.Thread(target=lambda: result.append(hk.release()), daemon=True)
        t.start()
        t.join(10)
        assert not t.is_alive(), "release() waited on a row another transaction locked"
        assert result == [2]
        assert rec.calls == [sorted(order[1:3])]
    finally:
        other.rollback()
        other.close()
    assert hk.release() == 2
    assert rec.calls[-1] == sorted([order[0], order[3]])
