"""A minimal runtime for ``dispatcher serve`` (the shared composition root will replace it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dispatcher.clock import Clock, SystemClock
from dispatcher.settings import Settings
from dispatcher.store import Database, open_database


@dataclass
class WebRuntime:
    settings: Settings
    db: Database
    clock: Clock = field(default_factory=SystemClock)
    metrics: Any | None = None
    redis: Any | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> WebRuntime:
        redis = None
        if settings.redis_url:
            from redis import Redis

            redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        clock = SystemClock()
        metrics = None
        try:
            from dispatcher.metrics import Metrics

            metrics = Metrics(redis=redis, clock=clock)
        except ImportError:  # pragma: no cover - metrics is optional
            metrics = None
        return cls(settings=settings, db=open_database(settings.database_url), clock=clock,
                   metrics=metrics, redis=redis)

    def render_metrics(self) -> tuple[bytes, str]:
        if self.metrics is None:
            return b"", "text/plain; version=0.0.4; charset=utf-8"
        from dispatcher.metrics import render_latest

        return render_latest(self.metrics)
