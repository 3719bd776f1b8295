"""Fixtures for the API tests: a Runtime over a test database, the stand-alone API app, a small
world (brand + campaign from the seed) and API keys."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher import apikeys, registry
from dispatcher.api import create_api_app
from dispatcher.clock import FakeClock
from dispatcher.runtime import Runtime
from dispatcher.settings import Settings

SEED = Path(__file__).parents[3] / "dispatcher" / "data" / "usa2p_seed004.json"
ALL_SCOPES = ",".join(apikeys.SCOPES)


class ApiClient:
    """Sync client calling the ASGI app in process (one event loop per request, so several
    threads may call at once).  App exceptions propagate."""

    __test__ = False

    def __init__(self, app: Any, token: str | None = None) -> None:
        self.app = app
        self.token = token

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.request(method, path, **kw)

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "default",
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        h = dict(headers or {})
        tok = self.token if token == "default" else token
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        content = kw.get("content")
        if content is not None and not isinstance(content, str | bytes):
            chunks = iter(content)

            async def stream() -> Any:  # sent chunk by chunk, as a real client streams
                for chunk in chunks:
                    yield chunk

            kw["content"] = stream()
        return asyncio.run(self._request(method, path, headers=h, **kw))

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", path, **kw)


def make_world(db: Any) -> dict[str, Any]:
    with db.session() as s:
        brand = registry.add_brand(s, name="Acme Corporation")
        campaign, _ = registry.import_campaign(s, json.loads(SEED.read_text()), brand=brand)
        return {
            "brand": brand.name,
            "brand_id": brand.id,
            "campaign": campaign.sid,
            "campaign_id": campaign.id,
        }


LIST_TEMPLATE = "Acme: your order shipped. Reply STOP to opt out"


def launch_list(client: ApiClient, world: dict[str, Any], n: int = 3) -> int:
    """POST /v1/runs for ``n`` listed recipients (+14155550000, ...); the new run's id."""
    body = {
        "campaign": world["campaign"],
        "template": LIST_TEMPLATE,
        "recipients": [{"phone": f"+1415555{i:04d}"} for i in range(n)],
    }
    r = client.post("/v1/runs", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["run"]["id"])


def make_key(db: Any, name: str, scopes: str = ALL_SCOPES) -> str:
    with db.session() as s:
        token, _ = apikeys.create_key(s, name, scopes)
    return token


def make_runtime(db: Any) -> Runtime:
    """A runtime over ``db`` with a Redis handed in (as every process would share one): on
    PostgreSQL a pause, cancel or revocation must signal the halt keys."""
    import fakeredis

    rt = Runtime(Settings(database_url=db.url), clock=FakeClock(), redis=fakeredis.FakeRedis())
    rt.__dict__["db"] = db
    return rt


@pytest.fixture
def db(sqlite_db):
    return sqlite_db


@pytest.fixture
def world(db):
    return make_world(db)


@pytest.fixture
def app(db):
    return create_api_app(make_runtime(db))


@pytest.fixture
def token(db):
    return make_key(db, "billing")


@pytest.fixture
def client(app, token, world):
    return ApiClient(app, token)


class SyncAsgiTransport(httpx.BaseTransport):
    """A sync httpx transport calling an ASGI app in process (for DispatcherClient in tests)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        req = httpx.Request(request.method, request.url, headers=request.headers, content=body)

        async def call() -> httpx.Response:
            resp = await httpx.ASGITransport(app=self.app).handle_async_request(req)
            content = await resp.aread()
            return httpx.Response(resp.status_code, headers=resp.headers, content=content)

        return asyncio.run(call())
