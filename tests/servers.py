"""The servers of a test session, owned by that session.

Redis: the session starts a ``redis-server`` of its own on a free port, in a directory of its
own, the first time a test asks for it (``redis_url(db)``, the ``redis_server`` fixture), and
kills it at the end.  Nobody else uses it, so a test may FLUSHDB the DB it was given.

PostgreSQL: the server on loopback (``DISPATCHER_TEST_PG``) is shared; every test database is
one of this session's (``fresh_postgres_database``), named ``dispatcher_t_<owner>_<random>``
where ``<owner>`` is host, pid and start time of the session's process (tests/procs.owner_tag).
The session drops all of its databases at the end; the databases of an owner that is gone (a
SIGKILLed run) are dropped by the next session that creates one.

``cleanup()`` runs at the end of the session (tests/conftest.py), at exit, and after SIGTERM /
SIGHUP, which ``install_signal_handlers()`` turns into a KeyboardInterrupt so that pytest tears
the session down as on Ctrl-C.  It kills every child process (tests/procs.kill_all), the Redis
server and drops the databases.

Absent server: the test is skipped locally but FAILS under CI (``CI=true``), so a green CI run
cannot hide integration tests that never ran.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from urllib.parse import urlsplit

import pytest

from tests.procs import RedisServer, have_redis_server, kill_all, owner_alive, owner_tag

PG_DSN = os.environ.get("DISPATCHER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_OWNED = re.compile(r"^dispatcher_[a-z]+_(?P<owner>[0-9a-f]{4}_\d+_\d+)_[0-9a-f]{8}$")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def absent(msg: str) -> None:
    """A server or tool the test needs is missing: skip locally, fail under CI."""
    if in_ci():
        pytest.fail(msg + " (CI=true: integration tests must run)")
    pytest.skip(msg)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(name: str, host: str, port: int) -> None:
    if not port_open(host, port):
        absent(f"{name} not reachable on {host}:{port}")


# ------------------------------------------------------------------------------------ state
class _Session:
    """What this process started and must remove."""

    redis: RedisServer | None = None
    databases: dict[str, str] = {}  # name -> maintenance DSN it was created through
    swept: set[str] = set()  # maintenance DSNs already swept of dead owners' databases
    exit_hook = False
    stopping = False  # a SIGTERM/SIGHUP arrived
    cleaning = False


def _at_exit() -> None:
    if not _Session.exit_hook:
        atexit.register(cleanup)
        _Session.exit_hook = True


# ------------------------------------------------------------------------------------ Redis
def session_redis() -> RedisServer:
    """This session's redis-server, started on first use (skip locally / fail in CI when the
    ``redis-server`` binary is absent)."""
    if _Session.redis is None:
        if not have_redis_server():
            absent("redis-server not found on PATH")
        _at_exit()
        _Session.redis = RedisServer().start()
    return _Session.redis


def redis_url(db: int = 0) -> str:
    """URL of DB ``db`` of this session's own redis-server (flush it as you please)."""
    return session_redis().url_db(db)


@contextmanager
def redis_or_own(url: str | None) -> Iterator[str]:
    """``url`` if given, else a redis-server of our own for the block (the benchmarks)."""
    if url:
        yield url
        return
    srv = RedisServer().start()
    try:
        yield srv.url
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------ PostgreSQL
def _drop(dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sweep_databases(dsn: str = PG_DSN) -> list[str]:
    """Drop the test/bench databases whose owner process is gone (a run that was SIGKILLed)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database")]
    dropped = []
    for name in names:
        m = _OWNED.match(name)
        if m and not owner_alive(m["owner"]):
            with contextlib.suppress(psycopg.Error):  # another session sweeping it too
                _drop(dsn, name)
                dropped.append(name)
    return dropped


@contextmanager
def throwaway_database(dsn: str = PG_DSN, prefix: str = "dispatcher_t_") -> Iterator[str]:
    """Create a database on the server of ``dsn``, yield its SQLAlchemy URL, drop it after (and
    at exit / in ``cleanup()`` if the block never finished).  No pytest here: the benchmarks
    use it too."""
    import psycopg

    if dsn not in _Session.swept:
        _Session.swept.add(dsn)
        sweep_databases(dsn)
    name = f"{prefix}{owner_tag()}_{uuid.uuid4().hex[:8]}"
    _at_exit()
    _Session.databases[name] = dsn  # before CREATE: a signal in between still drops it
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base = dsn.rsplit("/", 1)[0]
        yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    finally:
        _drop(dsn, name)
        _Session.databases.pop(name, None)


def conninfo(url: str) -> str:
    """psycopg conninfo of a SQLAlchemy ``postgresql+psycopg://`` URL."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A throw-away database on the loopback PostgreSQL (skip locally / fail in CI if absent)."""
    u = urlsplit(PG_DSN)
    require("PostgreSQL", u.hostname or "127.0.0.1", u.port or 5432)
    with throwaway_database() as url:
        yield url


# ------------------------------------------------------------------------------------ cleanup
def cleanup() -> None:
    """Kill every child process, stop this session's redis-server, drop its databases.
    Idempotent; says on stderr what a test had left behind."""
    _Session.cleaning = True
    if _Session.redis is not None:
        _Session.redis.stop()
        _Session.redis = None
    left = kill_all()
    dbs = list(_Session.databases.items())
    for name, dsn in dbs:
        with contextlib.suppress(Exception):  # the server may be gone; the next sweep drops it
            _drop(dsn, name)
        _Session.databases.pop(name, None)
    if left or dbs:
        print(
            f"\ntest cleanup: killed {len(left)} processes {sorted(left)}, "
            f"dropped {len(dbs)} databases",
            file=sys.stderr,
        )


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP stop the session like Ctrl-C (pytest then tears every fixture down
    and ``cleanup()`` runs); a second signal during that teardown is ignored."""

    def stop(signum: int, frame: FrameType | None) -> None:
        if _Session.cleaning or _Session.stopping:
            return
        _Session.stopping = True
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, stop)
