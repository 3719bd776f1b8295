"""Broker setup.  Importing this module sets the global Dramatiq broker (the ``dramatiq`` CLI
imports ``workers.actors``, which imports this): a RedisBroker when ``DISPATCHER_REDIS_URL`` is
set, else a StubBroker for the embedded mode.  Construct only; no network at import."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker

from dispatcher.settings import Settings, get_settings


def build_broker(settings: Settings) -> dramatiq.Broker:
    if settings.redis_url:
        from dramatiq.brokers.redis import RedisBroker

        # heartbeat_timeout: a killed worker's unacked messages return to the queue after this
        return RedisBroker(
            url=settings.redis_url, heartbeat_timeout=30_000, dead_message_ttl=86_400_000 * 7
        )
    return StubBroker()


def _setup() -> dramatiq.Broker:
    existing = dramatiq.broker.global_broker
    if existing is not None:
        return existing
    b = build_broker(get_settings())
    dramatiq.set_broker(b)
    return b


broker = _setup()
QUEUE = get_settings().queue_name
