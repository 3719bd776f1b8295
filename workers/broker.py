"""Broker setup.  Importing this module sets the global Dramatiq broker (the ``dramatiq`` CLI
imports ``workers.actors``, which imports this): a RedisBroker when ``DISPATCHER_REDIS_URL`` is
set, else a StubBroker for the embedded mode.  Construct only; no network at import."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker

from dispatcher.settings import Settings, get_settings


class EmbeddedBroker(StubBroker):
    """The StubBroker, listing its delay queues as delay queues only, as RedisBroker does.

    Dramatiq 2.2's StubBroker keeps each delay queue in ``queues`` too, and a worker started
    after the actors were declared (``Worker.start`` replays the declared queues to its
    middleware) then consumes ``<queue>.DQ`` as a plain queue: with the plain queue's prefetch
    (one message per thread, ``FairPrefetch``) instead of the delay prefetch (1 000 per thread).
    That consumer holds 8 delayed messages at a time, taken in the order they were enqueued, not
    by due time: a message due now waited in the queue behind 8 due later.  Measured in the
    embedded mode at 30 per 10 s (bench/utilisation.py): 4 of a window's 8 booked groups reached
    a worker one window (10.5 s) late, efficiency 0.63 and 2 windows over at the carrier.
    """

    def get_declared_queues(self) -> set[str]:
        return set(self.queues) - self.delay_queues


def build_broker(settings: Settings) -> dramatiq.Broker:
    if settings.redis_url:
        from dramatiq.brokers.redis import RedisBroker

        # heartbeat_timeout: a killed worker's unacked messages return to the queue after this
        return RedisBroker(
            url=settings.redis_url, heartbeat_timeout=30_000, dead_message_ttl=86_400_000 * 7
        )
    return EmbeddedBroker()


def _setup() -> dramatiq.Broker:
    existing = dramatiq.broker.global_broker
    if existing is not None:
        return existing
    b = build_broker(get_settings())
    dramatiq.set_broker(b)
    return b


broker = _setup()
QUEUE = get_settings().queue_name
