"""The webhook ASGI app: ``create_app(runtime)``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from dispatcher.webhooks import inbound, ops, status
from dispatcher.webhooks.context import Context, WebhookOptions
from dispatcher.webhooks.protocol import Runtime


def create_app(runtime: Runtime, *, options: WebhookOptions | None = None) -> FastAPI:
    """FastAPI app with ``/twilio/inbound``, ``/twilio/status``, ``/healthz``, ``/metrics``.

    and the notifications API under ``/v1`` (its OpenAPI document is the app's ``/openapi.json``;
    webhook routes stay out of it).  Nothing is opened here: the runtime's database and Redis are
    used on each request."""
    from dispatcher.api import build_router, install_error_handlers, new_app

    ctx = Context(runtime, options or WebhookOptions())
    app: WebhookApp = new_app(WebhookApp)
    app.state.webhooks = ctx
    app.status_endpoint = status.install(app, ctx)  # first: the hottest route is matched first
    app.include_router(inbound.router(ctx))
    app.include_router(ops.router(ctx))
    app.include_router(build_router(runtime))  # the notifications API (docs/api.md)
    install_error_handlers(app)
    metrics = getattr(runtime, "metrics", None)
    if metrics is not None and hasattr(metrics, "http_request"):
        from dispatcher.metrics_http import HttpMetrics, prime_routes

        app.add_middleware(HttpMetrics, metrics=metrics)  # request rate, status, latency
        prime_routes(app, metrics)
    return app


class WebhookApp(FastAPI):
    """The FastAPI app, but ``POST /twilio/status`` -- most of the requests, 2-3 per message
    sent -- goes straight to its endpoint (status.StatusEndpoint), past FastAPI's and
    Starlette's middleware and routing."""

    status_endpoint: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            self.status_endpoint is not None
            and scope["type"] == "http"
            and scope["path"] == status.PATH
            and scope["method"] == "POST"
            and not self.root_path
        ):
            await self.status_endpoint(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)
