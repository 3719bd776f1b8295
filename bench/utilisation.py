"""Throttle utilisation of the running product, measured on the carrier's own log (issue 22).

    python bench/utilisation.py [--quick] [--json] [--only NAME] [--processes 2] [--threads 8]
                                [--redis redis://HOST:PORT/DB] [--pg postgresql://...]

For a run of ``n`` messages under a binding limit of ``L`` per ``T`` seconds, the whole backlog
due at once, **efficiency = ideal span / actual span**: the ideal span is ``(ceil(n/L) - 1) * T``
(an exact limiter sending each window's ``L`` at its start), the actual span the sandbox
carrier's first to last receive time.  ``windows_over`` counts the sliding windows of the
carrier's log over the limit (must be 0).  Scenarios: 30 per 10 s and 100 per 10 s with 5x the
limit queued; an MPS-bound run (campaign window lifted, 2 MPS metered per 60 s, 3x queued); the
seed's own 10 per 300 s with 30 recipients (~10 min).  ``--quick``: the 10 s and MPS scenarios.

Distributed mode, as deployed: the sandbox as a server, ``dispatcher serve`` (callbacks), the
scheduler and ``--processes`` x ``--threads`` Dramatiq workers on real Redis + PostgreSQL, each
scenario on a fresh deployment (tests/harness.py, as bench/pipeline.py starts them).  The load
average is printed with the figures: the machine's other work lengthens the spans.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.harness import deployment, launch, seed, wait_run_done  # noqa: E402
from tests.servers import PG_DSN, redis_or_own, throwaway_database  # noqa: E402

#: (name, window limit, window seconds, mps, recipients); an MPS-bound run lifts the window
SCENARIOS: list[tuple[str, int, int, float, int]] = [
    ("30 per 10 s", 30, 10, 600.0, 150),
    ("100 per 10 s", 100, 10, 600.0, 500),
    ("MPS-bound (2 MPS)", 1_000_000, 1, 2.0, 360),
    ("10 per 300 s", 10, 300, 600.0, 30),
]
QUICK = ("30 per 10 s", "MPS-bound (2 MPS)")


def binding(window_limit: int, window_seconds: int, mps: float) -> tuple[int, float]:
    """The limit that binds (per message, one segment each): the campaign window or MPS."""
    from dispatcher.throttle.policy import mps_bucket_shape

    m_limit, m_period = mps_bucket_shape(mps)
    if window_limit / window_seconds <= m_limit / m_period:
        return window_limit, float(window_seconds)
    return m_limit, m_period


def efficiency(times: list[float], limit: int, period: float) -> float | None:
    if len(times) < 2:
        return None
    ideal = (math.ceil(len(times) / limit) - 1) * period
    actual = max(times) - min(times)
    return round(ideal / actual, 4) if actual > 0 else None


def windows_over(times: list[float], limit: int, period: float) -> int:
    """Sliding windows ``[t, t + period)`` starting at a message that hold more than ``limit``
    (a maximal window can always start at a message)."""
    ts = sorted(times)
    return sum(1 for i, t in enumerate(ts) if bisect.bisect_left(ts, t + period) - i > limit)


def bursts(times: list[float], period: float) -> list[tuple[float, int, float]]:
    """(start offset, messages, duration) of each burst: messages less than a tenth of the
    period apart (where the gaps come from: the spacing between bursts, or their spread)."""
    ts = sorted(times)
    out: list[list[float]] = []
    for t in ts:
        if out and t - out[-1][-1] < period / 10:
            out[-1].append(t)
        else:
            out.append([t])
    return [(round(b[0] - ts[0], 2), len(b), round(b[-1] - b[0], 2)) for b in out]


def scenario(
    name: str, limit: int, seconds: int, mps: float, n: int, args: argparse.Namespace
) -> dict[str, Any]:
    with ExitStack() as es:
        redis_url = es.enter_context(redis_or_own(args.redis))
        pg = es.enter_context(throwaway_database(args.pg or PG_DSN, "dispatcher_bench_"))
        work = Path(es.enter_context(tempfile.TemporaryDirectory(prefix="utilisation-")))
        stack, db = es.enter_context(deployment(redis_url, pg, work / "logs"))
        seeded = seed(db, work, consented=n, window_limit=limit, window_seconds=seconds, mps=mps)
        stack.up(processes=args.processes, threads=args.threads)
        run_id = launch(db, seeded)
        timeout = 120 + 3 * n / (limit / seconds)
        wait_run_done(db, run_id, timeout=timeout, stack=stack, stall=max(60, 3 * seconds))
        times = [r["received_at"] for r in stack.carrier.records()]
    b_limit, b_period = binding(limit, seconds, mps)
    return {
        "name": name,
        "limit": b_limit,
        "period_s": b_period,
        "n": n,
        "received": len(times),
        "efficiency": efficiency(times, b_limit, b_period),
        "span_s": round(max(times) - min(times), 2) if times else None,
        "ideal_span_s": (math.ceil(n / b_limit) - 1) * b_period,
        "windows_over": windows_over(times, b_limit, b_period),
        "bursts": bursts(times, b_period)[:40],
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--redis")
    ap.add_argument("--pg")
    args = ap.parse_args()
    chosen = [
        s
        for s in SCENARIOS
        if (not args.quick or s[0] in QUICK) and (not args.only or s[0] in args.only)
    ]
    out = []
    for name, limit, seconds, mps, n in chosen:
        t0 = time.monotonic()
        got = scenario(name, limit, seconds, mps, n, args)
        got["wall_s"] = round(time.monotonic() - t0, 1)
        out.append(got)
        if not args.json:
            print(
                f"{name:20s} n={n:4d} efficiency {got['efficiency']}  span {got['span_s']} s "
                f"(ideal {got['ideal_span_s']} s)  windows over {got['windows_over']}  "
                f"load {got['load_average']}",
                flush=True,
            )
            print(f"  bursts (start s, messages, spread s): {got['bursts']}", flush=True)
    if args.json:
        print(json.dumps({"scenarios": out}, indent=2))


if __name__ == "__main__":
    main()
