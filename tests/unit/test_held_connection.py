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


def test_an_autocommit_connection_commits_each_statement_and_has_no_session(pg_db):
    held = pg_db.held(autocommit=True)
    with pg_db.session() as s:
        s.connection().execute(text("CREATE TABLE held_a (k int)"))
    pids = set()
    for k in range(3):
        with held.connection() as conn:
            pids.add(int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one()))
            conn.execute(text("INSERT INTO held_a VALUES (:k)"), {"k": k})
            with pg_db.session() as s:  # seen from another connection before the block ends
                assert k in s.connection().execute(text("SELECT k FROM held_a")).scalars().all()
    with pytest.raises(RuntimeError), held.connection() as conn:
        conn.execute(text("INSERT INTO held_a VALUES (99)"))
        raise RuntimeError("no transaction to roll back")
    with held.connection() as conn:  # still usable after an error
        assert sorted(conn.execute(text("SELECT k FROM held_a")).scalars().all()) == [0, 1, 2, 99]
    assert len(pids) == 1  # one backend: kept checked out
    with pytest.raises(RuntimeError), held.session():
        pass
    with pytest.raises(RuntimeError), pg_db.held().connection():
        pass
    held.release()


def test_a_dropped_autocommit_connection_fails_once_and_is_replaced(pg_db):
    held = pg_db.held(autocommit=True)
    with held.connection() as conn:
        victim = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    with pg_db.session() as s:
        s.connection().execute(text("SELECT pg_terminate_backend(:p)"), {"p": victim})
    with pytest.raises(StorageError), held.connection() as conn:
        conn.execute(text("SELECT 1"))
    with held.connection() as conn:
        assert int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one()) != victim
    pg_db.dispose()
    assert held._conn is None
