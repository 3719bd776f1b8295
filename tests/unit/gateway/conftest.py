from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from dispatcher.clock import FakeClock
from dispatcher.gateway import TwilioGateway
from dispatcher.gateway.transport import AsgiHttpClient, LoopThread
from dispatcher.sandbox import (
    RecordingCallbackSender,
    Sandbox,
    SandboxConfig,
    create_app,
    default_campaign,
)
from tests.contract import spec

MG = "MG" + "a" * 32
QE = "QE" + "b" * 32
FROM = "+15005550006"
CALLBACK_URL = "https://hooks.example.com/twilio/status?run=7"


@dataclass
class Exchange:
    method: str
    url: str
    params: dict[str, Any] | None
    data: dict[str, Any] | None
    headers: dict[str, str] | None
    auth: tuple[str, str] | None
    status: int | None = None
    text: str = ""


class RecordingAsgiHttpClient(AsgiHttpClient):
    """Keeps every request/response so tests can check them against the spec."""

    def __init__(self, app: Any, **kw: Any) -> None:
        super().__init__(app, **kw)
        self.exchanges: list[Exchange] = []

    def request(self, method, url, params=None, data=None, headers=None, auth=None, **kw):  # type: ignore[override]
        ex = Exchange(method, url, params, data, headers, auth)
        self.exchanges.append(ex)
        resp = super().request(method, url, params, data, headers, auth, **kw)
        ex.status, ex.text = resp.status_code, resp.text
        return resp


@dataclass
class Env:
    sandbox: Sandbox
    app: Any
    gateway: TwilioGateway
    http: RecordingAsgiHttpClient
    callbacks: RecordingCallbackSender
    clock: FakeClock
    config: SandboxConfig
    extra: list[Any] = field(default_factory=list)

    def check_contract(self) -> int:
        """Validate every recorded exchange against the spec; returns how many."""
        for ex in self.http.exchanges:
            spec.validate_request(ex.method, ex.url, ex.params, ex.data, ex.headers, ex.auth)
            assert ex.status is not None
            spec.validate_response(ex.method, ex.url, ex.status, ex.text)
        return len(self.http.exchanges)


@pytest.fixture
def env() -> Iterator[Env]:
    clock = FakeClock()
    cfg = SandboxConfig(
        campaigns=[default_campaign(MG, QE)],
        service_senders={MG: "+15005550006"},
    )
    rec = RecordingCallbackSender()
    sb = Sandbox(cfg, clock=clock, callbacks=rec)
    app = create_app(sandbox=sb, ticker=False)
    http = RecordingAsgiHttpClient(app, timeout=5)
    gw = TwilioGateway(cfg.account_sid, cfg.auth_token, "http://sandbox.invalid", http_client=http)
    e = Env(sb, app, gw, http, rec, clock, cfg)
    try:
        yield e
    finally:
        gw.close()


class AsgiCaller:
    """Synchronous httpx calls into an ASGI app (admin endpoints, raw requests)."""

    def __init__(self, app: Any) -> None:
        self._loop = LoopThread("test-asgi")
        self._app = app

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self._app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sb") as c:
                return await c.request(method, path, **kw)

        return self._loop.run(go(), 10)

    def close(self) -> None:
        self._loop.close()


@pytest.fixture
def caller(env: Env) -> Iterator[AsgiCaller]:
    c = AsgiCaller(env.app)
    try:
        yield c
    finally:
        c.close()
