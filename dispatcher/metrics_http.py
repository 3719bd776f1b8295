"""HTTP request metrics of the webhook server and the API: one histogram,
``dispatcher_http_request_duration_seconds{handler, method, status}`` (its ``_count`` is the
request rate by status, its buckets the latency), recorded by a pure ASGI middleware.

``handler`` is the matched route's path template (``/twilio/status``, ``/v1/runs/{run_id}``), or
``unmatched``: bounded, never a raw path.  A webhook whose signature fails answers 403, so
``status="403"`` on a ``/twilio/`` handler is the signature failure rate (alert
``WebhookSignaturesFailing``).

Why our own 40 lines rather than prometheus-fastapi-instrumentator or starlette-exporter (both
maintained): neither is installed in the project's environment nor its offline package mirror,
and both default to prometheus-client's global registry, while every metric here lives on the
process's explicit registry (and its multiprocess files) that ``Metrics`` serves; what they add
over this (request/response sizes, a default ``/metrics`` route) the dashboards do not use.
"""

from __future__ import annotations

import time
from typing import Any

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
UNMATCHED = "unmatched"


class HttpMetrics:
    """ASGI middleware: times each HTTP request and records it on ``metrics.http_request``."""

    def __init__(self, app: Any, metrics: Any) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            handler = _handler(scope)
            try:
                self.metrics.http_request(
                    handler, scope.get("method", "GET"), status[0], time.perf_counter() - started
                )
            except Exception:  # noqa: BLE001, S110 - metrics never fail a request
                pass


def _handler(scope: Any) -> str:
    """The path template of the route that answered: FastAPI's routes put themselves in the
    scope; a plain Starlette route (the status webhook's) is found by matching again."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return str(path)
    from starlette.routing import Match

    app = scope.get("app")
    for r in getattr(app, "routes", ()):
        try:
            match, _ = r.matches(scope)
        except Exception:  # noqa: BLE001, S112 - an odd route is skipped
            continue
        if match is Match.FULL:
            return str(getattr(r, "path", UNMATCHED))
    return UNMATCHED


def prime_routes(app: Any, metrics: Any) -> None:
    """Each route's ``200`` series at 0 (a request rate reads 0, not "No data")."""
    for route in getattr(app, "routes", []):
        path = getattr(route, "path", None)
        for method in sorted(getattr(route, "methods", None) or ()):
            if path and method != "HEAD":
                metrics.http_request_labels(path, method, 200)
