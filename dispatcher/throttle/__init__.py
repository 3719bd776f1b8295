"""Rate limiting: bucket policy (pure) and the atomic Redis reservation script.

The Redis half is imported on first use: the pure policy (``throttle.policy``, which the
schedule model and ``run show`` use) must not load a Redis client library."""

from __future__ import annotations

from typing import Any

from dispatcher.throttle.policy import Bucket, buckets_for
from dispatcher.throttle.reservation import Reservation

__all__ = ["Bucket", "RedisThrottle", "Reservation", "buckets_for"]


def __getattr__(name: str) -> Any:
    if name == "RedisThrottle":
        from dispatcher.throttle import redis

        return redis.RedisThrottle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
