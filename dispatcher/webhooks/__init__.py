"""Twilio webhooks (inbound replies, status callbacks), health and metrics: one ASGI app.

Public API: ``create_app(runtime, *, options=None) -> FastAPI``, ``Runtime`` (protocol),
``WebhookOptions``.  See docs/webhooks.md.
"""

from dispatcher.webhooks.app import create_app
from dispatcher.webhooks.context import WebhookOptions
from dispatcher.webhooks.protocol import Runtime

__all__ = ["Runtime", "WebhookOptions", "create_app"]
