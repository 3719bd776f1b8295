"""The webhook ASGI app: ``create_app(runtime)``."""

from __future__ import annotations

from fastapi import FastAPI

from dispatcher.webhooks import inbound, ops, status
from dispatcher.webhooks.context import Context, WebhookOptions
from dispatcher.webhooks.protocol import Runtime


def create_app(runtime: Runtime, *, options: WebhookOptions | None = None) -> FastAPI:
    """FastAPI app with ``/twilio/inbound``, ``/twilio/status``, ``/healthz``, ``/metrics``.

    Nothing is opened here: the runtime's database and Redis are used on each request.  The HTTP
    API (issue 11) adds its routers to the returned app (``app.include_router``)."""
    ctx = Context(runtime, options or WebhookOptions())
    app = FastAPI(title="SMS dispatcher", docs_url=None, redoc_url=None)
    app.state.webhooks = ctx
    app.include_router(inbound.router(ctx))
    app.include_router(status.router(ctx))
    app.include_router(ops.router(ctx))
    return app
