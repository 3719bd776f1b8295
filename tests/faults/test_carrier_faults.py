"""Fault 3: the carrier answers 10 % 500s, 5 % 429s and 5 % "timeouts" after it accepted the
message (the connection drops after the carrier recorded it): nothing lost, nothing doubled —
ambiguous sends are resolved by looking the message up, never by sending again."""

from __future__ import annotations

import pytest

from tests.harness import finish_and_check, launch, seed

pytestmark = [pytest.mark.integration, pytest.mark.faults]
N = 400  # scaled down from 2 000 (suite budget); ~80 faults injected


@pytest.mark.timeout(240)
def test_carrier_errors_and_timeouts_after_accept(dist, tmp_path):
    stack, db = dist
    seeded = seed(
        db,
        tmp_path,
        consented=N,
        opted_out=10,
        no_consent=10,
        window_limit=200,
        window_seconds=2,
        mps=40,
    )
    stack.up(
        "--fault-500",
        "0.10",
        "--fault-429",
        "0.05",
        "--fault-timeout",
        "0.05",
        "--fault-timeout-mode",
        "drop",
        "--seed",
        "7",
    )
    run_id = launch(db, seeded)
    rep, records, rows = finish_and_check(stack, db, seeded, run_id, timeout=200)
    stats = stack.carrier.stats()
    injected = stats["faults_500"] + stats["faults_429"] + stats["timeouts_after_accept"]
    print(
        f"\ncarrier faults: {stats['faults_500']} x 500, {stats['faults_429']} x 429, "
        f"{stats['timeouts_after_accept']} accepted-then-dropped; {rep.summary()}"
    )
    assert rep.ok(), rep.summary()
    assert rep.duplicates == 0 and rep.lost == 0
    assert stats["faults_500"] > 0 and stats["faults_429"] > 0
    assert stats["timeouts_after_accept"] > 0
    assert injected >= 0.1 * N
    # retried rows back off: a refused row went out again, after more than one attempt
    assert sum(1 for r in rows if r["attempts"] > 1) >= stats["faults_500"] // 2
    # every accepted-then-dropped message was resolved by lookup, not resent (0 duplicates)
