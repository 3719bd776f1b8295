"""Virtual-clock simulation of a dispatch pipeline over the throttle (tests, bench/throttle.py).

Models the pipeline the throttle is designed for: every message is enqueued once (fan-out); a
worker takes it, calls ``reserve(max_wait_s=H)``; a booked future slot -> re-enqueue with delay
``wait_s`` and, on wake-up (a little late), ``send_status`` -> send.  Counts queue operations.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dispatcher.clock import FakeClock
from dispatcher.throttle.policy import Bucket
from dispatcher.throttle.redis import RedisThrottle
from dispatcher.throttle.reservation import Reservation


def window_violations(times: Sequence[float], period_s: float, limit: int,
                      costs: Sequence[int] | None = None) -> int:  # fmt: skip
    """How many half-open windows ``[t_i, t_i + period)`` (starting at a send) exceed ``limit``.

    Times are compared in whole milliseconds (the throttle's resolution).  Checking windows that
    start at a send is enough: any window can slide right to its first send without losing one.
    """
    pts = sorted(zip((round(t * 1000) for t in times), costs or [1] * len(times), strict=True))
    p = round(period_s * 1000)
    bad, j, load = 0, 0, 0
    for i in range(len(pts)):
        while j < len(pts) and pts[j][0] < pts[i][0] + p:
            load += pts[j][1]
            j += 1
        if load > limit:
            bad += 1
        load -= pts[i][1]
    return bad


@dataclass
class SimResult:
    sends: list[float] = field(default_factory=list)
    queue_ops: int = 0
    reserves: int = 0
    late: int = 0

    @property
    def ops_per_send(self) -> float:
        return self.queue_ops / max(1, len(self.sends))


def simulate_backlog(
    throttle: RedisThrottle,
    clock: FakeClock,
    buckets_of: Callable[[int], list[Bucket]],
    n: int,
    *,
    max_wait_s: float,
    lateness: Callable[[random.Random], float] = lambda rng: 0.0,
    seed: int = 1,
) -> SimResult:
    """Run ``n`` messages enqueued at ``clock.time()``; returns actual send times and op counts."""
    rng = random.Random(seed)
    res = SimResult()
    q: list[tuple[float, int, int, Reservation | None]] = []
    seq = 0
    for i in range(n):
        heapq.heappush(q, (clock.time(), seq, i, None))
        seq += 1
        res.queue_ops += 1
    while q:
        at, _, i, booked = heapq.heappop(q)
        clock.set(max(clock.time(), at))
        if booked is not None:
            st = throttle.send_status(booked)
            if st == "send":
                res.sends.append(clock.time())
                continue
            res.late += 1
            if st == "late":
                throttle.release(booked)
        r = throttle.reserve(buckets_of(i), max_wait_s=max_wait_s)
        res.reserves += 1
        if r.allowed and r.wait_s == 0:
            res.sends.append(clock.time())
            continue
        delay = r.wait_s + lateness(rng)
        heapq.heappush(q, (clock.time() + delay, seq, i, r if r.allowed else None))
        seq += 1
        res.queue_ops += 1
    return res
