"""/healthz and /metrics."""

from __future__ import annotations

import fakeredis

from dispatcher.runtime import Runtime
from dispatcher.webhooks.app import create_app
from tests.unit.webhooks.conftest import TestClient, make_client


class BrokenRedis:
    def ping(self):
        raise ConnectionError("down")


def test_healthz_ok_with_redis(sqlite_db, clock):
    c = make_client(sqlite_db, clock, redis=fakeredis.FakeRedis())
    r = c.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_healthz_503_when_redis_down(sqlite_db, clock):
    r = make_client(sqlite_db, clock, redis=BrokenRedis()).get("/healthz")
    assert r.status_code == 503 and r.json()["redis"] == "error: ConnectionError"


def test_healthz_503_when_database_down(tmp_path, clock):
    from dispatcher.store import Database

    db = Database(f"sqlite:///{tmp_path}/missing/dir/x.db")
    (tmp_path / "missing" / "dir").rmdir()
    r = make_client(db, clock).get("/healthz")
    assert r.status_code == 503 and r.json()["database"].startswith("error")
    db.dispose()


def test_metrics_empty_without_renderer(sqlite_db, clock):
    r = make_client(sqlite_db, clock).get("/metrics")
    assert r.status_code == 200 and r.text == ""


def test_metrics_from_web_runtime(tmp_path):
    from dispatcher.settings import Settings

    rt = Runtime(Settings(database_url=f"sqlite:///{tmp_path}/w.db"))
    r = TestClient(create_app(rt)).get("/metrics")
    assert r.status_code == 200 and "dispatcher_" in r.text
    assert TestClient(create_app(rt)).get("/healthz").json()["redis"] == "ok"  # embedded
    from dispatcher import store

    store._databases.pop(rt.db.url, None)
    rt.db.dispose()


def test_serve_command_is_registered():
    from typer.testing import CliRunner

    from dispatcher.cli.app import app

    r = CliRunner().invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "--port" in r.stdout
