from __future__ import annotations

import os

import pytest

# Tests never read the developer's environment by accident.
for _k in list(os.environ):
    if _k.startswith("DISPATCHER_") and not _k.startswith("DISPATCHER_TEST_"):
        del os.environ[_k]


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
