"""Soak (issue 10; not in CI): N minutes of mixed campaigns with carrier faults on, on the
distributed stack of tests/harness.py (sandbox carrier as a server, webhooks, a dramatiq worker
pool, ``dispatcher scheduler``) against real Redis and a throw-away PostgreSQL database.

Two campaigns share the sender: ``fast`` (window 1000 per 1 s: never binds, its messages are the
"unthrottled" ones whose latency is measured) and ``slow`` (window 5 per 1 s: throttled all the
time).  A new run of each is launched every ``--every`` seconds (to fresh recipients, while fewer
than two of that campaign's runs are active), so the carrier's record must hold every consented
recipient exactly once.  Optionally the worker pool is killed (-9) every ``--kill-every`` s.

Prints: sends/s, p50/p99 of enqueue-to-carrier latency of the fast campaign (outbox
``enqueued_at`` -> carrier ``received_at``, both wall-clock ``time.time()`` on this host), the
worst sliding-window count per bucket against its limit, duplicates and losses (must be 0), and
the RSS of each process (with its children) at start and end.

    .venv/bin/python bench/soak.py --minutes 2 [--kill-every 20] [--redis redis://HOST:PORT/DB]

Without ``--redis`` it runs on a redis-server of its own (started on a free port, stopped at the
end); a DB given with ``--redis`` is flushed before and after.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import (  # noqa: E402 - after the path tweak (a script, not a package)
    FINAL,
    check_delivery,
    check_windows,
    deployment,
    launch,
    outbox_rows,
    run_counts,
    seed,
    wait_for,
)

FAULTS = (
    "--fault-500",
    "0.05",
    "--fault-429",
    "0.03",
    "--fault-timeout",
    "0.03",
    "--fault-timeout-mode",
    "drop",
    "--seed",
    "11",
)
CAMPAIGNS = {  # name: (campaign SID, npa, window_limit, window_seconds, recipients per run)
    "fast": ("QE2c6890da8086d771620e9b13fadeba0b", "646", 1000, 1, 150),
    "slow": ("QE2c6890da8086d771620e9b13fadeba0c", "212", 5, 1, 40),
}


def rss_mb(proc: Any) -> float:
    import psutil

    try:
        p = psutil.Process(proc.pid)
        total = p.memory_info().rss
        for c in p.children(recursive=True):
            try:
                total += c.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total / 2**20
    except psutil.NoSuchProcess:
        return float("nan")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def ts(v: Any) -> float:
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()
    return float(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--every", type=float, default=15.0, help="seconds between launches")
    ap.add_argument(
        "--kill-every",
        type=float,
        default=0.0,
        help="kill -9 the worker pool every S seconds (0: never)",
    )
    ap.add_argument("--redis", default=None, help="default: a redis-server of its own")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()

    from tests.servers import PG_DSN, redis_or_own, throwaway_database

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    with (
        throwaway_database(PG_DSN) as pg,
        redis_or_own(args.redis) as redis_url,
        deployment(redis_url, pg, work / "logs") as (stack, db),
    ):
        print(f"soak: {args.minutes:g} min, logs in {work}/logs, redis {redis_url}")
        stack.up(
            *FAULTS,
            processes=args.processes,
            threads=args.threads,
            tick=0.5,
            leader_ttl=5.0,
            reconcile=2.0,
            lost_after=20.0,
            sending_lease=15.0,
            status_after=5.0,
        )
        assert stack.carrier is not None
        rss0: dict[str, float] = {}  # sampled once the stack is warm (first messages out)
        seeded: dict[str, list[Any]] = {k: [] for k in CAMPAIGNS}
        runs: dict[str, list[int]] = {k: [] for k in CAMPAIGNS}
        offsets = dict.fromkeys(CAMPAIGNS, 0)
        kills = 0
        t_start = time.time()
        t_end = t_start + args.minutes * 60
        next_launch = t_start
        next_kill = t_start + args.kill_every if args.kill_every else float("inf")
        while time.time() < t_end:
            now = time.time()
            if now >= next_launch:
                for name, (sid, npa, limit, secs, n) in CAMPAIGNS.items():
                    active = sum(1 for r in runs[name] if run_counts(db, r)[0] != "completed")
                    if active >= 2:
                        continue
                    s = seed(
                        db,
                        work / name,
                        consented=n,
                        opted_out=2,
                        no_consent=2,
                        window_limit=limit,
                        window_seconds=secs,
                        mps=600,
                        campaign_sid=sid,
                        npa=npa,
                        offset=offsets[name],
                    )
                    offsets[name] += n + 4
                    seeded[name].append(s)
                    runs[name].append(launch(db, s))
                next_launch = now + args.every
            if now >= next_kill:
                stack.procs["workers"].kill9()
                stack.start_workers(processes=args.processes, threads=args.threads)
                kills += 1
                next_kill = now + args.kill_every
            if not rss0 and stack.carrier.count() >= 50:
                rss0 = {name: rss_mb(p) for name, p in stack.procs.items()}
            stack.check_alive()
            time.sleep(0.5)
        t_launch_end = time.time()
        all_runs = [r for rs in runs.values() for r in rs]

        def finished() -> bool:
            for r in all_runs:
                state, c = run_counts(db, r)
                if state != "completed" or any(
                    c.get(k, 0) for k in ("queued", "sending", "unknown", "sent")
                ):
                    return False
            return True

        wait_for(finished, 600, "every run to finish", every=1.0, check=stack.check_alive)
        t_done = time.time()
        rss1 = {name: rss_mb(p) for name, p in stack.procs.items()}
        records = stack.carrier.records()
        stats = stack.carrier.stats()
        rows = outbox_rows(db, all_runs)

    # ------------------------------------------------------------------ figures
    expected = [p for ss in seeded.values() for s in ss for p in s.consented]
    forbidden = [p for ss in seeded.values() for s in ss for p in s.opted_out + s.no_consent]
    rep = check_delivery(records, rows, expected=expected, forbidden=forbidden)
    recv = [float(m["received_at"]) for m in records]
    span = (max(recv) - min(recv)) if recv else 0.0
    print(
        f"\nruns: {len(all_runs)} ({', '.join(f'{k} {len(v)}' for k, v in runs.items())}); "
        f"launching {t_launch_end - t_start:.0f} s, drained {t_done - t_launch_end:.0f} s later"
    )
    print(
        f"carrier: {len(records)} messages in {span:.0f} s = "
        f"{len(records) / span if span else 0:.1f} sends/s; faults injected: "
        f"{stats.get('faults_500', 0)} x 500, {stats.get('faults_429', 0)} x 429, "
        f"{stats.get('timeouts_after_accept', 0)} accepted-then-dropped; worker kills: {kills}"
    )
    by_sid = {m["sid"]: m for m in records}
    fast_runs = set(runs["fast"])
    lat = [
        float(by_sid[r["provider_sid"]]["received_at"]) - ts(r["enqueued_at"])
        for r in rows
        if r["run_id"] in fast_runs
        and r.get("provider_sid") in by_sid
        and r.get("enqueued_at") is not None
        and r["attempts"] <= 1
    ]
    print(
        f"enqueue->carrier latency, fast campaign (first attempts, n={len(lat)}): "
        f"p50 {pct(lat, 0.50) * 1000:.0f} ms, p99 {pct(lat, 0.99) * 1000:.0f} ms, "
        f"mean {statistics.fmean(lat) * 1000 if lat else float('nan'):.0f} ms"
    )
    window_ok = True
    for name, ss in seeded.items():
        phones = {p for s in ss for p in s.everyone}
        recs = [m for m in records if m["to"] in phones]
        for w in check_windows(recs, ss[0]):
            if w.bucket == "campaign":
                print(f"  {name} {w}{'' if w.ok() else '  <-- OVER'}")
                window_ok &= w.ok()
    mps = [w for w in check_windows(records, seeded["fast"][0]) if w.bucket == "sender_mps"][0]
    print(f"  sender {mps}{'' if mps.ok() else '  <-- OVER'}")
    window_ok &= mps.ok()
    not_final = sum(1 for r in rows if r["state"] not in FINAL)
    print(
        f"duplicates {rep.duplicates}, lost {rep.lost}, unexpected {rep.unexpected}, "
        f"not final {not_final}, mismatched {rep.mismatched}"
    )
    print("RSS MB (process + children), warm start (50 messages out) -> end:")
    for name in rss1:
        print(
            f"  {name:<10} {rss0.get(name, float('nan')):7.1f} -> {rss1[name]:7.1f}"
            + ("  (restarted)" if name == "workers" and kills else "")
        )
    ok = rep.ok() and window_ok
    print("OK" if ok else "FAILED:\n" + rep.summary())
    return 0 if ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
