"""Never idle with a backlog, end to end (issue 22): 150 recipients at 30 per 10 s through two
``dramatiq`` worker processes x 8 threads against the sandbox carrier in server mode, on real
Redis + PostgreSQL.  On the carrier's own log: no sliding 10 s window over 30, and the run
takes at most 1/0.80 of the ideal span (an exact limiter sends 30 at the start of each window:
(5 - 1) x 10 s = 40 s from the first message to the last).

Until 2026-12-07 this pinned 0.75: the run reached 0.950 in some runs and 0.762 in most (bursts
30, 30, 30, 24-26, 30, 4-6: a few rows of one window missed it and went after the last window).
The cause: each worker process computed the template lint's pattern languages (~0.8 s of CPU)
at its 200th message, mid-run, holding the GIL against its other threads; their halt checks and
sends ran late and those rows missed their grace.  They are computed when the pipeline is built
now (template_lint.warm).  A single row that misses its window costs a whole extra window
(40 / 50.5 s = 0.79): this bound fails on it.

The bound is looser than bench/utilisation.py's goal (>= 0.90 on a quiet machine) so that a
shared machine does not make it flaky, yet tight enough to catch the old behaviour: each booked
row riding its own delayed message to its slot, windows spaced period + 2 s (0.83 at best,
0.66-0.80 measured).  A machine so loaded that no process gets a fair share of a core (load
average over 3x the cores: each window's rows then cannot reach the carrier within their 0.5 s
grace) measures the machine, not the product: there the efficiency is printed, not asserted;
the windows and exactly-once always are."""

from __future__ import annotations

import math
import os

import pytest

from tests.harness import check_delivery, check_windows, launch, outbox_rows, seed, wait_run_done

pytestmark = pytest.mark.integration

N, LIMIT, PERIOD = 150, 30, 10


@pytest.mark.timeout(600)
def test_a_backlog_goes_at_the_start_of_every_window(dist, tmp_path):
    stack, db = dist
    seeded = seed(db, tmp_path, consented=N, window_limit=LIMIT, window_seconds=PERIOD, mps=600)
    stack.up(processes=2, threads=8)
    loads = [os.getloadavg()[0]]
    run_id = launch(db, seeded)
    wait_run_done(db, run_id, timeout=480, stack=stack, stall=60)
    loads.append(os.getloadavg()[0])
    records = stack.carrier.records()
    rows = outbox_rows(db, [run_id])

    rep = check_delivery(records, rows, expected=seeded.consented)
    assert rep.ok(), rep.summary()  # exactly once, everyone, final
    for w in check_windows(records, seeded):
        assert w.ok(), str(w)  # never over a window on the carrier's log
    times = sorted(float(m["received_at"]) for m in records)
    ideal = (math.ceil(N / LIMIT) - 1) * PERIOD
    span = times[-1] - times[0]
    gaps = [round(b - a, 2) for a, b in zip(times, times[1:], strict=False) if b - a > 1]
    bursts = [1]
    for a, b in zip(times, times[1:], strict=False):
        bursts[-1:] = [bursts[-1] + 1] if b - a <= 1 else [bursts[-1], 1]
    print(
        f"\n{N} at {LIMIT} per {PERIOD} s: span {span:.2f} s, ideal {ideal} s, "
        f"efficiency {ideal / span:.3f}; bursts {bursts}, {gaps} s apart; load {loads}"
    )
    if max(loads) > 3 * (os.cpu_count() or 1):
        pytest.skip(f"efficiency {ideal / span:.3f} not judged: load average {loads}")
    assert ideal / span >= 0.80, (span, bursts, gaps, loads)
