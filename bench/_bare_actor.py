"""The pipeline benchmark's ceiling: a bare Dramatiq actor that sends one message through the
official twilio client per queue message, on the same Redis broker set-up as ``workers.broker``.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/14 BENCH_SANDBOX_URL=http://127.0.0.1:PORT \\
        python -m dramatiq bench._bare_actor --processes 2 --threads 8

Like ``workers.broker``, importing this module sets the global broker (the ``dramatiq`` CLI needs
it); constructing a RedisBroker does not connect.  The twilio client is built on first use, one per
process, configured as ``dispatcher.gateway.client.TwilioGateway`` configures its own.  A
message may name a ``status_callback`` URL (bench/pipeline.py's second ceiling points it at a
bare receiver, bench/_sink.py).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from dispatcher.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN

QUEUE = "bench_bare"
SERVICE_SID = "MG" + "0" * 31 + "1"

broker = RedisBroker(
    url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
    heartbeat_timeout=30_000,
    dead_message_ttl=86_400_000 * 7,
)
dramatiq.set_broker(broker)

_lock = threading.Lock()
_client: dict[str, Any] = {}


def client() -> Any:
    with _lock:
        c = _client.get("c")
        if c is None:
            from twilio.rest import Client

            from dispatcher.gateway.client import http_transport

            # the pipeline's workers log at WARNING: per-request INFO lines would tax the ceiling
            logging.getLogger("twilio").setLevel(logging.WARNING)
            base = os.environ.get("BENCH_SANDBOX_URL", "http://127.0.0.1:8765").rstrip("/")
            # the gateway's transport (environment read once), so the ratio measures the
            # pipeline and not a difference in how requests is set up
            c = Client(
                SANDBOX_ACCOUNT_SID,
                SANDBOX_AUTH_TOKEN,
                http_client=http_transport(base, 10),
                environment={},
            )
            c.edge = None
            c.region = None
            c.api.base_url = base
            c.messaging.base_url = base
            _client["c"] = c
        return c


@dramatiq.actor(queue_name=QUEUE, max_retries=20, min_backoff=500, max_backoff=30_000)
def bare_send(to: str, body: str, status_callback: str | None = None) -> None:
    """One create; with ``status_callback`` the sandbox posts the message's status callbacks
    there (the gateway passes the webhook server's /twilio/status the same way)."""
    kwargs: dict[str, Any] = {}
    if status_callback:
        kwargs["status_callback"] = status_callback
    client().messages.create(
        to=to, body=body, messaging_service_sid=SERVICE_SID, validity_period=36000, **kwargs
    )
