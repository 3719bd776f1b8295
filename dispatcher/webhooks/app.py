"""The webhook ASGI app: ``create_app(runtime)``."""

from __future__ import annotations

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
    app: FastAPI = new_app()
    app.state.webhooks = ctx
    status.install(app, ctx)  # first: the hottest route is matched first
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
