"""Recovery with the shipped defaults (issue 21.2): the scheduler runs with the options a
deployment gets when it sets none (tick 1 s, reconcile 10 s, lost-after 60 s, status-after
300 s, quick-status-after 10 s).  Mid-run, Redis is flushed (FLUSHALL), later the webhooks
server is killed -9 and started again 20 s after.  Goal: sending at full rate again within 5 s
of the flush, and every row final within 30 s of its send (callbacks lost while the webhooks
were down are fetched from the carrier).  The figures printed go to docs/reliability.md."""

from __future__ import annotations

import os
import time
from datetime import datetime

import pytest
import redis

from tests.harness import finish_and_check, launch, run_counts, seed, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
N = 300
LIMIT, PERIOD = 20, 2  # 20 per 2 s (+2 s grace): binding


def _sent(db, run_id) -> int:
    c = run_counts(db, run_id)[1]
    return sum(c.get(k, 0) for k in ("sent", "delivered", "undelivered", "failed"))


def _ts(v) -> float:
    return v.timestamp() if isinstance(v, datetime) else float(v)


@pytest.mark.timeout(600)
def test_flushall_and_a_webhooks_crash_with_the_shipped_defaults(dist_own_redis, tmp_path):
    stack, db, server = dist_own_redis
    seeded = seed(db, tmp_path, consented=N, window_limit=LIMIT, window_seconds=PERIOD, mps=40)
    stack.up(
        tick=1.0,
        leader_ttl=10.0,
        reconcile=10.0,
        lost_after=60.0,
        sending_lease=90.0,
        status_after=300.0,
    )  # fmt: skip  (the CLI's defaults, quick-status-after 10 s included)
    run_id = launch(db, seeded)
    wait_for(lambda: _sent(db, run_id) >= 60, 120, "60 messages out", check=stack.check_alive)
    r = redis.Redis(port=server.port)
    r.flushall()
    flushed = time.time()
    r.close()
    wait_for(lambda: _sent(db, run_id) >= 140, 120, "140 out after the flush")
    stack.procs["webhooks"].kill9()
    killed = time.time()
    wait_for(lambda: time.time() - killed >= 20, 30, "20 s with the webhooks down", every=0.5)
    stack.start_webhooks()
    back = time.time()
    rep, records, rows = finish_and_check(stack, db, seeded, run_id, timeout=400)
    assert rep.ok(), rep.summary()

    # full rate again: the first window of PERIOD + grace after the flush that holds LIMIT sends
    times = sorted(float(m["received_at"]) for m in records)
    span = PERIOD + 2.0
    after = [t for t in times if t >= flushed]
    full = next(
        t + span for i, t in enumerate(after) if sum(1 for u in after[i:] if u < t + span) >= LIMIT
    )
    first = after[0] - flushed
    recovered = full - flushed
    # every row final within 30 s of its send (status_at: when its final status was recorded)
    late = [_ts(x["status_at"]) - _ts(x["sent_at"]) for x in rows if x["sent_at"] is not None]
    down = [
        _ts(x["status_at"]) - _ts(x["sent_at"])
        for x in rows
        if x["sent_at"] is not None and killed <= _ts(x["sent_at"]) < back
    ]
    load = os.getloadavg()[0]
    print(
        f"\n[load {load:.1f}] FLUSHALL: first send {first:.1f} s after, full window complete "
        f"{recovered:.1f} s after; webhooks down {back - killed:.0f} s: {len(down)} rows sent "
        f"meanwhile, final {max(down, default=0):.1f} s after their send at worst; all rows: "
        f"worst {max(late):.1f} s; {rep.summary()}"
    )
    assert recovered <= 5.0 + span, f"full rate {recovered:.1f} s after the flush"
    assert max(late) <= 30.0, f"a row final {max(late):.1f} s after its send"
