"""Signed webhook delivery (status callbacks, inbound messages), pluggable by mode.

* :class:`HttpCallbackSender` -- server mode: POST over keep-alive HTTP from a small thread pool.
* :class:`AsgiCallbackSender` -- embedded mode: call a webhook ASGI app in this process.
* :class:`RecordingCallbackSender` -- tests: keep every callback in a list.

Failures are logged and counted, never raised: a broken webhook must not crash the carrier.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

log = logging.getLogger(__name__)


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature of a form POST (compliance.md section 9.2): URL + sorted name+value,
    HMAC-SHA1 keyed by the auth token, base64."""
    payload = url + "".join(k + params[k] for k in sorted(params))
    mac = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


@dataclass(frozen=True, slots=True)
class Callback:
    url: str
    params: dict[str, str]
    headers: dict[str, str]


def signed_callback(auth_token: str, url: str, params: dict[str, str]) -> Callback:
    headers = {
        "X-Twilio-Signature": twilio_signature(auth_token, url, params),
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "TwilioProxy/1.1",
        "I-Twilio-Idempotency-Token": hashlib.sha1(
            repr(sorted(params.items())).encode()
        ).hexdigest(),
    }
    return Callback(url=url, params=params, headers=headers)


class CallbackSender(Protocol):
    def send(self, cb: Callback) -> None:
        """Deliver (or schedule delivery of) one callback; never raises."""
        ...

    def close(self) -> None: ...


@dataclass
class DeliveryStats:
    sent: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, ok: bool) -> None:
        with self.lock:
            if ok:
                self.sent += 1
            else:
                self.failed += 1


class RecordingCallbackSender:
    """Keeps callbacks in ``self.callbacks`` (thread-safe)."""

    def __init__(self) -> None:
        self.callbacks: list[Callback] = []
        self._lock = threading.Lock()

    def send(self, cb: Callback) -> None:
        with self._lock:
            self.callbacks.append(cb)

    def close(self) -> None:
        pass


def _deliver(stats: DeliveryStats, cb: Callback, what: str, post: Any) -> None:
    """Make one callback POST, log a failure, count the outcome; never raise."""
    try:
        r = post()
        ok = r.status_code < 400
        if not ok:
            log.warning("%s to %s answered HTTP %s", what, cb.url, r.status_code)
    except Exception as e:  # noqa: BLE001 - never crash the sandbox
        ok = False
        log.warning("%s to %s failed: %s", what, cb.url, type(e).__name__)
    stats.count(ok)


class HttpCallbackSender:
    """POSTs callbacks over HTTP from ``workers`` threads (so a slow webhook never stalls ticks),
    each thread on its own keep-alive connection (dispatcher.sandbox.keepalive:
    a fraction of httpx's CPU per request)."""

    def __init__(self, *, workers: int = 4, timeout: float = 5.0) -> None:
        from dispatcher.sandbox.keepalive import KeepAliveClient

        self._client = KeepAliveClient(timeout)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-cb")
        self.stats = DeliveryStats()

    def send(self, cb: Callback) -> None:
        try:
            self._pool.submit(self._post, cb)
        except RuntimeError:  # pool shut down
            log.debug("callback dropped: sender closed")

    def _post(self, cb: Callback) -> None:
        _deliver(
            self.stats,
            cb,
            "callback",
            lambda: self._client.post_form(cb.url, cb.params, cb.headers),
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
        self._client.close()


class AsgiCallbackSender:
    """Calls a webhook ASGI app in this process; the URL's path and host are kept (signatures
    are computed over the full URL, as the app will see it)."""

    def __init__(self, app: Any, *, timeout: float = 5.0) -> None:
        from dispatcher.gateway.transport import LoopThread

        self._app = app
        self._timeout = timeout
        self._loop = LoopThread("sandbox-cb-asgi")
        self._client: httpx.AsyncClient | None = None
        self.stats = DeliveryStats()

    async def _post(self, cb: Callback) -> httpx.Response:
        if self._client is None:
            self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self._app))
        return await self._client.post(cb.url, data=cb.params, headers=cb.headers)

    def send(self, cb: Callback) -> None:
        _deliver(
            self.stats,
            cb,
            "in-process callback",
            lambda: self._loop.run(self._post(cb), self._timeout),
        )

    def close(self) -> None:
        if self._client is not None:
            try:
                self._loop.run(self._client.aclose(), 5)
            except Exception:  # noqa: BLE001
                log.debug("closing in-process callback client failed", exc_info=True)
            self._client = None
        self._loop.close()
