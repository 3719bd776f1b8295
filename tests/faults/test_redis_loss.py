"""Fault 2: Redis loses everything mid-run — FLUSHALL, then a real restart (no persistence) of
a redis-server the test started itself: the run completes, 0 lost, 0 duplicates, and the
campaign window (which binds here) is never exceeded except in windows that overlap a loss,
where docs/throttle.md allows at most one extra window's worth (N extra)."""

from __future__ import annotations

import time

import pytest
import redis

from tests.harness import check_windows, finish_and_check, launch, run_counts, seed, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
N = 200
LIMIT, PERIOD = 20, 2  # 20 per 2 s (+1 s grace): ~7/s, binding


@pytest.mark.timeout(240)
def test_flushall_and_restart(dist_own_redis, tmp_path):
    stack, db, server = dist_own_redis
    seeded = seed(
        db,
        tmp_path,
        consented=N,
        opted_out=5,
        no_consent=5,
        window_limit=LIMIT,
        window_seconds=PERIOD,
        mps=40,
    )
    stack.up(lost_after=6.0)
    run_id = launch(db, seeded)

    def sent() -> int:
        c = run_counts(db, run_id)[1]
        return sum(c.get(k, 0) for k in ("sent", "delivered"))

    wait_for(lambda: sent() >= 40, 90, "40 messages out")
    r = redis.Redis(port=server.port)
    r.flushall()
    flushed = time.time()
    r.close()
    wait_for(
        lambda: sent() >= 100, 120, "100 messages out after the FLUSHALL", check=stack.check_alive
    )
    restarted = server.restart()
    rep, records, _ = finish_and_check(stack, db, seeded, run_id, timeout=180)
    print(
        f"\nFLUSHALL at +{flushed - records[0]['received_at']:.1f} s, restart at "
        f"+{restarted - records[0]['received_at']:.1f} s; {rep.summary()}"
    )
    assert rep.ok(), rep.summary()
    # windows overlapping a loss may hold up to 2N (docs/throttle.md); all others at most N
    losses = (flushed, restarted)
    span = PERIOD + 1.0  # window + grace
    overall = check_windows(records, seeded)
    print("; ".join(map(str, overall)))
    for w in overall:
        assert w.ok(allowance=w.limit), str(w)
    segments = [
        (None, losses[0] - span),
        (losses[0] + span, losses[1] - span),
        (losses[1] + span, None),
    ]
    for since, until in segments:
        for w in check_windows(records, seeded, since=since, until=until):
            assert w.ok(), f"{w} between {since} and {until}"
