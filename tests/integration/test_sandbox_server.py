"""The sandbox carrier as a real uvicorn server on an ephemeral loopback port."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from typer.testing import CliRunner

from dispatcher.clock import SystemClock
from dispatcher.errors import AmbiguousSendError, RetryableSendError
from dispatcher.gateway import TwilioGateway
from dispatcher.sandbox import SandboxConfig, default_campaign
from dispatcher.sandbox.server import BackgroundServer, server_app
from dispatcher.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from dispatcher.templates import body_hash
from tests.contract import spec
from tests.procs import Proc, free_port, wait_for

pytestmark = pytest.mark.integration
FROM = "+15005550006"
MG = "MG" + "a" * 32
QE = "QE" + "b" * 32


class Hooks:
    """A webhook receiver that verifies X-Twilio-Signature on everything it gets."""

    def __init__(self, token: str) -> None:
        self.validator = RequestValidator(token)
        self.received: list[tuple[str, dict[str, str], bool]] = []
        self.lock = threading.Lock()
        self.base_url = ""

        async def hook(request: Request) -> Response:
            form = {k: str(v) for k, v in (await request.form()).items()}
            url = self.base_url + request.url.path
            if request.url.query:
                url += "?" + request.url.query
            ok = self.validator.validate(url, form, request.headers.get("x-twilio-signature", ""))
            with self.lock:
                self.received.append((request.url.path, form, ok))
            return Response("<Response/>", media_type="application/xml")

        self.app = Starlette(routes=[Route("/twilio/{kind}", hook, methods=["POST"])])

    def items(self, path: str) -> list[tuple[str, dict[str, str], bool]]:
        with self.lock:
            return [r for r in self.received if r[0] == path]


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks(SANDBOX_AUTH_TOKEN)
    with BackgroundServer(h.app) as srv:
        h.base_url = srv.url
        yield h


@pytest.fixture
def carrier(hooks: Hooks) -> Iterator[tuple[BackgroundServer, Any]]:
    cfg = SandboxConfig(
        campaigns=[default_campaign(MG, QE)],
        inbound_url=hooks.base_url + "/twilio/inbound",
        schedule=__import__("dispatcher.sandbox.config", fromlist=["Schedule"]).Schedule(
            sending_after_s=0.01, sent_after_s=0.02, final_after_s=0.05
        ),
    )
    app = server_app(cfg)
    with BackgroundServer(app) as srv:
        yield srv, app.state.sandbox
    app.state.sandbox.callbacks.close()


@pytest.fixture
def gateway(carrier: tuple[BackgroundServer, Any]) -> Iterator[TwilioGateway]:
    gw = TwilioGateway(SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, carrier[0].url, timeout=5)
    yield gw
    gw.close()


def test_send_and_receive_signed_callbacks_over_http(
    gateway: TwilioGateway, hooks: Hooks, carrier: tuple[BackgroundServer, Any]
) -> None:
    url = hooks.base_url + "/twilio/status?run=1"
    sids = [
        gateway.send(f"+1415555010{i}", "hi", from_=FROM, status_callback=url).sid for i in range(3)
    ]
    wait_for(lambda: len(hooks.items("/twilio/status")) == 9)
    got = hooks.items("/twilio/status")
    assert all(ok for _, _, ok in got)
    for _, form, _ in got:
        spec.validate_callback(form)
    finals = {
        f["MessageSid"]: f["MessageStatus"] for _, f, _ in got if f["MessageStatus"] == "delivered"
    }
    assert set(finals) == set(sids)
    assert gateway.fetch(sids[0]).status == "delivered"


def test_list_paging_and_errors_over_http(gateway: TwilioGateway) -> None:
    for i in range(5):
        gateway.send("+14155550100", f"m{i}", from_=FROM)
    got = list(gateway.client.messages.stream(to="+14155550100", page_size=2))
    assert sorted(m.body for m in got) == [f"m{i}" for i in range(5)]
    with pytest.raises(TwilioRestException) as ei:
        gateway.client.messages.create(to="+15005550004", from_=FROM, body="x")
    assert ei.value.code == 21610
    assert gateway.fetch_campaign(MG, QE)["campaign_status"] == "VERIFIED"


def test_timeout_after_accept_drop_is_ambiguous_then_found(
    carrier: tuple[BackgroundServer, Any],
) -> None:
    srv, sandbox = carrier
    httpx.post(
        srv.url + "/_sandbox/faults", json={"timeout_after_accept": 1.0, "timeout_mode": "drop"}
    )
    gw = TwilioGateway(SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, srv.url, timeout=2)
    since = SystemClock().now() - timedelta(seconds=1)
    try:
        with pytest.raises(AmbiguousSendError):
            gw.send("+14155550100", "once only", from_=FROM)
        sandbox.set_faults({"timeout_after_accept": 0.0})
        found = gw.find_sent("+14155550100", FROM, since, body_hash("once only"))
        assert found is not None
        assert [r["sid"] for r in sandbox.records()] == [found.sid]
    finally:
        gw.close()


def test_timeout_after_accept_delay_is_ambiguous(carrier: tuple[BackgroundServer, Any]) -> None:
    srv, sandbox = carrier
    sandbox.set_faults(
        {"timeout_after_accept": 1.0, "timeout_mode": "delay", "timeout_delay_s": 1.5}
    )
    gw = TwilioGateway(SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, srv.url, timeout=0.3)
    try:
        with pytest.raises(AmbiguousSendError):
            gw.send("+14155550100", "hi", from_=FROM)
        assert len(sandbox.records()) == 1
    finally:
        gw.close()


def test_admin_inbound_and_cli_reply(
    carrier: tuple[BackgroundServer, Any], hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, _ = carrier
    r = httpx.post(srv.url + "/_sandbox/inbound", json={"from": "+14155550100", "body": "STOP"})
    assert r.status_code == 200
    wait_for(lambda: len(hooks.items("/twilio/inbound")) == 1)

    from dispatcher.cli.app import app
    from dispatcher.settings import get_settings

    monkeypatch.setenv("DISPATCHER_PUBLIC_BASE_URL", hooks.base_url)
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, ["sandbox", "reply", "+14155550101", "START", "--json"])
        assert res.exit_code == 0, res.output
        bad = CliRunner().invoke(app, ["sandbox", "reply", "not-a-phone", "START"])
        assert bad.exit_code == 1
    finally:
        get_settings.cache_clear()
    inbound = hooks.items("/twilio/inbound")
    assert len(inbound) == 2 and all(ok for _, _, ok in inbound)
    assert inbound[1][1]["Body"] == "START" and inbound[1][1]["From"] == "+14155550101"


def test_cli_serve_subprocess(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    proc = Proc(
        "sandbox",
        [
            sys.executable,
            "-c",
            "from dispatcher.cli.app import main; main()",
            "sandbox",
            "serve",
            "--port",
            str(port),
            "--fault-429",
            "1.0",
        ],
        env,
        tmp_path,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(url + "/_sandbox/health", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                assert proc.alive(), proc.tail()
                return False

        wait_for(up, timeout=20)
        gw = TwilioGateway(SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, url)
        with pytest.raises(RetryableSendError) as ei:
            gw.send("+14155550100", "hi", from_=FROM)
        assert ei.value.code == 20429
        gw.close()
    finally:
        proc.stop()
