"""Throttle utilisation of the running product, measured on the carrier's own log (issue 22).

    python bench/utilisation.py [--quick] [--json] [--only NAME] [--mode distributed|embedded]
                                [--burn] [--processes 2] [--threads 8]
                                [--redis redis://HOST:PORT/DB] [--pg postgresql://...]
                                [--code DIR]   # A/B: another checkout's code, e.g. main's

For a run of ``n`` messages under a binding limit of ``L`` per ``T`` seconds, the whole backlog
due at once, **efficiency = ideal span / actual span**: the ideal span is ``(ceil(n/L) - 1) * T``
(an exact limiter sending each window's ``L`` at its start: the ceiling), the actual span the
sandbox carrier's first to last receive time.  ``windows_over`` counts the sliding windows of
the carrier's log over the limit (must be 0).  Scenarios: 30 per 10 s and 100 per 10 s with 5x
the limit queued; an MPS-bound run (campaign window lifted, 2 MPS metered per 60 s, 3x queued);
the seed's own 10 per 300 s with 30 recipients (~10 min).  ``--quick``: the 10 s and MPS
scenarios.  ``--burn``: a second process burns one core for the whole measurement.

Two modes, each scenario on a fresh deployment:

* **distributed**, as deployed: the sandbox as a server, ``dispatcher serve`` (callbacks), the
  scheduler and ``--processes`` x ``--threads`` Dramatiq workers on real Redis + PostgreSQL
  (tests/harness.py, as bench/pipeline.py starts them);
* **embedded**, as ``dispatcher up``: one process (a child of the bench) with SQLite, the
  StubBroker and ``--threads`` worker threads (8, as ``dispatcher up``), the throttle on
  fakeredis, the in-process sandbox.

Besides the efficiency it prints the carrier's bursts (where the gaps come from: the spacing
between windows, or their spread) and how late the carried rows reached the carrier after
their booked slot (``lateness_s``: p50, p95, max; it must stay under the grace).  The load
average is printed with the figures: the machine's other work lengthens the spans.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if "--code" in sys.argv:  # A/B: another checkout's product (and harness) code
    ROOT = Path(sys.argv[sys.argv.index("--code") + 1]).resolve()
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.harness import (  # noqa: E402
    deployment,
    launch,
    outbox_rows,
    seed,
    wait_run_done,
)
from tests.servers import PG_DSN, redis_or_own, throwaway_database  # noqa: E402

#: (name, window limit, window seconds, mps, recipients); an MPS-bound run lifts the window
SCENARIOS: list[tuple[str, int, int, float, int]] = [
    ("30 per 10 s", 30, 10, 600.0, 150),
    ("100 per 10 s", 100, 10, 600.0, 500),
    ("MPS-bound (2 MPS)", 1_000_000, 1, 2.0, 360),
    ("10 per 300 s", 10, 300, 600.0, 30),
]
QUICK = ("30 per 10 s", "100 per 10 s", "MPS-bound (2 MPS)")
MODES = ("distributed", "embedded")


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
        if out and t - out[-1][-1] < min(period / 10, 1.0):
            out[-1].append(t)
        else:
            out.append([t])
    return [(round(b[0] - ts[0], 2), len(b), round(b[-1] - b[0], 2)) for b in out]


def lateness(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How late the carried rows reached the carrier after their booked slot (a carried row's
    ``due_at`` is its slot; the first window's rows are due at the launch): p50, p95, max
    seconds and how many rows.  A row that missed its grace booked again: its ``due_at`` is
    its second slot (the bursts show it)."""
    received = {r["sid"]: float(r["received_at"]) for r in records}
    due = {r["provider_sid"]: _ts(r["due_at"]) for r in rows if r.get("provider_sid") in received}
    if not due:
        return {"rows": 0}
    first = min(due.values())
    late = sorted(received[sid] - at for sid, at in due.items() if at > first + 1.0)
    if not late:
        return {"rows": 0}
    pick = lambda q: round(late[min(len(late) - 1, int(q * len(late)))], 3)  # noqa: E731
    return {"rows": len(late), "p50": pick(0.5), "p95": pick(0.95), "max": round(late[-1], 3)}


