"""The embedded stack: everything in one process — SQLite, the StubBroker with in-process
Dramatiq worker threads, the Lua throttle on fakeredis, the scheduler, the webhook app and the
sandbox carrier.  The same actors, pipeline and scheduler code as the distributed mode."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq

from dispatcher.runtime import Runtime
from dispatcher.settings import Settings

log = logging.getLogger(__name__)


class EmbeddedStack:
    def __init__(
        self,
        settings: Settings,
        *,
        worker_threads: int = 8,
        clock: Any = None,
        sandbox_config: Any = None,
        tick_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.worker_threads = worker_threads
        self.runtime = Runtime(settings, clock=clock, sandbox_config=sandbox_config)
        self.tick_s = tick_s
        self.worker: dramatiq.Worker | None = None
        self.scheduler: Any = None

    def start(self) -> EmbeddedStack:
        from workers import actors, broker
        from workers.scheduler import Scheduler

        rt = self.runtime
        rt.db  # noqa: B018 - opens (and for SQLite upgrades) the database now
        rt.gateway  # noqa: B018 - starts the in-process sandbox carrier
        actors.set_runtime(rt)
        actors.pipeline()  # built before the first message, as a worker process's Warmup does
        self.worker = dramatiq.Worker(
            broker.broker, worker_threads=self.worker_threads, worker_timeout=100
        )
        self.worker.start()
        self.scheduler = Scheduler(
            rt,
            actors.enqueue_many,
            tick_s=self.tick_s,
            reconcile_s=5.0,
            resolve=lambda i: actors.pipeline().resolve(i),
            refresh=lambda i: actors.pipeline().refresh(i),
            scheduler_id="embedded",
        )
        self.scheduler.start()
        return self

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.worker is not None:
            self.worker.stop()
        self.runtime.close()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
