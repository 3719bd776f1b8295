"""A worker process builds its pipeline when it boots, not on its first message, and flushes its
held carried rows when it stops."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.brokers.stub import StubBroker

from workers import actors
from workers.middleware import FlushCarried, Warmup


def test_a_booting_worker_builds_its_pipeline_before_any_message():
    built = []
    broker = StubBroker()
    broker.add_middleware(Warmup(lambda: built.append("pipeline"), lambda b: b is broker))
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        assert built == ["pipeline"]
    finally:
        worker.stop()


def test_warm_up_is_only_for_distributed_workers_and_never_breaks_the_boot(caplog):
    broker = StubBroker()

    def broken() -> None:
        raise RuntimeError("database unreachable")

    broker.add_middleware(Warmup(broken, lambda b: True))
    skipped = Warmup(lambda: (_ for _ in ()).throw(AssertionError("built")), actors._distributed)
    skipped.after_worker_boot(broker, None)  # a StubBroker (embedded mode): nothing is built
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    with caplog.at_level(logging.WARNING, logger="workers.middleware"):
        worker.start()
    worker.stop()
    assert "warm-up failed" in caplog.text


def test_a_stopping_worker_puts_its_held_carried_rows_on_the_queue(caplog):
    """``FlushCarried``: the worker's stop flushes the carried rows its pipeline holds
    (``dispatcher.delivery.carry``), and a failure is logged, not raised into the stop."""
    flushed = []
    broker = StubBroker()
    broker.add_middleware(FlushCarried(lambda: flushed.append("flushed")))
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    assert flushed == []
    worker.stop()
    assert flushed == ["flushed"]

    def broken() -> None:
        raise ConnectionError("broker down")

    with caplog.at_level(logging.WARNING, logger="workers.middleware"):
        FlushCarried(broken).before_worker_shutdown(broker, None)
    assert "held carried rows" in caplog.text
