"""2 000 recipients through two ``dramatiq`` worker processes against the sandbox carrier in
server mode, on real Redis + PostgreSQL, checked on the carrier's record (issue 7)."""

from __future__ import annotations

import time

import pytest

from tests.harness import check_delivery, check_windows, launch, outbox_rows, seed, wait_run_done

pytestmark = pytest.mark.integration


@pytest.mark.timeout(960)
def test_two_thousand_recipients_two_worker_processes(dist, tmp_path):
    stack, db = dist
    # Limits raised (campaign window 200 per 2 s, 40 MPS = 2 400 segments per 60 s) so the run
    # is CPU-bound: the whole pipeline costs ~50 ms of CPU per message (workers, webhook
    # callbacks, carrier), so two cores deliver 20-40/s and 2 000 take about a minute.  The
    # window checks still run over every sliding window; tests/faults/test_redis_loss.py runs
    # a window that binds.  How long it takes is bench/pipeline.py's business: here the run
    # only has to keep moving (a minute without a row changing state fails), so the test also
    # passes when other test runs share the cores (two full runs at once took 4 min for 1 000).
    seeded = seed(
        db,
        tmp_path,
        consented=2000,
        opted_out=60,
        no_consent=60,
        window_limit=200,
        window_seconds=2,
        mps=40,
    )
    stack.up(processes=2, threads=4)
    t0 = time.monotonic()
    run_id = launch(db, seeded)
    counts = wait_run_done(db, run_id, timeout=900, stack=stack, stall=60)
    elapsed = time.monotonic() - t0
    records = stack.carrier.records()
    rows = outbox_rows(db, [run_id])

    rep = check_delivery(
        records, rows, expected=seeded.consented, forbidden=seeded.opted_out + seeded.no_consent
    )
    assert rep.ok(), rep.summary()
    assert rep.received == 2000 and rep.duplicates == 0 and rep.lost == 0
    assert counts.get("delivered", 0) == 2000
    assert counts.get("suppressed", 0) == 120
    reasons = {r["to_phone"]: r["suppress_reason"] for r in rows if r["state"] == "suppressed"}
    assert {reasons[p] for p in seeded.opted_out} == {"opted_out"}
    assert "opted_out" not in {reasons[p] for p in seeded.no_consent}
    windows = check_windows(records, seeded)
    for w in windows:
        assert w.ok(), str(w)
    print(f"\n2000 recipients in {elapsed:.1f} s; " + "; ".join(map(str, windows)))
