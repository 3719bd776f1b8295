"""A worker process builds its pipeline when it boots, not on its first message."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.brokers.stub import StubBroker

from workers import actors
from workers.middleware import Warmup


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
