"""Warnings an operator gets before a mistake costs replies (issue 18 item 5): a campaign no
inbound reply can be routed to, and a server listening on a port the public URL does not name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SEED = Path(__file__).parents[2] / "dispatcher" / "data" / "usa2p_seed004.json"


@pytest.fixture
def run(cli_run):
    return cli_run


@pytest.fixture
def no_service_seed(cli_env) -> Path:
    doc = json.loads(SEED.read_text())
    doc["messaging_service_sid"] = None
    path = cli_env / "no_service.json"
    path.write_text(json.dumps(doc))
    return path


def test_import_without_sender_or_service_warns_that_replies_cannot_be_routed(run, no_service_seed):
    assert run("brand", "add", "Acme Corporation").exit_code == 0
    r = run("campaign", "import", str(no_service_seed), "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["created"] is True  # stdout stays one JSON document
    assert "warning:" in r.stderr and "--sender" in r.stderr
    assert "inbound replies" in r.stderr


@pytest.mark.parametrize(
    "extra", [["--sender", "+14155550100"], []], ids=["with sender", "with service"]
)
def test_import_with_a_sender_or_a_service_does_not_warn(run, no_service_seed, extra):
    assert run("brand", "add", "Acme Corporation").exit_code == 0
    doc = no_service_seed if extra else SEED
    r = run("campaign", "import", str(doc), *extra)
    assert r.exit_code == 0 and "warning" not in r.stderr


class _FakeUvicorn:
    def __init__(self) -> None:
        self.ports: list[int] = []

    def run(self, app: Any, *, host: str, port: int, **kw: Any) -> None:
        self.ports.append(port)


@pytest.fixture
def uvicorn_runs(monkeypatch) -> _FakeUvicorn:
    import uvicorn

    fake = _FakeUvicorn()
    monkeypatch.setattr(uvicorn, "run", fake.run)
    return fake


@pytest.fixture
def no_runtime(monkeypatch) -> None:
    """`serve` and `up` build their app, then hand it to uvicorn: nothing needs to run here."""
    import dispatcher.logs
    import dispatcher.runtime
    import workers.embedded

    class _Runtime:
        def __init__(self, *a: Any, **kw: Any) -> None:
            self.webhook_app = object()

    class _Stack:
        def __init__(self, *a: Any, **kw: Any) -> None:
            self.runtime = _Runtime()

        def start(self) -> _Stack:
            return self

        def stop(self) -> None:
            pass

    monkeypatch.setattr(dispatcher.runtime, "Runtime", _Runtime)
    monkeypatch.setattr(dispatcher.logs, "setup_logging", lambda *a, **kw: None)
    monkeypatch.setattr(workers.embedded, "EmbeddedStack", _Stack)


@pytest.mark.parametrize("command", ["serve", "up"])
def test_port_other_than_the_public_urls_warns_at_start(
    run, monkeypatch, uvicorn_runs, no_runtime, command
):
    monkeypatch.setenv("DISPATCHER_PUBLIC_BASE_URL", "http://127.0.0.1:8000")
    r = run(command, "--port", "8001")
    assert r.exit_code == 0 and uvicorn_runs.ports == [8001]
    assert "warning:" in r.stderr
    assert "8000" in r.stderr and "8001" in r.stderr and "403" in r.stderr


@pytest.mark.parametrize(
    ("url", "port"),
    [("http://127.0.0.1:8000", "8000"), ("https://hooks.example.com", "443")],
)
@pytest.mark.parametrize("command", ["serve", "up"])
def test_matching_port_does_not_warn(
    run, monkeypatch, uvicorn_runs, no_runtime, command, url, port
):
    monkeypatch.setenv("DISPATCHER_PUBLIC_BASE_URL", url)
    r = run(command, "--port", port)
    assert r.exit_code == 0 and uvicorn_runs.ports == [int(port)]
    assert "warning" not in r.stderr
