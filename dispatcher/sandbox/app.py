"""The sandbox carrier as a Starlette ASGI app: Twilio's paths and shapes, plus ``/_sandbox/``.

Handlers stay lean (form parsed with ``parse_qsl``, JSON with ``json.dumps``) so the carrier is
never the bottleneck of a benchmark.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from dispatcher.errors import DispatcherError
from dispatcher.sandbox.carrier import Sandbox
from dispatcher.sandbox.config import SandboxConfig
from dispatcher.sandbox.wire import ApiError, error_body

log = logging.getLogger(__name__)
_JSON = "application/json"


class DroppedConnection(ConnectionAbortedError):
    """Raised after the response has started: the server closes the connection mid-answer."""


class _DropResponse(Response):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        raise DroppedConnection("sandbox fault: connection dropped after accepting")


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")), status_code=status, media_type=_JSON)


def _error(e: ApiError) -> Response:
    return _json(e.body(), e.status)


def _basic(request: Request) -> tuple[str | None, str | None]:
    h = request.headers.get("authorization")
    if not h or not h[:6].lower() == "basic ":
        return None, None
    try:
        user, _, pw = base64.b64decode(h[6:]).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return user, pw


async def _form(request: Request) -> dict[str, str]:
    raw = (await request.body()).decode("utf-8", "replace")
    form: dict[str, str] = {}
    media: list[str] = []
    for k, v in parse_qsl(raw, keep_blank_values=True):
        if k == "MediaUrl":
            media.append(v)
        else:
            form[k] = v
    if media:
        form["__media__"] = "\n".join(media)
    return form


def create_app(
    config: SandboxConfig | None = None,
    *,
    sandbox: Sandbox | None = None,
    ticker: bool = True,
) -> Starlette:
    """The ASGI app.  ``app.state.sandbox`` is the :class:`Sandbox`.  With ``ticker`` the app's
    lifespan starts the real-time status ticker (server mode); embedded mode calls
    ``sandbox.start()`` itself since in-process transports run no lifespan."""
    sb = sandbox or Sandbox(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if ticker:
            sb.start()
        try:
            yield
        finally:
            if ticker:
                sb.stop()

    api = _TwilioApi(sb)
    app = Starlette(
        routes=[*api.routes(), *_AdminApi(sb).routes()],
        middleware=[Middleware(_CreateShortcut, api=api)],
        lifespan=lifespan,
        exception_handlers={DispatcherError: _on_input_error, HTTPException: _on_http_error},
    )
    app.state.sandbox = sb
    return app


_ACCOUNT = "/2010-04-01/Accounts/{account}"


class _CreateShortcut:
    """``POST .../Messages.json`` (CreateMessage, the one request a send makes) straight to
    :meth:`_TwilioApi.create`, past Starlette's router and per-route request/exception wrappers:
    a third of the app's time per send.  Same path pattern, same handler, same error answers
    (``DispatcherError`` as the app's handler renders it); every other request goes on to the
    app, which routes ``GET`` on that path and answers 405 to the other methods as before."""

    def __init__(self, app: ASGIApp, api: _TwilioApi) -> None:
        self.app = app
        self.api = api
        self.path = compile_path(_ACCOUNT + "/Messages.json")[0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = self.path.match(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        scope["path_params"] = match.groupdict()
        request = Request(scope, receive)
        try:
            response = await self.api.create(request)
        except DispatcherError as e:
            response = await _on_input_error(request, e)
        await response(scope, receive, send)


class _TwilioApi:
    """Twilio's paths the product calls (Messages, Usa2p campaigns), Basic-authenticated."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb

    def routes(self) -> list[Route]:
        acct = _ACCOUNT
        usa2p = "/v1/Services/{service}/Compliance/Usa2p"
        return [
            Route(acct + "/Messages.json", self.messages, methods=["GET"]),
            Route(acct + "/Messages/{sid}.json", self.message, methods=["GET", "POST", "DELETE"]),
            Route(usa2p, self.usa2p_list, methods=["GET"]),
            Route(usa2p + "/{sid}", self.usa2p_one, methods=["GET"]),
        ]

    def authed(self, request: Request) -> None:
        user, pw = _basic(request)
        self.sb.check_auth(user, pw, request.path_params.get("account"))

    async def messages(self, request: Request) -> Response:
        """ListMessage (CreateMessage comes by :class:`_CreateShortcut`)."""
        try:
            self.authed(request)
            return _json(self.sb.list(request.query_params, request.url.path))
        except ApiError as e:
            return _error(e)

    async def create(self, request: Request) -> Response:
        sb = self.sb
        try:
            self.authed(request)
            result = sb.create(await _form(request))
        except ApiError as e:
            return _error(e)
        if result.slow_s:
            await asyncio.sleep(result.slow_s)
        if result.fault == "drop":
            return _DropResponse()
        if result.fault == "delay":
            await asyncio.sleep(sb.config.faults.timeout_delay_s)
        return _json(result.message, 201)

    async def message(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        try:
            self.authed(request)
            if request.method == "GET":
                return _json(self.sb.get(sid))
            if request.method == "DELETE":
                self.sb.delete(sid)
                return Response(status_code=204)
            return _json(self.sb.update(sid, await _form(request)))
        except ApiError as e:
            return _error(e)

    async def usa2p_list(self, request: Request) -> Response:
        try:
            self.authed(request)
        except ApiError as e:
            return _error(e)
        mg = request.path_params["service"]
        items = self.sb.campaigns(mg)
        url = f"https://messaging.twilio.com/v1/Services/{mg}/Compliance/Usa2p"
        size = len(items) or 50
        return _json(
            {
                "compliance": items,
                "meta": {
                    "page": 0,
                    "page_size": size,
                    "first_page_url": f"{url}?PageSize={size}&Page=0",
                    "previous_page_url": None,
                    "url": f"{url}?PageSize={size}&Page=0",
                    "next_page_url": None,
                    "key": "compliance",
                },
            }
        )

    async def usa2p_one(self, request: Request) -> Response:
        try:
            self.authed(request)
            return _json(
                self.sb.campaign(request.path_params["service"], request.path_params["sid"])
            )
        except ApiError as e:
            return _error(e)


class _AdminApi:
    """``/_sandbox/``: what tests, benchmarks and the CLI use to inspect and steer the carrier
    (unauthenticated: the sandbox is a local test double)."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb

    def routes(self) -> list[Route]:
        return [
            Route("/_sandbox/health", self.health, methods=["GET"]),
            Route("/_sandbox/messages", self.messages, methods=["GET"]),
            Route("/_sandbox/config", self.config, methods=["GET", "POST"]),
            Route("/_sandbox/faults", self.faults, methods=["POST"]),
            Route("/_sandbox/reset", self.reset, methods=["POST"]),
            Route("/_sandbox/tick", self.tick, methods=["POST"]),
            Route("/_sandbox/inbound", self.inbound, methods=["POST"]),
        ]

    async def health(self, request: Request) -> Response:
        return _json({"ok": True, "messages": self.sb.message_count()})

    async def messages(self, request: Request) -> Response:
        return _json({"messages": self.sb.records(), "stats": self.sb.stats.__dict__})

    async def config(self, request: Request) -> Response:
        if request.method == "POST":
            cfg = self.sb.configure(await _json_body(request))
            return _json(cfg.to_dict())
        return _json(self.sb.config.to_dict())

    async def faults(self, request: Request) -> Response:
        f = self.sb.set_faults(await _json_body(request))
        return _json(f.__dict__)

    async def reset(self, request: Request) -> Response:
        self.sb.reset()
        return _json({"ok": True})

    async def tick(self, request: Request) -> Response:
        return _json({"applied": await asyncio.to_thread(self.sb.tick)})

    async def inbound(self, request: Request) -> Response:
        doc = await _json_body(request)
        frm, body = doc.get("from"), doc.get("body")
        if not isinstance(frm, str) or not isinstance(body, str):
            return _json({"error": "'from' and 'body' are required strings"}, 400)
        params = await asyncio.to_thread(
            self.sb.inbound, frm, body, to=doc.get("to"), url=doc.get("url")
        )
        return _json(params)


async def _on_input_error(request: Request, exc: Exception) -> Response:
    return _json({"error": str(exc)}, 400)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    if status == 404:
        return _json(
            error_body(404, 20404, f"The requested resource {request.url.path} was not found"),
            404,
        )
    return _json(error_body(status, 20000 + status, str(getattr(exc, "detail", ""))), status)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise _BadJson("request body is not JSON") from e
    if not isinstance(doc, dict):
        raise _BadJson("request body must be a JSON object")
    return doc


class _BadJson(DispatcherError):
    pass
