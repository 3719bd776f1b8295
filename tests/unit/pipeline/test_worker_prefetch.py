"""A worker process takes no more queue messages than it has threads (each may carry a batch of
rows): the other processes get the rest."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker

from workers.middleware import FairPrefetch


def _consumer_prefetch(monkeypatch, env: int) -> dict[str, int]:
    # dramatiq reads dramatiq_queue_prefetch from the environment when it is imported
    monkeypatch.setattr(dramatiq.worker, "QUEUE_PREFETCH", env)
    broker = StubBroker()
    broker.add_middleware(FairPrefetch())
    broker.declare_queue("deliver")
    worker = dramatiq.Worker(broker, worker_threads=3, worker_timeout=100)
    worker.start()
    try:
        return {q: c.prefetch for q, c in worker.consumers.items() if not q.endswith(".DQ")}
    finally:
        worker.stop()


def test_a_worker_prefetches_one_message_per_thread(monkeypatch):
    assert _consumer_prefetch(monkeypatch, 0) == {"deliver": 3}  # Dramatiq's own: 6


def test_the_operators_prefetch_setting_wins(monkeypatch):
    assert _consumer_prefetch(monkeypatch, 10) == {"deliver": 10}
