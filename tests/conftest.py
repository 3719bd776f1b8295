"""Fixtures every test may use, and the session's ownership of its servers (tests/servers.py):

- ``redis_server``: this session's own redis-server (``.url``, ``.url_db(n)``, ``.port``);
  ``redis_url(db)`` from tests/servers.py is the same server as a function.
- ``clean_redis_url``: DB 0 of that server, flushed before and after the test.
- ``pg_db`` / ``any_db``: a ``Database`` on a fresh PostgreSQL database (dropped after) / the
  same test on SQLite and PostgreSQL; ``fresh_postgres_database()`` for a bare URL.
- Child processes: ``tests.procs.Proc`` (own process group, killed at the end of the session).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.procs import RedisServer

# Tests never read the developer's environment by accident.
for _k in list(os.environ):
    if _k.startswith("DISPATCHER_") and not _k.startswith("DISPATCHER_TEST_"):
        del os.environ[_k]


def pytest_sessionstart(session: pytest.Session) -> None:
    """SIGTERM/SIGHUP stop the run like Ctrl-C (everything is torn down); what a SIGKILLed
    earlier run left running is killed now (its databases go when the first one is made)."""
    from tests.procs import sweep_orphans
    from tests.servers import install_signal_handlers

    install_signal_handlers()
    sweep_orphans()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every fixture's teardown: no child process, no redis-server, no test database."""
    from tests.servers import cleanup

    cleanup()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    from tests.servers import session_redis

    return session_redis()


@pytest.fixture
def clean_redis_url(redis_server: RedisServer) -> Iterator[str]:
    import redis

    url = redis_server.url_db(0)
    r = redis.Redis.from_url(url)
    r.flushdb()
    try:
        yield url
    finally:
        r.flushdb()
        r.close()


@pytest.fixture
def fake_clock():
    from dispatcher.clock import FakeClock

    return FakeClock()


@pytest.fixture
def sqlite_db(tmp_path):
    from dispatcher.store import Database

    db = Database(f"sqlite:///{tmp_path}/t.db")
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def pg_db():
    from dispatcher.store import Database
    from tests.servers import fresh_postgres_database

    with fresh_postgres_database() as url:
        db = Database(url)
        db.upgrade()
        yield db
        db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request):
    """The same test on SQLite and on the loopback PostgreSQL."""
    name = "sqlite_db" if request.param == "sqlite" else "pg_db"
    if request.param == "postgresql":
        request.applymarker(pytest.mark.integration)
    return request.getfixturevalue(name)


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """Run CLI commands against a fresh embedded database in tmp_path."""
    from dispatcher.settings import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISPATCHER_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()
    from dispatcher import store

    for db in store._databases.values():
        db.dispose()
    store._databases.clear()


@pytest.fixture
def cli_run(cli_env):
    """``cli_run("campaign", "list", "--json")``: the CLI in process (Typer's CliRunner), stdout
    and stderr apart, exceptions raised."""
    from typer.testing import CliRunner

    from dispatcher.cli.app import app

    runner = CliRunner()

    def _run(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return _run
