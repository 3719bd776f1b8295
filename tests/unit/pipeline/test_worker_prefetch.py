"""A worker process takes no more queue messages than it has threads (each may carry a batch of
rows): the other processes get the rest."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker

from workers.middleware import FairPrefetch


def _consumer_prefetch(monkeypatch, env: str | None) -> dict[str, int]:
    if env is None:
        monkeypatch.delenv("dramatiq_queue_prefetch", raising=False)
    else:
        monkeypatch.setenv("dramatiq_queue_prefetch", env)
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
    assert _consumer_prefetch(monkeypatch, None) == {"deliver": 3}  # Dramatiq's own: 6


def test_the_operators_prefetch_setting_wins(monkeypatch):
    # dramatiq reads the variable when it is imported; the middleware then leaves it alone
    monkeypatch.setattr(dramatiq.worker, "QUEUE_PREFETCH", 10)
    assert _consumer_prefetch(monkeypatch, "10") == {"deliver": 10}
