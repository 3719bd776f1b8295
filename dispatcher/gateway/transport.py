"""In-process HTTP: route the official client's requests to an ASGI app without a port.

The twilio client still builds and parses real HTTP requests; only the socket is replaced by
``httpx.ASGITransport`` running on a private event loop in a daemon thread.  Transport failures are
raised as the same ``requests`` exceptions the default client raises, so the gateway classifies
them identically in embedded and server mode.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import httpx
import requests
from twilio.http import HttpClient
from twilio.http.request import Request as TwilioRequest
from twilio.http.response import Response
from urllib3.exceptions import ProtocolError

_logger = logging.getLogger(__name__)

ASGIApp = Callable[
    [dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]
]
T = TypeVar("T")


class LoopThread:
    """One private asyncio loop in a daemon thread; ``run(coro, timeout)`` from any thread."""

    def __init__(self, name: str = "asgi-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()


class AsgiHttpClient(HttpClient):  # type: ignore[misc]  # twilio ships no type information
    """A ``twilio.http.HttpClient`` that sends every request to ``app`` in this process."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        timeout: float | None = 10.0,
        base_url: str = "http://sandbox.invalid",
        logger: logging.Logger = _logger,
    ) -> None:
        super().__init__(logger, False, timeout)
        self._loop = LoopThread("twilio-asgi")
        self._base_url = base_url
        self._client: httpx.AsyncClient | None = None
        self._app = app

    async def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self._app),  # type: ignore[arg-type]  # httpx's _ASGIApp is narrower than the ASGI spec's callable
                base_url=self._base_url,
            )
        return self._client

    async def _send(self, kwargs: dict[str, Any]) -> httpx.Response:
        client = await self._get_client()
        return await client.request(**kwargs)

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)
        self._test_only_last_request = TwilioRequest(
            method=method.upper(), url=url, auth=auth, params=params, data=data, headers=headers
        )
        kwargs: dict[str, Any] = {
            "method": method.upper(),
            "url": url,
            "params": _drop_none(params),
            "headers": headers,
            "auth": auth,
            "follow_redirects": allow_redirects,
        }
        if headers and headers.get("Content-Type", "").endswith("json"):
            kwargs["json"] = data
        elif data:
            kwargs["data"] = _drop_none(data)
        try:
            resp = self._loop.run(self._send(kwargs), timeout)
        except concurrent.futures.TimeoutError as e:
            raise requests.exceptions.ReadTimeout(f"in-process read timed out ({timeout} s)") from e
        except (httpx.HTTPError, OSError, RuntimeError) as e:
            # The app died mid-request: the request was delivered, the answer was lost.
            err = ProtocolError("Connection aborted.", e)
            raise requests.exceptions.ConnectionError(err) from e
        self._test_only_last_response = Response(resp.status_code, resp.text, resp.headers)
        return self._test_only_last_response

    def close(self) -> None:
        if self._client is not None:
            try:
                self._loop.run(self._client.aclose(), 5)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                _logger.debug("closing in-process client failed", exc_info=True)
            self._client = None
        self._loop.close()


def _drop_none(d: dict[str, object] | None) -> dict[str, Any] | None:
    """requests silently drops None values in params/data; httpx would send "None"."""
    if d is None:
        return None
    return {k: v for k, v in d.items() if v is not None}
