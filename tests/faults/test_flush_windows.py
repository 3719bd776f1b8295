"""Never over, even across a Redis loss (issue 21.3): Redis is flushed (FLUSHALL) at random
moments 10 times in one run.  Each time the throttle is re-seeded from the outbox before its
first slot (dispatcher/throttle/seed.py), so every window on the carrier's log holds at most its
limit, with no allowance for the losses (test_redis_loss.py allowed N extra before the seed),
and every message arrives exactly once."""

from __future__ import annotations

import os
import random
import time

import pytest
import redis

from tests.harness import check_windows, finish_and_check, launch, run_counts, seed, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
N = 200
LIMIT, PERIOD = 20, 2  # 20 per 2 s (+1 s grace): ~6.7/s, binding
FLUSHES = 10


@pytest.mark.timeout(240)
def test_ten_flushes_at_random_moments_never_over_a_window(dist_own_redis, tmp_path):
    stack, db, server = dist_own_redis
    seeded = seed(db, tmp_path, consented=N, window_limit=LIMIT, window_seconds=PERIOD, mps=40)
    stack.up(lost_after=6.0)
    run_id = launch(db, seeded)

    def sent() -> int:
        c = run_counts(db, run_id)[1]
        return sum(c.get(k, 0) for k in ("sent", "delivered"))

    flush_seed = int(os.environ.get("FLUSH_SEED", time.time_ns() % 10_000))
    rng = random.Random(flush_seed)
    r = redis.Redis(port=server.port)
    flushes: list[float] = []
    try:
        for i in range(FLUSHES):
            # a random moment within the sending: after a random share of the next 1/12 of rows
            goal = (i + 1) * N // (FLUSHES + 2) + rng.randint(0, N // (FLUSHES + 2) - 1)
            wait_for(lambda g=goal: sent() >= g, 90, f"{goal} out", check=stack.check_alive)
            time.sleep(rng.uniform(0, 0.4))  # not always right after a recorded batch
            r.flushall()
            flushes.append(time.time())
    finally:
        r.close()
    rep, records, _ = finish_and_check(stack, db, seeded, run_id, timeout=120)
    times = sorted(float(m["received_at"]) for m in records)
    t0 = times[0]
    gap, at = max((b - a, a) for a, b in zip(times, times[1:], strict=False))
    print(
        f"\nFLUSH_SEED={flush_seed}: flushes at {[round(f - t0, 1) for f in flushes]} s; "
        f"last send {times[-1] - t0:.1f} s; "
        f"longest pause {gap:.1f} s from {at - t0:.1f} s; load {os.getloadavg()}; {rep.summary()}"
    )
    assert rep.ok(), rep.summary()  # exactly once: 0 duplicates, 0 lost
    windows = check_windows(records, seeded)
    print("; ".join(map(str, windows)))
    for w in windows:
        assert w.ok(), str(w)  # no allowance: 0 over, flushes or not