def _ts(at: Any) -> float:
    return float((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())


def figures(
    name: str,
    mode: str,
    scen: tuple[str, int, int, float, int],
    records: list[dict[str, Any]],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    _, limit, seconds, mps, n = scen
    times = [float(r["received_at"]) for r in records]
    b_limit, b_period = binding(limit, seconds, mps)
    return {
        "name": f"{name} [{mode}]",
        "scenario": name,
        "mode": mode,
        "limit": b_limit,
        "period_s": b_period,
        "n": n,
        "received": len(times),
        "efficiency": efficiency(times, b_limit, b_period),
        "span_s": round(max(times) - min(times), 2) if times else None,
        "ideal_span_s": (math.ceil(n / b_limit) - 1) * b_period,
        "windows_over": windows_over(times, b_limit, b_period),
        "lateness_s": lateness(records, rows),
        "bursts": bursts(times, b_period)[:40],
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _timeout(limit: int, seconds: int, mps: float, n: int) -> float:
    """Three times the ideal span under the binding limit, and two minutes."""
    b_limit, b_period = binding(limit, seconds, mps)
    return 120 + 3 * n * b_period / b_limit


def _stall(limit: int, seconds: int, mps: float) -> float:
    """No row moves between two windows: a stall is three binding periods, or a minute."""
    return max(60.0, 3 * binding(limit, seconds, mps)[1])


def distributed(scen: tuple[str, int, int, float, int], args: argparse.Namespace) -> dict[str, Any]:
    name, limit, seconds, mps, n = scen
    with ExitStack() as es:
        redis_url = es.enter_context(redis_or_own(args.redis))
        pg = es.enter_context(throwaway_database(args.pg or PG_DSN, "dispatcher_bench_"))
        work = Path(es.enter_context(tempfile.TemporaryDirectory(prefix="utilisation-")))
        stack, db = es.enter_context(deployment(redis_url, pg, work / "logs"))
        seeded = seed(db, work, consented=n, window_limit=limit, window_seconds=seconds, mps=mps)
        stack.up(processes=args.processes, threads=args.threads)
        run_id = launch(db, seeded)
        timeout = _timeout(limit, seconds, mps, n)
        wait_run_done(db, run_id, timeout=timeout, stack=stack, stall=_stall(limit, seconds, mps))
        assert stack.carrier is not None
        return figures(
            name, "distributed", scen, stack.carrier.records(), outbox_rows(db, [run_id])
        )


def embedded_child(name: str, threads: int) -> None:
    """The embedded stack in this process (a child of the bench: its own broker and GIL)."""
    from dispatcher.settings import Settings
    from workers.embedded import EmbeddedStack

    scen = next(s for s in SCENARIOS if s[0] == name)
    _, limit, seconds, mps, n = scen
    with tempfile.TemporaryDirectory(prefix="utilisation-") as d:
        work = Path(d)
        stack = EmbeddedStack(
            Settings(database_url=f"sqlite:///{work}/u.db"), worker_threads=threads
        )
        with stack:
            db = stack.runtime.db
            seeded = seed(
                db, work, consented=n, window_limit=limit, window_seconds=seconds, mps=mps
            )
            run_id = launch(db, seeded)
            wait_run_done(
                db,
                run_id,
                timeout=_timeout(limit, seconds, mps, n),
                stall=_stall(limit, seconds, mps),
            )
            records = stack.runtime.sandbox.records()
            rows = outbox_rows(db, [run_id])
    print(json.dumps(figures(name, "embedded", scen, records, rows)))


def embedded(scen: tuple[str, int, int, float, int], args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    grace = os.environ.get("DISPATCHER_THROTTLE_GRACE_S")
    if grace:
        env["DISPATCHER_THROTTLE_GRACE_S"] = grace
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--code",
            str(ROOT),
            "--embedded-child",
            scen[0],
            "--threads",
            str(args.threads),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"embedded run failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@contextmanager
def burning(on: bool):  # type: ignore[no-untyped-def]
    """A second process burning one core while the scenarios run."""
    if not on:
        yield
        return
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        p.kill()
        p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--mode", action="append", choices=MODES, default=[])
    ap.add_argument("--burn", action="store_true")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--redis")
    ap.add_argument("--pg")
    ap.add_argument("--code", help="run another checkout's code (A/B), e.g. main's")
    ap.add_argument("--embedded-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.embedded_child:
        embedded_child(args.embedded_child, args.threads)
        return
    chosen = [
        s
        for s in SCENARIOS
        if (not args.quick or s[0] in QUICK) and (not args.only or s[0] in args.only)
    ]
    out = []
    with burning(args.burn):
        for scen in chosen:
            for mode in args.mode or MODES:
                t0 = time.monotonic()
                got = (distributed if mode == "distributed" else embedded)(scen, args)
                got["wall_s"] = round(time.monotonic() - t0, 1)
                got["burn"] = args.burn
                out.append(got)
                if not args.json:
                    print(
                        f"{got['name']:34s} n={got['n']:4d} efficiency {got['efficiency']}  "
                        f"span {got['span_s']} s (ideal {got['ideal_span_s']} s)  windows over "
                        f"{got['windows_over']}  lateness {got['lateness_s']}  "
                        f"load {got['load_average']}",
                        flush=True,
                    )
                    print(f"  bursts (start s, messages, spread s): {got['bursts']}", flush=True)
    if args.json:
        print(json.dumps({"scenarios": out}, indent=2))


if __name__ == "__main__":
    main()
