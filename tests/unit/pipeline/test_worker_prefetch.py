"""A worker process takes no more queue messages than it has threads (each may carry a batch of
rows): the other processes get the rest."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq
from dramatiq.brokers.stub import StubBroker

from workers.broker import EmbeddedBroker
from workers.middleware import FairPrefetch


@contextmanager
def _worker(broker: dramatiq.Broker) -> Iterator[dramatiq.Worker]:
    """A started worker of 3 threads on ``broker`` (FairPrefetch added first), stopped after."""
    broker.add_middleware(FairPrefetch())
    broker.declare_queue("deliver")
    worker = dramatiq.Worker(broker, worker_threads=3, worker_timeout=100)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def _consumer_prefetch(monkeypatch, env: int) -> dict[str, int]:
    # dramatiq reads dramatiq_queue_prefetch from the environment when it is imported
    monkeypatch.setattr(dramatiq.worker, "QUEUE_PREFETCH", env)
    with _worker(StubBroker()) as worker:
        return {q: c.prefetch for q, c in worker.consumers.items() if not q.endswith(".DQ")}


def test_a_worker_prefetches_one_message_per_thread(monkeypatch):
    assert _consumer_prefetch(monkeypatch, 0) == {"deliver": 3}  # Dramatiq's own: 6


def test_the_operators_prefetch_setting_wins(monkeypatch):
    assert _consumer_prefetch(monkeypatch, 10) == {"deliver": 10}


def test_the_embedded_brokers_delay_queue_is_consumed_with_the_delay_prefetch(monkeypatch):
    """Dramatiq's StubBroker lists ``deliver.DQ`` among its queues, so a worker consumed it as a
    plain queue with the plain prefetch; the embedded broker lists it as a delay queue only."""
    monkeypatch.setattr(dramatiq.worker, "QUEUE_PREFETCH", 0)
    monkeypatch.setattr(dramatiq.worker, "DELAY_QUEUE_PREFETCH", 0)
    for cls, dq_prefetch in ((StubBroker, 3), (EmbeddedBroker, 3000)):
        with _worker(cls()) as worker:
            assert worker.consumers["deliver.DQ"].prefetch == dq_prefetch, cls


def test_a_delayed_message_due_now_is_not_held_behind_more_than_a_prefetch_due_later():
    """Nine messages due in a minute are enqueued first, then one due at once: it runs at once
    (on Dramatiq's StubBroker it waited for the minute, behind the delay queue's 3 prefetched
    messages, which are taken in the order they were enqueued)."""
    broker = EmbeddedBroker()
    ran = threading.Event()

    @dramatiq.actor(queue_name="deliver", broker=broker)
    def note(i: int) -> None:
        if i == 99:
            ran.set()

    with _worker(broker):
        for i in range(9):
            note.send_with_options(args=(i,), delay=60_000)
        note.send_with_options(args=(99,), delay=10)
        assert ran.wait(timeout=10), "the message due now waited behind those due later"
