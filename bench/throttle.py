"""Throttle benchmark on real Redis: bare EVALSHA (ceiling) vs reserve() with 1 and 4 buckets.

Run: .venv/bin/python bench/throttle.py [--redis redis://HOST:PORT/DB] [--seconds 2]
Not a pass/fail test; prints rates, ratios to the ceiling, and a simulated 500-recipient run.
Without ``--redis`` it starts a redis-server of its own on a free port (stopped at the end);
the DB given with ``--redis`` is flushed before, during and after.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

from dispatcher import keys
from dispatcher.clock import FakeClock
from dispatcher.throttle import Bucket, RedisThrottle

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/throttle.py` puts bench/, not the root, on the path
    sys.path.insert(0, str(ROOT))

from tests.servers import redis_or_own  # noqa: E402
from tests.throttle_sim import simulate_backlog, window_violations  # noqa: E402


def rate(fn: Callable[[int], None], seconds: float, threads: int) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def run(k: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            fn(k)
            n += 1
        counts[k] = n

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", default=None, help="default: a redis-server of its own")
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    with redis_or_own(a.redis) as url:
        run(redis.Redis.from_url(url, max_connections=64), a.seconds)


def run(r: redis.Redis, seconds: float) -> None:
    r.flushdb()
    trivial = r.register_script("return 1")
    th = RedisThrottle(r)
    # realistic logs: sliding buckets saturated (about `limit` live entries each), mixed
    # allowed/denied answers, plus a calendar bucket
    b1 = [Bucket(keys.bucket_key(1, "campaign", "B"), 50, 1.0)]
    b4 = b1 + [
        Bucket(keys.bucket_key(1, "mps", "MG"), 100, 1.0, 2),
        Bucket(
            keys.bucket_key(1, "tmo", "daily"),
            10**9,
            86_400.0,
            2,
            calendar_tz="America/Los_Angeles",
        ),
        Bucket(keys.bucket_key(1, "rcpt", "h"), 20, 1.0),
    ]
    print(f"{'case':34} {'ops/s':>10} {'ratio':>7}")
    for threads in (1, 16):
        ceiling = rate(lambda k: trivial(), seconds, threads)
        print(f"{'bare EVALSHA x' + str(threads):34} {ceiling:10.0f} {1.0:7.2f}")
        for name, bs in (("reserve 1 bucket", b1), ("reserve 4 buckets", b4)):
            r.flushdb()
            got = rate(lambda k, bs=bs: th.reserve(bs), seconds, threads)
            print(f"{name + ' x' + str(threads):34} {got:10.0f} {got / ceiling:7.2f}")
    # simulated 500-recipient run, virtual clock, real Redis, lateness up to 0.99 s
    r.flushdb()
    clock = FakeClock(1_767_625_200.0)
    sim = RedisThrottle(r, clock)
    camp = [Bucket(keys.bucket_key(2, "campaign", "QE"), 10, 300.0),
            Bucket(keys.bucket_key(2, "mps", "MG"), 240, 60.0, grace_s=1.0),
            Bucket(keys.bucket_key(2, "tmo", "daily"), 2000, 86_400.0,
                   calendar_tz="America/Los_Angeles")]  # fmt: skip
    for horizon in (6 * 3600.0, 900.0):
        r.flushdb()
        clock.set(1_767_625_200.0)
        t0 = clock.time()
        s = time.perf_counter()
        res = simulate_backlog(sim, clock, lambda i: camp, 500, max_wait_s=horizon,
                               lateness=lambda rng: rng.uniform(0, 0.99))  # fmt: skip
        took = max(res.sends) - t0
        ideal = 49 * 300.0
        print(
            f"500 recipients @10/300s, horizon {horizon:.0f}s: last send at {took:.0f}s "
            f"({took / 3600:.3f} h), utilisation {ideal / took:.2%}, "
            f"violations {window_violations(res.sends, 300.0, 10)}, "
            f"queue ops/send {res.ops_per_send:.2f}, late {res.late}, "
            f"reserves/send {res.reserves / len(res.sends):.2f} "
            f"(wall {time.perf_counter() - s:.1f}s)"
        )
    r.flushdb()


if __name__ == "__main__":
    main()
