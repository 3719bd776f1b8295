"""store.HeldConnection: one connection across transactions (no checkout, so no pre-ping, per
transaction), committed like ``Database.session``, replaced after the server dropped it."""

from __future__ import annotations

import pytest
from sqlalchemy import event, text

from dispatcher.errors import StorageError


def _pid(s: object) -> int:
    return int(s.connection().execute(text("SELECT pg_backend_pid()")).scalar_one())  # type: ignore[attr-defined]


def test_sessions_share_one_checkout_and_commit(pg_db):
    checkouts: list[object] = []
    event.listen(pg_db.engine, "checkout", lambda *a: checkouts.append(a))
    held = pg_db.held()
    pids = set()
    for k in range(3):
        with held.session() as s:
            pids.add(_pid(s))
            s.connection().execute(text("CREATE TABLE IF NOT EXISTS held_t (k int)"))
            s.connection().execute(text("INSERT INTO held_t VALUES (:k)"), {"k": k})
    with pytest.raises(RuntimeError), held.session() as s:
        s.connection().execute(text("INSERT INTO held_t VALUES (99)"))
        raise RuntimeError("rolled back")
    assert len(checkouts) == 1 and len(pids) == 1
    with pg_db.session() as s:  # committed, seen from another connection; 99 rolled back
        assert s.connection().execute(text("SELECT k FROM held_t ORDER BY k")).scalars().all() == [
            0,
            1,
            2,
        ]
    before = len(checkouts)
    held.release()
    with held.session() as s:
        assert _pid(s) != 0
    assert len(checkouts) == before + 1  # a fresh checkout after release
    held.release()


def test_a_dropped_connection_fails_one_session_and_is_replaced(pg_db):
    held = pg_db.held()
    with held.session() as s:
        victim = _pid(s)
    with pg_db.session() as s:
        s.connection().execute(text("SELECT pg_terminate_backend(:p)"), {"p": victim})
    with pytest.raises(StorageError), held.session() as s:
        _pid(s)
    with held.session() as s:
        assert _pid(s) != victim
    held.release()


def test_dispose_gives_a_held_connection_back(pg_db):
    held = pg_db.held()
    with held.session() as s:
        _pid(s)
    assert pg_db.engine.pool.checkedout() == 1
    pg_db.dispose()
    assert held._conn is None
