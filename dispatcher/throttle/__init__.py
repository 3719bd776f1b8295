"""Rate limiting: bucket policy (pure) and the atomic Redis reservation script."""

from dispatcher.throttle.policy import Bucket, buckets_for
from dispatcher.throttle.redis import RedisThrottle
from dispatcher.throttle.reservation import Reservation

__all__ = ["Bucket", "RedisThrottle", "Reservation", "buckets_for"]
